//! `/schedulers`: list, add and remove schedulers, with PD's names and
//! request shapes (`{"name": "evict-leader-scheduler", "store_id": 1}`).

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::{ApiError, Leader};
use crate::meta::MetaError;
use crate::schedule::schedulers::SchedulerError;

#[derive(Debug, Deserialize)]
struct AddScheduler {
    name: String,
    #[serde(default)]
    store_id: Option<u64>,
}

/// `GET /schedulers`: the names of the running schedulers.
pub async fn list(Leader(leader): Leader) -> Json<Vec<String>> {
    Json(leader.schedule.schedulers().names())
}

/// `POST /schedulers`. The body is read as JSON whatever its content type
/// says (`curl -d` sends a form type).
pub async fn add(Leader(leader): Leader, body: Bytes) -> Result<Json<&'static str>, ApiError> {
    let request: AddScheduler = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid request body: {e}; expected {{\"name\": \"...\", \"store_id\": N}}"),
        )
    })?;
    leader
        .schedule
        .add_scheduler(&leader.cluster, &request.name, request.store_id)
        .await
        .map_err(scheduler_error)?;
    Ok(Json("The scheduler is created."))
}

/// `DELETE /schedulers/{name}`; `evict-leader-scheduler-{id}` stops
/// evicting that store only.
pub async fn remove(
    Leader(leader): Leader,
    Path(name): Path<String>,
) -> Result<Json<&'static str>, ApiError> {
    leader
        .schedule
        .remove_scheduler(&name)
        .await
        .map_err(scheduler_error)?;
    Ok(Json("The scheduler is removed."))
}

fn scheduler_error(e: SchedulerError) -> ApiError {
    let status = match &e {
        SchedulerError::Unknown(_)
        | SchedulerError::MissingStoreId
        | SchedulerError::StoreIdMismatch { .. }
        | SchedulerError::StoreTombstone(_) => StatusCode::BAD_REQUEST,
        SchedulerError::StoreNotFound(_) | SchedulerError::NotFound(_) => StatusCode::NOT_FOUND,
        SchedulerError::Exists(_) => StatusCode::CONFLICT,
        SchedulerError::Meta(MetaError::NotLeader) => StatusCode::SERVICE_UNAVAILABLE,
        SchedulerError::Meta(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, e.to_string())
}
