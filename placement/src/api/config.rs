//! `/config` and `/config/replicate`, in PD's kebab-case shape (booleans
//! PD prints as strings are strings here too).

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use crate::config::Config;
use crate::duration::ConfigDuration;
use crate::server::ServerState;

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ReplicationJson {
    pub max_replicas: u32,
    pub location_labels: String,
    pub strictly_match_label: &'static str,
    pub enable_placement_rules: &'static str,
    pub isolation_level: String,
}

impl ReplicationJson {
    fn from_config(config: &Config) -> Self {
        ReplicationJson {
            max_replicas: config.max_replicas,
            location_labels: String::new(),
            strictly_match_label: "false",
            enable_placement_rules: "false",
            isolation_level: String::new(),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ScheduleJson {
    pub max_store_down_time: ConfigDuration,
    pub leader_schedule_limit: u64,
    pub region_schedule_limit: u64,
    pub replica_schedule_limit: u64,
    pub max_snapshot_count: u64,
    /// Leaders are balanced by count, as PD's default.
    pub leader_schedule_policy: &'static str,
    /// Shale's: how often the scheduling round runs.
    pub schedule_interval: ConfigDuration,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ConfigJson {
    pub name: String,
    pub data_dir: String,
    pub client_urls: String,
    pub advertise_client_urls: String,
    pub log_level: String,
    pub cluster_id: u64,
    pub schedule: ScheduleJson,
    pub replication: ReplicationJson,
}

pub async fn config(State(state): State<Arc<ServerState>>) -> Json<ConfigJson> {
    let config = &state.config;
    Json(ConfigJson {
        name: config.name.clone(),
        data_dir: config.data_dir.display().to_string(),
        client_urls: format!("http://{}", config.listen_addr),
        advertise_client_urls: state.member.client_url.clone(),
        log_level: config.log_level.clone(),
        cluster_id: state.cluster_id(),
        schedule: ScheduleJson {
            max_store_down_time: config.max_store_down_time,
            leader_schedule_limit: config.leader_schedule_limit,
            region_schedule_limit: config.region_schedule_limit,
            replica_schedule_limit: config.replica_schedule_limit,
            max_snapshot_count: config.max_snapshot_count,
            leader_schedule_policy: "count",
            schedule_interval: config.schedule_interval,
        },
        replication: ReplicationJson::from_config(config),
    })
}

pub async fn replicate(State(state): State<Arc<ServerState>>) -> Json<ReplicationJson> {
    Json(ReplicationJson::from_config(&state.config))
}
