#![allow(clippy::unwrap_used, clippy::expect_used)]

use openraft::testing::log::{StoreBuilder, Suite};
use openraft::StorageError;

use super::db::RaftDb;
use super::log_store::LogStore;
use super::state_machine::MetaStateMachine;
use super::types::*;
use super::InitialCluster;
use crate::meta::MetaOp;

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, MetaStateMachine, tempfile::TempDir> for RocksBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, MetaStateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().unwrap();
        let db = RaftDb::open(&dir.path().join("raft")).unwrap();
        let log = LogStore::new(db.clone());
        let sm = MetaStateMachine::new(db, dir.path().join("raft-snapshot"));
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_passes_openraft_suite() {
    Suite::test_all(RocksBuilder).await.unwrap();
}

#[test]
fn messages_round_trip_in_the_wire_encoding() {
    let command = MetaCommand {
        ops: vec![MetaOp::put("k", "v"), MetaOp::delete("gone")],
    };
    let bytes = encode(&command).unwrap();
    assert_eq!(decode::<MetaCommand>(&bytes).unwrap(), command);
    assert!(decode::<MetaCommand>(&bytes[..bytes.len() - 1]).is_err());
    assert!(decode::<MetaCommand>(&[0xff; 7]).is_err());
}

#[test]
fn node_ids_are_stable_and_distinct() {
    assert_eq!(node_id_of("pd-1"), node_id_of("pd-1"));
    assert_ne!(node_id_of("pd-1"), node_id_of("pd-2"));
    assert_ne!(node_id_of(""), 0);
}

#[test]
fn initial_cluster_lists_parse() {
    let list = InitialCluster::parse("a=http://h1:2379, b=h2:2380").unwrap();
    assert_eq!(list.members().len(), 2);
    assert_eq!(list.get("b").unwrap().url, "http://h2:2380");
    assert_eq!(list.to_string(), "a=http://h1:2379,b=http://h2:2380");
    assert!(InitialCluster::parse("").is_err());
    assert!(InitialCluster::parse("a=h:1,a=h:2").is_err());
    assert!(InitialCluster::parse("a=h").is_err());
}
