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

pub mod faults;

pub use faults::{can_partition, Endpoint, Netfilter};

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
    /// Runs as this user (its traffic can then be cut off on its own).
    uid: Option<u32>,
    paused: bool,
}

impl Process {
    fn new(name: &str, program: PathBuf, args: Vec<String>, log: PathBuf) -> Self {
        Process {
            name: name.to_string(),
            program,
            args,
            child: None,
            log,
            uid: None,
            paused: false,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The user id the process runs as, when it has one of its own.
    pub fn uid(&self) -> Option<u32> {
        self.uid
    }

    pub fn start(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("{} is already running", self.name);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("SHALE_E2E_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(uid) = self.uid {
            use std::os::unix::process::CommandExt;
            command.uid(uid).gid(uid);
        }
        let child = command
            .spawn()
            .with_context(|| format!("spawning {}", self.name))?;
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }

    /// SIGKILL: no shutdown path runs, exactly like a crash.
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        self.paused = false;
        Ok(())
    }

    fn signal(&self, signal: libc::c_int) -> Result<()> {
        let Some(child) = &self.child else {
            bail!("{} is not running", self.name);
        };
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        if unsafe { libc::kill(child.id() as libc::pid_t, signal) } != 0 {
            bail!(
                "signalling {}: {}",
                self.name,
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    /// SIGSTOP: the process freezes mid-flight (a long GC pause, a VM
    /// stall); its sockets stay open.
    pub fn pause(&mut self) -> Result<()> {
        self.signal(libc::SIGSTOP)?;
        self.paused = true;
        Ok(())
    }

    /// SIGCONT after [`Process::pause`].
    pub fn resume(&mut self) -> Result<()> {
        if self.paused {
            self.signal(libc::SIGCONT)?;
            self.paused = false;
        }
        Ok(())
    }

    pub fn is_paused(&self) -> bool {
        self.paused
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
        let _ = self.resume();
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
    http_request_with_body(addr, method, path, "").await
}

/// A minimal HTTP/1.1 request with a JSON body: status code and body.
pub async fn http_request_with_body(
    addr: &str,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, String)> {
    // A paused or partitioned server never answers: give up like a client.
    tokio::time::timeout(HTTP_TIMEOUT, http_request_inner(addr, method, path, body))
        .await
        .with_context(|| format!("{method} {addr}{path}: no answer within {HTTP_TIMEOUT:?}"))?
}

const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

async fn http_request_inner(
    addr: &str,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
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

/// Placement members plus storage nodes as real processes in one temporary
/// directory.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    /// Placement members; with more than one they form one Raft group.
    pub placements: Vec<Process>,
    pub pd_addrs: Vec<String>,
    /// The first placement member's address (the only one unless replicated).
    pub pd_addr: String,
    pub stores: Vec<Process>,
    pub store_addrs: Vec<String>,
    pub store_status_addrs: Vec<String>,
    /// A TOML config file every storage node is started with (`--config`).
    pub store_config: Option<PathBuf>,
    /// Every server runs as a user of its own (see [`faults`]).
    own_users: bool,
    /// Where those users find the binaries (the build directory may be
    /// closed to them).
    binaries: Option<PathBuf>,
}

/// What [`Cluster::start_with`] starts.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Placement members (at least 1); more than one form a Raft group.
    pub placements: usize,
    pub stores: usize,
    /// TOML every storage node reads through `--config`.
    pub store_config: Option<String>,
    /// Run each server as a user of its own, so a single process can be
    /// partitioned with [`Netfilter`] (needs root; see [`can_partition`]).
    pub own_users: bool,
}

const READY_TIMEOUT: Duration = Duration::from_secs(60);

fn placement_name(i: usize) -> String {
    format!("pd-{i}")
}

impl Cluster {
    /// Starts placement and `stores` storage nodes and waits until all serve.
    pub async fn start(stores: usize) -> Result<Self> {
        Self::start_inner(1, stores, None).await
    }

    /// Starts the cluster `options` describe and waits until all serve.
    pub async fn start_with(options: ClusterOptions) -> Result<Self> {
        Self::start_cluster(&options).await
    }

    /// Like [`Cluster::start`], with every storage node reading `store_config`
    /// (TOML) through `--config`; the harness's flags still set the addresses
    /// and data directory.
    pub async fn start_with_store_config(stores: usize, store_config: &str) -> Result<Self> {
        Self::start_inner(1, stores, Some(store_config)).await
    }

    /// `placements` placement members forming one replicated group (fault
    /// injection enabled), then `stores` storage nodes.
    pub async fn start_replicated(
        placements: usize,
        stores: usize,
        store_config: Option<&str>,
    ) -> Result<Self> {
        Self::start_inner(placements, stores, store_config).await
    }

    async fn start_inner(
        placements: usize,
        stores: usize,
        store_config: Option<&str>,
    ) -> Result<Self> {
        Self::start_cluster(&ClusterOptions {
            placements,
            stores,
            store_config: store_config.map(str::to_string),
            own_users: false,
        })
        .await
    }

    async fn start_cluster(options: &ClusterOptions) -> Result<Self> {
        let (placements, stores) = (options.placements.max(1), options.stores);
        let dir = tempfile::tempdir()?;
        if options.own_users {
            // Servers running as other users must reach their directories.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        }
        let binaries = if options.own_users {
            Some(shared_binaries(dir.path())?)
        } else {
            None
        };
        let store_config = match options.store_config.as_deref() {
            Some(text) => {
                let path = dir.path().join("storage-node.toml");
                std::fs::write(&path, text)?;
                Some(path)
            }
            None => None,
        };
        let pd_addrs: Vec<String> = (0..placements)
            .map(|_| free_port().map(|p| format!("127.0.0.1:{p}")))
            .collect::<Result<_>>()?;
        let initial_cluster = pd_addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| format!("{}=http://{addr}", placement_name(i)))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        for (i, addr) in pd_addrs.iter().enumerate() {
            let mut args = vec![
                "--name".into(),
                placement_name(i),
                "--data-dir".into(),
                dir.path().join(placement_name(i)).display().to_string(),
                "--listen-addr".into(),
                addr.clone(),
            ];
            if placements > 1 {
                args.extend([
                    "--initial-cluster".into(),
                    initial_cluster.clone(),
                    "--allow-fault-injection".into(),
                ]);
            }
            let mut member = Process::new(
                &placement_name(i),
                binary_in(binaries.as_deref(), "placement")?,
                args,
                dir.path().join(format!("{}.log", placement_name(i))),
            );
            if options.own_users {
                member.uid = Some(own_dir(&dir.path().join(placement_name(i)))?);
            }
            members.push(member);
        }
        let mut cluster = Cluster {
            dir,
            placements: members,
            pd_addr: pd_addrs[0].clone(),
            pd_addrs,
            stores: Vec::new(),
            store_addrs: Vec::new(),
            store_status_addrs: Vec::new(),
            store_config,
            own_users: options.own_users,
            binaries,
        };
        for member in &mut cluster.placements {
            member.start()?;
        }
        cluster.wait_placement().await?;
        for _ in 0..stores {
            cluster.add_store().await?;
        }
        Ok(cluster)
    }

    pub fn pd_endpoints(&self) -> Vec<String> {
        self.pd_addrs.clone()
    }

    /// Waits until every running member serves HTTP and one of them leads.
    pub async fn wait_placement(&mut self) -> Result<()> {
        for i in 0..self.placements.len() {
            if self.placements[i].is_running() {
                let addr = self.pd_addrs[i].clone();
                wait_serving(&mut self.placements[i], &addr, "/pd/api/v1/health").await?;
            }
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        while self.placement_leader().await.is_none() {
            if Instant::now() > deadline {
                bail!("no placement leader after {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Index of the member that currently serves as leader, asking each
    /// running member (`/pd/api/v1/leader` answers on any member).
    pub async fn placement_leader(&mut self) -> Option<usize> {
        for i in 0..self.placements.len() {
            if !self.placements[i].is_running() {
                continue;
            }
            let Ok((200, body)) = http_get(&self.pd_addrs[i], "/pd/api/v1/leader").await else {
                continue;
            };
            let leader = self
                .pd_addrs
                .iter()
                .position(|addr| body.contains(&format!("http://{addr}\"")));
            // Only trust a leader that itself serves the cluster state.
            if let Some(l) = leader {
                if matches!(
                    http_get(&self.pd_addrs[l], "/pd/api/v1/cluster").await,
                    Ok((200, _))
                ) {
                    return Some(l);
                }
            }
        }
        None
    }

    /// Starts one more placement member that joins the running group.
    pub async fn add_placement_member(&mut self) -> Result<usize> {
        let i = self.placements.len();
        let addr = format!("127.0.0.1:{}", free_port()?);
        let args = vec![
            "--name".into(),
            placement_name(i),
            "--data-dir".into(),
            self.dir
                .path()
                .join(placement_name(i))
                .display()
                .to_string(),
            "--listen-addr".into(),
            addr.clone(),
            "--join".into(),
            self.pd_addrs.join(","),
            "--allow-fault-injection".into(),
        ];
        let mut member = Process::new(
            &placement_name(i),
            binary("placement")?,
            args,
            self.dir.path().join(format!("{}.log", placement_name(i))),
        );
        member.start()?;
        self.placements.push(member);
        self.pd_addrs.push(addr.clone());
        wait_serving(&mut self.placements[i], &addr, "/pd/api/v1/health").await?;
        Ok(i)
    }

    /// SIGKILL of placement member `i`.
    pub fn kill_placement_member(&mut self, i: usize) -> Result<()> {
        self.placements[i].kill9()
    }

    /// Restarts member `i` on its address and data, waiting until it serves.
    pub async fn restart_placement_member(&mut self, i: usize) -> Result<()> {
        self.placements[i].start()?;
        let addr = self.pd_addrs[i].clone();
        wait_serving(&mut self.placements[i], &addr, "/pd/api/v1/health").await
    }

    /// Cuts member `i` off from (or reconnects it to) the other members.
    pub async fn isolate_placement_member(&self, i: usize, isolated: bool) -> Result<()> {
        let body = format!("{{\"isolated\":{isolated}}}");
        let (code, text) =
            http_request_with_body(&self.pd_addrs[i], "POST", "/pd/api/v1/debug/isolate", &body)
                .await?;
        if code != 200 {
            bail!("isolating {}: {code} {text}", placement_name(i));
        }
        Ok(())
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
            self.pd_addrs.join(","),
        ]);
        let mut p = Process::new(
            &format!("store-{i}"),
            binary_in(self.binaries.as_deref(), "storage-node")?,
            args,
            self.dir.path().join(format!("store-{i}.log")),
        );
        if self.own_users {
            p.uid = Some(own_dir(&self.dir.path().join(format!("store-{i}")))?);
        }
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

    /// SIGKILL of every placement member.
    pub fn kill_placement(&mut self) -> Result<()> {
        for member in &mut self.placements {
            member.kill9()?;
        }
        Ok(())
    }

    /// Restarts every stopped placement member and waits for a leader.
    pub async fn restart_placement(&mut self) -> Result<()> {
        for member in &mut self.placements {
            if !member.is_running() {
                member.start()?;
            }
        }
        self.wait_placement().await
    }

    /// Stops the cluster's directory (data and logs) from being deleted:
    /// for a post-mortem (`shale debug --data-dir <dir>/store-N ...`).
    pub fn keep_data(&mut self) -> Result<PathBuf> {
        let kept = std::mem::replace(&mut self.dir, tempfile::tempdir()?);
        Ok(kept.keep())
    }

    /// A guard that prints the tail of every server log when it is dropped
    /// without [`LogsOnFailure::disarm`] (a failed assertion or an early `?`),
    /// and copies the whole logs under `$SHALE_E2E_KEEP_LOGS` if it is set.
    pub fn logs_on_failure(&self) -> LogsOnFailure {
        LogsOnFailure {
            dir: self.dir.path().to_path_buf(),
            armed: true,
        }
    }
}

/// Links (or copies) the server binaries into `dir/bin`, which every user
/// can reach; returns that directory.
fn shared_binaries(dir: &Path) -> Result<PathBuf> {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    for name in ["placement", "storage-node"] {
        let from = binary(name)?;
        let to = bin.join(name);
        if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to)
                .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        }
    }
    Ok(bin)
}

/// The binary `name`, from `dir` when given, else from the build.
fn binary_in(dir: Option<&Path>, name: &str) -> Result<PathBuf> {
    match dir {
        Some(dir) => Ok(dir.join(name)),
        None => binary(name),
    }
}

/// Creates `dir` owned by a fresh user id of its own; returns the id.
fn own_dir(dir: &Path) -> Result<u32> {
    let uid = faults::next_user_id();
    std::fs::create_dir_all(dir)?;
    std::os::unix::fs::chown(dir, Some(uid), Some(uid))
        .with_context(|| format!("giving {} to user {uid}", dir.display()))?;
    Ok(uid)
}

impl Cluster {
    /// What a partition of placement member `i` cuts off.
    pub fn placement_endpoint(&self, i: usize) -> Option<Endpoint> {
        Some(Endpoint {
            uid: self.placements[i].uid()?,
            ports: vec![port_of(&self.pd_addrs[i])?],
        })
    }

    /// What a partition of storage node `i` cuts off.
    pub fn store_endpoint(&self, i: usize) -> Option<Endpoint> {
        Some(Endpoint {
            uid: self.stores[i].uid()?,
            ports: vec![
                port_of(&self.store_addrs[i])?,
                port_of(&self.store_status_addrs[i])?,
            ],
        })
    }
}

fn port_of(addr: &str) -> Option<u16> {
    addr.rsplit(':').next()?.parse().ok()
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
        // Whole logs for a post-mortem, when asked for (the data dir goes).
        if let Some(keep) = std::env::var_os("SHALE_E2E_KEEP_LOGS") {
            let name = self.dir.file_name().unwrap_or_default().to_string_lossy();
            let keep = PathBuf::from(keep).join(name.trim_start_matches('.'));
            if std::fs::create_dir_all(&keep).is_ok() {
                for log in &logs {
                    let _ = std::fs::copy(log, keep.join(log.file_name().unwrap_or_default()));
                }
                eprintln!("full logs kept in {}", keep.display());
            }
        }
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
