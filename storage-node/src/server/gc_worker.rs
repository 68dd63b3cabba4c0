//! Garbage collection below placement's GC safe point: old MVCC versions that
//! no reader at or above the safe point can see are removed, Region by Region.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::engine::{Engine, EngineContext};
use crate::pd_client::PdClient;
use crate::region::RegionRegistry;
use crate::storage::Storage;

pub struct GcWorker<E: Engine, P> {
    pub storage: Storage<E>,
    pub pd: Arc<P>,
    pub regions: RegionRegistry,
    pub interval: Duration,
}

impl<E: Engine, P: PdClient> GcWorker<E, P> {
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        // The safe point each Region was last collected up to here. A
        // Region that failed, or that another store led, is tried again at
        // the next tick: it may lead here by then.
        let mut done: HashMap<u64, u64> = HashMap::new();
        let mut tick = tokio::time::interval(self.interval);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let safe_point = match self.pd.gc_safe_point().await {
                Ok(sp) => sp,
                Err(e) => {
                    tracing::debug!("cannot read GC safe point: {e}");
                    continue;
                }
            };
            if safe_point == 0 {
                continue;
            }
            self.collect(safe_point, &mut done).await;
        }
    }

    async fn collect(&self, safe_point: u64, done: &mut HashMap<u64, u64>) {
        let regions = self.regions.all();
        done.retain(|id, _| regions.iter().any(|r| r.id == *id));
        for region in regions {
            if done.get(&region.id).is_some_and(|sp| *sp >= safe_point) {
                continue;
            }
            let ctx = EngineContext {
                region_id: region.id,
                conf_ver: region.region_epoch.as_ref().map_or(0, |e| e.conf_ver),
                version: region.region_epoch.as_ref().map_or(0, |e| e.version),
                term: 0,
                store_wide: false,
            };
            // Only a Region's leader collects (through Raft); replicas here
            // that do not lead answer with a Region error.
            match self
                .storage
                .gc(&ctx, safe_point, &region.start_key, &region.end_key)
                .await
            {
                Ok(stats) => {
                    tracing::info!(region_id = region.id, safe_point, ?stats, "gc done");
                    done.insert(region.id, safe_point);
                }
                Err(crate::storage::StorageError::Engine(crate::engine::EngineError::Region(
                    e,
                ))) => tracing::debug!(region_id = region.id, "gc skipped: {}", e.message),
                Err(e) => tracing::warn!(
                    region_id = region.id,
                    safe_point,
                    "gc failed, will retry: {e}"
                ),
            }
        }
    }
}
