//! openraft type configuration for Region groups, and what travels in them.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::engine::Modify;

/// A Region replica's Raft node id is its peer id (allocated by placement).
pub type PeerId = u64;

/// What a Region group knows about a member: the store it lives on. The
/// store's address is resolved through placement, so a store can move.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerNode {
    pub store_id: u64,
}

impl fmt::Display for PeerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "store {}", self.store_id)
    }
}

/// The Region epoch a command was proposed under.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Epoch {
    pub conf_ver: u64,
    pub version: u64,
}

/// A new Region carved out by a split: its id, and the peer id for each of
/// the parent's peers (same order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitTarget {
    pub new_region_id: u64,
    pub new_peer_ids: Vec<u64>,
}

/// A replicated command of one Region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegionCommand {
    /// Data changes; rejected at apply time if the Region's version moved
    /// (a split changed its range) since the proposal.
    Write { epoch: Epoch, modifies: Vec<Modify> },
    /// Batch split at `keys` (ascending), right-derive: new Regions take the
    /// left parts, the original keeps the rightmost one.
    Split {
        epoch: Epoch,
        keys: Vec<Vec<u8>>,
        targets: Vec<SplitTarget>,
    },
    /// Data changes decided on a snapshot taken while the proposer led in
    /// `term`: rejected at apply time unless the entry is of that same term
    /// (leadership that moved away and back may have let another store
    /// commit changes the decision never saw), and like `Write` if the
    /// version moved. Last, so that logs written before it still decode.
    WriteInTerm {
        epoch: Epoch,
        term: u64,
        modifies: Vec<Modify>,
    },
}

impl fmt::Display for RegionCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegionCommand::Write { modifies, .. } | RegionCommand::WriteInTerm { modifies, .. } => {
                write!(f, "write({} changes)", modifies.len())
            }
            RegionCommand::Split { keys, .. } => write!(f, "split({} keys)", keys.len()),
        }
    }
}

/// The outcome of applying a command, returned to the proposer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CommandResult {
    Applied,
    /// The Region changed under the command; the encoded `metapb::Region`s
    /// are the current ones (for `EpochNotMatch`).
    EpochChanged {
        current: Vec<Vec<u8>>,
    },
    /// A key of the command lies outside the Region at this epoch: the
    /// whole command was refused.
    KeyNotInRegion {
        key: Vec<u8>,
        /// The Region as it is, `metapb::Region` encoded.
        region: Vec<u8>,
    },
    /// A `WriteInTerm` met a log of another term: refused.
    TermChanged,
}

openraft::declare_raft_types!(
    /// Region groups: Region commands in, apply outcomes out.
    pub RegionTypes:
        D = RegionCommand,
        R = CommandResult,
        Node = PeerNode,
);

pub type Raft = openraft::Raft<RegionTypes, super::state_machine::RegionStateMachine>;
pub type LogId = openraft::alias::LogIdOf<RegionTypes>;
pub type Entry = <RegionTypes as openraft::RaftTypeConfig>::Entry;
pub type Vote = <RegionTypes as openraft::RaftTypeConfig>::Vote;
pub type StoredMembership = openraft::alias::StoredMembershipOf<RegionTypes>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<RegionTypes>;
pub type Snapshot = openraft::alias::SnapshotOf<RegionTypes, Vec<u8>>;

pub fn encode<T: Serialize>(value: &T) -> std::io::Result<Vec<u8>> {
    postcard::to_stdvec(value).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> std::io::Result<T> {
    postcard::from_bytes(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

pub fn io_err(e: impl fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}
