//! The bidirectional TSO stream: one response per request, each carrying the
//! highest timestamp of a batch of `count` (the client derives the rest).

use std::sync::Arc;

use shale_proto::pdpb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::header;
use super::{LeaderTerm, ServerState};
use crate::tso::TsoError;

pub type TsoResponseStream = ReceiverStream<Result<pdpb::TsoResponse, Status>>;

pub fn spawn(
    state: Arc<ServerState>,
    mut requests: Streaming<pdpb::TsoRequest>,
) -> TsoResponseStream {
    let (tx, rx) = mpsc::channel(32);
    tokio::spawn(async move {
        let Some(leader) = state.leader_term() else {
            let _ = tx.send(Err(state.not_leader())).await;
            return;
        };
        loop {
            let next = tokio::select! {
                _ = state.shutting_down() => break,
                _ = leader.stepped_down() => {
                    let _ = tx.send(Err(state.not_leader())).await;
                    break;
                }
                _ = tx.closed() => break,
                next = requests.message() => next,
            };
            let request = match next {
                Ok(Some(request)) => request,
                Ok(None) => break,
                Err(status) => {
                    tracing::debug!(%status, "tso stream ended by client");
                    break;
                }
            };
            let response = handle(&state, &leader, &request).await;
            let failed = response.is_err();
            // As in PD, a bad request ends the stream with a gRPC status.
            if tx.send(response).await.is_err() || failed {
                break;
            }
        }
    });
    ReceiverStream::new(rx)
}

async fn handle(
    state: &ServerState,
    leader: &LeaderTerm,
    request: &pdpb::TsoRequest,
) -> Result<pdpb::TsoResponse, Status> {
    let cluster_id = leader.cluster.id();
    header::check_cluster_id(cluster_id, request.header.as_ref())
        .map_err(|e| Status::failed_precondition(e.to_string()))?;
    // A leader cut off from its quorum may already have been replaced; it
    // must not hand out timestamps a newer leader could undercut.
    if leader.is_over() || !state.raft.holds_lease() {
        return Err(state.not_leader());
    }
    let batch = leader.tso.next(request.count).await.map_err(|e| match e {
        TsoError::InvalidCount(_) => Status::invalid_argument(e.to_string()),
        TsoError::Persist(crate::meta::MetaError::NotLeader) => state.not_leader(),
        TsoError::Persist(_) => {
            tracing::error!(error = %e, "tso unavailable");
            Status::unavailable(e.to_string())
        }
    })?;
    state.metrics.tso_timestamps.inc_by(u64::from(batch.count));
    Ok(pdpb::TsoResponse {
        header: Some(header::ok_header(cluster_id)),
        count: batch.count,
        timestamp: Some(pdpb::Timestamp {
            physical: i64::try_from(batch.physical).unwrap_or(i64::MAX),
            logical: i64::try_from(batch.logical).unwrap_or(i64::MAX),
            suffix_bits: 0,
        }),
    })
}
