//! Helpers shared by the integration tests: start a real placement server
//! on 127.0.0.1:0 and talk to it with the generated gRPC clients.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod group;
pub mod http;
pub mod sim;

use std::path::Path;
use std::time::Duration;

use shale_placement::{start, Config, PlacementServer};
use shale_proto::keyspacepb::keyspace_client::KeyspaceClient;
use shale_proto::pdpb::pd_client::PdClient;
use shale_proto::{metapb, pdpb};
use tonic::transport::Channel;

pub async fn start_in(dir: &Path) -> PlacementServer {
    let config = Config {
        name: "placement-test".into(),
        data_dir: dir.to_path_buf(),
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        log_level: "warn".into(),
        ..Default::default()
    };
    start(config).await.expect("placement starts")
}

pub async fn channel(server: &PlacementServer) -> Channel {
    let url = format!("http://{}", server.addr());
    Channel::from_shared(url)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connects")
}

pub async fn pd(server: &PlacementServer) -> PdClient<Channel> {
    PdClient::new(channel(server).await)
}

pub async fn keyspace(server: &PlacementServer) -> KeyspaceClient<Channel> {
    KeyspaceClient::new(channel(server).await)
}

pub fn header(cluster_id: u64) -> Option<pdpb::RequestHeader> {
    Some(pdpb::RequestHeader {
        cluster_id,
        sender_id: 0,
    })
}

/// The error type in a response header, `Ok` when there is none.
pub fn error_type(header: &Option<pdpb::ResponseHeader>) -> pdpb::ErrorType {
    let header = header.as_ref().expect("response has a header");
    match &header.error {
        None => pdpb::ErrorType::Ok,
        Some(e) => pdpb::ErrorType::try_from(e.r#type).expect("known error type"),
    }
}

pub fn assert_ok(header: &Option<pdpb::ResponseHeader>) {
    let h = header.as_ref().expect("response has a header");
    assert!(h.error.is_none(), "unexpected error header: {:?}", h.error);
}

pub async fn alloc_id(client: &mut PdClient<Channel>, cluster_id: u64) -> u64 {
    let resp = client
        .alloc_id(pdpb::AllocIdRequest {
            header: header(cluster_id),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ok(&resp.header);
    resp.id
}

pub fn peer(id: u64, store_id: u64) -> metapb::Peer {
    metapb::Peer {
        id,
        store_id,
        ..Default::default()
    }
}

pub fn store(id: u64, address: &str) -> metapb::Store {
    metapb::Store {
        id,
        address: address.into(),
        version: "8.5.0".into(),
        status_address: "127.0.0.1:20180".into(),
        start_timestamp: 1_700_000_000,
        ..Default::default()
    }
}

pub struct Bootstrapped {
    pub store_id: u64,
    pub region: metapb::Region,
}

/// Bootstraps like a storage node: ids from AllocID, one store, one region
/// covering everything.
pub async fn bootstrap(client: &mut PdClient<Channel>, cluster_id: u64) -> Bootstrapped {
    let store_id = alloc_id(client, cluster_id).await;
    let region_id = alloc_id(client, cluster_id).await;
    let peer_id = alloc_id(client, cluster_id).await;
    let region = metapb::Region {
        id: region_id,
        region_epoch: Some(metapb::RegionEpoch {
            conf_ver: 1,
            version: 1,
        }),
        peers: vec![peer(peer_id, store_id)],
        ..Default::default()
    };
    let resp = client
        .bootstrap(pdpb::BootstrapRequest {
            header: header(cluster_id),
            store: Some(store(store_id, "127.0.0.1:20160")),
            region: Some(region.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ok(&resp.header);
    Bootstrapped { store_id, region }
}
