//! Splitting Regions: by size or key count (checked periodically on every
//! Region this store leads), or on request (SplitRegion RPC, keyspace
//! boundaries). Placement allocates the ids (AskBatchSplit), the split goes
//! through the Region's Raft log so every replica splits at the same point,
//! then placement learns the result (ReportBatchSplit).

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use shale_proto::metapb;
use tokio::sync::watch;

use super::router::Router;
use super::types::{CommandResult, Epoch, RegionCommand, SplitTarget};
use crate::engine::{CfName, EngineIterator, Snapshot};
use crate::pd_client::PdClient;

#[derive(Debug, Clone)]
pub struct SplitConfig {
    /// Split a Region holding more than this many keys.
    pub max_keys: u64,
    /// Split a Region holding more than this many bytes.
    pub max_bytes: u64,
    pub check_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum SplitFailed {
    #[error("region {0} is not on this store")]
    NotFound(u64),
    #[error("this store does not lead region {0}")]
    NotLeader(u64),
    #[error("no split key strictly inside region {0}")]
    NoKeys(u64),
    #[error("placement: {0}")]
    Pd(#[from] crate::pd_client::PdError),
    #[error("region {region_id} changed during the split")]
    EpochChanged { region_id: u64 },
    #[error("proposing the split: {0}")]
    Propose(String),
}

/// How long a split waits for its Raft entry to apply.
const SPLIT_TIMEOUT: Duration = Duration::from_secs(10);

fn inside(region: &metapb::Region, key: &[u8]) -> bool {
    key > region.start_key.as_slice()
        && (region.end_key.is_empty() || key < region.end_key.as_slice())
}

/// Splits `region_id` at `keys` (Region-space keys); returns every Region
/// the split produced (the original, shrunk, last).
pub async fn split_region<P: PdClient>(
    router: &Router,
    pd: &P,
    region_id: u64,
    mut keys: Vec<Vec<u8>>,
) -> Result<Vec<metapb::Region>, SplitFailed> {
    let peer = router
        .peer(region_id)
        .ok_or(SplitFailed::NotFound(region_id))?;
    if !peer.is_leader() {
        return Err(SplitFailed::NotLeader(region_id));
    }
    let region = peer.region();
    keys.retain(|k| inside(&region, k));
    keys.sort();
    keys.dedup();
    if keys.is_empty() {
        return Err(SplitFailed::NoKeys(region_id));
    }
    let ids = pd
        .ask_batch_split(region.clone(), keys.len() as u32)
        .await?;
    let targets = ids
        .into_iter()
        .map(|id| SplitTarget {
            new_region_id: id.new_region_id,
            new_peer_ids: id.new_peer_ids,
        })
        .collect();
    let epoch = region.region_epoch.unwrap_or_default();
    let command = RegionCommand::Split {
        epoch: Epoch {
            conf_ver: epoch.conf_ver,
            version: epoch.version,
        },
        keys,
        targets,
    };
    // A split holds no latches, and one that applies late is checked
    // against the epoch like any other: waiting for it can be bounded.
    let proposed = tokio::time::timeout(SPLIT_TIMEOUT, peer.propose(command)).await;
    let current = match proposed {
        Ok(Ok(CommandResult::EpochChanged { current })) => current,
        Ok(Ok(_)) => return Err(SplitFailed::EpochChanged { region_id }),
        Ok(Err(e)) => return Err(SplitFailed::Propose(e.to_string())),
        Err(_) => {
            return Err(SplitFailed::Propose(format!(
                "not applied within {SPLIT_TIMEOUT:?}"
            )))
        }
    };
    let regions: Vec<metapb::Region> = current
        .iter()
        .filter_map(|b| metapb::Region::decode(b.as_slice()).ok())
        .collect();
    if regions.len() < 2 {
        return Err(SplitFailed::EpochChanged { region_id });
    }
    // Placement routes clients to the new Regions' leaders here as soon as
    // it has the report: start their replicas first, or those clients would
    // be told the Region does not exist.
    wait_for_replicas(router, &regions).await;
    pd.report_batch_split(regions.clone()).await?;
    tracing::info!(region_id, parts = regions.len(), "region split");
    Ok(regions)
}

/// Waits (bounded) until this store runs a replica of every Region in
/// `regions`; the split's apply starts them in the background.
async fn wait_for_replicas(router: &Router, regions: &[metapb::Region]) {
    const PATIENCE: Duration = Duration::from_secs(5);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while regions.iter().any(|r| router.peer(r.id).is_none()) {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!("split regions not started here after {PATIENCE:?}; reporting anyway");
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Splits Regions on request (the SplitRegion RPC), hiding placement's
/// client type from the gRPC service.
pub trait Splitter: Send + Sync + 'static {
    fn split(
        &self,
        region_id: u64,
        keys: Vec<Vec<u8>>,
    ) -> futures::future::BoxFuture<'static, Result<Vec<metapb::Region>, SplitFailed>>;
}

/// The store's splitter: its Regions, and placement for the ids.
pub struct RouterSplitter<P> {
    pub router: Arc<Router>,
    pub pd: Arc<P>,
}

impl<P: PdClient> Splitter for RouterSplitter<P> {
    fn split(
        &self,
        region_id: u64,
        keys: Vec<Vec<u8>>,
    ) -> futures::future::BoxFuture<'static, Result<Vec<metapb::Region>, SplitFailed>> {
        let (router, pd) = (self.router.clone(), self.pd.clone());
        Box::pin(async move { split_region(&router, &*pd, region_id, keys).await })
    }
}

/// Where to split `region` so that both halves hold about the same number
/// of keys, if it holds more than `max_keys` keys or `max_bytes` bytes.
/// Transactional data is counted by user key (write column family); a
/// Region without any is counted by raw keys.
pub fn find_split_key<S: Snapshot>(
    snap: &S,
    region: &metapb::Region,
    max_keys: u64,
    max_bytes: u64,
) -> Option<Vec<u8>> {
    let upper = (!region.end_key.is_empty()).then_some(region.end_key.as_slice());
    for (cf, strip_ts) in [(CfName::Write, true), (CfName::Default, false)] {
        let mut it = snap.iter_cf(cf, Some(&region.start_key), upper).ok()?;
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let mut bytes = 0u64;
        let mut valid = it.seek_to_first().ok()?;
        while valid {
            let key = it.key();
            let user_key = if strip_ts && key.len() > 8 {
                &key[..key.len() - 8]
            } else {
                key
            };
            bytes += (key.len() + it.value().len()) as u64;
            if keys.last().map(Vec::as_slice) != Some(user_key) {
                keys.push(user_key.to_vec());
            }
            valid = it.next().ok()?;
        }
        if keys.is_empty() {
            continue;
        }
        if (keys.len() as u64) <= max_keys && bytes <= max_bytes {
            return None;
        }
        let middle = keys.get(keys.len() / 2)?.clone();
        return inside(region, &middle).then_some(middle);
    }
    None
}

/// Periodically splits the Regions this store leads that grew too big.
pub async fn run_split_checker<P: PdClient>(
    router: Arc<Router>,
    pd: Arc<P>,
    config: SplitConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(config.check_interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        for peer in router.peers() {
            if !peer.is_leader() {
                continue;
            }
            let region = peer.region();
            let snap = router.context().engine.snapshot();
            let (max_keys, max_bytes) = (config.max_keys, config.max_bytes);
            let found = tokio::task::spawn_blocking(move || {
                find_split_key(&snap, &region, max_keys, max_bytes)
            })
            .await
            .ok()
            .flatten();
            let Some(key) = found else {
                continue;
            };
            if let Err(e) = split_region(&router, &*pd, peer.region_id, vec![key]).await {
                tracing::debug!(region_id = peer.region_id, "size split not done: {e}");
            }
        }
    }
}
