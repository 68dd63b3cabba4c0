//! `shale check`: a consistency checker for any live cluster.
//!
//! It runs workloads whose invariants are known through the official
//! `tikv-client`, for a given time and from a seed, then checks what the
//! cluster kept against what it acknowledged:
//!
//! ```text
//! bank      transfers between accounts (2PC, async commit, 1PC, pessimistic),
//!           snapshot sums at every read; afterwards every account's MVCC
//!           history: each transfer applied on both keys or neither, each
//!           acknowledged one applied, each read the version it must see
//! register  single keys written with unique values: transactional ones
//!           checked against their MVCC history and real-time order, raw
//!           compare-and-swap ones as a chain (no fork, no read of the past
//!           after the future, no value never written)
//! raw       unique raw writes: every acknowledged one read back, and a scan
//!           of the whole range equal to what was written
//! ```
//!
//! Every anomaly is printed with its keys, timestamps and transactions; the
//! command exits with status 1 when it found any, 2 when it could not verify.

mod bank;
mod history;
mod locks;
mod mvcc;
mod raw;
mod register;
#[cfg(test)]
mod test_cluster;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::{Args as ClapArgs, ValueEnum};
use tikv_client::{Config, RawClient, TimestampExt, TransactionClient};

pub use history::{Report, Verdict};

#[derive(ClapArgs, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub placement: crate::cluster::PdEndpoints,
    /// Use API V2 with the DEFAULT keyspace (a cluster started with
    /// `--api-version 2`).
    #[arg(long)]
    pub keyspace: bool,
    /// How long the workloads run, in seconds (verification follows).
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Seed of every random choice (accounts, amounts, modes, keys);
    /// printed so a run can be repeated. Default: from the clock.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Which workloads to run, comma separated. Default: all of them with
    /// `--keyspace`; under API V1 `bank,register` (V1 raw and transactional
    /// data belong in separate clusters: a Region boundary at a raw key
    /// breaks transactional clients), so check raw data there on its own
    /// with `--workloads raw`.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub workloads: Vec<Workload>,
    /// Concurrent clients per workload.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Key prefix of everything the check writes (a fresh run id follows it).
    #[arg(long, default_value = "shale-check")]
    pub prefix: String,
    /// How long verification may wait for the cluster to answer, in seconds.
    #[arg(long, default_value_t = 120)]
    pub verify_timeout: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    Bank,
    Register,
    Raw,
}

/// What every workload shares: clients, its key space, the clock and the
/// report.
pub struct Env {
    pub txn: TransactionClient,
    pub raw: RawClient,
    pub mvcc: mvcc::MvccClient,
    /// Prefix of transactional keys (`<prefix>/<run>/`).
    pub txn_prefix: Vec<u8>,
    /// Prefix of raw keys. Under API V1 raw and transactional keys are kept
    /// in disjoint ranges (`<prefix>-raw/<run>/`), as TiKV requires.
    pub raw_prefix: Vec<u8>,
    pub seed: u64,
    pub concurrency: usize,
    pub run_for: Duration,
    pub verify_timeout: Duration,
    pub report: Report,
}

impl Env {
    /// Clients for the cluster `args` names, and the key space of run `run_id`.
    pub async fn connect(args: &Args, seed: u64, run_id: &str) -> Result<Env> {
        let config = if args.keyspace {
            Config::default().with_default_keyspace()
        } else {
            Config::default()
        };
        let endpoints = args.placement.pd.join(",");
        let txn = TransactionClient::new_with_config(args.placement.pd.clone(), config.clone())
            .await
            .with_context(|| format!("connecting a transaction client to {endpoints}"))?;
        let raw = RawClient::new_with_config(args.placement.pd.clone(), config)
            .await
            .with_context(|| format!("connecting a raw client to {endpoints}"))?
            .with_atomic_for_cas();
        let mvcc = mvcc::MvccClient::connect(args.placement.pd.clone(), args.keyspace).await?;
        Ok(Env {
            txn,
            raw,
            mvcc,
            txn_prefix: format!("{}/{run_id}/", args.prefix).into_bytes(),
            raw_prefix: format!("{}-raw/{run_id}/", args.prefix).into_bytes(),
            seed,
            concurrency: args.concurrency.max(1),
            run_for: Duration::from_secs(args.seconds),
            verify_timeout: Duration::from_secs(args.verify_timeout),
            report: Report::new(),
        })
    }

    /// The transactional key `<prefix>/<run>/<name>`.
    pub fn txn_key(&self, name: &str) -> Vec<u8> {
        let mut k = self.txn_prefix.clone();
        k.extend_from_slice(name.as_bytes());
        k
    }

    /// Resolves the locks in the check's transactional range of
    /// transactions that started more than `older_than` ago, as a GC worker
    /// does (see [`locks`] for why not with tikv-client's own calls).
    /// tikv-client's readers never resolve an async-commit lock whose
    /// writer vanished (a failed commit of unknown outcome must not roll
    /// back); without this they would be blocked until the cluster's GC
    /// does it.
    pub async fn cleanup_locks(&self, older_than: Duration) -> anyhow::Result<()> {
        let now = self.txn.current_timestamp().await?;
        let cutoff = now
            .version()
            .saturating_sub((older_than.as_millis() as u64) << 18);
        let safepoint = tikv_client::Timestamp::from_version(cutoff);
        let range = self.txn_prefix.clone()..prefix_end(&self.txn_prefix);
        let found: Vec<locks::ScannedLock> = self
            .txn
            .scan_locks(&safepoint, range, 4096)
            .await?
            .into_iter()
            .map(|l| locks::ScannedLock {
                pessimistic: l.lock_type == shale_proto::kvrpcpb::Op::PessimisticLock as i32,
                key: l.key,
                primary: l.primary_lock,
                start_ts: l.lock_version,
            })
            .collect();
        let result = locks::resolve_locks(&self.mvcc, &found).await;
        if result.is_err() {
            self.mvcc.reset_routes().await;
        }
        result.map(|_| ())
    }

    /// The raw key `<prefix>-raw/<run>/<name>`.
    pub fn raw_key(&self, name: &str) -> Vec<u8> {
        let mut k = self.raw_prefix.clone();
        k.extend_from_slice(name.as_bytes());
        k
    }
}

/// Retries `f` until it succeeds or the verification time is up.
pub async fn patiently<T, E, F, Fut>(env: &Env, what: &str, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let deadline = Instant::now() + env.verify_timeout;
    loop {
        match f().await {
            Ok(v) => return Some(v),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await
            }
            Err(e) => {
                env.report.unverified(format!("{what}: {e}"));
                return None;
            }
        }
    }
}

/// The smallest key above every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new()
}

/// While the workloads run: resolves locks of transactions older than ten
/// seconds every few seconds (see [`Env::cleanup_locks`]).
async fn janitor(env: Arc<Env>) {
    let deadline = tokio::time::Instant::now() + env.run_for;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(3)).await;
        if let Err(e) = env.cleanup_locks(Duration::from_secs(10)).await {
            tracing::debug!("lock cleanup failed (will retry): {e}");
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs the check; the exit status says what it found (0 consistent, 1
/// anomalies, 2 could not verify).
pub async fn run(args: Args) -> Result<ExitCode> {
    let verdict = check(args).await?;
    match &verdict {
        Verdict::Consistent => {}
        Verdict::Anomalies(n) => eprintln!("shale check: {n} anomalies found"),
        Verdict::Unverified(why) => eprintln!("shale check: could not verify: {why}"),
    }
    Ok(verdict.exit_code())
}

/// Runs the check and returns its verdict (the report is printed as it goes).
pub async fn check(mut args: Args) -> Result<Verdict> {
    let seed = args.seed.unwrap_or_else(unix_ms);
    if args.workloads.is_empty() {
        args.workloads = if args.keyspace {
            vec![Workload::Bank, Workload::Register, Workload::Raw]
        } else {
            vec![Workload::Bank, Workload::Register]
        };
    }
    if !args.keyspace && args.workloads.contains(&Workload::Raw) && args.workloads.len() > 1 {
        eprintln!(
            "shale check: warning: under API V1 raw writes split Regions at raw keys, which \
             transactional clients cannot decode; check raw and transactional data in separate \
             runs (or use --keyspace on an API V2 cluster)"
        );
    }
    let run_id = format!("{seed}-{}", unix_ms());
    let env = Arc::new(Env::connect(&args, seed, &run_id).await?);
    let endpoints = args.placement.pd.join(",");
    println!(
        "shale check: seed {seed}, run {run_id}, {}s of {:?} with {} clients each, against {endpoints}{}; \
         times are seconds after {}",
        args.seconds,
        args.workloads,
        env.concurrency,
        if args.keyspace { " (API V2, DEFAULT keyspace)" } else { "" },
        env.report.clock().zero_utc()
    );

    let janitor = tokio::spawn(janitor(env.clone()));
    let mut tasks = Vec::new();
    for workload in &args.workloads {
        let env = env.clone();
        tasks.push(match workload {
            Workload::Bank => tokio::spawn(async move { bank::run(&env).await }),
            Workload::Register => tokio::spawn(async move { register::run(&env).await }),
            Workload::Raw => tokio::spawn(async move { raw::run(&env).await }),
        });
    }
    for task in tasks {
        task.await.context("a workload task panicked")??;
    }
    janitor.abort();
    if args
        .workloads
        .iter()
        .any(|w| matches!(w, Workload::Bank | Workload::Register))
    {
        raw::verify_txn_range(&env).await;
    }
    let verdict = env.report.finish();
    Ok(verdict)
}
