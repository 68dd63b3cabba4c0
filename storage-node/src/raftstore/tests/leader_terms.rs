//! A write command is decided on a snapshot taken while its replica led in
//! one term. If leadership moved away and came back before the write is
//! appended, another store may have committed changes the decision never
//! saw (a 1PC prewrite then committed over a newer version: a lost
//! update), so such a write must not apply.

use super::*;

fn epoch_of(store: &TestStore) -> Epoch {
    let e = store.router.peer(1).unwrap().region().region_epoch.unwrap();
    Epoch {
        conf_ver: e.conf_ver,
        version: e.version,
    }
}

/// Hands Region 1's leadership from `stores[from]` to `stores[to]`.
async fn move_leader(stores: &[TestStore], from: usize, to: usize) {
    let deadline = Instant::now() + WAIT;
    let target = 101 + to as u64;
    loop {
        let _ = stores[from]
            .router
            .peer(1)
            .unwrap()
            .transfer_leader(target)
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if stores[to].router.peer(1).unwrap().is_leader() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "leadership did not move to store {}",
            to + 1
        );
    }
}

/// Three replicas; returns the stores and the one leading, after its
/// leadership went away and came back (so its term moved on by two).
async fn leader_that_came_back() -> (Arc<MapResolver>, Vec<TestStore>, usize, u64) {
    let (resolver, stores) = three_stores().await;
    let refs: Vec<&TestStore> = stores.iter().collect();
    write(&refs, 1, put("seed", "v")).await;
    let leader = leader_of(&refs, 1).await;
    let kv = RaftKv::new(stores[leader].router.clone());
    let decided_in = kv
        .async_snapshot(&ctx_of(&stores[leader], 1))
        .await
        .unwrap()
        .term();
    assert!(decided_in > 0, "a leader's snapshot carries its term");
    let other = (leader + 1) % 3;
    move_leader(&stores, leader, other).await;
    eventually("the old leader caught up", || {
        stores[leader].get(b"seed").is_some()
    })
    .await;
    move_leader(&stores, other, leader).await;
    let now = stores[leader]
        .router
        .peer(1)
        .unwrap()
        .leader_term()
        .unwrap();
    assert!(now > decided_in);
    (resolver, stores, leader, decided_in)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_decided_in_an_earlier_term_is_refused() {
    let (_resolver, stores, leader, decided_in) = leader_that_came_back().await;
    let store = &stores[leader];
    let kv = RaftKv::new(store.router.clone());
    let ctx = ctx_of(store, 1);

    let stale = EngineContext {
        term: decided_in,
        ..ctx.clone()
    };
    let refused = kv.async_write(&stale, put("k", "old decision")).await;
    assert!(
        matches!(&refused, Err(EngineError::Region(e)) if e.stale_command.is_some()),
        "{refused:?}"
    );
    assert_eq!(store.get(b"k"), None);

    // The apply refuses it too, should a proposal of the old term get that
    // far (proposed just before the term changed).
    let peer = store.router.peer(1).unwrap();
    let result = peer
        .propose(RegionCommand::WriteInTerm {
            epoch: epoch_of(store),
            term: decided_in,
            modifies: put("k", "old decision"),
        })
        .await
        .unwrap();
    assert_eq!(result, CommandResult::TermChanged);
    assert_eq!(store.get(b"k"), None);

    // Decided again in the current term, it applies.
    let now = kv.async_snapshot(&ctx).await.unwrap().term();
    let current = EngineContext { term: now, ..ctx };
    kv.async_write(&current, put("k", "new decision"))
        .await
        .unwrap();
    assert_eq!(store.get(b"k").as_deref(), Some(&b"new decision"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transaction_command_is_bound_to_its_snapshot_term() {
    // Storage's write commands carry the snapshot's term to the engine:
    // after a term change they decide again on a new snapshot and apply.
    let (_resolver, stores, leader, _) = leader_that_came_back().await;
    let store = &stores[leader];
    let storage = crate::storage::Storage::new(
        RaftKv::new(store.router.clone()),
        crate::storage::StorageConfig::default(),
    );
    let region = store.router.peer(1).unwrap().region();
    let resp = storage
        .kv_prewrite(shale_proto::kvrpcpb::PrewriteRequest {
            context: Some(shale_proto::kvrpcpb::Context {
                region_id: 1,
                region_epoch: region.region_epoch,
                ..Default::default()
            }),
            mutations: vec![shale_proto::kvrpcpb::Mutation {
                op: shale_proto::kvrpcpb::Op::Put as i32,
                key: b"t".to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            }],
            primary_lock: b"t".to_vec(),
            start_version: 10,
            lock_ttl: 3000,
            try_one_pc: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(resp.errors.is_empty(), "{:?}", resp.errors);
    assert!(resp.one_pc_commit_ts > 10, "{resp:?}");
}
