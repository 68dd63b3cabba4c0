//! Pessimistic transactions: KvPessimisticLock (with lock waiting and
//! deadlock detection) and KvPessimisticRollback.

use std::collections::HashSet;
use std::time::Duration;

use shale_proto::kvrpcpb::{
    self, write_conflict::Reason, Assertion, Op, PessimisticLockKeyResultType,
    PessimisticLockWakeUpMode,
};
use tokio::time::Instant;

use crate::engine::{Engine, Snapshot};
use crate::storage::errors::{invalid, KeyErr, StorageError, TxnError, TxnResult};
use crate::storage::lock_manager::Waiter;
use crate::storage::mvcc::{Lock, LockType, MvccReader, MvccTxn, WriteType};
use crate::storage::{api_version, check_key, engine_context, Storage};

use super::sorted_unique;

struct LockProps {
    start_ts: u64,
    primary: Vec<u8>,
    ttl: u64,
    for_update_ts: u64,
    min_commit_ts: u64,
    return_values: bool,
    check_existence: bool,
    lock_only_if_exists: bool,
    /// WakeUpModeForceLock: a newer write does not fail the key; the lock is
    /// taken anyway and reported as locked-with-conflict.
    force_lock: bool,
}

/// What acquiring one key found.
struct KeyLocked {
    value: Option<Vec<u8>>,
    conflict_ts: Option<u64>,
}

enum Outcome {
    Done(Vec<KeyLocked>),
    Wait { waiter: Waiter, error: KeyErr },
}

impl<E: Engine> Storage<E> {
    pub async fn kv_pessimistic_lock(
        &self,
        req: kvrpcpb::PessimisticLockRequest,
    ) -> Result<kvrpcpb::PessimisticLockResponse, StorageError> {
        let ctx = req.context.clone().unwrap_or_default();
        let api = api_version(&ctx)?;
        check_key(api, &req.primary_lock, false, false)?;
        if req.start_version == 0 || req.for_update_ts == 0 {
            return Err(invalid("start_version and for_update_ts must not be 0"));
        }
        if req.lock_only_if_exists && !req.return_values {
            return Err(invalid("lock_only_if_exists requires return_values"));
        }
        let mut seen = HashSet::new();
        let mut muts = Vec::with_capacity(req.mutations.len());
        for m in &req.mutations {
            check_key(api, &m.key, false, false)?;
            if m.op != Op::PessimisticLock as i32 {
                return Err(invalid(
                    "pessimistic lock mutations must have op PessimisticLock",
                ));
            }
            if !seen.insert(m.key.clone()) {
                return Err(invalid("duplicate key in pessimistic lock mutations"));
            }
            muts.push((m.key.clone(), m.assertion == Assertion::NotExist as i32));
        }
        let props = LockProps {
            start_ts: req.start_version,
            primary: req.primary_lock.clone(),
            ttl: req.lock_ttl,
            for_update_ts: req.for_update_ts,
            min_commit_ts: req.min_commit_ts,
            return_values: req.return_values,
            check_existence: req.check_existence,
            lock_only_if_exists: req.lock_only_if_exists,
            force_lock: req.wake_up_mode == PessimisticLockWakeUpMode::WakeUpModeForceLock as i32,
        };
        // Acquiring a lock reads the latest data.
        if let Err(e) = self.inner.cm.update_max_ts(req.for_update_ts) {
            return Ok(kvrpcpb::PessimisticLockResponse {
                errors: vec![e.to_pb()],
                ..Default::default()
            });
        }
        let timeout = self.lock_wait_timeout(req.wait_timeout);
        let deadline = timeout.map(|t| Instant::now() + t);
        let keys: Vec<Vec<u8>> = muts.iter().map(|(k, _)| k.clone()).collect();
        let ectx = engine_context(Some(&ctx));
        loop {
            let may_wait = deadline.is_some_and(|d| Instant::now() < d);
            let lm = self.lock_manager().clone();
            let (props, muts) = (&props, &muts);
            let out = self
                .run_write(&ectx, &keys, |reader, txn| {
                    let mut results = Vec::with_capacity(muts.len());
                    for (key, should_not_exist) in muts {
                        match acquire_key(reader, txn, props, key, *should_not_exist) {
                            Ok(r) => results.push(r),
                            Err(TxnError::Key(KeyErr::Locked(info))) if may_wait => {
                                txn.clear();
                                let lock_ts = info.lock_version;
                                return match lm.wait_for(
                                    props.start_ts,
                                    lock_ts,
                                    key,
                                    !req.is_first_lock,
                                ) {
                                    Ok(waiter) => Ok(Outcome::Wait {
                                        waiter,
                                        error: KeyErr::Locked(info),
                                    }),
                                    Err(hash) => Err(KeyErr::Deadlock {
                                        start_ts: props.start_ts,
                                        lock_ts,
                                        lock_key: key.clone(),
                                        deadlock_key_hash: hash,
                                    }
                                    .into()),
                                };
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    Ok(Outcome::Done(results))
                })
                .await?;
            let result = match out {
                Ok(Outcome::Done(results)) => Ok(results),
                Ok(Outcome::Wait { mut waiter, error }) => {
                    let Some(deadline) = deadline else {
                        return Ok(lock_response(props, Err(error), muts.len()));
                    };
                    match tokio::time::timeout_at(deadline, waiter.wait()).await {
                        // The lock was released: try again.
                        Ok(()) => continue,
                        Err(_) => Err(error),
                    }
                }
                Err(e) => Err(e),
            };
            return Ok(lock_response(props, result, muts.len()));
        }
    }

    /// Removes the transaction's pessimistic locks (with `for_update_ts` not
    /// above the request's) on `keys`, or on every key when `keys` is empty.
    pub async fn kv_pessimistic_rollback(
        &self,
        req: kvrpcpb::PessimisticRollbackRequest,
    ) -> Result<kvrpcpb::PessimisticRollbackResponse, StorageError> {
        let ctx = req.context.unwrap_or_default();
        let api = api_version(&ctx)?;
        for key in &req.keys {
            check_key(api, key, false, false)?;
        }
        let (start_ts, for_update_ts) = (req.start_version, req.for_update_ts);
        let ectx = engine_context(Some(&ctx));
        let mut resp = kvrpcpb::PessimisticRollbackResponse::default();
        if !req.keys.is_empty() {
            let keys = sorted_unique(req.keys);
            let out = self
                .pessimistic_rollback_keys(&ectx, &keys, start_ts, for_update_ts)
                .await?;
            resp.errors = out.err().map(|e| e.to_pb()).into_iter().collect();
            return Ok(resp);
        }
        // Without keys: every pessimistic lock of the transaction in the
        // Region, a batch at a time.
        let batch = self.inner.config.batch_keys.max(1);
        let mut start = Vec::new();
        loop {
            let snap = self.inner.engine.async_snapshot(&ectx).await?;
            let (locks, has_more) = MvccReader::new(&snap).scan_locks(
                &start,
                b"",
                |l| l.ts == start_ts && l.is_pessimistic_lock(),
                batch,
            )?;
            drop(snap);
            let Some((last, _)) = locks.last() else {
                break;
            };
            start = last.clone();
            start.push(0);
            let keys: Vec<Vec<u8>> = locks.into_iter().map(|(k, _)| k).collect();
            if let Err(e) = self
                .pessimistic_rollback_keys(&ectx, &keys, start_ts, for_update_ts)
                .await?
            {
                resp.errors = vec![e.to_pb()];
                return Ok(resp);
            }
            if !has_more {
                break;
            }
        }
        Ok(resp)
    }

    /// Removes the transaction's pessimistic locks (not newer than
    /// `for_update_ts`) on `keys`.
    async fn pessimistic_rollback_keys(
        &self,
        ectx: &crate::engine::EngineContext,
        keys: &[Vec<u8>],
        start_ts: u64,
        for_update_ts: u64,
    ) -> Result<Result<(), KeyErr>, StorageError> {
        self.run_write(ectx, keys, |reader, txn| {
            for key in keys {
                if let Some(lock) = reader.load_lock(key)? {
                    if lock.is_pessimistic_lock()
                        && lock.ts == start_ts
                        && lock.for_update_ts <= for_update_ts
                    {
                        txn.unlock_key(key);
                    }
                }
            }
            Ok(())
        })
        .await
    }

    /// `wait_timeout` of a request: < 0 no wait, 0 the default, else capped.
    fn lock_wait_timeout(&self, wait_timeout: i64) -> Option<Duration> {
        let cfg = &self.inner.config;
        match wait_timeout {
            t if t < 0 => None,
            0 => Some(Duration::from_millis(cfg.lock_wait_timeout_ms)),
            t => Some(Duration::from_millis(
                (t as u64).min(cfg.max_lock_wait_timeout_ms),
            )),
        }
    }
}

fn acquire_key<S: Snapshot>(
    reader: &MvccReader<'_, S>,
    txn: &mut MvccTxn,
    p: &LockProps,
    key: &[u8],
    should_not_exist: bool,
) -> TxnResult<KeyLocked> {
    let start_ts = p.start_ts;
    let need_value =
        p.return_values || p.check_existence || p.lock_only_if_exists || should_not_exist;
    if let Some(mut lock) = reader.load_lock(key)? {
        if lock.ts != start_ts {
            return Err(KeyErr::Locked(Box::new(lock.to_lock_info(key))).into());
        }
        if !lock.is_pessimistic_lock() {
            // Already prewritten by this transaction.
            return Err(KeyErr::LockTypeNotMatch {
                start_ts,
                key: key.to_vec(),
                pessimistic: false,
            }
            .into());
        }
        // Ours already: refresh it (idempotent).
        let value = if need_value {
            reader.get(key, u64::MAX)?
        } else {
            None
        };
        if should_not_exist && value.is_some() {
            return Err(KeyErr::AlreadyExist { key: key.to_vec() }.into());
        }
        if lock.for_update_ts < p.for_update_ts
            || lock.ttl < p.ttl
            || lock.min_commit_ts < p.min_commit_ts
        {
            lock.for_update_ts = lock.for_update_ts.max(p.for_update_ts);
            lock.ttl = lock.ttl.max(p.ttl);
            lock.min_commit_ts = lock.min_commit_ts.max(p.min_commit_ts);
            txn.put_lock(key, &lock);
        }
        return Ok(KeyLocked {
            value,
            conflict_ts: None,
        });
    }

    let mut conflict_ts = None;
    let mut value = None;
    if let Some((commit_ts, write)) = reader.seek_write(key, u64::MAX)? {
        if commit_ts > p.for_update_ts {
            if !p.force_lock {
                return Err(KeyErr::WriteConflict {
                    start_ts,
                    conflict_start_ts: write.start_ts,
                    conflict_commit_ts: commit_ts,
                    key: key.to_vec(),
                    primary: p.primary.clone(),
                    reason: Reason::PessimisticRetry,
                }
                .into());
            }
            conflict_ts = Some(commit_ts);
        }
        let rolled_back = KeyErr::PessimisticLockRolledBack {
            start_ts,
            key: key.to_vec(),
        };
        if commit_ts == start_ts && write.marks_rollback() {
            return Err(rolled_back.into());
        }
        if commit_ts > start_ts {
            if let Some((older_ts, older)) = reader.seek_write(key, start_ts)? {
                if older_ts == start_ts && older.marks_rollback() {
                    return Err(rolled_back.into());
                }
            }
        }
        if need_value {
            value = match write.write_type {
                WriteType::Put => Some(reader.load_data(key, write)?),
                WriteType::Delete => None,
                WriteType::Lock | WriteType::Rollback => {
                    reader.get(key, commit_ts.saturating_sub(1))?
                }
            };
        }
        if should_not_exist && value.is_some() {
            return Err(KeyErr::AlreadyExist { key: key.to_vec() }.into());
        }
    }
    if p.lock_only_if_exists && value.is_none() {
        return Ok(KeyLocked { value, conflict_ts });
    }
    let mut lock = Lock::new(LockType::Pessimistic, p.primary.clone(), start_ts, p.ttl);
    lock.for_update_ts = conflict_ts.map_or(p.for_update_ts, |ts| ts.max(p.for_update_ts));
    lock.min_commit_ts = p.min_commit_ts;
    txn.put_lock(key, &lock);
    Ok(KeyLocked { value, conflict_ts })
}

/// Fills the response the way TiKV does for the request's wake-up mode:
/// legacy mode uses `values`/`not_founds`, force-lock mode `results`.
fn lock_response(
    p: &LockProps,
    result: Result<Vec<KeyLocked>, KeyErr>,
    n: usize,
) -> kvrpcpb::PessimisticLockResponse {
    let mut resp = kvrpcpb::PessimisticLockResponse::default();
    let results = match result {
        Ok(r) => r,
        Err(e) => {
            resp.errors = vec![e.to_pb()];
            if p.force_lock {
                resp.results = (0..n)
                    .map(|_| kvrpcpb::PessimisticLockKeyResult {
                        r#type: PessimisticLockKeyResultType::LockResultFailed as i32,
                        ..Default::default()
                    })
                    .collect();
            }
            return resp;
        }
    };
    if p.force_lock {
        resp.results = results
            .into_iter()
            .map(|r| kvrpcpb::PessimisticLockKeyResult {
                r#type: if r.conflict_ts.is_some() {
                    PessimisticLockKeyResultType::LockResultLockedWithConflict
                } else {
                    PessimisticLockKeyResultType::LockResultNormal
                } as i32,
                existence: r.value.is_some(),
                value: if p.return_values {
                    r.value.unwrap_or_default()
                } else {
                    Vec::new()
                },
                locked_with_conflict_ts: r.conflict_ts.unwrap_or(0),
                skip_resolving_lock: false,
            })
            .collect();
    } else if p.return_values {
        resp.not_founds = results.iter().map(|r| r.value.is_none()).collect();
        resp.values = results
            .into_iter()
            .map(|r| r.value.unwrap_or_default())
            .collect();
    } else if p.check_existence {
        resp.not_founds = results.iter().map(|r| r.value.is_none()).collect();
    }
    resp
}
