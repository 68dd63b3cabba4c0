//! The bank: money moves between accounts in transactions of every kind
//! while readers sum all accounts in one snapshot. The total never changes;
//! afterwards each account's MVCC history must show every transfer applied
//! on both of its keys or on neither, every acknowledged one applied, each
//! transfer having read the version its write replaced, and every snapshot
//! read returning exactly the versions visible at its timestamp.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tikv_client::{KvPair, TimestampExt, TransactionClient, TransactionOptions};

use super::history::Span;
use super::mvcc::KeyHistory;
use super::Env;

const WORKLOAD: &str = "bank";
const ACCOUNTS: usize = 12;
const INITIAL: i64 = 1000;

/// How a transfer commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnMode {
    TwoPhase,
    AsyncCommit,
    OnePhase,
    Pessimistic,
}

impl TxnMode {
    pub const ALL: [TxnMode; 4] = [
        TxnMode::TwoPhase,
        TxnMode::AsyncCommit,
        TxnMode::OnePhase,
        TxnMode::Pessimistic,
    ];

    pub fn options(self) -> TransactionOptions {
        let options = match self {
            TxnMode::TwoPhase => TransactionOptions::new_optimistic(),
            TxnMode::AsyncCommit => TransactionOptions::new_optimistic().use_async_commit(),
            TxnMode::OnePhase => TransactionOptions::new_optimistic().try_one_pc(),
            TxnMode::Pessimistic => TransactionOptions::new_pessimistic(),
        };
        options.drop_check(tikv_client::CheckLevel::None)
    }
}

/// How a transaction ended, as its client saw it.
#[derive(Debug, Clone)]
pub enum Outcome {
    Committed {
        commit_ts: u64,
    },
    /// Failed with an error that rules out a commit (a conflict, a missing
    /// transaction): it must not be applied.
    Refused(String),
    /// Failed in a way that leaves the outcome open (timeouts, Region
    /// errors after retries): it may or may not be applied.
    Unknown(String),
}

/// Whether a client error proves the transaction did not commit.
pub fn refuses_commit(e: &tikv_client::Error) -> bool {
    use tikv_client::Error as E;
    match e {
        E::KeyError(k) => {
            k.conflict.is_some()
                || k.already_exist.is_some()
                || k.deadlock.is_some()
                || k.txn_not_found.is_some()
                || !k.abort.is_empty()
        }
        E::TxnNotFound(_) | E::DuplicateKeyInsertion => true,
        E::MultipleKeyErrors(v) | E::ExtractedErrors(v) => {
            !v.is_empty() && v.iter().all(refuses_commit)
        }
        E::PessimisticLockError { inner, .. } => refuses_commit(inner),
        _ => false,
    }
}

pub fn outcome_of(result: tikv_client::Result<Option<tikv_client::Timestamp>>) -> Outcome {
    match result {
        Ok(Some(ts)) => Outcome::Committed {
            commit_ts: ts.version(),
        },
        Ok(None) => Outcome::Unknown("commit returned no timestamp".into()),
        Err(e) if refuses_commit(&e) => Outcome::Refused(short(&e.to_string())),
        Err(e) => Outcome::Unknown(short(&e.to_string())),
    }
}

/// A short name for a client error, to count failures by kind.
pub fn error_kind(e: &str) -> &'static str {
    const KINDS: [(&str, &str); 14] = [
        ("WriteConflict", "write conflict"),
        ("txn_not_found: Some", "txn not found"),
        ("TxnNotFound", "txn not found"),
        ("TxnLockNotFound", "lock not found"),
        ("PessimisticLockNotFound", "pessimistic lock not found"),
        ("deadlock: Some", "deadlock"),
        ("ResolveLockError", "locks left unresolved"),
        ("max_timestamp_not_synced", "max_ts not synced"),
        ("not_leader", "not leader"),
        ("epoch_not_match", "epoch not match"),
        ("TimestampRequest", "no timestamp"),
        ("Timeout", "timeout"),
        ("Unavailable", "unavailable"),
        ("Region error", "region error"),
    ];
    KINDS
        .iter()
        .find(|(needle, _)| e.contains(needle))
        .map_or("other", |(_, kind)| kind)
}

pub fn short(s: &str) -> String {
    s.chars().take(240).collect()
}

#[derive(Debug, Clone)]
struct Transfer {
    mode: TxnMode,
    from: usize,
    to: usize,
    amount: i64,
    start_ts: u64,
    /// Balances of `from` and `to` as the transaction read them.
    read: Option<(i64, i64)>,
    outcome: Outcome,
    span: Span,
}

#[derive(Debug, Clone)]
struct SnapshotRead {
    read_ts: u64,
    balances: Vec<Option<i64>>,
}

#[derive(Default)]
struct Log {
    transfers: Vec<Transfer>,
    reads: Vec<SnapshotRead>,
    read_failures: usize,
    read_errors: Vec<String>,
}

fn account_name(i: usize) -> String {
    format!("bank/{i:03}")
}

fn parse_balance(v: &[u8]) -> Option<i64> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

pub async fn run(env: &Env) -> Result<()> {
    let accounts: Vec<Vec<u8>> = (0..ACCOUNTS)
        .map(|i| env.txn_key(&account_name(i)))
        .collect();
    let init_ts = initialise(env, &accounts).await?;
    let log = Arc::new(Mutex::new(Log::default()));
    let deadline = Instant::now() + env.run_for;
    let mut tasks = Vec::new();
    for worker in 0..env.concurrency {
        let (client, accounts, log) = (env.txn.clone(), accounts.clone(), log.clone());
        let clock = env.report.clock();
        let seed = env.seed ^ (0xba4c_0000 + worker as u64);
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut acked = Vec::new();
            while Instant::now() < deadline {
                let from = rng.random_range(0..ACCOUNTS);
                let to = (from + rng.random_range(1..ACCOUNTS)) % ACCOUNTS;
                let amount = rng.random_range(1..=40i64);
                let mode = TxnMode::ALL[rng.random_range(0..TxnMode::ALL.len())];
                let invoked_us = clock.now_us();
                let mut t = transfer(&client, &accounts, mode, from, to, amount).await;
                t.span = Span {
                    invoked_us,
                    completed_us: clock.now_us(),
                };
                if matches!(t.outcome, Outcome::Committed { .. }) {
                    acked.push(t.span.completed_us);
                }
                log.lock().transfers.push(t);
            }
            acked
        }));
    }
    let reader = {
        let (client, accounts, log) = (env.txn.clone(), accounts.clone(), log.clone());
        tokio::spawn(async move {
            while Instant::now() < deadline {
                match snapshot_read(&client, &accounts).await {
                    Ok(read) => log.lock().reads.push(read),
                    Err(e) => {
                        let mut log = log.lock();
                        log.read_failures += 1;
                        if log.read_errors.len() < 3 {
                            log.read_errors.push(short(&e.to_string()));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    for task in tasks {
        env.report.writes_acknowledged(task.await?);
    }
    reader.await?;
    env.report.workload_deadline(deadline);
    let log = std::mem::take(&mut *log.lock());
    verify(env, &accounts, init_ts, log).await
}

/// Writes the initial balances; returns the start_ts of that transaction.
async fn initialise(env: &Env, accounts: &[Vec<u8>]) -> Result<u64> {
    let deadline = Instant::now() + env.verify_timeout;
    loop {
        let attempt = async {
            let mut txn = env
                .txn
                .begin_with_options(TxnMode::TwoPhase.options())
                .await?;
            let start_ts = txn.start_timestamp().version();
            for key in accounts {
                txn.put(key.clone(), INITIAL.to_string().into_bytes())
                    .await?;
            }
            match txn.commit().await {
                Ok(_) => Ok(start_ts),
                Err(e) => {
                    let _ = txn.rollback().await;
                    Err(e)
                }
            }
        };
        match attempt.await {
            Ok(ts) => return Ok(ts),
            Err(e) if Instant::now() > deadline => {
                return Err(anyhow::Error::new(e).context("writing the initial balances"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

async fn transfer(
    client: &TransactionClient,
    accounts: &[Vec<u8>],
    mode: TxnMode,
    from: usize,
    to: usize,
    amount: i64,
) -> Transfer {
    let mut t = Transfer {
        mode,
        from,
        to,
        amount,
        start_ts: 0,
        read: None,
        outcome: Outcome::Refused("not started".into()),
        span: Span {
            invoked_us: 0,
            completed_us: 0,
        },
    };
    let mut txn = match client.begin_with_options(mode.options()).await {
        Ok(txn) => txn,
        Err(e) => {
            t.outcome = Outcome::Refused(format!("begin: {}", short(&e.to_string())));
            return t;
        }
    };
    t.start_ts = txn.start_timestamp().version();
    let (a, b) = (accounts[from].clone(), accounts[to].clone());
    let read = async {
        if mode == TxnMode::Pessimistic {
            let pairs: Vec<KvPair> = txn.batch_get_for_update(vec![a.clone(), b.clone()]).await?;
            let get = |key: &Vec<u8>| {
                pairs
                    .iter()
                    .find(|p| Vec::<u8>::from(p.key().clone()) == *key)
                    .map(|p| p.value().clone())
            };
            Ok::<_, tikv_client::Error>((get(&a), get(&b)))
        } else {
            Ok((txn.get(a.clone()).await?, txn.get(b.clone()).await?))
        }
    };
    let (x, y) = match read.await {
        Ok((Some(x), Some(y))) => match (parse_balance(&x), parse_balance(&y)) {
            (Some(x), Some(y)) => (x, y),
            _ => {
                let _ = txn.rollback().await;
                t.outcome = Outcome::Refused("account unreadable".into());
                return t;
            }
        },
        Ok(_) => {
            let _ = txn.rollback().await;
            t.outcome = Outcome::Refused("account missing".into());
            return t;
        }
        Err(e) => {
            let _ = txn.rollback().await;
            // Nothing was written yet (a pessimistic lock is rolled back,
            // and never becomes a commit without a prewrite).
            t.outcome = Outcome::Refused(format!("read: {}", short(&e.to_string())));
            return t;
        }
    };
    t.read = Some((x, y));
    let written = async {
        txn.put(a, (x - amount).to_string().into_bytes()).await?;
        txn.put(b, (y + amount).to_string().into_bytes()).await?;
        Ok::<_, tikv_client::Error>(())
    };
    let result = match written.await {
        Ok(()) => txn.commit().await,
        Err(e) => Err(e),
    };
    t.outcome = outcome_of(result);
    // Only a commit that surely failed may be rolled back: one of unknown
    // outcome may have committed (an async-commit one as soon as all its
    // prewrites landed), and rolling back its other keys would half-apply
    // it. Its locks are left to resolvers.
    if matches!(t.outcome, Outcome::Refused(_)) {
        let _ = txn.rollback().await;
    }
    t
}

async fn snapshot_read(client: &TransactionClient, accounts: &[Vec<u8>]) -> Result<SnapshotRead> {
    let ts = client.current_timestamp().await?;
    let read_ts = ts.version();
    let mut snapshot = client.snapshot(ts, TxnMode::TwoPhase.options());
    let pairs: Vec<KvPair> = snapshot.batch_get(accounts.to_vec()).await?.collect();
    let balances = accounts
        .iter()
        .map(|key| {
            pairs
                .iter()
                .find(|p| Vec::<u8>::from(p.key().clone()) == *key)
                .and_then(|p| parse_balance(p.value()))
        })
        .collect();
    Ok(SnapshotRead { read_ts, balances })
}

/// Final balances, read until the cluster answers.
async fn final_read(env: &Env, accounts: &[Vec<u8>]) -> Option<SnapshotRead> {
    let deadline = Instant::now() + env.verify_timeout;
    let mut last_error = String::new();
    while Instant::now() < deadline {
        // Every transfer has ended: whatever lock is left is resolvable.
        if let Err(e) = env.cleanup_locks(Duration::ZERO).await {
            last_error = format!("cleaning up locks: {}", short(&e.to_string()));
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        match snapshot_read(&env.txn, accounts).await {
            Ok(read) if read.balances.iter().all(Option::is_some) => return Some(read),
            Ok(read) => {
                last_error = format!("accounts missing at {}: {:?}", read.read_ts, read.balances)
            }
            Err(e) => last_error = short(&e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    env.report.anomaly(
        WORKLOAD,
        "accounts unreadable after the run",
        format!("for {:?}: {last_error}", env.verify_timeout),
    );
    None
}

async fn verify(env: &Env, accounts: &[Vec<u8>], init_ts: u64, log: Log) -> Result<()> {
    let report = &env.report;
    let total = INITIAL * ACCOUNTS as i64;
    let committed = log
        .transfers
        .iter()
        .filter(|t| matches!(t.outcome, Outcome::Committed { .. }))
        .count();
    let by_mode: Vec<String> = TxnMode::ALL
        .iter()
        .map(|m| {
            let of_mode = log.transfers.iter().filter(|t| t.mode == *m);
            let ok = of_mode
                .clone()
                .filter(|t| matches!(t.outcome, Outcome::Committed { .. }))
                .count();
            format!("{m:?} {ok}/{}", of_mode.count())
        })
        .collect();
    println!(
        "bank: {} transfers, {committed} acknowledged ({}), {} snapshot reads ({} failed)",
        log.transfers.len(),
        by_mode.join(", "),
        log.reads.len(),
        log.read_failures
    );
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for t in &log.transfers {
        match &t.outcome {
            Outcome::Refused(e) => {
                *kinds
                    .entry(format!("refused: {}", error_kind(e)))
                    .or_default() += 1
            }
            Outcome::Unknown(e) => {
                *kinds
                    .entry(format!("unknown: {}", error_kind(e)))
                    .or_default() += 1
            }
            Outcome::Committed { .. } => {}
        }
    }
    if !kinds.is_empty() {
        println!("bank: failed transfers by error: {kinds:?}");
    }
    if let Some(e) = log.read_errors.first() {
        println!("bank: e.g. a snapshot read failed: {e}");
    }
    if committed == 0 {
        report.unverified("bank: no transfer was acknowledged, nothing was tested".into());
    }
    for read in &log.reads {
        let sum: Option<i64> = read.balances.iter().copied().sum();
        if sum != Some(total) {
            report.anomaly(
                WORKLOAD,
                "snapshot sum differs from the total",
                format!(
                    "read at ts {} summed {sum:?}, expected {total}; balances {:?}",
                    read.read_ts, read.balances
                ),
            );
        }
    }
    let Some(last) = final_read(env, accounts).await else {
        return Ok(());
    };
    let sum: i64 = last.balances.iter().flatten().sum();
    if sum != total {
        report.anomaly(
            WORKLOAD,
            "final total differs",
            format!(
                "read at ts {}: total {sum}, expected {total}; balances {:?}",
                last.read_ts, last.balances
            ),
        );
    }

    let mut histories = Vec::with_capacity(accounts.len());
    for key in accounts {
        match env.mvcc.history(key, env.verify_timeout).await {
            Ok(h) => histories.push(h),
            Err(e) => {
                report.unverified(format!("bank: {e:#}"));
                return Ok(());
            }
        }
    }
    check_histories(env, &histories, init_ts, &log, &last);
    Ok(())
}

/// Every check that needs the accounts' MVCC histories.
fn check_histories(
    env: &Env,
    histories: &[KeyHistory],
    init_ts: u64,
    log: &Log,
    last: &SnapshotRead,
) {
    let report = &env.report;
    let attempts: HashMap<u64, &Transfer> = log
        .transfers
        .iter()
        .filter(|t| t.start_ts != 0)
        .map(|t| (t.start_ts, t))
        .collect();
    for (i, h) in histories.iter().enumerate() {
        // A pessimistic lock never blocks a read; one a failed rollback
        // left behind waits for its TTL and a writer. Any other lock older
        // than the final read was resolved by it, or the read would fail.
        let blocking = h
            .lock
            .as_ref()
            .filter(|l| l.r#type != shale_proto::kvrpcpb::Op::PessimisticLock as i32);
        if let Some(lock) = blocking {
            let owner = attempts.get(&lock.start_ts);
            report.anomaly(
                WORKLOAD,
                "lock left after the run",
                format!(
                    "account {i} still has a lock of txn {} (primary {}, async commit {}) after a read resolved locks; its transfer: {owner:?}",
                    lock.start_ts,
                    String::from_utf8_lossy(&lock.primary),
                    lock.use_async_commit
                ),
            );
        }
        for v in h.data_versions() {
            if v.start_ts != init_ts && !attempts.contains_key(&v.start_ts) {
                report.anomaly(
                    WORKLOAD,
                    "write from no transfer",
                    format!(
                        "account {i} has a {:?} by txn {} at commit_ts {} that no transfer of this check started",
                        v.op, v.start_ts, v.commit_ts
                    ),
                );
            }
        }
    }

    // Atomicity and durability, transfer by transfer.
    let mut applied: Vec<(u64, &Transfer)> = Vec::new();
    for t in &log.transfers {
        if t.start_ts == 0 {
            continue;
        }
        let on_from = histories[t.from].committed(t.start_ts);
        let on_to = histories[t.to].committed(t.start_ts);
        match (on_from, on_to) {
            (Some(f), Some(o)) => {
                if f.commit_ts != o.commit_ts {
                    report.anomaly(
                        WORKLOAD,
                        "one transaction, two commit timestamps",
                        format!(
                            "transfer {t:?} committed at {} on account {} and {} on account {}",
                            f.commit_ts, t.from, o.commit_ts, t.to
                        ),
                    );
                }
                match &t.outcome {
                    Outcome::Committed { commit_ts } if *commit_ts != f.commit_ts => report
                        .anomaly(
                            WORKLOAD,
                            "acknowledged commit_ts differs from the stored one",
                            format!("transfer {t:?} is stored at commit_ts {}", f.commit_ts),
                        ),
                    Outcome::Refused(e) => report.anomaly(
                        WORKLOAD,
                        "committed though the client was told it failed",
                        format!(
                            "transfer {t:?} (error: {e}) is stored at commit_ts {}",
                            f.commit_ts
                        ),
                    ),
                    _ => {}
                }
                applied.push((f.commit_ts, t));
            }
            (Some(v), None) | (None, Some(v)) => {
                let (applied_on, missing_on) = if on_from.is_some() {
                    (t.from, t.to)
                } else {
                    (t.to, t.from)
                };
                report.anomaly(
                    WORKLOAD,
                    "half-applied transfer",
                    format!(
                        "{:?} transfer txn {} ({} -> {}, amount {}, outcome {:?}) is committed on account {applied_on} at {} but not on account {missing_on}; records of account {missing_on} near it: {:?}",
                        t.mode,
                        t.start_ts,
                        t.from,
                        t.to,
                        t.amount,
                        t.outcome,
                        v.commit_ts,
                        near(&histories[missing_on], t.start_ts)
                    ),
                );
            }
            (None, None) => {
                if let Outcome::Committed { commit_ts } = t.outcome {
                    report.anomaly(
                        WORKLOAD,
                        "acknowledged transfer lost",
                        format!(
                            "{:?} transfer txn {} committed at {commit_ts} ({} -> {}, amount {}) is on neither account; records near it: from {:?}, to {:?}",
                            t.mode,
                            t.start_ts,
                            t.from,
                            t.to,
                            t.amount,
                            near(&histories[t.from], t.start_ts),
                            near(&histories[t.to], t.start_ts)
                        ),
                    );
                }
            }
        }
    }

    // Each account's versions form a chain: every transfer read the version
    // its write replaced and wrote read -/+ amount.
    applied.sort_by_key(|(commit_ts, _)| *commit_ts);
    let by_start: HashMap<u64, &Transfer> = applied.iter().map(|(_, t)| (t.start_ts, *t)).collect();
    for (i, h) in histories.iter().enumerate() {
        let mut previous: Option<(u64, i64)> = None;
        for v in h.data_versions() {
            let value = v.value.as_deref().and_then(parse_balance);
            let Some(value) = value else {
                report.anomaly(
                    WORKLOAD,
                    "account version is not a balance",
                    format!("account {i} at commit_ts {}: {:?}", v.commit_ts, v),
                );
                break;
            };
            if v.start_ts == init_ts {
                previous = Some((v.commit_ts, value));
                continue;
            }
            let Some(t) = by_start.get(&v.start_ts) else {
                previous = Some((v.commit_ts, value));
                continue;
            };
            let (read, delta) = match t.read {
                Some((x, _)) if t.from == i => (x, -t.amount),
                Some((_, y)) => (y, t.amount),
                None => (i64::MIN, 0),
            };
            if previous.map(|p| p.1) != Some(read) {
                report.anomaly(
                    WORKLOAD,
                    "lost update: a transfer read a version other than the one it replaced",
                    format!(
                        "account {i}: {:?} transfer txn {} (commit_ts {}) read {read} but the version before its write is {previous:?} (commit_ts, balance)",
                        t.mode, t.start_ts, v.commit_ts
                    ),
                );
            }
            if value != read.saturating_add(delta) {
                report.anomaly(
                    WORKLOAD,
                    "transfer wrote a wrong balance",
                    format!(
                        "account {i}: txn {} read {read}, amount {delta:+}, stored {value}",
                        t.start_ts
                    ),
                );
            }
            previous = Some((v.commit_ts, value));
        }
    }

    // Every snapshot read saw exactly the versions visible at its timestamp.
    let mut stale = 0;
    for read in log.reads.iter().chain(std::iter::once(last)) {
        let expected: Vec<Option<i64>> = histories
            .iter()
            .map(|h| {
                h.visible_at(read.read_ts)
                    .as_deref()
                    .and_then(parse_balance)
            })
            .collect();
        if expected != read.balances {
            stale += 1;
            if stale <= 5 {
                report.anomaly(
                    WORKLOAD,
                    "snapshot read differs from the versions visible at its timestamp",
                    format!(
                        "read at ts {} returned {:?}, the histories say {expected:?}",
                        read.read_ts, read.balances
                    ),
                );
            }
        }
    }
    let versions: BTreeMap<usize, usize> = histories
        .iter()
        .enumerate()
        .map(|(i, h)| (i, h.data_versions().len()))
        .collect();
    println!(
        "bank: histories checked: {} transfers applied, versions per account {:?}",
        applied.len(),
        versions.values().collect::<Vec<_>>()
    );
}

/// The records of `h` with timestamps near `ts` (for anomaly reports).
fn near(h: &KeyHistory, ts: u64) -> Vec<String> {
    let mut v: Vec<&super::mvcc::Version> = h.versions.iter().collect();
    v.sort_by_key(|v| v.commit_ts);
    let at = v.partition_point(|x| x.commit_ts < ts);
    v[at.saturating_sub(2)..(at + 2).min(v.len())]
        .iter()
        .map(|x| format!("{:?} start {} commit {}", x.op, x.start_ts, x.commit_ts))
        .collect()
}
