//! Operator errors: each says which step failed and on which object, and
//! maps to a metric label.

use crate::placement_api::PlacementError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {what}: {source}")]
    Read {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("building {what}: {message}")]
    Build { what: String, message: String },
    #[error("applying {kind} {name}: {source}")]
    Apply {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("asking placement to {action}: {source}")]
    Placement {
        action: String,
        #[source]
        source: PlacementError,
    },
    #[error("writing status of {name}: {source}")]
    Status {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cleaning up {name}: {source}")]
    Cleanup {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("{0} is missing from the object")]
    MissingField(&'static str),
    #[error("leader election: {0}")]
    Lease(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Low-cardinality label for the failure metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Read { .. } => "read",
            Error::Build { .. } => "build",
            Error::Apply { .. } => "apply",
            Error::Placement { .. } => "placement",
            Error::Status { .. } => "status",
            Error::Cleanup { .. } => "cleanup",
            Error::Finalizer(_) => "finalizer",
            Error::MissingField(_) => "missing_field",
            Error::Lease(_) => "lease",
        }
    }
}
