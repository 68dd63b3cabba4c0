//! The sending side: one connection per peer store, carrying one
//! bidirectional stream. A writer task turns queued calls into wire batches;
//! a reader task matches replies to waiting calls by call id. When either
//! end of the stream breaks, every waiting call fails at once with
//! `Unreachable` and the next call opens a new connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use shale_proto::storeraftpb::store_raft_client::StoreRaftClient;
use shale_proto::storeraftpb::{Message, MessageBatch, Reply, ReplyBatch, ReplyStatus};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Endpoint;
use tonic::Streaming;

use super::chunk::Reassembler;
use super::outbox::Outbox;
use super::{bump, Envelope, Latch, Shared, TransportError, FROM_STORE_KEY, TO_STORE_KEY};

type CallResult = Result<Vec<u8>, TransportError>;

/// Connections by store id.
#[derive(Default)]
pub(super) struct Peers {
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
}

#[derive(Default)]
struct Slot {
    current: Mutex<Option<Arc<Connection>>>,
    /// Held while connecting, so concurrent calls make one attempt; keeps
    /// the last failure so calls arriving meanwhile fail with it at once.
    connecting: tokio::sync::Mutex<Option<Failure>>,
}

struct Failure {
    at: Instant,
    addr: String,
    error: TransportError,
}

impl Slot {
    fn usable(&self, addr: &str) -> Option<Arc<Connection>> {
        self.current
            .lock()
            .as_ref()
            .filter(|c| c.addr == addr && !c.calls.done.is_closed())
            .cloned()
    }
}

impl Peers {
    /// The live connection to `to_store`, opening one if needed.
    pub(super) async fn connection(
        &self,
        shared: &Arc<Shared>,
        to_store: u64,
        addr: &str,
    ) -> Result<Arc<Connection>, TransportError> {
        let slot = self.slots.lock().entry(to_store).or_default().clone();
        if let Some(conn) = slot.usable(addr) {
            return Ok(conn);
        }
        let asked_at = Instant::now();
        let mut last_failure = slot.connecting.lock().await;
        if let Some(conn) = slot.usable(addr) {
            return Ok(conn);
        }
        if let Some(f) = last_failure.as_ref().filter(|f| f.addr == addr) {
            if f.at >= asked_at || f.at.elapsed() < shared.config.reconnect_backoff {
                return Err(f.error.clone());
            }
        }
        match Connection::open(shared, to_store, addr).await {
            Ok(conn) => {
                // A shutdown that raced with the connect must not be undone.
                if shared.shutdown.is_closed() {
                    conn.calls.close("the transport is shut down");
                    return Err(TransportError::Unreachable(
                        "the transport is shut down".into(),
                    ));
                }
                *slot.current.lock() = Some(conn.clone());
                *last_failure = None;
                Ok(conn)
            }
            Err(error) => {
                // Warn on the first failure only: a dead peer is retried on
                // every Raft tick.
                if last_failure.is_none() {
                    tracing::warn!(to_store, addr, "cannot connect to store: {error}");
                } else {
                    tracing::debug!(to_store, addr, "cannot connect to store: {error}");
                }
                *last_failure = Some(Failure {
                    at: Instant::now(),
                    addr: addr.to_string(),
                    error: error.clone(),
                });
                Err(error)
            }
        }
    }

    pub(super) fn close_all(&self, reason: &str) {
        let slots: Vec<Arc<Slot>> = self.slots.lock().values().cloned().collect();
        for slot in slots {
            if let Some(conn) = slot.current.lock().take() {
                conn.calls.close(reason);
            }
        }
    }
}

/// Calls waiting for replies on one connection, and whether it is closed.
/// One lock guards both so that no call registers after the final sweep.
struct Calls {
    state: Mutex<CallsState>,
    /// Closed with the connection; stops the writer and the reader.
    done: Latch,
    to_store: u64,
}

#[derive(Default)]
struct CallsState {
    waiting: HashMap<u64, oneshot::Sender<CallResult>>,
    closed: Option<String>,
}

impl Calls {
    fn register(
        &self,
        call_id: u64,
        tx: oneshot::Sender<CallResult>,
    ) -> Result<(), TransportError> {
        let mut state = self.state.lock();
        if let Some(reason) = &state.closed {
            return Err(TransportError::Unreachable(reason.clone()));
        }
        state.waiting.insert(call_id, tx);
        Ok(())
    }

    fn complete(&self, call_id: u64, result: CallResult) {
        match self.state.lock().waiting.remove(&call_id) {
            // The caller may be gone already; nothing to do then.
            Some(tx) => {
                let _ = tx.send(result);
            }
            None => tracing::debug!(call_id, "reply for a call nobody waits for"),
        }
    }

    /// Fails every waiting call; the first reason sticks.
    fn close(&self, reason: &str) {
        let waiting = {
            let mut state = self.state.lock();
            if state.closed.is_none() {
                state.closed = Some(format!("store {}: {reason}", self.to_store));
            }
            std::mem::take(&mut state.waiting)
        };
        self.done.close();
        let error = TransportError::Unreachable(format!("store {}: {reason}", self.to_store));
        for (_, tx) in waiting {
            let _ = tx.send(Err(error.clone()));
        }
    }
}

/// Removes a call's entry when the caller stops waiting (timeout or drop),
/// so the writer skips its unsent frames and a late reply is ignored.
struct Deregister<'a> {
    calls: &'a Calls,
    call_id: u64,
}

impl Drop for Deregister<'_> {
    fn drop(&mut self) {
        self.calls.state.lock().waiting.remove(&self.call_id);
    }
}

pub(super) struct Connection {
    addr: String,
    calls: Arc<Calls>,
    queue: mpsc::UnboundedSender<Message>,
    /// Bounds calls queued or waiting (the queue itself is unbounded).
    pending_limit: Semaphore,
    next_call_id: AtomicU64,
}

fn unreachable(to_store: u64, addr: &str, what: &str, e: impl std::fmt::Display) -> TransportError {
    TransportError::Unreachable(format!("store {to_store} at {addr}: {what}: {e}"))
}

impl Connection {
    async fn open(
        shared: &Arc<Shared>,
        to_store: u64,
        addr: &str,
    ) -> Result<Arc<Connection>, TransportError> {
        let config = &shared.config;
        let url = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let window = u32::try_from(config.wire_message_limit()).unwrap_or(u32::MAX);
        let endpoint = Endpoint::from_shared(url)
            .map_err(|e| unreachable(to_store, addr, "bad address", e))?
            .connect_timeout(config.connect_timeout)
            // Small Raft messages must not wait for Nagle's algorithm.
            .tcp_nodelay(true)
            .http2_keep_alive_interval(config.keepalive_interval)
            .keep_alive_timeout(config.keepalive_timeout)
            .keep_alive_while_idle(true)
            // Room for a whole reply batch without waiting for window updates.
            .initial_stream_window_size(window)
            .initial_connection_window_size(window);
        let channel = tokio::time::timeout(config.connect_timeout, endpoint.connect())
            .await
            .map_err(|_| unreachable(to_store, addr, "connect", "timed out"))?
            .map_err(|e| unreachable(to_store, addr, "connect", e))?;
        let limit = config.wire_message_limit();
        let mut client = StoreRaftClient::new(channel)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit);

        // Capacity 1: while tonic writes one batch, calls pile up in the
        // queue and leave together in the next.
        let (batch_tx, batch_rx) = mpsc::channel::<MessageBatch>(1);
        let mut request = tonic::Request::new(ReceiverStream::new(batch_rx));
        let md = request.metadata_mut();
        md.insert(FROM_STORE_KEY, AsciiMetadataValue::from(shared.store_id));
        md.insert(TO_STORE_KEY, AsciiMetadataValue::from(to_store));
        let replies = tokio::time::timeout(config.connect_timeout, client.raft(request))
            .await
            .map_err(|_| unreachable(to_store, addr, "open stream", "timed out"))?
            .map_err(|status| unreachable(to_store, addr, "open stream", status.message()))?
            .into_inner();

        let calls = Arc::new(Calls {
            state: Mutex::new(CallsState::default()),
            done: Latch::new(),
            to_store,
        });
        let (queue, queue_rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(
            shared.clone(),
            calls.clone(),
            queue_rx,
            batch_tx,
        ));
        tokio::spawn(read_loop(shared.clone(), calls.clone(), replies));
        bump(&shared.counters.connects, 1);
        tracing::info!(
            store_id = shared.store_id,
            to_store,
            addr,
            "connected to store"
        );
        Ok(Arc::new(Connection {
            addr: addr.to_string(),
            calls,
            queue,
            pending_limit: Semaphore::new(config.max_pending_calls.max(1)),
            next_call_id: AtomicU64::new(1),
        }))
    }

    pub(super) async fn call(&self, envelope: Envelope) -> Result<Vec<u8>, TransportError> {
        let closed = || {
            let reason = self.calls.state.lock().closed.clone();
            TransportError::Unreachable(reason.unwrap_or_else(|| "connection closed".into()))
        };
        // The semaphore is never closed; an error cannot happen, but map it.
        let _pending = self.pending_limit.acquire().await.map_err(|_| closed())?;
        let call_id = self.next_call_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.calls.register(call_id, tx)?;
        let _deregister = Deregister {
            calls: &self.calls,
            call_id,
        };
        let message = Message {
            call_id,
            region_id: envelope.region_id,
            from_peer: envelope.from_peer,
            to_peer: envelope.to_peer,
            kind: envelope.kind,
            payload: envelope.payload,
            chunk: None,
        };
        self.queue.send(message).map_err(|_| closed())?;
        rx.await.unwrap_or_else(|_| Err(closed()))
    }
}

/// Queue -> wire batches, until the connection closes or is dropped.
async fn write_loop(
    shared: Arc<Shared>,
    calls: Arc<Calls>,
    mut queue: mpsc::UnboundedReceiver<Message>,
    out: mpsc::Sender<MessageBatch>,
) {
    let counters = &shared.counters;
    let mut outbox: Outbox<Message, ()> = Outbox::new(shared.config.batch_limits());
    loop {
        if outbox.is_empty() {
            tokio::select! {
                next = queue.recv() => match next {
                    Some(message) => outbox.push(message, ()),
                    // The connection was dropped: ending the request stream
                    // lets the peer end its side too.
                    None => return,
                },
                () = calls.done.closed() => return,
            }
        }
        // Wait until the stream takes another batch; whatever queues up
        // meanwhile joins this one.
        let slot = tokio::select! {
            slot = out.reserve() => match slot {
                Ok(slot) => slot,
                Err(_) => {
                    calls.close("request stream ended");
                    return;
                }
            },
            () = calls.done.closed() => return,
        };
        while let Ok(message) = queue.try_recv() {
            outbox.push(message, ());
        }
        let messages = {
            let state = calls.state.lock();
            outbox.next_batch(|id| state.waiting.contains_key(&id))
        };
        if messages.is_empty() {
            continue;
        }
        bump(&counters.batches_sent, 1);
        bump(&counters.frames_sent, messages.len() as u64);
        slot.send(MessageBatch { messages });
    }
}

/// Reply stream -> waiting calls; closes the connection when it ends.
async fn read_loop(shared: Arc<Shared>, calls: Arc<Calls>, mut replies: Streaming<ReplyBatch>) {
    let config = &shared.config;
    let mut reassembler: Reassembler<Reply> =
        Reassembler::new(config.max_message_bytes, config.max_reassembly_bytes);
    let to_store = calls.to_store;
    let reason = 'stream: loop {
        let next = tokio::select! {
            next = replies.message() => next,
            () = calls.done.closed() => break 'stream None,
        };
        let batch = match next {
            Ok(Some(batch)) => batch,
            Ok(None) => break Some("the peer closed the stream".to_string()),
            Err(status) => break Some(format!("stream broken: {}", status.message())),
        };
        for frame in batch.replies {
            match reassembler.feed(frame) {
                Ok(Some(reply)) => {
                    let call_id = reply.call_id;
                    calls.complete(call_id, reply_result(&shared, to_store, reply));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(to_store, "bad reply stream, dropping the connection: {e}");
                    bump(&shared.counters.protocol_errors, 1);
                    break 'stream Some(format!("protocol error: {e}"));
                }
            }
        }
    };
    match reason {
        Some(reason) => {
            tracing::warn!(
                store_id = shared.store_id,
                to_store,
                "connection to store lost: {reason}"
            );
            calls.close(&reason);
        }
        None => tracing::info!(
            store_id = shared.store_id,
            to_store,
            "connection to store closed"
        ),
    }
}

fn reply_result(shared: &Shared, to_store: u64, reply: Reply) -> CallResult {
    // A reply crossing a partition set after the message left is lost too.
    if shared.faults.blocks(to_store) {
        bump(&shared.counters.fault_drops, 1);
        return Err(TransportError::Unreachable(format!(
            "reply from store {to_store} lost (fault injection)"
        )));
    }
    match ReplyStatus::try_from(reply.status) {
        Ok(ReplyStatus::Ok) => Ok(reply.payload),
        Ok(ReplyStatus::DispatchError) => Err(TransportError::Remote(reply.error)),
        Ok(ReplyStatus::NotReady | ReplyStatus::Dropped) => Err(TransportError::Unreachable(
            format!("store {to_store}: {}", reply.error),
        )),
        Err(_) => Err(TransportError::Remote(format!(
            "unknown reply status {}: {}",
            reply.status, reply.error
        ))),
    }
}
