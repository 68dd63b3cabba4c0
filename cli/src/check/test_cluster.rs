//! An in-process cluster (one placement member, one storage node, API V2)
//! and an [`Env`] on it, for tests of the check against the real thing.

use std::time::Duration;

use anyhow::Result;
use shale_proto::kvrpcpb;

use crate::check::{Args, Env};
use crate::playground::{self, Playground};

/// One placement member and one storage node in this process, API V2.
pub async fn cluster(dir: &std::path::Path) -> Result<Playground> {
    Playground::start(&playground::Args {
        data_dir: dir.to_path_buf(),
        pd_addr: "127.0.0.1:0".into(),
        placements: 1,
        store_addr: "127.0.0.1:0".into(),
        stores: 1,
        status_addr: String::new(),
        api_version: 2,
    })
    .await
}

pub async fn env(cluster: &Playground) -> Result<Env> {
    let args = Args {
        placement: crate::cluster::PdEndpoints {
            pd: cluster.pd_endpoints(),
        },
        keyspace: true,
        seconds: 0,
        seed: Some(1),
        workloads: Vec::new(),
        concurrency: 1,
        prefix: "shale-check".into(),
        verify_timeout: 30,
    };
    Env::connect(&args, 1, "locks").await
}

/// Prewrites `key` (a Put of `value`) for `start_ts` with `primary` as
/// its primary and never commits it, retrying Region errors as a
/// client does (a fresh cluster's leader may not serve at once).
/// Returns the lock's min_commit_ts.
pub async fn prewrite_only(
    env: &Env,
    key: &[u8],
    primary: &[u8],
    start_ts: u64,
    async_commit: bool,
) -> Result<u64> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (context, mut stub, wire) = env.mvcc.route_txn_key(key).await?;
        let (_, _, primary_wire) = env.mvcc.route_txn_key(primary).await?;
        let resp = stub
            .kv_prewrite(kvrpcpb::PrewriteRequest {
                context: Some(context),
                mutations: vec![kvrpcpb::Mutation {
                    op: kvrpcpb::Op::Put as i32,
                    key: wire,
                    value: b"acknowledged".to_vec(),
                    ..Default::default()
                }],
                primary_lock: primary_wire,
                start_version: start_ts,
                lock_ttl: 100,
                use_async_commit: async_commit,
                ..Default::default()
            })
            .await?
            .into_inner();
        if resp.region_error.is_some() && std::time::Instant::now() < deadline {
            env.mvcc.reset_routes().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        anyhow::ensure!(
            resp.region_error.is_none() && resp.errors.is_empty(),
            "prewrite: {resp:?}"
        );
        return Ok(resp.min_commit_ts);
    }
}

pub async fn timestamp(env: &Env) -> Result<u64> {
    Ok(tikv_client::TimestampExt::version(
        &env.txn.current_timestamp().await?,
    ))
}
