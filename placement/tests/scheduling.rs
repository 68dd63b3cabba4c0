//! Scheduling end to end: a real placement server (or group) and simulated
//! storage nodes that carry out the operators it sends (see
//! `common/sim.rs`). Everything is observed through the PD HTTP API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::group::*;
use common::http::*;
use common::sim::SimCluster;
use common::*;
use serde_json::json;
use shale_placement::duration::ConfigDuration;
use shale_placement::{start, Config, PlacementServer};
use shale_proto::pdpb;

const REGIONS: usize = 12;

fn fast(config: Config) -> Config {
    Config {
        schedule_interval: ConfigDuration::from_millis(50),
        max_store_down_time: ConfigDuration::from_secs(2),
        ..config
    }
}

async fn start_fast(dir: &std::path::Path) -> PlacementServer {
    let config = fast(Config {
        name: "placement-sched".into(),
        data_dir: dir.to_path_buf(),
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        log_level: "warn".into(),
        ..Default::default()
    });
    start(config).await.expect("placement starts")
}

/// One placement member, `store_count` simulated stores, Regions
/// replicated and balanced.
async fn balanced_cluster(server: &PlacementServer, store_count: usize) -> (SimCluster, Vec<u64>) {
    let url = format!("http://{}", server.addr());
    let sim = SimCluster::bootstrap(std::slice::from_ref(&url), REGIONS, 3).await;
    let mut ids = vec![sim.first_store];
    for _ in 1..store_count {
        ids.push(sim.add_store().await);
    }
    wait_balanced(&api(&url), &ids, REGIONS).await;
    (sim, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_are_made_up_and_a_new_store_gets_regions_and_leaders() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_fast(dir.path()).await;
    let base = api(&format!("http://{}", server.addr()));
    // Three stores: every Region gets 3 replicas, leaders spread (4 each).
    let (sim, mut ids) = balanced_cluster(&server, 3).await;
    let rows = stores(&base).await;
    assert!(ids.iter().all(|id| rows[id].regions == 12), "{rows:?}");
    assert!(ids.iter().all(|id| rows[id].leaders == 4), "{rows:?}");

    // A fourth store joins: it ends up with its share of both.
    let new = sim.add_store().await;
    ids.push(new);
    wait_balanced(&base, &ids, REGIONS).await;
    let rows = stores(&base).await;
    assert_eq!(rows[&new].regions, 9, "{rows:?}");
    assert_eq!(rows[&new].leaders, 3, "{rows:?}");
    // Placement's picture is the stores' picture.
    let sim_counts = sim.counts();
    for id in &ids {
        assert_eq!(sim_counts[id].0 as u64, rows[id].regions);
        assert_eq!(sim_counts[id].1 as u64, rows[id].leaders);
    }
    sim.assert_no_violations();
    eventually("operators done", || async {
        let ops = get(&format!("{base}/operators")).await;
        match ops.as_array().map(Vec::len) {
            Some(0) => Ok(()),
            _ => Err(ops.to_string()),
        }
    })
    .await;
    sim.shutdown();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_store_is_drained_then_tombstone() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_fast(dir.path()).await;
    let base = api(&format!("http://{}", server.addr()));
    let (sim, ids) = balanced_cluster(&server, 4).await;
    let regions_before: Vec<(u64, Vec<u8>, Vec<u8>)> = sim
        .regions()
        .into_iter()
        .map(|r| (r.meta.id, r.meta.start_key, r.meta.end_key))
        .collect();
    let gone = ids[3];
    let rest = &ids[..3];

    let (status, body) = call(
        reqwest::Method::DELETE,
        &format!("{base}/store/{gone}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let state = get(&format!("{base}/store/{gone}")).await["store"]["state_name"].clone();
    assert!(state == "Offline" || state == "Tombstone", "{state}");
    // Idempotent while Offline (or already done).
    let (status, _) = call(
        reqwest::Method::DELETE,
        &format!("{base}/store/{gone}"),
        None,
    )
    .await;
    assert!(status == 200 || status == 409, "{status}");

    eventually("drained and tombstone", || async {
        check_replicas(&base, rest, REGIONS).await?;
        let row = stores(&base).await[&gone].clone();
        if row.state == "Tombstone" && row.regions == 0 && row.leaders == 0 {
            Ok(())
        } else {
            Err(format!("{row:?}"))
        }
    })
    .await;
    wait_balanced(&base, rest, REGIONS).await;
    // No data lost: same Regions, same ranges, never under-replicated.
    let regions_after: Vec<(u64, Vec<u8>, Vec<u8>)> = sim
        .regions()
        .into_iter()
        .map(|r| (r.meta.id, r.meta.start_key, r.meta.end_key))
        .collect();
    assert_eq!(regions_before, regions_after);
    sim.assert_no_violations();
    // The store itself is refused from now on.
    eventually("store told it is tombstone", || async {
        if sim.is_tombstoned(gone) {
            Ok(())
        } else {
            Err("still heartbeating".into())
        }
    })
    .await;

    // PD's /stores hides Tombstone stores unless asked.
    let listed = get(&format!("{base}/stores")).await;
    assert_eq!(listed["count"], 3, "{listed}");
    let tombs = get(&format!("{base}/stores?state=2")).await;
    assert_eq!(tombs["stores"][0]["store"]["id"], gone, "{tombs}");

    // Removing another would leave 2 Up stores for 3 replicas: refused.
    let (status, body) = call(
        reqwest::Method::DELETE,
        &format!("{base}/store/{}", rest[0]),
        None,
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("max-replicas"),
        "{body}"
    );
    assert_eq!(stores(&base).await[&rest[0]].state, "Up");
    // A Tombstone store cannot be removed again or brought back.
    let (status, body) = call(
        reqwest::Method::DELETE,
        &format!("{base}/store/{gone}"),
        None,
    )
    .await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = call(
        reqwest::Method::POST,
        &format!("{base}/store/{gone}/state?state=Up"),
        None,
    )
    .await;
    assert_eq!(status, 409);
    sim.shutdown();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn evicted_leaders_leave_and_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_fast(dir.path()).await;
    let base = api(&format!("http://{}", server.addr()));
    let (sim, ids) = balanced_cluster(&server, 3).await;
    let evicted = ids[0];
    let body = json!({ "name": "evict-leader-scheduler", "store_id": evicted }).to_string();
    let (status, reply) = call(
        reqwest::Method::POST,
        &format!("{base}/schedulers"),
        Some(&body),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let names = get(&format!("{base}/schedulers")).await;
    assert!(
        names
            .as_array()
            .unwrap()
            .contains(&json!(format!("evict-leader-scheduler-{evicted}"))),
        "{names}"
    );
    eventually("no leaders on the evicted store", || async {
        let rows = stores(&base).await;
        match rows[&evicted].leaders {
            0 => Ok(()),
            n => Err(format!("{n} leaders left")),
        }
    })
    .await;
    // It keeps its Regions, and stays leaderless while evicted.
    let rows = stores(&base).await;
    assert_eq!(rows[&evicted].regions, 12);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stores(&base).await[&evicted].leaders, 0);

    let url = format!("{base}/schedulers/evict-leader-scheduler-{evicted}");
    let (status, reply) = call(reqwest::Method::DELETE, &url, None).await;
    assert_eq!(status, 200, "{reply}");
    wait_balanced(&base, &ids, REGIONS).await;
    assert_eq!(stores(&base).await[&evicted].leaders, 4);
    let (status, _) = call(reqwest::Method::DELETE, &url, None).await;
    assert_eq!(status, 404);
    sim.assert_no_violations();
    sim.shutdown();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peers_on_a_down_store_are_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_fast(dir.path()).await;
    let base = api(&format!("http://{}", server.addr()));
    let (sim, ids) = balanced_cluster(&server, 4).await;
    let dead = ids[3];
    sim.stop_store(dead);
    // max-store-down-time is 2 s here: then its peers move elsewhere.
    eventually("down store emptied", || async {
        check_replicas(&base, &ids[..3], REGIONS).await?;
        let row = stores(&base).await[&dead].clone();
        if row.state == "Down" && row.regions == 0 {
            Ok(())
        } else {
            Err(format!("{row:?}"))
        }
    })
    .await;
    sim.assert_no_violations();
    sim.shutdown();
    server.shutdown().await;
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_fast(dir.path()).await;
    let base = api(&format!("http://{}", server.addr()));
    let cid = server.cluster_id();
    let mut client = pd(&server).await;

    // Before bootstrap there are no stores.
    let (status, body) = call(reqwest::Method::DELETE, &format!("{base}/store/1"), None).await;
    assert_eq!(status, 404, "{body}");
    let boot = bootstrap(&mut client, cid).await;
    let store = boot.store_id;

    let cases: Vec<(reqwest::Method, String, Option<&str>, u16)> = vec![
        (
            reqwest::Method::POST,
            format!("{base}/schedulers"),
            Some("{not json"),
            400,
        ),
        (
            reqwest::Method::POST,
            format!("{base}/schedulers"),
            Some("[]"),
            400,
        ),
        (
            reqwest::Method::POST,
            format!("{base}/schedulers"),
            Some(r#"{"name":"shuffle-region-scheduler"}"#),
            400,
        ),
        (
            reqwest::Method::POST,
            format!("{base}/schedulers"),
            Some(r#"{"name":"evict-leader-scheduler"}"#),
            400,
        ),
        (
            reqwest::Method::POST,
            format!("{base}/schedulers"),
            Some(r#"{"name":"evict-leader-scheduler","store_id":-1}"#),
            400,
        ),
        (
            reqwest::Method::POST,
            format!("{base}/schedulers"),
            Some(r#"{"name":"evict-leader-scheduler","store_id":999}"#),
            404,
        ),
        (
            reqwest::Method::POST,
            format!("{base}/schedulers"),
            Some(r#"{"name":"balance-leader-scheduler"}"#),
            409,
        ),
        (
            reqwest::Method::DELETE,
            format!("{base}/schedulers/nonsense"),
            None,
            404,
        ),
        (
            reqwest::Method::DELETE,
            format!("{base}/schedulers/evict-leader-scheduler-1"),
            None,
            404,
        ),
        (
            reqwest::Method::POST,
            format!("{base}/store/{store}/state?state=Bogus"),
            None,
            400,
        ),
        (
            reqwest::Method::POST,
            format!("{base}/store/{store}/state"),
            None,
            400,
        ),
        (
            reqwest::Method::POST,
            format!("{base}/store/{store}/state?state=Tombstone"),
            None,
            409,
        ),
        (
            reqwest::Method::POST,
            format!("{base}/store/999/state?state=Up"),
            None,
            404,
        ),
        (
            reqwest::Method::POST,
            format!("{base}/store/abc/state?state=Up"),
            None,
            400,
        ),
        (
            reqwest::Method::DELETE,
            format!("{base}/store/999"),
            None,
            404,
        ),
        (
            reqwest::Method::DELETE,
            format!("{base}/store/-3"),
            None,
            400,
        ),
        (
            reqwest::Method::GET,
            format!("{base}/stores?state=9"),
            None,
            400,
        ),
        // One store, three replicas: it cannot be removed.
        (
            reqwest::Method::DELETE,
            format!("{base}/store/{store}"),
            None,
            409,
        ),
    ];
    for (method, url, body, expected) in cases {
        let (status, reply) = call(method.clone(), &url, body).await;
        assert_eq!(status, expected, "{method} {url} {body:?}: {reply}");
        assert!(
            reply["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{method} {url}: {reply}"
        );
    }
    // Up is accepted for an Up store (nothing to do).
    let (status, _) = call(
        reqwest::Method::POST,
        &format!("{base}/store/{store}/state?state=up"),
        None,
    )
    .await;
    assert_eq!(status, 200);

    // Balance schedulers can be switched off and on again.
    let url = format!("{base}/schedulers/balance-region-scheduler");
    assert_eq!(call(reqwest::Method::DELETE, &url, None).await.0, 200);
    assert_eq!(
        get(&format!("{base}/schedulers")).await,
        json!(["balance-leader-scheduler"])
    );
    let body = r#"{"name":"balance-region-scheduler"}"#;
    assert_eq!(
        call(
            reqwest::Method::POST,
            &format!("{base}/schedulers"),
            Some(body)
        )
        .await
        .0,
        200
    );

    let config = get(&format!("{base}/config")).await;
    assert_eq!(config["replication"]["max-replicas"], 3);
    assert_eq!(config["schedule"]["max-store-down-time"], "2s");
    assert_eq!(config["schedule"]["leader-schedule-limit"], 4);
    assert_eq!(config["schedule"]["region-schedule-limit"], 2048);
    let replicate = get(&format!("{base}/config/replicate")).await;
    assert_eq!(replicate["max-replicas"], 3);
    assert_eq!(replicate["enable-placement-rules"], "false");

    // Tombstone stores are refused, and excluded on request.
    let mut second = common::store(77, "127.0.0.1:30077");
    let resp = client
        .put_store(pdpb::PutStoreRequest {
            header: header(cid),
            store: Some(second.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ok(&resp.header);
    let (status, body) = call(
        reqwest::Method::POST,
        &format!("{base}/store/77/state?state=Offline"),
        None,
    )
    .await;
    assert_eq!(status, 409, "one Up store left for 3 replicas: {body}");
    second.id = 78;
    second.address = "127.0.0.1:30078".into();
    for id in [78, 79] {
        let mut s = second.clone();
        s.id = id;
        s.address = format!("127.0.0.1:{}", 30_000 + id);
        let resp = client
            .put_store(pdpb::PutStoreRequest {
                header: header(cid),
                store: Some(s),
            })
            .await
            .unwrap()
            .into_inner();
        assert_ok(&resp.header);
    }
    let (status, body) = call(reqwest::Method::DELETE, &format!("{base}/store/77"), None).await;
    assert_eq!(status, 200, "{body}");
    // Store 77 holds no Region: the next scheduling round buries it.
    eventually("tombstone", || async {
        let state = get(&format!("{base}/store/77")).await["store"]["state_name"].clone();
        if state == "Tombstone" {
            Ok(())
        } else {
            Err(state.to_string())
        }
    })
    .await;
    let hb = client
        .store_heartbeat(pdpb::StoreHeartbeatRequest {
            header: header(cid),
            stats: Some(pdpb::StoreStats {
                store_id: 77,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(error_type(&hb.header), pdpb::ErrorType::StoreTombstone);
    second.id = 77;
    second.address = "127.0.0.1:30077".into();
    let put = client
        .put_store(pdpb::PutStoreRequest {
            header: header(cid),
            store: Some(second),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(error_type(&put.header), pdpb::ErrorType::StoreTombstone);
    let all = client
        .get_all_stores(pdpb::GetAllStoresRequest {
            header: header(cid),
            exclude_tombstone_stores: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(all.stores.iter().all(|s| s.id != 77));
    let (status, _) = call(
        reqwest::Method::POST,
        &format!("{base}/schedulers"),
        Some(r#"{"name":"evict-leader-scheduler","store_id":77}"#),
    )
    .await;
    assert_eq!(status, 400);
    server.shutdown().await;
}

/// Scheduler configuration and store states are replicated metadata: a new
/// placement leader keeps them and carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scheduling_state_survives_a_leader_change() {
    let root = tempfile::tempdir().unwrap();
    let members = members(root.path(), 3);
    let mut servers = start_group_with(&members, fast).await;
    let refs: Vec<&PlacementServer> = servers.iter().collect();
    let leader = wait_for_leader(&refs).await;
    let urls: Vec<String> = members.iter().map(|m| m.url()).collect();
    let sim = SimCluster::bootstrap(&urls, REGIONS, 3).await;
    let mut ids = vec![sim.first_store];
    for _ in 0..3 {
        ids.push(sim.add_store().await);
    }
    let base = api(&members[leader].url());
    wait_balanced(&base, &ids, REGIONS).await;

    let evicted = ids[0];
    let body = json!({ "name": "evict-leader-scheduler", "store_id": evicted }).to_string();
    assert_eq!(
        call(
            reqwest::Method::POST,
            &format!("{base}/schedulers"),
            Some(&body)
        )
        .await
        .0,
        200
    );
    let url = format!("{base}/schedulers/balance-region-scheduler");
    assert_eq!(call(reqwest::Method::DELETE, &url, None).await.0, 200);
    // Stores stop acting on commands, so the removal is still under way
    // when the leader goes.
    sim.pause(true);
    let gone = ids[3];
    let (status, body) = call(
        reqwest::Method::DELETE,
        &format!("{base}/store/{gone}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let old = servers.remove(leader);
    old.shutdown().await;
    let refs: Vec<&PlacementServer> = servers.iter().collect();
    let new_leader = wait_for_leader(&refs).await;
    let new_url = servers[new_leader].client_url().to_string();
    let base = api(&new_url);
    let names = get(&format!("{base}/schedulers")).await;
    assert_eq!(
        names,
        json!([
            "balance-leader-scheduler",
            format!("evict-leader-scheduler-{evicted}")
        ])
    );
    assert_eq!(stores(&base).await[&gone].state, "Offline");

    sim.pause(false);
    eventually("drained under the new leader", || async {
        check_replicas(&base, &ids[..3], REGIONS).await?;
        let rows = stores(&base).await;
        if rows[&gone].state == "Tombstone" && rows[&evicted].leaders == 0 {
            Ok(())
        } else {
            Err(format!("{rows:?}"))
        }
    })
    .await;
    sim.assert_no_violations();
    sim.shutdown();
    shutdown_all(servers).await;
}
