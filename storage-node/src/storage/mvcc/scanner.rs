//! Range reads of MVCC data (KvScan), forward and reverse.
//!
//! Two cursors walk the lock CF and the write CF of the range together; the
//! smaller (forward) or larger (reverse) encoded user key is visited next. A
//! blocking lock yields a per-key error and the scan goes on, as TiKV does.

use crate::codec::encode_bytes;
use crate::engine::{CfName, EngineIterator, Snapshot};
use crate::storage::errors::{KeyErr, StorageError};

use super::{
    append_version, check_lock_conflict, decode_lock_key, prefix_next, split_versioned_key, Lock,
    LockAccess, MvccReader, ReadOptions, Write, WriteType,
};

/// One scanned key: its value, or the lock that blocks it.
pub type ScanItem = Result<(Vec<u8>, Vec<u8>), KeyErr>;

/// What to scan: `[lower, upper)` in user keys (empty = unbounded).
pub struct ScanSpec<'a> {
    pub lower: &'a [u8],
    pub upper: &'a [u8],
    pub reverse: bool,
    pub limit: usize,
    pub key_only: bool,
    pub read: &'a ReadOptions,
}

pub fn scan<S: Snapshot>(snap: &S, spec: &ScanSpec<'_>) -> Result<Vec<ScanItem>, StorageError> {
    let mut out = Vec::new();
    if spec.limit == 0 {
        return Ok(out);
    }
    let lower = (!spec.lower.is_empty()).then(|| encode_bytes(spec.lower));
    let upper = (!spec.upper.is_empty()).then(|| encode_bytes(spec.upper));
    let mut locks = snap.iter_cf(CfName::Lock, lower.as_deref(), upper.as_deref())?;
    let mut writes = snap.iter_cf(CfName::Write, lower.as_deref(), upper.as_deref())?;
    let (mut lock_ok, mut write_ok) = if spec.reverse {
        (locks.seek_to_last()?, writes.seek_to_last()?)
    } else {
        (locks.seek_to_first()?, writes.seek_to_first()?)
    };
    let reader = MvccReader::new(snap);
    let mut budget = crate::storage::ResponseBudget::default();

    while out.len() < spec.limit {
        let lock_key = lock_ok.then(|| locks.key().to_vec());
        let write_key = match write_ok {
            true => Some(split_versioned_key(writes.key())?.0.to_vec()),
            false => None,
        };
        let cur = match (&lock_key, &write_key) {
            (None, None) => break,
            (Some(l), None) => l.clone(),
            (None, Some(w)) => w.clone(),
            (Some(l), Some(w)) if spec.reverse => l.max(w).clone(),
            (Some(l), Some(w)) => l.min(w).clone(),
        };
        let user_key = decode_lock_key(&cur)?;
        let mut item: Option<ScanItem> = None;
        let mut decided = false;

        if lock_key.as_deref() == Some(cur.as_slice()) {
            let lock = Lock::decode(locks.value())?;
            match check_lock_conflict(&lock, &user_key, spec.read) {
                Err(e) => {
                    item = Some(Err(e));
                    decided = true;
                }
                Ok(LockAccess::ReadThrough) => {
                    decided = true;
                    if let Some(v) = reader.load_lock_value(&user_key, lock, spec.read.ts)? {
                        let v = if spec.key_only { Vec::new() } else { v };
                        item = Some(Ok((user_key.clone(), v)));
                    }
                }
                Ok(LockAccess::Ignore) => {}
            }
            lock_ok = if spec.reverse {
                locks.prev()?
            } else {
                locks.next()?
            };
        }

        if write_key.as_deref() == Some(cur.as_slice()) {
            if !decided {
                if let Some(write) = visible_write(&mut writes, &cur, spec.read.ts)? {
                    let value = if spec.key_only {
                        Vec::new()
                    } else {
                        load_value(snap, &cur, write)?
                    };
                    item = Some(Ok((user_key, value)));
                }
            }
            write_ok = if spec.reverse {
                writes.seek_for_prev(&cur)?
            } else {
                let next = prefix_next(&cur);
                !next.is_empty() && writes.seek(&next)?
            };
        }

        if let Some(item) = item {
            let bytes = match &item {
                Ok((k, v)) => k.len() + v.len(),
                Err(_) => cur.len(),
            };
            budget.charge(bytes)?;
            out.push(item);
        }
    }
    Ok(out)
}

/// Positions `writes` at `encoded`'s newest version <= ts and walks past
/// Lock/Rollback records; returns the Put found (None for Delete or nothing).
fn visible_write<I: EngineIterator>(
    writes: &mut I,
    encoded: &[u8],
    ts: u64,
) -> Result<Option<Write>, StorageError> {
    let mut valid = writes.seek(&append_version(encoded, ts))?;
    while valid {
        let (key, _) = split_versioned_key(writes.key())?;
        if key != encoded {
            break;
        }
        let write = Write::decode(writes.value())?;
        match write.write_type {
            WriteType::Put => return Ok(Some(write)),
            WriteType::Delete => return Ok(None),
            WriteType::Lock | WriteType::Rollback => valid = writes.next()?,
        }
    }
    Ok(None)
}

fn load_value<S: Snapshot>(
    snap: &S,
    encoded: &[u8],
    write: Write,
) -> Result<Vec<u8>, StorageError> {
    if let Some(v) = write.short_value {
        return Ok(v);
    }
    snap.get_cf(CfName::Default, &append_version(encoded, write.start_ts))?
        .ok_or_else(|| {
            StorageError::Corrupted(format!("value written at {} is missing", write.start_ts))
        })
}
