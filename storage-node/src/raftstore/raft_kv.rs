//! `RaftKv`: the [`Engine`] whose writes are proposed to the Region's Raft
//! group (and return once applied here) and whose reads wait for a
//! linearizable read barrier on the Region's leader. Snapshots see only the
//! Region's own keys ([`RegionSnapshot`]); writes may touch only them
//! (range deletes are narrowed to the Region, other keys refused).
//!
//! A store-wide context ([`EngineContext::store_wide`]) addresses the store
//! itself: maintenance (`UnsafeDestroyRange`) applies to the local engine
//! directly, as in TiKV. Any other request must name a Region here: one
//! without (a missing context, region id 0) is refused, never written
//! around Raft.

use std::future::Future;
use std::sync::Arc;

use shale_proto::{errorpb, metapb};

use super::peer::epoch_not_match;
use super::ranges::clamp_to_region;
use super::region_snapshot::RegionSnapshot;
use super::router::Router;
use crate::engine::{Engine, EngineContext, EngineError, EngineResult, Modify};
use crate::region::key_not_in_region;

#[derive(Clone)]
pub struct RaftKv {
    router: Arc<Router>,
}

impl RaftKv {
    pub fn new(router: Arc<Router>) -> Self {
        RaftKv { router }
    }
}

fn region_not_found(region_id: u64) -> EngineError {
    if region_id == 0 {
        tracing::warn!("refused a request that names no region");
        return EngineError::Region(Box::new(errorpb::Error {
            message: "the request names no region (region id 0)".into(),
            region_not_found: Some(errorpb::RegionNotFound { region_id }),
            ..Default::default()
        }));
    }
    EngineError::Region(Box::new(errorpb::Error {
        message: format!("region {region_id} not found on this store"),
        region_not_found: Some(errorpb::RegionNotFound { region_id }),
        ..Default::default()
    }))
}

impl Engine for RaftKv {
    type Snap = RegionSnapshot;

    fn async_snapshot(
        &self,
        ctx: &EngineContext,
    ) -> impl Future<Output = EngineResult<RegionSnapshot>> + Send {
        let router = self.router.clone();
        let (region_id, version, store_wide) = (ctx.region_id, ctx.version, ctx.store_wide);
        async move {
            let engine = &router.context().engine;
            if store_wide {
                let whole_store = metapb::Region::default();
                return Ok(RegionSnapshot::new(engine.snapshot(), whole_store, true, 0));
            }
            let peer = router
                .peer(region_id)
                .ok_or_else(|| region_not_found(region_id))?;
            let term = peer.leader_term();
            peer.read_barrier(version).await?;
            let snap = engine.snapshot();
            // Taken after the snapshot: if a split moved the version since,
            // its new Regions may already write here, and this range would
            // show their data under the old epoch.
            let region = peer.region();
            if region.region_epoch.unwrap_or_default().version != version {
                return Err(epoch_not_match(vec![region]));
            }
            // Led in one term from before the barrier until after the
            // snapshot: it holds everything committed before, and a write
            // decided on it may be appended in that term only.
            let term = match (term, peer.leader_term()) {
                (Some(before), Some(after)) if before == after => after,
                _ => return Err(peer.not_leader_error()),
            };
            Ok(RegionSnapshot::new(
                snap,
                region,
                peer.max_ts_synced(),
                term,
            ))
        }
    }

    fn async_write(
        &self,
        ctx: &EngineContext,
        batch: Vec<Modify>,
    ) -> impl Future<Output = EngineResult<()>> + Send {
        let router = self.router.clone();
        let (region_id, version, ctx_term) = (ctx.region_id, ctx.version, ctx.term);
        let store_wide = ctx.store_wide;
        async move {
            if store_wide {
                return router.context().engine.write(batch).await;
            }
            let peer = router
                .peer(region_id)
                .ok_or_else(|| region_not_found(region_id))?;
            let region = peer.region();
            if region.region_epoch.unwrap_or_default().version != version {
                return Err(epoch_not_match(vec![region]));
            }
            // The apply refuses keys outside the Region too (at the epoch
            // the entry meets there); refusing here saves the round.
            let batch = clamp_to_region(&region, batch)
                .map_err(|key| EngineError::Region(Box::new(key_not_in_region(&region, &key))))?;
            if batch.is_empty() {
                return Ok(());
            }
            peer.write(version, ctx_term, batch).await
        }
    }

    fn wait_max_ts_synced(
        &self,
        ctx: &EngineContext,
    ) -> impl Future<Output = EngineResult<()>> + Send {
        let router = self.router.clone();
        let (region_id, store_wide) = (ctx.region_id, ctx.store_wide);
        async move {
            if store_wide {
                return Ok(());
            }
            let peer = router
                .peer(region_id)
                .ok_or_else(|| region_not_found(region_id))?;
            peer.wait_max_ts_synced().await
        }
    }
}
