//! The store's Region replicas: starting them, creating one when a leader
//! reaches this store for a Region it does not hold yet, destroying removed
//! ones, dispatching incoming Raft messages, and running placement's
//! scheduling commands.

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use parking_lot::RwLock;
use prost::Message;
use shale_proto::{metapb, pdpb};
use tokio::sync::mpsc;

use super::context::{StoreContext, StoreEvent};
use super::keys;
use super::network::{kind, RegionMessage, Reply, SnapshotMessage};
use super::peer::Peer;
use super::ranges;
use super::state_machine::snapshot_region;
use super::transport::{Dispatch, Envelope};
use super::types::{decode, encode, Snapshot};
use crate::engine::{EngineBatch, MetaWrite};
use crate::region::RegionRegistry;

pub struct Router {
    ctx: Arc<StoreContext>,
    peers: RwLock<HashMap<u64, Arc<Peer>>>,
    /// Serialises creating and destroying replicas.
    lifecycle: tokio::sync::Mutex<()>,
    /// Removed replicas by Region: messages to this peer id or older are stale.
    tombstones: RwLock<HashMap<u64, u64>>,
}

impl Router {
    /// Starts a replica for every Region this store holds.
    pub async fn start(ctx: Arc<StoreContext>) -> Result<Arc<Router>, String> {
        let mut tombstones = HashMap::new();
        for (key, value) in ctx
            .engine
            .scan_meta(keys::TOMBSTONE_PREFIX)
            .map_err(|e| e.to_string())?
        {
            let region_id = key
                .get(keys::TOMBSTONE_PREFIX.len()..)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes);
            let peer_id = value.as_slice().try_into().ok().map(u64::from_be_bytes);
            if let (Some(r), Some(p)) = (region_id, peer_id) {
                tombstones.insert(r, p);
            }
        }
        let router = Arc::new(Router {
            ctx: ctx.clone(),
            peers: RwLock::default(),
            lifecycle: tokio::sync::Mutex::new(()),
            tombstones: RwLock::new(tombstones),
        });
        for region in ctx.regions.all() {
            let Some(local) = ctx.regions.local_peer(&region) else {
                continue;
            };
            // Alone, it would still wait out an election timeout first.
            let alone = region
                .peers
                .iter()
                .all(|p| p.id == local.id || p.role == metapb::PeerRole::Learner as i32);
            let peer = router.ensure_peer(region, local.id).await?;
            if alone {
                peer.campaign().await;
            }
        }
        Ok(router)
    }

    pub fn context(&self) -> &Arc<StoreContext> {
        &self.ctx
    }

    pub fn peer(&self, region_id: u64) -> Option<Arc<Peer>> {
        self.peers.read().get(&region_id).cloned()
    }

    pub fn peers(&self) -> Vec<Arc<Peer>> {
        self.peers.read().values().cloned().collect()
    }

    /// The replica of `region` with `peer_id`, started if needed.
    pub async fn ensure_peer(
        &self,
        region: metapb::Region,
        peer_id: u64,
    ) -> Result<Arc<Peer>, String> {
        let _guard = self.lifecycle.lock().await;
        if let Some(peer) = self.peer(region.id) {
            if peer.peer_id == peer_id {
                return Ok(peer);
            }
        }
        // What this store recorded (a split applied here) beats the view
        // in a leader's message.
        let region = self.ctx.regions.get(region.id).unwrap_or(region);
        let region_id = region.id;
        let peer = Arc::new(Peer::open(&self.ctx, region, peer_id).await?);
        self.peers.write().insert(region_id, peer.clone());
        tracing::info!(region_id, peer_id, "region replica started");
        Ok(peer)
    }

    /// Handles what applies report: new Regions from splits, removed replicas.
    pub async fn run_events(&self, mut events: mpsc::UnboundedReceiver<StoreEvent>) {
        while let Some(event) = events.recv().await {
            match event {
                StoreEvent::SplitApplied { regions, leader } => {
                    for region in regions {
                        let Some(local) = self.ctx.regions.local_peer(&region) else {
                            continue;
                        };
                        let region_id = region.id;
                        match self.ensure_peer(region, local.id).await {
                            // The parent's leader campaigns at once, as it
                            // is the likeliest to win; the other replicas
                            // wait for it, or elect after a timeout.
                            Ok(peer) if leader => peer.campaign().await,
                            Ok(_) => {}
                            Err(e) => tracing::error!(region_id, "cannot start split region: {e}"),
                        }
                    }
                }
                StoreEvent::PeerRemoved { region_id } => {
                    if let Err(e) = self.destroy(region_id).await {
                        tracing::error!(region_id, "cannot destroy removed replica: {e}");
                    }
                }
            }
        }
    }

    /// Stops a removed replica and deletes its data and Raft state; remembers
    /// its peer id so late messages cannot bring it back.
    async fn destroy(&self, region_id: u64) -> Result<(), String> {
        self.destroy_peer(region_id, None).await
    }

    /// Destroys the replica of `region_id` if it is still peer `peer_id`
    /// (a newer replica may have replaced it meanwhile).
    pub async fn destroy_stale(&self, region_id: u64, peer_id: u64) -> Result<(), String> {
        self.destroy_peer(region_id, Some(peer_id)).await
    }

    async fn destroy_peer(&self, region_id: u64, only: Option<u64>) -> Result<(), String> {
        let _guard = self.lifecycle.lock().await;
        let peer = {
            let mut peers = self.peers.write();
            match peers.get(&region_id) {
                Some(p) if only.is_none_or(|id| id == p.peer_id) => peers.remove(&region_id),
                _ => None,
            }
        };
        let Some(peer) = peer else {
            return Ok(());
        };
        peer.shutdown().await;
        let _ranges = self.ctx.range_changes.lock().await;
        let region = peer.region();
        let (raft_start, raft_end) = keys::region_raft_range(region_id);
        let mut batch = EngineBatch {
            sync: true,
            ..Default::default()
        };
        // A removed replica may never have applied a later split: delete
        // only what no other Region here owns.
        let unowned = ranges::unowned(&region, &self.ctx.regions, &[]);
        let deleted: Vec<String> = unowned
            .iter()
            .map(|(s, e)| ranges::describe(s, e))
            .collect();
        batch.data.extend(ranges::delete_data(unowned));
        batch
            .meta
            .push(MetaWrite::DeleteRange(raft_start, raft_end));
        batch.meta.push(RegionRegistry::meta_delete(region_id));
        batch.meta.push(MetaWrite::Put(
            keys::tombstone_key(region_id),
            peer.peer_id.to_be_bytes().to_vec(),
        ));
        self.ctx
            .engine
            .write_batch(batch)
            .await
            .map_err(|e| e.to_string())?;
        self.ctx.regions.forget_in_memory(region_id);
        self.tombstones.write().insert(region_id, peer.peer_id);
        tracing::info!(
            region_id,
            peer_id = peer.peer_id,
            deleted = %deleted.join(", "),
            "region replica destroyed"
        );
        Ok(())
    }

    /// The replica a message is for, created when a leader reaches a store
    /// that has none yet (a replica being added).
    async fn target_peer(
        &self,
        envelope: &Envelope,
        region: &metapb::Region,
    ) -> Result<Arc<Peer>, String> {
        if let Some(peer) = self.peer(envelope.region_id) {
            if peer.peer_id == envelope.to_peer {
                return Ok(peer);
            }
            // Placement allocates peer ids in increasing order: a leader
            // replicating to a newer peer here means ours was removed
            // without learning it, and the Region was given back to this
            // store. Ours is stale: make room for the new one.
            let replaces = envelope.to_peer > peer.peer_id
                && matches!(envelope.kind, kind::APPEND | kind::SNAPSHOT);
            if !replaces {
                return Err(format!(
                    "region {} has peer {} here, not {}",
                    envelope.region_id, peer.peer_id, envelope.to_peer
                ));
            }
            tracing::info!(
                region_id = envelope.region_id,
                stale = peer.peer_id,
                new = envelope.to_peer,
                "a newer replica of the region replaces a removed one here"
            );
            self.destroy_stale(envelope.region_id, peer.peer_id).await?;
        }
        if let Some(&removed) = self.tombstones.read().get(&envelope.region_id) {
            if envelope.to_peer <= removed {
                return Err(format!(
                    "peer {} of region {} was removed from this store",
                    envelope.to_peer, envelope.region_id
                ));
            }
        }
        // A vote creates the (empty) replica too, as in TiKV: a split Region
        // whose other replicas skipped the split (they took the parent's
        // snapshot instead) has no quorum until these replicas exist and
        // vote. An empty replica is in no membership, so it never campaigns;
        // it grants its vote to a candidate with any log, and the winner then
        // sends it a snapshot.
        if !matches!(
            envelope.kind,
            kind::APPEND | kind::SNAPSHOT | kind::VOTE | kind::PRE_VOTE
        ) {
            return Err(format!(
                "region {} not found on this store",
                envelope.region_id
            ));
        }
        if region.id != envelope.region_id {
            return Err("message names a different region".into());
        }
        // A Region split off one held here reaches this store before the
        // split is applied here: the parent still owns the range and will
        // write into it, so the new replica must wait for the split.
        self.refuse_overlap(region)?;
        self.ensure_peer(region.clone(), envelope.to_peer).await
    }

    /// Refuses Raft state for `region` while another Region here still
    /// owns part of its range (a split not applied here yet, or a removed
    /// replica not yet collected): installing it would let the other
    /// Region's older writes land on top of newer ones, or delete its data.
    fn refuse_overlap(&self, region: &metapb::Region) -> Result<(), String> {
        if region.region_epoch.is_none() {
            return Ok(());
        }
        match self
            .ctx
            .regions
            .all()
            .into_iter()
            .find(|other| other.id != region.id && ranges::overlaps(other, region))
        {
            Some(other) => Err(format!(
                "region {} overlaps region {} on this store; retry later",
                region.id, other.id
            )),
            None => Ok(()),
        }
    }

    async fn handle(&self, envelope: Envelope) -> Result<Vec<u8>, String> {
        let message: RegionMessage = decode(&envelope.payload).map_err(|e| e.to_string())?;
        let region =
            metapb::Region::decode(message.region.as_slice()).map_err(|e| e.to_string())?;
        let peer = self.target_peer(&envelope, &region).await?;
        if matches!(envelope.kind, kind::APPEND | kind::SNAPSHOT) {
            peer.heard_from_leader();
        }
        let raft = peer.raft();
        let body = &message.body;
        let reply = match envelope.kind {
            kind::APPEND => {
                let req = decode(body).map_err(|e| e.to_string())?;
                encode(&raft.append_entries(req).await.map_err(|e| e.to_string()))
            }
            kind::VOTE => {
                let req = decode(body).map_err(|e| e.to_string())?;
                encode(&raft.vote(req).await.map_err(|e| e.to_string()))
            }
            kind::PRE_VOTE => {
                let req = decode(body).map_err(|e| e.to_string())?;
                encode(&raft.pre_vote(req).await.map_err(|e| e.to_string()))
            }
            kind::SNAPSHOT => {
                let m: SnapshotMessage = decode(body).map_err(|e| e.to_string())?;
                self.refuse_overlap(&snapshot_region(&m.data).map_err(|e| e.to_string())?)?;
                let snapshot = Snapshot {
                    meta: m.meta,
                    snapshot: m.data,
                };
                let result: Reply<_> = raft
                    .install_full_snapshot(m.vote, snapshot)
                    .await
                    .map_err(|e| e.to_string());
                encode(&result)
            }
            kind::TRANSFER_LEADER => {
                let req = decode(body).map_err(|e| e.to_string())?;
                encode(
                    &raft
                        .handle_transfer_leader(req)
                        .await
                        .map_err(|e| e.to_string()),
                )
            }
            other => return Err(format!("unknown raft message kind {other}")),
        };
        reply.map_err(|e| e.to_string())
    }

    /// Runs one scheduling command from placement on this store's leader.
    pub async fn handle_command(self: &Arc<Self>, response: pdpb::RegionHeartbeatResponse) {
        let Some(peer) = self.peer(response.region_id) else {
            return;
        };
        if !peer.is_leader() {
            return;
        }
        let region_id = response.region_id;
        // A command is decided on the epoch placement last heard; if the
        // Region changed since, it may no longer make sense (TiKV refuses such
        // an admin command too). Placement re-decides on the next heartbeat.
        let current = peer.region().region_epoch.unwrap_or_default();
        if response.region_epoch != Some(current) {
            tracing::info!(
                region_id,
                ?current,
                command = ?response.region_epoch,
                "refusing a scheduling command with a stale region epoch"
            );
            self.ctx.changed_regions.mark(region_id);
            return;
        }
        let mut changes = Vec::new();
        if let Some(change) = response.change_peer {
            changes.push(change);
        }
        if let Some(v2) = response.change_peer_v2 {
            changes.extend(v2.changes);
        }
        // Placement hears at once of a membership that changed; a command
        // refused or still running is asked again at the next periodic
        // heartbeat, not at once (an immediate heartbeat would bring the same
        // command straight back: while a new learner catches up, every
        // re-sent step is refused and the loop spins).
        let mut membership_changed = false;
        for change in changes {
            let Some(target) = change.peer else {
                continue;
            };
            let result = match shale_proto::eraftpb::ConfChangeType::try_from(change.change_type) {
                Ok(shale_proto::eraftpb::ConfChangeType::AddNode) => {
                    peer.add_peer(target.id, target.store_id).await
                }
                Ok(shale_proto::eraftpb::ConfChangeType::AddLearnerNode) => peer
                    .raft()
                    .add_learner(
                        target.id,
                        super::types::PeerNode {
                            store_id: target.store_id,
                        },
                        true,
                    )
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Ok(shale_proto::eraftpb::ConfChangeType::RemoveNode) => {
                    peer.remove_peer(target.id).await
                }
                Err(_) => Err(format!("unknown change type {}", change.change_type)),
            };
            match result {
                Ok(()) => {
                    membership_changed = true;
                    tracing::info!(
                        region_id,
                        peer = target.id,
                        store = target.store_id,
                        "membership change done"
                    )
                }
                Err(e) => {
                    tracing::warn!(region_id, peer = target.id, "membership change failed: {e}")
                }
            }
        }
        if let Some(transfer) = response.transfer_leader {
            if let Some(to) = transfer.peer {
                if let Err(e) = peer.transfer_leader(to.id).await {
                    tracing::debug!(region_id, to = to.id, "leader transfer not started: {e}");
                }
            }
        }
        // A leader transfer is reported by the new leader (its new term).
        if membership_changed {
            self.ctx.changed_regions.mark(region_id);
        }
    }

    /// Stops every replica (store shutdown).
    pub async fn shutdown(&self) {
        let peers: Vec<Arc<Peer>> = self.peers.write().drain().map(|(_, p)| p).collect();
        for peer in peers {
            peer.shutdown().await;
        }
    }
}

/// The transport's way into the router; weak so a stopped store is freed.
pub struct RouterDispatch(pub std::sync::Weak<Router>);

impl Dispatch for RouterDispatch {
    fn dispatch(
        &self,
        _from_store: u64,
        envelope: Envelope,
    ) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        let router = self.0.upgrade();
        Box::pin(async move {
            match router {
                Some(router) => router.handle(envelope).await,
                None => Err("store is shutting down".into()),
            }
        })
    }
}
