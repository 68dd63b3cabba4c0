//! Snapshot reads: KvGet, KvBatchGet, KvScan, KvScanLock.

use shale_proto::kvrpcpb;

use crate::engine::Engine;
use crate::storage::errors::{split, StorageError};
use crate::storage::mvcc::scanner::{scan, ScanSpec};
use crate::storage::mvcc::MvccReader;
use crate::storage::{api_version, check_bound, check_key, engine_context, read_options, Storage};

impl<E: Engine> Storage<E> {
    pub async fn kv_get(
        &self,
        req: kvrpcpb::GetRequest,
    ) -> Result<kvrpcpb::GetResponse, StorageError> {
        let ctx = req.context.unwrap_or_default();
        let api = api_version(&ctx)?;
        check_key(api, &req.key, false, true)?;
        let opts = read_options(&ctx, req.version);
        let mut resp = kvrpcpb::GetResponse::default();
        if let Err(e) = self.inner.cm.read_key_check(&req.key, &opts) {
            resp.error = Some(e.to_pb());
            return Ok(resp);
        }
        let snap = self
            .inner
            .engine
            .async_snapshot(&engine_context(Some(&ctx)))
            .await?;
        match split(MvccReader::new(&snap).point_get(&req.key, &opts))? {
            Ok(Some(value)) => resp.value = value,
            Ok(None) => resp.not_found = true,
            Err(e) => resp.error = Some(e.to_pb()),
        }
        Ok(resp)
    }

    /// Found keys come back as pairs; a locked key comes back as a pair with
    /// only its error set (clients read per-pair errors); missing keys are
    /// left out.
    pub async fn kv_batch_get(
        &self,
        req: kvrpcpb::BatchGetRequest,
    ) -> Result<kvrpcpb::BatchGetResponse, StorageError> {
        let ctx = req.context.unwrap_or_default();
        let api = api_version(&ctx)?;
        for key in &req.keys {
            check_key(api, key, false, true)?;
        }
        let opts = read_options(&ctx, req.version);
        let mut resp = kvrpcpb::BatchGetResponse::default();
        let mut memory_locked = vec![None; req.keys.len()];
        for (i, key) in req.keys.iter().enumerate() {
            memory_locked[i] = self.inner.cm.read_key_check(key, &opts).err();
        }
        let snap = self
            .inner
            .engine
            .async_snapshot(&engine_context(Some(&ctx)))
            .await?;
        let reader = MvccReader::new(&snap);
        for (key, mem_err) in req.keys.into_iter().zip(memory_locked) {
            let result = match mem_err {
                Some(e) => Err(e),
                None => split(reader.point_get(&key, &opts))?,
            };
            match result {
                Ok(Some(value)) => resp.pairs.push(kvrpcpb::KvPair {
                    error: None,
                    key,
                    value,
                }),
                Ok(None) => {}
                Err(e) => resp.pairs.push(kvrpcpb::KvPair {
                    error: Some(e.to_pb()),
                    key,
                    value: vec![],
                }),
            }
        }
        Ok(resp)
    }

    /// Forward: `[start_key, end_key)`. Reverse (TiKV semantics): `end_key` is
    /// the inclusive lower bound and `start_key` the exclusive upper bound.
    /// Empty bounds are unbounded; `limit` 0 returns nothing.
    pub async fn kv_scan(
        &self,
        req: kvrpcpb::ScanRequest,
    ) -> Result<kvrpcpb::ScanResponse, StorageError> {
        let ctx = req.context.unwrap_or_default();
        let api = api_version(&ctx)?;
        check_bound(api, &req.start_key, false)?;
        check_bound(api, &req.end_key, false)?;
        let (lower, upper) = if req.reverse {
            (&req.end_key, &req.start_key)
        } else {
            (&req.start_key, &req.end_key)
        };
        let opts = read_options(&ctx, req.version);
        let mut resp = kvrpcpb::ScanResponse::default();
        if let Err(e) = self.inner.cm.read_range_check(lower, upper, &opts) {
            resp.error = Some(e.to_pb());
            return Ok(resp);
        }
        let snap = self
            .inner
            .engine
            .async_snapshot(&engine_context(Some(&ctx)))
            .await?;
        let spec = ScanSpec {
            lower,
            upper,
            reverse: req.reverse,
            limit: req.limit as usize,
            key_only: req.key_only,
            read: &opts,
        };
        for item in scan(&snap, &spec)? {
            resp.pairs.push(match item {
                Ok((key, value)) => kvrpcpb::KvPair {
                    error: None,
                    key,
                    value,
                },
                Err(e) => {
                    let key = e_key(&e);
                    kvrpcpb::KvPair {
                        error: Some(e.to_pb()),
                        key,
                        value: vec![],
                    }
                }
            });
        }
        Ok(resp)
    }

    /// Locks with `start_ts <= max_version` in `[start_key, end_key)`, at
    /// most `limit` (0 = all).
    pub async fn kv_scan_lock(
        &self,
        req: kvrpcpb::ScanLockRequest,
    ) -> Result<kvrpcpb::ScanLockResponse, StorageError> {
        let ctx = req.context.unwrap_or_default();
        let api = api_version(&ctx)?;
        check_bound(api, &req.start_key, false)?;
        check_bound(api, &req.end_key, false)?;
        let mut resp = kvrpcpb::ScanLockResponse::default();
        let opts = crate::storage::mvcc::ReadOptions {
            ts: req.max_version,
            check_locks: true,
            ..Default::default()
        };
        if let Err(e) = self
            .inner
            .cm
            .read_range_check(&req.start_key, &req.end_key, &opts)
        {
            resp.error = Some(e.to_pb());
            return Ok(resp);
        }
        let snap = self
            .inner
            .engine
            .async_snapshot(&engine_context(Some(&ctx)))
            .await?;
        let max_version = req.max_version;
        let (locks, _) = MvccReader::new(&snap).scan_locks(
            &req.start_key,
            &req.end_key,
            |lock| lock.ts <= max_version,
            req.limit as usize,
        )?;
        resp.locks = locks
            .into_iter()
            .map(|(key, lock)| lock.to_lock_info(&key))
            .collect();
        Ok(resp)
    }
}

fn e_key(e: &crate::storage::errors::KeyErr) -> Vec<u8> {
    match e {
        crate::storage::errors::KeyErr::Locked(info) => info.key.clone(),
        _ => Vec::new(),
    }
}
