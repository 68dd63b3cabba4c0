//! The client-facing `tikvpb.Tikv` gRPC service: every request passes the
//! Region check, then goes to storage; Region problems come back in
//! `region_error` so the client refreshes its routing and retries.

use std::time::Instant;

use shale_proto::kvrpcpb::{self, ApiVersion};
use shale_proto::tikvpb::tikv_server::Tikv;
use tonic::{Request, Response, Status};

use super::metrics;
use std::sync::Arc;

use crate::engine::{Engine, EngineError};
use crate::raftstore::split::{SplitFailed, Splitter};
use crate::region::{RegionRegistry, RegionRequest};
use crate::storage::{Storage, StorageError};

pub struct TikvService<E: Engine> {
    storage: Storage<E>,
    regions: RegionRegistry,
    api_version: ApiVersion,
    splitter: Arc<dyn Splitter>,
}

impl<E: Engine> TikvService<E> {
    pub fn new(
        storage: Storage<E>,
        regions: RegionRegistry,
        api_version: ApiVersion,
        splitter: Arc<dyn Splitter>,
    ) -> Self {
        TikvService {
            storage,
            regions,
            api_version,
            splitter,
        }
    }

    /// SplitRegion: checks the Region, maps the keys into Region space and
    /// splits through the Region's Raft group. The deprecated single
    /// `split_key` and `left`/`right` are still honoured for old clients.
    #[allow(deprecated)]
    async fn split(
        &self,
        req: kvrpcpb::SplitRegionRequest,
    ) -> Result<kvrpcpb::SplitRegionResponse, Status> {
        self.check_api_version(req.context.as_ref())?;
        let region = match self.regions.check(&req) {
            Ok(region) => region,
            Err(region_error) => {
                return Ok(kvrpcpb::SplitRegionResponse {
                    region_error: Some(*region_error),
                    ..Default::default()
                })
            }
        };
        let mut keys: Vec<Vec<u8>> = req
            .split_keys
            .iter()
            .chain((!req.split_key.is_empty()).then_some(&req.split_key))
            .map(|k| {
                if req.is_raw_kv {
                    crate::keys::raw_data_key(self.api_version, k).into_owned()
                } else {
                    crate::keys::txn_region_key(k)
                }
            })
            .collect();
        keys.sort();
        keys.dedup();
        if keys.is_empty() {
            return Err(Status::invalid_argument(
                "SplitRegion needs at least one split key",
            ));
        }
        let inside = |k: &Vec<u8>| {
            k.as_slice() > region.start_key.as_slice()
                && (region.end_key.is_empty() || k.as_slice() < region.end_key.as_slice())
        };
        if !keys.iter().all(inside) {
            return Err(Status::invalid_argument(
                "split keys must lie strictly inside the Region (not on its start key)",
            ));
        }
        match self.splitter.split(region.id, keys).await {
            Ok(regions) => {
                let (left, right) = match regions.as_slice() {
                    [l, r] => (Some(l.clone()), Some(r.clone())),
                    _ => (None, None),
                };
                Ok(kvrpcpb::SplitRegionResponse {
                    left,
                    right,
                    regions,
                    ..Default::default()
                })
            }
            Err(SplitFailed::NotLeader(region_id)) | Err(SplitFailed::NotFound(region_id)) => {
                Ok(kvrpcpb::SplitRegionResponse {
                    region_error: Some(shale_proto::errorpb::Error {
                        message: format!("this store does not lead region {region_id}"),
                        not_leader: Some(shale_proto::errorpb::NotLeader {
                            region_id,
                            leader: None,
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
            }
            Err(SplitFailed::EpochChanged { .. }) => Ok(kvrpcpb::SplitRegionResponse {
                region_error: Some(shale_proto::errorpb::Error {
                    message: "region changed during the split".into(),
                    epoch_not_match: Some(shale_proto::errorpb::EpochNotMatch {
                        current_regions: self.regions.get(region.id).into_iter().collect(),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }

    /// Rejects requests made for the other key layout (API V1 vs V2).
    fn check_api_version(&self, ctx: Option<&kvrpcpb::Context>) -> Result<(), Status> {
        let requested = match ctx.map(|c| c.api_version()) {
            Some(ApiVersion::V2) => ApiVersion::V2,
            _ => ApiVersion::V1,
        };
        if requested == self.api_version {
            return Ok(());
        }
        Err(Status::invalid_argument(format!(
            "this cluster serves API {}, the request uses API {} (configure the client to match)",
            self.api_version.as_str_name(),
            requested.as_str_name()
        )))
    }
}

fn storage_status(method: &str, err: StorageError) -> Status {
    match err {
        StorageError::InvalidArgument(msg) => Status::invalid_argument(msg),
        other => {
            tracing::warn!(method, "storage error: {other}");
            Status::internal(other.to_string())
        }
    }
}

/// The whole `Tikv` impl: one method per Region-scoped RPC (Region check,
/// storage call, metrics) plus the store-wide ones. Generated as one block
/// because `async_trait` must see every method body.
macro_rules! tikv_impl {
    ($($method:ident($req:ty) -> $resp:ty;)*) => {
        #[tonic::async_trait]
        impl<E: Engine> Tikv for TikvService<E> {
            $(
                async fn $method(&self, request: Request<$req>) -> Result<Response<$resp>, Status> {
                    let started = Instant::now();
                    let mut req = request.into_inner();
                    let result = match self.check_api_version(RegionRequest::context(&req)) {
                        Err(status) => Err(status),
                        Ok(()) => match self.regions.check(&req) {
                        Err(region_error) => {
                            tracing::debug!(method = stringify!($method), error = %region_error.message, "request refused by the region check");
                            metrics::REGION_ERRORS.with_label_values(&[stringify!($method)]).inc();
                            Ok(<$resp>::default_with_region_error(*region_error))
                        }
                        Ok(region) => match {
                            req.clamp_to_region(&region);
                            self.storage.$method(req).await
                        } {
                            Ok(resp) => Ok(resp),
                            // Raft said no (not leader, epoch moved, ...): the
                            // client re-routes, guided by the Region error.
                            Err(StorageError::Engine(EngineError::Region(region_error))) => {
                                tracing::debug!(method = stringify!($method), error = %region_error.message, "request refused by raft");
                                metrics::REGION_ERRORS.with_label_values(&[stringify!($method)]).inc();
                                Ok(<$resp>::default_with_region_error(*region_error))
                            }
                            Err(e) => Err(storage_status(stringify!($method), e)),
                        },
                        },
                    };
                    metrics::observe(stringify!($method), started, result.is_ok());
                    result.map(Response::new)
                }
            )*

            async fn split_region(
                &self,
                request: Request<kvrpcpb::SplitRegionRequest>,
            ) -> Result<Response<kvrpcpb::SplitRegionResponse>, Status> {
                let started = Instant::now();
                let result = self.split(request.into_inner()).await;
                metrics::observe("split_region", started, result.is_ok());
                result.map(Response::new)
            }

            /// Store-wide (not Region-scoped): the client sends it to every store.
            async fn unsafe_destroy_range(
                &self,
                request: Request<kvrpcpb::UnsafeDestroyRangeRequest>,
            ) -> Result<Response<kvrpcpb::UnsafeDestroyRangeResponse>, Status> {
                let started = Instant::now();
                let req = request.into_inner();
                let result = match self.check_api_version(req.context.as_ref()) {
                    Err(status) => Err(status),
                    Ok(()) => self
                        .storage
                        .unsafe_destroy_range(req)
                        .await
                        .map_err(|e| storage_status("unsafe_destroy_range", e)),
                };
                metrics::observe("unsafe_destroy_range", started, result.is_ok());
                result.map(Response::new)
            }
        }
    };
}

/// Builds an empty response carrying only a Region error.
trait WithRegionError {
    fn default_with_region_error(err: shale_proto::errorpb::Error) -> Self;
}

macro_rules! with_region_error {
    ($($resp:ty),* $(,)?) => {
        $(impl WithRegionError for $resp {
            fn default_with_region_error(err: shale_proto::errorpb::Error) -> Self {
                Self { region_error: Some(err), ..Default::default() }
            }
        })*
    };
}

with_region_error!(
    kvrpcpb::GetResponse,
    kvrpcpb::ScanResponse,
    kvrpcpb::PrewriteResponse,
    kvrpcpb::PessimisticLockResponse,
    kvrpcpb::PessimisticRollbackResponse,
    kvrpcpb::TxnHeartBeatResponse,
    kvrpcpb::CheckTxnStatusResponse,
    kvrpcpb::CheckSecondaryLocksResponse,
    kvrpcpb::CommitResponse,
    kvrpcpb::CleanupResponse,
    kvrpcpb::BatchGetResponse,
    kvrpcpb::BatchRollbackResponse,
    kvrpcpb::ScanLockResponse,
    kvrpcpb::ResolveLockResponse,
    kvrpcpb::GcResponse,
    kvrpcpb::DeleteRangeResponse,
    kvrpcpb::RawGetResponse,
    kvrpcpb::RawBatchGetResponse,
    kvrpcpb::RawPutResponse,
    kvrpcpb::RawBatchPutResponse,
    kvrpcpb::RawDeleteResponse,
    kvrpcpb::RawBatchDeleteResponse,
    kvrpcpb::RawScanResponse,
    kvrpcpb::RawDeleteRangeResponse,
    kvrpcpb::RawBatchScanResponse,
    kvrpcpb::RawGetKeyTtlResponse,
    kvrpcpb::RawCasResponse,
    kvrpcpb::MvccGetByKeyResponse,
);

tikv_impl! {
    kv_get(kvrpcpb::GetRequest) -> kvrpcpb::GetResponse;
    kv_scan(kvrpcpb::ScanRequest) -> kvrpcpb::ScanResponse;
    kv_prewrite(kvrpcpb::PrewriteRequest) -> kvrpcpb::PrewriteResponse;
    kv_pessimistic_lock(kvrpcpb::PessimisticLockRequest) -> kvrpcpb::PessimisticLockResponse;
    kv_pessimistic_rollback(kvrpcpb::PessimisticRollbackRequest) -> kvrpcpb::PessimisticRollbackResponse;
    kv_txn_heart_beat(kvrpcpb::TxnHeartBeatRequest) -> kvrpcpb::TxnHeartBeatResponse;
    kv_check_txn_status(kvrpcpb::CheckTxnStatusRequest) -> kvrpcpb::CheckTxnStatusResponse;
    kv_check_secondary_locks(kvrpcpb::CheckSecondaryLocksRequest) -> kvrpcpb::CheckSecondaryLocksResponse;
    kv_commit(kvrpcpb::CommitRequest) -> kvrpcpb::CommitResponse;
    kv_cleanup(kvrpcpb::CleanupRequest) -> kvrpcpb::CleanupResponse;
    kv_batch_get(kvrpcpb::BatchGetRequest) -> kvrpcpb::BatchGetResponse;
    kv_batch_rollback(kvrpcpb::BatchRollbackRequest) -> kvrpcpb::BatchRollbackResponse;
    kv_scan_lock(kvrpcpb::ScanLockRequest) -> kvrpcpb::ScanLockResponse;
    kv_resolve_lock(kvrpcpb::ResolveLockRequest) -> kvrpcpb::ResolveLockResponse;
    kv_gc(kvrpcpb::GcRequest) -> kvrpcpb::GcResponse;
    kv_delete_range(kvrpcpb::DeleteRangeRequest) -> kvrpcpb::DeleteRangeResponse;
    raw_get(kvrpcpb::RawGetRequest) -> kvrpcpb::RawGetResponse;
    raw_batch_get(kvrpcpb::RawBatchGetRequest) -> kvrpcpb::RawBatchGetResponse;
    raw_put(kvrpcpb::RawPutRequest) -> kvrpcpb::RawPutResponse;
    raw_batch_put(kvrpcpb::RawBatchPutRequest) -> kvrpcpb::RawBatchPutResponse;
    raw_delete(kvrpcpb::RawDeleteRequest) -> kvrpcpb::RawDeleteResponse;
    raw_batch_delete(kvrpcpb::RawBatchDeleteRequest) -> kvrpcpb::RawBatchDeleteResponse;
    raw_scan(kvrpcpb::RawScanRequest) -> kvrpcpb::RawScanResponse;
    raw_delete_range(kvrpcpb::RawDeleteRangeRequest) -> kvrpcpb::RawDeleteRangeResponse;
    raw_batch_scan(kvrpcpb::RawBatchScanRequest) -> kvrpcpb::RawBatchScanResponse;
    raw_get_key_ttl(kvrpcpb::RawGetKeyTtlRequest) -> kvrpcpb::RawGetKeyTtlResponse;
    raw_compare_and_swap(kvrpcpb::RawCasRequest) -> kvrpcpb::RawCasResponse;
    mvcc_get_by_key(kvrpcpb::MvccGetByKeyRequest) -> kvrpcpb::MvccGetByKeyResponse;
}
