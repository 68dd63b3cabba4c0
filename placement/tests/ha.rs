//! Replicated placement in one process: three members on loopback forming
//! one Raft group, leader loss, full restarts, membership changes and an
//! isolated member. (Real processes and `kill -9` are in the e2e crate.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::group::*;
use common::*;
use shale_placement::{start, Config, PlacementServer};
use shale_proto::pdpb;
use shale_proto::pdpb::pd_client::PdClient;
use tonic::transport::Channel;

async fn one_tso(client: &mut PdClient<Channel>, cluster_id: u64) -> Result<u64, tonic::Status> {
    let request = pdpb::TsoRequest {
        header: header(cluster_id),
        count: 1,
        dc_location: String::new(),
    };
    let mut responses = client
        .tso(tokio_stream::iter(vec![request]))
        .await?
        .into_inner();
    let response = responses
        .message()
        .await?
        .ok_or_else(|| tonic::Status::unavailable("no tso response"))?;
    let ts = response.timestamp.unwrap_or_default();
    Ok(((ts.physical as u64) << 18) | ts.logical as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn followers_name_the_leader_and_refuse_to_serve() {
    let root = tempfile::tempdir().unwrap();
    let members = members(root.path(), 3);
    let servers = start_group(&members).await;
    let refs: Vec<&PlacementServer> = servers.iter().collect();
    let leader = wait_for_leader(&refs).await;
    let follower = (leader + 1) % 3;
    let cid = servers[leader].cluster_id();
    assert!(servers.iter().all(|s| s.cluster_id() == cid));

    let mut follower_client = client(&members[follower].url()).await;
    let resp = follower_client
        .get_members(pdpb::GetMembersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.members.len(), 3);
    let named = resp.leader.expect("leader named");
    assert_eq!(named.client_urls, vec![members[leader].url()]);
    assert_eq!(named.name, members[leader].name);

    let status = follower_client
        .alloc_id(pdpb::AllocIdRequest {
            header: header(cid),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
    assert!(one_tso(&mut follower_client, cid).await.is_err());

    // HTTP: followers redirect to the leader, which serves.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = http
        .get(format!("{}/pd/api/v1/stores", members[follower].url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(
        resp.headers()["location"].to_str().unwrap(),
        format!("{}/pd/api/v1/stores", members[leader].url())
    );
    let stores: serde_json::Value =
        reqwest::get(format!("{}/pd/api/v1/stores", members[follower].url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(stores["count"], 0);
    let health: serde_json::Value =
        reqwest::get(format!("{}/pd/api/v1/health", members[follower].url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let healthy = health
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["health"] == true)
        .count();
    assert_eq!(healthy, 3, "{health}");
    shutdown_all(servers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_loss_keeps_metadata_and_timestamps_move_forward() {
    let root = tempfile::tempdir().unwrap();
    let members = members(root.path(), 3);
    let mut servers = start_group(&members).await;
    let refs: Vec<&PlacementServer> = servers.iter().collect();
    let leader = wait_for_leader(&refs).await;
    let cid = servers[leader].cluster_id();

    let mut c = client(&members[leader].url()).await;
    let boot = bootstrap(&mut c, cid).await;
    let resp = c
        .update_gc_safe_point(pdpb::UpdateGcSafePointRequest {
            header: header(cid),
            safe_point: 4242,
        })
        .await
        .unwrap()
        .into_inner();
    assert_ok(&resp.header);
    let mut last_ts = 0;
    for _ in 0..20 {
        let ts = one_tso(&mut c, cid).await.unwrap();
        assert!(ts > last_ts);
        last_ts = ts;
    }
    let ids_before: Vec<u64> = {
        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.push(alloc_id(&mut c, cid).await);
        }
        ids
    };

    let lost = servers.remove(leader);
    let lost_member = leader;
    let stopped_at = Instant::now();
    lost.shutdown().await;
    let refs: Vec<&PlacementServer> = servers.iter().collect();
    let new_leader = wait_for_leader(&refs).await;
    let failover = stopped_at.elapsed();
    assert!(
        failover < Duration::from_secs(10),
        "failover took {failover:?}"
    );
    let new_url = servers[new_leader].client_url().to_string();
    assert_ne!(new_url, members[lost_member].url());

    let mut c = client(&new_url).await;
    assert_eq!(servers[new_leader].cluster_id(), cid);
    let ts = one_tso(&mut c, cid).await.unwrap();
    assert!(
        ts > last_ts,
        "new leader's timestamp {ts} not above {last_ts}"
    );
    let id = alloc_id(&mut c, cid).await;
    assert!(ids_before.iter().all(|&old| id > old), "id {id} reused");
    let store = c
        .get_store(pdpb::GetStoreRequest {
            header: header(cid),
            store_id: boot.store_id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_ok(&store.header);
    let region = c
        .get_region_by_id(pdpb::GetRegionByIdRequest {
            header: header(cid),
            region_id: boot.region.id,
            need_buckets: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(region.region.unwrap().id, boot.region.id);
    let sp = c
        .get_gc_safe_point(pdpb::GetGcSafePointRequest {
            header: header(cid),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sp.safe_point, 4242);
    shutdown_all(servers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarting_every_member_keeps_the_cluster() {
    let root = tempfile::tempdir().unwrap();
    let members = members(root.path(), 3);
    let servers = start_group(&members).await;
    let refs: Vec<&PlacementServer> = servers.iter().collect();
    let leader = wait_for_leader(&refs).await;
    let cid = servers[leader].cluster_id();
    let mut c = client(&members[leader].url()).await;
    let boot = bootstrap(&mut c, cid).await;
    c.update_gc_safe_point(pdpb::UpdateGcSafePointRequest {
        header: header(cid),
        safe_point: 77,
    })
    .await
    .unwrap();
    let last_ts = one_tso(&mut c, cid).await.unwrap();
    shutdown_all(servers).await;

    let servers = start_group(&members).await;
    let refs: Vec<&PlacementServer> = servers.iter().collect();
    let leader = wait_for_leader(&refs).await;
    assert_eq!(servers[leader].cluster_id(), cid);
    let mut c = client(&members[leader].url()).await;
    let resp = c
        .is_bootstrapped(pdpb::IsBootstrappedRequest {
            header: header(cid),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(resp.bootstrapped);
    let region = c
        .get_region_by_id(pdpb::GetRegionByIdRequest {
            header: header(cid),
            region_id: boot.region.id,
            need_buckets: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(region.region.unwrap(), boot.region);
    let sp = c
        .get_gc_safe_point(pdpb::GetGcSafePointRequest {
            header: header(cid),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sp.safe_point, 77);
    assert!(one_tso(&mut c, cid).await.unwrap() > last_ts);
    shutdown_all(servers).await;
}

async fn member_names(url: &str) -> Vec<String> {
    let body: serde_json::Value = reqwest::get(format!("{url}/pd/api/v1/members"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut names: Vec<String> = body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

async fn wait_for_members(url: &str, expected: &[&str]) {
    let deadline = Instant::now() + ELECTION_WAIT;
    loop {
        let names = member_names(url).await;
        if names == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "members {names:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_join_and_leave_through_the_http_api() {
    let root = tempfile::tempdir().unwrap();
    let members = members(root.path(), 3);
    let first = start(members[0].config()).await.unwrap();
    let cid = first.cluster_id();
    let mut c = client(&members[0].url()).await;
    bootstrap(&mut c, cid).await;

    let mut joined = Vec::new();
    for m in &members[1..] {
        let config = Config {
            join: vec![members[0].url()],
            ..m.config()
        };
        joined.push(start(config).await.unwrap());
    }
    wait_for_members(&members[0].url(), &["pd-0", "pd-1", "pd-2"]).await;
    for server in &joined {
        assert!(server.wait_ready(ELECTION_WAIT).await);
        assert_eq!(server.cluster_id(), cid);
    }
    // Clients keep working while membership changes.
    let before = one_tso(&mut c, cid).await.unwrap();

    let http = reqwest::Client::new();
    let resp = http
        .delete(format!("{}/pd/api/v1/members/name/pd-2", members[1].url()))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    wait_for_members(&members[0].url(), &["pd-0", "pd-1"]).await;
    let resp = http
        .delete(format!(
            "{}/pd/api/v1/members/name/nobody",
            members[0].url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::NOT_FOUND);

    let mut servers = vec![first];
    servers.extend(joined);
    let refs: Vec<&PlacementServer> = servers.iter().take(2).collect();
    let leader = wait_for_leader(&refs).await;
    let mut c = client(servers[leader].client_url()).await;
    assert!(one_tso(&mut c, cid).await.unwrap() > before);
    shutdown_all(servers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_isolated_leader_stops_serving_timestamps() {
    let root = tempfile::tempdir().unwrap();
    let members = members(root.path(), 3);
    let servers = start_group(&members).await;
    let refs: Vec<&PlacementServer> = servers.iter().collect();
    let old = wait_for_leader(&refs).await;
    let cid = servers[old].cluster_id();
    let mut old_client = client(&members[old].url()).await;
    let mut last_ts = one_tso(&mut old_client, cid).await.unwrap();

    let http = reqwest::Client::new();
    let isolate = |i: usize, isolated: bool| {
        let http = http.clone();
        let url = format!("{}/pd/api/v1/debug/isolate", members[i].url());
        async move {
            let resp = http
                .post(url)
                .json(&serde_json::json!({ "isolated": isolated }))
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_success());
        }
    };
    isolate(old, true).await;

    // The majority elects a new leader and serves; the isolated member
    // gives out no timestamps.
    let others: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let deadline = Instant::now() + ELECTION_WAIT;
    let new = loop {
        if let Some(&i) = others.iter().find(|&&i| servers[i].is_leader()) {
            break i;
        }
        assert!(Instant::now() < deadline, "majority elected no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(one_tso(&mut old_client, cid).await.is_err());
    let mut new_client = client(&members[new].url()).await;
    let ts = one_tso(&mut new_client, cid).await.unwrap();
    assert!(ts > last_ts);
    last_ts = ts;
    assert!(
        one_tso(&mut old_client, cid).await.is_err(),
        "isolated member served a timestamp"
    );

    isolate(old, false).await;
    let leader = wait_for_leader(&refs).await;
    let mut c = client(&members[leader].url()).await;
    assert!(one_tso(&mut c, cid).await.unwrap() > last_ts);
    shutdown_all(servers).await;
}
