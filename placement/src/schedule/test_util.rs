//! Constructed clusters for the scheduling unit tests: stores, Regions and
//! operators, plus a "perfect store" that carries out plans at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use shale_proto::{metapb, pdpb};

use super::controller::OperatorController;
use super::operator::{Operator, OperatorPlan, PlanStep};
use super::options::ScheduleOptions;
use super::schedulers::SchedulerSet;
use super::view::{ClusterView, RegionView};
use crate::cluster::regions::{RegionInfo, RegionTable};
use crate::cluster::stores::StoreRegistry;

pub const NOW: u64 = 1_700_000_000_000;

pub fn peer(id: u64, store_id: u64) -> metapb::Peer {
    metapb::Peer {
        id,
        store_id,
        ..Default::default()
    }
}

fn epoch(conf_ver: u64) -> metapb::RegionEpoch {
    metapb::RegionEpoch {
        conf_ver,
        version: 1,
    }
}

/// `peers` as (peer id, store id); the leader is the peer on `leader_store`.
pub fn region_view(id: u64, peers: &[(u64, u64)], leader_store: u64) -> RegionView {
    let peers: Vec<metapb::Peer> = peers.iter().map(|&(p, s)| peer(p, s)).collect();
    RegionView {
        id,
        epoch: epoch(1),
        leader: peers.iter().find(|p| p.store_id == leader_store).copied(),
        peers,
        pending: Vec::new(),
        down: Vec::new(),
    }
}

#[derive(Default)]
pub struct Fixture {
    pub stores: StoreRegistry,
    pub regions: RegionTable,
    pub ops: OperatorController,
    pub schedulers: SchedulerSet,
    next_peer_id: u64,
}

impl Fixture {
    /// Up stores that all heartbeated just now.
    pub fn new(store_ids: &[u64]) -> Self {
        let mut f = Fixture {
            next_peer_id: 1_000_000,
            ..Default::default()
        };
        for &id in store_ids {
            f.add_store(id);
        }
        f
    }

    pub fn add_store(&mut self, id: u64) {
        self.stores.upsert(
            metapb::Store {
                id,
                address: format!("store-{id}:20160"),
                ..Default::default()
            },
            NOW,
        );
    }

    pub fn set_state(&mut self, id: u64, state: metapb::StoreState) {
        let mut meta = self.stores.get(id).expect("known store").meta.clone();
        meta.state = state as i32;
        self.stores.upsert(meta, NOW);
    }

    /// The store's last heartbeat was at `at_ms`.
    pub fn silence(&mut self, id: u64, at_ms: u64) {
        let stats = pdpb::StoreStats {
            store_id: id,
            ..Default::default()
        };
        self.stores.heartbeat(stats, at_ms).expect("live store");
    }

    /// A Region with one peer on each of `stores` (peer id = id * 100 +
    /// store) led by the peer on `leader_store`; Regions do not overlap.
    pub fn add_region(&mut self, id: u64, stores: &[u64], leader_store: u64) {
        let peers: Vec<(u64, u64)> = stores.iter().map(|&s| (id * 100 + s, s)).collect();
        let view = region_view(id, &peers, leader_store);
        let meta = metapb::Region {
            id,
            start_key: id.to_be_bytes().to_vec(),
            end_key: (id + 1).to_be_bytes().to_vec(),
            region_epoch: Some(view.epoch),
            peers: view.peers,
            ..Default::default()
        };
        let update = self
            .regions
            .plan(RegionInfo::new(meta, view.leader))
            .expect("valid region");
        self.regions.apply(update);
    }

    pub fn view(&self) -> ClusterView {
        ClusterView::build(
            NOW,
            &self.stores,
            &self.regions,
            &self.ops,
            &self.schedulers,
        )
    }

    pub fn region(&self, id: u64) -> RegionView {
        RegionView::from_info(self.regions.get(id).expect("known region"))
    }

    pub fn add_operator(&mut self, plan: OperatorPlan) {
        let region = self.region(plan.region_id);
        let mut ids = self.next_peer_id..;
        let op = Operator::new(plan, &region, &mut ids, NOW).expect("ids");
        self.next_peer_id += 100;
        assert!(self.ops.add(op));
    }

    /// Carries out every step of `plan`, as a store would.
    pub fn execute(&mut self, plan: &OperatorPlan) {
        let mut info = self.regions.get(plan.region_id).expect("region").clone();
        let mut epoch = info.epoch();
        for step in &plan.steps {
            match *step {
                PlanStep::AddPeer { store_id } => {
                    assert!(
                        !info.meta.peers.iter().any(|p| p.store_id == store_id),
                        "two peers of region {} on store {store_id}",
                        plan.region_id
                    );
                    self.next_peer_id += 1;
                    info.meta.peers.push(peer(self.next_peer_id, store_id));
                    epoch.conf_ver += 1;
                }
                PlanStep::RemovePeer { store_id } => {
                    assert_ne!(
                        info.leader.map(|l| l.store_id),
                        Some(store_id),
                        "removing the leader of region {}",
                        plan.region_id
                    );
                    info.meta.peers.retain(|p| p.store_id != store_id);
                    epoch.conf_ver += 1;
                }
                PlanStep::TransferLeader { to_store, .. } => {
                    info.leader = info
                        .meta
                        .peers
                        .iter()
                        .find(|p| p.store_id == to_store)
                        .copied();
                    assert!(info.leader.is_some(), "no peer on store {to_store}");
                }
            }
        }
        info.meta.region_epoch = Some(epoch);
        let update = self.regions.plan(info).expect("newer epoch");
        self.regions.apply(update);
    }

    /// Plans and executes rounds until nothing more is planned; the number
    /// of operators run.
    pub fn run_until_quiet(&mut self, opts: &ScheduleOptions, schedulers: &SchedulerSet) -> usize {
        self.schedulers = schedulers.clone();
        let mut total = 0;
        for _ in 0..1_000 {
            let plans = super::plan_round(&mut self.view(), opts, schedulers);
            if plans.is_empty() {
                return total;
            }
            total += plans.len();
            for plan in &plans {
                self.execute(plan);
            }
        }
        panic!("scheduling did not settle");
    }

    /// Regions and leaders per store, from the routing table.
    pub fn counts(&self) -> BTreeMap<u64, (u64, u64)> {
        let counts = self.regions.store_counts();
        self.stores
            .iter()
            .map(|s| {
                let c = counts.get(&s.meta.id).copied().unwrap_or_default();
                (s.meta.id, (c.region_count, c.leader_count))
            })
            .collect()
    }
}
