//! Per-request Region validation, in the order TiKV applies it.

use std::collections::BTreeMap;

use shale_proto::kvrpcpb::{self, ApiVersion};
use shale_proto::{errorpb, metapb};

use super::{contains as in_region, key_not_in_region};
use crate::keys;

/// How a request's keys map into Region space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyMode {
    Raw,
    Txn,
}

/// The keys a request touches, in client form.
pub enum ScopeKeys<'a> {
    None,
    Keys(Vec<&'a [u8]>),
    /// `(lower, upper)` bounds; an empty bound means "the Region's own bound".
    Ranges(Vec<(&'a [u8], &'a [u8])>),
}

/// What the Region check needs to know about a request.
pub trait RegionRequest {
    fn context(&self) -> Option<&kvrpcpb::Context>;
    fn key_mode(&self) -> KeyMode;
    fn scope(&self) -> ScopeKeys<'_>;
    /// Narrows a request that may reach past the Region (a scan's far
    /// bound, as TiKV allows) to the Region's range. Most requests have
    /// nothing to narrow.
    fn clamp_to_region(&mut self, _region: &metapb::Region) {}
}

/// The client form of a Region boundary: raw API V1 keys are stored as
/// given, everything else is memcomparable-encoded.
pub fn client_key(mode: KeyMode, api: ApiVersion, region_key: &[u8]) -> Option<Vec<u8>> {
    match (mode, api) {
        (KeyMode::Raw, ApiVersion::V1) | (KeyMode::Raw, ApiVersion::V1ttl) => {
            Some(region_key.to_vec())
        }
        _ => crate::codec::decode_bytes(region_key).ok().map(|(k, _)| k),
    }
}

/// Clamps a scan's far bound to `region`: `end` for forward scans (the
/// exclusive upper bound), `end` as the lower bound for reverse scans.
pub fn clamp_scan(
    mode: KeyMode,
    api: ApiVersion,
    region: &metapb::Region,
    reverse: bool,
    end: &mut Vec<u8>,
) {
    let to_region = |k: &[u8]| region_space_key(mode, api, k);
    if reverse {
        if region.start_key.is_empty() {
            return;
        }
        if end.is_empty() || to_region(end) < region.start_key {
            if let Some(k) = client_key(mode, api, &region.start_key) {
                *end = k;
            }
        }
    } else if !region.end_key.is_empty() && (end.is_empty() || to_region(end) > region.end_key) {
        if let Some(k) = client_key(mode, api, &region.end_key) {
            *end = k;
        }
    }
}

fn region_not_found(region_id: u64) -> errorpb::Error {
    errorpb::Error {
        message: format!("region {region_id} not found on this store"),
        region_not_found: Some(errorpb::RegionNotFound { region_id }),
        ..Default::default()
    }
}

fn region_space_key(mode: KeyMode, api: ApiVersion, key: &[u8]) -> Vec<u8> {
    match mode {
        KeyMode::Txn => keys::txn_region_key(key),
        KeyMode::Raw => keys::raw_data_key(api, key).into_owned(),
    }
}

pub(super) fn check_request<R: RegionRequest>(
    store_id: u64,
    regions: &BTreeMap<u64, metapb::Region>,
    req: &R,
) -> Result<metapb::Region, Box<errorpb::Error>> {
    let default_ctx = kvrpcpb::Context::default();
    let ctx = req.context().unwrap_or(&default_ctx);
    if let Some(peer) = &ctx.peer {
        if peer.store_id != 0 && peer.store_id != store_id {
            return Err(Box::new(errorpb::Error {
                message: format!(
                    "request for store {} sent to store {store_id}",
                    peer.store_id
                ),
                store_not_match: Some(errorpb::StoreNotMatch {
                    request_store_id: peer.store_id,
                    actual_store_id: store_id,
                }),
                ..Default::default()
            }));
        }
    }
    let region = regions
        .get(&ctx.region_id)
        .ok_or_else(|| Box::new(region_not_found(ctx.region_id)))?;
    let current = region.region_epoch.unwrap_or_default();
    let requested = ctx.region_epoch.unwrap_or_default();
    if requested.version != current.version {
        return Err(Box::new(errorpb::Error {
            message: format!(
                "epoch not match: request version {} current {}",
                requested.version, current.version
            ),
            epoch_not_match: Some(errorpb::EpochNotMatch {
                current_regions: regions.values().cloned().collect(),
            }),
            ..Default::default()
        }));
    }
    let api = ctx.api_version();
    let mode = req.key_mode();
    match req.scope() {
        ScopeKeys::None => {}
        ScopeKeys::Keys(keys) => {
            for key in keys {
                let k = region_space_key(mode, api, key);
                if !in_region(region, &k) {
                    return Err(Box::new(key_not_in_region(region, key)));
                }
            }
        }
        ScopeKeys::Ranges(ranges) => {
            for (lower, upper) in ranges {
                if !lower.is_empty() && !in_region(region, &region_space_key(mode, api, lower)) {
                    return Err(Box::new(key_not_in_region(region, lower)));
                }
                if !upper.is_empty() {
                    let u = region_space_key(mode, api, upper);
                    let past_end = !region.end_key.is_empty() && u > region.end_key;
                    if past_end || u <= region.start_key {
                        return Err(Box::new(key_not_in_region(region, upper)));
                    }
                }
            }
        }
    }
    Ok(region.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Req {
        ctx: kvrpcpb::Context,
        keys: Vec<Vec<u8>>,
    }

    impl RegionRequest for Req {
        fn context(&self) -> Option<&kvrpcpb::Context> {
            Some(&self.ctx)
        }
        fn key_mode(&self) -> KeyMode {
            KeyMode::Raw
        }
        fn scope(&self) -> ScopeKeys<'_> {
            ScopeKeys::Keys(self.keys.iter().map(|k| k.as_slice()).collect())
        }
    }

    fn regions() -> BTreeMap<u64, metapb::Region> {
        let region = metapb::Region {
            id: 2,
            start_key: b"b".to_vec(),
            end_key: b"m".to_vec(),
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver: 1,
                version: 3,
            }),
            peers: vec![metapb::Peer {
                id: 3,
                store_id: 1,
                ..Default::default()
            }],
            ..Default::default()
        };
        BTreeMap::from([(2, region)])
    }

    fn req(region_id: u64, version: u64, store_id: u64, key: &[u8]) -> Req {
        Req {
            ctx: kvrpcpb::Context {
                region_id,
                region_epoch: Some(metapb::RegionEpoch {
                    conf_ver: 1,
                    version,
                }),
                peer: Some(metapb::Peer {
                    id: 3,
                    store_id,
                    ..Default::default()
                }),
                ..Default::default()
            },
            keys: vec![key.to_vec()],
        }
    }

    #[test]
    fn accepts_a_well_addressed_request() {
        assert_eq!(
            check_request(1, &regions(), &req(2, 3, 1, b"c"))
                .unwrap()
                .id,
            2
        );
    }

    #[test]
    fn rejects_each_kind_of_misrouting() {
        let r = regions();
        assert!(check_request(1, &r, &req(2, 3, 9, b"c"))
            .unwrap_err()
            .store_not_match
            .is_some());
        assert!(check_request(1, &r, &req(7, 3, 1, b"c"))
            .unwrap_err()
            .region_not_found
            .is_some());
        let stale = check_request(1, &r, &req(2, 2, 1, b"c")).unwrap_err();
        assert_eq!(stale.epoch_not_match.unwrap().current_regions.len(), 1);
        let outside = check_request(1, &r, &req(2, 3, 1, b"z")).unwrap_err();
        assert_eq!(outside.key_not_in_region.unwrap().key, b"z".to_vec());
        assert!(
            check_request(1, &r, &req(2, 3, 1, b"m")).is_err(),
            "end key is exclusive"
        );
        assert!(
            check_request(1, &r, &req(2, 3, 1, b"b")).is_ok(),
            "start key is inclusive"
        );
    }
}
