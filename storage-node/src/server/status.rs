//! The HTTP status port: `/metrics` for Prometheus, `/status` for people.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::metrics;
use crate::region::RegionRegistry;

#[derive(Serialize)]
struct StatusBody {
    store_id: u64,
    version: &'static str,
    region_ids: Vec<u64>,
}

pub fn router(regions: RegionRegistry) -> Router {
    Router::new()
        .route("/metrics", get(|| async { metrics::render() }))
        .route("/status", get(status))
        .with_state(regions)
}

async fn status(State(regions): State<RegionRegistry>) -> Json<StatusBody> {
    Json(StatusBody {
        store_id: regions.store_id(),
        version: env!("CARGO_PKG_VERSION"),
        region_ids: regions.ids(),
    })
}
