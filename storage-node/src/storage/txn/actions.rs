//! Per-key Percolator actions shared by several commands: commit, rollback,
//! and working out a transaction's fate when its lock is gone.

use crate::engine::Snapshot;
use crate::storage::errors::{KeyErr, StorageError, TxnResult};
use crate::storage::mvcc::{
    physical_ms, Lock, MvccReader, MvccTxn, TxnCommitRecord, Write, WriteType,
};

/// A transaction's state as CheckTxnStatus and friends report it.
#[derive(Debug, PartialEq)]
pub enum TxnStatus {
    /// Rolled back earlier (a rollback record exists).
    RolledBack,
    /// The primary lock had expired and was rolled back now.
    TtlExpire,
    /// No lock and no record: a rollback record was written now.
    LockNotExist,
    Committed {
        commit_ts: u64,
    },
    /// An expired pessimistic primary lock was removed (no rollback record).
    PessimisticRollBack,
    /// No lock, no record, and the caller resolves a pessimistic lock: nothing
    /// was written.
    LockNotExistDoNothing,
    /// The lock is alive.
    Uncommitted {
        lock: Lock,
        min_commit_ts_pushed: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MissingLockAction {
    /// Write a rollback record so a late prewrite cannot succeed.
    Rollback,
    /// Report TxnNotFound.
    ReturnError,
}

/// True once `current_ts` is past the lock's TTL (TiKV: strictly past).
pub fn lock_expired(lock: &Lock, current_ts: u64) -> bool {
    physical_ms(lock.ts).saturating_add(lock.ttl) < physical_ms(current_ts)
}

/// Commits `start_ts`'s lock on `key` at `commit_ts`.
pub fn commit_key<S: Snapshot>(
    reader: &MvccReader<'_, S>,
    txn: &mut MvccTxn,
    key: &[u8],
    start_ts: u64,
    commit_ts: u64,
) -> TxnResult<()> {
    match reader.load_lock(key)? {
        Some(mut lock) if lock.ts == start_ts => {
            if commit_ts < lock.min_commit_ts {
                return Err(KeyErr::CommitTsExpired {
                    start_ts,
                    commit_ts,
                    key: key.to_vec(),
                    min_commit_ts: lock.min_commit_ts,
                }
                .into());
            }
            // A pessimistic lock that was never prewritten (its pessimistic
            // rollback was lost) is committed as a Lock record, as TiKV does.
            let mut write = Write::new(
                WriteType::from_lock_type(lock.lock_type),
                start_ts,
                lock.short_value.take(),
            );
            write.has_overlapped_rollback = lock.rollback_ts.contains(&commit_ts);
            txn.put_write(key, commit_ts, &write);
            txn.unlock_key(key);
            Ok(())
        }
        _ => {
            let record = reader.get_txn_commit_record(key, start_ts)?;
            if record.committed_ts().is_some() {
                // Committed already: commit is idempotent.
                Ok(())
            } else {
                Err(KeyErr::TxnLockNotFound {
                    start_ts,
                    commit_ts,
                    key: key.to_vec(),
                }
                .into())
            }
        }
    }
}

/// Records that `start_ts` is rolled back on `key`: a Rollback record at
/// `start_ts`, or the overlapped-rollback flag on the record already there.
pub fn put_rollback(txn: &mut MvccTxn, key: &[u8], start_ts: u64, overlapped_write: Option<Write>) {
    match overlapped_write {
        Some(mut write) => {
            write.has_overlapped_rollback = true;
            txn.put_write(key, start_ts, &write);
        }
        None => txn.put_write(key, start_ts, &Write::rollback(start_ts)),
    }
}

/// Rolls back `lock` (owned by the transaction being rolled back) on `key`.
pub fn rollback_lock<S: Snapshot>(
    reader: &MvccReader<'_, S>,
    txn: &mut MvccTxn,
    key: &[u8],
    lock: &Lock,
) -> TxnResult<()> {
    let overlapped_write = match reader.get_txn_commit_record(key, lock.ts)? {
        TxnCommitRecord::None { overlapped_write } => overlapped_write,
        TxnCommitRecord::SingleRecord { write, commit_ts }
            if write.write_type != WriteType::Rollback =>
        {
            return Err(StorageError::Corrupted(format!(
                "key {key:02X?} has both a lock and a commit record (at {commit_ts}) of txn {}",
                lock.ts
            ))
            .into());
        }
        // Already rolled back: just drop the lock.
        _ => {
            txn.unlock_key(key);
            return Ok(());
        }
    };
    if lock.lock_type == crate::storage::mvcc::LockType::Put && lock.short_value.is_none() {
        txn.delete_value(key, lock.ts);
    }
    put_rollback(txn, key, lock.ts, overlapped_write);
    txn.unlock_key(key);
    Ok(())
}

/// Decides the fate of `start_ts` on `key` when its lock is not there
/// (`mismatch_lock` is whatever other lock is).
pub fn check_txn_status_missing_lock<S: Snapshot>(
    reader: &MvccReader<'_, S>,
    txn: &mut MvccTxn,
    key: &[u8],
    start_ts: u64,
    mismatch_lock: Option<Lock>,
    action: MissingLockAction,
    resolving_pessimistic_lock: bool,
) -> TxnResult<TxnStatus> {
    match reader.get_txn_commit_record(key, start_ts)? {
        TxnCommitRecord::SingleRecord { commit_ts, write } => {
            Ok(if write.write_type == WriteType::Rollback {
                TxnStatus::RolledBack
            } else {
                TxnStatus::Committed { commit_ts }
            })
        }
        TxnCommitRecord::OverlappedRollback { .. } => Ok(TxnStatus::RolledBack),
        TxnCommitRecord::None { overlapped_write } => {
            if action == MissingLockAction::ReturnError {
                return Err(KeyErr::TxnNotFound {
                    start_ts,
                    key: key.to_vec(),
                }
                .into());
            }
            if resolving_pessimistic_lock {
                return Ok(TxnStatus::LockNotExistDoNothing);
            }
            // Another transaction's older lock could still commit exactly at
            // our start_ts and would then hide our rollback record: remember
            // the rollback in that lock so its commit record carries the flag.
            if let (Some(mut other), None) = (mismatch_lock, overlapped_write.as_ref()) {
                if other.ts < start_ts && !other.rollback_ts.contains(&start_ts) {
                    other.rollback_ts.push(start_ts);
                    txn.put_lock(key, &other);
                }
            }
            put_rollback(txn, key, start_ts, overlapped_write);
            Ok(TxnStatus::LockNotExist)
        }
    }
}

/// Rolls back `start_ts` on `key` (BatchRollback, Cleanup, ResolveLock).
/// With a non-zero `current_ts`, a lock that is still alive is reported as
/// Locked instead. A committed transaction is reported as Committed.
pub fn cleanup_key<S: Snapshot>(
    reader: &MvccReader<'_, S>,
    txn: &mut MvccTxn,
    key: &[u8],
    start_ts: u64,
    current_ts: u64,
) -> TxnResult<()> {
    match reader.load_lock(key)? {
        Some(lock) if lock.ts == start_ts => {
            if current_ts != 0 && !lock_expired(&lock, current_ts) {
                return Err(KeyErr::Locked(Box::new(lock.to_lock_info(key))).into());
            }
            rollback_lock(reader, txn, key, &lock)
        }
        other => {
            match check_txn_status_missing_lock(
                reader,
                txn,
                key,
                start_ts,
                other,
                MissingLockAction::Rollback,
                false,
            )? {
                TxnStatus::Committed { commit_ts } => Err(KeyErr::Committed {
                    start_ts,
                    commit_ts,
                    key: key.to_vec(),
                }
                .into()),
                _ => Ok(()),
            }
        }
    }
}

/// If `start_ts` is committed on `key`, its commit_ts.
pub fn committed_ts<S: Snapshot>(
    reader: &MvccReader<'_, S>,
    key: &[u8],
    start_ts: u64,
) -> Result<Option<u64>, StorageError> {
    Ok(reader.get_txn_commit_record(key, start_ts)?.committed_ts())
}
