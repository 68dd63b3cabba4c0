//! Following Raft leadership: a member that becomes leader loads the
//! cluster state from the replicated metadata and starts serving; one that
//! loses leadership stops at once and ends its streams, so clients and
//! storage nodes reconnect to the new leader.

use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::raft::ReadPolicy;
use tokio::sync::watch;

use super::heartbeat_stream::HeartbeatStreams;
use super::ServerState;
use crate::cluster::{Cluster, ClusterOptions};
use crate::meta::schema::{self, CLUSTER_ID};
use crate::meta::MetaStore;
use crate::schedule::{Coordinator, ScheduleOptions};
use crate::tso::{Tso, DEFAULT_WINDOW};

/// How often the TSO window is pushed ahead in the background.
const TSO_TICK: Duration = Duration::from_millis(500);
/// Pause before retrying a failed takeover.
const TAKEOVER_RETRY: Duration = Duration::from_millis(200);

/// What only the leader has: the in-memory cluster state, the TSO and
/// scheduling.
pub struct LeaderTerm {
    pub term: u64,
    pub cluster: Cluster,
    pub tso: Tso,
    pub heartbeat_streams: HeartbeatStreams,
    pub schedule: Coordinator,
    stepped_down: watch::Sender<bool>,
}

impl LeaderTerm {
    /// Resolves once this term is over on this member.
    pub async fn stepped_down(&self) {
        let mut rx = self.stepped_down.subscribe();
        let _ = rx.wait_for(|down| *down).await;
    }

    pub fn is_over(&self) -> bool {
        *self.stepped_down.borrow()
    }
}

type MetricsWatch = openraft::alias::WatchReceiverOf<
    crate::raft::types::TypeConfig,
    openraft::RaftMetrics<crate::raft::types::TypeConfig>,
>;

/// Runs for the life of the server.
pub async fn follow(state: Arc<ServerState>) {
    let mut metrics = state.raft.raft().metrics();
    loop {
        // Copy the term out first: `is_leader` reads the same watch, and a
        // second read while a metrics update waits to write deadlocks.
        let term = metrics.borrow_and_update().current_term;
        let leading = state.raft.is_leader();
        if leading {
            match take_over(&state, term).await {
                Ok(leader) => {
                    // Only the serving leader schedules, for exactly its term.
                    let scheduling =
                        tokio::spawn(super::scheduling::run(state.clone(), leader.clone()));
                    serve_term(&state, &leader, &mut metrics).await;
                    step_down(&state, &leader).await;
                    scheduling.abort();
                    let _ = scheduling.await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, term, "cannot take over as leader; retrying");
                    tokio::select! {
                        _ = state.shutting_down() => return,
                        _ = tokio::time::sleep(TAKEOVER_RETRY) => {}
                    }
                }
            }
        } else {
            learn_cluster_id(&state).await;
        }
        if state.is_shutting_down() {
            return;
        }
        tokio::select! {
            _ = state.shutting_down() => return,
            changed = metrics.changed() => if changed.is_err() { return },
            // Followers pick up the cluster id once the first leader wrote it.
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Becomes the serving leader for `term`: reads every committed write, then
/// rebuilds routing, stores and the TSO from them.
async fn take_over(state: &Arc<ServerState>, term: u64) -> Result<Arc<LeaderTerm>, String> {
    let started = std::time::Instant::now();
    state
        .raft
        .raft()
        .ensure_linearizable(ReadPolicy::ReadIndex)
        .await
        .map_err(|e| e.to_string())?;
    let meta: Arc<dyn MetaStore> = Arc::new(state.raft.meta_store());
    let cluster = Cluster::open(
        meta.clone(),
        state.clock.clone(),
        ClusterOptions {
            max_peer_count: state.config.max_replicas,
            ..Default::default()
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    let tso = Tso::open(meta.clone(), state.clock.clone(), DEFAULT_WINDOW)
        .await
        .map_err(|e| e.to_string())?;
    let schedule = Coordinator::open(
        meta,
        state.clock.clone(),
        ScheduleOptions::from_config(&state.config),
        Some(state.metrics.operators.clone()),
    )
    .await
    .map_err(|e| e.to_string())?;
    let (stepped_down, _) = watch::channel(false);
    let leader = Arc::new(LeaderTerm {
        term,
        cluster,
        tso,
        heartbeat_streams: HeartbeatStreams::default(),
        schedule,
        stepped_down,
    });
    state.set_cluster_id(leader.cluster.id());
    *state.leader.write() = Some(leader.clone());
    state.metrics.leader_changes.inc();
    tracing::info!(
        term,
        cluster_id = leader.cluster.id(),
        took_ms = started.elapsed().as_millis() as u64,
        "serving as placement leader"
    );
    Ok(leader)
}

/// Serves until this member stops leading `leader.term` (or shuts down),
/// pushing the TSO window ahead meanwhile.
async fn serve_term(
    state: &Arc<ServerState>,
    leader: &Arc<LeaderTerm>,
    metrics: &mut MetricsWatch,
) {
    let mut ticker = tokio::time::interval(TSO_TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Not under the watch's guard: see `follow`.
        let term = metrics.borrow_and_update().current_term;
        if !state.raft.is_leader() || term != leader.term {
            return;
        }
        tokio::select! {
            _ = state.shutting_down() => return,
            changed = metrics.changed() => if changed.is_err() { return },
            _ = ticker.tick() => {
                if state.raft.holds_lease() {
                    if let Err(e) = leader.tso.extend_window().await {
                        tracing::warn!(error = %e, "failed to extend TSO window");
                    }
                }
            }
        }
    }
}

async fn step_down(state: &ServerState, leader: &Arc<LeaderTerm>) {
    {
        let mut current = state.leader.write();
        if current.as_ref().is_some_and(|l| Arc::ptr_eq(l, leader)) {
            *current = None;
        }
    }
    let _ = leader.stepped_down.send(true);
    tracing::info!(term = leader.term, "no longer the placement leader");
}

/// A follower learns the cluster id from its own copy of the metadata.
async fn learn_cluster_id(state: &ServerState) {
    if state.cluster_id() != 0 {
        return;
    }
    let meta = state.raft.meta_store();
    if let Ok(Some(id)) = schema::load_u64(&meta, CLUSTER_ID).await {
        state.set_cluster_id(id);
    }
}
