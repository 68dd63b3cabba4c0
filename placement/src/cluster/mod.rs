//! Cluster metadata: identity, bootstrap, stores, regions, GC safe points and
//! keyspaces.
//!
//! Reads are served from memory. Mutations are serialised by `writer`: plan
//! against the in-memory state, persist through the [`MetaStore`], then apply
//! in memory. Readers never wait for a disk write, and memory never holds
//! anything that is not durable.

pub mod error;
pub mod gc;
pub mod keyspaces;
pub mod regions;
pub mod split;
pub mod store_state;
pub mod stores;

use std::sync::Arc;

use parking_lot::{RwLock, RwLockReadGuard};
use shale_proto::{keyspacepb, metapb, pdpb};

use crate::clock::Clock;
use crate::id_alloc::IdAllocator;
use crate::meta::schema::{self, CLUSTER_ID, CLUSTER_META, GC_SAFE_POINT};
use crate::meta::{MetaResult, MetaStore};
use error::{PdError, PdResult};
use gc::GcSafePoints;
use keyspaces::Keyspaces;
use regions::{validate_region, RegionInfo, RegionTable};
use stores::StoreRegistry;

#[derive(Debug, Default)]
struct State {
    /// `Some` once bootstrapped.
    cluster: Option<metapb::Cluster>,
    stores: StoreRegistry,
    regions: RegionTable,
    gc: GcSafePoints,
    keyspaces: Keyspaces,
}

#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub max_peer_count: u32,
    pub id_batch: u64,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            max_peer_count: 3,
            id_batch: crate::id_alloc::DEFAULT_BATCH,
        }
    }
}

pub struct Cluster {
    id: u64,
    max_peer_count: u32,
    meta: Arc<dyn MetaStore>,
    clock: Arc<dyn Clock>,
    ids: IdAllocator,
    writer: tokio::sync::Mutex<()>,
    state: RwLock<State>,
}

/// PD's shape: creation time in the high 32 bits, randomness in the low 32.
fn new_cluster_id(now_secs: i64) -> u64 {
    let secs = u64::try_from(now_secs).unwrap_or(0) & 0xffff_ffff;
    loop {
        let id = (secs << 32) | u64::from(rand::random::<u32>());
        if id != 0 {
            return id;
        }
    }
}

impl Cluster {
    /// Loads (or, on first start, creates) the cluster's metadata.
    pub async fn open(
        meta: Arc<dyn MetaStore>,
        clock: Arc<dyn Clock>,
        options: ClusterOptions,
    ) -> MetaResult<Self> {
        let store = meta.as_ref();
        let mut first_writes = Vec::new();
        let id = match schema::load_u64(store, CLUSTER_ID).await? {
            Some(id) => id,
            None => {
                let id = new_cluster_id(clock.now_secs());
                first_writes.push(schema::put_u64(CLUSTER_ID, id));
                id
            }
        };
        let cluster: Option<metapb::Cluster> = schema::load_proto(store, CLUSTER_META).await?;
        let now_ms = clock.now_ms();

        let mut stores = StoreRegistry::default();
        for record in schema::load_protos::<metapb::Store>(store, schema::STORE_PREFIX).await? {
            stores.upsert(record, now_ms);
        }

        let mut regions = RegionTable::default();
        for record in schema::load_protos::<pdpb::Region>(store, schema::REGION_PREFIX).await? {
            let Some(region) = record.region else {
                continue;
            };
            match regions.plan(RegionInfo::new(region, record.leader)) {
                Ok(update) => regions.apply(update),
                Err(e) => tracing::warn!(error = %e, "skipping persisted region"),
            }
        }

        let gc_safe_point = schema::load_u64(store, GC_SAFE_POINT).await?.unwrap_or(0);
        let services = schema::load_service_safe_points(store).await?;

        let mut keyspace_records: Vec<keyspacepb::KeyspaceMeta> =
            schema::load_protos(store, schema::KEYSPACE_PREFIX).await?;
        if !keyspace_records
            .iter()
            .any(|k| k.name == keyspaces::DEFAULT_KEYSPACE_NAME)
        {
            let default = keyspaces::default_keyspace(clock.now_secs());
            first_writes.push(schema::put_keyspace(&default));
            keyspace_records.push(default);
        }

        if !first_writes.is_empty() {
            meta.write(first_writes).await?;
        }
        let ids = IdAllocator::open(meta.clone(), options.id_batch).await?;
        tracing::info!(
            cluster_id = id,
            bootstrapped = cluster.is_some(),
            stores = stores.len(),
            regions = regions.len(),
            "loaded cluster metadata"
        );
        Ok(Cluster {
            id,
            max_peer_count: options.max_peer_count,
            meta,
            clock,
            ids,
            writer: tokio::sync::Mutex::new(()),
            state: RwLock::new(State {
                cluster,
                stores,
                regions,
                gc: GcSafePoints::new(gc_safe_point, services),
                keyspaces: Keyspaces::new(keyspace_records),
            }),
        })
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn max_peer_count(&self) -> u32 {
        self.max_peer_count
    }

    /// Runs `read` over the stores and the routing table as one consistent
    /// view (the scheduler's snapshot); no write happens meanwhile.
    pub fn read_topology<R>(&self, read: impl FnOnce(&StoreRegistry, &RegionTable) -> R) -> R {
        let state = self.state.read();
        read(&state.stores, &state.regions)
    }

    pub fn is_bootstrapped(&self) -> bool {
        self.state.read().cluster.is_some()
    }

    fn ensure_bootstrapped(&self) -> PdResult<()> {
        self.bootstrapped_state().map(drop)
    }

    fn bootstrapped_state(&self) -> PdResult<RwLockReadGuard<'_, State>> {
        let state = self.state.read();
        if state.cluster.is_none() {
            return Err(PdError::NotBootstrapped);
        }
        Ok(state)
    }

    pub fn cluster_config(&self) -> PdResult<metapb::Cluster> {
        self.ensure_bootstrapped()?;
        Ok(metapb::Cluster {
            id: self.id,
            max_peer_count: self.max_peer_count,
        })
    }

    pub async fn alloc_id(&self) -> PdResult<u64> {
        Ok(self.ids.alloc().await?)
    }

    /// `n` fresh ids (new peers of scheduling operators).
    pub async fn alloc_ids(&self, n: usize) -> PdResult<Vec<u64>> {
        Ok(self.ids.alloc_many(n).await?)
    }

    /// Bootstraps the cluster with its first store and region, once.
    pub async fn bootstrap(
        &self,
        store: Option<metapb::Store>,
        region: Option<metapb::Region>,
    ) -> PdResult<()> {
        let mut store = store.ok_or_else(|| PdError::InvalidValue("missing store".into()))?;
        let region = region.ok_or_else(|| PdError::InvalidValue("missing region".into()))?;
        if store.id == 0 {
            return Err(PdError::InvalidValue("invalid zero store id".into()));
        }
        if store.address.is_empty() {
            return Err(PdError::InvalidValue("missing store address".into()));
        }
        validate_region(&region)?;
        let leader = region
            .peers
            .iter()
            .find(|p| p.store_id == store.id)
            .copied()
            .ok_or_else(|| {
                PdError::InvalidValue(format!(
                    "first region {} has no peer on bootstrap store {}",
                    region.id, store.id
                ))
            })?;

        let _writer = self.writer.lock().await;
        if self.is_bootstrapped() {
            return Err(PdError::AlreadyBootstrapped);
        }
        store.state = metapb::StoreState::Up as i32;
        store.node_state = metapb::NodeState::Serving as i32;
        let cluster = metapb::Cluster {
            id: self.id,
            max_peer_count: self.max_peer_count,
        };
        // Ids in the request normally came from AllocID; if a client made them
        // up, make sure AllocID never hands them out again.
        let max_id = region
            .peers
            .iter()
            .map(|p| p.id)
            .chain([store.id, region.id])
            .max()
            .unwrap_or(0);
        self.ids.bump_past(max_id).await?;
        self.meta
            .write(vec![
                schema::put_store(&store),
                schema::put_region(&region, Some(&leader)),
                schema::put_cluster_meta(&cluster),
            ])
            .await?;
        let now = self.clock.now_ms();
        let mut state = self.state.write();
        state.stores.upsert(store, now);
        let update = state.regions.plan(RegionInfo::new(region, Some(leader)))?;
        state.regions.apply(update);
        state.cluster = Some(cluster);
        tracing::info!(cluster_id = self.id, "cluster bootstrapped");
        Ok(())
    }

    /// Releases the metadata store (file locks) after the server stopped.
    pub async fn close(&self) {
        self.meta.close().await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::meta::MemMetaStore;

    const T0: u64 = 1_700_000_000_000;

    fn peer(id: u64, store_id: u64) -> metapb::Peer {
        metapb::Peer {
            id,
            store_id,
            ..Default::default()
        }
    }

    fn first_region() -> metapb::Region {
        metapb::Region {
            id: 2,
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver: 1,
                version: 1,
            }),
            peers: vec![peer(3, 1)],
            ..Default::default()
        }
    }

    fn first_store() -> metapb::Store {
        metapb::Store {
            id: 1,
            address: "127.0.0.1:20160".into(),
            ..Default::default()
        }
    }

    /// The first region split at `m` with the ids placement handed out:
    /// the new region on the left, the original (region 2) on the right.
    fn split_at_m(id: &pdpb::SplitId) -> (metapb::Region, metapb::Region) {
        let epoch = Some(metapb::RegionEpoch {
            conf_ver: 1,
            version: 2,
        });
        let left = metapb::Region {
            id: id.new_region_id,
            end_key: b"m".to_vec(),
            region_epoch: epoch,
            peers: vec![peer(id.new_peer_ids[0], 1)],
            ..Default::default()
        };
        let right = metapb::Region {
            id: 2,
            start_key: b"m".to_vec(),
            region_epoch: epoch,
            peers: vec![peer(3, 1)],
            ..Default::default()
        };
        (left, right)
    }

    /// Bootstraps `cluster` with the first store and Region, and asks for
    /// one split of that Region.
    async fn bootstrap_and_ask_split(cluster: &Cluster) -> pdpb::SplitId {
        cluster
            .bootstrap(Some(first_store()), Some(first_region()))
            .await
            .unwrap();
        let mut ids = cluster
            .ask_batch_split(Some(&first_region()), 1)
            .await
            .unwrap();
        assert_eq!(ids.len(), 1);
        ids.remove(0)
    }

    async fn open(meta: &Arc<MemMetaStore>) -> Cluster {
        Cluster::open(
            meta.clone(),
            Arc::new(ManualClock::new(T0)),
            ClusterOptions::default(),
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn id_is_stable_and_state_survives_reopen() {
        let meta = Arc::new(MemMetaStore::new());
        let cluster = open(&meta).await;
        let id = cluster.id();
        assert_ne!(id, 0);
        assert!(matches!(
            cluster.region_by_key(b""),
            Err(PdError::NotBootstrapped)
        ));
        cluster
            .bootstrap(Some(first_store()), Some(first_region()))
            .await
            .unwrap();
        cluster.update_gc_safe_point(77).await.unwrap();
        drop(cluster);

        let cluster = open(&meta).await;
        assert_eq!(cluster.id(), id);
        assert!(cluster.is_bootstrapped());
        let region = cluster.region_by_key(b"anything").unwrap().unwrap();
        assert_eq!(region.meta.id, 2);
        assert_eq!(region.leader.map(|l| l.id), Some(3));
        assert_eq!(
            cluster.get_store(1).unwrap().meta.address,
            "127.0.0.1:20160"
        );
        assert_eq!(cluster.gc_safe_point().unwrap(), 77);
        assert_eq!(cluster.load_keyspace("DEFAULT").unwrap().id, 0);
    }

    #[tokio::test]
    async fn bootstrap_validates_and_happens_once() {
        let meta = Arc::new(MemMetaStore::new());
        let cluster = open(&meta).await;
        let mut no_peer_on_store = first_region();
        no_peer_on_store.peers = vec![peer(3, 9)];
        assert!(matches!(
            cluster
                .bootstrap(Some(first_store()), Some(no_peer_on_store))
                .await,
            Err(PdError::InvalidValue(_))
        ));
        let mut no_peers = first_region();
        no_peers.peers.clear();
        assert!(cluster
            .bootstrap(Some(first_store()), Some(no_peers))
            .await
            .is_err());
        assert!(cluster.bootstrap(None, Some(first_region())).await.is_err());
        assert!(!cluster.is_bootstrapped());
        cluster
            .bootstrap(Some(first_store()), Some(first_region()))
            .await
            .unwrap();
        assert!(matches!(
            cluster
                .bootstrap(Some(first_store()), Some(first_region()))
                .await,
            Err(PdError::AlreadyBootstrapped)
        ));
        // Ids used by the bootstrap request are never allocated.
        assert!(cluster.alloc_id().await.unwrap() > 3);
    }

    #[tokio::test]
    async fn heartbeats_and_split_reports_update_routing() {
        let meta = Arc::new(MemMetaStore::new());
        let cluster = open(&meta).await;
        let split = bootstrap_and_ask_split(&cluster).await;
        assert_eq!(split.new_peer_ids.len(), 1);
        let new_id = split.new_region_id;
        let (left, right) = split_at_m(&split);
        cluster
            .report_batch_split(&[left.clone(), right.clone()])
            .await
            .unwrap();
        let a = cluster.region_by_key(b"a").unwrap().unwrap();
        assert_eq!(a.meta.id, new_id);
        assert_eq!(a.leader.map(|l| l.store_id), Some(1));
        assert_eq!(cluster.region_by_key(b"x").unwrap().unwrap().meta.id, 2);
        assert_eq!(cluster.prev_region(b"x").unwrap().unwrap().meta.id, new_id);

        // A stale heartbeat for region 2 (pre-split epoch) is rejected.
        let stale = pdpb::RegionHeartbeatRequest {
            region: Some(first_region()),
            leader: Some(peer(3, 1)),
            ..Default::default()
        };
        assert!(cluster.region_heartbeat(&stale).await.is_err());
        assert_eq!(cluster.scan_regions(b"", b"", 0).unwrap().len(), 2);

        // Asking to split with a stale epoch fails too.
        assert!(cluster
            .ask_batch_split(Some(&first_region()), 1)
            .await
            .is_err());

        // After a reopen, the split is still there.
        drop(cluster);
        let cluster = open(&meta).await;
        assert_eq!(cluster.scan_regions(b"", b"", 0).unwrap().len(), 2);
        assert_eq!(cluster.region_by_key(b"a").unwrap().unwrap().meta, left);
    }

    /// Lets `allowed` writes through, then holds the others until opened.
    struct GatedMeta {
        inner: Arc<MemMetaStore>,
        gate: Arc<tokio::sync::Semaphore>,
        gated: std::sync::atomic::AtomicBool,
    }

    impl MetaStore for GatedMeta {
        fn get<'a>(
            &'a self,
            key: &'a [u8],
        ) -> futures::future::BoxFuture<'a, MetaResult<Option<Vec<u8>>>> {
            self.inner.get(key)
        }
        fn scan_prefix<'a>(
            &'a self,
            prefix: &'a [u8],
        ) -> futures::future::BoxFuture<'a, MetaResult<crate::meta::Records>> {
            self.inner.scan_prefix(prefix)
        }
        fn write(
            &self,
            ops: Vec<crate::meta::MetaOp>,
        ) -> futures::future::BoxFuture<'_, MetaResult<()>> {
            Box::pin(async move {
                if self.gated.load(std::sync::atomic::Ordering::SeqCst) {
                    self.gate.acquire().await.unwrap().forget();
                }
                self.inner.write(ops).await
            })
        }
        fn close(&self) -> futures::future::BoxFuture<'_, ()> {
            self.inner.close()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_key_stays_routable_while_a_split_report_is_persisted() {
        let meta = Arc::new(GatedMeta {
            inner: Arc::new(MemMetaStore::new()),
            gate: Arc::new(tokio::sync::Semaphore::new(0)),
            gated: std::sync::atomic::AtomicBool::new(false),
        });
        let cluster = Arc::new(
            Cluster::open(
                meta.clone(),
                Arc::new(ManualClock::new(T0)),
                ClusterOptions::default(),
            )
            .await
            .unwrap(),
        );
        let (left, right) = split_at_m(&bootstrap_and_ask_split(&cluster).await);
        // One durable write goes through, the next ones wait.
        meta.gate.add_permits(1);
        meta.gated.store(true, std::sync::atomic::Ordering::SeqCst);
        let report = {
            let cluster = cluster.clone();
            tokio::spawn(async move { cluster.report_batch_split(&[left, right]).await })
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
        while std::time::Instant::now() < deadline && !report.is_finished() {
            for key in [&b"a"[..], b"x"] {
                assert!(
                    cluster.region_by_key(key).unwrap().is_some(),
                    "no region routes {key:?} while the split is persisted"
                );
            }
            tokio::task::yield_now().await;
        }
        meta.gated.store(false, std::sync::atomic::Ordering::SeqCst);
        meta.gate.add_permits(100);
        report.await.unwrap().unwrap();
        assert_eq!(cluster.scan_regions(b"", b"", 0).unwrap().len(), 2);
    }

    #[tokio::test]
    async fn heartbeat_from_unknown_store_is_rejected() {
        let meta = Arc::new(MemMetaStore::new());
        let cluster = open(&meta).await;
        cluster
            .bootstrap(Some(first_store()), Some(first_region()))
            .await
            .unwrap();
        let req = pdpb::RegionHeartbeatRequest {
            region: Some(metapb::Region {
                id: 50,
                start_key: b"q".to_vec(),
                region_epoch: Some(metapb::RegionEpoch {
                    conf_ver: 1,
                    version: 9,
                }),
                peers: vec![peer(51, 7)],
                ..Default::default()
            }),
            leader: Some(peer(51, 7)),
            ..Default::default()
        };
        assert!(cluster.region_heartbeat(&req).await.is_err());
        let mut no_leader = req.clone();
        no_leader.leader = None;
        assert!(matches!(
            cluster.region_heartbeat(&no_leader).await,
            Err(PdError::InvalidValue(_))
        ));
    }
}
