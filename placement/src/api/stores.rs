//! `/stores` and `/store/{id}`, shaped like PD's `StoreInfo` JSON.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use serde::Serialize;
use shale_proto::metapb;

use super::format::{byte_size, go_duration_ms, rfc3339_ms};
use super::{parse_id, ApiError, Leader};
use crate::cluster::regions::StoreRegionCounts;
use crate::cluster::stores::StoreInfo;
use crate::server::ServerState;

/// No heartbeat for this long: shown as `Disconnected` (PD's value).
const DISCONNECTED_AFTER_MS: u64 = 20_000;
/// No heartbeat for this long: shown as `Down` (PD's max-store-down-time).
const DOWN_AFTER_MS: u64 = 30 * 60_000;

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

/// `Up` stores that stopped heartbeating show as `Disconnected` / `Down`.
fn state_name(store: &StoreInfo, now_ms: u64) -> String {
    let state = metapb::StoreState::try_from(store.meta.state).unwrap_or(metapb::StoreState::Up);
    if state == metapb::StoreState::Up {
        let silent = now_ms.saturating_sub(store.last_heartbeat_ms);
        if silent >= DOWN_AFTER_MS {
            return "Down".into();
        }
        if silent >= DISCONNECTED_AFTER_MS {
            return "Disconnected".into();
        }
    }
    state.as_str_name().into()
}

pub fn store_json(store: &StoreInfo, counts: StoreRegionCounts, now_ms: u64) -> StoreJson {
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
            state_name: state_name(store, now_ms),
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

pub async fn list(
    State(state): State<Arc<ServerState>>,
    Leader(leader): Leader,
) -> Json<StoresJson> {
    let now = state.clock.now_ms();
    let counts = leader.cluster.store_region_counts();
    let stores: Vec<StoreJson> = leader
        .cluster
        .stores_snapshot()
        .iter()
        .map(|s| store_json(s, counts.get(&s.meta.id).copied().unwrap_or_default(), now))
        .collect();
    Json(StoresJson {
        count: stores.len(),
        stores,
    })
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
    Ok(Json(store_json(&store, counts, state.clock.now_ms())))
}
