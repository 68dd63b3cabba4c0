//! `shale debug`: looks inside a stopped storage node's data directory
//! (TiKV's `tikv-ctl` role): the Regions it holds with their Raft state,
//! and where a key is stored. Open a copy, or a store that is not running:
//! RocksDB allows one process at a time.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args as ClapArgs, Subcommand};
use openraft::EntryPayload;
use prost::Message;
use shale_proto::metapb;
use shale_storage_node::codec::encode_bytes;
use shale_storage_node::engine::{CfName, Modify, RocksEngine, Snapshot};
use shale_storage_node::raftstore::keys;
use shale_storage_node::raftstore::types::{decode, Entry, LogId, RegionCommand};

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// The storage node's data directory (the one given as `--data-dir`).
    #[arg(long)]
    data_dir: PathBuf,
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand, Debug)]
enum What {
    /// Every Region stored here: range, epoch, peers, applied log id, log
    /// indexes kept; and the Regions removed from here (tombstones).
    Regions,
    /// The Raft log a Region keeps here, one line per entry.
    Log { region_id: u64 },
    /// Where a raw key is stored and which Regions here claim it.
    RawKey {
        key: String,
        /// The key's API V2 keyspace (omit for API V1).
        #[arg(long)]
        keyspace_id: Option<u32>,
    },
}

fn show(key: &[u8]) -> String {
    key.escape_ascii().to_string()
}

pub fn run(args: Args) -> Result<()> {
    let db = args.data_dir.join("db");
    // Opening would create an empty database at a mistyped path.
    if !db.join("CURRENT").exists() {
        anyhow::bail!(
            "{} holds no storage node data (no RocksDB database in {})",
            args.data_dir.display(),
            db.display()
        );
    }
    let engine = RocksEngine::open(&db, false)
        .with_context(|| format!("opening {} (is the store still running?)", db.display()))?;
    let regions: Vec<metapb::Region> = engine
        .scan_meta(shale_storage_node::region::REGION_META_PREFIX)?
        .into_iter()
        .map(|(_, v)| metapb::Region::decode(v.as_slice()))
        .collect::<Result<_, _>>()?;
    match args.what {
        What::Regions => {
            for r in &regions {
                let applied: Option<LogId> = engine
                    .get_meta(&keys::applied_key(r.id))?
                    .map(|v| decode(&v))
                    .transpose()?;
                let (first, last) = engine.meta_range_bounds(&keys::log_range(r.id))?;
                let epoch = r.region_epoch.unwrap_or_default();
                println!(
                    "region {} [{}, {}) epoch {}/{} peers {:?} applied {:?} log {:?}..{:?}",
                    r.id,
                    show(&r.start_key),
                    show(&r.end_key),
                    epoch.conf_ver,
                    epoch.version,
                    r.peers
                        .iter()
                        .map(|p| (p.id, p.store_id))
                        .collect::<Vec<_>>(),
                    applied.map(|l| l.index),
                    first.and_then(|k| keys::log_index(r.id, &k)),
                    last.and_then(|k| keys::log_index(r.id, &k)),
                );
            }
            for (k, v) in engine.scan_meta(keys::TOMBSTONE_PREFIX)? {
                println!("removed from here: {} (peer {:?})", show(&k), v);
            }
        }
        What::Log { region_id } => {
            let (start, end) = keys::log_range(region_id);
            for (k, v) in engine.scan_meta(&start)? {
                if k.as_slice() >= end.as_slice() {
                    break;
                }
                let entry: Entry = decode(&v)?;
                let what = match &entry.payload {
                    EntryPayload::Blank => "blank".to_string(),
                    EntryPayload::Membership(m) => format!("membership {m}"),
                    EntryPayload::Normal(RegionCommand::Write { epoch, modifies }) => {
                        describe_write(epoch.version, None, modifies)
                    }
                    EntryPayload::Normal(RegionCommand::WriteInTerm {
                        epoch,
                        term,
                        modifies,
                    }) => describe_write(epoch.version, Some(*term), modifies),
                    EntryPayload::Normal(RegionCommand::Split {
                        epoch,
                        keys,
                        targets,
                    }) => format!(
                        "split v{} at {:?} into {:?}",
                        epoch.version,
                        keys.iter().map(|k| show(k)).collect::<Vec<_>>(),
                        targets.iter().map(|t| t.new_region_id).collect::<Vec<_>>()
                    ),
                };
                println!("{} {what}", entry.log_id);
            }
        }
        What::RawKey { key, keyspace_id } => {
            let stored = match keyspace_id {
                Some(id) => {
                    let id = id.to_be_bytes();
                    let mut k = vec![b'r', id[1], id[2], id[3]];
                    k.extend_from_slice(key.as_bytes());
                    encode_bytes(&k)
                }
                None => key.as_bytes().to_vec(),
            };
            let value = engine.snapshot().get_cf(CfName::Default, &stored)?;
            println!(
                "stored key {}: {}",
                show(&stored),
                if value.is_some() { "present" } else { "absent" }
            );
            for r in regions
                .iter()
                .filter(|r| shale_storage_node::region::contains(r, &stored))
            {
                println!(
                    "claimed by region {} [{}, {})",
                    r.id,
                    show(&r.start_key),
                    show(&r.end_key)
                );
            }
        }
    }
    Ok(())
}

/// One write entry of a Raft log, for people: its version, the term it is
/// bound to, and the keys it changes.
fn describe_write(version: u64, term: Option<u64>, modifies: &[Modify]) -> String {
    let keys: Vec<String> = modifies
        .iter()
        .map(|m| match m {
            Modify::Put(cf, k, _) => format!("put {cf:?} {}", show(k)),
            Modify::Delete(cf, k) => format!("delete {cf:?} {}", show(k)),
            Modify::DeleteRange(cf, s, e) => {
                format!("delete-range {cf:?} {}..{}", show(s), show(e))
            }
        })
        .collect();
    let term = term
        .map(|t| format!(" (decided in term {t})"))
        .unwrap_or_default();
    format!("write v{version}{term} {}", keys.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_without_store_data_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-store-here");
        let err = run(Args {
            data_dir: missing.clone(),
            what: What::Regions,
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("holds no storage node data"),
            "{err}"
        );
        assert!(!missing.exists(), "the check created {}", missing.display());
    }
}
