//! openraft's log storage on [`RaftDb`]: entries, vote and purge marker.
//! Appends and votes are fsynced before openraft is told they are done.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::OptionalSend;
use rocksdb::{Direction, IteratorMode, WriteBatch};

use super::db::{io_err, RaftDb, CF_LOG, CF_RAFT};
use super::types::{decode, encode, Entry, LogId, TypeConfig, Vote};

const VOTE: &[u8] = b"vote";
const LAST_PURGED: &[u8] = b"last_purged";
const COMMITTED: &[u8] = b"committed";

#[derive(Debug, Clone)]
pub struct LogStore {
    db: RaftDb,
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl LogStore {
    pub fn new(db: RaftDb) -> Self {
        LogStore { db }
    }

    fn read_meta<T: for<'de> serde::Deserialize<'de>>(&self, key: &[u8]) -> io::Result<Option<T>> {
        self.db.get(CF_RAFT, key)?.map(|v| decode(&v)).transpose()
    }

    async fn put_meta_synced<T: serde::Serialize>(
        &self,
        key: &'static [u8],
        value: &T,
    ) -> io::Result<()> {
        let bytes = encode(value)?;
        self.db
            .blocking(move |db| {
                let mut batch = WriteBatch::default();
                batch.put_cf(db.cf(CF_RAFT)?, key, bytes);
                db.write_synced(batch)
            })
            .await
    }

    fn last_entry(&self) -> io::Result<Option<Entry>> {
        let cf = self.db.cf(CF_LOG)?;
        match self.db.db().iterator_cf(cf, IteratorMode::End).next() {
            None => Ok(None),
            Some(item) => {
                let (_, value) = item.map_err(io_err)?;
                decode(&value).map(Some)
            }
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let cf = self.db.cf(CF_LOG)?;
        let mut entries = Vec::new();
        let from = index_key(start);
        for item in self
            .db
            .db()
            .iterator_cf(cf, IteratorMode::From(&from, Direction::Forward))
        {
            let (key, value) = item.map_err(io_err)?;
            let index = u64::from_be_bytes(
                key.as_ref()
                    .try_into()
                    .map_err(|_| io_err("malformed raft log key"))?,
            );
            if !range.contains(&index) {
                break;
            }
            let entry: Entry = decode(&value)?;
            if entry.index() != index {
                return Err(io_err(format!(
                    "raft log entry at {index} claims index {}",
                    entry.index()
                )));
            }
            entries.push(entry);
        }
        Ok(entries)
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        self.read_meta(VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        let last_purged: Option<LogId> = self.read_meta(LAST_PURGED)?;
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
        self.put_meta_synced(VOTE, vote).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        // Not synced: losing it only means re-applying from the last applied id.
        let bytes = encode(&committed)?;
        let cf = self.db.cf(CF_RAFT)?;
        self.db.db().put_cf(cf, COMMITTED, bytes).map_err(io_err)
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        Ok(self.read_meta::<Option<LogId>>(COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut records = Vec::new();
        for entry in entries {
            records.push((index_key(entry.index()), encode(&entry)?));
        }
        let result = self
            .db
            .blocking(move |db| {
                let cf = db.cf(CF_LOG)?;
                let mut batch = WriteBatch::default();
                for (key, value) in records {
                    batch.put_cf(cf, key, value);
                }
                db.write_synced(batch)
            })
            .await;
        match result {
            Ok(()) => {
                callback.io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.io_completed(Err(io_err(&e)));
                Err(e)
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        let from = last_log_id.map_or(0, |id| id.index() + 1);
        self.db
            .blocking(move |db| {
                let mut batch = WriteBatch::default();
                batch.delete_range_cf(db.cf(CF_LOG)?, index_key(from), index_key(u64::MAX));
                batch.delete_cf(db.cf(CF_LOG)?, index_key(u64::MAX));
                db.write_synced(batch)
            })
            .await
    }

    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        // The marker goes first: entries at or below it are ignored even if
        // the deletion below is lost in a crash.
        let marker = encode(&log_id)?;
        let upto = log_id.index() + 1;
        self.db
            .blocking(move |db| {
                let mut batch = WriteBatch::default();
                batch.put_cf(db.cf(CF_RAFT)?, LAST_PURGED, marker);
                batch.delete_range_cf(db.cf(CF_LOG)?, index_key(0), index_key(upto));
                db.write_synced(batch)
            })
            .await
    }
}
