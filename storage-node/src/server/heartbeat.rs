//! Reports to placement: store statistics, and one heartbeat per Region this
//! store leads, periodically and as soon as a scheduling command changed one.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shale_proto::pdpb;
use tokio::sync::watch;

use crate::engine::RocksEngine;
use crate::pd_client::PdClient;
use crate::raftstore::Router;
use crate::region::RegionRegistry;

pub struct Heartbeats<P> {
    pub router: Arc<Router>,
    pub pd: Arc<P>,
    pub regions: RegionRegistry,
    pub rocks: RocksEngine,
    pub data_dir: std::path::PathBuf,
    pub interval: Duration,
    pub started: SystemTime,
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl<P: PdClient> Heartbeats<P> {
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.interval);
        let changed = &self.router.context().changed_regions;
        loop {
            // `None`: every Region led here.
            let which = tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = self.report_store().await {
                        tracing::warn!("store heartbeat failed: {e}");
                    }
                    None
                }
                ids = changed.take() => Some(ids),
                _ = shutdown.changed() => return,
            };
            self.report_regions(which.as_ref()).await;
        }
    }

    async fn report_store(&self) -> Result<(), crate::pd_client::PdError> {
        let now = SystemTime::now();
        let (capacity, available) = disk_space(&self.data_dir);
        let region_count = self.regions.ids().len() as u32;
        let stats = pdpb::StoreStats {
            store_id: self.regions.store_id(),
            capacity,
            available,
            used_size: self.rocks.approximate_size(),
            region_count,
            start_time: unix_secs(self.started) as u32,
            is_busy: false,
            interval: Some(pdpb::TimeInterval {
                start_timestamp: unix_secs(now).saturating_sub(self.interval.as_secs()),
                end_timestamp: unix_secs(now),
            }),
            ..Default::default()
        };
        self.pd.store_heartbeat(stats).await.map(|_| ())
    }

    /// Heartbeats the Regions led here (`only` those, if given); one that
    /// fails does not stop the others.
    async fn report_regions(&self, only: Option<&std::collections::BTreeSet<u64>>) {
        for peer in self.router.peers() {
            if !peer.is_leader() || only.is_some_and(|ids| !ids.contains(&peer.region_id)) {
                continue;
            }
            let region = peer.region();
            let leader = region.peers.iter().find(|p| p.id == peer.peer_id).cloned();
            let req = pdpb::RegionHeartbeatRequest {
                region: Some(region),
                leader,
                term: peer.term(),
                ..Default::default()
            };
            if let Err(e) = self.pd.region_heartbeat(req).await {
                tracing::warn!(region_id = peer.region_id, "region heartbeat failed: {e}");
            }
        }
    }
}

/// Total and free bytes of the filesystem holding `path` (0, 0 if unknown).
fn disk_space(path: &std::path::Path) -> (u64, u64) {
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return (0, 0);
    };
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `statvfs` writes into the buffer we own; the path is NUL-terminated.
    if unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return (0, 0);
    }
    // SAFETY: statvfs returned 0, so it initialised the struct.
    let s = unsafe { stat.assume_init() };
    let frag = s.f_frsize;
    (s.f_blocks * frag, s.f_bavail * frag)
}

#[cfg(test)]
mod tests {
    #[test]
    fn disk_space_of_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        let (total, free) = super::disk_space(dir.path());
        assert!(total > 0 && free <= total, "total {total} free {free}");
        assert_eq!(
            super::disk_space(std::path::Path::new("/nonexistent/x")),
            (0, 0)
        );
    }
}
