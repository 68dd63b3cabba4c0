//! Turning "move this peer" or "drop this peer" into steps, keeping the
//! rule that the leader's peer is never removed: leadership moves first.

use super::filters::can_take_leader;
use super::operator::{OpKind, OperatorPlan, PlanStep};
use super::options::ScheduleOptions;
use super::selector::leader_target;
use super::view::{ClusterView, RegionView};

/// Drop the peer on `store_id`. `None` when it leads and no other peer
/// can take over.
pub fn remove_peer(
    view: &ClusterView,
    region: &RegionView,
    store_id: u64,
    desc: &'static str,
    kind: OpKind,
    opts: &ScheduleOptions,
) -> Option<OperatorPlan> {
    let mut steps = Vec::with_capacity(2);
    if region.leader_store() == Some(store_id) {
        let to = leader_target(view, region, opts, store_id)?;
        steps.push(PlanStep::TransferLeader {
            from_store: store_id,
            to_store: to.id,
        });
    }
    steps.push(PlanStep::RemovePeer { store_id });
    Some(OperatorPlan {
        region_id: region.id,
        desc,
        kind,
        steps,
    })
}

/// Add a peer on `to`, then drop the one on `from` (a replace or a move).
/// When `from` leads, leadership goes to the best other caught-up peer,
/// or to the new one if there is no other.
pub fn move_peer(
    view: &ClusterView,
    region: &RegionView,
    from: u64,
    to: u64,
    desc: &'static str,
    kind: OpKind,
    opts: &ScheduleOptions,
) -> Option<OperatorPlan> {
    let mut steps = vec![PlanStep::AddPeer { store_id: to }];
    if region.leader_store() == Some(from) {
        let new_leader = match leader_target(view, region, opts, from) {
            Some(store) => store.id,
            None => {
                let target = view.store(to)?;
                if !can_take_leader(target, view.now_ms, opts) {
                    return None;
                }
                to
            }
        };
        steps.push(PlanStep::TransferLeader {
            from_store: from,
            to_store: new_leader,
        });
    }
    steps.push(PlanStep::RemovePeer { store_id: from });
    Some(OperatorPlan {
        region_id: region.id,
        desc,
        kind,
        steps,
    })
}
