//! Scheduling: PD's checkers and schedulers, deciding operators from what
//! heartbeats reported, and the controller that sends them to Region
//! leaders in RegionHeartbeat responses and follows them until done.
//!
//! ```text
//! every schedule-interval (leader only, coordinator.rs):
//!   sweep      end operators that timed out or whose target store is gone
//!   view       stores + Regions + in-flight operators (view.rs)
//!   bury       Offline stores without peers -> Tombstone
//!   plan       replica_checker, evict_leader, balance_leader, balance_region
//!              (pure functions of the view, each counting what came before)
//!   create     allocate peer ids, register (one per Region), send step 1
//! on every Region heartbeat:
//!   controller advances the Region's operator and re-sends its current
//!   step, or ends it (finished, timed out, or stale)
//! ```
//!
//! The decisions are pure functions over a [`view::ClusterView`], unit
//! tested on constructed clusters; only the coordinator touches the
//! cluster, the metadata store and the heartbeat streams.

pub mod balance_leader;
pub mod balance_region;
pub mod builder;
pub mod controller;
pub mod coordinator;
pub mod evict_leader;
pub mod filters;
pub mod operator;
pub mod options;
pub mod replica_checker;
pub mod schedulers;
pub mod selector;
pub mod view;

#[cfg(test)]
mod test_util;

pub use coordinator::{CommandSink, Coordinator};
pub use options::ScheduleOptions;

use operator::OperatorPlan;
use schedulers::SchedulerSet;
use view::ClusterView;

/// One scheduling round: replica repair first (it keeps data safe), then
/// leader eviction, then balancing. Each sees what the earlier ones planned.
pub fn plan_round(
    view: &mut ClusterView,
    opts: &ScheduleOptions,
    schedulers: &SchedulerSet,
) -> Vec<OperatorPlan> {
    let mut plans = replica_checker::check(view, opts);
    if !schedulers.evict_leader_stores.is_empty() {
        plans.extend(evict_leader::schedule(view, opts));
    }
    if schedulers.balance_leader {
        plans.extend(balance_leader::schedule(view, opts));
    }
    if schedulers.balance_region {
        plans.extend(balance_region::schedule(view, opts));
    }
    plans
}
