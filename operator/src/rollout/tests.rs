//! The scale and upgrade state machines driven round by round against the
//! fake placement and a simulated StatefulSet.

use k8s_openapi::jiff::SignedDuration;

use super::*;
use crate::fixtures::{store, Sim};
use crate::placement_api::StoreState;

/// Runs rounds until the plan settles; returns the plans.
async fn run_until_settled(sim: &mut Sim, desired: i32, max_rounds: usize) -> Vec<Plan> {
    let mut plans = Vec::new();
    for _ in 0..max_rounds {
        let plan = sim.round(desired).await;
        let done = !plan.in_progress() && plan.action.is_none();
        plans.push(plan);
        if done {
            return plans;
        }
    }
    panic!("no steady state after {max_rounds} rounds: {plans:#?}");
}

#[tokio::test]
async fn scale_out_raises_replicas_without_asking_placement() {
    let mut sim = Sim::new(3);
    let plans = run_until_settled(&mut sim, 5, 10).await;
    assert_eq!(plans[0].scale, ScaleStep::ScaleOut { from: 3, to: 5 });
    assert_eq!(sim.replicas, 5);
    assert_eq!(sim.pods.len(), 5);
    assert!(sim.placement.calls().is_empty());
    let stores = sim.placement.view();
    assert_eq!(stores.stores().map(|s| s.len()), Some(5));
}

#[tokio::test]
async fn scale_in_deletes_the_store_waits_for_tombstone_then_shrinks() {
    let mut sim = Sim::new(4);
    let first = sim.round(3).await;
    assert_eq!(
        first.action,
        Some(PlacementAction::DeleteStore { store_id: 4 })
    );
    assert_eq!(
        first.storage_replicas, 4,
        "pod 3 stays while its store leaves"
    );
    // The fake turned Offline into Tombstone after the round: shrink now.
    let second = sim.round(3).await;
    assert_eq!(second.scale, ScaleStep::Shrink { from: 4, to: 3 });
    assert_eq!(second.storage_replicas, 3);
    let rest = run_until_settled(&mut sim, 3, 5).await;
    assert!(rest.iter().all(|p| p.action.is_none()));
    assert_eq!(sim.placement.calls(), ["delete_store 4"]);
    assert_eq!(sim.pods.len(), 3);
}

#[tokio::test]
async fn scale_in_keeps_the_pod_while_its_store_is_offline() {
    let mut sim = Sim::new(4);
    sim.round(3).await;
    // Placement is slow: the store stays Offline for a while.
    for _ in 0..3 {
        sim.placement
            .lock()
            .stores
            .insert(4, store(4, 3, StoreState::Offline, 0));
        let plan = sim.round(3).await;
        assert!(matches!(
            plan.scale,
            ScaleStep::WaitTombstone { store_id: 4, .. }
        ));
        assert_eq!(plan.storage_replicas, 4);
        assert_eq!(plan.action, None);
    }
}

#[tokio::test]
async fn scale_in_two_pods_goes_one_at_a_time() {
    let mut sim = Sim::new(5);
    run_until_settled(&mut sim, 3, 12).await;
    assert_eq!(sim.placement.calls(), ["delete_store 5", "delete_store 4"]);
    assert_eq!(sim.replicas, 3);
}

#[tokio::test]
async fn scale_in_waits_while_placement_is_unreachable() {
    let mut sim = Sim::new(4);
    sim.placement.lock().unreachable = true;
    for _ in 0..3 {
        let plan = sim.round(3).await;
        assert_eq!(
            plan.scale,
            ScaleStep::WaitPlacement {
                replicas: 4,
                ordinal: 3
            }
        );
        assert_eq!(sim.replicas, 4);
    }
}

#[tokio::test]
async fn upgrade_goes_pod_by_pod_with_leader_eviction() {
    let mut sim = Sim::new(3);
    sim.template = 2;
    let mut max_not_ready = 0;
    let mut plans = Vec::new();
    for _ in 0..40 {
        let plan = sim.round(3).await;
        max_not_ready = max_not_ready.max(sim.not_ready());
        let done = plan.upgrade == Some(UpgradeStep::Idle);
        plans.push(plan);
        if done {
            break;
        }
    }
    assert_eq!(
        plans.last().and_then(|p| p.upgrade.clone()),
        Some(UpgradeStep::Idle)
    );
    assert_eq!(sim.restarted, [2, 1, 0], "highest ordinal first");
    assert_eq!(
        sim.placement.calls(),
        [
            "add_evict_leader 3",
            "remove_evict_leader 3",
            "add_evict_leader 2",
            "remove_evict_leader 2",
            "add_evict_leader 1",
            "remove_evict_leader 1",
        ]
    );
    assert_eq!(max_not_ready, 1, "never more than one pod down");
    assert_eq!(sim.partition, 3, "partition closes again");
    assert!(sim.pods.values().all(|p| p.revision == 2 && p.ready));
    assert!(sim.in_flight.is_none());
    // A pod restarts only once its store has no leader left.
    let restarts: Vec<&Plan> = plans
        .iter()
        .filter(|p| matches!(p.upgrade, Some(UpgradeStep::Restart { .. })))
        .collect();
    assert_eq!(restarts.len(), 3);
}

#[tokio::test]
async fn leaders_that_do_not_leave_delay_the_restart_until_the_timeout() {
    let mut sim = Sim::new(3);
    sim.template = 2;
    sim.evict_timeout = SignedDuration::from_secs(60);
    let first = sim.round(3).await;
    assert_eq!(
        first.upgrade,
        Some(UpgradeStep::EvictLeader {
            ordinal: 2,
            store_id: 3
        })
    );
    let mut waits = 0;
    loop {
        // Leaders stick to store 3 (no other replica could take them).
        sim.placement
            .lock()
            .stores
            .insert(3, store(3, 2, StoreState::Up, 5));
        let plan = sim.round(3).await;
        match plan.upgrade {
            Some(UpgradeStep::WaitLeaders { leaders: 5, .. }) => waits += 1,
            Some(UpgradeStep::Restart { ordinal: 2, .. }) => break,
            other => panic!("unexpected step {other:?}"),
        }
        assert!(waits < 20);
    }
    // Rounds are 10 s apart: 60 s of waiting, then the restart.
    assert_eq!(waits, 5);
}

#[tokio::test]
async fn scale_in_waits_for_the_upgrade_step_in_flight() {
    let mut sim = Sim::new(4);
    sim.template = 2;
    let first = sim.round(4).await;
    assert!(matches!(
        first.upgrade,
        Some(UpgradeStep::EvictLeader { ordinal: 3, .. })
    ));
    let deferred = sim.round(3).await;
    assert!(deferred.scale_deferred);
    assert_eq!(deferred.storage_replicas, 4);
    assert_ne!(
        deferred.action,
        Some(PlacementAction::DeleteStore { store_id: 4 })
    );
    // Once the step completes, scale-in proceeds and the upgrade resumes after.
    run_until_settled(&mut sim, 3, 60).await;
    assert_eq!(sim.replicas, 3);
    assert!(sim
        .placement
        .calls()
        .contains(&"delete_store 4".to_string()));
    assert!(sim.pods.values().all(|p| p.revision == 2));
}
