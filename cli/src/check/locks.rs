//! Lock resolution for the check's janitor, decided as TiKV's Go client
//! decides it for a GC, not with tikv-client 0.4. Its `cleanup_locks`
//! takes an async-commit transaction's commit_ts from its secondaries'
//! locks alone: a single-key transaction (no secondaries) gets commit_ts 0
//! and is rolled back although it committed, and a larger one can be
//! committed below its primary's min_commit_ts. (`shale check` found it:
//! an acknowledged single-key async-commit write whose background commit
//! had failed was rolled back by the janitor ten seconds later.) Its
//! `resolve_locks` fails for good on a lock whose primary was never
//! written (the TxnNotFound it gets comes wrapped in a form it does not
//! recognise, so it never retries with `rollback_if_not_exist`).
//!
//! Each transaction is decided by its primary (CheckTxnStatus, rolling back
//! a lock that is not async-commit, expired or not, as a GC does). An
//! async-commit primary still locked is decided by its secondaries
//! (CheckSecondaryLocks): one committed gives its commit_ts; one not locked
//! means the transaction cannot have committed (the store leaves a rollback
//! record there, so no late prewrite can land) and it is rolled back; all
//! locked means it committed at the largest min_commit_ts of all its keys,
//! the primary's included.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use shale_proto::kvrpcpb;

use super::mvcc::MvccClient;

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The fate of a transaction, as far as its locks tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Commit(u64),
    Rollback,
    /// Not an async-commit transaction after all (a lock says 2PC): left
    /// to the 2PC resolution.
    NotAsyncCommit,
}

/// Decides an async-commit transaction from its primary lock and the
/// state of each secondary.
pub fn decide(primary: &kvrpcpb::LockInfo, secondaries: &[SecondaryState]) -> Decision {
    if !primary.use_async_commit {
        return Decision::NotAsyncCommit;
    }
    let mut commit_ts = primary.min_commit_ts;
    for s in secondaries {
        match *s {
            SecondaryState::Committed(ts) => return Decision::Commit(ts),
            SecondaryState::Missing => return Decision::Rollback,
            SecondaryState::Locked {
                async_commit: false,
                ..
            } => return Decision::NotAsyncCommit,
            SecondaryState::Locked { min_commit_ts, .. } => {
                commit_ts = commit_ts.max(min_commit_ts)
            }
        }
    }
    Decision::Commit(commit_ts)
}

/// What CheckSecondaryLocks found on one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondaryState {
    Locked {
        min_commit_ts: u64,
        async_commit: bool,
    },
    Committed(u64),
    /// Neither locked nor committed: rolled back (now, if not before).
    Missing,
}

/// A lock found by a scan (keys without the keyspace prefix, as
/// tikv-client's `scan_locks` returns them).
#[derive(Debug, Clone)]
pub struct ScannedLock {
    pub key: Vec<u8>,
    pub primary: Vec<u8>,
    pub start_ts: u64,
    /// A pessimistic lock not yet prewritten.
    pub pessimistic: bool,
}

/// Resolves the transactions of `locks`; returns how many were decided.
pub async fn resolve_locks(mvcc: &MvccClient, locks: &[ScannedLock]) -> Result<usize> {
    let mut by_txn: BTreeMap<u64, Vec<&ScannedLock>> = BTreeMap::new();
    for lock in locks {
        by_txn.entry(lock.start_ts).or_default().push(lock);
    }
    let mut decided = 0;
    for (start_ts, txn_locks) in by_txn {
        let primary_key = txn_locks[0].primary.clone();
        let mut keys: Vec<Vec<u8>> = txn_locks.iter().map(|l| l.key.clone()).collect();
        // Only pessimistic locks seen: a primary that is gone may be left so
        // (TiKV's `resolving_pessimistic_lock`); with a prewritten lock seen,
        // a missing primary gets a rollback record, so no late prewrite of
        // it can commit what its secondaries no longer hold.
        let pessimistic = txn_locks.iter().all(|l| l.pessimistic);
        let commit_ts = match primary_status(mvcc, &primary_key, start_ts, pessimistic).await? {
            PrimaryStatus::Committed(ts) => ts,
            PrimaryStatus::RolledBack => 0,
            PrimaryStatus::Locked(primary) => {
                let secondaries = primary
                    .secondaries
                    .iter()
                    .map(|wire| mvcc.txn_key_of_wire(wire))
                    .collect::<Vec<_>>();
                let mut states = Vec::with_capacity(secondaries.len());
                for key in &secondaries {
                    let state = secondary_state(mvcc, key, start_ts).await?;
                    let settled = !matches!(state, SecondaryState::Locked { .. });
                    states.push(state);
                    if settled {
                        break;
                    }
                }
                let commit_ts = match decide(&primary, &states) {
                    Decision::Commit(ts) => ts,
                    Decision::Rollback => 0,
                    Decision::NotAsyncCommit => continue,
                };
                keys.push(primary_key.clone());
                keys.extend(secondaries);
                commit_ts
            }
        };
        keys.sort();
        keys.dedup();
        for key in &keys {
            resolve_key(mvcc, key, start_ts, commit_ts).await?;
        }
        decided += 1;
    }
    Ok(decided)
}

enum PrimaryStatus {
    Committed(u64),
    RolledBack,
    /// Still locked: the primary's lock (keys on the wire).
    Locked(kvrpcpb::LockInfo),
}

/// The primary's state; a lock that is not async-commit is rolled back,
/// expired or not (`current_ts` at its maximum, as for a GC).
async fn primary_status(
    mvcc: &MvccClient,
    primary: &[u8],
    start_ts: u64,
    pessimistic: bool,
) -> Result<PrimaryStatus> {
    let (context, mut stub, wire) = mvcc.route_txn_key(primary).await?;
    let req = kvrpcpb::CheckTxnStatusRequest {
        context: Some(context),
        primary_key: wire,
        lock_ts: start_ts,
        caller_start_ts: 0,
        current_ts: u64::MAX,
        rollback_if_not_exist: true,
        force_sync_commit: false,
        resolving_pessimistic_lock: pessimistic,
        verify_is_primary: true,
        ..Default::default()
    };
    let resp = tokio::time::timeout(CALL_TIMEOUT, stub.kv_check_txn_status(req))
        .await
        .context("CheckTxnStatus timed out")??
        .into_inner();
    if let Some(e) = resp.region_error {
        bail!("CheckTxnStatus: region error: {}", e.message);
    }
    if let Some(e) = resp.error {
        bail!("CheckTxnStatus: {e:?}");
    }
    if resp.commit_version != 0 {
        return Ok(PrimaryStatus::Committed(resp.commit_version));
    }
    match resp.lock_info {
        Some(lock) => Ok(PrimaryStatus::Locked(lock)),
        None => Ok(PrimaryStatus::RolledBack),
    }
}

async fn secondary_state(mvcc: &MvccClient, key: &[u8], start_ts: u64) -> Result<SecondaryState> {
    let (context, mut stub, wire) = mvcc.route_txn_key(key).await?;
    let req = kvrpcpb::CheckSecondaryLocksRequest {
        context: Some(context),
        keys: vec![wire],
        start_version: start_ts,
    };
    let resp = tokio::time::timeout(CALL_TIMEOUT, stub.kv_check_secondary_locks(req))
        .await
        .context("CheckSecondaryLocks timed out")??
        .into_inner();
    if let Some(e) = resp.region_error {
        bail!("CheckSecondaryLocks: region error: {}", e.message);
    }
    if let Some(e) = resp.error {
        bail!("CheckSecondaryLocks: {e:?}");
    }
    if resp.commit_ts != 0 {
        return Ok(SecondaryState::Committed(resp.commit_ts));
    }
    Ok(match resp.locks.first() {
        Some(lock) => SecondaryState::Locked {
            min_commit_ts: lock.min_commit_ts,
            async_commit: lock.use_async_commit,
        },
        None => SecondaryState::Missing,
    })
}

/// Commits (`commit_ts` > 0) or rolls back the lock of `start_ts` on `key`;
/// a key no longer locked by it is left as it is.
async fn resolve_key(mvcc: &MvccClient, key: &[u8], start_ts: u64, commit_ts: u64) -> Result<()> {
    let (context, mut stub, wire) = mvcc.route_txn_key(key).await?;
    let req = kvrpcpb::ResolveLockRequest {
        context: Some(context),
        start_version: start_ts,
        commit_version: commit_ts,
        keys: vec![wire],
        ..Default::default()
    };
    let resp = tokio::time::timeout(CALL_TIMEOUT, stub.kv_resolve_lock(req))
        .await
        .context("ResolveLock timed out")??
        .into_inner();
    if let Some(e) = resp.region_error {
        bail!("ResolveLock: region error: {}", e.message);
    }
    if let Some(e) = resp.error {
        bail!("ResolveLock: {e:?}");
    }
    Ok(())
}

#[cfg(test)]
mod cluster_tests {
    use std::time::Duration;

    use anyhow::{Context, Result};
    use shale_proto::kvrpcpb;

    use crate::check::test_cluster::{cluster, env, prewrite_only, timestamp};

    #[tokio::test(flavor = "multi_thread")]
    async fn the_janitor_rolls_back_a_lock_whose_primary_was_never_written() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let cluster = cluster(dir.path()).await?;
        let env = env(&cluster).await?;
        let (primary, secondary) = (env.txn_key("bank/000"), env.txn_key("bank/001"));
        let start_ts = timestamp(&env).await?;
        prewrite_only(&env, &secondary, &primary, start_ts, false).await?;

        // tikv-client 0.4's resolve_locks failed here for good (TxnNotFound).
        env.cleanup_locks(Duration::ZERO).await?;

        let history = env
            .mvcc
            .history(&secondary, Duration::from_secs(10))
            .await?;
        assert!(history.lock.is_none(), "still locked: {history:?}");
        assert!(history.committed(start_ts).is_none(), "{history:?}");
        let primary_history = env.mvcc.history(&primary, Duration::from_secs(10)).await?;
        assert!(
            primary_history
                .versions
                .iter()
                .any(|v| v.start_ts == start_ts && v.op == kvrpcpb::Op::Rollback),
            "no rollback record keeps a late primary prewrite out: {primary_history:?}"
        );
        cluster.shutdown().await;
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_janitor_commits_a_lone_async_commit_lock_at_its_min_commit_ts() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let cluster = cluster(dir.path()).await?;
        let env = env(&cluster).await?;
        let key = env.txn_key("register/1");
        // A writer whose commit failed after the client acknowledged.
        let start_ts = timestamp(&env).await?;
        let min_commit_ts = prewrite_only(&env, &key, &key, start_ts, true).await?;
        assert!(min_commit_ts > start_ts);
        tokio::time::sleep(Duration::from_millis(200)).await;

        // tikv-client 0.4's cleanup_locks rolled this transaction back.
        env.cleanup_locks(Duration::ZERO).await?;

        let history = env.mvcc.history(&key, Duration::from_secs(10)).await?;
        assert!(history.lock.is_none(), "still locked: {history:?}");
        let committed = history
            .committed(start_ts)
            .context("the acknowledged transaction was not committed")?;
        assert_eq!(committed.commit_ts, min_commit_ts);
        assert_eq!(committed.value.as_deref(), Some(&b"acknowledged"[..]));
        cluster.shutdown().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn primary(min_commit_ts: u64) -> kvrpcpb::LockInfo {
        kvrpcpb::LockInfo {
            use_async_commit: true,
            min_commit_ts,
            ..Default::default()
        }
    }

    fn locked(min_commit_ts: u64) -> SecondaryState {
        SecondaryState::Locked {
            min_commit_ts,
            async_commit: true,
        }
    }

    #[test]
    fn a_single_key_async_commit_transaction_commits_at_its_primarys_min_commit_ts() {
        // What tikv-client 0.4's cleanup_locks gets wrong: no secondaries.
        assert_eq!(decide(&primary(594), &[]), Decision::Commit(594));
    }

    #[test]
    fn all_keys_locked_commit_at_the_largest_min_commit_ts_the_primarys_included() {
        assert_eq!(
            decide(&primary(90), &[locked(70), locked(80)]),
            Decision::Commit(90)
        );
        assert_eq!(
            decide(&primary(60), &[locked(70), locked(80)]),
            Decision::Commit(80)
        );
    }

    #[test]
    fn a_committed_secondary_decides_and_a_missing_one_rolls_back() {
        assert_eq!(
            decide(&primary(60), &[locked(70), SecondaryState::Committed(75)]),
            Decision::Commit(75)
        );
        assert_eq!(
            decide(&primary(60), &[locked(70), SecondaryState::Missing]),
            Decision::Rollback
        );
    }

    #[test]
    fn a_two_phase_lock_is_left_to_the_two_phase_resolution() {
        let two_pc = SecondaryState::Locked {
            min_commit_ts: 70,
            async_commit: false,
        };
        assert_eq!(decide(&primary(60), &[two_pc]), Decision::NotAsyncCommit);
        let mut not_async = primary(60);
        not_async.use_async_commit = false;
        assert_eq!(decide(&not_async, &[]), Decision::NotAsyncCommit);
    }
}
