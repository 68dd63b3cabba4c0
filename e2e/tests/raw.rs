//! The Raw API through the official `tikv-client`, in API V1 (on a default
//! cluster) and API V2 (on a cluster started with `api_version = 2`): point
//! and batch operations, scans (forward, reverse, limits, key-only),
//! delete-range, TTL, compare-and-swap; and the errors a client of the other
//! API version gets.
//!
//! Exact range contents are checked with hand-made `RawScan` requests (one
//! request, one answer). `tikv-client` 0.4's own `scan` only stops early when
//! the Region's end key is at or past the range's end: in a Region with an
//! empty end key and a limit larger than the range, it starts over at the
//! Region end (`""`) and returns keys again. Client scans here therefore use
//! limits the range can fill; `raw_v2_scan_with_a_spare_limit_returns_each_key_once`
//! covers the spare-limit case for API V2, where the keyspace's own Regions
//! avoid it.

mod common;

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use common::{
    default_keyspace_id, k, keys_of, keyspace_bounds, optimistic, raw_client, read, regions,
    start_cluster, txn_client, Api, KeyMode, Target,
};
use shale_e2e::Cluster;
use shale_proto::kvrpcpb;
use tikv_client::{Backoff, Key, KvPair, RawClient, RetryOptions};
use tonic::Code;

fn key_strings(keys: &[Key]) -> Vec<String> {
    keys.iter()
        .map(|key| String::from_utf8_lossy(key.into()).into_owned())
        .collect()
}

fn names(prefix: &str, ids: impl IntoIterator<Item = usize>) -> Vec<String> {
    ids.into_iter().map(|i| format!("{prefix}{i:02}")).collect()
}

/// One `RawScan` request on the wire; keys come back in user form (API V2
/// prefix checked and stripped). `start`/`end` are user keys; an empty `end`
/// means the end of the API's key space.
async fn wire_scan(
    target: &mut Target,
    start: &[u8],
    end: &[u8],
    limit: u32,
    reverse: bool,
    key_only: bool,
) -> Result<Vec<(String, Vec<u8>)>> {
    let (lower, upper) = match target.api {
        Api::V1 => (start.to_vec(), end.to_vec()),
        Api::V2 => {
            let upper = if end.is_empty() {
                // The next keyspace's prefix.
                let mut u = target.raw_key(b"");
                u[3] = u[3].wrapping_add(1);
                u
            } else {
                target.raw_key(end)
            };
            (target.raw_key(start), upper)
        }
    };
    target.route(KeyMode::Raw, &lower).await?;
    let (start_key, end_key) = if reverse {
        (upper, lower)
    } else {
        (lower, upper)
    };
    let resp = target
        .stub
        .raw_scan(kvrpcpb::RawScanRequest {
            context: Some(target.ctx()),
            start_key,
            end_key,
            limit,
            key_only,
            reverse,
            ..Default::default()
        })
        .await?
        .into_inner();
    ensure!(
        resp.region_error.is_none(),
        "RawScan region error: {:?}",
        resp.region_error
    );
    let prefix = target.raw_key(b"");
    let mut out = Vec::new();
    for kv in resp.kvs {
        let key = match target.api {
            Api::V1 => kv.key,
            Api::V2 => {
                ensure!(
                    kv.key.starts_with(&prefix),
                    "V2 RawScan returned a key outside the keyspace: {:?}",
                    kv.key
                );
                kv.key[prefix.len()..].to_vec()
            }
        };
        out.push((String::from_utf8_lossy(&key).into_owned(), kv.value));
    }
    Ok(out)
}

fn wire_keys(pairs: &[(String, Vec<u8>)]) -> Vec<String> {
    pairs.iter().map(|(key, _)| key.clone()).collect()
}

async fn point_operations(client: &RawClient) -> Result<()> {
    assert_eq!(client.get(k("p/missing")).await?, None);
    client.put(k("p/a"), k("one")).await?;
    assert_eq!(client.get(k("p/a")).await?, Some(k("one")));
    client.put(k("p/a"), k("two")).await?;
    assert_eq!(client.get(k("p/a")).await?, Some(k("two")), "overwrite");
    // An empty value is a value, not a deletion.
    client.put(k("p/empty"), Vec::<u8>::new()).await?;
    assert_eq!(client.get(k("p/empty")).await?, Some(Vec::new()));
    client.delete(k("p/a")).await?;
    assert_eq!(client.get(k("p/a")).await?, None, "deleted");
    client.delete(k("p/never-written")).await?;
    // Binary keys and values survive untouched.
    let key = vec![0u8, 255, 1, 0, 254];
    let value: Vec<u8> = (0..=255).collect();
    client.put(key.clone(), value.clone()).await?;
    assert_eq!(client.get(key).await?, Some(value));
    Ok(())
}

async fn batch_operations(client: &RawClient, target: &mut Target) -> Result<()> {
    let pairs: Vec<KvPair> = (0..10)
        .map(|i| {
            KvPair::new(
                format!("b/{i:02}").into_bytes(),
                format!("v{i}").into_bytes(),
            )
        })
        .collect();
    client.batch_put(pairs).await?;
    let mut got = client
        .batch_get(vec![k("b/01"), k("b/05"), k("b/09"), k("b/missing")])
        .await?;
    got.sort_by(|a, b| a.key().cmp(b.key()));
    assert_eq!(
        keys_of(&got),
        ["b/01", "b/05", "b/09"],
        "missing keys are left out"
    );
    let values: Vec<Vec<u8>> = got.iter().map(|p| p.value().clone()).collect();
    assert_eq!(values, [k("v1"), k("v5"), k("v9")]);

    client
        .batch_delete(vec![k("b/01"), k("b/02"), k("b/missing")])
        .await?;
    let expected = names("b/", [0, 3, 4, 5, 6, 7, 8, 9]);
    let left = wire_scan(target, b"b/", b"b0", 100, false, false).await?;
    assert_eq!(
        wire_keys(&left),
        expected,
        "batch_delete removes exactly its keys"
    );
    let left = client.scan(k("b/")..k("b0"), 8).await?;
    assert_eq!(keys_of(&left), expected, "client scan after batch_delete");
    Ok(())
}

async fn scans(client: &RawClient, target: &mut Target) -> Result<()> {
    let pairs: Vec<KvPair> = (0..20)
        .map(|i| {
            KvPair::new(
                format!("s/{i:02}").into_bytes(),
                format!("val-{i}").into_bytes(),
            )
        })
        .collect();
    client.batch_put(pairs).await?;
    // Neighbours just outside the range must never show up.
    client.put(k("s."), k("below")).await?;
    client.put(k("s0"), k("the exclusive end")).await?;

    // The server's answers, one request each.
    let all = wire_scan(target, b"s/", b"s0", 100, false, false).await?;
    assert_eq!(wire_keys(&all), names("s/", 0..20), "full range, ascending");
    assert_eq!(all[7].1, k("val-7"));
    let first = wire_scan(target, b"s/", b"s0", 5, false, false).await?;
    assert_eq!(wire_keys(&first), names("s/", 0..5), "limit 5");
    let middle = wire_scan(target, b"s/05", b"s/10", 100, false, false).await?;
    assert_eq!(
        wire_keys(&middle),
        names("s/", 5..10),
        "start inclusive, end exclusive"
    );
    let rev = wire_scan(target, b"s/", b"s0", 3, true, false).await?;
    assert_eq!(
        wire_keys(&rev),
        names("s/", [19, 18, 17]),
        "reverse, limit 3"
    );
    assert_eq!(rev[0].1, k("val-19"));
    let rev_mid = wire_scan(target, b"s/05", b"s/10", 100, true, false).await?;
    assert_eq!(
        wire_keys(&rev_mid),
        names("s/", [9, 8, 7, 6, 5]),
        "reverse: upper bound exclusive, lower bound inclusive"
    );
    let empty = wire_scan(target, b"s/50", b"s/60", 100, false, false).await?;
    assert!(empty.is_empty(), "empty range: {:?}", wire_keys(&empty));
    let key_only = wire_scan(target, b"s/", b"s0", 6, false, true).await?;
    assert_eq!(wire_keys(&key_only), names("s/", 0..6), "key_only, limit 6");
    for (key, value) in &key_only {
        assert!(value.is_empty(), "key_only scan returned a value for {key}");
    }
    let tail = wire_scan(target, b"s/17", b"", 100, false, false).await?;
    let mut expected = names("s/", 17..20);
    expected.push("s0".into());
    assert_eq!(wire_keys(&tail), expected, "open end");

    // The same through the client (with limits the range can fill).
    let all = client.scan(k("s/")..k("s0"), 20).await?;
    assert_eq!(keys_of(&all), names("s/", 0..20), "client scan");
    assert_eq!(all[7].value(), &k("val-7"));
    let first = client.scan(k("s/")..k("s0"), 5).await?;
    assert_eq!(keys_of(&first), names("s/", 0..5), "client scan, limit 5");
    let inclusive = client.scan(k("s/05")..=k("s/10"), 6).await?;
    assert_eq!(
        keys_of(&inclusive),
        names("s/", 5..=10),
        "..= includes the end"
    );
    let tail = client.scan(k("s/17").., 4).await?;
    assert_eq!(keys_of(&tail), expected, "client scan, open end");
    let rev = client.scan_reverse(k("s/")..k("s0"), 3).await?;
    assert_eq!(
        keys_of(&rev),
        names("s/", [19, 18, 17]),
        "client reverse scan"
    );
    assert_eq!(rev[0].value(), &k("val-19"));
    let rev_mid = client.scan_reverse(k("s/05")..k("s/10"), 5).await?;
    assert_eq!(keys_of(&rev_mid), names("s/", [9, 8, 7, 6, 5]));
    let keys = client.scan_keys(k("s/")..k("s0"), 4).await?;
    assert_eq!(key_strings(&keys), names("s/", 0..4), "scan_keys, limit 4");
    let rev_keys = client.scan_keys_reverse(k("s/")..k("s0"), 2).await?;
    assert_eq!(
        key_strings(&rev_keys),
        names("s/", [19, 18]),
        "scan_keys_reverse"
    );
    Ok(())
}

async fn delete_range(client: &RawClient, target: &mut Target) -> Result<()> {
    let pairs: Vec<KvPair> = (0..10)
        .map(|i| KvPair::new(format!("d/{i:02}").into_bytes(), k("x")))
        .collect();
    client.batch_put(pairs).await?;
    client.delete_range(k("d/03")..k("d/07")).await?;
    let expected = names("d/", [0, 1, 2, 7, 8, 9]);
    let left = wire_scan(target, b"d/", b"d0", 100, false, false).await?;
    assert_eq!(wire_keys(&left), expected, "delete_range [d/03, d/07)");
    let left = client.scan(k("d/")..k("d0"), 6).await?;
    assert_eq!(keys_of(&left), expected);
    client.delete_range(k("d/")..k("d0")).await?;
    let left = wire_scan(target, b"d/", b"d0", 100, false, false).await?;
    assert!(left.is_empty(), "left after delete_range: {left:?}");
    // Data outside the ranges is untouched.
    assert!(client.get(k("s/00")).await?.is_some());
    assert!(client.get(k("s0")).await?.is_some());
    Ok(())
}

async fn ttl(client: &RawClient, target: &mut Target) -> Result<()> {
    assert_eq!(client.get_key_ttl_secs(k("t/missing")).await?, None);
    client.put(k("t/forever"), k("v")).await?;
    assert_eq!(
        client.get_key_ttl_secs(k("t/forever")).await?,
        Some(0),
        "a key written without TTL reports TTL 0"
    );

    let written = Instant::now();
    client.put_with_ttl(k("t/short"), k("short"), 2).await?;
    client
        .batch_put_with_ttl(
            vec![
                KvPair::new(k("t/batch-short"), k("bs")),
                KvPair::new(k("t/batch-long"), k("bl")),
            ],
            vec![2, 600],
        )
        .await?;
    assert_eq!(client.get(k("t/short")).await?, Some(k("short")));
    assert_eq!(client.get(k("t/batch-short")).await?, Some(k("bs")));
    let short = client.get_key_ttl_secs(k("t/short")).await?;
    assert!(matches!(short, Some(1..=2)), "ttl of t/short: {short:?}");
    let long = client.get_key_ttl_secs(k("t/batch-long")).await?;
    assert!(
        matches!(long, Some(590..=600)),
        "ttl of t/batch-long: {long:?}"
    );
    let before = wire_scan(target, b"t/", b"t0", 100, false, false).await?;
    assert_eq!(
        wire_keys(&before),
        ["t/batch-long", "t/batch-short", "t/forever", "t/short"]
    );

    // Second-granularity expiry: a 2 s TTL is gone after at most 3 s.
    tokio::time::sleep(Duration::from_millis(3500).saturating_sub(written.elapsed())).await;
    assert_eq!(
        client.get(k("t/short")).await?,
        None,
        "expired by put_with_ttl"
    );
    assert_eq!(
        client.get(k("t/batch-short")).await?,
        None,
        "expired by batch_put_with_ttl"
    );
    assert_eq!(client.get_key_ttl_secs(k("t/short")).await?, None);
    let got = client
        .batch_get(vec![k("t/short"), k("t/batch-short"), k("t/batch-long")])
        .await?;
    assert_eq!(
        keys_of(&got),
        ["t/batch-long"],
        "batch_get skips expired keys"
    );
    let after = wire_scan(target, b"t/", b"t0", 100, false, false).await?;
    assert_eq!(
        wire_keys(&after),
        ["t/batch-long", "t/forever"],
        "scan skips expired keys"
    );
    let rev = wire_scan(target, b"t/", b"t0", 100, true, false).await?;
    assert_eq!(
        wire_keys(&rev),
        ["t/forever", "t/batch-long"],
        "reverse scan skips expired keys"
    );
    let scanned = client.scan(k("t/")..k("t0"), 2).await?;
    assert_eq!(keys_of(&scanned), ["t/batch-long", "t/forever"]);
    assert_eq!(client.get(k("t/batch-long")).await?, Some(k("bl")));
    // Writing over an expired key starts afresh.
    client.put(k("t/short"), k("again")).await?;
    assert_eq!(client.get(k("t/short")).await?, Some(k("again")));
    assert_eq!(client.get_key_ttl_secs(k("t/short")).await?, Some(0));
    Ok(())
}

async fn compare_and_swap(client: &RawClient) -> Result<()> {
    let cas = client.with_atomic_for_cas();
    cas.put(k("c/key"), k("first")).await?;

    let (prev, swapped) = cas
        .compare_and_swap(k("c/key"), Some(k("wrong")), k("second"))
        .await?;
    assert!(!swapped, "CAS with a wrong expected value must not swap");
    assert_eq!(
        prev,
        Some(k("first")),
        "failed CAS reports the current value"
    );
    assert_eq!(cas.get(k("c/key")).await?, Some(k("first")));

    let (prev, swapped) = cas
        .compare_and_swap(k("c/key"), Some(k("first")), k("second"))
        .await?;
    assert!(swapped, "CAS with the right expected value swaps");
    assert_eq!(prev, Some(k("first")));
    assert_eq!(cas.get(k("c/key")).await?, Some(k("second")));

    // Expecting absence.
    let (prev, swapped) = cas.compare_and_swap(k("c/key"), None, k("third")).await?;
    assert!(
        !swapped,
        "expected-absent CAS on an existing key must not swap"
    );
    assert_eq!(prev, Some(k("second")));
    let (prev, swapped) = cas.compare_and_swap(k("c/new"), None, k("created")).await?;
    assert!(swapped, "expected-absent CAS on a missing key swaps");
    assert_eq!(prev, None);
    assert_eq!(cas.get(k("c/new")).await?, Some(k("created")));
    let (_, swapped) = cas
        .compare_and_swap(k("c/missing"), Some(k("x")), k("y"))
        .await?;
    assert!(
        !swapped,
        "CAS expecting a value on a missing key must not swap"
    );
    assert_eq!(cas.get(k("c/missing")).await?, None);

    cas.delete(k("c/key")).await?;
    assert_eq!(cas.get(k("c/key")).await?, None, "atomic delete");

    // Concurrent increments through CAS: none may be lost.
    cas.put(k("c/counter"), k("0")).await?;
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let cas = cas.clone();
            tokio::spawn(async move {
                let mut done = 0;
                while done < 10 {
                    let current = cas.get(k("c/counter")).await?;
                    let n: u64 = current
                        .as_deref()
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| anyhow::anyhow!("counter is not a number: {current:?}"))?;
                    let next = (n + 1).to_string().into_bytes();
                    let (_, swapped) = cas.compare_and_swap(k("c/counter"), current, next).await?;
                    if swapped {
                        done += 1;
                    }
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    assert_eq!(
        cas.get(k("c/counter")).await?,
        Some(k("40")),
        "lost CAS updates"
    );
    Ok(())
}

async fn raw_suite(api: Api) -> Result<()> {
    let cluster = start_cluster(api, "").await?;
    let logs = cluster.logs_on_failure();
    let client = raw_client(&cluster, api).await?;
    let mut target = Target::new(&cluster, api).await?;
    point_operations(&client).await?;
    batch_operations(&client, &mut target).await?;
    scans(&client, &mut target).await?;
    delete_range(&client, &mut target).await?;
    ttl(&client, &mut target).await?;
    compare_and_swap(&client).await?;
    logs.disarm();
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn raw_api_v1() -> Result<()> {
    raw_suite(Api::V1).await
}

#[tokio::test(flavor = "multi_thread")]
async fn raw_api_v2() -> Result<()> {
    raw_suite(Api::V2).await
}

// ---------------------------------------------------------------------------
// One API version per cluster

/// `result` must be the storage node's refusal of the other API version: an
/// error naming the version the cluster serves and the one the request used.
fn assert_wrong_api<T: std::fmt::Debug, E: std::fmt::Display + std::fmt::Debug>(
    result: Result<T, E>,
    served: Api,
    used: Api,
    what: &str,
) {
    let expected = format!(
        "this cluster serves API {}, the request uses API {}",
        served.name(),
        used.name()
    );
    match result {
        Ok(v) => {
            panic!("{what}: an API {used:?} request to an API {served:?} cluster succeeded: {v:?}")
        }
        Err(e) => {
            let text = format!("{e} / {e:?}");
            assert!(
                text.contains(&expected),
                "{what}: the error does not say {expected:?}: {text}"
            );
        }
    }
}

/// Clients and hand-made requests of API `wrong` against a cluster serving
/// `served`: each gets the API-version error, and the cluster keeps
/// serving its own API.
async fn other_api_is_refused(cluster: &mut Cluster, served: Api, wrong: Api) -> Result<()> {
    let good = raw_client(cluster, served).await?;
    let good_txn = txn_client(cluster, served).await?;
    good.put(k("api/kept"), k("served")).await?;

    // tikv-client retries a gRPC error with its region backoff: fail fast.
    let bad = raw_client(cluster, wrong)
        .await?
        .with_backoff(Backoff::no_backoff());
    assert_wrong_api(bad.get(k("api/kept")).await, served, wrong, "raw get");
    assert_wrong_api(
        bad.put(k("api/wrong"), k("x")).await,
        served,
        wrong,
        "raw put",
    );
    assert_wrong_api(
        bad.batch_put(vec![KvPair::new(k("api/wrong-batch"), k("x"))])
            .await,
        served,
        wrong,
        "raw batch_put",
    );
    assert_wrong_api(
        bad.scan(k("api/")..k("api0"), 10).await,
        served,
        wrong,
        "raw scan",
    );
    assert_wrong_api(
        bad.delete_range(k("api/")..k("api0")).await,
        served,
        wrong,
        "raw delete_range",
    );

    let bad_txn = txn_client(cluster, wrong).await?;
    let fail_fast = optimistic().retry_options(RetryOptions::none());
    let mut txn = bad_txn.begin_with_options(fail_fast.clone()).await?;
    // (tikv-client's transactional `get` retries with its default region
    // backoff whatever the options say: about 1.6 s before the error.)
    assert_wrong_api(txn.get(k("api/kept")).await, served, wrong, "txn get");
    let _ = txn.rollback().await;
    let mut txn = bad_txn.begin_with_options(fail_fast).await?;
    txn.put(k("api/wrong-txn"), k("x")).await?;
    assert_wrong_api(txn.commit().await, served, wrong, "txn commit");
    let _ = txn.rollback().await;

    // On the wire: a correctly addressed request whose context names the
    // other version is InvalidArgument, not a region error or a silent answer.
    let mut t = Target::new(cluster, served).await?;
    let key = t.raw_key(b"api/kept");
    t.route(KeyMode::Raw, &key).await?;
    let mut wrong_versions = vec![(wrong.proto(), wrong)];
    if served == Api::V2 {
        // V1TTL is API V1's key layout too.
        wrong_versions.push((kvrpcpb::ApiVersion::V1ttl, Api::V1));
    }
    for (version, family) in wrong_versions {
        let status = match t
            .stub
            .raw_get(kvrpcpb::RawGetRequest {
                context: Some(kvrpcpb::Context {
                    api_version: version as i32,
                    ..t.ctx()
                }),
                key: key.clone(),
                ..Default::default()
            })
            .await
        {
            Ok(resp) => bail!("RawGet with api_version {version:?} answered: {resp:?}"),
            Err(status) => status,
        };
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "RawGet with api_version {version:?}: {status:?}"
        );
        assert_wrong_api(
            Err::<(), _>(status.message().to_string()),
            served,
            family,
            &format!("RawGet with api_version {version:?}"),
        );
    }
    // The same request with the served version is answered.
    let resp = t
        .stub
        .raw_get(kvrpcpb::RawGetRequest {
            context: Some(t.ctx()),
            key,
            ..Default::default()
        })
        .await?
        .into_inner();
    ensure!(
        resp.region_error.is_none() && resp.error.is_empty(),
        "RawGet with the served version: {resp:?}"
    );
    assert_eq!(resp.value, k("served"), "RawGet with the served version");

    // The cluster still serves its own API; the refused writes are nowhere
    // in sight of it.
    ensure!(
        cluster.stores[0].is_running(),
        "storage node died after wrong-version requests"
    );
    assert_eq!(good.get(k("api/kept")).await?, Some(k("served")));
    good.put(k("api/after"), k("still serving"))
        .await
        .context("raw put after wrong-version requests")?;
    assert_eq!(good.get(k("api/after")).await?, Some(k("still serving")));
    let written = good
        .batch_get(vec![k("api/wrong"), k("api/wrong-batch")])
        .await?;
    assert!(written.is_empty(), "refused raw writes: {written:?}");
    common::commit_puts(&good_txn, &[(k("api/txn"), k("still serving"))])
        .await
        .context("txn after wrong-version requests")?;
    assert_eq!(read(&good_txn, b"api/txn").await?, Some(k("still serving")));
    assert_eq!(read(&good_txn, b"api/wrong-txn").await?, None);
    Ok(())
}

/// A cluster serves one API version (TiKV's `storage.api-version`): V1 raw
/// keys are stored verbatim and V2 keys memcomparable-encoded, so mixing them
/// could not keep them apart. A client of the other version gets a clear
/// error, and the cluster keeps serving its own clients.
#[tokio::test(flavor = "multi_thread")]
async fn clients_of_the_other_api_version_get_a_clear_error() -> Result<()> {
    let (mut v1_cluster, mut v2_cluster) =
        tokio::try_join!(start_cluster(Api::V1, ""), start_cluster(Api::V2, ""))?;
    let logs1 = v1_cluster.logs_on_failure();
    let logs2 = v2_cluster.logs_on_failure();
    other_api_is_refused(&mut v1_cluster, Api::V1, Api::V2)
        .await
        .context("API V2 requests to an API V1 cluster")?;
    other_api_is_refused(&mut v2_cluster, Api::V2, Api::V1)
        .await
        .context("API V1 requests to an API V2 cluster")?;
    for cluster in [&v1_cluster, &v2_cluster] {
        let log = cluster.stores[0].log();
        assert!(!log.contains("panicked"), "storage node panicked:\n{log}");
    }
    logs1.disarm();
    logs2.disarm();
    Ok(())
}

/// `client.scan(range, limit)` with a limit larger than the range returns
/// every key once. `tikv-client` 0.4 keeps scanning from the Region's end key
/// until the limit is filled unless that end key is at or past the range's
/// end; PD splits Regions at each API V2 keyspace's bounds (keyspace
/// `Manager.Bootstrap` -> `splitKeyspaceRegion` for the DEFAULT keyspace),
/// and so does an API V2 Shale cluster, so a V2 client never scans a Region
/// with an empty end key.
#[tokio::test(flavor = "multi_thread")]
async fn raw_v2_scan_with_a_spare_limit_returns_each_key_once() -> Result<()> {
    let cluster = start_cluster(Api::V2, "").await?;
    let logs = cluster.logs_on_failure();

    // The DEFAULT keyspace's raw and txn ranges are Regions of their own:
    // five Regions, the four bounds among their start keys.
    let layout = regions(&cluster).await?;
    let starts: Vec<&[u8]> = layout.iter().map(|r| r.start_key.as_slice()).collect();
    assert!(
        layout.len() >= 5,
        "an API V2 cluster has {} Regions, expected at least 5: {layout:?}",
        layout.len()
    );
    let keyspace = default_keyspace_id(&cluster).await?;
    for bound in keyspace_bounds(keyspace) {
        assert!(
            starts.contains(&bound.as_slice()),
            "no Region starts at the keyspace bound {bound:?}: {layout:?}"
        );
    }
    let (code, body) = shale_e2e::http_get(&cluster.pd_addr, "/pd/api/v1/regions").await?;
    assert_eq!(code, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body)
        .with_context(|| format!("/pd/api/v1/regions is not JSON: {body}"))?;
    assert_eq!(
        json["count"].as_u64(),
        Some(layout.len() as u64),
        "/pd/api/v1/regions count vs ScanRegions: {body}"
    );

    let v2 = raw_client(&cluster, Api::V2).await?;
    let pairs: Vec<KvPair> = (0..5)
        .map(|i| KvPair::new(format!("spare/{i}").into_bytes(), k("v")))
        .collect();
    v2.batch_put(pairs).await?;
    let got = v2.scan(k("spare/")..k("spare0"), 100).await?;
    let first: Vec<String> = keys_of(&got).into_iter().take(12).collect();
    assert_eq!(
        got.len(),
        5,
        "V2 scan of 5 keys with limit 100 returned {} pairs, starting {first:?}; \
         placement regions: {body}",
        got.len()
    );
    assert_eq!(
        keys_of(&got),
        (0..5).map(|i| format!("spare/{i}")).collect::<Vec<_>>()
    );
    let all = v2.scan(.., 100).await?;
    assert_eq!(all.len(), 5, "V2 whole-keyspace scan: {} pairs", all.len());
    let rev = v2.scan_reverse(k("spare/")..k("spare0"), 100).await?;
    assert_eq!(rev.len(), 5, "V2 reverse scan: {} pairs", rev.len());
    let keys = v2.scan_keys(.., 100).await?;
    assert_eq!(keys.len(), 5, "V2 whole-keyspace scan_keys: {keys:?}");
    logs.disarm();
    Ok(())
}

/// The SplitRegion RPC splits through the Region's Raft group: placement
/// learns the new Regions and clients keep working across them.
#[tokio::test(flavor = "multi_thread")]
async fn split_region_rpc_splits_the_region() -> Result<()> {
    let cluster = start_cluster(Api::V1, "").await?;
    let logs = cluster.logs_on_failure();
    let raw = raw_client(&cluster, Api::V1).await?;
    for key in ["a", "m", "n", "t", "z"] {
        raw.put(k(key), k(key)).await?;
    }
    let mut t = Target::new(&cluster, Api::V1).await?;
    t.route(KeyMode::Raw, b"m").await?;
    let before = t.region.clone();
    let resp = t
        .stub
        .split_region(kvrpcpb::SplitRegionRequest {
            context: Some(t.ctx()),
            split_keys: vec![k("t"), k("m")],
            is_raw_kv: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    ensure!(resp.region_error.is_none(), "{:?}", resp.region_error);
    let starts: Vec<Vec<u8>> = resp.regions.iter().map(|r| r.start_key.clone()).collect();
    ensure!(
        starts.contains(&k("m")) && starts.contains(&k("t")),
        "{starts:?}"
    );
    ensure!(resp.regions.len() == 3, "{:?}", resp.regions);
    let placement_starts: Vec<Vec<u8>> = regions(&cluster)
        .await?
        .iter()
        .map(|r| r.start_key.clone())
        .collect();
    ensure!(
        placement_starts.contains(&k("t")),
        "placement: {placement_starts:?}"
    );

    // The old epoch is refused; a key outside the Region is a bad request.
    let stale = t
        .stub
        .split_region(kvrpcpb::SplitRegionRequest {
            context: Some(kvrpcpb::Context {
                region_epoch: before.region_epoch,
                ..t.ctx()
            }),
            split_keys: vec![k("q")],
            is_raw_kv: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    ensure!(stale.region_error.is_some(), "stale epoch accepted");

    for key in ["a", "m", "n", "t", "z"] {
        ensure!(
            raw.get(k(key)).await?.as_deref() == Some(key.as_bytes()),
            "{key}"
        );
    }
    raw.put(k("p"), k("p")).await?;
    logs.disarm();
    Ok(())
}
