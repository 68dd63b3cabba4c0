//! The seam between the transaction layer and replication.
//!
//! `storage` (Percolator MVCC and the Raw API) only ever sees an [`Engine`]: it
//! takes a consistent [`Snapshot`] to read and hands a batch of [`Modify`] to
//! write. Whether the batch is applied to RocksDB directly ([`LocalKv`]) or goes
//! through a Region's Raft group first is invisible above this line.

mod local;
mod rocks;

pub use local::LocalKv;
pub use rocks::{EngineBatch, MetaWrite, RocksEngine, RocksIterator, RocksSnapshot, WriteStats};

use std::future::Future;

/// Column families that hold user data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum CfName {
    /// Values (`key+start_ts -> value` for transactions, raw values for the Raw API).
    Default,
    /// Percolator locks: `key -> lock`.
    Lock,
    /// Commit records: `key+commit_ts -> write`.
    Write,
}

impl CfName {
    pub const ALL: [CfName; 3] = [CfName::Default, CfName::Lock, CfName::Write];

    pub fn as_str(self) -> &'static str {
        match self {
            CfName::Default => "default",
            CfName::Lock => "lock",
            CfName::Write => "write",
        }
    }
}

/// One change in a write batch. Keys are data keys (as the storage layer sees
/// them); the engine adds its own prefix to keep them apart from local metadata.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Modify {
    Put(CfName, Vec<u8>, Vec<u8>),
    Delete(CfName, Vec<u8>),
    /// Deletes `[start, end)`; an empty `end` means "to the end of the key
    /// space". Through a Region (`RaftKv`) it is clamped to the Region.
    DeleteRange(CfName, Vec<u8>, Vec<u8>),
}

impl Modify {
    /// Approximate bytes the change carries, for batch-size limits and metrics.
    pub fn size(&self) -> usize {
        match self {
            Modify::Put(_, k, v) => k.len() + v.len(),
            Modify::Delete(_, k) => k.len(),
            Modify::DeleteRange(_, s, e) => s.len() + e.len(),
        }
    }
}

/// Where a read or write is addressed: the Region and its epoch. A
/// replicated engine uses it to find the Raft group.
#[derive(Clone, Debug, Default)]
pub struct EngineContext {
    pub region_id: u64,
    pub conf_ver: u64,
    pub version: u64,
    /// For a write decided on a snapshot: the leader term of that snapshot
    /// ([`Snapshot::term`]); the write applies only in the same term. 0: no
    /// such condition.
    pub term: u64,
    /// Addresses this store's whole engine, bypassing Raft: store-wide
    /// maintenance only (UnsafeDestroyRange, sent to every store). Never
    /// set from a client's request context.
    pub store_wide: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("missing column family {0}")]
    MissingCf(&'static str),
    #[error("engine is shutting down")]
    Closed,
    #[error("write task failed: {0}")]
    Task(String),
    /// The Region cannot take this request here (not leader, epoch changed,
    /// ...): the client retries elsewhere, guided by the error.
    #[error("region error: {}", .0.message)]
    Region(Box<shale_proto::errorpb::Error>),
}

pub type EngineResult<T> = Result<T, EngineError>;

/// A consistent, point-in-time view of the data column families.
pub trait Snapshot: Send + Sync + 'static {
    type Iter<'a>: EngineIterator
    where
        Self: 'a;

    fn get_cf(&self, cf: CfName, key: &[u8]) -> EngineResult<Option<Vec<u8>>>;

    /// An iterator bounded to `[lower, upper)`; `None` means unbounded.
    fn iter_cf(
        &self,
        cf: CfName,
        lower: Option<&[u8]>,
        upper: Option<&[u8]>,
    ) -> EngineResult<Self::Iter<'_>>;

    /// Whether the store's `max_ts` was synced from the TSO since this
    /// snapshot's Region got its current leader: async-commit and 1PC
    /// prewrites may only pick a commit timestamp when it was (a new leader
    /// has not seen the reads its predecessor served).
    fn max_ts_synced(&self) -> bool {
        true
    }

    /// The leader term this snapshot was taken in (0: not replicated). A
    /// write decided on it must be appended in that same term: leadership
    /// that left and came back may have let another store commit changes
    /// this snapshot never saw.
    fn term(&self) -> u64 {
        0
    }
}

/// Positioned cursor over one column family of a snapshot. Keys are data keys.
pub trait EngineIterator {
    /// Positions at the first key >= `key`.
    fn seek(&mut self, key: &[u8]) -> EngineResult<bool>;
    /// Positions at the last key <= `key`.
    fn seek_for_prev(&mut self, key: &[u8]) -> EngineResult<bool>;
    fn seek_to_first(&mut self) -> EngineResult<bool>;
    fn seek_to_last(&mut self) -> EngineResult<bool>;
    fn next(&mut self) -> EngineResult<bool>;
    fn prev(&mut self) -> EngineResult<bool>;
    fn valid(&self) -> EngineResult<bool>;
    /// Only meaningful while `valid()`.
    fn key(&self) -> &[u8];
    /// Only meaningful while `valid()`.
    fn value(&self) -> &[u8];
}

/// Reads come from snapshots, writes are atomic batches that are durable when
/// the future resolves.
pub trait Engine: Clone + Send + Sync + 'static {
    type Snap: Snapshot;

    fn async_snapshot(
        &self,
        ctx: &EngineContext,
    ) -> impl Future<Output = EngineResult<Self::Snap>> + Send;

    fn async_write(
        &self,
        ctx: &EngineContext,
        batch: Vec<Modify>,
    ) -> impl Future<Output = EngineResult<()>> + Send;

    /// Waits (briefly) until the Region's leader has synced `max_ts`, as
    /// async-commit and 1PC prewrites need; a Region error
    /// (`MaxTimestampNotSynced`, `NotLeader`) when it does not happen.
    fn wait_max_ts_synced(
        &self,
        _ctx: &EngineContext,
    ) -> impl Future<Output = EngineResult<()>> + Send {
        async { Ok(()) }
    }
}
