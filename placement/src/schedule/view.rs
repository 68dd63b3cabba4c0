//! What the checkers and schedulers decide on: one consistent snapshot of
//! the stores and Regions, with the effect of every operator still in
//! flight (and of every operator planned in this round) already counted,
//! so two decisions never rely on the same free capacity.

use std::collections::{BTreeMap, HashMap, HashSet};

use shale_proto::metapb::{self, StoreState};

use super::controller::OperatorController;
use super::operator::{OpKind, OperatorPlan, PlanStep, Step};
use super::schedulers::SchedulerSet;
use crate::cluster::regions::{RegionInfo, RegionTable};
use crate::cluster::store_state::store_state;
use crate::cluster::stores::StoreRegistry;

#[derive(Debug, Clone, PartialEq)]
pub struct StoreView {
    pub id: u64,
    pub state: StoreState,
    pub last_heartbeat_ms: u64,
    /// Has an evict-leader scheduler: takes no leaders.
    pub evicted: bool,
    /// Region peers, counting in-flight and planned operators.
    pub regions: i64,
    /// Region leaders, counting in-flight and planned operators.
    pub leaders: i64,
    /// Peers being added to it (unfinished add-peer steps).
    pub incoming: u64,
    /// Region peers the routing table shows on it right now.
    pub peers_in_table: u64,
    /// Some unfinished operator step involves it.
    pub in_operator: bool,
}

/// The parts of a Region that scheduling looks at.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionView {
    pub id: u64,
    pub epoch: metapb::RegionEpoch,
    pub peers: Vec<metapb::Peer>,
    pub leader: Option<metapb::Peer>,
    /// Ids of peers still catching up.
    pub pending: Vec<u64>,
    /// Ids of peers the leader reports unreachable.
    pub down: Vec<u64>,
}

impl RegionView {
    pub fn from_info(info: &RegionInfo) -> Self {
        RegionView {
            id: info.meta.id,
            epoch: info.epoch(),
            peers: info.meta.peers.clone(),
            leader: info.leader,
            pending: info.pending_peers.iter().map(|p| p.id).collect(),
            down: info
                .down_peers
                .iter()
                .filter_map(|d| d.peer.as_ref().map(|p| p.id))
                .collect(),
        }
    }

    pub fn peer_on(&self, store_id: u64) -> Option<&metapb::Peer> {
        self.peers.iter().find(|p| p.store_id == store_id)
    }

    pub fn has_peer_on(&self, store_id: u64) -> bool {
        self.peer_on(store_id).is_some()
    }

    pub fn leader_store(&self) -> Option<u64> {
        self.leader.map(|l| l.store_id)
    }

    pub fn is_pending(&self, peer_id: u64) -> bool {
        self.pending.contains(&peer_id)
    }

    pub fn is_down(&self, peer_id: u64) -> bool {
        self.down.contains(&peer_id)
    }

    /// A caught-up, reachable voter.
    pub fn is_healthy_voter(&self, peer: &metapb::Peer) -> bool {
        peer.role == metapb::PeerRole::Voter as i32
            && !self.is_pending(peer.id)
            && !self.is_down(peer.id)
    }
}

#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    pub now_ms: u64,
    pub stores: BTreeMap<u64, StoreView>,
    /// By Region id.
    pub regions: Vec<RegionView>,
    /// Regions that already have an operator (one at a time).
    busy: HashSet<u64>,
    /// Operators per kind: in flight plus planned in this round.
    running: HashMap<OpKind, u64>,
}

impl ClusterView {
    pub fn build(
        now_ms: u64,
        stores: &StoreRegistry,
        regions: &RegionTable,
        operators: &OperatorController,
        schedulers: &SchedulerSet,
    ) -> Self {
        let counts = regions.store_counts();
        let mut view = ClusterView {
            now_ms,
            ..Default::default()
        };
        for store in stores.iter() {
            let id = store.meta.id;
            let c = counts.get(&id).copied().unwrap_or_default();
            view.stores.insert(
                id,
                StoreView {
                    id,
                    state: store_state(&store.meta),
                    last_heartbeat_ms: store.last_heartbeat_ms,
                    evicted: schedulers.evicts(id),
                    regions: i64::try_from(c.region_count).unwrap_or(i64::MAX),
                    leaders: i64::try_from(c.leader_count).unwrap_or(i64::MAX),
                    incoming: 0,
                    peers_in_table: c.region_count,
                    in_operator: false,
                },
            );
        }
        view.regions = regions.iter().map(RegionView::from_info).collect();
        view.regions.sort_by_key(|r| r.id);
        for op in operators.iter() {
            view.busy.insert(op.region_id);
            *view.running.entry(op.kind).or_default() += 1;
            for step in op.remaining_steps() {
                view.add_step_influence(&PlanStep::from(*step));
            }
        }
        view
    }

    pub fn store(&self, id: u64) -> Option<&StoreView> {
        self.stores.get(&id)
    }

    pub fn region(&self, id: u64) -> Option<&RegionView> {
        self.regions
            .binary_search_by_key(&id, |r| r.id)
            .ok()
            .and_then(|i| self.regions.get(i))
    }

    pub fn is_busy(&self, region_id: u64) -> bool {
        self.busy.contains(&region_id)
    }

    pub fn running(&self, kind: OpKind) -> u64 {
        self.running.get(&kind).copied().unwrap_or(0)
    }

    /// Counts a planned operator as if it were running.
    pub fn apply(&mut self, plan: &OperatorPlan) {
        self.busy.insert(plan.region_id);
        *self.running.entry(plan.kind).or_default() += 1;
        for step in &plan.steps {
            self.add_step_influence(step);
        }
    }

    fn add_step_influence(&mut self, step: &PlanStep) {
        match *step {
            PlanStep::AddPeer { store_id } => {
                if let Some(s) = self.stores.get_mut(&store_id) {
                    s.regions += 1;
                    s.incoming += 1;
                    s.in_operator = true;
                }
            }
            PlanStep::RemovePeer { store_id } => {
                if let Some(s) = self.stores.get_mut(&store_id) {
                    s.regions -= 1;
                    s.in_operator = true;
                }
            }
            PlanStep::TransferLeader {
                from_store,
                to_store,
            } => {
                if let Some(s) = self.stores.get_mut(&from_store) {
                    s.leaders -= 1;
                    s.in_operator = true;
                }
                if let Some(s) = self.stores.get_mut(&to_store) {
                    s.leaders += 1;
                    s.in_operator = true;
                }
            }
        }
    }

    /// Offline stores no Region has a peer on any more and no operator is
    /// about to give one: they can become Tombstone.
    pub fn stores_to_bury(&self) -> Vec<u64> {
        self.stores
            .values()
            .filter(|s| s.state == StoreState::Offline && s.peers_in_table == 0 && !s.in_operator)
            .map(|s| s.id)
            .collect()
    }
}

impl From<Step> for PlanStep {
    fn from(step: Step) -> Self {
        match step {
            Step::AddPeer { store_id, .. } => PlanStep::AddPeer { store_id },
            Step::RemovePeer { store_id } => PlanStep::RemovePeer { store_id },
            Step::TransferLeader {
                from_store,
                to_store,
            } => PlanStep::TransferLeader {
                from_store,
                to_store,
            },
        }
    }
}
