//! Key layout and typed records on top of [`MetaStore`].
//!
//! Records are protobuf (metapb / pdpb / keyspacepb messages) where a kvproto
//! type exists, big-endian u64 for counters, JSON for our own small structs.
//! Keys are readable ASCII; numeric ids are zero-padded so they sort.

use prost::Message;
use serde::{Deserialize, Serialize};
use shale_proto::{keyspacepb, metapb, pdpb};

use super::{MetaError, MetaOp, MetaResult, MetaStore};

pub const CLUSTER_ID: &[u8] = b"/cluster/id";
/// Present once the cluster has been bootstrapped: a `metapb::Cluster`.
pub const CLUSTER_META: &[u8] = b"/cluster/meta";
pub const ALLOC_ID_END: &[u8] = b"/alloc/id_end";
pub const TSO_UPPER_MS: &[u8] = b"/tso/upper_ms";
pub const GC_SAFE_POINT: &[u8] = b"/gc/safe_point";
pub const SERVICE_SAFE_POINT_PREFIX: &[u8] = b"/gc/service/";
pub const STORE_PREFIX: &[u8] = b"/stores/";
pub const REGION_PREFIX: &[u8] = b"/regions/";
pub const KEYSPACE_PREFIX: &[u8] = b"/keyspaces/";
/// The enabled schedulers (JSON, `schedule::schedulers::SchedulerSet`).
pub const SCHEDULERS: &[u8] = b"/schedule/schedulers";

fn id_key(prefix: &[u8], id: u64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{id:020}").as_bytes());
    key
}

pub fn store_key(id: u64) -> Vec<u8> {
    id_key(STORE_PREFIX, id)
}

pub fn region_key(id: u64) -> Vec<u8> {
    id_key(REGION_PREFIX, id)
}

pub fn keyspace_key(name: &str) -> Vec<u8> {
    let mut key = KEYSPACE_PREFIX.to_vec();
    key.extend_from_slice(name.as_bytes());
    key
}

/// Service ids are arbitrary bytes; hex keeps the key printable.
pub fn service_safe_point_key(service_id: &[u8]) -> Vec<u8> {
    let mut key = SERVICE_SAFE_POINT_PREFIX.to_vec();
    for b in service_id {
        key.extend_from_slice(format!("{b:02x}").as_bytes());
    }
    key
}

pub fn corrupt(key: &[u8], reason: impl ToString) -> MetaError {
    MetaError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.to_string(),
    }
}

// ---- u64 counters ----

pub fn put_u64(key: &[u8], value: u64) -> MetaOp {
    MetaOp::put(key, value.to_be_bytes().to_vec())
}

pub fn decode_u64(key: &[u8], bytes: &[u8]) -> MetaResult<u64> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| corrupt(key, format!("expected 8 bytes, got {}", bytes.len())))?;
    Ok(u64::from_be_bytes(array))
}

pub async fn load_u64(meta: &dyn MetaStore, key: &[u8]) -> MetaResult<Option<u64>> {
    match meta.get(key).await? {
        Some(bytes) => decode_u64(key, &bytes).map(Some),
        None => Ok(None),
    }
}

// ---- protobuf records ----

pub fn put_proto<M: Message>(key: Vec<u8>, message: &M) -> MetaOp {
    MetaOp::put(key, message.encode_to_vec())
}

pub async fn load_proto<M: Message + Default>(
    meta: &dyn MetaStore,
    key: &[u8],
) -> MetaResult<Option<M>> {
    match meta.get(key).await? {
        Some(bytes) => M::decode(bytes.as_slice())
            .map(Some)
            .map_err(|e| corrupt(key, e)),
        None => Ok(None),
    }
}

pub async fn load_protos<M: Message + Default>(
    meta: &dyn MetaStore,
    prefix: &[u8],
) -> MetaResult<Vec<M>> {
    meta.scan_prefix(prefix)
        .await?
        .into_iter()
        .map(|(key, value)| M::decode(value.as_slice()).map_err(|e| corrupt(&key, e)))
        .collect()
}

pub fn put_cluster_meta(cluster: &metapb::Cluster) -> MetaOp {
    put_proto(CLUSTER_META.to_vec(), cluster)
}

pub fn put_store(store: &metapb::Store) -> MetaOp {
    put_proto(store_key(store.id), store)
}

/// Regions are stored with their last known leader (a `pdpb::Region`), so
/// routing works right after a restart, before the first heartbeat.
pub fn put_region(region: &metapb::Region, leader: Option<&metapb::Peer>) -> MetaOp {
    let record = pdpb::Region {
        region: Some(region.clone()),
        leader: leader.cloned(),
        down_peers: Vec::new(),
        pending_peers: Vec::new(),
    };
    put_proto(region_key(region.id), &record)
}

pub fn delete_region(id: u64) -> MetaOp {
    MetaOp::delete(region_key(id))
}

pub fn put_keyspace(keyspace: &keyspacepb::KeyspaceMeta) -> MetaOp {
    put_proto(keyspace_key(&keyspace.name), keyspace)
}

// ---- service GC safe points (JSON) ----

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSafePoint {
    /// Raw service id bytes (usually UTF-8, e.g. "gc_worker").
    pub service_id: Vec<u8>,
    pub safe_point: u64,
    /// Unix seconds after which the entry no longer holds GC back.
    pub expire_at: i64,
}

pub fn put_service_safe_point(ssp: &ServiceSafePoint) -> MetaResult<MetaOp> {
    let key = service_safe_point_key(&ssp.service_id);
    let value = serde_json::to_vec(ssp).map_err(|e| corrupt(&key, e))?;
    Ok(MetaOp::put(key, value))
}

pub fn delete_service_safe_point(service_id: &[u8]) -> MetaOp {
    MetaOp::delete(service_safe_point_key(service_id))
}

pub async fn load_service_safe_points(meta: &dyn MetaStore) -> MetaResult<Vec<ServiceSafePoint>> {
    meta.scan_prefix(SERVICE_SAFE_POINT_PREFIX)
        .await?
        .into_iter()
        .map(|(key, value)| serde_json::from_slice(&value).map_err(|e| corrupt(&key, e)))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::meta::MemMetaStore;

    #[test]
    fn id_keys_sort_numerically() {
        assert!(store_key(9) < store_key(10));
        assert!(region_key(99) < region_key(100));
        assert!(region_key(1).starts_with(REGION_PREFIX));
    }

    #[tokio::test]
    async fn typed_round_trips() {
        let meta = MemMetaStore::new();
        let region = metapb::Region {
            id: 7,
            end_key: b"m".to_vec(),
            ..Default::default()
        };
        let leader = metapb::Peer {
            id: 8,
            store_id: 1,
            ..Default::default()
        };
        let ssp = ServiceSafePoint {
            service_id: b"gc_worker".to_vec(),
            safe_point: 42,
            expire_at: i64::MAX,
        };
        meta.write(vec![
            put_u64(GC_SAFE_POINT, 5),
            put_region(&region, Some(&leader)),
            put_service_safe_point(&ssp).unwrap(),
        ])
        .await
        .unwrap();
        assert_eq!(load_u64(&meta, GC_SAFE_POINT).await.unwrap(), Some(5));
        let regions: Vec<pdpb::Region> = load_protos(&meta, REGION_PREFIX).await.unwrap();
        assert_eq!(regions.len(), 1);
        assert_eq!(regions[0].region.as_ref(), Some(&region));
        assert_eq!(regions[0].leader.as_ref(), Some(&leader));
        assert_eq!(load_service_safe_points(&meta).await.unwrap(), vec![ssp]);
    }

    #[tokio::test]
    async fn corrupt_records_are_reported() {
        let meta = MemMetaStore::new();
        meta.write(vec![MetaOp::put(GC_SAFE_POINT, vec![1, 2, 3])])
            .await
            .unwrap();
        assert!(matches!(
            load_u64(&meta, GC_SAFE_POINT).await,
            Err(MetaError::Corrupt { .. })
        ));
    }
}
