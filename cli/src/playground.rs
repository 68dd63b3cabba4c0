//! `shale playground`: placement (one member, or a replicated group) and a
//! storage node in this process, on loopback, with their data in one
//! directory. Ctrl-C shuts everything down cleanly.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args as ClapArgs;

#[derive(ClapArgs, Debug, Clone)]
pub struct Args {
    /// Where the cluster keeps its data (reused across runs).
    #[arg(long, default_value = "./shale-playground")]
    pub data_dir: PathBuf,
    /// Placement (PD) listen address: gRPC and HTTP API. With several
    /// placement members the next ones listen on the following ports.
    #[arg(long, default_value = "127.0.0.1:2379")]
    pub pd_addr: String,
    /// Placement members (1, or 3 or 5 for a replicated placement).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=7))]
    pub placements: u8,
    /// Storage node gRPC listen address; further stores use the next ports.
    #[arg(long, default_value = "127.0.0.1:20160")]
    pub store_addr: String,
    /// Storage nodes; each Region is kept on up to 3 of them.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=9))]
    pub stores: u8,
    /// Storage node HTTP status address, next ports for further stores ("" disables it).
    #[arg(long, default_value = "127.0.0.1:20180")]
    pub status_addr: String,
    /// Client API the cluster serves: 1, or 2 for keyspaces
    /// (`Config::with_default_keyspace()`, `shale ... --keyspace`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub api_version: u8,
}

/// A running playground cluster.
pub struct Playground {
    pub placements: Vec<shale_placement::PlacementServer>,
    pub stores: Vec<shale_storage_node::StorageNode>,
}

/// How long a replicated placement gets to elect its first leader.
const ELECTION_WAIT: Duration = Duration::from_secs(30);
/// Records how many placement members the data directory was created with.
const PLACEMENTS_FILE: &str = "placements";

/// Listen addresses of `count` members: the given one, then the next ports
/// (or free ports when the given port is 0).
fn member_addrs(first: SocketAddr, count: u8) -> Result<Vec<SocketAddr>> {
    (0..u16::from(count))
        .map(|i| {
            if first.port() == 0 {
                let probe = std::net::TcpListener::bind(SocketAddr::new(first.ip(), 0))
                    .context("finding a free port")?;
                Ok(probe.local_addr()?)
            } else {
                let port = first
                    .port()
                    .checked_add(i)
                    .context("--pd-addr port too high for that many members")?;
                Ok(SocketAddr::new(first.ip(), port))
            }
        })
        .collect()
}

/// The member count is fixed when the data directory is created: a group
/// cannot silently change shape across runs.
fn check_member_count(data_dir: &Path, count: u8) -> Result<()> {
    let path = data_dir.join(PLACEMENTS_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let recorded: u8 = text
                .trim()
                .parse()
                .with_context(|| format!("{} is corrupt: {text:?}", path.display()))?;
            anyhow::ensure!(
                recorded == count,
                "{} was created with --placements {recorded}; use that, or a new --data-dir",
                data_dir.display()
            );
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&path, format!("{count}\n"))
                .with_context(|| format!("writing {}", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

async fn start_placements(args: &Args) -> Result<Vec<shale_placement::PlacementServer>> {
    let first: SocketAddr = args
        .pd_addr
        .parse()
        .with_context(|| format!("--pd-addr {:?} is not an ip:port address", args.pd_addr))?;
    if args.placements == 1 {
        let server = shale_placement::start(shale_placement::Config {
            data_dir: args.data_dir.join("placement"),
            listen_addr: first,
            max_replicas: max_replicas(args),
            ..Default::default()
        })
        .await
        .context("starting placement")?;
        return Ok(vec![server]);
    }
    let addrs = member_addrs(first, args.placements)?;
    let name = |i: usize| format!("placement-{}", i + 1);
    let initial_cluster = addrs
        .iter()
        .enumerate()
        .map(|(i, addr)| format!("{}=http://{addr}", name(i)))
        .collect::<Vec<_>>()
        .join(",");
    let mut servers = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let config = shale_placement::Config {
            name: name(i),
            data_dir: args.data_dir.join(name(i)),
            listen_addr: *addr,
            initial_cluster: Some(initial_cluster.clone()),
            max_replicas: max_replicas(args),
            ..Default::default()
        };
        match shale_placement::start(config).await {
            Ok(server) => servers.push(server),
            Err(e) => {
                shutdown_all(servers).await;
                return Err(e).with_context(|| format!("starting {}", name(i)));
            }
        }
    }
    for server in &servers {
        if !server.wait_ready(ELECTION_WAIT).await {
            shutdown_all(servers).await;
            anyhow::bail!("placement elected no leader within {ELECTION_WAIT:?}");
        }
    }
    Ok(servers)
}

/// Replicas per Region: 3, or fewer when there are fewer stores.
fn max_replicas(args: &Args) -> u32 {
    u32::from(args.stores.min(3))
}

/// `addr` with its port moved up by `offset` (port 0 stays 0: any free port).
fn nth_addr(addr: &str, offset: u8) -> Result<String> {
    if addr.is_empty() {
        return Ok(String::new());
    }
    let parsed: SocketAddr = addr
        .parse()
        .with_context(|| format!("{addr:?} is not an ip:port address"))?;
    if parsed.port() == 0 {
        return Ok(addr.to_string());
    }
    let port = parsed
        .port()
        .checked_add(u16::from(offset))
        .context("port too high for that many stores")?;
    Ok(SocketAddr::new(parsed.ip(), port).to_string())
}

async fn shutdown_stores(stores: Vec<shale_storage_node::StorageNode>) {
    futures::future::join_all(stores.into_iter().map(|s| s.shutdown())).await;
}

async fn shutdown_all(servers: Vec<shale_placement::PlacementServer>) {
    futures::future::join_all(servers.into_iter().map(|s| s.shutdown())).await;
}

impl Playground {
    pub async fn start(args: &Args) -> Result<Self> {
        std::fs::create_dir_all(&args.data_dir)
            .with_context(|| format!("creating {}", args.data_dir.display()))?;
        check_member_count(&args.data_dir, args.placements)?;
        let placements = start_placements(args).await?;
        let pd_endpoints: Vec<String> = placements.iter().map(|p| p.addr().to_string()).collect();
        let mut stores = Vec::new();
        // One after the other: the first bootstraps the cluster.
        for i in 0..args.stores {
            let config = (|| -> Result<shale_storage_node::Config> {
                Ok(shale_storage_node::Config {
                    data_dir: args.data_dir.join(format!("store-{}", i + 1)),
                    listen_addr: nth_addr(&args.store_addr, i)?,
                    status_addr: nth_addr(&args.status_addr, i)?,
                    pd_endpoints: pd_endpoints.clone(),
                    api_version: args.api_version,
                    ..Default::default()
                })
            })();
            let started = match config {
                Ok(config) => shale_storage_node::start(config)
                    .await
                    .with_context(|| format!("starting storage node {}", i + 1)),
                Err(e) => Err(e),
            };
            match started {
                Ok(store) => stores.push(store),
                Err(e) => {
                    shutdown_stores(stores).await;
                    shutdown_all(placements).await;
                    return Err(e);
                }
            }
        }
        Ok(Playground { placements, stores })
    }

    /// Every placement member's address (clients may be given all of them).
    pub fn pd_endpoints(&self) -> Vec<String> {
        self.placements
            .iter()
            .map(|p| p.addr().to_string())
            .collect()
    }

    pub async fn shutdown(self) {
        shutdown_stores(self.stores).await;
        shutdown_all(self.placements).await;
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

pub async fn run(args: Args) -> Result<()> {
    let playground = Playground::start(&args).await?;
    let endpoints = playground.pd_endpoints();
    let pd = endpoints.join(",");
    let first = endpoints.first().cloned().unwrap_or_default();
    let clients_pd = endpoints
        .iter()
        .map(|e| format!("\"{e}\""))
        .collect::<Vec<_>>()
        .join(", ");
    println!("Shale playground is up.");
    println!("  data directory : {}", absolute(&args.data_dir).display());
    if endpoints.len() == 1 {
        println!("  PD endpoint    : {pd}   (gRPC and HTTP API: http://{first}/pd/api/v1/stores)");
    } else {
        println!(
            "  PD endpoints   : {pd}   ({} replicated members; http://{first}/pd/api/v1/members)",
            endpoints.len()
        );
    }
    for store in &playground.stores {
        println!("  store {:<9}: {}", store.store_id(), store.addr());
    }
    println!("  replicas       : {} per Region", max_replicas(&args));
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
        "  let raw = tikv_client::RawClient::new_with_config(vec![{clients_pd}], {config}).await?;"
    );
    println!("  let txn = tikv_client::TransactionClient::new_with_config(vec![{clients_pd}], {config}).await?;");
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
