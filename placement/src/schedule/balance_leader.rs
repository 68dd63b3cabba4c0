//! balance-leader: transfers leadership of a Region from a store leading
//! many Regions to one of its followers on a store leading few, until no
//! transfer would even things out (every possible pair differs by less than
//! two). Each decision takes the transfer with the widest gap, which
//! settles closer to even than always starting from the busiest store.
//! Stores being removed, silent or evicted never receive leaders.

use std::cmp::Reverse;

use super::filters::is_healthy;
use super::operator::{OpKind, OperatorPlan, PlanStep};
use super::options::ScheduleOptions;
use super::selector::leader_target;
use super::view::ClusterView;

pub const DESC: &str = "balance-leader";

pub fn schedule(view: &mut ClusterView, opts: &ScheduleOptions) -> Vec<OperatorPlan> {
    let room = opts
        .leader_schedule_limit
        .saturating_sub(view.running(OpKind::Leader));
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

fn pick(view: &ClusterView, opts: &ScheduleOptions) -> Option<OperatorPlan> {
    let mut best: Option<(i64, Reverse<u64>, u64, u64)> = None;
    for region in view
        .regions
        .iter()
        .filter(|r| !view.is_busy(r.id) && is_healthy(r))
    {
        let Some(source) = region.leader_store().and_then(|id| view.store(id)) else {
            continue;
        };
        let Some(target) = leader_target(view, region, opts, source.id) else {
            continue;
        };
        // Only when it evens things out: otherwise leaders would go back and forth.
        let gap = source.leaders - target.leaders;
        let candidate = (gap, Reverse(region.id), source.id, target.id);
        if gap >= 2 && best.is_none_or(|b| (candidate.0, candidate.1) > (b.0, b.1)) {
            best = Some(candidate);
        }
    }
    best.map(
        |(_, Reverse(region_id), from_store, to_store)| OperatorPlan {
            region_id,
            desc: DESC,
            kind: OpKind::Leader,
            steps: vec![PlanStep::TransferLeader {
                from_store,
                to_store,
            }],
        },
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::schedule::schedulers::SchedulerSet;
    use crate::schedule::test_util::Fixture;

    fn leaders_only() -> SchedulerSet {
        SchedulerSet {
            balance_region: false,
            ..Default::default()
        }
    }

    #[test]
    fn leaders_spread_evenly() {
        let mut f = Fixture::new(&[1, 2, 3]);
        for id in 1..=12 {
            f.add_region(id, &[1, 2, 3], 1);
        }
        let opts = ScheduleOptions::default();
        let plans = schedule(&mut f.view(), &opts);
        assert_eq!(plans.len(), 4, "leader-schedule-limit");
        let moved = f.run_until_quiet(&opts, &leaders_only());
        assert_eq!(moved, 8);
        let leaders: Vec<u64> = f.counts().values().map(|c| c.1).collect();
        assert_eq!(leaders, [4, 4, 4]);
    }

    #[test]
    fn uses_followers_on_the_idle_store() {
        // Store 1 leads everything; only some Regions have a peer on 4.
        let mut f = Fixture::new(&[1, 2, 3, 4]);
        for id in 1..=6 {
            f.add_region(id, &[1, 2, 3], 1);
        }
        for id in 7..=8 {
            f.add_region(id, &[1, 2, 4], 1);
        }
        let opts = ScheduleOptions::default();
        f.run_until_quiet(&opts, &leaders_only());
        let counts = f.counts();
        let leaders: BTreeSet<u64> = counts.values().map(|c| c.1).collect();
        assert!(
            leaders.iter().max().unwrap() - leaders.iter().min().unwrap() <= 1,
            "{counts:?}"
        );
        assert_eq!(counts[&4].1, 2, "{counts:?}");
    }

    #[test]
    fn never_onto_evicted_or_leaving_stores() {
        let mut f = Fixture::new(&[1, 2, 3]);
        for id in 1..=9 {
            f.add_region(id, &[1, 2, 3], 1);
        }
        f.schedulers.evict_leader_stores.insert(2);
        let mut view = f.view();
        let plans = schedule(&mut view, &ScheduleOptions::default());
        assert!(!plans.is_empty());
        for plan in &plans {
            assert_eq!(
                plan.steps,
                [PlanStep::TransferLeader {
                    from_store: 1,
                    to_store: 3
                }]
            );
        }
        f.set_state(3, shale_proto::metapb::StoreState::Offline);
        assert!(schedule(&mut f.view(), &ScheduleOptions::default()).is_empty());
    }

    #[test]
    fn one_off_is_balanced() {
        let mut f = Fixture::new(&[1, 2]);
        f.add_region(1, &[1, 2], 1);
        f.add_region(2, &[1, 2], 1);
        f.add_region(3, &[1, 2], 2);
        assert!(schedule(&mut f.view(), &ScheduleOptions::default()).is_empty());
    }
}
