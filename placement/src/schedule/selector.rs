//! Choosing stores: where a new peer goes, who leads next, which peer of
//! an over-replicated Region goes. Fewest Regions (or leaders) first,
//! counting operators in flight; the lowest store id breaks ties so
//! decisions are reproducible.

use super::filters::{can_take_leader, can_take_peer, replace_reason};
use super::options::ScheduleOptions;
use super::view::{ClusterView, RegionView, StoreView};

/// The store for a new peer of `region`: it takes peers and holds none of
/// the Region's yet.
pub fn store_for_new_peer<'a>(
    view: &'a ClusterView,
    region: &RegionView,
    opts: &ScheduleOptions,
) -> Option<&'a StoreView> {
    view.stores
        .values()
        .filter(|s| !region.has_peer_on(s.id) && can_take_peer(s, view.now_ms, opts))
        .min_by_key(|s| (s.regions, s.id))
}

/// The store that should lead `region` instead of `except_store`: one of
/// its caught-up voters, on a store that takes leaders.
pub fn leader_target<'a>(
    view: &'a ClusterView,
    region: &RegionView,
    opts: &ScheduleOptions,
    except_store: u64,
) -> Option<&'a StoreView> {
    region
        .peers
        .iter()
        .filter(|p| p.store_id != except_store && region.is_healthy_voter(p))
        .filter_map(|p| view.store(p.store_id))
        .filter(|s| can_take_leader(s, view.now_ms, opts))
        .min_by_key(|s| (s.leaders, s.id))
}

/// The store whose peer an over-replicated `region` should drop: never the
/// leader's; a peer on a failed or leaving store first, then the store
/// with the most Regions.
pub fn store_to_shed(
    view: &ClusterView,
    region: &RegionView,
    opts: &ScheduleOptions,
) -> Option<u64> {
    let leader = region.leader_store();
    region
        .peers
        .iter()
        .filter(|p| Some(p.store_id) != leader)
        .max_by_key(|p| {
            let store = view.store(p.store_id);
            let failing = replace_reason(store, view.now_ms, opts).is_some();
            let unhealthy = !region.is_healthy_voter(p);
            let regions = store.map_or(i64::MAX, |s| s.regions);
            (failing, unhealthy, regions, p.store_id)
        })
        .map(|p| p.store_id)
}
