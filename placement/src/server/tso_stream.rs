//! The bidirectional TSO stream: one response per request, each carrying the
//! highest timestamp of a batch of `count` (the client derives the rest).

use std::sync::Arc;

use shale_proto::pdpb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::header;
use super::ServerState;
use crate::tso::TsoError;

pub type TsoResponseStream = ReceiverStream<Result<pdpb::TsoResponse, Status>>;

pub fn spawn(
    state: Arc<ServerState>,
    mut requests: Streaming<pdpb::TsoRequest>,
) -> TsoResponseStream {
    let (tx, rx) = mpsc::channel(32);
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                _ = state.shutting_down() => break,
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
            let response = handle(&state, &request).await;
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
    request: &pdpb::TsoRequest,
) -> Result<pdpb::TsoResponse, Status> {
    let cluster_id = state.cluster_id();
    header::check_cluster_id(cluster_id, request.header.as_ref())
        .map_err(|e| Status::failed_precondition(e.to_string()))?;
    let batch = state.tso.next(request.count).await.map_err(|e| match e {
        TsoError::InvalidCount(_) => Status::invalid_argument(e.to_string()),
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
