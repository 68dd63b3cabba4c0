//! A concurrent bank on real processes, in API V1 and API V2 at once:
//! optimistic and pessimistic transfers racing on ten accounts must never
//! create or destroy money, and every committed transfer must be applied.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use common::{commit_puts, optimistic, patient, pessimistic, txn_client, Api};
use rand::Rng;
use shale_e2e::Cluster;
use tikv_client::{KvPair, TransactionClient};

// ---------------------------------------------------------------------------
// Bank: concurrent transfers never create or destroy money

const ACCOUNTS: usize = 10;
const INITIAL: i64 = 1000;

fn account(i: usize) -> Vec<u8> {
    format!("bank/{i:02}").into_bytes()
}

fn balance(value: Option<Vec<u8>>) -> Result<i64> {
    let value = value.context("account missing")?;
    let text = std::str::from_utf8(&value)?;
    Ok(text.parse()?)
}

struct BankStats {
    committed: AtomicU64,
    failed: AtomicU64,
    undetermined: AtomicU64,
}

/// One transfer; `Ok(true)` if it committed.
async fn transfer(
    client: &TransactionClient,
    pessimistic_mode: bool,
    from: usize,
    to: usize,
    amount: i64,
) -> Result<bool, tikv_client::Error> {
    let options = if pessimistic_mode {
        pessimistic()
    } else {
        optimistic()
    };
    let mut txn = client.begin_with_options(options).await?;
    let result = async {
        let (a, b) = (account(from), account(to));
        let (x, y) = if pessimistic_mode {
            // Both keys in one request: the store locks all or none
            // (wait_timeout 0), so two transfers cannot deadlock.
            let mut pairs: Vec<KvPair> =
                txn.batch_get_for_update(vec![a.clone(), b.clone()]).await?;
            pairs.sort_by(|p, q| p.key().cmp(q.key()));
            let get = |key: &Vec<u8>| {
                pairs
                    .iter()
                    .find(|p| Vec::<u8>::from(p.key().clone()) == *key)
                    .map(|p| p.value().clone())
            };
            (get(&a), get(&b))
        } else {
            (txn.get(a.clone()).await?, txn.get(b.clone()).await?)
        };
        let (x, y) = match (balance(x), balance(y)) {
            (Ok(x), Ok(y)) => (x, y),
            _ => return Err(tikv_client::Error::StringError("account unreadable".into())),
        };
        txn.put(a, (x - amount).to_string().into_bytes()).await?;
        txn.put(b, (y + amount).to_string().into_bytes()).await?;
        txn.commit().await
    }
    .await;
    match result {
        Ok(_) => Ok(true),
        Err(e) => {
            let _ = txn.rollback().await;
            Err(e)
        }
    }
}

async fn run_bank(cluster: &Cluster, api: Api, tasks: usize, run_for: Duration) -> Result<()> {
    let client = txn_client(cluster, api).await?;
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..ACCOUNTS)
        .map(|i| (account(i), INITIAL.to_string().into_bytes()))
        .collect();
    commit_puts(&client, &pairs).await?;

    let stats = Arc::new(BankStats {
        committed: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        undetermined: AtomicU64::new(0),
    });
    let deadline = Instant::now() + run_for;
    let mut handles = Vec::new();
    for task in 0..tasks {
        let client = client.clone();
        let stats = stats.clone();
        handles.push(tokio::spawn(async move {
            // Per-account net effect of this task's committed transfers.
            let mut delta = [0i64; ACCOUNTS];
            let pessimistic_mode = task % 2 == 1;
            while Instant::now() < deadline {
                let (from, to, amount) = {
                    let mut rng = rand::rng();
                    let from = rng.random_range(0..ACCOUNTS);
                    let to = (from + rng.random_range(1..ACCOUNTS)) % ACCOUNTS;
                    (from, to, rng.random_range(1..=50i64))
                };
                match transfer(&client, pessimistic_mode, from, to, amount).await {
                    Ok(_) => {
                        stats.committed.fetch_add(1, Ordering::Relaxed);
                        delta[from] -= amount;
                        delta[to] += amount;
                    }
                    Err(tikv_client::Error::UndeterminedError(_)) => {
                        stats.undetermined.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        stats.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            delta
        }));
    }
    let mut expected = [INITIAL; ACCOUNTS];
    for handle in handles {
        let delta = handle.await?;
        for (e, d) in expected.iter_mut().zip(delta) {
            *e += d;
        }
    }

    let committed = stats.committed.load(Ordering::Relaxed);
    let failed = stats.failed.load(Ordering::Relaxed);
    let undetermined = stats.undetermined.load(Ordering::Relaxed);
    println!("{api:?} bank: {committed} committed, {failed} failed, {undetermined} undetermined");

    let ts = client.current_timestamp().await?;
    let mut snapshot = client.snapshot(ts, optimistic().retry_options(patient()));
    let mut balances = Vec::new();
    for i in 0..ACCOUNTS {
        balances.push(
            balance(snapshot.get(account(i)).await?).with_context(|| format!("account {i}"))?,
        );
    }
    let total: i64 = balances.iter().sum();
    ensure!(
        total == INITIAL * ACCOUNTS as i64,
        "{api:?}: money created or destroyed: total {total}, balances {balances:?}"
    );
    ensure!(
        committed > 0,
        "{api:?}: no transfer committed ({failed} failed)"
    );
    if undetermined == 0 {
        ensure!(
            balances == expected,
            "{api:?}: balances {balances:?} differ from the committed transfers {expected:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn txn_concurrent_bank_transfers_keep_the_total() -> Result<()> {
    let cluster = Cluster::start(1).await?;
    let logs = cluster.logs_on_failure();
    let (r1, r2) = tokio::join!(
        run_bank(&cluster, Api::V1, 8, Duration::from_secs(5)),
        run_bank(&cluster, Api::V2, 8, Duration::from_secs(5)),
    );
    r1?;
    r2?;
    logs.disarm();
    Ok(())
}
