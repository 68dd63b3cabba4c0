//! Waiting for pessimistic locks, and deadlock detection among the waiters.
//!
//! A pessimistic-lock request that meets another transaction's lock registers
//! a [`Waiter`] on the key (while it still holds the key's latch, so a release
//! cannot slip by unnoticed) and adds an edge `waiter txn -> lock owner txn`
//! to the wait-for graph. If that edge closes a cycle, the request fails with
//! a Deadlock error instead. Every command that removes locks wakes the
//! waiters of those keys; a woken request simply runs again.
//!
//! Detection is local to this store: a cycle that spans stores is broken by
//! the wait timeout instead.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;

struct Edge {
    id: u64,
    lock_ts: u64,
    key_hash: u64,
}

#[derive(Default)]
struct State {
    next_id: u64,
    waiters: HashMap<Vec<u8>, Vec<(u64, oneshot::Sender<()>)>>,
    /// Waiting transaction -> the transactions it waits for.
    edges: HashMap<u64, Vec<Edge>>,
}

#[derive(Default)]
pub struct LockManager {
    state: Mutex<State>,
}

/// A registered wait; dropping it unregisters.
pub struct Waiter {
    lm: Arc<LockManager>,
    id: u64,
    key: Vec<u8>,
    start_ts: u64,
    rx: oneshot::Receiver<()>,
}

impl Waiter {
    /// Resolves when a command releases a lock on the key.
    pub async fn wait(&mut self) {
        let _ = (&mut self.rx).await;
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut state = self.lm.state.lock();
        if let Some(list) = state.waiters.get_mut(&self.key) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                state.waiters.remove(&self.key);
            }
        }
        if let Some(edges) = state.edges.get_mut(&self.start_ts) {
            edges.retain(|e| e.id != self.id);
            if edges.is_empty() {
                state.edges.remove(&self.start_ts);
            }
        }
    }
}

/// FNV-1a; reported as `deadlock_key_hash`.
pub fn key_hash(key: &[u8]) -> u64 {
    key.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl LockManager {
    pub fn new() -> Self {
        LockManager::default()
    }

    /// Registers transaction `start_ts` as waiting for `lock_ts`'s lock on
    /// `key`. With `detect`, fails with the hash of the key that closes a
    /// wait-for cycle instead.
    pub fn wait_for(
        self: &Arc<Self>,
        start_ts: u64,
        lock_ts: u64,
        key: &[u8],
        detect: bool,
    ) -> Result<Waiter, u64> {
        let mut state = self.state.lock();
        if detect {
            if let Some(hash) = find_cycle(&state.edges, start_ts, lock_ts) {
                return Err(hash);
            }
        }
        state.next_id += 1;
        let id = state.next_id;
        let (tx, rx) = oneshot::channel();
        state
            .waiters
            .entry(key.to_vec())
            .or_default()
            .push((id, tx));
        state.edges.entry(start_ts).or_default().push(Edge {
            id,
            lock_ts,
            key_hash: key_hash(key),
        });
        Ok(Waiter {
            lm: self.clone(),
            id,
            key: key.to_vec(),
            start_ts,
            rx,
        })
    }

    /// Wakes every waiter on `keys` (their locks were just released).
    pub fn wake_up(&self, keys: &[Vec<u8>]) {
        let mut state = self.state.lock();
        if state.waiters.is_empty() {
            return;
        }
        for key in keys {
            if let Some(list) = state.waiters.remove(key) {
                for (_, tx) in list {
                    let _ = tx.send(());
                }
            }
        }
    }

    #[cfg(test)]
    pub fn waiter_count(&self) -> usize {
        self.state.lock().waiters.values().map(Vec::len).sum()
    }
}

/// Whether `lock_ts` (transitively) waits for `start_ts`; returns the key hash
/// of the edge that reaches `start_ts`.
fn find_cycle(edges: &HashMap<u64, Vec<Edge>>, start_ts: u64, lock_ts: u64) -> Option<u64> {
    let mut stack = vec![lock_ts];
    let mut seen = HashSet::new();
    while let Some(txn) = stack.pop() {
        if !seen.insert(txn) {
            continue;
        }
        for edge in edges.get(&txn).into_iter().flatten() {
            if edge.lock_ts == start_ts {
                return Some(edge.key_hash);
            }
            stack.push(edge.lock_ts);
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn waiters_wake_on_release_and_unregister_on_drop() {
        let lm = Arc::new(LockManager::new());
        let mut w = lm.wait_for(20, 10, b"k", true).unwrap();
        assert_eq!(lm.waiter_count(), 1);
        lm.wake_up(&[b"other".to_vec()]);
        assert!(tokio::time::timeout(Duration::from_millis(30), w.wait())
            .await
            .is_err());
        lm.wake_up(&[b"k".to_vec()]);
        tokio::time::timeout(Duration::from_secs(1), w.wait())
            .await
            .unwrap();
        drop(w);
        assert_eq!(lm.waiter_count(), 0);
        assert!(lm.state.lock().edges.is_empty());
    }

    #[test]
    fn cycles_are_detected() {
        let lm = Arc::new(LockManager::new());
        let _a = lm.wait_for(1, 2, b"k2", true).unwrap();
        let _b = lm.wait_for(2, 3, b"k3", true).unwrap();
        // 3 -> 1 closes 1 -> 2 -> 3 -> 1; the reported hash is of the edge
        // that leads back to txn 3 (2 waits for 3 on k3).
        assert_eq!(lm.wait_for(3, 1, b"k1", true).err(), Some(key_hash(b"k3")));
        // Without detection the wait is registered.
        assert!(lm.wait_for(3, 1, b"k1", false).is_ok());
        // An unrelated wait is fine.
        assert!(lm.wait_for(4, 1, b"k1", true).is_ok());
    }
}
