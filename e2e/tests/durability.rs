//! Crash safety on real processes: acknowledged writes survive `kill -9` of
//! the storage node and of placement, and timestamps never go backwards
//! across a placement crash.

mod common;

use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use common::{
    commit_puts, eventually, k, optimistic, raw_client, read, region_for, txn_client, Api,
    BOTH_APIS,
};
use shale_e2e::Cluster;
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
    // The limit is exactly the number of keys: tikv-client 0.4 repeats a
    // scan that ends inside a Region with an empty end key (see raw.rs).
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

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_writes_survive_storage_node_kill9() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    let logs = cluster.logs_on_failure();
    let region_before = region_for(&cluster, b"").await?.0;
    let mut clients = Vec::new();
    for api in BOTH_APIS {
        clients.push((
            api,
            raw_client(&cluster, api).await?,
            txn_client(&cluster, api).await?,
        ));
    }

    for round in 0..2 {
        for (api, raw, txn) in &clients {
            write_round(raw, txn, round)
                .await
                .with_context(|| format!("{api:?} writing round {round}"))?;
        }
        // Crash right after the last acknowledgement: async-commit secondaries
        // may still be locks, which readers must resolve after the restart.
        cluster.kill_store(0)?;
        cluster.restart_store(0).await?;

        for (api, raw, txn) in &clients {
            // The clients that were connected during the crash...
            for r in 0..=round {
                eventually(
                    Duration::from_secs(30),
                    "old clients read after restart",
                    move || async move {
                        verify_round(raw, txn, r).await?;
                        Ok(true)
                    },
                )
                .await
                .with_context(|| format!("{api:?} old client, round {r}"))?;
            }
            // ...and new ones.
            let raw = raw_client(&cluster, *api).await?;
            let txn = txn_client(&cluster, *api).await?;
            for r in 0..=round {
                verify_round(&raw, &txn, r)
                    .await
                    .with_context(|| format!("{api:?} new client, round {r}"))?;
            }
        }
    }

    // The store kept its identity and its Region.
    let region_after = region_for(&cluster, b"").await?.0;
    assert_eq!(
        region_before.id, region_after.id,
        "the Region changed across restarts"
    );
    assert_eq!(
        common::store_id(&cluster, 0).await?,
        region_after.peers[0].store_id
    );
    logs.disarm();
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_survives_placement_kill9_and_timestamps_keep_increasing() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    let logs = cluster.logs_on_failure();
    let mut clients = Vec::new();
    for api in BOTH_APIS {
        let raw = raw_client(&cluster, api).await?;
        let txn = txn_client(&cluster, api).await?;
        write_round(&raw, &txn, 0)
            .await
            .with_context(|| format!("{api:?} writing"))?;
        clients.push((api, raw, txn));
    }

    // Burn through timestamps, then crash placement right after the last one.
    let client = &clients[0].2;
    let mut last = client.current_timestamp().await?.version();
    for _ in 0..2000 {
        let ts = client.current_timestamp().await?.version();
        assert!(ts > last, "TSO went backwards: {ts} after {last}");
        last = ts;
    }
    cluster.kill_placement()?;
    cluster.restart_placement().await?;

    // A fresh client gets a larger timestamp...
    let fresh = txn_client(&cluster, Api::V1).await?;
    let after = fresh.current_timestamp().await?.version();
    assert!(
        after > last,
        "timestamp {after} after restart is not above {last}"
    );
    // ...and so does the client that was connected during the crash.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let reconnected = loop {
        match client.current_timestamp().await {
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
    let fresh2 = txn_client(&cluster, Api::V1).await?;
    let after_second = fresh2.current_timestamp().await?.version();
    assert!(
        after_second > before_second,
        "{after_second} <= {before_second} after a second crash"
    );

    // Data is intact and the cluster keeps serving reads and writes, through
    // both the old and new clients.
    for (api, raw, txn) in &clients {
        eventually(
            Duration::from_secs(30),
            "old clients serve after placement restart",
            move || async move {
                verify_round(raw, txn, 0).await?;
                Ok(true)
            },
        )
        .await
        .with_context(|| format!("{api:?} old client"))?;
        let raw2 = raw_client(&cluster, *api).await?;
        let txn2 = txn_client(&cluster, *api).await?;
        verify_round(&raw2, &txn2, 0)
            .await
            .with_context(|| format!("{api:?} new client"))?;
        write_round(&raw2, &txn2, 1)
            .await
            .with_context(|| format!("{api:?} writing after placement restart"))?;
        verify_round(raw, txn, 1)
            .await
            .with_context(|| format!("{api:?} old client reading new writes"))?;
    }

    // Placement still knows the store and the Region.
    let (code, body) = shale_e2e::http_get(&cluster.pd_addr, "/pd/api/v1/stores").await?;
    assert_eq!(code, 200, "{body}");
    let store_id = common::store_id(&cluster, 0).await?;
    assert!(
        body.contains(&store_id.to_string()),
        "store {store_id} missing from {body}"
    );
    let region = region_for(&cluster, b"").await?.0;
    assert!(region.peers.iter().any(|p| p.store_id == store_id));
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
