//! Which keys each TiKV request touches, for the Region check.

use shale_proto::kvrpcpb;

use super::{KeyMode, RegionRequest, ScopeKeys};

macro_rules! scoped {
    ($ty:ty, $mode:expr, |$r:ident| $scope:expr) => {
        impl RegionRequest for $ty {
            fn context(&self) -> Option<&kvrpcpb::Context> {
                self.context.as_ref()
            }
            fn key_mode(&self) -> KeyMode {
                $mode
            }
            fn scope(&self) -> ScopeKeys<'_> {
                let $r = self;
                $scope
            }
        }
    };
}

fn one(key: &[u8]) -> ScopeKeys<'_> {
    ScopeKeys::Keys(vec![key])
}

fn many(keys: &[Vec<u8>]) -> ScopeKeys<'_> {
    ScopeKeys::Keys(keys.iter().map(Vec::as_slice).collect())
}

/// A scan's bounds as `(lower, upper)`: reverse scans name the upper bound first.
fn scan<'a>(start: &'a [u8], end: &'a [u8], reverse: bool) -> ScopeKeys<'a> {
    if reverse {
        ScopeKeys::Ranges(vec![(end, start)])
    } else {
        ScopeKeys::Ranges(vec![(start, end)])
    }
}

use KeyMode::{Raw, Txn};

/// Clamps the far bound of a range that starts inside `region` to it.
fn clamp_end(
    ctx: Option<&kvrpcpb::Context>,
    mode: KeyMode,
    region: &shale_proto::metapb::Region,
    reverse: bool,
    end_key: &mut Vec<u8>,
) {
    let api = ctx.map_or(kvrpcpb::ApiVersion::V1, |c| c.api_version());
    super::check::clamp_scan(mode, api, region, reverse, end_key);
}

scoped!(kvrpcpb::RawGetRequest, Raw, |r| one(&r.key));
scoped!(kvrpcpb::RawBatchGetRequest, Raw, |r| many(&r.keys));
scoped!(kvrpcpb::RawPutRequest, Raw, |r| one(&r.key));
scoped!(kvrpcpb::RawBatchPutRequest, Raw, |r| ScopeKeys::Keys(
    r.pairs.iter().map(|p| p.key.as_slice()).collect()
));
scoped!(kvrpcpb::RawDeleteRequest, Raw, |r| one(&r.key));
scoped!(kvrpcpb::RawBatchDeleteRequest, Raw, |r| many(&r.keys));
/// A scan must start inside the Region; its far bound may reach past it
/// (as TiKV allows) and is clamped to the Region.
macro_rules! scan_request {
    ($ty:ty, $mode:expr) => {
        impl RegionRequest for $ty {
            fn context(&self) -> Option<&kvrpcpb::Context> {
                self.context.as_ref()
            }
            fn key_mode(&self) -> KeyMode {
                $mode
            }
            fn scope(&self) -> ScopeKeys<'_> {
                if self.reverse {
                    ScopeKeys::Ranges(vec![(&[], &self.start_key)])
                } else {
                    ScopeKeys::Ranges(vec![(&self.start_key, &[])])
                }
            }
            fn clamp_to_region(&mut self, region: &shale_proto::metapb::Region) {
                clamp_end(
                    self.context.as_ref(),
                    $mode,
                    region,
                    self.reverse,
                    &mut self.end_key,
                );
            }
        }
    };
}

scan_request!(kvrpcpb::RawScanRequest, Raw);
scoped!(kvrpcpb::RawBatchScanRequest, Raw, |r| ScopeKeys::Ranges(
    r.ranges
        .iter()
        .map(|k| if r.reverse {
            (k.end_key.as_slice(), k.start_key.as_slice())
        } else {
            (k.start_key.as_slice(), k.end_key.as_slice())
        })
        .collect()
));
scoped!(kvrpcpb::RawDeleteRangeRequest, Raw, |r| scan(
    &r.start_key,
    &r.end_key,
    false
));
scoped!(kvrpcpb::RawCasRequest, Raw, |r| one(&r.key));
scoped!(kvrpcpb::RawGetKeyTtlRequest, Raw, |r| one(&r.key));

scoped!(kvrpcpb::GetRequest, Txn, |r| one(&r.key));
scoped!(kvrpcpb::BatchGetRequest, Txn, |r| many(&r.keys));
scan_request!(kvrpcpb::ScanRequest, Txn);
scoped!(kvrpcpb::PrewriteRequest, Txn, |r| ScopeKeys::Keys(
    r.mutations.iter().map(|m| m.key.as_slice()).collect()
));
scoped!(kvrpcpb::CommitRequest, Txn, |r| many(&r.keys));
scoped!(kvrpcpb::BatchRollbackRequest, Txn, |r| many(&r.keys));
scoped!(kvrpcpb::CleanupRequest, Txn, |r| one(&r.key));
scoped!(kvrpcpb::CheckTxnStatusRequest, Txn, |r| one(&r.primary_key));
scoped!(kvrpcpb::CheckSecondaryLocksRequest, Txn, |r| many(&r.keys));
scoped!(kvrpcpb::TxnHeartBeatRequest, Txn, |r| one(&r.primary_lock));
/// ScanLock, like a scan, must start inside the Region and may end past
/// it: clients send a range's end to each Region it covers (TiKV bounds the
/// scan by the Region's snapshot instead of refusing it).
impl RegionRequest for kvrpcpb::ScanLockRequest {
    fn context(&self) -> Option<&kvrpcpb::Context> {
        self.context.as_ref()
    }
    fn key_mode(&self) -> KeyMode {
        Txn
    }
    fn scope(&self) -> ScopeKeys<'_> {
        ScopeKeys::Ranges(vec![(&self.start_key, &[])])
    }
    fn clamp_to_region(&mut self, region: &shale_proto::metapb::Region) {
        clamp_end(self.context.as_ref(), Txn, region, false, &mut self.end_key);
    }
}
scoped!(kvrpcpb::ResolveLockRequest, Txn, |r| many(&r.keys));
scoped!(kvrpcpb::PessimisticLockRequest, Txn, |r| ScopeKeys::Keys(
    r.mutations.iter().map(|m| m.key.as_slice()).collect()
));
scoped!(kvrpcpb::PessimisticRollbackRequest, Txn, |r| many(&r.keys));
scoped!(kvrpcpb::DeleteRangeRequest, Txn, |r| scan(
    &r.start_key,
    &r.end_key,
    false
));
scoped!(kvrpcpb::GcRequest, Txn, |_r| ScopeKeys::None);
scoped!(kvrpcpb::MvccGetByKeyRequest, Txn, |r| one(&r.key));

/// SplitRegion names its split keys: raw keys as given, transactional keys
/// in client form (encoded by the check).
impl RegionRequest for kvrpcpb::SplitRegionRequest {
    fn context(&self) -> Option<&kvrpcpb::Context> {
        self.context.as_ref()
    }
    fn key_mode(&self) -> KeyMode {
        if self.is_raw_kv {
            KeyMode::Raw
        } else {
            KeyMode::Txn
        }
    }
    #[allow(deprecated)]
    fn scope(&self) -> ScopeKeys<'_> {
        let mut keys: Vec<&[u8]> = self.split_keys.iter().map(Vec::as_slice).collect();
        if !self.split_key.is_empty() {
            keys.push(&self.split_key);
        }
        ScopeKeys::Keys(keys)
    }
}
