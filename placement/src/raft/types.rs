//! openraft type configuration for the placement group.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::meta::MetaOp;

/// One replicated metadata change: a batch applied atomically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaCommand {
    pub ops: Vec<MetaOp>,
}

impl fmt::Display for MetaCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MetaCommand({} ops)", self.ops.len())
    }
}

/// What every member knows about another: its name and the URL that serves
/// clients, the HTTP API and Raft traffic (one port).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementNode {
    pub name: String,
    pub url: String,
}

impl fmt::Display for PlacementNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.url)
    }
}

openraft::declare_raft_types!(
    /// Placement's Raft types: metadata batches in, nothing out.
    pub TypeConfig:
        D = MetaCommand,
        R = (),
        Node = PlacementNode,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig, super::state_machine::MetaStateMachine>;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Entry = <TypeConfig as openraft::RaftTypeConfig>::Entry;
pub type Vote = <TypeConfig as openraft::RaftTypeConfig>::Vote;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, Vec<u8>>;

/// Binary encoding of everything Raft persists or sends.
pub fn encode<T: Serialize>(value: &T) -> std::io::Result<Vec<u8>> {
    postcard::to_stdvec(value).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> std::io::Result<T> {
    postcard::from_bytes(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// A member's Raft node id: a stable hash of its name, so every member
/// derives the same ids from the same `--initial-cluster` list.
pub fn node_id_of(name: &str) -> NodeId {
    // FNV-1a, 64 bit.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash.max(1)
}
