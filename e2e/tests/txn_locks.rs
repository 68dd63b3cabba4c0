//! Abandoned transactions and cleanup through the official `tikv-client`, in
//! API V1 (on a default cluster) and API V2 (on a cluster started with
//! `api_version = 2`): lock TTL and resolution, scan_locks, cleanup_locks
//! (rolling back 2PC orphans, committing complete async-commit ones), the GC
//! safe point and the store's GC, and unsafe_destroy_range.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use common::{
    commit_puts, eventually, gc_safe_point, k, keys_of, optimistic, patient, read, start_cluster,
    ts_from, txn_client, wait_for_no_locks, Api, Target,
};
use shale_e2e::Cluster;
use tikv_client::transaction::ResolveLocksOptions;
use tikv_client::{KvPair, TimestampExt, TransactionClient};

// ---------------------------------------------------------------------------
// Abandoned transactions: lock TTL, resolution, scan_locks, cleanup_locks

async fn abandoned_lock_is_resolved(cluster: &Cluster, api: Api) -> Result<()> {
    const TTL_MS: u64 = 1500;
    let client = txn_client(cluster, api).await?;
    let mut target = Target::new(cluster, api).await?;
    commit_puts(
        &client,
        &[(k("l/1"), k("committed")), (k("l/2"), k("committed"))],
    )
    .await?;
    wait_for_no_locks(&client, b"l/", b"l0").await?;

    // A client prewrites two keys and dies before committing.
    let begun = Instant::now();
    let start = client.current_timestamp().await?.version();
    target
        .prewrite(
            &[(k("l/1"), k("abandoned")), (k("l/2"), k("abandoned"))],
            b"l/1",
            start,
            TTL_MS,
            false,
        )
        .await?;

    let now = client.current_timestamp().await?;
    let locks = client.scan_locks(&now, k("l/")..k("l0"), 100).await?;
    let keys: BTreeSet<Vec<u8>> = locks.iter().map(|l| l.key.clone()).collect();
    assert_eq!(keys, BTreeSet::from([k("l/1"), k("l/2")]), "scan_locks");
    for lock in &locks {
        assert_eq!(lock.lock_version, start);
        assert_eq!(lock.primary_lock, k("l/1"));
        assert_eq!(lock.lock_ttl, TTL_MS);
    }

    // While the lock lives, a reader that may not wait must fail, not read
    // around it.
    let mut hasty = client
        .begin_with_options(optimistic().no_resolve_locks())
        .await?;
    let early = hasty.get(k("l/1")).await;
    assert!(
        begun.elapsed() < Duration::from_millis(TTL_MS),
        "test too slow to check a live lock"
    );
    assert!(early.is_err(), "read through a live lock: {early:?}");
    let _ = hasty.rollback().await;

    // A patient reader waits for the TTL, rolls the orphan back and reads the
    // last committed value.
    let mut reader = client
        .begin_with_options(optimistic().retry_options(patient()))
        .await?;
    assert_eq!(reader.get(k("l/1")).await?, Some(k("committed")));
    assert!(
        begun.elapsed() >= Duration::from_millis(TTL_MS - 100),
        "lock of a live transaction rolled back after {:?} (TTL {TTL_MS} ms)",
        begun.elapsed()
    );
    assert_eq!(
        reader.get(k("l/2")).await?,
        Some(k("committed")),
        "secondary"
    );
    reader.rollback().await?;
    let now = client.current_timestamp().await?;
    let left = client.scan_locks(&now, k("l/")..k("l0"), 100).await?;
    assert!(left.is_empty(), "locks left after resolution: {left:?}");

    // A writer blocked by an orphan lock gets through after the TTL.
    let begun = Instant::now();
    let start = client.current_timestamp().await?.version();
    target
        .prewrite(
            &[(k("l/2"), k("abandoned-again"))],
            b"l/2",
            start,
            TTL_MS,
            false,
        )
        .await?;
    let mut writer = client
        .begin_with_options(optimistic().retry_options(patient()))
        .await?;
    writer.put(k("l/2"), k("written-after-ttl")).await?;
    writer
        .commit()
        .await
        .context("writer blocked by an expired lock")?;
    assert!(begun.elapsed() >= Duration::from_millis(TTL_MS - 100));
    assert_eq!(read(&client, b"l/2").await?, Some(k("written-after-ttl")));
    Ok(())
}

async fn scan_and_cleanup_locks(cluster: &Cluster, api: Api) -> Result<()> {
    let client = txn_client(cluster, api).await?;
    let mut target = Target::new(cluster, api).await?;
    commit_puts(
        &client,
        &[
            (k("c/1"), k("old")),
            (k("c/2"), k("old")),
            (k("c/3"), k("old")),
        ],
    )
    .await?;
    wait_for_no_locks(&client, b"c/", b"c0").await?;

    // An abandoned 2PC transaction with a long TTL...
    let start_2pc = client.current_timestamp().await?.version();
    target
        .prewrite(
            &[(k("c/1"), k("2pc")), (k("c/2"), k("2pc"))],
            b"c/1",
            start_2pc,
            60_000,
            false,
        )
        .await?;
    // ...and an abandoned async-commit transaction whose every lock is written.
    let start_ac = client.current_timestamp().await?.version();
    let resp = target
        .prewrite(
            &[(k("c/3"), k("ac")), (k("c/4"), k("ac"))],
            b"c/3",
            start_ac,
            60_000,
            true,
        )
        .await?;
    assert!(
        resp.min_commit_ts > start_ac,
        "async-commit prewrite must return min_commit_ts > start_ts, got {}",
        resp.min_commit_ts
    );

    // The range spans two Regions: each gets the range's far end, which
    // lies beyond it (found by the chaos test: cleanup_locks refused with
    // KeyNotInRegion whenever a range crossed a Region boundary).
    let split_key = target.txn_key(b"c/3");
    target.split_at(common::KeyMode::Txn, &split_key).await?;

    let safepoint = client.current_timestamp().await?;
    let locks = client.scan_locks(&safepoint, k("c/")..k("c0"), 100).await?;
    let found: BTreeMap<Vec<u8>, u64> = locks
        .iter()
        .map(|l| (l.key.clone(), l.lock_version))
        .collect();
    assert_eq!(
        found,
        BTreeMap::from([
            (k("c/1"), start_2pc),
            (k("c/2"), start_2pc),
            (k("c/3"), start_ac),
            (k("c/4"), start_ac),
        ]),
        "scan_locks"
    );
    for lock in locks.iter().filter(|l| l.lock_version == start_ac) {
        assert!(
            lock.use_async_commit,
            "async-commit lock not marked: {lock:?}"
        );
    }
    // scan_locks only returns locks at or below its max version.
    let below = client
        .scan_locks(&ts_from(start_2pc - 1), k("c/")..k("c0"), 100)
        .await?;
    assert!(below.is_empty(), "locks newer than max_version: {below:?}");
    let only_2pc = client
        .scan_locks(&ts_from(start_2pc), k("c/")..k("c0"), 100)
        .await?;
    assert_eq!(
        only_2pc.len(),
        2,
        "scan_locks at the first txn's ts: {only_2pc:?}"
    );
    // ...and honours its limit, in each Region (tikv-client sends it to
    // each, as to TiKV).
    let limited = client.scan_locks(&safepoint, k("c/")..k("c0"), 1).await?;
    let keys: Vec<Vec<u8>> = limited.iter().map(|l| l.key.clone()).collect();
    assert_eq!(
        keys,
        vec![k("c/1"), k("c/3")],
        "scan_locks limit 1 per Region"
    );

    let result = client
        .cleanup_locks(
            k("c/")..k("c0"),
            &safepoint,
            ResolveLocksOptions {
                async_commit_only: false,
                batch_size: 100,
            },
        )
        .await?;
    assert_eq!(result.resolved_locks, 4, "cleanup_locks resolved count");
    let after = client.current_timestamp().await?;
    let left = client.scan_locks(&after, k("c/")..k("c0"), 100).await?;
    assert!(left.is_empty(), "locks left after cleanup_locks: {left:?}");

    // The 2PC orphan was rolled back, the complete async-commit one committed.
    assert_eq!(read(&client, b"c/1").await?, Some(k("old")));
    assert_eq!(read(&client, b"c/2").await?, Some(k("old")));
    assert_eq!(read(&client, b"c/3").await?, Some(k("ac")));
    assert_eq!(read(&client, b"c/4").await?, Some(k("ac")));
    Ok(())
}

async fn abandoned_locks_scan_locks_and_cleanup_locks(api: Api) -> Result<()> {
    let cluster = start_cluster(api, "").await?;
    let logs = cluster.logs_on_failure();
    abandoned_lock_is_resolved(&cluster, api)
        .await
        .context("lock resolution")?;
    scan_and_cleanup_locks(&cluster, api)
        .await
        .context("scan/cleanup locks")?;
    logs.disarm();
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn txn_abandoned_locks_scan_locks_and_cleanup_locks_v1() -> Result<()> {
    abandoned_locks_scan_locks_and_cleanup_locks(Api::V1).await
}

#[tokio::test(flavor = "multi_thread")]
async fn txn_abandoned_locks_scan_locks_and_cleanup_locks_v2() -> Result<()> {
    abandoned_locks_scan_locks_and_cleanup_locks(Api::V2).await
}

// ---------------------------------------------------------------------------
// GC safe point, store GC, unsafe destroy range

async fn gc_and_unsafe_destroy_range(api: Api) -> Result<()> {
    // The store polls placement's safe point every 300 ms instead of 10 s.
    let cluster = start_cluster(api, "gc-interval-ms = 300\n").await?;
    let logs = cluster.logs_on_failure();
    let client = txn_client(&cluster, api).await?;

    // Versions on both sides of the safe point.
    commit_puts(
        &client,
        &[
            (k("g/k"), k("v1")),
            (k("g/keep"), k("kept")),
            (k("g/gone"), k("x")),
        ],
    )
    .await?;
    let mid = client.current_timestamp().await?;
    commit_puts(&client, &[(k("g/k"), k("v2"))]).await?;
    let mut txn = client.begin_with_options(optimistic()).await?;
    txn.delete(k("g/gone")).await?;
    txn.commit().await?;
    let mut old = client.snapshot(mid.clone(), optimistic());
    assert_eq!(
        old.get(k("g/k")).await?,
        Some(k("v1")),
        "old version before GC"
    );
    assert_eq!(old.get(k("g/gone")).await?, Some(k("x")));

    let safepoint = client.current_timestamp().await?;
    assert!(
        client.gc(safepoint.clone()).await?,
        "gc() did not set the requested safe point"
    );
    assert_eq!(
        gc_safe_point(&cluster).await?,
        safepoint.version(),
        "placement's safe point"
    );
    // The safe point never moves backwards.
    let older = ts_from(safepoint.version() - (1 << 18));
    assert!(
        !client.gc(older).await?,
        "gc() with an older safe point reported success"
    );
    assert_eq!(
        gc_safe_point(&cluster).await?,
        safepoint.version(),
        "safe point moved back"
    );

    // The store's GC worker removes versions hidden below the safe point but
    // keeps the newest version at or below it.
    let mid_ts = mid.clone();
    let client_ref = &client;
    eventually(
        Duration::from_secs(30),
        "store GC removed old versions",
        move || {
            let mid = mid_ts.clone();
            async move {
                let mut old = client_ref.snapshot(mid, optimistic());
                let k_old = old.get(k("g/k")).await.ok().flatten();
                let gone_old = old.get(k("g/gone")).await.ok().flatten();
                Ok(k_old.is_none() && gone_old.is_none())
            }
        },
    )
    .await?;
    assert_eq!(
        read(&client, b"g/k").await?,
        Some(k("v2")),
        "GC removed the live version"
    );
    assert_eq!(
        read(&client, b"g/keep").await?,
        Some(k("kept")),
        "GC removed an only version"
    );
    assert_eq!(read(&client, b"g/gone").await?, None);
    let mut at_safepoint = client.snapshot(safepoint.clone(), optimistic());
    assert_eq!(at_safepoint.get(k("g/k")).await?, Some(k("v2")));
    assert_eq!(at_safepoint.get(k("g/keep")).await?, Some(k("kept")));
    // Writes after GC still work.
    commit_puts(&client, &[(k("g/k"), k("v3"))]).await?;
    assert_eq!(read(&client, b"g/k").await?, Some(k("v3")));

    // unsafe_destroy_range removes every version in its range, and only there.
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = ["u/a/0", "u/a/1", "u/a/2", "u/b/0", "u/b/1"]
        .iter()
        .map(|key| (k(key), k("data")))
        .collect();
    commit_puts(&client, &pairs).await?;
    commit_puts(&client, &[(k("u/a/0"), k("data-v2"))]).await?;
    wait_for_no_locks(&client, b"u/", b"u0").await?;
    let before_destroy = client.current_timestamp().await?;
    client.unsafe_destroy_range(k("u/a")..k("u/b")).await?;
    let scan = |client: &TransactionClient, ts| {
        let mut snapshot = client.snapshot(ts, optimistic());
        async move {
            let pairs: Vec<KvPair> = snapshot.scan(k("u/")..k("u0"), 100).await?.collect();
            anyhow::Ok(keys_of(&pairs))
        }
    };
    let now = client.current_timestamp().await?;
    assert_eq!(
        scan(&client, now).await?,
        ["u/b/0", "u/b/1"],
        "after destroy"
    );
    assert_eq!(
        scan(&client, before_destroy).await?,
        ["u/b/0", "u/b/1"],
        "destroyed range still readable at an older ts"
    );
    assert_eq!(
        read(&client, b"g/k").await?,
        Some(k("v3")),
        "unsafe_destroy_range touched a key outside its range"
    );
    // The range is usable again.
    commit_puts(&client, &[(k("u/a/0"), k("again"))]).await?;
    assert_eq!(read(&client, b"u/a/0").await?, Some(k("again")));
    logs.disarm();
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn txn_gc_and_unsafe_destroy_range_v1() -> Result<()> {
    gc_and_unsafe_destroy_range(Api::V1).await
}

#[tokio::test(flavor = "multi_thread")]
async fn txn_gc_and_unsafe_destroy_range_v2() -> Result<()> {
    gc_and_unsafe_destroy_range(Api::V2).await
}
