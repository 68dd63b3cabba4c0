//! A concurrent bank on real processes, in API V1 (on a default cluster) and
//! API V2 (on a cluster started with `api_version = 2`) at once:
//! optimistic and pessimistic transfers racing on ten accounts must never
//! create or destroy money, and the final balances must be exactly what the
//! committed transfers produce when replayed in commit-timestamp order.
//!
//! Every transfer reads and writes the same two accounts, so snapshot
//! isolation with write-write conflict detection makes the history
//! serializable in commit-ts order: each committed transfer must have read
//! the balances left by the transfers committed before it. The replay checks
//! exactly that and names the first transfer that did not.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use common::{commit_puts, optimistic, patient, pessimistic, start_cluster, txn_client, Api};
use rand::Rng;
use shale_e2e::Cluster;
use tikv_client::{KvPair, TimestampExt, TransactionClient};

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

/// A committed transfer, as its client saw it.
#[derive(Clone, Debug)]
struct Transfer {
    pessimistic: bool,
    start_ts: u64,
    commit_ts: u64,
    from: usize,
    to: usize,
    amount: i64,
    /// Balances of `from` and `to` as the transaction read them.
    read: (i64, i64),
}

enum Outcome {
    Committed(Transfer),
    Failed(String),
    Undetermined,
}

async fn transfer(
    client: &TransactionClient,
    pessimistic_mode: bool,
    from: usize,
    to: usize,
    amount: i64,
) -> Outcome {
    let options = if pessimistic_mode {
        pessimistic()
    } else {
        optimistic()
    };
    let mut txn = match client.begin_with_options(options).await {
        Ok(txn) => txn,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let start_ts = txn.start_timestamp().version();
    let result = async {
        let (a, b) = (account(from), account(to));
        let (x, y) = if pessimistic_mode {
            // Both keys in one request: the store locks all or none
            // (wait_timeout 0), so two transfers cannot deadlock.
            let pairs: Vec<KvPair> = txn.batch_get_for_update(vec![a.clone(), b.clone()]).await?;
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
        let commit_ts = txn.commit().await?;
        Ok((x, y, commit_ts))
    }
    .await;
    match result {
        Ok((x, y, Some(commit_ts))) => Outcome::Committed(Transfer {
            pessimistic: pessimistic_mode,
            start_ts,
            commit_ts: commit_ts.version(),
            from,
            to,
            amount,
            read: (x, y),
        }),
        Ok((_, _, None)) => Outcome::Failed("commit returned no timestamp".into()),
        Err(tikv_client::Error::UndeterminedError(_)) => Outcome::Undetermined,
        Err(e) => {
            let _ = txn.rollback().await;
            Outcome::Failed(e.to_string())
        }
    }
}

#[derive(Default)]
struct Log {
    committed: Vec<Transfer>,
    failed: usize,
    undetermined: usize,
    sample_errors: Vec<String>,
}

/// Replays `committed` in commit-ts order from the initial balances; fails at
/// the first transfer that read something other than the replayed state.
fn replay(api: Api, committed: &mut [Transfer]) -> Result<[i64; ACCOUNTS]> {
    committed.sort_by_key(|t| t.commit_ts);
    let mut state = [INITIAL; ACCOUNTS];
    let mut last_writer: [Option<&Transfer>; ACCOUNTS] = [None; ACCOUNTS];
    for t in committed.iter() {
        let expected = (state[t.from], state[t.to]);
        if t.read != expected {
            bail!(
                "{api:?}: {} transfer {t:?} (start_ts {}) read {:?} but the transfers \
                 committed before it left {expected:?}; last committed writers: from={:?} to={:?}",
                if t.pessimistic {
                    "pessimistic"
                } else {
                    "optimistic"
                },
                t.start_ts,
                t.read,
                last_writer[t.from],
                last_writer[t.to]
            );
        }
        state[t.from] = t.read.0 - t.amount;
        state[t.to] = t.read.1 + t.amount;
        last_writer[t.from] = Some(t);
        last_writer[t.to] = Some(t);
    }
    Ok(state)
}

async fn run_bank(cluster: &Cluster, api: Api, tasks: usize, run_for: Duration) -> Result<()> {
    let client = txn_client(cluster, api).await?;
    run_bank_on(client, api, tasks, run_for).await
}

/// The bank on an already connected client (so a test can meanwhile
/// inflict faults on the cluster).
async fn run_bank_on(
    client: TransactionClient,
    api: Api,
    tasks: usize,
    run_for: Duration,
) -> Result<()> {
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..ACCOUNTS)
        .map(|i| (account(i), INITIAL.to_string().into_bytes()))
        .collect();
    commit_puts(&client, &pairs).await?;

    let log = Arc::new(Mutex::new(Log::default()));
    let deadline = Instant::now() + run_for;
    let mut handles = Vec::new();
    for task in 0..tasks {
        let client = client.clone();
        let log = log.clone();
        handles.push(tokio::spawn(async move {
            let pessimistic_mode = task % 2 == 1;
            while Instant::now() < deadline {
                let (from, to, amount) = {
                    let mut rng = rand::rng();
                    let from = rng.random_range(0..ACCOUNTS);
                    let to = (from + rng.random_range(1..ACCOUNTS)) % ACCOUNTS;
                    (from, to, rng.random_range(1..=50i64))
                };
                let outcome = transfer(&client, pessimistic_mode, from, to, amount).await;
                let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                match outcome {
                    Outcome::Committed(t) => log.committed.push(t),
                    Outcome::Undetermined => log.undetermined += 1,
                    Outcome::Failed(e) => {
                        log.failed += 1;
                        if log.sample_errors.len() < 3 {
                            log.sample_errors.push(e.chars().take(200).collect());
                        }
                    }
                }
            }
        }));
    }
    for handle in handles {
        handle.await?;
    }
    let mut log = std::mem::take(&mut *log.lock().unwrap_or_else(|e| e.into_inner()));
    println!(
        "{api:?} bank: {} committed, {} failed, {} undetermined; sample errors {:?}",
        log.committed.len(),
        log.failed,
        log.undetermined,
        log.sample_errors
    );

    let ts = client.current_timestamp().await?;
    let mut snapshot = client.snapshot(ts, optimistic().retry_options(patient()));
    let mut balances = [0i64; ACCOUNTS];
    for (i, b) in balances.iter_mut().enumerate() {
        *b = balance(snapshot.get(account(i)).await?).with_context(|| format!("account {i}"))?;
    }
    let total: i64 = balances.iter().sum();
    let replayed = if log.undetermined == 0 {
        Some(replay(api, &mut log.committed))
    } else {
        None
    };
    if total != INITIAL * ACCOUNTS as i64 {
        bail!(
            "{api:?}: money created or destroyed: total {total}, balances {balances:?}; \
             replay of the {} committed transfers: {replayed:?}",
            log.committed.len()
        );
    }
    if log.committed.is_empty() {
        bail!("{api:?}: no transfer committed ({} failed)", log.failed);
    }
    if let Some(replayed) = replayed {
        let replayed = replayed?;
        if replayed != balances {
            bail!(
                "{api:?}: balances {balances:?} differ from the replay of the committed \
                 transfers {replayed:?}"
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn txn_concurrent_bank_transfers_keep_the_total() -> Result<()> {
    // One cluster per API version (a cluster serves one), both banks at once.
    let (v1, v2) = tokio::try_join!(start_cluster(Api::V1, ""), start_cluster(Api::V2, ""))?;
    let logs1 = v1.logs_on_failure();
    let logs2 = v2.logs_on_failure();
    let (r1, r2) = tokio::join!(
        run_bank(&v1, Api::V1, 8, Duration::from_secs(5)),
        run_bank(&v2, Api::V2, 8, Duration::from_secs(5)),
    );
    r1?;
    r2?;
    logs1.disarm();
    logs2.disarm();
    Ok(())
}

/// Three stores, every Region on all three, accounts spread over several
/// Regions; the store leading the most Regions is killed with SIGKILL in
/// the middle of the run and restarted. The total never changes.
#[tokio::test(flavor = "multi_thread")]
async fn bank_total_survives_a_store_kill_across_regions() -> Result<()> {
    let config = "region-split-keys = 3\n\
split-check-interval-ms = 200\n\
heartbeat-interval-ms = 300\n\
raft-heartbeat-interval-ms = 100\n\
raft-election-timeout-ms = 1000\n";
    let mut cluster = Cluster::start_with_store_config(3, config).await?;
    let logs = cluster.logs_on_failure();
    let client = txn_client(&cluster, Api::V1).await?;
    let bank = run_bank_on(client, Api::V1, 4, Duration::from_secs(12));
    let faults = async {
        tokio::time::sleep(Duration::from_secs(4)).await;
        let victim = common::busiest_store(&cluster).await?;
        cluster.kill_store(victim)?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        cluster.restart_store(victim).await?;
        Ok::<_, anyhow::Error>(())
    };
    let (bank, faults) = tokio::join!(bank, faults);
    faults?;
    bank?;
    let regions = common::regions(&cluster).await?;
    println!("bank ran over {} Regions", regions.len());
    ensure!(
        regions.len() >= 3,
        "the accounts should span several Regions, got {}",
        regions.len()
    );
    logs.disarm();
    Ok(())
}
