//! `MetaStore` on a local RocksDB (`<data-dir>/meta`), every write fsynced.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use parking_lot::RwLock;
use rocksdb::{Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};

use super::{MetaError, MetaOp, MetaResult, MetaStore, Records};

/// How long `close` waits for in-flight blocking operations to release the DB.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

pub struct RocksMetaStore {
    path: PathBuf,
    db: RwLock<Option<Arc<DB>>>,
}

impl std::fmt::Debug for RocksMetaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksMetaStore")
            .field("path", &self.path)
            .finish()
    }
}

impl RocksMetaStore {
    /// Opens (creating if missing) the database at `path`. Blocking.
    pub fn open(path: &Path) -> MetaResult<Self> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_keep_log_file_num(4);
        opts.set_max_total_wal_size(64 << 20);
        let db = DB::open(&opts, path)?;
        Ok(RocksMetaStore {
            path: path.to_path_buf(),
            db: RwLock::new(Some(Arc::new(db))),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn db(&self) -> MetaResult<Arc<DB>> {
        self.db.read().clone().ok_or(MetaError::Closed)
    }

    /// Runs blocking RocksDB work off the async runtime.
    async fn blocking<T, F>(&self, work: F) -> MetaResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&DB) -> MetaResult<T> + Send + 'static,
    {
        let db = self.db()?;
        tokio::task::spawn_blocking(move || work(&db))
            .await
            .map_err(|e| MetaError::Task(e.to_string()))?
    }
}

fn scan(db: &DB, prefix: &[u8]) -> MetaResult<Records> {
    let mut out = Vec::new();
    for item in db.iterator(IteratorMode::From(prefix, Direction::Forward)) {
        let (key, value) = item?;
        if !key.starts_with(prefix) {
            break;
        }
        out.push((key.into_vec(), value.into_vec()));
    }
    Ok(out)
}

fn write_synced(db: &DB, ops: Vec<MetaOp>) -> MetaResult<()> {
    let mut batch = WriteBatch::default();
    for op in ops {
        match op {
            MetaOp::Put { key, value } => batch.put(key, value),
            MetaOp::Delete { key } => batch.delete(key),
        }
    }
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    db.write_opt(batch, &opts)?;
    Ok(())
}

impl MetaStore for RocksMetaStore {
    fn get<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, MetaResult<Option<Vec<u8>>>> {
        let key = key.to_vec();
        self.blocking(move |db| Ok(db.get(&key)?)).boxed()
    }

    fn scan_prefix<'a>(&'a self, prefix: &'a [u8]) -> BoxFuture<'a, MetaResult<Records>> {
        let prefix = prefix.to_vec();
        self.blocking(move |db| scan(db, &prefix)).boxed()
    }

    fn write(&self, ops: Vec<MetaOp>) -> BoxFuture<'_, MetaResult<()>> {
        self.blocking(move |db| write_synced(db, ops)).boxed()
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        async move {
            let Some(mut db) = self.db.write().take() else {
                return;
            };
            // Blocking calls hold their own clone for a moment; wait for them so
            // the RocksDB lock file is released when `close` returns.
            let deadline = Instant::now() + CLOSE_WAIT;
            loop {
                match Arc::try_unwrap(db) {
                    Ok(db) => {
                        let _ = tokio::task::spawn_blocking(move || drop(db)).await;
                        return;
                    }
                    Err(shared) if Instant::now() < deadline => {
                        db = shared;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(_) => {
                        tracing::warn!(path = %self.path.display(), "metadata store still in use at close");
                        return;
                    }
                }
            }
        }
        .boxed()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta");
        {
            let store = RocksMetaStore::open(&path).unwrap();
            store
                .write(vec![
                    MetaOp::put("k/1", "one"),
                    MetaOp::put("k/2", "two"),
                    MetaOp::put("z", "last"),
                ])
                .await
                .unwrap();
            store.write(vec![MetaOp::delete("k/2")]).await.unwrap();
            store.close().await;
            assert!(matches!(store.get(b"k/1").await, Err(MetaError::Closed)));
        }
        let store = RocksMetaStore::open(&path).unwrap();
        assert_eq!(store.get(b"k/1").await.unwrap(), Some(b"one".to_vec()));
        assert_eq!(store.get(b"k/2").await.unwrap(), None);
        let scanned = store.scan_prefix(b"k/").await.unwrap();
        assert_eq!(scanned, vec![(b"k/1".to_vec(), b"one".to_vec())]);
    }

    #[tokio::test]
    async fn second_open_of_same_dir_fails_until_closed() {
        let dir = tempfile::tempdir().unwrap();
        let first = RocksMetaStore::open(dir.path()).unwrap();
        assert!(RocksMetaStore::open(dir.path()).is_err());
        first.close().await;
        RocksMetaStore::open(dir.path()).unwrap();
    }

    #[tokio::test]
    async fn batch_is_atomic_and_ordered() {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksMetaStore::open(dir.path()).unwrap();
        store
            .write(vec![
                MetaOp::put("a", "1"),
                MetaOp::delete("a"),
                MetaOp::put("b", "2"),
            ])
            .await
            .unwrap();
        assert_eq!(store.get(b"a").await.unwrap(), None);
        assert_eq!(store.get(b"b").await.unwrap(), Some(b"2".to_vec()));
    }
}
