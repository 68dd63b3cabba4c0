//! Cluster-unique id allocation (store, region and peer ids).
//!
//! Ids are handed out from memory in batches; the end of the current batch is
//! persisted before any id of it is served, so a restart skips the unused
//! remainder instead of ever reusing an id. Id 0 is never allocated.

use std::sync::Arc;

use tokio::sync::Mutex;

use crate::meta::schema::{self, ALLOC_ID_END};
use crate::meta::{MetaResult, MetaStore};

pub const DEFAULT_BATCH: u64 = 1000;

#[derive(Debug)]
struct State {
    next: u64,
    /// Persisted: every id served so far is below it.
    end: u64,
}

pub struct IdAllocator {
    meta: Arc<dyn MetaStore>,
    batch: u64,
    state: Mutex<State>,
}

impl IdAllocator {
    pub async fn open(meta: Arc<dyn MetaStore>, batch: u64) -> MetaResult<Self> {
        let end = schema::load_u64(meta.as_ref(), ALLOC_ID_END)
            .await?
            .unwrap_or(0);
        Ok(IdAllocator {
            meta,
            batch: batch.max(1),
            state: Mutex::new(State {
                next: end.max(1),
                end,
            }),
        })
    }

    pub async fn alloc(&self) -> MetaResult<u64> {
        let mut state = self.state.lock().await;
        self.alloc_locked(&mut state).await
    }

    /// `n` ids, allocated under one lock.
    pub async fn alloc_many(&self, n: usize) -> MetaResult<Vec<u64>> {
        let mut state = self.state.lock().await;
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(self.alloc_locked(&mut state).await?);
        }
        Ok(ids)
    }

    /// Makes sure `id` and everything below it is never allocated.
    pub async fn bump_past(&self, id: u64) -> MetaResult<()> {
        let mut state = self.state.lock().await;
        if id < state.next {
            return Ok(());
        }
        let next = id.saturating_add(1);
        if next >= state.end {
            let end = next.saturating_add(self.batch);
            self.meta
                .write(vec![schema::put_u64(ALLOC_ID_END, end)])
                .await?;
            state.end = end;
        }
        state.next = next;
        Ok(())
    }

    async fn alloc_locked(&self, state: &mut State) -> MetaResult<u64> {
        if state.next >= state.end {
            let end = state.next.saturating_add(self.batch);
            self.meta
                .write(vec![schema::put_u64(ALLOC_ID_END, end)])
                .await?;
            state.end = end;
        }
        let id = state.next;
        state.next += 1;
        Ok(id)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::meta::MemMetaStore;

    #[tokio::test]
    async fn unique_and_nonzero_across_restarts() {
        let meta = Arc::new(MemMetaStore::new());
        let mut seen = HashSet::new();
        for _restart in 0..3 {
            let alloc = IdAllocator::open(meta.clone(), 7).await.unwrap();
            for _ in 0..10 {
                let id = alloc.alloc().await.unwrap();
                assert_ne!(id, 0);
                assert!(seen.insert(id), "id {id} reused");
            }
            for id in alloc.alloc_many(5).await.unwrap() {
                assert!(seen.insert(id), "id {id} reused");
            }
        }
    }

    #[tokio::test]
    async fn persists_batch_end_before_serving() {
        let meta = Arc::new(MemMetaStore::new());
        let alloc = IdAllocator::open(meta.clone(), 100).await.unwrap();
        assert_eq!(alloc.alloc().await.unwrap(), 1);
        let end = schema::load_u64(meta.as_ref(), ALLOC_ID_END).await.unwrap();
        assert_eq!(end, Some(101));
        for _ in 0..99 {
            alloc.alloc().await.unwrap();
        }
        // id 100 was the last of the batch; 101 needs a new one.
        assert_eq!(alloc.alloc().await.unwrap(), 101);
        let end = schema::load_u64(meta.as_ref(), ALLOC_ID_END).await.unwrap();
        assert_eq!(end, Some(201));
    }

    #[tokio::test]
    async fn bump_past_skips_ids_even_after_restart() {
        let meta = Arc::new(MemMetaStore::new());
        let alloc = IdAllocator::open(meta.clone(), 10).await.unwrap();
        alloc.bump_past(500).await.unwrap();
        assert_eq!(alloc.alloc().await.unwrap(), 501);
        alloc.bump_past(3).await.unwrap();
        assert_eq!(alloc.alloc().await.unwrap(), 502);
        let alloc = IdAllocator::open(meta, 10).await.unwrap();
        assert!(alloc.alloc().await.unwrap() > 502);
    }

    #[tokio::test]
    async fn failed_persist_serves_nothing() {
        let meta = Arc::new(MemMetaStore::new());
        let alloc = IdAllocator::open(meta.clone(), 2).await.unwrap();
        alloc.alloc().await.unwrap();
        alloc.alloc().await.unwrap();
        meta.close().await;
        assert!(alloc.alloc().await.is_err());
    }
}
