//! Scheduling during one leader term: the periodic round (sweep, plan,
//! create, first dispatch), the Region heartbeat hook that drives
//! operators forward, and the persisted scheduler configuration.
//!
//! Operators live in memory only, as in PD: a new leader starts with
//! none, and its checkers re-plan whatever is still needed from the
//! replicated Region table.

use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use prometheus::IntCounterVec;
use shale_proto::metapb::StoreState;
use shale_proto::pdpb;

use super::controller::{Ended, OpEvent, OperatorController};
use super::filters::is_down;
use super::operator::{Operator, Step};
use super::options::ScheduleOptions;
use super::schedulers::{SchedulerError, SchedulerName, SchedulerSet};
use super::view::{ClusterView, RegionView};
use crate::clock::Clock;
use crate::cluster::regions::RegionInfo;
use crate::cluster::Cluster;
use crate::meta::{MetaResult, MetaStore};

/// Where commands for a store go: its Region heartbeat stream.
pub trait CommandSink: Send + Sync {
    /// Queues `command` for `store_id`; false when the store has no open
    /// stream (the next heartbeat of the Region sends it again).
    fn send(&self, store_id: u64, command: pdpb::RegionHeartbeatResponse) -> bool;
}

pub struct Coordinator {
    opts: ScheduleOptions,
    meta: Arc<dyn MetaStore>,
    clock: Arc<dyn Clock>,
    schedulers: RwLock<SchedulerSet>,
    /// Serialises scheduler changes: plan, persist, then apply.
    schedulers_writer: tokio::sync::Mutex<()>,
    operators: Mutex<OperatorController>,
    /// `placement_operators_total{type, event}`.
    metrics: Option<IntCounterVec>,
}

impl Coordinator {
    /// Loads the persisted scheduler configuration.
    pub async fn open(
        meta: Arc<dyn MetaStore>,
        clock: Arc<dyn Clock>,
        opts: ScheduleOptions,
        metrics: Option<IntCounterVec>,
    ) -> MetaResult<Self> {
        let schedulers = SchedulerSet::load(meta.as_ref()).await?;
        Ok(Coordinator {
            opts,
            meta,
            clock,
            schedulers: RwLock::new(schedulers),
            schedulers_writer: tokio::sync::Mutex::new(()),
            operators: Mutex::new(OperatorController::default()),
            metrics,
        })
    }

    pub fn options(&self) -> &ScheduleOptions {
        &self.opts
    }

    pub fn schedulers(&self) -> SchedulerSet {
        self.schedulers.read().clone()
    }

    /// Operators in flight, by Region id.
    pub fn operators(&self) -> Vec<Operator> {
        let mut ops: Vec<Operator> = self.operators.lock().iter().cloned().collect();
        ops.sort_by_key(|op| op.region_id);
        ops
    }

    /// Adds a scheduler by its API name; evict-leader takes the store from
    /// `store_id` or from the name's suffix.
    pub async fn add_scheduler(
        &self,
        cluster: &Cluster,
        name: &str,
        store_id: Option<u64>,
    ) -> Result<(), SchedulerError> {
        let parsed = match (SchedulerName::parse(name)?, store_id) {
            (SchedulerName::EvictLeader(None), id) => SchedulerName::EvictLeader(id),
            (SchedulerName::EvictLeader(Some(named)), Some(body)) if named != body => {
                return Err(SchedulerError::StoreIdMismatch { name: named, body })
            }
            (parsed, _) => parsed,
        };
        if let SchedulerName::EvictLeader(Some(id)) = parsed {
            match cluster.get_store(id) {
                Ok(store) if store.is_tombstone() => {
                    return Err(SchedulerError::StoreTombstone(id))
                }
                Ok(_) => {}
                Err(_) => return Err(SchedulerError::StoreNotFound(id)),
            }
        }
        let _writer = self.schedulers_writer.lock().await;
        let Some(next) = self.schedulers.read().with_added(parsed)? else {
            return Ok(());
        };
        self.meta.write(vec![next.put()?]).await?;
        tracing::info!(scheduler = name, ?store_id, "scheduler added");
        *self.schedulers.write() = next;
        Ok(())
    }

    /// Removes a scheduler; a name that is not running (known or not) is
    /// `NotFound`.
    pub async fn remove_scheduler(&self, name: &str) -> Result<(), SchedulerError> {
        let parsed = SchedulerName::parse(name).map_err(|e| match e {
            SchedulerError::Unknown(name) => SchedulerError::NotFound(name),
            other => other,
        })?;
        let _writer = self.schedulers_writer.lock().await;
        let next = self.schedulers.read().with_removed(parsed)?;
        self.meta.write(vec![next.put()?]).await?;
        tracing::info!(scheduler = name, "scheduler removed");
        *self.schedulers.write() = next;
        Ok(())
    }

    /// Whether `region_id` has an operator in flight (a cheap check before
    /// [`Coordinator::on_region_heartbeat`]).
    pub fn has_operator(&self, region_id: u64) -> bool {
        self.operators.lock().get(region_id).is_some()
    }

    /// After a Region heartbeat was applied: the command to send back to
    /// the reporting leader, if the Region has an unfinished operator.
    pub fn on_region_heartbeat(&self, info: &RegionInfo) -> Option<pdpb::RegionHeartbeatResponse> {
        let now = self.clock.now_ms();
        let outcome = {
            let mut operators = self.operators.lock();
            operators.get(info.meta.id)?;
            operators.on_heartbeat(&RegionView::from_info(info), now, &self.opts)
        };
        if let Some(ended) = &outcome.ended {
            self.report_end(ended);
        }
        outcome.command
    }

    fn view(&self, cluster: &Cluster, now_ms: u64, schedulers: &SchedulerSet) -> ClusterView {
        let operators = self.operators.lock();
        cluster.read_topology(|stores, regions| {
            ClusterView::build(now_ms, stores, regions, &operators, schedulers)
        })
    }

    /// One scheduling round.
    pub async fn tick(&self, cluster: &Cluster, sink: &dyn CommandSink) {
        if !cluster.is_bootstrapped() {
            return;
        }
        let now = self.clock.now_ms();
        let schedulers = self.schedulers();
        let mut view = self.view(cluster, now, &schedulers);
        let ended = self
            .operators
            .lock()
            .sweep(now, &self.opts, |op| still_possible(op, &view, &self.opts));
        if !ended.is_empty() {
            for e in &ended {
                self.report_end(e);
            }
            view = self.view(cluster, now, &schedulers);
        }

        for store_id in view.stores_to_bury() {
            match cluster
                .set_store_state(store_id, StoreState::Tombstone)
                .await
            {
                Ok(true) => tracing::info!(store_id, "store holds no Region any more: Tombstone"),
                Ok(false) => {}
                Err(e) => tracing::warn!(store_id, error = %e, "cannot make store Tombstone"),
            }
        }

        let plans = super::plan_round(&mut view, &self.opts, &schedulers);
        if plans.is_empty() {
            return;
        }
        let needed: usize = plans.iter().map(|p| p.add_peer_count()).sum();
        let ids = if needed == 0 {
            Vec::new()
        } else {
            match cluster.alloc_ids(needed).await {
                Ok(ids) => ids,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot allocate peer ids; scheduling later");
                    return;
                }
            }
        };
        let mut ids = ids.into_iter();
        for plan in plans {
            let Some(region) = view.region(plan.region_id) else {
                continue;
            };
            let Some(op) = Operator::new(plan, region, &mut ids, now) else {
                continue;
            };
            let first = op.command(region);
            let described = op.to_string();
            let desc = op.desc;
            // A heartbeat may have raced us to this Region; then skip it.
            if !self.operators.lock().add(op) {
                continue;
            }
            self.count(desc, "create");
            tracing::info!(operator = %described, "operator created");
            // Sent now, as PD does; heartbeats of the Region re-send it.
            if let (Ok(command), Some(store_id)) = (first, region.leader_store()) {
                sink.send(store_id, command);
            }
        }
    }

    fn report_end(&self, ended: &Ended) {
        self.count(ended.operator.desc, ended.event.as_str());
        match ended.event {
            OpEvent::Finished => {
                tracing::info!(operator = %ended.operator, "operator finished")
            }
            OpEvent::TimedOut | OpEvent::Cancelled => tracing::warn!(
                operator = %ended.operator,
                event = ended.event.as_str(),
                reason = %ended.reason,
                "operator ended unfinished"
            ),
        }
    }

    fn count(&self, desc: &str, event: &str) {
        if let Some(metrics) = &self.metrics {
            metrics.with_label_values(&[desc, event]).inc();
        }
    }
}

/// Whether the stores an operator still needs can do their part: new
/// peers and leaders only go to Up stores that are not Down (nor, for
/// leaders, evicted).
fn still_possible(op: &Operator, view: &ClusterView, opts: &ScheduleOptions) -> Result<(), String> {
    for step in op.remaining_steps() {
        let (store_id, leader) = match *step {
            Step::AddPeer { store_id, .. } => (store_id, false),
            Step::TransferLeader { to_store, .. } => (to_store, true),
            Step::RemovePeer { .. } => continue,
        };
        let Some(store) = view.store(store_id) else {
            return Err(format!("store {store_id} is unknown"));
        };
        if store.state != StoreState::Up {
            return Err(format!("store {store_id} is {}", store.state.as_str_name()));
        }
        if is_down(store, view.now_ms, opts) {
            return Err(format!("store {store_id} is Down"));
        }
        if leader && store.evicted {
            return Err(format!("store {store_id} has its leaders evicted"));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use shale_proto::{eraftpb, metapb};

    use super::*;
    use crate::clock::ManualClock;
    use crate::cluster::ClusterOptions;
    use crate::meta::MemMetaStore;
    use crate::schedule::test_util::{peer, NOW};

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(u64, pdpb::RegionHeartbeatResponse)>>);

    impl CommandSink for Recorder {
        fn send(&self, store_id: u64, command: pdpb::RegionHeartbeatResponse) -> bool {
            self.0.lock().push((store_id, command));
            true
        }
    }

    impl Recorder {
        fn take(&self) -> Vec<(u64, pdpb::RegionHeartbeatResponse)> {
            std::mem::take(&mut *self.0.lock())
        }
    }

    struct Setup {
        meta: Arc<MemMetaStore>,
        clock: Arc<ManualClock>,
        cluster: Cluster,
        coordinator: Coordinator,
        region: metapb::Region,
    }

    /// Stores `1..=stores`; one Region (id 2) with a single peer on store 1.
    async fn setup(stores: u64) -> Setup {
        let meta = Arc::new(MemMetaStore::new());
        let clock = Arc::new(ManualClock::new(NOW));
        let cluster = Cluster::open(meta.clone(), clock.clone(), ClusterOptions::default())
            .await
            .unwrap();
        let store = |id: u64| metapb::Store {
            id,
            address: format!("s{id}:20160"),
            ..Default::default()
        };
        let region = metapb::Region {
            id: 2,
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver: 1,
                version: 1,
            }),
            peers: vec![peer(3, 1)],
            ..Default::default()
        };
        cluster
            .bootstrap(Some(store(1)), Some(region.clone()))
            .await
            .unwrap();
        for id in 2..=stores {
            cluster.put_store(Some(store(id))).await.unwrap();
        }
        let coordinator = Coordinator::open(
            meta.clone(),
            clock.clone(),
            ScheduleOptions::default(),
            None,
        )
        .await
        .unwrap();
        Setup {
            meta,
            clock,
            cluster,
            coordinator,
            region,
        }
    }

    async fn heartbeat(
        s: &Setup,
        region: &metapb::Region,
    ) -> Option<pdpb::RegionHeartbeatResponse> {
        let req = pdpb::RegionHeartbeatRequest {
            region: Some(region.clone()),
            leader: region.peers.first().copied(),
            ..Default::default()
        };
        s.cluster.region_heartbeat(&req).await.unwrap();
        s.coordinator
            .on_region_heartbeat(&RegionInfo::from_heartbeat(&req).unwrap())
    }

    #[tokio::test]
    async fn missing_replicas_are_added_through_heartbeats() {
        let s = setup(3).await;
        let sink = Recorder::default();
        s.coordinator.tick(&s.cluster, &sink).await;
        let sent = sink.take();
        assert_eq!(sent.len(), 1);
        let (store, command) = &sent[0];
        assert_eq!(*store, 1, "sent to the leader's store");
        let change = command.change_peer.unwrap();
        assert_eq!(change.change_type, eraftpb::ConfChangeType::AddNode as i32);
        let new_peer = change.peer.unwrap();
        assert_eq!(new_peer.store_id, 2);
        assert!(new_peer.id > 3, "a fresh id");

        // Not done yet: the same step again on the next heartbeat.
        let again = heartbeat(&s, &s.region).await.unwrap();
        assert_eq!(again.change_peer.unwrap().peer.unwrap(), new_peer);
        // One operator per Region: a tick meanwhile adds nothing.
        s.coordinator.tick(&s.cluster, &sink).await;
        assert!(sink.take().is_empty());

        let mut region = s.region.clone();
        region.peers.push(new_peer);
        region.region_epoch = Some(metapb::RegionEpoch {
            conf_ver: 2,
            version: 1,
        });
        assert!(heartbeat(&s, &region).await.is_none());
        assert!(s.coordinator.operators().is_empty());
        // The next round asks for the third replica, on store 3.
        s.coordinator.tick(&s.cluster, &sink).await;
        let sent = sink.take();
        let third = sent[0].1.change_peer.unwrap().peer.unwrap();
        assert_eq!(third.store_id, 3);
    }

    #[tokio::test]
    async fn operators_to_lost_stores_are_cancelled() {
        let s = setup(3).await;
        let sink = Recorder::default();
        s.coordinator.tick(&s.cluster, &sink).await;
        assert_eq!(s.coordinator.operators().len(), 1);
        // The target store (2) goes Offline: the operator is dropped and a
        // new one targets store 3.
        s.cluster
            .set_store_state(2, StoreState::Offline)
            .await
            .unwrap_err();
        s.cluster
            .put_store(Some(metapb::Store {
                id: 4,
                address: "s4:20160".into(),
                ..Default::default()
            }))
            .await
            .unwrap();
        s.cluster
            .set_store_state(2, StoreState::Offline)
            .await
            .unwrap();
        sink.take();
        s.coordinator.tick(&s.cluster, &sink).await;
        let ops = s.coordinator.operators();
        assert_eq!(ops.len(), 1);
        assert!(matches!(ops[0].steps[0], Step::AddPeer { store_id: 3, .. }));
    }

    #[tokio::test]
    async fn empty_offline_stores_become_tombstone() {
        let s = setup(4).await;
        s.cluster
            .set_store_state(4, StoreState::Offline)
            .await
            .unwrap();
        s.coordinator.tick(&s.cluster, &Recorder::default()).await;
        let store = s.cluster.get_store(4).unwrap();
        assert!(store.is_tombstone());
        assert_eq!(store.meta.node_state, metapb::NodeState::Removed as i32);
        // Store 1 holds the Region: it cannot be buried.
        assert!(!s.cluster.get_store(1).unwrap().is_tombstone());
    }

    #[tokio::test]
    async fn scheduler_config_persists_and_is_checked() {
        let s = setup(3).await;
        let c = &s.coordinator;
        c.add_scheduler(&s.cluster, "evict-leader-scheduler", Some(2))
            .await
            .unwrap();
        c.add_scheduler(&s.cluster, "evict-leader-scheduler-2", None)
            .await
            .unwrap();
        c.remove_scheduler("balance-region-scheduler")
            .await
            .unwrap();
        assert!(matches!(
            c.add_scheduler(&s.cluster, "evict-leader-scheduler", Some(9))
                .await,
            Err(SchedulerError::StoreNotFound(9))
        ));
        assert!(matches!(
            c.add_scheduler(&s.cluster, "evict-leader-scheduler-2", Some(3))
                .await,
            Err(SchedulerError::StoreIdMismatch { name: 2, body: 3 })
        ));
        assert!(matches!(
            c.add_scheduler(&s.cluster, "shuffle-leader-scheduler", None)
                .await,
            Err(SchedulerError::Unknown(_))
        ));
        assert!(matches!(
            c.remove_scheduler("evict-leader-scheduler-3").await,
            Err(SchedulerError::NotFound(_))
        ));

        let reopened = Coordinator::open(
            s.meta.clone(),
            s.clock.clone(),
            ScheduleOptions::default(),
            None,
        )
        .await
        .unwrap();
        assert_eq!(
            reopened.schedulers().names(),
            ["balance-leader-scheduler", "evict-leader-scheduler-2"]
        );
    }
}
