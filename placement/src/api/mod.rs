//! HTTP API under `/pd/api/v1`, compatible with PD's for the parts served.
//!
//! Any member answers `/members`, `/health` and `/ping`; everything that
//! needs the cluster state is served by the leader, and other members
//! redirect there (307, method and body kept), as PD's followers do.

mod config;
pub mod format;
mod members;
mod operators;
mod regions;
mod schedulers;
mod stores;

use std::sync::Arc;

use axum::extract::{FromRequestParts, OriginalUri};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};

use crate::server::{LeaderTerm, ServerState};

pub use format::{byte_size, go_duration_ms, hex_upper, rfc3339_ms};

pub const PREFIX: &str = "/pd/api/v1";

pub fn router(state: Arc<ServerState>) -> Router {
    let api = Router::new()
        .route("/regions", get(regions::list))
        .route("/region/id/{id}", get(regions::by_id))
        .route("/stores", get(stores::list))
        .route("/store/{id}", get(stores::by_id).delete(stores::remove))
        .route("/store/{id}/state", post(stores::set_state))
        .route("/schedulers", get(schedulers::list).post(schedulers::add))
        .route("/schedulers/{name}", delete(schedulers::remove))
        .route("/operators", get(operators::list))
        .route("/health", get(members::health))
        .route("/ping", get(members::ping))
        .route("/members", get(members::members).post(members::join))
        .route("/members/name/{name}", delete(members::remove))
        .route("/leader", get(members::leader))
        .route("/config", get(config::config))
        .route("/config/replicate", get(config::replicate))
        .route("/cluster", get(members::cluster))
        .route("/debug/isolate", post(members::isolate));
    Router::new()
        .nest(PREFIX, api)
        .route("/metrics", get(members::metrics))
        .with_state(state)
}

/// The serving leader's state; on other members the request is redirected
/// to the leader (or refused with 503 while no leader is known).
pub struct Leader(pub Arc<LeaderTerm>);

impl FromRequestParts<Arc<ServerState>> for Leader {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ServerState>,
    ) -> Result<Self, Self::Rejection> {
        if let Some(leader) = state.leader_term() {
            return Ok(Leader(leader));
        }
        match state.leader_url() {
            Some(url) if url != state.member.client_url => {
                // Inside the nested router `parts.uri` lost the prefix.
                let uri = parts
                    .extensions
                    .get::<OriginalUri>()
                    .map_or(&parts.uri, |original| &original.0);
                let target = match uri.path_and_query() {
                    Some(pq) => format!("{url}{pq}"),
                    None => url,
                };
                Err((StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, target)]).into_response())
            }
            _ => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "placement member {} is not the leader and no leader is known",
                    state.member.name
                ),
            )
            .into_response()),
        }
    }
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
