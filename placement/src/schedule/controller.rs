//! The operator controller: at most one operator per Region, dispatched on
//! the Region's heartbeats until a heartbeat shows it done, it times out,
//! or the Region changed under it.

use std::collections::HashMap;

use shale_proto::pdpb;

use super::operator::{OpKind, Operator, Progress};
use super::options::ScheduleOptions;
use super::view::RegionView;

/// How an operator left the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpEvent {
    Finished,
    TimedOut,
    Cancelled,
}

impl OpEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            OpEvent::Finished => "finish",
            OpEvent::TimedOut => "timeout",
            OpEvent::Cancelled => "cancel",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    pub operator: Operator,
    pub event: OpEvent,
    pub reason: String,
}

/// What a Region heartbeat produced: a command for the leader's store
/// and/or the operator that just ended.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct HeartbeatOutcome {
    pub command: Option<pdpb::RegionHeartbeatResponse>,
    pub ended: Option<Ended>,
}

#[derive(Debug, Default)]
pub struct OperatorController {
    ops: HashMap<u64, Operator>,
}

impl OperatorController {
    pub fn iter(&self) -> impl Iterator<Item = &Operator> {
        self.ops.values()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn get(&self, region_id: u64) -> Option<&Operator> {
        self.ops.get(&region_id)
    }

    pub fn running(&self, kind: OpKind) -> u64 {
        self.ops.values().filter(|op| op.kind == kind).count() as u64
    }

    /// False (and nothing changes) when the Region already has one.
    pub fn add(&mut self, op: Operator) -> bool {
        if self.ops.contains_key(&op.region_id) {
            return false;
        }
        self.ops.insert(op.region_id, op);
        true
    }

    /// A heartbeat of `region`: advance its operator, and either end it or
    /// send its current step (again) to the leader.
    pub fn on_heartbeat(
        &mut self,
        region: &RegionView,
        now_ms: u64,
        opts: &ScheduleOptions,
    ) -> HeartbeatOutcome {
        let Some(op) = self.ops.get_mut(&region.id) else {
            return HeartbeatOutcome::default();
        };
        let (event, reason) = match op.check(region, now_ms, opts) {
            Progress::Running(command) => {
                return HeartbeatOutcome {
                    command: Some(*command),
                    ended: None,
                }
            }
            Progress::Finished => (OpEvent::Finished, String::new()),
            Progress::TimedOut => (OpEvent::TimedOut, "step timed out".to_string()),
            Progress::Stale(reason) => (OpEvent::Cancelled, reason),
        };
        HeartbeatOutcome {
            command: None,
            ended: self.end(region.id, event, reason),
        }
    }

    /// Ends timed-out operators and those `still_possible` rejects (a
    /// target store went away, Down or Offline).
    pub fn sweep(
        &mut self,
        now_ms: u64,
        opts: &ScheduleOptions,
        still_possible: impl Fn(&Operator) -> Result<(), String>,
    ) -> Vec<Ended> {
        let mut doomed = Vec::new();
        for op in self.ops.values() {
            if op.is_timed_out(now_ms, opts) {
                doomed.push((
                    op.region_id,
                    OpEvent::TimedOut,
                    "step timed out".to_string(),
                ));
            } else if let Err(reason) = still_possible(op) {
                doomed.push((op.region_id, OpEvent::Cancelled, reason));
            }
        }
        doomed
            .into_iter()
            .filter_map(|(id, event, reason)| self.end(id, event, reason))
            .collect()
    }

    fn end(&mut self, region_id: u64, event: OpEvent, reason: String) -> Option<Ended> {
        self.ops.remove(&region_id).map(|operator| Ended {
            operator,
            event,
            reason,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::schedule::operator::{OperatorPlan, PlanStep};
    use crate::schedule::test_util::region_view;

    fn transfer(region_id: u64, from: u64, to: u64) -> OperatorPlan {
        OperatorPlan {
            region_id,
            desc: "balance-leader",
            kind: OpKind::Leader,
            steps: vec![PlanStep::TransferLeader {
                from_store: from,
                to_store: to,
            }],
        }
    }

    #[test]
    fn one_operator_per_region_dispatched_until_done() {
        let opts = ScheduleOptions::default();
        let mut ctl = OperatorController::default();
        let region = region_view(1, &[(10, 1), (11, 2), (12, 3)], 1);
        let op = Operator::new(transfer(1, 1, 2), &region, &mut std::iter::empty(), 0).unwrap();
        assert!(ctl.add(op.clone()));
        assert!(!ctl.add(op));
        assert_eq!(ctl.running(OpKind::Leader), 1);
        assert_eq!(ctl.running(OpKind::Region), 0);

        // Heartbeats of other Regions are not affected.
        let other = region_view(2, &[(20, 1)], 1);
        assert_eq!(
            ctl.on_heartbeat(&other, 1, &opts),
            HeartbeatOutcome::default()
        );

        // Re-sent on every heartbeat while unfinished.
        for now in 1..3 {
            let out = ctl.on_heartbeat(&region, now, &opts);
            assert!(out.command.unwrap().transfer_leader.is_some());
        }
        let done = region_view(1, &[(10, 1), (11, 2), (12, 3)], 2);
        let out = ctl.on_heartbeat(&done, 4, &opts);
        assert!(out.command.is_none());
        assert_eq!(out.ended.unwrap().event, OpEvent::Finished);
        assert!(ctl.is_empty());
    }

    #[test]
    fn timeouts_and_lost_targets_end_operators() {
        let opts = ScheduleOptions {
            fast_step_timeout_ms: 100,
            ..Default::default()
        };
        let mut ctl = OperatorController::default();
        for id in 1..=3 {
            let region = region_view(id, &[(id * 10, 1), (id * 10 + 1, 2)], 1);
            let op = Operator::new(transfer(id, 1, 2), &region, &mut std::iter::empty(), 0);
            assert!(ctl.add(op.unwrap()));
        }
        // Region 2's operator is refused by the caller's check.
        let ended = ctl.sweep(50, &opts, |op| {
            if op.region_id == 2 {
                Err("store 2 is Down".into())
            } else {
                Ok(())
            }
        });
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].event, OpEvent::Cancelled);
        assert_eq!(ended[0].reason, "store 2 is Down");
        let mut ended = ctl.sweep(101, &opts, |_| Ok(()));
        ended.sort_by_key(|e| e.operator.region_id);
        assert_eq!(ended.len(), 2);
        assert!(ended.iter().all(|e| e.event == OpEvent::TimedOut));
        assert!(ctl.is_empty());

        // A heartbeat past the deadline also ends it.
        let region = region_view(5, &[(50, 1), (51, 2)], 1);
        let op = Operator::new(transfer(5, 1, 2), &region, &mut std::iter::empty(), 0).unwrap();
        ctl.add(op);
        let out = ctl.on_heartbeat(&region, 500, &opts);
        assert_eq!(out.ended.unwrap().event, OpEvent::TimedOut);
    }
}
