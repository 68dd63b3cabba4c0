//! `storage-node`: one Shale store. Runs with no arguments on loopback.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use shale_storage_node::Config;

#[derive(Parser, Debug)]
#[command(
    name = "storage-node",
    version,
    about = "Shale storage node (TiKV-compatible)"
)]
struct Args {
    /// TOML config file; flags override its values.
    #[arg(long, env = "SHALE_STORAGE_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for the store's data.
    #[arg(long, env = "SHALE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// gRPC listen address.
    #[arg(long = "addr", env = "SHALE_ADDR")]
    listen_addr: Option<String>,
    /// Address advertised to placement and clients (e.g. the pod's DNS name).
    #[arg(long, env = "SHALE_ADVERTISE_ADDR")]
    advertise_addr: Option<String>,
    /// HTTP status listen address ("" disables it).
    #[arg(long, env = "SHALE_STATUS_ADDR")]
    status_addr: Option<String>,
    /// Placement endpoints, comma separated.
    #[arg(long = "pd", env = "SHALE_PD", value_delimiter = ',')]
    pd_endpoints: Option<Vec<String>>,
    /// Client API served: 1, or 2 for keyspaces (`Config::with_default_keyspace()`).
    #[arg(long, env = "SHALE_API_VERSION")]
    api_version: Option<u8>,
    /// Log filter, e.g. `info` or `shale_storage_node=debug`.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log_level: String,
}

impl Args {
    fn into_config(self) -> Result<Config, String> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path).map_err(|e| e.to_string())?,
            None => Config::default(),
        };
        if let Some(v) = self.data_dir {
            config.data_dir = v;
        }
        if let Some(v) = self.listen_addr {
            config.listen_addr = v;
        }
        if let Some(v) = self.advertise_addr {
            config.advertise_addr = Some(v);
        }
        if let Some(v) = self.status_addr {
            config.status_addr = v;
        }
        if let Some(v) = self.api_version {
            config.api_version = v;
        }
        if let Some(v) = self.pd_endpoints {
            config.pd_endpoints = v;
        }
        Ok(config)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log_level))
        .init();
    let config = match args.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("storage-node: {e}");
            return ExitCode::from(2);
        }
    };
    let node = match shale_storage_node::start(config).await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("storage-node: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "storage-node: store {} serving on {}",
        node.store_id(),
        node.addr()
    );
    wait_for_signal().await;
    tracing::info!("shutting down");
    node.shutdown().await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
