//! Transaction tests, part three: in-flight prewrites seen by readers,
//! overlapped rollbacks, lite resolve, and request-shape variants.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use shale_proto::kvrpcpb::{self, Action};

use crate::storage::mvcc::{Lock, LockType, WriteType};
use crate::storage::test_util::*;

/// A prewrite of an async-commit transaction that has published its memory
/// lock but not yet written it must block readers at or above its
/// min_commit_ts, in every read path.
#[tokio::test]
async fn in_flight_async_prewrites_block_readers() {
    let s = new_store();
    s.must_put(b"k", b"old", 1, 2).await;
    let cm = s.storage.concurrency_manager().clone();
    let guard = cm
        .lock_key::<()>(b"k", |max_ts| {
            let mut l = Lock::new(LockType::Put, b"k".to_vec(), 10, 100);
            l.use_async_commit = true;
            l.min_commit_ts = max_ts.max(10) + 1;
            Ok(l)
        })
        .unwrap();
    assert_eq!(s.must_get_locked(b"k", 20).await.lock_version, 10);
    s.must_get(b"k", 10, Some(b"old")).await;
    let scan = s
        .storage
        .kv_scan(kvrpcpb::ScanRequest {
            context: ctx(),
            limit: 10,
            version: 20,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(scan.error.and_then(|e| e.locked).is_some());
    let batch = s
        .storage
        .kv_batch_get(kvrpcpb::BatchGetRequest {
            context: ctx(),
            keys: vec![b"k".to_vec()],
            version: 20,
        })
        .await
        .unwrap();
    assert!(batch.pairs[0].error.is_some());
    drop(guard);
    s.must_get(b"k", 20, Some(b"old")).await;
}

/// Rolling back txn 20 on a key that txn 10 still has locked: if txn 10
/// then commits exactly at 20, its commit record carries the rollback.
#[tokio::test]
async fn overlapped_rollback_survives_a_commit_at_the_same_ts() {
    let s = new_store();
    s.must_prewrite_put(b"k", b"a", b"k", 10).await;
    let r = s
        .check_txn_status(kvrpcpb::CheckTxnStatusRequest {
            primary_key: b"k".to_vec(),
            lock_ts: 20,
            current_ts: 30,
            rollback_if_not_exist: true,
            ..Default::default()
        })
        .await;
    assert_eq!(r.action, Action::LockNotExistRollback as i32);
    assert_eq!(s.must_locked(b"k", 10).rollback_ts, vec![20]);
    s.must_commit(&[b"k"], 10, 20).await;
    let (ts, write) = s.writes(b"k")[0].clone();
    assert_eq!(
        (ts, write.write_type, write.start_ts),
        (20, WriteType::Put, 10)
    );
    assert!(write.has_overlapped_rollback);
    s.must_get(b"k", 20, Some(b"a")).await;
    // Txn 20 is known to be rolled back; its late prewrite fails.
    let r = s
        .check_txn_status(kvrpcpb::CheckTxnStatusRequest {
            primary_key: b"k".to_vec(),
            lock_ts: 20,
            current_ts: 30,
            ..Default::default()
        })
        .await;
    assert_eq!(
        (r.error, r.commit_version, r.action),
        (None, 0, Action::NoAction as i32)
    );
    let e = s
        .prewrite_err(prewrite_req(vec![put(b"k", b"b")], b"k", 20))
        .await;
    assert!(e.conflict.is_some());
    // Txn 10 is still reported committed.
    let r = s
        .check_txn_status(kvrpcpb::CheckTxnStatusRequest {
            primary_key: b"k".to_vec(),
            lock_ts: 10,
            current_ts: 30,
            ..Default::default()
        })
        .await;
    assert_eq!(r.commit_version, 20);
}

#[tokio::test]
async fn resolve_lock_lite_and_pessimistic_rollback_without_keys() {
    let s = new_store();
    s.must_prewrite(vec![put(b"a", b"1"), put(b"b", b"2")], b"a", 10)
        .await;
    let r = s
        .storage
        .kv_resolve_lock(kvrpcpb::ResolveLockRequest {
            context: ctx(),
            start_version: 10,
            commit_version: 15,
            keys: vec![b"b".to_vec()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(r.error.is_none());
    s.must_unlocked(b"b");
    s.must_locked(b"a", 10);
    s.must_get(b"b", 15, Some(b"2")).await;
    // Lite rollback of a key without a lock leaves a rollback record.
    s.storage
        .kv_resolve_lock(kvrpcpb::ResolveLockRequest {
            context: ctx(),
            start_version: 10,
            commit_version: 0,
            keys: vec![b"c".to_vec()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(s.writes(b"c")[0].1.write_type, WriteType::Rollback);

    s.must_pessimistic_lock(&[b"p", b"q"], b"p", 30, 30).await;
    s.must_pessimistic_lock(&[b"r"], b"r", 40, 40).await;
    s.storage
        .kv_pessimistic_rollback(kvrpcpb::PessimisticRollbackRequest {
            context: ctx(),
            start_version: 30,
            for_update_ts: 30,
            keys: vec![],
        })
        .await
        .unwrap();
    s.must_unlocked(b"p");
    s.must_unlocked(b"q");
    s.must_locked(b"r", 40);
}

#[tokio::test]
async fn lock_only_if_exists_skips_missing_keys() {
    let s = new_store();
    s.must_put(b"e", b"v", 1, 2).await;
    let mut req = pessimistic_req(&[b"e", b"m"], b"e", 10, 10);
    req.return_values = true;
    req.lock_only_if_exists = true;
    let resp = s.pessimistic_lock(req.clone()).await;
    assert!(resp.errors.is_empty());
    assert_eq!(resp.not_founds, vec![false, true]);
    s.must_locked(b"e", 10);
    s.must_unlocked(b"m");
    req.return_values = false;
    assert!(
        s.storage.kv_pessimistic_lock(req).await.is_err(),
        "needs return_values"
    );
}

#[tokio::test]
async fn prewrite_of_own_prewritten_key_by_pessimistic_lock_is_refused() {
    let s = new_store();
    s.must_prewrite_put(b"k", b"v", b"k", 10).await;
    let resp = s
        .pessimistic_lock(pessimistic_req(&[b"k"], b"k", 10, 10))
        .await;
    assert!(
        resp.errors[0].abort.contains("LockTypeNotMatch"),
        "{:?}",
        resp.errors
    );
    // And an optimistic prewrite on a pessimistic lock is refused too.
    s.must_pessimistic_lock(&[b"p"], b"p", 20, 20).await;
    let e = s
        .prewrite_err(prewrite_req(vec![put(b"p", b"v")], b"p", 20))
        .await;
    assert!(e.abort.contains("LockTypeNotMatch"));
}
