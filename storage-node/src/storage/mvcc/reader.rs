//! Point reads of MVCC state from one engine snapshot.

use crate::codec::encode_bytes;
use crate::engine::{CfName, EngineIterator, Snapshot};
use crate::storage::errors::{StorageError, TxnResult};

use super::{
    append_version, check_lock_conflict, decode_lock_key, lock_key, prefix_next,
    split_versioned_key, versioned_key, Lock, LockAccess, LockType, ReadOptions, Write, WriteType,
};

/// What the write CF says about one transaction on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnCommitRecord {
    /// The transaction's own record: committed (Put/Delete/Lock) or Rollback.
    SingleRecord { commit_ts: u64, write: Write },
    /// Another transaction committed at exactly our start_ts and the record
    /// carries the overlapped-rollback flag: we were rolled back.
    OverlappedRollback { commit_ts: u64 },
    /// Nothing; `overlapped_write` is another transaction's record that sits
    /// at our start_ts (a rollback must then set its flag instead).
    None { overlapped_write: Option<Write> },
}

impl TxnCommitRecord {
    /// The commit timestamp if the transaction is committed on this key.
    pub fn committed_ts(&self) -> Option<u64> {
        match self {
            TxnCommitRecord::SingleRecord { commit_ts, write }
                if write.write_type != WriteType::Rollback =>
            {
                Some(*commit_ts)
            }
            _ => None,
        }
    }

    pub fn is_rolled_back(&self) -> bool {
        match self {
            TxnCommitRecord::SingleRecord { write, .. } => write.write_type == WriteType::Rollback,
            TxnCommitRecord::OverlappedRollback { .. } => true,
            TxnCommitRecord::None { .. } => false,
        }
    }
}

/// Walks one key's versions newest first, starting at a timestamp.
pub struct WriteCursor<'a, S: Snapshot + 'a> {
    iter: S::Iter<'a>,
    positioned: bool,
}

impl<'a, S: Snapshot + 'a> WriteCursor<'a, S> {
    /// The next older version, or `None` when the key has no more.
    pub fn next_version(&mut self) -> Result<Option<(u64, Write)>, StorageError> {
        let valid = if self.positioned {
            self.iter.next()?
        } else {
            self.positioned = true;
            self.iter.seek_to_first()?
        };
        if !valid {
            return Ok(None);
        }
        let (_, commit_ts) = split_versioned_key(self.iter.key())?;
        Ok(Some((commit_ts, Write::decode(self.iter.value())?)))
    }
}

/// Locks found by a scan, with their user keys.
pub type ScannedLocks = Vec<(Vec<u8>, Lock)>;

pub struct MvccReader<'a, S: Snapshot> {
    snap: &'a S,
}

impl<'a, S: Snapshot> MvccReader<'a, S> {
    pub fn new(snap: &'a S) -> Self {
        MvccReader { snap }
    }

    pub fn snapshot(&self) -> &'a S {
        self.snap
    }

    pub fn load_lock(&self, key: &[u8]) -> Result<Option<Lock>, StorageError> {
        match self.snap.get_cf(CfName::Lock, &lock_key(key))? {
            Some(bytes) => Ok(Some(Lock::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Versions of `key` with `commit_ts <= ts`, newest first.
    pub fn write_cursor(&self, key: &[u8], ts: u64) -> Result<WriteCursor<'a, S>, StorageError> {
        let encoded = encode_bytes(key);
        let lower = append_version(&encoded, ts);
        let upper = prefix_next(&encoded);
        let iter = self
            .snap
            .iter_cf(CfName::Write, Some(&lower), Some(&upper))?;
        Ok(WriteCursor {
            iter,
            positioned: false,
        })
    }

    /// The newest record of `key` with `commit_ts <= ts`, of any type.
    pub fn seek_write(&self, key: &[u8], ts: u64) -> Result<Option<(u64, Write)>, StorageError> {
        self.write_cursor(key, ts)?.next_version()
    }

    /// The newest Put or Delete of `key` with `commit_ts <= ts`.
    pub fn get_write(&self, key: &[u8], ts: u64) -> Result<Option<(u64, Write)>, StorageError> {
        let mut cursor = self.write_cursor(key, ts)?;
        while let Some((commit_ts, write)) = cursor.next_version()? {
            if write.write_type.is_data() {
                return Ok(Some((commit_ts, write)));
            }
        }
        Ok(None)
    }

    /// The committed value of `key` visible at `ts`, ignoring locks.
    pub fn get(&self, key: &[u8], ts: u64) -> Result<Option<Vec<u8>>, StorageError> {
        match self.get_write(key, ts)? {
            Some((_, write)) if write.write_type == WriteType::Put => {
                Ok(Some(self.load_data(key, write)?))
            }
            _ => Ok(None),
        }
    }

    /// The value a Put record stands for.
    pub fn load_data(&self, key: &[u8], write: Write) -> Result<Vec<u8>, StorageError> {
        if let Some(v) = write.short_value {
            return Ok(v);
        }
        self.snap
            .get_cf(CfName::Default, &versioned_key(key, write.start_ts))?
            .ok_or_else(|| {
                StorageError::Corrupted(format!(
                    "value of key {key:02X?} written at {} is missing",
                    write.start_ts
                ))
            })
    }

    /// The value a (committed, per the client) lock carries.
    pub(crate) fn load_lock_value(
        &self,
        key: &[u8],
        lock: Lock,
        ts: u64,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        match lock.lock_type {
            LockType::Put => {
                let write = Write::new(WriteType::Put, lock.ts, lock.short_value);
                Ok(Some(self.load_data(key, write)?))
            }
            LockType::Delete => Ok(None),
            LockType::Lock | LockType::Pessimistic => self.get(key, ts),
        }
    }

    /// A snapshot read of `key`: checks the lock, then finds the version.
    pub fn point_get(&self, key: &[u8], opts: &ReadOptions) -> TxnResult<Option<Vec<u8>>> {
        if opts.check_locks {
            if let Some(lock) = self.load_lock(key)? {
                if check_lock_conflict(&lock, key, opts)? == LockAccess::ReadThrough {
                    return Ok(self.load_lock_value(key, lock, opts.ts)?);
                }
            }
        }
        Ok(self.get(key, opts.ts)?)
    }

    /// Finds the transaction `start_ts`'s record on `key`. Its commit_ts is
    /// always >= start_ts, so only versions down to start_ts are examined.
    pub fn get_txn_commit_record(
        &self,
        key: &[u8],
        start_ts: u64,
    ) -> Result<TxnCommitRecord, StorageError> {
        let mut cursor = self.write_cursor(key, u64::MAX)?;
        let mut overlapped_write = None;
        while let Some((commit_ts, write)) = cursor.next_version()? {
            if commit_ts < start_ts {
                break;
            }
            if write.start_ts == start_ts {
                return Ok(TxnCommitRecord::SingleRecord { commit_ts, write });
            }
            if commit_ts == start_ts {
                if write.has_overlapped_rollback {
                    return Ok(TxnCommitRecord::OverlappedRollback { commit_ts });
                }
                overlapped_write = Some(write);
            }
        }
        Ok(TxnCommitRecord::None { overlapped_write })
    }

    /// Locks in `[start, end)` (user keys; empty `end` = unbounded) accepted
    /// by `filter`, at most `limit` of them (0 = no limit). Returns the locks
    /// and whether more may follow.
    pub fn scan_locks(
        &self,
        start: &[u8],
        end: &[u8],
        filter: impl Fn(&Lock) -> bool,
        limit: usize,
    ) -> Result<(ScannedLocks, bool), StorageError> {
        let lower = lock_key(start);
        let upper = (!end.is_empty()).then(|| lock_key(end));
        let mut iter = self
            .snap
            .iter_cf(CfName::Lock, Some(&lower), upper.as_deref())?;
        let mut out = Vec::new();
        let mut budget = crate::storage::ResponseBudget::default();
        let mut valid = iter.seek_to_first()?;
        while valid {
            let lock = Lock::decode(iter.value())?;
            if filter(&lock) {
                if limit != 0 && out.len() >= limit {
                    return Ok((out, true));
                }
                budget.charge(iter.key().len() + iter.value().len())?;
                out.push((decode_lock_key(iter.key())?, lock));
            }
            valid = iter.next()?;
        }
        Ok((out, false))
    }
}
