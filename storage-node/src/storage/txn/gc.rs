//! Garbage collection of old versions, and range deletion (KvDeleteRange,
//! UnsafeDestroyRange).
//!
//! GC keeps, for every key, all versions newer than the safe point plus the
//! newest Put at or below it (a Delete there is dropped: nothing older is
//! visible to anyone). Everything older goes, as do Lock/Rollback records at
//! or below the safe point, with the values they point to in the default CF.

use shale_proto::kvrpcpb;

use crate::engine::{CfName, Engine, EngineContext, EngineIterator, Modify, Snapshot};
use crate::storage::errors::{invalid, StorageError};
use crate::storage::mvcc::{append_version, split_versioned_key, Write, WriteType};
use crate::storage::{api_version, check_bound, engine_context, Storage};

use crate::codec::encode_bytes;

/// What one GC pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcStats {
    /// Distinct keys examined.
    pub keys: usize,
    /// Write records removed.
    pub deleted_versions: usize,
}

impl<E: Engine> Storage<E> {
    /// Removes versions no reader at or above `safe_point` can see, in
    /// `[start, end)` of the *stored* (Region) key space: memcomparable-encoded
    /// keys, empty `end` = unbounded. Used by the background GC worker.
    pub async fn gc(
        &self,
        ctx: &EngineContext,
        safe_point: u64,
        start: &[u8],
        end: &[u8],
    ) -> Result<GcStats, StorageError> {
        let mut stats = GcStats::default();
        let batch_keys = self.inner.config.batch_keys.max(1);
        let mut next = start.to_vec();
        loop {
            let snap = self.inner.engine.async_snapshot(ctx).await?;
            let (modifies, resume) =
                gc_batch(&snap, safe_point, &next, end, batch_keys, &mut stats)?;
            drop(snap);
            if !modifies.is_empty() {
                // GC only touches versions below the safe point, which no
                // command writes, so it needs no latches.
                self.inner.engine.async_write(ctx, modifies).await?;
            }
            match resume {
                Some(k) => next = k,
                None => return Ok(stats),
            }
        }
    }

    /// KvGC: GC over everything this engine's snapshot shows.
    pub async fn kv_gc(
        &self,
        req: kvrpcpb::GcRequest,
    ) -> Result<kvrpcpb::GcResponse, StorageError> {
        let ctx = req.context.unwrap_or_default();
        if req.safe_point == 0 {
            return Err(invalid("safe_point must not be 0"));
        }
        self.gc(&engine_context(Some(&ctx)), req.safe_point, b"", b"")
            .await?;
        Ok(kvrpcpb::GcResponse::default())
    }

    /// KvDeleteRange: drops every version, lock and value of the
    /// transactional keys in `[start_key, end_key)` (empty end = unbounded).
    pub async fn kv_delete_range(
        &self,
        req: kvrpcpb::DeleteRangeRequest,
    ) -> Result<kvrpcpb::DeleteRangeResponse, StorageError> {
        let ctx = req.context.unwrap_or_default();
        let api = api_version(&ctx)?;
        check_bound(api, &req.start_key, false)?;
        check_bound(api, &req.end_key, false)?;
        if !req.notify_only {
            self.delete_txn_range(&engine_context(Some(&ctx)), &req.start_key, &req.end_key)
                .await?;
        }
        Ok(kvrpcpb::DeleteRangeResponse::default())
    }

    /// UnsafeDestroyRange: like DeleteRange, used after a table is dropped.
    pub async fn unsafe_destroy_range(
        &self,
        req: kvrpcpb::UnsafeDestroyRangeRequest,
    ) -> Result<kvrpcpb::UnsafeDestroyRangeResponse, StorageError> {
        let ctx = req.context.unwrap_or_default();
        let api = api_version(&ctx)?;
        check_bound(api, &req.start_key, false)?;
        check_bound(api, &req.end_key, false)?;
        let store_wide = EngineContext {
            store_wide: true,
            ..EngineContext::default()
        };
        self.delete_txn_range(&store_wide, &req.start_key, &req.end_key)
            .await?;
        Ok(kvrpcpb::UnsafeDestroyRangeResponse::default())
    }

    async fn delete_txn_range(
        &self,
        ctx: &EngineContext,
        start: &[u8],
        end: &[u8],
    ) -> Result<(), StorageError> {
        if !end.is_empty() && start >= end {
            return Err(invalid("start_key must be below end_key"));
        }
        let lower = encode_bytes(start);
        let upper = if end.is_empty() {
            Vec::new()
        } else {
            encode_bytes(end)
        };
        let modifies = [CfName::Default, CfName::Lock, CfName::Write]
            .into_iter()
            .map(|cf| Modify::DeleteRange(cf, lower.clone(), upper.clone()))
            .collect();
        self.inner.engine.async_write(ctx, modifies).await?;
        Ok(())
    }
}

/// GC of up to `batch_keys` keys from `start`; returns the changes and where
/// to resume (None when the range is done).
fn gc_batch<S: Snapshot>(
    snap: &S,
    safe_point: u64,
    start: &[u8],
    end: &[u8],
    batch_keys: usize,
    stats: &mut GcStats,
) -> Result<(Vec<Modify>, Option<Vec<u8>>), StorageError> {
    let upper = (!end.is_empty()).then_some(end);
    let mut it = snap.iter_cf(CfName::Write, Some(start), upper)?;
    let mut modifies = Vec::new();
    let mut valid = it.seek_to_first()?;
    let mut keys = 0;
    while valid {
        if keys >= batch_keys {
            return Ok((modifies, Some(it.key().to_vec())));
        }
        let user = split_versioned_key(it.key())?.0.to_vec();
        keys += 1;
        stats.keys += 1;
        // Skip versions above the safe point.
        valid = it.seek(&append_version(&user, safe_point))?;
        let mut found_data = false;
        while valid {
            let (k, commit_ts) = split_versioned_key(it.key())?;
            if k != user.as_slice() {
                break;
            }
            let write = Write::decode(it.value())?;
            let remove = if found_data {
                true
            } else {
                match write.write_type {
                    WriteType::Put => {
                        found_data = true;
                        false
                    }
                    WriteType::Delete => {
                        found_data = true;
                        true
                    }
                    WriteType::Lock | WriteType::Rollback => true,
                }
            };
            if remove {
                if write.write_type == WriteType::Put && write.short_value.is_none() {
                    modifies.push(Modify::Delete(
                        CfName::Default,
                        append_version(&user, write.start_ts),
                    ));
                }
                modifies.push(Modify::Delete(
                    CfName::Write,
                    append_version(&user, commit_ts),
                ));
                stats.deleted_versions += 1;
            }
            valid = it.next()?;
        }
        // Now positioned on the next key's newest version, or past the range.
    }
    Ok((modifies, None))
}
