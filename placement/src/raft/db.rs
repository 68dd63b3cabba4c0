//! The RocksDB behind a placement member's Raft: the log, the vote, and the
//! replicated metadata (the state machine) in one database, so one synced
//! write covers everything written before it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};

/// Raft log entries by big-endian index.
pub const CF_LOG: &str = "log";
/// Vote, last purged log id, committed log id.
pub const CF_RAFT: &str = "raft";
/// The replicated metadata records (what `MetaStore` reads).
pub const CF_META: &str = "meta";
/// Applied log id and membership of the state machine.
pub const CF_APPLY: &str = "apply";

const ALL_CFS: [&str; 4] = [CF_LOG, CF_RAFT, CF_META, CF_APPLY];
/// How long `close` waits for in-flight work to release the database.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct RaftDb {
    db: Arc<DB>,
    path: PathBuf,
}

impl std::fmt::Debug for RaftDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftDb").field("path", &self.path).finish()
    }
}

pub fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl RaftDb {
    /// Opens (creating if missing) the database at `path`. Blocking.
    pub fn open(path: &Path) -> Result<Self, rocksdb::Error> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_keep_log_file_num(4);
        opts.set_max_total_wal_size(64 << 20);
        let cfs = ALL_CFS
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        Ok(RaftDb {
            db: Arc::new(db),
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn db(&self) -> &DB {
        &self.db
    }

    pub fn cf(&self, name: &str) -> std::io::Result<&ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| io_err(format!("column family {name} missing")))
    }

    pub fn get(&self, cf: &str, key: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
        self.db.get_cf(self.cf(cf)?, key).map_err(io_err)
    }

    /// Writes the batch and fsyncs it (and everything written before it).
    pub fn write_synced(&self, batch: WriteBatch) -> std::io::Result<()> {
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(batch, &opts).map_err(io_err)
    }

    /// Runs blocking RocksDB work off the async runtime.
    pub async fn blocking<T, F>(&self, work: F) -> std::io::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&RaftDb) -> std::io::Result<T> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || work(&db))
            .await
            .map_err(io_err)?
    }

    /// Drops this handle and waits (bounded) until every other clone is gone,
    /// so the RocksDB lock is released when this returns.
    pub async fn close(self) {
        let RaftDb { mut db, path } = self;
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
                    tracing::warn!(path = %path.display(), "raft database still in use at close");
                    return;
                }
            }
        }
    }
}
