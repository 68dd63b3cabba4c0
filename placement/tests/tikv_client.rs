//! The official `tikv-client` crate is the compatibility oracle: it must be
//! able to connect, get timestamps and load the default keyspace.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use tikv_client::{Config, TimestampExt, TransactionClient};

#[tokio::test]
async fn tikv_client_gets_increasing_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_in(dir.path()).await;
    let endpoint = server.addr().to_string();

    let client = TransactionClient::new(vec![endpoint.clone()])
        .await
        .unwrap();
    let mut last = 0;
    for _ in 0..50 {
        let ts = client.current_timestamp().await.unwrap();
        assert!(ts.version() > last, "{} <= {last}", ts.version());
        last = ts.version();
    }
    // Many concurrent requests get batched by the client; all distinct.
    let mut handles = Vec::new();
    for _ in 0..200 {
        let client = client.clone();
        handles.push(tokio::spawn(async move {
            client.current_timestamp().await.unwrap().version()
        }));
    }
    let mut all = std::collections::HashSet::new();
    for h in handles {
        let v = h.await.unwrap();
        assert!(v > last);
        assert!(all.insert(v), "duplicate timestamp {v}");
    }

    // An http:// endpoint works too (the client strips the scheme).
    let client = TransactionClient::new(vec![format!("http://{endpoint}")])
        .await
        .unwrap();
    client.current_timestamp().await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn tikv_client_api_v2_loads_default_keyspace() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_in(dir.path()).await;
    let client = TransactionClient::new_with_config(
        vec![server.addr().to_string()],
        Config::default().with_default_keyspace(),
    )
    .await
    .unwrap();
    client.current_timestamp().await.unwrap();

    let missing = TransactionClient::new_with_config(
        vec![server.addr().to_string()],
        Config::default().with_keyspace("no-such-keyspace"),
    )
    .await;
    assert!(missing.is_err());
    server.shutdown().await;
}
