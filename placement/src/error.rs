//! Errors that stop placement from starting.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::ConfigError;
use crate::meta::MetaError;
use crate::tso::TsoError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open metadata store at {path}: {source}")]
    OpenMeta { path: PathBuf, source: MetaError },
    #[error("metadata store: {0}")]
    Meta(#[from] MetaError),
    #[error("timestamp oracle: {0}")]
    Tso(#[from] TsoError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Raft(#[from] crate::raft::RaftSetupError),
    #[error("no placement leader within {0:?}")]
    NotReady(std::time::Duration),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}
