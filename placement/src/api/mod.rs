//! HTTP API under `/pd/api/v1`, compatible with PD's for the parts served.

mod format;
mod members;
mod regions;
mod stores;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::server::ServerState;

pub use format::{byte_size, go_duration_ms, hex_upper, rfc3339_ms};

pub const PREFIX: &str = "/pd/api/v1";

pub fn router(state: Arc<ServerState>) -> Router {
    let api = Router::new()
        .route("/regions", get(regions::list))
        .route("/region/id/{id}", get(regions::by_id))
        .route("/stores", get(stores::list))
        .route("/store/{id}", get(stores::by_id))
        .route("/health", get(members::health))
        .route("/members", get(members::members))
        .route("/config", get(members::config))
        .route("/cluster", get(members::cluster));
    Router::new()
        .nest(PREFIX, api)
        .route("/metrics", get(members::metrics))
        .with_state(state)
}

/// A JSON error body with an HTTP status: `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

fn parse_id(what: &str, raw: &str) -> Result<u64, ApiError> {
    raw.parse::<u64>().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid {what} id {raw:?}: expected an unsigned integer"),
        )
    })
}
