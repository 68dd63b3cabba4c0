//! The placement server: wiring, the shared state behind all services, and
//! the `start` / `shutdown` lifecycle.

mod header;
mod heartbeat_stream;
mod keyspace_service;
pub mod leadership;
mod listener;
mod member;
mod pd_service;
mod raft_service;
mod scheduling;
mod tso_stream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::Json;
use parking_lot::RwLock;
use shale_proto::keyspacepb::keyspace_server::KeyspaceServer;
use shale_proto::pdpb;
use shale_proto::pdpb::pd_server::PdServer;
use shale_proto::raftpb::placement_raft_server::PlacementRaftServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::codec::CompressionEncoding;

use crate::clock::{Clock, SystemClock};
use crate::cluster::error::PdResult;
use crate::config::Config;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::raft::members::{self, normalize_url};
use crate::raft::network::MAX_RAFT_MESSAGE;
use crate::raft::{InitialCluster, PlacementNode, PlacementRaft};
use header::WithHeader;
pub use heartbeat_stream::HeartbeatStreams;
pub use leadership::LeaderTerm;
pub use member::MemberInfo;

/// How long shutdown waits for open connections (and streams) to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// gRPC messages can carry many regions (ScanRegions, batch split reports).
const MAX_MESSAGE_SIZE: usize = 64 << 20;
/// How long a single-member placement waits at start to become leader.
const SOLO_LEADER_WAIT: Duration = Duration::from_secs(30);
/// How long a joining member keeps asking the group to let it in.
const JOIN_GIVE_UP: Duration = Duration::from_secs(300);

/// Everything the gRPC services and the HTTP API share.
pub struct ServerState {
    pub config: Config,
    pub raft: Arc<PlacementRaft>,
    pub member: MemberInfo,
    pub metrics: Metrics,
    pub clock: Arc<dyn Clock>,
    pub started_at_ms: u64,
    /// `Some` while this member is the serving leader.
    leader: RwLock<Option<Arc<LeaderTerm>>>,
    /// Known once any leader has created it (0 before).
    cluster_id: AtomicU64,
    shutdown: watch::Receiver<bool>,
}

impl ServerState {
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id.load(Ordering::Relaxed)
    }

    fn set_cluster_id(&self, id: u64) {
        self.cluster_id.store(id, Ordering::Relaxed);
    }

    /// The serving leader's state, if this member is it.
    pub fn leader_term(&self) -> Option<Arc<LeaderTerm>> {
        self.leader.read().clone()
    }

    /// `http://host:port` of the leader, when one is known.
    pub fn leader_url(&self) -> Option<String> {
        self.raft.leader().map(|(_, node)| node.url)
    }

    /// The gRPC answer of a member that does not lead: clients look the
    /// leader up with GetMembers and retry there.
    pub fn not_leader(&self) -> tonic::Status {
        match self.leader_url() {
            Some(url) => tonic::Status::unavailable(format!(
                "placement member {} is not the leader; the leader is {url}",
                self.member.name
            )),
            None => tonic::Status::unavailable(format!(
                "placement member {} is not the leader and no leader is known yet",
                self.member.name
            )),
        }
    }

    /// Every member of the group and the current leader, as pdpb members.
    pub fn members(&self) -> (Vec<pdpb::Member>, Option<pdpb::Member>) {
        let mut members: Vec<pdpb::Member> = self
            .raft
            .members()
            .into_iter()
            .map(|(id, node, _)| MemberInfo::from_node(id, &node).to_proto())
            .collect();
        members.sort_by(|a, b| a.name.cmp(&b.name));
        let leader = self
            .raft
            .leader()
            .map(|(id, node)| MemberInfo::from_node(id, &node).to_proto());
        (members, leader)
    }

    /// Resolves once the server is shutting down.
    pub async fn shutting_down(&self) {
        let mut rx = self.shutdown.clone();
        let _ = rx.wait_for(|stop| *stop).await;
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Runs a unary pdpb handler on the leader: cluster id check, errors
    /// into the header. Other members answer `Unavailable`.
    async fn reply<R, F, Fut>(
        &self,
        method: &'static str,
        header: Option<pdpb::RequestHeader>,
        work: F,
    ) -> Result<tonic::Response<R>, tonic::Status>
    where
        R: WithHeader,
        F: FnOnce(Arc<LeaderTerm>) -> Fut,
        Fut: Future<Output = PdResult<R>>,
    {
        self.metrics
            .grpc_requests
            .with_label_values(&[method])
            .inc();
        let Some(leader) = self.leader_term() else {
            return Err(self.not_leader());
        };
        let cluster_id = leader.cluster.id();
        let result = match header::check_cluster_id(cluster_id, header.as_ref()) {
            Ok(()) => work(leader).await,
            Err(e) => Err(e),
        };
        let response = match result {
            Ok(mut response) => {
                response.set_header(header::ok_header(cluster_id));
                response
            }
            Err(error) => {
                if let crate::cluster::error::PdError::Meta(crate::meta::MetaError::NotLeader) =
                    error
                {
                    return Err(self.not_leader());
                }
                let kind = error.error_type().as_str_name();
                self.metrics
                    .grpc_errors
                    .with_label_values(&[method, kind])
                    .inc();
                if matches!(error, crate::cluster::error::PdError::Meta(_)) {
                    tracing::error!(method, %error, "request failed on metadata store");
                } else {
                    tracing::debug!(method, %error, "request rejected");
                }
                let mut response = R::default();
                response.set_header(header::error_header(cluster_id, &error));
                response
            }
        };
        Ok(tonic::Response::new(response))
    }
}

/// A running placement member. Dropping it without [`shutdown`] stops
/// serving but does not wait for the metadata store to close.
///
/// [`shutdown`]: PlacementServer::shutdown
pub struct PlacementServer {
    addr: SocketAddr,
    state: Arc<ServerState>,
    stop: watch::Sender<bool>,
    serve_task: Option<JoinHandle<()>>,
    follow_task: Option<JoinHandle<()>>,
    join_task: Option<JoinHandle<()>>,
}

impl PlacementServer {
    /// The address actually bound (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The cluster id, 0 until a leader of the group has created it.
    pub fn cluster_id(&self) -> u64 {
        self.state.cluster_id()
    }

    /// `http://host:port` clients should use.
    pub fn client_url(&self) -> &str {
        &self.state.member.client_url
    }

    pub fn name(&self) -> &str {
        &self.state.member.name
    }

    /// True while this member is the serving leader.
    pub fn is_leader(&self) -> bool {
        self.state.leader_term().is_some()
    }

    /// Waits until this member knows the cluster id (a leader has served).
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.cluster_id() == 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Stops accepting, lets open requests finish (bounded), stops Raft and
    /// closes the database. Afterwards the same data dir can be opened again.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.join_task.take() {
            task.abort();
            let _ = task.await;
        }
        if let Some(task) = self.serve_task.take() {
            let _ = task.await;
        }
        if let Some(task) = self.follow_task.take() {
            let _ = task.await;
        }
        *self.state.leader.write() = None;
        self.state.raft.shutdown().await;
        tracing::info!(addr = %self.addr, "placement stopped");
    }
}

impl Drop for PlacementServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for task in [self.join_task.take(), self.follow_task.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
    }
}

/// How this member finds its group on first start.
enum Formation {
    /// Form a new group from this list (possibly just this member).
    Initial(InitialCluster),
    /// Ask a running group, through these URLs, to add this member.
    Join(Vec<String>),
}

fn formation(config: &Config, me: &PlacementNode) -> Result<(Formation, PlacementNode), Error> {
    if let Some(list) = &config.initial_cluster {
        let initial = InitialCluster::parse(list).map_err(crate::config::ConfigError::Invalid)?;
        // The list is authoritative for this member's own URL: every member
        // derives the same group from it.
        let listed = initial.get(&me.name).cloned().ok_or_else(|| {
            crate::config::ConfigError::Invalid(format!(
                "initial-cluster does not list this member's name {:?}",
                me.name
            ))
        })?;
        return Ok((Formation::Initial(initial), listed));
    }
    if !config.join.is_empty() {
        return Ok((Formation::Join(config.join.clone()), me.clone()));
    }
    Ok((
        Formation::Initial(InitialCluster::single(me.clone())),
        me.clone(),
    ))
}

/// Opens the data directory, binds the listen address, starts this
/// member's Raft node and serves gRPC (pdpb, keyspacepb, Raft) and the HTTP
/// API on the same port.
pub async fn start(config: Config) -> Result<PlacementServer, Error> {
    config.validate()?;
    std::fs::create_dir_all(&config.data_dir).map_err(|source| Error::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let listener = TcpListener::bind(config.listen_addr)
        .await
        .map_err(|source| Error::Bind {
            addr: config.listen_addr,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Bind {
        addr: config.listen_addr,
        source,
    })?;
    let advertise = config
        .advertise_addr
        .clone()
        .unwrap_or_else(|| addr.to_string());
    let me = PlacementNode {
        name: config.name.clone(),
        url: normalize_url(&advertise).map_err(crate::config::ConfigError::Invalid)?,
    };
    let (formation, me) = formation(&config, &me)?;
    let initial = match &formation {
        Formation::Initial(list) => Some(list),
        Formation::Join(_) => None,
    };
    let raft = Arc::new(PlacementRaft::open(&config.data_dir, me.clone(), initial).await?);
    let member = MemberInfo::from_node(raft.id(), &me);
    let solo = matches!(&formation, Formation::Initial(list) if list.members().len() == 1);

    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (stop, stop_rx) = watch::channel(false);
    let state = Arc::new(ServerState {
        member,
        raft: raft.clone(),
        metrics: Metrics::new()?,
        started_at_ms: clock.now_ms(),
        clock,
        config,
        leader: RwLock::new(None),
        cluster_id: AtomicU64::new(0),
        shutdown: stop_rx.clone(),
    });

    let app = router(state.clone());
    let serve_task = tokio::spawn(listener::serve(listener, app, stop_rx, SHUTDOWN_GRACE));
    let follow_task = tokio::spawn(leadership::follow(state.clone()));
    let join_task = match formation {
        Formation::Join(urls) if !raft.is_initialized().await => {
            let raft = raft.clone();
            Some(tokio::spawn(async move {
                if let Err(e) = members::join(&raft, &urls, JOIN_GIVE_UP).await {
                    tracing::error!(error = %e, "could not join the placement group");
                }
            }))
        }
        _ => None,
    };
    tracing::info!(
        %addr,
        client_url = %state.member.client_url,
        name = %state.member.name,
        member_id = state.member.member_id,
        "placement serving gRPC and HTTP"
    );
    let server = PlacementServer {
        addr,
        state,
        stop,
        serve_task: Some(serve_task),
        follow_task: Some(follow_task),
        join_task,
    };
    if solo && !server.wait_ready(SOLO_LEADER_WAIT).await {
        server.shutdown().await;
        return Err(Error::NotReady(SOLO_LEADER_WAIT));
    }
    Ok(server)
}

/// gRPC services and the HTTP API as one router.
fn router(state: Arc<ServerState>) -> axum::Router {
    let pd = PdServer::new(pd_service::PdService::new(state.clone()))
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    let keyspace = KeyspaceServer::new(keyspace_service::KeyspaceService::new(state.clone()))
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);
    let raft = PlacementRaftServer::new(raft_service::RaftService::new(state.raft.clone()))
        .max_decoding_message_size(MAX_RAFT_MESSAGE)
        .max_encoding_message_size(MAX_RAFT_MESSAGE);
    let grpc = tonic::service::Routes::new(pd)
        .add_service(keyspace)
        .add_service(raft)
        .into_axum_router()
        .reset_fallback();
    crate::api::router(state).merge(grpc).fallback(not_found)
}

/// Unknown paths: a gRPC `UNIMPLEMENTED` for gRPC clients, JSON 404 otherwise.
async fn not_found(request: Request) -> Response {
    let is_grpc = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if is_grpc {
        let status = tonic::Status::unimplemented(format!(
            "placement does not serve {}",
            request.uri().path()
        ));
        return status.into_http::<axum::body::Body>();
    }
    (
        axum::http::StatusCode::NOT_FOUND,
        Json(serde_json::json!({ "error": format!("no route for {}", request.uri().path()) })),
    )
        .into_response()
}
