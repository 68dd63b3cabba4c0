//! A Region's new leader has not seen the reads its predecessor served, so
//! before async-commit and 1PC prewrites pick commit timestamps from its
//! `max_ts` it syncs that from the TSO; until then they are answered
//! `MaxTimestampNotSynced`.

use std::sync::atomic::{AtomicBool, Ordering};

use futures::future::BoxFuture;
use shale_proto::kvrpcpb;

use super::*;
use crate::raftstore::MaxTsSync;
use crate::storage::{ConcurrencyManager, Storage, StorageConfig};

/// A TSO that has handed out timestamps up to `ts` (reads at `ts` may have
/// been served by the previous leader), reachable or not.
struct FakeTso {
    cm: ConcurrencyManager,
    ts: u64,
    reachable: AtomicBool,
}

impl MaxTsSync for Arc<FakeTso> {
    fn sync(&self) -> BoxFuture<'static, Result<(), String>> {
        let this = self.clone();
        Box::pin(async move {
            if !this.reachable.load(Ordering::SeqCst) {
                return Err("placement unreachable".into());
            }
            this.cm.sync_to_tso(this.ts);
            Ok(())
        })
    }
}

const TSO_NOW: u64 = 5_000 << 18;

async fn store_with_tso(
    reachable: bool,
) -> (Arc<MapResolver>, TestStore, Storage<RaftKv>, Arc<FakeTso>) {
    let resolver = Arc::new(MapResolver::default());
    let cm = ConcurrencyManager::new();
    let tso = Arc::new(FakeTso {
        cm: cm.clone(),
        ts: TSO_NOW,
        reachable: AtomicBool::new(reachable),
    });
    let store = start_store_with(
        1,
        &resolver,
        &[region(1, b"", b"", &[(11, 1)])],
        Arc::new(tso.clone()),
    )
    .await;
    leader_of(&[&store], 1).await;
    let storage = Storage::with_concurrency_manager(
        RaftKv::new(store.router.clone()),
        StorageConfig::default(),
        cm,
    );
    (resolver, store, storage, tso)
}

fn prewrite(
    store: &TestStore,
    key: &[u8],
    start_ts: u64,
    async_commit: bool,
) -> kvrpcpb::PrewriteRequest {
    let region = store.router.peer(1).unwrap().region();
    kvrpcpb::PrewriteRequest {
        context: Some(kvrpcpb::Context {
            region_id: 1,
            region_epoch: region.region_epoch,
            ..Default::default()
        }),
        mutations: vec![kvrpcpb::Mutation {
            op: kvrpcpb::Op::Put as i32,
            key: key.to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        }],
        primary_lock: key.to_vec(),
        start_version: start_ts,
        lock_ttl: 3_000,
        use_async_commit: async_commit,
        try_one_pc: !async_commit,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_commits_async_transactions_above_every_tso_timestamp() {
    let (_resolver, store, storage, _tso) = store_with_tso(true).await;
    // start_ts 100: with max_ts left at 0 the commit would land at 101,
    // below reads the previous leader may have served at TSO_NOW.
    let resp = storage
        .kv_prewrite(prewrite(&store, b"k", 100, true))
        .await
        .unwrap();
    assert!(resp.errors.is_empty(), "{:?}", resp.errors);
    assert!(
        resp.min_commit_ts > TSO_NOW,
        "async commit at {} is below the TSO ({TSO_NOW})",
        resp.min_commit_ts
    );
    let resp = storage
        .kv_prewrite(prewrite(&store, b"j", 100, false))
        .await
        .unwrap();
    assert!(
        resp.one_pc_commit_ts > TSO_NOW,
        "1PC at {}",
        resp.one_pc_commit_ts
    );
    store.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn until_max_ts_is_synced_async_commit_and_1pc_wait_then_are_refused() {
    let (_resolver, store, storage, tso) = store_with_tso(false).await;
    for async_commit in [true, false] {
        let refused = storage
            .kv_prewrite(prewrite(&store, b"k", 100, async_commit))
            .await;
        assert!(
            matches!(&refused, Err(crate::storage::StorageError::Engine(EngineError::Region(e)))
                if e.max_timestamp_not_synced.is_some()),
            "{refused:?}"
        );
    }
    assert!(store
        .engine
        .snapshot()
        .get_cf(CfName::Lock, &crate::storage::mvcc::lock_key(b"k"))
        .unwrap()
        .is_none());
    // Plain 2PC takes its commit timestamp from the TSO: it goes ahead.
    let mut plain = prewrite(&store, b"k", 100, false);
    plain.try_one_pc = false;
    let resp = storage.kv_prewrite(plain).await.unwrap();
    assert!(resp.errors.is_empty(), "{:?}", resp.errors);
    // Once the TSO answers, the leader syncs and async commit works.
    tso.reachable.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + WAIT;
    loop {
        match storage.kv_prewrite(prewrite(&store, b"m", 100, true)).await {
            Ok(resp) => {
                assert!(resp.min_commit_ts > TSO_NOW);
                break;
            }
            Err(e) if Instant::now() < deadline => eprintln!("retrying: {e}"),
            Err(e) => panic!("max_ts never synced: {e}"),
        }
    }
    store.stop().await;
}
