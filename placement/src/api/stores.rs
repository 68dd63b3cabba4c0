//! `/stores`, `/store/{id}` (GET, DELETE) and `/store/{id}/state`, shaped
//! like PD's `StoreInfo` JSON and store lifecycle calls.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use shale_proto::metapb::StoreState;

use super::format::{byte_size, go_duration_ms, rfc3339_ms};
use super::{parse_id, ApiError, Leader};
use crate::cluster::regions::StoreRegionCounts;
use crate::cluster::store_state::StoreStateError;
use crate::cluster::stores::StoreInfo;
use crate::meta::MetaError;
use crate::schedule::options::DISCONNECTED_AFTER_MS;
use crate::server::ServerState;

#[derive(Debug, Serialize)]
pub struct LabelJson {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Serialize)]
pub struct StoreMetaJson {
    pub id: u64,
    pub address: String,
    pub labels: Vec<LabelJson>,
    pub version: String,
    pub peer_address: String,
    pub status_address: String,
    pub git_hash: String,
    pub start_timestamp: i64,
    pub deploy_path: String,
    pub last_heartbeat: i64,
    pub state: i32,
    pub state_name: String,
    pub node_state: i32,
}

#[derive(Debug, Serialize)]
pub struct StoreStatusJson {
    pub capacity: String,
    pub available: String,
    pub used_size: String,
    pub leader_count: u64,
    pub leader_weight: f64,
    pub leader_size: u64,
    pub region_count: u64,
    pub region_weight: f64,
    pub region_size: u64,
    pub sending_snap_count: u32,
    pub receiving_snap_count: u32,
    pub is_busy: bool,
    pub start_ts: String,
    pub last_heartbeat_ts: String,
    pub uptime: String,
}

#[derive(Debug, Serialize)]
pub struct StoreJson {
    pub store: StoreMetaJson,
    pub status: StoreStatusJson,
}

#[derive(Debug, Serialize)]
pub struct StoresJson {
    pub count: usize,
    pub stores: Vec<StoreJson>,
}

/// `Up` stores that stopped heartbeating show as `Disconnected` (20 s) and
/// `Down` (max-store-down-time), as in PD.
fn state_name(store: &StoreInfo, now_ms: u64, down_after_ms: u64) -> String {
    let state = StoreState::try_from(store.meta.state).unwrap_or(StoreState::Up);
    if state == StoreState::Up {
        let silent = now_ms.saturating_sub(store.last_heartbeat_ms);
        if silent >= down_after_ms {
            return "Down".into();
        }
        if silent >= DISCONNECTED_AFTER_MS {
            return "Disconnected".into();
        }
    }
    state.as_str_name().into()
}

pub fn store_json(
    store: &StoreInfo,
    counts: StoreRegionCounts,
    now_ms: u64,
    down_after_ms: u64,
) -> StoreJson {
    let meta = &store.meta;
    let stats = store.stats.clone().unwrap_or_default();
    let start_ms = u64::try_from(meta.start_timestamp)
        .unwrap_or(0)
        .saturating_mul(1000);
    let uptime_ms = if start_ms == 0 {
        0
    } else {
        store.last_heartbeat_ms.saturating_sub(start_ms)
    };
    StoreJson {
        store: StoreMetaJson {
            id: meta.id,
            address: meta.address.clone(),
            labels: meta
                .labels
                .iter()
                .map(|l| LabelJson {
                    key: l.key.clone(),
                    value: l.value.clone(),
                })
                .collect(),
            version: meta.version.clone(),
            peer_address: meta.peer_address.clone(),
            status_address: meta.status_address.clone(),
            git_hash: meta.git_hash.clone(),
            start_timestamp: meta.start_timestamp,
            deploy_path: meta.deploy_path.clone(),
            last_heartbeat: i64::try_from(store.last_heartbeat_ms.saturating_mul(1_000_000))
                .unwrap_or(i64::MAX),
            state: meta.state,
            state_name: state_name(store, now_ms, down_after_ms),
            node_state: meta.node_state,
        },
        status: StoreStatusJson {
            capacity: byte_size(stats.capacity),
            available: byte_size(stats.available),
            used_size: byte_size(stats.used_size),
            leader_count: counts.leader_count,
            leader_weight: 1.0,
            leader_size: counts.leader_size,
            region_count: counts.region_count,
            region_weight: 1.0,
            region_size: counts.region_size,
            sending_snap_count: stats.sending_snap_count,
            receiving_snap_count: stats.receiving_snap_count,
            is_busy: stats.is_busy,
            start_ts: rfc3339_ms(start_ms),
            last_heartbeat_ts: rfc3339_ms(store.last_heartbeat_ms),
            uptime: go_duration_ms(uptime_ms),
        },
    }
}

/// Store states named by a `state` query value: PD's numbers, or names.
fn parse_state(raw: &str) -> Option<StoreState> {
    match raw.to_ascii_lowercase().as_str() {
        "0" | "up" => Some(StoreState::Up),
        "1" | "offline" => Some(StoreState::Offline),
        "2" | "tombstone" => Some(StoreState::Tombstone),
        _ => None,
    }
}

/// Every `state=` value of a query string (repeatable, as in PD).
fn query_states(query: Option<&str>) -> Result<Vec<StoreState>, ApiError> {
    let mut states = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != "state" {
            continue;
        }
        states.push(parse_state(value).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("invalid state {value:?}: expected Up, Offline or Tombstone (or 0, 1, 2)"),
            )
        })?);
    }
    Ok(states)
}

fn down_after_ms(state: &ServerState) -> u64 {
    state.config.max_store_down_time.as_millis()
}

/// `GET /stores[?state=0&state=1...]`: Up and Offline stores unless other
/// states are asked for, as PD lists them.
pub async fn list(
    State(state): State<Arc<ServerState>>,
    Leader(leader): Leader,
    RawQuery(query): RawQuery,
) -> Result<Json<StoresJson>, ApiError> {
    let mut accepted = query_states(query.as_deref())?;
    if accepted.is_empty() {
        accepted = vec![StoreState::Up, StoreState::Offline];
    }
    let now = state.clock.now_ms();
    let counts = leader.cluster.store_region_counts();
    let stores: Vec<StoreJson> = leader
        .cluster
        .stores_snapshot()
        .iter()
        .filter(|s| {
            accepted.contains(&StoreState::try_from(s.meta.state).unwrap_or(StoreState::Up))
        })
        .map(|s| {
            let c = counts.get(&s.meta.id).copied().unwrap_or_default();
            store_json(s, c, now, down_after_ms(&state))
        })
        .collect();
    Ok(Json(StoresJson {
        count: stores.len(),
        stores,
    }))
}

pub async fn by_id(
    State(state): State<Arc<ServerState>>,
    Leader(leader): Leader,
    Path(id): Path<String>,
) -> Result<Json<StoreJson>, ApiError> {
    let id = parse_id("store", &id)?;
    let store = leader
        .cluster
        .stores_snapshot()
        .into_iter()
        .find(|s| s.meta.id == id)
        .ok_or_else(|| ApiError::not_found(format!("store {id} not found")))?;
    let counts = leader
        .cluster
        .store_region_counts()
        .get(&id)
        .copied()
        .unwrap_or_default();
    Ok(Json(store_json(
        &store,
        counts,
        state.clock.now_ms(),
        down_after_ms(&state),
    )))
}

/// `DELETE /store/{id}`: the store goes Offline; its Regions move away and
/// it becomes Tombstone once it holds none.
pub async fn remove(
    Leader(leader): Leader,
    Path(id): Path<String>,
) -> Result<Json<&'static str>, ApiError> {
    let id = parse_id("store", &id)?;
    leader
        .cluster
        .set_store_state(id, StoreState::Offline)
        .await
        .map_err(store_state_error)?;
    Ok(Json("The store is set as Offline."))
}

/// `POST /store/{id}/state?state=Up|Offline|Tombstone`.
pub async fn set_state(
    Leader(leader): Leader,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<&'static str>, ApiError> {
    let id = parse_id("store", &id)?;
    let target = match query_states(query.as_deref())?.as_slice() {
        [one] => *one,
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "expected one state parameter: ?state=Up, Offline or Tombstone",
            ))
        }
    };
    leader
        .cluster
        .set_store_state(id, target)
        .await
        .map_err(store_state_error)?;
    Ok(Json("The store's state is updated."))
}

fn store_state_error(e: StoreStateError) -> ApiError {
    let status = match &e {
        StoreStateError::NotFound(_) | StoreStateError::NotBootstrapped => StatusCode::NOT_FOUND,
        StoreStateError::Tombstone(_)
        | StoreStateError::TooFewStores { .. }
        | StoreStateError::HasPeers { .. }
        | StoreStateError::IsUp(_) => StatusCode::CONFLICT,
        StoreStateError::Meta(MetaError::NotLeader) => StatusCode::SERVICE_UNAVAILABLE,
        StoreStateError::Meta(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, e.to_string())
}
