//! This placement member's identity as reported by GetMembers and the HTTP API.

use shale_proto::pdpb;

use crate::raft::{NodeId, PlacementNode};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub name: String,
    pub member_id: u64,
    /// e.g. `http://127.0.0.1:2379`; tikv-client strips the scheme.
    pub client_url: String,
}

impl MemberInfo {
    pub fn new(name: String, member_id: u64, advertise_addr: &str) -> Self {
        let client_url = if advertise_addr.contains("://") {
            advertise_addr.to_string()
        } else {
            format!("http://{advertise_addr}")
        };
        MemberInfo {
            name,
            member_id,
            client_url,
        }
    }

    pub fn from_node(id: NodeId, node: &PlacementNode) -> Self {
        MemberInfo::new(node.name.clone(), id, &node.url)
    }

    pub fn to_proto(&self) -> pdpb::Member {
        pdpb::Member {
            name: self.name.clone(),
            member_id: self.member_id,
            peer_urls: vec![self.client_url.clone()],
            client_urls: vec![self.client_url.clone()],
            binary_version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        }
    }
}
