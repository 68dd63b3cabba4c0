//! Region splits as driven by storage nodes: AskBatchSplit hands out ids for
//! the new regions and their peers; ReportBatchSplit tells placement the
//! result so routing is updated before the new regions' first heartbeats.

use shale_proto::{metapb, pdpb};

use super::error::{PdError, PdResult};
use super::regions::{validate_region, RegionInfo};
use super::Cluster;

/// Upper bound on `split_count` in one AskBatchSplit.
pub const MAX_SPLIT_COUNT: u32 = 4096;

impl Cluster {
    pub async fn ask_batch_split(
        &self,
        region: Option<&metapb::Region>,
        split_count: u32,
    ) -> PdResult<Vec<pdpb::SplitId>> {
        self.ensure_bootstrapped()?;
        let region =
            region.ok_or_else(|| PdError::InvalidValue("missing region for split".into()))?;
        if split_count == 0 || split_count > MAX_SPLIT_COUNT {
            return Err(PdError::InvalidValue(format!(
                "split_count must be in 1..={MAX_SPLIT_COUNT}, got {split_count}"
            )));
        }
        validate_region(region)?;
        {
            let state = self.state.read();
            let known = state
                .regions
                .get(region.id)
                .ok_or(PdError::RegionNotFound(region.id))?;
            let (epoch, known_epoch) = (region.region_epoch.unwrap_or_default(), known.epoch());
            if epoch.version < known_epoch.version || epoch.conf_ver < known_epoch.conf_ver {
                return Err(PdError::Other(format!(
                    "region {} epoch is stale, cannot split",
                    region.id
                )));
            }
        }
        let peers = region.peers.len();
        let mut ids = Vec::with_capacity(split_count as usize);
        for _ in 0..split_count {
            let mut batch = self.ids.alloc_many(1 + peers).await?;
            let new_peer_ids = batch.split_off(1);
            ids.push(pdpb::SplitId {
                new_region_id: batch[0],
                new_peer_ids,
            });
        }
        Ok(ids)
    }

    /// Applies the regions resulting from a split. New regions get the
    /// leader's store from the original region: TiKV campaigns the new
    /// regions on that store right after the split, and a wrong guess only
    /// costs the client one NotLeader retry until the next heartbeat.
    pub async fn report_batch_split(&self, regions: &[metapb::Region]) -> PdResult<()> {
        self.ensure_bootstrapped()?;
        if regions.len() < 2 {
            return Err(PdError::InvalidValue(format!(
                "a split reports at least 2 regions, got {}",
                regions.len()
            )));
        }
        for region in regions {
            validate_region(region)?;
        }
        for pair in regions.windows(2) {
            if pair[0].end_key != pair[1].start_key {
                return Err(PdError::InvalidValue(format!(
                    "split regions {} and {} are not adjacent",
                    pair[0].id, pair[1].id
                )));
            }
        }
        let _writer = self.writer.lock().await;
        let (leader_store, mut known, mut new) = {
            let state = self.state.read();
            let leader_store = regions
                .iter()
                .filter_map(|r| state.regions.get(r.id))
                .find_map(|r| r.leader.map(|l| l.store_id));
            let (known, new): (Vec<_>, Vec<_>) = regions
                .iter()
                .map(|r| {
                    let existing = state.regions.get(r.id);
                    let leader = existing
                        .and_then(|e| e.leader)
                        .filter(|l| r.peers.iter().any(|p| p.id == l.id))
                        .or_else(|| {
                            r.peers
                                .iter()
                                .find(|p| Some(p.store_id) == leader_store)
                                .copied()
                        });
                    let mut info = RegionInfo::new(r.clone(), leader);
                    if let Some(existing) = existing {
                        info.stats = existing.stats;
                    }
                    (existing.is_some(), info)
                })
                .partition(|(is_known, _)| *is_known);
            (leader_store, known, new)
        };
        tracing::info!(
            regions = regions.len(),
            leader_store = ?leader_store,
            "applying reported batch split"
        );
        // Every key stays routable: readers see the table before the split
        // or after it, never the shrunk original without the new regions
        // beside it (a client whose lookup finds no Region in that gap may
        // drop a write: tikv-client 0.4 does, see docs/DESIGN.md). So the
        // whole split is applied under one lock, then persisted in one
        // write. Region records are a routing cache that heartbeats
        // refresh, so a failed write costs at most a stale record.
        let mut ops = Vec::new();
        {
            let mut state = self.state.write();
            for (_, info) in known.drain(..).chain(new.drain(..)) {
                let id = info.meta.id;
                match state.regions.plan(info) {
                    Ok(update) => {
                        if update.persist {
                            ops.extend(super::regions::persist_ops(&update));
                        }
                        state.regions.apply(update);
                    }
                    // A heartbeat already brought something newer: keep that.
                    Err(PdError::Other(reason)) => {
                        tracing::debug!(region = id, %reason, "skipped stale split report entry")
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        if !ops.is_empty() {
            self.meta.write(ops).await?;
        }
        Ok(())
    }
}
