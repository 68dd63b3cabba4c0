//! KvPrewrite: the first phase of Percolator's two-phase commit, including
//! pessimistic prewrite, async commit and 1PC.

use std::collections::HashSet;

use shale_proto::kvrpcpb::{
    self, prewrite_request::PessimisticAction, write_conflict::Reason, Assertion, AssertionLevel,
    Op,
};

use crate::engine::{Engine, Snapshot};
use crate::storage::concurrency_manager::ConcurrencyManager;
use crate::storage::errors::{invalid, KeyErr, StorageError, TxnError, TxnResult};
use crate::storage::mvcc::{
    Lock, LockType, MvccReader, MvccTxn, Write, WriteType, SHORT_VALUE_MAX_LEN,
};
use crate::storage::{api_version, check_key, engine_context, Storage};

use super::actions::committed_ts;

/// Transaction-wide properties of one prewrite request.
struct Props {
    start_ts: u64,
    primary: Vec<u8>,
    lock_ttl: u64,
    txn_size: u64,
    /// Non-zero for pessimistic transactions.
    for_update_ts: u64,
    min_commit_ts: u64,
    max_commit_ts: u64,
    skip_constraint_check: bool,
    use_async_commit: bool,
    try_one_pc: bool,
    secondaries: Vec<Vec<u8>>,
    assertion_level: AssertionLevel,
}

impl Props {
    fn is_pessimistic(&self) -> bool {
        self.for_update_ts != 0
    }

    fn need_min_commit_ts(&self) -> bool {
        self.use_async_commit || self.try_one_pc
    }
}

struct KeyMutation {
    key: Vec<u8>,
    op: Op,
    value: Vec<u8>,
    action: PessimisticAction,
    expected_for_update_ts: Option<u64>,
    /// What the client asserts about the key's current value.
    assertion: Assertion,
}

enum KeyOutcome {
    /// Nothing to write (a duplicate prewrite, or CheckNotExists).
    Done { min_commit_ts: u64 },
    /// A lock to write (or, with 1PC, to commit right away).
    Lock {
        lock: Lock,
        had_pessimistic_lock: bool,
        fell_back: bool,
    },
}

struct Outcome {
    errors: Vec<KeyErr>,
    min_commit_ts: u64,
    one_pc_commit_ts: u64,
}

impl<E: Engine> Storage<E> {
    pub async fn kv_prewrite(
        &self,
        req: kvrpcpb::PrewriteRequest,
    ) -> Result<kvrpcpb::PrewriteResponse, StorageError> {
        let ctx = req.context.clone().unwrap_or_default();
        let api = api_version(&ctx)?;
        check_key(api, &req.primary_lock, false, false)?;
        if req.start_version == 0 || req.start_version == u64::MAX {
            return Err(invalid(
                "start_version must be a timestamp (not 0, not u64::MAX)",
            ));
        }
        let n = req.mutations.len();
        if !req.pessimistic_actions.is_empty() && req.pessimistic_actions.len() != n {
            return Err(invalid(
                "pessimistic_actions must be empty or one per mutation",
            ));
        }
        let mut expected = vec![None; n];
        for c in &req.for_update_ts_constraints {
            let slot = expected.get_mut(c.index as usize).ok_or_else(|| {
                invalid(format!(
                    "for_update_ts constraint index {} out of range",
                    c.index
                ))
            })?;
            *slot = Some(c.expected_for_update_ts);
        }
        let mut seen = HashSet::with_capacity(n);
        let mut mutations = Vec::with_capacity(n);
        for (i, m) in req.mutations.into_iter().enumerate() {
            check_key(api, &m.key, false, false)?;
            self.check_value(&m.value)?;
            let op =
                Op::try_from(m.op).map_err(|_| invalid(format!("unknown mutation op {}", m.op)))?;
            if matches!(op, Op::Rollback | Op::PessimisticLock) {
                return Err(invalid(format!("mutation op {op:?} cannot be prewritten")));
            }
            if !seen.insert(m.key.clone()) {
                return Err(invalid("duplicate key in prewrite mutations"));
            }
            let action = match req.pessimistic_actions.get(i) {
                Some(a) => PessimisticAction::try_from(*a)
                    .map_err(|_| invalid("unknown pessimistic action"))?,
                None => PessimisticAction::SkipPessimisticCheck,
            };
            let assertion = Assertion::try_from(m.assertion)
                .map_err(|_| invalid(format!("unknown assertion {}", m.assertion)))?;
            mutations.push(KeyMutation {
                key: m.key,
                op,
                value: m.value,
                action,
                expected_for_update_ts: expected[i],
                assertion,
            });
        }
        let props = Props {
            start_ts: req.start_version,
            primary: req.primary_lock,
            lock_ttl: req.lock_ttl,
            txn_size: req.txn_size,
            for_update_ts: req.for_update_ts,
            min_commit_ts: req.min_commit_ts,
            max_commit_ts: req.max_commit_ts,
            skip_constraint_check: req.skip_constraint_check,
            use_async_commit: req.use_async_commit,
            try_one_pc: req.try_one_pc,
            secondaries: req.secondaries,
            assertion_level: AssertionLevel::try_from(req.assertion_level)
                .map_err(|_| invalid(format!("unknown assertion level {}", req.assertion_level)))?,
        };
        let keys: Vec<Vec<u8>> = mutations.iter().map(|m| m.key.clone()).collect();
        let cm = self.inner.cm.clone();
        let ectx = engine_context(Some(&ctx));
        if props.need_min_commit_ts() {
            // The commit timestamp comes from max_ts: it must be above every
            // timestamp a reader used, here or at a previous leader.
            for ts in [props.start_ts, props.for_update_ts] {
                if let Err(e) = cm.check_timestamp(ts) {
                    return Ok(kvrpcpb::PrewriteResponse {
                        errors: vec![e.to_pb()],
                        ..Default::default()
                    });
                }
            }
            self.inner.engine.wait_max_ts_synced(&ectx).await?;
        }
        let region_id = ectx.region_id;
        let out = self
            .run_write(&ectx, &keys, move |reader, txn| {
                if props.need_min_commit_ts() && !reader.snapshot().max_ts_synced() {
                    // Leadership changed between the wait and the snapshot.
                    return Err(
                        StorageError::Engine(crate::region::max_ts_not_synced(region_id)).into(),
                    );
                }
                prewrite_all(reader, txn, &cm, &props, &mutations)
            })
            .await?;
        let mut resp = kvrpcpb::PrewriteResponse::default();
        match out {
            Ok(o) => {
                resp.errors = o.errors.iter().map(KeyErr::to_pb).collect();
                resp.min_commit_ts = o.min_commit_ts;
                resp.one_pc_commit_ts = o.one_pc_commit_ts;
            }
            Err(e) => resp.errors = vec![e.to_pb()],
        }
        Ok(resp)
    }
}

fn prewrite_all<S: Snapshot>(
    reader: &MvccReader<'_, S>,
    txn: &mut MvccTxn,
    cm: &ConcurrencyManager,
    props: &Props,
    mutations: &[KeyMutation],
) -> TxnResult<Outcome> {
    let mut locked = Vec::new();
    let mut pending = Vec::new();
    let mut final_min_commit_ts = 0;
    let mut fell_back = false;
    for m in mutations {
        match prewrite_key(reader, txn, cm, props, m) {
            Ok(KeyOutcome::Done { min_commit_ts }) => {
                if props.need_min_commit_ts() && min_commit_ts == 0 {
                    fell_back = true;
                }
                final_min_commit_ts = final_min_commit_ts.max(min_commit_ts);
            }
            Ok(KeyOutcome::Lock {
                lock,
                had_pessimistic_lock,
                fell_back: fb,
            }) => {
                fell_back |= fb;
                final_min_commit_ts = final_min_commit_ts.max(lock.min_commit_ts);
                pending.push((m.key.as_slice(), lock, had_pessimistic_lock));
            }
            Err(TxnError::Key(e)) => {
                // A retried prewrite of a transaction that has meanwhile been
                // committed (e.g. by a resolver) succeeds without writing.
                let retryable = matches!(
                    e,
                    KeyErr::Locked(_)
                        | KeyErr::WriteConflict { .. }
                        | KeyErr::PessimisticLockNotFound { .. }
                        | KeyErr::AssertionFailed { .. }
                );
                if retryable {
                    if let Some(commit_ts) = committed_ts(reader, &m.key, props.start_ts)? {
                        txn.clear();
                        return Ok(Outcome {
                            errors: vec![],
                            min_commit_ts: if props.use_async_commit { commit_ts } else { 0 },
                            one_pc_commit_ts: if props.try_one_pc { commit_ts } else { 0 },
                        });
                    }
                }
                match e {
                    // Collect every blocking lock so the client resolves them at once.
                    KeyErr::Locked(_) => locked.push(e),
                    e => return Err(e.into()),
                }
            }
            Err(e) => return Err(e),
        }
    }
    if !locked.is_empty() {
        txn.clear();
        return Ok(Outcome {
            errors: locked,
            min_commit_ts: 0,
            one_pc_commit_ts: 0,
        });
    }
    let one_pc = props.try_one_pc && !fell_back;
    for (key, mut lock, had_pessimistic_lock) in pending {
        if fell_back {
            lock.use_async_commit = false;
            lock.secondaries.clear();
        }
        if one_pc {
            let write = Write::new(
                WriteType::from_lock_type(lock.lock_type),
                props.start_ts,
                lock.short_value,
            );
            txn.put_write(key, final_min_commit_ts, &write);
            if had_pessimistic_lock {
                txn.unlock_key(key);
            }
        } else {
            txn.put_lock(key, &lock);
        }
    }
    Ok(Outcome {
        errors: vec![],
        min_commit_ts: if props.use_async_commit && !fell_back {
            final_min_commit_ts
        } else {
            0
        },
        one_pc_commit_ts: if one_pc { final_min_commit_ts } else { 0 },
    })
}

fn prewrite_key<S: Snapshot>(
    reader: &MvccReader<'_, S>,
    txn: &mut MvccTxn,
    cm: &ConcurrencyManager,
    props: &Props,
    m: &KeyMutation,
) -> TxnResult<KeyOutcome> {
    let (lock_type, should_not_exist, should_not_write) = match m.op {
        Op::Put => (LockType::Put, false, false),
        Op::Insert => (LockType::Put, true, false),
        Op::Del => (LockType::Delete, false, false),
        Op::Lock => (LockType::Lock, false, false),
        Op::CheckNotExists => (LockType::Lock, true, true),
        Op::Rollback | Op::PessimisticLock => return Err(invalid("op cannot be prewritten").into()),
    };
    if props.is_pessimistic() && should_not_write {
        return Err(invalid("CheckNotExists cannot be used in a pessimistic prewrite").into());
    }
    let start_ts = props.start_ts;
    let key = m.key.as_slice();
    let needs_pessimistic_lock =
        props.is_pessimistic() && m.action == PessimisticAction::DoPessimisticCheck;
    let mut ttl = props.lock_ttl;
    let mut min_commit_ts = props.min_commit_ts;
    let mut for_update_ts = props.for_update_ts;
    let mut had_pessimistic_lock = false;

    match reader.load_lock(key)? {
        Some(lock) if lock.ts != start_ts => {
            if needs_pessimistic_lock {
                return Err(KeyErr::PessimisticLockNotFound {
                    start_ts,
                    key: key.to_vec(),
                }
                .into());
            }
            let mut info = lock.to_lock_info(key);
            // Keys of a pessimistic transaction that were not locked
            // pessimistically: let the client resolve the lock right away.
            if props.is_pessimistic() {
                info.lock_ttl = 0;
            }
            return Err(KeyErr::Locked(Box::new(info)).into());
        }
        Some(lock) if lock.is_pessimistic_lock() => {
            if !props.is_pessimistic() {
                return Err(KeyErr::LockTypeNotMatch {
                    start_ts,
                    key: key.to_vec(),
                    pessimistic: true,
                }
                .into());
            }
            if m.expected_for_update_ts
                .is_some_and(|ts| ts != lock.for_update_ts)
            {
                return Err(KeyErr::PessimisticLockNotFound {
                    start_ts,
                    key: key.to_vec(),
                }
                .into());
            }
            ttl = ttl.max(lock.ttl);
            min_commit_ts = min_commit_ts.max(lock.min_commit_ts);
            for_update_ts = for_update_ts.max(lock.for_update_ts);
            had_pessimistic_lock = true;
        }
        Some(lock) => {
            // Already prewritten: a duplicate request writes nothing.
            let min_commit_ts = if lock.use_async_commit {
                lock.min_commit_ts
            } else {
                0
            };
            return Ok(KeyOutcome::Done { min_commit_ts });
        }
        None if needs_pessimistic_lock => {
            return Err(KeyErr::PessimisticLockNotFound {
                start_ts,
                key: key.to_vec(),
            }
            .into());
        }
        None => {}
    }

    let skip_check = if props.is_pessimistic() {
        m.action == PessimisticAction::DoPessimisticCheck
    } else {
        props.skip_constraint_check
    };
    if !skip_check {
        check_for_newer_version(reader, props, m, should_not_exist)?;
    }
    check_assertion(reader, props, m, !skip_check)?;
    if should_not_write {
        // CheckNotExists is a read at start_ts.
        cm.update_max_ts(start_ts)?;
        let ts = if props.need_min_commit_ts() {
            props.min_commit_ts.max(start_ts.saturating_add(1))
        } else {
            0
        };
        return Ok(KeyOutcome::Done { min_commit_ts: ts });
    }

    let mut lock = Lock::new(lock_type, props.primary.clone(), start_ts, ttl);
    lock.for_update_ts = if props.is_pessimistic() {
        for_update_ts
    } else {
        0
    };
    lock.txn_size = props.txn_size;
    lock.min_commit_ts = min_commit_ts;
    if lock_type == LockType::Put {
        if m.value.len() <= SHORT_VALUE_MAX_LEN {
            lock.short_value = Some(m.value.clone());
        } else {
            txn.put_value(key, start_ts, m.value.clone());
        }
    }
    if props.use_async_commit {
        lock.use_async_commit = true;
        if key == props.primary.as_slice() {
            lock.secondaries = props.secondaries.clone();
        }
    }
    let mut fell_back = false;
    if props.need_min_commit_ts() {
        let guard = cm.lock_key(key, |max_ts| {
            let ts = max_ts
                .max(start_ts)
                .max(props.for_update_ts)
                .saturating_add(1)
                .max(lock.min_commit_ts);
            if props.max_commit_ts != 0 && ts > props.max_commit_ts {
                // Too late for the requested bound: fall back to plain 2PC.
                return Err(());
            }
            lock.min_commit_ts = ts;
            Ok(lock.clone())
        });
        match guard {
            Ok(guard) => txn.add_guard(guard),
            Err(()) => {
                fell_back = true;
                lock.use_async_commit = false;
                lock.secondaries.clear();
            }
        }
    }
    Ok(KeyOutcome::Lock {
        lock,
        had_pessimistic_lock,
        fell_back,
    })
}

/// Checks the mutation's assertion about the key's newest committed value
/// as TiKV does: `Exist` fails on no value or a Delete, `NotExist` on a
/// Put. `Fast` checks only keys whose versions the conflict check already
/// read (`versions_read`); `Strict` reads them when it did not; `Off`
/// checks nothing. A failed assertion on a key whose conflict check was
/// skipped runs that check first: a newer write (a rollback, say) is the
/// better explanation.
fn check_assertion<S: Snapshot>(
    reader: &MvccReader<'_, S>,
    props: &Props,
    m: &KeyMutation,
    versions_read: bool,
) -> TxnResult<()> {
    let checked = match props.assertion_level {
        AssertionLevel::Off => false,
        AssertionLevel::Fast => versions_read,
        AssertionLevel::Strict => true,
    };
    if m.assertion == Assertion::None || !checked {
        return Ok(());
    }
    let newest = reader.get_write(&m.key, u64::MAX)?;
    let failed = match (m.assertion, &newest) {
        (Assertion::Exist, None) => Some((0, 0)),
        (Assertion::Exist, Some((commit_ts, w))) if w.write_type == WriteType::Delete => {
            Some((w.start_ts, *commit_ts))
        }
        (Assertion::NotExist, Some((commit_ts, w))) if w.write_type == WriteType::Put => {
            Some((w.start_ts, *commit_ts))
        }
        _ => None,
    };
    let Some((existing_start_ts, existing_commit_ts)) = failed else {
        return Ok(());
    };
    if !versions_read {
        check_for_newer_version(reader, props, m, false)?;
    }
    Err(KeyErr::AssertionFailed {
        start_ts: props.start_ts,
        key: m.key.clone(),
        assertion: m.assertion,
        existing_start_ts,
        existing_commit_ts,
    }
    .into())
}

/// Conflict and constraint checks against committed versions.
fn check_for_newer_version<S: Snapshot>(
    reader: &MvccReader<'_, S>,
    props: &Props,
    m: &KeyMutation,
    should_not_exist: bool,
) -> TxnResult<()> {
    let start_ts = props.start_ts;
    let conflict = |commit_ts: u64, write: &Write, reason: Reason| -> TxnError {
        KeyErr::WriteConflict {
            start_ts,
            conflict_start_ts: write.start_ts,
            conflict_commit_ts: commit_ts,
            key: m.key.clone(),
            primary: props.primary.clone(),
            reason,
        }
        .into()
    };
    let mut cursor = reader.write_cursor(&m.key, u64::MAX)?;
    while let Some((commit_ts, write)) = cursor.next_version()? {
        if commit_ts == start_ts && write.marks_rollback() {
            return Err(conflict(commit_ts, &write, Reason::SelfRolledBack));
        }
        if !props.is_pessimistic() {
            if commit_ts > start_ts {
                return Err(conflict(commit_ts, &write, Reason::Optimistic));
            }
        } else {
            if m.action == PessimisticAction::DoConstraintCheck && commit_ts > start_ts {
                return Err(conflict(commit_ts, &write, Reason::LazyUniquenessCheck));
            }
            if commit_ts > props.for_update_ts {
                // Newer rollbacks are not conflicts for pessimistic txns.
                if write.write_type == WriteType::Rollback {
                    continue;
                }
                return Err(conflict(commit_ts, &write, Reason::PessimisticRetry));
            }
        }
        if should_not_exist {
            match write.write_type {
                WriteType::Put => return Err(KeyErr::AlreadyExist { key: m.key.clone() }.into()),
                WriteType::Delete => return Ok(()),
                // Not a data version: look at older ones.
                WriteType::Lock | WriteType::Rollback => continue,
            }
        }
        return Ok(());
    }
    Ok(())
}
