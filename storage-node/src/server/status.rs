//! The HTTP status port: `/metrics` for Prometheus, `/status` for people
//! (and tests), `/region/{id}` for one replica's Raft state, and, when
//! allowed, `/debug/transport` to inject faults into this store's Raft
//! traffic.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use openraft::async_runtime::WatchReceiver;
use openraft::Instant as _;
use serde::{Deserialize, Serialize};

use super::metrics;
use crate::raftstore::Router as RegionRouter;

#[derive(Clone)]
pub struct StatusState {
    pub router: Arc<RegionRouter>,
    pub allow_fault_injection: bool,
}

#[derive(Serialize)]
struct StatusBody {
    store_id: u64,
    version: &'static str,
    region_ids: Vec<u64>,
    /// Regions whose Raft leader is this store's replica.
    leader_region_ids: Vec<u64>,
}

pub fn router(state: StatusState) -> Router {
    Router::new()
        .route("/metrics", get(|| async { metrics::render() }))
        .route("/status", get(status))
        .route("/region/{id}", get(region))
        .route("/debug/transport", post(transport_faults))
        .with_state(state)
}

async fn status(State(state): State<StatusState>) -> Json<StatusBody> {
    let regions = &state.router.context().regions;
    let mut leader_region_ids: Vec<u64> = state
        .router
        .peers()
        .iter()
        .filter(|p| p.is_leader())
        .map(|p| p.region_id)
        .collect();
    leader_region_ids.sort_unstable();
    Json(StatusBody {
        store_id: regions.store_id(),
        version: env!("CARGO_PKG_VERSION"),
        region_ids: regions.ids(),
        leader_region_ids,
    })
}

/// One replica's Region and Raft state, as this store sees them.
#[derive(Serialize)]
struct RegionBody {
    region_id: u64,
    peer_id: u64,
    /// Start and end keys in hex.
    start_key: String,
    end_key: String,
    conf_ver: u64,
    version: u64,
    peers: Vec<(u64, u64)>,
    raft_state: String,
    term: u64,
    leader_peer_id: Option<u64>,
    last_log_index: Option<u64>,
    committed_index: Option<u64>,
    applied_index: Option<u64>,
    snapshot_index: Option<u64>,
    voters: Vec<u64>,
    learners: Vec<u64>,
    /// Milliseconds since a leader last reached this replica.
    silent_for_ms: u64,
    /// Milliseconds since a quorum last acknowledged this leader.
    millis_since_quorum_ack: Option<u64>,
}

async fn region(
    State(state): State<StatusState>,
    Path(id): Path<u64>,
) -> Result<Json<RegionBody>, (StatusCode, String)> {
    let peer = state.router.peer(id).ok_or((
        StatusCode::NOT_FOUND,
        format!("region {id} has no replica on this store"),
    ))?;
    let region = peer.region();
    let epoch = region.region_epoch.unwrap_or_default();
    let metrics = peer.raft().metrics();
    let m = metrics.borrow_watched();
    let membership = m.membership_config.membership();
    Ok(Json(RegionBody {
        region_id: id,
        peer_id: peer.peer_id,
        start_key: hex(&region.start_key),
        end_key: hex(&region.end_key),
        conf_ver: epoch.conf_ver,
        version: epoch.version,
        peers: region.peers.iter().map(|p| (p.id, p.store_id)).collect(),
        raft_state: format!("{:?}", m.state),
        term: m.current_term,
        leader_peer_id: m.current_leader,
        last_log_index: m.last_log_index,
        committed_index: m.local_committed.map(|l| l.index),
        applied_index: m.last_applied.map(|l| l.index),
        snapshot_index: m.snapshot.map(|l| l.index),
        voters: membership.voter_ids().collect(),
        learners: membership.learner_ids().collect(),
        silent_for_ms: peer.silent_for().as_millis() as u64,
        millis_since_quorum_ack: m
            .last_quorum_acked
            .map(|at| at.elapsed().as_millis() as u64),
    }))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Fault settings; absent fields are left as they are.
#[derive(Debug, Deserialize)]
struct FaultRequest {
    /// Drop every Raft message to and from this store.
    isolated: Option<bool>,
    /// Drop Raft traffic with these stores only (empty: heal).
    partitioned_from: Option<Vec<u64>>,
    /// Drop this share (0..=1) of outgoing Raft messages.
    drop_ratio: Option<f64>,
    /// Delay outgoing Raft messages this long.
    delay_ms: Option<u64>,
}

async fn transport_faults(
    State(state): State<StatusState>,
    Json(request): Json<FaultRequest>,
) -> Result<StatusCode, (StatusCode, String)> {
    if !state.allow_fault_injection {
        return Err((
            StatusCode::NOT_FOUND,
            "fault injection is not enabled on this store".into(),
        ));
    }
    tracing::warn!(?request, "fault injection: raft transport");
    let faults = state.router.context().transport.faults();
    if let Some(isolated) = request.isolated {
        faults.isolate(isolated);
    }
    if let Some(stores) = request.partitioned_from {
        if stores.is_empty() {
            faults.heal();
        } else {
            faults.partition_from(stores);
        }
    }
    if let Some(ratio) = request.drop_ratio {
        if !(0.0..=1.0).contains(&ratio) {
            return Err((
                StatusCode::BAD_REQUEST,
                "drop_ratio must be in 0..=1".into(),
            ));
        }
        faults.drop_ratio(ratio);
    }
    if let Some(ms) = request.delay_ms {
        faults.delay(Duration::from_millis(ms));
    }
    Ok(StatusCode::OK)
}
