//! Test-only builders: clusters, a scripted placement, and a small
//! simulation of a StatefulSet with its pods and stores, so the scale and
//! upgrade state machines can be driven round by round.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use shale_crds::{
    ComponentSpec, PvcRetentionPolicy, TiKVCluster, TiKVClusterSpec, UpgradeProgress,
};

use crate::naming::{self, FINALIZER};
use crate::observed::{stores_by_ordinal, Observed, PlacementView, PodView, StsView};
use crate::placement_api::{PlacementApi, PlacementError, StoreInfo, StoreState};
use crate::rollout::{self, Plan, RolloutInput};

pub const NAME: &str = "basic";
pub const NS: &str = "default";

pub fn spec(placement: i32, storage: i32) -> TiKVClusterSpec {
    TiKVClusterSpec {
        version: "v1".into(),
        max_replicas: 3,
        paused: false,
        placement: ComponentSpec {
            replicas: placement,
            ..ComponentSpec::default()
        },
        storage: ComponentSpec {
            replicas: storage,
            ..ComponentSpec::default()
        },
        pvc_retention_policy: PvcRetentionPolicy::default(),
    }
}

/// A cluster as the API server would hand it to the reconciler.
pub fn cluster(spec: TiKVClusterSpec) -> TiKVCluster {
    let mut c = TiKVCluster::new(NAME, spec);
    c.metadata = ObjectMeta {
        name: Some(NAME.into()),
        namespace: Some(NS.into()),
        uid: Some("uid-1".into()),
        generation: Some(1),
        resource_version: Some("100".into()),
        finalizers: Some(vec![FINALIZER.into()]),
        ..ObjectMeta::default()
    };
    c
}

pub fn store(id: u64, ordinal: i32, state: StoreState, leaders: u64) -> StoreInfo {
    StoreInfo {
        id,
        address: naming::store_address(NAME, NS, ordinal),
        state,
        leader_count: leaders,
        region_count: leaders * 2,
    }
}

#[derive(Default)]
pub struct FakeState {
    pub stores: BTreeMap<u64, StoreInfo>,
    pub evicting: BTreeSet<u64>,
    pub calls: Vec<String>,
    pub unreachable: bool,
    /// Requests that change something fail (reads still work).
    pub refuse_changes: bool,
}

/// Placement as the operator sees it, scripted: `tick` plays what placement
/// does between two rounds (Regions leave Offline stores, leaders leave
/// evicted ones).
#[derive(Default)]
pub struct FakePlacement {
    pub state: Mutex<FakeState>,
}

impl FakePlacement {
    pub fn with_stores(stores: Vec<StoreInfo>) -> Arc<FakePlacement> {
        let fake = FakePlacement::default();
        fake.lock().stores = stores.into_iter().map(|s| (s.id, s)).collect();
        Arc::new(fake)
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    pub fn view(&self) -> PlacementView {
        let s = self.lock();
        if s.unreachable {
            return PlacementView::Unreachable("connection refused".into());
        }
        PlacementView::Known {
            stores: stores_by_ordinal(NAME, NS, s.stores.values().cloned().collect()),
            evicting: s.evicting.iter().copied().collect(),
        }
    }

    pub fn tick(&self) {
        let mut s = self.lock();
        let evicting = s.evicting.clone();
        for store in s.stores.values_mut() {
            if store.state == StoreState::Offline {
                store.state = StoreState::Tombstone;
                store.leader_count = 0;
                store.region_count = 0;
            }
            if evicting.contains(&store.id) {
                store.leader_count = 0;
            }
        }
    }

    fn answer<T>(
        &self,
        call: String,
        f: impl FnOnce(&mut FakeState) -> T,
    ) -> Result<T, PlacementError> {
        let mut s = self.lock();
        if s.unreachable || s.refuse_changes {
            return Err(PlacementError::Status {
                method: "fake",
                url: "http://placement.test".into(),
                status: 503,
                body: "unavailable".into(),
            });
        }
        s.calls.push(call);
        Ok(f(&mut s))
    }
}

impl PlacementApi for FakePlacement {
    fn stores<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Vec<StoreInfo>, PlacementError>> {
        Box::pin(async move {
            let s = self.lock();
            if s.unreachable {
                return Err(PlacementError::Decode {
                    url: "fake".into(),
                    message: "unreachable".into(),
                });
            }
            Ok(s.stores.values().cloned().collect())
        })
    }

    fn delete_store<'a>(
        &'a self,
        _: &'a str,
        id: u64,
    ) -> BoxFuture<'a, Result<(), PlacementError>> {
        Box::pin(async move {
            self.answer(format!("delete_store {id}"), |s| {
                if let Some(store) = s.stores.get_mut(&id) {
                    store.state = StoreState::Offline;
                }
            })
        })
    }

    fn evict_leader_stores<'a>(
        &'a self,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Vec<u64>, PlacementError>> {
        Box::pin(async move {
            let s = self.lock();
            if s.unreachable {
                return Err(PlacementError::Decode {
                    url: "fake".into(),
                    message: "unreachable".into(),
                });
            }
            Ok(s.evicting.iter().copied().collect())
        })
    }

    fn add_evict_leader<'a>(
        &'a self,
        _: &'a str,
        id: u64,
    ) -> BoxFuture<'a, Result<(), PlacementError>> {
        Box::pin(async move {
            self.answer(format!("add_evict_leader {id}"), |s| {
                s.evicting.insert(id);
            })
        })
    }

    fn remove_evict_leader<'a>(
        &'a self,
        _: &'a str,
        id: u64,
    ) -> BoxFuture<'a, Result<(), PlacementError>> {
        Box::pin(async move {
            self.answer(format!("remove_evict_leader {id}"), |s| {
                s.evicting.remove(&id);
            })
        })
    }
}

/// A StatefulSet that is rolled out and ready.
pub fn settled_sts(replicas: i32, revision: &str) -> StsView {
    StsView {
        replicas,
        partition: Some(replicas),
        fresh: true,
        ready_replicas: replicas,
        updated_replicas: replicas,
        current_revision: Some(revision.into()),
        update_revision: Some(revision.into()),
        version: Some("v1".into()),
    }
}

#[derive(Clone, Debug)]
pub struct SimPod {
    pub revision: u32,
    pub ready: bool,
}

/// The storage StatefulSet, its pods and their stores, advanced one round
/// at a time the way the StatefulSet controller and placement would.
pub struct Sim {
    pub placement: Arc<FakePlacement>,
    pub replicas: i32,
    pub partition: i32,
    pub template: u32,
    pub current: u32,
    pub pods: BTreeMap<i32, SimPod>,
    pub in_flight: Option<UpgradeProgress>,
    pub now: Timestamp,
    pub evict_timeout: SignedDuration,
    /// Pod ordinals in the order they were recreated from a new template.
    pub restarted: Vec<i32>,
    next_store: u64,
}

impl Sim {
    /// `replicas` ready pods, each with an Up store holding 5 leaders.
    pub fn new(replicas: i32) -> Sim {
        let stores = (0..replicas)
            .map(|o| store(o as u64 + 1, o, StoreState::Up, 5))
            .collect();
        Sim {
            placement: FakePlacement::with_stores(stores),
            replicas,
            partition: replicas,
            template: 1,
            current: 1,
            pods: (0..replicas)
                .map(|o| {
                    (
                        o,
                        SimPod {
                            revision: 1,
                            ready: true,
                        },
                    )
                })
                .collect(),
            in_flight: None,
            now: Timestamp::UNIX_EPOCH,
            evict_timeout: SignedDuration::from_secs(120),
            restarted: Vec::new(),
            next_store: replicas as u64 + 1,
        }
    }

    pub fn observe(&self) -> Observed {
        let ready = self.pods.values().filter(|p| p.ready).count() as i32;
        let updated = self
            .pods
            .values()
            .filter(|p| p.revision == self.template)
            .count() as i32;
        Observed {
            placement: Some(settled_sts(3, "p1")),
            storage: Some(StsView {
                replicas: self.replicas,
                partition: Some(self.partition),
                fresh: true,
                ready_replicas: ready,
                updated_replicas: updated,
                current_revision: Some(format!("rev-{}", self.current)),
                update_revision: Some(format!("rev-{}", self.template)),
                version: Some("v1".into()),
            }),
            storage_pods: self
                .pods
                .iter()
                .map(|(o, p)| PodView {
                    ordinal: *o,
                    revision: Some(format!("rev-{}", p.revision)),
                    ready: p.ready,
                })
                .collect(),
            placement_api: self.placement.view(),
        }
    }

    /// One reconcile round followed by the cluster's reaction to it.
    pub async fn round(&mut self, desired: i32) -> Plan {
        let observed = self.observe();
        let plan = rollout::plan(&RolloutInput {
            desired_storage: desired,
            observed: &observed,
            in_flight: self.in_flight.as_ref(),
            now: self.now,
            evict_timeout: self.evict_timeout,
        });
        self.replicas = plan.storage_replicas;
        self.partition = plan.storage_partition;
        self.in_flight = plan.progress.clone();
        let base = "http://fake";
        let p = &self.placement;
        let _ = match plan.action {
            Some(rollout::PlacementAction::DeleteStore { store_id }) => {
                p.delete_store(base, store_id).await
            }
            Some(rollout::PlacementAction::AddEvictLeader { store_id }) => {
                p.add_evict_leader(base, store_id).await
            }
            Some(rollout::PlacementAction::RemoveEvictLeader { store_id }) => {
                p.remove_evict_leader(base, store_id).await
            }
            None => Ok(()),
        };
        self.settle();
        self.placement.tick();
        self.now += SignedDuration::from_secs(10);
        plan
    }

    /// What the StatefulSet controller does between rounds.
    fn settle(&mut self) {
        // Pods that were not ready become ready and register a store.
        let waking: Vec<i32> = self
            .pods
            .iter()
            .filter(|(_, p)| !p.ready)
            .map(|(o, _)| *o)
            .collect();
        for ordinal in waking {
            if let Some(pod) = self.pods.get_mut(&ordinal) {
                pod.ready = true;
            }
            let live = self
                .placement
                .view()
                .stores()
                .and_then(|s| s.get(&ordinal).cloned());
            if live.is_none_or(|s| s.state == StoreState::Tombstone) {
                let id = self.next_store;
                self.next_store += 1;
                self.placement
                    .lock()
                    .stores
                    .insert(id, store(id, ordinal, StoreState::Up, 0));
            }
        }
        self.pods.retain(|o, _| *o < self.replicas);
        for ordinal in 0..self.replicas {
            let revision = if ordinal >= self.partition {
                self.template
            } else {
                self.current
            };
            self.pods.entry(ordinal).or_insert(SimPod {
                revision,
                ready: false,
            });
        }
        // RollingUpdate: one pod at a time, highest first, all others ready.
        let all_ready = self.pods.values().all(|p| p.ready);
        let stale = self
            .pods
            .iter()
            .filter(|(o, p)| **o >= self.partition && p.revision != self.template)
            .map(|(o, _)| *o)
            .max();
        if let (true, Some(ordinal)) = (all_ready, stale) {
            self.pods.insert(
                ordinal,
                SimPod {
                    revision: self.template,
                    ready: false,
                },
            );
            self.restarted.push(ordinal);
        }
        if self.pods.values().all(|p| p.revision == self.template) {
            self.current = self.template;
        }
    }

    pub fn not_ready(&self) -> usize {
        self.pods.values().filter(|p| !p.ready).count()
    }
}
