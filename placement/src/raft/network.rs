//! Outgoing Raft traffic: openraft's network traits over the internal
//! `raftpb.PlacementRaft` gRPC service of each peer.

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
use serde::{Deserialize, Serialize};
use shale_proto::raftpb::placement_raft_client::PlacementRaftClient;
use shale_proto::raftpb::RaftPayload;
use tonic::transport::Channel;

use super::faults::Faults;
use super::types::{decode, encode, NodeId, PlacementNode, Snapshot, TypeConfig, Vote};

/// Snapshots carry the whole metadata set; allow large messages.
pub const MAX_RAFT_MESSAGE: usize = 256 << 20;

/// A full snapshot as sent in one message.
#[derive(Serialize, Deserialize)]
pub struct SnapshotMessage {
    pub vote: Vote,
    pub meta: super::types::SnapshotMeta,
    pub data: Vec<u8>,
}

/// What a peer answers: the Raft response, or why its Raft refused to run
/// the request (shutting down, for example).
pub type RemoteResult<T> = Result<T, String>;

#[derive(Clone)]
pub struct PeerNetwork {
    faults: Arc<Faults>,
}

impl PeerNetwork {
    pub fn new(faults: Arc<Faults>) -> Self {
        PeerNetwork { faults }
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &PlacementNode) -> PeerClient {
        let client = Channel::from_shared(node.url.clone())
            .map(|endpoint| {
                let channel = endpoint
                    .connect_timeout(Duration::from_secs(2))
                    .tcp_nodelay(true)
                    .connect_lazy();
                PlacementRaftClient::new(channel)
                    .max_decoding_message_size(MAX_RAFT_MESSAGE)
                    .max_encoding_message_size(MAX_RAFT_MESSAGE)
            })
            .map_err(|e| e.to_string());
        PeerClient {
            target,
            url: node.url.clone(),
            client,
            faults: self.faults.clone(),
        }
    }
}

pub struct PeerClient {
    target: NodeId,
    url: String,
    client: Result<PlacementRaftClient<Channel>, String>,
    faults: Arc<Faults>,
}

#[derive(Debug, thiserror::Error)]
#[error("placement peer {target} at {url}: {message}")]
struct PeerError {
    target: NodeId,
    url: String,
    message: String,
}

#[derive(Clone, Copy)]
enum Method {
    Append,
    Vote,
    PreVote,
    Snapshot,
    TransferLeader,
}

impl PeerClient {
    fn error(&self, message: impl Into<String>) -> PeerError {
        PeerError {
            target: self.target,
            url: self.url.clone(),
            message: message.into(),
        }
    }

    /// Sends one request; `Err(true)` means the peer could not be reached.
    async fn call<Req: Serialize, Resp: for<'de> Deserialize<'de>>(
        &mut self,
        method: Method,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, (bool, PeerError)> {
        if self.faults.is_isolated() {
            return Err((true, self.error("isolated by fault injection")));
        }
        let data = encode(request).map_err(|e| (false, self.error(e.to_string())))?;
        let mut client = match &self.client {
            Ok(client) => client.clone(),
            Err(e) => return Err((true, self.error(format!("bad peer url: {e}")))),
        };
        let payload = RaftPayload { data };
        let call = async {
            match method {
                Method::Append => client.append_entries(payload).await,
                Method::Vote => client.vote(payload).await,
                Method::PreVote => client.pre_vote(payload).await,
                Method::Snapshot => client.install_snapshot(payload).await,
                Method::TransferLeader => client.transfer_leader(payload).await,
            }
        };
        let response = match tokio::time::timeout(timeout, call).await {
            Err(_) => return Err((true, self.error(format!("no answer within {timeout:?}")))),
            Ok(Err(status)) => {
                let unreachable = matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
                );
                return Err((unreachable, self.error(status.to_string())));
            }
            Ok(Ok(response)) => response.into_inner(),
        };
        let result: RemoteResult<Resp> =
            decode(&response.data).map_err(|e| (false, self.error(e.to_string())))?;
        result.map_err(|message| (false, self.error(message)))
    }

    async fn rpc<Req: Serialize, Resp: for<'de> Deserialize<'de>>(
        &mut self,
        method: Method,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<TypeConfig>> {
        self.call(method, request, option.hard_ttl())
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

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.rpc(Method::Append, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.rpc(Method::Vote, &rpc, &option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.rpc(Method::PreVote, &rpc, &option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let message = SnapshotMessage {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot,
        };
        let timeout = option.hard_ttl();
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            result = self.call(Method::Snapshot, &message, timeout) => {
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
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.rpc(Method::TransferLeader, &req, &option).await
    }
}
