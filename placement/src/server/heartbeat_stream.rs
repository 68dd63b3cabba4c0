//! The RegionHeartbeat stream. Heartbeats update the routing table; responses
//! go back only for errors and for scheduling commands: the current step of
//! the Region's operator after each of its heartbeats, and new operators'
//! first steps, which the scheduling loop pushes through [`HeartbeatStreams`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use shale_proto::pdpb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::header;
use super::{LeaderTerm, ServerState};
use crate::cluster::regions::RegionInfo;

type ResponseSender = mpsc::Sender<Result<pdpb::RegionHeartbeatResponse, Status>>;
pub type HeartbeatResponseStream = ReceiverStream<Result<pdpb::RegionHeartbeatResponse, Status>>;

/// The latest heartbeat stream of each store, by store id.
#[derive(Default)]
pub struct HeartbeatStreams {
    next_stream_id: AtomicU64,
    streams: Mutex<HashMap<u64, (u64, ResponseSender)>>,
}

impl HeartbeatStreams {
    fn new_stream_id(&self) -> u64 {
        self.next_stream_id.fetch_add(1, Ordering::Relaxed)
    }

    fn bind(&self, store_id: u64, stream_id: u64, sender: &ResponseSender) {
        let mut streams = self.streams.lock();
        match streams.get(&store_id) {
            Some((bound, _)) if *bound == stream_id => {}
            _ => {
                streams.insert(store_id, (stream_id, sender.clone()));
            }
        }
    }

    fn unbind(&self, stream_id: u64) {
        self.streams
            .lock()
            .retain(|_, (bound, _)| *bound != stream_id);
    }

    /// Queues a command for `store_id`. False when the store has no open
    /// stream or it is not keeping up.
    pub fn send(&self, store_id: u64, response: pdpb::RegionHeartbeatResponse) -> bool {
        let sender = self.streams.lock().get(&store_id).map(|(_, s)| s.clone());
        sender.is_some_and(|s| s.try_send(Ok(response)).is_ok())
    }

    pub fn connected_stores(&self) -> Vec<u64> {
        let mut stores: Vec<u64> = self.streams.lock().keys().copied().collect();
        stores.sort_unstable();
        stores
    }
}

pub fn spawn(
    state: Arc<ServerState>,
    mut requests: Streaming<pdpb::RegionHeartbeatRequest>,
) -> HeartbeatResponseStream {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let Some(leader) = state.leader_term() else {
            let _ = tx.send(Err(state.not_leader())).await;
            return;
        };
        let stream_id = leader.heartbeat_streams.new_stream_id();
        loop {
            let next = tokio::select! {
                _ = state.shutting_down() => break,
                // Storage nodes reconnect to the new leader.
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
                    tracing::debug!(%status, "region heartbeat stream ended by client");
                    break;
                }
            };
            if let Err(status) = handle(&state, &leader, stream_id, &tx, &request).await {
                let _ = tx.send(Err(status)).await;
                break;
            }
        }
        leader.heartbeat_streams.unbind(stream_id);
    });
    ReceiverStream::new(rx)
}

/// `Err` ends the stream (cluster id mismatch, as PD does); other problems are
/// reported in a response header and the stream goes on.
async fn handle(
    state: &ServerState,
    leader: &LeaderTerm,
    stream_id: u64,
    tx: &ResponseSender,
    request: &pdpb::RegionHeartbeatRequest,
) -> Result<(), Status> {
    let cluster_id = leader.cluster.id();
    header::check_cluster_id(cluster_id, request.header.as_ref())
        .map_err(|e| Status::failed_precondition(e.to_string()))?;
    state.metrics.region_heartbeats.inc();
    if let Some(peer) = &request.leader {
        leader.heartbeat_streams.bind(peer.store_id, stream_id, tx);
    }
    let region_id = request.region.as_ref().map_or(0, |r| r.id);
    let response = match leader.cluster.region_heartbeat(request).await {
        // The Region's operator, if any, moves on: its current step goes back.
        Ok(()) if leader.schedule.has_operator(region_id) => RegionInfo::from_heartbeat(request)
            .and_then(|info| leader.schedule.on_region_heartbeat(&info))
            .map(|mut command| {
                command.header = Some(header::ok_header(cluster_id));
                command
            }),
        Ok(()) => None,
        Err(error) => {
            tracing::debug!(region_id, %error, "region heartbeat rejected");
            state
                .metrics
                .grpc_errors
                .with_label_values(&["RegionHeartbeat", error.error_type().as_str_name()])
                .inc();
            Some(pdpb::RegionHeartbeatResponse {
                header: Some(header::error_header(cluster_id, &error)),
                region_id,
                region_epoch: request.region.as_ref().and_then(|r| r.region_epoch),
                target_peer: request.leader,
                ..Default::default()
            })
        }
    };
    if let Some(response) = response {
        if tx.send(Ok(response)).await.is_err() {
            return Err(Status::cancelled("heartbeat stream closed"));
        }
    }
    Ok(())
}
