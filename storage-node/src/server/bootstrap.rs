//! A store's identity and the cluster's first Region.
//!
//! The identity (cluster id + store id) is persisted before anything else, so
//! a restarted store comes back as itself and refuses to join another cluster.
//! The first store of a new cluster persists its first Region locally before
//! asking placement to bootstrap, so a crash in between is retried on restart.

use shale_proto::metapb;

use crate::engine::RocksEngine;
use crate::pd_client::{PdClient, PdError};
use crate::raftstore::initial_state;
use crate::region::{RegionError, RegionRegistry};

const STORE_IDENT_KEY: &[u8] = b"\x01store_ident";

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Pd(#[from] PdError),
    #[error(transparent)]
    Region(#[from] RegionError),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error("data directory belongs to cluster {stored}, but placement serves cluster {actual}")]
    ClusterMismatch { stored: u64, actual: u64 },
    #[error(transparent)]
    Split(#[from] crate::region::SplitError),
    #[error("creating the first region's raft state: {0}")]
    RaftState(#[from] std::io::Error),
    #[error("stored store identity is corrupt")]
    CorruptIdent,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreIdent {
    pub cluster_id: u64,
    pub store_id: u64,
}

impl StoreIdent {
    fn encode(&self) -> Vec<u8> {
        [self.cluster_id.to_be_bytes(), self.store_id.to_be_bytes()].concat()
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let cluster_id = u64::from_be_bytes(bytes.get(0..8)?.try_into().ok()?);
        let store_id = u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?);
        Some(StoreIdent {
            cluster_id,
            store_id,
        })
    }
}

/// Loads this store's identity, or allocates and persists a new one.
pub async fn ensure_store_ident<P: PdClient>(
    rocks: &RocksEngine,
    pd: &P,
) -> Result<StoreIdent, BootstrapError> {
    if let Some(bytes) = rocks.get_meta(STORE_IDENT_KEY)? {
        let ident = StoreIdent::decode(&bytes).ok_or(BootstrapError::CorruptIdent)?;
        if ident.cluster_id != pd.cluster_id() {
            return Err(BootstrapError::ClusterMismatch {
                stored: ident.cluster_id,
                actual: pd.cluster_id(),
            });
        }
        return Ok(ident);
    }
    let ident = StoreIdent {
        cluster_id: pd.cluster_id(),
        store_id: pd.alloc_id().await?,
    };
    rocks.put_meta(STORE_IDENT_KEY, &ident.encode())?;
    Ok(ident)
}

/// Bootstraps the cluster with this store's first Region if nobody has yet.
pub async fn ensure_cluster_bootstrapped<P: PdClient>(
    pd: &P,
    rocks: &RocksEngine,
    regions: &RegionRegistry,
    store: metapb::Store,
) -> Result<(), BootstrapError> {
    if pd.is_bootstrapped().await? {
        return Ok(());
    }
    // Reuse a Region prepared by an earlier attempt that crashed midway.
    let region = match regions.all().into_iter().next() {
        Some(r) => r,
        None => {
            let region = first_region(pd.alloc_id().await?, pd.alloc_id().await?, store.id);
            initial_state::create(rocks, regions, region.clone()).await?;
            region
        }
    };
    match pd.bootstrap(store, region.clone()).await {
        Ok(()) => {
            tracing::info!(region_id = region.id, "bootstrapped the cluster");
            Ok(())
        }
        Err(e) if e.is_already_bootstrapped() => {
            // Another store won the race; its Region is the cluster's, not ours.
            initial_state::discard(rocks, regions, region.id).await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

fn first_region(region_id: u64, peer_id: u64, store_id: u64) -> metapb::Region {
    metapb::Region {
        id: region_id,
        start_key: vec![],
        end_key: vec![],
        region_epoch: Some(metapb::RegionEpoch {
            conf_ver: 1,
            version: 1,
        }),
        peers: vec![metapb::Peer {
            id: peer_id,
            store_id,
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ident_round_trips_and_rejects_short_bytes() {
        let ident = StoreIdent {
            cluster_id: 7,
            store_id: 9,
        };
        assert_eq!(StoreIdent::decode(&ident.encode()), Some(ident));
        assert_eq!(StoreIdent::decode(&[1, 2, 3]), None);
    }
}
