//! Fault injection: isolation, partitions, loss, delay.

use std::time::{Duration, Instant};

use super::Node;
use crate::raftstore::transport::TransportError;

fn unreachable<T: std::fmt::Debug>(result: Result<T, TransportError>) -> bool {
    matches!(result, Err(TransportError::Unreachable(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_cuts_both_directions() {
    let a = Node::start(1).await;
    let b = Node::start(2).await;
    let c = Node::start(3).await;
    a.call(&b, 1, vec![1]).await.unwrap();
    b.call(&a, 1, vec![1]).await.unwrap();

    a.transport.faults().isolate(true);
    let started = Instant::now();
    assert!(unreachable(a.call(&b, 1, vec![1]).await));
    assert!(unreachable(a.call(&c, 1, vec![1]).await));
    // The peers' transports know nothing; store 1 refuses their traffic,
    // on the existing connection and on new ones.
    assert!(unreachable(b.call(&a, 1, vec![1]).await));
    assert!(unreachable(c.call(&a, 1, vec![1]).await));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "faults fail fast"
    );
    b.call(&c, 1, vec![1]).await.unwrap();

    a.transport.faults().isolate(false);
    // Store 3 failed to connect a moment ago: wait out its reconnect backoff.
    tokio::time::sleep(Duration::from_millis(100)).await;
    a.call(&b, 1, vec![1]).await.unwrap();
    b.call(&a, 1, vec![1]).await.unwrap();
    c.call(&a, 1, vec![1]).await.unwrap();
    assert!(a.transport.stats().fault_drops >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_and_heal() {
    let a = Node::start(1).await;
    let b = Node::start(2).await;
    let c = Node::start(3).await;
    b.call(&a, 1, vec![1]).await.unwrap();

    a.transport.faults().partition_from([2]);
    assert!(unreachable(a.call(&b, 1, vec![1]).await));
    assert!(unreachable(b.call(&a, 1, vec![1]).await));
    a.call(&c, 1, vec![1]).await.unwrap();
    c.call(&a, 1, vec![1]).await.unwrap();
    b.call(&c, 1, vec![1]).await.unwrap();

    a.transport.faults().heal();
    a.call(&b, 1, vec![1]).await.unwrap();
    b.call(&a, 1, vec![1]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_ratio_loses_outgoing_messages() {
    let a = Node::start(1).await;
    let b = Node::start(2).await;
    a.transport.faults().drop_ratio(1.0);
    for _ in 0..20 {
        assert!(unreachable(a.call(&b, 1, vec![1]).await));
    }
    // Only outgoing traffic of store 1 is lost.
    b.call(&a, 1, vec![1]).await.unwrap();
    assert_eq!(b.echo.handled.load(std::sync::atomic::Ordering::SeqCst), 0);

    a.transport.faults().drop_ratio(0.5);
    let mut lost = 0;
    for _ in 0..200 {
        if a.call(&b, 1, vec![1]).await.is_err() {
            lost += 1;
        }
    }
    assert!((50..150).contains(&lost), "{lost} of 200 lost");

    a.transport.faults().drop_ratio(0.0);
    a.call(&b, 1, vec![1]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_slows_outgoing_messages() {
    let a = Node::start(1).await;
    let b = Node::start(2).await;
    a.call(&b, 1, vec![1]).await.unwrap();
    a.transport.faults().delay(Duration::from_millis(200));

    let started = Instant::now();
    a.call(&b, 1, vec![1]).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200));
    // Delayed past the caller's patience: a timeout.
    assert_eq!(
        a.call_timeout(&b, 1, vec![1], Duration::from_millis(50))
            .await,
        Err(TransportError::Timeout)
    );
    // Concurrent calls are delayed side by side, not one after another.
    let started = Instant::now();
    let calls = (0..10).map(|i| a.call(&b, i, vec![1]));
    for r in futures::future::join_all(calls).await {
        r.unwrap();
    }
    assert!(started.elapsed() < Duration::from_millis(1500));

    a.transport.faults().reset();
    let started = Instant::now();
    a.call(&b, 1, vec![1]).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(200));
}
