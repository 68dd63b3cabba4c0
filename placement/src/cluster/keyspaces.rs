//! Keyspaces (API V2). Only the `DEFAULT` keyspace exists for now; it is
//! created the first time placement starts, so clients using API V2 can load
//! it even before storage nodes bootstrap the cluster.

use std::collections::BTreeMap;

use shale_proto::keyspacepb;

use super::error::{PdError, PdResult};
use super::Cluster;

pub const DEFAULT_KEYSPACE_NAME: &str = "DEFAULT";
pub const DEFAULT_KEYSPACE_ID: u32 = 0;

pub fn default_keyspace(now_secs: i64) -> keyspacepb::KeyspaceMeta {
    keyspacepb::KeyspaceMeta {
        id: DEFAULT_KEYSPACE_ID,
        name: DEFAULT_KEYSPACE_NAME.into(),
        state: keyspacepb::KeyspaceState::Enabled as i32,
        created_at: now_secs,
        state_changed_at: now_secs,
        config: Default::default(),
    }
}

#[derive(Debug, Default)]
pub struct Keyspaces {
    by_name: BTreeMap<String, keyspacepb::KeyspaceMeta>,
}

impl Keyspaces {
    pub fn new(keyspaces: Vec<keyspacepb::KeyspaceMeta>) -> Self {
        Keyspaces {
            by_name: keyspaces.into_iter().map(|k| (k.name.clone(), k)).collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&keyspacepb::KeyspaceMeta> {
        self.by_name.get(name)
    }
}

impl Cluster {
    pub fn load_keyspace(&self, name: &str) -> PdResult<keyspacepb::KeyspaceMeta> {
        self.state
            .read()
            .keyspaces
            .get(name)
            .cloned()
            .ok_or_else(|| PdError::EntryNotFound(format!("keyspace {name:?} not found")))
    }
}
