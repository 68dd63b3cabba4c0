//! `shale`: the front door on one machine — a local playground cluster,
//! Raw and transactional access, cluster listings and benchmarks.

mod bench;
mod check;
mod cluster;
mod debug;
mod kv;
mod playground;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "shale",
    version,
    about = "Shale: a TiKV-compatible transactional key-value store"
)]
struct Cli {
    /// Log filter for the embedded servers and the client.
    #[arg(long, global = true, env = "RUST_LOG", default_value = "warn")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run placement and a storage node on loopback until Ctrl-C.
    Playground(playground::Args),
    /// Raw (non-transactional) key-value access.
    Raw(kv::RawArgs),
    /// Transactional key-value access.
    Txn(kv::TxnArgs),
    /// List the stores placement knows.
    Stores(cluster::Args),
    /// List the Regions placement knows.
    Regions(cluster::Args),
    /// Check a live cluster for consistency: bank, register and raw
    /// workloads, then every invariant verified (exit status 1 on anomalies).
    Check(check::Args),
    /// Look inside a stopped storage node's data directory.
    Debug(debug::Args),
    /// Measure throughput and latency against a fresh playground and a direct-RocksDB baseline.
    Bench(bench::Args),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log_level))
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Playground(args) => playground::run(args).await,
        Command::Raw(args) => kv::raw(args).await,
        Command::Txn(args) => kv::txn(args).await,
        Command::Stores(args) => cluster::stores(args).await,
        Command::Regions(args) => cluster::regions(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Debug(args) => debug::run(args),
        Command::Check(args) => match check::run(args).await {
            Ok(code) => return code,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shale: {e:#}");
            ExitCode::FAILURE
        }
    }
}
