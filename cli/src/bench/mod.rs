//! `shale bench`: raw put/get and transactional throughput with p50/p99 at
//! several client counts, against a fresh playground, beside a baseline that
//! writes the same values straight into RocksDB with the same fsync policy.

mod runner;
mod tso;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args as ClapArgs;
use runner::{run_async, run_blocking, Sample};
use tikv_client::{RawClient, TransactionClient};

use crate::playground::{self, Playground};

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Seconds each measurement runs.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Concurrent clients, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<usize>,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Keys preloaded for the read workloads.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Scratch directory (a temporary one by default).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// What to measure: `kv` (raw and transactional workloads against a
    /// RocksDB baseline), `tso` (timestamps from 1 vs 3 placement members),
    /// or `all`.
    #[arg(long, value_enum, default_value_t = Suite::Kv)]
    suite: Suite,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Suite {
    Kv,
    Tso,
    All,
}

fn key(prefix: &str, client: usize, seq: u64) -> Vec<u8> {
    format!("{prefix}{client:04}-{seq:012}").into_bytes()
}

fn read_key(seq: u64, client: usize, keys: u64) -> Vec<u8> {
    let k = (seq
        .wrapping_mul(2654435761)
        .wrapping_add(client as u64 * 7919))
        % keys;
    format!("load-{k:012}").into_bytes()
}

struct Row {
    workload: &'static str,
    clients: usize,
    sample: Sample,
}

fn print_rows(rows: &[Row], baseline_of: impl Fn(&Row) -> Option<f64>) {
    println!(
        "{:<22} {:>7} {:>12} {:>10} {:>10} {:>12}",
        "workload", "clients", "ops/s", "p50 ms", "p99 ms", "vs baseline"
    );
    for r in rows {
        let ratio = baseline_of(r).map_or("-".to_string(), |b| {
            format!("{:.2}x", r.sample.ops_per_sec() / b)
        });
        println!(
            "{:<22} {:>7} {:>12.0} {:>10.3} {:>10.3} {:>12}",
            r.workload,
            r.clients,
            r.sample.ops_per_sec(),
            r.sample.percentile_ms(0.5),
            r.sample.percentile_ms(0.99),
            ratio
        );
    }
}

pub async fn run(args: Args) -> Result<()> {
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let root = args
        .data_dir
        .clone()
        .unwrap_or_else(|| scratch.path().to_path_buf());
    let duration = Duration::from_secs_f64(args.seconds);
    if matches!(args.suite, Suite::Kv | Suite::All) {
        run_kv(&args, &root, duration).await?;
    }
    if matches!(args.suite, Suite::Tso | Suite::All) {
        tso::run(&args.clients, &root.join("tso"), duration).await?;
    }
    Ok(())
}

async fn run_kv(args: &Args, root: &std::path::Path, duration: Duration) -> Result<()> {
    let value = Arc::new(vec![b'v'; args.value_size]);

    let pg = Playground::start(&playground::Args {
        data_dir: root.join("cluster"),
        pd_addr: "127.0.0.1:0".into(),
        placements: 1,
        store_addr: "127.0.0.1:0".into(),
        status_addr: String::new(),
        api_version: 1,
    })
    .await?;
    let pd = pg.pd_endpoints();
    println!(
        "shale bench: {}-byte values, {:.1}s per measurement, fsync on every acknowledged write",
        args.value_size, args.seconds
    );
    let raw = RawClient::new(pd.clone()).await.context("raw client")?;
    let txn = TransactionClient::new(pd).await.context("txn client")?;
    preload(&raw, args.keys, &value).await?;

    let mut rows = Vec::new();
    for &c in &args.clients {
        let (client, v) = (raw.clone(), value.clone());
        let sample = run_async(c, duration, move |cl, seq| {
            let (client, v) = (client.clone(), v.clone());
            async move { Ok(client.put(key("raw-", cl, seq), v.to_vec()).await?) }
        })
        .await?;
        rows.push(Row {
            workload: "raw put",
            clients: c,
            sample,
        });

        let (client, keys) = (raw.clone(), args.keys);
        let sample = run_async(c, duration, move |cl, seq| {
            let client = client.clone();
            async move {
                client
                    .get(read_key(seq, cl, keys))
                    .await?
                    .context("preloaded key missing")?;
                Ok(())
            }
        })
        .await?;
        rows.push(Row {
            workload: "raw get",
            clients: c,
            sample,
        });

        let (client, v) = (txn.clone(), value.clone());
        let sample = run_async(c, duration, move |cl, seq| {
            let (client, v) = (client.clone(), v.clone());
            async move {
                let mut t = client.begin_optimistic().await?;
                t.put(key("txn-a-", cl, seq), v.to_vec()).await?;
                t.put(key("txn-b-", cl, seq), v.to_vec()).await?;
                t.commit().await?;
                Ok(())
            }
        })
        .await?;
        rows.push(Row {
            workload: "txn 2-key commit",
            clients: c,
            sample,
        });
    }
    let stats = pg.store.write_stats();
    let synced = stats
        .synced_writes
        .load(std::sync::atomic::Ordering::Relaxed);
    let acked = stats
        .acknowledged_batches
        .load(std::sync::atomic::Ordering::Relaxed);
    pg.shutdown().await;

    let baseline = baseline_rows(&root.join("baseline"), args, duration, &value).await?;
    let base_for = |r: &Row| {
        let name = if r.workload == "raw get" {
            "rocksdb get"
        } else {
            "rocksdb put (fsync)"
        };
        baseline
            .iter()
            .find(|b| b.workload == name && b.clients == r.clients)
            .map(|b| b.sample.ops_per_sec())
    };
    println!();
    print_rows(&rows, base_for);
    println!();
    print_rows(&baseline, |_| None);
    println!();
    println!(
        "group commit: {acked} acknowledged write batches in {synced} fsynced RocksDB writes ({:.2} per fsync)",
        acked as f64 / synced.max(1) as f64
    );
    Ok(())
}

async fn preload(raw: &RawClient, keys: u64, value: &[u8]) -> Result<()> {
    const BATCH: u64 = 500;
    let mut start = 0;
    while start < keys {
        let end = (start + BATCH).min(keys);
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = (start..end)
            .map(|k| (format!("load-{k:012}").into_bytes(), value.to_vec()))
            .collect();
        raw.batch_put(pairs).await.context("preloading keys")?;
        start = end;
    }
    Ok(())
}

/// The same puts and gets straight into RocksDB: the cost floor for a store.
async fn baseline_rows(
    dir: &std::path::Path,
    args: &Args,
    duration: Duration,
    value: &Arc<Vec<u8>>,
) -> Result<Vec<Row>> {
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    let db = Arc::new(rocksdb::DB::open(&opts, dir).context("opening baseline RocksDB")?);
    for k in 0..args.keys {
        db.put(format!("load-{k:012}"), value.as_slice())?;
    }
    let mut rows = Vec::new();
    for &c in &args.clients {
        let (d, v) = (db.clone(), value.clone());
        let sample = run_blocking(c, duration, move |cl, seq| {
            let mut wo = rocksdb::WriteOptions::default();
            wo.set_sync(true);
            Ok(d.put_opt(key("raw-", cl, seq), v.as_slice(), &wo)?)
        })
        .await?;
        rows.push(Row {
            workload: "rocksdb put (fsync)",
            clients: c,
            sample,
        });
        let (d, keys) = (db.clone(), args.keys);
        let sample = run_blocking(c, duration, move |cl, seq| {
            d.get(read_key(seq, cl, keys))?
                .context("baseline key missing")?;
            Ok(())
        })
        .await?;
        rows.push(Row {
            workload: "rocksdb get",
            clients: c,
            sample,
        });
    }
    Ok(rows)
}
