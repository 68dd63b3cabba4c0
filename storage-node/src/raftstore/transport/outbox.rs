//! Frames waiting to go out on one stream, cut into wire batches. Whatever
//! queued up while the previous batch was being written leaves together in
//! the next one. Small frames (heartbeats, votes) go first; chunks of large
//! ones (snapshots) fill the rest of the batch, round-robin, at least one per
//! batch, so a snapshot keeps moving yet never holds a heartbeat back by more
//! than one batch.

use std::collections::VecDeque;

use super::chunk::{Framed, Split};

/// How big one wire batch may get.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BatchLimits {
    pub max_messages: usize,
    pub max_bytes: usize,
    pub chunk_bytes: usize,
}

/// `T` is a ticket that lives as long as its frame is queued (the server
/// keeps its in-flight permit there, so unsent replies count against the
/// backpressure limit); it is dropped once the frame is fully emitted.
pub(crate) struct Outbox<W, T> {
    whole: VecDeque<(W, T)>,
    split: VecDeque<(Split<W>, T)>,
    limits: BatchLimits,
}

impl<W: Framed, T> Outbox<W, T> {
    pub(crate) fn new(limits: BatchLimits) -> Self {
        Outbox {
            whole: VecDeque::new(),
            split: VecDeque::new(),
            limits,
        }
    }

    pub(crate) fn push(&mut self, frame: W, ticket: T) {
        if frame.payload_len() > self.limits.chunk_bytes {
            self.split.push_back((Split::new(frame), ticket));
        } else {
            self.whole.push_back((frame, ticket));
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.whole.is_empty() && self.split.is_empty()
    }

    /// The next batch to write; empty only if nothing wanted is queued.
    /// `wanted(call_id)` false means the caller gave up: its frame is
    /// skipped, or its chunked transfer aborted.
    pub(crate) fn next_batch(&mut self, wanted: impl Fn(u64) -> bool) -> Vec<W> {
        let limits = self.limits;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let full = |out: &Vec<W>, bytes: usize, add: usize| {
            out.len() >= limits.max_messages || bytes + add > limits.max_bytes
        };

        while let Some((frame, _)) = self.whole.front() {
            if !wanted(frame.call_id()) {
                self.whole.pop_front();
                continue;
            }
            let len = frame.wire_len();
            if !out.is_empty() && full(&out, bytes, len) {
                break;
            }
            if let Some((frame, _ticket)) = self.whole.pop_front() {
                bytes += len;
                out.push(frame);
            }
        }

        let mut chunks = 0usize;
        while let Some((split, _)) = self.split.front_mut() {
            if !wanted(split.call_id()) {
                if let Some(abort) = split.abort_frame() {
                    out.push(abort);
                }
                self.split.pop_front();
                continue;
            }
            let len = split.next_len(limits.chunk_bytes);
            if chunks > 0 && full(&out, bytes, len) {
                break;
            }
            let (frame, last) = split.next_chunk(limits.chunk_bytes);
            bytes += len;
            chunks += 1;
            out.push(frame);
            // Round-robin: a finished transfer leaves, an unfinished one
            // goes behind the others.
            if let Some(entry) = self.split.pop_front() {
                if !last {
                    self.split.push_back(entry);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use shale_proto::storeraftpb::Message;

    use super::*;

    const LIMITS: BatchLimits = BatchLimits {
        max_messages: 4,
        max_bytes: 10_000,
        chunk_bytes: 1_000,
    };

    fn msg(call_id: u64, len: usize) -> Message {
        Message {
            call_id,
            payload: vec![1; len],
            ..Message::default()
        }
    }

    #[test]
    fn batches_respect_message_and_byte_limits() {
        let mut o: Outbox<Message, ()> = Outbox::new(LIMITS);
        for i in 0..10 {
            o.push(msg(i, 10), ());
        }
        let sizes: Vec<usize> = std::iter::from_fn(|| {
            let b = o.next_batch(|_| true);
            (!b.is_empty()).then_some(b.len())
        })
        .collect();
        assert_eq!(sizes, vec![4, 4, 2]);

        for i in 0..5 {
            o.push(msg(i, 900), ());
        }
        let first = o.next_batch(|_| true);
        assert!(first.iter().map(Framed::wire_len).sum::<usize>() <= LIMITS.max_bytes);
    }

    #[test]
    fn large_frames_interleave_with_small_ones() {
        let mut o: Outbox<Message, ()> = Outbox::new(BatchLimits {
            max_bytes: 2_500,
            ..LIMITS
        });
        o.push(msg(1, 20_000), ());
        o.push(msg(2, 20_000), ());
        let b = o.next_batch(|_| true);
        // Two chunks fit the budget, one of each transfer.
        assert_eq!(b.iter().map(|m| m.call_id).collect::<Vec<_>>(), vec![1, 2]);
        o.push(msg(3, 10), ());
        let b = o.next_batch(|_| true);
        assert_eq!(b[0].call_id, 3, "the heartbeat jumps the queue");
        assert!(b[1..].iter().all(|m| m.chunk.is_some()));
    }

    #[test]
    fn cancelled_calls_are_skipped_or_aborted() {
        let mut o: Outbox<Message, ()> = Outbox::new(LIMITS);
        o.push(msg(1, 10), ());
        o.push(msg(2, 5_000), ());
        let b = o.next_batch(|id| id != 1);
        assert_eq!(b.len(), 4, "whole frame skipped, chunks of call 2 sent");
        let b = o.next_batch(|_| false);
        assert_eq!(b.len(), 1);
        assert!(b[0].chunk.unwrap().abort);
        assert!(o.is_empty());
    }

    #[test]
    fn tickets_are_released_once_sent() {
        let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(2));
        let mut o: Outbox<Message, tokio::sync::OwnedSemaphorePermit> = Outbox::new(LIMITS);
        o.push(msg(1, 10), permits.clone().try_acquire_owned().unwrap());
        o.push(msg(2, 10_000), permits.clone().try_acquire_owned().unwrap());
        assert_eq!(permits.available_permits(), 0);
        o.next_batch(|_| true);
        assert_eq!(permits.available_permits(), 1);
        while !o.is_empty() {
            o.next_batch(|_| true);
        }
        assert_eq!(permits.available_permits(), 2);
    }
}
