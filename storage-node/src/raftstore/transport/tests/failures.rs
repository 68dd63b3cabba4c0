//! Peers going away and coming back; hostile or broken input.

use std::time::{Duration, Instant};

use prost::bytes::{Buf, BufMut};
use shale_proto::storeraftpb::store_raft_client::StoreRaftClient;
use shale_proto::storeraftpb::{Chunk, Message, MessageBatch};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Status};

use super::{Behaviour, Node};
use crate::raftstore::transport::{TransportConfig, TransportError, FROM_STORE_KEY, TO_STORE_KEY};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_going_away_fails_calls_fast_and_reconnects_when_back() {
    let a = Node::start(1).await;
    let mut b = Node::start(2).await;
    b.echo.set(1, Behaviour::Slow(Duration::from_secs(30)));
    assert_eq!(a.call(&b, 2, vec![2]).await.unwrap(), vec![2]);

    let pending = {
        let transport = a.transport.clone();
        let addr = b.addr.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let r = transport
                .call(
                    2,
                    &addr,
                    super::envelope(1, vec![1]),
                    Duration::from_secs(60),
                )
                .await;
            (r, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    b.stop().await;
    let (result, took) = pending.await.unwrap();
    assert!(
        matches!(result, Err(TransportError::Unreachable(_))),
        "{result:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "pending call hung for {took:?}"
    );

    let started = Instant::now();
    let result = a.call(&b, 2, vec![2]).await;
    assert!(
        matches!(result, Err(TransportError::Unreachable(_))),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    // Store 2 restarts on the same address.
    let b = Node::start_with(2, TransportConfig::default(), &b.addr).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match a.call(&b, 2, vec![2]).await {
            Ok(reply) => {
                assert_eq!(reply, vec![2]);
                break;
            }
            Err(e) if Instant::now() < deadline => {
                assert!(matches!(e, TransportError::Unreachable(_)), "{e:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("never reconnected: {e:?}"),
        }
    }
    assert_eq!(a.transport.stats().connects, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_refuses_new_calls() {
    let mut a = Node::start(1).await;
    let b = Node::start(2).await;
    a.call(&b, 1, vec![1]).await.unwrap();
    a.stop().await;
    assert!(matches!(
        a.call(&b, 1, vec![1]).await,
        Err(TransportError::Unreachable(_))
    ));
}

/// Writes raw bytes as gRPC messages, to put garbage on the wire.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n).to_vec()))
    }
}

async fn channel(addr: &str) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn with_stores<T>(body: T, from: u64, to: u64) -> tonic::Request<T> {
    let mut request = tonic::Request::new(body);
    let md = request.metadata_mut();
    md.insert(FROM_STORE_KEY, AsciiMetadataValue::from(from));
    md.insert(TO_STORE_KEY, AsciiMetadataValue::from(to));
    request
}

/// Sends `batches` on a fresh stream to `node` and returns how the stream
/// ended: the server must end it with an error, not hang or crash.
async fn send_raw_batches(node: &Node, batches: Vec<MessageBatch>) -> Status {
    let mut client = StoreRaftClient::new(channel(&node.addr).await);
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    for batch in batches {
        tx.send(batch).await.unwrap();
    }
    let request = with_stores(tokio_stream::wrappers::ReceiverStream::new(rx), 9, 2);
    let mut replies = client.raft(request).await.unwrap().into_inner();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match replies.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return Status::ok("ended without error"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the server kept the bad stream open");
    drop(tx);
    ended
}

fn chunk_frame(call_id: u64, index: u32, total_len: u64, last: bool, len: usize) -> Message {
    Message {
        call_id,
        region_id: 1,
        payload: vec![7; len],
        chunk: Some(Chunk {
            index,
            total_len,
            last,
            abort: false,
        }),
        ..Message::default()
    }
}

fn batch(messages: Vec<Message>) -> MessageBatch {
    MessageBatch { messages }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_wire_drops_only_that_connection() {
    let a = Node::start(1).await;
    let b = Node::start(2).await;
    a.call(&b, 1, vec![1]).await.unwrap();

    // Bytes that are no MessageBatch (wire type 7 does not exist).
    let mut grpc = tonic::client::Grpc::new(channel(&b.addr).await);
    grpc.ready().await.unwrap();
    let garbage = tokio_stream::iter(vec![vec![0x0f, 0xff, 0xff, 0x01, 0x02]]);
    let path = PathAndQuery::from_static("/storeraftpb.StoreRaft/Raft");
    let response = grpc
        .streaming(with_stores(garbage, 9, 2), path, RawCodec)
        .await
        .unwrap();
    let mut replies = response.into_inner();
    let ended = tokio::time::timeout(Duration::from_secs(5), replies.message())
        .await
        .expect("the server kept the garbage stream open");
    assert!(ended.is_err(), "{ended:?}");

    // No metadata at all: refused up front.
    let mut client = StoreRaftClient::new(channel(&b.addr).await);
    let status = client
        .raft(tokio_stream::iter(vec![MessageBatch::default()]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    // The server and the existing connection are fine.
    assert_eq!(a.call(&b, 1, vec![2]).await.unwrap(), vec![2]);
    assert_eq!(a.transport.stats().connects, 1);
    assert!(b.transport.stats().protocol_errors >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_chunk_sequences_drop_the_connection() {
    let config = TransportConfig {
        max_message_bytes: 1 << 20,
        max_reassembly_bytes: 3 << 20,
        ..TransportConfig::default()
    };
    let a = Node::start(1).await;
    let b = Node::start_with(2, config, "127.0.0.1:0").await;

    let cases: Vec<(&str, Vec<MessageBatch>)> = vec![
        (
            "declared size over the limit",
            vec![batch(vec![chunk_frame(1, 0, 1 << 40, false, 10)])],
        ),
        (
            "unterminated messages past the reassembly budget",
            (1..=4)
                .map(|id| batch(vec![chunk_frame(id, 0, 1 << 20, false, 1000)]))
                .collect(),
        ),
        (
            "chunks out of order",
            vec![batch(vec![
                chunk_frame(1, 0, 3000, false, 1000),
                chunk_frame(1, 2, 0, true, 1000),
            ])],
        ),
        (
            "chunk without its start",
            vec![batch(vec![chunk_frame(5, 3, 0, false, 10)])],
        ),
        (
            "more data than declared",
            vec![batch(vec![
                chunk_frame(1, 0, 1000, false, 1000),
                chunk_frame(1, 1, 0, true, 1000),
            ])],
        ),
    ];
    let mut errors = 0;
    for (case, batches) in cases {
        let status = send_raw_batches(&b, batches).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
        errors += 1;
        assert_eq!(b.transport.stats().protocol_errors, errors, "{case}");
    }
    // Nothing was dispatched, and well-behaved peers are still served.
    assert_eq!(b.echo.handled.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(a.call(&b, 1, vec![1]).await.unwrap(), vec![1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unterminated_message_is_freed_when_the_peer_leaves() {
    let b = Node::start(2).await;
    // A chunked message that never finishes, then the peer hangs up.
    let mut client = StoreRaftClient::new(channel(&b.addr).await);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(batch(vec![chunk_frame(1, 0, 5000, false, 1000)]))
        .await
        .unwrap();
    let request = with_stores(tokio_stream::wrappers::ReceiverStream::new(rx), 9, 2);
    let mut replies = client.raft(request).await.unwrap().into_inner();
    drop(tx);
    let ended = tokio::time::timeout(Duration::from_secs(5), replies.message())
        .await
        .expect("stream stayed open");
    assert!(matches!(ended, Ok(None)), "{ended:?}");
    assert_eq!(b.transport.stats().protocol_errors, 0);
}
