//! The receiving side: the `StoreRaft` gRPC service. Each incoming stream is
//! one peer store's connection: a reader task reassembles messages and
//! dispatches each on its own task (Regions never wait on each other), a
//! writer task sends the replies back in batches.
//!
//! Memory per connection is bounded: at most `max_inflight_per_connection`
//! messages are being dispatched or have replies waiting for the wire (when
//! they are all taken the reader stops reading, and HTTP/2 flow control
//! stalls the sender), and reassembly buffers are capped. A peer that breaks
//! the protocol is disconnected with an error log.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use shale_proto::storeraftpb::store_raft_server::StoreRaft;
use shale_proto::storeraftpb::{Message, MessageBatch, Reply, ReplyBatch, ReplyStatus};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use super::chunk::Reassembler;
use super::outbox::Outbox;
use super::{bump, Envelope, Latch, Shared, FROM_STORE_KEY, TO_STORE_KEY};

/// Dispatcher errors longer than this are cut: they travel in reply frames,
/// which the batch budget and the gRPC message limit must cover.
const MAX_ERROR_LEN: usize = 1024;

/// The tonic service; get it from `Transport::service`.
pub struct StoreRaftService {
    shared: Arc<Shared>,
}

impl StoreRaftService {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        StoreRaftService { shared }
    }
}

fn store_id_from(metadata: &MetadataMap, key: &str) -> Result<u64, Status> {
    metadata
        .get(key)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|id| *id != 0)
        .ok_or_else(|| Status::invalid_argument(format!("missing or bad {key} metadata")))
}

type ReplyStream = ReceiverStream<Result<ReplyBatch, Status>>;

#[tonic::async_trait]
impl StoreRaft for StoreRaftService {
    type RaftStream = ReplyStream;

    async fn raft(
        &self,
        request: Request<Streaming<MessageBatch>>,
    ) -> Result<Response<ReplyStream>, Status> {
        let shared = &self.shared;
        let from_store = store_id_from(request.metadata(), FROM_STORE_KEY)?;
        let to_store = store_id_from(request.metadata(), TO_STORE_KEY)?;
        if to_store != shared.store_id {
            return Err(Status::failed_precondition(format!(
                "this is store {}, not store {to_store}",
                shared.store_id
            )));
        }
        if shared.shutdown.is_closed() {
            return Err(Status::unavailable(format!(
                "store {} is shutting down",
                shared.store_id
            )));
        }
        if shared.faults.blocks(from_store) {
            bump(&shared.counters.fault_drops, 1);
            return Err(Status::unavailable(format!(
                "store {} is cut off from store {from_store} (fault injection)",
                shared.store_id
            )));
        }
        let peer = request.remote_addr();
        bump(&shared.counters.inbound_streams, 1);
        tracing::info!(
            store_id = shared.store_id,
            from_store,
            ?peer,
            "store connected"
        );
        // Capacity 1, as on the sending side: replies that finish while one
        // batch is being written leave together in the next.
        let (out, rx) = mpsc::channel(1);
        let inbound = Inbound {
            shared: shared.clone(),
            from_store,
            permits: Arc::new(Semaphore::new(
                shared.config.max_inflight_per_connection.max(1),
            )),
            stop: Latch::new(),
        };
        tokio::spawn(inbound.run(request.into_inner(), out));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

type ReplyQueue = mpsc::UnboundedSender<(Reply, OwnedSemaphorePermit)>;

/// How an incoming stream ended.
enum End {
    /// The peer closed its side cleanly.
    PeerDone,
    /// This transport is shutting down.
    Shutdown,
    /// The connection went away (reset, closed socket).
    Lost(Status),
    /// The peer broke the protocol: garbage, oversized or bad chunks.
    Violation(Status),
}

impl End {
    fn from_stream_error(status: Status) -> End {
        use tonic::Code;
        // Undecodable protobuf (`Internal`) and size-limit breaches are the
        // peer's fault. tonic reports HTTP/2 resets as `Internal` too, with
        // this prefix: those are the connection going away, as is anything
        // else. This only decides the log level and the counter.
        let h2 = status.message().starts_with("h2 protocol error");
        match status.code() {
            Code::Internal if !h2 => End::Violation(status),
            Code::OutOfRange | Code::ResourceExhausted => End::Violation(status),
            _ => End::Lost(status),
        }
    }
}

/// One peer store's incoming stream.
struct Inbound {
    shared: Arc<Shared>,
    from_store: u64,
    permits: Arc<Semaphore>,
    /// Closed on a protocol error: stops the reply writer at once.
    stop: Latch,
}

impl Inbound {
    async fn run(
        self,
        messages: Streaming<MessageBatch>,
        out: mpsc::Sender<Result<ReplyBatch, Status>>,
    ) {
        let (replies, replies_rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write_replies(
            self.shared.clone(),
            self.stop.clone(),
            replies_rx,
            out.clone(),
        ));
        let store_id = self.shared.store_id;
        let from_store = self.from_store;
        match self.read(messages, &replies).await {
            End::PeerDone => {
                // The writer drains the replies still being dispatched, then
                // ends the stream.
                drop(replies);
                let _ = writer.await;
                tracing::info!(store_id, from_store, "store disconnected");
            }
            End::Lost(status) => {
                tracing::warn!(store_id, from_store, "stream from store lost: {status}");
                self.stop.close();
            }
            End::Shutdown => {
                tracing::info!(
                    store_id,
                    from_store,
                    "closing the stream of store: shutting down"
                );
                self.stop.close();
                let status = Status::unavailable(format!("store {store_id} is shutting down"));
                let _ = writer.await;
                let _ = out.try_send(Err(status));
            }
            End::Violation(status) => {
                bump(&self.shared.counters.protocol_errors, 1);
                tracing::error!(
                    store_id,
                    from_store,
                    "dropping the connection of store: {}",
                    status.message()
                );
                self.stop.close();
                let _ = writer.await;
                // Best effort: the peer learns why before the stream ends.
                let _ = tokio::time::timeout(Duration::from_secs(1), out.send(Err(status))).await;
            }
        }
    }

    /// Reads until the stream ends, one way or another.
    async fn read(&self, mut messages: Streaming<MessageBatch>, replies: &ReplyQueue) -> End {
        let config = &self.shared.config;
        let shutdown = &self.shared.shutdown;
        let mut reassembler: Reassembler<Message> =
            Reassembler::new(config.max_message_bytes, config.max_reassembly_bytes);
        loop {
            let next = tokio::select! {
                next = messages.message() => next,
                () = shutdown.closed() => return End::Shutdown,
            };
            let batch = match next {
                Ok(Some(batch)) => batch,
                Ok(None) => return End::PeerDone,
                Err(status) => return End::from_stream_error(status),
            };
            for frame in batch.messages {
                let message = match reassembler.feed(frame) {
                    Ok(Some(message)) => message,
                    Ok(None) => continue,
                    Err(e) => return End::Violation(Status::invalid_argument(e.to_string())),
                };
                // Backpressure: wait for a slot before taking on more.
                let permit = tokio::select! {
                    permit = self.permits.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        // Never closed; treat it like a shutdown if it were.
                        Err(_) => return End::Shutdown,
                    },
                    () = shutdown.closed() => return End::Shutdown,
                };
                self.dispatch(message, permit, replies.clone());
            }
        }
    }

    /// Starts one message's dispatch on its own task.
    fn dispatch(&self, message: Message, permit: OwnedSemaphorePermit, replies: ReplyQueue) {
        let call_id = message.call_id;
        let refuse = |status: ReplyStatus, error: String| Reply {
            call_id,
            status: status as i32,
            error,
            payload: Vec::new(),
            chunk: None,
        };
        let store_id = self.shared.store_id;
        if self.shared.faults.blocks(self.from_store) {
            bump(&self.shared.counters.fault_drops, 1);
            let error = format!("store {store_id} dropped the message (fault injection)");
            let _ = replies.send((refuse(ReplyStatus::Dropped, error), permit));
            return;
        }
        let dispatcher = self.shared.dispatcher.read().clone();
        let Some(dispatcher) = dispatcher else {
            let error = format!("store {store_id} has no Raft layer yet");
            let _ = replies.send((refuse(ReplyStatus::NotReady, error), permit));
            return;
        };
        let from_store = self.from_store;
        let envelope = Envelope {
            region_id: message.region_id,
            from_peer: message.from_peer,
            to_peer: message.to_peer,
            kind: message.kind,
            payload: message.payload,
        };
        let region_id = envelope.region_id;
        let max_reply = self.shared.config.max_message_bytes;
        tokio::spawn(async move {
            // A panicking Region must answer its caller rather than leave it
            // waiting for the timeout.
            let future = std::panic::catch_unwind(AssertUnwindSafe(|| {
                dispatcher.dispatch(from_store, envelope)
            }));
            let result = match future {
                Ok(future) => AssertUnwindSafe(future).catch_unwind().await,
                Err(panic) => Err(panic),
            }
            .unwrap_or_else(|_| {
                tracing::error!(region_id, from_store, "Raft message dispatch panicked");
                Err("dispatch panicked".to_string())
            });
            // The caller would drop the whole connection over an oversized
            // reply; fail just this call instead.
            let result = result.and_then(|payload| match payload.len() {
                len if len > max_reply => Err(format!(
                    "reply of {len} bytes exceeds the limit of {max_reply}"
                )),
                _ => Ok(payload),
            });
            let reply = match result {
                Ok(payload) => Reply {
                    call_id,
                    status: ReplyStatus::Ok as i32,
                    error: String::new(),
                    payload,
                    chunk: None,
                },
                Err(mut error) => {
                    truncate(&mut error, MAX_ERROR_LEN);
                    Reply {
                        call_id,
                        status: ReplyStatus::DispatchError as i32,
                        error,
                        payload: Vec::new(),
                        chunk: None,
                    }
                }
            };
            // Fails only if the connection was dropped meanwhile.
            let _ = replies.send((reply, permit));
        });
    }
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// Finished replies -> reply batches. Each reply's in-flight permit is
/// released once it is on its way, so unsent replies count against the
/// connection's limit.
async fn write_replies(
    shared: Arc<Shared>,
    stop: Latch,
    mut replies: mpsc::UnboundedReceiver<(Reply, OwnedSemaphorePermit)>,
    out: mpsc::Sender<Result<ReplyBatch, Status>>,
) {
    let counters = &shared.counters;
    let shutdown = &shared.shutdown;
    let mut outbox: Outbox<Reply, OwnedSemaphorePermit> = Outbox::new(shared.config.batch_limits());
    loop {
        if outbox.is_empty() {
            tokio::select! {
                next = replies.recv() => match next {
                    Some((reply, permit)) => outbox.push(reply, permit),
                    None => return,
                },
                () = stop.closed() => return,
                () = shutdown.closed() => return,
            }
        }
        // As on the sending side: wait for the stream, then batch whatever
        // finished meanwhile.
        let slot = tokio::select! {
            slot = out.reserve() => match slot {
                Ok(slot) => slot,
                // The peer is gone; its stream is being torn down.
                Err(_) => return,
            },
            () = stop.closed() => return,
            () = shutdown.closed() => return,
        };
        while let Ok((reply, permit)) = replies.try_recv() {
            outbox.push(reply, permit);
        }
        let batch = outbox.next_batch(|_| true);
        bump(&counters.reply_batches_sent, 1);
        bump(&counters.reply_frames_sent, batch.len() as u64);
        slot.send(Ok(ReplyBatch { replies: batch }));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn truncate_respects_char_boundaries() {
        let mut s = "héllo".to_string();
        super::truncate(&mut s, 2);
        assert_eq!(s, "h");
        let mut s = "abc".to_string();
        super::truncate(&mut s, 10);
        assert_eq!(s, "abc");
    }
}
