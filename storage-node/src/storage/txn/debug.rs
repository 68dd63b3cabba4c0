//! MvccGetByKey: every version of one key (its lock, commit records and
//! long values), as TiKV's debugging API reports them. Read-only; consistency
//! checkers use it to explain an anomaly.

use shale_proto::kvrpcpb::{self, Op};

use crate::engine::{CfName, Engine, EngineIterator, Snapshot};
use crate::storage::errors::StorageError;
use crate::storage::mvcc::{decode_versioned_key, prefix_next, MvccReader, Write, WriteType};
use crate::storage::{api_version, check_key, engine_context, Storage};

use crate::codec::encode_bytes;

fn write_op(t: WriteType) -> Op {
    match t {
        WriteType::Put => Op::Put,
        WriteType::Delete => Op::Del,
        WriteType::Lock => Op::Lock,
        WriteType::Rollback => Op::Rollback,
    }
}

impl<E: Engine> Storage<E> {
    pub async fn mvcc_get_by_key(
        &self,
        req: kvrpcpb::MvccGetByKeyRequest,
    ) -> Result<kvrpcpb::MvccGetByKeyResponse, StorageError> {
        let ctx = req.context.unwrap_or_default();
        let api = api_version(&ctx)?;
        check_key(api, &req.key, false, false)?;
        let snap = self
            .inner
            .engine
            .async_snapshot(&engine_context(Some(&ctx)))
            .await?;
        let info = mvcc_info(&snap, &req.key)?;
        Ok(kvrpcpb::MvccGetByKeyResponse {
            info: Some(info),
            ..Default::default()
        })
    }
}

fn mvcc_info<S: Snapshot>(snap: &S, key: &[u8]) -> Result<kvrpcpb::MvccInfo, StorageError> {
    let reader = MvccReader::new(snap);
    let lock = reader.load_lock(key)?.map(|l| kvrpcpb::MvccLock {
        r#type: l.lock_type.to_op() as i32,
        start_ts: l.ts,
        primary: l.primary.clone(),
        short_value: l.short_value.clone().unwrap_or_default(),
        ttl: l.ttl,
        for_update_ts: l.for_update_ts,
        txn_size: l.txn_size,
        use_async_commit: l.use_async_commit,
        secondaries: l.secondaries.clone(),
        rollback_ts: l.rollback_ts.clone(),
        ..Default::default()
    });
    let encoded = encode_bytes(key);
    let upper = prefix_next(&encoded);
    let mut writes = Vec::new();
    let mut it = snap.iter_cf(CfName::Write, Some(&encoded), Some(&upper))?;
    let mut valid = it.seek_to_first()?;
    while valid {
        let (user_key, commit_ts) = decode_versioned_key(it.key())?;
        if user_key == key {
            let w = Write::decode(it.value())?;
            writes.push(kvrpcpb::MvccWrite {
                r#type: write_op(w.write_type) as i32,
                start_ts: w.start_ts,
                commit_ts,
                short_value: w.short_value.unwrap_or_default(),
                has_overlapped_rollback: w.has_overlapped_rollback,
                ..Default::default()
            });
        }
        valid = it.next()?;
    }
    let mut values = Vec::new();
    let mut it = snap.iter_cf(CfName::Default, Some(&encoded), Some(&upper))?;
    let mut valid = it.seek_to_first()?;
    while valid {
        // Under API V1 raw values share the default CF; skip what is not a
        // versioned value of this key.
        if let Ok((user_key, start_ts)) = decode_versioned_key(it.key()) {
            if user_key == key {
                values.push(kvrpcpb::MvccValue {
                    start_ts,
                    value: it.value().to_vec(),
                });
            }
        }
        valid = it.next()?;
    }
    Ok(kvrpcpb::MvccInfo {
        lock,
        writes,
        values,
    })
}
