//! Unique raw writes: every acknowledged key is read back with its value,
//! and a scan of the whole range returns exactly what was written (every
//! acknowledged key, nothing that was never written). The transactional
//! range of the check is scanned the same way at the end: only keys the
//! check wrote, each with the value a point read returns.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tikv_client::{KvPair, RawClient, TransactionClient};

use super::bank::TxnMode;
use super::history::Span;
use super::{prefix_end, Env};

const WORKLOAD: &str = "raw";
/// Largest page a scan asks for (tikv-client refuses more than 10240).
const PAGE: u32 = 1024;

#[derive(Default)]
struct Log {
    /// Every key a writer tried: its value, whether it was acknowledged,
    /// and when (on the check's clock).
    attempts: BTreeMap<Vec<u8>, (Vec<u8>, bool, Span)>,
    failed_batches: usize,
}

pub async fn run(env: &Env) -> Result<()> {
    let log = Arc::new(Mutex::new(Log::default()));
    let deadline = Instant::now() + env.run_for;
    let mut tasks = Vec::new();
    for worker in 0..env.concurrency {
        let (raw, log) = (env.raw.clone(), log.clone());
        let clock = env.report.clock();
        let seed = env.seed ^ (0x7a40_0000 + worker as u64);
        let prefix = env.raw_key(&format!("writes/w{worker:02}/"));
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut seq = 0u64;
            let mut acked = Vec::new();
            while Instant::now() < deadline {
                let n = rng.random_range(1..=4);
                let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..n)
                    .map(|_| {
                        seq += 1;
                        let mut key = prefix.clone();
                        key.extend_from_slice(format!("{seq:08}").as_bytes());
                        let value = format!("{seed:x}-{seq}-{}", rng.random::<u32>()).into_bytes();
                        (key, value)
                    })
                    .collect();
                let invoked_us = clock.now_us();
                let result = if n == 1 {
                    raw.put(pairs[0].0.clone(), pairs[0].1.clone()).await
                } else {
                    raw.batch_put(pairs.clone()).await
                };
                let ok = result.is_ok();
                let span = Span {
                    invoked_us,
                    completed_us: clock.now_us(),
                };
                let mut log = log.lock();
                if !ok {
                    log.failed_batches += 1;
                }
                for (k, v) in pairs {
                    log.attempts.insert(k, (v, ok, span));
                }
                if ok {
                    acked.push(span.completed_us);
                }
            }
            acked
        }));
    }
    for task in tasks {
        env.report.writes_acknowledged(task.await?);
    }
    env.report.workload_deadline(deadline);
    let log = std::mem::take(&mut *log.lock());
    let acked = log.attempts.values().filter(|(_, ok, _)| *ok).count();
    println!(
        "raw: {} keys written in batches, {acked} acknowledged, {} batches failed",
        log.attempts.len(),
        log.failed_batches
    );
    if acked == 0 {
        env.report
            .unverified("raw: no write was acknowledged, nothing was tested".into());
    }
    verify(env, &log).await;
    Ok(())
}

async fn verify(env: &Env, log: &Log) {
    let report = &env.report;
    let keys: Vec<Vec<u8>> = log.attempts.keys().cloned().collect();
    let mut found: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for chunk in keys.chunks(256) {
        let raw = env.raw.clone();
        let chunk = chunk.to_vec();
        let Some(pairs) = super::patiently(env, "raw: reading the written keys back", || {
            let (raw, chunk) = (raw.clone(), chunk.clone());
            async move { raw.batch_get(chunk).await }
        })
        .await
        else {
            return;
        };
        for p in pairs {
            found.insert(p.key().clone().into(), p.value().clone());
        }
    }
    let mut lost = 0;
    for (key, (value, ok, span)) in &log.attempts {
        match found.get(key) {
            Some(v) if v != value => report.anomaly(
                WORKLOAD,
                "value differs from the one written",
                format!(
                    "{}: wrote {:?}, read {:?}",
                    String::from_utf8_lossy(key),
                    String::from_utf8_lossy(value),
                    String::from_utf8_lossy(v)
                ),
            ),
            None if *ok => {
                lost += 1;
                if lost <= 10 {
                    report.anomaly(
                        WORKLOAD,
                        "acknowledged write lost",
                        format!(
                            "{} is missing (written {:.3}s..{:.3}s into the check); {}",
                            String::from_utf8_lossy(key),
                            span.invoked_us as f64 / 1e6,
                            span.completed_us as f64 / 1e6,
                            env.mvcc.describe_raw(key).await
                        ),
                    );
                }
            }
            _ => {}
        }
    }
    if lost > 10 {
        report.anomaly(
            WORKLOAD,
            "acknowledged writes lost",
            format!("{lost} keys in all"),
        );
    }
    let Some(scanned) = scan_raw(env, &env.raw, env.raw_key("writes/")).await else {
        return;
    };
    let scanned_keys: BTreeSet<&Vec<u8>> = scanned.keys().collect();
    let found_keys: BTreeSet<&Vec<u8>> = found.keys().collect();
    for extra in scanned_keys.difference(&found_keys).take(10) {
        let kind = if log.attempts.contains_key(*extra) {
            "scan returned a key point reads do not"
        } else {
            "scan returned a key that was never written"
        };
        report.anomaly(WORKLOAD, kind, String::from_utf8_lossy(extra).into_owned());
    }
    for missing in found_keys.difference(&scanned_keys).take(10) {
        report.anomaly(
            WORKLOAD,
            "scan missed a key point reads return",
            String::from_utf8_lossy(missing).into_owned(),
        );
    }
    for (k, v) in &scanned {
        if found.get(k).is_some_and(|f| f != v) {
            report.anomaly(
                WORKLOAD,
                "scan and point read disagree",
                String::from_utf8_lossy(k).into_owned(),
            );
        }
    }
    println!(
        "raw: read back {} keys, scanned {} keys",
        found.len(),
        scanned.len()
    );
}

/// Every raw pair under `prefix`, page by page. tikv-client 0.4 may wrap
/// a bounded API V1 scan around at the last Region: keys are sorted, so a
/// key not above the previous one ends the page.
async fn scan_raw(
    env: &Env,
    raw: &RawClient,
    prefix: Vec<u8>,
) -> Option<BTreeMap<Vec<u8>, Vec<u8>>> {
    let end = prefix_end(&prefix);
    let mut out = BTreeMap::new();
    let mut start = prefix;
    loop {
        let range = tikv_client::BoundRange::from(start.clone()..end.clone());
        let page: Vec<KvPair> = super::patiently(env, "raw: scanning the written range", || {
            let (raw, range) = (raw.clone(), range.clone());
            async move { raw.scan(range, PAGE).await }
        })
        .await?;
        let mut last: Option<Vec<u8>> = None;
        let mut taken = 0;
        for p in page {
            let key: Vec<u8> = p.key().clone().into();
            if last.as_ref().is_some_and(|l| &key <= l) || key < start || key >= end {
                break;
            }
            last = Some(key.clone());
            out.insert(key, p.value().clone());
            taken += 1;
        }
        match last {
            Some(mut l) if taken == PAGE as usize => {
                l.push(0);
                start = l;
            }
            _ => return Some(out),
        }
    }
}

/// Scans the check's transactional range: only keys the check wrote may be
/// there, each with the value a point read at the same timestamp returns.
pub async fn verify_txn_range(env: &Env) {
    let report = &env.report;
    if super::patiently(env, "cleaning up locks before the final scan", || {
        env.cleanup_locks(Duration::ZERO)
    })
    .await
    .is_none()
    {
        return;
    }
    let end = prefix_end(&env.txn_prefix);
    let client: &TransactionClient = &env.txn;
    let mut start = env.txn_prefix.clone();
    let Some(ts) = super::patiently(env, "raw: a timestamp for the final scan", || {
        client.current_timestamp()
    })
    .await
    else {
        return;
    };
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    loop {
        let range = tikv_client::BoundRange::from(start.clone()..end.clone());
        let page: Vec<KvPair> =
            match super::patiently(env, "scanning the transactional range", || {
                let (range, ts) = (range.clone(), ts.clone());
                async move {
                    let mut snapshot = client.snapshot(ts, TxnMode::TwoPhase.options());
                    Ok::<_, tikv_client::Error>(
                        snapshot.scan(range, PAGE).await?.collect::<Vec<KvPair>>(),
                    )
                }
            })
            .await
            {
                Some(p) => p,
                None => return,
            };
        let n = page.len();
        for p in page {
            pairs.push((p.key().clone().into(), p.value().clone()));
        }
        match pairs.last() {
            Some((k, _)) if n == PAGE as usize => {
                start = k.clone();
                start.push(0);
            }
            _ => break,
        }
    }
    let allowed = |k: &[u8]| {
        let name = &k[env.txn_prefix.len().min(k.len())..];
        name.starts_with(b"bank/") || name.starts_with(b"register/")
    };
    for (k, v) in &pairs {
        if !k.starts_with(&env.txn_prefix) || !allowed(k) {
            report.anomaly(
                "scan",
                "transactional scan returned a key the check never wrote",
                String::from_utf8_lossy(k).into_owned(),
            );
            continue;
        }
        let point = super::patiently(env, "point read during the final scan", || {
            let (k, ts) = (k.clone(), ts.clone());
            async move {
                let mut snapshot = client.snapshot(ts, TxnMode::TwoPhase.options());
                snapshot.get(k).await
            }
        })
        .await;
        if let Some(point) = point {
            if point.as_ref() != Some(v) {
                report.anomaly(
                    "scan",
                    "transactional scan and point read disagree",
                    format!(
                        "{}: scan {:?}, point read {:?}",
                        String::from_utf8_lossy(k),
                        String::from_utf8_lossy(v),
                        point.as_deref().map(String::from_utf8_lossy)
                    ),
                );
            }
        }
    }
    println!(
        "scan: {} transactional keys in the check's range",
        pairs.len()
    );
}
