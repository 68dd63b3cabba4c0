//! `shale stores` and `shale regions`: what placement knows, over pdpb.

use anyhow::{Context, Result};
use clap::Args as ClapArgs;
use shale_proto::pdpb::{self, pd_client::PdClient};
use tonic::transport::Channel;

/// Where placement is: `--pd` or `SHALE_PD`.
#[derive(ClapArgs, Debug, Clone)]
pub struct PdEndpoints {
    /// Placement (PD) endpoints, comma separated.
    #[arg(
        long,
        env = "SHALE_PD",
        default_value = "127.0.0.1:2379",
        value_delimiter = ','
    )]
    pub pd: Vec<String>,
}

#[derive(ClapArgs, Debug)]
pub struct Args {
    #[command(flatten)]
    placement: PdEndpoints,
}

fn url_of(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

/// Connects to the placement leader, found through any of `endpoints`.
pub(crate) async fn connect(
    endpoints: &[String],
) -> Result<(PdClient<Channel>, Option<pdpb::RequestHeader>)> {
    let mut last_error = anyhow::anyhow!("no placement endpoint given");
    for endpoint in endpoints {
        let mut client = match PdClient::connect(url_of(endpoint)).await {
            Ok(client) => client,
            Err(e) => {
                last_error = anyhow::Error::new(e).context(format!("connecting to {endpoint}"));
                continue;
            }
        };
        let members = match client.get_members(pdpb::GetMembersRequest::default()).await {
            Ok(resp) => resp.into_inner(),
            Err(e) => {
                last_error =
                    anyhow::Error::new(e).context(format!("asking {endpoint} for members"));
                continue;
            }
        };
        let cluster_id = members.header.map_or(0, |h| h.cluster_id);
        let leader = members
            .leader
            .and_then(|l| l.client_urls.into_iter().next())
            .with_context(|| format!("{endpoint}: placement has no leader right now"))?;
        let client = PdClient::connect(leader.clone())
            .await
            .with_context(|| format!("connecting to the placement leader {leader}"))?;
        return Ok((
            client,
            Some(pdpb::RequestHeader {
                cluster_id,
                sender_id: 0,
            }),
        ));
    }
    Err(last_error)
}

pub async fn stores(args: Args) -> Result<()> {
    let (mut client, header) = connect(&args.placement.pd).await?;
    let resp = client
        .get_all_stores(pdpb::GetAllStoresRequest {
            header,
            exclude_tombstone_stores: false,
        })
        .await?
        .into_inner();
    println!("{:<8} {:<24} {:<10} VERSION", "ID", "ADDRESS", "STATE");
    for store in resp.stores {
        println!(
            "{:<8} {:<24} {:<10} {}",
            store.id,
            store.address,
            store.state().as_str_name(),
            store.version
        );
    }
    Ok(())
}

fn show_key(key: &[u8]) -> String {
    if key.is_empty() {
        "-".into()
    } else {
        key.iter().map(|b| format!("{b:02X}")).collect()
    }
}

pub async fn regions(args: Args) -> Result<()> {
    let (mut client, header) = connect(&args.placement.pd).await?;
    let resp = client
        .scan_regions(pdpb::ScanRegionsRequest {
            header,
            start_key: vec![],
            end_key: vec![],
            limit: 0,
        })
        .await?
        .into_inner();
    println!(
        "{:<8} {:<8} {:<24} {:<24} PEERS (store ids)",
        "ID", "LEADER", "START", "END"
    );
    for r in resp.regions {
        let Some(region) = r.region else { continue };
        let leader = r.leader.map_or("-".to_string(), |l| l.store_id.to_string());
        let stores: Vec<String> = region
            .peers
            .iter()
            .map(|p| p.store_id.to_string())
            .collect();
        println!(
            "{:<8} {:<8} {:<24} {:<24} {}",
            region.id,
            leader,
            show_key(&region.start_key),
            show_key(&region.end_key),
            stores.join(",")
        );
    }
    Ok(())
}
