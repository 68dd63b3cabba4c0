//! Transports talking real gRPC over loopback, each served by its own tonic
//! server, with a test dispatcher that echoes.

mod calls;
mod failures;
mod faults;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;

use super::{Dispatch, Envelope, Transport, TransportConfig};

pub(super) const TIMEOUT: Duration = Duration::from_secs(10);

/// What the test dispatcher does for a Region; echo when not listed.
#[derive(Clone)]
pub(super) enum Behaviour {
    Slow(Duration),
    Fail(String),
    Panic,
    /// Answers with this many bytes.
    Reply(usize),
}

/// Echoes payloads; counts messages and the most it saw at once.
#[derive(Default)]
pub(super) struct Echo {
    pub behaviour: Mutex<HashMap<u64, Behaviour>>,
    pub handled: AtomicU64,
    pub running: Arc<AtomicUsize>,
    pub max_running: Arc<AtomicUsize>,
}

impl Echo {
    pub fn set(&self, region_id: u64, behaviour: Behaviour) {
        self.behaviour.lock().insert(region_id, behaviour);
    }
}

struct Running(Arc<AtomicUsize>);
impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Dispatch for Echo {
    fn dispatch(
        &self,
        _from_store: u64,
        envelope: Envelope,
    ) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        self.handled.fetch_add(1, Ordering::SeqCst);
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        let guard = Running(self.running.clone());
        let behaviour = self.behaviour.lock().get(&envelope.region_id).cloned();
        async move {
            let _guard = guard;
            match behaviour {
                None => Ok(envelope.payload),
                Some(Behaviour::Slow(d)) => {
                    tokio::time::sleep(d).await;
                    Ok(envelope.payload)
                }
                Some(Behaviour::Fail(e)) => Err(e),
                Some(Behaviour::Panic) => panic!("test dispatcher panics on purpose"),
                Some(Behaviour::Reply(len)) => Ok(vec![7; len]),
            }
        }
        .boxed()
    }
}

/// A store: its transport, dispatcher and gRPC server on loopback.
pub(super) struct Node {
    pub transport: Arc<Transport>,
    pub echo: Arc<Echo>,
    pub addr: String,
    server: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Node {
    pub async fn start(store_id: u64) -> Node {
        Self::start_with(store_id, TransportConfig::default(), "127.0.0.1:0").await
    }

    pub async fn start_with(store_id: u64, config: TransportConfig, bind: &str) -> Node {
        let listener = TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let transport = Transport::new(store_id, config);
        let echo = Arc::new(Echo::default());
        transport.set_dispatcher(echo.clone());
        let service = transport.service();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            // Windows as a storage node should set them: room for whole
            // batches without waiting for window updates.
            tonic::transport::Server::builder()
                .initial_stream_window_size(8 << 20)
                .initial_connection_window_size(16 << 20)
                .add_service(service)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Node {
            transport,
            echo,
            addr,
            server: Some((stop, server)),
        }
    }

    /// Shuts the transport and the gRPC server down, as a storage node
    /// stopping would; the server must stop promptly (no stream left open).
    pub async fn stop(&mut self) {
        self.transport.shutdown();
        if let Some((stop, server)) = self.server.take() {
            let _ = stop.send(());
            tokio::time::timeout(Duration::from_secs(5), server)
                .await
                .expect("the gRPC server did not stop: a stream stayed open")
                .unwrap();
        }
    }

    pub async fn call(
        &self,
        to: &Node,
        region_id: u64,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, super::TransportError> {
        self.call_timeout(to, region_id, payload, TIMEOUT).await
    }

    pub async fn call_timeout(
        &self,
        to: &Node,
        region_id: u64,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, super::TransportError> {
        let envelope = envelope(region_id, payload);
        self.transport
            .call(to.transport.store_id(), &to.addr, envelope, timeout)
            .await
    }
}

pub(super) fn envelope(region_id: u64, payload: Vec<u8>) -> Envelope {
    Envelope {
        region_id,
        from_peer: 1,
        to_peer: 2,
        kind: 0,
        payload,
    }
}

/// Deterministic bytes, so a reassembly mistake shows.
pub(super) fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}
