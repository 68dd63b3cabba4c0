//! A snapshot of one Region (TiKV's `RegionSnapshot`): the store's RocksDB
//! snapshot seen through the Region's key range at the epoch it was taken.
//!
//! A store holds many Regions with different replica sets. Whatever a
//! command reads through one Region's snapshot it may write through that
//! Region's log; were another Region's keys visible, a stale lock of one
//! Region could be "resolved" through another and the replicas of both
//! would diverge. So iterators are clamped to the range and a point read
//! outside it is refused.

use shale_proto::metapb;

use crate::engine::{CfName, EngineError, EngineResult, RocksIterator, RocksSnapshot, Snapshot};
use crate::region::{contains, key_not_in_region};

pub struct RegionSnapshot {
    inner: RocksSnapshot,
    region: metapb::Region,
    max_ts_synced: bool,
    term: u64,
}

impl RegionSnapshot {
    /// `term`: the leader term the snapshot was taken in (0 for the whole
    /// store, which is not replicated).
    pub fn new(
        inner: RocksSnapshot,
        region: metapb::Region,
        max_ts_synced: bool,
        term: u64,
    ) -> Self {
        RegionSnapshot {
            inner,
            region,
            max_ts_synced,
            term,
        }
    }

    /// The Region (range and epoch) the snapshot is bounded to.
    pub fn region(&self) -> &metapb::Region {
        &self.region
    }

    /// `[lower, upper)` intersected with the Region's range (`None`:
    /// unbounded); empty when they do not meet.
    fn bounds<'a>(
        &'a self,
        lower: Option<&'a [u8]>,
        upper: Option<&'a [u8]>,
    ) -> (&'a [u8], Option<&'a [u8]>) {
        let start = self.region.start_key.as_slice();
        let lower = lower.map_or(start, |l| l.max(start));
        let end = (!self.region.end_key.is_empty()).then_some(self.region.end_key.as_slice());
        let upper = match (upper, end) {
            (Some(u), Some(e)) => Some(u.min(e)),
            (u, e) => u.or(e),
        };
        match upper {
            Some(u) if u < lower => (lower, Some(lower)),
            u => (lower, u),
        }
    }
}

impl Snapshot for RegionSnapshot {
    type Iter<'a> = RocksIterator<'a>;

    fn get_cf(&self, cf: CfName, key: &[u8]) -> EngineResult<Option<Vec<u8>>> {
        if !contains(&self.region, key) {
            return Err(EngineError::Region(Box::new(key_not_in_region(
                &self.region,
                key,
            ))));
        }
        self.inner.get_cf(cf, key)
    }

    fn iter_cf(
        &self,
        cf: CfName,
        lower: Option<&[u8]>,
        upper: Option<&[u8]>,
    ) -> EngineResult<RocksIterator<'_>> {
        let (lower, upper) = self.bounds(lower, upper);
        self.inner.iter_cf(cf, Some(lower), upper)
    }

    fn max_ts_synced(&self) -> bool {
        self.max_ts_synced
    }

    fn term(&self) -> u64 {
        self.term
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::engine::{EngineIterator, Modify, RocksEngine};

    fn keys(snap: &RegionSnapshot, lower: Option<&[u8]>, upper: Option<&[u8]>) -> Vec<Vec<u8>> {
        let mut it = snap.iter_cf(CfName::Default, lower, upper).unwrap();
        let mut out = Vec::new();
        let mut valid = it.seek_to_first().unwrap();
        while valid {
            out.push(it.key().to_vec());
            valid = it.next().unwrap();
        }
        out
    }

    fn region(start: &[u8], end: &[u8]) -> metapb::Region {
        metapb::Region {
            id: 3,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_region_snapshot_sees_only_its_own_keys() {
        let dir = tempfile::tempdir().unwrap();
        let engine = RocksEngine::open(dir.path(), true).unwrap();
        let puts = [b"a", b"c", b"m", b"q", b"z"]
            .iter()
            .map(|k| Modify::Put(CfName::Default, k.to_vec(), b"v".to_vec()))
            .collect();
        engine.write(puts).await.unwrap();
        let snap = RegionSnapshot::new(engine.snapshot(), region(b"c", b"q"), true, 0);
        assert_eq!(keys(&snap, None, None), vec![b"c".to_vec(), b"m".to_vec()]);
        assert_eq!(
            keys(&snap, Some(b"a"), Some(b"zz")),
            keys(&snap, None, None)
        );
        assert_eq!(keys(&snap, Some(b"d"), None), vec![b"m".to_vec()]);
        assert_eq!(keys(&snap, Some(b"r"), Some(b"s")), Vec::<Vec<u8>>::new());
        assert_eq!(keys(&snap, Some(b"a"), Some(b"b")), Vec::<Vec<u8>>::new());
        // Seeks outside the range land inside it or nowhere.
        let mut it = snap.iter_cf(CfName::Default, None, None).unwrap();
        assert!(it.seek(b"a").unwrap());
        assert_eq!(it.key(), b"c");
        assert!(it.seek_for_prev(b"zz").unwrap());
        assert_eq!(it.key(), b"m");
        assert!(it.seek_to_last().unwrap());
        assert_eq!(it.key(), b"m");
        // Point reads outside the range are refused, not answered.
        assert_eq!(
            snap.get_cf(CfName::Default, b"m").unwrap(),
            Some(b"v".to_vec())
        );
        let err = snap.get_cf(CfName::Default, b"z").unwrap_err();
        assert!(matches!(err, EngineError::Region(e) if e.key_not_in_region.is_some()));
        // The last Region is unbounded above.
        let last = RegionSnapshot::new(engine.snapshot(), region(b"q", b""), true, 0);
        assert_eq!(keys(&last, None, None), vec![b"q".to_vec(), b"z".to_vec()]);
    }
}
