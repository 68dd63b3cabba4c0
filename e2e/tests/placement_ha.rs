//! Replicated placement on real processes: three members, storage nodes and
//! `tikv-client` load while the placement leader is killed with SIGKILL, cut
//! off from its peers, or while members come and go; and a restart of every
//! member.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use common::{commit_puts, eventually, read, txn_client, Api};
use parking_lot::Mutex;
use shale_e2e::{http_get, Cluster};
use shale_proto::pdpb;
use tikv_client::{TimestampExt, TransactionClient};

/// Storage nodes heartbeat often so the new leader hears from them quickly.
const STORE_CONFIG: &str = "heartbeat-interval-ms = 500\n";
/// Every client call gets this long before it counts as failed.
const OP_TIMEOUT: Duration = Duration::from_secs(30);

/// A write the cluster acknowledged: key, value, when.
type Acked = (Vec<u8>, Vec<u8>, Instant);

/// Concurrent transactional writers and a timestamp reader, recording what
/// was acknowledged and when.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Acked>>>,
    timestamps: Arc<Mutex<Vec<(u64, Instant)>>>,
    errors: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(client: Arc<TransactionClient>, writers: usize, prefix: &str) -> Load {
        let load = Load {
            stop: Arc::new(AtomicBool::new(false)),
            acked: Arc::default(),
            timestamps: Arc::default(),
            errors: Arc::default(),
            tasks: Vec::new(),
        };
        let mut tasks = Vec::new();
        for w in 0..writers {
            let (client, stop, acked, errors) = (
                client.clone(),
                load.stop.clone(),
                load.acked.clone(),
                load.errors.clone(),
            );
            let prefix = prefix.to_string();
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("{prefix}/{w}/{n:06}").into_bytes();
                    let value = format!("v{w}-{n}").into_bytes();
                    let pairs = [(key.clone(), value.clone())];
                    match tokio::time::timeout(OP_TIMEOUT, commit_puts(&client, &pairs)).await {
                        Ok(Ok(_)) => acked.lock().push((key, value, Instant::now())),
                        Ok(Err(e)) => {
                            errors.lock().push(format!("write: {e:#}"));
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(_) => errors.lock().push("write timed out".into()),
                    }
                    n += 1;
                }
            }));
        }
        let (stop, timestamps, errors) = (
            load.stop.clone(),
            load.timestamps.clone(),
            load.errors.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match tokio::time::timeout(OP_TIMEOUT, client.current_timestamp()).await {
                    Ok(Ok(ts)) => timestamps.lock().push((ts.version(), Instant::now())),
                    Ok(Err(e)) => {
                        errors.lock().push(format!("tso: {e}"));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(_) => errors.lock().push("tso timed out".into()),
                }
            }
        }));
        Load { tasks, ..load }
    }

    fn acked_count(&self) -> usize {
        self.acked.lock().len()
    }

    /// Waits until `more` writes beyond those acknowledged so far are.
    async fn wait_for_more_acks(&self, more: usize, within: Duration, what: &str) -> Result<()> {
        let target = self.acked_count() + more;
        eventually(within, what, || {
            let n = self.acked_count();
            async move { Ok(n >= target) }
        })
        .await
    }

    /// When the first write after `since` was acknowledged.
    fn first_ack_after(&self, since: Instant) -> Option<Instant> {
        self.acked
            .lock()
            .iter()
            .map(|(_, _, at)| *at)
            .find(|at| *at > since)
    }

    async fn stop(mut self) -> Result<LoadResult> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks.drain(..) {
            task.await?;
        }
        let timestamps = self.timestamps.lock().clone();
        // One client asks sequentially: each timestamp must be above the last.
        for pair in timestamps.windows(2) {
            ensure!(
                pair[1].0 > pair[0].0,
                "timestamp went backwards: {} then {}",
                pair[0].0,
                pair[1].0
            );
        }
        let acked = self.acked.lock().clone();
        let errors = self.errors.lock().clone();
        Ok(LoadResult {
            acked,
            timestamps,
            errors,
        })
    }
}

struct LoadResult {
    acked: Vec<Acked>,
    timestamps: Vec<(u64, Instant)>,
    errors: Vec<String>,
}

async fn check_all_readable(client: &TransactionClient, acked: &[Acked]) -> Result<()> {
    for (key, value, _) in acked {
        let got = read(client, key).await?;
        ensure!(
            got.as_deref() == Some(value.as_slice()),
            "acknowledged write of {} lost: read {:?}",
            String::from_utf8_lossy(key),
            got.map(|v| String::from_utf8_lossy(&v).to_string())
        );
    }
    Ok(())
}

/// Region heartbeats the member at `addr` has received, from its metrics.
async fn region_heartbeats(addr: &str) -> Result<u64> {
    let (code, body) = http_get(addr, "/metrics").await?;
    ensure!(code == 200, "metrics: {code}");
    body.lines()
        .find_map(|l| l.strip_prefix("placement_region_heartbeats_total "))
        .and_then(|v| v.trim().parse().ok())
        .context("no region heartbeat counter")
}

async fn wait_for_new_leader(cluster: &mut Cluster, not: usize) -> Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(l) = cluster.placement_leader().await {
            if l != not {
                return Ok(l);
            }
        }
        ensure!(Instant::now() < deadline, "no new placement leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_placement_leader_loses_nothing() -> Result<()> {
    let mut cluster = Cluster::start_replicated(3, 1, Some(STORE_CONFIG)).await?;
    let logs = cluster.logs_on_failure();
    let client = Arc::new(txn_client(&cluster, Api::V1).await?);
    let load = Load::start(client.clone(), 2, "kill");
    load.wait_for_more_acks(20, Duration::from_secs(30), "load running")
        .await?;

    let old = cluster.placement_leader().await.context("a leader")?;
    let killed_at = Instant::now();
    cluster.kill_placement_member(old)?;
    let new = wait_for_new_leader(&mut cluster, old).await?;
    let elected = killed_at.elapsed();
    eventually(Duration::from_secs(60), "writes resume", || {
        let resumed = load.first_ack_after(killed_at).is_some();
        async move { Ok(resumed) }
    })
    .await?;
    let resumed = load.first_ack_after(killed_at).context("resumed")? - killed_at;
    // Keep writing on the new leader for a while.
    load.wait_for_more_acks(50, Duration::from_secs(60), "writes continue")
        .await?;
    let result = load.stop().await?;
    eprintln!(
        "placement leader killed: new leader after {elected:?}, writes resumed after {resumed:?}; \
         {} writes and {} timestamps acknowledged, {} client errors retried",
        result.acked.len(),
        result.timestamps.len(),
        result.errors.len()
    );
    ensure!(
        result.timestamps.iter().any(|(_, at)| *at > killed_at),
        "no timestamp after failover"
    );
    check_all_readable(&client, &result.acked).await?;

    // The storage node heartbeats to the new leader.
    let new_addr = cluster.pd_addrs[new].clone();
    let before = region_heartbeats(&new_addr).await?;
    eventually(
        Duration::from_secs(20),
        "region heartbeats reach the new leader",
        || {
            let addr = new_addr.clone();
            async move { Ok(region_heartbeats(&addr).await? > before) }
        },
    )
    .await?;

    // The killed member comes back as a follower and catches up.
    cluster.restart_placement_member(old).await?;
    let (code, body) = http_get(&cluster.pd_addrs[old], "/pd/api/v1/members").await?;
    ensure!(
        code == 200 && body.matches("\"name\"").count() >= 3,
        "members: {body}"
    );
    eventually(Duration::from_secs(20), "restarted member healthy", || {
        let addr = cluster.pd_addrs[new].clone();
        async move {
            let (code, body) = http_get(&addr, "/pd/api/v1/health").await?;
            Ok(code == 200 && !body.contains("\"health\":false"))
        }
    })
    .await?;
    logs.disarm();
    Ok(())
}

/// The first timestamp some member hands out within `within`, and how long
/// it took.
async fn first_tso_from_any(
    cluster: &Cluster,
    cid: u64,
    within: Duration,
) -> Result<(u64, Duration)> {
    let started = Instant::now();
    loop {
        for addr in &cluster.pd_addrs {
            let attempt = tokio::time::timeout(Duration::from_secs(1), member_tso(addr, cid)).await;
            if let Ok(Ok(ts)) = attempt {
                return Ok((ts, started.elapsed()));
            }
        }
        ensure!(
            started.elapsed() < within,
            "no placement member served a timestamp for {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A leader killed and restarted soon after (a crash-looping pod, an OOM
/// kill), before, around or after the moment the others would elect, must
/// not leave placement without a serving leader: whichever member leads
/// afterwards hands out timestamps within a few election timeouts.
#[tokio::test(flavor = "multi_thread")]
async fn a_placement_leader_killed_and_restarted_soon_is_served_again_quickly() -> Result<()> {
    let mut cluster = Cluster::start_replicated(3, 1, Some(STORE_CONFIG)).await?;
    let logs = cluster.logs_on_failure();
    let (_, header) = common::pd_stub(&cluster).await?;
    let cid = header.cluster_id;
    let client = Arc::new(txn_client(&cluster, Api::V1).await?);
    let load = Load::start(client.clone(), 2, "bounce");
    load.wait_for_more_acks(10, Duration::from_secs(30), "load running")
        .await?;

    // Elections start 1-2 s after the last heartbeat.
    for (round, down) in [0, 1_200, 1_600, 2_500, 0].into_iter().enumerate() {
        let leader = cluster.placement_leader().await.context("a leader")?;
        let before = member_tso(&cluster.pd_addrs[leader], cid).await?;
        let killed_at = Instant::now();
        cluster.kill_placement_member(leader)?;
        tokio::time::sleep(Duration::from_millis(down)).await;
        cluster.restart_placement_member(leader).await?;
        let restarted = killed_at.elapsed();
        let (after, served) = first_tso_from_any(&cluster, cid, Duration::from_secs(15)).await?;
        ensure!(after > before, "timestamp {after} not above {before}");
        eprintln!(
            "round {round}: leader {leader} killed and serving HTTP again after {restarted:?}, \
             timestamps served {served:?} later"
        );
        load.wait_for_more_acks(10, Duration::from_secs(30), "writes continue")
            .await?;
    }
    let result = load.stop().await?;
    check_all_readable(&client, &result.acked).await?;
    logs.disarm();
    Ok(())
}

async fn member_tso(addr: &str, cluster_id: u64) -> Result<u64> {
    let mut pd = pdpb::pd_client::PdClient::new(common::channel(addr).await?);
    let request = pdpb::TsoRequest {
        header: Some(pdpb::RequestHeader {
            cluster_id,
            sender_id: 0,
        }),
        count: 1,
        dc_location: String::new(),
    };
    let mut stream = pd
        .tso(tokio_stream::iter(vec![request]))
        .await?
        .into_inner();
    let response = stream.message().await?.context("no tso response")?;
    let ts = response.timestamp.context("no timestamp")?;
    Ok(((ts.physical as u64) << 18) | ts.logical as u64)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_isolated_placement_member_serves_no_timestamps() -> Result<()> {
    let mut cluster = Cluster::start_replicated(3, 1, Some(STORE_CONFIG)).await?;
    let logs = cluster.logs_on_failure();
    let (_, header) = common::pd_stub(&cluster).await?;
    let cid = header.cluster_id;
    let client = Arc::new(txn_client(&cluster, Api::V1).await?);
    let load = Load::start(client.clone(), 1, "isolate");
    load.wait_for_more_acks(10, Duration::from_secs(30), "load running")
        .await?;

    let old = cluster.placement_leader().await.context("a leader")?;
    let before = member_tso(&cluster.pd_addrs[old], cid).await?;
    let isolated_at = Instant::now();
    cluster.isolate_placement_member(old, true).await?;
    let new = wait_for_new_leader(&mut cluster, old).await?;
    eprintln!(
        "isolated placement leader replaced after {:?}",
        isolated_at.elapsed()
    );
    ensure!(
        member_tso(&cluster.pd_addrs[old], cid).await.is_err(),
        "the isolated member still hands out timestamps"
    );
    let after = member_tso(&cluster.pd_addrs[new], cid).await?;
    ensure!(
        after > before,
        "majority's timestamp {after} not above {before}"
    );
    load.wait_for_more_acks(20, Duration::from_secs(60), "majority keeps serving")
        .await?;

    // Healing: one leader again, the old one follows.
    cluster.isolate_placement_member(old, false).await?;
    eventually(
        Duration::from_secs(30),
        "healed group has one leader",
        || {
            let addr = cluster.pd_addrs[old].clone();
            async move {
                let (code, body) = http_get(&addr, "/pd/api/v1/leader").await?;
                Ok(code == 200 && !body.contains(&addr))
            }
        },
    )
    .await?;
    let result = load.stop().await?;
    check_all_readable(&client, &result.acked).await?;
    logs.disarm();
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn restarting_every_placement_member_keeps_the_cluster() -> Result<()> {
    let mut cluster = Cluster::start_replicated(3, 1, Some(STORE_CONFIG)).await?;
    let logs = cluster.logs_on_failure();
    let client = txn_client(&cluster, Api::V1).await?;
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..20)
        .map(|i| {
            (
                format!("restart/{i:02}").into_bytes(),
                format!("v{i}").into_bytes(),
            )
        })
        .collect();
    commit_puts(&client, &pairs).await?;
    let safe_point = client.current_timestamp().await?.version() - 1;
    let (mut pd, header) = common::pd_stub(&cluster).await?;
    pd.update_gc_safe_point(pdpb::UpdateGcSafePointRequest {
        header: Some(header),
        safe_point,
    })
    .await?;
    let stores_before = common::store_id(&cluster, 0).await?;
    let regions_before = common::regions(&cluster).await?;
    let last_ts = client.current_timestamp().await?.version();

    cluster.kill_placement()?;
    cluster.restart_placement().await?;

    let (_, header_after) = common::pd_stub(&cluster).await?;
    ensure!(
        header_after.cluster_id == header.cluster_id,
        "cluster id changed"
    );
    ensure!(
        common::gc_safe_point(&cluster).await? == safe_point,
        "safe point lost"
    );
    ensure!(
        common::store_id(&cluster, 0).await? == stores_before,
        "store changed"
    );
    ensure!(
        common::regions(&cluster).await? == regions_before,
        "regions changed"
    );
    let client = txn_client(&cluster, Api::V1).await?;
    ensure!(
        client.current_timestamp().await?.version() > last_ts,
        "tso went back"
    );
    for (key, value) in &pairs {
        ensure!(
            read(&client, key).await?.as_ref() == Some(value),
            "data lost"
        );
    }
    logs.disarm();
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn placement_members_join_and_leave_while_clients_run() -> Result<()> {
    let mut cluster = Cluster::start_replicated(3, 1, Some(STORE_CONFIG)).await?;
    let logs = cluster.logs_on_failure();
    let client = Arc::new(txn_client(&cluster, Api::V1).await?);
    let load = Load::start(client.clone(), 1, "members");

    let new = cluster.add_placement_member().await?;
    eventually(Duration::from_secs(60), "fourth member joined", || {
        let addr = cluster.pd_addrs[0].clone();
        async move {
            let (code, body) = http_get(&addr, "/pd/api/v1/members").await?;
            Ok(code == 200 && body.contains("pd-3"))
        }
    })
    .await?;
    let at_join = load.acked_count();

    // Remove an original member (possibly the leader) through a follower or the leader.
    let (code, body) = shale_e2e::http_request(
        &cluster.pd_addrs[new],
        "DELETE",
        "/pd/api/v1/members/name/pd-0",
    )
    .await?;
    ensure!(code == 200 || code == 307, "delete member: {code} {body}");
    if code == 307 {
        let leader = cluster.placement_leader().await.context("leader")?;
        let (code, body) = shale_e2e::http_request(
            &cluster.pd_addrs[leader],
            "DELETE",
            "/pd/api/v1/members/name/pd-0",
        )
        .await?;
        ensure!(code == 200, "delete member on leader: {code} {body}");
    }
    eventually(Duration::from_secs(30), "pd-0 removed", || {
        let addr = cluster.pd_addrs[new].clone();
        async move {
            let (code, body) = http_get(&addr, "/pd/api/v1/members").await?;
            Ok(code == 200 && !body.contains("\"pd-0\""))
        }
    })
    .await?;
    let target = at_join.max(load.acked_count()) + 20;
    eventually(Duration::from_secs(60), "clients keep going", || {
        let n = load.acked_count();
        async move { Ok(n >= target) }
    })
    .await?;
    let result = load.stop().await?;
    check_all_readable(&client, &result.acked).await?;
    logs.disarm();
    Ok(())
}
