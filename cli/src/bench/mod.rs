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
    /// The cluster shape it ran on ("" for baselines).
    topology: &'static str,
    clients: usize,
    sample: Sample,
}

impl Row {
    fn new(workload: &'static str, topology: &'static str, clients: usize, sample: Sample) -> Self {
        Row {
            workload,
            topology,
            clients,
            sample,
        }
    }
}

fn print_rows(rows: &[Row], baseline_of: impl Fn(&Row) -> Option<f64>) {
    println!(
        "{:<22} {:<12} {:>7} {:>12} {:>10} {:>10} {:>12}",
        "workload", "cluster", "clients", "ops/s", "p50 ms", "p99 ms", "vs baseline"
    );
    for r in rows {
        let ratio = baseline_of(r).map_or("-".to_string(), |b| {
            format!("{:.2}x", r.sample.ops_per_sec() / b)
        });
        println!(
            "{:<22} {:<12} {:>7} {:>12.0} {:>10.3} {:>10.3} {:>12}",
            r.workload,
            r.topology,
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

/// Cluster shapes measured in one run: each workload runs on each.
const TOPOLOGIES: [(u8, &str); 2] = [(1, "1 store"), (3, "3 stores x3")];

/// Workload names, one row per (workload, topology, clients).
const RAW_PUT: &str = "raw put";
const RAW_GET: &str = "raw get";
const YCSB_A: &str = "ycsb-a 50r/50u";
const YCSB_B: &str = "ycsb-b 95r/5u";
const YCSB_C: &str = "ycsb-c 100r";
const TXN: &str = "txn 2-key commit";

/// A YCSB-style mix: `read_pct` percent reads of preloaded keys, the rest
/// updates of them.
async fn ycsb(
    raw: &RawClient,
    clients: usize,
    duration: Duration,
    keys: u64,
    value: &Arc<Vec<u8>>,
    read_pct: u64,
) -> Result<Sample> {
    let (client, v) = (raw.clone(), value.clone());
    run_async(clients, duration, move |cl, seq| {
        let (client, v) = (client.clone(), v.clone());
        async move {
            let key = read_key(seq, cl, keys);
            let dice = seq
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(cl as u64)
                % 100;
            if dice < read_pct {
                client.get(key).await?.context("preloaded key missing")?;
            } else {
                client.put(key, v.to_vec()).await?;
            }
            Ok(())
        }
    })
    .await
}

/// Every workload on one cluster shape; returns the rows and the cluster's
/// (fsynced engine writes, acknowledged client writes).
async fn measure_topology(
    args: &Args,
    dir: &std::path::Path,
    stores: u8,
    label: &'static str,
    duration: Duration,
    value: &Arc<Vec<u8>>,
) -> Result<(Vec<Row>, u64, u64)> {
    let pg = Playground::start(&playground::Args {
        data_dir: dir.to_path_buf(),
        pd_addr: "127.0.0.1:0".into(),
        placements: 1,
        store_addr: "127.0.0.1:0".into(),
        stores,
        status_addr: String::new(),
        api_version: 1,
    })
    .await?;
    let pd = pg.pd_endpoints();
    let raw = RawClient::new(pd.clone()).await.context("raw client")?;
    let txn = TransactionClient::new(pd).await.context("txn client")?;
    preload(&raw, args.keys, value).await?;
    wait_replicated(&pg, stores).await?;
    let mut rows = Vec::new();
    let mut client_writes = 0u64;
    let fsyncs_before = fsyncs(&pg);
    for &c in &args.clients {
        let (client, v) = (raw.clone(), value.clone());
        let sample = run_async(c, duration, move |cl, seq| {
            let (client, v) = (client.clone(), v.clone());
            async move { Ok(client.put(key("raw-", cl, seq), v.to_vec()).await?) }
        })
        .await?;
        client_writes += sample.ops;
        rows.push(Row::new(RAW_PUT, label, c, sample));

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
        rows.push(Row::new(RAW_GET, label, c, sample));

        for (name, read_pct) in [(YCSB_A, 50), (YCSB_B, 95), (YCSB_C, 100)] {
            let sample = ycsb(&raw, c, duration, args.keys, value, read_pct).await?;
            client_writes += sample.ops * (100 - read_pct) / 100;
            rows.push(Row::new(name, label, c, sample));
        }

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
        // Prewrite and commit: two acknowledged writes per transaction.
        client_writes += sample.ops * 2;
        rows.push(Row::new(TXN, label, c, sample));
    }
    let synced = fsyncs(&pg) - fsyncs_before;
    pg.shutdown().await;
    Ok((rows, synced, client_writes))
}

/// fsynced RocksDB writes so far, over every store of the playground.
fn fsyncs(pg: &Playground) -> u64 {
    pg.stores
        .iter()
        .map(|s| {
            s.write_stats()
                .synced_writes
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .sum()
}

/// Waits (bounded) until placement reports every Region on all `stores`
/// replicas, so the measurement sees the replicated steady state.
async fn wait_replicated(pg: &Playground, stores: u8) -> Result<()> {
    let want = usize::from(stores.min(3));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let endpoint = pg.pd_endpoints().first().cloned().unwrap_or_default();
    loop {
        let mut pd =
            shale_proto::pdpb::pd_client::PdClient::connect(format!("http://{endpoint}")).await?;
        let members = pd
            .get_members(shale_proto::pdpb::GetMembersRequest::default())
            .await?
            .into_inner();
        let header = Some(shale_proto::pdpb::RequestHeader {
            cluster_id: members.header.map_or(0, |h| h.cluster_id),
            sender_id: 0,
        });
        let regions = pd
            .scan_regions(shale_proto::pdpb::ScanRegionsRequest {
                header,
                start_key: Vec::new(),
                end_key: Vec::new(),
                limit: 0,
            })
            .await?
            .into_inner();
        let metas = if regions.regions.is_empty() {
            regions.region_metas
        } else {
            regions
                .regions
                .into_iter()
                .filter_map(|r| r.region)
                .collect()
        };
        if !metas.is_empty() && metas.iter().all(|r| r.peers.len() >= want) {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!("Regions not on {want} stores after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn run_kv(args: &Args, root: &std::path::Path, duration: Duration) -> Result<()> {
    let value = Arc::new(vec![b'v'; args.value_size]);
    println!(
        "shale bench: {}-byte values, {:.1}s per measurement, fsync on every acknowledged write",
        args.value_size, args.seconds
    );
    let mut rows = Vec::new();
    let mut factors = Vec::new();
    for (stores, label) in TOPOLOGIES {
        let dir = root.join(format!("cluster-{stores}"));
        let (r, synced, writes) =
            measure_topology(args, &dir, stores, label, duration, &value).await?;
        rows.extend(r);
        factors.push((label, synced, writes));
    }
    let baseline = baseline_rows(&root.join("baseline"), args, duration, &value).await?;
    let base_for = |r: &Row| {
        let name = match r.workload {
            RAW_GET | YCSB_C => "rocksdb get",
            _ => "rocksdb put (fsync)",
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
    for (label, synced, writes) in factors {
        println!(
            "{label}: {writes} acknowledged client writes, {synced} fsynced RocksDB writes over all stores ({:.3} fsyncs per acknowledged write)",
            synced as f64 / writes.max(1) as f64
        );
    }
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
        rows.push(Row::new("rocksdb put (fsync)", "", c, sample));
        let (d, keys) = (db.clone(), args.keys);
        let sample = run_blocking(c, duration, move |cl, seq| {
            d.get(read_key(seq, cl, keys))?
                .context("baseline key missing")?;
            Ok(())
        })
        .await?;
        rows.push(Row::new("rocksdb get", "", c, sample));
    }
    Ok(rows)
}
