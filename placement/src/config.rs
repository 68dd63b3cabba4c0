//! Configuration: an optional TOML file, overridden by command-line flags.
//! With neither, placement runs on loopback with data in `./placement-data`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::{Deserialize, Serialize};

use crate::duration::ConfigDuration;

pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:2379";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Member name reported by GetMembers and the HTTP API.
    pub name: String,
    /// Metadata lives in `<data-dir>/meta`.
    pub data_dir: PathBuf,
    /// One port for gRPC and the HTTP API, like PD. Port 0 picks a free one.
    pub listen_addr: SocketAddr,
    /// `host:port` clients are told to use (GetMembers). Defaults to the
    /// bound listen address.
    pub advertise_addr: Option<String>,
    /// `tracing` filter directive, e.g. `info` or `shale_placement=debug`.
    pub log_level: String,
    /// Replicas per region (`max_peer_count` in GetClusterConfig).
    pub max_replicas: u32,
    /// A store silent this long is Down: its peers are replaced elsewhere.
    pub max_store_down_time: ConfigDuration,
    /// Leader transfers (balance-leader, evict-leader) in flight at once.
    pub leader_schedule_limit: u64,
    /// Peer moves of balance-region in flight at once.
    pub region_schedule_limit: u64,
    /// Replica repairs (missing, extra, down or offline peers) in flight at once.
    pub replica_schedule_limit: u64,
    /// Peers being added to one store at once (each is a snapshot it receives).
    pub max_snapshot_count: u64,
    /// How often the leader runs the replica checker and the schedulers.
    pub schedule_interval: ConfigDuration,
    /// `name=url,...`: the members a new placement group starts with (every
    /// member gets the same list). Unset and not joining: a group of one.
    pub initial_cluster: Option<String>,
    /// URLs of a running group this new member asks to join.
    pub join: Vec<String>,
    /// Enables `POST /pd/api/v1/debug/isolate` (tests of real processes).
    pub allow_fault_injection: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: "placement-1".into(),
            data_dir: PathBuf::from("./placement-data"),
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 2379)),
            advertise_addr: None,
            log_level: "info".into(),
            max_replicas: 3,
            max_store_down_time: ConfigDuration::from_secs(30 * 60),
            leader_schedule_limit: 4,
            region_schedule_limit: 2048,
            replica_schedule_limit: 64,
            max_snapshot_count: 64,
            schedule_interval: ConfigDuration::from_millis(500),
            initial_cluster: None,
            join: Vec::new(),
            allow_fault_injection: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.name.trim().is_empty() {
            return Err(ConfigError::Invalid("name must not be empty".into()));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::Invalid("data-dir must not be empty".into()));
        }
        if self.max_replicas == 0 {
            return Err(ConfigError::Invalid(
                "max-replicas must be at least 1".into(),
            ));
        }
        if self.max_store_down_time.as_millis() == 0 {
            return Err(ConfigError::Invalid(
                "max-store-down-time must be positive".into(),
            ));
        }
        if self.schedule_interval.as_millis() == 0 {
            return Err(ConfigError::Invalid(
                "schedule-interval must be positive".into(),
            ));
        }
        if let Some(addr) = &self.advertise_addr {
            let without_scheme = addr
                .split_once("://")
                .map_or(addr.as_str(), |(_, rest)| rest);
            let valid = without_scheme
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                return Err(ConfigError::Invalid(format!(
                    "advertise-addr {addr:?} is not host:port"
                )));
            }
        }
        if let Some(list) = &self.initial_cluster {
            let initial = crate::raft::InitialCluster::parse(list)
                .map_err(|e| ConfigError::Invalid(format!("initial-cluster: {e}")))?;
            if !initial.contains(&self.name) {
                return Err(ConfigError::Invalid(format!(
                    "initial-cluster does not list this member's name {:?}",
                    self.name
                )));
            }
            if !self.join.is_empty() {
                return Err(ConfigError::Invalid(
                    "initial-cluster and join are exclusive: form a new group or join one".into(),
                ));
            }
        }
        for url in &self.join {
            crate::raft::members::normalize_url(url)
                .map_err(|e| ConfigError::Invalid(format!("join: {e}")))?;
        }
        tracing_subscriber::EnvFilter::try_new(&self.log_level)
            .map_err(|e| ConfigError::Invalid(format!("log-level {:?}: {e}", self.log_level)))?;
        Ok(())
    }
}

/// Command-line flags of the `placement` binary.
#[derive(Debug, Default, Parser)]
#[command(
    name = "placement",
    version,
    about = "Shale placement driver (PD-compatible)"
)]
pub struct Cli {
    /// TOML config file; flags override its values.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory [default: ./placement-data]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address for gRPC and HTTP [default: 127.0.0.1:2379]
    #[arg(long, value_name = "ADDR")]
    pub listen_addr: Option<SocketAddr>,
    /// host:port reported to clients [default: the listen address]
    #[arg(long, value_name = "HOST:PORT", env = "PLACEMENT_ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,
    /// Member name [default: placement-1]
    #[arg(long)]
    pub name: Option<String>,
    /// Log filter, e.g. info, debug [default: info]
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Members of a new group: name=http://host:port,... (same list on every member)
    #[arg(long, value_name = "LIST", env = "PLACEMENT_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// Join a running group through these member URLs (comma-separated)
    #[arg(
        long,
        value_name = "URLS",
        env = "PLACEMENT_JOIN",
        value_delimiter = ','
    )]
    pub join: Option<Vec<String>>,
    /// Replicas per Region [default: 3]
    #[arg(long, value_name = "N")]
    pub max_replicas: Option<u32>,
    /// A store silent this long has its peers replaced, e.g. 30m, 90s, 500ms [default: 30m]
    #[arg(long, value_name = "DURATION")]
    pub max_store_down_time: Option<ConfigDuration>,
    /// Leader transfers in flight at once [default: 4]
    #[arg(long, value_name = "N")]
    pub leader_schedule_limit: Option<u64>,
    /// balance-region peer moves in flight at once [default: 2048]
    #[arg(long, value_name = "N")]
    pub region_schedule_limit: Option<u64>,
    /// Replica repairs in flight at once [default: 64]
    #[arg(long, value_name = "N")]
    pub replica_schedule_limit: Option<u64>,
    /// Peers being added to one store at once [default: 64]
    #[arg(long, value_name = "N")]
    pub max_snapshot_count: Option<u64>,
    /// How often the scheduler runs, e.g. 500ms [default: 500ms]
    #[arg(long, value_name = "DURATION")]
    pub schedule_interval: Option<ConfigDuration>,
    /// Allow tests to cut this member off from its peers over HTTP
    #[arg(long, hide = true)]
    pub allow_fault_injection: bool,
}

impl Cli {
    /// Defaults, then the config file, then flags; validated.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
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
        if let Some(v) = self.name {
            config.name = v;
        }
        if let Some(v) = self.log_level {
            config.log_level = v;
        }
        if let Some(v) = self.initial_cluster {
            config.initial_cluster = Some(v);
        }
        if let Some(v) = self.join {
            config.join = v;
        }
        if let Some(v) = self.max_replicas {
            config.max_replicas = v;
        }
        if let Some(v) = self.max_store_down_time {
            config.max_store_down_time = v;
        }
        if let Some(v) = self.leader_schedule_limit {
            config.leader_schedule_limit = v;
        }
        if let Some(v) = self.region_schedule_limit {
            config.region_schedule_limit = v;
        }
        if let Some(v) = self.replica_schedule_limit {
            config.replica_schedule_limit = v;
        }
        if let Some(v) = self.max_snapshot_count {
            config.max_snapshot_count = v;
        }
        if let Some(v) = self.schedule_interval {
            config.schedule_interval = v;
        }
        if self.allow_fault_injection {
            config.allow_fault_injection = true;
        }
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::io::Write;

    use super::*;

    fn write_file(contents: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(contents).unwrap();
        file
    }

    #[test]
    fn defaults_are_valid_and_on_loopback() {
        let config = Cli::default().into_config().unwrap();
        assert_eq!(config, Config::default());
        assert!(config.listen_addr.ip().is_loopback());
        assert_eq!(config.listen_addr.to_string(), DEFAULT_LISTEN_ADDR);
    }

    #[test]
    fn flags_override_file() {
        let file = write_file(
            b"name = \"pd-a\"\ndata-dir = \"/tmp/x\"\nlisten-addr = \"0.0.0.0:1234\"\nmax-replicas = 1\n",
        );
        let cli = Cli {
            config: Some(file.path().to_path_buf()),
            name: Some("pd-b".into()),
            ..Default::default()
        };
        let config = cli.into_config().unwrap();
        assert_eq!(config.name, "pd-b");
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(config.listen_addr.port(), 1234);
        assert_eq!(config.max_replicas, 1);
        assert_eq!(config.log_level, "info");
    }

    #[test]
    fn scheduling_knobs_from_file_and_flags() {
        let file = write_file(
            b"max-store-down-time = \"2s\"\nleader-schedule-limit = 1\nschedule-interval = 50\n",
        );
        let cli = Cli::try_parse_from([
            "placement",
            "--config",
            file.path().to_str().unwrap(),
            "--region-schedule-limit",
            "8",
            "--max-replicas",
            "5",
        ])
        .unwrap();
        let config = cli.into_config().unwrap();
        assert_eq!(config.max_store_down_time.as_millis(), 2_000);
        assert_eq!(config.leader_schedule_limit, 1);
        assert_eq!(config.region_schedule_limit, 8);
        assert_eq!(config.replica_schedule_limit, 64);
        assert_eq!(config.schedule_interval.as_millis(), 50);
        assert_eq!(config.max_replicas, 5);
        let bad = write_file(b"max-store-down-time = \"soon\"\n");
        assert!(Config::from_file(bad.path()).is_err());
        assert!(Cli::try_parse_from(["placement", "--schedule-interval", "x"]).is_err());
        let zero = Config {
            schedule_interval: ConfigDuration::from_millis(0),
            ..Default::default()
        };
        assert!(zero.validate().is_err());
    }

    #[test]
    fn unknown_keys_and_garbage_are_errors() {
        let unknown = write_file(b"nmae = \"typo\"\n");
        let err = Config::from_file(unknown.path()).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
        assert!(err.to_string().contains("nmae"), "{err}");

        let garbage = write_file(&[0xff, 0xfe, 0x00, 0x13, 0x37, b'=', b'[']);
        assert!(Config::from_file(garbage.path()).is_err());
        let bad_toml = write_file(b"listen-addr = [[[\n");
        assert!(matches!(
            Config::from_file(bad_toml.path()),
            Err(ConfigError::Parse { .. })
        ));
        let bad_type = write_file(b"listen-addr = \"not an address\"\n");
        assert!(Config::from_file(bad_type.path()).is_err());
        assert!(matches!(
            Config::from_file(Path::new("/nonexistent/placement.toml")),
            Err(ConfigError::Read { .. })
        ));
    }

    #[test]
    fn validation_rejects_nonsense() {
        let mut config = Config {
            max_replicas: 0,
            ..Default::default()
        };
        assert!(config.validate().is_err());
        config = Config {
            advertise_addr: Some("no-port".into()),
            ..Default::default()
        };
        assert!(config.validate().is_err());
        config.advertise_addr = Some("http://pd-0.pd:2379".into());
        config.validate().unwrap();
        config.log_level = "[[[".into();
        assert!(config.validate().is_err());
    }

    #[test]
    fn member_lists_are_checked() {
        let mut config = Config {
            name: "pd-1".into(),
            initial_cluster: Some("pd-1=http://a:2379,pd-2=b:2379".into()),
            ..Default::default()
        };
        config.validate().unwrap();
        config.name = "pd-9".into();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("pd-9"), "{err}");
        config.name = "pd-1".into();
        for bad in [
            "pd-1",
            "pd-1=",
            "pd-1=a:2379,pd-1=b:2379",
            "pd-1=https://a:1",
            "=a:1",
        ] {
            config.initial_cluster = Some(bad.into());
            assert!(config.validate().is_err(), "{bad} accepted");
        }
        config.initial_cluster = Some("pd-1=a:2379".into());
        config.join = vec!["a:2379".into()];
        assert!(
            config.validate().is_err(),
            "initial-cluster with join accepted"
        );
        config.initial_cluster = None;
        config.validate().unwrap();
        config.join = vec!["no port".into()];
        assert!(config.validate().is_err());
    }
}
