//! One round's decision (pure): the storage StatefulSet's size and
//! partition, and at most one thing to ask placement.
//!
//! Scaling comes first; an upgrade proceeds only while the size is steady.
//! A pod already in the middle of an upgrade step (leaders evicted, pod
//! restarting) finishes that step before the size changes.

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use shale_crds::UpgradeProgress;

use crate::observed::Observed;
use crate::scale::{self, ScaleStep};
use crate::upgrade::{self, UpgradeInput, UpgradeStep};

/// A request to placement's HTTP API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlacementAction {
    DeleteStore { store_id: u64 },
    AddEvictLeader { store_id: u64 },
    RemoveEvictLeader { store_id: u64 },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub scale: ScaleStep,
    /// The size change waits for the upgrade step in flight.
    pub scale_deferred: bool,
    /// None when the upgrade was not considered this round (scaling).
    pub upgrade: Option<UpgradeStep>,
    pub storage_replicas: i32,
    pub storage_partition: i32,
    pub action: Option<PlacementAction>,
    /// What status records for the next round.
    pub progress: Option<UpgradeProgress>,
}

impl Plan {
    /// Work remains: come back soon rather than at the idle interval.
    pub fn in_progress(&self) -> bool {
        !self.scale.is_steady()
            || self.scale_deferred
            || self.upgrade.as_ref().is_some_and(UpgradeStep::is_upgrading)
    }
}

pub struct RolloutInput<'a> {
    pub desired_storage: i32,
    pub observed: &'a Observed,
    pub in_flight: Option<&'a UpgradeProgress>,
    pub now: Timestamp,
    pub evict_timeout: SignedDuration,
}

pub fn plan(input: &RolloutInput<'_>) -> Plan {
    let observed = input.observed;
    let stores = observed.placement_api.stores();
    let current = observed.storage.as_ref().map(|s| s.replicas);
    let scale = scale::next(input.desired_storage, current, stores);
    let scale_deferred = input.in_flight.is_some() && !scale.is_steady();
    let replicas = match (scale_deferred, current) {
        (true, Some(current)) => current,
        _ => scale.replicas(),
    };

    let upgrade = (scale.is_steady() || scale_deferred).then(|| {
        upgrade::next(&UpgradeInput {
            replicas,
            sts: observed.storage.as_ref(),
            pods: &observed.storage_pods,
            stores,
            evicting: observed.placement_api.evicting(),
            placement_rolled_out: observed.placement.as_ref().is_some_and(|p| p.rolled_out()),
            in_flight: input.in_flight,
            now: input.now,
            evict_timeout: input.evict_timeout,
        })
    });
    let storage_partition = match &upgrade {
        Some(step) => step.partition(observed.storage.as_ref(), replicas),
        None => observed
            .storage
            .as_ref()
            .and_then(|s| s.partition)
            .unwrap_or(replicas),
    };
    let evicting = observed.placement_api.evicting().unwrap_or_default();
    let action = match (&scale, &upgrade) {
        (ScaleStep::RemoveStore { store_id, .. }, _) if !scale_deferred => {
            Some(PlacementAction::DeleteStore {
                store_id: *store_id,
            })
        }
        (_, Some(UpgradeStep::EvictLeader { store_id, .. })) if !evicting.contains(store_id) => {
            Some(PlacementAction::AddEvictLeader {
                store_id: *store_id,
            })
        }
        (_, Some(UpgradeStep::RemoveEvictLeader { store_id, .. })) => {
            Some(PlacementAction::RemoveEvictLeader {
                store_id: *store_id,
            })
        }
        _ => None,
    };
    let progress = match &upgrade {
        Some(step) => step.progress(input.in_flight, input.now),
        None => input.in_flight.cloned(),
    };
    Plan {
        scale,
        scale_deferred,
        upgrade,
        storage_replicas: replicas,
        storage_partition,
        action,
        progress,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
