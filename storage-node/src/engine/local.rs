//! `LocalKv`: the engine without replication. Writes go straight to the store's
//! RocksDB (group-committed, fsynced); used for single-node bring-up and tests.

use std::future::Future;

use super::{Engine, EngineContext, EngineResult, Modify, RocksEngine, RocksSnapshot};

#[derive(Clone)]
pub struct LocalKv {
    rocks: RocksEngine,
}

impl LocalKv {
    pub fn new(rocks: RocksEngine) -> Self {
        LocalKv { rocks }
    }

    pub fn rocks(&self) -> &RocksEngine {
        &self.rocks
    }
}

impl Engine for LocalKv {
    type Snap = RocksSnapshot;

    fn async_snapshot(
        &self,
        _ctx: &EngineContext,
    ) -> impl Future<Output = EngineResult<RocksSnapshot>> + Send {
        let snap = self.rocks.snapshot();
        async move { Ok(snap) }
    }

    fn async_write(
        &self,
        _ctx: &EngineContext,
        batch: Vec<Modify>,
    ) -> impl Future<Output = EngineResult<()>> + Send {
        let rocks = self.rocks.clone();
        async move { rocks.write(batch).await }
    }
}
