//! Replicated Regions on real processes: three storage nodes, every Region
//! on three of them, tiny split thresholds so data spreads over many
//! Regions, and faults: SIGKILL of the store leading the most Regions under
//! concurrent writes, and a store cut off from the others.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use common::{eventually, raw_client, Api};
use parking_lot::Mutex;
use shale_e2e::{http_get, http_request_with_body, Cluster};
use tikv_client::RawClient;

/// Splits Regions past 7 keys (as TiKV's client CI does) and checks often;
/// Raft and heartbeats fast enough for tests.
const STORE_CONFIG: &str = "region-split-keys = 7\n\
split-check-interval-ms = 200\n\
heartbeat-interval-ms = 300\n\
raft-heartbeat-interval-ms = 100\n\
raft-election-timeout-ms = 1000\n\
allow-fault-injection = true\n";

fn key(i: usize) -> Vec<u8> {
    format!("rep/{i:05}").into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    format!("value-{i}").into_bytes()
}

/// Runs `op` until it succeeds, for up to a minute. tikv-client 0.4 gives
/// up after about 1.5 s of Region errors (an election after a fault, a
/// leader waiting for a new replica's snapshot before it can confirm a
/// read), which is shorter than those take here; the operations retried
/// are idempotent.
async fn retrying<T, F, Fut>(what: &str, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = tikv_client::Result<T>>,
{
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    // Each distinct error is printed once, so a failure's report stays
    // near the top of the output.
    let mut last_error = String::new();
    let mut attempts = 0;
    loop {
        attempts += 1;
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() < deadline => {
                let error = e.to_string();
                if error != last_error {
                    eprintln!("{what}: retrying after {error}");
                    last_error = error;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("{what}: {attempts} attempts in {:?}", started.elapsed())
                })
            }
        }
    }
}

/// Regions and how many peers each has, from placement's HTTP API.
async fn region_peer_counts(cluster: &Cluster) -> Result<Vec<usize>> {
    let regions = common::regions(cluster).await?;
    Ok(regions.iter().map(|r| r.peers.len()).collect())
}

async fn wait_fully_replicated(cluster: &Cluster, min_regions: usize) -> Result<usize> {
    eventually(
        Duration::from_secs(120),
        "every Region on 3 stores",
        || async move {
            let peers = region_peer_counts(cluster).await?;
            Ok(peers.len() >= min_regions && peers.iter().all(|&p| p == 3))
        },
    )
    .await?;
    Ok(region_peer_counts(cluster).await?.len())
}

async fn scan_all(client: &RawClient) -> Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut start = b"rep/".to_vec();
    loop {
        let batch = client.scan(start.clone()..b"rep0".to_vec(), 100).await?;
        let Some(last) = batch.last() else {
            return Ok(out);
        };
        let mut next = Vec::from(last.key().clone());
        next.push(0);
        let n = batch.len();
        for pair in batch {
            let k = Vec::from(pair.key().clone());
            // tikv-client 0.4 wraps a V1 scan around at the last Region:
            // a key not after the cursor means the scan is done.
            if k < start {
                return Ok(out);
            }
            out.insert(k, pair.value().clone());
        }
        if n < 100 {
            return Ok(out);
        }
        start = next;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn three_stores_hold_every_region_three_times() -> Result<()> {
    let cluster = Cluster::start_with_store_config(3, STORE_CONFIG).await?;
    let logs = cluster.logs_on_failure();
    let client = raw_client(&cluster, Api::V1).await?;
    let mut expected = BTreeMap::new();
    for chunk in (0..400).collect::<Vec<_>>().chunks(20) {
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = chunk.iter().map(|&i| (key(i), value(i))).collect();
        retrying("batch put", || client.batch_put(pairs.clone())).await?;
        expected.extend(pairs);
    }
    for i in (0..400).step_by(7) {
        retrying("delete", || client.delete(key(i))).await?;
        expected.remove(&key(i));
    }
    let regions = wait_fully_replicated(&cluster, 40).await?;
    eprintln!("{regions} Regions, each on 3 stores");
    let mut scanned = scan_all(&client).await;
    for _ in 0..10 {
        if scanned.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        scanned = scan_all(&client).await;
    }
    ensure!(scanned? == expected, "scan differs from what was written");
    for (k, v) in expected.iter().take(50) {
        let got = retrying("get", || client.get(k.clone())).await?;
        ensure!(got.as_ref() == Some(v), "point read differs");
    }
    every_replica_reports_its_raft_state(&cluster).await?;
    logs.disarm();
    Ok(())
}

/// Each store's `/region/{id}` names the Region's three voters, and the
/// replicas agree on one leader; a Region a store does not hold is a 404.
async fn every_replica_reports_its_raft_state(cluster: &Cluster) -> Result<()> {
    let regions = common::regions(cluster).await?;
    for region in regions.iter().take(10) {
        eventually(Duration::from_secs(10), "one leader per Region", || {
            let id = region.id;
            async move {
                let mut leaders = Vec::new();
                let mut leader_seen = Vec::new();
                for addr in &cluster.store_status_addrs {
                    let (code, body) = http_get(addr, &format!("/region/{id}")).await?;
                    ensure!(code == 200, "region {id} on {addr}: {code} {body}");
                    let replica: serde_json::Value = serde_json::from_str(&body)?;
                    ensure!(
                        replica["voters"].as_array().map(Vec::len) == Some(3),
                        "region {id} on {addr}: {body}"
                    );
                    if replica["raft_state"] == "Leader" {
                        leaders.push(replica["peer_id"].as_u64());
                    }
                    leader_seen.push(replica["leader_peer_id"].as_u64());
                }
                Ok(leaders.len() == 1 && leader_seen.iter().all(|l| *l == leaders[0]))
            }
        })
        .await?;
    }
    let unknown = regions.iter().map(|r| r.id).max().unwrap_or(0) + 1_000_000;
    let (code, _) = http_get(
        &cluster.store_status_addrs[0],
        &format!("/region/{unknown}"),
    )
    .await?;
    ensure!(code == 404, "an unknown Region answered {code}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_busiest_store_loses_no_acknowledged_write() -> Result<()> {
    let mut cluster = Cluster::start_with_store_config(3, STORE_CONFIG).await?;
    let logs = cluster.logs_on_failure();
    let mut client = raw_client(&cluster, Api::V1).await?;
    // Spread data and leaders first.
    let seed: Vec<(Vec<u8>, Vec<u8>)> = (0..100).map(|i| (key(i), value(i))).collect();
    retrying("seed", || client.batch_put(seed.clone())).await?;
    wait_fully_replicated(&cluster, 8).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(usize, Instant)>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..4 {
        let (client, stop, acked) = (client.clone(), stop.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 100 + w;
            while !stop.load(Ordering::Relaxed) {
                let put =
                    tokio::time::timeout(Duration::from_secs(30), client.put(key(i), value(i)));
                if let Ok(Ok(())) = put.await {
                    acked.lock().push((i, Instant::now()));
                    i += 4;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let victim = common::busiest_store(&cluster).await?;
    let killed_at = Instant::now();
    cluster.kill_store(victim)?;
    eventually(Duration::from_secs(60), "writes resume", || {
        let resumed = acked
            .lock()
            .iter()
            .any(|(_, at)| *at > killed_at + Duration::from_millis(1));
        async move { Ok(resumed) }
    })
    .await?;
    let resumed = acked
        .lock()
        .iter()
        .map(|(_, at)| *at)
        .filter(|at| *at > killed_at)
        .min()
        .context("resumed")?
        - killed_at;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await?;
    }
    let acked: Vec<usize> = acked.lock().iter().map(|(i, _)| *i).collect();
    eprintln!(
        "store {victim} killed: writes resumed after {resumed:?}; {} writes acknowledged",
        acked.len()
    );
    for i in acked.iter().copied().chain(0..100usize) {
        let got = read_or_report(&cluster, &mut client, "read back", i).await?;
        ensure!(got.as_deref() == Some(value(i).as_slice()), "key {i} lost");
    }

    // The store comes back and catches up.
    cluster.restart_store(victim).await?;
    let status_addr = cluster.store_status_addrs[victim].clone();
    eventually(
        Duration::from_secs(60),
        "restarted store holds its Regions",
        || {
            let addr = status_addr.clone();
            async move {
                let (code, body) = http_get(&addr, "/status").await?;
                Ok(code == 200
                    && body.contains("region_ids\":[")
                    && !body.contains("region_ids\":[]"))
            }
        },
    )
    .await?;
    // Evict the leaders of the other stores: the restarted one must lead
    // every Region (a transfer needs it caught up), and serve every
    // acknowledged write itself.
    let victim_id = common::store_id(&cluster, victim).await?;
    for other in (0..cluster.store_addrs.len()).filter(|&i| i != victim) {
        let id = common::store_id(&cluster, other).await?;
        let (code, body) = http_request_with_body(
            &cluster.pd_addr,
            "POST",
            "/pd/api/v1/schedulers",
            &format!(r#"{{"name": "evict-leader-scheduler", "store_id": {id}}}"#),
        )
        .await?;
        ensure!(code == 200, "evict leaders of store {id}: {code} {body}");
    }
    until_store_counts(
        &cluster,
        Duration::from_secs(120),
        "the restarted store leads every Region",
        |counts| {
            counts.iter().all(|(id, _, regions, leaders)| {
                if *id == victim_id {
                    leaders == regions
                } else {
                    *leaders == 0
                }
            })
        },
    )
    .await?;
    for i in acked.iter().copied().chain(0..100usize) {
        let got = read_or_report(
            &cluster,
            &mut client,
            "read back from the restarted store",
            i,
        )
        .await?;
        if got.as_deref() != Some(value(i).as_slice()) {
            anyhow::bail!(
                "key {i} missing on the restarted store\n{}",
                what_each_store_has(&cluster, &key(i)).await?
            );
        }
    }
    logs.disarm();
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_isolated_store_serves_nothing_stale_and_heals() -> Result<()> {
    let cluster = Cluster::start_with_store_config(3, STORE_CONFIG).await?;
    let logs = cluster.logs_on_failure();
    let client = raw_client(&cluster, Api::V1).await?;
    retrying("put", || client.put(key(1), b"before".to_vec())).await?;
    wait_fully_replicated(&cluster, 1).await?;
    let victim = common::busiest_store(&cluster).await?;
    let (code, body) = http_request_with_body(
        &cluster.store_status_addrs[victim],
        "POST",
        "/debug/transport",
        r#"{"isolated": true}"#,
    )
    .await?;
    ensure!(code == 200, "isolate: {code} {body}");
    // The majority takes over and serves the new value.
    let started = Instant::now();
    retrying("put after isolation", || {
        client.put(key(1), b"after".to_vec())
    })
    .await?;
    eprintln!(
        "write after isolating the leader's store took {:?}",
        started.elapsed()
    );
    let got = retrying("get after isolation", || client.get(key(1))).await?;
    ensure!(got.as_deref() == Some(&b"after"[..]));
    // The isolated store answers no read with the old value: it is no
    // longer leader (or cannot confirm it), so a direct read is refused.
    let mut target = common::Target::new(&cluster, Api::V1).await?;
    target.route(common::KeyMode::Raw, &key(1)).await?;
    let mut ctx = target.ctx();
    ctx.peer = None;
    let mut isolated = common::tikv_stub(&cluster.store_addrs[victim]).await?;
    let stale = isolated
        .raw_get(shale_proto::kvrpcpb::RawGetRequest {
            context: Some(ctx),
            key: key(1),
            ..Default::default()
        })
        .await?
        .into_inner();
    ensure!(
        stale.region_error.is_some() || stale.value == b"after",
        "the isolated store served a stale read: {stale:?}"
    );
    let (code, _) = http_request_with_body(
        &cluster.store_status_addrs[victim],
        "POST",
        "/debug/transport",
        r#"{"isolated": false}"#,
    )
    .await?;
    ensure!(code == 200);
    retrying("put after healing", || {
        client.put(key(2), b"healed".to_vec())
    })
    .await?;
    let got = retrying("get after healing", || client.get(key(1))).await?;
    ensure!(got.as_deref() == Some(&b"after"[..]));
    logs.disarm();
    Ok(())
}

/// Reads key `i`, retrying for up to a minute; when that fails, says where
/// each store stands.
///
/// tikv-client 0.4 keeps a Region's cached leader when it cannot even
/// connect to that leader's store (only an error on an open connection
/// evicts the entry), so once its cache names a dead store it fails at once
/// on every request to the Region and never asks placement again. A new
/// client is made then, as an application would have to.
async fn read_or_report(
    cluster: &Cluster,
    client: &mut RawClient,
    what: &str,
    i: usize,
) -> Result<Option<Vec<u8>>> {
    let started = Instant::now();
    let mut last_error = String::new();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let error = match client.get(key(i)).await {
            Ok(got) => return Ok(got),
            Err(e) => e,
        };
        if started.elapsed() > Duration::from_secs(60) {
            anyhow::bail!(
                "{what}: {attempts} attempts in {:?}: {error}: key {i}\n{}",
                started.elapsed(),
                what_each_store_has(cluster, &key(i)).await?
            );
        }
        if matches!(error, tikv_client::Error::Grpc(_)) {
            *client = raw_client(cluster, Api::V1).await?;
        }
        let error = error.to_string();
        if error != last_error {
            eprintln!("{what}: retrying after {error}");
            last_error = error;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// For a failure report: placement's Region for `key`, and what each store's
/// replica of it answers to a direct read (a dead store's error included).
async fn what_each_store_has(cluster: &Cluster, key: &[u8]) -> Result<String> {
    let (mut pd, header) = common::pd_stub(cluster).await?;
    let routed = pd
        .get_region(shale_proto::pdpb::GetRegionRequest {
            header: Some(header),
            region_key: key.to_vec(),
            need_buckets: false,
        })
        .await?
        .into_inner();
    let region = routed.region.unwrap_or_default();
    let mut out = format!(
        "placement: region {:?}, leader {:?}\n",
        region, routed.leader
    );
    for (i, addr) in cluster.store_addrs.iter().enumerate() {
        let ctx = shale_proto::kvrpcpb::Context {
            region_id: region.id,
            region_epoch: region.region_epoch,
            ..Default::default()
        };
        let answer = match common::tikv_stub(addr).await {
            Ok(mut stub) => stub
                .raw_get(shale_proto::kvrpcpb::RawGetRequest {
                    context: Some(ctx),
                    key: key.to_vec(),
                    ..Default::default()
                })
                .await
                .map(|r| format!("{:?}", r.into_inner()))
                .unwrap_or_else(|e| e.to_string()),
            Err(e) => format!("{e:#}"),
        };
        let raft = http_get(
            &cluster.store_status_addrs[i],
            &format!("/region/{}", region.id),
        )
        .await
        .map(|(_, body)| body)
        .unwrap_or_else(|e| format!("{e:#}"));
        out.push_str(&format!("store #{i}: {answer}\n  replica {raft}\n"));
    }
    Ok(out)
}

/// One store as placement's `/stores` lists it: id, state name, Region
/// count, leader count.
type StoreCount = (u64, String, u64, u64);

/// Waits until placement's per-store counts satisfy `done`.
async fn until_store_counts(
    cluster: &Cluster,
    timeout: Duration,
    what: &str,
    done: impl Fn(&[StoreCount]) -> bool,
) -> Result<()> {
    let done = &done;
    eventually(timeout, what, || async move {
        Ok(done(&store_counts(cluster).await?))
    })
    .await
}

/// Regions and leaders per store, from placement's `/stores` (Tombstone
/// stores included: PD lists only Up and Offline unless asked).
async fn store_counts(cluster: &Cluster) -> Result<Vec<StoreCount>> {
    let (code, body) = http_get(
        &cluster.pd_addr,
        "/pd/api/v1/stores?state=0&state=1&state=2",
    )
    .await?;
    ensure!(code == 200, "stores: {code} {body}");
    let json: serde_json::Value = serde_json::from_str(&body)?;
    let stores = json["stores"].as_array().context("stores")?;
    Ok(stores
        .iter()
        .map(|s| {
            (
                s["store"]["id"].as_u64().unwrap_or(0),
                s["store"]["state_name"].as_str().unwrap_or("").to_string(),
                s["status"]["region_count"].as_u64().unwrap_or(0),
                s["status"]["leader_count"].as_u64().unwrap_or(0),
            )
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fourth_store_gets_regions_and_a_deleted_store_is_drained() -> Result<()> {
    let mut cluster = Cluster::start_with_store_config(3, STORE_CONFIG).await?;
    let logs = cluster.logs_on_failure();
    let mut client = raw_client(&cluster, Api::V1).await?;
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..300).map(|i| (key(i), value(i))).collect();
    client.batch_put(pairs.clone()).await?;
    wait_fully_replicated(&cluster, 20).await?;

    // A 4th store: Regions and leaders move onto it.
    let fourth = cluster.add_store().await?;
    let fourth_id = common::store_id(&cluster, fourth).await?;
    until_store_counts(
        &cluster,
        Duration::from_secs(120),
        "regions and leaders rebalance",
        |counts| {
            counts
                .iter()
                .any(|(id, _, regions, leaders)| *id == fourth_id && *regions >= 5 && *leaders >= 1)
        },
    )
    .await?;
    eprintln!("after adding a store: {:?}", store_counts(&cluster).await?);

    // Delete the first store: its Regions move away, it becomes Tombstone.
    let first_id = common::store_id(&cluster, 0).await?;
    let (code, body) = shale_e2e::http_request(
        &cluster.pd_addr,
        "DELETE",
        &format!("/pd/api/v1/store/{first_id}"),
    )
    .await?;
    ensure!(code == 200, "delete store: {code} {body}");
    until_store_counts(
        &cluster,
        Duration::from_secs(180),
        "deleted store becomes Tombstone",
        |counts| {
            counts
                .iter()
                .any(|(id, state, _, _)| *id == first_id && state == "Tombstone")
        },
    )
    .await?;
    // Nothing lost, and every Region still has three replicas.
    wait_fully_replicated(&cluster, 20).await?;
    for (i, (k, v)) in pairs.iter().enumerate() {
        // Leaders may still be moving off the drained store.
        let got = read_or_report(&cluster, &mut client, "read after the drain", i).await?;
        if got.as_ref() != Some(v) {
            anyhow::bail!(
                "{} lost: read {:?}\n{}",
                String::from_utf8_lossy(k),
                got.map(|g| String::from_utf8_lossy(&g).into_owned()),
                what_each_store_has(&cluster, k).await?
            );
        }
    }
    logs.disarm();
    Ok(())
}
