//! `/health`, `/members`, `/config`, `/cluster` and `/metrics`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use shale_proto::pdpb;

use super::ApiError;
use crate::server::ServerState;

#[derive(Debug, Serialize)]
pub struct MemberJson {
    pub name: String,
    pub member_id: u64,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub binary_version: String,
    pub git_hash: String,
    pub deploy_path: String,
}

impl From<pdpb::Member> for MemberJson {
    fn from(m: pdpb::Member) -> Self {
        MemberJson {
            name: m.name,
            member_id: m.member_id,
            peer_urls: m.peer_urls,
            client_urls: m.client_urls,
            binary_version: m.binary_version,
            git_hash: m.git_hash,
            deploy_path: m.deploy_path,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct HeaderJson {
    pub cluster_id: u64,
}

#[derive(Debug, Serialize)]
pub struct MembersJson {
    pub header: HeaderJson,
    pub members: Vec<MemberJson>,
    pub leader: MemberJson,
    pub etcd_leader: MemberJson,
}

#[derive(Debug, Serialize)]
pub struct HealthJson {
    pub name: String,
    pub member_id: u64,
    pub client_urls: Vec<String>,
    pub health: bool,
}

pub async fn health(State(state): State<Arc<ServerState>>) -> Json<Vec<HealthJson>> {
    let member = state.member.to_proto();
    Json(vec![HealthJson {
        name: member.name,
        member_id: member.member_id,
        client_urls: member.client_urls,
        health: true,
    }])
}

pub async fn members(State(state): State<Arc<ServerState>>) -> Json<MembersJson> {
    let member = state.member.to_proto();
    Json(MembersJson {
        header: HeaderJson {
            cluster_id: state.cluster_id(),
        },
        members: vec![member.clone().into()],
        leader: member.clone().into(),
        etcd_leader: member.into(),
    })
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ReplicationJson {
    pub max_replicas: u32,
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
        replication: ReplicationJson {
            max_replicas: state.cluster.max_peer_count(),
        },
    })
}

#[derive(Debug, Serialize)]
pub struct ClusterJson {
    pub id: u64,
    pub max_peer_count: u32,
    /// Not in PD's response (PD answers 500 before bootstrap); ours always
    /// answers and says whether storage nodes have bootstrapped it.
    pub is_bootstrapped: bool,
}

pub async fn cluster(State(state): State<Arc<ServerState>>) -> Json<ClusterJson> {
    Json(ClusterJson {
        id: state.cluster_id(),
        max_peer_count: state.cluster.max_peer_count(),
        is_bootstrapped: state.cluster.is_bootstrapped(),
    })
}

pub async fn metrics(State(state): State<Arc<ServerState>>) -> Result<Response, ApiError> {
    let text = state
        .metrics
        .render(
            state.cluster.region_count(),
            state.cluster.stores_snapshot().len(),
        )
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}
