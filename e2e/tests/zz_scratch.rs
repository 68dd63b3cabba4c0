//! TEMPORARY diagnostics (to be deleted).
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use common::{commit_puts, optimistic, pessimistic, txn_client, Api};
use rand::Rng;
use shale_e2e::Cluster;
use tikv_client::{TimestampExt, TransactionClient};

fn account(i: usize) -> Vec<u8> {
    format!("bank/{i:02}").into_bytes()
}
fn num(v: Option<Vec<u8>>) -> i64 {
    String::from_utf8(v.unwrap()).unwrap().parse().unwrap()
}

#[derive(Debug, Clone)]
struct Rec {
    task: usize,
    mode: &'static str,
    start: u64,
    commit: u64,
    from: usize,
    to: usize,
    read: (i64, i64),
    amount: i64,
}

async fn one(
    client: &TransactionClient,
    pess: bool,
    from: usize,
    to: usize,
    amount: i64,
    task: usize,
) -> Result<Rec, String> {
    let mut txn = client
        .begin_with_options(if pess { pessimistic() } else { optimistic() })
        .await
        .map_err(|e| e.to_string())?;
    let start = txn.start_timestamp().version();
    let r: Result<Rec, tikv_client::Error> = async {
        let (a, b) = (account(from), account(to));
        let (x, y) = if pess {
            let pairs = txn.batch_get_for_update(vec![a.clone(), b.clone()]).await?;
            let get = |k: &Vec<u8>| {
                pairs
                    .iter()
                    .find(|p| Vec::<u8>::from(p.key().clone()) == *k)
                    .map(|p| p.value().clone())
            };
            (num(get(&a)), num(get(&b)))
        } else {
            (
                num(txn.get(a.clone()).await?),
                num(txn.get(b.clone()).await?),
            )
        };
        txn.put(a, (x - amount).to_string().into_bytes()).await?;
        txn.put(b, (y + amount).to_string().into_bytes()).await?;
        let c = txn.commit().await?.unwrap();
        Ok(Rec {
            task,
            mode: if pess { "pess" } else { "opt" },
            start,
            commit: c.version(),
            from,
            to,
            read: (x, y),
            amount,
        })
    }
    .await;
    match r {
        Ok(r) => Ok(r),
        Err(e) => {
            let _ = txn.rollback().await;
            Err(format!("{e:?}").chars().take(120).collect())
        }
    }
}

async fn bank(cluster: &Cluster, api: Api, mode: &str, secs: u64) -> Result<()> {
    let client = txn_client(cluster, api).await?;
    let pairs: Vec<_> = (0..10).map(|i| (account(i), b"1000".to_vec())).collect();
    commit_puts(&client, &pairs).await?;
    let recs = Arc::new(Mutex::new(Vec::new()));
    let errs = Arc::new(Mutex::new(BTreeMap::<String, usize>::new()));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut hs = vec![];
    for task in 0..8 {
        let client = client.clone();
        let recs = recs.clone();
        let errs = errs.clone();
        let pess = match mode {
            "opt" => false,
            "pess" => true,
            _ => task % 2 == 1,
        };
        hs.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let (from, to, amount) = {
                    let mut rng = rand::rng();
                    let from = rng.random_range(0..10);
                    (
                        from,
                        (from + rng.random_range(1..10)) % 10,
                        rng.random_range(1..=50i64),
                    )
                };
                match one(&client, pess, from, to, amount, task).await {
                    Ok(r) => recs.lock().unwrap().push(r),
                    Err(e) => {
                        let key: String = e.chars().take(60).collect();
                        *errs.lock().unwrap().entry(key).or_default() += 1
                    }
                }
            }
        }));
    }
    for h in hs {
        h.await?;
    }
    let ts = client.current_timestamp().await?;
    let mut snap = client.snapshot(ts, optimistic());
    let mut bal = vec![];
    for i in 0..10 {
        bal.push(num(snap.get(account(i)).await?));
    }
    let total: i64 = bal.iter().sum();
    let mut recs = recs.lock().unwrap().clone();
    recs.sort_by_key(|r| r.commit);
    println!(
        "{api:?} {mode}: total {total} commits {} errs {:?}",
        recs.len(),
        errs.lock().unwrap()
    );
    // replay
    let mut state = [1000i64; 10];
    let mut last_writer: [Option<Rec>; 10] = Default::default();
    let mut bad = 0;
    for r in &recs {
        if (state[r.from], state[r.to]) != r.read {
            bad += 1;
            if bad <= 5 {
                println!("ANOMALY {r:?}\n   replay state from={} to={}\n   last writer of from: {:?}\n   last writer of to: {:?}", state[r.from], state[r.to], last_writer[r.from], last_writer[r.to]);
            }
        }
        state[r.from] = r.read.0 - r.amount;
        state[r.to] = r.read.1 + r.amount;
        last_writer[r.from] = Some(r.clone());
        last_writer[r.to] = Some(r.clone());
    }
    println!("  anomalies {bad}; final {:?} replay {:?}", bal, state);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn scratch_bank() -> Result<()> {
    let cluster = Cluster::start(1).await?;
    let mode = std::env::var("MODE").unwrap_or("mixed".into());
    let secs: u64 = std::env::var("SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let (a, b) = tokio::join!(
        bank(&cluster, Api::V1, &mode, secs),
        bank(&cluster, Api::V2, &mode, secs)
    );
    a?;
    b?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn scratch_commit_after_rollback() -> Result<()> {
    use shale_proto::kvrpcpb;
    let cluster = Cluster::start(1).await?;
    let client = txn_client(&cluster, Api::V1).await?;
    let mut t = common::Target::new(&cluster, Api::V1).await?;
    commit_puts(
        &client,
        &[
            (b"P".to_vec(), b"old".to_vec()),
            (b"S".to_vec(), b"old".to_vec()),
        ],
    )
    .await?;
    let start = client.current_timestamp().await?.version();
    t.prewrite(
        &[
            (b"P".to_vec(), b"new".to_vec()),
            (b"S".to_vec(), b"new".to_vec()),
        ],
        b"P",
        start,
        500,
        false,
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    // a reader resolves the expired lock (rolls back)
    let v = common::read(&client, b"S").await?;
    println!(
        "reader sees S = {:?}",
        v.map(|v| String::from_utf8_lossy(&v).into_owned())
    );
    let commit_ts = client.current_timestamp().await?.version();
    let resp = t
        .stub
        .kv_commit(kvrpcpb::CommitRequest {
            context: Some(t.ctx()),
            start_version: start,
            keys: vec![b"P".to_vec()],
            commit_version: commit_ts,
            ..Default::default()
        })
        .await?
        .into_inner();
    println!("commit of rolled-back primary: {resp:?}");
    let p = common::read(&client, b"P").await?;
    let s = common::read(&client, b"S").await?;
    println!(
        "after: P={:?} S={:?}",
        p.map(|v| String::from_utf8_lossy(&v).into_owned()),
        s.map(|v| String::from_utf8_lossy(&v).into_owned())
    );
    // variant: a reader rolls back only the primary via check_txn_status; then commit secondary?
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn scratch_committed_primary_overwritten() -> Result<()> {
    use shale_proto::kvrpcpb;
    let cluster = Cluster::start(1).await?;
    let client = txn_client(&cluster, Api::V1).await?;
    let mut t = common::Target::new(&cluster, Api::V1).await?;
    commit_puts(&client, &[(b"P".to_vec(), b"old".to_vec()), (b"S".to_vec(), b"old".to_vec())]).await?;
    let start = client.current_timestamp().await?.version();
    t.prewrite(&[(b"P".to_vec(), b"A".to_vec()), (b"S".to_vec(), b"A".to_vec())], b"P", start, 3000, false).await?;
    let commit_ts = client.current_timestamp().await?.version();
    let resp = t.stub.kv_commit(kvrpcpb::CommitRequest {
        context: Some(t.ctx()),
        start_version: start,
        keys: vec![b"P".to_vec()],
        commit_version: commit_ts,
        ..Default::default()
    }).await?.into_inner();
    println!("commit primary: {resp:?}");
    // another txn overwrites P
    commit_puts(&client, &[(b"P".to_vec(), b"C".to_vec())]).await?;
    let s = common::read(&client, b"S").await?;
    println!("S after resolving (expected A): {:?}", s.map(|v| String::from_utf8_lossy(&v).into_owned()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn scratch_pessimistic_lock_checks() -> Result<()> {
    use shale_proto::kvrpcpb;
    let cluster = Cluster::start(1).await?;
    let client = txn_client(&cluster, Api::V1).await?;
    let mut t = common::Target::new(&cluster, Api::V1).await?;
    commit_puts(&client, &[(b"K".to_vec(), b"old".to_vec()), (b"O".to_vec(), b"old".to_vec())]).await?;
    // 1. pessimistic lock with a for_update_ts older than the latest commit
    let start = client.current_timestamp().await?.version();
    let f = client.current_timestamp().await?.version();
    commit_puts(&client, &[(b"K".to_vec(), b"newer".to_vec())]).await?;
    let req = kvrpcpb::PessimisticLockRequest {
        context: Some(t.ctx()),
        mutations: vec![kvrpcpb::Mutation { op: kvrpcpb::Op::PessimisticLock as i32, key: b"K".to_vec(), ..Default::default() }],
        primary_lock: b"K".to_vec(),
        start_version: start,
        lock_ttl: 20000,
        for_update_ts: f,
        return_values: true,
        ..Default::default()
    };
    let resp = t.stub.kv_pessimistic_lock(req).await?.into_inner();
    println!("1. lock with stale for_update_ts (expect WriteConflict): {resp:?}");
    // 2. pessimistic lock on a key with another txn's optimistic prewrite lock
    let s2 = client.current_timestamp().await?.version();
    t.prewrite(&[(b"O".to_vec(), b"opt".to_vec())], b"O", s2, 20000, false).await?;
    let s3 = client.current_timestamp().await?.version();
    let req = kvrpcpb::PessimisticLockRequest {
        context: Some(t.ctx()),
        mutations: vec![kvrpcpb::Mutation { op: kvrpcpb::Op::PessimisticLock as i32, key: b"O".to_vec(), ..Default::default() }],
        primary_lock: b"O".to_vec(),
        start_version: s3,
        lock_ttl: 20000,
        for_update_ts: s3,
        return_values: true,
        ..Default::default()
    };
    let resp = t.stub.kv_pessimistic_lock(req).await?.into_inner();
    println!("2. lock over a prewrite lock (expect locked): {resp:?}");
    Ok(())
}
