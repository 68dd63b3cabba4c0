//! Incoming Raft traffic from the other placement members
//! (`raftpb.PlacementRaft`), handed to this member's Raft node.

use std::future::Future;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use shale_proto::raftpb::placement_raft_server::PlacementRaft as PlacementRaftRpc;
use shale_proto::raftpb::RaftPayload;
use tonic::{Request, Response, Status};

use crate::raft::network::{RemoteResult, SnapshotMessage};
use crate::raft::types::{decode, encode, Snapshot};
use crate::raft::PlacementRaft;

pub struct RaftService {
    raft: Arc<PlacementRaft>,
}

impl RaftService {
    pub fn new(raft: Arc<PlacementRaft>) -> Self {
        RaftService { raft }
    }

    /// Decodes the request, runs it, encodes the outcome. Malformed payloads
    /// are the sender's bug: `InvalidArgument`, never a panic.
    async fn handle<Req, Resp, E, F, Fut>(
        &self,
        request: Request<RaftPayload>,
        run: F,
    ) -> Result<Response<RaftPayload>, Status>
    where
        Req: for<'de> Deserialize<'de>,
        Resp: Serialize,
        E: std::fmt::Display,
        F: FnOnce(Arc<PlacementRaft>, Req) -> Fut,
        Fut: Future<Output = Result<Resp, E>>,
    {
        if self.raft.faults().is_isolated() {
            return Err(Status::unavailable("isolated by fault injection"));
        }
        let req: Req = decode(&request.into_inner().data)
            .map_err(|e| Status::invalid_argument(format!("malformed raft message: {e}")))?;
        let result: RemoteResult<Resp> =
            run(self.raft.clone(), req).await.map_err(|e| e.to_string());
        let data = encode(&result).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(RaftPayload { data }))
    }
}

#[tonic::async_trait]
impl PlacementRaftRpc for RaftService {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.handle(request, |raft, req| async move {
            raft.raft().append_entries(req).await
        })
        .await
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.handle(
            request,
            |raft, req| async move { raft.raft().vote(req).await },
        )
        .await
    }

    async fn pre_vote(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.handle(request, |raft, req| async move {
            raft.raft().pre_vote(req).await
        })
        .await
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.handle(request, |raft, message: SnapshotMessage| async move {
            let snapshot = Snapshot {
                meta: message.meta,
                snapshot: message.data,
            };
            raft.raft()
                .install_full_snapshot(message.vote, snapshot)
                .await
        })
        .await
    }

    async fn transfer_leader(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.handle(request, |raft, req| async move {
            raft.raft().handle_transfer_leader(req).await
        })
        .await
    }
}
