//! Stored form of a raw value: the value with its expiry.
//!
//! ```text
//! u8  version = 1
//! u64 expire time, unix seconds, big-endian (0 = never expires)
//! ..  the value
//! ```

use crate::storage::mvcc::{put_u64, RecordError, RecordReader};

const VERSION: u8 = 1;
const WHAT: &str = "raw value";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawValue {
    pub value: Vec<u8>,
    /// Unix seconds after which the value is gone; 0 = never.
    pub expire_secs: u64,
}

impl RawValue {
    /// A value written at `now` that lives `ttl` seconds (0 = forever).
    pub fn with_ttl(value: Vec<u8>, ttl: u64, now: u64) -> Self {
        let expire_secs = if ttl == 0 { 0 } else { now.saturating_add(ttl) };
        RawValue { value, expire_secs }
    }

    pub fn is_expired(&self, now: u64) -> bool {
        self.expire_secs != 0 && self.expire_secs <= now
    }

    /// Seconds left to live; 0 for values without a TTL.
    pub fn ttl_left(&self, now: u64) -> u64 {
        if self.expire_secs == 0 {
            0
        } else {
            self.expire_secs.saturating_sub(now)
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + self.value.len());
        out.push(VERSION);
        put_u64(&mut out, self.expire_secs);
        out.extend_from_slice(&self.value);
        out
    }

    pub fn decode(data: &[u8]) -> Result<RawValue, RecordError> {
        let mut r = RecordReader::new(data, WHAT);
        let version = r.u8()?;
        if version != VERSION {
            return Err(RecordError::Version(WHAT, version));
        }
        let expire_secs = r.u64()?;
        Ok(RawValue {
            value: r.rest().to_vec(),
            expire_secs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_ttl_and_corruption() {
        let v = RawValue::with_ttl(b"hello".to_vec(), 10, 1000);
        assert_eq!(v.expire_secs, 1010);
        assert_eq!(RawValue::decode(&v.encode()), Ok(v.clone()));
        assert!(!v.is_expired(1009));
        assert!(v.is_expired(1010));
        assert_eq!(v.ttl_left(1004), 6);
        let forever = RawValue::with_ttl(vec![], 0, 1000);
        assert!(!forever.is_expired(u64::MAX));
        assert_eq!(forever.ttl_left(5), 0);
        assert_eq!(RawValue::decode(&forever.encode()), Ok(forever));
        let enc = v.encode();
        for n in 0..9 {
            assert!(RawValue::decode(&enc[..n]).is_err());
        }
        assert!(RawValue::decode(b"\x07xxxxxxxx").is_err());
    }
}
