//! The Raft state a Region's group starts from on every store that creates
//! it (cluster bootstrap, split): applied and purged at the same made-up log
//! id, with the Region's peers as the membership.
//!
//! The state is identical on every replica that creates the group, and the
//! group's log starts after it. A replica a leader's message creates instead
//! has nothing, so it can never catch up by replaying the log: it always
//! takes a snapshot, which carries the Region's range, epoch and data. Were
//! it to replay the log from index 0 over whatever this store holds in the
//! range, it would judge old commands by a newer epoch, and miss data that
//! came from the parent Region before the split.

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use openraft::alias::LeaderIdOf;
use openraft::vote::RaftLeaderIdExt;
use openraft::Membership;
use rocksdb::{Direction, IteratorMode};
use shale_proto::metapb;

use super::keys;
use super::types::{encode, io_err, LogId, PeerId, PeerNode, RegionTypes, StoredMembership};
use crate::engine::{EngineBatch, MetaWrite, RocksEngine};
use crate::region::RegionRegistry;

/// Where every Region's log begins (as in TiKV, whose new Regions start at
/// index 5): no real leader ever wrote it, and no replica holds an entry at
/// or below it.
pub const INITIAL_INDEX: u64 = 5;

/// The log id of the made-up initial state: term 0, proposed by node 0
/// (placement never allocates id 0), so it is the same on every replica.
pub fn initial_log_id() -> LogId {
    LogId::new(
        LeaderIdOf::<RegionTypes>::new_committed(0, 0),
        INITIAL_INDEX,
    )
}

/// The Raft membership `region`'s peers describe.
fn membership_of(region: &metapb::Region) -> io::Result<StoredMembership> {
    let voters: BTreeSet<PeerId> = region
        .peers
        .iter()
        .filter(|p| p.role != metapb::PeerRole::Learner as i32)
        .map(|p| p.id)
        .collect();
    let nodes: BTreeMap<PeerId, PeerNode> = region
        .peers
        .iter()
        .map(|p| {
            (
                p.id,
                PeerNode {
                    store_id: p.store_id,
                },
            )
        })
        .collect();
    let membership = Membership::new(vec![voters], nodes).map_err(io_err)?;
    Ok(StoredMembership::new(Some(initial_log_id()), membership))
}

/// The metadata writes that create `region`'s group on this store, the
/// Region's own metadata included, for one atomic batch.
pub fn writes(region: &metapb::Region) -> io::Result<Vec<MetaWrite>> {
    let id = initial_log_id();
    Ok(vec![
        MetaWrite::Put(keys::last_purged_key(region.id), encode(&id)?),
        MetaWrite::Put(keys::applied_key(region.id), encode(&id)?),
        MetaWrite::Put(
            keys::membership_key(region.id),
            encode(&membership_of(region)?)?,
        ),
        RegionRegistry::meta_write(region),
    ])
}

/// Whether this store has, or had, Raft state for `region_id`: a replica
/// (perhaps created by a leader's message) or the tombstone of a removed one.
pub fn known_here(engine: &RocksEngine, region_id: u64) -> io::Result<bool> {
    if engine
        .get_meta(&keys::tombstone_key(region_id))
        .map_err(io_err)?
        .is_some()
    {
        return Ok(true);
    }
    let db = engine.db();
    let cf = db
        .cf_handle("raft")
        .ok_or_else(|| io_err("raft cf missing"))?;
    let (start, end) = keys::region_raft_range(region_id);
    match db
        .iterator_cf(cf, IteratorMode::From(&start, Direction::Forward))
        .next()
    {
        Some(item) => Ok(item.map_err(io_err)?.0.as_ref() < end.as_slice()),
        None => Ok(false),
    }
}

/// Creates `region`'s group on this store (cluster bootstrap) and serves it.
pub async fn create(
    engine: &RocksEngine,
    regions: &RegionRegistry,
    region: metapb::Region,
) -> io::Result<()> {
    let batch = EngineBatch {
        meta: writes(&region)?,
        sync: true,
        ..Default::default()
    };
    engine.write_batch(batch).await.map_err(io_err)?;
    regions.set_in_memory(region);
    Ok(())
}

/// Undoes [`create`] for a Region that never served anything (a cluster
/// bootstrap another store won).
pub async fn discard(
    engine: &RocksEngine,
    regions: &RegionRegistry,
    region_id: u64,
) -> io::Result<()> {
    let (start, end) = keys::region_raft_range(region_id);
    let batch = EngineBatch {
        meta: vec![
            MetaWrite::DeleteRange(start, end),
            RegionRegistry::meta_delete(region_id),
        ],
        sync: true,
        ..Default::default()
    };
    engine.write_batch(batch).await.map_err(io_err)?;
    regions.forget_in_memory(region_id);
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_created_region_is_known_with_its_peers_as_membership() {
        let dir = tempfile::tempdir().unwrap();
        let engine = RocksEngine::open(dir.path(), true).unwrap();
        let regions = RegionRegistry::load(1, engine.clone()).unwrap();
        let region = metapb::Region {
            id: 7,
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver: 1,
                version: 1,
            }),
            peers: vec![
                metapb::Peer {
                    id: 8,
                    store_id: 1,
                    ..Default::default()
                },
                metapb::Peer {
                    id: 9,
                    store_id: 2,
                    role: metapb::PeerRole::Learner as i32,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        assert!(!known_here(&engine, 7).unwrap());
        create(&engine, &regions, region.clone()).await.unwrap();
        assert!(known_here(&engine, 7).unwrap());
        assert!(!known_here(&engine, 6).unwrap());
        assert!(!known_here(&engine, 8).unwrap());
        assert_eq!(regions.get(7), Some(region));
        let stored: StoredMembership = super::super::types::decode(
            &engine.get_meta(&keys::membership_key(7)).unwrap().unwrap(),
        )
        .unwrap();
        let m = stored.membership();
        assert_eq!(m.voter_ids().collect::<Vec<_>>(), vec![8]);
        assert_eq!(m.learner_ids().collect::<Vec<_>>(), vec![9]);
        assert_eq!(stored.log_id(), &Some(initial_log_id()));

        discard(&engine, &regions, 7).await.unwrap();
        assert!(!known_here(&engine, 7).unwrap());
        assert_eq!(regions.get(7), None);
    }
}
