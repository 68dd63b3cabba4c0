//! Rolling upgrade of the storage nodes, decided from what is observed (pure).
//!
//! The storage StatefulSet uses `RollingUpdate` with a partition the operator
//! owns: at rest the partition equals the replica count, so a new pod
//! template (a new `spec.version`, resources or config) changes no pod by
//! itself. Pod by pod, from the highest ordinal down, the operator
//! 1. waits until placement has rolled out and every storage pod is ready,
//! 2. adds an evict-leader scheduler for the pod's store and waits until the
//!    store holds no leader (or a timeout passes),
//! 3. lowers the partition to the pod's ordinal, so the StatefulSet
//!    recreates that pod from the new template,
//! 4. once the pod is ready and its store Up, removes the scheduler,
//!
//! and when no pod is left on the old template raises the partition back.

use std::collections::BTreeMap;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use shale_crds::UpgradeProgress;

use crate::observed::{PodView, StsView};
use crate::placement_api::{StoreInfo, StoreState};

#[derive(Clone, Debug)]
pub struct UpgradeInput<'a> {
    /// Storage replicas being applied this round.
    pub replicas: i32,
    pub sts: Option<&'a StsView>,
    pub pods: &'a [PodView],
    /// Stores by ordinal; None when placement is unreachable.
    pub stores: Option<&'a BTreeMap<i32, StoreInfo>>,
    /// Stores with an evict-leader scheduler; None when unknown.
    pub evicting: Option<&'a [u64]>,
    /// Placement is upgraded first: storage waits for it.
    pub placement_rolled_out: bool,
    /// The step recorded in status by an earlier round.
    pub in_flight: Option<&'a UpgradeProgress>,
    pub now: Timestamp,
    /// Restart even with leaders left after this long.
    pub evict_timeout: SignedDuration,
}

/// The next upgrade step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpgradeStep {
    /// Every pod runs the newest template.
    Idle,
    /// The StatefulSet's status does not describe its spec yet.
    Settling,
    /// An upgrade is pending but something must happen first.
    Wait { reason: String },
    /// Add an evict-leader scheduler for the store of pod `ordinal`.
    EvictLeader { ordinal: i32, store_id: u64 },
    /// Leaders are moving off the store of pod `ordinal`.
    WaitLeaders {
        ordinal: i32,
        store_id: u64,
        leaders: u64,
    },
    /// Let the StatefulSet recreate pod `ordinal` from the new template.
    Restart { ordinal: i32, store_id: Option<u64> },
    /// Pod `ordinal` is back: its store may hold leaders again.
    RemoveEvictLeader { ordinal: i32, store_id: u64 },
}

impl UpgradeStep {
    /// The partition to apply with this step.
    pub fn partition(&self, sts: Option<&StsView>, replicas: i32) -> i32 {
        match self {
            UpgradeStep::Idle => replicas,
            UpgradeStep::Restart { ordinal, .. } => *ordinal,
            _ => sts.and_then(|s| s.partition).unwrap_or(replicas),
        }
    }

    /// Whether pods are (or are about to be) on two templates.
    pub fn is_upgrading(&self) -> bool {
        !matches!(self, UpgradeStep::Idle | UpgradeStep::Settling)
    }

    /// What to record in status for the next round.
    pub fn progress(
        &self,
        previous: Option<&UpgradeProgress>,
        now: Timestamp,
    ) -> Option<UpgradeProgress> {
        let started = |ordinal: i32, store_id: u64| {
            let since = previous
                .filter(|p| p.ordinal == ordinal && p.store_id == store_id)
                .map_or(now, |p| p.evicting_since.0);
            Some(UpgradeProgress {
                ordinal,
                store_id,
                evicting_since: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(since),
            })
        };
        match *self {
            UpgradeStep::EvictLeader { ordinal, store_id }
            | UpgradeStep::WaitLeaders {
                ordinal, store_id, ..
            }
            | UpgradeStep::Restart {
                ordinal,
                store_id: Some(store_id),
            } => started(ordinal, store_id),
            UpgradeStep::Wait { .. } | UpgradeStep::Settling => previous.cloned(),
            UpgradeStep::Idle
            | UpgradeStep::RemoveEvictLeader { .. }
            | UpgradeStep::Restart { store_id: None, .. } => None,
        }
    }
}

/// Decides the next step.
pub fn next(input: &UpgradeInput<'_>) -> UpgradeStep {
    let Some(sts) = input.sts else {
        return UpgradeStep::Idle;
    };
    let Some(revision) = sts.update_revision.as_deref().filter(|_| sts.fresh) else {
        return UpgradeStep::Settling;
    };
    let pod = |ordinal: i32| input.pods.iter().find(|p| p.ordinal == ordinal);
    let outdated = |p: &PodView| p.revision.as_deref() != Some(revision);

    if let Some(flight) = input.in_flight.filter(|f| f.ordinal < input.replicas) {
        return continue_in_flight(input, flight, pod(flight.ordinal), outdated);
    }

    let Some(target) = input
        .pods
        .iter()
        .filter(|p| p.ordinal < input.replicas && outdated(p))
        .map(|p| p.ordinal)
        .max()
    else {
        return match input.in_flight {
            // The recorded pod was scaled away mid-step: release its store.
            Some(f) => UpgradeStep::RemoveEvictLeader {
                ordinal: f.ordinal,
                store_id: f.store_id,
            },
            None => UpgradeStep::Idle,
        };
    };
    // A scheduler left on a pod that is already upgraded (its step was
    // recorded in a status this round did not see): release it first.
    if let Some((ordinal, store_id)) = leftover_eviction(input, revision) {
        return UpgradeStep::RemoveEvictLeader { ordinal, store_id };
    }
    if !input.placement_rolled_out {
        return wait("placement is rolling out first");
    }
    if let Some(missing) = (0..input.replicas).find(|o| !pod(*o).is_some_and(|p| p.ready)) {
        return wait(&format!("storage pod {missing} is not ready"));
    }
    match input.stores.and_then(|s| s.get(&target)) {
        Some(store) if store.state == StoreState::Up => UpgradeStep::EvictLeader {
            ordinal: target,
            store_id: store.id,
        },
        // No live store: there are no leaders to move.
        _ if input.stores.is_some() => UpgradeStep::Restart {
            ordinal: target,
            store_id: None,
        },
        _ => wait("placement is unreachable"),
    }
}

fn continue_in_flight(
    input: &UpgradeInput<'_>,
    flight: &UpgradeProgress,
    pod: Option<&PodView>,
    outdated: impl Fn(&PodView) -> bool,
) -> UpgradeStep {
    let (ordinal, store_id) = (flight.ordinal, flight.store_id);
    let store = input
        .stores
        .and_then(|s| s.get(&ordinal))
        .filter(|s| s.id == store_id);
    let Some(pod) = pod else {
        return wait(&format!("storage pod {ordinal} is being recreated"));
    };
    if outdated(pod) {
        if input.evicting.is_some_and(|e| !e.contains(&store_id)) {
            return UpgradeStep::EvictLeader { ordinal, store_id };
        }
        let leaders = match input.stores {
            Some(_) => store.map_or(0, |s| s.leader_count),
            None => u64::MAX,
        };
        let waited = input.now.duration_since(flight.evicting_since.0);
        if leaders > 0 && waited < input.evict_timeout {
            return UpgradeStep::WaitLeaders {
                ordinal,
                store_id,
                leaders,
            };
        }
        return UpgradeStep::Restart {
            ordinal,
            store_id: Some(store_id),
        };
    }
    let store_up = store.is_some_and(|s| s.state == StoreState::Up);
    if pod.ready && store_up {
        UpgradeStep::RemoveEvictLeader { ordinal, store_id }
    } else {
        wait(&format!("storage pod {ordinal} is restarting"))
    }
}

/// An upgraded, ready pod whose Up store still has an evict-leader scheduler.
fn leftover_eviction(input: &UpgradeInput<'_>, revision: &str) -> Option<(i32, u64)> {
    let (stores, evicting) = (input.stores?, input.evicting?);
    input
        .pods
        .iter()
        .filter(|p| {
            p.ordinal < input.replicas && p.ready && p.revision.as_deref() == Some(revision)
        })
        .filter_map(|p| stores.get(&p.ordinal).map(|s| (p.ordinal, s)))
        .find(|(_, s)| s.state == StoreState::Up && evicting.contains(&s.id))
        .map(|(ordinal, s)| (ordinal, s.id))
}

fn wait(reason: &str) -> UpgradeStep {
    UpgradeStep::Wait {
        reason: reason.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
