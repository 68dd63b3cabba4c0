//! Which schedulers run, named as PD names them, persisted through the
//! replicated metadata so a new leader (or a restart) keeps them.
//!
//! `balance-leader-scheduler` and `balance-region-scheduler` run unless
//! removed; `evict-leader-scheduler-{store_id}` exists once per store whose
//! leaders are moved away (the name PD gave them before it merged them into
//! one scheduler, and what the Kubernetes operator looks for).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::meta::schema::{self, SCHEDULERS};
use crate::meta::{MetaError, MetaOp, MetaResult, MetaStore};

pub const BALANCE_LEADER: &str = "balance-leader-scheduler";
pub const BALANCE_REGION: &str = "balance-region-scheduler";
pub const EVICT_LEADER: &str = "evict-leader-scheduler";

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(
        "unknown scheduler {0:?}; supported: {BALANCE_LEADER}, {BALANCE_REGION}, \
         {EVICT_LEADER} (with store_id)"
    )]
    Unknown(String),
    #[error("{EVICT_LEADER} needs a store_id")]
    MissingStoreId,
    #[error("store_id {body} does not match the scheduler name's store {name}")]
    StoreIdMismatch { name: u64, body: u64 },
    #[error("store {0} not found")]
    StoreNotFound(u64),
    #[error("store {0} has been removed (Tombstone)")]
    StoreTombstone(u64),
    #[error("scheduler {0} already exists")]
    Exists(String),
    #[error("scheduler {0} not found")]
    NotFound(String),
    #[error("metadata store: {0}")]
    Meta(#[from] MetaError),
}

/// A scheduler as named in the HTTP API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerName {
    BalanceLeader,
    BalanceRegion,
    /// `evict-leader-scheduler` alone means every evicted store.
    EvictLeader(Option<u64>),
}

impl SchedulerName {
    pub fn parse(name: &str) -> Result<Self, SchedulerError> {
        match name {
            BALANCE_LEADER => Ok(SchedulerName::BalanceLeader),
            BALANCE_REGION => Ok(SchedulerName::BalanceRegion),
            EVICT_LEADER => Ok(SchedulerName::EvictLeader(None)),
            _ => name
                .strip_prefix(EVICT_LEADER)
                .and_then(|rest| rest.strip_prefix('-'))
                .and_then(|id| id.parse().ok())
                .map(|id| SchedulerName::EvictLeader(Some(id)))
                .ok_or_else(|| SchedulerError::Unknown(name.to_string())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct SchedulerSet {
    pub balance_leader: bool,
    pub balance_region: bool,
    pub evict_leader_stores: BTreeSet<u64>,
}

impl Default for SchedulerSet {
    fn default() -> Self {
        SchedulerSet {
            balance_leader: true,
            balance_region: true,
            evict_leader_stores: BTreeSet::new(),
        }
    }
}

impl SchedulerSet {
    pub fn names(&self) -> Vec<String> {
        let mut names = Vec::new();
        if self.balance_leader {
            names.push(BALANCE_LEADER.to_string());
        }
        if self.balance_region {
            names.push(BALANCE_REGION.to_string());
        }
        names.extend(
            self.evict_leader_stores
                .iter()
                .map(|id| format!("{EVICT_LEADER}-{id}")),
        );
        names
    }

    pub fn evicts(&self, store_id: u64) -> bool {
        self.evict_leader_stores.contains(&store_id)
    }

    /// The set with `name` added; `None` when it is already there. Adding
    /// a balance scheduler twice is an error (as in PD); evicting a store's
    /// leaders twice is not (PD adds the store to its existing scheduler).
    pub fn with_added(&self, name: SchedulerName) -> Result<Option<SchedulerSet>, SchedulerError> {
        let mut next = self.clone();
        match name {
            SchedulerName::BalanceLeader if self.balance_leader => {
                return Err(SchedulerError::Exists(BALANCE_LEADER.into()))
            }
            SchedulerName::BalanceRegion if self.balance_region => {
                return Err(SchedulerError::Exists(BALANCE_REGION.into()))
            }
            SchedulerName::BalanceLeader => next.balance_leader = true,
            SchedulerName::BalanceRegion => next.balance_region = true,
            SchedulerName::EvictLeader(None) => return Err(SchedulerError::MissingStoreId),
            SchedulerName::EvictLeader(Some(id)) => {
                if !next.evict_leader_stores.insert(id) {
                    return Ok(None);
                }
            }
        }
        Ok(Some(next))
    }

    pub fn with_removed(&self, name: SchedulerName) -> Result<SchedulerSet, SchedulerError> {
        let mut next = self.clone();
        let removed = match name {
            SchedulerName::BalanceLeader => std::mem::take(&mut next.balance_leader),
            SchedulerName::BalanceRegion => std::mem::take(&mut next.balance_region),
            SchedulerName::EvictLeader(None) => {
                !std::mem::take(&mut next.evict_leader_stores).is_empty()
            }
            SchedulerName::EvictLeader(Some(id)) => next.evict_leader_stores.remove(&id),
        };
        if !removed {
            let shown = match name {
                SchedulerName::BalanceLeader => BALANCE_LEADER.to_string(),
                SchedulerName::BalanceRegion => BALANCE_REGION.to_string(),
                SchedulerName::EvictLeader(None) => EVICT_LEADER.to_string(),
                SchedulerName::EvictLeader(Some(id)) => format!("{EVICT_LEADER}-{id}"),
            };
            return Err(SchedulerError::NotFound(shown));
        }
        Ok(next)
    }

    /// The persisted set, or the default one if none was ever written.
    pub async fn load(meta: &dyn MetaStore) -> MetaResult<SchedulerSet> {
        match meta.get(SCHEDULERS).await? {
            Some(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| schema::corrupt(SCHEDULERS, e))
            }
            None => Ok(SchedulerSet::default()),
        }
    }

    pub fn put(&self) -> MetaResult<MetaOp> {
        let value = serde_json::to_vec(self).map_err(|e| schema::corrupt(SCHEDULERS, e))?;
        Ok(MetaOp::put(SCHEDULERS, value))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::meta::MemMetaStore;

    #[test]
    fn names_parse_and_print() {
        assert_eq!(
            SchedulerName::parse("evict-leader-scheduler-12").unwrap(),
            SchedulerName::EvictLeader(Some(12))
        );
        assert_eq!(
            SchedulerName::parse("balance-leader-scheduler").unwrap(),
            SchedulerName::BalanceLeader
        );
        for bad in [
            "",
            "evict-leader-scheduler-",
            "evict-leader-scheduler-x",
            "hot-region",
        ] {
            assert!(matches!(
                SchedulerName::parse(bad),
                Err(SchedulerError::Unknown(_))
            ));
        }
        let mut set = SchedulerSet::default();
        set.evict_leader_stores.insert(4);
        assert_eq!(
            set.names(),
            [
                "balance-leader-scheduler",
                "balance-region-scheduler",
                "evict-leader-scheduler-4"
            ]
        );
    }

    #[test]
    fn add_and_remove() {
        let set = SchedulerSet::default();
        assert!(matches!(
            set.with_added(SchedulerName::BalanceLeader),
            Err(SchedulerError::Exists(_))
        ));
        let set = set
            .with_added(SchedulerName::EvictLeader(Some(3)))
            .unwrap()
            .unwrap();
        assert!(set.evicts(3));
        assert!(set
            .with_added(SchedulerName::EvictLeader(Some(3)))
            .unwrap()
            .is_none());
        assert!(matches!(
            set.with_added(SchedulerName::EvictLeader(None)),
            Err(SchedulerError::MissingStoreId)
        ));
        let set = set.with_removed(SchedulerName::BalanceRegion).unwrap();
        assert!(!set.balance_region);
        assert!(matches!(
            set.with_removed(SchedulerName::BalanceRegion),
            Err(SchedulerError::NotFound(_))
        ));
        let set = set
            .with_added(SchedulerName::BalanceRegion)
            .unwrap()
            .unwrap();
        assert!(set.balance_region);
        assert!(matches!(
            set.with_removed(SchedulerName::EvictLeader(Some(9))),
            Err(SchedulerError::NotFound(name)) if name == "evict-leader-scheduler-9"
        ));
        let set = set.with_removed(SchedulerName::EvictLeader(None)).unwrap();
        assert!(set.evict_leader_stores.is_empty());
    }

    #[tokio::test]
    async fn persists() {
        let meta = MemMetaStore::new();
        assert_eq!(
            SchedulerSet::load(&meta).await.unwrap(),
            SchedulerSet::default()
        );
        let set = SchedulerSet {
            balance_leader: false,
            balance_region: true,
            evict_leader_stores: BTreeSet::from([1, 5]),
        };
        meta.write(vec![set.put().unwrap()]).await.unwrap();
        assert_eq!(SchedulerSet::load(&meta).await.unwrap(), set);
        meta.write(vec![MetaOp::put(SCHEDULERS, b"{not json".to_vec())])
            .await
            .unwrap();
        assert!(matches!(
            SchedulerSet::load(&meta).await,
            Err(MetaError::Corrupt { .. })
        ));
    }
}
