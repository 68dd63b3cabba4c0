//! The storage layer: Percolator transactions (MVCC) and the Raw API over the
//! [`Engine`] seam.
//!
//! [`Storage`] has one async method per RPC. Each takes the kvrpcpb request and
//! returns the kvrpcpb response with key-level errors (`KeyError`) inside it,
//! where TiKV puts them; [`StorageError`] is reserved for bad input and
//! engine/internal failures. `region_error` is left empty for the server.
//!
//! # Stored layout
//! Transactional data (see [`mvcc`]): keys are memcomparable-encoded;
//! - lock CF: `encode(key) -> Lock`,
//! - write CF: `encode(key) + desc(commit_ts) -> Write`,
//! - default CF: `encode(key) + desc(start_ts) -> value` (values of at most
//!   255 bytes are inlined in the lock/write record instead).
//!
//! Raw data (see [`raw`]): default CF, key `keys::raw_data_key(api, key)`,
//! value = `[version 1][expire unix secs u64 BE, 0 = never][value]`. Under API
//! V1 raw keys are stored verbatim beside transactional values (as in TiKV, V1
//! clusters must not mix the two APIs on overlapping keys); under V2 the key
//! mode prefixes keep them apart.
//!
//! # Concurrency
//! Write commands hold per-key [`latches`] from before their snapshot until
//! their write is durable. Reads bump `max_ts` and check in-flight async
//! commit / 1PC prewrites in the [`concurrency_manager`] before snapshotting.
//! Pessimistic lock requests wait in the [`lock_manager`].
//!
//! Region bounds: commands that scan (ScanLock, ResolveLock without keys,
//! PessimisticRollback without keys, KvGC, DeleteRange) visit whatever the
//! engine snapshot shows and write through the engine; the replicated engine
//! bounds both to the request's Region (`raftstore::RegionSnapshot`, range
//! deletes narrowed, other keys refused), as TiKV's RegionSnapshot and
//! `check_key_in_region` do.
//!
//! Writes hold their latches until the engine write resolves, on a task of
//! their own: a client that gives up on a request must not free its keys
//! while its Raft entry may still be applied.
//!
//! Snapshot reads and MVCC logic run inline on the calling task (RocksDB
//! reads are synchronous); only latches, lock waits and engine writes await.
//!
//! # Where behaviour differs from TiKV on purpose
//! - A pessimistic prewrite of a key whose pessimistic lock is missing always
//!   fails (PessimisticLockNotFound) unless the transaction is already
//!   committed; TiKV may "amend" it (it pipelines lock writes, we do not).
//! - A woken pessimistic-lock waiter re-runs its request (succeeding,
//!   or failing with the newer write's WriteConflict) instead of always
//!   returning WriteConflict; deadlock detection is per store.

pub mod concurrency_manager;
pub mod errors;
pub mod latches;
pub mod lock_manager;
pub mod mvcc;
pub mod raw;
mod txn;

#[cfg(test)]
mod test_util;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use shale_proto::kvrpcpb::{self, ApiVersion, IsolationLevel};

use crate::engine::{Engine, EngineContext, Snapshot as _};
use crate::keys::{check_v2_key, RAW_MODE_PREFIX, TXN_MODE_PREFIX};

pub use concurrency_manager::ConcurrencyManager;
pub use errors::{KeyErr, StorageError};
pub use txn::GcStats;

use errors::{invalid, split, TxnResult};
use latches::Latches;
use lock_manager::LockManager;
use mvcc::{MvccReader, MvccTxn, ReadOptions};

/// Largest key accepted from clients (TiKV's limit).
pub const MAX_KEY_SIZE: usize = 8 * 1024;

/// Most bytes one read response may gather (scans, lock scans, batch
/// scans): a request for more gets a clear error rather than the node's
/// memory, and would not fit a gRPC message anyway.
pub const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// Counts what a read response has gathered against [`MAX_RESPONSE_BYTES`].
#[derive(Debug, Default)]
pub(crate) struct ResponseBudget {
    used: usize,
}

impl ResponseBudget {
    /// Bookkeeping per entry beside its key and value.
    const PER_ENTRY: usize = 32;

    /// Adds one entry of `bytes`; fails once the response is too large.
    pub(crate) fn charge(&mut self, bytes: usize) -> Result<(), StorageError> {
        self.used = self.used.saturating_add(bytes + Self::PER_ENTRY);
        if self.used > MAX_RESPONSE_BYTES {
            return Err(invalid(format!(
                "the response would exceed {MAX_RESPONSE_BYTES} bytes; ask for fewer entries (a smaller limit or range)"
            )));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StorageConfig {
    /// Largest value accepted from clients, in bytes.
    pub max_value_size: usize,
    /// Number of latch slots (rounded up to a power of two).
    pub latch_slots: usize,
    /// How long a pessimistic lock request waits for a conflicting lock when
    /// it asks for the default (`wait_timeout = 0`), in milliseconds.
    pub lock_wait_timeout_ms: u64,
    /// Upper bound for explicit `wait_timeout`s, in milliseconds.
    pub max_lock_wait_timeout_ms: u64,
    /// Keys handled per write batch by ResolveLock, GC and similar scans.
    pub batch_keys: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            max_value_size: 8 * 1024 * 1024,
            latch_slots: 2048,
            lock_wait_timeout_ms: 1000,
            max_lock_wait_timeout_ms: 3000,
            batch_keys: 256,
        }
    }
}

/// Percolator transactions and the Raw API over an [`Engine`]. Cheap to clone.
pub struct Storage<E: Engine> {
    inner: Arc<Inner<E>>,
}

struct Inner<E: Engine> {
    engine: E,
    config: StorageConfig,
    latches: Latches,
    cm: ConcurrencyManager,
    lock_mgr: Arc<LockManager>,
    /// Test hook: seconds added to the wall clock used for raw TTLs.
    clock_skew_secs: AtomicI64,
}

impl<E: Engine> Clone for Storage<E> {
    fn clone(&self) -> Self {
        Storage {
            inner: self.inner.clone(),
        }
    }
}

/// The engine addressing (Region id and epoch) of a request.
pub fn engine_context(ctx: Option<&kvrpcpb::Context>) -> EngineContext {
    let Some(ctx) = ctx else {
        return EngineContext::default();
    };
    let epoch = ctx.region_epoch.unwrap_or_default();
    EngineContext {
        region_id: ctx.region_id,
        conf_ver: epoch.conf_ver,
        version: epoch.version,
        term: 0,
        store_wide: false,
    }
}

pub(crate) fn api_version(ctx: &kvrpcpb::Context) -> Result<ApiVersion, StorageError> {
    ApiVersion::try_from(ctx.api_version)
        .map_err(|_| invalid(format!("unknown api_version {}", ctx.api_version)))
}

/// Checks a client key: size, emptiness and (API V2) its mode prefix.
pub(crate) fn check_key(
    api: ApiVersion,
    key: &[u8],
    raw: bool,
    allow_empty: bool,
) -> Result<(), StorageError> {
    if key.is_empty() {
        return if allow_empty {
            Ok(())
        } else {
            Err(invalid("key must not be empty"))
        };
    }
    if key.len() > MAX_KEY_SIZE {
        return Err(invalid(format!(
            "key is {} bytes, the limit is {MAX_KEY_SIZE}",
            key.len()
        )));
    }
    if api == ApiVersion::V2 {
        check_v2_key(
            key,
            if raw {
                RAW_MODE_PREFIX
            } else {
                TXN_MODE_PREFIX
            },
        )
        .map_err(invalid)?;
    }
    Ok(())
}

/// Checks a range bound: may be empty (unbounded). Under API V2 it must lie
/// in the request's key mode, or be the first key past it (`mode + 1`), which
/// clients send as the end of the last keyspace.
pub(crate) fn check_bound(api: ApiVersion, key: &[u8], raw: bool) -> Result<(), StorageError> {
    if key.len() > MAX_KEY_SIZE {
        return Err(invalid(format!(
            "key is {} bytes, the limit is {MAX_KEY_SIZE}",
            key.len()
        )));
    }
    let mode = if raw {
        RAW_MODE_PREFIX
    } else {
        TXN_MODE_PREFIX
    };
    match key.first() {
        Some(first) if api == ApiVersion::V2 && *first != mode && key != [mode + 1] => {
            Err(invalid(format!(
                "API V2 range bound must start with '{}'",
                mode as char
            )))
        }
        _ => Ok(()),
    }
}

pub(crate) fn read_options(ctx: &kvrpcpb::Context, ts: u64) -> ReadOptions {
    ReadOptions {
        ts,
        check_locks: ctx.isolation_level != IsolationLevel::Rc as i32,
        bypass_locks: ctx.resolved_locks.clone(),
        access_locks: ctx.committed_locks.clone(),
    }
}

impl<E: Engine> Storage<E> {
    pub fn new(engine: E, config: StorageConfig) -> Self {
        Self::with_concurrency_manager(engine, config, ConcurrencyManager::new())
    }

    /// A storage sharing `cm` with the store (which syncs its `max_ts`).
    pub fn with_concurrency_manager(
        engine: E,
        config: StorageConfig,
        cm: ConcurrencyManager,
    ) -> Self {
        let latches = Latches::new(config.latch_slots);
        Storage {
            inner: Arc::new(Inner {
                engine,
                config,
                latches,
                cm,
                lock_mgr: Arc::new(LockManager::new()),
                clock_skew_secs: AtomicI64::new(0),
            }),
        }
    }

    pub fn engine(&self) -> &E {
        &self.inner.engine
    }

    pub fn config(&self) -> &StorageConfig {
        &self.inner.config
    }

    pub fn concurrency_manager(&self) -> &ConcurrencyManager {
        &self.inner.cm
    }

    pub(crate) fn check_value(&self, value: &[u8]) -> Result<(), StorageError> {
        let limit = self.inner.config.max_value_size;
        if value.len() > limit {
            return Err(invalid(format!(
                "value is {} bytes, the limit is {limit}",
                value.len()
            )));
        }
        Ok(())
    }

    /// Wall clock in unix seconds, for raw TTLs.
    pub(crate) fn now_secs(&self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        let skew = self.inner.clock_skew_secs.load(Ordering::Relaxed);
        now.saturating_add_signed(skew)
    }

    #[cfg(test)]
    pub(crate) fn advance_clock(&self, secs: i64) {
        self.inner
            .clock_skew_secs
            .fetch_add(secs, Ordering::Relaxed);
    }

    pub(crate) fn lock_manager(&self) -> &Arc<LockManager> {
        &self.inner.lock_mgr
    }

    /// Runs one write command: latches `keys`, takes a snapshot, lets `f`
    /// decide the changes, writes them durably, then releases the latches and
    /// wakes waiters of released locks. If `f` fails, nothing is written.
    pub(crate) async fn run_write<T, F>(
        &self,
        ctx: &EngineContext,
        keys: &[Vec<u8>],
        f: F,
    ) -> Result<Result<T, KeyErr>, StorageError>
    where
        F: FnOnce(&MvccReader<'_, E::Snap>, &mut MvccTxn) -> TxnResult<T>,
    {
        let latches = self
            .inner
            .latches
            .acquire(keys.iter().map(Vec::as_slice))
            .await;
        let snap = self.inner.engine.async_snapshot(ctx).await?;
        let mut txn = MvccTxn::new();
        let out = f(&MvccReader::new(&snap), &mut txn);
        // Decided on this snapshot: valid only in the term it was taken in.
        let ctx = &EngineContext {
            term: snap.term(),
            ..ctx.clone()
        };
        drop(snap);
        let out = match split(out)? {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        let (modifies, released, guards) = txn.into_parts();
        self.write_then_release(ctx, modifies, (guards, latches), released)
            .await?;
        Ok(Ok(out))
    }

    /// Writes `modifies`, then lets go of `held` (latches, in-memory locks)
    /// and wakes the waiters of `released` locks. The write runs on a task
    /// of its own: a caller that gives up (a client's deadline drops its
    /// request) must not release the latches while the write may still be
    /// applied, or the next command on those keys would decide on a state
    /// that is about to change under it.
    pub(crate) async fn write_then_release<H: Send + 'static>(
        &self,
        ctx: &EngineContext,
        modifies: Vec<crate::engine::Modify>,
        held: H,
        released: Vec<Vec<u8>>,
    ) -> Result<(), StorageError> {
        if modifies.is_empty() {
            drop(held);
            if !released.is_empty() {
                self.inner.lock_mgr.wake_up(&released);
            }
            return Ok(());
        }
        let engine = self.inner.engine.clone();
        let lock_mgr = self.inner.lock_mgr.clone();
        let ctx = ctx.clone();
        let write = tokio::spawn(async move {
            let result = engine.async_write(&ctx, modifies).await;
            drop(held);
            if !released.is_empty() {
                lock_mgr.wake_up(&released);
            }
            result
        });
        write
            .await
            .map_err(|e| StorageError::Engine(crate::engine::EngineError::Task(e.to_string())))??;
        Ok(())
    }
}
