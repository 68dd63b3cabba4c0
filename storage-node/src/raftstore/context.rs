//! What every Region replica on a store shares.

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use parking_lot::RwLock;
use shale_proto::metapb;
use tokio::sync::mpsc;

use super::transport::Transport;
use crate::engine::RocksEngine;
use crate::region::RegionRegistry;

/// Things a Region's apply tells the store about.
#[derive(Debug)]
pub enum StoreEvent {
    /// A split created these Regions (persisted): start their replicas here.
    /// `leader` says this store led the parent: its replicas campaign at
    /// once, the others elect after a timeout only if that fails (one
    /// campaign per group instead of a three-way split vote).
    SplitApplied {
        regions: Vec<metapb::Region>,
        leader: bool,
    },
    /// This store's replica was removed from the Region: destroy it.
    PeerRemoved { region_id: u64 },
}

/// Finds a store's address (placement knows; a cache keeps it cheap).
pub trait StoreResolver: Send + Sync + 'static {
    fn resolve(&self, store_id: u64) -> BoxFuture<'static, Result<String, String>>;
    /// Forgets a store's address after it could not be reached (it may
    /// have moved); the next `resolve` asks again.
    fn invalidate(&self, _store_id: u64) {}
}

/// Raises the store's `max_ts` (the largest timestamp any reader used) to
/// at least every timestamp the TSO has handed out so far: what a Region's
/// new leader must do before it lets async-commit or 1PC transactions pick
/// commit timestamps, since its predecessor may have served reads at any of
/// them.
pub trait MaxTsSync: Send + Sync + 'static {
    fn sync(&self) -> BoxFuture<'static, Result<(), String>>;
}

/// A store that takes no timestamps from a TSO (tests of replication
/// alone): syncing succeeds at once.
pub struct NoTso;

impl MaxTsSync for NoTso {
    fn sync(&self) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

/// A resolver over a lookup function (placement's GetStore), with a cache.
pub struct CachedResolver {
    cache: RwLock<HashMap<u64, String>>,
    lookup: Arc<dyn Fn(u64) -> BoxFuture<'static, Result<String, String>> + Send + Sync>,
}

impl CachedResolver {
    pub fn new(
        lookup: Arc<dyn Fn(u64) -> BoxFuture<'static, Result<String, String>> + Send + Sync>,
    ) -> Arc<Self> {
        Arc::new(CachedResolver {
            cache: RwLock::default(),
            lookup,
        })
    }
}

impl StoreResolver for Arc<CachedResolver> {
    fn resolve(&self, store_id: u64) -> BoxFuture<'static, Result<String, String>> {
        let this = self.clone();
        Box::pin(async move {
            if let Some(addr) = this.cache.read().get(&store_id) {
                return Ok(addr.clone());
            }
            let addr = (this.lookup)(store_id).await?;
            this.cache.write().insert(store_id, addr.clone());
            Ok(addr)
        })
    }

    fn invalidate(&self, store_id: u64) {
        self.cache.write().remove(&store_id);
    }
}

pub struct StoreContext {
    pub store_id: u64,
    pub engine: RocksEngine,
    pub regions: RegionRegistry,
    pub events: mpsc::UnboundedSender<StoreEvent>,
    pub transport: Arc<Transport>,
    pub resolver: Arc<dyn StoreResolver>,
    pub raft_config: Arc<openraft::Config>,
    /// Regions that became led here or ran a scheduling command: placement
    /// hears of them at once rather than at the next periodic heartbeat.
    pub changed_regions: ChangedRegions,
    /// Held while a replica changes which key ranges its Region owns here
    /// (snapshot install, split apply, destroy). Each works out what no
    /// other Region owns, writes, and updates `regions` as one step: a
    /// concurrent one would otherwise see another's freshly written data as
    /// unowned (not registered yet) and delete it.
    pub range_changes: tokio::sync::Mutex<()>,
    /// How a new leader syncs `max_ts` (the TSO, through placement).
    pub max_ts: Arc<dyn MaxTsSync>,
}

/// Regions to heartbeat before the next periodic round.
#[derive(Default)]
pub struct ChangedRegions {
    ids: parking_lot::Mutex<std::collections::BTreeSet<u64>>,
    notify: tokio::sync::Notify,
}

impl ChangedRegions {
    pub fn mark(&self, region_id: u64) {
        self.ids.lock().insert(region_id);
        self.notify.notify_one();
    }

    /// Waits until some Region is marked, and takes every marked one.
    pub async fn take(&self) -> std::collections::BTreeSet<u64> {
        loop {
            let ids = std::mem::take(&mut *self.ids.lock());
            if !ids.is_empty() {
                return ids;
            }
            self.notify.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn changed_regions_are_taken_once_each_and_take_waits_for_more() {
        let changed = Arc::new(ChangedRegions::default());
        changed.mark(5);
        changed.mark(3);
        changed.mark(5);
        assert_eq!(changed.take().await.into_iter().collect::<Vec<_>>(), [3, 5]);
        let waiting = {
            let changed = changed.clone();
            tokio::spawn(async move { changed.take().await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "nothing was marked since");
        changed.mark(9);
        let taken = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("a mark wakes the waiter")
            .expect("task");
        assert_eq!(taken.into_iter().collect::<Vec<_>>(), [9]);
    }
}
