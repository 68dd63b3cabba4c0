//! Fault injection for tests of the Raft layer: isolated stores, partitions,
//! lost and slow messages. Every check sits on the message path, so they are
//! plain atomics (plus a lock only while a partition is set).
//!
//! Faults fail calls with `Unreachable` at once rather than letting them time
//! out: the caller's retry and backoff logic runs either way, and tests stay
//! fast.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;

pub struct Faults {
    isolated: AtomicBool,
    /// Fast path: no partition set, no lock taken.
    any_partition: AtomicBool,
    partitioned: RwLock<HashSet<u64>>,
    /// `f64` bits of the drop probability for outgoing messages.
    drop_ratio: AtomicU64,
    delay_micros: AtomicU64,
    rng: AtomicU64,
}

impl Default for Faults {
    fn default() -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64);
        Faults {
            isolated: AtomicBool::new(false),
            any_partition: AtomicBool::new(false),
            partitioned: RwLock::new(HashSet::new()),
            drop_ratio: AtomicU64::new(0f64.to_bits()),
            delay_micros: AtomicU64::new(0),
            rng: AtomicU64::new(seed),
        }
    }
}

impl Faults {
    /// Cuts this store off from every other store, both directions.
    pub fn isolate(&self, on: bool) {
        self.isolated.store(on, Ordering::Relaxed);
    }

    /// Cuts this store off from `stores`, both directions (the peers' own
    /// transports need not be told). Adds to any partition already set.
    pub fn partition_from(&self, stores: impl IntoIterator<Item = u64>) {
        let mut set = self.partitioned.write();
        set.extend(stores);
        self.any_partition.store(!set.is_empty(), Ordering::Relaxed);
    }

    /// Ends partitions and isolation; drop ratio and delay stay as set.
    pub fn heal(&self) {
        let mut set = self.partitioned.write();
        set.clear();
        self.any_partition.store(false, Ordering::Relaxed);
        self.isolated.store(false, Ordering::Relaxed);
    }

    /// Loses this share (0.0..=1.0) of outgoing messages.
    pub fn drop_ratio(&self, ratio: f64) {
        let ratio = if ratio.is_nan() {
            0.0
        } else {
            ratio.clamp(0.0, 1.0)
        };
        self.drop_ratio.store(ratio.to_bits(), Ordering::Relaxed);
    }

    /// Holds every outgoing message this long before sending it.
    pub fn delay(&self, delay: Duration) {
        let micros = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.delay_micros.store(micros, Ordering::Relaxed);
    }

    /// Clears every fault.
    pub fn reset(&self) {
        self.heal();
        self.drop_ratio(0.0);
        self.delay(Duration::ZERO);
    }

    /// Whether traffic with `store` is cut (isolation or partition).
    pub fn blocks(&self, store: u64) -> bool {
        if self.isolated.load(Ordering::Relaxed) {
            return true;
        }
        self.any_partition.load(Ordering::Relaxed) && self.partitioned.read().contains(&store)
    }

    /// Draws whether to lose the next outgoing message.
    pub(crate) fn should_drop(&self) -> bool {
        let ratio = f64::from_bits(self.drop_ratio.load(Ordering::Relaxed));
        if ratio <= 0.0 {
            return false;
        }
        if ratio >= 1.0 {
            return true;
        }
        // splitmix64 over a shared counter: cheap, lock-free, good enough
        // for a coin toss and needs no extra dependency.
        let mut z = self
            .rng
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
        unit < ratio
    }

    pub(crate) fn current_delay(&self) -> Option<Duration> {
        match self.delay_micros.load(Ordering::Relaxed) {
            0 => None,
            micros => Some(Duration::from_micros(micros)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_and_isolation() {
        let f = Faults::default();
        assert!(!f.blocks(2));
        f.partition_from([2, 3]);
        assert!(f.blocks(2) && f.blocks(3) && !f.blocks(4));
        f.heal();
        assert!(!f.blocks(2));
        f.isolate(true);
        assert!(f.blocks(4));
        f.isolate(false);
        assert!(!f.blocks(4));
    }

    #[test]
    fn drop_ratio_is_roughly_honoured() {
        let f = Faults::default();
        assert!(!(0..1000).any(|_| f.should_drop()));
        f.drop_ratio(1.0);
        assert!((0..1000).all(|_| f.should_drop()));
        f.drop_ratio(0.5);
        let dropped = (0..10_000).filter(|_| f.should_drop()).count();
        assert!((4_000..6_000).contains(&dropped), "{dropped}");
        f.drop_ratio(f64::NAN);
        assert!(!f.should_drop());
    }

    #[test]
    fn delay_and_reset() {
        let f = Faults::default();
        assert_eq!(f.current_delay(), None);
        f.delay(Duration::from_millis(5));
        assert_eq!(f.current_delay(), Some(Duration::from_millis(5)));
        f.partition_from([1]);
        f.reset();
        assert_eq!(f.current_delay(), None);
        assert!(!f.blocks(1));
    }
}
