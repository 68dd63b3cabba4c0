//! Region groups across three (and four) stores in one process: real
//! RocksDB, real gRPC transport on loopback, openraft underneath.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use parking_lot::RwLock;
use shale_proto::metapb;
use tokio::sync::watch;

use super::context::{StoreContext, StoreResolver};
use super::transport::{Dispatch, Envelope, Transport, TransportConfig};
use super::types::{CommandResult, Epoch, RegionCommand, SplitTarget};
use super::{RaftKv, Router, RouterDispatch};
use crate::engine::{CfName, Engine, EngineContext, EngineError, Modify, RocksEngine, Snapshot};
use crate::region::RegionRegistry;

const WAIT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct MapResolver(RwLock<HashMap<u64, String>>);

impl StoreResolver for Arc<MapResolver> {
    fn resolve(&self, store_id: u64) -> BoxFuture<'static, Result<String, String>> {
        let addr = self.0.read().get(&store_id).cloned();
        Box::pin(async move { addr.ok_or_else(|| format!("no store {store_id}")) })
    }
}

struct TestStore {
    _dir: tempfile::TempDir,
    store_id: u64,
    engine: RocksEngine,
    router: Arc<Router>,
    transport: Arc<Transport>,
    stop: watch::Sender<bool>,
}

fn raft_config() -> Arc<openraft::Config> {
    Arc::new(
        openraft::Config {
            heartbeat_interval: 100,
            election_timeout_min: 500,
            election_timeout_max: 1000,
            max_in_snapshot_log_to_keep: 0,
            enable_pre_vote: Some(true),
            allow_log_reversion: Some(true),
            ..Default::default()
        }
        .validate()
        .unwrap(),
    )
}

pub(super) fn region(id: u64, start: &[u8], end: &[u8], peers: &[(u64, u64)]) -> metapb::Region {
    metapb::Region {
        id,
        start_key: start.to_vec(),
        end_key: end.to_vec(),
        region_epoch: Some(metapb::RegionEpoch {
            conf_ver: 1,
            version: 1,
        }),
        peers: peers
            .iter()
            .map(|&(id, store_id)| metapb::Peer {
                id,
                store_id,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

mod leader_terms;
mod max_ts;
mod region_bounds;

async fn start_store(
    store_id: u64,
    resolver: &Arc<MapResolver>,
    regions: &[metapb::Region],
) -> TestStore {
    start_store_with(store_id, resolver, regions, Arc::new(super::NoTso)).await
}

/// A store whose new leaders sync `max_ts` through `max_ts`.
async fn start_store_with(
    store_id: u64,
    resolver: &Arc<MapResolver>,
    regions: &[metapb::Region],
    max_ts: Arc<dyn super::MaxTsSync>,
) -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    let engine = RocksEngine::open(dir.path(), true).unwrap();
    let registry = RegionRegistry::load(store_id, engine.clone()).unwrap();
    for r in regions {
        super::initial_state::create(&engine, &registry, r.clone())
            .await
            .unwrap();
    }
    let transport = Transport::new(store_id, TransportConfig::default());
    let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
    let ctx = Arc::new(StoreContext {
        store_id,
        engine: engine.clone(),
        regions: registry,
        events: events_tx,
        transport: transport.clone(),
        resolver: Arc::new(resolver.clone()),
        raft_config: raft_config(),
        changed_regions: Default::default(),
        range_changes: Default::default(),
        max_ts,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    resolver.0.write().insert(store_id, addr);
    let (stop, mut stop_rx) = watch::channel(false);
    let service = transport.service();
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop_rx.changed().await;
            })
            .await;
    });
    let router = Router::start(ctx).await.unwrap();
    transport.set_dispatcher(Arc::new(RouterDispatch(Arc::downgrade(&router))));
    let events_router = router.clone();
    tokio::spawn(async move { events_router.run_events(events_rx).await });
    TestStore {
        _dir: dir,
        store_id,
        engine,
        router,
        transport,
        stop,
    }
}

impl TestStore {
    async fn stop(&self) {
        self.transport.shutdown();
        let _ = self.stop.send(true);
        self.router.shutdown().await;
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.engine.snapshot().get_cf(CfName::Default, key).unwrap()
    }
}

async fn leader_of(stores: &[&TestStore], region_id: u64) -> usize {
    let deadline = Instant::now() + WAIT;
    loop {
        let leaders: Vec<usize> = (0..stores.len())
            .filter(|&i| {
                stores[i]
                    .router
                    .peer(region_id)
                    .is_some_and(|p| p.is_leader())
            })
            .collect();
        if leaders.len() == 1 {
            return leaders[0];
        }
        assert!(
            Instant::now() < deadline,
            "region {region_id} has leaders {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ctx_of(store: &TestStore, region_id: u64) -> EngineContext {
    let r = store.router.peer(region_id).unwrap().region();
    let e = r.region_epoch.unwrap();
    EngineContext {
        region_id,
        conf_ver: e.conf_ver,
        version: e.version,
        term: 0,
        store_wide: false,
    }
}

/// Writes through whichever store leads `region_id`, retrying on Region
/// errors as a client does (leadership can move right after an election).
async fn write(stores: &[&TestStore], region_id: u64, modifies: Vec<Modify>) {
    let deadline = Instant::now() + WAIT;
    loop {
        let leader = leader_of(stores, region_id).await;
        let kv = RaftKv::new(stores[leader].router.clone());
        match kv
            .async_write(&ctx_of(stores[leader], region_id), modifies.clone())
            .await
        {
            Ok(()) => return,
            Err(e) if Instant::now() < deadline => {
                eprintln!("write retried: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("write failed: {e}"),
        }
    }
}

fn put(key: &str, value: &str) -> Vec<Modify> {
    vec![Modify::Put(
        CfName::Default,
        key.as_bytes().to_vec(),
        value.as_bytes().to_vec(),
    )]
}

async fn three_stores() -> (Arc<MapResolver>, Vec<TestStore>) {
    let resolver = Arc::new(MapResolver::default());
    let r1 = region(1, b"", b"", &[(101, 1), (102, 2), (103, 3)]);
    let mut stores = Vec::new();
    for id in 1..=3 {
        stores.push(start_store(id, &resolver, std::slice::from_ref(&r1)).await);
    }
    (resolver, stores)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_replicate_to_every_store_and_followers_redirect() {
    let (_resolver, stores) = three_stores().await;
    let refs: Vec<&TestStore> = stores.iter().collect();
    for i in 0..50 {
        write(&refs, 1, put(&format!("k{i:02}"), "v")).await;
    }
    for store in &stores {
        eventually("replicated", || store.get(b"k49").is_some()).await;
    }
    let leader = leader_of(&refs, 1).await;
    let kv = RaftKv::new(stores[leader].router.clone());
    // A follower answers NotLeader naming the leader's store.
    let follower = (leader + 1) % 3;
    let err = RaftKv::new(stores[follower].router.clone())
        .async_write(&ctx_of(&stores[follower], 1), put("x", "y"))
        .await
        .unwrap_err();
    let EngineError::Region(e) = err else {
        panic!("expected a region error, got {err}")
    };
    let not_leader = e.not_leader.expect("NotLeader");
    assert_eq!(not_leader.leader.unwrap().store_id, stores[leader].store_id);
    // A stale epoch is refused.
    let mut stale = ctx_of(&stores[leader], 1);
    stale.version = 0;
    assert!(matches!(
        kv.async_write(&stale, put("x", "y")).await,
        Err(EngineError::Region(e)) if e.epoch_not_match.is_some()
    ));
    // Reads on the leader see every acknowledged write.
    let snap = kv
        .async_snapshot(&ctx_of(&stores[leader], 1))
        .await
        .unwrap();
    assert_eq!(
        snap.get_cf(CfName::Default, b"k00").unwrap(),
        Some(b"v".to_vec())
    );
    for s in &stores {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_the_leader_elects_another_and_keeps_every_write() {
    let (_resolver, stores) = three_stores().await;
    let refs: Vec<&TestStore> = stores.iter().collect();
    for i in 0..20 {
        write(&refs, 1, put(&format!("a{i:02}"), "1")).await;
    }
    let leader = leader_of(&refs, 1).await;
    stores[leader].stop().await;
    let rest: Vec<&TestStore> = (0..3)
        .filter(|&i| i != leader)
        .map(|i| &stores[i])
        .collect();
    let started = Instant::now();
    leader_of(&rest, 1).await;
    eprintln!("region leader re-elected in {:?}", started.elapsed());
    write(&rest, 1, put("after", "1")).await;
    let new = leader_of(&rest, 1).await;
    let kv = RaftKv::new(rest[new].router.clone());
    let snap = kv.async_snapshot(&ctx_of(rest[new], 1)).await.unwrap();
    for i in 0..20 {
        let key = format!("a{i:02}");
        assert!(
            snap.get_cf(CfName::Default, key.as_bytes())
                .unwrap()
                .is_some(),
            "{key} lost"
        );
    }
    for s in rest {
        s.stop().await;
    }
}

/// Handles each Raft append at once but answers it `delay` later: a
/// follower slow to confirm (a loaded disk or CPU).
struct SlowAppendReplies {
    inner: RouterDispatch,
    delay: Duration,
}

impl Dispatch for SlowAppendReplies {
    fn dispatch(
        &self,
        from_store: u64,
        envelope: Envelope,
    ) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        let slow = envelope.kind == super::network::kind::APPEND;
        let reply = self.inner.dispatch(from_store, envelope);
        let delay = self.delay;
        Box::pin(async move {
            let reply = reply.await;
            if slow {
                tokio::time::sleep(delay).await;
            }
            reply
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_commit_when_every_reply_takes_longer_than_a_heartbeat_interval() {
    // Followers confirm each append 250 ms late: more than the 100 ms
    // heartbeat interval openraft budgets an append by, less than the
    // 500 ms election timeout. Giving up on the reply that early would
    // resend the same entries and never commit.
    let (_resolver, stores) = three_stores().await;
    let refs: Vec<&TestStore> = stores.iter().collect();
    write(&refs, 1, put("before", "1")).await;
    for store in &stores {
        store.transport.set_dispatcher(Arc::new(SlowAppendReplies {
            inner: RouterDispatch(Arc::downgrade(&store.router)),
            delay: Duration::from_millis(250),
        }));
    }
    let started = Instant::now();
    for i in 0..5 {
        write(&refs, 1, put(&format!("slow{i}"), "1")).await;
    }
    eprintln!("5 writes with slow replies in {:?}", started.elapsed());
    for store in &stores {
        eventually("every slow write replicated", || {
            store.get(b"slow4").is_some()
        })
        .await;
    }
    for s in &stores {
        s.stop().await;
    }
}

/// Splits Region 1 (peers 101-103) at "m" through its leader `peer`: the
/// new Region 2 (peers 201-203) takes the left part.
/// Retried while the leader cannot propose yet (a new leader's lease is not
/// confirmed by a quorum until its first heartbeats are answered).
async fn split_region_1_at_m(peer: &super::peer::Peer) -> CommandResult {
    let epoch = peer.region().region_epoch.unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let proposed = peer
            .propose(RegionCommand::Split {
                epoch: Epoch {
                    conf_ver: epoch.conf_ver,
                    version: epoch.version,
                },
                keys: vec![b"m".to_vec()],
                targets: vec![SplitTarget {
                    new_region_id: 2,
                    new_peer_ids: vec![201, 202, 203],
                }],
            })
            .await;
        match proposed {
            Err(EngineError::Region(e)) if e.not_leader.is_some() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => return other.unwrap(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_split_through_raft_creates_the_new_region_on_every_store() {
    let (_resolver, stores) = three_stores().await;
    let refs: Vec<&TestStore> = stores.iter().collect();
    let leader = leader_of(&refs, 1).await;
    let peer = stores[leader].router.peer(1).unwrap();
    let epoch = peer.region().region_epoch.unwrap();
    let result = split_region_1_at_m(&peer).await;
    assert!(matches!(result, CommandResult::EpochChanged { current } if current.len() == 2));
    for store in &stores {
        eventually("new region started", || store.router.peer(2).is_some()).await;
    }
    let new_leader = leader_of(&refs, 2).await;
    let left = stores[new_leader].router.peer(2).unwrap().region();
    assert_eq!(
        (left.start_key.as_slice(), left.end_key.as_slice()),
        (&b""[..], &b"m"[..])
    );
    write(&refs, 2, put("a", "left")).await;
    for store in &stores {
        eventually("left part replicated", || store.get(b"a").is_some()).await;
    }
    // The old epoch no longer works for the original Region.
    let stale = EngineContext {
        region_id: 1,
        conf_ver: epoch.conf_ver,
        version: epoch.version,
        term: 0,
        store_wide: false,
    };
    assert!(RaftKv::new(stores[leader].router.clone())
        .async_write(&stale, put("z", "1"))
        .await
        .is_err());
    for s in &stores {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_replica_catches_up_from_a_snapshot() {
    let (resolver, mut stores) = three_stores().await;
    let refs: Vec<&TestStore> = stores.iter().collect();
    for i in 0..100 {
        write(&refs, 1, put(&format!("s{i:03}"), "v")).await;
    }
    let leader = leader_of(&refs, 1).await;
    // The leader keeps its whole log, yet it does not reach back to the
    // Region's initial state: the new replica needs a snapshot.
    stores.push(start_store(4, &resolver, &[]).await);
    let peer = stores[leader].router.peer(1).unwrap();
    peer.add_peer(104, 4).await.unwrap();
    eventually("snapshot installed on store 4", || {
        stores[3].get(b"s099").is_some()
    })
    .await;
    // The snapshot may predate the membership change that added store 4;
    // the replica learns of its own peer when that entry is applied.
    eventually("store 4 knows the Region's four peers", || {
        stores[3].router.peer(1).unwrap().region().peers.len() == 4
    })
    .await;
    for s in &stores {
        s.stop().await;
    }
}

/// A scheduling command from placement, as a Region heartbeat response.
fn command(
    region_id: u64,
    epoch: metapb::RegionEpoch,
) -> shale_proto::pdpb::RegionHeartbeatResponse {
    shale_proto::pdpb::RegionHeartbeatResponse {
        region_id,
        region_epoch: Some(epoch),
        ..Default::default()
    }
}

/// A replica of `region` on a store other than `store_id`.
fn peer_off_store(region: &metapb::Region, store_id: u64) -> Option<metapb::Peer> {
    region
        .peers
        .iter()
        .find(|p| p.store_id != store_id)
        .copied()
}

/// Region ids marked for an immediate heartbeat within `wait`, taking them.
async fn marked_within(router: &Router, wait: Duration) -> Vec<u64> {
    tokio::time::timeout(wait, router.context().changed_regions.take())
        .await
        .map(|ids| ids.into_iter().collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_scheduling_command_waits_for_the_next_periodic_heartbeat() {
    use shale_proto::{eraftpb::ConfChangeType, pdpb};
    let (_resolver, stores) = three_stores().await;
    let refs: Vec<&TestStore> = stores.iter().collect();
    let leader = leader_of(&refs, 1).await;
    let router = &stores[leader].router;
    // Whatever start-up marked (a new leader term) is reported first.
    for _ in 0..10 {
        if marked_within(router, Duration::from_millis(300))
            .await
            .is_empty()
        {
            break;
        }
    }
    let epoch = router.peer(1).unwrap().region().region_epoch.unwrap();
    let follower = (leader + 1) % 3;
    let follower_peer = metapb::Peer {
        id: 101 + follower as u64,
        store_id: stores[follower].store_id,
        ..Default::default()
    };

    // Refused: an unknown change and a transfer to a peer of no replica.
    // An immediate heartbeat would bring placement's same command back at
    // once, again and again.
    router
        .handle_command(pdpb::RegionHeartbeatResponse {
            change_peer: Some(pdpb::ChangePeer {
                peer: Some(follower_peer),
                change_type: 99,
            }),
            transfer_leader: Some(pdpb::TransferLeader {
                peer: Some(metapb::Peer {
                    id: 999,
                    store_id: 999,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..command(1, epoch)
        })
        .await;
    assert_eq!(
        marked_within(router, Duration::from_millis(500)).await,
        Vec::<u64>::new()
    );
    assert_eq!(router.peer(1).unwrap().region().peers.len(), 3);

    // Done: placement hears of the new membership at once (from whichever
    // replica leads by then; a busy machine may move leadership).
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "a follower was never removed");
        let leader = leader_of(&refs, 1).await;
        let router = &stores[leader].router;
        let region = router.peer(1).unwrap().region();
        if region.peers.len() == 2 {
            assert!(marked_within(router, Duration::from_millis(500))
                .await
                .contains(&1));
            break;
        }
        let follower = peer_off_store(&region, stores[leader].store_id);
        router
            .handle_command(pdpb::RegionHeartbeatResponse {
                change_peer: Some(pdpb::ChangePeer {
                    peer: follower,
                    change_type: ConfChangeType::RemoveNode as i32,
                }),
                ..command(1, region.region_epoch.unwrap())
            })
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for s in &stores {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scheduling_commands_with_a_stale_epoch_are_refused() {
    use shale_proto::{eraftpb::ConfChangeType, pdpb};
    let (_resolver, stores) = three_stores().await;
    let refs: Vec<&TestStore> = stores.iter().collect();
    let leader = leader_of(&refs, 1).await;
    let router = &stores[leader].router;
    let epoch = router.peer(1).unwrap().region().region_epoch.unwrap();
    let follower = (leader + 1) % 3;
    let remove = pdpb::ChangePeer {
        peer: Some(metapb::Peer {
            id: 101 + follower as u64,
            store_id: stores[follower].store_id,
            ..Default::default()
        }),
        change_type: ConfChangeType::RemoveNode as i32,
    };
    let stale = metapb::RegionEpoch {
        conf_ver: epoch.conf_ver - 1,
        ..epoch
    };
    router
        .handle_command(pdpb::RegionHeartbeatResponse {
            change_peer: Some(remove),
            ..command(1, stale)
        })
        .await;
    assert_eq!(router.peer(1).unwrap().region().peers.len(), 3);

    // With the current epoch it is carried out (retried as placement
    // would: a replica still catching up can make Raft refuse it once).
    let deadline = Instant::now() + WAIT;
    while router.peer(1).unwrap().region().peers.len() == 3 {
        assert!(Instant::now() < deadline, "the follower was never removed");
        router
            .handle_command(pdpb::RegionHeartbeatResponse {
                change_peer: Some(remove),
                ..command(1, epoch)
            })
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let region = router.peer(1).unwrap().region();
    assert_eq!(region.peers.len(), 2);
    assert!(region.region_epoch.unwrap().conf_ver > epoch.conf_ver);
    // The old epoch is now stale too: a transfer decided on it is refused.
    let other = peer_off_store(&region, stores[leader].store_id);
    router
        .handle_command(pdpb::RegionHeartbeatResponse {
            transfer_leader: Some(pdpb::TransferLeader {
                peer: other,
                ..Default::default()
            }),
            ..command(1, epoch)
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(router.peer(1).unwrap().is_leader());
    for s in &stores {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_snapshot_overlapping_another_region_here_waits_for_it() {
    let (resolver, mut stores) = three_stores().await;
    let refs: Vec<&TestStore> = stores.iter().collect();
    for i in 0..20 {
        write(&refs, 1, put(&format!("o{i:02}"), "v")).await;
    }
    // Store 4 still holds a stale Region 9 over part of Region 1's range
    // (as if a split there was never applied, or a removed replica lingers).
    let stale = region(9, b"o05", b"o10", &[(901, 4)]);
    stores.push(start_store(4, &resolver, std::slice::from_ref(&stale)).await);
    let leader = leader_of(&refs_of(&stores[..3]), 1).await;
    let peer = stores[leader].router.peer(1).unwrap();
    let adding = tokio::spawn(async move { peer.add_peer(104, 4).await });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        stores[3].get(b"o00").is_none(),
        "the snapshot was installed over Region 9"
    );
    // Once the stale Region is gone, the snapshot goes in.
    stores[3].router.destroy_stale(9, 901).await.unwrap();
    eventually("snapshot installed on store 4", || {
        stores[3].get(b"o19").is_some()
    })
    .await;
    adding.await.unwrap().unwrap();
    for s in &stores {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_that_missed_a_split_gets_the_new_region_by_snapshot() {
    let (_resolver, stores) = three_stores().await;
    let refs = refs_of(&stores);
    for key in ["a", "b", "x"] {
        write(&refs, 1, put(key, "v")).await;
    }
    for store in &stores {
        eventually("replicated", || store.get(b"x").is_some()).await;
    }
    // One store misses the split, then its replica of the parent is
    // removed and collected, deleting the whole range it covered there.
    let leader = leader_of(&refs, 1).await;
    let victim = (leader + 1) % 3;
    stores[victim].transport.faults().isolate(true);
    let peer = stores[leader].router.peer(1).unwrap();
    split_region_1_at_m(&peer).await;
    peer.remove_peer(101 + victim as u64).await.unwrap();
    stores[victim]
        .router
        .destroy_stale(1, 101 + victim as u64)
        .await
        .unwrap();
    assert_eq!(stores[victim].get(b"a"), None);

    // Back in touch, the new Region's replica there is created by its
    // leader's message: it must start from a snapshot with the data the
    // split carried over, not replay a log that never held it.
    stores[victim].transport.faults().isolate(false);
    let rest: Vec<&TestStore> = (0..3)
        .filter(|&i| i != victim)
        .map(|i| &stores[i])
        .collect();
    write(&rest, 2, put("c", "new")).await;
    eventually("the new region's data reached the store", || {
        stores[victim].get(b"a").is_some()
            && stores[victim].get(b"b").is_some()
            && stores[victim].get(b"c").is_some()
    })
    .await;
    assert_eq!(
        stores[victim].get(b"x"),
        None,
        "region 1 is gone from there"
    );
    let region = stores[victim].router.peer(2).unwrap().region();
    assert_eq!(region.end_key, b"m".to_vec());
    for s in &stores {
        s.stop().await;
    }
}

fn refs_of(stores: &[TestStore]) -> Vec<&TestStore> {
    stores.iter().collect()
}

struct SuiteBuilder;

impl
    openraft::testing::log::StoreBuilder<
        super::types::RegionTypes,
        super::log_store::RegionLogStore,
        super::state_machine::RegionStateMachine,
        tempfile::TempDir,
    > for SuiteBuilder
{
    async fn build(
        &self,
    ) -> Result<
        (
            tempfile::TempDir,
            super::log_store::RegionLogStore,
            super::state_machine::RegionStateMachine,
        ),
        openraft::StorageError<super::types::RegionTypes>,
    > {
        let dir = tempfile::tempdir().unwrap();
        let ctx = standalone_context(dir.path());
        let engine = ctx.engine.clone();
        // Another Region's Raft state beside it must never leak in.
        let neighbour = super::log_store::RegionLogStore::new(8, engine.clone());
        drop(neighbour);
        let log = super::log_store::RegionLogStore::new(7, engine);
        let region = Arc::new(RwLock::new(region(7, b"", b"", &[(1, 1)])));
        let sm = super::state_machine::RegionStateMachine::new(
            7,
            1,
            ctx,
            region,
            Arc::new(super::state_machine::ReplicaFlags {
                opened: true.into(),
                ..Default::default()
            }),
        )
        .unwrap();
        Ok((dir, log, sm))
    }
}

/// Store 1's context over a RocksDB in `dir`, reaching no other store:
/// for state machine and log store tests without Raft traffic.
pub(super) fn standalone_context(dir: &std::path::Path) -> Arc<StoreContext> {
    let engine = RocksEngine::open(dir, true).unwrap();
    let regions = RegionRegistry::load(1, engine.clone()).unwrap();
    let (events, _) = tokio::sync::mpsc::unbounded_channel();
    Arc::new(StoreContext {
        store_id: 1,
        engine,
        regions,
        events,
        transport: Transport::new(1, TransportConfig::default()),
        resolver: Arc::new(Arc::new(MapResolver::default())),
        raft_config: raft_config(),
        changed_regions: Default::default(),
        range_changes: Default::default(),
        max_ts: Arc::new(super::NoTso),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_storage_passes_openraft_suite() {
    openraft::testing::log::Suite::test_all(SuiteBuilder)
        .await
        .unwrap();
}
