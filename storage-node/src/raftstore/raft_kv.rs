//! `RaftKv`: the [`Engine`] whose writes are proposed to the Region's Raft
//! group (and return once applied here) and whose reads wait for a
//! linearizable read barrier on the Region's leader.
//!
//! Region id 0 addresses the store itself: store-wide maintenance
//! (`UnsafeDestroyRange`) applies to the local engine directly, as in TiKV.

use std::future::Future;
use std::sync::Arc;

use shale_proto::errorpb;

use super::router::Router;
use crate::engine::{Engine, EngineContext, EngineError, EngineResult, Modify, RocksSnapshot};

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
    EngineError::Region(Box::new(errorpb::Error {
        message: format!("region {region_id} not found on this store"),
        region_not_found: Some(errorpb::RegionNotFound { region_id }),
        ..Default::default()
    }))
}

impl Engine for RaftKv {
    type Snap = RocksSnapshot;

    fn async_snapshot(
        &self,
        ctx: &EngineContext,
    ) -> impl Future<Output = EngineResult<RocksSnapshot>> + Send {
        let router = self.router.clone();
        let (region_id, version) = (ctx.region_id, ctx.version);
        async move {
            let engine = &router.context().engine;
            if region_id == 0 {
                return Ok(engine.snapshot());
            }
            let peer = router
                .peer(region_id)
                .ok_or_else(|| region_not_found(region_id))?;
            peer.read_barrier(version).await?;
            Ok(engine.snapshot())
        }
    }

    fn async_write(
        &self,
        ctx: &EngineContext,
        batch: Vec<Modify>,
    ) -> impl Future<Output = EngineResult<()>> + Send {
        let router = self.router.clone();
        let (region_id, version) = (ctx.region_id, ctx.version);
        async move {
            if region_id == 0 {
                return router.context().engine.write(batch).await;
            }
            let peer = router
                .peer(region_id)
                .ok_or_else(|| region_not_found(region_id))?;
            peer.write(version, batch).await
        }
    }
}
