//! Key-range arithmetic over Regions (empty end key: unbounded).

use shale_proto::metapb;

use crate::engine::{CfName, Modify};
use crate::region::{contains, contains_range, RegionRegistry};

/// The first key of `modifies` outside `region` (TiKV's
/// `check_key_in_region`): a range delete must lie within it too, an open
/// end only in the last Region.
pub fn first_outside<'a>(region: &metapb::Region, modifies: &'a [Modify]) -> Option<&'a [u8]> {
    modifies.iter().find_map(|m| match m {
        Modify::Put(_, k, _) | Modify::Delete(_, k) => {
            (!contains(region, k)).then_some(k.as_slice())
        }
        Modify::DeleteRange(_, s, e) => (!contains_range(region, s, e)).then_some(
            if s.as_slice() < region.start_key.as_slice() {
                s.as_slice()
            } else {
                e.as_slice()
            },
        ),
    })
}

/// `[start, end)` with the keys escaped, for logs.
pub fn describe(start: &[u8], end: &[u8]) -> String {
    format!("[{}, {})", start.escape_ascii(), end.escape_ascii())
}

/// `modifies` as a write through `region` may carry them: range deletes
/// narrowed to the Region (dropped when they miss it). A point change
/// outside the Region is refused: its key belongs to another Region.
pub fn clamp_to_region(
    region: &metapb::Region,
    modifies: Vec<Modify>,
) -> Result<Vec<Modify>, Vec<u8>> {
    let mut out = Vec::with_capacity(modifies.len());
    for m in modifies {
        match m {
            Modify::Put(_, ref k, _) | Modify::Delete(_, ref k) => {
                if !contains(region, k) {
                    return Err(k.clone());
                }
                out.push(m);
            }
            Modify::DeleteRange(cf, s, e) => {
                let start = s.max(region.start_key.clone());
                let end = match (e.is_empty(), region.end_key.is_empty()) {
                    (true, _) => region.end_key.clone(),
                    (false, true) => e,
                    (false, false) => e.min(region.end_key.clone()),
                };
                if end.is_empty() || start < end {
                    out.push(Modify::DeleteRange(cf, start, end));
                }
            }
        }
    }
    Ok(out)
}

/// The parts of `region`'s range that no other Region here owns (`extra`
/// counts as owned too): what a replica may delete when it goes away or
/// shrinks, since a split it never applied can leave its range covering
/// Regions this store holds.
pub fn unowned(
    region: &metapb::Region,
    registry: &RegionRegistry,
    extra: &[metapb::Region],
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let others: Vec<metapb::Region> = registry
        .all()
        .into_iter()
        .filter(|r| r.id != region.id)
        .chain(extra.iter().cloned())
        .collect();
    uncovered(&region.start_key, &region.end_key, &others)
}

/// Deletes of `ranges` in every data column family.
pub fn delete_data(ranges: Vec<(Vec<u8>, Vec<u8>)>) -> impl Iterator<Item = Modify> {
    ranges.into_iter().flat_map(|(start, end)| {
        CfName::ALL.map(|cf| Modify::DeleteRange(cf, start.clone(), end.clone()))
    })
}

/// The parts of `[start, end)` (empty `end`: unbounded) that none of
/// `others` covers, in key order.
pub fn uncovered(start: &[u8], end: &[u8], others: &[metapb::Region]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut taken: Vec<(&[u8], &[u8])> = others
        .iter()
        .map(|r| (r.start_key.as_slice(), r.end_key.as_slice()))
        .collect();
    taken.sort();
    let before_end = |k: &[u8]| end.is_empty() || k < end;
    let mut out = Vec::new();
    let mut cursor = start.to_vec();
    for (s, e) in taken {
        // Regions entirely before the cursor do not matter.
        if !e.is_empty() && e <= cursor.as_slice() {
            continue;
        }
        if !before_end(s) {
            break;
        }
        if s > cursor.as_slice() {
            out.push((cursor.clone(), s.to_vec()));
        }
        if e.is_empty() {
            return out;
        }
        if e > cursor.as_slice() {
            cursor = e.to_vec();
        }
        if !before_end(&cursor) {
            return out;
        }
    }
    if before_end(&cursor) {
        out.push((cursor, end.to_vec()));
    }
    out
}

/// Whether two Regions' key ranges (empty end: unbounded) intersect.
pub fn overlaps(a: &metapb::Region, b: &metapb::Region) -> bool {
    let before = |key: &[u8], end: &[u8]| end.is_empty() || key < end;
    before(&a.start_key, &b.end_key) && before(&b.start_key, &a.end_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: &str, end: &str) -> metapb::Region {
        metapb::Region {
            start_key: start.as_bytes().to_vec(),
            end_key: end.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    fn v(parts: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        parts
            .iter()
            .map(|(s, e)| (s.as_bytes().to_vec(), e.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn ranges_overlap_unless_they_only_touch() {
        assert!(overlaps(&r("a", "c"), &r("b", "d")));
        assert!(overlaps(&r("", ""), &r("b", "d")));
        assert!(overlaps(&r("b", ""), &r("", "c")));
        assert!(!overlaps(&r("a", "b"), &r("b", "c")));
        assert!(!overlaps(&r("c", ""), &r("", "c")));
    }

    fn put(k: &str) -> Modify {
        Modify::Put(CfName::Default, k.as_bytes().to_vec(), vec![])
    }

    fn del_range(s: &str, e: &str) -> Modify {
        Modify::DeleteRange(CfName::Lock, s.as_bytes().to_vec(), e.as_bytes().to_vec())
    }

    #[test]
    fn every_key_of_a_write_must_lie_in_the_region() {
        let region = r("c", "m");
        assert_eq!(first_outside(&region, &[put("c"), put("l")]), None);
        assert_eq!(
            first_outside(&region, &[put("c"), put("m")]),
            Some(&b"m"[..])
        );
        assert_eq!(first_outside(&region, &[del_range("c", "m")]), None);
        assert_eq!(
            first_outside(&region, &[del_range("c", "")]),
            Some(&b""[..])
        );
        assert_eq!(
            first_outside(&region, &[del_range("b", "d")]),
            Some(&b"b"[..])
        );
        assert_eq!(first_outside(&r("c", ""), &[del_range("x", "")]), None);
    }

    #[test]
    fn range_deletes_are_narrowed_to_the_region() {
        let region = r("c", "m");
        assert_eq!(
            clamp_to_region(&region, vec![del_range("a", ""), del_range("d", "e")]),
            Ok(vec![del_range("c", "m"), del_range("d", "e")])
        );
        assert_eq!(
            clamp_to_region(&region, vec![del_range("n", "")]),
            Ok(vec![])
        );
        assert_eq!(
            clamp_to_region(&region, vec![del_range("a", "b")]),
            Ok(vec![])
        );
        assert_eq!(
            clamp_to_region(&r("c", ""), vec![del_range("a", "")]),
            Ok(vec![del_range("c", "")])
        );
        assert_eq!(clamp_to_region(&region, vec![put("z")]), Err(b"z".to_vec()));
    }

    #[test]
    fn destroy_keeps_ranges_other_regions_own() {
        assert_eq!(uncovered(b"a", b"z", &[]), v(&[("a", "z")]));
        assert_eq!(
            uncovered(b"a", b"z", &[r("c", "f")]),
            v(&[("a", "c"), ("f", "z")])
        );
        assert_eq!(uncovered(b"", b"", &[r("", "m")]), v(&[("m", "")]));
        assert_eq!(
            uncovered(b"a", b"m", &[r("", "c"), r("k", "")]),
            v(&[("c", "k")])
        );
        assert_eq!(uncovered(b"c", b"f", &[r("a", "z")]), v(&[]));
        assert_eq!(
            uncovered(b"", b"", &[r("b", "c"), r("x", "y")]),
            v(&[("", "b"), ("c", "x"), ("y", "")])
        );
    }
}
