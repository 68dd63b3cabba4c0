//! What every Region replica on a store shares.

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
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

/// Asks placement for a store's address.
pub type StoreLookup = Arc<dyn Fn(u64) -> BoxFuture<'static, Result<String, String>> + Send + Sync>;

/// A resolver over a lookup function (placement's GetStore), with a cache.
///
/// A store that could not be reached is looked up again, by one caller at
/// most every refresh interval (a second): the hundred Regions
/// that just failed to reach it would otherwise each ask placement at once.
/// The others keep using the address last known.
pub struct CachedResolver {
    cache: parking_lot::Mutex<HashMap<u64, CachedAddress>>,
    refresh_interval: std::time::Duration,
    lookup: StoreLookup,
}

struct CachedAddress {
    addr: String,
    stale: bool,
    /// When the last lookup was claimed or answered.
    refreshed_at: std::time::Instant,
}

impl CachedResolver {
    pub fn new(lookup: StoreLookup) -> Arc<Self> {
        Self::with_refresh_interval(lookup, std::time::Duration::from_secs(1))
    }

    pub fn with_refresh_interval(
        lookup: StoreLookup,
        refresh_interval: std::time::Duration,
    ) -> Arc<Self> {
        Arc::new(CachedResolver {
            cache: parking_lot::Mutex::default(),
            refresh_interval,
            lookup,
        })
    }

    /// The cached address if it can be used as is; otherwise `None`, and
    /// the caller is the one to look the store up.
    fn cached_or_claim(&self, store_id: u64) -> Option<String> {
        let mut cache = self.cache.lock();
        let entry = cache.get_mut(&store_id)?;
        if !entry.stale || entry.refreshed_at.elapsed() < self.refresh_interval {
            return Some(entry.addr.clone());
        }
        entry.refreshed_at = std::time::Instant::now();
        None
    }

    fn record_lookup(&self, store_id: u64, result: &Result<String, String>) -> Option<String> {
        let mut cache = self.cache.lock();
        match result {
            Ok(addr) => {
                cache.insert(
                    store_id,
                    CachedAddress {
                        addr: addr.clone(),
                        stale: false,
                        refreshed_at: std::time::Instant::now(),
                    },
                );
                Some(addr.clone())
            }
            Err(_) => {
                // Keep what was known: placement may be the unreachable one.
                let entry = cache.get_mut(&store_id)?;
                entry.refreshed_at = std::time::Instant::now();
                Some(entry.addr.clone())
            }
        }
    }
}

impl StoreResolver for Arc<CachedResolver> {
    fn resolve(&self, store_id: u64) -> BoxFuture<'static, Result<String, String>> {
        let this = self.clone();
        Box::pin(async move {
            if let Some(addr) = this.cached_or_claim(store_id) {
                return Ok(addr);
            }
            let result = (this.lookup)(store_id).await;
            match this.record_lookup(store_id, &result) {
                Some(addr) => Ok(addr),
                None => result,
            }
        })
    }

    fn invalidate(&self, store_id: u64) {
        if let Some(entry) = self.cache.lock().get_mut(&store_id) {
            entry.stale = true;
        }
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

    const INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);

    /// A resolver whose lookups are counted and answer `answer`, or fail
    /// when it is empty.
    fn counting_resolver(
        answer: Arc<parking_lot::Mutex<String>>,
    ) -> (Arc<CachedResolver>, Arc<std::sync::atomic::AtomicUsize>) {
        let lookups = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = lookups.clone();
        let resolver = CachedResolver::with_refresh_interval(
            Arc::new(move |_store_id| {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let answer = answer.lock().clone();
                Box::pin(async move {
                    if answer.is_empty() {
                        Err("placement unavailable".to_string())
                    } else {
                        Ok(answer)
                    }
                })
            }),
            INTERVAL,
        );
        (resolver, lookups)
    }

    #[tokio::test]
    async fn an_unreachable_store_is_looked_up_again_once_per_interval() {
        let answer = Arc::new(parking_lot::Mutex::new("10.0.0.1:20160".to_string()));
        let (resolver, lookups) = counting_resolver(answer.clone());
        let count = || lookups.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(resolver.resolve(4).await.as_deref(), Ok("10.0.0.1:20160"));
        assert_eq!(resolver.resolve(4).await.as_deref(), Ok("10.0.0.1:20160"));
        assert_eq!(count(), 1, "a known address is served from the cache");

        // The store moved; the lookup was answered just now, so the next
        // one waits for the interval and everyone keeps the old address.
        *answer.lock() = "10.0.0.2:20160".to_string();
        for _ in 0..100 {
            resolver.invalidate(4);
            assert_eq!(resolver.resolve(4).await.as_deref(), Ok("10.0.0.1:20160"));
        }
        assert_eq!(count(), 1);
        tokio::time::sleep(INTERVAL).await;
        for _ in 0..100 {
            resolver.invalidate(4);
            let _ = resolver.resolve(4).await;
        }
        assert_eq!(count(), 2, "one lookup per interval, however many callers");
        assert_eq!(resolver.resolve(4).await.as_deref(), Ok("10.0.0.2:20160"));
    }

    #[tokio::test]
    async fn a_failed_lookup_keeps_the_last_known_address() {
        let answer = Arc::new(parking_lot::Mutex::new(String::new()));
        let (resolver, _lookups) = counting_resolver(answer.clone());
        assert!(resolver.resolve(4).await.is_err(), "nothing known yet");
        *answer.lock() = "10.0.0.1:20160".to_string();
        assert_eq!(resolver.resolve(4).await.as_deref(), Ok("10.0.0.1:20160"));

        answer.lock().clear();
        tokio::time::sleep(INTERVAL).await;
        resolver.invalidate(4);
        assert_eq!(resolver.resolve(4).await.as_deref(), Ok("10.0.0.1:20160"));
    }
}
