//! A store holds many Regions, each replicated to its own set of stores.
//! Whatever a request to one Region reads or writes must stay within that
//! Region's keys: a write proposed through one Region's log reaches only
//! that Region's replicas, so touching another Region's keys from it makes
//! their replicas diverge (money created or lost in a bank).
//!
//! Every test runs on one store holding Region 1 `[.., m)` and Region 2
//! `[m, ..)` (Region boundaries in stored form: transactional keys are
//! memcomparable-encoded), each the sole replica of its group.

use shale_proto::kvrpcpb;

use super::*;
use crate::codec::encode_bytes;
use crate::storage::mvcc::{lock_key, versioned_key};
use crate::storage::{Storage, StorageConfig};

struct TwoRegions {
    _resolver: Arc<MapResolver>,
    store: TestStore,
    storage: Storage<RaftKv>,
}

async fn two_regions() -> TwoRegions {
    let resolver = Arc::new(MapResolver::default());
    let m = encode_bytes(b"m");
    let left = region(1, b"", &m, &[(11, 1)]);
    let right = region(2, &m, b"", &[(21, 1)]);
    let store = start_store(1, &resolver, &[left, right]).await;
    for region_id in [1, 2] {
        leader_of(&[&store], region_id).await;
    }
    let storage = Storage::new(RaftKv::new(store.router.clone()), StorageConfig::default());
    TwoRegions {
        _resolver: resolver,
        store,
        storage,
    }
}

impl TwoRegions {
    fn ctx(&self, region_id: u64) -> kvrpcpb::Context {
        let region = self.store.router.peer(region_id).unwrap().region();
        kvrpcpb::Context {
            region_id,
            region_epoch: region.region_epoch,
            ..Default::default()
        }
    }

    fn engine_ctx(&self, region_id: u64) -> EngineContext {
        ctx_of(&self.store, region_id)
    }

    fn has_lock(&self, key: &[u8]) -> bool {
        self.store
            .engine
            .snapshot()
            .get_cf(CfName::Lock, &lock_key(key))
            .unwrap()
            .is_some()
    }

    fn has_write(&self, key: &[u8], commit_ts: u64) -> bool {
        self.store
            .engine
            .snapshot()
            .get_cf(CfName::Write, &versioned_key(key, commit_ts))
            .unwrap()
            .is_some()
    }

    async fn prewrite(&self, region_id: u64, key: &[u8], primary: &[u8], start_ts: u64) {
        let resp = self
            .storage
            .kv_prewrite(kvrpcpb::PrewriteRequest {
                context: Some(self.ctx(region_id)),
                mutations: vec![kvrpcpb::Mutation {
                    op: kvrpcpb::Op::Put as i32,
                    key: key.to_vec(),
                    value: b"v".to_vec(),
                    ..Default::default()
                }],
                primary_lock: primary.to_vec(),
                start_version: start_ts,
                lock_ttl: 3_000,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(resp.errors.is_empty(), "{:?}", resp.errors);
    }

    async fn commit(&self, region_id: u64, key: &[u8], start_ts: u64, commit_ts: u64) {
        let resp = self
            .storage
            .kv_commit(kvrpcpb::CommitRequest {
                context: Some(self.ctx(region_id)),
                keys: vec![key.to_vec()],
                start_version: start_ts,
                commit_version: commit_ts,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(resp.error.is_none(), "{:?}", resp.error);
    }

    async fn stop(self) {
        self.store.stop().await;
    }
}

fn keys_in(snap: &impl Snapshot, cf: CfName) -> Vec<Vec<u8>> {
    use crate::engine::EngineIterator;
    let mut it = snap.iter_cf(cf, None, None).unwrap();
    let mut out = Vec::new();
    let mut valid = it.seek_to_first().unwrap();
    while valid {
        out.push(it.key().to_vec());
        valid = it.next().unwrap();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_one_region_shows_none_of_another_regions_keys() {
    let t = two_regions().await;
    let (a, x) = (encode_bytes(b"a"), encode_bytes(b"x"));
    let kv = RaftKv::new(t.store.router.clone());
    kv.async_write(
        &t.engine_ctx(1),
        vec![Modify::Put(CfName::Default, a.clone(), b"1".to_vec())],
    )
    .await
    .unwrap();
    kv.async_write(
        &t.engine_ctx(2),
        vec![Modify::Put(CfName::Default, x.clone(), b"2".to_vec())],
    )
    .await
    .unwrap();
    let snap = kv.async_snapshot(&t.engine_ctx(1)).await.unwrap();
    assert_eq!(keys_in(&snap, CfName::Default), vec![a.clone()]);
    assert_eq!(
        snap.get_cf(CfName::Default, &a).unwrap(),
        Some(b"1".to_vec())
    );
    assert!(
        snap.get_cf(CfName::Default, &x).is_err(),
        "a point read of another Region's key must be refused"
    );
    let snap = kv.async_snapshot(&t.engine_ctx(2)).await.unwrap();
    assert_eq!(keys_in(&snap, CfName::Default), vec![x]);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_lock_without_keys_resolves_only_its_own_regions_locks() {
    let t = two_regions().await;
    // One transaction (start_ts 10) with a key in each Region.
    t.prewrite(1, b"a", b"a", 10).await;
    t.prewrite(2, b"x", b"a", 10).await;
    // tikv-client resolves a lock by sending ResolveLock without keys to
    // the Region of the lock it met; here, a rollback through Region 1.
    let resp = t
        .storage
        .kv_resolve_lock(kvrpcpb::ResolveLockRequest {
            context: Some(t.ctx(1)),
            start_version: 10,
            commit_version: 0,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(resp.error.is_none(), "{:?}", resp.error);
    assert!(!t.has_lock(b"a"), "Region 1's lock is resolved");
    assert!(
        t.has_lock(b"x"),
        "Region 2's lock was resolved through Region 1's log: Region 2's other replicas keep it"
    );
    // Committing through Region 1 must not write Region 2's record either.
    t.prewrite(1, b"b", b"b", 20).await;
    t.prewrite(2, b"y", b"b", 20).await;
    t.storage
        .kv_resolve_lock(kvrpcpb::ResolveLockRequest {
            context: Some(t.ctx(1)),
            start_version: 20,
            commit_version: 21,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(t.has_write(b"b", 21));
    assert!(
        !t.has_write(b"y", 21),
        "Region 2's key committed through Region 1"
    );
    assert!(t.has_lock(b"y"));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_lock_gc_and_pessimistic_rollback_see_only_their_region() {
    let t = two_regions().await;
    // Two versions of x in Region 2, the older one below the safe point.
    for (start, commit) in [(10, 11), (20, 21)] {
        t.prewrite(2, b"x", b"x", start).await;
        t.commit(2, b"x", start, commit).await;
    }
    t.prewrite(2, b"y", b"y", 30).await;
    let scanned = t
        .storage
        .kv_scan_lock(kvrpcpb::ScanLockRequest {
            context: Some(t.ctx(1)),
            max_version: 100,
            limit: 0,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(scanned.locks.is_empty(), "{:?}", scanned.locks);
    t.storage
        .kv_gc(kvrpcpb::GcRequest {
            context: Some(t.ctx(1)),
            safe_point: 25,
        })
        .await
        .unwrap();
    assert!(
        t.has_write(b"x", 11),
        "GC through Region 1 removed Region 2's old version"
    );
    // A pessimistic lock in Region 2, rolled back "everywhere" through Region 1.
    let locked = t
        .storage
        .kv_pessimistic_lock(kvrpcpb::PessimisticLockRequest {
            context: Some(t.ctx(2)),
            mutations: vec![kvrpcpb::Mutation {
                op: kvrpcpb::Op::PessimisticLock as i32,
                key: b"z".to_vec(),
                ..Default::default()
            }],
            primary_lock: b"z".to_vec(),
            start_version: 40,
            for_update_ts: 40,
            lock_ttl: 3_000,
            wait_timeout: -1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(locked.errors.is_empty(), "{:?}", locked.errors);
    t.storage
        .kv_pessimistic_rollback(kvrpcpb::PessimisticRollbackRequest {
            context: Some(t.ctx(1)),
            start_version: 40,
            for_update_ts: 40,
            keys: vec![],
        })
        .await
        .unwrap();
    assert!(
        t.has_lock(b"z"),
        "Region 2's pessimistic lock was rolled back through Region 1"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_carrying_another_regions_key_is_refused_whole() {
    let t = two_regions().await;
    let (a, x) = (encode_bytes(b"a"), encode_bytes(b"x"));
    let kv = RaftKv::new(t.store.router.clone());
    let mixed = vec![
        Modify::Put(CfName::Default, a.clone(), b"1".to_vec()),
        Modify::Put(CfName::Default, x.clone(), b"1".to_vec()),
    ];
    let refused = kv.async_write(&t.engine_ctx(1), mixed.clone()).await;
    assert!(
        matches!(&refused, Err(EngineError::Region(e)) if e.key_not_in_region.is_some()),
        "{refused:?}"
    );
    // The apply refuses it too, should a proposal get that far.
    let peer = t.store.router.peer(1).unwrap();
    let epoch = peer.region().region_epoch.unwrap();
    let result = peer
        .propose(RegionCommand::Write {
            epoch: Epoch {
                conf_ver: epoch.conf_ver,
                version: epoch.version,
            },
            modifies: mixed,
        })
        .await
        .unwrap();
    assert_ne!(result, CommandResult::Applied);
    assert_eq!(
        t.store.get(&a),
        None,
        "nothing of a refused write is applied"
    );
    assert_eq!(t.store.get(&x), None);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_deletes_with_an_open_end_stay_in_their_region() {
    let t = two_regions().await;
    // Raw keys (API V1) are stored as given: b is in Region 1, x in Region 2.
    for (region_id, key) in [(1, b"b"), (2, b"x")] {
        t.storage
            .raw_put(kvrpcpb::RawPutRequest {
                context: Some(t.ctx(region_id)),
                key: key.to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    t.storage
        .raw_delete_range(kvrpcpb::RawDeleteRangeRequest {
            context: Some(t.ctx(1)),
            start_key: b"a".to_vec(),
            end_key: vec![],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(t.store.get(b"b"), None, "Region 1's key is deleted");
    assert!(
        t.store.get(b"x").is_some(),
        "RawDeleteRange with an empty end key deleted Region 2's data"
    );
    // The transactional DeleteRange, and a range delete at the engine.
    t.prewrite(2, b"y", b"y", 10).await;
    t.commit(2, b"y", 10, 11).await;
    t.storage
        .kv_delete_range(kvrpcpb::DeleteRangeRequest {
            context: Some(t.ctx(1)),
            start_key: vec![],
            end_key: vec![],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        t.has_write(b"y", 11),
        "DeleteRange deleted Region 2's version"
    );
    let kv = RaftKv::new(t.store.router.clone());
    kv.async_write(
        &t.engine_ctx(1),
        vec![Modify::DeleteRange(CfName::Default, vec![], vec![])],
    )
    .await
    .unwrap();
    assert!(t.store.get(b"x").is_some());
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_naming_no_region_is_refused_and_writes_nothing() {
    let t = two_regions().await;
    // No context at all, and a context with region id 0: neither may reach
    // the store's engine around Raft (it would be acknowledged on one store
    // only, and wiped by the next snapshot of the Region owning the key).
    for context in [None, Some(kvrpcpb::Context::default())] {
        let refused = t
            .storage
            .raw_batch_put(kvrpcpb::RawBatchPutRequest {
                context,
                pairs: vec![kvrpcpb::KvPair {
                    key: b"b".to_vec(),
                    value: b"v".to_vec(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .await;
        let message = format!("{refused:?}");
        assert!(
            refused.is_err() && message.contains("names no region"),
            "{message}"
        );
    }
    let kv = RaftKv::new(t.store.router.clone());
    let snapshot = kv.async_snapshot(&EngineContext::default()).await;
    assert!(snapshot.is_err(), "a read naming no region is refused too");
    assert_eq!(t.store.get(b"b"), None, "nothing was written");
    // UnsafeDestroyRange addresses the whole store, as it is meant to.
    t.prewrite(2, b"y", b"y", 10).await;
    t.commit(2, b"y", 10, 11).await;
    t.storage
        .unsafe_destroy_range(kvrpcpb::UnsafeDestroyRangeRequest {
            context: None,
            start_key: b"a".to_vec(),
            end_key: b"z".to_vec(),
        })
        .await
        .unwrap();
    assert!(
        !t.has_write(b"y", 11),
        "UnsafeDestroyRange reached the store"
    );
    t.stop().await;
}
