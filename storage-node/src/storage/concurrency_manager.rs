//! The concurrency manager keeps async commit and 1PC snapshot-isolated.
//!
//! Such transactions pick their commit timestamp on the storage node
//! (`min_commit_ts > max_ts`) instead of asking PD after prewrite, so the node
//! must know the largest timestamp any reader has used (`max_ts`) and readers
//! must see prewrites that are still in flight. Prewrite computes
//! `min_commit_ts` and publishes an in-memory lock under one mutex; a reader
//! bumps `max_ts` and checks the in-memory locks under the same mutex, then
//! takes its snapshot. Either the prewrite saw the reader's timestamp (and
//! commits above it) or the reader sees the lock (in memory, or on disk once
//! written: the memory lock is only dropped after the write is durable).

//!
//! `max_ts` itself must be right on a Region's new leader: its predecessor
//! served reads this store never saw, so the leader raises `max_ts` to a
//! fresh TSO timestamp ([`ConcurrencyManager::sync_to_tso`]) before it lets
//! such prewrites through. The same TSO reading caps timestamps: one more
//! than [`MAX_TS_DRIFT_MS`] ahead of the TSO is refused, or a single bad
//! request could push `max_ts` (and every later commit) into the far future.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use super::errors::KeyErr;
use super::mvcc::{check_lock_conflict, physical_ms, Lock, ReadOptions};

/// How far ahead of the TSO (in milliseconds of physical time) a timestamp
/// may be (TiKV's `storage.max-ts.max-drift`, 60 s).
pub const MAX_TS_DRIFT_MS: u64 = 60_000;

#[derive(Default)]
struct State {
    max_ts: u64,
    locks: BTreeMap<Vec<u8>, Lock>,
    /// The newest TSO timestamp seen (its physical milliseconds) and when.
    tso: Option<(u64, Instant)>,
}

impl State {
    /// Refuses a timestamp too far ahead of the TSO (as extrapolated from
    /// the last reading by this machine's monotonic clock).
    fn check(&self, ts: u64) -> Result<(), KeyErr> {
        let Some((physical, at)) = self.tso else {
            return Ok(());
        };
        if ts == u64::MAX {
            return Ok(());
        }
        let limit_ms = physical
            .saturating_add(at.elapsed().as_millis() as u64)
            .saturating_add(MAX_TS_DRIFT_MS);
        if physical_ms(ts) > limit_ms {
            return Err(KeyErr::TimestampTooFarAhead { ts, limit_ms });
        }
        Ok(())
    }

    fn raise(&mut self, ts: u64) {
        if ts != u64::MAX {
            self.max_ts = self.max_ts.max(ts);
        }
    }
}

#[derive(Clone, Default)]
pub struct ConcurrencyManager {
    state: Arc<Mutex<State>>,
}

/// An in-memory lock; dropping the guard removes it.
pub struct MemLockGuard {
    state: Arc<Mutex<State>>,
    key: Vec<u8>,
    ts: u64,
}

impl Drop for MemLockGuard {
    fn drop(&mut self) {
        let mut state = self.state.lock();
        if state.locks.get(&self.key).is_some_and(|l| l.ts == self.ts) {
            state.locks.remove(&self.key);
        }
    }
}

impl ConcurrencyManager {
    pub fn new() -> Self {
        ConcurrencyManager::default()
    }

    pub fn max_ts(&self) -> u64 {
        self.state.lock().max_ts
    }

    /// Raises `max_ts` to `ts`. `u64::MAX` (a "read latest" request) is
    /// ignored, or no async-commit transaction could ever commit again; a
    /// timestamp far ahead of the TSO is refused.
    pub fn update_max_ts(&self, ts: u64) -> Result<(), KeyErr> {
        let mut state = self.state.lock();
        state.check(ts)?;
        state.raise(ts);
        Ok(())
    }

    /// Refuses `ts` if it is far ahead of the TSO, without raising `max_ts`.
    pub fn check_timestamp(&self, ts: u64) -> Result<(), KeyErr> {
        self.state.lock().check(ts)
    }

    /// Takes a timestamp just fetched from the TSO: `max_ts` rises to it
    /// (every read served anywhere so far used an older one), and it is the
    /// reference of the cap on timestamps from now on.
    pub fn sync_to_tso(&self, ts: u64) {
        let mut state = self.state.lock();
        state.raise(ts);
        let physical = physical_ms(ts);
        if state.tso.is_none_or(|(p, _)| physical >= p) {
            state.tso = Some((physical, Instant::now()));
        }
    }

    /// Before a point read: bump `max_ts`, then check in-flight prewrites.
    pub fn read_key_check(&self, key: &[u8], opts: &ReadOptions) -> Result<(), KeyErr> {
        if !opts.check_locks {
            return Ok(());
        }
        let mut state = self.state.lock();
        state.check(opts.ts)?;
        state.raise(opts.ts);
        if let Some(lock) = state.locks.get(key) {
            check_lock_conflict(lock, key, opts)?;
        }
        Ok(())
    }

    /// Before a range read of `[lower, upper)` (empty upper = unbounded).
    pub fn read_range_check(
        &self,
        lower: &[u8],
        upper: &[u8],
        opts: &ReadOptions,
    ) -> Result<(), KeyErr> {
        if !opts.check_locks {
            return Ok(());
        }
        let mut state = self.state.lock();
        state.check(opts.ts)?;
        state.raise(opts.ts);
        let upper = if upper.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(upper)
        };
        for (key, lock) in state
            .locks
            .range::<[u8], _>((Bound::Included(lower), upper))
        {
            check_lock_conflict(lock, key, opts)?;
        }
        Ok(())
    }

    /// Publishes an in-memory lock on `key`. `make` receives the current
    /// `max_ts` and returns the lock to publish (with its min_commit_ts), or
    /// an error to publish nothing; both happen atomically w.r.t. readers.
    pub fn lock_key<E>(
        &self,
        key: &[u8],
        make: impl FnOnce(u64) -> Result<Lock, E>,
    ) -> Result<MemLockGuard, E> {
        let mut state = self.state.lock();
        let lock = make(state.max_ts)?;
        let ts = lock.ts;
        state.locks.insert(key.to_vec(), lock);
        Ok(MemLockGuard {
            state: self.state.clone(),
            key: key.to_vec(),
            ts,
        })
    }

    #[cfg(test)]
    pub fn mem_lock_count(&self) -> usize {
        self.state.lock().locks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::mvcc::LockType;

    fn opts(ts: u64) -> ReadOptions {
        ReadOptions {
            ts,
            check_locks: true,
            ..Default::default()
        }
    }

    #[test]
    fn timestamps_far_ahead_of_the_tso_are_refused() {
        let cm = ConcurrencyManager::new();
        let far = (1_000_000_000u64) << 18;
        // Before any TSO reading there is nothing to compare with.
        assert!(cm.update_max_ts(far).is_ok());
        let cm = ConcurrencyManager::new();
        let now = (1_000u64 << 18) | 5;
        cm.sync_to_tso(now);
        assert_eq!(cm.max_ts(), now, "a sync raises max_ts to the TSO");
        let within = (1_000 + MAX_TS_DRIFT_MS - 1) << 18;
        assert!(cm.update_max_ts(within).is_ok());
        let beyond = (1_000 + MAX_TS_DRIFT_MS + 5_000) << 18;
        assert!(matches!(
            cm.update_max_ts(beyond),
            Err(KeyErr::TimestampTooFarAhead { .. })
        ));
        assert!(cm.read_key_check(b"k", &opts(beyond)).is_err());
        assert!(cm.read_range_check(b"a", b"z", &opts(beyond)).is_err());
        assert_eq!(
            cm.max_ts(),
            within,
            "a refused timestamp does not move max_ts"
        );
        assert!(
            cm.update_max_ts(u64::MAX).is_ok(),
            "read-latest is not a timestamp"
        );
        // An older TSO reading never lowers the reference.
        cm.sync_to_tso(10 << 18);
        assert!(cm.update_max_ts(within).is_ok());
    }

    #[test]
    fn readers_bump_max_ts_and_see_memory_locks() {
        let cm = ConcurrencyManager::new();
        assert!(cm.read_key_check(b"k", &opts(50)).is_ok());
        assert_eq!(cm.max_ts(), 50);
        assert!(cm.read_key_check(b"k", &opts(u64::MAX)).is_ok());
        assert_eq!(cm.max_ts(), 50, "read-latest must not poison max_ts");

        let guard = cm
            .lock_key::<()>(b"k", |max_ts| {
                let mut l = Lock::new(LockType::Put, b"k".to_vec(), 10, 100);
                l.min_commit_ts = max_ts + 1;
                Ok(l)
            })
            .ok();
        assert!(guard.is_some());
        // min_commit_ts = 51: a read at 60 is blocked, one at 50 is not.
        assert!(matches!(
            cm.read_key_check(b"k", &opts(60)),
            Err(KeyErr::Locked(_))
        ));
        assert!(cm.read_key_check(b"k", &opts(50)).is_ok());
        assert!(cm.read_range_check(b"a", b"z", &opts(70)).is_err());
        assert!(cm.read_range_check(b"a", b"", &opts(70)).is_err());
        assert!(cm.read_range_check(b"l", b"z", &opts(70)).is_ok());
        assert!(cm.read_range_check(b"a", b"k", &opts(70)).is_ok());
        drop(guard);
        assert_eq!(cm.mem_lock_count(), 0);
        assert!(cm.read_key_check(b"k", &opts(80)).is_ok());
    }
}
