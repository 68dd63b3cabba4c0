//! The storage node process: opens the store, joins the cluster through
//! placement, serves `tikvpb.Tikv`, and runs the background loops.

mod bootstrap;
mod gc_worker;
mod heartbeat;
mod keyspace_split;
mod max_ts;
pub mod metrics;
mod service;
mod status;

pub use bootstrap::{BootstrapError, StoreIdent};
pub use service::TikvService;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shale_proto::kvrpcpb::ApiVersion;
use shale_proto::metapb;
use shale_proto::tikvpb::tikv_server::TikvServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::codec::CompressionEncoding;

use crate::config::{Config, ConfigError};
use crate::engine::{EngineError, RocksEngine};
use crate::pd_client::{GrpcPdClient, PdClient, PdError};
use crate::raftstore::split::{run_split_checker, SplitConfig};
use crate::raftstore::transport::{Transport, TransportConfig};
use crate::raftstore::{CachedResolver, RaftKv, Router, RouterDispatch, StoreContext};
use crate::region::{RegionError, RegionRegistry};
use crate::storage::{ConcurrencyManager, Storage, StorageConfig};

/// Largest gRPC message accepted (batch requests can be large).
const MAX_GRPC_MESSAGE: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot use data directory: {0}")]
    DataDir(std::io::Error),
    #[error("cannot open the store's RocksDB: {0}")]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Pd(#[from] PdError),
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    #[error(transparent)]
    Region(#[from] RegionError),
    #[error("raft: {0}")]
    Raft(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// A running storage node.
pub struct StorageNode {
    addr: SocketAddr,
    status_addr: Option<SocketAddr>,
    ident: StoreIdent,
    rocks: RocksEngine,
    router: Arc<Router>,
    transport: Arc<Transport>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl StorageNode {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn status_addr(&self) -> Option<SocketAddr> {
        self.status_addr
    }

    pub fn store_id(&self) -> u64 {
        self.ident.store_id
    }

    pub fn cluster_id(&self) -> u64 {
        self.ident.cluster_id
    }

    /// The engine's write counters (group-commit factor).
    pub fn write_stats(&self) -> &crate::engine::WriteStats {
        self.rocks.stats()
    }

    /// The store's Region replicas (tests inspect leadership).
    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// The store-to-store transport (tests inject faults through it).
    pub fn transport(&self) -> &Arc<Transport> {
        &self.transport
    }

    /// Stops accepting requests, lets in-flight ones finish, stops the loops
    /// and the Region replicas.
    pub async fn shutdown(self) {
        // Raft streams never end on their own: close them first, or the
        // gRPC server's graceful shutdown waits forever.
        self.transport.shutdown();
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        self.router.shutdown().await;
    }
}

async fn bind(addr: &str) -> Result<TcpListener, NodeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| NodeError::Bind {
            addr: addr.to_string(),
            source,
        })
}

/// Starts a storage node; returns once it is registered and serving.
pub async fn start(config: Config) -> Result<StorageNode, NodeError> {
    config.validate()?;
    std::fs::create_dir_all(&config.data_dir).map_err(NodeError::DataDir)?;
    let rocks = RocksEngine::open(&config.data_dir.join("db"), config.sync_log)?;
    let pd_timeout = Duration::from_millis(config.pd_connect_timeout_ms);
    let pd = Arc::new(GrpcPdClient::connect(config.pd_endpoints.clone(), pd_timeout).await?);

    let listener = bind(&config.listen_addr).await?;
    let addr = listener.local_addr().map_err(NodeError::DataDir)?;
    let status_listener = match config.status_addr.as_str() {
        "" => None,
        a => Some(bind(a).await?),
    };
    let status_addr = status_listener.as_ref().and_then(|l| l.local_addr().ok());

    let ident = bootstrap::ensure_store_ident(&rocks, &*pd).await?;
    let regions = RegionRegistry::load(ident.store_id, rocks.clone())?;
    let started = SystemTime::now();
    let store = metapb::Store {
        id: ident.store_id,
        address: config
            .advertise_addr
            .clone()
            .unwrap_or_else(|| addr.to_string()),
        version: env!("CARGO_PKG_VERSION").to_string(),
        status_address: status_addr.map(|a| a.to_string()).unwrap_or_default(),
        start_timestamp: started
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
        ..Default::default()
    };
    bootstrap::ensure_cluster_bootstrapped(&*pd, &rocks, &regions, store.clone()).await?;

    // Region replicas: Raft over the store-to-store transport.
    let transport = Transport::new(ident.store_id, TransportConfig::default());
    let lookup_pd = pd.clone();
    let resolver = CachedResolver::new(Arc::new(move |store_id| {
        let pd = lookup_pd.clone();
        Box::pin(async move {
            pd.get_store(store_id)
                .await
                .map(|s| s.address)
                .map_err(|e| e.to_string())
        })
    }));
    let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
    // One concurrency manager for the store, synced from the TSO now (the
    // store may have been down while others served reads) and by every
    // Region's new leader.
    let cm = ConcurrencyManager::new();
    let max_ts = Arc::new(max_ts::TsoMaxTs {
        pd: pd.clone(),
        cm: cm.clone(),
    });
    if let Err(e) = max_ts.sync_now().await {
        tracing::warn!("cannot sync max_ts at start (each new leader will): {e}");
    }
    let ctx = Arc::new(StoreContext {
        store_id: ident.store_id,
        engine: rocks.clone(),
        regions: regions.clone(),
        events: events_tx,
        transport: transport.clone(),
        resolver: Arc::new(resolver),
        raft_config: raft_config(&config)?,
        changed_regions: Default::default(),
        range_changes: Default::default(),
        max_ts: Arc::new(max_ts.clone()),
    });
    let router = Router::start(ctx).await.map_err(NodeError::Raft)?;
    transport.set_dispatcher(Arc::new(RouterDispatch(Arc::downgrade(&router))));
    let (commands_tx, mut commands_rx) = tokio::sync::mpsc::unbounded_channel();
    pd.set_command_sink(commands_tx);

    let api_version = if config.api_version == 2 {
        ApiVersion::V2
    } else {
        ApiVersion::V1
    };
    // Before clients are served: under API V2 they must never see the
    // keyspace ranges inside one Region.
    if api_version == ApiVersion::V2 {
        keyspace_split::ensure_split(
            &*pd,
            &router,
            &keyspace_split::default_keyspace_boundaries(),
        )
        .await?;
    }
    let storage = Storage::with_concurrency_manager(
        RaftKv::new(router.clone()),
        StorageConfig {
            max_value_size: config.max_value_size,
            ..StorageConfig::default()
        },
        cm,
    );
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(max_ts.run(shutdown_rx.clone())));

    let splitter = Arc::new(crate::raftstore::split::RouterSplitter {
        router: router.clone(),
        pd: pd.clone(),
    });
    let service = TikvServer::new(TikvService::new(
        storage.clone(),
        regions.clone(),
        api_version,
        splitter,
    ))
    .accept_compressed(CompressionEncoding::Gzip)
    .send_compressed(CompressionEncoding::Gzip)
    .max_decoding_message_size(MAX_GRPC_MESSAGE)
    .max_encoding_message_size(MAX_GRPC_MESSAGE);
    let raft_service = transport.service();
    let mut grpc_shutdown = shutdown_rx.clone();
    tasks.push(tokio::spawn(async move {
        // Small request/response frames must not wait for Nagle's algorithm.
        let incoming = tokio_stream::StreamExt::map(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            |conn| {
                if let Ok(stream) = &conn {
                    let _ = stream.set_nodelay(true);
                }
                conn
            },
        );
        // Larger HTTP/2 windows: snapshots travel on the same port.
        let result = tonic::transport::Server::builder()
            .initial_stream_window_size(8 << 20)
            .initial_connection_window_size(16 << 20)
            .add_service(service)
            .add_service(raft_service)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = grpc_shutdown.changed().await;
            })
            .await;
        if let Err(e) = result {
            tracing::error!("gRPC server stopped: {e}");
        }
    }));

    if let Some(listener) = status_listener {
        let mut status_shutdown = shutdown_rx.clone();
        let app = status::router(status::StatusState {
            router: router.clone(),
            allow_fault_injection: config.allow_fault_injection,
        });
        tasks.push(tokio::spawn(async move {
            let result = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = status_shutdown.changed().await;
                })
                .await;
            if let Err(e) = result {
                tracing::error!("status server stopped: {e}");
            }
        }));
    }

    // Placement learns this store's address only now, when it can serve
    // other stores' Raft traffic.
    pd.put_store(store).await?;
    tracing::info!(store_id = ident.store_id, %addr, regions = ?regions.ids(), "store is up");

    let events_router = router.clone();
    let mut events_shutdown = shutdown_rx.clone();
    tasks.push(tokio::spawn(async move {
        tokio::select! {
            _ = events_router.run_events(events_rx) => {}
            _ = events_shutdown.changed() => {}
        }
    }));
    let command_router = router.clone();
    let mut commands_shutdown = shutdown_rx.clone();
    tasks.push(tokio::spawn(async move {
        loop {
            let command = tokio::select! {
                command = commands_rx.recv() => command,
                _ = commands_shutdown.changed() => None,
            };
            let Some(command) = command else {
                return;
            };
            let router = command_router.clone();
            tokio::spawn(async move { router.handle_command(command).await });
        }
    }));
    tasks.push(tokio::spawn(run_split_checker(
        router.clone(),
        pd.clone(),
        SplitConfig {
            max_keys: config.region_split_keys,
            max_bytes: config.region_split_size,
            check_interval: Duration::from_millis(config.split_check_interval_ms),
        },
        shutdown_rx.clone(),
    )));

    let heartbeats = heartbeat::Heartbeats {
        router: router.clone(),
        pd: pd.clone(),
        regions: regions.clone(),
        rocks: rocks.clone(),
        data_dir: config.data_dir.clone(),
        interval: Duration::from_millis(config.heartbeat_interval_ms),
        started,
    };
    tasks.push(tokio::spawn(heartbeats.run(shutdown_rx.clone())));
    let peer_gc = crate::raftstore::peer_gc::PeerGc {
        router: router.clone(),
        pd: pd.clone(),
        // Ten election timeouts without a leader: not a slow network.
        silence: Duration::from_millis(config.raft_election_timeout_ms * 10),
    };
    tasks.push(tokio::spawn(peer_gc.run(shutdown_rx.clone())));

    let gc = gc_worker::GcWorker {
        storage,
        pd,
        regions,
        interval: Duration::from_millis(config.gc_interval_ms),
    };
    tasks.push(tokio::spawn(gc.run(shutdown_rx)));

    Ok(StorageNode {
        addr,
        status_addr,
        ident,
        rocks,
        router,
        transport,
        shutdown,
        tasks,
    })
}

fn raft_config(config: &Config) -> Result<Arc<openraft::Config>, NodeError> {
    let raft = openraft::Config {
        cluster_name: "shale-region".into(),
        heartbeat_interval: config.raft_heartbeat_interval_ms,
        election_timeout_min: config.raft_election_timeout_ms,
        election_timeout_max: config.raft_election_timeout_ms * 2,
        install_snapshot_timeout: 60_000,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(1_000),
        max_in_snapshot_log_to_keep: config.raft_log_keep_after_snapshot,
        enable_pre_vote: Some(true),
        // Replies of one Region can overtake each other on the transport
        // (each message is handled on its own task), so a heartbeat's
        // "conflict" may arrive after a newer success; openraft then sees a
        // follower "going back" and must restart its probe instead of
        // asserting.
        allow_log_reversion: Some(true),
        // A restarted leader stands for election like any replica (standard
        // Raft). Resuming its old term without one is unsafe here: applies
        // and the committed index are written without fsync (the log is
        // synced), so after a machine crash a resumed leader could serve
        // reads from a state machine behind what it had acknowledged
        // (openraft documents this combination). Placement syncs its
        // applies and keeps leader restore.
        enable_leader_restore: Some(false),
        ..Default::default()
    }
    .validate()
    .map_err(|e| NodeError::Raft(e.to_string()))?;
    Ok(Arc::new(raft))
}
