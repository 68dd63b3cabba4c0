//! The routing table: regions by start key and by id, with their leaders and
//! the statistics that heartbeats carry.
//!
//! Keys are opaque bytes compared lexicographically; an empty end key means
//! +infinity. Updates follow PD's rule: a region description is accepted only
//! if its epoch is not older than what is known for the same region
//! (`version` and `conf_ver` both >=) and its `version` is not older than any
//! region it overlaps; overlapped regions are then dropped.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound::{Excluded, Included, Unbounded};

use shale_proto::{metapb, pdpb};

use super::error::{PdError, PdResult};
use super::Cluster;
use crate::meta::schema;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegionStats {
    pub written_bytes: u64,
    pub written_keys: u64,
    pub read_bytes: u64,
    pub read_keys: u64,
    pub approximate_size: u64,
    pub approximate_keys: u64,
    pub approximate_kv_size: u64,
    pub cpu_usage: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RegionInfo {
    pub meta: metapb::Region,
    pub leader: Option<metapb::Peer>,
    pub down_peers: Vec<pdpb::PeerStats>,
    pub pending_peers: Vec<metapb::Peer>,
    pub stats: RegionStats,
}

impl RegionInfo {
    pub fn new(meta: metapb::Region, leader: Option<metapb::Peer>) -> Self {
        RegionInfo {
            meta,
            leader,
            down_peers: Vec::new(),
            pending_peers: Vec::new(),
            stats: RegionStats::default(),
        }
    }

    /// `None` when the request carries no region.
    pub fn from_heartbeat(req: &pdpb::RegionHeartbeatRequest) -> Option<Self> {
        Some(RegionInfo {
            meta: req.region.clone()?,
            leader: req.leader,
            down_peers: req.down_peers.clone(),
            pending_peers: req.pending_peers.clone(),
            stats: RegionStats {
                written_bytes: req.bytes_written,
                written_keys: req.keys_written,
                read_bytes: req.bytes_read,
                read_keys: req.keys_read,
                approximate_size: req.approximate_size,
                approximate_keys: req.approximate_keys,
                approximate_kv_size: req.approximate_kv_size,
                cpu_usage: req.cpu_usage,
            },
        })
    }

    pub fn epoch(&self) -> metapb::RegionEpoch {
        self.meta.region_epoch.unwrap_or_default()
    }

    pub fn to_pdpb(&self) -> pdpb::Region {
        pdpb::Region {
            region: Some(self.meta.clone()),
            leader: self.leader,
            down_peers: self.down_peers.clone(),
            pending_peers: self.pending_peers.clone(),
        }
    }

    fn contains(&self, key: &[u8]) -> bool {
        self.meta.start_key.as_slice() <= key && end_after(&self.meta.end_key, key)
    }
}

/// True when a range ending at `end` (empty = +inf) extends past `key`.
fn end_after(end: &[u8], key: &[u8]) -> bool {
    end.is_empty() || end > key
}

/// Structural checks every region description must pass.
pub fn validate_region(region: &metapb::Region) -> PdResult<()> {
    let invalid = |what: &str| {
        Err(PdError::InvalidValue(format!(
            "region {}: {what}",
            region.id
        )))
    };
    if region.id == 0 {
        return invalid("zero region id");
    }
    if region.region_epoch.is_none() {
        return invalid("missing region epoch");
    }
    if !region.end_key.is_empty() && region.start_key >= region.end_key {
        return invalid("start key is not below end key");
    }
    if region.peers.is_empty() {
        return invalid("no peers");
    }
    if region.peers.iter().any(|p| p.id == 0 || p.store_id == 0) {
        return invalid("peer with zero id or zero store id");
    }
    Ok(())
}

/// A checked change to the table, to be persisted (if `persist`) and applied.
#[derive(Debug, Clone)]
pub struct RegionUpdate {
    pub info: RegionInfo,
    /// Ids of other regions the new one overlaps; they are removed.
    pub overlaps: Vec<u64>,
    /// Whether the durable record changes (meta, leader, or removed overlaps).
    pub persist: bool,
}

/// The durable writes of `update`: its record, and the removal of the
/// regions it overlaps.
pub(super) fn persist_ops(update: &RegionUpdate) -> Vec<crate::meta::MetaOp> {
    let mut ops = vec![schema::put_region(
        &update.info.meta,
        update.info.leader.as_ref(),
    )];
    ops.extend(update.overlaps.iter().map(|id| schema::delete_region(*id)));
    ops
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreRegionCounts {
    pub region_count: u64,
    pub leader_count: u64,
    pub region_size: u64,
    pub leader_size: u64,
}

#[derive(Debug, Default)]
pub struct RegionTable {
    by_start: BTreeMap<Vec<u8>, u64>,
    by_id: HashMap<u64, RegionInfo>,
}

impl RegionTable {
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn get(&self, id: u64) -> Option<&RegionInfo> {
        self.by_id.get(&id)
    }

    /// The region whose range contains `key`.
    pub fn get_by_key(&self, key: &[u8]) -> Option<&RegionInfo> {
        let (_, id) = self
            .by_start
            .range::<[u8], _>((Unbounded, Included(key)))
            .next_back()?;
        self.by_id.get(id).filter(|r| r.contains(key))
    }

    /// The region just before the one containing `key` (or before `key` when
    /// no region contains it).
    pub fn prev_of_key(&self, key: &[u8]) -> Option<&RegionInfo> {
        let boundary = match self.get_by_key(key) {
            Some(region) => region.meta.start_key.as_slice(),
            None => key,
        };
        let (_, id) = self
            .by_start
            .range::<[u8], _>((Unbounded, Excluded(boundary)))
            .next_back()?;
        self.by_id.get(id)
    }

    /// Regions intersecting `[start, end)` in key order, at most `limit`
    /// (`0` = no limit). The region containing `start` is included.
    pub fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Vec<&RegionInfo> {
        let first = match self.get_by_key(start) {
            Some(region) => region.meta.start_key.as_slice(),
            None => start,
        };
        let mut out = Vec::new();
        for (region_start, id) in self.by_start.range::<[u8], _>((Included(first), Unbounded)) {
            if !end.is_empty() && region_start.as_slice() >= end {
                break;
            }
            if let Some(region) = self.by_id.get(id) {
                out.push(region);
            }
            if limit > 0 && out.len() >= limit {
                break;
            }
        }
        out
    }

    /// All regions in key order.
    pub fn iter(&self) -> impl Iterator<Item = &RegionInfo> {
        self.by_start.values().filter_map(|id| self.by_id.get(id))
    }

    fn overlapping(&self, start: &[u8], end: &[u8]) -> Vec<&RegionInfo> {
        let mut out = Vec::new();
        if let Some((_, id)) = self
            .by_start
            .range::<[u8], _>((Unbounded, Excluded(start)))
            .next_back()
        {
            if let Some(region) = self.by_id.get(id) {
                if end_after(&region.meta.end_key, start) {
                    out.push(region);
                }
            }
        }
        for (region_start, id) in self.by_start.range::<[u8], _>((Included(start), Unbounded)) {
            if !end.is_empty() && region_start.as_slice() >= end {
                break;
            }
            if let Some(region) = self.by_id.get(id) {
                out.push(region);
            }
        }
        out
    }

    /// Checks `info` against the table without changing it.
    pub fn plan(&self, info: RegionInfo) -> PdResult<RegionUpdate> {
        validate_region(&info.meta)?;
        let id = info.meta.id;
        let epoch = info.epoch();
        let origin = self.by_id.get(&id);
        if let Some(origin) = origin {
            let known = origin.epoch();
            if epoch.version < known.version || epoch.conf_ver < known.conf_ver {
                return Err(PdError::Other(format!(
                    "region {id} is stale: epoch {{conf_ver: {}, version: {}}} is older than known {{conf_ver: {}, version: {}}}",
                    epoch.conf_ver, epoch.version, known.conf_ver, known.version
                )));
            }
        }
        let mut overlaps = Vec::new();
        for other in self.overlapping(&info.meta.start_key, &info.meta.end_key) {
            if other.meta.id == id {
                continue;
            }
            let other_version = other.epoch().version;
            if epoch.version < other_version {
                return Err(PdError::Other(format!(
                    "region {id} is stale: it overlaps region {} with newer version {} > {}",
                    other.meta.id, other_version, epoch.version
                )));
            }
            overlaps.push(other.meta.id);
        }
        let persist = match origin {
            None => true,
            Some(origin) => origin.meta != info.meta || !same_peer(&origin.leader, &info.leader),
        } || !overlaps.is_empty();
        Ok(RegionUpdate {
            info,
            overlaps,
            persist,
        })
    }

    /// Applies a change produced by [`RegionTable::plan`] on this table.
    pub fn apply(&mut self, update: RegionUpdate) {
        let id = update.info.meta.id;
        if let Some(origin) = self.by_id.remove(&id) {
            self.remove_start_entry(&origin.meta.start_key, id);
        }
        for overlap in &update.overlaps {
            if let Some(region) = self.by_id.remove(overlap) {
                self.remove_start_entry(&region.meta.start_key, *overlap);
            }
        }
        self.by_start.insert(update.info.meta.start_key.clone(), id);
        self.by_id.insert(id, update.info);
    }

    fn remove_start_entry(&mut self, start: &[u8], id: u64) {
        if self.by_start.get(start) == Some(&id) {
            self.by_start.remove(start);
        }
    }

    /// Region and leader counts and sizes per store.
    pub fn store_counts(&self) -> HashMap<u64, StoreRegionCounts> {
        let mut counts: HashMap<u64, StoreRegionCounts> = HashMap::new();
        for region in self.by_id.values() {
            let size = region.stats.approximate_size;
            for peer in &region.meta.peers {
                let entry = counts.entry(peer.store_id).or_default();
                entry.region_count += 1;
                entry.region_size += size;
            }
            if let Some(leader) = &region.leader {
                let entry = counts.entry(leader.store_id).or_default();
                entry.leader_count += 1;
                entry.leader_size += size;
            }
        }
        counts
    }
}

fn same_peer(a: &Option<metapb::Peer>, b: &Option<metapb::Peer>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.id == b.id && a.store_id == b.store_id && a.role == b.role,
        (None, None) => true,
        _ => false,
    }
}

impl Cluster {
    /// Applies a region heartbeat to the routing table.
    pub async fn region_heartbeat(&self, req: &pdpb::RegionHeartbeatRequest) -> PdResult<()> {
        self.ensure_bootstrapped()?;
        let info = RegionInfo::from_heartbeat(req)
            .ok_or_else(|| PdError::InvalidValue("invalid request region: missing".into()))?;
        let leader = info
            .leader
            .ok_or_else(|| PdError::InvalidValue("invalid request leader: missing".into()))?;
        if !info
            .meta
            .peers
            .iter()
            .any(|p| p.id == leader.id && p.store_id == leader.store_id)
        {
            return Err(PdError::InvalidValue(format!(
                "region {}: leader peer {} is not one of its peers",
                info.meta.id, leader.id
            )));
        }
        let _writer = self.writer.lock().await;
        let update = {
            let state = self.state.read();
            state.stores.check_alive(leader.store_id)?;
            state.regions.plan(info)?
        };
        self.persist_and_apply(update).await
    }

    /// Persists `update` when needed, then applies it in memory. Callers hold
    /// the writer lock, so the plan is still valid when it is applied.
    pub(super) async fn persist_and_apply(&self, update: RegionUpdate) -> PdResult<()> {
        if update.persist {
            self.meta.write(persist_ops(&update)).await?;
        }
        self.state.write().regions.apply(update);
        Ok(())
    }

    pub fn region_by_key(&self, key: &[u8]) -> PdResult<Option<RegionInfo>> {
        let state = self.bootstrapped_state()?;
        Ok(state.regions.get_by_key(key).cloned())
    }

    pub fn prev_region(&self, key: &[u8]) -> PdResult<Option<RegionInfo>> {
        let state = self.bootstrapped_state()?;
        Ok(state.regions.prev_of_key(key).cloned())
    }

    pub fn region_by_id(&self, id: u64) -> PdResult<Option<RegionInfo>> {
        let state = self.bootstrapped_state()?;
        Ok(state.regions.get(id).cloned())
    }

    pub fn scan_regions(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> PdResult<Vec<RegionInfo>> {
        let state = self.bootstrapped_state()?;
        Ok(state
            .regions
            .scan(start, end, limit)
            .into_iter()
            .cloned()
            .collect())
    }

    /// All regions in key order (empty before bootstrap).
    pub fn all_regions(&self) -> Vec<RegionInfo> {
        self.state.read().regions.iter().cloned().collect()
    }

    pub fn store_region_counts(&self) -> HashMap<u64, StoreRegionCounts> {
        self.state.read().regions.store_counts()
    }

    pub fn region_count(&self) -> usize {
        self.state.read().regions.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn region(id: u64, start: &str, end: &str, conf_ver: u64, version: u64) -> RegionInfo {
        RegionInfo::new(
            metapb::Region {
                id,
                start_key: start.as_bytes().to_vec(),
                end_key: end.as_bytes().to_vec(),
                region_epoch: Some(metapb::RegionEpoch { conf_ver, version }),
                peers: vec![metapb::Peer {
                    id: id * 100,
                    store_id: 1,
                    ..Default::default()
                }],
                ..Default::default()
            },
            Some(metapb::Peer {
                id: id * 100,
                store_id: 1,
                ..Default::default()
            }),
        )
    }

    fn put(table: &mut RegionTable, info: RegionInfo) -> PdResult<RegionUpdate> {
        let update = table.plan(info)?;
        table.apply(update.clone());
        Ok(update)
    }

    fn ids(regions: Vec<&RegionInfo>) -> Vec<u64> {
        regions.iter().map(|r| r.meta.id).collect()
    }

    #[test]
    fn routes_keys_to_regions() {
        let mut table = RegionTable::default();
        put(&mut table, region(1, "", "b", 1, 1)).unwrap();
        put(&mut table, region(2, "b", "d", 1, 1)).unwrap();
        put(&mut table, region(3, "d", "", 1, 1)).unwrap();
        assert_eq!(table.get_by_key(b"").map(|r| r.meta.id), Some(1));
        assert_eq!(table.get_by_key(b"a").map(|r| r.meta.id), Some(1));
        assert_eq!(table.get_by_key(b"b").map(|r| r.meta.id), Some(2));
        assert_eq!(table.get_by_key(b"c\xff").map(|r| r.meta.id), Some(2));
        assert_eq!(table.get_by_key(b"zzzz").map(|r| r.meta.id), Some(3));
        assert_eq!(table.prev_of_key(b"c").map(|r| r.meta.id), Some(1));
        assert_eq!(table.prev_of_key(b"a").map(|r| r.meta.id), None);
        assert_eq!(table.prev_of_key(b"x").map(|r| r.meta.id), Some(2));
    }

    #[test]
    fn holes_are_not_routed() {
        let mut table = RegionTable::default();
        put(&mut table, region(1, "a", "c", 1, 1)).unwrap();
        assert!(table.get_by_key(b"").is_none());
        assert!(table.get_by_key(b"c").is_none());
        assert_eq!(table.get_by_key(b"a").map(|r| r.meta.id), Some(1));
    }

    #[test]
    fn scan_respects_range_and_limit() {
        let mut table = RegionTable::default();
        put(&mut table, region(1, "", "b", 1, 1)).unwrap();
        put(&mut table, region(2, "b", "d", 1, 1)).unwrap();
        put(&mut table, region(3, "d", "f", 1, 1)).unwrap();
        put(&mut table, region(4, "f", "", 1, 1)).unwrap();
        assert_eq!(ids(table.scan(b"", b"", 0)), vec![1, 2, 3, 4]);
        assert_eq!(ids(table.scan(b"c", b"", 0)), vec![2, 3, 4]);
        assert_eq!(ids(table.scan(b"c", b"e", 0)), vec![2, 3]);
        assert_eq!(ids(table.scan(b"c", b"d", 0)), vec![2]);
        assert_eq!(ids(table.scan(b"a", b"", 2)), vec![1, 2]);
    }

    #[test]
    fn split_replaces_overlapped_region() {
        let mut table = RegionTable::default();
        put(&mut table, region(1, "", "", 1, 1)).unwrap();
        // Region 1 splits at "m": 2 takes ["", "m"), 1 keeps ["m", "").
        let update = put(&mut table, region(2, "", "m", 1, 2)).unwrap();
        assert_eq!(update.overlaps, vec![1]);
        assert!(table.get(1).is_none());
        put(&mut table, region(1, "m", "", 1, 2)).unwrap();
        assert_eq!(ids(table.scan(b"", b"", 0)), vec![2, 1]);
        assert_eq!(table.get_by_key(b"z").map(|r| r.meta.id), Some(1));
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn stale_epochs_are_rejected() {
        let mut table = RegionTable::default();
        put(&mut table, region(1, "", "m", 2, 5)).unwrap();
        put(&mut table, region(2, "m", "", 1, 5)).unwrap();
        // Older version or older conf_ver of the same region.
        assert!(table.plan(region(1, "", "m", 2, 4)).is_err());
        assert!(table.plan(region(1, "", "m", 1, 5)).is_err());
        // A new region overlapping a newer one.
        assert!(table.plan(region(3, "a", "z", 1, 4)).is_err());
        // Nothing changed.
        assert_eq!(ids(table.scan(b"", b"", 0)), vec![1, 2]);
        // Same epoch is accepted; it only refreshes leader/stats.
        let update = table.plan(region(1, "", "m", 2, 5)).unwrap();
        assert!(!update.persist);
    }

    #[test]
    fn merge_removes_both_sides() {
        let mut table = RegionTable::default();
        put(&mut table, region(1, "", "g", 1, 3)).unwrap();
        put(&mut table, region(2, "g", "p", 1, 3)).unwrap();
        put(&mut table, region(3, "p", "", 1, 3)).unwrap();
        // Region 2 absorbs 1 and 3 with a newer version.
        let update = put(&mut table, region(2, "", "", 1, 4)).unwrap();
        let mut overlaps = update.overlaps.clone();
        overlaps.sort();
        assert_eq!(overlaps, vec![1, 3]);
        assert_eq!(ids(table.scan(b"", b"", 0)), vec![2]);
    }

    #[test]
    fn range_change_moves_start_entry() {
        let mut table = RegionTable::default();
        put(&mut table, region(1, "a", "z", 1, 1)).unwrap();
        put(&mut table, region(1, "c", "z", 1, 2)).unwrap();
        assert!(table.get_by_key(b"b").is_none());
        assert_eq!(table.get_by_key(b"c").map(|r| r.meta.id), Some(1));
        assert_eq!(table.iter().count(), 1);
    }

    #[test]
    fn leader_change_is_persisted_stats_are_not() {
        let mut table = RegionTable::default();
        put(&mut table, region(1, "", "", 1, 1)).unwrap();
        let mut same = region(1, "", "", 1, 1);
        same.stats.approximate_size = 99;
        assert!(!table.plan(same).unwrap().persist);
        let mut moved = region(1, "", "", 1, 1);
        moved.meta.peers.push(metapb::Peer {
            id: 7,
            store_id: 2,
            ..Default::default()
        });
        moved.leader = Some(moved.meta.peers[1]);
        assert!(table.plan(moved).unwrap().persist);
    }

    #[test]
    fn invalid_regions_are_rejected() {
        let table = RegionTable::default();
        let mut bad = region(1, "b", "a", 1, 1);
        assert!(table.plan(bad.clone()).is_err());
        bad = region(0, "", "", 1, 1);
        assert!(table.plan(bad.clone()).is_err());
        bad = region(1, "", "", 1, 1);
        bad.meta.region_epoch = None;
        assert!(table.plan(bad.clone()).is_err());
        bad = region(1, "", "", 1, 1);
        bad.meta.peers.clear();
        assert!(table.plan(bad).is_err());
    }

    #[test]
    fn counts_per_store() {
        let mut table = RegionTable::default();
        let mut r1 = region(1, "", "m", 1, 1);
        r1.meta.peers.push(metapb::Peer {
            id: 101,
            store_id: 2,
            ..Default::default()
        });
        r1.stats.approximate_size = 10;
        put(&mut table, r1).unwrap();
        put(&mut table, region(2, "m", "", 1, 1)).unwrap();
        let counts = table.store_counts();
        let s1 = counts.get(&1).copied().unwrap_or_default();
        let s2 = counts.get(&2).copied().unwrap_or_default();
        assert_eq!(
            (s1.region_count, s1.leader_count, s1.region_size),
            (2, 2, 10)
        );
        assert_eq!((s2.region_count, s2.leader_count), (1, 0));
    }
}
