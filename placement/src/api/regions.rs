//! `/regions` and `/region/id/{id}`, shaped like PD's `RegionInfo` JSON.

use axum::extract::Path;
use axum::Json;
use serde::Serialize;
use shale_proto::metapb;

use super::format::hex_upper;
use super::{parse_id, ApiError, Leader};
use crate::cluster::regions::RegionInfo;

#[derive(Debug, Serialize)]
pub struct PeerJson {
    pub id: u64,
    pub store_id: u64,
    pub role_name: &'static str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub is_learner: bool,
}

impl From<&metapb::Peer> for PeerJson {
    fn from(peer: &metapb::Peer) -> Self {
        let role = metapb::PeerRole::try_from(peer.role).unwrap_or(metapb::PeerRole::Voter);
        PeerJson {
            id: peer.id,
            store_id: peer.store_id,
            role_name: role.as_str_name(),
            is_learner: role == metapb::PeerRole::Learner,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct EpochJson {
    pub conf_ver: u64,
    pub version: u64,
}

#[derive(Debug, Serialize)]
pub struct DownPeerJson {
    pub peer: PeerJson,
    pub down_seconds: u64,
}

#[derive(Debug, Serialize)]
pub struct RegionJson {
    pub id: u64,
    pub start_key: String,
    pub end_key: String,
    pub epoch: EpochJson,
    pub peers: Vec<PeerJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<PeerJson>,
    pub down_peers: Vec<DownPeerJson>,
    pub pending_peers: Vec<PeerJson>,
    pub cpu_usage: u64,
    pub written_bytes: u64,
    pub read_bytes: u64,
    pub written_keys: u64,
    pub read_keys: u64,
    /// MiB, as reported by the storage node.
    pub approximate_size: u64,
    pub approximate_keys: u64,
    pub approximate_kv_size: u64,
}

impl From<&RegionInfo> for RegionJson {
    fn from(region: &RegionInfo) -> Self {
        let epoch = region.epoch();
        RegionJson {
            id: region.meta.id,
            start_key: hex_upper(&region.meta.start_key),
            end_key: hex_upper(&region.meta.end_key),
            epoch: EpochJson {
                conf_ver: epoch.conf_ver,
                version: epoch.version,
            },
            peers: region.meta.peers.iter().map(PeerJson::from).collect(),
            leader: region.leader.as_ref().map(PeerJson::from),
            down_peers: region
                .down_peers
                .iter()
                .filter_map(|d| {
                    Some(DownPeerJson {
                        peer: PeerJson::from(d.peer.as_ref()?),
                        down_seconds: d.down_seconds,
                    })
                })
                .collect(),
            pending_peers: region.pending_peers.iter().map(PeerJson::from).collect(),
            cpu_usage: region.stats.cpu_usage,
            written_bytes: region.stats.written_bytes,
            read_bytes: region.stats.read_bytes,
            written_keys: region.stats.written_keys,
            read_keys: region.stats.read_keys,
            approximate_size: region.stats.approximate_size,
            approximate_keys: region.stats.approximate_keys,
            approximate_kv_size: region.stats.approximate_kv_size,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct RegionsJson {
    pub count: usize,
    pub regions: Vec<RegionJson>,
}

pub async fn list(Leader(leader): Leader) -> Json<RegionsJson> {
    let regions: Vec<RegionJson> = leader
        .cluster
        .all_regions()
        .iter()
        .map(RegionJson::from)
        .collect();
    Json(RegionsJson {
        count: regions.len(),
        regions,
    })
}

pub async fn by_id(
    Leader(leader): Leader,
    Path(id): Path<String>,
) -> Result<Json<RegionJson>, ApiError> {
    let id = parse_id("region", &id)?;
    let region = leader
        .cluster
        .region_by_id(id)
        .ok()
        .flatten()
        .ok_or_else(|| ApiError::not_found(format!("region {id} not found")))?;
    Ok(Json(RegionJson::from(&region)))
}
