//! KvResolveLock: commits or rolls back every lock of the given
//! transaction(s), found by scanning the lock CF (or on the given keys).

use std::collections::HashMap;

use shale_proto::kvrpcpb;

use crate::engine::{Engine, Snapshot};
use crate::storage::errors::{invalid, KeyErr, StorageError, TxnError, TxnResult};
use crate::storage::mvcc::{MvccReader, MvccTxn};
use crate::storage::{api_version, check_key, engine_context, Storage};

use super::actions::{cleanup_key, commit_key};
use super::sorted_unique;

impl<E: Engine> Storage<E> {
    /// With `txn_infos`, resolves each listed transaction (`status` is its
    /// commit_ts, 0 = roll back); otherwise `start_version` with
    /// `commit_version`. With `keys`, only those keys are resolved ("lite").
    pub async fn kv_resolve_lock(
        &self,
        req: kvrpcpb::ResolveLockRequest,
    ) -> Result<kvrpcpb::ResolveLockResponse, StorageError> {
        let ctx = req.context.unwrap_or_default();
        let api = api_version(&ctx)?;
        for key in &req.keys {
            check_key(api, key, false, false)?;
        }
        let ectx = engine_context(Some(&ctx));
        let mut resp = kvrpcpb::ResolveLockResponse::default();

        if !req.keys.is_empty() {
            let (start_ts, commit_ts) = (req.start_version, req.commit_version);
            if start_ts == 0 {
                return Err(invalid("start_version must not be 0"));
            }
            let keys = sorted_unique(req.keys);
            let out = self
                .run_write(&ectx, &keys, |reader, txn| {
                    for key in &keys {
                        if commit_ts == 0 {
                            cleanup_key(reader, txn, key, start_ts, 0)?;
                        } else {
                            commit_key(reader, txn, key, start_ts, commit_ts)?;
                        }
                    }
                    Ok(())
                })
                .await?;
            resp.error = out.err().map(|e| e.to_pb());
            return Ok(resp);
        }

        let txns: HashMap<u64, u64> = if req.txn_infos.is_empty() {
            if req.start_version == 0 {
                return Err(invalid("start_version must not be 0"));
            }
            HashMap::from([(req.start_version, req.commit_version)])
        } else {
            req.txn_infos.iter().map(|t| (t.txn, t.status)).collect()
        };
        let batch = self.inner.config.batch_keys.max(1);
        let mut start = Vec::new();
        loop {
            let snap = self.inner.engine.async_snapshot(&ectx).await?;
            let (locks, has_more) = MvccReader::new(&snap).scan_locks(
                &start,
                b"",
                |l| txns.contains_key(&l.ts),
                batch,
            )?;
            drop(snap);
            let Some((last, _)) = locks.last() else { break };
            start = last.clone();
            start.push(0);
            let keys: Vec<Vec<u8>> = locks.into_iter().map(|(k, _)| k).collect();
            let out = self
                .run_write(&ectx, &keys, |reader, txn| {
                    for key in &keys {
                        resolve_key(reader, txn, key, &txns)?;
                    }
                    Ok(())
                })
                .await?;
            if let Err(e) = out {
                resp.error = Some(e.to_pb());
                return Ok(resp);
            }
            if !has_more {
                break;
            }
        }
        Ok(resp)
    }
}

/// Resolves the lock on `key` if it belongs to one of `txns` (re-read under
/// the latch: it may have been resolved meanwhile).
fn resolve_key<S: Snapshot>(
    reader: &MvccReader<'_, S>,
    txn: &mut MvccTxn,
    key: &[u8],
    txns: &HashMap<u64, u64>,
) -> TxnResult<()> {
    let Some(lock) = reader.load_lock(key)? else {
        return Ok(());
    };
    let Some(&commit_ts) = txns.get(&lock.ts) else {
        return Ok(());
    };
    if commit_ts == 0 {
        return cleanup_key(reader, txn, key, lock.ts, 0);
    }
    if commit_ts <= lock.ts {
        return Err(KeyErr::InvalidTxnTso {
            start_ts: lock.ts,
            commit_ts,
        }
        .into());
    }
    match commit_key(reader, txn, key, lock.ts, commit_ts) {
        Err(TxnError::Key(KeyErr::TxnLockNotFound { .. })) if lock.is_pessimistic_lock() => Ok(()),
        other => other,
    }
}
