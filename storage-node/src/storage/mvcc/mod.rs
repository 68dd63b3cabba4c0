//! Percolator MVCC over the three data column families.
//!
//! Stored layout (user keys are memcomparable-encoded, so encoded keys sort
//! like user keys and one key's versions are contiguous):
//! - lock CF: `encode(key) -> Lock` ([`lock`]).
//! - write CF: `encode(key) + desc(commit_ts) -> Write` ([`write`]); newest
//!   version first. Rollbacks sit at `commit_ts = start_ts`.
//! - default CF: `encode(key) + desc(start_ts) -> value`, only for values longer
//!   than [`SHORT_VALUE_MAX_LEN`]; shorter ones are inlined in the lock/write.
//!
//! Timestamps are TSO values: `physical_ms << 18 | logical`.

pub mod lock;
pub mod reader;
mod record;
pub mod scanner;
pub mod txn;
pub mod write;

pub use lock::{Lock, LockType};
pub use reader::{MvccReader, TxnCommitRecord};
pub use record::RecordError;
pub(crate) use record::{put_u64, RecordReader};
pub use txn::MvccTxn;
pub use write::{Write, WriteType};

use crate::codec::{append_ts_desc, decode_bytes, encode_bytes, split_ts_desc, CodecError};

use super::errors::KeyErr;

/// Values up to this many bytes are stored inside the lock / write record.
pub const SHORT_VALUE_MAX_LEN: usize = 255;

/// Bits of a TSO timestamp below the physical milliseconds.
pub const TSO_PHYSICAL_SHIFT: u32 = 18;

/// Milliseconds part of a TSO timestamp.
pub fn physical_ms(ts: u64) -> u64 {
    ts >> TSO_PHYSICAL_SHIFT
}

/// Lock CF key of a user key.
pub fn lock_key(key: &[u8]) -> Vec<u8> {
    encode_bytes(key)
}

/// Write/default CF key of a user key at `ts`.
pub fn versioned_key(key: &[u8], ts: u64) -> Vec<u8> {
    let mut k = encode_bytes(key);
    append_ts_desc(&mut k, ts);
    k
}

/// `encoded + desc(ts)` for an already encoded user key.
pub fn append_version(encoded: &[u8], ts: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(encoded.len() + 8);
    k.extend_from_slice(encoded);
    append_ts_desc(&mut k, ts);
    k
}

/// The smallest key greater than every key that starts with `prefix`, or an
/// empty vector (unbounded) when there is none.
pub fn prefix_next(prefix: &[u8]) -> Vec<u8> {
    let mut next = prefix.to_vec();
    while let Some(last) = next.last_mut() {
        if *last < u8::MAX {
            *last += 1;
            return next;
        }
        next.pop();
    }
    Vec::new()
}

/// Decodes a lock CF key (exactly one encoded user key).
pub fn decode_lock_key(stored: &[u8]) -> Result<Vec<u8>, CodecError> {
    let (key, used) = decode_bytes(stored)?;
    if used != stored.len() {
        return Err(CodecError::BadPadding);
    }
    Ok(key)
}

/// Splits a write/default CF key into (encoded user key, ts).
pub fn split_versioned_key(stored: &[u8]) -> Result<(&[u8], u64), CodecError> {
    split_ts_desc(stored)
}

/// Decodes a write/default CF key into (user key, ts).
pub fn decode_versioned_key(stored: &[u8]) -> Result<(Vec<u8>, u64), CodecError> {
    let (encoded, ts) = split_ts_desc(stored)?;
    Ok((decode_lock_key(encoded)?, ts))
}

/// How a snapshot read treats locks (from the request's `Context`).
#[derive(Clone, Debug, Default)]
pub struct ReadOptions {
    pub ts: u64,
    /// False under RC isolation: locks never block.
    pub check_locks: bool,
    /// `context.resolved_locks`: transactions whose locks are ignored.
    pub bypass_locks: Vec<u64>,
    /// `context.committed_locks`: transactions known to be committed; their
    /// locked values are read through.
    pub access_locks: Vec<u64>,
}

/// What a read does about a lock on its key.
#[derive(Debug, PartialEq)]
pub enum LockAccess {
    /// The lock does not affect this read.
    Ignore,
    /// The lock's transaction is committed: read the value it carries.
    ReadThrough,
}

/// TiKV's `check_ts_conflict`: whether `lock` on `key` blocks a read at
/// `opts.ts`.
pub fn check_lock_conflict(
    lock: &Lock,
    key: &[u8],
    opts: &ReadOptions,
) -> Result<LockAccess, KeyErr> {
    if !opts.check_locks
        || lock.ts > opts.ts
        || matches!(lock.lock_type, LockType::Lock | LockType::Pessimistic)
        || lock.min_commit_ts > opts.ts
        || opts.bypass_locks.contains(&lock.ts)
    {
        return Ok(LockAccess::Ignore);
    }
    // A read at the maximum timestamp of the primary key of a non-async
    // transaction reads the latest committed value (TiDB's point-get on the
    // primary); the lock's transaction cannot commit below it anyway.
    if opts.ts == u64::MAX && key == lock.primary.as_slice() && !lock.use_async_commit {
        return Ok(LockAccess::Ignore);
    }
    if opts.access_locks.contains(&lock.ts) {
        return Ok(LockAccess::ReadThrough);
    }
    Err(KeyErr::Locked(Box::new(lock.to_lock_info(key))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_next_handles_carries() {
        assert_eq!(prefix_next(b"ab"), b"ac".to_vec());
        assert_eq!(prefix_next(&[1, 0xff]), vec![2]);
        assert_eq!(prefix_next(&[0xff, 0xff]), Vec::<u8>::new());
    }

    #[test]
    fn versioned_keys_round_trip() {
        let k = versioned_key(b"hello world", 42);
        assert_eq!(decode_versioned_key(&k), Ok((b"hello world".to_vec(), 42)));
        assert!(decode_versioned_key(&k[..k.len() - 9]).is_err());
        assert!(decode_lock_key(&k).is_err());
        // Versions of one key stay below the next key's encoding.
        assert!(versioned_key(b"a", 0) < lock_key(b"a\x00"));
        assert!(versioned_key(b"a", 0) < prefix_next(&lock_key(b"a")));
    }

    #[test]
    fn lock_conflict_rules() {
        let mut lock = Lock::new(LockType::Put, b"p".to_vec(), 10, 100);
        let mut opts = ReadOptions {
            ts: 20,
            check_locks: true,
            ..Default::default()
        };
        assert!(matches!(
            check_lock_conflict(&lock, b"k", &opts),
            Err(KeyErr::Locked(_))
        ));
        opts.ts = 9;
        assert_eq!(
            check_lock_conflict(&lock, b"k", &opts),
            Ok(LockAccess::Ignore)
        );
        opts.ts = 20;
        opts.bypass_locks = vec![10];
        assert_eq!(
            check_lock_conflict(&lock, b"k", &opts),
            Ok(LockAccess::Ignore)
        );
        opts.bypass_locks.clear();
        opts.access_locks = vec![10];
        assert_eq!(
            check_lock_conflict(&lock, b"k", &opts),
            Ok(LockAccess::ReadThrough)
        );
        opts.access_locks.clear();
        lock.min_commit_ts = 21;
        assert_eq!(
            check_lock_conflict(&lock, b"k", &opts),
            Ok(LockAccess::Ignore)
        );
        lock.min_commit_ts = 0;
        lock.lock_type = LockType::Pessimistic;
        assert_eq!(
            check_lock_conflict(&lock, b"k", &opts),
            Ok(LockAccess::Ignore)
        );
        lock.lock_type = LockType::Lock;
        assert_eq!(
            check_lock_conflict(&lock, b"k", &opts),
            Ok(LockAccess::Ignore)
        );
        lock.lock_type = LockType::Delete;
        opts.check_locks = false;
        assert_eq!(
            check_lock_conflict(&lock, b"k", &opts),
            Ok(LockAccess::Ignore)
        );
        opts.check_locks = true;
        opts.ts = u64::MAX;
        assert_eq!(
            check_lock_conflict(&lock, b"p", &opts),
            Ok(LockAccess::Ignore)
        );
        assert!(check_lock_conflict(&lock, b"k", &opts).is_err());
    }
}
