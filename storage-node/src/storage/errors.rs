//! Errors of the storage layer.
//!
//! Two kinds, kept apart on purpose:
//! - [`StorageError`]: the request could not be served at all (bad input, the
//!   engine failed, stored bytes are corrupt). The server maps it to a gRPC
//!   status, a `region_error` or a response's string `error` field.
//! - [`KeyErr`]: a transaction-level outcome for a key (locked, write conflict,
//!   already exists, ...). It travels inside the response as a
//!   `kvrpcpb::KeyError`, exactly where TiKV puts it, because clients act on it.

use std::fmt;

use shale_proto::kvrpcpb::{self, write_conflict::Reason as ConflictReason};
use thiserror::Error;

use crate::codec::CodecError;
use crate::engine::EngineError;

use super::mvcc::RecordError;

#[derive(Debug, Error)]
pub enum StorageError {
    /// Malformed request: bad key/value sizes, wrong API V2 prefix, unknown
    /// column family, inconsistent fields. Maps to gRPC `InvalidArgument`.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The engine (RocksDB, or the replication layer behind it) failed.
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
    /// A stored key is not valid memcomparable encoding.
    #[error("corrupt stored key: {0}")]
    Codec(#[from] CodecError),
    /// A stored record cannot be decoded or MVCC state is inconsistent.
    #[error("corrupt stored data: {0}")]
    Corrupted(String),
}

impl From<RecordError> for StorageError {
    fn from(e: RecordError) -> Self {
        StorageError::Corrupted(e.to_string())
    }
}

pub(crate) fn invalid(msg: impl Into<String>) -> StorageError {
    StorageError::InvalidArgument(msg.into())
}

/// A key-level transaction outcome, reported inside the response.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyErr {
    /// Another transaction's lock blocks the operation.
    Locked(Box<kvrpcpb::LockInfo>),
    WriteConflict {
        start_ts: u64,
        conflict_start_ts: u64,
        conflict_commit_ts: u64,
        key: Vec<u8>,
        primary: Vec<u8>,
        reason: ConflictReason,
    },
    AlreadyExist {
        key: Vec<u8>,
    },
    /// Commit found neither the lock nor a commit record (rolled back).
    TxnLockNotFound {
        start_ts: u64,
        commit_ts: u64,
        key: Vec<u8>,
    },
    /// CheckTxnStatus/heartbeat found no trace of the transaction.
    TxnNotFound {
        start_ts: u64,
        key: Vec<u8>,
    },
    CommitTsExpired {
        start_ts: u64,
        commit_ts: u64,
        key: Vec<u8>,
        min_commit_ts: u64,
    },
    /// Rollback of a transaction that is already committed.
    Committed {
        start_ts: u64,
        commit_ts: u64,
        key: Vec<u8>,
    },
    PessimisticLockNotFound {
        start_ts: u64,
        key: Vec<u8>,
    },
    PessimisticLockRolledBack {
        start_ts: u64,
        key: Vec<u8>,
    },
    LockTypeNotMatch {
        start_ts: u64,
        key: Vec<u8>,
        pessimistic: bool,
    },
    InvalidTxnTso {
        start_ts: u64,
        commit_ts: u64,
    },
    Deadlock {
        start_ts: u64,
        lock_ts: u64,
        lock_key: Vec<u8>,
        deadlock_key_hash: u64,
    },
    PrimaryMismatch(Box<kvrpcpb::LockInfo>),
    /// A prewrite's assertion about the key's current value does not hold.
    AssertionFailed {
        start_ts: u64,
        key: Vec<u8>,
        assertion: kvrpcpb::Assertion,
        existing_start_ts: u64,
        existing_commit_ts: u64,
    },
    /// A timestamp far ahead of the TSO (a broken or malicious client):
    /// taking it would push `max_ts`, and every later commit, past it.
    TimestampTooFarAhead {
        ts: u64,
        /// The latest physical time (ms) accepted now.
        limit_ms: u64,
    },
}

struct Hex<'a>(&'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Display for KeyErr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyErr::Locked(info) => write!(
                f,
                "KeyIsLocked {{ key: {}, primary: {}, lock_ts: {} }}",
                Hex(&info.key),
                Hex(&info.primary_lock),
                info.lock_version
            ),
            KeyErr::WriteConflict {
                start_ts,
                conflict_start_ts,
                conflict_commit_ts,
                key,
                reason,
                ..
            } => write!(
                f,
                "WriteConflict {{ start_ts: {start_ts}, conflict_start_ts: {conflict_start_ts}, \
                 conflict_commit_ts: {conflict_commit_ts}, key: {}, reason: {reason:?} }}",
                Hex(key)
            ),
            KeyErr::AlreadyExist { key } => write!(f, "AlreadyExist {{ key: {} }}", Hex(key)),
            KeyErr::TxnLockNotFound {
                start_ts,
                commit_ts,
                key,
            } => write!(
                f,
                "TxnLockNotFound {{ start_ts: {start_ts}, commit_ts: {commit_ts}, key: {} }}",
                Hex(key)
            ),
            KeyErr::TxnNotFound { start_ts, key } => {
                write!(
                    f,
                    "TxnNotFound {{ start_ts: {start_ts}, key: {} }}",
                    Hex(key)
                )
            }
            KeyErr::CommitTsExpired {
                start_ts,
                commit_ts,
                key,
                min_commit_ts,
            } => write!(
                f,
                "CommitTsExpired {{ start_ts: {start_ts}, commit_ts: {commit_ts}, \
                 min_commit_ts: {min_commit_ts}, key: {} }}",
                Hex(key)
            ),
            KeyErr::Committed {
                start_ts,
                commit_ts,
                key,
            } => write!(
                f,
                "Committed {{ start_ts: {start_ts}, commit_ts: {commit_ts}, key: {} }}",
                Hex(key)
            ),
            KeyErr::PessimisticLockNotFound { start_ts, key } => write!(
                f,
                "PessimisticLockNotFound {{ start_ts: {start_ts}, key: {} }}",
                Hex(key)
            ),
            KeyErr::PessimisticLockRolledBack { start_ts, key } => write!(
                f,
                "PessimisticLockRolledBack {{ start_ts: {start_ts}, key: {} }}",
                Hex(key)
            ),
            KeyErr::LockTypeNotMatch {
                start_ts,
                key,
                pessimistic,
            } => write!(
                f,
                "LockTypeNotMatch {{ start_ts: {start_ts}, key: {}, pessimistic: {pessimistic} }}",
                Hex(key)
            ),
            KeyErr::InvalidTxnTso {
                start_ts,
                commit_ts,
            } => write!(
                f,
                "InvalidTxnTso {{ start_ts: {start_ts}, commit_ts: {commit_ts} }}"
            ),
            KeyErr::Deadlock {
                start_ts,
                lock_ts,
                lock_key,
                ..
            } => write!(
                f,
                "Deadlock {{ start_ts: {start_ts}, lock_ts: {lock_ts}, lock_key: {} }}",
                Hex(lock_key)
            ),
            KeyErr::PrimaryMismatch(info) => write!(
                f,
                "PrimaryMismatch {{ key: {}, primary: {} }}",
                Hex(&info.key),
                Hex(&info.primary_lock)
            ),
            KeyErr::AssertionFailed {
                start_ts,
                key,
                assertion,
                existing_start_ts,
                existing_commit_ts,
            } => write!(
                f,
                "AssertionFailed {{ start_ts: {start_ts}, key: {}, assertion: {assertion:?}, \
                 existing_start_ts: {existing_start_ts}, existing_commit_ts: {existing_commit_ts} }}",
                Hex(key)
            ),
            KeyErr::TimestampTooFarAhead { ts, limit_ms } => write!(
                f,
                "InvalidMaxTsUpdate {{ ts: {ts} (physical {} ms) is ahead of the TSO's \
                 physical time plus the allowed drift ({limit_ms} ms) }}",
                ts >> super::mvcc::TSO_PHYSICAL_SHIFT
            ),
        }
    }
}

impl KeyErr {
    /// The wire form, filled the way TiKV fills it (`extract_key_error`).
    pub fn to_pb(&self) -> kvrpcpb::KeyError {
        let mut e = kvrpcpb::KeyError::default();
        match self {
            KeyErr::Locked(info) => e.locked = Some((**info).clone()),
            KeyErr::WriteConflict {
                start_ts,
                conflict_start_ts,
                conflict_commit_ts,
                key,
                primary,
                reason,
            } => {
                e.conflict = Some(kvrpcpb::WriteConflict {
                    start_ts: *start_ts,
                    conflict_ts: *conflict_start_ts,
                    key: key.clone(),
                    primary: primary.clone(),
                    conflict_commit_ts: *conflict_commit_ts,
                    reason: *reason as i32,
                });
                // TiKV also sets `retryable` for older clients.
                e.retryable = self.to_string();
            }
            KeyErr::AlreadyExist { key } => {
                e.already_exist = Some(kvrpcpb::AlreadyExist { key: key.clone() })
            }
            KeyErr::TxnLockNotFound { .. } => e.retryable = self.to_string(),
            KeyErr::TxnNotFound { start_ts, key } => {
                e.txn_not_found = Some(kvrpcpb::TxnNotFound {
                    start_ts: *start_ts,
                    primary_key: key.clone(),
                })
            }
            KeyErr::CommitTsExpired {
                start_ts,
                commit_ts,
                key,
                min_commit_ts,
            } => {
                e.commit_ts_expired = Some(kvrpcpb::CommitTsExpired {
                    start_ts: *start_ts,
                    attempted_commit_ts: *commit_ts,
                    key: key.clone(),
                    min_commit_ts: *min_commit_ts,
                })
            }
            KeyErr::Deadlock {
                lock_ts,
                lock_key,
                deadlock_key_hash,
                ..
            } => {
                e.deadlock = Some(kvrpcpb::Deadlock {
                    lock_ts: *lock_ts,
                    lock_key: lock_key.clone(),
                    deadlock_key_hash: *deadlock_key_hash,
                })
            }
            KeyErr::PrimaryMismatch(info) => {
                e.primary_mismatch = Some(kvrpcpb::PrimaryMismatch {
                    lock_info: Some((**info).clone()),
                })
            }
            KeyErr::AssertionFailed {
                start_ts,
                key,
                assertion,
                existing_start_ts,
                existing_commit_ts,
            } => {
                e.assertion_failed = Some(kvrpcpb::AssertionFailed {
                    start_ts: *start_ts,
                    key: key.clone(),
                    assertion: *assertion as i32,
                    existing_start_ts: *existing_start_ts,
                    existing_commit_ts: *existing_commit_ts,
                })
            }
            KeyErr::Committed { .. }
            | KeyErr::PessimisticLockNotFound { .. }
            | KeyErr::PessimisticLockRolledBack { .. }
            | KeyErr::LockTypeNotMatch { .. }
            | KeyErr::InvalidTxnTso { .. }
            | KeyErr::TimestampTooFarAhead { .. } => e.abort = self.to_string(),
        }
        e
    }
}

/// Result of transaction logic: a key-level outcome or a hard failure.
#[derive(Debug)]
pub enum TxnError {
    Key(KeyErr),
    Storage(StorageError),
}

pub type TxnResult<T> = Result<T, TxnError>;

impl From<KeyErr> for TxnError {
    fn from(e: KeyErr) -> Self {
        TxnError::Key(e)
    }
}

impl From<StorageError> for TxnError {
    fn from(e: StorageError) -> Self {
        TxnError::Storage(e)
    }
}

impl From<EngineError> for TxnError {
    fn from(e: EngineError) -> Self {
        TxnError::Storage(e.into())
    }
}

impl From<CodecError> for TxnError {
    fn from(e: CodecError) -> Self {
        TxnError::Storage(e.into())
    }
}

impl From<RecordError> for TxnError {
    fn from(e: RecordError) -> Self {
        TxnError::Storage(e.into())
    }
}

/// Splits a [`TxnResult`] into "serve the key error" and "fail the request".
pub(crate) fn split<T>(r: TxnResult<T>) -> Result<Result<T, KeyErr>, StorageError> {
    match r {
        Ok(v) => Ok(Ok(v)),
        Err(TxnError::Key(e)) => Ok(Err(e)),
        Err(TxnError::Storage(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_errors_land_in_the_fields_clients_read() {
        let e = KeyErr::TxnLockNotFound {
            start_ts: 1,
            commit_ts: 2,
            key: b"k".to_vec(),
        }
        .to_pb();
        assert!(e.retryable.contains("TxnLockNotFound"));
        assert!(e.abort.is_empty());
        let e = KeyErr::Committed {
            start_ts: 1,
            commit_ts: 2,
            key: b"k".to_vec(),
        }
        .to_pb();
        assert!(!e.abort.is_empty());
        let e = KeyErr::WriteConflict {
            start_ts: 1,
            conflict_start_ts: 2,
            conflict_commit_ts: 3,
            key: b"k".to_vec(),
            primary: b"p".to_vec(),
            reason: ConflictReason::Optimistic,
        }
        .to_pb();
        let c = e.conflict.unwrap_or_default();
        assert_eq!((c.start_ts, c.conflict_ts, c.conflict_commit_ts), (1, 2, 3));
        assert!(!e.retryable.is_empty());
        let e = KeyErr::TxnNotFound {
            start_ts: 5,
            key: b"p".to_vec(),
        }
        .to_pb();
        assert_eq!(e.txn_not_found.map(|t| t.start_ts), Some(5));
    }
}
