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

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use parking_lot::Mutex;

use super::errors::KeyErr;
use super::mvcc::{check_lock_conflict, Lock, ReadOptions};

#[derive(Default)]
struct State {
    max_ts: u64,
    locks: BTreeMap<Vec<u8>, Lock>,
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
    /// ignored, or no async-commit transaction could ever commit again.
    pub fn update_max_ts(&self, ts: u64) {
        if ts != u64::MAX {
            let mut state = self.state.lock();
            state.max_ts = state.max_ts.max(ts);
        }
    }

    fn update(state: &mut State, opts: &ReadOptions) {
        if opts.ts != u64::MAX {
            state.max_ts = state.max_ts.max(opts.ts);
        }
    }

    /// Before a point read: bump `max_ts`, then check in-flight prewrites.
    pub fn read_key_check(&self, key: &[u8], opts: &ReadOptions) -> Result<(), KeyErr> {
        if !opts.check_locks {
            return Ok(());
        }
        let mut state = self.state.lock();
        Self::update(&mut state, opts);
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
        Self::update(&mut state, opts);
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
    fn readers_bump_max_ts_and_see_memory_locks() {
        let cm = ConcurrencyManager::new();
        assert!(cm.read_key_check(b"k", &opts(50)).is_ok());
        assert_eq!(cm.max_ts(), 50);
        cm.read_key_check(b"k", &opts(u64::MAX)).ok();
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
