//! Per-key latches: every write command holds the latches of its keys from
//! before it takes its snapshot until its write is durable, so commands that
//! touch the same keys run one after another and each sees the other's effect.
//!
//! Keys hash into a fixed number of slots (collisions only cost concurrency).
//! A command takes its slots in ascending order, so two commands can never
//! wait on each other in a cycle. Slots are fair (FIFO) async mutexes.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use tokio::sync::{Mutex, OwnedMutexGuard};

pub struct Latches {
    slots: Vec<Arc<Mutex<()>>>,
}

/// Holds a command's latches; dropping it releases them.
pub struct LatchGuard {
    _slots: Vec<OwnedMutexGuard<()>>,
}

impl Latches {
    /// `size` is rounded up to a power of two (at least 1).
    pub fn new(size: usize) -> Self {
        let size = size.max(1).next_power_of_two();
        Latches {
            slots: (0..size).map(|_| Arc::new(Mutex::new(()))).collect(),
        }
    }

    fn slot_of(&self, key: &[u8]) -> usize {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        (h.finish() as usize) & (self.slots.len() - 1)
    }

    /// The sorted, de-duplicated slots of `keys`.
    pub fn slots_of<'k>(&self, keys: impl IntoIterator<Item = &'k [u8]>) -> Vec<usize> {
        let mut slots: Vec<usize> = keys.into_iter().map(|k| self.slot_of(k)).collect();
        slots.sort_unstable();
        slots.dedup();
        slots
    }

    pub async fn acquire<'k>(&self, keys: impl IntoIterator<Item = &'k [u8]>) -> LatchGuard {
        let slots = self.slots_of(keys);
        let mut guards = Vec::with_capacity(slots.len());
        for slot in slots {
            guards.push(self.slots[slot].clone().lock_owned().await);
        }
        LatchGuard { _slots: guards }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn same_keys_are_serialised_and_other_keys_are_not() {
        let latches = Arc::new(Latches::new(256));
        let g = latches.acquire([b"a".as_slice(), b"b".as_slice()]).await;
        // A command on other keys proceeds (unless it collides on a slot).
        let other: Vec<&[u8]> = (0u8..=255)
            .map(|i| [b'z', i])
            .map(|k| k.to_vec().leak() as &[u8])
            .filter(|k| {
                !latches
                    .slots_of([b"a".as_slice(), b"b".as_slice()])
                    .contains(&latches.slots_of([*k])[0])
            })
            .take(1)
            .collect();
        tokio::time::timeout(Duration::from_millis(200), latches.acquire(other))
            .await
            .unwrap();
        // A command on "b" waits until the first one is done.
        let l2 = latches.clone();
        let entered = Arc::new(AtomicUsize::new(0));
        let e2 = entered.clone();
        let t = tokio::spawn(async move {
            let _g = l2.acquire([b"b".as_slice()]).await;
            e2.store(1, Ordering::SeqCst);
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(entered.load(Ordering::SeqCst), 0);
        drop(g);
        t.await.unwrap();
        assert_eq!(entered.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn overlapping_key_sets_in_opposite_order_do_not_deadlock() {
        let latches = Arc::new(Latches::new(64));
        let mut tasks = vec![];
        for i in 0..32 {
            let l = latches.clone();
            tasks.push(tokio::spawn(async move {
                let keys: Vec<Vec<u8>> = if i % 2 == 0 {
                    (0..20u8).map(|k| vec![k]).collect()
                } else {
                    (0..20u8).rev().map(|k| vec![k]).collect()
                };
                let _g = l.acquire(keys.iter().map(|k| k.as_slice())).await;
                tokio::task::yield_now().await;
            }));
        }
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .unwrap()
                .unwrap();
        }
    }
}
