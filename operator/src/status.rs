//! The status written at the end of every reconcile (pure): phase,
//! `Ready` / `Progressing` / `Degraded` conditions with observedGeneration,
//! pod counts and placement's view of each store.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use shale_crds::{ComponentStatus, Phase, StoreStatus, TiKVClusterSpec, TiKVClusterStatus};

use crate::naming::{self, Component};
use crate::observed::{Observed, PlacementView, StsView};
use crate::placement_api::StoreState;
use crate::rollout::Plan;
use crate::scale::ScaleStep;
use crate::upgrade::UpgradeStep;

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

/// How the round went.
#[derive(Clone, Copy, Debug)]
pub enum Outcome<'a> {
    /// The pipeline ran; `failure` is a placement request that failed.
    Reconciled {
        plan: &'a Plan,
        failure: Option<&'a str>,
    },
    /// The spec cannot be reconciled; nothing was changed.
    Invalid(&'a str),
    /// `spec.paused`: nothing was changed.
    Paused,
}

pub struct StatusInput<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub generation: Option<i64>,
    pub previous: Option<&'a TiKVClusterStatus>,
    pub spec: &'a TiKVClusterSpec,
    pub observed: &'a Observed,
    pub outcome: Outcome<'a>,
    pub now: Timestamp,
}

pub fn build(input: &StatusInput<'_>) -> TiKVClusterStatus {
    let observed = input.observed;
    let previous = input.previous.cloned().unwrap_or_default();
    let placement = component_status(observed.placement.as_ref());
    let storage = component_status(observed.storage.as_ref());
    let stores = match &observed.placement_api {
        PlacementView::Known { stores, .. } => stores
            .iter()
            .map(|(ordinal, s)| StoreStatus {
                id: s.id,
                pod: Some(naming::pod_name(input.name, Component::Storage, *ordinal)),
                address: s.address.clone(),
                state: s.state.as_str().to_string(),
                leader_count: s.leader_count,
                region_count: s.region_count,
            })
            .collect(),
        PlacementView::Unreachable(_) => previous.stores.clone(),
    };

    let all_ready = placement.ready_replicas >= input.spec.placement.replicas
        && storage.ready_replicas >= input.spec.storage.replicas;
    let stores_up = match observed.placement_api.stores() {
        Some(by_ordinal) => (0..input.spec.storage.replicas).all(|o| {
            by_ordinal
                .get(&o)
                .is_some_and(|s| s.state == StoreState::Up)
        }),
        None => false,
    };
    let ready = all_ready && stores_up;
    let (ready_reason, ready_message) = if ready {
        (
            "AllReady",
            "every pod is ready and every store is Up".to_string(),
        )
    } else if !all_ready {
        (
            "PodsNotReady",
            format!(
                "placement {}/{} and storage {}/{} pods ready",
                placement.ready_replicas,
                input.spec.placement.replicas,
                storage.ready_replicas,
                input.spec.storage.replicas
            ),
        )
    } else {
        (
            "StoresNotUp",
            "not every store is Up in placement".to_string(),
        )
    };

    let (phase, progressing, degraded) = match input.outcome {
        Outcome::Invalid(message) => (
            Phase::Failed,
            (false, "InvalidSpec", message.to_string()),
            (true, "InvalidSpec", message.to_string()),
        ),
        Outcome::Paused => (
            Phase::Paused,
            (false, "Paused", "spec.paused is true".to_string()),
            (false, "Paused", "spec.paused is true".to_string()),
        ),
        Outcome::Reconciled { plan, failure } => {
            let creating = observed.storage.is_none()
                || (!ready && matches!(previous.phase, None | Some(Phase::Creating)));
            let progressing = progress(plan, creating);
            let scaling = !plan.scale.is_steady();
            let phase = if creating && !scaling {
                Phase::Creating
            } else if scaling && !plan.scale_deferred {
                Phase::Scaling
            } else if plan.upgrade.as_ref().is_some_and(UpgradeStep::is_upgrading) {
                Phase::Upgrading
            } else if scaling {
                Phase::Scaling
            } else if ready {
                Phase::Running
            } else {
                Phase::Degraded
            };
            let degraded = if let Some(failure) = failure {
                (true, "PlacementRequestFailed", failure.to_string())
            } else if let (PlacementView::Unreachable(why), false) =
                (&observed.placement_api, creating)
            {
                (true, "PlacementUnreachable", why.clone())
            } else if !ready && !creating && !progressing.0 {
                (true, ready_reason, ready_message.clone())
            } else {
                (false, "AsExpected", "nothing is wrong".to_string())
            };
            (phase, progressing, degraded)
        }
    };

    let conditions = vec![
        condition(input, &previous, READY, ready, ready_reason, ready_message),
        condition(
            input,
            &previous,
            PROGRESSING,
            progressing.0,
            progressing.1,
            progressing.2,
        ),
        condition(
            input, &previous, DEGRADED, degraded.0, degraded.1, degraded.2,
        ),
    ];
    // Rolled out at the version asked for: the observation may predate this
    // reconcile's own change to the pod template, and then it still shows
    // the old version rolled out.
    let rolled_out = |sts: &Option<StsView>| {
        sts.as_ref().is_some_and(|s| {
            s.rolled_out() && s.version.as_deref() == Some(input.spec.version.as_str())
        })
    };
    let upgrade_idle = match input.outcome {
        Outcome::Reconciled { plan, .. } => {
            matches!(plan.upgrade, Some(UpgradeStep::Idle)) && plan.progress.is_none()
        }
        _ => false,
    };
    let version =
        if upgrade_idle && rolled_out(&observed.placement) && rolled_out(&observed.storage) {
            Some(input.spec.version.clone())
        } else {
            previous.version.clone()
        };
    let upgrade = match input.outcome {
        Outcome::Reconciled { plan, .. } => plan.progress.clone(),
        _ => previous.upgrade.clone(),
    };
    TiKVClusterStatus {
        phase: Some(phase),
        observed_generation: input.generation,
        conditions,
        version,
        placement,
        storage,
        stores,
        upgrade,
    }
}

/// `Progressing`: (status, reason, message).
fn progress(plan: &Plan, creating: bool) -> (bool, &'static str, String) {
    if !plan.scale_deferred {
        let scaling = match &plan.scale {
            ScaleStep::ScaleOut { from, to } => {
                Some(("ScalingOut", format!("storage {from} -> {to} pods")))
            }
            ScaleStep::RemoveStore {
                ordinal, store_id, ..
            } => Some((
                "ScalingIn",
                format!("removing store {store_id} of storage pod {ordinal}"),
            )),
            ScaleStep::WaitTombstone {
                ordinal,
                store_id,
                state,
                ..
            } => Some((
                "ScalingIn",
                format!(
                    "store {store_id} of storage pod {ordinal} is {state}; waiting for Tombstone"
                ),
            )),
            ScaleStep::Shrink { from, to } => {
                Some(("ScalingIn", format!("storage {from} -> {to} pods")))
            }
            ScaleStep::WaitPlacement { ordinal, .. } => Some((
                "ScalingIn",
                format!("waiting for placement to remove the store of storage pod {ordinal}"),
            )),
            ScaleStep::Create { .. } | ScaleStep::Steady { .. } => None,
        };
        if let Some((reason, message)) = scaling {
            return (true, reason, message);
        }
    }
    match &plan.upgrade {
        Some(step) if step.is_upgrading() => (true, "Upgrading", upgrade_message(step)),
        _ if creating => (
            true,
            "Creating",
            "waiting for pods to become ready".to_string(),
        ),
        _ => (
            false,
            "Reconciled",
            "the cluster matches its spec".to_string(),
        ),
    }
}

fn upgrade_message(step: &UpgradeStep) -> String {
    match step {
        UpgradeStep::Wait { reason } => format!("upgrade waiting: {reason}"),
        UpgradeStep::EvictLeader { ordinal, store_id } => {
            format!("evicting leaders from store {store_id} (storage pod {ordinal})")
        }
        UpgradeStep::WaitLeaders {
            ordinal,
            store_id,
            leaders,
        } => format!("store {store_id} (storage pod {ordinal}) still leads {leaders} Regions"),
        UpgradeStep::Restart { ordinal, .. } => format!("restarting storage pod {ordinal}"),
        UpgradeStep::RemoveEvictLeader { ordinal, store_id } => {
            format!("storage pod {ordinal} is back; store {store_id} may lead again")
        }
        UpgradeStep::Idle | UpgradeStep::Settling => "no upgrade".to_string(),
    }
}

fn component_status(sts: Option<&StsView>) -> ComponentStatus {
    sts.map_or_else(ComponentStatus::default, |s| ComponentStatus {
        replicas: s.replicas,
        ready_replicas: s.ready_replicas,
        updated_replicas: s.updated_replicas,
    })
}

/// A condition that keeps its lastTransitionTime while its status holds.
fn condition(
    input: &StatusInput<'_>,
    previous: &TiKVClusterStatus,
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let since = previous
        .conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or(Time(input.now), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message,
        observed_generation: input.generation,
        last_transition_time: since,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
