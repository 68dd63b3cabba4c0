//! evict-leader: every Region led from an evicted store gets a new leader
//! among its other caught-up voters (used before restarting a store).
//! Together with the filters keeping leaders off evicted stores, the store
//! ends up leading nothing until its scheduler is removed.

use super::operator::{OpKind, OperatorPlan, PlanStep};
use super::options::ScheduleOptions;
use super::selector::leader_target;
use super::view::ClusterView;

pub const DESC: &str = "evict-leader";

pub fn schedule(view: &mut ClusterView, opts: &ScheduleOptions) -> Vec<OperatorPlan> {
    let mut room = opts
        .leader_schedule_limit
        .saturating_sub(view.running(OpKind::Leader));
    let evicted: Vec<u64> = view
        .stores
        .values()
        .filter(|s| s.evicted)
        .map(|s| s.id)
        .collect();
    let mut plans = Vec::new();
    for store_id in evicted {
        let led: Vec<u64> = view
            .regions
            .iter()
            .filter(|r| r.leader_store() == Some(store_id) && !view.is_busy(r.id))
            .map(|r| r.id)
            .collect();
        for region_id in led {
            if room == 0 {
                return plans;
            }
            let Some(region) = view.region(region_id) else {
                continue;
            };
            let Some(target) = leader_target(view, region, opts, store_id) else {
                continue;
            };
            let plan = OperatorPlan {
                region_id,
                desc: DESC,
                kind: OpKind::Leader,
                steps: vec![PlanStep::TransferLeader {
                    from_store: store_id,
                    to_store: target.id,
                }],
            };
            view.apply(&plan);
            plans.push(plan);
            room -= 1;
        }
    }
    plans
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::schedule::schedulers::SchedulerSet;
    use crate::schedule::test_util::Fixture;

    #[test]
    fn evicted_store_ends_up_with_no_leaders() {
        let mut f = Fixture::new(&[1, 2, 3]);
        for id in 1..=9 {
            f.add_region(id, &[1, 2, 3], id % 3 + 1);
        }
        // A single-peer Region has nowhere to go (until the replica
        // checker gives it more peers).
        f.add_region(10, &[1], 1);
        let mut schedulers = SchedulerSet::default();
        schedulers.evict_leader_stores.insert(1);
        f.schedulers = schedulers.clone();
        let plans = schedule(&mut f.view(), &ScheduleOptions::default());
        assert_eq!(plans.len(), 3);
        assert!(plans.iter().all(|p| p.region_id != 10));
        f.run_until_quiet(&ScheduleOptions::default(), &schedulers);
        let counts = f.counts();
        assert_eq!(counts[&1].1, 0, "{counts:?}");
        // Balance-leader spreads the rest without touching store 1.
        assert_eq!(counts[&2].1 + counts[&3].1, 10);
        assert!(counts[&2].1.abs_diff(counts[&3].1) <= 1, "{counts:?}");

        // Without the scheduler, leaders come back.
        f.run_until_quiet(&ScheduleOptions::default(), &SchedulerSet::default());
        assert!(f.counts()[&1].1 >= 3);
    }

    #[test]
    fn limited_by_leader_schedule_limit() {
        let mut f = Fixture::new(&[1, 2]);
        for id in 1..=10 {
            f.add_region(id, &[1, 2], 1);
        }
        f.schedulers.evict_leader_stores.insert(1);
        let opts = ScheduleOptions {
            leader_schedule_limit: 2,
            ..Default::default()
        };
        assert_eq!(schedule(&mut f.view(), &opts).len(), 2);
    }
}
