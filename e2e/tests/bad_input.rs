//! Bad input gets a clear error, never a panic, and the server keeps serving:
//! empty and oversized keys, oversized values, misaddressed requests (unknown
//! Region, stale epoch, wrong store, key outside the Region), API V2 keys
//! without their mode prefix, undecodable protobuf, garbage bytes on the
//! ports, and a corrupt storage-node config file. API V1 runs on a cluster
//! with the default `api_version`, API V2 on one with `api_version = 2`.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use common::{k, optimistic, raw_client, read, start_cluster, txn_client, Api, KeyMode, Target};
use shale_e2e::Cluster;
use shale_proto::kvrpcpb;
use tikv_client::{Backoff, KvPair, RawClient, TimestampExt, TransactionClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Code, Response, Status};

/// The storage nodes in this file accept values up to this size.
const MAX_VALUE: usize = 64 * 1024;
/// TiKV's (and Shale's) largest key.
const MAX_KEY: usize = 8 * 1024;

fn store_config() -> String {
    format!("max-value-size = {MAX_VALUE}\n")
}

/// A one-store cluster serving `api` that accepts values up to `MAX_VALUE`.
async fn start(api: Api) -> Result<Cluster> {
    start_cluster(api, &store_config()).await
}

/// `result` must be an error whose text mentions `topic` (case-insensitive).
fn assert_clear_error<T: std::fmt::Debug, E: std::fmt::Display>(
    result: Result<T, E>,
    topic: &str,
    what: &str,
) {
    match result {
        Ok(v) => panic!("{what}: accepted ({v:?}), expected an error about {topic}"),
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.to_lowercase().contains(topic),
                "{what}: error does not mention {topic:?}: {text}"
            );
        }
    }
}

/// A raw gRPC reply to bad input: either an `InvalidArgument` status or a
/// response whose `error` field explains the problem, never silence.
fn assert_rejected<T>(
    result: Result<Response<T>, Status>,
    error: impl Fn(&T) -> String,
    what: &str,
) {
    match result {
        Err(status) => {
            assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
            assert!(!status.message().is_empty(), "{what}: empty status message");
        }
        Ok(resp) => {
            let msg = error(resp.get_ref());
            assert!(!msg.is_empty(), "{what}: accepted without an error");
        }
    }
}

/// Like [`assert_rejected`], and the explanation mentions `topic`.
fn assert_rejected_about<T>(
    result: Result<Response<T>, Status>,
    error: impl Fn(&T) -> String,
    topic: &str,
    what: &str,
) {
    let msg = match result {
        Err(status) => {
            assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
            status.message().to_string()
        }
        Ok(resp) => error(resp.get_ref()),
    };
    assert!(
        msg.to_lowercase().contains(topic),
        "{what}: the error does not mention {topic:?}: {msg:?}"
    );
}

/// Fails fast instead of retrying: each bad request gets exactly one answer.
async fn impatient_raw(cluster: &Cluster, api: Api) -> Result<RawClient> {
    Ok(raw_client(cluster, api)
        .await?
        .with_backoff(Backoff::no_backoff()))
}

/// Proves the store still answers correctly.
async fn still_serving(cluster: &mut Cluster, raw: &RawClient, step: &str) -> Result<()> {
    assert!(
        cluster.stores[0].is_running(),
        "storage node died after {step}"
    );
    assert!(
        cluster.placements[0].is_running(),
        "placement died after {step}"
    );
    let key = format!("alive/{step}").into_bytes();
    raw.put(key.clone(), k("yes"))
        .await
        .with_context(|| format!("put after {step}"))?;
    assert_eq!(raw.get(key).await?, Some(k("yes")), "read after {step}");
    Ok(())
}

async fn commit_single(client: &TransactionClient, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
    let mut txn = client
        .begin_with_options(optimistic().no_resolve_regions())
        .await?;
    txn.put(key, value).await?;
    match txn.commit().await {
        Ok(_) => Ok(()),
        Err(e) => {
            let _ = txn.rollback().await;
            Err(e.into())
        }
    }
}

async fn bad_keys_and_values(cluster: &mut Cluster, api: Api) -> Result<()> {
    let raw = impatient_raw(cluster, api).await?;
    let txn = txn_client(cluster, api).await?;

    // Empty key (API V1: with V2 the client's keyspace prefix makes it non-empty).
    if api == Api::V1 {
        assert_clear_error(
            raw.put(Vec::<u8>::new(), k("v")).await,
            "key",
            "raw put of an empty key",
        );
        assert_clear_error(
            raw.batch_put(vec![KvPair::new(Vec::<u8>::new(), k("v"))])
                .await,
            "key",
            "raw batch_put of an empty key",
        );
        assert_clear_error(
            commit_single(&txn, Vec::new(), k("v")).await,
            "key",
            "txn put of an empty key",
        );
        still_serving(cluster, &raw, "empty-key").await?;
    }

    // Keys: 8 KiB is the limit, one more byte is refused.
    let huge_key = vec![b'k'; MAX_KEY + 1];
    assert_clear_error(
        raw.put(huge_key.clone(), k("v")).await,
        "key",
        &format!("{api:?} raw put of a {}-byte key", MAX_KEY + 1),
    );
    let mut cas_key = huge_key.clone();
    cas_key.push(b'c');
    assert_clear_error(
        raw.with_atomic_for_cas()
            .compare_and_swap(cas_key, None, k("v"))
            .await,
        "key",
        &format!("{api:?} CAS with a huge key"),
    );
    assert_clear_error(
        commit_single(&txn, huge_key.clone(), k("v")).await,
        "key",
        &format!("{api:?} txn put of a {}-byte key", MAX_KEY + 1),
    );
    if api == Api::V1 {
        // (Under API V2 the keyspace prefix adds 4 bytes on the wire.)
        let max_key = vec![b'm'; MAX_KEY];
        raw.put(max_key.clone(), k("fits"))
            .await
            .context("an 8 KiB key is allowed")?;
        assert_eq!(raw.get(max_key).await?, Some(k("fits")));
    }
    still_serving(cluster, &raw, "huge-key").await?;

    // Values: the configured max_value_size is accepted, one byte more is not.
    let big = vec![b'v'; MAX_VALUE + 1];
    let fits = vec![b'f'; MAX_VALUE];
    assert_clear_error(
        raw.put(k("big/raw"), big.clone()).await,
        "value",
        &format!("{api:?} raw put of a big value"),
    );
    assert_clear_error(
        raw.put_with_ttl(k("big/ttl"), big.clone(), 60).await,
        "value",
        &format!("{api:?} raw put_with_ttl of a big value"),
    );
    assert_clear_error(
        raw.batch_put(vec![KvPair::new(k("big/batch"), big.clone())])
            .await,
        "value",
        &format!("{api:?} raw batch_put of a big value"),
    );
    assert_clear_error(
        raw.with_atomic_for_cas()
            .compare_and_swap(k("big/cas"), None, big.clone())
            .await,
        "value",
        &format!("{api:?} CAS with a big value"),
    );
    for key in ["big/raw", "big/ttl", "big/batch", "big/cas"] {
        assert_eq!(
            raw.get(k(key)).await?,
            None,
            "{api:?}: rejected {key} was stored"
        );
    }
    raw.put(k("big/fits"), fits.clone())
        .await
        .with_context(|| format!("{api:?}: a value of exactly max_value_size"))?;
    assert_eq!(raw.get(k("big/fits")).await?, Some(fits.clone()));

    assert_clear_error(
        commit_single(&txn, k("big/txn"), big.clone()).await,
        "value",
        &format!("{api:?} txn put of a big value"),
    );
    assert_eq!(
        read(&txn, b"big/txn").await?,
        None,
        "{api:?}: rejected txn value stored"
    );
    let now = txn.current_timestamp().await?;
    let locks = txn.scan_locks(&now, k("big/")..k("big0"), 100).await?;
    assert!(
        locks.is_empty(),
        "{api:?}: rejected txn left locks: {locks:?}"
    );
    commit_single(&txn, k("big/txn-fits"), fits.clone())
        .await
        .with_context(|| format!("{api:?}: txn value of exactly max_value_size"))?;
    assert_eq!(read(&txn, b"big/txn-fits").await?, Some(fits.clone()));
    still_serving(cluster, &raw, "big-value").await?;
    Ok(())
}

async fn bad_requests_on_the_wire(cluster: &mut Cluster) -> Result<()> {
    let raw1 = impatient_raw(cluster, Api::V1).await?;
    let txn1 = txn_client(cluster, Api::V1).await?;
    let mut t = Target::new(cluster, Api::V1).await?;
    let good = t.ctx();
    let region_id = t.region.id;
    let epoch = t.region.region_epoch.unwrap_or_default();
    let store_id = t.leader.store_id;

    let get = |ctx: Option<kvrpcpb::Context>, key: &[u8]| kvrpcpb::RawGetRequest {
        context: ctx,
        key: key.to_vec(),
        ..Default::default()
    };
    let put = |ctx: kvrpcpb::Context, key: &[u8]| kvrpcpb::RawPutRequest {
        context: Some(ctx),
        key: key.to_vec(),
        value: k("misrouted"),
        ..Default::default()
    };

    // Unknown Region.
    let unknown = kvrpcpb::Context {
        region_id: region_id + 1000,
        ..good.clone()
    };
    let resp = t
        .stub
        .raw_get(get(Some(unknown.clone()), b"x"))
        .await?
        .into_inner();
    let err = resp
        .region_error
        .context("RawGet to an unknown region: no region_error")?;
    let nf = err
        .region_not_found
        .context("unknown region: not region_not_found")?;
    assert_eq!(nf.region_id, region_id + 1000);
    let resp = t
        .stub
        .raw_put(put(unknown.clone(), b"wire/unknown"))
        .await?
        .into_inner();
    assert!(
        resp.region_error.and_then(|e| e.region_not_found).is_some(),
        "RawPut to an unknown region"
    );
    let resp = t
        .stub
        .kv_get(kvrpcpb::GetRequest {
            context: Some(unknown),
            key: k("x"),
            version: u64::MAX,
        })
        .await?
        .into_inner();
    assert!(
        resp.region_error.and_then(|e| e.region_not_found).is_some(),
        "KvGet to an unknown region"
    );

    // No context at all is an unknown Region too, not a crash.
    let resp = t.stub.raw_get(get(None, b"x")).await?.into_inner();
    assert!(
        resp.region_error.is_some(),
        "RawGet without a context was served"
    );

    // Stale epoch.
    let stale_version = if epoch.version > 0 {
        epoch.version - 1
    } else {
        epoch.version + 1
    };
    let stale = kvrpcpb::Context {
        region_epoch: Some(shale_proto::metapb::RegionEpoch {
            conf_ver: epoch.conf_ver,
            version: stale_version,
        }),
        ..good.clone()
    };
    let resp = t
        .stub
        .raw_get(get(Some(stale.clone()), b"x"))
        .await?
        .into_inner();
    let err = resp.region_error.context("stale epoch: no region_error")?;
    let enm = err
        .epoch_not_match
        .context("stale epoch: not epoch_not_match")?;
    assert!(
        enm.current_regions
            .iter()
            .any(|r| r.id == region_id && r.region_epoch.as_ref() == Some(&epoch)),
        "epoch_not_match must carry the current region: {enm:?}"
    );
    let resp = t
        .stub
        .raw_put(put(stale.clone(), b"wire/stale"))
        .await?
        .into_inner();
    assert!(
        resp.region_error.and_then(|e| e.epoch_not_match).is_some(),
        "RawPut with a stale epoch"
    );
    let start = txn1.current_timestamp().await?;
    let prewrite = kvrpcpb::PrewriteRequest {
        context: Some(stale),
        mutations: vec![kvrpcpb::Mutation {
            op: kvrpcpb::Op::Put as i32,
            key: k("wire/stale-txn"),
            value: k("v"),
            ..Default::default()
        }],
        primary_lock: k("wire/stale-txn"),
        start_version: start.version(),
        lock_ttl: 60_000,
        ..Default::default()
    };
    let resp = t.stub.kv_prewrite(prewrite.clone()).await?.into_inner();
    assert!(
        resp.region_error.and_then(|e| e.epoch_not_match).is_some(),
        "KvPrewrite with a stale epoch"
    );

    // Wrong store.
    let wrong_store = kvrpcpb::Context {
        peer: Some(shale_proto::metapb::Peer {
            store_id: store_id + 100,
            ..t.leader
        }),
        ..good.clone()
    };
    let resp = t
        .stub
        .raw_get(get(Some(wrong_store.clone()), b"x"))
        .await?
        .into_inner();
    let err = resp.region_error.context("wrong store: no region_error")?;
    let snm = err
        .store_not_match
        .context("wrong store: not store_not_match")?;
    assert_eq!(snm.request_store_id, store_id + 100);
    assert_eq!(snm.actual_store_id, store_id);
    let resp = t
        .stub
        .raw_put(put(wrong_store.clone(), b"wire/wrong-store"))
        .await?
        .into_inner();
    assert!(
        resp.region_error.and_then(|e| e.store_not_match).is_some(),
        "RawPut to the wrong store"
    );
    let resp = t
        .stub
        .kv_prewrite(kvrpcpb::PrewriteRequest {
            context: Some(wrong_store),
            ..prewrite.clone()
        })
        .await?
        .into_inner();
    assert!(
        resp.region_error.and_then(|e| e.store_not_match).is_some(),
        "KvPrewrite to the wrong store"
    );

    // None of the misrouted writes happened.
    for key in ["wire/unknown", "wire/stale", "wire/wrong-store"] {
        let resp = t
            .stub
            .raw_get(get(Some(good.clone()), key.as_bytes()))
            .await?
            .into_inner();
        assert!(resp.region_error.is_none(), "{:?}", resp.region_error);
        assert!(
            resp.not_found && resp.value.is_empty(),
            "misrouted write of {key} was applied"
        );
    }
    let now = txn1.current_timestamp().await?;
    let locks = txn1.scan_locks(&now, k("wire/")..k("wire0"), 100).await?;
    assert!(
        locks.is_empty(),
        "misrouted prewrites left locks: {locks:?}"
    );

    // Malformed payloads that the client library would never send.
    let resp = t.stub.raw_put(put(good.clone(), b"")).await;
    assert_rejected(resp, |r| r.error.clone(), "RawPut with an empty key");
    let resp = t
        .stub
        .raw_batch_put(kvrpcpb::RawBatchPutRequest {
            context: Some(good.clone()),
            pairs: vec![
                kvrpcpb::KvPair {
                    key: k("wire/batch-ok"),
                    value: k("small"),
                    ..Default::default()
                },
                kvrpcpb::KvPair {
                    key: k("wire/batch-big"),
                    value: vec![0; MAX_VALUE + 1],
                    ..Default::default()
                },
            ],
            ..Default::default()
        })
        .await;
    assert_rejected(
        resp,
        |r| r.error.clone(),
        "RawBatchPut with one oversized value",
    );
    for key in ["wire/batch-ok", "wire/batch-big"] {
        let resp = t
            .stub
            .raw_get(get(Some(good.clone()), key.as_bytes()))
            .await?
            .into_inner();
        assert!(
            resp.not_found,
            "a rejected batch was partly applied: {key} stored"
        );
    }
    // A scan whose limit is absurd is bounded, not an allocation bomb.
    let resp = t
        .stub
        .raw_scan(kvrpcpb::RawScanRequest {
            context: Some(good.clone()),
            start_key: k("wire/"),
            end_key: k("wire0"),
            limit: u32::MAX,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(resp.region_error.is_none());
    still_serving(cluster, &raw1, "misrouted-requests").await?;
    Ok(())
}

/// Requests only an API V2 cluster can get wrong: keys without their
/// key-mode prefix (each sent to the Region its key belongs to, so the
/// prefix check is what refuses it), and a keyspace key sent to the
/// keyspace's other Region.
async fn bad_v2_requests_on_the_wire(cluster: &mut Cluster) -> Result<()> {
    let raw2 = impatient_raw(cluster, Api::V2).await?;
    let txn2 = txn_client(cluster, Api::V2).await?;
    let mut t = Target::new(cluster, Api::V2).await?;
    let put = |ctx: kvrpcpb::Context, key: &[u8]| kvrpcpb::RawPutRequest {
        context: Some(ctx),
        key: key.to_vec(),
        value: k("misrouted"),
        ..Default::default()
    };

    // API V2 requests must carry the key-mode prefix.
    t.route(KeyMode::Raw, b"no-prefix").await?;
    let resp = t.stub.raw_put(put(t.ctx(), b"no-prefix")).await;
    assert_rejected_about(
        resp,
        |r| r.error.clone(),
        "key",
        "V2 RawPut without the 'r' prefix",
    );
    let txn_mode_key = t.txn_key(b"txn-mode-key");
    t.route(KeyMode::Raw, &txn_mode_key).await?;
    let resp = t.stub.raw_put(put(t.ctx(), &txn_mode_key)).await;
    assert_rejected_about(
        resp,
        |r| r.error.clone(),
        "key",
        "V2 RawPut with a transactional ('x') key",
    );
    let raw_mode_key = t.raw_key(b"raw-mode-key");
    t.route(KeyMode::Txn, &raw_mode_key).await?;
    let start = txn2.current_timestamp().await?;
    let resp = t
        .stub
        .kv_prewrite(kvrpcpb::PrewriteRequest {
            context: Some(t.ctx()),
            mutations: vec![kvrpcpb::Mutation {
                op: kvrpcpb::Op::Put as i32,
                key: raw_mode_key.clone(),
                value: k("v"),
                ..Default::default()
            }],
            primary_lock: raw_mode_key,
            start_version: start.version(),
            lock_ttl: 60_000,
            ..Default::default()
        })
        .await;
    assert_rejected(
        resp,
        |r| {
            if r.errors.is_empty() {
                String::new()
            } else {
                format!("{:?}", r.errors)
            }
        },
        "V2 KvPrewrite with a raw ('r') key",
    );

    // The keyspace's raw and transactional data are in different Regions: a
    // raw key sent to the transactional Region is KeyNotInRegion.
    let raw_key = t.raw_key(b"wire/elsewhere");
    let txn_home = t.txn_key(b"");
    t.route(KeyMode::Txn, &txn_home).await?;
    let txn_region = t.region.id;
    let resp = t
        .stub
        .raw_get(kvrpcpb::RawGetRequest {
            context: Some(t.ctx()),
            key: raw_key.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let err = resp
        .region_error
        .context("V2 RawGet of a raw key in the txn Region: no region_error")?;
    let knir = err
        .key_not_in_region
        .clone()
        .with_context(|| format!("raw key in the txn Region: not key_not_in_region: {err:?}"))?;
    assert_eq!(knir.region_id, txn_region);
    assert_eq!(knir.key, raw_key);
    let resp = t
        .stub
        .raw_put(put(t.ctx(), &t.raw_key(b"wire/elsewhere")))
        .await?
        .into_inner();
    assert!(
        resp.region_error
            .and_then(|e| e.key_not_in_region)
            .is_some(),
        "V2 RawPut of a raw key to the txn Region"
    );
    assert_eq!(
        raw2.get(k("wire/elsewhere")).await?,
        None,
        "a misrouted write was applied"
    );
    for key in ["no-prefix", "txn-mode-key", "raw-mode-key"] {
        assert_eq!(raw2.get(k(key)).await?, None, "rejected {key} stored");
    }
    let now = txn2.current_timestamp().await?;
    let locks = txn2.scan_locks(&now, .., 100).await?;
    assert!(locks.is_empty(), "rejected prewrite left locks: {locks:?}");
    still_serving(cluster, &raw2, "v2-wire").await?;
    Ok(())
}

/// A message whose field types clash with every `tikvpb` request.
#[derive(Clone, PartialEq, prost::Message)]
struct WrongWireTypes {
    #[prost(fixed64, tag = "1")]
    context: u64,
    #[prost(fixed32, tag = "2")]
    key: u32,
}

/// A message whose `context` bytes are not a `Context`.
#[derive(Clone, PartialEq, prost::Message)]
struct GarbageContext {
    #[prost(bytes = "vec", tag = "1")]
    context: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    key: Vec<u8>,
}

async fn send_undecodable<M: prost::Message + Send + Sync + 'static>(
    addr: &str,
    method: &'static str,
    msg: M,
) -> Result<Status> {
    let channel = common::channel(addr).await?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await?;
    let codec = tonic_prost::ProstCodec::<M, kvrpcpb::RawGetResponse>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(method);
    match grpc.unary(tonic::Request::new(msg), path, codec).await {
        Ok(resp) => bail!(
            "undecodable request to {method} was answered: {:?}",
            resp.get_ref()
        ),
        Err(status) => Ok(status),
    }
}

async fn undecodable_protobuf(cluster: &mut Cluster) -> Result<()> {
    let raw1 = impatient_raw(cluster, Api::V1).await?;
    let addr = cluster.store_addrs[0].clone();
    for method in [
        "/tikvpb.Tikv/RawGet",
        "/tikvpb.Tikv/RawPut",
        "/tikvpb.Tikv/KvPrewrite",
    ] {
        let status = send_undecodable(&addr, method, WrongWireTypes { context: 7, key: 9 }).await?;
        assert_ne!(status.code(), Code::Ok, "{method}: {status:?}");
        let status = send_undecodable(
            &addr,
            method,
            GarbageContext {
                context: vec![0xff; 37],
                key: k("k"),
            },
        )
        .await?;
        assert_ne!(status.code(), Code::Ok, "{method}: {status:?}");
    }
    // An unknown method is Unimplemented, not a hang.
    let status = send_undecodable(
        &addr,
        "/tikvpb.Tikv/NoSuchMethod",
        GarbageContext::default(),
    )
    .await?;
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    still_serving(cluster, &raw1, "undecodable-protobuf").await?;
    Ok(())
}

/// Writes `bytes` to `addr` on a fresh connection, reads whatever comes back
/// for a moment, and hangs up.
async fn throw_garbage(addr: &str, bytes: &[u8]) -> Result<()> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    // The server may hang up mid-write; that is a fine answer to garbage.
    let _ = stream.write_all(bytes).await;
    let mut sink = vec![0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(300), stream.read(&mut sink)).await;
    Ok(())
}

async fn garbage_on_the_ports(cluster: &mut Cluster) -> Result<()> {
    let raw1 = impatient_raw(cluster, Api::V1).await?;
    let mut noise = vec![0u8; 256 * 1024];
    rand::Rng::fill(&mut rand::rng(), noise.as_mut_slice());
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    let mut preface_then_noise = preface.clone();
    preface_then_noise.extend_from_slice(&noise[..4096]);
    // A frame header announcing a 16 MiB HEADERS frame that never arrives.
    let mut truncated_frame = preface.clone();
    truncated_frame.extend_from_slice(&[0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00]);
    truncated_frame
        .extend_from_slice(&[0xff, 0xff, 0xff, 0x01, 0x05, 0x00, 0x00, 0x00, 0x01, 0x42]);
    let payloads: Vec<Vec<u8>> = vec![
        noise.clone(),
        preface_then_noise,
        truncated_frame,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(), // a TLS ClientHello start
        Vec::new(),
    ];
    let targets = [
        ("storage gRPC", cluster.store_addrs[0].clone()),
        ("storage status", cluster.store_status_addrs[0].clone()),
        ("placement", cluster.pd_addr.clone()),
    ];
    for (name, addr) in &targets {
        for (i, payload) in payloads.iter().enumerate() {
            throw_garbage(addr, payload)
                .await
                .with_context(|| format!("{name} garbage #{i}"))?;
        }
        // Many at once.
        let floods: Vec<_> = (0..32)
            .map(|i| {
                let addr = addr.clone();
                let chunk = noise[i * 1024..(i + 1) * 1024].to_vec();
                tokio::spawn(async move { throw_garbage(&addr, &chunk).await })
            })
            .collect();
        for flood in floods {
            flood.await??;
        }
        still_serving(
            cluster,
            &raw1,
            &format!("garbage-{}", name.replace(' ', "-")),
        )
        .await?;
    }
    // The HTTP endpoints still answer too.
    let (code, _) = shale_e2e::http_get(&cluster.store_status_addrs[0], "/status").await?;
    assert_eq!(code, 200);
    let (code, _) = shale_e2e::http_get(&cluster.pd_addr, "/pd/api/v1/health").await?;
    assert_eq!(code, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_clear_errors_and_servers_keep_serving() -> Result<()> {
    let mut cluster = start(Api::V1).await?;
    let logs = cluster.logs_on_failure();
    bad_keys_and_values(&mut cluster, Api::V1)
        .await
        .context("bad keys and values")?;
    bad_requests_on_the_wire(&mut cluster)
        .await
        .context("misaddressed and malformed requests")?;
    undecodable_protobuf(&mut cluster)
        .await
        .context("undecodable protobuf")?;
    garbage_on_the_ports(&mut cluster)
        .await
        .context("garbage bytes")?;
    for (name, log) in [
        ("placement", cluster.placements[0].log()),
        ("store", cluster.stores[0].log()),
    ] {
        assert!(!log.contains("panicked"), "{name} panicked:\n{log}");
    }
    logs.disarm();
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_to_an_api_v2_cluster_gets_clear_errors() -> Result<()> {
    let mut cluster = start(Api::V2).await?;
    let logs = cluster.logs_on_failure();
    bad_keys_and_values(&mut cluster, Api::V2)
        .await
        .context("bad keys and values")?;
    bad_v2_requests_on_the_wire(&mut cluster)
        .await
        .context("API V2 requests on the wire")?;
    for (name, log) in [
        ("placement", cluster.placements[0].log()),
        ("store", cluster.stores[0].log()),
    ] {
        assert!(!log.contains("panicked"), "{name} panicked:\n{log}");
    }
    logs.disarm();
    Ok(())
}

/// Runs `storage-node` with `config` and returns (exit success, stderr+stdout).
fn run_storage_node_with_config(config: &[u8]) -> Result<(Option<i32>, String)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, config)?;
    run_storage_node(&["--config".into(), path.display().to_string()], dir.path())
}

fn run_storage_node(extra: &[String], dir: &std::path::Path) -> Result<(Option<i32>, String)> {
    let out = dir.join("out.log");
    let log = std::fs::File::create(&out)?;
    let mut child = Command::new(shale_e2e::binary("storage-node")?)
        .args(extra)
        .args([
            "--data-dir",
            &dir.join("data").display().to_string(),
            "--addr",
            "127.0.0.1:0",
            "--status-addr",
            "127.0.0.1:0",
            "--pd",
            // Nothing listens here: a valid config would wait for placement.
            "127.0.0.1:1",
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "storage-node still running 20 s after a bad config; output:\n{}",
                std::fs::read_to_string(&out).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok((status.code(), std::fs::read_to_string(&out)?))
}

#[test]
fn corrupt_storage_node_config_exits_with_a_message() -> Result<()> {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "binary garbage",
            vec![0x00, 0xff, 0xfe, 0x5b, 0x5b, 0x0a, 0x80, 0x81],
        ),
        ("not TOML", b"this is = = not [toml\n[[[".to_vec()),
        ("unknown key", b"max-value-sise = 10\n".to_vec()),
        ("wrong type", b"max-value-size = \"big\"\n".to_vec()),
        ("negative size", b"max-value-size = -1\n".to_vec()),
        ("invalid value", b"max-value-size = 0\n".to_vec()),
        ("unknown API version", b"api-version = 3\n".to_vec()),
    ];
    for (name, config) in cases {
        let (code, output) = run_storage_node_with_config(&config)?;
        assert!(
            matches!(code, Some(c) if c != 0),
            "{name}: exit code {code:?}, expected a non-zero exit; output:\n{output}"
        );
        assert!(
            output.to_lowercase().contains("config"),
            "{name}: the error does not mention the config; output:\n{output}"
        );
        assert!(!output.contains("panicked"), "{name}: panicked:\n{output}");
    }

    // A config file that does not exist.
    let dir = tempfile::tempdir()?;
    let (code, output) = run_storage_node(
        &[
            "--config".into(),
            dir.path().join("missing.toml").display().to_string(),
        ],
        dir.path(),
    )?;
    assert!(
        matches!(code, Some(c) if c != 0),
        "missing config: exit {code:?}\n{output}"
    );
    assert!(
        output.to_lowercase().contains("config"),
        "missing config: {output}"
    );

    // The API version flag is checked like the config key.
    let dir = tempfile::tempdir()?;
    let (code, output) = run_storage_node(&["--api-version".into(), "3".into()], dir.path())?;
    assert!(
        matches!(code, Some(c) if c != 0),
        "--api-version 3: exit {code:?}\n{output}"
    );
    assert!(
        output.contains("api_version") || output.contains("api-version"),
        "--api-version 3: the error does not name the setting: {output}"
    );
    assert!(!output.contains("panicked"), "--api-version 3: {output}");
    Ok(())
}
