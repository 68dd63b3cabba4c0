//! Store-to-store Raft transport: one multiplexed, batching gRPC stream per
//! ordered store pair (`storeraftpb.StoreRaft/Raft`).
//!
//! The Raft layer hands over [`Envelope`]s whose payload it encoded itself
//! and gets the reply payload back: the transport never looks inside.
//! - Sending (`client.rs`): every call to a store shares one connection and
//!   one bidirectional stream, opened lazily and reopened on the next call
//!   after it breaks. Calls queued while a batch is being written leave
//!   together in the next batch (`outbox.rs`); replies come back batched and
//!   are matched by call id. Large payloads go out in chunks (`chunk.rs`)
//!   interleaved with small messages.
//! - Receiving (`server.rs`): each complete message is dispatched on its own
//!   task, so Regions never wait on each other; a per-connection limit on
//!   in-flight messages and capped reassembly buffers bound memory.
//! - [`Faults`] injects isolation, partitions, loss and delay for tests.

mod chunk;
mod client;
mod faults;
mod outbox;
mod server;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::RwLock;
use shale_proto::storeraftpb::store_raft_server::StoreRaftServer;
use tokio::sync::watch;

pub use faults::Faults;
pub use server::StoreRaftService;

use chunk::FRAME_OVERHEAD;
use outbox::BatchLimits;

/// Request metadata naming the calling store.
const FROM_STORE_KEY: &str = "x-shale-from-store";
/// Request metadata naming the store the caller means to reach, so a stale
/// address now used by another store is refused rather than misdelivered.
const TO_STORE_KEY: &str = "x-shale-to-store";

/// One Raft message between peers of a Region, opaque to the transport.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Envelope {
    pub region_id: u64,
    pub from_peer: u64,
    pub to_peer: u64,
    pub kind: u32,
    pub payload: Vec<u8>,
}

/// The receiving store's side: hands a message to the Region and returns the
/// reply payload (or an error string sent back to the caller).
pub trait Dispatch: Send + Sync + 'static {
    fn dispatch(
        &self,
        from_store: u64,
        envelope: Envelope,
    ) -> BoxFuture<'static, Result<Vec<u8>, String>>;
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// Cannot connect, the stream broke, the peer is partitioned away or not
    /// ready: the message may not have arrived; retry later.
    #[error("store unreachable: {0}")]
    Unreachable(String),
    #[error("call timed out")]
    Timeout,
    /// The receiving Region's dispatcher answered with an error.
    #[error("remote error: {0}")]
    Remote(String),
    /// The payload is over `TransportConfig::max_message_bytes`; sending it
    /// would only make the receiver drop the connection.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
}

/// Tuning of the transport. Stores of a cluster should share it: the
/// receiver's limits must admit what senders produce.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// Frames per wire batch, at most.
    pub max_batch_messages: usize,
    /// Payload bytes per wire batch, roughly (a batch always takes one frame,
    /// and one chunk of a large message, whatever their size).
    pub max_batch_bytes: usize,
    /// Payloads larger than this travel in chunks of this size.
    pub chunk_bytes: usize,
    /// Largest payload (message or reply) accepted, after reassembly.
    pub max_message_bytes: usize,
    /// Bytes that incomplete chunked messages of one connection may declare
    /// together; a peer going past it is disconnected.
    pub max_reassembly_bytes: usize,
    /// Messages of one incoming connection being dispatched or awaiting
    /// their reply's turn on the wire; beyond it the connection stops being
    /// read (HTTP/2 flow control then holds the sender back).
    pub max_inflight_per_connection: usize,
    /// Calls to one store queued or awaiting replies; further calls wait
    /// for a slot (within their timeout).
    pub max_pending_calls: usize,
    pub connect_timeout: Duration,
    /// After a failed connect, calls to that store fail at once for this
    /// long instead of each trying again.
    pub reconnect_backoff: Duration,
    /// HTTP/2 pings detect a peer that vanished without closing the socket.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            max_batch_messages: 1024,
            max_batch_bytes: 2 << 20,
            chunk_bytes: 1 << 20,
            max_message_bytes: 512 << 20,
            max_reassembly_bytes: 1 << 30,
            max_inflight_per_connection: 4096,
            max_pending_calls: 8192,
            connect_timeout: Duration::from_secs(2),
            reconnect_backoff: Duration::from_millis(50),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(5),
        }
    }
}

impl TransportConfig {
    fn batch_limits(&self) -> BatchLimits {
        BatchLimits {
            max_messages: self.max_batch_messages.max(1),
            max_bytes: self.max_batch_bytes.max(1),
            chunk_bytes: self.chunk_bytes.max(1),
        }
    }

    /// The gRPC message limit: the largest batch the limits allow (a full
    /// byte budget plus one more chunk, plus per-frame overhead and reply
    /// error strings), doubled so a peer configured a little differently is
    /// still understood. Memory is bounded by the reassembly and in-flight
    /// limits, not by this.
    fn wire_message_limit(&self) -> usize {
        let l = self.batch_limits();
        let batch = l.max_bytes + l.chunk_bytes + (l.max_messages + 1) * (FRAME_OVERHEAD + 1024);
        batch.saturating_mul(2)
    }
}

/// Counters since the transport started (for tests and metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Outgoing connections (streams) opened.
    pub connects: u64,
    /// Message batches written, and the frames (messages or chunks) in them.
    pub batches_sent: u64,
    pub frames_sent: u64,
    /// Reply batches written by the receiving side, and the frames in them.
    pub reply_batches_sent: u64,
    pub reply_frames_sent: u64,
    /// Incoming streams accepted.
    pub inbound_streams: u64,
    /// Incoming streams dropped for a protocol violation.
    pub protocol_errors: u64,
    /// Calls failed or messages refused by fault injection.
    pub fault_drops: u64,
}

#[derive(Default)]
struct Counters {
    connects: AtomicU64,
    batches_sent: AtomicU64,
    frames_sent: AtomicU64,
    reply_batches_sent: AtomicU64,
    reply_frames_sent: AtomicU64,
    inbound_streams: AtomicU64,
    protocol_errors: AtomicU64,
    fault_drops: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// A one-way "closed" flag that tasks can await.
#[derive(Clone)]
struct Latch(Arc<watch::Sender<bool>>);

impl Latch {
    fn new() -> Self {
        Latch(Arc::new(watch::channel(false).0))
    }
    fn close(&self) {
        self.0.send_replace(true);
    }
    fn is_closed(&self) -> bool {
        *self.0.borrow()
    }
    async fn closed(&self) {
        let mut rx = self.0.subscribe();
        // The sender lives in `self`, so this only returns once closed.
        let _ = rx.wait_for(|closed| *closed).await;
    }
}

/// What the client and server halves share.
struct Shared {
    store_id: u64,
    config: TransportConfig,
    faults: Faults,
    dispatcher: RwLock<Option<Arc<dyn Dispatch>>>,
    counters: Counters,
    shutdown: Latch,
}

pub struct Transport {
    shared: Arc<Shared>,
    peers: client::Peers,
}

impl Transport {
    /// `store_id` is this store's id (sent to peers so they know who calls).
    pub fn new(store_id: u64, config: TransportConfig) -> Arc<Self> {
        Arc::new(Transport {
            shared: Arc::new(Shared {
                store_id,
                config,
                faults: Faults::default(),
                dispatcher: RwLock::new(None),
                counters: Counters::default(),
                shutdown: Latch::new(),
            }),
            peers: client::Peers::default(),
        })
    }

    pub fn store_id(&self) -> u64 {
        self.shared.store_id
    }

    /// Set once the Raft layer is ready; before that incoming messages get
    /// an error reply (the caller sees `Unreachable`).
    pub fn set_dispatcher(&self, dispatcher: Arc<dyn Dispatch>) {
        *self.shared.dispatcher.write() = Some(dispatcher);
    }

    /// Request/response to a peer on another store (`addr` = host:port of
    /// that store's gRPC server). Concurrent calls to one store share one
    /// connection and stream and are batched on the wire.
    pub async fn call(
        &self,
        to_store: u64,
        addr: &str,
        envelope: Envelope,
        timeout: Duration,
    ) -> Result<Vec<u8>, TransportError> {
        let shared = &self.shared;
        if shared.shutdown.is_closed() {
            return Err(TransportError::Unreachable(
                "the transport is shut down".into(),
            ));
        }
        let max = shared.config.max_message_bytes;
        if envelope.payload.len() > max {
            return Err(TransportError::TooLarge {
                len: envelope.payload.len(),
                max,
            });
        }
        if shared.faults.blocks(to_store) {
            bump(&shared.counters.fault_drops, 1);
            return Err(TransportError::Unreachable(format!(
                "store {to_store} is cut off (fault injection)"
            )));
        }
        if shared.faults.should_drop() {
            bump(&shared.counters.fault_drops, 1);
            return Err(TransportError::Unreachable(format!(
                "message to store {to_store} lost (fault injection)"
            )));
        }
        let work = async {
            if let Some(delay) = shared.faults.current_delay() {
                tokio::time::sleep(delay).await;
            }
            let conn = self.peers.connection(shared, to_store, addr).await?;
            conn.call(envelope).await
        };
        tokio::time::timeout(timeout, work)
            .await
            .unwrap_or(Err(TransportError::Timeout))
    }

    /// The tonic service to add to the storage node's gRPC server (same port
    /// as tikvpb.Tikv).
    pub fn service(self: &Arc<Self>) -> StoreRaftServer<StoreRaftService> {
        let limit = self.shared.config.wire_message_limit();
        StoreRaftServer::new(StoreRaftService::new(self.shared.clone()))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit)
    }

    /// Fault injection, for tests.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    pub fn stats(&self) -> TransportStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TransportStats {
            connects: get(&c.connects),
            batches_sent: get(&c.batches_sent),
            frames_sent: get(&c.frames_sent),
            reply_batches_sent: get(&c.reply_batches_sent),
            reply_frames_sent: get(&c.reply_frames_sent),
            inbound_streams: get(&c.inbound_streams),
            protocol_errors: get(&c.protocol_errors),
            fault_drops: get(&c.fault_drops),
        }
    }

    /// Ends every stream, both directions: pending calls fail with
    /// `Unreachable`, new ones are refused. Call it before stopping the gRPC
    /// server: its graceful shutdown waits for open streams, and these
    /// streams otherwise never end.
    pub fn shutdown(&self) {
        self.shared.shutdown.close();
        self.peers.close_all("the transport is shut down");
    }
}
