//! The HTTP status port: `/metrics` for Prometheus, `/status` for people
//! (and tests), and, when allowed, `/debug/transport` to inject faults into
//! this store's Raft traffic.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
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
