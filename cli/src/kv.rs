//! `shale raw ...` and `shale txn ...`: thin commands over the official
//! TiKV client, so what works here works for any TiKV application.

use anyhow::{Context, Result};
use clap::{Args as ClapArgs, Subcommand};
use tikv_client::{Config, RawClient, TransactionClient};

#[derive(ClapArgs, Debug)]
pub struct Endpoint {
    /// Placement (PD) endpoints, comma separated.
    #[arg(
        long,
        env = "SHALE_PD",
        default_value = "127.0.0.1:2379",
        value_delimiter = ',',
        global = true
    )]
    pub pd: Vec<String>,
    /// Use API V2 with the DEFAULT keyspace.
    #[arg(long, global = true)]
    pub keyspace: bool,
}

impl Endpoint {
    fn config(&self) -> Config {
        if self.keyspace {
            Config::default().with_default_keyspace()
        } else {
            Config::default()
        }
    }
}

#[derive(ClapArgs, Debug)]
pub struct RawArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    #[command(subcommand)]
    op: RawOp,
}

#[derive(Subcommand, Debug)]
enum RawOp {
    Get {
        key: String,
    },
    Put {
        key: String,
        value: String,
    },
    Delete {
        key: String,
    },
    /// Keys in [start, end), at most `limit`.
    Scan {
        start: String,
        #[arg(default_value = "")]
        end: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

#[derive(ClapArgs, Debug)]
pub struct TxnArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    #[command(subcommand)]
    op: TxnOp,
}

#[derive(Subcommand, Debug)]
enum TxnOp {
    Get {
        key: String,
    },
    /// Writes one or more `key value` pairs in a single transaction.
    Put {
        #[arg(required = true, num_args = 2..)]
        pairs: Vec<String>,
    },
}

fn show(value: Option<Vec<u8>>) {
    match value {
        Some(v) => println!("{}", String::from_utf8_lossy(&v)),
        None => println!("(not found)"),
    }
}

pub async fn raw(args: RawArgs) -> Result<()> {
    let client = RawClient::new_with_config(args.endpoint.pd.clone(), args.endpoint.config())
        .await
        .with_context(|| format!("connecting to {}", args.endpoint.pd.join(",")))?;
    match args.op {
        RawOp::Get { key } => show(client.get(key).await?),
        RawOp::Put { key, value } => {
            client.put(key, value).await?;
            println!("OK");
        }
        RawOp::Delete { key } => {
            client.delete(key).await?;
            println!("OK");
        }
        RawOp::Scan { start, end, limit } => {
            let range: tikv_client::BoundRange = if end.is_empty() {
                (start.into_bytes()..).into()
            } else {
                (start.into_bytes()..end.into_bytes()).into()
            };
            let pairs: Vec<tikv_client::KvPair> = client.scan(range, limit).await?;
            // tikv-client 0.4 restarts a bounded API V1 scan from the first key
            // when it reaches the last Region (whose end key is empty), so the
            // results can wrap around; they are sorted, so stop at the wrap.
            let mut last: Option<Vec<u8>> = None;
            for pair in pairs {
                let key: Vec<u8> = pair.key().clone().into();
                if last.as_ref().is_some_and(|l| &key <= l) {
                    break;
                }
                println!(
                    "{}\t{}",
                    String::from_utf8_lossy(&key),
                    String::from_utf8_lossy(pair.value())
                );
                last = Some(key);
            }
        }
    }
    Ok(())
}

pub async fn txn(args: TxnArgs) -> Result<()> {
    let client =
        TransactionClient::new_with_config(args.endpoint.pd.clone(), args.endpoint.config())
            .await
            .with_context(|| format!("connecting to {}", args.endpoint.pd.join(",")))?;
    let mut txn = client.begin_optimistic().await?;
    match args.op {
        TxnOp::Get { key } => {
            let value = txn.get(key).await?;
            txn.rollback().await?;
            show(value);
        }
        TxnOp::Put { pairs } => {
            if pairs.len() % 2 != 0 {
                txn.rollback().await?;
                anyhow::bail!("txn put takes key value pairs");
            }
            for pair in pairs.chunks(2) {
                txn.put(pair[0].clone(), pair[1].clone()).await?;
            }
            txn.commit().await?;
            println!("OK");
        }
    }
    Ok(())
}
