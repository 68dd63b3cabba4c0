//! openraft's state machine: the replicated metadata records in
//! [`CF_META`], with the applied log id and membership written in the same
//! synced batch as the data they describe.

use std::io;
use std::path::PathBuf;

use futures::{Stream, TryStreamExt};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use rocksdb::{IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};

use super::db::{io_err, RaftDb, CF_APPLY, CF_META};
use super::types::{decode, encode, LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};
use crate::meta::{MetaOp, Records};

const APPLIED: &[u8] = b"applied";
const MEMBERSHIP: &[u8] = b"membership";

/// The last snapshot built or installed, as one file next to the database.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct MetaStateMachine {
    db: RaftDb,
    snapshot_path: PathBuf,
}

impl MetaStateMachine {
    pub fn new(db: RaftDb, snapshot_path: PathBuf) -> Self {
        MetaStateMachine { db, snapshot_path }
    }

    fn applied_state_sync(&self) -> io::Result<(Option<LogId>, StoredMembership)> {
        let applied = self
            .db
            .get(CF_APPLY, APPLIED)?
            .map(|v| decode(&v))
            .transpose()?;
        let membership = self
            .db
            .get(CF_APPLY, MEMBERSHIP)?
            .map(|v| decode(&v))
            .transpose()?
            .unwrap_or_default();
        Ok((applied, membership))
    }

    async fn save_snapshot_file(&self, file: &SnapshotFile) -> io::Result<()> {
        let bytes = encode(file)?;
        let path = self.snapshot_path.clone();
        tokio::task::spawn_blocking(move || write_file_durably(&path, &bytes))
            .await
            .map_err(io_err)?
    }
}

fn write_file_durably(path: &std::path::Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Every metadata record plus the apply state, from one RocksDB snapshot.
fn capture(db: &RaftDb) -> io::Result<(Option<LogId>, StoredMembership, Records)> {
    let snapshot = db.db().snapshot();
    let read = |key: &[u8]| -> io::Result<Option<Vec<u8>>> {
        snapshot.get_cf(db.cf(CF_APPLY)?, key).map_err(io_err)
    };
    let applied = read(APPLIED)?.map(|v| decode(&v)).transpose()?;
    let membership = read(MEMBERSHIP)?
        .map(|v| decode(&v))
        .transpose()?
        .unwrap_or_default();
    let mut records = Vec::new();
    for item in snapshot.iterator_cf(db.cf(CF_META)?, IteratorMode::Start) {
        let (key, value) = item.map_err(io_err)?;
        records.push((key.into_vec(), value.into_vec()));
    }
    Ok((applied, membership, records))
}

impl RaftSnapshotBuilder<TypeConfig> for MetaStateMachine {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> io::Result<Snapshot> {
        let db = self.db.clone();
        let (applied, membership, records) = db.blocking(capture).await?;
        let meta = SnapshotMeta {
            last_log_id: applied,
            last_membership: membership,
        };
        let data = encode(&records)?;
        let file = SnapshotFile {
            meta: meta.clone(),
            data,
        };
        self.save_snapshot_file(&file).await?;
        Ok(Snapshot {
            meta,
            snapshot: file.data,
        })
    }
}

impl RaftStateMachine<TypeConfig> for MetaStateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        self.applied_state_sync()
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> io::Result<()>
    where
        Strm: Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + OptionalSend,
    {
        let mut batch = WriteBatch::default();
        let mut responders = Vec::new();
        let meta_cf = self.db.cf(CF_META)?;
        let apply_cf = self.db.cf(CF_APPLY)?;
        let mut last = None;
        while let Some((entry, responder)) = entries.try_next().await? {
            let log_id = entry.log_id();
            match &entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(command) => {
                    for op in &command.ops {
                        match op {
                            MetaOp::Put { key, value } => batch.put_cf(meta_cf, key, value),
                            MetaOp::Delete { key } => batch.delete_cf(meta_cf, key),
                        }
                    }
                }
                EntryPayload::Membership(membership) => {
                    let stored = StoredMembership::new(Some(log_id), membership.clone());
                    batch.put_cf(apply_cf, MEMBERSHIP, encode(&stored)?);
                }
            }
            last = Some(log_id);
            if let Some(responder) = responder {
                responders.push(responder);
            }
        }
        if let Some(last) = last {
            batch.put_cf(apply_cf, APPLIED, encode(&last)?);
        }
        self.db.blocking(move |db| db.write_synced(batch)).await?;
        for responder in responders {
            responder.send(());
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Vec<u8>) -> io::Result<()> {
        let records: Records = decode(&snapshot)?;
        let applied = encode(&meta.last_log_id)?;
        let membership = encode(&meta.last_membership)?;
        self.db
            .blocking(move |db| {
                let meta_cf = db.cf(CF_META)?;
                let apply_cf = db.cf(CF_APPLY)?;
                let mut batch = WriteBatch::default();
                for item in db.db().iterator_cf(meta_cf, IteratorMode::Start) {
                    let (key, _) = item.map_err(io_err)?;
                    batch.delete_cf(meta_cf, key);
                }
                for (key, value) in records {
                    batch.put_cf(meta_cf, key, value);
                }
                match decode::<Option<LogId>>(&applied)? {
                    Some(id) => batch.put_cf(apply_cf, APPLIED, encode(&id)?),
                    None => batch.delete_cf(apply_cf, APPLIED),
                }
                batch.put_cf(apply_cf, MEMBERSHIP, membership);
                db.write_synced(batch)
            })
            .await?;
        let file = SnapshotFile {
            meta: meta.clone(),
            data: snapshot,
        };
        self.save_snapshot_file(&file).await
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<Snapshot>> {
        let path = self.snapshot_path.clone();
        let bytes = match tokio::task::spawn_blocking(move || std::fs::read(path))
            .await
            .map_err(io_err)?
        {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let file: SnapshotFile = decode(&bytes)?;
        Ok(Some(Snapshot {
            meta: file.meta,
            snapshot: file.data,
        }))
    }
}
