//! The storage node process: opens the store, joins the cluster through
//! placement, serves `tikvpb.Tikv`, and runs the background loops.

mod bootstrap;
mod gc_worker;
mod heartbeat;
mod keyspace_split;
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
use crate::engine::{EngineError, LocalKv, RocksEngine};
use crate::pd_client::{GrpcPdClient, PdClient, PdError};
use crate::region::{RegionError, RegionRegistry};
use crate::storage::{Storage, StorageConfig};

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

    /// Stops accepting requests, lets in-flight ones finish, stops the loops.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
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
    bootstrap::ensure_cluster_bootstrapped(&*pd, &regions, store.clone()).await?;
    pd.put_store(store).await?;
    let api_version = if config.api_version == 2 {
        keyspace_split::ensure_split(
            &*pd,
            &regions,
            &keyspace_split::default_keyspace_boundaries(),
        )
        .await?;
        ApiVersion::V2
    } else {
        ApiVersion::V1
    };
    tracing::info!(store_id = ident.store_id, %addr, regions = ?regions.ids(), "store is up");

    let storage = Storage::new(
        LocalKv::new(rocks.clone()),
        StorageConfig {
            max_value_size: config.max_value_size,
            ..StorageConfig::default()
        },
    );
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();

    let service = TikvServer::new(TikvService::new(
        storage.clone(),
        regions.clone(),
        api_version,
    ))
    .accept_compressed(CompressionEncoding::Gzip)
    .send_compressed(CompressionEncoding::Gzip)
    .max_decoding_message_size(MAX_GRPC_MESSAGE)
    .max_encoding_message_size(MAX_GRPC_MESSAGE);
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
        let result = tonic::transport::Server::builder()
            .add_service(service)
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
        let app = status::router(regions.clone());
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

    let heartbeats = heartbeat::Heartbeats {
        pd: pd.clone(),
        regions: regions.clone(),
        rocks: rocks.clone(),
        data_dir: config.data_dir.clone(),
        interval: Duration::from_millis(config.heartbeat_interval_ms),
        started,
    };
    tasks.push(tokio::spawn(heartbeats.run(shutdown_rx.clone())));

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
        shutdown,
        tasks,
    })
}
