//! Transaction tests, part two: pessimistic locking, secondary-lock checks,
//! lock scanning and resolution, scans, GC and range deletion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use shale_proto::kvrpcpb::{self, prewrite_request::PessimisticAction, write_conflict::Reason, Op};

use crate::engine::{CfName, EngineContext};
use crate::storage::mvcc::{LockType, WriteType};
use crate::storage::test_util::*;

fn pessimistic_prewrite(
    muts: Vec<kvrpcpb::Mutation>,
    primary: &[u8],
    start: u64,
    for_update: u64,
) -> kvrpcpb::PrewriteRequest {
    let n = muts.len();
    let mut req = prewrite_req(muts, primary, start);
    req.for_update_ts = for_update;
    req.pessimistic_actions = vec![PessimisticAction::DoPessimisticCheck as i32; n];
    req
}

#[tokio::test]
async fn pessimistic_txn_locks_prewrites_and_commits() {
    let s = new_store();
    s.must_put(b"k", b"v0", 1, 2).await;
    let mut req = pessimistic_req(&[b"k", b"n"], b"k", 10, 10);
    req.return_values = true;
    let resp = s.pessimistic_lock(req.clone()).await;
    assert!(resp.errors.is_empty());
    assert_eq!(resp.values, vec![b"v0".to_vec(), vec![]]);
    assert_eq!(resp.not_founds, vec![false, true]);
    let lock = s.must_locked(b"k", 10);
    assert_eq!(
        (lock.lock_type, lock.for_update_ts),
        (LockType::Pessimistic, 10)
    );
    // Idempotent, and a later for_update_ts refreshes the lock.
    req.for_update_ts = 12;
    assert!(s.pessimistic_lock(req).await.errors.is_empty());
    assert_eq!(s.must_locked(b"k", 10).for_update_ts, 12);
    // Another transaction is blocked (no waiting requested).
    let resp = s
        .pessimistic_lock(pessimistic_req(&[b"k"], b"k", 20, 20))
        .await;
    assert_eq!(
        resp.errors[0].locked.as_ref().map(|l| l.lock_type),
        Some(Op::PessimisticLock as i32)
    );
    // A prewrite of another txn meeting it is told to resolve it right away.
    let mut other = pessimistic_prewrite(vec![put(b"n", b"x")], b"n", 21, 21);
    other.pessimistic_actions = vec![PessimisticAction::SkipPessimisticCheck as i32];
    let e = s.prewrite_err(other).await;
    assert_eq!(e.locked.map(|l| l.lock_ttl), Some(0));
    // Prewrite converts the pessimistic locks, commit finishes.
    let resp = s
        .prewrite(pessimistic_prewrite(
            vec![put(b"k", b"v1"), del(b"n")],
            b"k",
            10,
            12,
        ))
        .await;
    assert!(resp.errors.is_empty(), "{:?}", resp.errors);
    let lock = s.must_locked(b"k", 10);
    assert_eq!((lock.lock_type, lock.for_update_ts), (LockType::Put, 12));
    s.must_commit(&[b"k", b"n"], 10, 30).await;
    s.must_get(b"k", 30, Some(b"v1")).await;
}

#[tokio::test]
async fn pessimistic_lock_conflicts_and_missing_locks() {
    let s = new_store();
    s.must_put(b"k", b"v", 10, 20).await;
    let resp = s
        .pessimistic_lock(pessimistic_req(&[b"k"], b"k", 5, 15))
        .await;
    let c = resp.errors[0].conflict.clone().expect("write conflict");
    assert_eq!(
        (c.conflict_commit_ts, c.reason),
        (20, Reason::PessimisticRetry as i32)
    );
    s.must_unlocked(b"k");
    // Insert-style check (assertion NotExist) on an existing key.
    let mut req = pessimistic_req(&[b"k"], b"k", 25, 25);
    req.mutations[0].assertion = kvrpcpb::Assertion::NotExist as i32;
    assert!(s.pessimistic_lock(req).await.errors[0]
        .already_exist
        .is_some());
    // Pessimistic prewrite without the lock aborts.
    let resp = s
        .prewrite(pessimistic_prewrite(vec![put(b"k", b"x")], b"k", 30, 30))
        .await;
    assert!(
        resp.errors[0].abort.contains("PessimisticLockNotFound"),
        "{:?}",
        resp.errors
    );
    // A rolled-back pessimistic txn cannot lock again.
    s.must_rollback(&[b"k"], 40).await;
    let resp = s
        .pessimistic_lock(pessimistic_req(&[b"k"], b"k", 40, 45))
        .await;
    assert!(
        resp.errors[0].abort.contains("PessimisticLockRolledBack"),
        "{:?}",
        resp.errors
    );
    // check_existence reports via not_founds only.
    let mut req = pessimistic_req(&[b"k", b"zz"], b"k", 50, 50);
    req.check_existence = true;
    let resp = s.pessimistic_lock(req).await;
    assert_eq!((resp.values.len(), resp.not_founds), (0, vec![false, true]));
    // Pessimistic rollback releases only its own, old-enough locks.
    let rb = |for_update_ts| kvrpcpb::PessimisticRollbackRequest {
        context: ctx(),
        start_version: 50,
        for_update_ts,
        keys: vec![b"k".to_vec(), b"zz".to_vec()],
    };
    assert!(s
        .storage
        .kv_pessimistic_rollback(rb(49))
        .await
        .unwrap()
        .errors
        .is_empty());
    s.must_locked(b"k", 50);
    s.storage.kv_pessimistic_rollback(rb(50)).await.unwrap();
    s.must_unlocked(b"k");
    s.must_unlocked(b"zz");
    assert_eq!(
        s.writes(b"zz").len(),
        0,
        "pessimistic rollback leaves no record"
    );
}

#[tokio::test]
async fn force_lock_mode_locks_despite_newer_writes() {
    let s = new_store();
    s.must_put(b"k", b"v", 10, 20).await;
    let mut req = pessimistic_req(&[b"k"], b"k", 5, 15);
    req.wake_up_mode = kvrpcpb::PessimisticLockWakeUpMode::WakeUpModeForceLock as i32;
    req.return_values = true;
    let resp = s.pessimistic_lock(req).await;
    assert!(resp.errors.is_empty());
    let r = &resp.results[0];
    assert_eq!(
        r.r#type,
        kvrpcpb::PessimisticLockKeyResultType::LockResultLockedWithConflict as i32
    );
    assert_eq!(
        (r.locked_with_conflict_ts, r.value.as_slice(), r.existence),
        (20, b"v".as_slice(), true)
    );
    assert_eq!(s.must_locked(b"k", 5).for_update_ts, 20);
}

#[tokio::test]
async fn pessimistic_lock_waits_for_release() {
    let s = new_store();
    s.must_pessimistic_lock(&[b"k"], b"k", 10, 10).await;
    let storage = s.storage.clone();
    let started = Instant::now();
    let waiter = tokio::spawn(async move {
        let mut req = pessimistic_req(&[b"k"], b"k", 20, 20);
        req.wait_timeout = 2000;
        storage.kv_pessimistic_lock(req).await.unwrap()
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished(), "must wait while the lock is held");
    s.storage
        .kv_pessimistic_rollback(kvrpcpb::PessimisticRollbackRequest {
            context: ctx(),
            start_version: 10,
            for_update_ts: 10,
            keys: vec![b"k".to_vec()],
        })
        .await
        .unwrap();
    let resp = waiter.await.unwrap();
    assert!(resp.errors.is_empty(), "{:?}", resp.errors);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "woken up, not timed out"
    );
    s.must_locked(b"k", 20);
}

#[tokio::test]
async fn pessimistic_lock_wait_times_out_with_locked_and_wakes_into_conflict() {
    let s = new_store();
    s.must_pessimistic_lock(&[b"k"], b"k", 10, 10).await;
    let started = Instant::now();
    let mut req = pessimistic_req(&[b"k"], b"k", 20, 20);
    req.wait_timeout = 200;
    let resp = s.pessimistic_lock(req).await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(
        resp.errors[0].locked.as_ref().map(|l| l.lock_version),
        Some(10)
    );
    assert_eq!(s.storage.lock_manager().waiter_count(), 0);
    // When the holder commits, the woken waiter sees the newer write.
    let storage = s.storage.clone();
    let waiter = tokio::spawn(async move {
        let mut req = pessimistic_req(&[b"k"], b"k", 20, 20);
        req.wait_timeout = 2000;
        storage.kv_pessimistic_lock(req).await.unwrap()
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(s
        .prewrite(pessimistic_prewrite(vec![put(b"k", b"v")], b"k", 10, 10))
        .await
        .errors
        .is_empty());
    s.must_commit(&[b"k"], 10, 30).await;
    let resp = tokio::time::timeout(Duration::from_secs(1), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        resp.errors[0]
            .conflict
            .as_ref()
            .map(|c| c.conflict_commit_ts),
        Some(30)
    );
}

#[tokio::test]
async fn deadlocks_are_detected() {
    let s = new_store();
    s.must_pessimistic_lock(&[b"a"], b"a", 10, 10).await;
    s.must_pessimistic_lock(&[b"b"], b"b", 20, 20).await;
    // Txn 10 waits for b (held by 20) ...
    let storage = s.storage.clone();
    let t10 = tokio::spawn(async move {
        let mut req = pessimistic_req(&[b"b"], b"a", 10, 11);
        req.wait_timeout = 3000;
        storage.kv_pessimistic_lock(req).await.unwrap()
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ... so txn 20 waiting for a (held by 10) closes a cycle.
    let mut req = pessimistic_req(&[b"a"], b"b", 20, 21);
    req.wait_timeout = 3000;
    let resp = s.pessimistic_lock(req).await;
    let dl = resp.errors[0].deadlock.clone().expect("deadlock");
    assert_eq!((dl.lock_ts, dl.lock_key.as_slice()), (10, b"a".as_slice()));
    assert_eq!(
        dl.deadlock_key_hash,
        crate::storage::lock_manager::key_hash(b"b")
    );
    // Txn 20 gives up (a pessimistic rollback leaves no record that would
    // conflict with txn 10's for_update_ts); txn 10 gets its lock.
    s.storage
        .kv_pessimistic_rollback(kvrpcpb::PessimisticRollbackRequest {
            context: ctx(),
            start_version: 20,
            for_update_ts: 20,
            keys: vec![b"b".to_vec()],
        })
        .await
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(2), t10)
        .await
        .unwrap()
        .unwrap();
    assert!(resp.errors.is_empty(), "{:?}", resp.errors);
    s.must_locked(b"b", 10);
}

#[tokio::test]
async fn check_secondary_locks_reports_locks_commits_and_rolls_back_missing() {
    let s = new_store();
    let mut req = prewrite_req(
        vec![put(b"p", b"v"), put(b"s1", b"v"), put(b"s2", b"v")],
        b"p",
        10,
    );
    req.use_async_commit = true;
    req.secondaries = vec![b"s1".to_vec(), b"s2".to_vec()];
    assert!(s.prewrite(req).await.errors.is_empty());
    let check = |keys: &[&[u8]], start| kvrpcpb::CheckSecondaryLocksRequest {
        context: ctx(),
        keys: keys.iter().map(|k| k.to_vec()).collect(),
        start_version: start,
    };
    let r = s
        .storage
        .kv_check_secondary_locks(check(&[b"s1", b"s2"], 10))
        .await
        .unwrap();
    assert_eq!((r.locks.len(), r.commit_ts), (2, 0));
    assert!(r.locks.iter().all(|l| l.use_async_commit));
    s.must_commit(&[b"s1"], 10, 50).await;
    let r = s
        .storage
        .kv_check_secondary_locks(check(&[b"s1"], 10))
        .await
        .unwrap();
    assert_eq!((r.locks.len(), r.commit_ts), (0, 50));
    // A key that never got its lock: rolled back now, and says so.
    let r = s
        .storage
        .kv_check_secondary_locks(check(&[b"s2", b"s3"], 10))
        .await
        .unwrap();
    assert_eq!((r.locks.len(), r.commit_ts, r.error), (0, 0, None));
    assert_eq!(s.writes(b"s3")[0].1.write_type, WriteType::Rollback);
    let e = s
        .prewrite_err(prewrite_req(vec![put(b"s3", b"v")], b"p", 10))
        .await;
    assert!(e.conflict.is_some(), "late prewrite must fail");
    // A pessimistic lock on a secondary is rolled back too.
    s.must_pessimistic_lock(&[b"q"], b"p", 60, 60).await;
    let r = s
        .storage
        .kv_check_secondary_locks(check(&[b"q"], 60))
        .await
        .unwrap();
    assert_eq!((r.locks.len(), r.commit_ts), (0, 0));
    s.must_unlocked(b"q");
    assert_eq!(s.writes(b"q")[0].1.write_type, WriteType::Rollback);
}

#[tokio::test]
async fn scan_lock_and_resolve_lock() {
    let s = new_store();
    s.must_prewrite(
        vec![put(b"a", b"1"), put(b"b", b"2"), put(b"c", &[3u8; 400])],
        b"a",
        10,
    )
    .await;
    s.must_prewrite(vec![put(b"d", b"4")], b"d", 20).await;
    s.must_prewrite(vec![put(b"e", b"5")], b"e", 30).await;
    let scan = |max_version, start: &[u8], limit| kvrpcpb::ScanLockRequest {
        context: ctx(),
        max_version,
        start_key: start.to_vec(),
        limit,
        end_key: vec![],
    };
    let r = s.storage.kv_scan_lock(scan(25, b"", 0)).await.unwrap();
    let keys: Vec<&[u8]> = r.locks.iter().map(|l| l.key.as_slice()).collect();
    assert_eq!(keys, vec![b"a".as_slice(), b"b", b"c", b"d"]);
    let r = s.storage.kv_scan_lock(scan(100, b"b", 2)).await.unwrap();
    assert_eq!(
        r.locks.iter().map(|l| l.lock_version).collect::<Vec<_>>(),
        vec![10, 10]
    );

    // Commit txn 10 everywhere, roll back 20 and 30 in one batch request.
    let r = s
        .storage
        .kv_resolve_lock(kvrpcpb::ResolveLockRequest {
            context: ctx(),
            start_version: 10,
            commit_version: 15,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(r.error.is_none());
    let r = s
        .storage
        .kv_resolve_lock(kvrpcpb::ResolveLockRequest {
            context: ctx(),
            txn_infos: vec![
                kvrpcpb::TxnInfo {
                    txn: 20,
                    status: 0,
                    is_txn_file: false,
                },
                kvrpcpb::TxnInfo {
                    txn: 30,
                    status: 0,
                    is_txn_file: false,
                },
            ],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(r.error.is_none());
    assert_eq!(s.count(CfName::Lock), 0);
    s.must_get(b"c", 15, Some(&[3u8; 400])).await;
    s.must_get(b"d", 40, None).await;
    assert_eq!(s.writes(b"e")[0].1.write_type, WriteType::Rollback);
}

#[tokio::test]
async fn resolve_lock_works_in_batches() {
    let s = new_store_with(crate::storage::StorageConfig {
        batch_keys: 3,
        ..Default::default()
    });
    let keys: Vec<Vec<u8>> = (0..10u8).map(|i| vec![b'k', i]).collect();
    s.must_prewrite(keys.iter().map(|k| put(k, b"v")).collect(), &keys[0], 10)
        .await;
    let r = s
        .storage
        .kv_resolve_lock(kvrpcpb::ResolveLockRequest {
            context: ctx(),
            start_version: 10,
            commit_version: 20,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(r.error.is_none());
    assert_eq!(s.count(CfName::Lock), 0);
    for k in &keys {
        s.must_get(k, 20, Some(b"v")).await;
    }
}

#[tokio::test]
async fn scans_forward_reverse_with_limits_and_locks() {
    let s = new_store();
    for (i, k) in [b"a", b"b", b"c", b"d", b"e"].iter().enumerate() {
        s.must_put(*k, &[b'0' + i as u8; 300], 10, 20).await;
    }
    s.must_prewrite(vec![del(b"b")], b"b", 30).await;
    s.must_commit(&[b"b"], 30, 40).await;
    s.must_prewrite(vec![put(b"d", b"new")], b"d", 50).await;
    let scan = |start: &[u8], end: &[u8], limit, reverse, key_only| kvrpcpb::ScanRequest {
        context: ctx(),
        start_key: start.to_vec(),
        end_key: end.to_vec(),
        limit,
        version: 60,
        key_only,
        reverse,
        sample_step: 0,
    };
    let keys = |r: &kvrpcpb::ScanResponse| -> Vec<Vec<u8>> {
        r.pairs.iter().map(|p| p.key.clone()).collect()
    };
    let r = s
        .storage
        .kv_scan(scan(b"", b"", 10, false, false))
        .await
        .unwrap();
    assert_eq!(
        keys(&r),
        vec![b"a".to_vec(), b"c".to_vec(), b"d".to_vec(), b"e".to_vec()]
    );
    assert_eq!(r.pairs[1].value, vec![b'2'; 300]);
    assert_eq!(
        r.pairs[2]
            .error
            .as_ref()
            .and_then(|e| e.locked.as_ref())
            .map(|l| l.lock_version),
        Some(50)
    );
    let r = s
        .storage
        .kv_scan(scan(b"b", b"e", 10, false, true))
        .await
        .unwrap();
    assert_eq!(keys(&r), vec![b"c".to_vec(), b"d".to_vec()]);
    assert!(r.pairs[0].value.is_empty());
    let r = s
        .storage
        .kv_scan(scan(b"a", b"", 2, false, false))
        .await
        .unwrap();
    assert_eq!(keys(&r), vec![b"a".to_vec(), b"c".to_vec()]);
    // Reverse: start_key is the exclusive upper bound, end_key the lower.
    let r = s
        .storage
        .kv_scan(scan(b"e", b"a", 10, true, false))
        .await
        .unwrap();
    assert_eq!(keys(&r), vec![b"d".to_vec(), b"c".to_vec(), b"a".to_vec()]);
    let r = s
        .storage
        .kv_scan(scan(b"", b"", 2, true, false))
        .await
        .unwrap();
    assert_eq!(keys(&r), vec![b"e".to_vec(), b"d".to_vec()]);
    let r = s
        .storage
        .kv_scan(scan(b"", b"", 0, false, false))
        .await
        .unwrap();
    assert!(r.pairs.is_empty());
    // At an older version the deleted key is back and the lock is invisible.
    let mut old = scan(b"", b"", 10, true, false);
    old.version = 35;
    assert_eq!(s.storage.kv_scan(old).await.unwrap().pairs.len(), 5);
}

#[tokio::test]
async fn gc_keeps_the_latest_visible_version() {
    let s = new_store();
    let long = vec![1u8; 500];
    s.must_put(b"k", &long, 10, 20).await;
    s.must_put(b"k", b"v2", 30, 40).await;
    s.must_prewrite(vec![mutation(Op::Lock, b"k", b"")], b"k", 50)
        .await;
    s.must_commit(&[b"k"], 50, 60).await;
    s.must_rollback(&[b"k"], 70).await;
    s.must_put(b"k", b"v3", 80, 90).await;
    s.must_put(b"d", &long, 10, 20).await;
    s.must_prewrite(vec![del(b"d")], b"d", 30).await;
    s.must_commit(&[b"d"], 30, 40).await;
    assert_eq!(s.count(CfName::Default), 2);

    let stats = s
        .storage
        .gc(&EngineContext::default(), 75, b"", b"")
        .await
        .unwrap();
    assert_eq!(stats.keys, 2);
    // k: 90 (above safe point) and 40 (newest Put <= 75) stay.
    let versions: Vec<u64> = s.writes(b"k").iter().map(|(ts, _)| *ts).collect();
    assert_eq!(versions, vec![90, 40]);
    s.must_get(b"k", 75, Some(b"v2")).await;
    s.must_get(b"k", 90, Some(b"v3")).await;
    // d: deleted below the safe point, so everything goes, values included.
    assert!(s.writes(b"d").is_empty());
    assert_eq!(s.count(CfName::Default), 0);
    assert_eq!(stats.deleted_versions, 3 + 2);
    // Idempotent.
    let again = s
        .storage
        .gc(&EngineContext::default(), 75, b"", b"")
        .await
        .unwrap();
    assert_eq!(again.deleted_versions, 0);
    // KvGC wires to the same thing.
    s.storage
        .kv_gc(kvrpcpb::GcRequest {
            context: ctx(),
            safe_point: 100,
        })
        .await
        .unwrap();
    assert_eq!(s.writes(b"k").len(), 1);
}

#[tokio::test]
async fn gc_handles_many_keys_across_batches_and_bounds() {
    let s = new_store_with(crate::storage::StorageConfig {
        batch_keys: 2,
        ..Default::default()
    });
    for i in 0..7u8 {
        s.must_put(&[i], b"a", 10, 20).await;
        s.must_put(&[i], b"b", 30, 40).await;
    }
    let start = crate::codec::encode_bytes(&[2]);
    let end = crate::codec::encode_bytes(&[5]);
    let stats = s
        .storage
        .gc(&EngineContext::default(), 50, &start, &end)
        .await
        .unwrap();
    assert_eq!((stats.keys, stats.deleted_versions), (3, 3));
    assert_eq!(s.writes(&[1]).len(), 2);
    assert_eq!(s.writes(&[3]).len(), 1);
    assert_eq!(s.writes(&[5]).len(), 2);
}

#[tokio::test]
async fn delete_range_and_unsafe_destroy_range_drop_everything() {
    let s = new_store();
    for k in [b"a", b"b", b"c"] {
        s.must_put(k, &[7u8; 300], 10, 20).await;
    }
    s.must_prewrite_put(b"b", b"locked", b"b", 30).await;
    s.storage
        .kv_delete_range(kvrpcpb::DeleteRangeRequest {
            context: ctx(),
            start_key: b"b".to_vec(),
            end_key: b"c".to_vec(),
            notify_only: false,
        })
        .await
        .unwrap();
    s.must_unlocked(b"b");
    s.must_get(b"b", 40, None).await;
    s.must_get(b"a", 40, Some(&[7u8; 300])).await;
    s.storage
        .unsafe_destroy_range(kvrpcpb::UnsafeDestroyRangeRequest {
            context: ctx(),
            start_key: b"".to_vec(),
            end_key: b"".to_vec(),
        })
        .await
        .unwrap();
    assert_eq!(
        s.count(CfName::Write) + s.count(CfName::Default) + s.count(CfName::Lock),
        0
    );
}
