//! Region heartbeats, splits and GC safe points over gRPC.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use shale_proto::pdpb::pd_client::PdClient;
use shale_proto::{metapb, pdpb};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

fn epoch(conf_ver: u64, version: u64) -> Option<metapb::RegionEpoch> {
    Some(metapb::RegionEpoch { conf_ver, version })
}

fn heartbeat(cid: u64, region: &metapb::Region, size: u64) -> pdpb::RegionHeartbeatRequest {
    pdpb::RegionHeartbeatRequest {
        header: header(cid),
        region: Some(region.clone()),
        leader: Some(region.peers[0]),
        approximate_size: size,
        approximate_keys: size * 10,
        ..Default::default()
    }
}

async fn get_region(
    client: &mut PdClient<Channel>,
    cid: u64,
    key: &[u8],
) -> pdpb::GetRegionResponse {
    client
        .get_region(pdpb::GetRegionRequest {
            header: header(cid),
            region_key: key.to_vec(),
            need_buckets: false,
        })
        .await
        .unwrap()
        .into_inner()
}

async fn wait_for_region(
    client: &mut PdClient<Channel>,
    cid: u64,
    key: &[u8],
    id: u64,
) -> pdpb::GetRegionResponse {
    for _ in 0..100 {
        let resp = get_region(client, cid, key).await;
        if resp.region.as_ref().map(|r| r.id) == Some(id) {
            return resp;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("key {key:?} never routed to region {id}");
}

#[tokio::test]
async fn heartbeats_build_routing_and_reject_stale_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_in(dir.path()).await;
    let cid = server.cluster_id();
    let mut client = pd(&server).await;
    let boot = bootstrap(&mut client, cid).await;
    let store_id = boot.store_id;

    // Split ["", "") at "m" the way a storage node does.
    let resp = client
        .ask_batch_split(pdpb::AskBatchSplitRequest {
            header: header(cid),
            region: Some(boot.region.clone()),
            split_count: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_ok(&resp.header);
    assert_eq!(resp.ids.len(), 1);
    let split = &resp.ids[0];
    assert_eq!(split.new_peer_ids.len(), boot.region.peers.len());
    assert_ne!(split.new_region_id, boot.region.id);

    let left = metapb::Region {
        id: split.new_region_id,
        start_key: vec![],
        end_key: b"m".to_vec(),
        region_epoch: epoch(1, 2),
        peers: vec![peer(split.new_peer_ids[0], store_id)],
        ..Default::default()
    };
    let right = metapb::Region {
        id: boot.region.id,
        start_key: b"m".to_vec(),
        end_key: vec![],
        region_epoch: epoch(1, 2),
        peers: boot.region.peers.clone(),
        ..Default::default()
    };

    let (tx, rx) = mpsc::channel(16);
    let mut responses = client
        .region_heartbeat(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(heartbeat(cid, &left, 3)).await.unwrap();
    tx.send(heartbeat(cid, &right, 5)).await.unwrap();

    let resp = wait_for_region(&mut client, cid, b"a", left.id).await;
    assert_eq!(resp.leader.map(|l| l.id), Some(left.peers[0].id));
    wait_for_region(&mut client, cid, b"m", right.id).await;
    wait_for_region(&mut client, cid, b"zzz", right.id).await;

    let resp = client
        .get_prev_region(pdpb::GetRegionRequest {
            header: header(cid),
            region_key: b"x".to_vec(),
            need_buckets: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.region.map(|r| r.id), Some(left.id));

    let resp = client
        .scan_regions(pdpb::ScanRegionsRequest {
            header: header(cid),
            start_key: b"b".to_vec(),
            end_key: vec![],
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_ok(&resp.header);
    let ids: Vec<u64> = resp.region_metas.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![left.id, right.id]);
    assert_eq!(resp.leaders.len(), 2);
    assert_eq!(resp.regions.len(), 2);
    assert_eq!(resp.regions[1].region.as_ref(), Some(&right));
    assert_eq!(resp.regions[1].leader, Some(right.peers[0]));
    let resp = client
        .scan_regions(pdpb::ScanRegionsRequest {
            header: header(cid),
            start_key: vec![],
            end_key: b"m".to_vec(),
            limit: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.region_metas.len(), 1);

    // A heartbeat carrying the pre-split epoch is stale: error response,
    // routing unchanged, stream still usable.
    tx.send(heartbeat(cid, &boot.region, 1)).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), responses.message())
        .await
        .expect("stale heartbeat answered")
        .unwrap()
        .unwrap();
    assert_eq!(error_type(&err.header), pdpb::ErrorType::Unknown);
    assert_eq!(err.region_id, boot.region.id);
    let resp = get_region(&mut client, cid, b"a").await;
    assert_eq!(resp.region.map(|r| r.id), Some(left.id));

    // Conf change on the left region: a newer conf_ver is accepted.
    let second = alloc_id(&mut client, cid).await;
    let resp = client
        .put_store(pdpb::PutStoreRequest {
            header: header(cid),
            store: Some(store(second, "127.0.0.1:20161")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ok(&resp.header);
    let mut grown = left.clone();
    grown.region_epoch = epoch(2, 2);
    grown
        .peers
        .push(peer(alloc_id(&mut client, cid).await, second));
    tx.send(heartbeat(cid, &grown, 3)).await.unwrap();
    for _ in 0..100 {
        let resp = get_region(&mut client, cid, b"a").await;
        if resp.region.as_ref().map(|r| r.peers.len()) == Some(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let resp = get_region(&mut client, cid, b"a").await;
    assert_eq!(resp.region, Some(grown));

    // Region by id; unknown id has no region and no error (like PD).
    let resp = client
        .get_region_by_id(pdpb::GetRegionByIdRequest {
            header: header(cid),
            region_id: right.id,
            need_buckets: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.region, Some(right.clone()));
    let resp = client
        .get_region_by_id(pdpb::GetRegionByIdRequest {
            header: header(cid),
            region_id: 987_654,
            need_buckets: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_ok(&resp.header);
    assert!(resp.region.is_none());
    drop(tx);
    server.shutdown().await;
}

#[tokio::test]
async fn report_batch_split_updates_routing_without_heartbeats() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_in(dir.path()).await;
    let cid = server.cluster_id();
    let mut client = pd(&server).await;
    let boot = bootstrap(&mut client, cid).await;
    let resp = client
        .ask_batch_split(pdpb::AskBatchSplitRequest {
            header: header(cid),
            region: Some(boot.region.clone()),
            split_count: 2,
        })
        .await
        .unwrap()
        .into_inner();
    assert_ok(&resp.header);
    assert_eq!(resp.ids.len(), 2);
    let a = &resp.ids[0];
    let b = &resp.ids[1];
    let regions = vec![
        metapb::Region {
            id: a.new_region_id,
            end_key: b"g".to_vec(),
            region_epoch: epoch(1, 3),
            peers: vec![peer(a.new_peer_ids[0], boot.store_id)],
            ..Default::default()
        },
        metapb::Region {
            id: b.new_region_id,
            start_key: b"g".to_vec(),
            end_key: b"p".to_vec(),
            region_epoch: epoch(1, 3),
            peers: vec![peer(b.new_peer_ids[0], boot.store_id)],
            ..Default::default()
        },
        metapb::Region {
            id: boot.region.id,
            start_key: b"p".to_vec(),
            region_epoch: epoch(1, 3),
            peers: boot.region.peers.clone(),
            ..Default::default()
        },
    ];
    let resp = client
        .report_batch_split(pdpb::ReportBatchSplitRequest {
            header: header(cid),
            regions: regions.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ok(&resp.header);
    for (key, expected) in [
        (&b"a"[..], &regions[0]),
        (b"h", &regions[1]),
        (b"q", &regions[2]),
    ] {
        let resp = get_region(&mut client, cid, key).await;
        assert_eq!(resp.region.as_ref(), Some(expected));
        assert_eq!(resp.leader.map(|l| l.store_id), Some(boot.store_id));
    }

    // Non-adjacent regions are refused.
    let resp = client
        .report_batch_split(pdpb::ReportBatchSplitRequest {
            header: header(cid),
            regions: vec![regions[0].clone(), regions[2].clone()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(error_type(&resp.header), pdpb::ErrorType::Ok);

    // Asking to split an unknown region.
    let resp = client
        .ask_batch_split(pdpb::AskBatchSplitRequest {
            header: header(cid),
            region: Some(metapb::Region {
                id: 424_242,
                ..regions[0].clone()
            }),
            split_count: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(error_type(&resp.header), pdpb::ErrorType::RegionNotFound);
    server.shutdown().await;
}

#[tokio::test]
async fn gc_safe_point_never_goes_backwards() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_in(dir.path()).await;
    let cid = server.cluster_id();
    let mut client = pd(&server).await;

    let resp = client
        .get_gc_safe_point(pdpb::GetGcSafePointRequest {
            header: header(cid),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(error_type(&resp.header), pdpb::ErrorType::NotBootstrapped);
    bootstrap(&mut client, cid).await;

    let update = |sp: u64| {
        let mut client = client.clone();
        async move {
            client
                .update_gc_safe_point(pdpb::UpdateGcSafePointRequest {
                    header: header(cid),
                    safe_point: sp,
                })
                .await
                .unwrap()
                .into_inner()
        }
    };
    assert_eq!(update(100).await.new_safe_point, 100);
    assert_eq!(update(50).await.new_safe_point, 100);
    assert_eq!(update(100).await.new_safe_point, 100);
    assert_eq!(update(150).await.new_safe_point, 150);
    let resp = client
        .get_gc_safe_point(pdpb::GetGcSafePointRequest {
            header: header(cid),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.safe_point, 150);

    // Service safe points: min across services, below-min updates ignored.
    let service = |id: &str, ttl: i64, sp: u64| {
        let mut client = client.clone();
        let id = id.as_bytes().to_vec();
        async move {
            let resp = client
                .update_service_gc_safe_point(pdpb::UpdateServiceGcSafePointRequest {
                    header: header(cid),
                    service_id: id,
                    ttl,
                    safe_point: sp,
                })
                .await
                .unwrap()
                .into_inner();
            assert_ok(&resp.header);
            resp
        }
    };
    let resp = service("gc_worker", i64::MAX, 200).await;
    assert_eq!(
        (resp.service_id.as_slice(), resp.min_safe_point),
        (&b"gc_worker"[..], 200)
    );
    let resp = service("cdc", 3600, 300).await;
    assert_eq!(resp.min_safe_point, 200);
    let resp = service("gc_worker", i64::MAX, 400).await;
    assert_eq!(
        (resp.service_id.as_slice(), resp.min_safe_point),
        (&b"cdc"[..], 300)
    );
    assert!(resp.ttl > 3000 && resp.ttl <= 3600);
    let resp = service("cdc", 0, 0).await;
    assert_eq!(
        (resp.service_id.as_slice(), resp.min_safe_point),
        (&b"gc_worker"[..], 400)
    );
    server.shutdown().await;
}
