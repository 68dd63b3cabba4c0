//! Percolator lock records (lock CF: `encode(key) -> Lock`).
//!
//! Encoding, version 1 (all integers big-endian):
//! ```text
//! u8  version = 1
//! u8  lock type (1 Put, 2 Delete, 3 Lock, 4 Pessimistic)
//! u8  flags (1 short value, 2 async commit, 4 rollback list)
//! u64 start_ts, ttl, for_update_ts, txn_size, min_commit_ts
//! varint len + primary
//! [varint len + short value]              if flags & 1
//! [varint n + n * (varint len + key)]     if flags & 2 (secondaries)
//! [varint n + n * u64]                    if flags & 4 (rollback_ts)
//! ```

use shale_proto::kvrpcpb::{self, Op};

use super::record::{put_bytes, put_u64, put_varint, RecordError, RecordReader};

const VERSION: u8 = 1;
const FLAG_SHORT_VALUE: u8 = 1;
const FLAG_ASYNC_COMMIT: u8 = 2;
const FLAG_ROLLBACK_TS: u8 = 4;
const WHAT: &str = "lock";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockType {
    Put,
    Delete,
    Lock,
    Pessimistic,
}

impl LockType {
    fn code(self) -> u8 {
        match self {
            LockType::Put => 1,
            LockType::Delete => 2,
            LockType::Lock => 3,
            LockType::Pessimistic => 4,
        }
    }

    fn from_code(c: u8) -> Result<Self, RecordError> {
        Ok(match c {
            1 => LockType::Put,
            2 => LockType::Delete,
            3 => LockType::Lock,
            4 => LockType::Pessimistic,
            _ => return Err(RecordError::Invalid(WHAT, "unknown lock type")),
        })
    }

    pub fn to_op(self) -> Op {
        match self {
            LockType::Put => Op::Put,
            LockType::Delete => Op::Del,
            LockType::Lock => Op::Lock,
            LockType::Pessimistic => Op::PessimisticLock,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lock {
    pub lock_type: LockType,
    pub primary: Vec<u8>,
    /// The owning transaction's start_ts.
    pub ts: u64,
    /// Milliseconds after `ts`'s physical time the lock is considered alive.
    pub ttl: u64,
    pub short_value: Option<Vec<u8>>,
    pub for_update_ts: u64,
    pub txn_size: u64,
    pub min_commit_ts: u64,
    pub use_async_commit: bool,
    /// Only on an async-commit primary: all other keys of the transaction.
    pub secondaries: Vec<Vec<u8>>,
    /// Start timestamps of other transactions rolled back on this key while
    /// this lock was here; if we commit at one of them, the commit record
    /// carries the overlapped-rollback flag.
    pub rollback_ts: Vec<u64>,
}

impl Lock {
    pub fn new(lock_type: LockType, primary: Vec<u8>, ts: u64, ttl: u64) -> Self {
        Lock {
            lock_type,
            primary,
            ts,
            ttl,
            short_value: None,
            for_update_ts: 0,
            txn_size: 0,
            min_commit_ts: 0,
            use_async_commit: false,
            secondaries: Vec::new(),
            rollback_ts: Vec::new(),
        }
    }

    pub fn is_pessimistic_lock(&self) -> bool {
        self.lock_type == LockType::Pessimistic
    }

    /// True for locks of pessimistic transactions (pessimistic or prewritten).
    pub fn is_pessimistic_txn(&self) -> bool {
        self.for_update_ts != 0
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut flags = 0;
        if self.short_value.is_some() {
            flags |= FLAG_SHORT_VALUE;
        }
        if self.use_async_commit {
            flags |= FLAG_ASYNC_COMMIT;
        }
        if !self.rollback_ts.is_empty() {
            flags |= FLAG_ROLLBACK_TS;
        }
        let mut out = Vec::with_capacity(48 + self.primary.len());
        out.push(VERSION);
        out.push(self.lock_type.code());
        out.push(flags);
        for v in [
            self.ts,
            self.ttl,
            self.for_update_ts,
            self.txn_size,
            self.min_commit_ts,
        ] {
            put_u64(&mut out, v);
        }
        put_bytes(&mut out, &self.primary);
        if let Some(v) = &self.short_value {
            put_bytes(&mut out, v);
        }
        if self.use_async_commit {
            put_varint(&mut out, self.secondaries.len() as u64);
            for s in &self.secondaries {
                put_bytes(&mut out, s);
            }
        }
        if !self.rollback_ts.is_empty() {
            put_varint(&mut out, self.rollback_ts.len() as u64);
            for ts in &self.rollback_ts {
                put_u64(&mut out, *ts);
            }
        }
        out
    }

    pub fn decode(data: &[u8]) -> Result<Lock, RecordError> {
        let mut r = RecordReader::new(data, WHAT);
        let version = r.u8()?;
        if version != VERSION {
            return Err(RecordError::Version(WHAT, version));
        }
        let lock_type = LockType::from_code(r.u8()?)?;
        let flags = r.u8()?;
        if flags & !(FLAG_SHORT_VALUE | FLAG_ASYNC_COMMIT | FLAG_ROLLBACK_TS) != 0 {
            return Err(RecordError::Invalid(WHAT, "unknown flags"));
        }
        let ts = r.u64()?;
        let ttl = r.u64()?;
        let for_update_ts = r.u64()?;
        let txn_size = r.u64()?;
        let min_commit_ts = r.u64()?;
        let primary = r.bytes()?;
        let short_value = if flags & FLAG_SHORT_VALUE != 0 {
            Some(r.bytes()?)
        } else {
            None
        };
        let mut secondaries = Vec::new();
        if flags & FLAG_ASYNC_COMMIT != 0 {
            let n = r.count(1)?;
            secondaries.reserve(n);
            for _ in 0..n {
                secondaries.push(r.bytes()?);
            }
        }
        let mut rollback_ts = Vec::new();
        if flags & FLAG_ROLLBACK_TS != 0 {
            let n = r.count(8)?;
            for _ in 0..n {
                rollback_ts.push(r.u64()?);
            }
        }
        r.finish()?;
        Ok(Lock {
            lock_type,
            primary,
            ts,
            ttl,
            short_value,
            for_update_ts,
            txn_size,
            min_commit_ts,
            use_async_commit: flags & FLAG_ASYNC_COMMIT != 0,
            secondaries,
            rollback_ts,
        })
    }

    /// The wire form clients use to resolve the lock.
    pub fn to_lock_info(&self, key: &[u8]) -> kvrpcpb::LockInfo {
        kvrpcpb::LockInfo {
            primary_lock: self.primary.clone(),
            lock_version: self.ts,
            key: key.to_vec(),
            lock_ttl: self.ttl,
            txn_size: self.txn_size,
            lock_type: self.lock_type.to_op() as i32,
            lock_for_update_ts: self.for_update_ts,
            use_async_commit: self.use_async_commit,
            min_commit_ts: self.min_commit_ts,
            secondaries: self.secondaries.clone(),
            duration_to_last_update_ms: 0,
            is_txn_file: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> Lock {
        let mut l = Lock::new(LockType::Put, b"primary".to_vec(), 10, 3000);
        l.short_value = Some(b"v".to_vec());
        l.for_update_ts = 12;
        l.txn_size = 3;
        l.min_commit_ts = 15;
        l.use_async_commit = true;
        l.secondaries = vec![b"s1".to_vec(), vec![]];
        l.rollback_ts = vec![11, 13];
        l
    }

    #[test]
    fn round_trips() {
        for lock in [full(), Lock::new(LockType::Pessimistic, vec![], 1, 0)] {
            assert_eq!(Lock::decode(&lock.encode()), Ok(lock));
        }
        let mut l = Lock::new(LockType::Delete, b"p".to_vec(), 5, 1);
        l.short_value = Some(vec![]);
        assert_eq!(Lock::decode(&l.encode()), Ok(l));
    }

    #[test]
    fn corrupt_bytes_are_errors_not_panics() {
        let good = full().encode();
        for n in 0..good.len() {
            assert!(
                Lock::decode(&good[..n]).is_err(),
                "prefix of {n} bytes decoded"
            );
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(Lock::decode(&trailing).is_err());
        let mut bad_version = good.clone();
        bad_version[0] = 9;
        assert_eq!(
            Lock::decode(&bad_version),
            Err(RecordError::Version(WHAT, 9))
        );
        let mut bad_type = good.clone();
        bad_type[1] = 0;
        assert!(Lock::decode(&bad_type).is_err());
        // Flip every byte in turn: decoding may succeed or fail but never panic.
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 0xff;
            let _ = Lock::decode(&b);
        }
    }

    #[test]
    fn lock_info_carries_everything_clients_need() {
        let info = full().to_lock_info(b"k");
        assert_eq!(info.key, b"k");
        assert_eq!(info.primary_lock, b"primary");
        assert_eq!(info.lock_version, 10);
        assert_eq!(info.lock_ttl, 3000);
        assert_eq!(info.txn_size, 3);
        assert_eq!(info.lock_for_update_ts, 12);
        assert!(info.use_async_commit);
        assert_eq!(info.min_commit_ts, 15);
        assert_eq!(info.secondaries.len(), 2);
        assert_eq!(info.lock_type, Op::Put as i32);
    }
}
