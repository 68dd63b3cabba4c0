//! KvCommit, KvBatchRollback and KvCleanup.

use shale_proto::kvrpcpb;

use crate::engine::Engine;
use crate::storage::errors::{invalid, KeyErr, StorageError};
use crate::storage::{api_version, check_key, engine_context, Storage};

use super::actions::{cleanup_key, commit_key};
use super::sorted_unique;

impl<E: Engine> Storage<E> {
    /// Commits the transaction's locks on `keys` at `commit_version`. All or
    /// nothing: the first key error fails the request and nothing is written.
    pub async fn kv_commit(
        &self,
        req: kvrpcpb::CommitRequest,
    ) -> Result<kvrpcpb::CommitResponse, StorageError> {
        let ctx = req.context.unwrap_or_default();
        let api = api_version(&ctx)?;
        for key in &req.keys {
            check_key(api, key, false, false)?;
        }
        let (start_ts, commit_ts) = (req.start_version, req.commit_version);
        let mut resp = kvrpcpb::CommitResponse::default();
        if commit_ts <= start_ts {
            resp.error = Some(
                KeyErr::InvalidTxnTso {
                    start_ts,
                    commit_ts,
                }
                .to_pb(),
            );
            return Ok(resp);
        }
        let keys = sorted_unique(req.keys);
        let out = self
            .run_write(&engine_context(Some(&ctx)), &keys, |reader, txn| {
                for key in &keys {
                    commit_key(reader, txn, key, start_ts, commit_ts)?;
                }
                Ok(())
            })
            .await?;
        match out {
            Ok(()) => resp.commit_version = commit_ts,
            Err(e) => resp.error = Some(e.to_pb()),
        }
        Ok(resp)
    }

    /// Rolls back the transaction on `keys`, leaving rollback records so a
    /// late prewrite cannot succeed. Fails (abort) if it is committed.
    pub async fn kv_batch_rollback(
        &self,
        req: kvrpcpb::BatchRollbackRequest,
    ) -> Result<kvrpcpb::BatchRollbackResponse, StorageError> {
        let ctx = req.context.unwrap_or_default();
        let api = api_version(&ctx)?;
        for key in &req.keys {
            check_key(api, key, false, false)?;
        }
        let start_ts = req.start_version;
        let keys = sorted_unique(req.keys);
        let out = self
            .run_write(&engine_context(Some(&ctx)), &keys, |reader, txn| {
                for key in &keys {
                    cleanup_key(reader, txn, key, start_ts, 0)?;
                }
                Ok(())
            })
            .await?;
        Ok(kvrpcpb::BatchRollbackResponse {
            region_error: None,
            error: out.err().map(|e| e.to_pb()),
        })
    }

    /// Rolls back one key of the transaction if its lock has expired at
    /// `current_ts` (0 = unconditionally). A committed transaction is
    /// reported through `commit_version`, a live lock as Locked.
    pub async fn kv_cleanup(
        &self,
        req: kvrpcpb::CleanupRequest,
    ) -> Result<kvrpcpb::CleanupResponse, StorageError> {
        let ctx = req.context.unwrap_or_default();
        let api = api_version(&ctx)?;
        check_key(api, &req.key, false, false)?;
        if req.start_version == 0 {
            return Err(invalid("start_version must not be 0"));
        }
        let (start_ts, current_ts) = (req.start_version, req.current_ts);
        let key = req.key;
        let out = self
            .run_write(
                &engine_context(Some(&ctx)),
                std::slice::from_ref(&key),
                |reader, txn| cleanup_key(reader, txn, &key, start_ts, current_ts),
            )
            .await?;
        let mut resp = kvrpcpb::CleanupResponse::default();
        match out {
            Ok(()) => {}
            Err(KeyErr::Committed { commit_ts, .. }) => resp.commit_version = commit_ts,
            Err(e) => resp.error = Some(e.to_pb()),
        }
        Ok(resp)
    }
}
