//! The replica checker: every Region should have max-replicas peers on
//! distinct, healthy stores. Per Region, in PD's order: replace a peer on
//! a Down store, then one on an Offline (or Tombstone) store, add a
//! missing peer, drop an extra one. A replacement adds the new peer before
//! the old one goes, so a Region never has fewer copies than before.

use std::cmp::Ordering;

use super::builder::{move_peer, remove_peer};
use super::filters::{replace_reason, Replace};
use super::operator::{OpKind, OperatorPlan, PlanStep};
use super::options::ScheduleOptions;
use super::selector::{store_for_new_peer, store_to_shed};
use super::view::{ClusterView, RegionView};

pub const REPLACE_DOWN: &str = "replace-down-peer";
pub const REPLACE_OFFLINE: &str = "replace-offline-peer";
pub const REMOVE_DOWN: &str = "remove-down-peer";
pub const REMOVE_OFFLINE: &str = "remove-offline-peer";
pub const MAKE_UP: &str = "make-up-replica";
pub const REMOVE_EXTRA: &str = "remove-extra-replica";

/// Checks every Region without an operator, within replica-schedule-limit.
pub fn check(view: &mut ClusterView, opts: &ScheduleOptions) -> Vec<OperatorPlan> {
    let mut budget = opts
        .replica_schedule_limit
        .saturating_sub(view.running(OpKind::Replica));
    let mut plans = Vec::new();
    let mut index = 0;
    while budget > 0 {
        let Some(region) = view.regions.get(index) else {
            break;
        };
        index += 1;
        if view.is_busy(region.id) {
            continue;
        }
        if let Some(plan) = check_region(view, region, opts) {
            view.apply(&plan);
            plans.push(plan);
            budget -= 1;
        }
    }
    plans
}

/// What one Region needs, if anything.
pub fn check_region(
    view: &ClusterView,
    region: &RegionView,
    opts: &ScheduleOptions,
) -> Option<OperatorPlan> {
    // Every step is executed by the leader: without one nothing can be done.
    region.leader?;
    for reason in [Replace::Down, Replace::Offline] {
        let failing = region
            .peers
            .iter()
            .filter(|p| replace_reason(view.store(p.store_id), view.now_ms, opts) == Some(reason))
            .map(|p| p.store_id);
        for store_id in failing {
            let (replace, remove) = match reason {
                Replace::Down => (REPLACE_DOWN, REMOVE_DOWN),
                Replace::Offline => (REPLACE_OFFLINE, REMOVE_OFFLINE),
            };
            let plan = if region.peers.len() > opts.max_replicas {
                remove_peer(view, region, store_id, remove, OpKind::Replica, opts)
            } else {
                // No store to move to: wait (PD does too), the peer stays.
                let target = store_for_new_peer(view, region, opts)?;
                move_peer(
                    view,
                    region,
                    store_id,
                    target.id,
                    replace,
                    OpKind::Replica,
                    opts,
                )
            };
            if plan.is_some() {
                return plan;
            }
        }
    }
    match region.peers.len().cmp(&opts.max_replicas) {
        Ordering::Less => {
            let target = store_for_new_peer(view, region, opts)?;
            Some(OperatorPlan {
                region_id: region.id,
                desc: MAKE_UP,
                kind: OpKind::Replica,
                steps: vec![PlanStep::AddPeer {
                    store_id: target.id,
                }],
            })
        }
        Ordering::Greater => {
            let store_id = store_to_shed(view, region, opts)?;
            remove_peer(view, region, store_id, REMOVE_EXTRA, OpKind::Replica, opts)
        }
        Ordering::Equal => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use shale_proto::metapb::StoreState;

    use super::*;
    use crate::schedule::test_util::{Fixture, NOW};

    fn opts() -> ScheduleOptions {
        ScheduleOptions {
            max_store_down_ms: 60_000,
            ..Default::default()
        }
    }

    fn only_plan(f: &Fixture) -> OperatorPlan {
        let mut plans = check(&mut f.view(), &opts());
        assert_eq!(plans.len(), 1, "{plans:?}");
        plans.remove(0)
    }

    #[test]
    fn adds_a_missing_peer_on_the_emptiest_store() {
        let mut f = Fixture::new(&[1, 2, 3, 4]);
        f.add_region(1, &[1, 2], 1);
        f.add_region(2, &[3, 4, 2], 3);
        f.add_region(3, &[4, 2, 1], 4);
        // Store 3 holds one Region, store 4 two: the new peer goes to 3.
        let plan = only_plan(&f);
        assert_eq!(plan.region_id, 1);
        assert_eq!(plan.desc, MAKE_UP);
        assert_eq!(plan.steps, [PlanStep::AddPeer { store_id: 3 }]);
    }

    #[test]
    fn removes_an_extra_peer_but_never_the_leader() {
        let mut f = Fixture::new(&[1, 2, 3, 4]);
        f.add_region(1, &[1, 2, 3, 4], 4);
        // Store 4 holds the most Regions but leads this one.
        f.add_region(2, &[4, 2, 3], 2);
        f.add_region(3, &[4, 1, 3], 3);
        let plan = only_plan(&f);
        assert_eq!(plan.desc, REMOVE_EXTRA);
        assert_eq!(plan.steps, [PlanStep::RemovePeer { store_id: 3 }]);
    }

    #[test]
    fn replaces_peers_on_down_stores_add_first() {
        let mut f = Fixture::new(&[1, 2, 3, 4]);
        f.add_region(1, &[1, 2, 3], 3);
        f.silence(3, NOW - 61_000);
        let plan = only_plan(&f);
        assert_eq!(plan.desc, REPLACE_DOWN);
        // The down store leads it: leadership moves before its peer goes.
        assert_eq!(
            plan.steps,
            [
                PlanStep::AddPeer { store_id: 4 },
                PlanStep::TransferLeader {
                    from_store: 3,
                    to_store: 1
                },
                PlanStep::RemovePeer { store_id: 3 },
            ]
        );
        // Silent, but not for max-store-down-time yet: left alone.
        f.silence(3, NOW - 30_000);
        assert!(check(&mut f.view(), &opts()).is_empty());
    }

    #[test]
    fn drains_offline_stores_and_waits_without_a_target() {
        let mut f = Fixture::new(&[1, 2, 3, 4]);
        f.add_region(1, &[1, 2, 4], 1);
        f.add_region(2, &[1, 2, 3], 1);
        f.set_state(4, StoreState::Offline);
        let plan = only_plan(&f);
        assert_eq!(plan.region_id, 1);
        assert_eq!(plan.desc, REPLACE_OFFLINE);
        assert_eq!(
            plan.steps,
            [
                PlanStep::AddPeer { store_id: 3 },
                PlanStep::RemovePeer { store_id: 4 }
            ]
        );
        // With store 3 gone too, there is nowhere to go.
        f.set_state(3, StoreState::Tombstone);
        let plans = check(&mut f.view(), &opts());
        assert!(plans.iter().all(|p| p.region_id != 1), "{plans:?}");
    }

    #[test]
    fn over_replicated_with_a_failed_peer_drops_that_one() {
        let mut f = Fixture::new(&[1, 2, 3, 4]);
        f.add_region(1, &[1, 2, 3, 4], 1);
        f.set_state(2, StoreState::Offline);
        let plan = only_plan(&f);
        assert_eq!(plan.desc, REMOVE_OFFLINE);
        assert_eq!(plan.steps, [PlanStep::RemovePeer { store_id: 2 }]);
    }

    #[test]
    fn respects_the_limit_and_busy_regions() {
        let mut f = Fixture::new(&[1, 2, 3]);
        for id in 1..=5 {
            f.add_region(id, &[1], 1);
        }
        f.add_operator(OperatorPlan {
            region_id: 1,
            desc: "balance-leader",
            kind: OpKind::Leader,
            steps: vec![PlanStep::TransferLeader {
                from_store: 1,
                to_store: 2,
            }],
        });
        let limited = ScheduleOptions {
            replica_schedule_limit: 3,
            ..opts()
        };
        let plans = check(&mut f.view(), &limited);
        // One replica slot is not taken by the leader operator; Region 1 is busy.
        let ids: Vec<u64> = plans.iter().map(|p| p.region_id).collect();
        assert_eq!(ids, [2, 3, 4]);
        // Planned peers count: they spread over stores 2 and 3.
        let targets: Vec<_> = plans.iter().map(|p| p.steps[0]).collect();
        assert_eq!(
            targets,
            [
                PlanStep::AddPeer { store_id: 2 },
                PlanStep::AddPeer { store_id: 3 },
                PlanStep::AddPeer { store_id: 2 }
            ]
        );
    }

    #[test]
    fn converges_to_full_replication() {
        let mut f = Fixture::new(&[1, 2, 3, 4, 5]);
        for id in 1..=20 {
            f.add_region(id, &[1], 1);
        }
        f.run_until_quiet(&opts(), &Default::default());
        for region in f.view().regions {
            let mut stores: Vec<u64> = region.peers.iter().map(|p| p.store_id).collect();
            stores.sort_unstable();
            stores.dedup();
            assert_eq!(stores.len(), 3, "{region:?}");
        }
        let view = f.view();
        let counts: Vec<i64> = view.stores.values().map(|s| s.regions).collect();
        assert!(counts.iter().all(|c| (11..=13).contains(c)), "{counts:?}");
    }
}
