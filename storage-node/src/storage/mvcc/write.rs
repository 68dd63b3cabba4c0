//! Commit records (write CF: `encode(key) + desc(commit_ts) -> Write`).
//!
//! Encoding, version 1:
//! ```text
//! u8  version = 1
//! u8  write type (1 Put, 2 Delete, 3 Lock, 4 Rollback)
//! u8  flags (1 short value, 2 overlapped rollback)
//! u64 start_ts (big-endian)
//! [varint len + short value]   if flags & 1
//! ```
//! A Rollback record is stored at `commit_ts == start_ts` of the rolled-back
//! transaction. When another transaction's commit record already occupies that
//! slot, the rollback is recorded by setting its overlapped-rollback flag.

use super::lock::LockType;
use super::record::{put_bytes, put_u64, RecordError, RecordReader};

const VERSION: u8 = 1;
const FLAG_SHORT_VALUE: u8 = 1;
const FLAG_OVERLAPPED_ROLLBACK: u8 = 2;
const WHAT: &str = "write";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteType {
    Put,
    Delete,
    Lock,
    Rollback,
}

impl WriteType {
    fn code(self) -> u8 {
        match self {
            WriteType::Put => 1,
            WriteType::Delete => 2,
            WriteType::Lock => 3,
            WriteType::Rollback => 4,
        }
    }

    fn from_code(c: u8) -> Result<Self, RecordError> {
        Ok(match c {
            1 => WriteType::Put,
            2 => WriteType::Delete,
            3 => WriteType::Lock,
            4 => WriteType::Rollback,
            _ => return Err(RecordError::Invalid(WHAT, "unknown write type")),
        })
    }

    /// The record a committed lock of this type turns into. A pessimistic
    /// lock that is committed (it was never prewritten) leaves a Lock record.
    pub fn from_lock_type(t: LockType) -> WriteType {
        match t {
            LockType::Put => WriteType::Put,
            LockType::Delete => WriteType::Delete,
            LockType::Lock | LockType::Pessimistic => WriteType::Lock,
        }
    }

    /// Put and Delete change data; Lock and Rollback only mark a transaction.
    pub fn is_data(self) -> bool {
        matches!(self, WriteType::Put | WriteType::Delete)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    pub write_type: WriteType,
    pub start_ts: u64,
    pub short_value: Option<Vec<u8>>,
    pub has_overlapped_rollback: bool,
}

impl Write {
    pub fn new(write_type: WriteType, start_ts: u64, short_value: Option<Vec<u8>>) -> Self {
        Write {
            write_type,
            start_ts,
            short_value,
            has_overlapped_rollback: false,
        }
    }

    pub fn rollback(start_ts: u64) -> Self {
        Write::new(WriteType::Rollback, start_ts, None)
    }

    /// True if this record says the transaction that started at `start_ts`
    /// (the record's own slot) was rolled back.
    pub fn marks_rollback(&self) -> bool {
        self.write_type == WriteType::Rollback || self.has_overlapped_rollback
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut flags = 0;
        if self.short_value.is_some() {
            flags |= FLAG_SHORT_VALUE;
        }
        if self.has_overlapped_rollback {
            flags |= FLAG_OVERLAPPED_ROLLBACK;
        }
        let mut out = Vec::with_capacity(12 + self.short_value.as_ref().map_or(0, |v| v.len() + 2));
        out.push(VERSION);
        out.push(self.write_type.code());
        out.push(flags);
        put_u64(&mut out, self.start_ts);
        if let Some(v) = &self.short_value {
            put_bytes(&mut out, v);
        }
        out
    }

    pub fn decode(data: &[u8]) -> Result<Write, RecordError> {
        let mut r = RecordReader::new(data, WHAT);
        let version = r.u8()?;
        if version != VERSION {
            return Err(RecordError::Version(WHAT, version));
        }
        let write_type = WriteType::from_code(r.u8()?)?;
        let flags = r.u8()?;
        if flags & !(FLAG_SHORT_VALUE | FLAG_OVERLAPPED_ROLLBACK) != 0 {
            return Err(RecordError::Invalid(WHAT, "unknown flags"));
        }
        let start_ts = r.u64()?;
        let short_value = if flags & FLAG_SHORT_VALUE != 0 {
            Some(r.bytes()?)
        } else {
            None
        };
        r.finish()?;
        Ok(Write {
            write_type,
            start_ts,
            short_value,
            has_overlapped_rollback: flags & FLAG_OVERLAPPED_ROLLBACK != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let mut w = Write::new(WriteType::Put, 7, Some(b"value".to_vec()));
        w.has_overlapped_rollback = true;
        for w in [
            w,
            Write::rollback(3),
            Write::new(WriteType::Delete, 1, None),
        ] {
            assert_eq!(Write::decode(&w.encode()), Ok(w));
        }
    }

    #[test]
    fn corrupt_bytes_are_errors_not_panics() {
        let good = Write::new(WriteType::Put, 7, Some(b"value".to_vec())).encode();
        for n in 0..good.len() {
            assert!(Write::decode(&good[..n]).is_err());
        }
        let mut bad = good.clone();
        bad[0] = 2;
        assert!(Write::decode(&bad).is_err());
        let mut bad = good.clone();
        bad[2] = 0x80;
        assert!(Write::decode(&bad).is_err());
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] = b[i].wrapping_add(1);
            let _ = Write::decode(&b);
        }
    }
}
