//! Raft replication of Regions: one openraft group per Region replica, the
//! Raft-backed `Engine` (`RaftKv`) and the store-to-store transport.
//!
//! ```text
//! RaftKv (Engine) -> Router -> Peer (openraft) -> RegionLogStore (raft CF, group commit)
//!                                            \-> RegionStateMachine (data CFs + applied id, one batch)
//!                                            \-> RegionNetwork -> Transport (one stream per store pair)
//! ```

pub mod context;
pub mod initial_state;
pub mod keys;
pub mod log_store;
pub mod network;
pub mod peer;
pub mod peer_gc;
pub mod raft_kv;
pub mod ranges;
pub mod region_snapshot;
pub mod router;
pub mod split;
pub mod state_machine;
pub mod transport;
pub mod types;

#[cfg(test)]
mod tests;

pub use context::{CachedResolver, MaxTsSync, NoTso, StoreContext, StoreEvent, StoreResolver};
pub use raft_kv::RaftKv;
pub use region_snapshot::RegionSnapshot;
pub use router::{Router, RouterDispatch};
