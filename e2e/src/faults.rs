//! Network partitions of single processes on loopback, with netfilter.
//!
//! Each server of a partitionable cluster runs under a user id of its own,
//! so its traffic can be told apart on loopback. Cutting a process off
//! drops, in the output hook, every packet its sockets send (`meta skuid`)
//! and every packet sent to its listening ports (`tcp dport`): nothing
//! reaches it and nothing leaves it, whichever side opened a connection.
//! The rules live in a table of this test process only (`shale_e2e_<pid>`),
//! touch only the test's own user ids and ports, and are deleted when the
//! [`Netfilter`] is dropped (tables of test processes that died are removed
//! the next time one starts).

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};

/// User ids handed to partitionable processes: a block per test process
/// (from its pid), so concurrent test binaries never share one.
pub fn next_user_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let block = 200_000 + (std::process::id() % 16_384) * 64;
    block + NEXT.fetch_add(1, Ordering::Relaxed) % 64
}

fn nft(args: &[&str]) -> Result<String> {
    let out = Command::new("nft")
        .args(args)
        .output()
        .context("running nft (install nftables)")?;
    if !out.status.success() {
        bail!(
            "nft {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether this process may run servers as other users and change
/// netfilter rules (root with `nft` installed).
pub fn can_partition() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    root && nft(&["list", "tables"]).is_ok()
}

/// One process the rules can cut off: its user id and listening ports.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub uid: u32,
    pub ports: Vec<u16>,
}

/// This test process's netfilter table.
pub struct Netfilter {
    table: String,
}

impl Netfilter {
    pub fn new() -> Result<Self> {
        remove_stale_tables();
        let table = format!("shale_e2e_{}", std::process::id());
        let _ = nft(&["delete", "table", "inet", &table]);
        nft(&["add", "table", "inet", &table])?;
        nft(&[
            "add",
            "chain",
            "inet",
            &table,
            "out",
            "{ type filter hook output priority 0 ; policy accept ; }",
        ])?;
        Ok(Netfilter { table })
    }

    /// Cuts `endpoint` off from everything on this machine.
    pub fn partition(&self, endpoint: &Endpoint) -> Result<()> {
        nft(&[
            "add",
            "rule",
            "inet",
            &self.table,
            "out",
            "meta",
            "skuid",
            &endpoint.uid.to_string(),
            "drop",
        ])?;
        if !endpoint.ports.is_empty() {
            let ports = endpoint
                .ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let set = format!("{{ {ports} }}");
            nft(&[
                "add",
                "rule",
                "inet",
                &self.table,
                "out",
                "tcp",
                "dport",
                &set,
                "drop",
            ])?;
        }
        Ok(())
    }

    /// Removes every partition.
    pub fn heal(&self) -> Result<()> {
        nft(&["flush", "chain", "inet", &self.table, "out"])?;
        Ok(())
    }
}

impl Drop for Netfilter {
    fn drop(&mut self) {
        let _ = nft(&["delete", "table", "inet", &self.table]);
    }
}

/// Deletes the tables of test processes that no longer run.
fn remove_stale_tables() {
    let Ok(list) = nft(&["list", "tables"]) else {
        return;
    };
    for line in list.lines() {
        let Some(name) = line.trim().strip_prefix("table inet shale_e2e_") else {
            continue;
        };
        let Ok(pid) = name.trim().parse::<i32>() else {
            continue;
        };
        // SAFETY: signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        if !alive {
            let _ = nft(&["delete", "table", "inet", &format!("shale_e2e_{pid}")]);
        }
    }
}
