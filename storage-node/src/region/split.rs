//! Splitting a Region's metadata at given keys (Region-space keys).
//!
//! As in TiKV (right-derive), the original Region keeps its id for the
//! rightmost part; each part to its left gets a new id and new peer ids from
//! placement. Every resulting Region's epoch version moves past the old one,
//! so requests routed with the old epoch get EpochNotMatch and re-route.

use shale_proto::{metapb, pdpb};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SplitError {
    #[error("split key is not strictly inside region {0}")]
    KeyOutsideRegion(u64),
    #[error("placement gave {got} id sets for {want} splits")]
    WrongIdCount { want: usize, got: usize },
    #[error("placement gave {got} peer ids for {want} peers")]
    WrongPeerCount { want: usize, got: usize },
}

/// `split_keys` must be sorted, distinct and strictly inside `region`.
pub fn split_region(
    region: &metapb::Region,
    split_keys: &[Vec<u8>],
    ids: &[pdpb::SplitId],
) -> Result<Vec<metapb::Region>, SplitError> {
    if ids.len() != split_keys.len() {
        return Err(SplitError::WrongIdCount {
            want: split_keys.len(),
            got: ids.len(),
        });
    }
    let mut prev: &[u8] = &region.start_key;
    for key in split_keys {
        let past_end = !region.end_key.is_empty() && key.as_slice() >= region.end_key.as_slice();
        if key.as_slice() <= prev || past_end {
            return Err(SplitError::KeyOutsideRegion(region.id));
        }
        prev = key;
    }
    let epoch = region.region_epoch.unwrap_or_default();
    let new_epoch = metapb::RegionEpoch {
        conf_ver: epoch.conf_ver,
        version: epoch.version + split_keys.len() as u64,
    };
    let mut out = Vec::with_capacity(split_keys.len() + 1);
    let mut start = region.start_key.clone();
    for (key, id) in split_keys.iter().zip(ids) {
        if id.new_peer_ids.len() != region.peers.len() {
            return Err(SplitError::WrongPeerCount {
                want: region.peers.len(),
                got: id.new_peer_ids.len(),
            });
        }
        let peers = region
            .peers
            .iter()
            .zip(&id.new_peer_ids)
            // A learner is an added peer still catching up (placement adds
            // voters; the store stages them as learners). The new Region
            // starts with every peer as a voter: no operator would ever
            // promote its copy of that learner, and a Region of two voters
            // could not survive losing either.
            .map(|(p, new_id)| metapb::Peer {
                id: *new_id,
                role: metapb::PeerRole::Voter as i32,
                ..*p
            })
            .collect();
        out.push(metapb::Region {
            id: id.new_region_id,
            start_key: std::mem::replace(&mut start, key.clone()),
            end_key: key.clone(),
            region_epoch: Some(new_epoch),
            peers,
            ..Default::default()
        });
    }
    out.push(metapb::Region {
        start_key: start,
        region_epoch: Some(new_epoch),
        ..region.clone()
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region() -> metapb::Region {
        metapb::Region {
            id: 2,
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver: 1,
                version: 1,
            }),
            peers: vec![metapb::Peer {
                id: 3,
                store_id: 1,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn ids(n: u64) -> Vec<pdpb::SplitId> {
        (0..n)
            .map(|i| pdpb::SplitId {
                new_region_id: 10 + i,
                new_peer_ids: vec![20 + i],
            })
            .collect()
    }

    #[test]
    fn splits_right_derive_with_new_epochs() {
        let parts = split_region(&region(), &[b"b".to_vec(), b"d".to_vec()], &ids(2)).unwrap();
        let ranges: Vec<_> = parts
            .iter()
            .map(|r| (r.id, r.start_key.clone(), r.end_key.clone(), r.peers[0].id))
            .collect();
        assert_eq!(
            ranges,
            vec![
                (10, vec![], b"b".to_vec(), 20),
                (11, b"b".to_vec(), b"d".to_vec(), 21),
                (2, b"d".to_vec(), vec![], 3),
            ]
        );
        assert!(parts.iter().all(|r| r.region_epoch.unwrap().version == 3));
        assert!(parts.iter().all(|r| r.peers[0].store_id == 1));
    }

    #[test]
    fn a_learner_being_added_is_a_voter_of_the_new_regions() {
        let mut parent = region();
        parent.peers.push(metapb::Peer {
            id: 4,
            store_id: 2,
            role: metapb::PeerRole::Learner as i32,
            ..Default::default()
        });
        let ids = [pdpb::SplitId {
            new_region_id: 10,
            new_peer_ids: vec![20, 21],
        }];
        let parts = split_region(&parent, &[b"b".to_vec()], &ids).unwrap();
        let roles = |r: &metapb::Region| r.peers.iter().map(|p| p.role).collect::<Vec<_>>();
        let voter = metapb::PeerRole::Voter as i32;
        let learner = metapb::PeerRole::Learner as i32;
        assert_eq!(roles(&parts[0]), [voter, voter]);
        // The parent keeps its own membership change going.
        assert_eq!(roles(&parts[1]), [voter, learner]);
    }

    #[test]
    fn rejects_bad_keys_and_id_counts() {
        let r = metapb::Region {
            end_key: b"m".to_vec(),
            ..region()
        };
        assert!(split_region(&r, &[b"z".to_vec()], &ids(1)).is_err());
        assert!(split_region(&r, &[b"".to_vec()], &ids(1)).is_err());
        assert!(split_region(&r, &[b"c".to_vec(), b"b".to_vec()], &ids(2)).is_err());
        assert!(split_region(&r, &[b"c".to_vec()], &ids(2)).is_err());
        let no_peers = vec![pdpb::SplitId {
            new_region_id: 9,
            new_peer_ids: vec![],
        }];
        assert!(split_region(&r, &[b"c".to_vec()], &no_peers).is_err());
    }
}
