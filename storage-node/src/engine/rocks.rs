//! One RocksDB per store: column families `default`, `lock`, `write` for data
//! and `raft` for local metadata (store identity, Region state, later Raft logs).
//!
//! Data keys are stored behind the `z` prefix so that local metadata can never
//! be mistaken for user data, and the write path batches concurrent writers
//! into one fsync (group commit).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use rocksdb::{
    ColumnFamilyDescriptor, DBRawIteratorWithThreadMode, Options, ReadOptions,
    SnapshotWithThreadMode, WriteBatch, WriteOptions, DB,
};
use tokio::sync::oneshot;

use super::{CfName, EngineError, EngineIterator, EngineResult, Modify, Snapshot};

const DATA_PREFIX: u8 = b'z';
/// First byte past every data key: the exclusive upper bound of the data space.
const DATA_END: u8 = DATA_PREFIX + 1;
const META_CF: &str = "raft";
/// Most batches merged into one synced RocksDB write.
const MAX_GROUP: usize = 256;

fn data_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(DATA_PREFIX);
    k.extend_from_slice(key);
    k
}

fn data_end_key(end: &[u8]) -> Vec<u8> {
    if end.is_empty() {
        vec![DATA_END]
    } else {
        data_key(end)
    }
}

/// Counters for the group-commit factor (acknowledged writes per fsync).
#[derive(Default, Debug)]
pub struct WriteStats {
    pub synced_writes: AtomicU64,
    pub acknowledged_batches: AtomicU64,
}

/// A change to local metadata (the `raft` column family: Raft logs and
/// state, Region state), written in the same batch as data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaWrite {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    /// Deletes `[start, end)`.
    DeleteRange(Vec<u8>, Vec<u8>),
}

/// One atomic write: data changes and metadata changes together.
#[derive(Clone, Debug, Default)]
pub struct EngineBatch {
    pub data: Vec<Modify>,
    pub meta: Vec<MetaWrite>,
    /// Must be durable before the write is acknowledged (Raft log appends,
    /// votes). Applies of committed entries need not be: their log is.
    pub sync: bool,
}

struct WriteRequest {
    batch: EngineBatch,
    done: oneshot::Sender<EngineResult<()>>,
}

/// A store's RocksDB instance, cheap to clone.
#[derive(Clone)]
pub struct RocksEngine {
    db: Arc<DB>,
    writer: mpsc::Sender<WriteRequest>,
    stats: Arc<WriteStats>,
}

impl RocksEngine {
    /// Opens (or creates) the store's RocksDB at `path`. With `sync` every
    /// acknowledged write is fsynced (the production setting).
    pub fn open(path: &Path, sync: bool) -> EngineResult<Self> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        let cfs = CfName::ALL
            .iter()
            .map(|cf| cf.as_str())
            .chain([META_CF])
            .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db = Arc::new(DB::open_cf_descriptors(&opts, path, cfs)?);
        let stats = Arc::new(WriteStats::default());
        let (writer, rx) = mpsc::channel();
        // The writer holds the DB weakly: the last user to let go closes it,
        // on its own thread, so a closing DB never races a process exit.
        let (db2, stats2) = (Arc::downgrade(&db), stats.clone());
        std::thread::Builder::new()
            .name("engine-writer".into())
            .spawn(move || write_loop(db2, rx, sync, stats2))
            .map_err(|e| EngineError::Task(e.to_string()))?;
        Ok(RocksEngine { db, writer, stats })
    }

    pub fn stats(&self) -> &WriteStats {
        &self.stats
    }

    /// Takes a consistent snapshot of all column families.
    pub fn snapshot(&self) -> RocksSnapshot {
        RocksSnapshot::new(self.db.clone())
    }

    /// Applies `batch` atomically; resolves once it is durable (if syncing).
    pub async fn write(&self, batch: Vec<Modify>) -> EngineResult<()> {
        self.write_batch(EngineBatch {
            data: batch,
            meta: Vec::new(),
            sync: true,
        })
        .await
    }

    /// Applies data and metadata changes atomically, merged with concurrent
    /// writers into one RocksDB write; one fsync covers every batch of the
    /// group that asked for it (group commit across Regions).
    pub async fn write_batch(&self, batch: EngineBatch) -> EngineResult<()> {
        let (done, rx) = oneshot::channel();
        self.writer
            .send(WriteRequest { batch, done })
            .map_err(|_| EngineError::Closed)?;
        rx.await.map_err(|_| EngineError::Closed)?
    }

    /// Reads a data key from the latest state (not a snapshot).
    pub fn db(&self) -> &Arc<DB> {
        &self.db
    }

    /// Reads local metadata (store identity, Region state).
    pub fn get_meta(&self, key: &[u8]) -> EngineResult<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.meta_cf()?, key)?)
    }

    /// Writes local metadata durably, regardless of the data sync setting.
    pub fn put_meta(&self, key: &[u8], value: &[u8]) -> EngineResult<()> {
        self.put_meta_batch(&[(key.to_vec(), value.to_vec())])
    }

    /// Writes several metadata entries atomically and durably.
    pub fn put_meta_batch(&self, entries: &[(Vec<u8>, Vec<u8>)]) -> EngineResult<()> {
        let cf = self.meta_cf()?;
        let mut wb = WriteBatch::default();
        for (k, v) in entries {
            wb.put_cf(cf, k, v);
        }
        self.write_meta(wb)
    }

    pub fn delete_meta(&self, key: &[u8]) -> EngineResult<()> {
        let mut wb = WriteBatch::default();
        wb.delete_cf(self.meta_cf()?, key);
        self.write_meta(wb)
    }

    fn meta_cf(&self) -> EngineResult<&rocksdb::ColumnFamily> {
        self.db
            .cf_handle(META_CF)
            .ok_or(EngineError::MissingCf(META_CF))
    }

    /// Metadata writes are always fsynced: they describe what the data means.
    fn write_meta(&self, wb: WriteBatch) -> EngineResult<()> {
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        Ok(self.db.write_opt(wb, &wo)?)
    }

    /// All local metadata entries whose key starts with `prefix`.
    pub fn scan_meta(&self, prefix: &[u8]) -> EngineResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let cf = self.meta_cf()?;
        let mut out = Vec::new();
        let mut it = self.db.raw_iterator_cf(cf);
        it.seek(prefix);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    /// The first and last metadata keys in `[start, end)` (debugging).
    pub fn meta_range_bounds(&self, (start, end): &(Vec<u8>, Vec<u8>)) -> EngineResult<KeyBounds> {
        let cf = self.meta_cf()?;
        let mut it = self.db.raw_iterator_cf(cf);
        it.seek(start);
        let first = it.key().filter(|k| *k < end.as_slice()).map(<[u8]>::to_vec);
        it.seek_for_prev(end);
        let mut last = it.key().map(<[u8]>::to_vec);
        if last.as_deref() == Some(end.as_slice()) {
            it.prev();
            last = it.key().map(<[u8]>::to_vec);
        }
        let last = last.filter(|k| k.as_slice() >= start.as_slice());
        it.status()?;
        Ok((first, last))
    }

    /// Bytes of data on disk, approximately (for store heartbeats).
    pub fn approximate_size(&self) -> u64 {
        CfName::ALL
            .iter()
            .filter_map(|cf| self.db.cf_handle(cf.as_str()))
            .filter_map(|cf| {
                self.db
                    .property_int_value_cf(cf, "rocksdb.total-sst-files-size")
                    .ok()
                    .flatten()
            })
            .sum()
    }
}

/// The first and last key found in a range, if any.
pub type KeyBounds = (Option<Vec<u8>>, Option<Vec<u8>>);

fn write_loop(
    db: std::sync::Weak<DB>,
    rx: mpsc::Receiver<WriteRequest>,
    sync: bool,
    stats: Arc<WriteStats>,
) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(req) => group.push(req),
                Err(_) => break,
            }
        }
        // RocksDB's WAL is replayed as a prefix after a crash, so one synced
        // write makes everything written before it durable too.
        let synced = sync && group.iter().any(|r| r.batch.sync);
        let mut wo = WriteOptions::default();
        wo.set_sync(synced);
        let result = match db.upgrade() {
            Some(db) => build_batch(&db, &group).and_then(|wb| Ok(db.write_opt(wb, &wo)?)),
            None => Err(EngineError::Closed),
        };
        if synced {
            stats.synced_writes.fetch_add(1, Ordering::Relaxed);
            stats.acknowledged_batches.fetch_add(
                group.iter().filter(|r| r.batch.sync).count() as u64,
                Ordering::Relaxed,
            );
        }
        for req in group {
            let reply = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(EngineError::Task(e.to_string())),
            };
            // The caller may have given up waiting; the write stands regardless.
            let _ = req.done.send(reply);
        }
    }
}

fn build_batch(db: &DB, group: &[WriteRequest]) -> EngineResult<WriteBatch> {
    let mut wb = WriteBatch::default();
    let meta_cf = db
        .cf_handle(META_CF)
        .ok_or(EngineError::MissingCf(META_CF))?;
    for req in group {
        for m in &req.batch.meta {
            match m {
                MetaWrite::Put(k, v) => wb.put_cf(meta_cf, k, v),
                MetaWrite::Delete(k) => wb.delete_cf(meta_cf, k),
                MetaWrite::DeleteRange(s, e) => wb.delete_range_cf(meta_cf, s, e),
            }
        }
        for m in &req.batch.data {
            match m {
                Modify::Put(cf, k, v) => wb.put_cf(cf_handle(db, *cf)?, data_key(k), v),
                Modify::Delete(cf, k) => wb.delete_cf(cf_handle(db, *cf)?, data_key(k)),
                Modify::DeleteRange(cf, s, e) => {
                    wb.delete_range_cf(cf_handle(db, *cf)?, data_key(s), data_end_key(e))
                }
            }
        }
    }
    Ok(wb)
}

fn cf_handle(db: &DB, cf: CfName) -> EngineResult<&rocksdb::ColumnFamily> {
    db.cf_handle(cf.as_str())
        .ok_or(EngineError::MissingCf(cf.as_str()))
}

/// A point-in-time view of the store, owning what it borrows.
pub struct RocksSnapshot {
    // Declared first so it is dropped before the DB it points into.
    snap: SnapshotWithThreadMode<'static, DB>,
    db: Arc<DB>,
}

impl RocksSnapshot {
    fn new(db: Arc<DB>) -> Self {
        let snap = db.snapshot();
        // SAFETY: the snapshot borrows the DB behind `db`, an `Arc` we keep in
        // the same struct; field order drops the snapshot first, so the borrow
        // never outlives the DB.
        let snap = unsafe {
            std::mem::transmute::<SnapshotWithThreadMode<'_, DB>, SnapshotWithThreadMode<'static, DB>>(
                snap,
            )
        };
        RocksSnapshot { snap, db }
    }
}

impl RocksSnapshot {
    /// Reads local metadata (the `raft` column family) as of this snapshot.
    pub fn get_meta(&self, key: &[u8]) -> EngineResult<Option<Vec<u8>>> {
        let cf = self
            .db
            .cf_handle(META_CF)
            .ok_or(EngineError::MissingCf(META_CF))?;
        Ok(self.snap.get_cf(cf, key)?)
    }
}

impl Snapshot for RocksSnapshot {
    type Iter<'a> = RocksIterator<'a>;

    fn get_cf(&self, cf: CfName, key: &[u8]) -> EngineResult<Option<Vec<u8>>> {
        Ok(self.snap.get_cf(cf_handle(&self.db, cf)?, data_key(key))?)
    }

    fn iter_cf(
        &self,
        cf: CfName,
        lower: Option<&[u8]>,
        upper: Option<&[u8]>,
    ) -> EngineResult<RocksIterator<'_>> {
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(lower.map_or_else(|| vec![DATA_PREFIX], data_key));
        ro.set_iterate_upper_bound(upper.map_or_else(|| vec![DATA_END], data_end_key));
        let inner = self.snap.raw_iterator_cf_opt(cf_handle(&self.db, cf)?, ro);
        Ok(RocksIterator { inner })
    }
}

/// Cursor over one column family; keys come back without the data prefix.
pub struct RocksIterator<'a> {
    inner: DBRawIteratorWithThreadMode<'a, DB>,
}

impl RocksIterator<'_> {
    fn status(&self) -> EngineResult<bool> {
        self.inner.status()?;
        Ok(self.inner.valid())
    }
}

impl EngineIterator for RocksIterator<'_> {
    fn seek(&mut self, key: &[u8]) -> EngineResult<bool> {
        self.inner.seek(data_key(key));
        self.status()
    }

    fn seek_for_prev(&mut self, key: &[u8]) -> EngineResult<bool> {
        self.inner.seek_for_prev(data_key(key));
        self.status()
    }

    fn seek_to_first(&mut self) -> EngineResult<bool> {
        self.inner.seek_to_first();
        self.status()
    }

    fn seek_to_last(&mut self) -> EngineResult<bool> {
        self.inner.seek_to_last();
        self.status()
    }

    fn next(&mut self) -> EngineResult<bool> {
        self.inner.next();
        self.status()
    }

    fn prev(&mut self) -> EngineResult<bool> {
        self.inner.prev();
        self.status()
    }

    fn valid(&self) -> EngineResult<bool> {
        self.status()
    }

    fn key(&self) -> &[u8] {
        self.inner.key().map_or(&[], |k| &k[1..])
    }

    fn value(&self) -> &[u8] {
        self.inner.value().unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, RocksEngine) {
        let dir = tempfile::tempdir().unwrap();
        let engine = RocksEngine::open(dir.path(), true).unwrap();
        (dir, engine)
    }

    #[tokio::test]
    async fn snapshot_is_isolated_from_later_writes() {
        let (_dir, engine) = open();
        engine
            .write(vec![Modify::Put(
                CfName::Default,
                b"a".to_vec(),
                b"1".to_vec(),
            )])
            .await
            .unwrap();
        let snap = engine.snapshot();
        engine
            .write(vec![Modify::Put(
                CfName::Default,
                b"a".to_vec(),
                b"2".to_vec(),
            )])
            .await
            .unwrap();
        assert_eq!(
            snap.get_cf(CfName::Default, b"a").unwrap(),
            Some(b"1".to_vec())
        );
        assert_eq!(
            engine.snapshot().get_cf(CfName::Default, b"a").unwrap(),
            Some(b"2".to_vec())
        );
    }

    #[tokio::test]
    async fn iterators_respect_bounds_and_hide_metadata() {
        let (_dir, engine) = open();
        engine.put_meta(b"\x01ident", b"store").unwrap();
        let puts = [b"a", b"b", b"c", b"d"]
            .iter()
            .map(|k| Modify::Put(CfName::Write, k.to_vec(), k.to_vec()))
            .collect();
        engine.write(puts).await.unwrap();
        let snap = engine.snapshot();
        let mut it = snap.iter_cf(CfName::Write, Some(b"b"), Some(b"d")).unwrap();
        let mut seen = vec![];
        let mut ok = it.seek_to_first().unwrap();
        while ok {
            seen.push(it.key().to_vec());
            ok = it.next().unwrap();
        }
        assert_eq!(seen, vec![b"b".to_vec(), b"c".to_vec()]);
        let mut all = snap.iter_cf(CfName::Write, None, None).unwrap();
        assert!(all.seek_to_last().unwrap());
        assert_eq!(all.key(), b"d");
        assert!(all.seek_for_prev(b"bb").unwrap());
        assert_eq!(all.key(), b"b");
        assert!(
            snap.iter_cf(CfName::Default, None, None)
                .unwrap()
                .seek_to_first()
                .ok()
                == Some(false)
        );
    }

    #[tokio::test]
    async fn delete_range_with_open_end_clears_to_the_end() {
        let (_dir, engine) = open();
        let puts = (0u8..10)
            .map(|i| Modify::Put(CfName::Default, vec![i], vec![i]))
            .collect();
        engine.write(puts).await.unwrap();
        engine
            .write(vec![Modify::DeleteRange(CfName::Default, vec![5], vec![])])
            .await
            .unwrap();
        let snap = engine.snapshot();
        let mut it = snap.iter_cf(CfName::Default, None, None).unwrap();
        assert!(it.seek_to_last().unwrap());
        assert_eq!(it.key(), &[4]);
    }

    #[tokio::test]
    async fn acknowledged_writes_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let engine = RocksEngine::open(dir.path(), true).unwrap();
            engine
                .write(vec![Modify::Put(
                    CfName::Lock,
                    b"k".to_vec(),
                    b"v".to_vec(),
                )])
                .await
                .unwrap();
            engine.put_meta(b"m", b"1").unwrap();
        }
        // The writer thread still holds the DB until its channel closes; retry
        // briefly for the lock to be released.
        let mut reopened = None;
        for _ in 0..50 {
            match RocksEngine::open(dir.path(), true) {
                Ok(e) => {
                    reopened = Some(e);
                    break;
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        }
        let engine = reopened.expect("reopen");
        assert_eq!(
            engine.snapshot().get_cf(CfName::Lock, b"k").unwrap(),
            Some(b"v".to_vec())
        );
        assert_eq!(engine.get_meta(b"m").unwrap(), Some(b"1".to_vec()));
    }

    #[tokio::test]
    async fn concurrent_writes_are_all_durable_and_counted() {
        let (_dir, engine) = open();
        let tasks: Vec<_> = (0..64u32)
            .map(|i| {
                let e = engine.clone();
                tokio::spawn(async move {
                    e.write(vec![Modify::Put(
                        CfName::Default,
                        i.to_be_bytes().to_vec(),
                        vec![1],
                    )])
                    .await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let stats = engine.stats();
        assert_eq!(stats.acknowledged_batches.load(Ordering::Relaxed), 64);
        let synced = stats.synced_writes.load(Ordering::Relaxed);
        assert!((1..=64).contains(&synced), "synced {synced}");
        let snap = engine.snapshot();
        for i in 0..64u32 {
            assert!(snap
                .get_cf(CfName::Default, &i.to_be_bytes())
                .unwrap()
                .is_some());
        }
    }
}
