//! One Region replica on this store: its openraft node, and the Region
//! errors clients need (NotLeader with the leader, EpochNotMatch, ...).

use std::collections::BTreeSet;
use std::sync::Arc;

use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, RaftError};
use openraft::raft::ReadPolicy;
use openraft::{ChangeMembers, ServerState};
use parking_lot::RwLock;
use prost::Message;
use shale_proto::{errorpb, metapb};

use super::context::StoreContext;
use super::log_store::RegionLogStore;
use super::network::RegionNetwork;
use super::state_machine::{RegionStateMachine, ReplicaFlags};
use super::types::{CommandResult, Epoch, PeerId, PeerNode, Raft, RegionCommand};
use crate::engine::EngineError;

/// How long an async-commit or 1PC prewrite waits for a new leader to
/// sync `max_ts` before it is told `MaxTimestampNotSynced`.
pub const MAX_TS_SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// How long a proposal may wait for Raft to decide it.
pub const PROPOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub struct Peer {
    pub region_id: u64,
    pub peer_id: PeerId,
    raft: Raft,
    region: Arc<RwLock<metapb::Region>>,
    flags: Arc<ReplicaFlags>,
    /// When a leader last replicated to this replica (or it was started).
    /// (Milliseconds since `started`: every append updates it, so no lock.)
    last_heard_ms: std::sync::atomic::AtomicU64,
    started: std::time::Instant,
}

pub fn not_leader(region_id: u64, leader: Option<metapb::Peer>) -> EngineError {
    EngineError::Region(Box::new(errorpb::Error {
        message: format!("not leader of region {region_id}"),
        not_leader: Some(errorpb::NotLeader { region_id, leader }),
        ..Default::default()
    }))
}

pub fn epoch_not_match(current: Vec<metapb::Region>) -> EngineError {
    EngineError::Region(Box::new(errorpb::Error {
        message: "region epoch changed".into(),
        epoch_not_match: Some(errorpb::EpochNotMatch {
            current_regions: current,
        }),
        ..Default::default()
    }))
}

/// A proposal's log entry was discarded (another leader's log replaced it
/// here): the client asks placement again and retries.
pub fn stale_command(region_id: u64) -> EngineError {
    EngineError::Region(Box::new(errorpb::Error {
        message: format!("region {region_id}: the proposal was superseded by a new leader"),
        stale_command: Some(errorpb::StaleCommand {}),
        ..Default::default()
    }))
}

/// A leader that cannot confirm its leadership for a read right now (cut off
/// from its quorum, or just elected): the client backs off and asks
/// placement again, instead of retrying the same store at once.
pub fn read_index_not_ready(region_id: u64) -> EngineError {
    EngineError::Region(Box::new(errorpb::Error {
        message: format!("region {region_id} cannot confirm its leader for a read yet"),
        read_index_not_ready: Some(errorpb::ReadIndexNotReady {
            reason: "leadership not confirmed by a quorum".into(),
            region_id,
        }),
        ..Default::default()
    }))
}

impl Peer {
    /// Starts the replica's Raft node over its persisted state (if any).
    pub async fn open(
        ctx: &Arc<StoreContext>,
        region: metapb::Region,
        peer_id: PeerId,
    ) -> Result<Peer, String> {
        let region_id = region.id;
        let shared = Arc::new(RwLock::new(region));
        let network = RegionNetwork {
            region_id,
            from_peer: peer_id,
            ctx: ctx.clone(),
            region: shared.clone(),
        };
        let log_store = RegionLogStore::new(region_id, ctx.engine.clone());
        let flags = Arc::new(ReplicaFlags::default());
        let sm = RegionStateMachine::new(
            region_id,
            peer_id,
            ctx.clone(),
            shared.clone(),
            flags.clone(),
        )
        .map_err(|e| format!("region {region_id}: cannot load the replica's state: {e}"))?;
        let raft = Raft::new(peer_id, ctx.raft_config.clone(), network, log_store, sm)
            .await
            .map_err(|e| e.to_string())?;
        flags
            .opened
            .store(true, std::sync::atomic::Ordering::Release);
        // Keep the state machine's view of leadership current, tell
        // placement promptly about a Region this replica now leads, and
        // sync max_ts for each term it leads.
        let mut metrics = raft.metrics();
        let store = Arc::downgrade(ctx);
        let watched = flags.clone();
        tokio::spawn(async move {
            let mut led_term = None;
            loop {
                let (leads, term) = {
                    let m = metrics.borrow_watched();
                    (
                        m.state == ServerState::Leader && m.current_leader == Some(peer_id),
                        m.current_term,
                    )
                };
                watched
                    .leading
                    .store(leads, std::sync::atomic::Ordering::Relaxed);
                if leads && led_term != Some(term) {
                    led_term = Some(term);
                    if let Some(store) = store.upgrade() {
                        store.changed_regions.mark(region_id);
                        tokio::spawn(sync_max_ts(
                            store,
                            metrics.clone(),
                            watched.clone(),
                            region_id,
                            peer_id,
                            term,
                        ));
                    }
                } else if !leads {
                    led_term = None;
                }
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        });
        Ok(Peer {
            region_id,
            peer_id,
            raft,
            region: shared,
            flags,
            last_heard_ms: Default::default(),
            started: std::time::Instant::now(),
        })
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    pub fn region(&self) -> metapb::Region {
        self.region.read().clone()
    }

    /// Starts an election now rather than after an election timeout.
    pub async fn campaign(&self) {
        if let Err(e) = self.raft.trigger().elect(false).await {
            tracing::warn!(region_id = self.region_id, "cannot campaign: {e}");
        }
    }

    /// A leader reached this replica (entries, heartbeat or snapshot).
    pub fn heard_from_leader(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_heard_ms
            .store(now, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long no leader has reached this replica.
    pub fn silent_for(&self) -> std::time::Duration {
        let heard = std::time::Duration::from_millis(
            self.last_heard_ms
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        self.started.elapsed().saturating_sub(heard)
    }

    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        m.state == ServerState::Leader && m.current_leader == Some(self.peer_id)
    }

    /// The Raft term this replica is in.
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow_watched().current_term
    }

    /// The leader as a `metapb::Peer`, when known.
    pub fn leader(&self) -> Option<metapb::Peer> {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let id = m.current_leader?;
        let node = m.membership_config.get_node(&id)?;
        Some(metapb::Peer {
            id,
            store_id: node.store_id,
            ..Default::default()
        })
    }

    fn epoch(&self) -> Epoch {
        let e = self.region.read().region_epoch.unwrap_or_default();
        Epoch {
            conf_ver: e.conf_ver,
            version: e.version,
        }
    }

    fn check_version(&self, version: u64) -> Result<(), EngineError> {
        let region = self.region();
        if region.region_epoch.unwrap_or_default().version != version {
            return Err(epoch_not_match(vec![region]));
        }
        Ok(())
    }

    /// Waits until this replica may serve a linearizable read: it leads (with
    /// a valid lease, or confirmed by a quorum) and has applied everything
    /// committed before the read started.
    pub async fn read_barrier(&self, version: u64) -> Result<(), EngineError> {
        self.check_version(version)?;
        let lease = self.raft.ensure_linearizable(ReadPolicy::LeaseRead).await;
        if lease.is_err() {
            // A leader cut off from its quorum cannot confirm itself: give
            // up after an election timeout rather than wait forever.
            let wait =
                std::time::Duration::from_millis(self.raft.config().election_timeout_max.max(1000));
            match tokio::time::timeout(wait, self.raft.ensure_linearizable(ReadPolicy::ReadIndex))
                .await
            {
                Ok(Ok(_)) => {}
                Ok(Err(RaftError::APIError(
                    openraft::errors::LinearizableReadError::ForwardToLeader(f),
                ))) => return Err(not_leader(self.region_id, leader_of(&f))),
                _ => return Err(read_index_not_ready(self.region_id)),
            }
        }
        self.check_version(version)
    }

    /// Proposes a command and waits until its fate is known here (applied,
    /// refused before it entered the log, or its entry discarded), for at
    /// most [`PROPOSE_TIMEOUT`]. The caller's latches stay held meanwhile, so
    /// no other command decides on a state it is about to change.
    pub async fn propose(&self, command: RegionCommand) -> Result<CommandResult, EngineError> {
        // Bounded for now: some proposals are never answered (seen while
        // leaders move between freshly split Regions), and a latch held by
        // one would block its keys for good. The cost: the entry may still
        // commit after the caller gave up.
        let written = tokio::time::timeout(PROPOSE_TIMEOUT, self.raft.client_write(command)).await;
        let Ok(written) = written else {
            tracing::warn!(
                region_id = self.region_id,
                "proposal undecided after {PROPOSE_TIMEOUT:?}"
            );
            return Err(not_leader(self.region_id, None));
        };
        match written {
            Ok(response) => {
                tracing::debug!(region_id = self.region_id, log_id = %response.log_id, "proposal applied");
                Ok(response.data)
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(not_leader(self.region_id, leader_of(&f)))
            }
            Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_))) => {
                Err(stale_command(self.region_id))
            }
            Err(RaftError::APIError(e)) => Err(EngineError::Task(format!(
                "region {}: proposal refused: {e}",
                self.region_id
            ))),
            // Stopped (destroyed, or the store shuts down): the client asks
            // placement where the Region is now.
            Err(RaftError::Fatal(openraft::errors::Fatal::Stopped)) => {
                Err(not_leader(self.region_id, None))
            }
            // The replica's storage failed: say so, it is not a routing
            // problem.
            Err(RaftError::Fatal(e)) => {
                tracing::error!(region_id = self.region_id, "raft stopped: {e}");
                Err(EngineError::Task(format!(
                    "region {}: raft failed: {e}",
                    self.region_id
                )))
            }
        }
    }

    /// The term in which this replica leads, if it leads.
    pub fn leader_term(&self) -> Option<u64> {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        (m.state == ServerState::Leader && m.current_leader == Some(self.peer_id))
            .then_some(m.current_term)
    }

    /// NotLeader, naming the leader if this replica knows it.
    pub fn not_leader_error(&self) -> EngineError {
        not_leader(self.region_id, self.leader())
    }

    /// Proposes data changes under `version`; with a `term` (not 0), only
    /// for that leader term (the term of the snapshot they were decided on).
    pub async fn write(
        &self,
        version: u64,
        term: u64,
        modifies: Vec<crate::engine::Modify>,
    ) -> Result<(), EngineError> {
        self.check_version(version)?;
        match self.leader_term() {
            None => return Err(self.not_leader_error()),
            Some(now) if term != 0 && now != term => return Err(stale_command(self.region_id)),
            Some(_) => {}
        }
        let epoch = Epoch {
            version,
            ..self.epoch()
        };
        let command = if term == 0 {
            RegionCommand::Write { epoch, modifies }
        } else {
            RegionCommand::WriteInTerm {
                epoch,
                term,
                modifies,
            }
        };
        match self.propose(command).await? {
            CommandResult::Applied => Ok(()),
            CommandResult::TermChanged => Err(stale_command(self.region_id)),
            CommandResult::EpochChanged { current } => {
                Err(epoch_not_match(decode_regions(&current)))
            }
            CommandResult::KeyNotInRegion { key, region } => {
                let region = decode_regions(&[region]).pop().unwrap_or_default();
                Err(EngineError::Region(Box::new(
                    crate::region::key_not_in_region(&region, &key),
                )))
            }
        }
    }

    /// Whether this replica leads its Region and synced `max_ts` in its
    /// current term.
    pub fn max_ts_synced(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        m.state == ServerState::Leader
            && m.current_leader == Some(self.peer_id)
            && self
                .flags
                .synced_term
                .load(std::sync::atomic::Ordering::Acquire)
                == m.current_term
    }

    /// Waits up to [`MAX_TS_SYNC_WAIT`] for [`Peer::max_ts_synced`].
    pub async fn wait_max_ts_synced(&self) -> Result<(), EngineError> {
        let deadline = tokio::time::Instant::now() + MAX_TS_SYNC_WAIT;
        loop {
            let synced = self.flags.max_ts_changed.notified();
            if self.max_ts_synced() {
                return Ok(());
            }
            if !self.is_leader() {
                return Err(not_leader(self.region_id, self.leader()));
            }
            if tokio::time::timeout_at(deadline, synced).await.is_err() {
                return Err(crate::region::max_ts_not_synced(self.region_id));
            }
        }
    }

    /// Placement asked for a new replica on `store_id`: add it as a learner
    /// (it starts from a snapshot: the log never reaches back to the
    /// Region's initial state), then make it a voter.
    pub async fn add_peer(&self, peer_id: PeerId, store_id: u64) -> Result<(), String> {
        self.raft
            .add_learner(peer_id, PeerNode { store_id }, true)
            .await
            .map_err(|e| e.to_string())?;
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([peer_id])), false)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Placement asked to drop the replica `peer_id`.
    pub async fn remove_peer(&self, peer_id: PeerId) -> Result<(), String> {
        let voters: BTreeSet<PeerId> = self.raft.voter_ids().collect();
        let change = if voters.contains(&peer_id) {
            ChangeMembers::RemoveVoters(BTreeSet::from([peer_id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([peer_id]))
        };
        self.raft
            .change_membership(change, false)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// What this leader knows of `peer_id`'s progress.
    fn transfer_target(&self, peer_id: PeerId) -> TransferTarget {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        let target = TransferTarget {
            voter: m
                .membership_config
                .membership()
                .voter_ids()
                .any(|id| id == peer_id),
            matched: m
                .replication
                .as_ref()
                .and_then(|r| r.get(&peer_id).cloned().flatten())
                .map(|log_id| log_id.index),
            acked_ago: m
                .heartbeat
                .as_ref()
                .and_then(|h| h.get(&peer_id).cloned().flatten())
                .map(|at| openraft::Instant::elapsed(&*at)),
            last_index: m.last_log_index,
        };
        target
    }

    /// Hands leadership to `peer_id`, if it can take it now. A leader
    /// handing over stops heartbeats and refuses writes until the target
    /// wins an election: a target that is down or far behind would leave
    /// the Region without a working leader for an election timeout, again
    /// at every heartbeat while placement's operator lasts.
    pub async fn transfer_leader(&self, peer_id: PeerId) -> Result<(), String> {
        let target = self.transfer_target(peer_id);
        let max_silence = std::time::Duration::from_millis(self.raft.config().election_timeout_min);
        if let Some(reason) = target.refusal(max_silence) {
            return Err(format!(
                "not handing leadership to peer {peer_id}: {reason}"
            ));
        }
        self.raft
            .trigger()
            .transfer_leader(peer_id)
            .await
            .map_err(|e| e.to_string())
    }

    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(region_id = self.region_id, "raft shutdown: {e}");
        }
    }
}

/// Raises the store's `max_ts` above every timestamp the TSO handed out
/// before this replica became leader in `term` (its predecessor may have
/// served reads up to any of them), then marks the term synced. Retries
/// while the replica still leads in `term`.
async fn sync_max_ts(
    store: Arc<StoreContext>,
    metrics: openraft::alias::WatchReceiverOf<
        super::types::RegionTypes,
        openraft::RaftMetrics<super::types::RegionTypes>,
    >,
    flags: Arc<ReplicaFlags>,
    region_id: u64,
    peer_id: PeerId,
    term: u64,
) {
    let mut delay = std::time::Duration::from_millis(50);
    loop {
        let still_leading = {
            let m = metrics.borrow_watched();
            m.state == ServerState::Leader
                && m.current_leader == Some(peer_id)
                && m.current_term == term
        };
        if !still_leading {
            return;
        }
        match store.max_ts.sync().await {
            Ok(()) => {
                flags
                    .synced_term
                    .store(term, std::sync::atomic::Ordering::Release);
                flags.max_ts_changed.notify_waiters();
                return;
            }
            Err(e) => {
                tracing::warn!(region_id, term, "cannot sync max_ts yet: {e}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(1));
            }
        }
    }
}

/// Entries a leadership target may lag behind and still take over (it
/// catches up while the leader waits for it; TiKV allows the same).
const MAX_TRANSFER_LOG_LAG: u64 = 128;

/// What the leader knows of a leadership target's progress.
#[derive(Debug, Clone, Copy)]
struct TransferTarget {
    voter: bool,
    /// The last log index it holds, as far as the leader knows.
    matched: Option<u64>,
    /// Since it last acknowledged the leader.
    acked_ago: Option<std::time::Duration>,
    /// The leader's last log index.
    last_index: Option<u64>,
}

impl TransferTarget {
    /// Why leadership must not go to this target now, if it must not.
    fn refusal(&self, max_silence: std::time::Duration) -> Option<String> {
        if !self.voter {
            return Some("it is not a voter".into());
        }
        match self.acked_ago {
            None => return Some("it never answered this leader".into()),
            Some(ago) if ago > max_silence => {
                return Some(format!("it has not answered for {ago:?}"))
            }
            Some(_) => {}
        }
        let last = self.last_index.unwrap_or(0);
        let matched = self.matched.unwrap_or(0);
        if matched + MAX_TRANSFER_LOG_LAG < last {
            return Some(format!("its log ends at {matched}, the leader's at {last}"));
        }
        None
    }
}

/// The leader openraft points at, as a `metapb::Peer`.
fn leader_of(
    f: &openraft::errors::ForwardToLeader<super::types::RegionTypes>,
) -> Option<metapb::Peer> {
    match (f.leader_id, f.leader_node) {
        (Some(id), Some(node)) => Some(metapb::Peer {
            id,
            store_id: node.store_id,
            ..Default::default()
        }),
        _ => None,
    }
}

fn decode_regions(encoded: &[Vec<u8>]) -> Vec<metapb::Region> {
    encoded
        .iter()
        .filter_map(|b| metapb::Region::decode(b.as_slice()).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::TransferTarget;

    const SILENCE: Duration = Duration::from_secs(1);

    fn caught_up() -> TransferTarget {
        TransferTarget {
            voter: true,
            matched: Some(40),
            acked_ago: Some(Duration::from_millis(50)),
            last_index: Some(40),
        }
    }

    #[test]
    fn a_live_caught_up_voter_may_take_leadership() {
        assert_eq!(caught_up().refusal(SILENCE), None);
        let slightly_behind = TransferTarget {
            matched: Some(30),
            ..caught_up()
        };
        assert_eq!(slightly_behind.refusal(SILENCE), None);
    }

    #[test]
    fn a_silent_lagging_or_non_voting_target_is_refused() {
        let down = TransferTarget {
            acked_ago: Some(Duration::from_secs(3)),
            ..caught_up()
        };
        assert!(down.refusal(SILENCE).unwrap().contains("not answered"));
        let never = TransferTarget {
            acked_ago: None,
            ..caught_up()
        };
        assert!(never.refusal(SILENCE).is_some());
        let behind = TransferTarget {
            matched: Some(6),
            last_index: Some(500),
            ..caught_up()
        };
        assert!(behind.refusal(SILENCE).unwrap().contains("log ends at 6"));
        let learner = TransferTarget {
            voter: false,
            ..caught_up()
        };
        assert!(learner.refusal(SILENCE).is_some());
    }
}
