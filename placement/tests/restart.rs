//! What must survive a restart on the same data dir: cluster id, ids, TSO
//! monotonicity, regions and GC safe point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;

use common::*;
use shale_proto::pdpb;
use tonic::transport::Channel;

async fn tso_batch(
    client: &mut shale_proto::pdpb::pd_client::PdClient<Channel>,
    cid: u64,
    counts: &[u32],
) -> Vec<u64> {
    let requests: Vec<pdpb::TsoRequest> = counts
        .iter()
        .map(|&count| pdpb::TsoRequest {
            header: header(cid),
            count,
            dc_location: String::new(),
        })
        .collect();
    let mut responses = client
        .tso(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    for &count in counts {
        let resp = responses
            .message()
            .await
            .unwrap()
            .expect("a response per request");
        assert_eq!(resp.count, count);
        let ts = resp.timestamp.unwrap();
        let last = ((ts.physical as u64) << 18) | ts.logical as u64;
        out.push(last);
    }
    out
}

#[tokio::test]
async fn state_survives_restart() {
    let dir = tempfile::tempdir().unwrap();

    let server = start_in(dir.path()).await;
    let cid = server.cluster_id();
    let addr_before = server.addr();
    let mut client = pd(&server).await;
    let boot = bootstrap(&mut client, cid).await;
    let mut ids = HashSet::from([boot.store_id, boot.region.id, boot.region.peers[0].id]);
    for _ in 0..50 {
        assert!(ids.insert(alloc_id(&mut client, cid).await));
    }
    let before = tso_batch(&mut client, cid, &[1, 10, 3]).await;
    let resp = client
        .update_gc_safe_point(pdpb::UpdateGcSafePointRequest {
            header: header(cid),
            safe_point: 12345,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.new_safe_point, 12345);
    drop(client);
    server.shutdown().await;

    // Same data dir, new process state.
    let server = start_in(dir.path()).await;
    assert_eq!(server.cluster_id(), cid, "cluster id is persisted");
    assert_ne!(server.addr(), addr_before, "new port (listen on :0)");
    let mut client = pd(&server).await;

    let resp = client
        .is_bootstrapped(pdpb::IsBootstrappedRequest {
            header: header(cid),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(resp.bootstrapped);

    // Routing works right away, before any heartbeat.
    let resp = client
        .get_region(pdpb::GetRegionRequest {
            header: header(cid),
            region_key: b"k".to_vec(),
            need_buckets: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_ok(&resp.header);
    assert_eq!(resp.region.as_ref(), Some(&boot.region));
    assert_eq!(resp.leader, Some(boot.region.peers[0]));
    let resp = client
        .get_region_by_id(pdpb::GetRegionByIdRequest {
            header: header(cid),
            region_id: boot.region.id,
            need_buckets: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.region.as_ref(), Some(&boot.region));

    // No id is handed out twice.
    for _ in 0..50 {
        let id = alloc_id(&mut client, cid).await;
        assert!(ids.insert(id), "id {id} reused after restart");
    }

    // TSO continues above everything served before.
    let after = tso_batch(&mut client, cid, &[1, 5]).await;
    let max_before = *before.iter().max().unwrap();
    // The first timestamp of the first batch after restart is its `last`.
    assert!(after[0] > max_before, "{} <= {}", after[0], max_before);
    assert!(after[1] > after[0]);

    let resp = client
        .get_gc_safe_point(pdpb::GetGcSafePointRequest {
            header: header(cid),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.safe_point, 12345);

    let resp = client
        .get_store(pdpb::GetStoreRequest {
            header: header(cid),
            store_id: boot.store_id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_ok(&resp.header);
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_with_open_streams_completes_and_releases_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_in(dir.path()).await;
    let cid = server.cluster_id();
    let mut client = pd(&server).await;

    // A TSO stream the client never closes.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pdpb::TsoRequest {
        header: header(cid),
        count: 1,
        dc_location: String::new(),
    })
    .await
    .unwrap();
    let mut responses = client
        .tso(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    responses.message().await.unwrap().unwrap();

    let started = std::time::Instant::now();
    tokio::time::timeout(std::time::Duration::from_secs(20), server.shutdown())
        .await
        .expect("shutdown finishes despite an open stream");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    drop(tx);

    // The data dir can be opened again right away.
    let server = start_in(dir.path()).await;
    assert_eq!(server.cluster_id(), cid);
    server.shutdown().await;
}
