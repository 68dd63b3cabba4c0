//! Working out a transaction's fate: KvCheckTxnStatus,
//! KvCheckSecondaryLocks, KvTxnHeartBeat.

use shale_proto::kvrpcpb::{self, Action};

use crate::engine::{Engine, Snapshot};
use crate::storage::errors::{KeyErr, StorageError, TxnResult};
use crate::storage::mvcc::{LockType, MvccReader, MvccTxn};
use crate::storage::{api_version, check_key, engine_context, Storage};

use super::actions::{
    check_txn_status_missing_lock, lock_expired, put_rollback, rollback_lock, MissingLockAction,
    TxnStatus,
};
use super::sorted_unique;

struct CheckTxnStatus {
    primary: Vec<u8>,
    lock_ts: u64,
    caller_start_ts: u64,
    current_ts: u64,
    rollback_if_not_exist: bool,
    force_sync_commit: bool,
    resolving_pessimistic_lock: bool,
    verify_is_primary: bool,
}

impl<E: Engine> Storage<E> {
    pub async fn kv_check_txn_status(
        &self,
        req: kvrpcpb::CheckTxnStatusRequest,
    ) -> Result<kvrpcpb::CheckTxnStatusResponse, StorageError> {
        let ctx = req.context.unwrap_or_default();
        let api = api_version(&ctx)?;
        check_key(api, &req.primary_key, false, false)?;
        // The caller is a reader at caller_start_ts: async-commit
        // transactions must commit above it.
        if req.caller_start_ts != 0 {
            if let Err(e) = self.inner.cm.update_max_ts(req.caller_start_ts) {
                return Ok(kvrpcpb::CheckTxnStatusResponse {
                    error: Some(e.to_pb()),
                    ..Default::default()
                });
            }
        }
        let cmd = CheckTxnStatus {
            primary: req.primary_key,
            lock_ts: req.lock_ts,
            caller_start_ts: req.caller_start_ts,
            current_ts: req.current_ts,
            rollback_if_not_exist: req.rollback_if_not_exist,
            force_sync_commit: req.force_sync_commit,
            resolving_pessimistic_lock: req.resolving_pessimistic_lock,
            verify_is_primary: req.verify_is_primary,
        };
        let keys = [cmd.primary.clone()];
        let out = self
            .run_write(&engine_context(Some(&ctx)), &keys, |reader, txn| {
                check_txn_status(reader, txn, &cmd)
            })
            .await?;
        let mut resp = kvrpcpb::CheckTxnStatusResponse::default();
        let status = match out {
            Ok(s) => s,
            Err(e) => {
                resp.error = Some(e.to_pb());
                return Ok(resp);
            }
        };
        let action = match status {
            TxnStatus::RolledBack => Action::NoAction,
            TxnStatus::TtlExpire => Action::TtlExpireRollback,
            TxnStatus::LockNotExist => Action::LockNotExistRollback,
            TxnStatus::PessimisticRollBack => Action::TtlExpirePessimisticRollback,
            TxnStatus::LockNotExistDoNothing => Action::LockNotExistDoNothing,
            TxnStatus::Committed { commit_ts } => {
                resp.commit_version = commit_ts;
                Action::NoAction
            }
            TxnStatus::Uncommitted {
                lock,
                min_commit_ts_pushed,
            } => {
                resp.lock_ttl = lock.ttl;
                resp.lock_info = Some(lock.to_lock_info(&lock.primary));
                if min_commit_ts_pushed {
                    Action::MinCommitTsPushed
                } else {
                    Action::NoAction
                }
            }
        };
        resp.action = action as i32;
        Ok(resp)
    }

    /// For async commit resolution: per key, the transaction's lock (if it is
    /// still prewritten) or its commit_ts. A key with neither is rolled back
    /// now (a rollback record is written) and the whole answer becomes
    /// "rolled back": no locks and `commit_ts` 0.
    pub async fn kv_check_secondary_locks(
        &self,
        req: kvrpcpb::CheckSecondaryLocksRequest,
    ) -> Result<kvrpcpb::CheckSecondaryLocksResponse, StorageError> {
        let ctx = req.context.unwrap_or_default();
        let api = api_version(&ctx)?;
        for key in &req.keys {
            check_key(api, key, false, false)?;
        }
        let start_ts = req.start_version;
        let keys = sorted_unique(req.keys);
        let out = self
            .run_write(&engine_context(Some(&ctx)), &keys, |reader, txn| {
                check_secondary_locks(reader, txn, &keys, start_ts)
            })
            .await?;
        let mut resp = kvrpcpb::CheckSecondaryLocksResponse::default();
        match out {
            Ok((locks, commit_ts)) => {
                resp.locks = locks;
                resp.commit_ts = commit_ts;
            }
            Err(e) => resp.error = Some(e.to_pb()),
        }
        Ok(resp)
    }

    /// Extends the primary lock's TTL to `advise_lock_ttl` (never shortens).
    pub async fn kv_txn_heart_beat(
        &self,
        req: kvrpcpb::TxnHeartBeatRequest,
    ) -> Result<kvrpcpb::TxnHeartBeatResponse, StorageError> {
        let ctx = req.context.unwrap_or_default();
        let api = api_version(&ctx)?;
        check_key(api, &req.primary_lock, false, false)?;
        let (start_ts, advise_ttl) = (req.start_version, req.advise_lock_ttl);
        let key = req.primary_lock;
        let out = self
            .run_write(
                &engine_context(Some(&ctx)),
                std::slice::from_ref(&key),
                |reader, txn| match reader.load_lock(&key)? {
                    Some(mut lock) if lock.ts == start_ts => {
                        if lock.ttl < advise_ttl {
                            lock.ttl = advise_ttl;
                            txn.put_lock(&key, &lock);
                        }
                        Ok(lock.ttl)
                    }
                    _ => Err(KeyErr::TxnNotFound {
                        start_ts,
                        key: key.clone(),
                    }
                    .into()),
                },
            )
            .await?;
        let mut resp = kvrpcpb::TxnHeartBeatResponse::default();
        match out {
            Ok(ttl) => resp.lock_ttl = ttl,
            Err(e) => resp.error = Some(e.to_pb()),
        }
        Ok(resp)
    }
}

fn check_txn_status<S: Snapshot>(
    reader: &MvccReader<'_, S>,
    txn: &mut MvccTxn,
    cmd: &CheckTxnStatus,
) -> TxnResult<TxnStatus> {
    let key = cmd.primary.as_slice();
    let mut lock = match reader.load_lock(key)? {
        Some(lock) if lock.ts == cmd.lock_ts => lock,
        other => {
            let action = if cmd.rollback_if_not_exist {
                MissingLockAction::Rollback
            } else {
                MissingLockAction::ReturnError
            };
            return check_txn_status_missing_lock(
                reader,
                txn,
                key,
                cmd.lock_ts,
                other,
                action,
                cmd.resolving_pessimistic_lock,
            );
        }
    };
    if cmd.verify_is_primary && lock.primary != key {
        return Err(KeyErr::PrimaryMismatch(Box::new(lock.to_lock_info(key))).into());
    }
    // Async-commit locks are never rolled back or pushed here: the client
    // decides by checking the secondaries, then resolves.
    if lock.use_async_commit && !cmd.force_sync_commit {
        return Ok(TxnStatus::Uncommitted {
            lock,
            min_commit_ts_pushed: false,
        });
    }
    if lock_expired(&lock, cmd.current_ts) {
        if cmd.resolving_pessimistic_lock && lock.lock_type == LockType::Pessimistic {
            txn.unlock_key(key);
            return Ok(TxnStatus::PessimisticRollBack);
        }
        rollback_lock(reader, txn, key, &lock)?;
        return Ok(TxnStatus::TtlExpire);
    }
    // Push min_commit_ts above the caller so its read is not blocked (only
    // for locks that carry one; 0 means the client does not expect pushes).
    if lock.min_commit_ts != 0
        && cmd.caller_start_ts != u64::MAX
        && cmd.caller_start_ts >= lock.min_commit_ts
    {
        lock.min_commit_ts = (cmd.caller_start_ts + 1).max(cmd.current_ts);
        txn.put_lock(key, &lock);
    }
    let pushed = (cmd.caller_start_ts != 0 && lock.min_commit_ts > cmd.caller_start_ts)
        || cmd.caller_start_ts == u64::MAX;
    Ok(TxnStatus::Uncommitted {
        lock,
        min_commit_ts_pushed: pushed,
    })
}

fn check_secondary_locks<S: Snapshot>(
    reader: &MvccReader<'_, S>,
    txn: &mut MvccTxn,
    keys: &[Vec<u8>],
    start_ts: u64,
) -> TxnResult<(Vec<kvrpcpb::LockInfo>, u64)> {
    let mut locks = Vec::new();
    let mut commit_ts = 0;
    for key in keys {
        let lock = reader.load_lock(key)?;
        match lock {
            Some(lock) if lock.ts == start_ts && !lock.is_pessimistic_lock() => {
                locks.push(lock.to_lock_info(key));
                continue;
            }
            Some(lock) if lock.ts == start_ts => {
                // A pessimistic lock was never prewritten: the transaction
                // cannot have committed with async commit. Roll it back.
                txn.unlock_key(key);
                let record = reader.get_txn_commit_record(key, start_ts)?;
                if let crate::storage::mvcc::TxnCommitRecord::None { overlapped_write } = record {
                    put_rollback(txn, key, start_ts, overlapped_write);
                }
                return Ok((Vec::new(), 0));
            }
            other => {
                let status = check_txn_status_missing_lock(
                    reader,
                    txn,
                    key,
                    start_ts,
                    other,
                    MissingLockAction::Rollback,
                    false,
                )?;
                match status {
                    TxnStatus::Committed { commit_ts: ts } => commit_ts = commit_ts.max(ts),
                    _ => return Ok((Vec::new(), 0)),
                }
            }
        }
    }
    Ok((locks, commit_ts))
}
