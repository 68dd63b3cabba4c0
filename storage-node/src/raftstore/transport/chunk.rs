//! Splitting large payloads into chunks on the wire and putting them back
//! together. Snapshots run to tens of MB; sent whole they would hold the
//! stream for the whole transfer and need a huge gRPC message limit. Chunks
//! let the batcher interleave them with small messages, and let the receiver
//! refuse an oversized message from its declared length before buffering it.
//!
//! The same code serves both directions: messages (`Message`) and replies
//! (`Reply`) implement [`Framed`].

use std::collections::HashMap;

use shale_proto::storeraftpb::{Chunk, Message, Reply};

/// Bytes a frame costs on the wire besides its payload (ids, tags, lengths):
/// a generous estimate used for batch budgets and message-size limits.
pub(crate) const FRAME_OVERHEAD: usize = 64;

/// A wire frame that carries a call id and a payload, whole or chunked.
pub(crate) trait Framed: Sized + Send + 'static {
    fn call_id(&self) -> u64;
    fn chunk(&self) -> Option<&Chunk>;
    fn set_chunk(&mut self, chunk: Chunk);
    fn payload_len(&self) -> usize;
    fn take_payload(&mut self) -> Vec<u8>;
    fn set_payload(&mut self, payload: Vec<u8>);
    /// An otherwise empty frame of the call: chunks after the first carry
    /// only the call id, the routing fields travel once with chunk 0.
    fn continuation(call_id: u64) -> Self;
    /// Estimated encoded size, for batch budgets.
    fn wire_len(&self) -> usize {
        self.payload_len() + FRAME_OVERHEAD
    }
}

impl Framed for Message {
    fn call_id(&self) -> u64 {
        self.call_id
    }
    fn chunk(&self) -> Option<&Chunk> {
        self.chunk.as_ref()
    }
    fn set_chunk(&mut self, chunk: Chunk) {
        self.chunk = Some(chunk);
    }
    fn payload_len(&self) -> usize {
        self.payload.len()
    }
    fn take_payload(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.payload)
    }
    fn set_payload(&mut self, payload: Vec<u8>) {
        self.payload = payload;
    }
    fn continuation(call_id: u64) -> Self {
        Message {
            call_id,
            ..Message::default()
        }
    }
}

impl Framed for Reply {
    fn call_id(&self) -> u64 {
        self.call_id
    }
    fn chunk(&self) -> Option<&Chunk> {
        self.chunk.as_ref()
    }
    fn set_chunk(&mut self, chunk: Chunk) {
        self.chunk = Some(chunk);
    }
    fn payload_len(&self) -> usize {
        self.payload.len()
    }
    fn take_payload(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.payload)
    }
    fn set_payload(&mut self, payload: Vec<u8>) {
        self.payload = payload;
    }
    fn continuation(call_id: u64) -> Self {
        Reply {
            call_id,
            ..Reply::default()
        }
    }
    fn wire_len(&self) -> usize {
        self.payload.len() + self.error.len() + FRAME_OVERHEAD
    }
}

/// A frame being sent in chunks.
pub(crate) struct Split<W> {
    /// Routing fields without the payload; goes out with chunk 0.
    head: Option<W>,
    call_id: u64,
    payload: Vec<u8>,
    offset: usize,
    index: u32,
}

impl<W: Framed> Split<W> {
    pub(crate) fn new(mut frame: W) -> Self {
        let payload = frame.take_payload();
        Split {
            call_id: frame.call_id(),
            head: Some(frame),
            payload,
            offset: 0,
            index: 0,
        }
    }

    pub(crate) fn call_id(&self) -> u64 {
        self.call_id
    }

    /// Wire size of the next chunk.
    pub(crate) fn next_len(&self, chunk_bytes: usize) -> usize {
        (self.payload.len() - self.offset).min(chunk_bytes) + FRAME_OVERHEAD
    }

    /// The next chunk, and whether it completes the payload.
    pub(crate) fn next_chunk(&mut self, chunk_bytes: usize) -> (W, bool) {
        let end = self
            .offset
            .saturating_add(chunk_bytes.max(1))
            .min(self.payload.len());
        let last = end == self.payload.len();
        let mut frame = match self.head.take() {
            Some(head) => head,
            None => W::continuation(self.call_id),
        };
        frame.set_payload(self.payload[self.offset..end].to_vec());
        frame.set_chunk(Chunk {
            index: self.index,
            total_len: if self.index == 0 {
                self.payload.len() as u64
            } else {
                0
            },
            last,
            abort: false,
        });
        self.offset = end;
        self.index = self.index.saturating_add(1);
        (frame, last)
    }

    /// The frame that tells the receiver to drop what it buffered, when the
    /// call is given up half way; `None` if no chunk went out yet.
    pub(crate) fn abort_frame(&self) -> Option<W> {
        if self.index == 0 {
            return None;
        }
        let mut frame = W::continuation(self.call_id);
        frame.set_chunk(Chunk {
            index: self.index,
            total_len: 0,
            last: false,
            abort: true,
        });
        Some(frame)
    }
}

/// Why a chunk sequence was refused. Any of these means the peer is broken
/// or hostile: the connection is dropped.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ChunkError {
    #[error("call {call_id}: message of {len} bytes exceeds the limit of {max}")]
    TooLarge { call_id: u64, len: u64, max: usize },
    #[error("call {call_id}: {len} more bytes would exceed the reassembly budget ({buffered} of {max} in use)")]
    OverBudget {
        call_id: u64,
        len: u64,
        buffered: usize,
        max: usize,
    },
    #[error("call {0}: a new message started while its previous one was still incomplete")]
    Restarted(u64),
    #[error("call {call_id}: chunk {index} arrived without chunk 0")]
    NotStarted { call_id: u64, index: u32 },
    #[error("call {call_id}: chunk {got} arrived, expected {expected}")]
    OutOfOrder {
        call_id: u64,
        expected: u32,
        got: u32,
    },
    #[error("call {call_id}: chunks carry more than the declared {total} bytes")]
    Overflow { call_id: u64, total: usize },
    #[error("call {call_id}: last chunk leaves {got} of the declared {total} bytes")]
    Truncated {
        call_id: u64,
        got: usize,
        total: usize,
    },
}

struct Partial<W> {
    head: W,
    data: Vec<u8>,
    total: usize,
    next_index: u32,
}

/// Rebuilds chunked frames of one connection. Memory is bounded: one message
/// may not exceed `max_message`, and all incomplete messages together may
/// not declare more than `max_buffered` bytes (counted from the declared
/// length, so a peer that never finishes cannot grow past it either).
pub(crate) struct Reassembler<W> {
    partial: HashMap<u64, Partial<W>>,
    buffered: usize,
    max_message: usize,
    max_buffered: usize,
}

impl<W: Framed> Reassembler<W> {
    pub(crate) fn new(max_message: usize, max_buffered: usize) -> Self {
        Reassembler {
            partial: HashMap::new(),
            buffered: 0,
            max_message,
            max_buffered,
        }
    }

    /// Bytes declared by incomplete messages.
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.buffered
    }

    /// Takes one frame; returns the whole frame once complete, `None` while
    /// more chunks are due (or after an abort).
    pub(crate) fn feed(&mut self, mut frame: W) -> Result<Option<W>, ChunkError> {
        let call_id = frame.call_id();
        let Some(chunk) = frame.chunk().copied() else {
            if self.partial.contains_key(&call_id) {
                return Err(ChunkError::Restarted(call_id));
            }
            if frame.payload_len() > self.max_message {
                return Err(ChunkError::TooLarge {
                    call_id,
                    len: frame.payload_len() as u64,
                    max: self.max_message,
                });
            }
            return Ok(Some(frame));
        };
        if chunk.abort {
            // Only the sender's own cancellation; nothing to answer.
            if let Some(p) = self.partial.remove(&call_id) {
                self.buffered -= p.total;
            }
            return Ok(None);
        }
        if chunk.index == 0 {
            return self.start(frame, chunk);
        }
        let Some(p) = self.partial.get_mut(&call_id) else {
            return Err(ChunkError::NotStarted {
                call_id,
                index: chunk.index,
            });
        };
        if chunk.index != p.next_index {
            return Err(ChunkError::OutOfOrder {
                call_id,
                expected: p.next_index,
                got: chunk.index,
            });
        }
        let data = frame.take_payload();
        if p.data.len() + data.len() > p.total {
            return Err(ChunkError::Overflow {
                call_id,
                total: p.total,
            });
        }
        p.data.extend_from_slice(&data);
        p.next_index = p.next_index.saturating_add(1);
        if chunk.last {
            return self.finish(call_id).map(Some);
        }
        Ok(None)
    }

    fn start(&mut self, mut frame: W, chunk: Chunk) -> Result<Option<W>, ChunkError> {
        let call_id = frame.call_id();
        if self.partial.contains_key(&call_id) {
            return Err(ChunkError::Restarted(call_id));
        }
        let declared = chunk.total_len;
        let total = usize::try_from(declared)
            .ok()
            .filter(|t| *t <= self.max_message)
            .ok_or(ChunkError::TooLarge {
                call_id,
                len: declared,
                max: self.max_message,
            })?;
        if self.buffered + total > self.max_buffered {
            return Err(ChunkError::OverBudget {
                call_id,
                len: declared,
                buffered: self.buffered,
                max: self.max_buffered,
            });
        }
        let first = frame.take_payload();
        if first.len() > total {
            return Err(ChunkError::Overflow { call_id, total });
        }
        // The declared length is already within budget, so reserving it up
        // front is bounded and saves the copies of growing a 20 MB buffer.
        let mut data = Vec::with_capacity(total);
        data.extend_from_slice(&first);
        self.buffered += total;
        self.partial.insert(
            call_id,
            Partial {
                head: frame,
                data,
                total,
                next_index: 1,
            },
        );
        if chunk.last {
            return self.finish(call_id).map(Some);
        }
        Ok(None)
    }

    fn finish(&mut self, call_id: u64) -> Result<W, ChunkError> {
        let Some(p) = self.partial.remove(&call_id) else {
            return Err(ChunkError::NotStarted { call_id, index: 0 });
        };
        self.buffered -= p.total;
        if p.data.len() != p.total {
            return Err(ChunkError::Truncated {
                call_id,
                got: p.data.len(),
                total: p.total,
            });
        }
        let mut head = p.head;
        head.set_payload(p.data);
        Ok(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(call_id: u64, len: usize) -> Message {
        Message {
            call_id,
            region_id: 7,
            from_peer: 1,
            to_peer: 2,
            kind: 3,
            payload: (0..len).map(|i| (i % 251) as u8).collect(),
            chunk: None,
        }
    }

    fn split_all(frame: Message, chunk_bytes: usize) -> Vec<Message> {
        let mut split = Split::new(frame);
        let mut out = Vec::new();
        loop {
            let (f, last) = split.next_chunk(chunk_bytes);
            out.push(f);
            if last {
                return out;
            }
        }
    }

    #[test]
    fn split_and_reassemble_round_trip() {
        let original = message(5, 10_000);
        let chunks = split_all(original.clone(), 3_000);
        assert_eq!(chunks.len(), 4);
        assert_eq!(chunks[1].region_id, 0, "routing fields travel once");
        let mut r = Reassembler::new(1 << 20, 1 << 20);
        let mut done = None;
        for c in chunks {
            done = r.feed(c).unwrap();
        }
        let mut whole = done.unwrap();
        whole.chunk = None;
        assert_eq!(whole, original);
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn exact_multiple_and_empty_payloads() {
        assert_eq!(split_all(message(1, 6_000), 3_000).len(), 2);
        let empty = split_all(message(1, 0), 3_000);
        assert_eq!(empty.len(), 1);
        assert!(empty[0].chunk.unwrap().last);
    }

    #[test]
    fn refuses_oversized_declaration_before_buffering() {
        let mut r = Reassembler::new(1_000, 10_000);
        let mut first = split_all(message(1, 5_000), 500).remove(0);
        assert!(matches!(
            r.feed(first.clone()),
            Err(ChunkError::TooLarge { .. })
        ));
        first.chunk = Some(Chunk {
            total_len: u64::MAX,
            ..first.chunk.unwrap()
        });
        assert!(matches!(r.feed(first), Err(ChunkError::TooLarge { .. })));
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn budget_caps_concurrent_incomplete_messages() {
        let mut r = Reassembler::new(1_000, 1_500);
        let a = split_all(message(1, 1_000), 100).remove(0);
        let b = split_all(message(2, 1_000), 100).remove(0);
        assert_eq!(r.feed(a).unwrap(), None);
        assert!(matches!(r.feed(b), Err(ChunkError::OverBudget { .. })));
    }

    #[test]
    fn rejects_bad_sequences() {
        let chunks = split_all(message(1, 1_000), 300);
        let mut r = Reassembler::new(10_000, 10_000);
        assert!(matches!(
            r.feed(chunks[1].clone()),
            Err(ChunkError::NotStarted { .. })
        ));
        r.feed(chunks[0].clone()).unwrap();
        assert!(matches!(
            r.feed(chunks[2].clone()),
            Err(ChunkError::OutOfOrder { .. })
        ));
        assert!(matches!(
            r.feed(chunks[0].clone()),
            Err(ChunkError::Restarted(1))
        ));
        assert!(matches!(
            r.feed(message(1, 10)),
            Err(ChunkError::Restarted(1))
        ));

        // More data than declared, and a "last" chunk that comes up short.
        let mut r = Reassembler::new(10_000, 10_000);
        r.feed(chunks[0].clone()).unwrap();
        let mut big = chunks[1].clone();
        big.payload = vec![0; 2_000];
        assert!(matches!(r.feed(big), Err(ChunkError::Overflow { .. })));
        let mut r = Reassembler::new(10_000, 10_000);
        r.feed(chunks[0].clone()).unwrap();
        let mut short = chunks[1].clone();
        short.chunk.as_mut().unwrap().last = true;
        assert!(matches!(r.feed(short), Err(ChunkError::Truncated { .. })));
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn abort_releases_the_buffer() {
        let mut split = Split::new(message(9, 1_000));
        assert!(
            split.abort_frame().is_none(),
            "nothing sent, nothing to abort"
        );
        let (first, _) = split.next_chunk(100);
        let mut r = Reassembler::new(10_000, 10_000);
        r.feed(first).unwrap();
        assert_eq!(r.buffered(), 1_000);
        assert_eq!(r.feed(split.abort_frame().unwrap()).unwrap(), None);
        assert_eq!(r.buffered(), 0);
        // The call id may be used again afterwards.
        assert!(r.feed(message(9, 10)).unwrap().is_some());
    }
}
