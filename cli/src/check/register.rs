//! Registers: single keys written with unique values and read back while
//! writers race.
//!
//! Transactional registers are checked against their MVCC history: every
//! acknowledged write is stored at the commit_ts it was acknowledged with,
//! no value appears that no writer wrote, and every read returns the
//! version visible at its timestamp, a timestamp above every write
//! acknowledged before the read began (reads never go back in real time).
//!
//! Raw registers change only by compare-and-swap from the value a writer
//! just read, so their values form one chain: two successful swaps from the
//! same value are a lost update, a value off the chain was never written,
//! and an operation that completed before another began may not be later in
//! the chain (linearizability).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tikv_client::TimestampExt;

use super::bank::{outcome_of, short, Outcome, TxnMode};
use super::history::{real_time_violation, Span};
use super::Env;

const WORKLOAD: &str = "register";
const TXN_REGISTERS: usize = 4;
const RAW_REGISTERS: usize = 4;

#[derive(Debug, Clone)]
struct TxnWrite {
    register: usize,
    value: Vec<u8>,
    mode: TxnMode,
    start_ts: u64,
    outcome: Outcome,
    span: Span,
}

#[derive(Debug, Clone)]
struct TxnRead {
    register: usize,
    read_ts: u64,
    value: Option<Vec<u8>>,
    span: Span,
}

#[derive(Debug, Clone)]
enum CasResult {
    /// Swapped (the store reported the expected previous value).
    Swapped,
    /// Not swapped; the value the store reported instead.
    Refused(Option<Vec<u8>>),
    Unknown(String),
}

#[derive(Debug, Clone)]
struct Cas {
    register: usize,
    previous: Option<Vec<u8>>,
    value: Vec<u8>,
    result: CasResult,
    span: Span,
}

#[derive(Debug, Clone)]
struct RawRead {
    register: usize,
    value: Option<Vec<u8>>,
    span: Span,
}

#[derive(Default)]
struct Log {
    txn_writes: Vec<TxnWrite>,
    txn_reads: Vec<TxnRead>,
    cas: Vec<Cas>,
    raw_reads: Vec<RawRead>,
    failed_reads: usize,
}

pub async fn run(env: &Env) -> Result<()> {
    let txn_keys: Vec<Vec<u8>> = (0..TXN_REGISTERS)
        .map(|i| env.txn_key(&format!("register/{i}")))
        .collect();
    let raw_keys: Vec<Vec<u8>> = (0..RAW_REGISTERS)
        .map(|i| env.raw_key(&format!("register/{i}")))
        .collect();
    let log = Arc::new(Mutex::new(Log::default()));
    let deadline = Instant::now() + env.run_for;
    let clock = env.report.clock();
    let mut tasks = Vec::new();
    for worker in 0..env.concurrency {
        let (txn, raw, log) = (env.txn.clone(), env.raw.clone(), log.clone());
        let (txn_keys, raw_keys) = (txn_keys.clone(), raw_keys.clone());
        let seed = env.seed ^ (0x4e61_0000 + worker as u64);
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut acked = Vec::new();
            let mut seq = 0u64;
            while Instant::now() < deadline {
                seq += 1;
                let value = format!("w{worker}-{seq}").into_bytes();
                let invoked_us = clock.now_us();
                match rng.random_range(0..4) {
                    0 => {
                        let register = rng.random_range(0..TXN_REGISTERS);
                        let mode = TxnMode::ALL[rng.random_range(0..TxnMode::ALL.len())];
                        let (start_ts, outcome) =
                            txn_write(&txn, mode, &txn_keys[register], value.clone()).await;
                        let span = Span {
                            invoked_us,
                            completed_us: clock.now_us(),
                        };
                        if matches!(outcome, Outcome::Committed { .. }) {
                            acked.push(span.completed_us);
                        }
                        log.lock().txn_writes.push(TxnWrite {
                            register,
                            value,
                            mode,
                            start_ts,
                            outcome,
                            span,
                        });
                    }
                    1 => {
                        let register = rng.random_range(0..TXN_REGISTERS);
                        match txn_read(&txn, &txn_keys[register]).await {
                            Ok((read_ts, value)) => {
                                let span = Span {
                                    invoked_us,
                                    completed_us: clock.now_us(),
                                };
                                log.lock().txn_reads.push(TxnRead {
                                    register,
                                    read_ts,
                                    value,
                                    span,
                                });
                            }
                            Err(_) => log.lock().failed_reads += 1,
                        }
                    }
                    2 => {
                        let register = rng.random_range(0..RAW_REGISTERS);
                        let key = raw_keys[register].clone();
                        let previous = match raw.get(key.clone()).await {
                            Ok(v) => v,
                            Err(_) => {
                                log.lock().failed_reads += 1;
                                continue;
                            }
                        };
                        let invoked_us = clock.now_us();
                        let result = match raw
                            .compare_and_swap(key, previous.clone(), value.clone())
                            .await
                        {
                            Ok((_, true)) => CasResult::Swapped,
                            Ok((found, false)) => CasResult::Refused(found),
                            Err(e) => CasResult::Unknown(short(&e.to_string())),
                        };
                        let span = Span {
                            invoked_us,
                            completed_us: clock.now_us(),
                        };
                        if matches!(result, CasResult::Swapped) {
                            acked.push(span.completed_us);
                        }
                        log.lock().cas.push(Cas {
                            register,
                            previous,
                            value,
                            result,
                            span,
                        });
                    }
                    _ => {
                        let register = rng.random_range(0..RAW_REGISTERS);
                        match raw.get(raw_keys[register].clone()).await {
                            Ok(value) => {
                                let span = Span {
                                    invoked_us,
                                    completed_us: clock.now_us(),
                                };
                                log.lock().raw_reads.push(RawRead {
                                    register,
                                    value,
                                    span,
                                });
                            }
                            Err(_) => log.lock().failed_reads += 1,
                        }
                    }
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
    println!(
        "register: {} transactional writes ({} acknowledged), {} reads; {} compare-and-swaps ({} swapped), {} raw reads; {} reads failed",
        log.txn_writes.len(),
        log.txn_writes.iter().filter(|w| matches!(w.outcome, Outcome::Committed { .. })).count(),
        log.txn_reads.len(),
        log.cas.len(),
        log.cas.iter().filter(|c| matches!(c.result, CasResult::Swapped)).count(),
        log.raw_reads.len(),
        log.failed_reads
    );
    if let Some(CasResult::Unknown(e)) = log
        .cas
        .iter()
        .map(|c| &c.result)
        .find(|r| matches!(r, CasResult::Unknown(_)))
    {
        println!("register: e.g. a compare-and-swap of unknown outcome: {e}");
    }
    verify_txn(env, &txn_keys, &log).await;
    verify_raw(env, &raw_keys, &log).await;
    Ok(())
}

async fn txn_write(
    client: &tikv_client::TransactionClient,
    mode: TxnMode,
    key: &[u8],
    value: Vec<u8>,
) -> (u64, Outcome) {
    let mut txn = match client.begin_with_options(mode.options()).await {
        Ok(t) => t,
        Err(e) => return (0, Outcome::Refused(short(&e.to_string()))),
    };
    let start_ts = txn.start_timestamp().version();
    let result = async {
        if mode == TxnMode::Pessimistic {
            txn.lock_keys(vec![key.to_vec()]).await?;
        }
        txn.put(key.to_vec(), value).await?;
        txn.commit().await
    }
    .await;
    let outcome = outcome_of(result);
    // As for transfers: never roll back what may have committed.
    if matches!(outcome, Outcome::Refused(_)) {
        let _ = txn.rollback().await;
    }
    (start_ts, outcome)
}

async fn txn_read(
    client: &tikv_client::TransactionClient,
    key: &[u8],
) -> Result<(u64, Option<Vec<u8>>)> {
    let ts = client.current_timestamp().await?;
    let read_ts = ts.version();
    let mut snapshot = client.snapshot(ts, TxnMode::TwoPhase.options());
    Ok((read_ts, snapshot.get(key.to_vec()).await?))
}

async fn verify_txn(env: &Env, keys: &[Vec<u8>], log: &Log) {
    let report = &env.report;
    // A writer whose commit failed after it was acknowledged (async commit)
    // leaves its lock: resolve it as a reader would before reading the
    // histories, or an acknowledged write still locked looks lost.
    if super::patiently(env, "register: cleaning up locks", || {
        env.cleanup_locks(Duration::ZERO)
    })
    .await
    .is_none()
    {
        return;
    }
    for (register, key) in keys.iter().enumerate() {
        let history = match env.mvcc.history(key, env.verify_timeout).await {
            Ok(h) => h,
            Err(e) => {
                report.unverified(format!("register: {e:#}"));
                return;
            }
        };
        let writes: Vec<&TxnWrite> = log
            .txn_writes
            .iter()
            .filter(|w| w.register == register && w.start_ts != 0)
            .collect();
        let by_start: HashMap<u64, &TxnWrite> = writes.iter().map(|w| (w.start_ts, *w)).collect();
        for v in history.data_versions() {
            match by_start.get(&v.start_ts) {
                None => report.anomaly(
                    WORKLOAD,
                    "write from no writer",
                    format!(
                        "register {register} has a {:?} by txn {} at {} that no writer started",
                        v.op, v.start_ts, v.commit_ts
                    ),
                ),
                Some(w) => {
                    if v.value.as_deref() != Some(w.value.as_slice()) {
                        report.anomaly(
                            WORKLOAD,
                            "stored value differs from the written one",
                            format!(
                                "register {register} txn {}: wrote {:?}, stored {:?}",
                                w.start_ts,
                                String::from_utf8_lossy(&w.value),
                                v.value.as_deref().map(String::from_utf8_lossy)
                            ),
                        );
                    }
                    if let Outcome::Refused(e) = &w.outcome {
                        report.anomaly(
                            WORKLOAD,
                            "committed though the client was told it failed",
                            format!("register {register}: {:?} write txn {} (error: {e}) is stored at {}", w.mode, w.start_ts, v.commit_ts),
                        );
                    }
                }
            }
        }
        for w in &writes {
            let stored = history.committed(w.start_ts);
            if let Outcome::Committed { commit_ts } = w.outcome {
                match stored {
                    None => report.anomaly(
                        WORKLOAD,
                        "acknowledged write lost",
                        format!("register {register}: {:?} write txn {} acknowledged at commit_ts {commit_ts} is not stored", w.mode, w.start_ts),
                    ),
                    Some(v) if v.commit_ts != commit_ts => report.anomaly(
                        WORKLOAD,
                        "acknowledged commit_ts differs from the stored one",
                        format!("register {register}: txn {} acknowledged at {commit_ts}, stored at {}", w.start_ts, v.commit_ts),
                    ),
                    Some(_) => {}
                }
            }
        }
        // Reads: the visible version, and never before an acknowledged write.
        let mut acked: Vec<(u64, u64)> = writes
            .iter()
            .filter_map(|w| match w.outcome {
                Outcome::Committed { commit_ts } => Some((w.span.completed_us, commit_ts)),
                _ => None,
            })
            .collect();
        acked.sort_unstable();
        let mut newest_acked = Vec::with_capacity(acked.len());
        let mut max = 0;
        for (done, ts) in &acked {
            max = max.max(*ts);
            newest_acked.push((*done, max));
        }
        for r in log.txn_reads.iter().filter(|r| r.register == register) {
            let expected = history.visible_at(r.read_ts);
            if expected != r.value {
                report.anomaly(
                    WORKLOAD,
                    "read differs from the version visible at its timestamp",
                    format!(
                        "register {register} read at ts {} returned {:?}, the history says {:?}",
                        r.read_ts,
                        r.value.as_deref().map(String::from_utf8_lossy),
                        expected.as_deref().map(String::from_utf8_lossy)
                    ),
                );
            }
            let before = newest_acked.partition_point(|(done, _)| *done < r.span.invoked_us);
            if let Some(&(_, newest)) = before.checked_sub(1).and_then(|i| newest_acked.get(i)) {
                if r.read_ts <= newest {
                    report.anomaly(
                        WORKLOAD,
                        "a read began after a write was acknowledged but read below it",
                        format!("register {register}: read at ts {} after a write acknowledged at commit_ts {newest}", r.read_ts),
                    );
                }
            }
        }
    }
}

async fn verify_raw(env: &Env, keys: &[Vec<u8>], log: &Log) {
    let report = &env.report;
    for (register, key) in keys.iter().enumerate() {
        let cas: Vec<&Cas> = log.cas.iter().filter(|c| c.register == register).collect();
        let reads: Vec<&RawRead> = log
            .raw_reads
            .iter()
            .filter(|r| r.register == register)
            .collect();
        let final_value = {
            let deadline = Instant::now() + env.verify_timeout;
            loop {
                match env.raw.get(key.clone()).await {
                    Ok(v) => break Some(v),
                    Err(_) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(500)).await
                    }
                    Err(e) => {
                        report.unverified(format!(
                            "register: raw register {register} unreadable: {e}"
                        ));
                        break None;
                    }
                }
            }
        };
        let Some(final_value) = final_value else {
            return;
        };
        // Every value seen: reads, the previous values refused swaps
        // reported, the values swaps started from, and the final one.
        let mut observed: HashSet<Option<Vec<u8>>> = HashSet::new();
        observed.extend(reads.iter().map(|r| r.value.clone()));
        for c in &cas {
            if let CasResult::Refused(found) = &c.result {
                observed.insert(found.clone());
            }
            observed.insert(c.previous.clone());
        }
        observed.insert(final_value.clone());
        // Successor of each value: swaps known to have happened, and any
        // other swap whose value was seen. Values are unique, so a value
        // seen proves its swap was applied, even one the client reported
        // refused: the client retries a swap whose answer it did not get,
        // and the retry meets the swap's own value or, if another swap
        // followed it already, that one's.
        let mut next: HashMap<Option<Vec<u8>>, &Cas> = HashMap::new();
        for c in cas.iter().filter(|c| swap_applied(c, &observed)) {
            if let Some(other) = next.insert(c.previous.clone(), c) {
                report.anomaly(
                    WORKLOAD,
                    "two compare-and-swaps succeeded from the same value",
                    format!(
                        "raw register {register}: from {:?} to {:?} ({:?}) and to {:?} ({:?})",
                        c.previous.as_deref().map(String::from_utf8_lossy),
                        String::from_utf8_lossy(&other.value),
                        other.result,
                        String::from_utf8_lossy(&c.value),
                        c.result
                    ),
                );
            }
        }
        let mut position: HashMap<Option<Vec<u8>>, u64> = HashMap::new();
        let mut at: Option<Vec<u8>> = None;
        position.insert(None, 0);
        while let Some(c) = next.get(&at) {
            let value = Some(c.value.clone());
            if position.contains_key(&value) {
                break;
            }
            position.insert(value.clone(), position.len() as u64);
            at = value;
        }
        if at != final_value {
            report.anomaly(
                WORKLOAD,
                "final value is not the end of the swap chain",
                format!(
                    "raw register {register}: chain ends at {:?}, the register holds {:?}",
                    at.as_deref().map(String::from_utf8_lossy),
                    final_value.as_deref().map(String::from_utf8_lossy)
                ),
            );
        }
        for value in &observed {
            if !position.contains_key(value) {
                report.anomaly(
                    WORKLOAD,
                    "value off the swap chain (never written, or a lost swap)",
                    format!(
                        "raw register {register}: saw {:?}",
                        value.as_deref().map(String::from_utf8_lossy)
                    ),
                );
            }
        }
        let mut ops: Vec<(Span, u64, bool)> = Vec::new();
        for r in &reads {
            if let Some(&p) = position.get(&r.value) {
                ops.push((r.span, p, false));
            }
        }
        for c in &cas {
            match &c.result {
                CasResult::Swapped => {
                    if let Some(&p) = position.get(&Some(c.value.clone())) {
                        ops.push((c.span, p, true));
                    }
                }
                CasResult::Refused(found) => {
                    if let Some(&p) = position.get(found) {
                        ops.push((c.span, p, false));
                    }
                }
                CasResult::Unknown(_) => {}
            }
        }
        if let Some((a, b)) = real_time_violation(&ops) {
            report.anomaly(
                WORKLOAD,
                "not linearizable: an operation saw an older value than one completed before it began",
                format!("raw register {register}: {:?} then {:?} (span, position in the chain, is a write)", ops[a], ops[b]),
            );
        }
    }
}

/// Whether swap `c` was applied, given every value seen on its register.
fn swap_applied(c: &Cas, observed: &HashSet<Option<Vec<u8>>>) -> bool {
    matches!(c.result, CasResult::Swapped) || observed.contains(&Some(c.value.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn an_acknowledged_write_still_locked_at_verification_is_not_reported_lost() -> Result<()>
    {
        use crate::check::test_cluster::{cluster, env, prewrite_only, timestamp};
        let dir = tempfile::tempdir()?;
        let cluster = cluster(dir.path()).await?;
        let env = env(&cluster).await?;
        let key = env.txn_key("register/0");
        // Acknowledged at min_commit_ts; its commit never reached the store.
        let start_ts = timestamp(&env).await?;
        let commit_ts = prewrite_only(&env, &key, &key, start_ts, true).await?;
        let log = Log {
            txn_writes: vec![TxnWrite {
                register: 0,
                value: b"acknowledged".to_vec(),
                mode: TxnMode::AsyncCommit,
                start_ts,
                outcome: Outcome::Committed { commit_ts },
                span: Span {
                    invoked_us: 0,
                    completed_us: 1,
                },
            }],
            ..Default::default()
        };

        verify_txn(&env, &[key], &log).await;

        assert!(
            matches!(env.report.finish(), crate::check::Verdict::Consistent),
            "the acknowledged write was reported"
        );
        cluster.shutdown().await;
        Ok(())
    }

    fn cas(previous: Option<&str>, value: &str, result: CasResult) -> Cas {
        Cas {
            register: 0,
            previous: previous.map(|p| p.as_bytes().to_vec()),
            value: value.as_bytes().to_vec(),
            result,
            span: Span {
                invoked_us: 0,
                completed_us: 0,
            },
        }
    }

    fn seen(values: &[Option<&str>]) -> HashSet<Option<Vec<u8>>> {
        values
            .iter()
            .map(|v| v.map(|v| v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn a_refused_retry_of_a_swap_whose_value_was_seen_counts_as_applied() {
        // The first attempt of a->b applied but its answer was lost; b->c
        // followed; the client's retry of a->b then found c.
        let retried = cas(Some("a"), "b", CasResult::Refused(Some(b"c".to_vec())));
        let observed = seen(&[Some("a"), Some("b"), Some("c")]);
        assert!(swap_applied(&retried, &observed));
    }

    #[test]
    fn a_refused_swap_whose_value_nobody_saw_did_not_happen() {
        let refused = cas(Some("a"), "b", CasResult::Refused(Some(b"c".to_vec())));
        assert!(!swap_applied(&refused, &seen(&[Some("a"), Some("c")])));
        let unknown = cas(Some("a"), "d", CasResult::Unknown("timeout".into()));
        assert!(!swap_applied(&unknown, &seen(&[Some("a"), Some("c")])));
        let swapped = cas(Some("a"), "e", CasResult::Swapped);
        assert!(swap_applied(&swapped, &seen(&[])));
    }
}
