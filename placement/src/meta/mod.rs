//! Durable metadata: the `MetaStore` seam.
//!
//! Everything placement must not forget (cluster id, stores, regions, the id
//! allocator and TSO windows, GC safe points, keyspaces) goes through this
//! trait. Today it is backed by a local RocksDB; a Raft-replicated
//! implementation will replace it without the callers noticing, which is why
//! the interface is async and write-batch oriented.

mod memory;
mod rocks;
pub mod schema;

use futures::future::BoxFuture;

pub use memory::MemMetaStore;
pub use rocks::RocksMetaStore;

/// One mutation inside an atomic batch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MetaOp {
    Put { key: Vec<u8>, value: Vec<u8> },
    Delete { key: Vec<u8> },
}

impl MetaOp {
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        MetaOp::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    pub fn delete(key: impl Into<Vec<u8>>) -> Self {
        MetaOp::Delete { key: key.into() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("metadata store is closed")]
    Closed,
    #[error("corrupt metadata record {key}: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("metadata task failed: {0}")]
    Task(String),
    #[error("this placement member is not the leader")]
    NotLeader,
    #[error("metadata replication failed: {0}")]
    Replication(String),
}

pub type MetaResult<T> = Result<T, MetaError>;

/// Key-value records in key order.
pub type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// Durable key-value storage for placement metadata.
///
/// Contract: `write` applies all ops atomically and returns only once they are
/// durable (survive a crash or power loss). Reads observe every completed write.
pub trait MetaStore: Send + Sync + 'static {
    fn get<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, MetaResult<Option<Vec<u8>>>>;

    /// All records whose key starts with `prefix`, in key order.
    fn scan_prefix<'a>(&'a self, prefix: &'a [u8]) -> BoxFuture<'a, MetaResult<Records>>;

    fn write(&self, ops: Vec<MetaOp>) -> BoxFuture<'_, MetaResult<()>>;

    /// Releases underlying resources (file locks); later calls fail with
    /// [`MetaError::Closed`]. Idempotent.
    fn close(&self) -> BoxFuture<'_, ()>;
}
