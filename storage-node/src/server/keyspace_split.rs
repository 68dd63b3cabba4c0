//! Under API V2 every keyspace's raw and transactional data get Regions of
//! their own, as PD arranges for the DEFAULT keyspace. Besides keeping
//! keyspaces apart for later balancing, this is what makes `tikv-client`'s
//! scans end: it stops when a Region's end key reaches the keyspace's end.

use shale_proto::metapb;

use super::BootstrapError;
use crate::codec::encode_bytes;
use crate::pd_client::PdClient;
use crate::raftstore::split::{split_region, SplitFailed};
use crate::raftstore::Router;

/// Region-space boundaries of the DEFAULT keyspace (id 0): its raw range
/// `r\0\0\0 .. r\0\0\1` and its transactional range `x\0\0\0 .. x\0\0\1`.
pub fn default_keyspace_boundaries() -> Vec<Vec<u8>> {
    [b"r\0\0\0", b"r\0\0\x01", b"x\0\0\0", b"x\0\0\x01"]
        .iter()
        .map(|k| encode_bytes(*k))
        .collect()
}

/// How long the first store waits for its Regions' leaders (elections of
/// fresh single-replica groups take one election timeout).
const LEADER_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Splits this store's Regions at every boundary that still falls inside one,
/// through the Regions' Raft groups. Idempotent: a boundary that already is
/// a Region edge is skipped; Regions led elsewhere are left to their leader.
pub async fn ensure_split<P: PdClient>(
    pd: &P,
    router: &Router,
    boundaries: &[Vec<u8>],
) -> Result<(), BootstrapError> {
    let regions = &router.context().regions;
    let deadline = tokio::time::Instant::now() + LEADER_WAIT;
    loop {
        let mut pending: Vec<(metapb::Region, Vec<Vec<u8>>)> = Vec::new();
        for key in boundaries {
            let Some(region) = regions.region_splittable_at(key) else {
                continue;
            };
            match pending.iter_mut().find(|(r, _)| r.id == region.id) {
                Some((_, keys)) => keys.push(key.clone()),
                None => pending.push((region, vec![key.clone()])),
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        let mut waiting = false;
        for (region, keys) in pending {
            match split_region(router, pd, region.id, keys).await {
                Ok(parts) => tracing::info!(
                    region_id = region.id,
                    parts = parts.len(),
                    "split at keyspace boundaries"
                ),
                Err(SplitFailed::NotLeader(id)) => {
                    // Wait only for a Region this store holds alone (it is
                    // electing itself); one replicated elsewhere is split by
                    // its leader.
                    waiting |= router
                        .peer(id)
                        .is_some_and(|p| p.region().peers.len() == 1 && p.leader().is_none());
                }
                Err(SplitFailed::Pd(e)) => return Err(e.into()),
                Err(e) => {
                    tracing::debug!(region_id = region.id, "keyspace split retried: {e}");
                    waiting = true;
                }
            }
        }
        if !waiting {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            // Another store leads these Regions and splits them itself.
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
