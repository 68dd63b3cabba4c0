//! Crash safety on real processes, in API V1 (on a default cluster) and API
//! V2 (on a cluster started with `api_version = 2`, whose keyspace has Regions
//! of its own): acknowledged writes survive `kill -9` of the storage node and
//! of placement, and timestamps never go backwards across a placement crash.

mod common;

use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use common::{
    commit_puts, eventually, k, optimistic, raw_client, read, regions, start_cluster, txn_client,
    Api,
};
use tikv_client::{KvPair, RawClient, TimestampExt, TransactionClient};

const RAW_KEYS: usize = 300;
const TXN_KEYS: usize = 60;

fn raw_key(round: usize, i: usize) -> Vec<u8> {
    format!("raw/{round}/{i:04}").into_bytes()
}

fn txn_key(round: usize, i: usize) -> Vec<u8> {
    format!("txn/{round}/{i:04}").into_bytes()
}

fn value(round: usize, i: usize) -> Vec<u8> {
    format!("value-{round}-{i}-{}", "x".repeat(i % 97)).into_bytes()
}

/// Writes one round of data every way a client can, each acknowledged
/// before the function returns.
async fn write_round(raw: &RawClient, txn: &TransactionClient, round: usize) -> Result<()> {
    // Raw: single puts, a batch, a delete, a CAS.
    for i in 0..20 {
        raw.put(raw_key(round, i), value(round, i)).await?;
    }
    let batch: Vec<KvPair> = (20..RAW_KEYS)
        .map(|i| KvPair::new(raw_key(round, i), value(round, i)))
        .collect();
    raw.batch_put(batch).await?;
    raw.put(format!("raw/{round}/deleted").into_bytes(), k("soon gone"))
        .await?;
    raw.delete(format!("raw/{round}/deleted").into_bytes())
        .await?;

    // Transactions: plain 2PC (several keys), async commit and 1PC.
    for chunk in (0..TXN_KEYS).collect::<Vec<_>>().chunks(10) {
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = chunk
            .iter()
            .map(|&i| (txn_key(round, i), value(round, i)))
            .collect();
        commit_puts(txn, &pairs).await?;
    }
    let mut t = txn
        .begin_with_options(optimistic().use_async_commit())
        .await?;
    for i in 0..5 {
        t.put(
            format!("txn/{round}/async/{i}").into_bytes(),
            value(round, i),
        )
        .await?;
    }
    t.commit().await?;
    let mut t = txn.begin_with_options(optimistic().try_one_pc()).await?;
    t.put(format!("txn/{round}/1pc").into_bytes(), value(round, 1))
        .await?;
    t.commit().await?;
    let mut t = txn.begin_with_options(optimistic()).await?;
    t.delete(txn_key(round, 0)).await?;
    t.commit().await?;
    Ok(())
}

/// Reads back everything `write_round` acknowledged for `round`.
async fn verify_round(raw: &RawClient, txn: &TransactionClient, round: usize) -> Result<()> {
    // The limit is exactly the number of keys: under API V1 tikv-client 0.4
    // repeats a scan that ends inside a Region with an empty end key (see
    // raw.rs).
    let scanned = raw
        .scan(
            format!("raw/{round}/").into_bytes()..format!("raw/{round}0").into_bytes(),
            RAW_KEYS as u32,
        )
        .await?;
    ensure!(
        scanned.len() == RAW_KEYS,
        "round {round}: {} raw keys survived, expected {RAW_KEYS}",
        scanned.len()
    );
    for (i, pair) in scanned.iter().enumerate() {
        ensure!(
            Vec::<u8>::from(pair.key().clone()) == raw_key(round, i)
                && pair.value() == &value(round, i),
            "round {round}: raw key {i} wrong after restart"
        );
    }
    ensure!(raw.get(raw_key(round, 7)).await? == Some(value(round, 7)));
    ensure!(
        raw.get(format!("raw/{round}/deleted").into_bytes())
            .await?
            .is_none(),
        "round {round}: an acknowledged raw delete came back"
    );

    let ts = txn.current_timestamp().await?;
    let mut snapshot = txn.snapshot(ts, optimistic());
    let pairs: Vec<KvPair> = snapshot
        .scan(txn_key(round, 0)..=txn_key(round, TXN_KEYS), 10_000)
        .await?
        .collect();
    ensure!(
        pairs.len() == TXN_KEYS - 1,
        "round {round}: {} txn keys survived, expected {}",
        pairs.len(),
        TXN_KEYS - 1
    );
    for (pair, i) in pairs.iter().zip(1..) {
        ensure!(
            Vec::<u8>::from(pair.key().clone()) == txn_key(round, i)
                && pair.value() == &value(round, i),
            "round {round}: txn key {i} wrong after restart"
        );
    }
    ensure!(
        read(txn, &txn_key(round, 0)).await?.is_none(),
        "round {round}: an acknowledged txn delete came back"
    );
    for i in 0..5 {
        let key = format!("txn/{round}/async/{i}").into_bytes();
        ensure!(
            read(txn, &key).await? == Some(value(round, i)),
            "round {round}: async-commit key {i} lost"
        );
    }
    ensure!(
        read(txn, format!("txn/{round}/1pc").as_bytes()).await? == Some(value(round, 1)),
        "round {round}: 1PC key lost"
    );
    Ok(())
}

/// (id, epoch version, start key, end key) of every Region, for comparison.
type Layout = Vec<(u64, u64, Vec<u8>, Vec<u8>)>;

async fn layout(cluster: &shale_e2e::Cluster) -> Result<Layout> {
    Ok(regions(cluster)
        .await?
        .into_iter()
        .map(|r| {
            let version = r.region_epoch.map(|e| e.version).unwrap_or_default();
            (r.id, version, r.start_key, r.end_key)
        })
        .collect())
}

async fn acknowledged_writes_survive_storage_node_kill9(api: Api) -> Result<()> {
    let mut cluster = start_cluster(api, "").await?;
    let logs = cluster.logs_on_failure();
    let layout_before = layout(&cluster).await?;
    let raw = raw_client(&cluster, api).await?;
    let txn = txn_client(&cluster, api).await?;

    for round in 0..2 {
        write_round(&raw, &txn, round)
            .await
            .with_context(|| format!("writing round {round}"))?;
        // Crash right after the last acknowledgement: async-commit secondaries
        // may still be locks, which readers must resolve after the restart.
        cluster.kill_store(0)?;
        cluster.restart_store(0).await?;

        // The clients that were connected during the crash...
        for r in 0..=round {
            let (raw, txn) = (&raw, &txn);
            eventually(
                Duration::from_secs(30),
                "old clients read after restart",
                move || async move {
                    verify_round(raw, txn, r).await?;
                    Ok(true)
                },
            )
            .await
            .with_context(|| format!("old client, round {r}"))?;
        }
        // ...and new ones.
        let raw = raw_client(&cluster, api).await?;
        let txn = txn_client(&cluster, api).await?;
        for r in 0..=round {
            verify_round(&raw, &txn, r)
                .await
                .with_context(|| format!("new client, round {r}"))?;
        }
    }

    // The store kept its identity and its Regions (a restart does not split
    // an API V2 cluster again).
    let layout_after = layout(&cluster).await?;
    assert_eq!(
        layout_before, layout_after,
        "the Regions changed across restarts"
    );
    let store_id = common::store_id(&cluster, 0).await?;
    for region in regions(&cluster).await? {
        assert!(
            region.peers.iter().any(|p| p.store_id == store_id),
            "Region {} has no peer on store {store_id}: {region:?}",
            region.id
        );
    }
    logs.disarm();
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_writes_survive_storage_node_kill9_v1() -> Result<()> {
    acknowledged_writes_survive_storage_node_kill9(Api::V1).await
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_writes_survive_storage_node_kill9_v2() -> Result<()> {
    acknowledged_writes_survive_storage_node_kill9(Api::V2).await
}

async fn cluster_survives_placement_kill9(api: Api) -> Result<()> {
    let mut cluster = start_cluster(api, "").await?;
    let logs = cluster.logs_on_failure();
    let layout_before = layout(&cluster).await?;
    let raw = raw_client(&cluster, api).await?;
    let txn = txn_client(&cluster, api).await?;
    write_round(&raw, &txn, 0).await.context("writing")?;

    // Burn through timestamps, then crash placement right after the last one.
    let mut last = txn.current_timestamp().await?.version();
    for _ in 0..2000 {
        let ts = txn.current_timestamp().await?.version();
        assert!(ts > last, "TSO went backwards: {ts} after {last}");
        last = ts;
    }
    cluster.kill_placement()?;
    cluster.restart_placement().await?;

    // A fresh client gets a larger timestamp...
    let fresh = txn_client(&cluster, api).await?;
    let after = fresh.current_timestamp().await?.version();
    assert!(
        after > last,
        "timestamp {after} after restart is not above {last}"
    );
    // ...and so does the client that was connected during the crash.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let reconnected = loop {
        match txn.current_timestamp().await {
            Ok(ts) => break ts.version(),
            Err(e) if std::time::Instant::now() > deadline => {
                return Err(anyhow::Error::from(e).context("old client gets no timestamp"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    assert!(
        reconnected > last,
        "old client's timestamp {reconnected} not above {last}"
    );

    // A second crash in quick succession must not go backwards either.
    let before_second = fresh.current_timestamp().await?.version();
    cluster.kill_placement()?;
    cluster.restart_placement().await?;
    let fresh2 = txn_client(&cluster, api).await?;
    let after_second = fresh2.current_timestamp().await?.version();
    assert!(
        after_second > before_second,
        "{after_second} <= {before_second} after a second crash"
    );

    // Data is intact and the cluster keeps serving reads and writes, through
    // both the old and new clients.
    let (old_raw, old_txn) = (&raw, &txn);
    eventually(
        Duration::from_secs(30),
        "old clients serve after placement restart",
        move || async move {
            verify_round(old_raw, old_txn, 0).await?;
            Ok(true)
        },
    )
    .await
    .context("old client")?;
    let raw2 = raw_client(&cluster, api).await?;
    let txn2 = txn_client(&cluster, api).await?;
    verify_round(&raw2, &txn2, 0).await.context("new client")?;
    write_round(&raw2, &txn2, 1)
        .await
        .context("writing after placement restart")?;
    verify_round(&raw, &txn, 1)
        .await
        .context("old client reading new writes")?;

    // Placement still knows the store and the Regions.
    let (code, body) = shale_e2e::http_get(&cluster.pd_addr, "/pd/api/v1/stores").await?;
    assert_eq!(code, 200, "{body}");
    let store_id = common::store_id(&cluster, 0).await?;
    assert!(
        body.contains(&store_id.to_string()),
        "store {store_id} missing from {body}"
    );
    assert_eq!(
        layout(&cluster).await?,
        layout_before,
        "placement's Regions changed across its crashes"
    );
    for region in regions(&cluster).await? {
        assert!(region.peers.iter().any(|p| p.store_id == store_id));
    }
    // And the safe point it persisted survives too.
    let safepoint = fresh2.current_timestamp().await?;
    assert!(fresh2.gc(safepoint.clone()).await?);
    cluster.kill_placement()?;
    cluster.restart_placement().await?;
    assert_eq!(
        common::gc_safe_point(&cluster).await?,
        safepoint.version(),
        "GC safe point lost in a placement crash"
    );
    logs.disarm();
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_survives_placement_kill9_and_timestamps_keep_increasing_v1() -> Result<()> {
    cluster_survives_placement_kill9(Api::V1).await
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_survives_placement_kill9_and_timestamps_keep_increasing_v2() -> Result<()> {
    cluster_survives_placement_kill9(Api::V2).await
}
