//! Simulated storage nodes for the scheduling tests. Each store registers
//! (PutStore), heartbeats (StoreHeartbeat, and RegionHeartbeat for the
//! Regions it leads) and carries out the commands placement sends back on
//! its heartbeat stream, as a storage node with Raft-replicated Regions
//! would, only instantly and without data: AddNode / RemoveNode change the
//! Region's peers and bump `conf_ver`, TransferLeader moves leadership.
//! After each change the Region's (new) leader heartbeats it at once.
//! Like TiKV, a command whose `region_epoch` is not the Region's current one
//! is refused: that is what keeps two decisions made on the same view from
//! both being applied.
//!
//! It also checks the promises scheduling makes: never remove a leader's
//! peer, never put two peers of a Region on one store, never leave a
//! replicated Region with fewer than max-replicas peers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shale_proto::pdpb::pd_client::PdClient;
use shale_proto::{eraftpb, metapb, pdpb};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::{header, peer};

const TICK: Duration = Duration::from_millis(150);
const RETRY: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct SimRegion {
    pub meta: metapb::Region,
    pub leader: metapb::Peer,
}

impl SimRegion {
    pub fn stores(&self) -> BTreeSet<u64> {
        self.meta.peers.iter().map(|p| p.store_id).collect()
    }
}

#[derive(Default)]
struct Shared {
    urls: Vec<String>,
    cluster_id: u64,
    max_replicas: usize,
    regions: Mutex<BTreeMap<u64, SimRegion>>,
    /// Each live store's Region heartbeat sender.
    streams: Mutex<HashMap<u64, mpsc::Sender<pdpb::RegionHeartbeatRequest>>>,
    /// Stores that stopped (crashed): they neither heartbeat nor execute.
    stopped: Mutex<BTreeSet<u64>>,
    /// Stores placement refused as Tombstone.
    tombstoned: Mutex<BTreeSet<u64>>,
    /// While set, commands are received but not carried out.
    paused: AtomicBool,
    commands: AtomicU64,
    /// Commands refused for a stale epoch.
    stale: AtomicU64,
    violations: Mutex<Vec<String>>,
}

pub struct SimCluster {
    shared: Arc<Shared>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    pub first_store: u64,
}

/// A client of the placement leader among `urls` (any member names it).
pub async fn connect_leader(urls: &[String]) -> Option<PdClient<Channel>> {
    for url in urls {
        let Some(mut client) = connect(url).await else {
            continue;
        };
        let Ok(members) = client
            .get_members(pdpb::GetMembersRequest { header: None })
            .await
        else {
            continue;
        };
        let leader_url = members
            .into_inner()
            .leader
            .and_then(|l| l.client_urls.first().cloned());
        match leader_url {
            Some(leader) if &leader == url => return Some(client),
            Some(leader) => {
                if let Some(client) = connect(&leader).await {
                    return Some(client);
                }
            }
            None => {}
        }
    }
    None
}

async fn connect(url: &str) -> Option<PdClient<Channel>> {
    let channel = Channel::from_shared(url.to_string())
        .ok()?
        .connect_timeout(Duration::from_secs(1))
        .connect()
        .await
        .ok()?;
    Some(PdClient::new(channel))
}

async fn leader_client(urls: &[String]) -> PdClient<Channel> {
    for _ in 0..200 {
        if let Some(client) = connect_leader(urls).await {
            return client;
        }
        tokio::time::sleep(RETRY).await;
    }
    panic!("no placement leader among {urls:?}");
}

async fn alloc_id(client: &mut PdClient<Channel>, cid: u64) -> u64 {
    let resp = client
        .alloc_id(pdpb::AllocIdRequest {
            header: header(cid),
        })
        .await
        .unwrap()
        .into_inner();
    super::assert_ok(&resp.header);
    resp.id
}

fn sim_store(id: u64) -> metapb::Store {
    super::store(id, &format!("127.0.0.1:{}", 30_000 + id))
}

impl SimCluster {
    /// Bootstraps a cluster with one store holding `region_count` Regions
    /// (one peer each, split at `k000`, `k001`, ...), and starts that store.
    pub async fn bootstrap(urls: &[String], region_count: usize, max_replicas: usize) -> Self {
        let mut client = leader_client(urls).await;
        let cid = client
            .get_members(pdpb::GetMembersRequest { header: None })
            .await
            .unwrap()
            .into_inner()
            .header
            .unwrap()
            .cluster_id;
        let store_id = alloc_id(&mut client, cid).await;
        let region_id = alloc_id(&mut client, cid).await;
        let peer_id = alloc_id(&mut client, cid).await;
        let first = metapb::Region {
            id: region_id,
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver: 1,
                version: 1,
            }),
            peers: vec![peer(peer_id, store_id)],
            ..Default::default()
        };
        let resp = client
            .bootstrap(pdpb::BootstrapRequest {
                header: header(cid),
                store: Some(sim_store(store_id)),
                region: Some(first.clone()),
            })
            .await
            .unwrap()
            .into_inner();
        super::assert_ok(&resp.header);

        let mut regions = vec![first.clone()];
        if region_count > 1 {
            let split = client
                .ask_batch_split(pdpb::AskBatchSplitRequest {
                    header: header(cid),
                    region: Some(first.clone()),
                    split_count: u32::try_from(region_count - 1).unwrap(),
                })
                .await
                .unwrap()
                .into_inner();
            super::assert_ok(&split.header);
            let version = u64::try_from(region_count).unwrap();
            let epoch = Some(metapb::RegionEpoch {
                conf_ver: 1,
                version,
            });
            let key = |i: usize| format!("k{i:03}").into_bytes();
            regions.clear();
            // New Regions on the left, the original keeps the rightmost
            // range (TiKV's right-derive).
            for (i, ids) in split.ids.iter().enumerate() {
                regions.push(metapb::Region {
                    id: ids.new_region_id,
                    start_key: if i == 0 { Vec::new() } else { key(i - 1) },
                    end_key: key(i),
                    region_epoch: epoch,
                    peers: vec![peer(ids.new_peer_ids[0], store_id)],
                    ..Default::default()
                });
            }
            regions.push(metapb::Region {
                start_key: key(region_count - 2),
                region_epoch: epoch,
                ..first.clone()
            });
            let resp = client
                .report_batch_split(pdpb::ReportBatchSplitRequest {
                    header: header(cid),
                    regions: regions.clone(),
                })
                .await
                .unwrap()
                .into_inner();
            super::assert_ok(&resp.header);
        }
        let shared = Arc::new(Shared {
            urls: urls.to_vec(),
            cluster_id: cid,
            max_replicas,
            ..Default::default()
        });
        {
            let mut map = shared.regions.lock().unwrap();
            for region in regions {
                let leader = region.peers[0];
                map.insert(
                    region.id,
                    SimRegion {
                        meta: region,
                        leader,
                    },
                );
            }
        }
        let sim = SimCluster {
            shared,
            tasks: Mutex::new(Vec::new()),
            first_store: store_id,
        };
        sim.spawn_store(store_id);
        sim
    }

    pub fn cluster_id(&self) -> u64 {
        self.shared.cluster_id
    }

    /// Registers a new store (id from AllocID) and starts it.
    pub async fn add_store(&self) -> u64 {
        let mut client = leader_client(&self.shared.urls).await;
        let id = alloc_id(&mut client, self.shared.cluster_id).await;
        self.spawn_store(id);
        id
    }

    fn spawn_store(&self, id: u64) {
        let task = tokio::spawn(run_store(self.shared.clone(), id));
        self.tasks.lock().unwrap().push(task);
    }

    /// The store crashes: Raft elects leaders elsewhere for its Regions.
    pub fn stop_store(&self, id: u64) {
        self.shared.stopped.lock().unwrap().insert(id);
        self.shared.streams.lock().unwrap().remove(&id);
        let mut regions = self.shared.regions.lock().unwrap();
        for region in regions.values_mut() {
            if region.leader.store_id == id {
                if let Some(other) = region.meta.peers.iter().find(|p| p.store_id != id) {
                    region.leader = *other;
                }
            }
        }
    }

    pub fn pause(&self, paused: bool) {
        self.shared.paused.store(paused, Ordering::SeqCst);
    }

    pub fn regions(&self) -> Vec<SimRegion> {
        self.shared
            .regions
            .lock()
            .unwrap()
            .values()
            .cloned()
            .collect()
    }

    /// Region peers and leaders per store, as the stores see them.
    pub fn counts(&self) -> BTreeMap<u64, (usize, usize)> {
        let mut counts: BTreeMap<u64, (usize, usize)> = BTreeMap::new();
        for region in self.regions() {
            for p in &region.meta.peers {
                counts.entry(p.store_id).or_default().0 += 1;
            }
            counts.entry(region.leader.store_id).or_default().1 += 1;
        }
        counts
    }

    pub fn commands(&self) -> u64 {
        self.shared.commands.load(Ordering::SeqCst)
    }

    pub fn stale_commands(&self) -> u64 {
        self.shared.stale.load(Ordering::SeqCst)
    }

    pub fn is_tombstoned(&self, store_id: u64) -> bool {
        self.shared.tombstoned.lock().unwrap().contains(&store_id)
    }

    /// Panics if a scheduling promise was broken.
    pub fn assert_no_violations(&self) {
        let violations = self.shared.violations.lock().unwrap();
        assert!(violations.is_empty(), "{violations:#?}");
    }

    pub fn shutdown(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

impl Drop for SimCluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn is_stopped(shared: &Shared, id: u64) -> bool {
    shared.stopped.lock().unwrap().contains(&id)
}

fn is_tombstone(header: &Option<pdpb::ResponseHeader>) -> bool {
    header
        .as_ref()
        .and_then(|h| h.error.as_ref())
        .is_some_and(|e| e.r#type == pdpb::ErrorType::StoreTombstone as i32)
}

/// One store's life: (re)connect to the leader, register, heartbeat,
/// execute commands.
async fn run_store(shared: Arc<Shared>, id: u64) {
    let cid = shared.cluster_id;
    loop {
        if is_stopped(&shared, id) {
            return;
        }
        let Some(mut client) = connect_leader(&shared.urls).await else {
            tokio::time::sleep(RETRY).await;
            continue;
        };
        let put = client
            .put_store(pdpb::PutStoreRequest {
                header: header(cid),
                store: Some(sim_store(id)),
            })
            .await;
        match put {
            Ok(resp) if is_tombstone(&resp.get_ref().header) => {
                shared.tombstoned.lock().unwrap().insert(id);
                return;
            }
            Ok(resp)
                if resp
                    .get_ref()
                    .header
                    .as_ref()
                    .is_some_and(|h| h.error.is_none()) => {}
            _ => {
                tokio::time::sleep(RETRY).await;
                continue;
            }
        }
        let (tx, rx) = mpsc::channel(256);
        let Ok(responses) = client.region_heartbeat(ReceiverStream::new(rx)).await else {
            tokio::time::sleep(RETRY).await;
            continue;
        };
        let mut responses = responses.into_inner();
        shared.streams.lock().unwrap().insert(id, tx);
        let mut ticker = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    if is_stopped(&shared, id) {
                        return;
                    }
                    let hb = client
                        .store_heartbeat(pdpb::StoreHeartbeatRequest {
                            header: header(cid),
                            stats: Some(pdpb::StoreStats {
                                store_id: id,
                                capacity: 100 << 30,
                                available: 50 << 30,
                                ..Default::default()
                            }),
                        })
                        .await;
                    match hb {
                        Ok(resp) if is_tombstone(&resp.get_ref().header) => {
                            shared.tombstoned.lock().unwrap().insert(id);
                            shared.streams.lock().unwrap().remove(&id);
                            return;
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                    let led: Vec<u64> = shared
                        .regions
                        .lock()
                        .unwrap()
                        .values()
                        .filter(|r| r.leader.store_id == id)
                        .map(|r| r.meta.id)
                        .collect();
                    for region_id in led {
                        send_heartbeat(&shared, region_id);
                    }
                }
                message = responses.message() => match message {
                    Ok(Some(command)) => execute(&shared, id, &command),
                    _ => break,
                },
            }
        }
        shared.streams.lock().unwrap().remove(&id);
        tokio::time::sleep(RETRY).await;
    }
}

/// The Region's leader reports it (if that store is live).
fn send_heartbeat(shared: &Shared, region_id: u64) {
    let Some(region) = shared.regions.lock().unwrap().get(&region_id).cloned() else {
        return;
    };
    let sender = shared
        .streams
        .lock()
        .unwrap()
        .get(&region.leader.store_id)
        .cloned();
    if let Some(sender) = sender {
        let _ = sender.try_send(pdpb::RegionHeartbeatRequest {
            header: header(shared.cluster_id),
            region: Some(region.meta),
            leader: Some(region.leader),
            approximate_size: 1,
            approximate_keys: 100,
            ..Default::default()
        });
    }
}

fn violation(shared: &Shared, what: String) {
    shared.violations.lock().unwrap().push(what);
}

/// Carries out a command as the Region's leader on `store_id`. Repeats
/// and commands for Regions it does not lead are ignored, as TiKV does.
fn execute(shared: &Shared, store_id: u64, command: &pdpb::RegionHeartbeatResponse) {
    if command.header.as_ref().is_some_and(|h| h.error.is_some()) {
        return;
    }
    shared.commands.fetch_add(1, Ordering::SeqCst);
    if shared.paused.load(Ordering::SeqCst) {
        return;
    }
    let region_id = command.region_id;
    {
        let mut regions = shared.regions.lock().unwrap();
        let Some(region) = regions.get_mut(&region_id) else {
            return;
        };
        if region.leader.store_id != store_id {
            return;
        }
        // As TiKV: a conf change or leader transfer decided on another
        // epoch than the Region's current one is refused (EpochNotMatch).
        let epoch = region
            .meta
            .region_epoch
            .get_or_insert_with(Default::default);
        if command.region_epoch.as_ref() != Some(&*epoch) {
            shared.stale.fetch_add(1, Ordering::SeqCst);
            return;
        }
        if let Some(change) = &command.change_peer {
            let Some(target) = change.peer else {
                return;
            };
            let exists = region
                .meta
                .peers
                .iter()
                .any(|p| p.store_id == target.store_id);
            if change.change_type == eraftpb::ConfChangeType::AddNode as i32 {
                if exists {
                    if !region.meta.peers.contains(&target) {
                        violation(
                            shared,
                            format!(
                                "region {region_id}: second peer on store {}",
                                target.store_id
                            ),
                        );
                    }
                    return;
                }
                if target.role != metapb::PeerRole::Voter as i32 {
                    violation(
                        shared,
                        format!("region {region_id}: added a non-voter {target:?}"),
                    );
                }
                region.meta.peers.push(target);
                epoch.conf_ver += 1;
            } else if change.change_type == eraftpb::ConfChangeType::RemoveNode as i32 {
                if !exists {
                    return;
                }
                if target.store_id == region.leader.store_id {
                    violation(
                        shared,
                        format!("region {region_id}: asked to remove its leader"),
                    );
                    return;
                }
                let before = region.meta.peers.len();
                region.meta.peers.retain(|p| p.store_id != target.store_id);
                epoch.conf_ver += 1;
                if region.meta.peers.len() < shared.max_replicas.min(before) {
                    violation(
                        shared,
                        format!(
                            "region {region_id}: down to {} peers",
                            region.meta.peers.len()
                        ),
                    );
                }
            }
        } else if let Some(transfer) = &command.transfer_leader {
            let Some(target) = transfer.peer else {
                return;
            };
            let live = !shared.stopped.lock().unwrap().contains(&target.store_id);
            if live && region.meta.peers.contains(&target) {
                region.leader = target;
            }
        }
    }
    send_heartbeat(shared, region_id);
}
