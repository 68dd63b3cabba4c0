//! The Raw API through the official `tikv-client`, in API V1 and API V2:
//! point and batch operations, scans (forward, reverse, limits, key-only),
//! delete-range, TTL, compare-and-swap, and V1/V2 isolation.

mod common;

use std::time::{Duration, Instant};

use anyhow::Result;
use common::{k, keys_of, raw_client, Api, Target};
use shale_e2e::Cluster;
use shale_proto::kvrpcpb;
use tikv_client::{Key, KvPair, RawClient};

fn key_strings(keys: &[Key]) -> Vec<String> {
    keys.iter()
        .map(|key| String::from_utf8_lossy(key.into()).into_owned())
        .collect()
}

fn names(prefix: &str, ids: impl IntoIterator<Item = usize>) -> Vec<String> {
    ids.into_iter().map(|i| format!("{prefix}{i:02}")).collect()
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

async fn batch_operations(client: &RawClient) -> Result<()> {
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
    let left = client.scan(k("b/")..k("b0"), 100).await?;
    assert_eq!(
        keys_of(&left),
        names("b/", [0, 3, 4, 5, 6, 7, 8, 9]),
        "batch_delete removes exactly its keys"
    );
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

    let all = client.scan(k("s/")..k("s0"), 100).await?;
    assert_eq!(keys_of(&all), names("s/", 0..20), "full range, ascending");
    assert_eq!(all[7].value(), &k("val-7"));

    let first = client.scan(k("s/")..k("s0"), 5).await?;
    assert_eq!(keys_of(&first), names("s/", 0..5), "limit 5");

    let middle = client.scan(k("s/05")..k("s/10"), 100).await?;
    assert_eq!(
        keys_of(&middle),
        names("s/", 5..10),
        "end bound is exclusive"
    );

    let inclusive = client.scan(k("s/05")..=k("s/10"), 100).await?;
    assert_eq!(
        keys_of(&inclusive),
        names("s/", 5..=10),
        "..= includes the end"
    );

    let from = client.scan(k("s/17").., 100).await?;
    let mut expected = names("s/", 17..20);
    expected.push("s0".into());
    assert_eq!(keys_of(&from), expected, "open end");

    let rev = client.scan_reverse(k("s/")..k("s0"), 3).await?;
    assert_eq!(keys_of(&rev), names("s/", [19, 18, 17]), "reverse, limit 3");
    assert_eq!(rev[0].value(), &k("val-19"));

    let rev_mid = client.scan_reverse(k("s/05")..k("s/10"), 100).await?;
    assert_eq!(
        keys_of(&rev_mid),
        names("s/", [9, 8, 7, 6, 5]),
        "reverse range"
    );

    let keys = client.scan_keys(k("s/")..k("s0"), 4).await?;
    assert_eq!(key_strings(&keys), names("s/", 0..4), "scan_keys, limit 4");
    let rev_keys = client.scan_keys_reverse(k("s/")..k("s0"), 2).await?;
    assert_eq!(
        key_strings(&rev_keys),
        names("s/", [19, 18]),
        "scan_keys_reverse"
    );

    let empty = client.scan(k("s/50")..k("s/60"), 100).await?;
    assert!(empty.is_empty(), "empty range: {:?}", keys_of(&empty));

    // key_only on the wire: the server must not ship values.
    let resp = target
        .stub
        .raw_scan(kvrpcpb::RawScanRequest {
            context: Some(target.ctx()),
            start_key: target.raw_key(b"s/"),
            end_key: target.raw_key(b"s0"),
            limit: 6,
            key_only: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(resp.region_error.is_none(), "{:?}", resp.region_error);
    assert_eq!(resp.kvs.len(), 6, "key_only scan honours the limit");
    for (i, kv) in resp.kvs.iter().enumerate() {
        assert_eq!(kv.key, target.raw_key(format!("s/{i:02}").as_bytes()));
        assert!(
            kv.value.is_empty(),
            "key_only scan returned a value for {:?}",
            kv.key
        );
    }
    let resp = target
        .stub
        .raw_scan(kvrpcpb::RawScanRequest {
            context: Some(target.ctx()),
            start_key: target.raw_key(b"s0"),
            end_key: target.raw_key(b"s/"),
            limit: 2,
            reverse: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    let got: Vec<Vec<u8>> = resp.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(
        got,
        [target.raw_key(b"s/19"), target.raw_key(b"s/18")],
        "reverse scan on the wire: start_key is the upper bound"
    );
    Ok(())
}

async fn delete_range(client: &RawClient) -> Result<()> {
    let pairs: Vec<KvPair> = (0..10)
        .map(|i| KvPair::new(format!("d/{i:02}").into_bytes(), k("x")))
        .collect();
    client.batch_put(pairs).await?;
    client.delete_range(k("d/03")..k("d/07")).await?;
    let left = client.scan(k("d/")..k("d0"), 100).await?;
    assert_eq!(keys_of(&left), names("d/", [0, 1, 2, 7, 8, 9]));
    client.delete_range(k("d/")..k("d0")).await?;
    assert!(client.scan(k("d/")..k("d0"), 100).await?.is_empty());
    // Other data is untouched.
    assert!(client.get(k("s/00")).await?.is_some());
    Ok(())
}

async fn ttl(client: &RawClient) -> Result<()> {
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

    // Second-granularity expiry: 2 s TTL is gone after at most 3 s.
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
    let scanned = client.scan(k("t/")..k("t0"), 100).await?;
    assert_eq!(
        keys_of(&scanned),
        ["t/batch-long", "t/forever"],
        "scan skips expired keys"
    );
    assert_eq!(client.get(k("t/batch-long")).await?, Some(k("bl")));
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
    let cluster = Cluster::start(1).await?;
    let logs = cluster.logs_on_failure();
    let client = raw_client(&cluster, api).await?;
    let mut target = Target::new(&cluster, api).await?;
    point_operations(&client).await?;
    batch_operations(&client).await?;
    scans(&client, &mut target).await?;
    delete_range(&client).await?;
    ttl(&client).await?;
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

/// API V1 and API V2 share the cluster but never each other's data.
#[tokio::test(flavor = "multi_thread")]
async fn raw_v1_and_v2_do_not_see_each_other() -> Result<()> {
    let cluster = Cluster::start(1).await?;
    let logs = cluster.logs_on_failure();
    let v1 = raw_client(&cluster, Api::V1).await?;
    let v2 = raw_client(&cluster, Api::V2).await?;

    v1.put(k("iso/shared"), k("from-v1")).await?;
    v2.put(k("iso/shared"), k("from-v2")).await?;
    v1.put(k("iso/v1-only"), k("from-v1")).await?;
    v2.put(k("iso/v2-only"), k("from-v2")).await?;

    assert_eq!(v1.get(k("iso/shared")).await?, Some(k("from-v1")));
    assert_eq!(v2.get(k("iso/shared")).await?, Some(k("from-v2")));
    assert_eq!(v1.get(k("iso/v2-only")).await?, None, "V1 sees a V2 key");
    assert_eq!(v2.get(k("iso/v1-only")).await?, None, "V2 sees a V1 key");

    // Whole-space scans see only their own API's data.
    let all_v1 = v1.scan(.., 1000).await?;
    assert_eq!(
        keys_of(&all_v1),
        ["iso/shared", "iso/v1-only"],
        "V1 full scan"
    );
    assert!(all_v1.iter().all(|p| p.value() == &k("from-v1")));
    let all_v2 = v2.scan(.., 1000).await?;
    assert_eq!(
        keys_of(&all_v2),
        ["iso/shared", "iso/v2-only"],
        "V2 full scan"
    );
    assert!(all_v2.iter().all(|p| p.value() == &k("from-v2")));
    let rev_v1 = v1.scan_reverse(.., 1000).await?;
    assert_eq!(
        keys_of(&rev_v1),
        ["iso/v1-only", "iso/shared"],
        "V1 reverse full scan"
    );

    // Deleting everything in one API leaves the other alone.
    v1.delete_range(..).await?;
    assert!(v1.scan(.., 1000).await?.is_empty(), "V1 delete_range(..)");
    assert_eq!(
        v2.get(k("iso/shared")).await?,
        Some(k("from-v2")),
        "V1 delete_range(..) hit V2 data"
    );
    assert_eq!(v2.get(k("iso/v2-only")).await?, Some(k("from-v2")));
    v1.put(k("iso/shared"), k("from-v1")).await?;
    v2.delete_range(..).await?;
    assert!(v2.scan(.., 1000).await?.is_empty(), "V2 delete_range(..)");
    assert_eq!(
        v1.get(k("iso/shared")).await?,
        Some(k("from-v1")),
        "V2 delete_range(..) hit V1 data"
    );
    logs.disarm();
    Ok(())
}
