//! Group membership: the static `--initial-cluster` list, joining a running
//! group, and member add/remove on the leader.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use openraft::ChangeMembers;
use serde::{Deserialize, Serialize};

use super::types::{node_id_of, PlacementNode};
use super::PlacementRaft;

/// `name=url,name=url,...`: the members a new group starts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialCluster(Vec<PlacementNode>);

impl InitialCluster {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut members = Vec::new();
        let mut names = BTreeSet::new();
        let mut ids = BTreeSet::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, url) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?} is not name=url"))?;
            let (name, url) = (name.trim(), url.trim());
            if name.is_empty() {
                return Err(format!("{item:?} has an empty name"));
            }
            let url = normalize_url(url)?;
            if !names.insert(name.to_string()) {
                return Err(format!("member {name:?} is listed twice"));
            }
            if !ids.insert(node_id_of(name)) {
                return Err(format!("member names collide: {name:?}"));
            }
            members.push(PlacementNode {
                name: name.to_string(),
                url,
            });
        }
        if members.is_empty() {
            return Err("the member list is empty".into());
        }
        Ok(InitialCluster(members))
    }

    pub fn single(node: PlacementNode) -> Self {
        InitialCluster(vec![node])
    }

    pub fn members(&self) -> &[PlacementNode] {
        &self.0
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|m| m.name == name)
    }

    pub fn get(&self, name: &str) -> Option<&PlacementNode> {
        self.0.iter().find(|m| m.name == name)
    }
}

impl fmt::Display for InitialCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&items.join(","))
    }
}

/// `host:port` or `http://host:port` -> `http://host:port`.
pub fn normalize_url(url: &str) -> Result<String, String> {
    let rest = match url.split_once("://") {
        Some(("http", rest)) => rest,
        Some((scheme, _)) => return Err(format!("{url:?}: unsupported scheme {scheme:?}")),
        None => url,
    };
    let rest = rest.trim_end_matches('/');
    let valid = rest
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !valid {
        return Err(format!("{url:?} is not host:port"));
    }
    Ok(format!("http://{rest}"))
}

/// Body of `POST /pd/api/v1/members`: a new member asking to join.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    pub name: String,
    pub url: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("this member is not the leader")]
    NotLeader,
    #[error("no member named {0:?}")]
    UnknownMember(String),
    #[error("member {name:?} already exists with url {url}")]
    NameTaken { name: String, url: String },
    #[error("removing {0:?} would leave no voting member")]
    LastMember(String),
    #[error("membership change failed: {0}")]
    Raft(String),
}

fn raft_err(
    e: openraft::errors::RaftError<
        super::types::TypeConfig,
        openraft::errors::ClientWriteError<super::types::TypeConfig>,
    >,
) -> MembershipError {
    match e {
        openraft::errors::RaftError::APIError(
            openraft::errors::ClientWriteError::ForwardToLeader(_),
        ) => MembershipError::NotLeader,
        other => MembershipError::Raft(other.to_string()),
    }
}

/// Retries while an earlier membership change is still being committed
/// (a join right before a removal), up to a few seconds.
async fn change_membership_retrying(
    raft: &super::types::Raft,
    change: ChangeMembers<super::types::NodeId, PlacementNode>,
) -> Result<(), MembershipError> {
    use openraft::errors::{ChangeMembershipError, ClientWriteError, RaftError};
    let mut attempts = 0;
    loop {
        match raft.change_membership(change.clone(), false).await {
            Ok(_) => return Ok(()),
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                ChangeMembershipError::InProgress(_),
            ))) if attempts < 50 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(raft_err(e)),
        }
    }
}

impl PlacementRaft {
    /// Adds a member: first as a learner that catches up, then as a voter.
    /// Re-adding a current member with the same url is a no-op.
    pub async fn add_member(&self, request: &JoinRequest) -> Result<(), MembershipError> {
        if !self.is_leader() {
            return Err(MembershipError::NotLeader);
        }
        let url = normalize_url(&request.url).map_err(MembershipError::Raft)?;
        let id = node_id_of(&request.name);
        if let Some((_, node, voter)) = self.members().into_iter().find(|(mid, _, _)| *mid == id) {
            if node.url != url {
                return Err(MembershipError::NameTaken {
                    name: request.name.clone(),
                    url: node.url,
                });
            }
            if voter {
                return Ok(());
            }
        }
        let node = PlacementNode {
            name: request.name.clone(),
            url,
        };
        tracing::info!(member = %node, "adding placement member");
        self.raft()
            .add_learner(id, node, true)
            .await
            .map_err(raft_err)?;
        change_membership_retrying(
            self.raft(),
            ChangeMembers::AddVoterIds(BTreeSet::from([id])),
        )
        .await
    }

    /// Removes a member by name (voter or learner).
    pub async fn remove_member(&self, name: &str) -> Result<(), MembershipError> {
        if !self.is_leader() {
            return Err(MembershipError::NotLeader);
        }
        let id = node_id_of(name);
        let members = self.members();
        let Some((_, _, voter)) = members.iter().find(|(mid, _, _)| *mid == id) else {
            return Err(MembershipError::UnknownMember(name.to_string()));
        };
        let change = if *voter {
            let voters = members.iter().filter(|(_, _, v)| *v).count();
            if voters <= 1 {
                return Err(MembershipError::LastMember(name.to_string()));
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        tracing::info!(member = name, "removing placement member");
        change_membership_retrying(self.raft(), change).await
    }

    /// True once this member is part of a group (formed or joined).
    pub async fn is_initialized(&self) -> bool {
        self.raft().is_initialized().await.unwrap_or(false)
    }
}

/// Asks a running group (any of `urls`; followers redirect to the leader)
/// to add this member, retrying until it is in.
pub async fn join(
    placement: &PlacementRaft,
    urls: &[String],
    give_up_after: Duration,
) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| e.to_string())?;
    let request = JoinRequest {
        name: placement.node().name.clone(),
        url: placement.node().url.clone(),
    };
    let deadline = tokio::time::Instant::now() + give_up_after;
    let mut last_error = String::from("no join url given");
    loop {
        for url in urls {
            let endpoint = match normalize_url(url) {
                Ok(base) => format!("{base}/pd/api/v1/members"),
                Err(e) => return Err(e),
            };
            match client.post(&endpoint).json(&request).send().await {
                Ok(response) if response.status().is_success() => {
                    tracing::info!(via = %url, "joined the placement group");
                    return Ok(());
                }
                Ok(response) => {
                    let status = response.status();
                    let body = response.text().await.unwrap_or_default();
                    last_error = format!("{endpoint}: {status} {body}");
                }
                Err(e) => last_error = format!("{endpoint}: {e}"),
            }
        }
        if placement.is_initialized().await {
            // A previous attempt went through even though its answer was lost.
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(last_error);
        }
        tracing::warn!(error = %last_error, "join failed; retrying");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
