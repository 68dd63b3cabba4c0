//! The TSO stream as tikv-client uses it: batched requests, one response each,
//! carrying the highest timestamp of the batch.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;

use common::*;
use shale_proto::pdpb;

fn compose(ts: &pdpb::Timestamp) -> u64 {
    ((ts.physical as u64) << 18) | ts.logical as u64
}

#[tokio::test]
async fn strictly_increasing_within_a_stream() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_in(dir.path()).await;
    let cid = server.cluster_id();
    let mut client = pd(&server).await;

    let counts: Vec<u32> = (0..500).map(|i| 1 + (i % 64)).collect();
    let requests: Vec<pdpb::TsoRequest> = counts
        .iter()
        .map(|&count| pdpb::TsoRequest {
            header: header(cid),
            count,
            dc_location: String::new(),
        })
        .collect();
    let mut responses = client
        .tso(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut last = 0u64;
    for &count in &counts {
        let resp = responses.message().await.unwrap().unwrap();
        assert_ok(&resp.header);
        assert_eq!(resp.count, count);
        let ts = resp.timestamp.unwrap();
        assert!(ts.logical >= i64::from(count), "room for the whole batch");
        assert!(ts.logical < 1 << 18);
        let first = compose(&ts) - u64::from(count) + 1;
        assert!(first > last, "batch overlaps the previous one");
        last = compose(&ts);
    }
    // The stream ends when the client's request stream ends.
    assert!(responses.message().await.unwrap().is_none());
    server.shutdown().await;
}

#[tokio::test]
async fn concurrent_streams_never_share_a_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_in(dir.path()).await;
    let cid = server.cluster_id();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let mut client = pd(&server).await;
        tasks.push(tokio::spawn(async move {
            let requests: Vec<pdpb::TsoRequest> = (0..200)
                .map(|_| pdpb::TsoRequest {
                    header: header(cid),
                    count: 3,
                    dc_location: String::new(),
                })
                .collect();
            let mut responses = client
                .tso(tokio_stream::iter(requests))
                .await
                .unwrap()
                .into_inner();
            let mut all = Vec::new();
            while let Some(resp) = responses.message().await.unwrap() {
                let last = compose(&resp.timestamp.unwrap());
                all.extend([last - 2, last - 1, last]);
            }
            all
        }));
    }
    let mut seen = HashSet::new();
    for task in tasks {
        let timestamps = task.await.unwrap();
        assert_eq!(timestamps.len(), 600);
        for ts in timestamps {
            assert!(seen.insert(ts), "timestamp {ts} handed out twice");
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn zero_count_is_invalid_argument() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_in(dir.path()).await;
    let mut client = pd(&server).await;
    let requests = tokio_stream::iter(vec![pdpb::TsoRequest {
        header: header(server.cluster_id()),
        count: 0,
        dc_location: String::new(),
    }]);
    let mut responses = client.tso(requests).await.unwrap().into_inner();
    let status = responses.message().await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    server.shutdown().await;
}
