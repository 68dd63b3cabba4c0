//! Bootstrap and store registration as a storage node does it, over gRPC.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use shale_proto::{keyspacepb, metapb, pdpb};

#[tokio::test]
async fn bootstrap_flow() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_in(dir.path()).await;
    let cid = server.cluster_id();
    assert_ne!(cid, 0);
    let mut client = pd(&server).await;

    // GetMembers: no header needed; reports us as leader with an http URL.
    let members = client
        .get_members(pdpb::GetMembersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(members.header.as_ref().unwrap().cluster_id, cid);
    let leader = members.leader.expect("leader");
    assert_eq!(
        leader.client_urls,
        vec![format!("http://{}", server.addr())]
    );
    assert_eq!(members.members.len(), 1);

    let resp = client
        .is_bootstrapped(pdpb::IsBootstrappedRequest {
            header: header(cid),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ok(&resp.header);
    assert!(!resp.bootstrapped);

    // Before bootstrap, routing is not available.
    let resp = client
        .get_region(pdpb::GetRegionRequest {
            header: header(cid),
            region_key: b"a".to_vec(),
            need_buckets: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(error_type(&resp.header), pdpb::ErrorType::NotBootstrapped);
    let resp = client
        .put_store(pdpb::PutStoreRequest {
            header: header(cid),
            store: Some(store(77, "127.0.0.1:1")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(error_type(&resp.header), pdpb::ErrorType::NotBootstrapped);

    let boot = bootstrap(&mut client, cid).await;

    let resp = client
        .is_bootstrapped(pdpb::IsBootstrappedRequest {
            header: header(cid),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(resp.bootstrapped);

    // Only once.
    let again = client
        .bootstrap(pdpb::BootstrapRequest {
            header: header(cid),
            store: Some(store(boot.store_id, "127.0.0.1:20160")),
            region: Some(boot.region.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        error_type(&again.header),
        pdpb::ErrorType::AlreadyBootstrapped
    );

    // The first region routes every key, with the bootstrap peer as leader.
    for key in [&b""[..], b"a", b"\xff\xff\xff"] {
        let resp = client
            .get_region(pdpb::GetRegionRequest {
                header: header(cid),
                region_key: key.to_vec(),
                need_buckets: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert_ok(&resp.header);
        assert_eq!(resp.region.as_ref(), Some(&boot.region));
        assert_eq!(resp.leader.map(|l| l.store_id), Some(boot.store_id));
    }

    // The store re-registers (PutStore after bootstrap), then GetStore.
    let resp = client
        .put_store(pdpb::PutStoreRequest {
            header: header(cid),
            store: Some(store(boot.store_id, "127.0.0.1:20160")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ok(&resp.header);
    let resp = client
        .get_store(pdpb::GetStoreRequest {
            header: header(cid),
            store_id: boot.store_id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_ok(&resp.header);
    let got = resp.store.unwrap();
    assert_eq!(got.address, "127.0.0.1:20160");
    assert_eq!(got.state, metapb::StoreState::Up as i32);

    // A second store; a third one stealing the address is refused; id 0 too.
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
    let thief = alloc_id(&mut client, cid).await;
    let resp = client
        .put_store(pdpb::PutStoreRequest {
            header: header(cid),
            store: Some(store(thief, "127.0.0.1:20161")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(error_type(&resp.header), pdpb::ErrorType::Unknown);
    assert!(resp
        .header
        .unwrap()
        .error
        .unwrap()
        .message
        .contains("duplicated"));
    let resp = client
        .put_store(pdpb::PutStoreRequest {
            header: header(cid),
            store: Some(store(0, "127.0.0.1:20199")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(error_type(&resp.header), pdpb::ErrorType::Ok);
    let mut tomb = store(alloc_id(&mut client, cid).await, "127.0.0.1:20198");
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

    let resp = client
        .get_all_stores(pdpb::GetAllStoresRequest {
            header: header(cid),
            exclude_tombstone_stores: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_ok(&resp.header);
    let mut ids: Vec<u64> = resp.stores.iter().map(|s| s.id).collect();
    ids.sort();
    assert_eq!(ids, vec![boot.store_id, second]);

    // Unknown store.
    let resp = client
        .get_store(pdpb::GetStoreRequest {
            header: header(cid),
            store_id: 999_999,
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(error_type(&resp.header), pdpb::ErrorType::Ok);

    // Store heartbeat is accepted and its stats come back in GetStore.
    let resp = client
        .store_heartbeat(pdpb::StoreHeartbeatRequest {
            header: header(cid),
            stats: Some(pdpb::StoreStats {
                store_id: boot.store_id,
                capacity: 1 << 30,
                available: 1 << 29,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ok(&resp.header);
    let resp = client
        .get_store(pdpb::GetStoreRequest {
            header: header(cid),
            store_id: boot.store_id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.stats.map(|s| s.capacity), Some(1 << 30));

    let resp = client
        .get_cluster_config(pdpb::GetClusterConfigRequest {
            header: header(cid),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ok(&resp.header);
    assert_eq!(
        resp.cluster,
        Some(metapb::Cluster {
            id: cid,
            max_peer_count: 3
        })
    );

    server.shutdown().await;
}

#[tokio::test]
async fn bootstrap_rejects_invalid_requests() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_in(dir.path()).await;
    let cid = server.cluster_id();
    let mut client = pd(&server).await;
    let region = metapb::Region {
        id: 10,
        region_epoch: Some(metapb::RegionEpoch {
            conf_ver: 1,
            version: 1,
        }),
        peers: vec![],
        ..Default::default()
    };
    for (store, region) in [
        (None, Some(region.clone())),
        (Some(store(1, "127.0.0.1:20160")), None),
        // No peers.
        (Some(store(1, "127.0.0.1:20160")), Some(region.clone())),
        // Peer on another store.
        (
            Some(store(1, "127.0.0.1:20160")),
            Some(metapb::Region {
                peers: vec![peer(11, 2)],
                ..region.clone()
            }),
        ),
        // Store id 0.
        (
            Some(store(0, "127.0.0.1:20160")),
            Some(metapb::Region {
                peers: vec![peer(11, 0)],
                ..region.clone()
            }),
        ),
    ] {
        let resp = client
            .bootstrap(pdpb::BootstrapRequest {
                header: header(cid),
                store,
                region,
            })
            .await
            .unwrap()
            .into_inner();
        assert_ne!(error_type(&resp.header), pdpb::ErrorType::Ok);
    }
    let resp = client
        .is_bootstrapped(pdpb::IsBootstrappedRequest {
            header: header(cid),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!resp.bootstrapped);
    server.shutdown().await;
}

#[tokio::test]
async fn wrong_cluster_id_is_rejected_in_header() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_in(dir.path()).await;
    let cid = server.cluster_id();
    let mut client = pd(&server).await;
    let wrong = cid.wrapping_add(1).max(1);

    let resp = client
        .alloc_id(pdpb::AllocIdRequest {
            header: header(wrong),
        })
        .await
        .unwrap()
        .into_inner();
    let h = resp.header.clone().unwrap();
    assert_eq!(h.cluster_id, cid, "response still carries our cluster id");
    assert!(h.error.unwrap().message.contains("mismatch cluster id"));
    assert_eq!(resp.id, 0);

    let resp = client
        .is_bootstrapped(pdpb::IsBootstrappedRequest {
            header: header(wrong),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(error_type(&resp.header), pdpb::ErrorType::Ok);

    let mut ks = keyspace(&server).await;
    let resp = ks
        .load_keyspace(keyspacepb::LoadKeyspaceRequest {
            header: header(wrong),
            name: "DEFAULT".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(resp.keyspace.is_none());
    assert_ne!(error_type(&resp.header), pdpb::ErrorType::Ok);

    // The TSO stream ends with FailedPrecondition, as PD does.
    let requests = tokio_stream::iter(vec![pdpb::TsoRequest {
        header: header(wrong),
        count: 1,
        dc_location: String::new(),
    }]);
    let mut responses = client.tso(requests).await.unwrap().into_inner();
    let status = responses.message().await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);

    // Cluster id 0 (not known yet) is accepted.
    let resp = client
        .alloc_id(pdpb::AllocIdRequest { header: header(0) })
        .await
        .unwrap()
        .into_inner();
    assert_ok(&resp.header);
    server.shutdown().await;
}

#[tokio::test]
async fn load_keyspace_default_exists_unknown_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_in(dir.path()).await;
    let cid = server.cluster_id();
    let mut ks = keyspace(&server).await;
    let resp = ks
        .load_keyspace(keyspacepb::LoadKeyspaceRequest {
            header: header(cid),
            name: "DEFAULT".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ok(&resp.header);
    let meta = resp.keyspace.unwrap();
    assert_eq!(meta.id, 0);
    assert_eq!(meta.name, "DEFAULT");
    assert_eq!(meta.state, keyspacepb::KeyspaceState::Enabled as i32);

    let resp = ks
        .load_keyspace(keyspacepb::LoadKeyspaceRequest {
            header: header(cid),
            name: "nope".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(error_type(&resp.header), pdpb::ErrorType::EntryNotFound);
    assert!(resp.keyspace.is_none());
    server.shutdown().await;
}
