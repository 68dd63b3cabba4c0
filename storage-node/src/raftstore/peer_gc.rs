//! Collecting replicas that were removed without learning it.
//!
//! openraft stops replicating to a peer as soon as the leader appends the
//! membership without it, so a removed replica never applies its own
//! removal: it simply stops hearing from any leader, keeps its data, and
//! keeps its range claimed on this store (refusing newer replicas that
//! overlap it). A replica silent for long enough asks placement; if the
//! Region has moved past it there (a newer conf_ver without this peer), the
//! replica is destroyed.

use std::sync::Arc;
use std::time::Duration;

use shale_proto::metapb;
use tokio::sync::watch;

use super::router::Router;
use crate::pd_client::PdClient;

/// Whether placement's `current` view of a Region shows that this store's
/// replica `peer_id`, which knows the Region as `local`, was removed.
pub fn removed_from(local: &metapb::Region, peer_id: u64, current: &metapb::Region) -> bool {
    let (Some(local_epoch), Some(epoch)) = (local.region_epoch, current.region_epoch) else {
        return false;
    };
    epoch.conf_ver > local_epoch.conf_ver && current.peers.iter().all(|p| p.id != peer_id)
}

pub struct PeerGc<P> {
    pub router: Arc<Router>,
    pub pd: Arc<P>,
    /// How long a replica must hear from no leader before placement is asked.
    pub silence: Duration,
}

impl<P: PdClient> PeerGc<P> {
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.silence / 2);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            self.collect().await;
        }
    }

    async fn collect(&self) {
        for peer in self.router.peers() {
            if peer.silent_for() < self.silence || peer.is_leader() {
                continue;
            }
            let current = match self.pd.get_region_by_id(peer.region_id).await {
                Ok(Some(current)) => current,
                Ok(None) => continue,
                Err(e) => {
                    tracing::debug!(region_id = peer.region_id, "cannot ask placement: {e}");
                    return;
                }
            };
            if !removed_from(&peer.region(), peer.peer_id, &current) {
                continue;
            }
            tracing::info!(
                region_id = peer.region_id,
                peer_id = peer.peer_id,
                "replica was removed from the region; destroying it"
            );
            if let Err(e) = self
                .router
                .destroy_stale(peer.region_id, peer.peer_id)
                .await
            {
                tracing::error!(
                    region_id = peer.region_id,
                    "cannot destroy removed replica: {e}"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(conf_ver: u64, peers: &[u64]) -> metapb::Region {
        metapb::Region {
            id: 7,
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver,
                version: 1,
            }),
            peers: peers
                .iter()
                .map(|&id| metapb::Peer {
                    id,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn only_a_newer_membership_without_the_peer_means_removal() {
        let local = region(3, &[1, 2, 3]);
        assert!(removed_from(&local, 3, &region(5, &[1, 2, 4])));
        // Still a member, or placement has not caught up: keep it.
        assert!(!removed_from(&local, 3, &region(5, &[1, 3, 4])));
        assert!(!removed_from(&local, 3, &region(3, &[1, 2])));
        assert!(!removed_from(&local, 3, &region(2, &[1, 2])));
        // A replica that knows nothing of its Region yet is left alone.
        let unknown = metapb::Region::default();
        assert!(!removed_from(&unknown, 3, &region(5, &[1, 2])));
    }
}
