//! Calls that succeed: round trips, batching, concurrency, big payloads.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{pattern, Behaviour, Node};
use crate::raftstore::transport::{TransportConfig, TransportError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_and_remote_errors() {
    let a = Node::start(1).await;
    let b = Node::start(2).await;
    assert_eq!(a.call(&b, 1, b"hello".to_vec()).await.unwrap(), b"hello");
    assert_eq!(b.call(&a, 1, vec![]).await.unwrap(), Vec::<u8>::new());

    b.echo.set(7, Behaviour::Fail("not leader".into()));
    assert_eq!(
        a.call(&b, 7, vec![1]).await,
        Err(TransportError::Remote("not leader".into()))
    );
    b.echo.set(8, Behaviour::Panic);
    assert!(
        matches!(a.call(&b, 8, vec![1]).await, Err(TransportError::Remote(e)) if e.contains("panicked"))
    );

    // One connection each way, still healthy after the errors.
    assert_eq!(a.call(&b, 1, b"again".to_vec()).await.unwrap(), b"again");
    assert_eq!(a.transport.stats().connects, 1);
    assert_eq!(b.transport.stats().inbound_streams, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_without_dispatcher_answers_unreachable() {
    let a = Node::start(1).await;
    let b = Node::start(2).await;
    // A store whose Raft layer is not up yet.
    let bare = crate::raftstore::transport::Transport::new(3, TransportConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let service = bare.service();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let call = |store| {
        a.transport
            .call(store, &addr, super::envelope(1, vec![1]), super::TIMEOUT)
    };
    assert!(
        matches!(call(3).await, Err(TransportError::Unreachable(e)) if e.contains("no Raft layer"))
    );
    // The address belongs to store 3: a call meant for store 9 is refused.
    assert!(
        matches!(call(9).await, Err(TransportError::Unreachable(e)) if e.contains("not store 9"))
    );
    bare.set_dispatcher(b.echo.clone());
    assert_eq!(call(3).await.unwrap(), vec![1]);
    bare.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_share_one_connection_and_batch() {
    let a = Node::start(1).await;
    let b = Node::start(2).await;
    let calls = (0..1000u64).map(|i| {
        let (a, b) = (&a, &b);
        async move { a.call(b, i % 50, i.to_le_bytes().to_vec()).await }
    });
    let replies = futures::future::join_all(calls).await;
    for (i, reply) in replies.into_iter().enumerate() {
        assert_eq!(reply.unwrap(), (i as u64).to_le_bytes());
    }
    let sent = a.transport.stats();
    let answered = b.transport.stats();
    eprintln!(
        "1000 calls: {} message batches ({:.1} per batch), {} reply batches ({:.1} per batch)",
        sent.batches_sent,
        sent.frames_sent as f64 / sent.batches_sent as f64,
        answered.reply_batches_sent,
        answered.reply_frames_sent as f64 / answered.reply_batches_sent as f64,
    );
    assert_eq!(sent.connects, 1);
    assert_eq!(answered.inbound_streams, 1);
    assert_eq!(sent.frames_sent, 1000);
    assert!(sent.batches_sent < 1000, "{sent:?}");
    assert!(answered.reply_batches_sent < 1000, "{answered:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_region_does_not_delay_others() {
    let a = Arc::new(Node::start(1).await);
    let b = Arc::new(Node::start(2).await);
    b.echo.set(1, Behaviour::Slow(Duration::from_secs(3)));
    let slow = {
        let (a, b) = (a.clone(), b.clone());
        tokio::spawn(async move { a.call(&b, 1, vec![1]).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    for _ in 0..20 {
        let started = Instant::now();
        a.call_timeout(&b, 2, vec![2], Duration::from_secs(1))
            .await
            .unwrap();
        assert!(started.elapsed() < Duration::from_millis(500));
    }
    assert!(!slow.is_finished(), "Region 1 is still busy");
    assert_eq!(slow.await.unwrap().unwrap(), vec![1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_payload_is_chunked_while_small_calls_flow() {
    let a = Arc::new(Node::start(1).await);
    let b = Arc::new(Node::start(2).await);
    let snapshot = pattern(20 << 20, 3);
    let done = Arc::new(AtomicBool::new(false));
    let small_calls = Arc::new(AtomicU64::new(0));
    let heartbeats = {
        let (a, b, done, count) = (a.clone(), b.clone(), done.clone(), small_calls.clone());
        tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            while !done.load(Ordering::SeqCst) {
                let started = Instant::now();
                a.call(&b, 2, vec![9; 16]).await.unwrap();
                worst = worst.max(started.elapsed());
                count.fetch_add(1, Ordering::SeqCst);
            }
            worst
        })
    };
    let started = Instant::now();
    let reply = a
        .call_timeout(&b, 1, snapshot.clone(), Duration::from_secs(60))
        .await
        .unwrap();
    let took = started.elapsed();
    done.store(true, Ordering::SeqCst);
    let worst = heartbeats.await.unwrap();
    assert!(reply == snapshot, "the 20 MB reply differs");
    let small = small_calls.load(Ordering::SeqCst);
    eprintln!("20 MB round trip in {took:?}; {small} small calls meanwhile, slowest {worst:?}");
    assert!(small >= 3, "small calls starved: {small}");
    // Stuck behind the whole transfer, a small call would take about half
    // the round trip (the request half).
    assert!(
        worst < took * 3 / 4 || worst < Duration::from_millis(200),
        "{worst:?} vs {took:?}"
    );
    // 20 MiB went out in 1 MiB chunks, in several batches.
    let (sent, answered) = (a.transport.stats(), b.transport.stats());
    assert!(
        sent.frames_sent >= 20 + small,
        "{sent:?}, {small} small calls"
    );
    assert!(
        answered.reply_frames_sent >= 20 + small,
        "{answered:?}, {small} small calls"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_calls_are_forgotten_and_late_replies_ignored() {
    let a = Node::start(1).await;
    let b = Node::start(2).await;
    b.echo.set(1, Behaviour::Slow(Duration::from_millis(300)));
    let short = Duration::from_millis(50);
    assert_eq!(
        a.call_timeout(&b, 1, vec![1], short).await,
        Err(TransportError::Timeout)
    );
    // A large transfer given up half way is aborted on the wire.
    assert_eq!(
        a.call_timeout(&b, 2, pattern(30 << 20, 1), Duration::from_millis(20))
            .await,
        Err(TransportError::Timeout)
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(a.call(&b, 3, vec![3]).await.unwrap(), vec![3]);
    let stats = a.transport.stats();
    assert_eq!(
        stats.connects, 1,
        "the late reply did not break the connection"
    );
    assert_eq!(b.transport.stats().protocol_errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inflight_limit_holds_back_the_sender() {
    let config = TransportConfig {
        max_inflight_per_connection: 4,
        ..TransportConfig::default()
    };
    let a = Node::start(1).await;
    let b = Node::start_with(2, config, "127.0.0.1:0").await;
    for region in 0..40 {
        b.echo
            .set(region, Behaviour::Slow(Duration::from_millis(50)));
    }
    let calls = (0..40u64).map(|i| {
        let (a, b) = (&a, &b);
        async move { a.call(b, i, vec![i as u8]).await }
    });
    for reply in futures::future::join_all(calls).await {
        reply.unwrap();
    }
    assert_eq!(b.echo.max_running.load(Ordering::SeqCst), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_payload_is_refused_before_sending() {
    let config = TransportConfig {
        max_message_bytes: 1000,
        ..TransportConfig::default()
    };
    let a = Node::start_with(1, config, "127.0.0.1:0").await;
    let b = Node::start(2).await;
    assert_eq!(
        a.call(&b, 1, vec![0; 1001]).await,
        Err(TransportError::TooLarge {
            len: 1001,
            max: 1000
        })
    );
    assert_eq!(a.transport.stats().connects, 0);
    // An oversized reply fails that call only, not the connection.
    a.echo.set(2, Behaviour::Reply(1001));
    assert!(matches!(
        b.call(&a, 2, vec![0; 10]).await,
        Err(TransportError::Remote(e)) if e.contains("exceeds the limit")
    ));
    assert_eq!(b.call(&a, 1, vec![0; 10]).await.unwrap(), vec![0; 10]);
    assert_eq!(b.transport.stats().connects, 1);
}
