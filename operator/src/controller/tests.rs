//! The reconciler against a mock API server: every call in order, with its
//! exact path (field manager included) and the bodies that matter.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::SignedDuration;
use kube::runtime::controller::Action;
use serde_json::{json, Value};
use shale_crds::{RetentionAction, TiKVCluster, TiKVClusterStatus, UpgradeProgress};

use super::*;
use crate::fixtures::{cluster, spec, store, FakePlacement};
use crate::mock_api::{self, test_now, ApiServer};
use crate::placement_api::StoreState;

const CLUSTER: &str = "/apis/shale.dev/v1alpha1/namespaces/default/tikvclusters/basic";
const STS: &str = "/apis/apps/v1/namespaces/default/statefulsets";
const SVC: &str = "/api/v1/namespaces/default/services";
const CM: &str = "/api/v1/namespaces/default/configmaps";
const PDB: &str = "/apis/policy/v1/namespaces/default/poddisruptionbudgets";
const STORAGE_PODS: &str = "/api/v1/namespaces/default/pods?&labelSelector=\
    app.kubernetes.io%2Fcomponent%3Dstorage%2C\
    app.kubernetes.io%2Finstance%3Dbasic%2Capp.kubernetes.io%2Fname%3Dshale";

fn sts_json(
    name: &str,
    replicas: i32,
    partition: i32,
    ready: i32,
    current: &str,
    update: &str,
) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": "default", "generation": 2},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {}},
            "serviceName": format!("{name}-peer"),
            "template": {},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": partition}}
        },
        "status": {
            "observedGeneration": 2, "replicas": replicas, "readyReplicas": ready,
            "updatedReplicas": if current == update { replicas } else { 0 },
            "currentRevision": current, "updateRevision": update
        }
    })
}

fn pods_json(revisions: &[&str]) -> Value {
    let items: Vec<Value> = revisions
        .iter()
        .enumerate()
        .map(|(i, rev)| {
            json!({
                "metadata": {
                    "name": format!("basic-storage-{i}"),
                    "labels": {"controller-revision-hash": rev}
                },
                "status": {"conditions": [{"type": "Ready", "status": "True"}]}
            })
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
}

fn cluster_json(cluster: &TiKVCluster) -> Value {
    serde_json::to_value(cluster).unwrap()
}

/// Placement and storage StatefulSets exist, storage at `storage` replicas.
async fn expect_existing(
    server: &mut ApiServer,
    storage: i32,
    partition: i32,
    revisions: (&str, &str),
    pods: &[&str],
) {
    server
        .expect("GET", &format!("{STS}/basic-placement"))
        .await
        .ok(&sts_json("basic-placement", 3, 0, 3, "p1", "p1"));
    server
        .expect("GET", &format!("{STS}/basic-storage"))
        .await
        .ok(&sts_json(
            "basic-storage",
            storage,
            partition,
            storage,
            revisions.0,
            revisions.1,
        ));
    server
        .expect("GET", STORAGE_PODS)
        .await
        .ok(&pods_json(pods));
}

/// The nine applies in order; returns the storage StatefulSet body.
async fn expect_applies(server: &mut ApiServer) -> Value {
    for name in [
        "basic-placement",
        "basic-placement-peer",
        "basic-storage-peer",
    ] {
        let body = server.expect_apply(SVC, name).await;
        assert_eq!(body["kind"], "Service");
        assert_eq!(body["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(body["metadata"]["ownerReferences"][0]["controller"], true);
    }
    for name in ["basic-placement-config", "basic-storage-config"] {
        assert_eq!(server.expect_apply(CM, name).await["kind"], "ConfigMap");
    }
    let placement = server.expect_apply(STS, "basic-placement").await;
    assert_eq!(placement["spec"]["replicas"], 3);
    let storage = server.expect_apply(STS, "basic-storage").await;
    for name in ["basic-placement", "basic-storage"] {
        assert_eq!(
            server.expect_apply(PDB, name).await["kind"],
            "PodDisruptionBudget"
        );
    }
    storage
}

/// The status apply; answers with the cluster carrying it, returns it.
async fn expect_status(server: &mut ApiServer, mut cluster: TiKVCluster) -> TiKVClusterStatus {
    let call = server
        .expect(
            "PATCH",
            &format!("{CLUSTER}/status{}", mock_api::FIELD_MANAGER_QUERY),
        )
        .await;
    assert_eq!(call.body["apiVersion"], "shale.dev/v1alpha1");
    assert_eq!(call.body["kind"], "TiKVCluster");
    assert!(
        call.body.get("spec").is_none(),
        "status apply carries status only"
    );
    let status: TiKVClusterStatus = serde_json::from_value(call.body["status"].clone()).unwrap();
    cluster.status = Some(status.clone());
    call.ok(&cluster_json(&cluster));
    status
}

fn condition<'a>(status: &'a TiKVClusterStatus, type_: &str) -> (&'a str, &'a str) {
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition"));
    assert_eq!(c.observed_generation, Some(1));
    (c.status.as_str(), c.reason.as_str())
}

fn up_stores(n: i32, leaders: u64) -> Arc<FakePlacement> {
    FakePlacement::with_stores(
        (0..n)
            .map(|o| store(o as u64 + 1, o, StoreState::Up, leaders))
            .collect(),
    )
}

#[tokio::test]
async fn adds_the_finalizer_before_anything_else() {
    let mut c = cluster(spec(3, 3));
    c.metadata.finalizers = None;
    let (ctx, mut server) = mock_api::context(up_stores(0, 0));
    let response = cluster_json(&c);
    let script = async move {
        let call = server.expect("PATCH", &format!("{CLUSTER}?")).await;
        assert_eq!(
            call.body,
            json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": ["shale.dev/cleanup"]}
            ])
        );
        call.ok(&response);
    };
    let action = mock_api::run(ctx.clone(), reconcile(Arc::new(c), ctx), script).await;
    assert_eq!(action.unwrap(), Action::await_change());
}

#[tokio::test]
async fn creates_a_new_cluster() {
    let c = cluster(spec(3, 3));
    let placement = up_stores(0, 0);
    let (ctx, mut server) = mock_api::context(placement.clone());
    let for_status = c.clone();
    let script = async move {
        server
            .expect("GET", &format!("{STS}/basic-placement"))
            .await
            .not_found();
        server
            .expect("GET", &format!("{STS}/basic-storage"))
            .await
            .not_found();
        let storage = expect_applies(&mut server).await;
        assert_eq!(storage["spec"]["replicas"], 3);
        assert_eq!(
            storage["spec"]["updateStrategy"]["rollingUpdate"]["partition"],
            3
        );
        assert_eq!(
            storage["spec"]["template"]["spec"]["containers"][0]["image"],
            "shale:v1"
        );
        let event = server.expect_event("Creating").await;
        assert_eq!(event["type"], "Normal");
        let status = expect_status(&mut server, for_status).await;
        assert_eq!(status.phase, Some(shale_crds::Phase::Creating));
        assert_eq!(condition(&status, "Ready"), ("False", "PodsNotReady"));
        assert_eq!(condition(&status, "Progressing"), ("True", "Creating"));
        assert_eq!(condition(&status, "Degraded"), ("False", "AsExpected"));
    };
    let action = mock_api::run(ctx.clone(), reconcile(Arc::new(c), ctx), script).await;
    assert_eq!(
        action.unwrap(),
        Action::requeue(Config::default().busy_requeue)
    );
    assert!(placement.calls().is_empty());
}

#[tokio::test]
async fn scales_out_by_raising_replicas() {
    let c = cluster(spec(3, 4));
    let placement = up_stores(3, 1);
    let (ctx, mut server) = mock_api::context(placement.clone());
    let for_status = c.clone();
    let script = async move {
        expect_existing(&mut server, 3, 3, ("r1", "r1"), &["r1", "r1", "r1"]).await;
        let storage = expect_applies(&mut server).await;
        assert_eq!(storage["spec"]["replicas"], 4);
        // The new pod (ordinal 3) is at or above the partition: it starts
        // from the newest template; the partition closes on the next round.
        assert_eq!(
            storage["spec"]["updateStrategy"]["rollingUpdate"]["partition"],
            3
        );
        let event = server.expect_event("ScalingOut").await;
        assert_eq!(event["note"], "storage 3 -> 4 pods");
        let status = expect_status(&mut server, for_status).await;
        assert_eq!(status.phase, Some(shale_crds::Phase::Scaling));
        assert_eq!(condition(&status, "Progressing"), ("True", "ScalingOut"));
        assert_eq!(status.stores.len(), 3);
    };
    mock_api::run(ctx.clone(), reconcile(Arc::new(c), ctx), script)
        .await
        .unwrap();
    assert!(placement.calls().is_empty());
}

/// One scale-in round with the storage StatefulSet at `current` replicas;
/// returns the replicas applied and the event reason, if any.
async fn scale_in_round(
    placement: &Arc<FakePlacement>,
    current: i32,
    expect_event: Option<&'static str>,
) -> i64 {
    let c = cluster(spec(3, 3));
    let (ctx, mut server) = mock_api::context(placement.clone());
    let script = async move {
        let pods = vec!["r1"; current as usize];
        expect_existing(&mut server, current, current, ("r1", "r1"), &pods).await;
        let storage = expect_applies(&mut server).await;
        if let Some(reason) = expect_event {
            server.expect_event(reason).await;
        }
        let status = expect_status(&mut server, c.clone()).await;
        assert_eq!(status.phase, Some(shale_crds::Phase::Scaling));
        assert_eq!(condition(&status, "Progressing"), ("True", "ScalingIn"));
        storage["spec"]["replicas"].as_i64().unwrap()
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let script = async move {
        let _ = tx.send(script.await);
    };
    let c = Arc::new(cluster(spec(3, 3)));
    mock_api::run(ctx.clone(), reconcile(c, ctx), script)
        .await
        .unwrap();
    rx.await.unwrap()
}

#[tokio::test]
async fn scales_in_through_placement_then_shrinks() {
    let placement = up_stores(4, 1);
    // Round 1: the store of the highest pod is deleted; the pod stays.
    let replicas = scale_in_round(&placement, 4, Some("RemovingStore")).await;
    assert_eq!(replicas, 4);
    assert_eq!(placement.calls(), ["delete_store 4"]);
    assert_eq!(placement.lock().stores[&4].state, StoreState::Offline);
    // Round 2: Offline, not yet Tombstone: wait, no new request, no event.
    let replicas = scale_in_round(&placement, 4, None).await;
    assert_eq!(replicas, 4);
    assert_eq!(placement.calls().len(), 1);
    // Round 3: Tombstone: the StatefulSet shrinks.
    placement.tick();
    let replicas = scale_in_round(&placement, 4, Some("ScalingIn")).await;
    assert_eq!(replicas, 3);
    assert_eq!(placement.calls(), ["delete_store 4"]);
}

/// One upgrade round: the pods' revisions, the partition observed and the
/// step recorded in status; returns (partition applied, status).
async fn upgrade_round(
    placement: &Arc<FakePlacement>,
    partition: i32,
    pods: &'static [&'static str],
    in_flight: Option<UpgradeProgress>,
    event: &'static str,
) -> (i64, TiKVClusterStatus) {
    let mut s = spec(3, 3);
    s.version = "v2".into();
    let mut c = cluster(s);
    c.status = Some(TiKVClusterStatus {
        upgrade: in_flight,
        ..TiKVClusterStatus::default()
    });
    let (ctx, mut server) = mock_api::context(placement.clone());
    let for_status = c.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let script = async move {
        expect_existing(&mut server, 3, partition, ("r1", "r2"), pods).await;
        let storage = expect_applies(&mut server).await;
        assert_eq!(
            storage["spec"]["template"]["spec"]["containers"][0]["image"],
            "shale:v2"
        );
        server.expect_event(event).await;
        let status = expect_status(&mut server, for_status).await;
        assert_eq!(status.phase, Some(shale_crds::Phase::Upgrading));
        assert_eq!(condition(&status, "Progressing"), ("True", "Upgrading"));
        let partition = storage["spec"]["updateStrategy"]["rollingUpdate"]["partition"]
            .as_i64()
            .unwrap();
        let _ = tx.send((partition, status));
    };
    mock_api::run(ctx.clone(), reconcile(Arc::new(c), ctx), script)
        .await
        .unwrap();
    rx.await.unwrap()
}

#[tokio::test]
async fn upgrades_a_pod_after_evicting_its_leaders() {
    let placement = up_stores(3, 4);
    // Round 1: leaders leave the highest pod's store; no pod rolls yet.
    let (partition, status) =
        upgrade_round(&placement, 3, &["r1", "r1", "r1"], None, "EvictingLeaders").await;
    assert_eq!(partition, 3);
    assert_eq!(placement.calls(), ["add_evict_leader 3"]);
    let progress = status.upgrade.clone().unwrap();
    assert_eq!((progress.ordinal, progress.store_id), (2, 3));
    assert_eq!(progress.evicting_since, Time(test_now()));

    // Round 2: no leader left: the partition drops to let pod 2 restart.
    placement.tick();
    let (partition, status) = upgrade_round(
        &placement,
        3,
        &["r1", "r1", "r1"],
        Some(progress.clone()),
        "RestartingPod",
    )
    .await;
    assert_eq!(partition, 2);
    assert_eq!(status.upgrade, Some(progress.clone()));

    // Round 3: pod 2 runs the new revision and is ready: leaders may return.
    let (partition, status) = upgrade_round(
        &placement,
        2,
        &["r1", "r1", "r2"],
        Some(progress),
        "PodUpgraded",
    )
    .await;
    assert_eq!(partition, 2);
    assert_eq!(status.upgrade, None);
    assert_eq!(
        placement.calls(),
        ["add_evict_leader 3", "remove_evict_leader 3"]
    );
}

#[tokio::test]
async fn restarts_anyway_once_the_eviction_timeout_passes() {
    let placement = up_stores(3, 4);
    placement.lock().evicting.insert(3);
    let since = UpgradeProgress {
        ordinal: 2,
        store_id: 3,
        evicting_since: Time(test_now() - SignedDuration::from_secs(600)),
    };
    let (partition, _) = upgrade_round(
        &placement,
        3,
        &["r1", "r1", "r1"],
        Some(since),
        "RestartingPod",
    )
    .await;
    assert_eq!(partition, 2);
}

#[tokio::test]
async fn deletion_removes_claims_then_the_finalizer() {
    let mut s = spec(3, 3);
    s.pvc_retention_policy.when_deleted = RetentionAction::Delete;
    let mut c = cluster(s);
    c.metadata.deletion_timestamp = Some(Time(test_now()));
    let (ctx, mut server) = mock_api::context(up_stores(0, 0));
    let response = cluster_json(&c);
    let script = async move {
        server
            .expect(
                "DELETE",
                "/api/v1/namespaces/default/persistentvolumeclaims?&labelSelector=\
                 app.kubernetes.io%2Fname%3Dshale%2Capp.kubernetes.io%2Finstance%3Dbasic",
            )
            .await
            .ok(&json!({"apiVersion": "v1", "kind": "PersistentVolumeClaimList", "metadata": {}, "items": []}));
        server.expect_event("DeletedVolumes").await;
        let call = server.expect("PATCH", &format!("{CLUSTER}?")).await;
        assert_eq!(
            call.body,
            json!([
                {"op": "test", "path": "/metadata/finalizers/0", "value": "shale.dev/cleanup"},
                {"op": "remove", "path": "/metadata/finalizers/0"}
            ])
        );
        call.ok(&response);
    };
    let action = mock_api::run(ctx.clone(), reconcile(Arc::new(c), ctx), script).await;
    assert_eq!(action.unwrap(), Action::await_change());
}

#[tokio::test]
async fn deletion_keeps_claims_by_default() {
    let mut c = cluster(spec(3, 3));
    c.metadata.deletion_timestamp = Some(Time(test_now()));
    let (ctx, mut server) = mock_api::context(up_stores(0, 0));
    let response = cluster_json(&c);
    let script = async move {
        server.expect_event("RetainedVolumes").await;
        server
            .expect("PATCH", &format!("{CLUSTER}?"))
            .await
            .ok(&response);
    };
    mock_api::run(ctx.clone(), reconcile(Arc::new(c), ctx), script)
        .await
        .unwrap();
}

#[tokio::test]
async fn invalid_spec_sets_a_condition_and_an_event_and_waits() {
    let mut s = spec(3, 3);
    s.storage.config = Some("sync-log = [[[".into());
    let c = cluster(s);
    let (ctx, mut server) = mock_api::context(up_stores(3, 1));
    let for_status = c.clone();
    let script = async move {
        expect_existing(&mut server, 3, 3, ("r1", "r1"), &["r1", "r1", "r1"]).await;
        // Nothing is applied: straight to the event and the status.
        let event = server.expect_event("InvalidSpec").await;
        assert_eq!(event["type"], "Warning");
        assert!(event["note"]
            .as_str()
            .unwrap()
            .starts_with("storage.config is not valid TOML"));
        let status = expect_status(&mut server, for_status).await;
        assert_eq!(status.phase, Some(shale_crds::Phase::Failed));
        assert_eq!(condition(&status, "Degraded"), ("True", "InvalidSpec"));
        assert_eq!(condition(&status, "Progressing"), ("False", "InvalidSpec"));
    };
    let action = mock_api::run(ctx.clone(), reconcile(Arc::new(c), ctx.clone()), script).await;
    // Not an error: no retry loop, the next change to the spec wakes it.
    assert_eq!(action.unwrap(), Action::await_change());
}

#[tokio::test]
async fn a_failed_placement_request_is_reported_and_backs_off() {
    let placement = up_stores(4, 1);
    let c = cluster(spec(3, 3));
    let (ctx, mut server) = mock_api::context(placement.clone());
    let for_status = c.clone();
    // Placement answers reads but refuses to delete the store.
    placement.lock().refuse_changes = true;
    let script = async move {
        expect_existing(&mut server, 4, 4, ("r1", "r1"), &["r1", "r1", "r1", "r1"]).await;
        expect_applies(&mut server).await;
        let event = server.expect_event("PlacementRequestFailed").await;
        assert_eq!(event["type"], "Warning");
        let status = expect_status(&mut server, for_status).await;
        assert_eq!(
            condition(&status, "Degraded"),
            ("True", "PlacementRequestFailed")
        );
    };
    let cluster = Arc::new(c);
    let result = mock_api::run(ctx.clone(), reconcile(cluster.clone(), ctx.clone()), script).await;
    let err = result.unwrap_err();
    assert!(matches!(err, Error::Finalizer(_)), "{err}");
    assert!(err.to_string().contains("delete store 4"), "{err}");
    // Backoff grows per failure and resets on success.
    assert_eq!(
        error_policy(cluster.clone(), &err, ctx.clone()),
        Action::requeue(backoff(1))
    );
    assert_eq!(
        error_policy(cluster, &err, ctx),
        Action::requeue(backoff(2))
    );
    assert_eq!(backoff(1).as_secs(), 5);
    assert_eq!(backoff(2).as_secs(), 10);
    assert_eq!(backoff(30).as_secs(), 300);
}
