//! A placement group of several members in one process, on loopback.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shale_placement::{start, Config, PlacementServer};
use shale_proto::pdpb::pd_client::PdClient;
use tonic::transport::Channel;

pub const ELECTION_WAIT: Duration = Duration::from_secs(20);

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Member {
    pub name: String,
    pub port: u16,
    pub dir: PathBuf,
}

impl Member {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn config(&self) -> Config {
        Config {
            name: self.name.clone(),
            data_dir: self.dir.clone(),
            listen_addr: format!("127.0.0.1:{}", self.port).parse().unwrap(),
            log_level: "warn".into(),
            allow_fault_injection: true,
            ..Default::default()
        }
    }
}

pub fn members(root: &Path, count: usize) -> Vec<Member> {
    (0..count)
        .map(|i| Member {
            name: format!("pd-{i}"),
            port: free_port(),
            dir: root.join(format!("pd-{i}")),
        })
        .collect()
}

pub fn initial_cluster(members: &[Member]) -> String {
    members
        .iter()
        .map(|m| format!("{}={}", m.name, m.url()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Starts every member at once (each waits for the others to elect).
pub async fn start_group(members: &[Member]) -> Vec<PlacementServer> {
    start_group_with(members, |config| config).await
}

/// Like [`start_group`], with each member's config passed through `tweak`.
pub async fn start_group_with(
    members: &[Member],
    tweak: impl Fn(Config) -> Config,
) -> Vec<PlacementServer> {
    let list = initial_cluster(members);
    let starts = members.iter().map(|m| {
        let config = tweak(Config {
            initial_cluster: Some(list.clone()),
            ..m.config()
        });
        async move { start(config).await.expect("member starts") }
    });
    futures::future::join_all(starts).await
}

/// Index of the single serving leader, once there is exactly one.
pub async fn wait_for_leader(servers: &[&PlacementServer]) -> usize {
    let deadline = Instant::now() + ELECTION_WAIT;
    loop {
        let leaders: Vec<usize> = (0..servers.len())
            .filter(|&i| servers[i].is_leader())
            .collect();
        if leaders.len() == 1 && servers.iter().all(|s| s.cluster_id() != 0) {
            return leaders[0];
        }
        assert!(Instant::now() < deadline, "no single leader: {leaders:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn client(url: &str) -> PdClient<Channel> {
    let channel = Channel::from_shared(url.to_string())
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    PdClient::new(channel)
}

pub async fn shutdown_all(servers: Vec<PlacementServer>) {
    futures::future::join_all(servers.into_iter().map(PlacementServer::shutdown)).await;
}
