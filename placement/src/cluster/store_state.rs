//! Store lifecycle, as in PD: `Up` -> `Offline` (being removed; its Regions
//! move away) -> `Tombstone` (removed for good) once no Region has a peer
//! on it. An `Offline` store can be brought back `Up`; a `Tombstone` one
//! never comes back (its PutStore and StoreHeartbeat are refused).
//!
//! The state is part of the persisted `metapb::Store` record (`state` and
//! the matching `node_state`), so it survives restarts and leader changes.

use shale_proto::metapb::{self, NodeState, StoreState};

use super::stores::StoreRegistry;
use super::Cluster;
use crate::meta::{schema, MetaError};

#[derive(Debug, thiserror::Error)]
pub enum StoreStateError {
    #[error("cluster is not bootstrapped")]
    NotBootstrapped,
    #[error("store {0} not found")]
    NotFound(u64),
    #[error("store {0} has been removed (Tombstone)")]
    Tombstone(u64),
    #[error(
        "cannot remove store {store_id}: only {remaining} Up stores would remain, \
         fewer than max-replicas {max_replicas}"
    )]
    TooFewStores {
        store_id: u64,
        remaining: usize,
        max_replicas: u32,
    },
    #[error(
        "store {store_id} still holds {peers} Region peers; it becomes Tombstone \
         by itself once they have moved away"
    )]
    HasPeers { store_id: u64, peers: u64 },
    #[error("store {0} is Up; remove it first (DELETE /store/{0} makes it Offline)")]
    IsUp(u64),
    #[error("metadata store: {0}")]
    Meta(#[from] MetaError),
}

pub type StoreStateResult<T> = Result<T, StoreStateError>;

/// The `node_state` PD pairs with each store state.
pub fn node_state_for(state: StoreState) -> NodeState {
    match state {
        StoreState::Up => NodeState::Serving,
        StoreState::Offline => NodeState::Removing,
        StoreState::Tombstone => NodeState::Removed,
    }
}

/// A store's lifecycle state; unknown numbers read as `Up`, as prost does.
pub fn store_state(store: &metapb::Store) -> StoreState {
    StoreState::try_from(store.state).unwrap_or(StoreState::Up)
}

/// Decides moving store `id` to `target`. `Ok(None)`: it already is there
/// (every transition is idempotent). `peers` is how many Region peers the
/// store holds now.
pub fn plan_transition(
    registry: &StoreRegistry,
    id: u64,
    target: StoreState,
    peers: u64,
    max_replicas: u32,
) -> StoreStateResult<Option<metapb::Store>> {
    let store = registry.get(id).ok_or(StoreStateError::NotFound(id))?;
    let current = store_state(&store.meta);
    if current == target {
        return Ok(None);
    }
    match (current, target) {
        (StoreState::Tombstone, _) => return Err(StoreStateError::Tombstone(id)),
        (StoreState::Up, StoreState::Offline) => {
            let remaining = registry
                .iter()
                .filter(|s| s.meta.id != id && store_state(&s.meta) == StoreState::Up)
                .count();
            if remaining < max_replicas as usize {
                return Err(StoreStateError::TooFewStores {
                    store_id: id,
                    remaining,
                    max_replicas,
                });
            }
        }
        (StoreState::Up, StoreState::Tombstone) => return Err(StoreStateError::IsUp(id)),
        (StoreState::Offline, StoreState::Tombstone) if peers > 0 => {
            return Err(StoreStateError::HasPeers {
                store_id: id,
                peers,
            });
        }
        _ => {}
    }
    let mut record = store.meta.clone();
    record.state = target as i32;
    record.node_state = node_state_for(target) as i32;
    Ok(Some(record))
}

impl Cluster {
    /// Moves store `id` to `target` (see [`plan_transition`]); true when the
    /// state changed.
    pub async fn set_store_state(&self, id: u64, target: StoreState) -> StoreStateResult<bool> {
        let _writer = self.writer.lock().await;
        let record = {
            let state = self.state.read();
            if state.cluster.is_none() {
                return Err(StoreStateError::NotBootstrapped);
            }
            let peers = state
                .regions
                .store_counts()
                .get(&id)
                .map_or(0, |c| c.region_count);
            plan_transition(&state.stores, id, target, peers, self.max_peer_count)?
        };
        let Some(record) = record else {
            return Ok(false);
        };
        self.meta.write(vec![schema::put_store(&record)]).await?;
        let now = self.clock.now_ms();
        self.state.write().stores.upsert(record, now);
        tracing::info!(
            store_id = id,
            state = target.as_str_name(),
            "store state changed"
        );
        Ok(true)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn registry(states: &[(u64, StoreState)]) -> StoreRegistry {
        let mut registry = StoreRegistry::default();
        for (id, state) in states {
            registry.upsert(
                metapb::Store {
                    id: *id,
                    address: format!("s{id}:1"),
                    state: *state as i32,
                    ..Default::default()
                },
                0,
            );
        }
        registry
    }

    use StoreState::{Offline, Tombstone, Up};

    #[test]
    fn removal_keeps_enough_up_stores() {
        let r = registry(&[(1, Up), (2, Up), (3, Up), (4, Up)]);
        let record = plan_transition(&r, 4, Offline, 5, 3).unwrap().unwrap();
        assert_eq!(record.state, Offline as i32);
        assert_eq!(record.node_state, NodeState::Removing as i32);
        let r = registry(&[(1, Up), (2, Up), (3, Up), (4, Offline)]);
        assert!(matches!(
            plan_transition(&r, 3, Offline, 5, 3),
            Err(StoreStateError::TooFewStores { remaining: 2, .. })
        ));
        // Already Offline: nothing to do, no error.
        assert!(plan_transition(&r, 4, Offline, 5, 3).unwrap().is_none());
        assert!(matches!(
            plan_transition(&r, 9, Offline, 0, 3),
            Err(StoreStateError::NotFound(9))
        ));
    }

    #[test]
    fn tombstone_needs_offline_and_no_peers_and_is_final() {
        let r = registry(&[(1, Up), (2, Offline), (3, Tombstone)]);
        assert!(matches!(
            plan_transition(&r, 1, Tombstone, 0, 1),
            Err(StoreStateError::IsUp(1))
        ));
        assert!(matches!(
            plan_transition(&r, 2, Tombstone, 2, 1),
            Err(StoreStateError::HasPeers { peers: 2, .. })
        ));
        let record = plan_transition(&r, 2, Tombstone, 0, 1).unwrap().unwrap();
        assert_eq!(record.node_state, NodeState::Removed as i32);
        assert!(plan_transition(&r, 3, Tombstone, 0, 1).unwrap().is_none());
        for target in [Up, Offline] {
            assert!(matches!(
                plan_transition(&r, 3, target, 0, 1),
                Err(StoreStateError::Tombstone(3))
            ));
        }
    }

    #[test]
    fn offline_store_can_come_back_up() {
        let r = registry(&[(1, Up), (2, Offline)]);
        let record = plan_transition(&r, 2, Up, 3, 3).unwrap().unwrap();
        assert_eq!(record.state, Up as i32);
        assert_eq!(record.node_state, NodeState::Serving as i32);
        assert!(plan_transition(&r, 1, Up, 3, 3).unwrap().is_none());
    }
}
