//! Timestamp oracle: `physical_ms << 18 | logical`.
//!
//! Timestamps are served from memory. Before any timestamp with physical part
//! `p` is handed out, an upper bound `> p` is persisted through the
//! [`MetaStore`]; after a restart (or, later, a leader change) serving starts
//! at that bound, so no timestamp is ever repeated or goes backwards, even if
//! the wall clock does.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use crate::clock::Clock;
use crate::meta::schema::{self, TSO_UPPER_MS};
use crate::meta::{MetaError, MetaStore};

pub const LOGICAL_BITS: u32 = 18;
/// Logical values are in `0..MAX_LOGICAL`.
pub const MAX_LOGICAL: u64 = 1 << LOGICAL_BITS;
/// How far ahead of the current physical time the persisted bound is set.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(3);

pub fn compose(physical_ms: u64, logical: u64) -> u64 {
    (physical_ms << LOGICAL_BITS) | logical
}

#[derive(Debug, thiserror::Error)]
pub enum TsoError {
    #[error("tso count must be in 1..{MAX_LOGICAL}, got {0}")]
    InvalidCount(u32),
    #[error("failed to persist tso window: {0}")]
    Persist(#[from] MetaError),
}

/// The answer to one request for `count` timestamps: they are
/// `(physical, logical - count + 1) ..= (physical, logical)`, as in PD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TsoBatch {
    pub physical: u64,
    /// Logical part of the last (highest) timestamp of the batch.
    pub logical: u64,
    pub count: u32,
}

impl TsoBatch {
    pub fn first(&self) -> u64 {
        compose(self.physical, self.logical + 1 - u64::from(self.count))
    }

    pub fn last(&self) -> u64 {
        compose(self.physical, self.logical)
    }
}

#[derive(Debug)]
struct State {
    /// Physical and logical part of the last timestamp handed out.
    physical: u64,
    logical: u64,
    /// Persisted bound: every served physical is strictly below it.
    saved_upper: u64,
}

pub struct Tso {
    meta: Arc<dyn MetaStore>,
    clock: Arc<dyn Clock>,
    window_ms: u64,
    state: Mutex<State>,
}

impl Tso {
    /// Loads the persisted bound and immediately persists a fresh window.
    pub async fn open(
        meta: Arc<dyn MetaStore>,
        clock: Arc<dyn Clock>,
        window: Duration,
    ) -> Result<Self, TsoError> {
        let saved = schema::load_u64(meta.as_ref(), TSO_UPPER_MS)
            .await?
            .unwrap_or(0);
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        let tso = Tso {
            meta,
            clock,
            window_ms,
            // Everything served before the restart had physical < saved, so
            // starting at (saved, 0) and handing out logical >= 1 is above it.
            state: Mutex::new(State {
                physical: saved,
                logical: 0,
                saved_upper: saved,
            }),
        };
        tso.extend_window().await?;
        Ok(tso)
    }

    /// Allocates `count` consecutive timestamps.
    pub async fn next(&self, count: u32) -> Result<TsoBatch, TsoError> {
        let count64 = u64::from(count);
        if count == 0 || count64 >= MAX_LOGICAL {
            return Err(TsoError::InvalidCount(count));
        }
        let mut state = self.state.lock().await;
        let now = self.clock.now_ms();
        let (mut physical, mut logical) = if now > state.physical {
            (now, 0)
        } else {
            // The clock stalled or went backwards: keep the last physical.
            (state.physical, state.logical)
        };
        if logical + count64 >= MAX_LOGICAL {
            physical += 1;
            logical = 0;
        }
        if physical >= state.saved_upper {
            let upper = physical.saturating_add(self.window_ms);
            self.persist(upper).await?;
            state.saved_upper = upper;
        }
        logical += count64;
        state.physical = physical;
        state.logical = logical;
        Ok(TsoBatch {
            physical,
            logical,
            count,
        })
    }

    /// Pushes the persisted bound ahead when less than half a window is left,
    /// so requests rarely wait for a write. Called periodically.
    pub async fn extend_window(&self) -> Result<(), TsoError> {
        let mut state = self.state.lock().await;
        let base = self.clock.now_ms().max(state.physical);
        if state.saved_upper.saturating_sub(base) > self.window_ms / 2 {
            return Ok(());
        }
        let upper = base.saturating_add(self.window_ms).max(state.saved_upper);
        self.persist(upper).await?;
        state.saved_upper = upper;
        Ok(())
    }

    async fn persist(&self, upper: u64) -> Result<(), MetaError> {
        self.meta
            .write(vec![schema::put_u64(TSO_UPPER_MS, upper)])
            .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::meta::MemMetaStore;

    const T0: u64 = 1_700_000_000_000;

    async fn open(meta: &Arc<MemMetaStore>, clock: &Arc<ManualClock>) -> Tso {
        Tso::open(meta.clone(), clock.clone(), DEFAULT_WINDOW)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn strictly_increasing_and_batches_are_contiguous() {
        let meta = Arc::new(MemMetaStore::new());
        let clock = Arc::new(ManualClock::new(T0));
        let tso = open(&meta, &clock).await;
        let a = tso.next(1).await.unwrap();
        let b = tso.next(10).await.unwrap();
        assert_eq!(a.physical, T0);
        assert_eq!(b.first(), a.last() + 1);
        assert_eq!(b.last() - b.first(), 9);
        clock.advance_ms(1);
        let c = tso.next(3).await.unwrap();
        assert!(c.first() > b.last());
        assert_eq!((c.physical, c.logical), (T0 + 1, 3));
    }

    #[tokio::test]
    async fn rejects_bad_counts() {
        let meta = Arc::new(MemMetaStore::new());
        let clock = Arc::new(ManualClock::new(T0));
        let tso = open(&meta, &clock).await;
        assert!(matches!(tso.next(0).await, Err(TsoError::InvalidCount(0))));
        let too_many = u32::try_from(MAX_LOGICAL).unwrap();
        assert!(tso.next(too_many).await.is_err());
        assert!(tso.next(too_many - 1).await.is_ok());
    }

    #[tokio::test]
    async fn clock_going_backwards_never_goes_backwards() {
        let meta = Arc::new(MemMetaStore::new());
        let clock = Arc::new(ManualClock::new(T0));
        let tso = open(&meta, &clock).await;
        let before = tso.next(1).await.unwrap();
        clock.set_ms(T0 - 60_000);
        let after = tso.next(1).await.unwrap();
        assert!(after.first() > before.last());
        assert_eq!(after.physical, T0);
        assert_eq!(after.logical, before.logical + 1);
    }

    #[tokio::test]
    async fn logical_overflow_advances_physical() {
        let meta = Arc::new(MemMetaStore::new());
        let clock = Arc::new(ManualClock::new(T0));
        let tso = open(&meta, &clock).await;
        let big = u32::try_from(MAX_LOGICAL - 10).unwrap();
        let a = tso.next(big).await.unwrap();
        assert_eq!(a.physical, T0);
        // Clock frozen: the next batch does not fit in T0's logical space.
        let b = tso.next(20).await.unwrap();
        assert_eq!(b.physical, T0 + 1);
        assert_eq!(b.logical, 20);
        assert!(b.first() > a.last());
        // Stuck clock, many overflows: keeps advancing past the window safely.
        let mut last = b.last();
        for _ in 0..5_000 {
            let batch = tso.next(big).await.unwrap();
            assert!(batch.first() > last);
            last = batch.last();
        }
        let saved = schema::load_u64(meta.as_ref(), TSO_UPPER_MS)
            .await
            .unwrap()
            .unwrap();
        assert!(saved > last >> LOGICAL_BITS);
    }

    #[tokio::test]
    async fn never_backwards_across_restart() {
        let meta = Arc::new(MemMetaStore::new());
        let clock = Arc::new(ManualClock::new(T0));
        let last = {
            let tso = open(&meta, &clock).await;
            clock.advance_ms(2_000);
            let mut last = 0;
            for _ in 0..100 {
                last = tso.next(5).await.unwrap().last();
            }
            last
        };
        // Restart with a clock that went back an hour.
        clock.set_ms(T0 - 3_600_000);
        let tso = open(&meta, &clock).await;
        let first = tso.next(1).await.unwrap();
        assert!(first.first() > last, "{} <= {}", first.first(), last);
        // And the bound persisted on open covers what is served next.
        let saved = schema::load_u64(meta.as_ref(), TSO_UPPER_MS)
            .await
            .unwrap()
            .unwrap();
        assert!(saved > first.physical);
    }

    #[tokio::test]
    async fn bound_is_persisted_before_serving_past_it() {
        let meta = Arc::new(MemMetaStore::new());
        let clock = Arc::new(ManualClock::new(T0));
        let tso = open(&meta, &clock).await;
        for step in 0..20 {
            clock.advance_ms(997);
            let batch = tso.next(1).await.unwrap();
            let saved = schema::load_u64(meta.as_ref(), TSO_UPPER_MS)
                .await
                .unwrap()
                .unwrap();
            assert!(
                saved > batch.physical,
                "step {step}: {saved} <= {}",
                batch.physical
            );
        }
    }

    #[tokio::test]
    async fn extend_window_moves_bound_ahead() {
        let meta = Arc::new(MemMetaStore::new());
        let clock = Arc::new(ManualClock::new(T0));
        let tso = open(&meta, &clock).await;
        let first = schema::load_u64(meta.as_ref(), TSO_UPPER_MS)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first, T0 + 3_000);
        clock.advance_ms(500);
        tso.extend_window().await.unwrap();
        // Plenty of window left: no write.
        let same = schema::load_u64(meta.as_ref(), TSO_UPPER_MS).await.unwrap();
        assert_eq!(same, Some(first));
        clock.advance_ms(2_000);
        tso.extend_window().await.unwrap();
        let moved = schema::load_u64(meta.as_ref(), TSO_UPPER_MS).await.unwrap();
        assert_eq!(moved, Some(T0 + 2_500 + 3_000));
    }

    #[tokio::test]
    async fn persist_failure_serves_nothing() {
        let meta = Arc::new(MemMetaStore::new());
        let clock = Arc::new(ManualClock::new(T0));
        let tso = open(&meta, &clock).await;
        meta.close().await;
        clock.advance_ms(10_000);
        assert!(matches!(tso.next(1).await, Err(TsoError::Persist(_))));
    }
}
