//! `/health`, `/members`, `/leader`, `/cluster` and `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use shale_proto::pdpb;

use super::{ApiError, Leader};
use crate::raft::members::{JoinRequest, MembershipError};
use crate::server::ServerState;

/// How long `/health` waits for each member.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Serialize)]
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
    pub leader: Option<MemberJson>,
    pub etcd_leader: Option<MemberJson>,
}

#[derive(Debug, Serialize)]
pub struct HealthJson {
    pub name: String,
    pub member_id: u64,
    pub client_urls: Vec<String>,
    pub health: bool,
}

/// Every member's health, probed over HTTP (`/ping`) from this member.
pub async fn health(State(state): State<Arc<ServerState>>) -> Json<Vec<HealthJson>> {
    let (members, _) = state.members();
    let client = reqwest::Client::builder()
        .timeout(PING_TIMEOUT)
        .build()
        .ok();
    let probes = members.into_iter().map(|member| {
        let client = client.clone();
        let is_self = member.member_id == state.member.member_id;
        async move {
            let health = is_self || probe(client.as_ref(), &member.client_urls).await;
            HealthJson {
                name: member.name,
                member_id: member.member_id,
                client_urls: member.client_urls,
                health,
            }
        }
    });
    Json(futures::future::join_all(probes).await)
}

async fn probe(client: Option<&reqwest::Client>, urls: &[String]) -> bool {
    let (Some(client), Some(url)) = (client, urls.first()) else {
        return false;
    };
    client
        .get(format!("{url}{}/ping", super::PREFIX))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// `GET /ping`: answers while this member's HTTP server runs.
pub async fn ping() -> StatusCode {
    StatusCode::OK
}

pub async fn members(State(state): State<Arc<ServerState>>) -> Json<MembersJson> {
    let (members, leader) = state.members();
    let leader: Option<MemberJson> = leader.map(Into::into);
    Json(MembersJson {
        header: HeaderJson {
            cluster_id: state.cluster_id(),
        },
        members: members.into_iter().map(Into::into).collect(),
        etcd_leader: leader.clone(),
        leader,
    })
}

/// `GET /leader`: the current leader, as PD answers it.
pub async fn leader(State(state): State<Arc<ServerState>>) -> Result<Json<MemberJson>, ApiError> {
    state
        .members()
        .1
        .map(|m| Json(m.into()))
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no placement leader"))
}

/// `POST /members` with `{"name", "url"}`: a new member joins (leader only).
pub async fn join(
    State(state): State<Arc<ServerState>>,
    _leader: Leader,
    Json(request): Json<JoinRequest>,
) -> Result<Json<MembersJson>, ApiError> {
    state
        .raft
        .add_member(&request)
        .await
        .map_err(membership_error)?;
    Ok(members(State(state)).await)
}

/// `DELETE /members/name/{name}` (leader only). Removing the leader itself
/// is allowed: it hands over and steps down.
pub async fn remove(
    State(state): State<Arc<ServerState>>,
    _leader: Leader,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .raft
        .remove_member(&name)
        .await
        .map_err(membership_error)?;
    Ok(StatusCode::OK)
}

fn membership_error(e: MembershipError) -> ApiError {
    let status = match e {
        MembershipError::UnknownMember(_) => StatusCode::NOT_FOUND,
        MembershipError::NameTaken { .. } | MembershipError::LastMember(_) => StatusCode::CONFLICT,
        MembershipError::NotLeader => StatusCode::SERVICE_UNAVAILABLE,
        MembershipError::Raft(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, e.to_string())
}

#[derive(Debug, Deserialize)]
pub struct IsolateRequest {
    pub isolated: bool,
}

/// `POST /debug/isolate` with `{"isolated": bool}`: cut this member off from
/// (or reconnect it to) its peers' Raft traffic. Only with fault injection
/// allowed at start.
pub async fn isolate(
    State(state): State<Arc<ServerState>>,
    Json(request): Json<IsolateRequest>,
) -> Result<StatusCode, ApiError> {
    if !state.config.allow_fault_injection {
        return Err(ApiError::not_found(
            "fault injection is not enabled on this member",
        ));
    }
    tracing::warn!(
        isolated = request.isolated,
        "fault injection: raft isolation"
    );
    state.raft.faults().set_isolated(request.isolated);
    Ok(StatusCode::OK)
}

#[derive(Debug, Serialize)]
pub struct ClusterJson {
    pub id: u64,
    pub max_peer_count: u32,
    /// Not in PD's response (PD answers 500 before bootstrap); ours always
    /// answers and says whether storage nodes have bootstrapped it.
    pub is_bootstrapped: bool,
}

pub async fn cluster(Leader(leader): Leader) -> Json<ClusterJson> {
    Json(ClusterJson {
        id: leader.cluster.id(),
        max_peer_count: leader.cluster.max_peer_count(),
        is_bootstrapped: leader.cluster.is_bootstrapped(),
    })
}

pub async fn metrics(State(state): State<Arc<ServerState>>) -> Result<Response, ApiError> {
    let leader = state.leader_term();
    let (regions, stores) = leader.as_ref().map_or((0, 0), |l| {
        (l.cluster.region_count(), l.cluster.stores_snapshot().len())
    });
    let text = state
        .metrics
        .render(leader.is_some(), regions, stores)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}
