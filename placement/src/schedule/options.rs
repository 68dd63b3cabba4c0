//! The scheduling knobs, taken from [`Config`] once per leader term.

use std::time::Duration;

use crate::config::Config;

/// A store silent this long is no longer a target (PD's disconnected
/// threshold); it is replaced only once it is Down (max-store-down-time).
pub const DISCONNECTED_AFTER_MS: u64 = 20_000;
/// Steps a store finishes quickly (leader transfer, peer removal).
pub const FAST_STEP_TIMEOUT_MS: u64 = 60_000;
/// Adding a peer ships a snapshot, which takes a while for big Regions.
pub const SLOW_STEP_TIMEOUT_MS: u64 = 10 * 60_000;
/// Operators one balance scheduler creates per round. Counts already
/// include in-flight operators, so a bigger burst would only plan further
/// ahead on older statistics.
pub const BALANCE_BATCH: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleOptions {
    pub max_replicas: usize,
    pub max_store_down_ms: u64,
    pub leader_schedule_limit: u64,
    pub region_schedule_limit: u64,
    pub replica_schedule_limit: u64,
    pub max_snapshot_count: u64,
    pub interval: Duration,
    pub balance_batch: usize,
    pub fast_step_timeout_ms: u64,
    pub slow_step_timeout_ms: u64,
}

impl ScheduleOptions {
    pub fn from_config(config: &Config) -> Self {
        ScheduleOptions {
            max_replicas: config.max_replicas as usize,
            max_store_down_ms: config.max_store_down_time.as_millis(),
            leader_schedule_limit: config.leader_schedule_limit,
            region_schedule_limit: config.region_schedule_limit,
            replica_schedule_limit: config.replica_schedule_limit,
            max_snapshot_count: config.max_snapshot_count,
            interval: config.schedule_interval.as_duration(),
            balance_batch: BALANCE_BATCH,
            fast_step_timeout_ms: FAST_STEP_TIMEOUT_MS,
            slow_step_timeout_ms: SLOW_STEP_TIMEOUT_MS,
        }
    }

    /// Silence after which a store takes no new peers or leaders; never
    /// longer than the time after which it counts as Down.
    pub fn disconnected_ms(&self) -> u64 {
        DISCONNECTED_AFTER_MS.min(self.max_store_down_ms)
    }
}

impl Default for ScheduleOptions {
    fn default() -> Self {
        Self::from_config(&Config::default())
    }
}
