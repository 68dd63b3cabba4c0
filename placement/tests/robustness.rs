//! Bad input must produce errors, never crashes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use common::*;
use shale_proto::pdpb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[test]
fn garbage_config_file_is_a_clean_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("placement.toml");
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(&[0x00, 0xff, 0x13, b'[', b'[', 0xfe, b'=', 0x01])
        .unwrap();
    drop(file);

    let err = shale_placement::Config::from_file(&path).unwrap_err();
    assert!(err.to_string().contains("placement.toml"), "{err}");

    let output = Command::new(env!("CARGO_BIN_EXE_placement"))
        .arg("--config")
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--listen-addr")
        .arg("127.0.0.1:0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("placement.toml"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn unknown_config_key_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("placement.toml");
    std::fs::write(&path, "listen-addr = \"127.0.0.1:0\"\nlisten-adr = \"x\"\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_placement"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("listen-adr"), "{stderr}");
}

#[tokio::test]
async fn start_with_a_taken_port_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let first = start_in(dir.path()).await;
    let other = tempfile::tempdir().unwrap();
    let config = shale_placement::Config {
        data_dir: other.path().to_path_buf(),
        listen_addr: first.addr(),
        ..Default::default()
    };
    let err = shale_placement::start(config)
        .await
        .err()
        .expect("bind fails");
    assert!(matches!(err, shale_placement::Error::Bind { .. }), "{err}");
    // And the same data dir of a running server cannot be opened twice.
    let config = shale_placement::Config {
        data_dir: dir.path().to_path_buf(),
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    assert!(shale_placement::start(config).await.is_err());
    first.shutdown().await;
}

#[tokio::test]
async fn garbage_bytes_on_the_port_do_not_kill_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_in(dir.path()).await;
    let cid = server.cluster_id();

    let payloads: Vec<Vec<u8>> = vec![
        b"\x00\x01\x02\x03garbage\xff\xfe\r\n\r\n".to_vec(),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\xff\xff\xff\xff\xff\xff".to_vec(),
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n".to_vec(),
        (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect(),
    ];
    for payload in payloads {
        let mut stream = TcpStream::connect(server.addr()).await.unwrap();
        let _ = stream.write_all(&payload).await;
        let mut buf = vec![0u8; 4096];
        // The server answers with an error or closes; either way it must not hang forever.
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
    }
    // A connection that sends half a request and vanishes.
    {
        let mut stream = TcpStream::connect(server.addr()).await.unwrap();
        stream
            .write_all(b"POST /pdpb.PD/AllocID HTTP/1.1\r\n")
            .await
            .unwrap();
    }

    // Still serving gRPC and HTTP.
    let mut client = pd(&server).await;
    let id = alloc_id(&mut client, cid).await;
    assert!(id > 0);
    let resp = reqwest::get(format!("http://{}/pd/api/v1/health", server.addr()))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // A malformed protobuf body in a well-formed gRPC request is a gRPC error.
    let resp = reqwest::Client::builder()
        .build()
        .unwrap()
        .post(format!("http://{}/pdpb.PD/AllocID", server.addr()))
        .header("content-type", "application/grpc")
        .body(vec![0u8, 0, 0, 0, 3, 0xff, 0xff, 0xff])
        .send()
        .await;
    // gRPC over HTTP/1.1 is refused or errors; any answer is fine, no crash.
    drop(resp);
    let id2 = alloc_id(&mut client, cid).await;
    assert!(id2 > id);
    server.shutdown().await;
}

#[tokio::test]
async fn gzip_requests_and_responses_work() {
    use tonic::codec::CompressionEncoding;
    let dir = tempfile::tempdir().unwrap();
    let server = start_in(dir.path()).await;
    let cid = server.cluster_id();
    let mut client = shale_proto::pdpb::pd_client::PdClient::new(channel(&server).await)
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    let resp = client
        .get_members(pdpb::GetMembersRequest {
            header: header(cid),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.header.unwrap().cluster_id, cid);
    let boot = bootstrap(&mut client, cid).await;
    let resp = client
        .get_region_by_id(pdpb::GetRegionByIdRequest {
            header: header(cid),
            region_id: boot.region.id,
            need_buckets: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.region, Some(boot.region));
    server.shutdown().await;
}

#[tokio::test]
async fn split_regions_is_reported_unsupported() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_in(dir.path()).await;
    let mut client = pd(&server).await;
    let resp = client
        .split_regions(pdpb::SplitRegionsRequest {
            header: header(server.cluster_id()),
            split_keys: vec![b"a".to_vec()],
            retry_limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let err = resp.header.unwrap().error.unwrap();
    assert_eq!(err.r#type, pdpb::ErrorType::Unknown as i32);
    assert!(err.message.contains("not supported"));
    server.shutdown().await;
}
