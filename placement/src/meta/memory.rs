//! In-memory `MetaStore` for unit tests.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use futures::FutureExt;
use parking_lot::Mutex;

use super::{MetaError, MetaOp, MetaResult, MetaStore, Records};

#[derive(Debug, Default)]
pub struct MemMetaStore {
    data: Mutex<Option<BTreeMap<Vec<u8>, Vec<u8>>>>,
}

impl MemMetaStore {
    pub fn new() -> Self {
        MemMetaStore {
            data: Mutex::new(Some(BTreeMap::new())),
        }
    }
}

impl MetaStore for MemMetaStore {
    fn get<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, MetaResult<Option<Vec<u8>>>> {
        let result = match &*self.data.lock() {
            Some(data) => Ok(data.get(key).cloned()),
            None => Err(MetaError::Closed),
        };
        futures::future::ready(result).boxed()
    }

    fn scan_prefix<'a>(&'a self, prefix: &'a [u8]) -> BoxFuture<'a, MetaResult<Records>> {
        let result = match &*self.data.lock() {
            Some(data) => Ok(data
                .range(prefix.to_vec()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()),
            None => Err(MetaError::Closed),
        };
        futures::future::ready(result).boxed()
    }

    fn write(&self, ops: Vec<MetaOp>) -> BoxFuture<'_, MetaResult<()>> {
        let result = match &mut *self.data.lock() {
            Some(data) => {
                for op in ops {
                    match op {
                        MetaOp::Put { key, value } => {
                            data.insert(key, value);
                        }
                        MetaOp::Delete { key } => {
                            data.remove(&key);
                        }
                    }
                }
                Ok(())
            }
            None => Err(MetaError::Closed),
        };
        futures::future::ready(result).boxed()
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        *self.data.lock() = None;
        futures::future::ready(()).boxed()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_scan_delete() {
        let store = MemMetaStore::new();
        store
            .write(vec![
                MetaOp::put("a/1", "x"),
                MetaOp::put("a/2", "y"),
                MetaOp::put("b/1", "z"),
            ])
            .await
            .unwrap();
        assert_eq!(store.get(b"a/1").await.unwrap(), Some(b"x".to_vec()));
        let scanned = store.scan_prefix(b"a/").await.unwrap();
        assert_eq!(scanned.len(), 2);
        store.write(vec![MetaOp::delete("a/1")]).await.unwrap();
        assert_eq!(store.get(b"a/1").await.unwrap(), None);
        store.close().await;
        assert!(matches!(store.get(b"a/2").await, Err(MetaError::Closed)));
    }
}
