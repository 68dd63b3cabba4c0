//! The placement server: wiring, the shared state behind all services, and
//! the `start` / `shutdown` lifecycle.

mod header;
mod heartbeat_stream;
mod keyspace_service;
mod listener;
mod member;
mod pd_service;
mod tso_stream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::Json;
use shale_proto::keyspacepb::keyspace_server::KeyspaceServer;
use shale_proto::pdpb;
use shale_proto::pdpb::pd_server::PdServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::codec::CompressionEncoding;

use crate::clock::{Clock, SystemClock};
use crate::cluster::error::PdResult;
use crate::cluster::{Cluster, ClusterOptions};
use crate::config::Config;
use crate::error::Error;
use crate::meta::{MetaStore, RocksMetaStore};
use crate::metrics::Metrics;
use crate::tso::{Tso, DEFAULT_WINDOW};
use header::WithHeader;
pub use heartbeat_stream::HeartbeatStreams;
pub use member::MemberInfo;

/// How long shutdown waits for open connections (and streams) to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// How often the TSO window is pushed ahead in the background.
const TSO_TICK: Duration = Duration::from_millis(500);
/// gRPC messages can carry many regions (ScanRegions, batch split reports).
const MAX_MESSAGE_SIZE: usize = 64 << 20;

/// Everything the gRPC services and the HTTP API share.
pub struct ServerState {
    pub config: Config,
    pub cluster: Cluster,
    pub tso: Tso,
    pub member: MemberInfo,
    pub heartbeat_streams: HeartbeatStreams,
    pub metrics: Metrics,
    pub clock: Arc<dyn Clock>,
    pub started_at_ms: u64,
    shutdown: watch::Receiver<bool>,
}

impl ServerState {
    pub fn cluster_id(&self) -> u64 {
        self.cluster.id()
    }

    /// Resolves once the server is shutting down.
    pub async fn shutting_down(&self) {
        let mut rx = self.shutdown.clone();
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// Runs a unary pdpb handler: cluster id check, errors into the header.
    async fn reply<R, F>(
        &self,
        method: &'static str,
        header: Option<&pdpb::RequestHeader>,
        work: F,
    ) -> Result<tonic::Response<R>, tonic::Status>
    where
        R: WithHeader,
        F: Future<Output = PdResult<R>>,
    {
        self.metrics
            .grpc_requests
            .with_label_values(&[method])
            .inc();
        let result = match header::check_cluster_id(self.cluster_id(), header) {
            Ok(()) => work.await,
            Err(e) => Err(e),
        };
        let response = match result {
            Ok(mut response) => {
                response.set_header(header::ok_header(self.cluster_id()));
                response
            }
            Err(error) => {
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
                response.set_header(header::error_header(self.cluster_id(), &error));
                response
            }
        };
        Ok(tonic::Response::new(response))
    }
}

/// A running placement server. Dropping it without [`shutdown`] stops
/// serving but does not wait for the metadata store to close.
///
/// [`shutdown`]: PlacementServer::shutdown
pub struct PlacementServer {
    addr: SocketAddr,
    cluster_id: u64,
    state: Arc<ServerState>,
    stop: watch::Sender<bool>,
    serve_task: Option<JoinHandle<()>>,
    tso_task: Option<JoinHandle<()>>,
}

impl PlacementServer {
    /// The address actually bound (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// `http://host:port` clients should use.
    pub fn client_url(&self) -> &str {
        &self.state.member.client_url
    }

    /// Stops accepting, lets open requests finish (bounded), closes streams
    /// and then the metadata store. Afterwards the same data dir can be
    /// opened again.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.serve_task.take() {
            let _ = task.await;
        }
        if let Some(task) = self.tso_task.take() {
            task.abort();
            let _ = task.await;
        }
        self.state.cluster.close().await;
        tracing::info!(addr = %self.addr, "placement stopped");
    }
}

impl Drop for PlacementServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.tso_task.take() {
            task.abort();
        }
    }
}

/// Opens the data directory, binds the listen address and starts serving
/// gRPC (pdpb, keyspacepb) and the HTTP API on the same port.
pub async fn start(config: Config) -> Result<PlacementServer, Error> {
    config.validate()?;
    let meta_dir = config.data_dir.join("meta");
    std::fs::create_dir_all(&meta_dir).map_err(|source| Error::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let open_dir = meta_dir.clone();
    let store = tokio::task::spawn_blocking(move || RocksMetaStore::open(&open_dir))
        .await
        .map_err(|e| crate::meta::MetaError::Task(e.to_string()))?
        .map_err(|source| Error::OpenMeta {
            path: meta_dir,
            source,
        })?;
    let meta: Arc<dyn MetaStore> = Arc::new(store);
    match start_with_meta(config, meta.clone()).await {
        Ok(server) => Ok(server),
        Err(e) => {
            meta.close().await;
            Err(e)
        }
    }
}

async fn start_with_meta(
    config: Config,
    meta: Arc<dyn MetaStore>,
) -> Result<PlacementServer, Error> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let cluster = Cluster::open(
        meta.clone(),
        clock.clone(),
        ClusterOptions {
            max_peer_count: config.max_replicas,
            ..Default::default()
        },
    )
    .await?;
    let tso = Tso::open(meta.clone(), clock.clone(), DEFAULT_WINDOW).await?;
    let member_id = member::load_or_create_member_id(meta.as_ref()).await?;

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
    let member = MemberInfo::new(config.name.clone(), member_id, &advertise);

    let (stop, stop_rx) = watch::channel(false);
    let cluster_id = cluster.id();
    let state = Arc::new(ServerState {
        member,
        cluster,
        tso,
        heartbeat_streams: HeartbeatStreams::default(),
        metrics: Metrics::new()?,
        started_at_ms: clock.now_ms(),
        clock,
        config,
        shutdown: stop_rx.clone(),
    });

    let app = router(state.clone());
    let serve_task = tokio::spawn(listener::serve(listener, app, stop_rx, SHUTDOWN_GRACE));
    let tso_task = tokio::spawn(extend_tso_window(state.clone()));
    tracing::info!(
        %addr,
        cluster_id,
        client_url = %state.member.client_url,
        name = %state.member.name,
        "placement serving gRPC and HTTP"
    );
    Ok(PlacementServer {
        addr,
        cluster_id,
        state,
        stop,
        serve_task: Some(serve_task),
        tso_task: Some(tso_task),
    })
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
    let grpc = tonic::service::Routes::new(pd)
        .add_service(keyspace)
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

async fn extend_tso_window(state: Arc<ServerState>) {
    let mut ticker = tokio::time::interval(TSO_TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = state.shutting_down() => return,
            _ = ticker.tick() => {
                if let Err(e) = state.tso.extend_window().await {
                    tracing::warn!(error = %e, "failed to extend TSO window");
                }
            }
        }
    }
}
