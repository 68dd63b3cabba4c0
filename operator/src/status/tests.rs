use k8s_openapi::jiff::SignedDuration;
use shale_crds::Phase;

use super::*;
use crate::fixtures::{settled_sts, spec, store, FakePlacement, NAME, NS};
use crate::observed::PodView;
use crate::placement_api::StoreState;
use crate::rollout::{self, RolloutInput};

fn observed(storage: i32, placement: PlacementView) -> Observed {
    Observed {
        placement: Some(settled_sts(3, "p")),
        storage: Some(settled_sts(storage, "s")),
        storage_pods: (0..storage)
            .map(|o| PodView {
                ordinal: o,
                revision: Some("s".into()),
                ready: true,
            })
            .collect(),
        placement_api: placement,
    }
}

fn up_stores(n: i32) -> PlacementView {
    FakePlacement::with_stores(
        (0..n)
            .map(|o| store(o as u64 + 1, o, StoreState::Up, 1))
            .collect(),
    )
    .view()
}

fn status_of(
    desired: i32,
    observed: &Observed,
    previous: Option<&TiKVClusterStatus>,
    now: Timestamp,
) -> TiKVClusterStatus {
    status_of_spec(spec(3, desired), observed, previous, now)
}

/// The status of a settled 3-store cluster whose spec asks for `version`.
fn status_with_version(
    version: &str,
    observed: &Observed,
    previous: Option<&TiKVClusterStatus>,
) -> TiKVClusterStatus {
    let mut spec = spec(3, 3);
    spec.version = version.into();
    status_of_spec(spec, observed, previous, Timestamp::UNIX_EPOCH)
}

fn status_of_spec(
    spec: TiKVClusterSpec,
    observed: &Observed,
    previous: Option<&TiKVClusterStatus>,
    now: Timestamp,
) -> TiKVClusterStatus {
    let desired = spec.storage.replicas;
    let plan = rollout::plan(&RolloutInput {
        desired_storage: desired,
        observed,
        in_flight: None,
        now,
        evict_timeout: SignedDuration::from_secs(60),
    });
    build(&StatusInput {
        name: NAME,
        namespace: NS,
        generation: Some(7),
        previous,
        spec: &spec,
        observed,
        outcome: Outcome::Reconciled {
            plan: &plan,
            failure: None,
        },
        now,
    })
}

fn cond<'a>(status: &'a TiKVClusterStatus, type_: &str) -> &'a Condition {
    status.conditions.iter().find(|c| c.type_ == type_).unwrap()
}

#[test]
fn settled_cluster_is_running_and_ready() {
    let obs = observed(3, up_stores(3));
    let previous = TiKVClusterStatus {
        phase: Some(Phase::Running),
        ..TiKVClusterStatus::default()
    };
    let s = status_of(3, &obs, Some(&previous), Timestamp::UNIX_EPOCH);
    assert_eq!(s.phase, Some(Phase::Running));
    assert_eq!(s.observed_generation, Some(7));
    assert_eq!(s.version.as_deref(), Some("v1"));
    assert_eq!(cond(&s, READY).status, "True");
    assert_eq!(cond(&s, PROGRESSING).status, "False");
    assert_eq!(cond(&s, DEGRADED).status, "False");
    assert!(s
        .conditions
        .iter()
        .all(|c| c.observed_generation == Some(7)));
    assert_eq!(s.stores.len(), 3);
    assert_eq!(s.stores[2].pod.as_deref(), Some("basic-storage-2"));
    assert_eq!(s.stores[2].state, "Up");
    assert_eq!(s.storage.ready_replicas, 3);
}

#[test]
fn transition_times_hold_while_a_condition_holds() {
    let obs = observed(3, up_stores(3));
    let t0 = Timestamp::UNIX_EPOCH;
    let first = status_of(3, &obs, None, t0);
    let later = t0 + SignedDuration::from_secs(600);
    let second = status_of(3, &obs, Some(&first), later);
    assert_eq!(
        cond(&second, READY).last_transition_time,
        cond(&first, READY).last_transition_time
    );
    // A flip takes the new time.
    let down = observed(3, up_stores(2));
    let third = status_of(3, &down, Some(&second), later);
    assert_eq!(cond(&third, READY).status, "False");
    assert_eq!(cond(&third, READY).last_transition_time.0, later);
}

#[test]
fn scale_in_is_progressing() {
    let obs = observed(4, up_stores(4));
    let previous = TiKVClusterStatus {
        phase: Some(Phase::Running),
        ..TiKVClusterStatus::default()
    };
    let s = status_of(3, &obs, Some(&previous), Timestamp::UNIX_EPOCH);
    assert_eq!(s.phase, Some(Phase::Scaling));
    let p = cond(&s, PROGRESSING);
    assert_eq!(
        (p.status.as_str(), p.reason.as_str()),
        ("True", "ScalingIn")
    );
    assert!(p.message.contains("store 4"), "{}", p.message);
}

#[test]
fn new_cluster_is_creating_and_not_degraded() {
    let obs = Observed {
        placement: None,
        storage: None,
        storage_pods: Vec::new(),
        placement_api: PlacementView::Unreachable("placement is not created yet".into()),
    };
    let s = status_of(3, &obs, None, Timestamp::UNIX_EPOCH);
    assert_eq!(s.phase, Some(Phase::Creating));
    assert_eq!(cond(&s, PROGRESSING).reason, "Creating");
    assert_eq!(cond(&s, DEGRADED).status, "False");
    assert_eq!(s.version, None);
}

#[test]
fn invalid_spec_fails_with_a_clear_condition() {
    let obs = observed(3, up_stores(3));
    let spec = spec(3, 3);
    let s = build(&StatusInput {
        name: NAME,
        namespace: NS,
        generation: Some(2),
        previous: None,
        spec: &spec,
        observed: &obs,
        outcome: Outcome::Invalid("storage.config is not valid TOML"),
        now: Timestamp::UNIX_EPOCH,
    });
    assert_eq!(s.phase, Some(Phase::Failed));
    let d = cond(&s, DEGRADED);
    assert_eq!(
        (d.status.as_str(), d.reason.as_str()),
        ("True", "InvalidSpec")
    );
    assert_eq!(d.message, "storage.config is not valid TOML");
    assert_eq!(cond(&s, PROGRESSING).status, "False");
}

#[test]
fn unreachable_placement_after_creation_is_degraded() {
    let obs = observed(3, PlacementView::Unreachable("connection refused".into()));
    let previous = TiKVClusterStatus {
        phase: Some(Phase::Running),
        ..TiKVClusterStatus::default()
    };
    let s = status_of(3, &obs, Some(&previous), Timestamp::UNIX_EPOCH);
    assert_eq!(cond(&s, DEGRADED).reason, "PlacementUnreachable");
    assert_eq!(cond(&s, READY).status, "False");
}

#[test]
fn the_version_follows_only_once_the_pods_run_it() {
    // The reconcile that applies v2's pod template still observes v1's
    // StatefulSets, rolled out: the status must not say v2 yet (seen on a
    // real cluster, where the status read upgraded before any pod restarted).
    let obs = observed(3, up_stores(3));
    let previous = TiKVClusterStatus {
        phase: Some(Phase::Running),
        version: Some("v1".into()),
        ..TiKVClusterStatus::default()
    };
    let mut upgraded = obs.clone();
    for sts in [&mut upgraded.placement, &mut upgraded.storage] {
        sts.as_mut().unwrap().version = Some("v2".into());
    }
    let s = status_with_version("v2", &obs, Some(&previous));
    assert_eq!(s.version.as_deref(), Some("v1"));
    let s = status_with_version("v2", &upgraded, Some(&previous));
    assert_eq!(s.version.as_deref(), Some("v2"));
}
