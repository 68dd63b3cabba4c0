//! `pdpb.PD`: a thin layer from gRPC messages to [`Cluster`] calls.
//!
//! [`Cluster`]: crate::cluster::Cluster

use std::sync::Arc;

use shale_proto::pdpb;
use shale_proto::pdpb::pd_server::Pd;
use tonic::{Request, Response, Status, Streaming};

use super::heartbeat_stream::{self, HeartbeatResponseStream};
use super::tso_stream::{self, TsoResponseStream};
use super::{header, ServerState};
use crate::cluster::error::PdError;

pub struct PdService {
    state: Arc<ServerState>,
}

impl PdService {
    pub fn new(state: Arc<ServerState>) -> Self {
        PdService { state }
    }
}

type GrpcResult<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl Pd for PdService {
    async fn get_members(
        &self,
        _request: Request<pdpb::GetMembersRequest>,
    ) -> GrpcResult<pdpb::GetMembersResponse> {
        let state = &self.state;
        state
            .metrics
            .grpc_requests
            .with_label_values(&["GetMembers"])
            .inc();
        // Any member answers, naming the leader, so clients find it.
        let (members, leader) = state.members();
        Ok(Response::new(pdpb::GetMembersResponse {
            header: Some(header::ok_header(state.cluster_id())),
            members,
            leader: leader.clone(),
            etcd_leader: leader,
            tso_allocator_leaders: Default::default(),
        }))
    }

    type TsoStream = TsoResponseStream;

    async fn tso(
        &self,
        request: Request<Streaming<pdpb::TsoRequest>>,
    ) -> GrpcResult<Self::TsoStream> {
        self.state
            .metrics
            .grpc_requests
            .with_label_values(&["Tso"])
            .inc();
        Ok(Response::new(tso_stream::spawn(
            self.state.clone(),
            request.into_inner(),
        )))
    }

    async fn bootstrap(
        &self,
        request: Request<pdpb::BootstrapRequest>,
    ) -> GrpcResult<pdpb::BootstrapResponse> {
        let req = request.into_inner();
        self.state
            .reply("Bootstrap", req.header, move |leader| async move {
                leader
                    .cluster
                    .bootstrap(req.store.clone(), req.region.clone())
                    .await?;
                Ok(pdpb::BootstrapResponse::default())
            })
            .await
    }

    async fn is_bootstrapped(
        &self,
        request: Request<pdpb::IsBootstrappedRequest>,
    ) -> GrpcResult<pdpb::IsBootstrappedResponse> {
        let req = request.into_inner();
        self.state
            .reply("IsBootstrapped", req.header, move |leader| async move {
                Ok(pdpb::IsBootstrappedResponse {
                    bootstrapped: leader.cluster.is_bootstrapped(),
                    ..Default::default()
                })
            })
            .await
    }

    async fn alloc_id(
        &self,
        request: Request<pdpb::AllocIdRequest>,
    ) -> GrpcResult<pdpb::AllocIdResponse> {
        let req = request.into_inner();
        self.state
            .reply("AllocID", req.header, move |leader| async move {
                Ok(pdpb::AllocIdResponse {
                    id: leader.cluster.alloc_id().await?,
                    ..Default::default()
                })
            })
            .await
    }

    async fn get_store(
        &self,
        request: Request<pdpb::GetStoreRequest>,
    ) -> GrpcResult<pdpb::GetStoreResponse> {
        let req = request.into_inner();
        self.state
            .reply("GetStore", req.header, move |leader| async move {
                let store = leader.cluster.get_store(req.store_id)?;
                Ok(pdpb::GetStoreResponse {
                    store: Some(store.meta),
                    stats: store.stats,
                    ..Default::default()
                })
            })
            .await
    }

    async fn put_store(
        &self,
        request: Request<pdpb::PutStoreRequest>,
    ) -> GrpcResult<pdpb::PutStoreResponse> {
        let req = request.into_inner();
        self.state
            .reply("PutStore", req.header, move |leader| async move {
                leader.cluster.put_store(req.store.clone()).await?;
                Ok(pdpb::PutStoreResponse::default())
            })
            .await
    }

    async fn get_all_stores(
        &self,
        request: Request<pdpb::GetAllStoresRequest>,
    ) -> GrpcResult<pdpb::GetAllStoresResponse> {
        let req = request.into_inner();
        self.state
            .reply("GetAllStores", req.header, move |leader| async move {
                let stores = leader.cluster.all_stores(req.exclude_tombstone_stores)?;
                Ok(pdpb::GetAllStoresResponse {
                    stores: stores.into_iter().map(|s| s.meta).collect(),
                    ..Default::default()
                })
            })
            .await
    }

    async fn store_heartbeat(
        &self,
        request: Request<pdpb::StoreHeartbeatRequest>,
    ) -> GrpcResult<pdpb::StoreHeartbeatResponse> {
        let req = request.into_inner();
        self.state
            .reply("StoreHeartbeat", req.header, move |leader| async move {
                leader.cluster.store_heartbeat(req.stats.clone())?;
                Ok(pdpb::StoreHeartbeatResponse::default())
            })
            .await
    }

    type RegionHeartbeatStream = HeartbeatResponseStream;

    async fn region_heartbeat(
        &self,
        request: Request<Streaming<pdpb::RegionHeartbeatRequest>>,
    ) -> GrpcResult<Self::RegionHeartbeatStream> {
        self.state
            .metrics
            .grpc_requests
            .with_label_values(&["RegionHeartbeat"])
            .inc();
        Ok(Response::new(heartbeat_stream::spawn(
            self.state.clone(),
            request.into_inner(),
        )))
    }

    async fn get_region(
        &self,
        request: Request<pdpb::GetRegionRequest>,
    ) -> GrpcResult<pdpb::GetRegionResponse> {
        let req = request.into_inner();
        self.state
            .reply("GetRegion", req.header, move |leader| async move {
                Ok(region_response(
                    leader.cluster.region_by_key(&req.region_key)?,
                ))
            })
            .await
    }

    async fn get_prev_region(
        &self,
        request: Request<pdpb::GetRegionRequest>,
    ) -> GrpcResult<pdpb::GetRegionResponse> {
        let req = request.into_inner();
        self.state
            .reply("GetPrevRegion", req.header, move |leader| async move {
                Ok(region_response(
                    leader.cluster.prev_region(&req.region_key)?,
                ))
            })
            .await
    }

    async fn get_region_by_id(
        &self,
        request: Request<pdpb::GetRegionByIdRequest>,
    ) -> GrpcResult<pdpb::GetRegionResponse> {
        let req = request.into_inner();
        self.state
            .reply("GetRegionByID", req.header, move |leader| async move {
                Ok(region_response(leader.cluster.region_by_id(req.region_id)?))
            })
            .await
    }

    async fn scan_regions(
        &self,
        request: Request<pdpb::ScanRegionsRequest>,
    ) -> GrpcResult<pdpb::ScanRegionsResponse> {
        let req = request.into_inner();
        self.state
            .reply("ScanRegions", req.header, move |leader| async move {
                let limit = usize::try_from(req.limit.max(0)).unwrap_or(0);
                let regions = leader
                    .cluster
                    .scan_regions(&req.start_key, &req.end_key, limit)?;
                let mut response = pdpb::ScanRegionsResponse::default();
                for region in regions {
                    response.region_metas.push(region.meta.clone());
                    // The deprecated field is positional: an empty peer when unknown.
                    response.leaders.push(region.leader.unwrap_or_default());
                    response.regions.push(region.to_pdpb());
                }
                Ok(response)
            })
            .await
    }

    async fn ask_batch_split(
        &self,
        request: Request<pdpb::AskBatchSplitRequest>,
    ) -> GrpcResult<pdpb::AskBatchSplitResponse> {
        let req = request.into_inner();
        self.state
            .reply("AskBatchSplit", req.header, move |leader| async move {
                let ids = leader
                    .cluster
                    .ask_batch_split(req.region.as_ref(), req.split_count)
                    .await?;
                Ok(pdpb::AskBatchSplitResponse {
                    ids,
                    ..Default::default()
                })
            })
            .await
    }

    async fn report_batch_split(
        &self,
        request: Request<pdpb::ReportBatchSplitRequest>,
    ) -> GrpcResult<pdpb::ReportBatchSplitResponse> {
        let req = request.into_inner();
        self.state
            .reply("ReportBatchSplit", req.header, move |leader| async move {
                leader.cluster.report_batch_split(&req.regions).await?;
                Ok(pdpb::ReportBatchSplitResponse::default())
            })
            .await
    }

    async fn get_cluster_config(
        &self,
        request: Request<pdpb::GetClusterConfigRequest>,
    ) -> GrpcResult<pdpb::GetClusterConfigResponse> {
        let req = request.into_inner();
        self.state
            .reply("GetClusterConfig", req.header, move |leader| async move {
                Ok(pdpb::GetClusterConfigResponse {
                    cluster: Some(leader.cluster.cluster_config()?),
                    ..Default::default()
                })
            })
            .await
    }

    async fn get_gc_safe_point(
        &self,
        request: Request<pdpb::GetGcSafePointRequest>,
    ) -> GrpcResult<pdpb::GetGcSafePointResponse> {
        let req = request.into_inner();
        self.state
            .reply("GetGCSafePoint", req.header, move |leader| async move {
                Ok(pdpb::GetGcSafePointResponse {
                    safe_point: leader.cluster.gc_safe_point()?,
                    ..Default::default()
                })
            })
            .await
    }

    async fn update_gc_safe_point(
        &self,
        request: Request<pdpb::UpdateGcSafePointRequest>,
    ) -> GrpcResult<pdpb::UpdateGcSafePointResponse> {
        let req = request.into_inner();
        self.state
            .reply("UpdateGCSafePoint", req.header, move |leader| async move {
                Ok(pdpb::UpdateGcSafePointResponse {
                    new_safe_point: leader.cluster.update_gc_safe_point(req.safe_point).await?,
                    ..Default::default()
                })
            })
            .await
    }

    async fn update_service_gc_safe_point(
        &self,
        request: Request<pdpb::UpdateServiceGcSafePointRequest>,
    ) -> GrpcResult<pdpb::UpdateServiceGcSafePointResponse> {
        let req = request.into_inner();
        self.state
            .reply(
                "UpdateServiceGCSafePoint",
                req.header,
                move |leader| async move {
                    let min = leader
                        .cluster
                        .update_service_gc_safe_point(&req.service_id, req.ttl, req.safe_point)
                        .await?;
                    Ok(pdpb::UpdateServiceGcSafePointResponse {
                        service_id: min.service_id,
                        ttl: min.ttl,
                        min_safe_point: min.safe_point,
                        ..Default::default()
                    })
                },
            )
            .await
    }

    async fn split_regions(
        &self,
        request: Request<pdpb::SplitRegionsRequest>,
    ) -> GrpcResult<pdpb::SplitRegionsResponse> {
        let req = request.into_inner();
        self.state
            .reply("SplitRegions", req.header, move |_leader| async move {
                Err::<pdpb::SplitRegionsResponse, _>(PdError::Other(
                    "SplitRegions is not supported by placement yet; use the storage node's SplitRegion RPC".into(),
                ))
            })
            .await
    }
}

fn region_response(region: Option<crate::cluster::regions::RegionInfo>) -> pdpb::GetRegionResponse {
    match region {
        Some(region) => pdpb::GetRegionResponse {
            region: Some(region.meta),
            leader: region.leader,
            down_peers: region.down_peers,
            pending_peers: region.pending_peers,
            ..Default::default()
        },
        None => pdpb::GetRegionResponse::default(),
    }
}
