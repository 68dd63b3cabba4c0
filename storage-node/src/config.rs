//! Storage node configuration: a TOML file, overridden by flags and
//! environment. Every field has a default that works on loopback.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// TOML keys are kebab-case (`api-version`, `max-value-size`), as in TiKV's
/// and placement's files.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Where the store's RocksDB lives.
    pub data_dir: PathBuf,
    /// gRPC listen address for clients (and, later, other stores).
    pub listen_addr: String,
    /// Address other parties should use to reach this store; defaults to `listen_addr`.
    pub advertise_addr: Option<String>,
    /// HTTP status address (`/metrics`, `/status`); empty disables it.
    pub status_addr: String,
    /// Placement endpoints (`host:port`).
    pub pd_endpoints: Vec<String>,
    /// Fsync every acknowledged write. Turning this off loses durability.
    pub sync_log: bool,
    /// Store and Region heartbeat interval.
    pub heartbeat_interval_ms: u64,
    /// How often the GC worker checks placement's safe point.
    pub gc_interval_ms: u64,
    /// How long to wait for placement at start-up.
    pub pd_connect_timeout_ms: u64,
    /// Largest accepted value, in bytes.
    pub max_value_size: usize,
    /// The client API this store serves, as TiKV's `storage.api-version`:
    /// 1 (raw keys as given, no keyspaces) or 2 (keyspace-prefixed keys). One
    /// cluster serves one version, so the two key layouts never mix.
    pub api_version: u8,
    /// Split a Region holding more keys than this (TiKV's
    /// `region-split-keys`).
    pub region_split_keys: u64,
    /// Split a Region holding more bytes than this (TiKV's
    /// `region-split-size`).
    pub region_split_size: u64,
    /// How often Regions this store leads are checked for splitting.
    pub split_check_interval_ms: u64,
    /// Raft heartbeat interval of Region groups.
    pub raft_heartbeat_interval_ms: u64,
    /// Followers start an election after this long (up to twice it)
    /// without hearing from the leader.
    pub raft_election_timeout_ms: u64,
    /// Raft log entries a Region keeps behind its latest snapshot (a lagging
    /// follower catches up from them without a snapshot). Soak tests raise
    /// it so a failed run's logs still hold the Region's whole history.
    pub raft_log_keep_after_snapshot: u64,
    /// Serves `POST /debug/transport` on the status port, which cuts or
    /// slows this store's Raft traffic (for tests on real processes).
    pub allow_fault_injection: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./storage-data"),
            listen_addr: "127.0.0.1:20160".into(),
            advertise_addr: None,
            status_addr: "127.0.0.1:20180".into(),
            pd_endpoints: vec!["127.0.0.1:2379".into()],
            sync_log: true,
            heartbeat_interval_ms: 5_000,
            gc_interval_ms: 10_000,
            pd_connect_timeout_ms: 60_000,
            max_value_size: 8 * 1024 * 1024,
            api_version: 1,
            region_split_keys: 960_000,
            region_split_size: 96 * 1024 * 1024,
            split_check_interval_ms: 10_000,
            raft_heartbeat_interval_ms: 250,
            raft_election_timeout_ms: 1_500,
            raft_log_keep_after_snapshot: 200,
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
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.pd_endpoints.is_empty() {
            return Err(ConfigError::Invalid(
                "pd_endpoints must not be empty".into(),
            ));
        }
        if self.heartbeat_interval_ms == 0 || self.gc_interval_ms == 0 {
            return Err(ConfigError::Invalid("intervals must be positive".into()));
        }
        if !matches!(self.api_version, 1 | 2) {
            return Err(ConfigError::Invalid(format!(
                "api_version must be 1 or 2, not {}",
                self.api_version
            )));
        }
        if self.region_split_keys == 0 || self.region_split_size == 0 {
            return Err(ConfigError::Invalid(
                "region-split-keys and region-split-size must be positive".into(),
            ));
        }
        if self.split_check_interval_ms == 0 || self.raft_heartbeat_interval_ms == 0 {
            return Err(ConfigError::Invalid("intervals must be positive".into()));
        }
        if self.raft_election_timeout_ms < 3 * self.raft_heartbeat_interval_ms {
            return Err(ConfigError::Invalid(format!(
                "raft-election-timeout-ms ({}) must be at least 3 heartbeats ({} ms)",
                self.raft_election_timeout_ms,
                3 * self.raft_heartbeat_interval_ms
            )));
        }
        if self.max_value_size == 0 {
            return Err(ConfigError::Invalid(
                "max_value_size must be positive".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_file_keeps_defaults() {
        let c = Config::from_toml("listen-addr = \"0.0.0.0:1\"\nsync-log = false").unwrap();
        assert_eq!(c.listen_addr, "0.0.0.0:1");
        assert!(!c.sync_log);
        assert_eq!(c.pd_endpoints, Config::default().pd_endpoints);
    }

    #[test]
    fn raft_log_kept_after_a_snapshot_is_configurable() {
        assert_eq!(Config::default().raft_log_keep_after_snapshot, 200);
        let c = Config::from_toml("raft-log-keep-after-snapshot = 1000000").unwrap();
        assert_eq!(c.raft_log_keep_after_snapshot, 1_000_000);
        assert!(Config::from_toml("raft-log-keep-after-snapshot = -1").is_err());
    }

    #[test]
    fn readme_example_parses() {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("```toml\ndata-dir")
            .expect("README has the example")
            + 8;
        let len = readme[start..].find("```").expect("example is closed");
        let c = Config::from_toml(&readme[start..start + len]).unwrap();
        assert_eq!(c.advertise_addr.as_deref(), Some("store-0.example:20160"));
        assert_eq!(c.api_version, 1);
        c.validate().unwrap();
    }

    #[test]
    fn garbage_and_unknown_keys_are_errors() {
        assert!(Config::from_toml("\u{0}\u{1}not toml [[").is_err());
        assert!(Config::from_toml("listen-adr = \"x\"").is_err());
        assert!(Config::from_toml("sync-log = 3").is_err());
        let empty_pd = Config {
            pd_endpoints: vec![],
            ..Config::default()
        };
        assert!(empty_pd.validate().is_err());
        let api3 = Config {
            api_version: 3,
            ..Config::default()
        };
        assert!(api3.validate().is_err());
    }
}
