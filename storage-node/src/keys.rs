//! Where a client key lives in the store's key space.
//!
//! Region boundaries are kept the way TiKV's clients expect them: transactional
//! keys (and all keys under API V2) are memcomparable-encoded, raw keys under
//! API V1 are used verbatim. Data is stored in that same order, so a Region's
//! range is also a contiguous range of stored keys.

use std::borrow::Cow;

use shale_proto::kvrpcpb::ApiVersion;

use crate::codec::encode_bytes;

/// The API V2 key-mode prefix of raw keys (`r` + 3-byte keyspace id + key).
pub const RAW_MODE_PREFIX: u8 = b'r';
/// The API V2 key-mode prefix of transactional keys.
pub const TXN_MODE_PREFIX: u8 = b'x';
/// Mode byte plus the 3-byte keyspace id.
pub const KEYSPACE_PREFIX_LEN: usize = 4;

/// The stored (and Region-space) form of a raw key.
pub fn raw_data_key(api: ApiVersion, key: &[u8]) -> Cow<'_, [u8]> {
    match api {
        ApiVersion::V2 => Cow::Owned(encode_bytes(key)),
        _ => Cow::Borrowed(key),
    }
}

/// The Region-space form of a transactional key.
pub fn txn_region_key(key: &[u8]) -> Vec<u8> {
    encode_bytes(key)
}

/// Checks that an API V2 key carries the expected mode prefix and a keyspace.
pub fn check_v2_key(key: &[u8], mode: u8) -> Result<(), String> {
    if key.len() < KEYSPACE_PREFIX_LEN || key[0] != mode {
        return Err(format!(
            "API V2 key must start with '{}' and a 3-byte keyspace id",
            mode as char
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_raw_keys_are_verbatim_and_v2_encoded() {
        assert_eq!(&*raw_data_key(ApiVersion::V1, b"abc"), b"abc");
        assert_eq!(&*raw_data_key(ApiVersion::V1ttl, b"abc"), b"abc");
        assert_eq!(raw_data_key(ApiVersion::V2, b"abc").len(), 9);
        assert!(check_v2_key(b"r\0\0\0k", RAW_MODE_PREFIX).is_ok());
        assert!(check_v2_key(b"x\0\0", TXN_MODE_PREFIX).is_err());
        assert!(check_v2_key(b"x\0\0\0k", RAW_MODE_PREFIX).is_err());
    }
}
