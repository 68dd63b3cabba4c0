//! The TSO workload: `tikv-client` timestamps (concurrent callers are
//! batched into one stream request, as the client does for every
//! transaction) from a single placement member and from a replicated group
//! of three, in the same run.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use tikv_client::TransactionClient;

use super::runner::run_async;
use super::{print_rows, Row};
use crate::playground::{self, Playground};

const GROUPS: [(u8, &str); 2] = [(1, "tso, 1 placement"), (3, "tso, 3 placements")];

pub async fn run(clients: &[usize], dir: &Path, duration: Duration) -> Result<()> {
    let mut rows = Vec::new();
    for (placements, workload) in GROUPS {
        let pg = Playground::start(&playground::Args {
            data_dir: dir.join(format!("placements-{placements}")),
            pd_addr: "127.0.0.1:0".into(),
            placements,
            store_addr: "127.0.0.1:0".into(),
            stores: 1,
            status_addr: String::new(),
            api_version: 1,
        })
        .await?;
        let client = TransactionClient::new(pg.pd_endpoints())
            .await
            .context("txn client")?;
        for &c in clients {
            let client = client.clone();
            let sample = run_async(c, duration, move |_, _| {
                let client = client.clone();
                async move {
                    client.current_timestamp().await?;
                    Ok(())
                }
            })
            .await?;
            rows.push(Row::new(workload, "1 store", c, sample));
        }
        drop(client);
        pg.shutdown().await;
    }
    let single = |r: &Row| {
        rows.iter()
            .find(|b| b.workload == GROUPS[0].1 && b.clients == r.clients)
            .map(|b| b.sample.ops_per_sec())
    };
    println!();
    println!("TSO (baseline: one placement member)");
    print_rows(&rows, single);
    Ok(())
}
