//! Building blocks for the compact binary records (locks, writes, raw values):
//! fixed-width big-endian integers, LEB128 lengths, and a cursor that reports
//! truncation and garbage as errors instead of panicking.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("{0} record is truncated")]
    Truncated(&'static str),
    #[error("{0} record has unknown format version {1}")]
    Version(&'static str, u8),
    #[error("{0} record is invalid: {1}")]
    Invalid(&'static str, &'static str),
}

pub(crate) fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Reads fields from the front of a record.
pub(crate) struct RecordReader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> RecordReader<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        RecordReader { buf, what }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.buf.len() < n {
            return Err(RecordError::Truncated(self.what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }

    pub fn u64(&mut self) -> Result<u64, RecordError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }

    pub fn varint(&mut self) -> Result<u64, RecordError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(RecordError::Invalid(self.what, "varint too long"))
    }

    /// A length-prefixed byte string; the length is checked against what is
    /// left before anything is allocated.
    pub fn bytes(&mut self) -> Result<Vec<u8>, RecordError> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| RecordError::Truncated(self.what))?;
        Ok(self.take(len)?.to_vec())
    }

    /// A count of items that each take at least `min_item` bytes.
    pub fn count(&mut self, min_item: usize) -> Result<usize, RecordError> {
        let n = self.varint()?;
        match usize::try_from(n) {
            Ok(n) if n.saturating_mul(min_item.max(1)) <= self.buf.len() => Ok(n),
            _ => Err(RecordError::Truncated(self.what)),
        }
    }

    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub fn finish(&self) -> Result<(), RecordError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(RecordError::Invalid(self.what, "trailing bytes"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_reject_garbage() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut out = vec![];
            put_varint(&mut out, v);
            let mut r = RecordReader::new(&out, "t");
            assert_eq!(r.varint(), Ok(v));
            assert!(r.finish().is_ok());
        }
        let garbage = [0xffu8; 11];
        assert!(RecordReader::new(&garbage, "t").varint().is_err());
        // A length far larger than the record must not allocate or panic.
        let mut out = vec![];
        put_varint(&mut out, u64::MAX);
        assert_eq!(
            RecordReader::new(&out, "t").bytes(),
            Err(RecordError::Truncated("t"))
        );
        assert!(RecordReader::new(&out, "t").count(8).is_err());
    }
}
