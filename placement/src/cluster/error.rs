//! Errors of cluster operations, mapped 1:1 onto pdpb `ErrorType`s.

use shale_proto::pdpb;

use crate::meta::MetaError;

#[derive(Debug, thiserror::Error)]
pub enum PdError {
    #[error("cluster is not bootstrapped")]
    NotBootstrapped,
    #[error("cluster is already bootstrapped")]
    AlreadyBootstrapped,
    #[error("store {0} has been removed (tombstone)")]
    StoreTombstone(u64),
    #[error("region {0} not found")]
    RegionNotFound(u64),
    #[error("{0}")]
    EntryNotFound(String),
    #[error("{0}")]
    InvalidValue(String),
    /// Everything PD reports as `UNKNOWN`: stale regions, duplicated
    /// addresses, unknown stores, cluster id mismatches.
    #[error("{0}")]
    Other(String),
    #[error("metadata store: {0}")]
    Meta(#[from] MetaError),
}

impl PdError {
    pub fn error_type(&self) -> pdpb::ErrorType {
        use pdpb::ErrorType;
        match self {
            PdError::NotBootstrapped => ErrorType::NotBootstrapped,
            PdError::AlreadyBootstrapped => ErrorType::AlreadyBootstrapped,
            PdError::StoreTombstone(_) => ErrorType::StoreTombstone,
            PdError::RegionNotFound(_) => ErrorType::RegionNotFound,
            PdError::EntryNotFound(_) => ErrorType::EntryNotFound,
            PdError::InvalidValue(_) => ErrorType::InvalidValue,
            PdError::Other(_) | PdError::Meta(_) => ErrorType::Unknown,
        }
    }

    pub fn to_proto(&self) -> pdpb::Error {
        pdpb::Error {
            r#type: self.error_type() as i32,
            message: self.to_string(),
        }
    }
}

pub type PdResult<T> = Result<T, PdError>;
