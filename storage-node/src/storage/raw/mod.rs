//! The Raw API: plain key-value pairs with optional TTL, batch operations,
//! scans (forward and reverse), range deletion and compare-and-swap.
//!
//! Raw pairs live in the default CF at `keys::raw_data_key(api, key)`: the
//! key verbatim under API V1, memcomparable-encoded under V2. The value is a
//! [`RawValue`]: the client's bytes with an expiry. Expired values read as
//! absent everywhere (scans skip them); they are overwritten or deleted like
//! any other value (no background compaction of expired values yet).
//!
//! Every write takes the latches of its keys, so puts, deletes and CAS on the
//! same key are serialised and CAS is atomic.

mod value;

#[cfg(test)]
mod tests;

pub use value::RawValue;

use shale_proto::kvrpcpb::{self, ApiVersion};

use crate::codec::{decode_bytes, encode_bytes};
use crate::engine::{CfName, Engine, EngineContext, EngineIterator, Modify, Snapshot};
use crate::keys::{raw_data_key, RAW_MODE_PREFIX};
use crate::storage::errors::{invalid, StorageError};
use crate::storage::{
    api_version, check_bound, check_key, engine_context, ResponseBudget, Storage,
};

/// The column family a raw request names: only the default one is served.
fn check_cf(cf: &str) -> Result<(), StorageError> {
    match cf {
        "" | "default" => Ok(()),
        other => Err(invalid(format!("column family {other:?} is not supported"))),
    }
}

fn raw_ctx(
    ctx: Option<&kvrpcpb::Context>,
    cf: &str,
) -> Result<(ApiVersion, EngineContext), StorageError> {
    check_cf(cf)?;
    let api = match ctx {
        Some(c) => api_version(c)?,
        None => ApiVersion::V1,
    };
    Ok((api, engine_context(ctx)))
}

fn stored_key(api: ApiVersion, key: &[u8]) -> Vec<u8> {
    raw_data_key(api, key).into_owned()
}

fn user_key(api: ApiVersion, stored: &[u8]) -> Result<Vec<u8>, StorageError> {
    if api != ApiVersion::V2 {
        return Ok(stored.to_vec());
    }
    let (key, used) = decode_bytes(stored)?;
    if used != stored.len() {
        return Err(StorageError::Corrupted("raw key has trailing bytes".into()));
    }
    Ok(key)
}

/// Stored-key bounds of a client range (empty = unbounded). Under V2 an
/// unbounded side stops at the raw key mode, never reaching other modes.
fn stored_range(api: ApiVersion, lower: &[u8], upper: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
    if api == ApiVersion::V2 {
        let lower = if lower.is_empty() {
            encode_bytes(&[RAW_MODE_PREFIX])
        } else {
            encode_bytes(lower)
        };
        let upper = if upper.is_empty() {
            encode_bytes(&[RAW_MODE_PREFIX + 1])
        } else {
            encode_bytes(upper)
        };
        (lower, Some(upper))
    } else {
        (lower.to_vec(), (!upper.is_empty()).then(|| upper.to_vec()))
    }
}

/// Whether a default CF key has the shape of a transactional value key,
/// `encode(key) + desc(start_ts)`.
fn is_txn_value_key(stored: &[u8]) -> bool {
    stored.len() > 8
        && decode_bytes(&stored[..stored.len() - 8]).is_ok_and(|(_, used)| used == stored.len() - 8)
}

/// Live value of a stored entry, or None if expired.
fn live(bytes: &[u8], now: u64) -> Result<Option<RawValue>, StorageError> {
    let v = RawValue::decode(bytes)?;
    Ok((!v.is_expired(now)).then_some(v))
}

struct ScanArgs<'a> {
    lower: &'a [u8],
    upper: &'a [u8],
    reverse: bool,
    limit: usize,
    key_only: bool,
}

impl<E: Engine> Storage<E> {
    fn raw_read<S: Snapshot>(
        &self,
        snap: &S,
        api: ApiVersion,
        key: &[u8],
    ) -> Result<Option<RawValue>, StorageError> {
        match snap.get_cf(CfName::Default, &stored_key(api, key))? {
            Some(bytes) => live(&bytes, self.now_secs()),
            None => Ok(None),
        }
    }

    /// Writes `modifies` while holding the latches of `stored_keys`.
    async fn raw_write(
        &self,
        ctx: &EngineContext,
        stored_keys: &[Vec<u8>],
        modifies: Vec<Modify>,
    ) -> Result<(), StorageError> {
        let latches = self
            .inner
            .latches
            .acquire(stored_keys.iter().map(Vec::as_slice))
            .await;
        self.write_then_release(ctx, modifies, latches, Vec::new())
            .await
    }

    fn raw_scan_snapshot<S: Snapshot>(
        &self,
        snap: &S,
        api: ApiVersion,
        a: &ScanArgs<'_>,
        budget: &mut ResponseBudget,
    ) -> Result<Vec<kvrpcpb::KvPair>, StorageError> {
        let mut out = Vec::new();
        if a.limit == 0 {
            return Ok(out);
        }
        let now = self.now_secs();
        let (lower, upper) = stored_range(api, a.lower, a.upper);
        let mut it = snap.iter_cf(CfName::Default, Some(&lower), upper.as_deref())?;
        let mut valid = if a.reverse {
            it.seek_to_last()?
        } else {
            it.seek_to_first()?
        };
        while valid && out.len() < a.limit {
            match RawValue::decode(it.value()) {
                Ok(v) if v.is_expired(now) => {}
                Ok(v) => {
                    let value = if a.key_only { Vec::new() } else { v.value };
                    budget.charge(it.key().len() + value.len())?;
                    out.push(kvrpcpb::KvPair {
                        error: None,
                        key: user_key(api, it.key())?,
                        value,
                    });
                }
                // Under V1 long transactional values share the default CF;
                // they are not raw data, so a raw scan steps over them.
                Err(_) if api != ApiVersion::V2 && is_txn_value_key(it.key()) => {}
                Err(e) => return Err(e.into()),
            }
            valid = if a.reverse { it.prev()? } else { it.next()? };
        }
        Ok(out)
    }

    pub async fn raw_get(
        &self,
        req: kvrpcpb::RawGetRequest,
    ) -> Result<kvrpcpb::RawGetResponse, StorageError> {
        let (api, ectx) = raw_ctx(req.context.as_ref(), &req.cf)?;
        check_key(api, &req.key, true, false)?;
        let snap = self.inner.engine.async_snapshot(&ectx).await?;
        let mut resp = kvrpcpb::RawGetResponse::default();
        match self.raw_read(&snap, api, &req.key)? {
            Some(v) => resp.value = v.value,
            None => resp.not_found = true,
        }
        Ok(resp)
    }

    /// Only keys that exist come back.
    pub async fn raw_batch_get(
        &self,
        req: kvrpcpb::RawBatchGetRequest,
    ) -> Result<kvrpcpb::RawBatchGetResponse, StorageError> {
        let (api, ectx) = raw_ctx(req.context.as_ref(), &req.cf)?;
        for key in &req.keys {
            check_key(api, key, true, false)?;
        }
        let snap = self.inner.engine.async_snapshot(&ectx).await?;
        let mut resp = kvrpcpb::RawBatchGetResponse::default();
        for key in req.keys {
            if let Some(v) = self.raw_read(&snap, api, &key)? {
                resp.pairs.push(kvrpcpb::KvPair {
                    error: None,
                    key,
                    value: v.value,
                });
            }
        }
        Ok(resp)
    }

    pub async fn raw_get_key_ttl(
        &self,
        req: kvrpcpb::RawGetKeyTtlRequest,
    ) -> Result<kvrpcpb::RawGetKeyTtlResponse, StorageError> {
        let (api, ectx) = raw_ctx(req.context.as_ref(), &req.cf)?;
        check_key(api, &req.key, true, false)?;
        let snap = self.inner.engine.async_snapshot(&ectx).await?;
        let mut resp = kvrpcpb::RawGetKeyTtlResponse::default();
        match self.raw_read(&snap, api, &req.key)? {
            Some(v) => resp.ttl = v.ttl_left(self.now_secs()),
            None => resp.not_found = true,
        }
        Ok(resp)
    }

    /// `ttl` in seconds, 0 = no expiry.
    pub async fn raw_put(
        &self,
        req: kvrpcpb::RawPutRequest,
    ) -> Result<kvrpcpb::RawPutResponse, StorageError> {
        let (api, ectx) = raw_ctx(req.context.as_ref(), &req.cf)?;
        check_key(api, &req.key, true, false)?;
        self.check_value(&req.value)?;
        let key = stored_key(api, &req.key);
        let value = RawValue::with_ttl(req.value, req.ttl, self.now_secs()).encode();
        self.raw_write(
            &ectx,
            std::slice::from_ref(&key),
            vec![Modify::Put(CfName::Default, key.clone(), value)],
        )
        .await?;
        Ok(kvrpcpb::RawPutResponse::default())
    }

    /// `ttls`: one per pair, a single one for all, or empty (then the
    /// deprecated `ttl` applies to all). Atomic; a repeated key: last wins.
    pub async fn raw_batch_put(
        &self,
        req: kvrpcpb::RawBatchPutRequest,
    ) -> Result<kvrpcpb::RawBatchPutResponse, StorageError> {
        let (api, ectx) = raw_ctx(req.context.as_ref(), &req.cf)?;
        #[allow(deprecated)]
        let default_ttl = req.ttl;
        let ttl_of = |i: usize| -> Result<u64, StorageError> {
            match req.ttls.len() {
                0 => Ok(default_ttl),
                1 => Ok(req.ttls[0]),
                n if n == req.pairs.len() => Ok(req.ttls[i]),
                n => Err(invalid(format!("{n} ttls for {} pairs", req.pairs.len()))),
            }
        };
        let now = self.now_secs();
        let mut keys = Vec::with_capacity(req.pairs.len());
        let mut modifies = Vec::with_capacity(req.pairs.len());
        for (i, pair) in req.pairs.iter().enumerate() {
            check_key(api, &pair.key, true, false)?;
            self.check_value(&pair.value)?;
            let key = stored_key(api, &pair.key);
            let value = RawValue::with_ttl(pair.value.clone(), ttl_of(i)?, now).encode();
            keys.push(key.clone());
            modifies.push(Modify::Put(CfName::Default, key, value));
        }
        if !modifies.is_empty() {
            let result = self.raw_write(&ectx, &keys, modifies).await;
            tracing::debug!(
                region_id = ectx.region_id,
                version = ectx.version,
                first = %keys[0].escape_ascii(),
                n = keys.len(),
                error = ?result.as_ref().err(),
                "raw batch put"
            );
            result?;
        }
        Ok(kvrpcpb::RawBatchPutResponse::default())
    }

    pub async fn raw_delete(
        &self,
        req: kvrpcpb::RawDeleteRequest,
    ) -> Result<kvrpcpb::RawDeleteResponse, StorageError> {
        let (api, ectx) = raw_ctx(req.context.as_ref(), &req.cf)?;
        check_key(api, &req.key, true, false)?;
        let key = stored_key(api, &req.key);
        self.raw_write(
            &ectx,
            std::slice::from_ref(&key),
            vec![Modify::Delete(CfName::Default, key.clone())],
        )
        .await?;
        Ok(kvrpcpb::RawDeleteResponse::default())
    }

    pub async fn raw_batch_delete(
        &self,
        req: kvrpcpb::RawBatchDeleteRequest,
    ) -> Result<kvrpcpb::RawBatchDeleteResponse, StorageError> {
        let (api, ectx) = raw_ctx(req.context.as_ref(), &req.cf)?;
        let mut keys = Vec::with_capacity(req.keys.len());
        for key in &req.keys {
            check_key(api, key, true, false)?;
            keys.push(stored_key(api, key));
        }
        let modifies: Vec<Modify> = keys
            .iter()
            .map(|k| Modify::Delete(CfName::Default, k.clone()))
            .collect();
        if !modifies.is_empty() {
            self.raw_write(&ectx, &keys, modifies).await?;
        }
        Ok(kvrpcpb::RawBatchDeleteResponse::default())
    }

    /// Deletes `[start_key, end_key)`; an empty end is unbounded (under V2: to
    /// the end of the raw key mode).
    pub async fn raw_delete_range(
        &self,
        req: kvrpcpb::RawDeleteRangeRequest,
    ) -> Result<kvrpcpb::RawDeleteRangeResponse, StorageError> {
        let (api, ectx) = raw_ctx(req.context.as_ref(), &req.cf)?;
        check_bound(api, &req.start_key, true)?;
        check_bound(api, &req.end_key, true)?;
        if !req.end_key.is_empty() && req.start_key >= req.end_key {
            return Err(invalid("start_key must be below end_key"));
        }
        let (lower, upper) = stored_range(api, &req.start_key, &req.end_key);
        let modify = Modify::DeleteRange(CfName::Default, lower, upper.unwrap_or_default());
        self.inner.engine.async_write(&ectx, vec![modify]).await?;
        Ok(kvrpcpb::RawDeleteRangeResponse::default())
    }

    /// Forward: `[start_key, end_key)`. Reverse (TiKV semantics): `start_key`
    /// is the exclusive upper bound, `end_key` the inclusive lower bound.
    /// Empty bounds are unbounded; `limit` 0 returns nothing.
    pub async fn raw_scan(
        &self,
        req: kvrpcpb::RawScanRequest,
    ) -> Result<kvrpcpb::RawScanResponse, StorageError> {
        let (api, ectx) = raw_ctx(req.context.as_ref(), &req.cf)?;
        check_bound(api, &req.start_key, true)?;
        check_bound(api, &req.end_key, true)?;
        let (lower, upper) = if req.reverse {
            (&req.end_key, &req.start_key)
        } else {
            (&req.start_key, &req.end_key)
        };
        let args = ScanArgs {
            lower,
            upper,
            reverse: req.reverse,
            limit: req.limit as usize,
            key_only: req.key_only,
        };
        let snap = self.inner.engine.async_snapshot(&ectx).await?;
        let kvs = self.raw_scan_snapshot(&snap, api, &args, &mut ResponseBudget::default())?;
        Ok(kvrpcpb::RawScanResponse {
            region_error: None,
            kvs,
        })
    }

    /// Each range scanned like `raw_scan`, at most `each_limit` pairs each.
    pub async fn raw_batch_scan(
        &self,
        req: kvrpcpb::RawBatchScanRequest,
    ) -> Result<kvrpcpb::RawBatchScanResponse, StorageError> {
        let (api, ectx) = raw_ctx(req.context.as_ref(), &req.cf)?;
        for r in &req.ranges {
            check_bound(api, &r.start_key, true)?;
            check_bound(api, &r.end_key, true)?;
        }
        let snap = self.inner.engine.async_snapshot(&ectx).await?;
        let mut kvs = Vec::new();
        // One budget for every range: ranges times each_limit is what the
        // response could hold.
        let mut budget = ResponseBudget::default();
        for r in &req.ranges {
            let (lower, upper) = if req.reverse {
                (&r.end_key, &r.start_key)
            } else {
                (&r.start_key, &r.end_key)
            };
            let args = ScanArgs {
                lower,
                upper,
                reverse: req.reverse,
                limit: req.each_limit as usize,
                key_only: req.key_only,
            };
            kvs.extend(self.raw_scan_snapshot(&snap, api, &args, &mut budget)?);
        }
        Ok(kvrpcpb::RawBatchScanResponse {
            region_error: None,
            kvs,
        })
    }

    /// Sets `key` to `value` iff its current value is `previous_value` (or it
    /// does not exist, with `previous_not_exist`). Always reports what was
    /// there before.
    pub async fn raw_compare_and_swap(
        &self,
        req: kvrpcpb::RawCasRequest,
    ) -> Result<kvrpcpb::RawCasResponse, StorageError> {
        let (api, ectx) = raw_ctx(req.context.as_ref(), &req.cf)?;
        check_key(api, &req.key, true, false)?;
        self.check_value(&req.value)?;
        let key = stored_key(api, &req.key);
        let latches = self.inner.latches.acquire([key.as_slice()]).await;
        let snap = self.inner.engine.async_snapshot(&ectx).await?;
        let previous = self.raw_read(&snap, api, &req.key)?;
        // Decided on this snapshot: valid only in the term it was taken in.
        let ectx = EngineContext {
            term: snap.term(),
            ..ectx
        };
        drop(snap);
        let succeed = match &previous {
            None => req.previous_not_exist,
            Some(v) => !req.previous_not_exist && v.value == req.previous_value,
        };
        let mut modifies = Vec::new();
        if succeed {
            let value = RawValue::with_ttl(req.value, req.ttl, self.now_secs()).encode();
            modifies.push(Modify::Put(CfName::Default, key, value));
        }
        self.write_then_release(&ectx, modifies, latches, Vec::new())
            .await?;
        let mut resp = kvrpcpb::RawCasResponse {
            succeed,
            ..Default::default()
        };
        match previous {
            Some(v) => resp.previous_value = v.value,
            None => resp.previous_not_exist = true,
        }
        Ok(resp)
    }
}
