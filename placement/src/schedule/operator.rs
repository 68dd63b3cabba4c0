//! Operators: what placement asks a Region's leader to do, as ordered
//! steps, and how a later heartbeat shows each step done.
//!
//! A step becomes a `RegionHeartbeatResponse` for the leader's store:
//!
//! - add peer: `change_peer { peer { id: <new id>, store_id, role: Voter },
//!   change_type: AddNode }`. Done when the Region lists that peer as a
//!   Voter and not pending. PD adds a learner and promotes it later; one
//!   AddNode keeps the protocol to one message, and the store may still
//!   stage the peer as a learner while it catches up (openraft requires
//!   that): placement only counts it once it is a caught-up Voter.
//! - remove peer: `change_peer { peer: <the Region's peer on that store>,
//!   change_type: RemoveNode }`. Done when no peer is on that store. The
//!   leader's own peer is never removed: operators transfer leadership
//!   first, and one whose leader came back is cancelled.
//! - transfer leader: `transfer_leader { peer, peers: [peer] }`. Done when
//!   the Region's leader is on the target store.
//!
//! Every response carries `region_id`, the Region's current `region_epoch`
//! and `target_peer` (the leader). The same step is sent again on later
//! heartbeats until it is done, so stores must treat repeats as no-ops, and
//! must refuse a command whose epoch is not the Region's current one (as
//! TiKV does): that is what stops two steps planned on the same, older view
//! of a Region from both being applied.

use std::collections::BTreeSet;
use std::fmt;

use shale_proto::{eraftpb, metapb, pdpb};

use super::options::ScheduleOptions;
use super::view::RegionView;

/// What an operator counts against: each kind has its own limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// Leadership only (balance-leader, evict-leader).
    Leader,
    /// Peer moves of balance-region.
    Region,
    /// Replica repair (replica checker).
    Replica,
}

impl OpKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Leader => "leader",
            OpKind::Region => "region",
            OpKind::Replica => "replica",
        }
    }
}

/// A step as decided; new peers get ids when the operator is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanStep {
    AddPeer { store_id: u64 },
    RemovePeer { store_id: u64 },
    TransferLeader { from_store: u64, to_store: u64 },
}

/// A decision of a checker or scheduler, before ids are allocated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorPlan {
    pub region_id: u64,
    /// What made it, e.g. `balance-region`, `replace-down-peer`.
    pub desc: &'static str,
    pub kind: OpKind,
    pub steps: Vec<PlanStep>,
}

impl OperatorPlan {
    pub fn add_peer_count(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| matches!(s, PlanStep::AddPeer { .. }))
            .count()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    AddPeer { store_id: u64, peer_id: u64 },
    RemovePeer { store_id: u64 },
    TransferLeader { from_store: u64, to_store: u64 },
}

impl Step {
    pub fn is_finished(&self, region: &RegionView) -> bool {
        match *self {
            Step::AddPeer { store_id, peer_id } => region.peer_on(store_id).is_some_and(|p| {
                p.id == peer_id
                    && p.role == metapb::PeerRole::Voter as i32
                    && !region.is_pending(p.id)
            }),
            Step::RemovePeer { store_id } => !region.has_peer_on(store_id),
            Step::TransferLeader { to_store, .. } => region.leader_store() == Some(to_store),
        }
    }

    fn timeout_ms(&self, opts: &ScheduleOptions) -> u64 {
        match self {
            Step::AddPeer { .. } => opts.slow_step_timeout_ms,
            Step::RemovePeer { .. } | Step::TransferLeader { .. } => opts.fast_step_timeout_ms,
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::AddPeer { store_id, peer_id } => {
                write!(f, "add peer {peer_id} on store {store_id}")
            }
            Step::RemovePeer { store_id } => write!(f, "remove peer on store {store_id}"),
            Step::TransferLeader {
                from_store,
                to_store,
            } => write!(
                f,
                "transfer leader from store {from_store} to store {to_store}"
            ),
        }
    }
}

/// An operator in flight for one Region.
#[derive(Debug, Clone, PartialEq)]
pub struct Operator {
    pub region_id: u64,
    pub desc: &'static str,
    pub kind: OpKind,
    pub steps: Vec<Step>,
    /// Index of the first unfinished step.
    pub current: usize,
    /// Stores with a peer of the Region when the operator was made: with
    /// the finished steps, they say which peers a heartbeat should show.
    origin_stores: BTreeSet<u64>,
    pub created_ms: u64,
    step_started_ms: u64,
}

/// What a heartbeat (or a tick) decided about an operator.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// Still running; send this command to the leader's store.
    Running(Box<pdpb::RegionHeartbeatResponse>),
    Finished,
    TimedOut,
    /// Can no longer finish as planned.
    Stale(String),
}

impl Operator {
    /// `None` when `peer_ids` runs out before every new peer has an id.
    pub fn new(
        plan: OperatorPlan,
        region: &RegionView,
        peer_ids: &mut impl Iterator<Item = u64>,
        now_ms: u64,
    ) -> Option<Operator> {
        let mut steps = Vec::with_capacity(plan.steps.len());
        for step in plan.steps {
            steps.push(match step {
                PlanStep::AddPeer { store_id } => Step::AddPeer {
                    store_id,
                    peer_id: peer_ids.next()?,
                },
                PlanStep::RemovePeer { store_id } => Step::RemovePeer { store_id },
                PlanStep::TransferLeader {
                    from_store,
                    to_store,
                } => Step::TransferLeader {
                    from_store,
                    to_store,
                },
            });
        }
        Some(Operator {
            region_id: plan.region_id,
            desc: plan.desc,
            kind: plan.kind,
            steps,
            current: 0,
            origin_stores: region.peers.iter().map(|p| p.store_id).collect(),
            created_ms: now_ms,
            step_started_ms: now_ms,
        })
    }

    pub fn remaining_steps(&self) -> &[Step] {
        self.steps.get(self.current..).unwrap_or(&[])
    }

    pub fn current_step(&self) -> Option<&Step> {
        self.steps.get(self.current)
    }

    pub fn is_finished(&self) -> bool {
        self.current >= self.steps.len()
    }

    /// Moves past every step `region` shows done, in order.
    fn advance(&mut self, region: &RegionView, now_ms: u64) {
        let before = self.current;
        while self
            .steps
            .get(self.current)
            .is_some_and(|s| s.is_finished(region))
        {
            self.current += 1;
        }
        if self.current != before {
            self.step_started_ms = now_ms;
        }
    }

    pub fn is_timed_out(&self, now_ms: u64, opts: &ScheduleOptions) -> bool {
        self.current_step()
            .is_some_and(|s| now_ms.saturating_sub(self.step_started_ms) > s.timeout_ms(opts))
    }

    /// Applies what a heartbeat of the Region shows and decides what next.
    pub fn check(&mut self, region: &RegionView, now_ms: u64, opts: &ScheduleOptions) -> Progress {
        self.advance(region, now_ms);
        if self.is_finished() {
            return Progress::Finished;
        }
        if self.is_timed_out(now_ms, opts) {
            return Progress::TimedOut;
        }
        match self.command(region) {
            Ok(command) => Progress::Running(Box::new(command)),
            Err(reason) => Progress::Stale(reason),
        }
    }

    /// The Region's stores once the finished steps took effect.
    fn expected_stores(&self) -> BTreeSet<u64> {
        let mut stores = self.origin_stores.clone();
        for step in self.steps.iter().take(self.current) {
            match *step {
                Step::AddPeer { store_id, .. } => {
                    stores.insert(store_id);
                }
                Step::RemovePeer { store_id } => {
                    stores.remove(&store_id);
                }
                Step::TransferLeader { .. } => {}
            }
        }
        stores
    }

    /// Errors when the Region changed in a way this operator did not do
    /// (PD cancels those as stale) or the current step cannot be sent.
    fn check_in_progress(&self, region: &RegionView) -> Result<(), String> {
        let Some(step) = self.current_step() else {
            return Ok(());
        };
        let actual: BTreeSet<u64> = region.peers.iter().map(|p| p.store_id).collect();
        let mut expected = self.expected_stores();
        if actual != expected {
            // An add in progress may already show its (pending) peer.
            let adding = match *step {
                Step::AddPeer { store_id, .. } => expected.insert(store_id),
                _ => false,
            };
            if !adding || actual != expected {
                return Err(format!(
                    "Region {} peers changed outside the operator (stores {actual:?})",
                    region.id
                ));
            }
        }
        match *step {
            Step::AddPeer { store_id, peer_id } => match region.peer_on(store_id) {
                Some(p) if p.id != peer_id => Err(format!(
                    "store {store_id} already has another peer {} of Region {}",
                    p.id, region.id
                )),
                _ => Ok(()),
            },
            Step::RemovePeer { store_id } if region.leader_store() == Some(store_id) => {
                Err(format!(
                    "the leader of Region {} is on store {store_id}, cannot remove its peer",
                    region.id
                ))
            }
            Step::TransferLeader { to_store, .. } if !region.has_peer_on(to_store) => Err(format!(
                "Region {} has no peer on store {to_store} to lead",
                region.id
            )),
            _ => Ok(()),
        }
    }

    /// The command for the current step, for the Region's leader.
    pub fn command(&self, region: &RegionView) -> Result<pdpb::RegionHeartbeatResponse, String> {
        self.check_in_progress(region)?;
        let step = self
            .current_step()
            .ok_or_else(|| "operator already finished".to_string())?;
        let leader = region
            .leader
            .ok_or_else(|| format!("Region {} has no known leader", region.id))?;
        let mut response = pdpb::RegionHeartbeatResponse {
            region_id: region.id,
            region_epoch: Some(region.epoch),
            target_peer: Some(leader),
            ..Default::default()
        };
        let existing = |store_id: u64| {
            region
                .peer_on(store_id)
                .copied()
                .ok_or_else(|| format!("Region {} has no peer on store {store_id}", region.id))
        };
        match *step {
            Step::AddPeer { store_id, peer_id } => {
                response.change_peer = Some(pdpb::ChangePeer {
                    peer: Some(metapb::Peer {
                        id: peer_id,
                        store_id,
                        role: metapb::PeerRole::Voter as i32,
                        is_witness: false,
                    }),
                    change_type: eraftpb::ConfChangeType::AddNode as i32,
                });
            }
            Step::RemovePeer { store_id } => {
                response.change_peer = Some(pdpb::ChangePeer {
                    peer: Some(existing(store_id)?),
                    change_type: eraftpb::ConfChangeType::RemoveNode as i32,
                });
            }
            Step::TransferLeader { to_store, .. } => {
                let peer = existing(to_store)?;
                response.transfer_leader = Some(pdpb::TransferLeader {
                    peer: Some(peer),
                    peers: vec![peer],
                });
            }
        }
        Ok(response)
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (region {}): ", self.desc, self.region_id)?;
        for (i, step) in self.steps.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{step}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::schedule::test_util::{peer, region_view};

    fn move_plan() -> OperatorPlan {
        OperatorPlan {
            region_id: 7,
            desc: "balance-region",
            kind: OpKind::Region,
            steps: vec![
                PlanStep::AddPeer { store_id: 4 },
                PlanStep::TransferLeader {
                    from_store: 1,
                    to_store: 2,
                },
                PlanStep::RemovePeer { store_id: 1 },
            ],
        }
    }

    fn running(progress: Progress) -> pdpb::RegionHeartbeatResponse {
        match progress {
            Progress::Running(command) => *command,
            other => panic!("expected a command, got {other:?}"),
        }
    }

    #[test]
    fn steps_advance_as_heartbeats_show_them_done() {
        let opts = ScheduleOptions::default();
        let mut region = region_view(7, &[(70, 1), (71, 2), (72, 3)], 1);
        let mut op = Operator::new(move_plan(), &region, &mut [100].into_iter(), 0).unwrap();

        let cmd = running(op.check(&region, 1, &opts));
        let change = cmd.change_peer.unwrap();
        assert_eq!(change.change_type, eraftpb::ConfChangeType::AddNode as i32);
        assert_eq!(change.peer.unwrap(), peer(100, 4));
        assert_eq!(cmd.region_id, 7);
        assert_eq!(cmd.target_peer.unwrap().store_id, 1);
        assert_eq!(cmd.region_epoch, Some(region.epoch));

        // Added but still pending: the same command again.
        region.peers.push(peer(100, 4));
        region.pending.push(100);
        region.epoch.conf_ver += 1;
        let again = running(op.check(&region, 2, &opts));
        assert!(again.change_peer.is_some());
        assert_eq!(op.current, 0);

        region.pending.clear();
        let cmd = running(op.check(&region, 3, &opts));
        let transfer = cmd.transfer_leader.unwrap();
        assert_eq!(transfer.peer.unwrap(), peer(71, 2));
        assert_eq!(op.current, 1);

        region.leader = Some(peer(71, 2));
        let cmd = running(op.check(&region, 4, &opts));
        let change = cmd.change_peer.unwrap();
        assert_eq!(
            change.change_type,
            eraftpb::ConfChangeType::RemoveNode as i32
        );
        assert_eq!(change.peer.unwrap(), peer(70, 1));
        assert_eq!(cmd.target_peer.unwrap().store_id, 2);

        region.peers.retain(|p| p.store_id != 1);
        region.epoch.conf_ver += 1;
        assert_eq!(op.check(&region, 5, &opts), Progress::Finished);
    }

    #[test]
    fn several_steps_can_finish_in_one_heartbeat() {
        let opts = ScheduleOptions::default();
        let region = region_view(7, &[(70, 1), (71, 2), (72, 3)], 1);
        let mut op = Operator::new(move_plan(), &region, &mut [100].into_iter(), 0).unwrap();
        let done = region_view(7, &[(71, 2), (72, 3), (100, 4)], 2);
        assert_eq!(op.check(&done, 1, &opts), Progress::Finished);
    }

    #[test]
    fn outside_changes_and_a_returning_leader_make_it_stale() {
        let opts = ScheduleOptions::default();
        let region = region_view(7, &[(70, 1), (71, 2), (72, 3)], 1);
        let mut op = Operator::new(move_plan(), &region, &mut [100].into_iter(), 0).unwrap();
        let other = region_view(7, &[(70, 1), (71, 2), (72, 3), (90, 5)], 1);
        assert!(matches!(op.check(&other, 1, &opts), Progress::Stale(_)));

        // Someone else's peer on the target store.
        let mut op = Operator::new(move_plan(), &region, &mut [100].into_iter(), 0).unwrap();
        let clash = region_view(7, &[(70, 1), (71, 2), (72, 3), (99, 4)], 1);
        assert!(matches!(op.check(&clash, 1, &opts), Progress::Stale(_)));

        // Added and transferred, but the leader came back to store 1.
        let mut op = Operator::new(move_plan(), &region, &mut [100].into_iter(), 0).unwrap();
        let moved = region_view(7, &[(70, 1), (71, 2), (72, 3), (100, 4)], 2);
        assert!(running(op.check(&moved, 1, &opts)).change_peer.is_some());
        assert_eq!(op.current, 2);
        let back = region_view(7, &[(70, 1), (71, 2), (72, 3), (100, 4)], 1);
        assert!(matches!(op.check(&back, 2, &opts), Progress::Stale(_)));
    }

    #[test]
    fn steps_time_out() {
        let opts = ScheduleOptions {
            fast_step_timeout_ms: 10,
            slow_step_timeout_ms: 100,
            ..Default::default()
        };
        let region = region_view(7, &[(70, 1), (71, 2), (72, 3)], 1);
        let mut op = Operator::new(move_plan(), &region, &mut [100].into_iter(), 0).unwrap();
        running(op.check(&region, 50, &opts));
        assert_eq!(op.check(&region, 101, &opts), Progress::TimedOut);
        // Each step gets its own time, from when the previous one finished.
        let mut op = Operator::new(move_plan(), &region, &mut [100].into_iter(), 0).unwrap();
        let added = region_view(7, &[(70, 1), (71, 2), (72, 3), (100, 4)], 1);
        running(op.check(&added, 90, &opts));
        running(op.check(&added, 99, &opts));
        assert_eq!(op.check(&added, 101, &opts), Progress::TimedOut);
    }

    #[test]
    fn needs_an_id_for_every_new_peer() {
        let region = region_view(7, &[(70, 1)], 1);
        assert!(Operator::new(move_plan(), &region, &mut std::iter::empty(), 0).is_none());
        let op = Operator::new(move_plan(), &region, &mut [5].into_iter(), 0).unwrap();
        assert_eq!(
            op.to_string(),
            "balance-region (region 7): add peer 5 on store 4, transfer leader from store 1 \
             to store 2, remove peer on store 1"
        );
    }
}
