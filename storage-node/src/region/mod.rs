//! The Regions this store holds, and the checks every request passes before it
//! reaches storage: right store, known Region, current epoch, keys in range.
//! Failures are `errorpb::Error`s, which TiKV clients use to refresh their
//! routing and retry at the right place.

mod check;
mod requests;
mod split;

pub use check::{KeyMode, RegionRequest, ScopeKeys};
pub use split::{split_region, SplitError};

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::RwLock;
use prost::Message;
use shale_proto::{errorpb, metapb};

use crate::engine::{EngineError, MetaWrite, RocksEngine};

/// Where Region metadata lives in the `raft` column family.
pub const REGION_META_PREFIX: &[u8] = b"\x01region\x00";

pub fn region_meta_key(region_id: u64) -> Vec<u8> {
    let mut k = REGION_META_PREFIX.to_vec();
    k.extend_from_slice(&region_id.to_be_bytes());
    k
}

/// Whether `key` (Region space) lies in `region`'s range (empty end key:
/// unbounded).
pub fn contains(region: &metapb::Region, key: &[u8]) -> bool {
    key >= region.start_key.as_slice()
        && (region.end_key.is_empty() || key < region.end_key.as_slice())
}

/// Whether `[start, end)` (empty `end`: unbounded) lies within `region`.
pub fn contains_range(region: &metapb::Region, start: &[u8], end: &[u8]) -> bool {
    let end_inside = if region.end_key.is_empty() {
        true
    } else {
        !end.is_empty() && end <= region.end_key.as_slice()
    };
    start >= region.start_key.as_slice() && end_inside
}

/// The Region error for a key outside `region`, as TiKV reports it.
pub fn key_not_in_region(region: &metapb::Region, key: &[u8]) -> errorpb::Error {
    errorpb::Error {
        message: format!("key is not in region {}", region.id),
        key_not_in_region: Some(errorpb::KeyNotInRegion {
            key: key.to_vec(),
            region_id: region.id,
            start_key: region.start_key.clone(),
            end_key: region.end_key.clone(),
        }),
        ..Default::default()
    }
}

/// A Region whose new leader has not synced `max_ts` from the TSO yet:
/// async-commit and 1PC prewrites must wait (TiKV's
/// `MaxTimestampNotSynced`).
pub fn max_ts_not_synced(region_id: u64) -> EngineError {
    EngineError::Region(Box::new(errorpb::Error {
        message: format!("region {region_id}: the new leader has not synced max_ts yet"),
        max_timestamp_not_synced: Some(errorpb::MaxTimestampNotSynced {}),
        ..Default::default()
    }))
}

#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("stored region meta is corrupt: {0}")]
    Corrupt(#[from] prost::DecodeError),
}

/// The store's Regions in memory. Their metadata is persisted by whoever
/// changes them ([`RegionRegistry::meta_write`]), atomically with the Raft
/// state that goes with it.
#[derive(Clone)]
pub struct RegionRegistry {
    store_id: u64,
    regions: Arc<RwLock<BTreeMap<u64, metapb::Region>>>,
}

impl RegionRegistry {
    /// Loads the Regions persisted for this store.
    pub fn load(store_id: u64, rocks: RocksEngine) -> Result<Self, RegionError> {
        let mut regions = BTreeMap::new();
        for (_, bytes) in rocks.scan_meta(REGION_META_PREFIX)? {
            let region = metapb::Region::decode(bytes.as_slice())?;
            regions.insert(region.id, region);
        }
        Ok(RegionRegistry {
            store_id,
            regions: Arc::new(RwLock::new(regions)),
        })
    }

    pub fn store_id(&self) -> u64 {
        self.store_id
    }

    /// The metadata write that persists `region`, for callers that write it
    /// atomically with other changes (a Raft apply) and then call
    /// [`RegionRegistry::set_in_memory`].
    pub fn meta_write(region: &metapb::Region) -> MetaWrite {
        MetaWrite::Put(region_meta_key(region.id), region.encode_to_vec())
    }

    /// The metadata write that forgets a Region.
    pub fn meta_delete(region_id: u64) -> MetaWrite {
        MetaWrite::Delete(region_meta_key(region_id))
    }

    /// Serves `region` as already persisted by the caller.
    pub fn set_in_memory(&self, region: metapb::Region) {
        self.regions.write().insert(region.id, region);
    }

    /// Stops serving a Region whose metadata the caller already deleted.
    pub fn forget_in_memory(&self, region_id: u64) {
        self.regions.write().remove(&region_id);
    }

    /// The Region whose range strictly contains `key` (so splitting there
    /// makes sense), if any.
    pub fn region_splittable_at(&self, key: &[u8]) -> Option<metapb::Region> {
        self.regions
            .read()
            .values()
            .find(|r| {
                key > r.start_key.as_slice() && (r.end_key.is_empty() || key < r.end_key.as_slice())
            })
            .cloned()
    }

    pub fn ids(&self) -> Vec<u64> {
        self.regions.read().keys().copied().collect()
    }

    pub fn all(&self) -> Vec<metapb::Region> {
        self.regions.read().values().cloned().collect()
    }

    pub fn get(&self, region_id: u64) -> Option<metapb::Region> {
        self.regions.read().get(&region_id).cloned()
    }

    /// The peer of `region` that lives on this store.
    pub fn local_peer(&self, region: &metapb::Region) -> Option<metapb::Peer> {
        region
            .peers
            .iter()
            .find(|p| p.store_id == self.store_id)
            .cloned()
    }

    /// Validates a request's context and keys against the Region it names.
    pub fn check<R: RegionRequest>(&self, req: &R) -> Result<metapb::Region, Box<errorpb::Error>> {
        let regions = self.regions.read();
        check::check_request(self.store_id, &regions, req)
    }
}
