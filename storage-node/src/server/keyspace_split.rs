//! Under API V2 every keyspace's raw and transactional data get Regions of
//! their own, as PD arranges for the DEFAULT keyspace. Besides keeping
//! keyspaces apart for later balancing, this is what makes `tikv-client`'s
//! scans end: it stops when a Region's end key reaches the keyspace's end.

use shale_proto::metapb;

use super::BootstrapError;
use crate::codec::encode_bytes;
use crate::pd_client::PdClient;
use crate::region::{split_region, RegionRegistry};

/// Region-space boundaries of the DEFAULT keyspace (id 0): its raw range
/// `r\0\0\0 .. r\0\0\1` and its transactional range `x\0\0\0 .. x\0\0\1`.
pub fn default_keyspace_boundaries() -> Vec<Vec<u8>> {
    [b"r\0\0\0", b"r\0\0\x01", b"x\0\0\0", b"x\0\0\x01"]
        .iter()
        .map(|k| encode_bytes(*k))
        .collect()
}

/// Splits this store's Regions at every boundary that still falls inside one.
/// Idempotent: a boundary that already is a Region edge is skipped.
pub async fn ensure_split<P: PdClient>(
    pd: &P,
    regions: &RegionRegistry,
    boundaries: &[Vec<u8>],
) -> Result<(), BootstrapError> {
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
    for (region, mut keys) in pending {
        keys.sort();
        keys.dedup();
        let ids = pd
            .ask_batch_split(region.clone(), keys.len() as u32)
            .await?;
        let parts = split_region(&region, &keys, &ids)?;
        regions.insert_all(parts.clone())?;
        tracing::info!(
            region_id = region.id,
            parts = parts.len(),
            "split at keyspace boundaries"
        );
        pd.report_batch_split(parts).await?;
    }
    Ok(())
}
