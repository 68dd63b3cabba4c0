//! Where a Region's Raft state lives in the store's `raft` column family:
//! `\x02 <region id> <kind> [<index>]`, all big-endian so a Region's log is
//! one contiguous, ordered range.

const REGION_RAFT_PREFIX: u8 = 0x02;
const LOG: u8 = 0x01;
const VOTE: u8 = 0x02;
const LAST_PURGED: u8 = 0x03;
const COMMITTED: u8 = 0x04;
const APPLIED: u8 = 0x05;
const MEMBERSHIP: u8 = 0x06;

fn region_key(region_id: u64, kind: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(18);
    k.push(REGION_RAFT_PREFIX);
    k.extend_from_slice(&region_id.to_be_bytes());
    k.push(kind);
    k
}

pub fn log_key(region_id: u64, index: u64) -> Vec<u8> {
    let mut k = region_key(region_id, LOG);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// `[start, end)` covering every log entry of the Region.
pub fn log_range(region_id: u64) -> (Vec<u8>, Vec<u8>) {
    (region_key(region_id, LOG), region_key(region_id, LOG + 1))
}

/// The index encoded in a log key of `region_id`, if it is one.
pub fn log_index(region_id: u64, key: &[u8]) -> Option<u64> {
    let prefix = region_key(region_id, LOG);
    let rest = key.strip_prefix(prefix.as_slice())?;
    Some(u64::from_be_bytes(rest.try_into().ok()?))
}

pub fn vote_key(region_id: u64) -> Vec<u8> {
    region_key(region_id, VOTE)
}

pub fn last_purged_key(region_id: u64) -> Vec<u8> {
    region_key(region_id, LAST_PURGED)
}

pub fn committed_key(region_id: u64) -> Vec<u8> {
    region_key(region_id, COMMITTED)
}

pub fn applied_key(region_id: u64) -> Vec<u8> {
    region_key(region_id, APPLIED)
}

pub fn membership_key(region_id: u64) -> Vec<u8> {
    region_key(region_id, MEMBERSHIP)
}

/// Marks a Region whose replica was removed from this store; the value is
/// the removed peer id (older ones must never come back).
pub const TOMBSTONE_PREFIX: &[u8] = b"\x01tombstone\x00";

pub fn tombstone_key(region_id: u64) -> Vec<u8> {
    let mut k = TOMBSTONE_PREFIX.to_vec();
    k.extend_from_slice(&region_id.to_be_bytes());
    k
}

/// `[start, end)` covering all Raft state of the Region (for destroy).
pub fn region_raft_range(region_id: u64) -> (Vec<u8>, Vec<u8>) {
    let mut start = vec![REGION_RAFT_PREFIX];
    start.extend_from_slice(&region_id.to_be_bytes());
    let mut end = vec![REGION_RAFT_PREFIX];
    end.extend_from_slice(&region_id.saturating_add(1).to_be_bytes());
    (start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_keys_order_by_index_and_stay_in_range() {
        let (start, end) = log_range(7);
        let a = log_key(7, 1);
        let b = log_key(7, 256);
        assert!(start <= a && a < b && b < end);
        assert_eq!(log_index(7, &b), Some(256));
        assert_eq!(log_index(8, &b), None);
        assert!(vote_key(7) >= end);
        let (rs, re) = region_raft_range(7);
        assert!(rs <= a && applied_key(7) < re && log_key(8, 0) >= re);
    }
}
