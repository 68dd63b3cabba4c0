//! Memcomparable byte encoding, as TiKV and its clients use for transactional
//! keys and Region boundaries: the encoded form sorts like the original bytes
//! and can be followed by more fields (a timestamp) without ambiguity.
//!
//! Format: the key is cut into 8-byte groups; the last group is padded with
//! zeros. Each group is followed by a marker `255 - padding`.

use thiserror::Error;

const GROUP: usize = 8;
const MARKER: u8 = 0xff;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("encoded key is truncated")]
    Truncated,
    #[error("encoded key has a bad group marker")]
    BadMarker,
    #[error("encoded key has non-zero padding")]
    BadPadding,
}

/// Bytes `encode_bytes` produces for a key of `len` bytes.
pub fn encoded_len(len: usize) -> usize {
    (len / GROUP + 1) * (GROUP + 1)
}

pub fn encode_bytes(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(key.len()) + 8);
    encode_bytes_into(key, &mut out);
    out
}

pub fn encode_bytes_into(key: &[u8], out: &mut Vec<u8>) {
    let mut chunks = key.chunks_exact(GROUP);
    for chunk in &mut chunks {
        out.extend_from_slice(chunk);
        out.push(MARKER);
    }
    let rest = chunks.remainder();
    let pad = GROUP - rest.len();
    out.extend_from_slice(rest);
    out.extend(std::iter::repeat_n(0u8, pad));
    out.push(MARKER - pad as u8);
}

/// Decodes one encoded key from the front of `data`; returns the key and how
/// many bytes it occupied.
pub fn decode_bytes(data: &[u8]) -> Result<(Vec<u8>, usize), CodecError> {
    let mut key = Vec::with_capacity(data.len() / (GROUP + 1) * GROUP);
    let mut offset = 0;
    loop {
        let group = data
            .get(offset..offset + GROUP + 1)
            .ok_or(CodecError::Truncated)?;
        offset += GROUP + 1;
        let marker = group[GROUP];
        let pad = (MARKER - marker) as usize;
        if pad == 0 {
            key.extend_from_slice(&group[..GROUP]);
            continue;
        }
        if pad > GROUP {
            return Err(CodecError::BadMarker);
        }
        let (real, padding) = group[..GROUP].split_at(GROUP - pad);
        if padding.iter().any(|b| *b != 0) {
            return Err(CodecError::BadPadding);
        }
        key.extend_from_slice(real);
        return Ok((key, offset));
    }
}

/// Appends `ts` so that larger timestamps sort first (newest version first).
pub fn append_ts_desc(out: &mut Vec<u8>, ts: u64) {
    out.extend_from_slice(&(!ts).to_be_bytes());
}

/// Reads a timestamp written by [`append_ts_desc`] from the last 8 bytes.
pub fn split_ts_desc(data: &[u8]) -> Result<(&[u8], u64), CodecError> {
    if data.len() < 8 {
        return Err(CodecError::Truncated);
    }
    let (head, tail) = data.split_at(data.len() - 8);
    let mut buf = [0u8; 8];
    buf.copy_from_slice(tail);
    Ok((head, !u64::from_be_bytes(buf)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        assert_eq!(encode_bytes(b""), vec![0, 0, 0, 0, 0, 0, 0, 0, 247]);
        assert_eq!(
            encode_bytes(b"12345678"),
            vec![b'1', b'2', b'3', b'4', b'5', b'6', b'7', b'8', 255, 0, 0, 0, 0, 0, 0, 0, 0, 247]
        );
        assert_eq!(encode_bytes(b"ab"), vec![b'a', b'b', 0, 0, 0, 0, 0, 0, 249]);
    }

    #[test]
    fn round_trip_and_order() {
        let keys: Vec<Vec<u8>> = vec![
            vec![],
            vec![0],
            vec![0, 0],
            b"a".to_vec(),
            b"a\x00".to_vec(),
            b"abcdefgh".to_vec(),
            b"abcdefgh\x00".to_vec(),
            b"abcdefghi".to_vec(),
            vec![0xff; 17],
        ];
        for k in &keys {
            let enc = encode_bytes(k);
            assert_eq!(enc.len(), encoded_len(k.len()));
            let (dec, used) = decode_bytes(&enc).unwrap();
            assert_eq!(&dec, k);
            assert_eq!(used, enc.len());
        }
        for a in &keys {
            for b in &keys {
                assert_eq!(
                    a.cmp(b),
                    encode_bytes(a).cmp(&encode_bytes(b)),
                    "{a:?} vs {b:?}"
                );
            }
        }
    }

    #[test]
    fn rejects_malformed_input() {
        assert_eq!(decode_bytes(b"abc"), Err(CodecError::Truncated));
        assert_eq!(
            decode_bytes(&[1, 0, 0, 0, 0, 0, 0, 0, 100]),
            Err(CodecError::BadMarker)
        );
        assert_eq!(
            decode_bytes(&[1, 2, 0, 0, 0, 0, 0, 0, 248]),
            Err(CodecError::BadPadding)
        );
    }

    #[test]
    fn timestamps_sort_newest_first() {
        let mut a = encode_bytes(b"k");
        append_ts_desc(&mut a, 10);
        let mut b = encode_bytes(b"k");
        append_ts_desc(&mut b, 20);
        assert!(b < a);
        assert_eq!(split_ts_desc(&a).unwrap().1, 10);
    }
}
