//! The transactional API through the official `tikv-client`, in API V1 (on a
//! default cluster) and API V2 (on a cluster started with `api_version = 2`):
//! commit and read, read-your-writes, snapshot isolation, conflicts, insert,
//! pessimistic locking, async commit and 1PC.

mod common;

use anyhow::{Context as _, Result};
use common::{
    commit_puts, k, keys_of, optimistic, pessimistic, read, start_cluster, ts_from, txn_client, Api,
};
use tikv_client::{KvPair, TimestampExt, TransactionClient, TransactionOptions};

/// Runs one transaction that inserts `key`; `Ok(true)` if it
/// committed, `Ok(false)` if the insert or the commit was refused.
async fn try_insert(
    client: &TransactionClient,
    options: TransactionOptions,
    key: &str,
    value: &str,
) -> Result<bool> {
    let mut txn = client.begin_with_options(options).await?;
    if txn.insert(k(key), k(value)).await.is_err() {
        let _ = txn.rollback().await;
        return Ok(false);
    }
    match txn.commit().await {
        Ok(_) => Ok(true),
        Err(_) => {
            let _ = txn.rollback().await;
            Ok(false)
        }
    }
}

// ---------------------------------------------------------------------------
// Commit, read, read-your-writes, snapshot isolation

async fn commit_then_read(client: &TransactionClient) -> Result<()> {
    let mut txn = client.begin_with_options(optimistic()).await?;
    txn.put(k("a/1"), k("one")).await?;
    txn.put(k("a/2"), k("two")).await?;
    txn.put(k("a/3"), k("three")).await?;
    let commit_ts = txn.commit().await?.context("no commit timestamp")?;
    assert!(commit_ts.version() > txn.start_timestamp().version());

    let mut reader = client.begin_with_options(optimistic()).await?;
    assert_eq!(reader.get(k("a/1")).await?, Some(k("one")));
    assert_eq!(reader.get(k("a/missing")).await?, None);
    assert!(reader.key_exists(k("a/2")).await?);
    assert!(!reader.key_exists(k("a/missing")).await?);
    let mut got: Vec<KvPair> = reader
        .batch_get(vec![k("a/1"), k("a/3"), k("a/9")])
        .await?
        .collect();
    got.sort_by(|a, b| a.key().cmp(b.key()));
    assert_eq!(keys_of(&got), ["a/1", "a/3"]);
    assert_eq!(got[1].value(), &k("three"));
    let scanned: Vec<KvPair> = reader.scan(k("a/")..k("a0"), 10).await?.collect();
    assert_eq!(keys_of(&scanned), ["a/1", "a/2", "a/3"]);
    let limited: Vec<KvPair> = reader.scan(k("a/")..k("a0"), 2).await?.collect();
    assert_eq!(keys_of(&limited), ["a/1", "a/2"]);
    let reverse: Vec<KvPair> = reader.scan_reverse(k("a/")..k("a0"), 2).await?.collect();
    assert_eq!(keys_of(&reverse), ["a/3", "a/2"]);
    let keys: Vec<String> = reader
        .scan_keys(k("a/2")..=k("a/3"), 10)
        .await?
        .map(|key| String::from_utf8_lossy((&key).into()).into_owned())
        .collect();
    assert_eq!(keys, ["a/2", "a/3"]);
    assert_eq!(
        reader.commit().await?,
        None,
        "a read-only commit writes nothing"
    );
    Ok(())
}

async fn read_your_writes(client: &TransactionClient) -> Result<()> {
    let mut txn = client.begin_with_options(optimistic()).await?;
    txn.put(k("a/new"), k("mine")).await?;
    assert_eq!(txn.get(k("a/new")).await?, Some(k("mine")), "own put");
    txn.delete(k("a/1")).await?;
    assert_eq!(txn.get(k("a/1")).await?, None, "own delete");
    txn.put(k("a/2"), k("two-updated")).await?;
    let scanned: Vec<KvPair> = txn.scan(k("a/")..k("a0"), 10).await?.collect();
    assert_eq!(
        keys_of(&scanned),
        ["a/2", "a/3", "a/new"],
        "scan merges own writes"
    );
    assert_eq!(scanned[0].value(), &k("two-updated"));

    // Nobody else sees uncommitted writes.
    assert_eq!(read(client, b"a/new").await?, None, "dirty read");
    assert_eq!(read(client, b"a/1").await?, Some(k("one")), "dirty delete");
    txn.commit().await?;
    assert_eq!(read(client, b"a/new").await?, Some(k("mine")));
    assert_eq!(read(client, b"a/1").await?, None);
    assert_eq!(read(client, b"a/2").await?, Some(k("two-updated")));
    Ok(())
}

async fn snapshot_isolation(client: &TransactionClient) -> Result<()> {
    let v1_ts = commit_puts(client, &[(k("si"), k("v1"))]).await?;
    let mut old = client.begin_with_options(optimistic()).await?;
    let between = client.current_timestamp().await?;
    let v2_ts = commit_puts(client, &[(k("si"), k("v2")), (k("si-new"), k("born"))]).await?;
    assert!(v2_ts.version() > between.version() && between.version() > v1_ts.version());

    assert_eq!(
        old.get(k("si")).await?,
        Some(k("v1")),
        "txn started before the commit"
    );
    assert_eq!(
        old.get(k("si-new")).await?,
        None,
        "key created after the txn started"
    );
    let scanned: Vec<KvPair> = old.scan(k("si")..k("sj"), 10).await?.collect();
    assert_eq!(keys_of(&scanned), ["si"]);
    assert_eq!(scanned[0].value(), &k("v1"));

    let mut newer = client.begin_with_options(optimistic()).await?;
    assert_eq!(newer.get(k("si")).await?, Some(k("v2")));
    newer.rollback().await?;

    let at = |version: u64| client.snapshot(ts_from(version), optimistic());
    assert_eq!(at(between.version()).get(k("si")).await?, Some(k("v1")));
    assert_eq!(at(v2_ts.version() - 1).get(k("si")).await?, Some(k("v1")));
    assert_eq!(
        at(v2_ts.version()).get(k("si")).await?,
        Some(k("v2")),
        "read at commit_ts"
    );
    assert_eq!(
        at(v1_ts.version() - 1).get(k("si")).await?,
        None,
        "before the first write"
    );

    // A delete is a version too.
    let del_ts = {
        let mut txn = client.begin_with_options(optimistic()).await?;
        txn.delete(k("si")).await?;
        txn.commit().await?.context("no commit timestamp")?
    };
    assert_eq!(read(client, b"si").await?, None);
    assert_eq!(at(del_ts.version() - 1).get(k("si")).await?, Some(k("v2")));

    // The old transaction cannot overwrite what it did not see (lost update).
    old.put(k("si"), k("from-old")).await?;
    assert!(
        old.commit().await.is_err(),
        "stale txn overwrote a newer commit"
    );
    let _ = old.rollback().await;
    assert_eq!(read(client, b"si").await?, None);
    Ok(())
}

async fn commit_read_and_snapshot_isolation(api: Api) -> Result<()> {
    let cluster = start_cluster(api, "").await?;
    let logs = cluster.logs_on_failure();
    let client = txn_client(&cluster, api).await?;
    commit_then_read(&client).await?;
    read_your_writes(&client).await?;
    snapshot_isolation(&client).await?;
    logs.disarm();
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn txn_commit_read_and_snapshot_isolation_v1() -> Result<()> {
    commit_read_and_snapshot_isolation(Api::V1).await
}

#[tokio::test(flavor = "multi_thread")]
async fn txn_commit_read_and_snapshot_isolation_v2() -> Result<()> {
    commit_read_and_snapshot_isolation(Api::V2).await
}

// ---------------------------------------------------------------------------
// Conflicts and insert

async fn conflicts(client: &TransactionClient) -> Result<()> {
    commit_puts(client, &[(k("w"), k("0"))]).await?;

    // Sequential: both start, the first commits, the second must fail.
    let mut t1 = client.begin_with_options(optimistic()).await?;
    let mut t2 = client.begin_with_options(optimistic()).await?;
    t1.put(k("w"), k("t1")).await?;
    t2.put(k("w"), k("t2")).await?;
    t1.commit().await.context("first committer")?;
    assert!(
        t2.commit().await.is_err(),
        "both conflicting txns committed"
    );
    let _ = t2.rollback().await;
    assert_eq!(read(client, b"w").await?, Some(k("t1")));

    // Concurrent: exactly one of two racing writers commits.
    for round in 0..5 {
        let mut a = client.begin_with_options(optimistic()).await?;
        let mut b = client.begin_with_options(optimistic()).await?;
        let (va, vb) = (format!("a{round}"), format!("b{round}"));
        a.put(k("w"), k(&va)).await?;
        b.put(k("w"), k(&vb)).await?;
        let (ra, rb) = tokio::join!(a.commit(), b.commit());
        assert!(
            ra.is_ok() != rb.is_ok(),
            "round {round}: exactly one must commit, got {ra:?} and {rb:?}"
        );
        if ra.is_err() {
            let _ = a.rollback().await;
        }
        if rb.is_err() {
            let _ = b.rollback().await;
        }
        let winner = if ra.is_ok() { va } else { vb };
        assert_eq!(read(client, b"w").await?, Some(k(&winner)), "round {round}");
    }
    Ok(())
}

async fn insert(client: &TransactionClient) -> Result<()> {
    commit_puts(client, &[(k("ins/exists"), k("original"))]).await?;
    assert!(
        !try_insert(client, optimistic(), "ins/exists", "dup").await?,
        "optimistic insert over an existing key committed"
    );
    assert!(
        !try_insert(client, pessimistic(), "ins/exists", "dup").await?,
        "pessimistic insert over an existing key committed"
    );
    assert_eq!(read(client, b"ins/exists").await?, Some(k("original")));

    assert!(try_insert(client, optimistic(), "ins/new", "fresh").await?);
    assert_eq!(read(client, b"ins/new").await?, Some(k("fresh")));
    assert!(try_insert(client, pessimistic(), "ins/new2", "fresh2").await?);
    assert_eq!(read(client, b"ins/new2").await?, Some(k("fresh2")));

    // A deleted key may be inserted again.
    let mut txn = client.begin_with_options(optimistic()).await?;
    txn.delete(k("ins/exists")).await?;
    txn.commit().await?;
    assert!(try_insert(client, optimistic(), "ins/exists", "reborn").await?);
    assert_eq!(read(client, b"ins/exists").await?, Some(k("reborn")));
    Ok(())
}

async fn pessimistic_locking(client: &TransactionClient) -> Result<()> {
    commit_puts(client, &[(k("p"), k("0"))]).await?;

    let mut holder = client.begin_with_options(pessimistic()).await?;
    assert_eq!(holder.get_for_update(k("p")).await?, Some(k("0")));

    // While the lock is held nobody else can lock or write the key...
    let mut other = client
        .begin_with_options(pessimistic().no_resolve_locks())
        .await?;
    assert!(
        other.get_for_update(k("p")).await.is_err(),
        "a second pessimistic lock on a locked key succeeded"
    );
    let _ = other.rollback().await;
    let mut writer = client
        .begin_with_options(optimistic().no_resolve_locks())
        .await?;
    writer.put(k("p"), k("writer")).await?;
    assert!(
        writer.commit().await.is_err(),
        "wrote over a pessimistic lock"
    );
    let _ = writer.rollback().await;
    // ...but readers are not blocked by a pessimistic lock.
    assert_eq!(read(client, b"p").await?, Some(k("0")));

    holder.rollback().await?;

    // Rollback released the lock.
    let mut next = client
        .begin_with_options(pessimistic().no_resolve_locks())
        .await?;
    assert_eq!(next.get_for_update(k("p")).await?, Some(k("0")));
    next.put(k("p"), k("1")).await?;
    next.commit().await?;
    assert_eq!(read(client, b"p").await?, Some(k("1")));

    // lock_keys + write + commit, and get_for_update sees the latest commit
    // even when it is newer than the transaction's start.
    let mut late = client.begin_with_options(pessimistic()).await?;
    commit_puts(client, &[(k("p"), k("2"))]).await?;
    assert_eq!(late.get(k("p")).await?, Some(k("1")), "snapshot read");
    assert_eq!(
        late.get_for_update(k("p")).await?,
        Some(k("2")),
        "locking read"
    );
    late.put(k("p"), k("3")).await?;
    late.commit().await?;
    assert_eq!(read(client, b"p").await?, Some(k("3")));

    let mut locker = client.begin_with_options(pessimistic()).await?;
    locker.lock_keys(vec![k("p"), k("p2")]).await?;
    locker.put(k("p2"), k("locked-write")).await?;
    locker.commit().await?;
    assert_eq!(read(client, b"p2").await?, Some(k("locked-write")));
    assert_eq!(
        read(client, b"p").await?,
        Some(k("3")),
        "lock-only key unchanged"
    );
    Ok(())
}

async fn conflicts_insert_and_pessimistic_locks(api: Api) -> Result<()> {
    let cluster = start_cluster(api, "").await?;
    let logs = cluster.logs_on_failure();
    let client = txn_client(&cluster, api).await?;
    conflicts(&client).await.context("conflicts")?;
    insert(&client).await.context("insert")?;
    pessimistic_locking(&client)
        .await
        .context("pessimistic locking")?;
    logs.disarm();
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn txn_conflicts_insert_and_pessimistic_locks_v1() -> Result<()> {
    conflicts_insert_and_pessimistic_locks(Api::V1).await
}

#[tokio::test(flavor = "multi_thread")]
async fn txn_conflicts_insert_and_pessimistic_locks_v2() -> Result<()> {
    conflicts_insert_and_pessimistic_locks(Api::V2).await
}

// ---------------------------------------------------------------------------
// Async commit and 1PC

async fn async_commit_and_one_pc(client: &TransactionClient) -> Result<()> {
    let mut txn = client
        .begin_with_options(optimistic().use_async_commit())
        .await?;
    for i in 0..3 {
        txn.put(format!("ac/{i}").into_bytes(), k("async")).await?;
    }
    let commit_ts = txn.commit().await?.context("async commit returned no ts")?;
    let start = txn.start_timestamp().version();
    assert!(
        commit_ts.version() > start,
        "async commit ts {} not after start {start}",
        commit_ts.version()
    );
    for i in 0..3 {
        assert_eq!(
            read(client, format!("ac/{i}").as_bytes()).await?,
            Some(k("async"))
        );
    }
    let mut before = client.snapshot(ts_from(commit_ts.version() - 1), optimistic());
    let mut at = client.snapshot(commit_ts.clone(), optimistic());
    assert_eq!(
        before.get(k("ac/0")).await?,
        None,
        "visible before its commit ts"
    );
    assert_eq!(
        at.get(k("ac/2")).await?,
        Some(k("async")),
        "invisible at its commit ts"
    );

    let mut txn = client.begin_with_options(optimistic().try_one_pc()).await?;
    txn.put(k("1pc/a"), k("one")).await?;
    txn.put(k("1pc/b"), k("phase")).await?;
    let commit_ts = txn.commit().await?.context("1PC returned no commit ts")?;
    assert!(commit_ts.version() > txn.start_timestamp().version());
    // 1PC writes commit records directly: no lock is ever left behind.
    let now = client.current_timestamp().await?;
    let locks = client.scan_locks(&now, k("1pc/")..k("1pc0"), 100).await?;
    assert!(locks.is_empty(), "1PC left locks: {locks:?}");
    assert_eq!(read(client, b"1pc/a").await?, Some(k("one")));
    assert_eq!(read(client, b"1pc/b").await?, Some(k("phase")));
    let mut before = client.snapshot(ts_from(commit_ts.version() - 1), optimistic());
    assert_eq!(
        before.get(k("1pc/a")).await?,
        None,
        "visible before its commit ts"
    );
    let mut at = client.snapshot(commit_ts, optimistic());
    assert_eq!(at.get(k("1pc/b")).await?, Some(k("phase")));

    // Async commit and 1PC also conflict like any other transaction. Their
    // commit ts comes from the store (max_ts), not from placement, so it must
    // be above every start ts the store has seen: t2 reads first, then t1's
    // 1PC commit must land after t2's start and t2 must fail.
    let mut t1 = client.begin_with_options(optimistic().try_one_pc()).await?;
    let mut t2 = client
        .begin_with_options(optimistic().use_async_commit())
        .await?;
    assert_eq!(t2.get(k("1pc/a")).await?, Some(k("one")));
    t1.put(k("1pc/a"), k("t1")).await?;
    t2.put(k("1pc/a"), k("t2")).await?;
    let t1_commit = t1.commit().await?.context("1PC returned no commit ts")?;
    assert!(
        t1_commit.version() > t2.start_timestamp().version(),
        "1PC commit ts {} is not above the start ts {} of a txn that already read the key",
        t1_commit.version(),
        t2.start_timestamp().version()
    );
    assert!(
        t2.commit().await.is_err(),
        "async commit overwrote a newer 1PC commit"
    );
    let _ = t2.rollback().await;
    assert_eq!(read(client, b"1pc/a").await?, Some(k("t1")));
    Ok(())
}

async fn async_commit_and_one_pc_on(api: Api) -> Result<()> {
    let cluster = start_cluster(api, "").await?;
    let logs = cluster.logs_on_failure();
    let client = txn_client(&cluster, api).await?;
    async_commit_and_one_pc(&client).await?;
    logs.disarm();
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn txn_async_commit_and_one_pc_v1() -> Result<()> {
    async_commit_and_one_pc_on(Api::V1).await
}

#[tokio::test(flavor = "multi_thread")]
async fn txn_async_commit_and_one_pc_v2() -> Result<()> {
    async_commit_and_one_pc_on(Api::V2).await
}
