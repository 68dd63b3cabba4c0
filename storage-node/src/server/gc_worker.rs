//! Garbage collection below placement's GC safe point: old MVCC versions that
//! no reader at or above the safe point can see are removed, Region by Region.

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
        let mut done_up_to = 0u64;
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
            if safe_point <= done_up_to {
                continue;
            }
            match self.collect(safe_point).await {
                Ok(()) => done_up_to = safe_point,
                Err(e) => tracing::warn!(safe_point, "gc failed, will retry: {e}"),
            }
        }
    }

    async fn collect(&self, safe_point: u64) -> Result<(), crate::storage::StorageError> {
        for region in self.regions.all() {
            let ctx = EngineContext {
                region_id: region.id,
                conf_ver: region.region_epoch.as_ref().map_or(0, |e| e.conf_ver),
                version: region.region_epoch.as_ref().map_or(0, |e| e.version),
            };
            // Only a Region's leader collects (through Raft); replicas here
            // that do not lead answer with a Region error and are skipped.
            match self
                .storage
                .gc(&ctx, safe_point, &region.start_key, &region.end_key)
                .await
            {
                Ok(stats) => tracing::info!(region_id = region.id, safe_point, ?stats, "gc done"),
                Err(crate::storage::StorageError::Engine(crate::engine::EngineError::Region(
                    _,
                ))) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
