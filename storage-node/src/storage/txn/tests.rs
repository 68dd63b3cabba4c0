//! Transaction tests on a real RocksDB: reads, prewrite/commit/rollback,
//! conflicts, CheckTxnStatus, async commit and 1PC.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use shale_proto::kvrpcpb::{self, write_conflict::Reason, Action, Op};

use crate::engine::{CfName, Engine, EngineContext, LocalKv, Modify};
use crate::storage::mvcc::{lock_key, WriteType};
use crate::storage::test_util::*;
use crate::storage::{StorageError, MAX_KEY_SIZE};

#[tokio::test]
async fn snapshot_reads_see_the_version_committed_before_them() {
    let s = new_store();
    s.must_put(b"k", b"v1", 10, 20).await;
    s.must_put(b"k", b"v2", 30, 40).await;
    s.must_get(b"k", 15, None).await;
    s.must_get(b"k", 20, Some(b"v1")).await;
    s.must_get(b"k", 35, Some(b"v1")).await;
    s.must_get(b"k", 40, Some(b"v2")).await;
    s.must_prewrite(vec![del(b"k")], b"k", 50).await;
    s.must_commit(&[b"k"], 50, 60).await;
    s.must_get(b"k", 55, Some(b"v2")).await;
    s.must_get(b"k", 65, None).await;
    // Lock-only and rollback records are skipped by readers.
    s.must_prewrite(vec![mutation(Op::Lock, b"k", b"")], b"k", 70)
        .await;
    s.must_commit(&[b"k"], 70, 80).await;
    s.must_rollback(&[b"k"], 90).await;
    s.must_put(b"k", b"v3", 100, 110).await;
    s.must_prewrite(vec![mutation(Op::Lock, b"k", b"")], b"k", 120)
        .await;
    s.must_commit(&[b"k"], 120, 130).await;
    s.must_get(b"k", 135, Some(b"v3")).await;
    let types: Vec<WriteType> = s
        .writes(b"k")
        .into_iter()
        .map(|(_, w)| w.write_type)
        .collect();
    assert_eq!(
        types,
        vec![
            WriteType::Lock,
            WriteType::Put,
            WriteType::Rollback,
            WriteType::Lock,
            WriteType::Delete,
            WriteType::Put,
            WriteType::Put
        ]
    );
}

#[tokio::test]
async fn long_values_live_in_the_default_cf_and_go_with_a_rollback() {
    let s = new_store();
    let long = vec![7u8; 1000];
    s.must_prewrite_put(b"k", &long, b"k", 10).await;
    assert_eq!(s.count(CfName::Default), 1);
    assert!(s.must_locked(b"k", 10).short_value.is_none());
    s.must_rollback(&[b"k"], 10).await;
    assert_eq!(s.count(CfName::Default), 0);
    s.must_unlocked(b"k");
    s.must_put(b"k", &long, 20, 30).await;
    s.must_get(b"k", 30, Some(&long)).await;
    let short = vec![1u8; 255];
    s.must_put(b"s", &short, 40, 50).await;
    assert_eq!(s.count(CfName::Default), 1, "255-byte values are inlined");
    s.must_get(b"s", 50, Some(&short)).await;
}

#[tokio::test]
async fn newer_commit_is_a_write_conflict() {
    let s = new_store();
    s.must_put(b"k", b"v", 20, 30).await;
    let e = s
        .prewrite_err(prewrite_req(vec![put(b"k", b"x")], b"p", 25))
        .await;
    let c = e.conflict.expect("conflict");
    assert_eq!(
        (c.start_ts, c.conflict_ts, c.conflict_commit_ts),
        (25, 20, 30)
    );
    assert_eq!(c.key, b"k");
    assert_eq!(c.primary, b"p");
    assert_eq!(c.reason, Reason::Optimistic as i32);
    s.must_unlocked(b"k");
    // Starting after the commit is fine; so is a commit exactly at start_ts.
    s.must_prewrite_put(b"k", b"x", b"k", 30).await;
}

#[tokio::test]
async fn locks_block_readers_unless_resolved_committed_or_irrelevant() {
    let s = new_store();
    s.must_put(b"k", b"old", 1, 2).await;
    s.must_prewrite(vec![put(b"k", b"new"), put(b"s", b"sv")], b"k", 10)
        .await;
    let info = s.must_get_locked(b"k", 20).await;
    assert_eq!(info.key, b"k");
    assert_eq!(info.primary_lock, b"k");
    assert_eq!(info.lock_version, 10);
    assert_eq!(info.lock_ttl, 3000);
    assert_eq!(info.txn_size, 1);
    assert_eq!(info.lock_type, Op::Put as i32);
    // Older readers do not see the lock at all.
    s.must_get(b"k", 9, Some(b"old")).await;
    // Resolved (rolled back / pushed) locks are skipped ...
    let mut c = ctx().unwrap();
    c.resolved_locks = vec![10];
    let r = s.get_with(b"k", 20, c).await;
    assert_eq!((r.error, r.value), (None, b"old".to_vec()));
    // ... committed ones are read through.
    let mut c = ctx().unwrap();
    c.committed_locks = vec![10];
    let r = s.get_with(b"k", 20, c).await;
    assert_eq!((r.error, r.value), (None, b"new".to_vec()));
    // RC reads ignore locks.
    let mut c = ctx().unwrap();
    c.isolation_level = kvrpcpb::IsolationLevel::Rc as i32;
    assert_eq!(s.get_with(b"k", 20, c).await.value, b"old");
    // Pessimistic and Lock-type locks never block.
    s.must_pessimistic_lock(&[b"p"], b"p", 30, 30).await;
    s.must_get(b"p", 40, None).await;
    s.must_prewrite(vec![mutation(Op::Lock, b"l", b"")], b"l", 31)
        .await;
    s.must_get(b"l", 40, None).await;
    // Batch get reports the lock per key and still returns other keys.
    s.must_put(b"z", b"zv", 3, 4).await;
    let resp = s
        .storage
        .kv_batch_get(kvrpcpb::BatchGetRequest {
            context: ctx(),
            keys: vec![b"k".to_vec(), b"missing".to_vec(), b"z".to_vec()],
            version: 20,
        })
        .await
        .unwrap();
    assert_eq!(resp.pairs.len(), 2);
    assert_eq!(
        resp.pairs[0]
            .error
            .as_ref()
            .and_then(|e| e.locked.as_ref())
            .map(|l| l.lock_version),
        Some(10)
    );
    assert_eq!(
        (resp.pairs[1].key.as_slice(), resp.pairs[1].value.as_slice()),
        (b"z".as_slice(), b"zv".as_slice())
    );
}

#[tokio::test]
async fn rollback_record_stops_a_late_prewrite() {
    let s = new_store();
    s.must_rollback(&[b"k"], 10).await;
    assert_eq!(s.writes(b"k")[0].1.write_type, WriteType::Rollback);
    let e = s
        .prewrite_err(prewrite_req(vec![put(b"k", b"v")], b"k", 10))
        .await;
    assert_eq!(
        e.conflict.map(|c| c.reason),
        Some(Reason::SelfRolledBack as i32)
    );
    s.must_unlocked(b"k");
    // Commit of the rolled-back transaction is refused (retryable: txn lock not found).
    let resp = s.commit(&[b"k"], 10, 20).await;
    assert!(resp
        .error
        .expect("error")
        .retryable
        .contains("TxnLockNotFound"));
}

#[tokio::test]
async fn commit_is_idempotent_and_rollback_of_committed_is_refused() {
    let s = new_store();
    s.must_prewrite(vec![put(b"a", b"1"), put(b"b", b"2")], b"a", 10)
        .await;
    s.must_commit(&[b"a", b"b"], 10, 20).await;
    s.must_commit(&[b"a", b"b"], 10, 20).await;
    s.must_unlocked(b"a");
    let resp = s.rollback(&[b"a"], 10).await;
    assert!(!resp.error.expect("error").abort.is_empty());
    s.must_get(b"b", 20, Some(b"2")).await;
    // Prewrite again after commit (a retry): succeeds without writing a lock.
    let resp = s
        .prewrite(prewrite_req(vec![put(b"a", b"1")], b"a", 10))
        .await;
    assert!(resp.errors.is_empty(), "{:?}", resp.errors);
    s.must_unlocked(b"a");
    // A commit ts not above start ts is rejected.
    let resp = s.commit(&[b"a"], 10, 10).await;
    assert!(!resp.error.expect("error").abort.is_empty());
}

#[tokio::test]
async fn duplicate_prewrite_is_idempotent_and_blocking_locks_are_all_reported() {
    let s = new_store();
    s.must_prewrite(vec![put(b"a", b"1"), put(b"b", b"2")], b"a", 10)
        .await;
    s.must_prewrite(vec![put(b"a", b"1"), put(b"b", b"2")], b"a", 10)
        .await;
    let resp = s
        .prewrite(prewrite_req(
            vec![put(b"a", b"x"), put(b"b", b"y"), put(b"c", b"z")],
            b"a",
            20,
        ))
        .await;
    assert_eq!(resp.errors.len(), 2);
    assert!(resp
        .errors
        .iter()
        .all(|e| e.locked.as_ref().is_some_and(|l| l.lock_version == 10)));
    s.must_unlocked(b"c");
}

#[tokio::test]
async fn insert_and_check_not_exists_enforce_absence() {
    let s = new_store();
    s.must_put(b"k", b"v", 10, 20).await;
    s.must_prewrite(vec![mutation(Op::Lock, b"k", b"")], b"k", 25)
        .await;
    s.must_commit(&[b"k"], 25, 26).await;
    let e = s
        .prewrite_err(prewrite_req(
            vec![mutation(Op::Insert, b"k", b"x")],
            b"k",
            30,
        ))
        .await;
    assert_eq!(e.already_exist.map(|a| a.key), Some(b"k".to_vec()));
    let e = s
        .prewrite_err(prewrite_req(
            vec![mutation(Op::CheckNotExists, b"k", b"")],
            b"k",
            30,
        ))
        .await;
    assert!(e.already_exist.is_some());
    s.must_prewrite(vec![del(b"k")], b"k", 40).await;
    s.must_commit(&[b"k"], 40, 50).await;
    s.must_prewrite(vec![mutation(Op::CheckNotExists, b"k", b"")], b"k", 60)
        .await;
    s.must_unlocked(b"k");
    s.must_prewrite(vec![mutation(Op::Insert, b"k", b"new")], b"k", 60)
        .await;
    s.must_commit(&[b"k"], 60, 70).await;
    s.must_get(b"k", 70, Some(b"new")).await;
}

#[tokio::test]
async fn check_txn_status_rolls_back_expired_locks() {
    let s = new_store();
    let start = tso(1000, 0);
    s.must_prewrite(vec![put(b"p", b"v"), put(b"s", b"v")], b"p", start)
        .await;
    let req = |current_ms: u64| kvrpcpb::CheckTxnStatusRequest {
        primary_key: b"p".to_vec(),
        lock_ts: start,
        caller_start_ts: tso(current_ms, 0),
        current_ts: tso(current_ms, 0),
        ..Default::default()
    };
    // Alive: TTL 3000 ms from 1000.
    let r = s.check_txn_status(req(2000)).await;
    assert_eq!(
        (r.lock_ttl, r.commit_version, r.action),
        (3000, 0, Action::NoAction as i32)
    );
    let info = r.lock_info.expect("lock info");
    assert_eq!(
        (info.lock_version, info.key.as_slice()),
        (start, b"p".as_slice())
    );
    s.must_locked(b"p", start);
    // Expired: rolled back.
    let r = s.check_txn_status(req(4001)).await;
    assert_eq!(r.action, Action::TtlExpireRollback as i32);
    assert_eq!((r.lock_ttl, r.commit_version, r.lock_info), (0, 0, None));
    s.must_unlocked(b"p");
    // Asked again: rolled back, nothing to do.
    let r = s.check_txn_status(req(5000)).await;
    assert_eq!(
        (r.action, r.lock_ttl, r.commit_version),
        (Action::NoAction as i32, 0, 0)
    );
    // The secondary lock is still there until resolved; its commit fails.
    assert!(s.commit(&[b"p"], start, tso(6000, 0)).await.error.is_some());
}

#[tokio::test]
async fn check_txn_status_without_lock() {
    let s = new_store();
    let base = kvrpcpb::CheckTxnStatusRequest {
        primary_key: b"p".to_vec(),
        lock_ts: 10,
        caller_start_ts: 0,
        current_ts: 100,
        ..Default::default()
    };
    let r = s.check_txn_status(base.clone()).await;
    assert_eq!(
        r.error.and_then(|e| e.txn_not_found).map(|t| t.start_ts),
        Some(10)
    );
    let r = s
        .check_txn_status(kvrpcpb::CheckTxnStatusRequest {
            rollback_if_not_exist: true,
            ..base.clone()
        })
        .await;
    assert_eq!(r.action, Action::LockNotExistRollback as i32);
    assert_eq!(
        s.writes(b"p")[0],
        (10, crate::storage::mvcc::Write::rollback(10))
    );
    // Committed: reports the commit ts.
    s.must_put(b"q", b"v", 20, 30).await;
    let r = s
        .check_txn_status(kvrpcpb::CheckTxnStatusRequest {
            primary_key: b"q".to_vec(),
            lock_ts: 20,
            ..base.clone()
        })
        .await;
    assert_eq!((r.commit_version, r.lock_ttl, r.error), (30, 0, None));
    // Resolving a pessimistic lock that is gone: nothing is written.
    let r = s
        .check_txn_status(kvrpcpb::CheckTxnStatusRequest {
            primary_key: b"r".to_vec(),
            rollback_if_not_exist: true,
            resolving_pessimistic_lock: true,
            ..base
        })
        .await;
    assert_eq!(r.action, Action::LockNotExistDoNothing as i32);
    assert!(s.writes(b"r").is_empty());
}

#[tokio::test]
async fn check_txn_status_pushes_min_commit_ts_and_verifies_primary() {
    let s = new_store();
    let start = tso(1000, 0);
    let mut req = prewrite_req(vec![put(b"p", b"v"), put(b"s", b"v")], b"p", start);
    req.min_commit_ts = start + 1;
    assert!(s.prewrite(req).await.errors.is_empty());
    let caller = tso(1500, 0);
    let r = s
        .check_txn_status(kvrpcpb::CheckTxnStatusRequest {
            primary_key: b"p".to_vec(),
            lock_ts: start,
            caller_start_ts: caller,
            current_ts: caller,
            ..Default::default()
        })
        .await;
    assert_eq!(r.action, Action::MinCommitTsPushed as i32);
    assert_eq!(s.must_locked(b"p", start).min_commit_ts, caller + 1);
    // The caller now reads past the primary lock; commit below is refused.
    s.must_get(b"p", caller, None).await;
    let resp = s.commit(&[b"p"], start, caller).await;
    let exp = resp
        .error
        .and_then(|e| e.commit_ts_expired)
        .expect("commit ts expired");
    assert_eq!(
        (exp.min_commit_ts, exp.attempted_commit_ts),
        (caller + 1, caller)
    );
    s.must_commit(&[b"p"], start, caller + 2).await;
    // Asking a secondary with verify_is_primary is a primary mismatch.
    let r = s
        .check_txn_status(kvrpcpb::CheckTxnStatusRequest {
            primary_key: b"s".to_vec(),
            lock_ts: start,
            current_ts: caller,
            verify_is_primary: true,
            ..Default::default()
        })
        .await;
    assert!(r.error.and_then(|e| e.primary_mismatch).is_some());
}

#[tokio::test]
async fn async_commit_min_commit_ts_is_above_every_read() {
    let s = new_store();
    s.must_get(b"x", 100, None).await;
    let mut req = prewrite_req(vec![put(b"p", b"v"), put(b"s", b"v")], b"p", 50);
    req.use_async_commit = true;
    req.secondaries = vec![b"s".to_vec()];
    let resp = s.prewrite(req).await;
    assert!(resp.errors.is_empty());
    assert_eq!(resp.min_commit_ts, 101);
    let primary = s.must_locked(b"p", 50);
    assert!(primary.use_async_commit);
    assert_eq!(primary.secondaries, vec![b"s".to_vec()]);
    let secondary = s.must_locked(b"s", 50);
    assert!(secondary.use_async_commit && secondary.secondaries.is_empty());
    assert_eq!(secondary.min_commit_ts, 101);
    assert_eq!(
        s.storage.concurrency_manager().mem_lock_count(),
        0,
        "memory locks released after write"
    );
    // Readers below min_commit_ts are not blocked, readers above are.
    s.must_get(b"p", 100, None).await;
    s.must_get_locked(b"p", 101).await;
    // CheckTxnStatus never rolls an async-commit lock back, even expired.
    let r = s
        .check_txn_status(kvrpcpb::CheckTxnStatusRequest {
            primary_key: b"p".to_vec(),
            lock_ts: 50,
            current_ts: tso(1_000_000, 0),
            ..Default::default()
        })
        .await;
    assert_eq!(r.lock_info.map(|l| l.use_async_commit), Some(true));
    s.must_locked(b"p", 50);
    // A retried prewrite returns the same min_commit_ts.
    let mut again = prewrite_req(vec![put(b"s", b"v")], b"p", 50);
    again.use_async_commit = true;
    assert_eq!(s.prewrite(again).await.min_commit_ts, 101);
    s.must_commit(&[b"p", b"s"], 50, 101).await;
    s.must_get(b"s", 101, Some(b"v")).await;
}

#[tokio::test]
async fn async_commit_falls_back_when_max_commit_ts_is_exceeded() {
    let s = new_store();
    s.storage.concurrency_manager().update_max_ts(200).unwrap();
    let mut req = prewrite_req(vec![put(b"p", b"v")], b"p", 50);
    req.use_async_commit = true;
    req.max_commit_ts = 150;
    let resp = s.prewrite(req).await;
    assert!(resp.errors.is_empty());
    assert_eq!(
        resp.min_commit_ts, 0,
        "fallback to 2PC is reported as min_commit_ts 0"
    );
    assert!(!s.must_locked(b"p", 50).use_async_commit);
    s.must_commit(&[b"p"], 50, 300).await;
}

#[tokio::test]
async fn one_pc_commits_in_prewrite() {
    let s = new_store();
    s.must_pessimistic_lock(&[b"b"], b"a", 40, 40).await;
    s.must_rollback(&[b"b"], 40).await;
    s.must_get(b"k", 80, None).await;
    let mut req = prewrite_req(
        vec![put(b"a", b"1"), put(b"b", &[9u8; 300]), del(b"c")],
        b"a",
        60,
    );
    req.try_one_pc = true;
    let resp = s.prewrite(req.clone()).await;
    assert!(resp.errors.is_empty(), "{:?}", resp.errors);
    assert_eq!(resp.min_commit_ts, 0);
    assert_eq!(resp.one_pc_commit_ts, 81);
    for k in [b"a", b"b", b"c"] {
        s.must_unlocked(k);
    }
    s.must_get(b"a", 80, None).await;
    s.must_get(b"a", 81, Some(b"1")).await;
    s.must_get(b"b", 81, Some(&[9u8; 300])).await;
    assert_eq!(s.writes(b"c")[0].1.write_type, WriteType::Delete);
    // A retry reports the same commit ts and writes nothing new.
    let resp = s.prewrite(req).await;
    assert_eq!((resp.errors.len(), resp.one_pc_commit_ts), (0, 81));
    s.must_unlocked(b"a");
    // 1PC that exceeds max_commit_ts falls back to locks.
    let mut req = prewrite_req(vec![put(b"d", b"1")], b"d", 90);
    req.try_one_pc = true;
    req.max_commit_ts = 85;
    let resp = s.prewrite(req).await;
    assert_eq!((resp.one_pc_commit_ts, resp.min_commit_ts), (0, 0));
    s.must_locked(b"d", 90);
}

#[tokio::test]
async fn cleanup_respects_ttl_and_reports_commits() {
    let s = new_store();
    let start = tso(1000, 0);
    s.must_prewrite_put(b"k", b"v", b"k", start).await;
    let cleanup = |current: u64, start: u64| kvrpcpb::CleanupRequest {
        context: ctx(),
        key: b"k".to_vec(),
        start_version: start,
        current_ts: current,
    };
    let r = s
        .storage
        .kv_cleanup(cleanup(tso(2000, 0), start))
        .await
        .unwrap();
    assert!(
        r.error.and_then(|e| e.locked).is_some(),
        "alive lock is reported"
    );
    let r = s
        .storage
        .kv_cleanup(cleanup(tso(5000, 0), start))
        .await
        .unwrap();
    assert_eq!((r.error, r.commit_version), (None, 0));
    s.must_unlocked(b"k");
    let s2 = tso(6000, 0);
    s.must_put(b"k", b"v", s2, s2 + 10).await;
    let r = s.storage.kv_cleanup(cleanup(0, s2)).await.unwrap();
    assert_eq!((r.error, r.commit_version), (None, s2 + 10));
}

#[tokio::test]
async fn txn_heart_beat_extends_ttl_only_upwards() {
    let s = new_store();
    s.must_prewrite_put(b"p", b"v", b"p", 10).await;
    let hb = |ttl: u64, start: u64| kvrpcpb::TxnHeartBeatRequest {
        context: ctx(),
        primary_lock: b"p".to_vec(),
        start_version: start,
        advise_lock_ttl: ttl,
        ..Default::default()
    };
    assert_eq!(
        s.storage
            .kv_txn_heart_beat(hb(5000, 10))
            .await
            .unwrap()
            .lock_ttl,
        5000
    );
    assert_eq!(
        s.storage
            .kv_txn_heart_beat(hb(1000, 10))
            .await
            .unwrap()
            .lock_ttl,
        5000
    );
    assert_eq!(s.must_locked(b"p", 10).ttl, 5000);
    let r = s.storage.kv_txn_heart_beat(hb(1000, 11)).await.unwrap();
    assert!(r.error.and_then(|e| e.txn_not_found).is_some());
}

#[tokio::test]
async fn bad_input_is_rejected_without_writing() {
    let s = new_store();
    let big = vec![b'k'; MAX_KEY_SIZE + 1];
    let r = s
        .storage
        .kv_prewrite(prewrite_req(vec![put(&big, b"v")], &big, 10))
        .await;
    assert!(matches!(r, Err(StorageError::InvalidArgument(_))));
    let r = s
        .storage
        .kv_prewrite(prewrite_req(vec![put(b"", b"v")], b"p", 10))
        .await;
    assert!(matches!(r, Err(StorageError::InvalidArgument(_))));
    let r = s
        .storage
        .kv_prewrite(prewrite_req(
            vec![put(b"a", b"v"), put(b"a", b"w")],
            b"a",
            10,
        ))
        .await;
    assert!(matches!(r, Err(StorageError::InvalidArgument(_))));
    let r = s
        .storage
        .kv_prewrite(prewrite_req(
            vec![mutation(Op::Rollback, b"a", b"")],
            b"a",
            10,
        ))
        .await;
    assert!(matches!(r, Err(StorageError::InvalidArgument(_))));
    let small = new_store_with(crate::storage::StorageConfig {
        max_value_size: 4,
        ..Default::default()
    });
    let r = small
        .storage
        .kv_prewrite(prewrite_req(vec![put(b"a", b"12345")], b"a", 10))
        .await;
    assert!(matches!(r, Err(StorageError::InvalidArgument(_))));
    let r = s
        .storage
        .kv_get(kvrpcpb::GetRequest {
            context: ctx(),
            key: big,
            version: 1,
        })
        .await;
    assert!(matches!(r, Err(StorageError::InvalidArgument(_))));
    // API V2 keys must carry the transactional mode prefix.
    let mut c = ctx().unwrap();
    c.api_version = kvrpcpb::ApiVersion::V2 as i32;
    let mut req = prewrite_req(vec![put(b"r\0\0\0k", b"v")], b"r\0\0\0k", 10);
    req.context = Some(c.clone());
    assert!(matches!(
        s.storage.kv_prewrite(req).await,
        Err(StorageError::InvalidArgument(_))
    ));
    let mut req = prewrite_req(vec![put(b"x\0\0\0k", b"v")], b"x\0\0\0k", 10);
    req.context = Some(c.clone());
    assert!(s.storage.kv_prewrite(req).await.unwrap().errors.is_empty());
    assert_eq!(
        s.get_with(b"x\0\0\0k", 10, c.clone())
            .await
            .error
            .and_then(|e| e.locked)
            .map(|l| l.lock_version),
        Some(10)
    );
    assert_eq!(s.count(CfName::Lock), 1);
    // Range bounds: the mode, or the first key past it ("y"), are fine.
    let scan = |start: &[u8], end: &[u8]| kvrpcpb::ScanRequest {
        context: Some(c.clone()),
        start_key: start.to_vec(),
        end_key: end.to_vec(),
        limit: 10,
        version: 5,
        ..Default::default()
    };
    assert!(s.storage.kv_scan(scan(b"x\0\0\0", b"y")).await.is_ok());
    assert!(matches!(
        s.storage.kv_scan(scan(b"r\0\0\0", b"y")).await,
        Err(StorageError::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn corrupt_records_are_errors_not_panics() {
    let s = new_store();
    let engine = LocalKv::new(s.rocks.clone());
    let garbage = vec![
        Modify::Put(CfName::Lock, lock_key(b"bad"), vec![1, 2, 3]),
        Modify::Put(
            CfName::Write,
            crate::storage::mvcc::versioned_key(b"w", 5),
            vec![9; 20],
        ),
        Modify::Put(CfName::Lock, b"not-encoded".to_vec(), vec![1]),
    ];
    engine
        .async_write(&EngineContext::default(), garbage)
        .await
        .unwrap();
    let r = s
        .storage
        .kv_get(kvrpcpb::GetRequest {
            context: ctx(),
            key: b"bad".to_vec(),
            version: 10,
        })
        .await;
    assert!(matches!(r, Err(StorageError::Corrupted(_))), "{r:?}");
    let r = s
        .storage
        .kv_get(kvrpcpb::GetRequest {
            context: ctx(),
            key: b"w".to_vec(),
            version: 10,
        })
        .await;
    assert!(matches!(r, Err(StorageError::Corrupted(_))), "{r:?}");
    let r = s
        .storage
        .kv_prewrite(prewrite_req(vec![put(b"bad", b"v")], b"bad", 20))
        .await;
    assert!(r.is_err());
    let r = s
        .storage
        .kv_scan(kvrpcpb::ScanRequest {
            context: ctx(),
            limit: 10,
            version: 10,
            ..Default::default()
        })
        .await;
    assert!(r.is_err());
    let r = s
        .storage
        .kv_scan_lock(kvrpcpb::ScanLockRequest {
            context: ctx(),
            max_version: 100,
            ..Default::default()
        })
        .await;
    assert!(r.is_err());
}

/// The gRPC server needs every method's future to be `Send`.
#[allow(dead_code)]
fn futures_are_send(s: &crate::storage::Storage<LocalKv>) {
    fn is_send<T: Send>(_: T) {}
    is_send(s.kv_get(Default::default()));
    is_send(s.kv_scan(Default::default()));
    is_send(s.kv_prewrite(Default::default()));
    is_send(s.kv_commit(Default::default()));
    is_send(s.kv_pessimistic_lock(Default::default()));
    is_send(s.kv_resolve_lock(Default::default()));
    is_send(s.kv_check_txn_status(Default::default()));
    is_send(s.kv_check_secondary_locks(Default::default()));
    is_send(s.gc(&EngineContext::default(), 1, b"", b""));
    is_send(s.raw_compare_and_swap(Default::default()));
    is_send(s.raw_scan(Default::default()));
    is_send(s.raw_batch_put(Default::default()));
}
