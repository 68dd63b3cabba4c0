//! balance-region: moves a Region's peer from a store holding many
//! Regions to the store holding the fewest, until no move would even
//! things out (every possible pair differs by less than two). Each
//! decision takes the move with the widest gap; among equal gaps, moving a
//! follower (no leader transfer needed) wins. Counts are Region peers (PD
//! weighs by size; counting keeps empty and fresh Regions from skewing the
//! picture) and include operators in flight.

use std::cmp::Reverse;

use super::builder::move_peer;
use super::filters::{can_give_region, is_healthy};
use super::operator::{OpKind, OperatorPlan};
use super::options::ScheduleOptions;
use super::selector::store_for_new_peer;
use super::view::ClusterView;

pub const DESC: &str = "balance-region";

pub fn schedule(view: &mut ClusterView, opts: &ScheduleOptions) -> Vec<OperatorPlan> {
    let room = opts
        .region_schedule_limit
        .saturating_sub(view.running(OpKind::Region));
    let batch = usize::try_from(room)
        .unwrap_or(usize::MAX)
        .min(opts.balance_batch);
    let mut plans = Vec::new();
    while plans.len() < batch {
        let Some(plan) = pick(view, opts) else {
            break;
        };
        view.apply(&plan);
        plans.push(plan);
    }
    plans
}

/// A possible move, ordered by preference.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Candidate {
    gap: i64,
    follower: bool,
    region: Reverse<u64>,
    source: u64,
    target: u64,
}

fn pick(view: &ClusterView, opts: &ScheduleOptions) -> Option<OperatorPlan> {
    let mut candidates = Vec::new();
    for region in view
        .regions
        .iter()
        .filter(|r| !view.is_busy(r.id) && is_healthy(r) && r.peers.len() == opts.max_replicas)
    {
        let Some(target) = store_for_new_peer(view, region, opts) else {
            continue;
        };
        let source = region
            .peers
            .iter()
            .filter_map(|p| view.store(p.store_id))
            .filter(|s| can_give_region(s, view.now_ms, opts))
            .max_by_key(|s| {
                (
                    s.regions,
                    region.leader_store() != Some(s.id),
                    Reverse(s.id),
                )
            });
        let Some(source) = source else {
            continue;
        };
        let gap = source.regions - target.regions;
        if gap >= 2 {
            candidates.push(Candidate {
                gap,
                follower: region.leader_store() != Some(source.id),
                region: Reverse(region.id),
                source: source.id,
                target: target.id,
            });
        }
    }
    candidates.sort_unstable_by(|a, b| b.cmp(a));
    candidates.into_iter().find_map(|c| {
        let region = view.region(c.region.0)?;
        move_peer(view, region, c.source, c.target, DESC, OpKind::Region, opts)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use shale_proto::metapb::StoreState;

    use super::*;
    use crate::schedule::operator::PlanStep;
    use crate::schedule::schedulers::SchedulerSet;
    use crate::schedule::test_util::{Fixture, NOW};

    /// 12 Regions fully replicated on stores 1-3, leaders spread.
    fn three_stores() -> Fixture {
        let mut f = Fixture::new(&[1, 2, 3]);
        for id in 1..=12 {
            f.add_region(id, &[1, 2, 3], id % 3 + 1);
        }
        f
    }

    fn spread(values: impl Iterator<Item = u64>) -> (u64, u64) {
        let values: Vec<u64> = values.collect();
        (
            values.iter().copied().min().unwrap_or(0),
            values.iter().copied().max().unwrap_or(0),
        )
    }

    #[test]
    fn a_new_empty_store_fills_up_until_balanced() {
        let mut f = three_stores();
        f.add_store(4);
        let opts = ScheduleOptions::default();
        let plans = schedule(&mut f.view(), &opts);
        assert_eq!(plans.len(), opts.balance_batch);
        assert!(plans
            .iter()
            .all(|p| p.steps[0] == PlanStep::AddPeer { store_id: 4 }));
        // Sources take turns as their planned counts drop.
        let sources: Vec<_> = plans.iter().map(|p| *p.steps.last().unwrap()).collect();
        assert_eq!(
            sources,
            [
                PlanStep::RemovePeer { store_id: 1 },
                PlanStep::RemovePeer { store_id: 2 },
                PlanStep::RemovePeer { store_id: 3 },
                PlanStep::RemovePeer { store_id: 1 },
            ]
        );

        let only_regions = SchedulerSet {
            balance_leader: false,
            ..Default::default()
        };
        let moved = f.run_until_quiet(&opts, &only_regions);
        assert!(moved >= 9, "{moved}");
        let counts = f.counts();
        assert_eq!(spread(counts.values().map(|c| c.0)), (9, 9), "{counts:?}");
    }

    #[test]
    fn prefers_followers_and_hands_leadership_over_when_moving_a_leader() {
        let mut f = Fixture::new(&[1, 2, 3, 4]);
        f.add_region(1, &[1, 2, 3], 1);
        let opts = ScheduleOptions::default();
        // One Region against none: moving it would not even things out.
        assert!(pick(&f.view(), &opts).is_none());
        f.add_region(2, &[1, 2, 3], 2);
        f.add_region(3, &[1, 2, 3], 3);
        // Equal counts everywhere: a follower moves, no transfer needed.
        let plan = pick(&f.view(), &opts).unwrap();
        assert_eq!(plan.region_id, 1);
        assert_eq!(
            plan.steps,
            [
                PlanStep::AddPeer { store_id: 4 },
                PlanStep::RemovePeer { store_id: 2 }
            ]
        );

        // Store 1 holds the most and leads the only movable Region.
        let mut f = Fixture::new(&[1, 2, 3, 4]);
        f.add_region(1, &[1, 2, 3], 1);
        f.add_region(2, &[1], 1);
        f.add_region(3, &[1], 1);
        let plan = pick(&f.view(), &opts).unwrap();
        assert_eq!(
            plan.steps,
            [
                PlanStep::AddPeer { store_id: 4 },
                PlanStep::TransferLeader {
                    from_store: 1,
                    to_store: 2
                },
                PlanStep::RemovePeer { store_id: 1 }
            ]
        );
    }

    #[test]
    fn skips_unhealthy_regions_and_unusable_stores() {
        let mut f = three_stores();
        f.add_store(4);
        f.add_store(5);
        f.set_state(4, StoreState::Offline);
        f.silence(5, NOW - 25_000);
        let opts = ScheduleOptions::default();
        assert!(schedule(&mut f.view(), &opts).is_empty());

        let mut f = three_stores();
        f.add_store(4);
        let mut view = f.view();
        for region in &mut view.regions {
            region.pending.push(region.peers[0].id);
        }
        assert!(schedule(&mut view, &opts).is_empty());
    }

    #[test]
    fn balanced_clusters_stay_put() {
        let mut f = three_stores();
        let opts = ScheduleOptions::default();
        assert!(schedule(&mut f.view(), &opts).is_empty());
        f.add_store(4);
        let limited = ScheduleOptions {
            region_schedule_limit: 1,
            ..opts
        };
        assert_eq!(schedule(&mut f.view(), &limited).len(), 1);
    }
}
