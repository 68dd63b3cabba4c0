//! The PD-compatible HTTP API on the gRPC port.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;
use shale_proto::{metapb, pdpb};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

async fn get(base: &str, path: &str) -> (u16, Value) {
    let resp = reqwest::get(format!("{base}{path}")).await.unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test]
async fn endpoints_return_pd_shaped_json() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_in(dir.path()).await;
    let cid = server.cluster_id();
    let base = format!("http://{}/pd/api/v1", server.addr());

    // Before bootstrap: empty lists, cluster id known.
    let (status, body) = get(&base, "/stores").await;
    assert_eq!(status, 200);
    assert_eq!(body["count"], 0);
    let (status, body) = get(&base, "/regions").await;
    assert_eq!(status, 200);
    assert_eq!(body["count"], 0);
    assert!(body["regions"].as_array().unwrap().is_empty());
    let (_, body) = get(&base, "/cluster").await;
    assert_eq!(body["id"], cid);
    assert_eq!(body["max_peer_count"], 3);

    let mut client = pd(&server).await;
    let boot = bootstrap(&mut client, cid).await;
    let (tx, rx) = mpsc::channel(4);
    let _responses = client
        .region_heartbeat(ReceiverStream::new(rx))
        .await
        .unwrap();
    let mut region = boot.region.clone();
    region.end_key = vec![]; // whole key space
    tx.send(pdpb::RegionHeartbeatRequest {
        header: header(cid),
        region: Some(region.clone()),
        leader: Some(region.peers[0]),
        approximate_size: 42,
        approximate_keys: 4200,
        bytes_written: 7,
        ..Default::default()
    })
    .await
    .unwrap();
    client
        .store_heartbeat(pdpb::StoreHeartbeatRequest {
            header: header(cid),
            stats: Some(pdpb::StoreStats {
                store_id: boot.store_id,
                capacity: 1024 * 1024 * 1024,
                available: 512 * 1024 * 1024,
                ..Default::default()
            }),
        })
        .await
        .unwrap();

    // Wait for the heartbeat's stats to land.
    let mut body = Value::Null;
    for _ in 0..100 {
        let (_, b) = get(&base, "/regions").await;
        if b["regions"][0]["approximate_size"] == 42 {
            body = b;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(body["count"], 1, "{body}");
    let r = &body["regions"][0];
    assert_eq!(r["id"], boot.region.id);
    assert_eq!(r["start_key"], "");
    assert_eq!(r["end_key"], "");
    assert_eq!(r["epoch"]["conf_ver"], 1);
    assert_eq!(r["epoch"]["version"], 1);
    assert_eq!(r["peers"][0]["store_id"], boot.store_id);
    assert_eq!(r["peers"][0]["role_name"], "Voter");
    assert_eq!(r["leader"]["id"], boot.region.peers[0].id);
    assert_eq!(r["approximate_keys"], 4200);
    assert_eq!(r["written_bytes"], 7);

    let (status, one) = get(&base, &format!("/region/id/{}", boot.region.id)).await;
    assert_eq!(status, 200);
    assert_eq!(one["id"], boot.region.id);
    let (status, missing) = get(&base, "/region/id/999999").await;
    assert_eq!(status, 404);
    assert!(missing["error"].as_str().unwrap().contains("999999"));
    let (status, bad) = get(&base, "/region/id/abc").await;
    assert_eq!(status, 400);
    assert!(bad["error"].is_string());

    let (status, body) = get(&base, "/stores").await;
    assert_eq!(status, 200);
    assert_eq!(body["count"], 1);
    let s = &body["stores"][0];
    assert_eq!(s["store"]["id"], boot.store_id);
    assert_eq!(s["store"]["address"], "127.0.0.1:20160");
    assert_eq!(s["store"]["state_name"], "Up");
    assert_eq!(s["store"]["version"], "8.5.0");
    assert_eq!(s["store"]["status_address"], "127.0.0.1:20180");
    assert_eq!(s["status"]["capacity"], "1GiB");
    assert_eq!(s["status"]["available"], "512MiB");
    assert_eq!(s["status"]["region_count"], 1);
    assert_eq!(s["status"]["leader_count"], 1);
    assert!(s["status"]["last_heartbeat_ts"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert!(s["status"]["uptime"].is_string());

    let (status, one) = get(&base, &format!("/store/{}", boot.store_id)).await;
    assert_eq!(status, 200);
    assert_eq!(one["store"]["id"], boot.store_id);
    assert_eq!(get(&base, "/store/424242").await.0, 404);
    assert_eq!(get(&base, "/store/-1").await.0, 400);

    let (status, health) = get(&base, "/health").await;
    assert_eq!(status, 200);
    assert_eq!(health[0]["health"], true);
    assert_eq!(health[0]["name"], "placement-test");
    assert_eq!(
        health[0]["client_urls"][0],
        format!("http://{}", server.addr())
    );

    let (_, members) = get(&base, "/members").await;
    assert_eq!(members["header"]["cluster_id"], cid);
    assert_eq!(members["leader"]["name"], "placement-test");
    assert_eq!(members["members"].as_array().unwrap().len(), 1);

    let (_, config) = get(&base, "/config").await;
    assert_eq!(config["replication"]["max-replicas"], 3);
    assert_eq!(config["name"], "placement-test");

    // Unknown paths: JSON 404.
    let (status, body) = get(&base, "/nope").await;
    assert_eq!(status, 404);
    assert!(body["error"].is_string());

    // Metrics on the same port.
    let text = reqwest::get(format!("http://{}/metrics", server.addr()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("placement_grpc_requests_total"), "{text}");
    assert!(text.contains("placement_regions 1"), "{text}");

    drop(tx);
    server.shutdown().await;
}

#[tokio::test]
async fn tombstone_store_state_name() {
    // A store that reports Tombstone itself is refused; here we check that a
    // registered store shows `Up` and that the API keeps serving after errors.
    let dir = tempfile::tempdir().unwrap();
    let server = start_in(dir.path()).await;
    let cid = server.cluster_id();
    let mut client = pd(&server).await;
    let boot = bootstrap(&mut client, cid).await;
    let mut tomb = store(boot.store_id, "127.0.0.1:20160");
    tomb.state = metapb::StoreState::Tombstone as i32;
    let resp = client
        .put_store(pdpb::PutStoreRequest {
            header: header(cid),
            store: Some(tomb),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(error_type(&resp.header), pdpb::ErrorType::StoreTombstone);
    let base = format!("http://{}/pd/api/v1", server.addr());
    let (_, body) = get(&base, &format!("/store/{}", boot.store_id)).await;
    assert_eq!(body["store"]["state_name"], "Up");
    server.shutdown().await;
}
