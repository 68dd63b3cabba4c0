//! Registered stores (storage nodes), their latest statistics and liveness.

use std::collections::BTreeMap;

use shale_proto::{metapb, pdpb};

use super::error::{PdError, PdResult};
use super::Cluster;
use crate::meta::schema;

#[derive(Debug, Clone, PartialEq)]
pub struct StoreInfo {
    pub meta: metapb::Store,
    /// Statistics from the latest store heartbeat.
    pub stats: Option<pdpb::StoreStats>,
    /// Unix ms of the latest heartbeat, or of registration / placement start
    /// when the store has not heartbeated since.
    pub last_heartbeat_ms: u64,
}

impl StoreInfo {
    pub fn is_tombstone(&self) -> bool {
        self.meta.state == metapb::StoreState::Tombstone as i32
    }
}

#[derive(Debug, Default)]
pub struct StoreRegistry {
    stores: BTreeMap<u64, StoreInfo>,
}

impl StoreRegistry {
    pub fn get(&self, id: u64) -> Option<&StoreInfo> {
        self.stores.get(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &StoreInfo> {
        self.stores.values()
    }

    pub fn len(&self) -> usize {
        self.stores.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stores.is_empty()
    }

    /// Inserts or replaces a store's metadata, keeping its statistics.
    pub fn upsert(&mut self, meta: metapb::Store, now_ms: u64) {
        match self.stores.get_mut(&meta.id) {
            Some(existing) => existing.meta = meta,
            None => {
                self.stores.insert(
                    meta.id,
                    StoreInfo {
                        meta,
                        stats: None,
                        last_heartbeat_ms: now_ms,
                    },
                );
            }
        }
    }

    /// Checks a PutStore request and returns the record to persist.
    pub fn prepare_put(&self, mut store: metapb::Store) -> PdResult<metapb::Store> {
        if store.id == 0 {
            return Err(PdError::InvalidValue("invalid zero store id".into()));
        }
        if store.address.is_empty() {
            return Err(PdError::InvalidValue(format!(
                "store {}: missing address",
                store.id
            )));
        }
        if store.state == metapb::StoreState::Tombstone as i32 {
            return Err(PdError::StoreTombstone(store.id));
        }
        if let Some(other) = self
            .stores
            .values()
            .find(|s| s.meta.id != store.id && !s.is_tombstone() && s.meta.address == store.address)
        {
            return Err(PdError::Other(format!(
                "duplicated store address: {}, already registered by store {}",
                store.address, other.meta.id
            )));
        }
        match self.stores.get(&store.id) {
            Some(existing) if existing.is_tombstone() => {
                return Err(PdError::StoreTombstone(store.id));
            }
            // The store reports what it is; placement owns its lifecycle state.
            Some(existing) => {
                store.state = existing.meta.state;
                store.node_state = existing.meta.node_state;
                store.last_heartbeat = existing.meta.last_heartbeat;
            }
            None => {
                store.state = metapb::StoreState::Up as i32;
                store.node_state = metapb::NodeState::Serving as i32;
            }
        }
        Ok(store)
    }

    /// Errors unless `id` is a registered, non-tombstone store.
    pub fn check_alive(&self, id: u64) -> PdResult<()> {
        match self.stores.get(&id) {
            None => Err(PdError::Other(format!("invalid store ID {id}, not found"))),
            Some(store) if store.is_tombstone() => Err(PdError::StoreTombstone(id)),
            Some(_) => Ok(()),
        }
    }

    pub fn heartbeat(&mut self, stats: pdpb::StoreStats, now_ms: u64) -> PdResult<()> {
        self.check_alive(stats.store_id)?;
        if let Some(store) = self.stores.get_mut(&stats.store_id) {
            store.last_heartbeat_ms = now_ms;
            store.meta.last_heartbeat =
                i64::try_from(now_ms.saturating_mul(1_000_000)).unwrap_or(i64::MAX);
            store.stats = Some(stats);
        }
        Ok(())
    }
}

impl Cluster {
    pub async fn put_store(&self, store: Option<metapb::Store>) -> PdResult<()> {
        self.ensure_bootstrapped()?;
        let store = store.ok_or_else(|| PdError::InvalidValue("missing store".into()))?;
        let _writer = self.writer.lock().await;
        let record = self.state.read().stores.prepare_put(store)?;
        self.meta.write(vec![schema::put_store(&record)]).await?;
        let now = self.clock.now_ms();
        self.state.write().stores.upsert(record, now);
        Ok(())
    }

    pub fn get_store(&self, id: u64) -> PdResult<StoreInfo> {
        let state = self.bootstrapped_state()?;
        state
            .stores
            .get(id)
            .cloned()
            .ok_or_else(|| PdError::Other(format!("invalid store ID {id}, not found")))
    }

    pub fn all_stores(&self, exclude_tombstone: bool) -> PdResult<Vec<StoreInfo>> {
        let state = self.bootstrapped_state()?;
        Ok(state
            .stores
            .iter()
            .filter(|s| !(exclude_tombstone && s.is_tombstone()))
            .cloned()
            .collect())
    }

    /// Stores for the HTTP API: empty before bootstrap instead of an error.
    pub fn stores_snapshot(&self) -> Vec<StoreInfo> {
        self.state.read().stores.iter().cloned().collect()
    }

    pub fn store_heartbeat(&self, stats: Option<pdpb::StoreStats>) -> PdResult<()> {
        self.ensure_bootstrapped()?;
        let stats = stats.ok_or_else(|| PdError::InvalidValue("missing store stats".into()))?;
        let now = self.clock.now_ms();
        self.state.write().stores.heartbeat(stats, now)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn store(id: u64, address: &str) -> metapb::Store {
        metapb::Store {
            id,
            address: address.into(),
            ..Default::default()
        }
    }

    fn put(registry: &mut StoreRegistry, s: metapb::Store) -> PdResult<()> {
        let record = registry.prepare_put(s)?;
        registry.upsert(record, 1);
        Ok(())
    }

    #[test]
    fn rejects_zero_id_and_missing_address() {
        let registry = StoreRegistry::default();
        assert!(matches!(
            registry.prepare_put(store(0, "a:1")),
            Err(PdError::InvalidValue(_))
        ));
        assert!(registry.prepare_put(store(1, "")).is_err());
    }

    #[test]
    fn rejects_duplicate_address_of_live_store() {
        let mut registry = StoreRegistry::default();
        put(&mut registry, store(1, "a:1")).unwrap();
        assert!(matches!(
            registry.prepare_put(store(2, "a:1")),
            Err(PdError::Other(_))
        ));
        // The same store may re-register with the same address.
        put(&mut registry, store(1, "a:1")).unwrap();
    }

    #[test]
    fn tombstones_stay_removed_and_free_their_address() {
        let mut registry = StoreRegistry::default();
        put(&mut registry, store(1, "a:1")).unwrap();
        let mut tomb = registry.get(1).unwrap().meta.clone();
        tomb.state = metapb::StoreState::Tombstone as i32;
        registry.upsert(tomb, 2);
        assert!(matches!(
            registry.prepare_put(store(1, "a:1")),
            Err(PdError::StoreTombstone(1))
        ));
        put(&mut registry, store(2, "a:1")).unwrap();
        let mut incoming_tomb = store(3, "b:1");
        incoming_tomb.state = metapb::StoreState::Tombstone as i32;
        assert!(matches!(
            registry.prepare_put(incoming_tomb),
            Err(PdError::StoreTombstone(3))
        ));
        assert!(matches!(
            registry.heartbeat(
                pdpb::StoreStats {
                    store_id: 1,
                    ..Default::default()
                },
                5
            ),
            Err(PdError::StoreTombstone(1))
        ));
    }

    #[test]
    fn placement_keeps_lifecycle_state() {
        let mut registry = StoreRegistry::default();
        put(&mut registry, store(1, "a:1")).unwrap();
        let mut offline = registry.get(1).unwrap().meta.clone();
        offline.state = metapb::StoreState::Offline as i32;
        registry.upsert(offline, 2);
        // The store says "Up" again; it stays Offline.
        let record = registry.prepare_put(store(1, "a:2")).unwrap();
        assert_eq!(record.state, metapb::StoreState::Offline as i32);
        assert_eq!(record.address, "a:2");
    }

    #[test]
    fn heartbeat_records_stats_and_time() {
        let mut registry = StoreRegistry::default();
        put(&mut registry, store(1, "a:1")).unwrap();
        let stats = pdpb::StoreStats {
            store_id: 1,
            capacity: 100,
            available: 40,
            ..Default::default()
        };
        registry.heartbeat(stats.clone(), 42).unwrap();
        let info = registry.get(1).unwrap();
        assert_eq!(info.stats.as_ref(), Some(&stats));
        assert_eq!(info.last_heartbeat_ms, 42);
        assert!(registry
            .heartbeat(
                pdpb::StoreStats {
                    store_id: 9,
                    ..Default::default()
                },
                1
            )
            .is_err());
    }
}
