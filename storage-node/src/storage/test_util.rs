//! Test fixtures: a `Storage` over a real RocksDB in a temp dir, request
//! builders, and `must_*` helpers that fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use shale_proto::kvrpcpb::{self, Op};

use crate::engine::{CfName, EngineIterator, LocalKv, RocksEngine, Snapshot};

use super::mvcc::{decode_versioned_key, Lock, MvccReader, Write};
use super::{Storage, StorageConfig};

pub struct TestStore {
    pub storage: Storage<LocalKv>,
    pub rocks: RocksEngine,
    _dir: tempfile::TempDir,
}

/// A TSO timestamp from physical milliseconds and a logical counter.
pub fn tso(physical_ms: u64, logical: u64) -> u64 {
    (physical_ms << 18) | logical
}

pub fn ctx() -> Option<kvrpcpb::Context> {
    Some(kvrpcpb::Context {
        region_id: 1,
        ..Default::default()
    })
}

pub fn mutation(op: Op, key: &[u8], value: &[u8]) -> kvrpcpb::Mutation {
    kvrpcpb::Mutation {
        op: op as i32,
        key: key.to_vec(),
        value: value.to_vec(),
        assertion: 0,
    }
}

pub fn put(key: &[u8], value: &[u8]) -> kvrpcpb::Mutation {
    mutation(Op::Put, key, value)
}

pub fn del(key: &[u8]) -> kvrpcpb::Mutation {
    mutation(Op::Del, key, b"")
}

pub fn prewrite_req(
    muts: Vec<kvrpcpb::Mutation>,
    primary: &[u8],
    start_ts: u64,
) -> kvrpcpb::PrewriteRequest {
    kvrpcpb::PrewriteRequest {
        context: ctx(),
        mutations: muts,
        primary_lock: primary.to_vec(),
        start_version: start_ts,
        lock_ttl: 3000,
        txn_size: 1,
        ..Default::default()
    }
}

pub fn pessimistic_req(
    keys: &[&[u8]],
    primary: &[u8],
    start_ts: u64,
    for_update_ts: u64,
) -> kvrpcpb::PessimisticLockRequest {
    kvrpcpb::PessimisticLockRequest {
        context: ctx(),
        mutations: keys
            .iter()
            .map(|k| mutation(Op::PessimisticLock, k, b""))
            .collect(),
        primary_lock: primary.to_vec(),
        start_version: start_ts,
        lock_ttl: 3000,
        for_update_ts,
        wait_timeout: -1,
        ..Default::default()
    }
}

pub fn new_store() -> TestStore {
    new_store_with(StorageConfig::default())
}

pub fn new_store_with(config: StorageConfig) -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    let rocks = RocksEngine::open(dir.path(), false).unwrap();
    let storage = Storage::new(LocalKv::new(rocks.clone()), config);
    TestStore {
        storage,
        rocks,
        _dir: dir,
    }
}

impl TestStore {
    pub async fn prewrite(&self, req: kvrpcpb::PrewriteRequest) -> kvrpcpb::PrewriteResponse {
        self.storage.kv_prewrite(req).await.unwrap()
    }

    pub async fn must_prewrite(&self, muts: Vec<kvrpcpb::Mutation>, primary: &[u8], start_ts: u64) {
        let resp = self.prewrite(prewrite_req(muts, primary, start_ts)).await;
        assert!(
            resp.errors.is_empty(),
            "prewrite at {start_ts} failed: {:?}",
            resp.errors
        );
    }

    pub async fn must_prewrite_put(&self, key: &[u8], value: &[u8], primary: &[u8], start_ts: u64) {
        self.must_prewrite(vec![put(key, value)], primary, start_ts)
            .await;
    }

    pub async fn prewrite_err(&self, req: kvrpcpb::PrewriteRequest) -> kvrpcpb::KeyError {
        let resp = self.prewrite(req).await;
        assert_eq!(
            resp.errors.len(),
            1,
            "expected one prewrite error, got {:?}",
            resp.errors
        );
        resp.errors.into_iter().next().unwrap()
    }

    pub async fn commit(
        &self,
        keys: &[&[u8]],
        start_ts: u64,
        commit_ts: u64,
    ) -> kvrpcpb::CommitResponse {
        self.storage
            .kv_commit(kvrpcpb::CommitRequest {
                context: ctx(),
                start_version: start_ts,
                keys: keys.iter().map(|k| k.to_vec()).collect(),
                commit_version: commit_ts,
                ..Default::default()
            })
            .await
            .unwrap()
    }

    pub async fn must_commit(&self, keys: &[&[u8]], start_ts: u64, commit_ts: u64) {
        let resp = self.commit(keys, start_ts, commit_ts).await;
        assert!(
            resp.error.is_none(),
            "commit {start_ts}->{commit_ts} failed: {:?}",
            resp.error
        );
        assert_eq!(resp.commit_version, commit_ts);
    }

    pub async fn must_put(&self, key: &[u8], value: &[u8], start_ts: u64, commit_ts: u64) {
        self.must_prewrite_put(key, value, key, start_ts).await;
        self.must_commit(&[key], start_ts, commit_ts).await;
    }

    pub async fn get_with(
        &self,
        key: &[u8],
        ts: u64,
        context: kvrpcpb::Context,
    ) -> kvrpcpb::GetResponse {
        self.storage
            .kv_get(kvrpcpb::GetRequest {
                context: Some(context),
                key: key.to_vec(),
                version: ts,
            })
            .await
            .unwrap()
    }

    pub async fn get(&self, key: &[u8], ts: u64) -> kvrpcpb::GetResponse {
        self.get_with(key, ts, ctx().unwrap()).await
    }

    pub async fn must_get(&self, key: &[u8], ts: u64, expected: Option<&[u8]>) {
        let resp = self.get(key, ts).await;
        assert!(
            resp.error.is_none(),
            "get {key:?}@{ts} failed: {:?}",
            resp.error
        );
        match expected {
            Some(v) => {
                assert!(
                    !resp.not_found,
                    "get {key:?}@{ts}: not found, expected {v:?}"
                );
                assert_eq!(resp.value, v, "get {key:?}@{ts}");
            }
            None => assert!(
                resp.not_found,
                "get {key:?}@{ts}: expected not found, got {:?}",
                resp.value
            ),
        }
    }

    pub async fn must_get_locked(&self, key: &[u8], ts: u64) -> kvrpcpb::LockInfo {
        let resp = self.get(key, ts).await;
        resp.error
            .and_then(|e| e.locked)
            .unwrap_or_else(|| panic!("get {key:?}@{ts}: expected Locked"))
    }

    pub async fn rollback(&self, keys: &[&[u8]], start_ts: u64) -> kvrpcpb::BatchRollbackResponse {
        self.storage
            .kv_batch_rollback(kvrpcpb::BatchRollbackRequest {
                context: ctx(),
                start_version: start_ts,
                keys: keys.iter().map(|k| k.to_vec()).collect(),
                ..Default::default()
            })
            .await
            .unwrap()
    }

    pub async fn must_rollback(&self, keys: &[&[u8]], start_ts: u64) {
        let resp = self.rollback(keys, start_ts).await;
        assert!(
            resp.error.is_none(),
            "rollback {start_ts} failed: {:?}",
            resp.error
        );
    }

    pub async fn pessimistic_lock(
        &self,
        req: kvrpcpb::PessimisticLockRequest,
    ) -> kvrpcpb::PessimisticLockResponse {
        self.storage.kv_pessimistic_lock(req).await.unwrap()
    }

    pub async fn must_pessimistic_lock(
        &self,
        keys: &[&[u8]],
        primary: &[u8],
        start_ts: u64,
        for_update_ts: u64,
    ) {
        let resp = self
            .pessimistic_lock(pessimistic_req(keys, primary, start_ts, for_update_ts))
            .await;
        assert!(
            resp.errors.is_empty(),
            "pessimistic lock failed: {:?}",
            resp.errors
        );
    }

    pub async fn check_txn_status(
        &self,
        req: kvrpcpb::CheckTxnStatusRequest,
    ) -> kvrpcpb::CheckTxnStatusResponse {
        let req = kvrpcpb::CheckTxnStatusRequest {
            context: ctx(),
            ..req
        };
        self.storage.kv_check_txn_status(req).await.unwrap()
    }

    pub fn load_lock(&self, key: &[u8]) -> Option<Lock> {
        let snap = self.rocks.snapshot();
        MvccReader::new(&snap).load_lock(key).unwrap()
    }

    pub fn must_locked(&self, key: &[u8], start_ts: u64) -> Lock {
        let lock = self
            .load_lock(key)
            .unwrap_or_else(|| panic!("{key:?} is not locked"));
        assert_eq!(lock.ts, start_ts, "{key:?} locked by another txn");
        lock
    }

    pub fn must_unlocked(&self, key: &[u8]) {
        assert!(
            self.load_lock(key).is_none(),
            "{key:?} is still locked: {:?}",
            self.load_lock(key)
        );
    }

    /// All write records of `key`, newest first.
    pub fn writes(&self, key: &[u8]) -> Vec<(u64, Write)> {
        let snap = self.rocks.snapshot();
        let mut it = snap.iter_cf(CfName::Write, None, None).unwrap();
        let mut out = vec![];
        let mut ok = it.seek_to_first().unwrap();
        while ok {
            let (k, ts) = decode_versioned_key(it.key()).unwrap();
            if k == key {
                out.push((ts, Write::decode(it.value()).unwrap()));
            }
            ok = it.next().unwrap();
        }
        out
    }

    /// Number of entries in a column family.
    pub fn count(&self, cf: CfName) -> usize {
        let snap = self.rocks.snapshot();
        let mut it = snap.iter_cf(cf, None, None).unwrap();
        let mut n = 0;
        let mut ok = it.seek_to_first().unwrap();
        while ok {
            n += 1;
            ok = it.next().unwrap();
        }
        n
    }
}
