//! `shale playground`: placement and a storage node in this process, on
//! loopback, with their data in one directory. Ctrl-C shuts both down cleanly.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args as ClapArgs;

#[derive(ClapArgs, Debug, Clone)]
pub struct Args {
    /// Where the cluster keeps its data (reused across runs).
    #[arg(long, default_value = "./shale-playground")]
    pub data_dir: PathBuf,
    /// Placement (PD) listen address: gRPC and HTTP API.
    #[arg(long, default_value = "127.0.0.1:2379")]
    pub pd_addr: String,
    /// Storage node gRPC listen address.
    #[arg(long, default_value = "127.0.0.1:20160")]
    pub store_addr: String,
    /// Storage node HTTP status address ("" disables it).
    #[arg(long, default_value = "127.0.0.1:20180")]
    pub status_addr: String,
    /// Client API the cluster serves: 1, or 2 for keyspaces
    /// (`Config::with_default_keyspace()`, `shale ... --keyspace`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub api_version: u8,
}

/// A running playground cluster.
pub struct Playground {
    pub placement: shale_placement::PlacementServer,
    pub store: shale_storage_node::StorageNode,
}

impl Playground {
    pub async fn start(args: &Args) -> Result<Self> {
        std::fs::create_dir_all(&args.data_dir)
            .with_context(|| format!("creating {}", args.data_dir.display()))?;
        let pd_addr = args
            .pd_addr
            .parse()
            .with_context(|| format!("--pd-addr {:?} is not an ip:port address", args.pd_addr))?;
        let placement = shale_placement::start(shale_placement::Config {
            data_dir: args.data_dir.join("placement"),
            listen_addr: pd_addr,
            ..Default::default()
        })
        .await
        .context("starting placement")?;
        let store_config = shale_storage_node::Config {
            data_dir: args.data_dir.join("store-1"),
            listen_addr: args.store_addr.clone(),
            status_addr: args.status_addr.clone(),
            pd_endpoints: vec![placement.addr().to_string()],
            api_version: args.api_version,
            ..Default::default()
        };
        let store = match shale_storage_node::start(store_config).await {
            Ok(s) => s,
            Err(e) => {
                placement.shutdown().await;
                return Err(e).context("starting the storage node");
            }
        };
        Ok(Playground { placement, store })
    }

    pub fn pd_endpoint(&self) -> String {
        self.placement.addr().to_string()
    }

    pub async fn shutdown(self) {
        self.store.shutdown().await;
        self.placement.shutdown().await;
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

pub async fn run(args: Args) -> Result<()> {
    let playground = Playground::start(&args).await?;
    let pd = playground.pd_endpoint();
    println!("Shale playground is up.");
    println!("  data directory : {}", absolute(&args.data_dir).display());
    println!("  PD endpoint    : {pd}   (gRPC and HTTP API: http://{pd}/pd/api/v1/stores)");
    println!(
        "  store {}        : {}",
        playground.store.store_id(),
        playground.store.addr()
    );
    println!("  client API     : V{}", args.api_version);
    println!();
    println!("Connect with the TiKV Rust client (tikv-client 0.4):");
    let (config, flag) = if args.api_version == 2 {
        (
            "tikv_client::Config::default().with_default_keyspace()",
            " --keyspace",
        )
    } else {
        ("tikv_client::Config::default()", "")
    };
    println!(
        "  let raw = tikv_client::RawClient::new_with_config(vec![\"{pd}\"], {config}).await?;"
    );
    println!("  let txn = tikv_client::TransactionClient::new_with_config(vec![\"{pd}\"], {config}).await?;");
    println!("or from a shell:");
    println!("  shale raw put hello world --pd {pd}{flag}");
    println!("  shale txn get hello --pd {pd}{flag}");
    println!();
    println!("Press Ctrl-C to stop.");
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    println!("Stopping...");
    playground.shutdown().await;
    println!(
        "Stopped. Data kept in {}",
        absolute(&args.data_dir).display()
    );
    Ok(())
}
