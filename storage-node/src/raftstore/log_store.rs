//! One Region's Raft log and vote in the store's RocksDB (`raft` column
//! family). Appends and votes go through the engine's group-commit writer
//! with `sync`, so one fsync serves many Regions' appends.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::OptionalSend;
use rocksdb::{Direction, IteratorMode};

use super::keys;
use super::types::{decode, encode, io_err, Entry, LogId, RegionTypes, Vote};
use crate::engine::{EngineBatch, MetaWrite, RocksEngine};

const META_CF: &str = "raft";

#[derive(Clone)]
pub struct RegionLogStore {
    region_id: u64,
    engine: RocksEngine,
}

impl RegionLogStore {
    pub fn new(region_id: u64, engine: RocksEngine) -> Self {
        RegionLogStore { region_id, engine }
    }

    fn get<T: for<'de> serde::Deserialize<'de>>(&self, key: &[u8]) -> io::Result<Option<T>> {
        let db = self.engine.db();
        let cf = db
            .cf_handle(META_CF)
            .ok_or_else(|| io_err("raft cf missing"))?;
        db.get_cf(cf, key)
            .map_err(io_err)?
            .map(|v| decode(&v))
            .transpose()
    }

    async fn write(&self, meta: Vec<MetaWrite>, sync: bool) -> io::Result<()> {
        self.engine
            .write_batch(EngineBatch {
                data: Vec::new(),
                meta,
                sync,
            })
            .await
            .map_err(io_err)
    }

    fn last_entry(&self) -> io::Result<Option<Entry>> {
        let db = self.engine.db();
        let cf = db
            .cf_handle(META_CF)
            .ok_or_else(|| io_err("raft cf missing"))?;
        let (start, end) = keys::log_range(self.region_id);
        // A reverse iterator starts at the last key <= `end`, and `end` (the
        // first key after the log) may exist: skip it.
        for item in db.iterator_cf(cf, IteratorMode::From(&end, Direction::Reverse)) {
            let (key, value) = item.map_err(io_err)?;
            if key.as_ref() >= end.as_slice() {
                continue;
            }
            if key.as_ref() < start.as_slice() {
                return Ok(None);
            }
            return decode(&value).map(Some);
        }
        Ok(None)
    }
}

impl RaftLogReader<RegionTypes> for RegionLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let db = self.engine.db();
        let cf = db
            .cf_handle(META_CF)
            .ok_or_else(|| io_err("raft cf missing"))?;
        let from = keys::log_key(self.region_id, start);
        let mut entries = Vec::new();
        for item in db.iterator_cf(cf, IteratorMode::From(&from, Direction::Forward)) {
            let (key, value) = item.map_err(io_err)?;
            let Some(index) = keys::log_index(self.region_id, &key) else {
                break;
            };
            if !range.contains(&index) {
                break;
            }
            let entry: Entry = decode(&value)?;
            if entry.index() != index {
                return Err(io_err(format!(
                    "region {} log entry at {index} claims index {}",
                    self.region_id,
                    entry.index()
                )));
            }
            entries.push(entry);
        }
        Ok(entries)
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        self.get(&keys::vote_key(self.region_id))
    }
}

impl RaftLogStorage<RegionTypes> for RegionLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> io::Result<LogState<RegionTypes>> {
        let last_purged: Option<LogId> = self.get(&keys::last_purged_key(self.region_id))?;
        let last = self.last_entry()?.map(|e| e.log_id());
        Ok(LogState {
            last_log_id: last.or(last_purged),
            last_purged_log_id: last_purged,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        let put = MetaWrite::Put(keys::vote_key(self.region_id), encode(vote)?);
        self.write(vec![put], true).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        // Not synced: after a crash, applying resumes from the applied id.
        let put = MetaWrite::Put(keys::committed_key(self.region_id), encode(&committed)?);
        self.write(vec![put], false).await
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        Ok(self
            .get::<Option<LogId>>(&keys::committed_key(self.region_id))?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<RegionTypes>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut puts = Vec::new();
        for entry in entries {
            puts.push(MetaWrite::Put(
                keys::log_key(self.region_id, entry.index()),
                encode(&entry)?,
            ));
        }
        let result = self.write(puts, true).await;
        match &result {
            Ok(()) => callback.io_completed(Ok(())),
            Err(e) => callback.io_completed(Err(io_err(e))),
        }
        result
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        let from = last_log_id.map_or(0, |id| id.index() + 1);
        let (_, end) = keys::log_range(self.region_id);
        let delete = MetaWrite::DeleteRange(keys::log_key(self.region_id, from), end);
        self.write(vec![delete], true).await
    }

    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        // The marker goes in the same batch: entries at or below it are
        // ignored even if a crash loses the deletion.
        let (start, _) = keys::log_range(self.region_id);
        let writes = vec![
            MetaWrite::Put(keys::last_purged_key(self.region_id), encode(&log_id)?),
            MetaWrite::DeleteRange(start, keys::log_key(self.region_id, log_id.index() + 1)),
        ];
        self.write(writes, false).await
    }
}
