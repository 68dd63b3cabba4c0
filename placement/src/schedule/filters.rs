//! Which stores may take peers or leaders, which peers must move, which
//! Regions are safe to balance.

use shale_proto::metapb::{PeerRole, StoreState};

use super::options::ScheduleOptions;
use super::view::{RegionView, StoreView};

fn silent_ms(store: &StoreView, now_ms: u64) -> u64 {
    now_ms.saturating_sub(store.last_heartbeat_ms)
}

/// Silent for max-store-down-time: its peers get replaced.
pub fn is_down(store: &StoreView, now_ms: u64, opts: &ScheduleOptions) -> bool {
    silent_ms(store, now_ms) >= opts.max_store_down_ms
}

/// Silent long enough that nothing new should be put on it.
pub fn is_disconnected(store: &StoreView, now_ms: u64, opts: &ScheduleOptions) -> bool {
    silent_ms(store, now_ms) >= opts.disconnected_ms()
}

/// Why the peers on a store have to be moved elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Replace {
    /// The store has been silent for max-store-down-time.
    Down,
    /// The store is being removed (Offline), or was (Tombstone).
    Offline,
}

/// `None` for a healthy store, and for a store placement does not know
/// (as PD, which leaves such peers alone rather than guess).
pub fn replace_reason(
    store: Option<&StoreView>,
    now_ms: u64,
    opts: &ScheduleOptions,
) -> Option<Replace> {
    let store = store?;
    match store.state {
        StoreState::Offline | StoreState::Tombstone => Some(Replace::Offline),
        StoreState::Up if is_down(store, now_ms, opts) => Some(Replace::Down),
        StoreState::Up => None,
    }
}

/// May receive a new peer now.
pub fn can_take_peer(store: &StoreView, now_ms: u64, opts: &ScheduleOptions) -> bool {
    store.state == StoreState::Up
        && !is_disconnected(store, now_ms, opts)
        && store.incoming < opts.max_snapshot_count
}

/// May become the leader of a Region it has a peer of.
pub fn can_take_leader(store: &StoreView, now_ms: u64, opts: &ScheduleOptions) -> bool {
    store.state == StoreState::Up && !is_disconnected(store, now_ms, opts) && !store.evicted
}

/// May be the source of a balance-region move (failed and leaving stores
/// are the replica checker's business).
pub fn can_give_region(store: &StoreView, now_ms: u64, opts: &ScheduleOptions) -> bool {
    store.state == StoreState::Up && !is_disconnected(store, now_ms, opts)
}

/// A known leader, every peer a caught-up, reachable voter: safe to move
/// things around in.
pub fn is_healthy(region: &RegionView) -> bool {
    region.leader.is_some()
        && region.pending.is_empty()
        && region.down.is_empty()
        && region
            .peers
            .iter()
            .all(|p| p.role == PeerRole::Voter as i32)
}
