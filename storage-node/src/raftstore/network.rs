//! openraft's network for one Region replica: every RPC becomes an
//! [`Envelope`] on the store-to-store transport, tagged with the Region and
//! carrying the sender's view of the Region (so a store that has no replica
//! yet can create one).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use parking_lot::RwLock;
use prost::Message;
use serde::{Deserialize, Serialize};
use shale_proto::metapb;

use super::context::StoreContext;
use super::transport::{Envelope, TransportError};
use super::types::{decode, encode, PeerId, PeerNode, RegionTypes, Snapshot, SnapshotMeta, Vote};

/// Message kinds on the transport.
pub mod kind {
    pub const APPEND: u32 = 1;
    pub const VOTE: u32 = 2;
    pub const PRE_VOTE: u32 = 3;
    pub const SNAPSHOT: u32 = 4;
    pub const TRANSFER_LEADER: u32 = 5;
}

/// Envelope payload: the sender's Region (protobuf) and the Raft RPC.
#[derive(Serialize, Deserialize)]
pub struct RegionMessage {
    pub region: Vec<u8>,
    pub body: Vec<u8>,
}

/// A whole snapshot in one message (the transport chunks it on the wire).
#[derive(Serialize, Deserialize)]
pub struct SnapshotMessage {
    pub vote: Vote,
    pub meta: SnapshotMeta,
    pub data: Vec<u8>,
}

/// What a receiving replica answers: the Raft response or why not.
pub type Reply<T> = Result<T, String>;

pub struct RegionNetwork {
    pub region_id: u64,
    pub from_peer: PeerId,
    pub ctx: Arc<StoreContext>,
    pub region: Arc<RwLock<metapb::Region>>,
}

impl RaftNetworkFactory<RegionTypes> for RegionNetwork {
    type Network = RegionPeerClient;

    async fn new_client(&mut self, target: PeerId, node: &PeerNode) -> RegionPeerClient {
        RegionPeerClient {
            region_id: self.region_id,
            from_peer: self.from_peer,
            to_peer: target,
            store_id: node.store_id,
            ctx: self.ctx.clone(),
            region: self.region.clone(),
        }
    }
}

pub struct RegionPeerClient {
    region_id: u64,
    from_peer: PeerId,
    to_peer: PeerId,
    store_id: u64,
    ctx: Arc<StoreContext>,
    region: Arc<RwLock<metapb::Region>>,
}

#[derive(Debug, thiserror::Error)]
#[error("region {region_id} peer {to_peer} on store {store_id}: {message}")]
struct PeerCallError {
    region_id: u64,
    to_peer: PeerId,
    store_id: u64,
    message: String,
}

impl RegionPeerClient {
    fn error(&self, message: impl Into<String>) -> PeerCallError {
        PeerCallError {
            region_id: self.region_id,
            to_peer: self.to_peer,
            store_id: self.store_id,
            message: message.into(),
        }
    }

    /// Sends one RPC; `Err((true, _))` means the peer could not be reached.
    async fn call<Req: Serialize, Resp: for<'de> Deserialize<'de>>(
        &self,
        kind: u32,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, (bool, PeerCallError)> {
        let body = encode(request).map_err(|e| (false, self.error(e.to_string())))?;
        let region = self.region.read().encode_to_vec();
        let payload = encode(&RegionMessage { region, body })
            .map_err(|e| (false, self.error(e.to_string())))?;
        let addr = self
            .ctx
            .resolver
            .resolve(self.store_id)
            .await
            .map_err(|e| (true, self.error(format!("cannot resolve store: {e}"))))?;
        let envelope = Envelope {
            region_id: self.region_id,
            from_peer: self.from_peer,
            to_peer: self.to_peer,
            kind,
            payload,
        };
        let reply = self
            .ctx
            .transport
            .call(self.store_id, &addr, envelope, timeout)
            .await
            .map_err(|e| match e {
                TransportError::Remote(m) => (false, self.error(m)),
                // A slow peer is not an unreachable one: openraft backs a
                // replication stream off at once for the latter only.
                TransportError::Timeout => (false, self.error(e.to_string())),
                other => {
                    // The address may be wrong only if no connection could
                    // be made; a slow peer or an oversized message says
                    // nothing about where the store lives.
                    if matches!(other, TransportError::Unreachable(_)) {
                        self.ctx.resolver.invalidate(self.store_id);
                    }
                    (true, self.error(other.to_string()))
                }
            })?;
        let result: Reply<Resp> = decode(&reply).map_err(|e| (false, self.error(e.to_string())))?;
        result.map_err(|m| (false, self.error(m)))
    }

    /// How long to wait for a reply. openraft budgets an append by one
    /// heartbeat interval, but the follower replies after syncing its log,
    /// and on a loaded machine (a busy disk, starved CPU) that takes longer:
    /// a reply within an election timeout still moves replication on, while
    /// giving up sooner resends the same entries and adds to the load.
    /// (openraft bounds heartbeats by the interval itself.)
    fn call_timeout(&self, option: &RPCOption) -> Duration {
        let floor = Duration::from_millis(self.ctx.raft_config.election_timeout_min);
        option.hard_ttl().max(floor)
    }

    async fn rpc<Req: Serialize, Resp: for<'de> Deserialize<'de>>(
        &self,
        kind: u32,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<RegionTypes>> {
        self.call(kind, request, self.call_timeout(option))
            .await
            .map_err(|(unreachable, e)| {
                if unreachable {
                    RPCError::Unreachable(Unreachable::new(&e))
                } else {
                    RPCError::Network(NetworkError::new(&e))
                }
            })
    }
}

impl RaftNetworkV2<RegionTypes> for RegionPeerClient {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<RegionTypes>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<RegionTypes>, RPCError<RegionTypes>> {
        self.rpc(kind::APPEND, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<RegionTypes>,
        option: RPCOption,
    ) -> Result<VoteResponse<RegionTypes>, RPCError<RegionTypes>> {
        self.rpc(kind::VOTE, &rpc, &option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<RegionTypes>,
        option: RPCOption,
    ) -> Result<VoteResponse<RegionTypes>, RPCError<RegionTypes>> {
        self.rpc(kind::PRE_VOTE, &rpc, &option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<RegionTypes>, StreamingError<RegionTypes>> {
        let message = SnapshotMessage {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot,
        };
        let timeout = option.hard_ttl();
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            result = self.call(kind::SNAPSHOT, &message, timeout) => {
                result.map_err(|(unreachable, e)| {
                    if unreachable {
                        StreamingError::Unreachable(Unreachable::new(&e))
                    } else {
                        StreamingError::Network(NetworkError::new(&e))
                    }
                })
            }
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<RegionTypes>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<RegionTypes>, RPCError<RegionTypes>> {
        self.rpc(kind::TRANSFER_LEADER, &req, &option).await
    }
}
