//! Placement's replicated metadata: one openraft group spanning the
//! placement members. Every metadata write is a Raft entry; the state
//! machine is the metadata itself, in the member's own RocksDB.
//!
//! The rest of placement sees this only as a [`MetaStore`]
//! ([`RaftMetaStore`]) plus leadership facts ([`PlacementRaft`]): whether
//! this member leads, who does, and whether its leader lease still holds.

mod db;
pub mod faults;
mod log_store;
pub mod members;
pub mod network;
mod state_machine;
pub mod types;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use openraft::async_runtime::WatchReceiver;
use openraft::ServerState as RaftRole;
use rocksdb::{Direction, IteratorMode};

use crate::meta::{MetaError, MetaOp, MetaResult, MetaStore, Records};
pub use db::RaftDb;
use db::CF_META;
use faults::Faults;
pub use members::InitialCluster;
use network::PeerNetwork;
use state_machine::MetaStateMachine;
use types::MetaCommand;
pub use types::{node_id_of, NodeId, PlacementNode, Raft};

/// Raft timing. Elections start after 1-2 s without a leader, so a lost
/// leader is replaced in a few seconds, as with PD.
pub const HEARTBEAT_INTERVAL_MS: u64 = 200;
pub const ELECTION_TIMEOUT_MIN_MS: u64 = 1000;
pub const ELECTION_TIMEOUT_MAX_MS: u64 = 2000;
/// The leader serves timestamps only while a quorum acknowledged it this
/// recently: shorter than any election timeout, so no other member can have
/// been elected meanwhile.
pub const LEADER_LEASE: Duration = Duration::from_millis(ELECTION_TIMEOUT_MIN_MS * 8 / 10);

#[derive(Debug, thiserror::Error)]
pub enum RaftSetupError {
    #[error("cannot open raft database at {path}: {source}")]
    Open {
        path: std::path::PathBuf,
        source: rocksdb::Error,
    },
    #[error("invalid raft configuration: {0}")]
    Config(String),
    #[error("raft: {0}")]
    Raft(String),
}

/// This member's Raft node and what the servers ask of it.
pub struct PlacementRaft {
    raft: Raft,
    id: NodeId,
    node: PlacementNode,
    /// Taken at shutdown so the database closes.
    db: parking_lot::Mutex<Option<RaftDb>>,
    faults: Arc<Faults>,
}

impl PlacementRaft {
    /// Opens `<data_dir>/raft` and starts the Raft node. On a member with no
    /// log yet, `initial` decides: the listed members form a new group, or
    /// (for a single member) it forms one alone. Joining an existing group
    /// is the caller's next step ([`members::join`]).
    pub async fn open(
        data_dir: &Path,
        node: PlacementNode,
        initial: Option<&InitialCluster>,
    ) -> Result<Self, RaftSetupError> {
        let path = data_dir.join("raft");
        let open_path = path.clone();
        let db = tokio::task::spawn_blocking(move || RaftDb::open(&open_path))
            .await
            .map_err(|e| RaftSetupError::Raft(e.to_string()))?
            .map_err(|source| RaftSetupError::Open { path, source })?;
        let config = openraft::Config {
            cluster_name: "shale-placement".into(),
            heartbeat_interval: HEARTBEAT_INTERVAL_MS,
            election_timeout_min: ELECTION_TIMEOUT_MIN_MS,
            election_timeout_max: ELECTION_TIMEOUT_MAX_MS,
            install_snapshot_timeout: 30_000,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(10_000),
            max_in_snapshot_log_to_keep: 1_000,
            enable_pre_vote: Some(true),
            // Replies can overtake each other (a heartbeat's stale
            // "conflict" after a newer success): let openraft re-probe.
            allow_log_reversion: Some(true),
            ..Default::default()
        }
        .validate()
        .map_err(|e| RaftSetupError::Config(e.to_string()))?;
        let faults = Arc::new(Faults::default());
        let id = node_id_of(&node.name);
        let log_store = log_store::LogStore::new(db.clone());
        let state_machine = MetaStateMachine::new(db.clone(), data_dir.join("raft-snapshot"));
        let raft = Raft::new(
            id,
            Arc::new(config),
            PeerNetwork::new(faults.clone()),
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| RaftSetupError::Raft(e.to_string()))?;
        let placement = PlacementRaft {
            raft,
            id,
            node,
            db: parking_lot::Mutex::new(Some(db)),
            faults,
        };
        let initialized = placement
            .raft
            .is_initialized()
            .await
            .map_err(|e| RaftSetupError::Raft(e.to_string()))?;
        if !initialized {
            if let Some(initial) = initial {
                placement.initialize(initial).await?;
            }
        }
        Ok(placement)
    }

    async fn initialize(&self, initial: &InitialCluster) -> Result<(), RaftSetupError> {
        if !initial.contains(&self.node.name) {
            return Err(RaftSetupError::Config(format!(
                "initial cluster {initial} does not list this member ({})",
                self.node.name
            )));
        }
        let members: BTreeMap<NodeId, PlacementNode> = initial
            .members()
            .iter()
            .map(|node| (node_id_of(&node.name), node.clone()))
            .collect();
        tracing::info!(members = %initial, "forming a new placement group");
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            // Another member already formed the group and reached us first.
            Err(openraft::errors::RaftError::APIError(
                openraft::errors::InitializeError::NotAllowed(_),
            )) => Ok(()),
            Err(e) => Err(RaftSetupError::Raft(e.to_string())),
        }
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn node(&self) -> &PlacementNode {
        &self.node
    }

    pub fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }

    /// The replicated metadata as a [`MetaStore`]. After shutdown its
    /// reads fail with [`MetaError::Closed`].
    pub fn meta_store(&self) -> RaftMetaStore {
        RaftMetaStore {
            raft: self.raft.clone(),
            db: self.db.lock().clone(),
        }
    }

    pub fn is_leader(&self) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        metrics.state == RaftRole::Leader && metrics.current_leader == Some(self.id)
    }

    /// True while this member leads and a quorum acknowledged it within
    /// [`LEADER_LEASE`].
    pub fn holds_lease(&self) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        if metrics.state != RaftRole::Leader || self.faults.is_isolated() {
            return false;
        }
        let voters = metrics.membership_config.membership().voter_ids().count();
        if voters <= 1 {
            return true;
        }
        metrics
            .last_quorum_acked
            .as_ref()
            .is_some_and(|acked| openraft::Instant::elapsed(&**acked) < LEADER_LEASE)
    }

    /// The leader this member knows of, with its node info.
    pub fn leader(&self) -> Option<(NodeId, PlacementNode)> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        let id = metrics.current_leader?;
        let node = metrics.membership_config.get_node(&id)?.clone();
        Some((id, node))
    }

    /// Every member of the group: id, node info, and whether it votes.
    pub fn members(&self) -> Vec<(NodeId, PlacementNode, bool)> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, node)| (*id, node.clone(), voters.contains(id)))
            .collect()
    }

    /// Stops the Raft node and releases the database. Idempotent.
    pub async fn shutdown(&self) {
        let Some(db) = self.db.lock().take() else {
            return;
        };
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        db.close().await;
    }
}

/// [`MetaStore`] over the Raft group: writes are proposed (only the leader
/// can), reads see this member's applied state. Placement reads only on the
/// leader after [`Raft::ensure_linearizable`], so reads see every
/// committed write.
#[derive(Clone)]
pub struct RaftMetaStore {
    raft: Raft,
    db: Option<RaftDb>,
}

impl RaftMetaStore {
    async fn read<T, F>(&self, work: F) -> MetaResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&RaftDb) -> std::io::Result<T> + Send + 'static,
    {
        let db = self.db.as_ref().ok_or(MetaError::Closed)?;
        db.blocking(work).await.map_err(io_to_meta)
    }
}

fn scan(db: &RaftDb, prefix: &[u8]) -> std::io::Result<Records> {
    let cf = db.cf(CF_META)?;
    let mut out = Vec::new();
    for item in db
        .db()
        .iterator_cf(cf, IteratorMode::From(prefix, Direction::Forward))
    {
        let (key, value) = item.map_err(db::io_err)?;
        if !key.starts_with(prefix) {
            break;
        }
        out.push((key.into_vec(), value.into_vec()));
    }
    Ok(out)
}

fn io_to_meta(e: std::io::Error) -> MetaError {
    MetaError::Task(e.to_string())
}

impl MetaStore for RaftMetaStore {
    fn get<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, MetaResult<Option<Vec<u8>>>> {
        let key = key.to_vec();
        async move { self.read(move |db| db.get(CF_META, &key)).await }.boxed()
    }

    fn scan_prefix<'a>(&'a self, prefix: &'a [u8]) -> BoxFuture<'a, MetaResult<Records>> {
        let prefix = prefix.to_vec();
        async move { self.read(move |db| scan(db, &prefix)).await }.boxed()
    }

    fn write(&self, ops: Vec<MetaOp>) -> BoxFuture<'_, MetaResult<()>> {
        async move {
            match self.raft.client_write(MetaCommand { ops }).await {
                Ok(_) => Ok(()),
                Err(openraft::errors::RaftError::APIError(
                    openraft::errors::ClientWriteError::ForwardToLeader(_),
                )) => Err(MetaError::NotLeader),
                Err(e) => Err(MetaError::Replication(e.to_string())),
            }
        }
        .boxed()
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        // The database belongs to the Raft node; `PlacementRaft::shutdown`
        // closes it once every handle is gone.
        async {}.boxed()
    }
}
