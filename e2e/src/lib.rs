//! End-to-end harness: real `placement` and `storage-node` processes on
//! loopback, each with its own data directory, that tests can kill with
//! SIGKILL and restart on the same ports and data.
//!
//! The binaries are found next to the test executable's target directory
//! (`cargo build --bins` first; the project's test command does it).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Finds a built binary of this workspace (`target/<profile>/<name>`).
pub fn binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the test executable")?;
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("unexpected test executable location")?;
    let path = profile_dir.join(name);
    if !path.exists() {
        bail!(
            "{} not found: build the binaries first (cargo build --workspace --bins)",
            path.display()
        );
    }
    Ok(path)
}

/// A free loopback port (bound and released; good enough for tests).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One server process with a fixed address and data directory.
pub struct Process {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
}

impl Process {
    fn new(name: &str, program: PathBuf, args: Vec<String>, log: PathBuf) -> Self {
        Process {
            name: name.to_string(),
            program,
            args,
            child: None,
            log,
        }
    }

    pub fn start(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("{} is already running", self.name);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", self.name))?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL: no shutdown path runs, exactly like a crash.
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The process's combined output so far (for assertions and failures).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.kill9();
    }
}

/// Waits until `addr` answers HTTP `path` with 200.
pub async fn wait_http_ok(addr: &str, path: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if http_get(addr, path)
            .await
            .map(|(status, _)| status == 200)
            .unwrap_or(false)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{addr}{path} not ready after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `process` answers HTTP `path` on `addr` with 200; fails at
/// once (with the process's log) if the process exits first.
async fn wait_serving(process: &mut Process, addr: &str, path: &str) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if http_get(addr, path)
            .await
            .map(|(status, _)| status == 200)
            .unwrap_or(false)
        {
            return Ok(());
        }
        if !process.is_running() {
            bail!(
                "{} exited before serving {addr}{path}; log:\n{}",
                process.name,
                process.log()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "{} not serving {addr}{path} after {READY_TIMEOUT:?}; log:\n{}",
                process.name,
                process.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A minimal HTTP/1.1 GET: status code and body.
pub async fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    http_request(addr, "GET", path).await
}

/// A minimal HTTP/1.1 request without a body: status code and body.
pub async fn http_request(addr: &str, method: &str, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    stream.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("malformed HTTP response")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    // Chunked bodies are returned as-is; callers search them rather than parse strictly.
    Ok((status, body))
}

/// Placement plus storage nodes as real processes in one temporary directory.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub placement: Process,
    pub pd_addr: String,
    pub stores: Vec<Process>,
    pub store_addrs: Vec<String>,
    pub store_status_addrs: Vec<String>,
    /// A TOML config file every storage node is started with (`--config`).
    pub store_config: Option<PathBuf>,
}

const READY_TIMEOUT: Duration = Duration::from_secs(60);

impl Cluster {
    /// Starts placement and `stores` storage nodes and waits until all serve.
    pub async fn start(stores: usize) -> Result<Self> {
        Self::start_inner(stores, None).await
    }

    /// Like [`Cluster::start`], with every storage node reading `store_config`
    /// (TOML) through `--config`; the harness's flags still set the addresses
    /// and data directory.
    pub async fn start_with_store_config(stores: usize, store_config: &str) -> Result<Self> {
        Self::start_inner(stores, Some(store_config)).await
    }

    async fn start_inner(stores: usize, store_config: Option<&str>) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let store_config = match store_config {
            Some(text) => {
                let path = dir.path().join("storage-node.toml");
                std::fs::write(&path, text)?;
                Some(path)
            }
            None => None,
        };
        let pd_addr = format!("127.0.0.1:{}", free_port()?);
        let placement = Process::new(
            "placement",
            binary("placement")?,
            vec![
                "--data-dir".into(),
                dir.path().join("placement").display().to_string(),
                "--listen-addr".into(),
                pd_addr.clone(),
            ],
            dir.path().join("placement.log"),
        );
        let mut cluster = Cluster {
            dir,
            placement,
            pd_addr,
            stores: Vec::new(),
            store_addrs: Vec::new(),
            store_status_addrs: Vec::new(),
            store_config,
        };
        cluster.placement.start()?;
        cluster.wait_placement().await?;
        for _ in 0..stores {
            cluster.add_store().await?;
        }
        Ok(cluster)
    }

    pub fn pd_endpoints(&self) -> Vec<String> {
        vec![self.pd_addr.clone()]
    }

    pub async fn wait_placement(&mut self) -> Result<()> {
        let addr = self.pd_addr.clone();
        wait_serving(&mut self.placement, &addr, "/pd/api/v1/health").await
    }

    /// Starts one more storage node and waits until it is registered.
    pub async fn add_store(&mut self) -> Result<usize> {
        let i = self.stores.len();
        let addr = format!("127.0.0.1:{}", free_port()?);
        let status = format!("127.0.0.1:{}", free_port()?);
        let mut args: Vec<String> = Vec::new();
        if let Some(config) = &self.store_config {
            args.push("--config".into());
            args.push(config.display().to_string());
        }
        args.extend([
            "--data-dir".into(),
            self.dir
                .path()
                .join(format!("store-{i}"))
                .display()
                .to_string(),
            "--addr".into(),
            addr.clone(),
            "--status-addr".into(),
            status.clone(),
            "--pd".into(),
            self.pd_addr.clone(),
        ]);
        let mut p = Process::new(
            &format!("store-{i}"),
            binary("storage-node")?,
            args,
            self.dir.path().join(format!("store-{i}.log")),
        );
        p.start()?;
        self.stores.push(p);
        self.store_addrs.push(addr);
        self.store_status_addrs.push(status);
        self.wait_store(i).await?;
        Ok(i)
    }

    pub async fn wait_store(&mut self, i: usize) -> Result<()> {
        let status = self.store_status_addrs[i].clone();
        wait_serving(&mut self.stores[i], &status, "/status").await
    }

    pub fn kill_store(&mut self, i: usize) -> Result<()> {
        self.stores[i].kill9()
    }

    pub async fn restart_store(&mut self, i: usize) -> Result<()> {
        self.stores[i].start()?;
        self.wait_store(i).await
    }

    pub fn kill_placement(&mut self) -> Result<()> {
        self.placement.kill9()
    }

    pub async fn restart_placement(&mut self) -> Result<()> {
        self.placement.start()?;
        self.wait_placement().await
    }

    /// A guard that prints the tail of every server log when it is dropped
    /// without [`LogsOnFailure::disarm`] (a failed assertion or an early `?`).
    pub fn logs_on_failure(&self) -> LogsOnFailure {
        LogsOnFailure {
            dir: self.dir.path().to_path_buf(),
            armed: true,
        }
    }
}

/// See [`Cluster::logs_on_failure`].
pub struct LogsOnFailure {
    dir: PathBuf,
    armed: bool,
}

impl LogsOnFailure {
    /// The test passed: print nothing.
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for LogsOnFailure {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        const TAIL_LINES: usize = 80;
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut logs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        for log in logs {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(TAIL_LINES)..];
            eprintln!("===== last {} lines of {} =====", tail.len(), log.display());
            for line in tail {
                eprintln!("{line}");
            }
        }
    }
}
