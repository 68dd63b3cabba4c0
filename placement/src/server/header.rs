//! pdpb request/response headers: cluster id checks and error headers.

use shale_proto::{keyspacepb, pdpb};

use crate::cluster::error::PdError;

/// Requests carrying another cluster's id are refused; 0 means "unknown yet"
/// (e.g. a client's very first GetMembers) and is accepted.
pub fn check_cluster_id(ours: u64, header: Option<&pdpb::RequestHeader>) -> Result<(), PdError> {
    match header {
        Some(h) if h.cluster_id != 0 && h.cluster_id != ours => Err(PdError::Other(format!(
            "mismatch cluster id, need {ours} but got {}",
            h.cluster_id
        ))),
        _ => Ok(()),
    }
}

pub fn ok_header(cluster_id: u64) -> pdpb::ResponseHeader {
    pdpb::ResponseHeader {
        cluster_id,
        error: None,
    }
}

pub fn error_header(cluster_id: u64, error: &PdError) -> pdpb::ResponseHeader {
    pdpb::ResponseHeader {
        cluster_id,
        error: Some(error.to_proto()),
    }
}

/// Responses that carry a pdpb `ResponseHeader`.
pub trait WithHeader: Default {
    fn set_header(&mut self, header: pdpb::ResponseHeader);
}

macro_rules! with_header {
    ($($ty:ty),* $(,)?) => {
        $(impl WithHeader for $ty {
            fn set_header(&mut self, header: pdpb::ResponseHeader) {
                self.header = Some(header);
            }
        })*
    };
}

with_header!(
    pdpb::BootstrapResponse,
    pdpb::IsBootstrappedResponse,
    pdpb::AllocIdResponse,
    pdpb::GetStoreResponse,
    pdpb::PutStoreResponse,
    pdpb::GetAllStoresResponse,
    pdpb::StoreHeartbeatResponse,
    pdpb::GetRegionResponse,
    pdpb::ScanRegionsResponse,
    pdpb::AskBatchSplitResponse,
    pdpb::ReportBatchSplitResponse,
    pdpb::GetClusterConfigResponse,
    pdpb::GetGcSafePointResponse,
    pdpb::UpdateGcSafePointResponse,
    pdpb::UpdateServiceGcSafePointResponse,
    pdpb::SplitRegionsResponse,
    pdpb::RegionHeartbeatResponse,
    keyspacepb::LoadKeyspaceResponse,
);
