//! The storage node's view of placement: a trait so tests can script it, and
//! the gRPC implementation that finds the placement leader and follows it.

mod grpc;

pub use grpc::GrpcPdClient;

use std::future::Future;

use shale_proto::{metapb, pdpb};

#[derive(Debug, thiserror::Error)]
pub enum PdError {
    #[error("placement unreachable at {endpoints:?}: {reason}")]
    Unreachable {
        endpoints: Vec<String>,
        reason: String,
    },
    #[error("placement rpc failed: {0}")]
    Rpc(#[from] tonic::Status),
    #[error("placement answered {kind:?}: {message}")]
    Server {
        kind: pdpb::ErrorType,
        message: String,
    },
    #[error("placement closed the stream")]
    StreamClosed,
}

impl PdError {
    pub fn is_already_bootstrapped(&self) -> bool {
        matches!(
            self,
            PdError::Server {
                kind: pdpb::ErrorType::AlreadyBootstrapped,
                ..
            }
        )
    }
}

pub type PdResult<T> = Result<T, PdError>;

/// What a storage node asks of placement.
pub trait PdClient: Send + Sync + 'static {
    fn cluster_id(&self) -> u64;
    fn alloc_id(&self) -> impl Future<Output = PdResult<u64>> + Send;
    fn is_bootstrapped(&self) -> impl Future<Output = PdResult<bool>> + Send;
    fn bootstrap(
        &self,
        store: metapb::Store,
        region: metapb::Region,
    ) -> impl Future<Output = PdResult<()>> + Send;
    fn put_store(&self, store: metapb::Store) -> impl Future<Output = PdResult<()>> + Send;
    fn store_heartbeat(
        &self,
        stats: pdpb::StoreStats,
    ) -> impl Future<Output = PdResult<pdpb::StoreHeartbeatResponse>> + Send;
    /// Reports one Region; the stream of scheduling answers is read elsewhere.
    fn region_heartbeat(
        &self,
        req: pdpb::RegionHeartbeatRequest,
    ) -> impl Future<Output = PdResult<()>> + Send;
    /// New Region and peer ids for splitting `region` into `split_count + 1`.
    fn ask_batch_split(
        &self,
        region: metapb::Region,
        split_count: u32,
    ) -> impl Future<Output = PdResult<Vec<pdpb::SplitId>>> + Send;
    /// Tells placement the Regions a split produced.
    fn report_batch_split(
        &self,
        regions: Vec<metapb::Region>,
    ) -> impl Future<Output = PdResult<()>> + Send;
    fn gc_safe_point(&self) -> impl Future<Output = PdResult<u64>> + Send;
    /// A fresh timestamp from placement's TSO (`physical_ms << 18 | logical`).
    fn get_tso(&self) -> impl Future<Output = PdResult<u64>> + Send;
    /// The Region with `region_id` as placement knows it (None: unknown).
    fn get_region_by_id(
        &self,
        region_id: u64,
    ) -> impl Future<Output = PdResult<Option<metapb::Region>>> + Send;
    /// A store's registration (its address, for Raft traffic).
    fn get_store(&self, store_id: u64) -> impl Future<Output = PdResult<metapb::Store>> + Send;
    /// Where scheduling commands arriving on the RegionHeartbeat stream go.
    fn set_command_sink(
        &self,
        sink: tokio::sync::mpsc::UnboundedSender<pdpb::RegionHeartbeatResponse>,
    );
}
