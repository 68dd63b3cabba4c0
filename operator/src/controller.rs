//! The reconcile pipeline, one named step each:
//! dereference (read what exists) -> validate -> decide (pure) -> build
//! (pure) -> apply (server-side, one field manager) -> ask placement ->
//! announce (events) -> write status. Deletion runs `cleanup` behind a
//! finalizer.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use shale_crds::{RetentionAction, TiKVCluster, TiKVClusterStatus};

use crate::builders::{self, BuildInput, Desired};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::naming::{self, Component, FINALIZER, MANAGER};
use crate::observed::{stores_by_ordinal, Observed, PlacementView, PodView, StsView};
use crate::placement_api::{PlacementApi, PlacementError};
use crate::rollout::{self, PlacementAction, Plan, RolloutInput};
use crate::scale::ScaleStep;
use crate::status::{self, Outcome, StatusInput};
use crate::upgrade::UpgradeStep;

/// Operator settings (flags).
#[derive(Clone, Debug)]
pub struct Config {
    /// Image repository for components whose spec names none.
    pub default_image: String,
    /// Restart a storage pod even with leaders left after this long.
    pub evict_leader_timeout: Duration,
    /// Re-check a settled cluster this often (store states, counts).
    pub idle_requeue: Duration,
    /// Re-check this often while scaling, upgrading or starting.
    pub busy_requeue: Duration,
    /// Watch one namespace, or all when None.
    pub namespace: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            default_image: "shale".to_string(),
            evict_leader_timeout: Duration::from_secs(120),
            idle_requeue: Duration::from_secs(300),
            busy_requeue: Duration::from_secs(10),
            namespace: None,
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub placement: Arc<dyn PlacementApi>,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub config: Config,
    /// Base URL of a cluster's placement API from (name, namespace).
    pub placement_url: fn(&str, &str) -> String,
    pub clock: fn() -> Timestamp,
    /// Consecutive failures per object, for exponential backoff.
    failures: Mutex<HashMap<(String, String), u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        placement: Arc<dyn PlacementApi>,
        metrics: Arc<Metrics>,
        config: Config,
        instance: Option<String>,
    ) -> Context {
        let reporter = Reporter {
            controller: MANAGER.to_string(),
            instance,
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            placement,
            metrics,
            config,
            placement_url: naming::placement_url,
            clock: Timestamp::now,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn record_failure(&self, key: (String, String)) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let count = failures.entry(key).or_insert(0);
        *count = count.saturating_add(1);
        *count
    }

    fn clear_failures(&self, key: &(String, String)) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(key);
    }
}

/// Runs the controller until a shutdown signal.
pub async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let (clusters, statefulsets): (Api<TiKVCluster>, Api<StatefulSet>) = match &ctx.config.namespace
    {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client, ns),
        ),
        None => (Api::all(client.clone()), Api::all(client)),
    };
    let owned =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGER}"));
    Controller::new(clusters, watcher::Config::default().any_semantic())
        .owns(statefulsets, owned)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, action)) => tracing::debug!(%object, ?action, "reconciled"),
                Err(e) => tracing::warn!(error = %e, "reconcile failed"),
            }
        })
        .await;
}

fn key(cluster: &TiKVCluster) -> (String, String) {
    (cluster.namespace().unwrap_or_default(), cluster.name_any())
}

/// Entry point per object: the finalizer decides between apply and cleanup.
pub async fn reconcile(cluster: Arc<TiKVCluster>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started();
    let namespace = cluster
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let object_key = key(&cluster);
    let api: Api<TiKVCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    let action = finalizer(&api, FINALIZER, cluster, |event| async {
        match event {
            Finalizer::Apply(cluster) => apply(&cluster, &ctx).await,
            Finalizer::Cleanup(cluster) => cleanup(&cluster, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))?;
    ctx.clear_failures(&object_key);
    Ok(action)
}

/// Exponential backoff per object: 5 s, 10 s, 20 s, ... up to 5 minutes.
pub fn error_policy(cluster: Arc<TiKVCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .failures
        .with_label_values(&[error.metric_label()])
        .inc();
    let attempt = ctx.record_failure(key(&cluster));
    let delay = backoff(attempt);
    tracing::warn!(cluster = %cluster.name_any(), %error, attempt, ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}

pub fn backoff(attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(6);
    Duration::from_secs(5u64 << exponent).min(Duration::from_secs(300))
}

/// The pipeline for a live cluster.
async fn apply(cluster: &TiKVCluster, ctx: &Context) -> Result<Action> {
    let observed = dereference(cluster, ctx).await?;
    if let Err(invalid) = cluster.spec.validate() {
        return report_invalid(cluster, &observed, &invalid.0, ctx).await;
    }
    if cluster.spec.paused {
        write_status(cluster, &observed, Outcome::Paused, ctx).await?;
        return Ok(Action::requeue(ctx.config.idle_requeue));
    }
    let plan = decide(cluster, &observed, ctx);
    let desired = build(cluster, &plan, ctx)?;
    apply_objects(&desired, ctx).await?;
    let asked = ask_placement(cluster, &plan, ctx).await;
    let failure = asked.as_ref().err().map(ToString::to_string);
    announce(cluster, &observed, &plan, failure.as_deref(), ctx).await;
    let reconciled = Outcome::Reconciled {
        plan: &plan,
        failure: failure.as_deref(),
    };
    let status = write_status(cluster, &observed, reconciled, ctx).await?;
    asked?;
    let ready = status
        .conditions
        .iter()
        .any(|c| c.type_ == status::READY && c.status == "True");
    Ok(Action::requeue(if plan.in_progress() || !ready {
        ctx.config.busy_requeue
    } else {
        ctx.config.idle_requeue
    }))
}

fn names(cluster: &TiKVCluster) -> Result<(String, String)> {
    let namespace = cluster
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    Ok((cluster.name_any(), namespace))
}

fn read_error(what: String) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Read { what, source }
}

/// Step 1: the StatefulSets, the storage pods and placement's stores.
async fn dereference(cluster: &TiKVCluster, ctx: &Context) -> Result<Observed> {
    let (name, ns) = names(cluster)?;
    let statefulsets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
    let mut views = Vec::new();
    for component in [Component::Placement, Component::Storage] {
        let sts_name = naming::statefulset_name(&name, component);
        let sts = statefulsets
            .get_opt(&sts_name)
            .await
            .map_err(read_error(format!("StatefulSet {ns}/{sts_name}")))?;
        views.push(sts.as_ref().map(StsView::of));
    }
    let storage = views.pop().flatten();
    let placement = views.pop().flatten();

    let storage_sts = naming::statefulset_name(&name, Component::Storage);
    let storage_pods = if storage.is_some() {
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
        let selector = naming::label_selector(&naming::selector_labels(&name, Component::Storage));
        pods.list(&ListParams::default().labels(&selector))
            .await
            .map_err(read_error(format!("pods of {ns}/{storage_sts}")))?
            .items
            .iter()
            .filter_map(|p| PodView::of(&storage_sts, p))
            .collect()
    } else {
        Vec::new()
    };

    let placement_api = match &placement {
        None => PlacementView::Unreachable("placement is not created yet".into()),
        Some(p) if p.ready_replicas == 0 => {
            PlacementView::Unreachable("no placement pod is ready".into())
        }
        Some(_) => ask_stores(&name, &ns, ctx).await,
    };
    Ok(Observed {
        placement,
        storage,
        storage_pods,
        placement_api,
    })
}

async fn ask_stores(name: &str, ns: &str, ctx: &Context) -> PlacementView {
    let url = (ctx.placement_url)(name, ns);
    let stores = match ctx.placement.stores(&url).await {
        Ok(stores) => stores,
        Err(e) => return PlacementView::Unreachable(e.to_string()),
    };
    let evicting = match ctx.placement.evict_leader_stores(&url).await {
        Ok(evicting) => evicting,
        Err(e) => return PlacementView::Unreachable(e.to_string()),
    };
    PlacementView::Known {
        stores: stores_by_ordinal(name, ns, stores),
        evicting,
    }
}

/// A spec that cannot be reconciled: say so once in status and an event,
/// change nothing, and wait for the spec to change (no retry loop).
async fn report_invalid(
    cluster: &TiKVCluster,
    observed: &Observed,
    message: &str,
    ctx: &Context,
) -> Result<Action> {
    tracing::warn!(cluster = %cluster.name_any(), message, "invalid spec");
    publish(cluster, ctx, EventType::Warning, "InvalidSpec", message).await;
    write_status(cluster, observed, Outcome::Invalid(message), ctx).await?;
    Ok(Action::await_change())
}

/// Step 3: the round's decision (pure).
fn decide(cluster: &TiKVCluster, observed: &Observed, ctx: &Context) -> Plan {
    let timeout =
        SignedDuration::try_from(ctx.config.evict_leader_timeout).unwrap_or(SignedDuration::MAX);
    rollout::plan(&RolloutInput {
        desired_storage: cluster.spec.storage.replicas,
        observed,
        in_flight: cluster.status.as_ref().and_then(|s| s.upgrade.as_ref()),
        now: (ctx.clock)(),
        evict_timeout: timeout,
    })
}

/// Step 4: the desired objects (pure).
fn build(cluster: &TiKVCluster, plan: &Plan, ctx: &Context) -> Result<Desired> {
    let (name, ns) = names(cluster)?;
    let owner = cluster
        .controller_owner_ref(&())
        .ok_or(Error::MissingField("metadata.uid"))?;
    builders::build(&BuildInput {
        name: &name,
        namespace: &ns,
        owner,
        spec: &cluster.spec,
        default_image: &ctx.config.default_image,
        storage_replicas: plan.storage_replicas,
        storage_partition: plan.storage_partition,
    })
    .map_err(|e| Error::Build {
        what: format!("{ns}/{name}"),
        message: e.to_string(),
    })
}

/// Step 5: server-side apply of every object with one field manager.
async fn apply_objects(desired: &Desired, ctx: &Context) -> Result<()> {
    for o in &desired.services {
        apply_one(o, ctx).await?;
    }
    for o in &desired.config_maps {
        apply_one(o, ctx).await?;
    }
    for o in &desired.stateful_sets {
        apply_one(o, ctx).await?;
    }
    for o in &desired.pod_disruption_budgets {
        apply_one(o, ctx).await?;
    }
    Ok(())
}

async fn apply_one<K>(object: &K, ctx: &Context) -> Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug,
{
    let kind = K::kind(&()).to_string();
    let name = object.meta().name.clone().unwrap_or_default();
    let ns = object.meta().namespace.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .map(drop)
    .map_err(|source| Error::Apply {
        kind,
        name: format!("{ns}/{name}"),
        source,
    })
}

/// Step 6: at most one request to placement.
async fn ask_placement(cluster: &TiKVCluster, plan: &Plan, ctx: &Context) -> Result<()> {
    let Some(action) = plan.action else {
        return Ok(());
    };
    let (name, ns) = names(cluster)?;
    let url = (ctx.placement_url)(&name, &ns);
    let (label, result) = match action {
        PlacementAction::DeleteStore { store_id } => (
            format!("delete store {store_id}"),
            ctx.placement.delete_store(&url, store_id).await,
        ),
        PlacementAction::AddEvictLeader { store_id } => (
            format!("evict leaders from store {store_id}"),
            ctx.placement.add_evict_leader(&url, store_id).await,
        ),
        PlacementAction::RemoveEvictLeader { store_id } => (
            format!("stop evicting leaders from store {store_id}"),
            ctx.placement.remove_evict_leader(&url, store_id).await,
        ),
    };
    let kind = match action {
        PlacementAction::DeleteStore { .. } => "delete_store",
        PlacementAction::AddEvictLeader { .. } => "add_evict_leader",
        PlacementAction::RemoveEvictLeader { .. } => "remove_evict_leader",
    };
    ctx.metrics
        .placement_actions
        .with_label_values(&[kind])
        .inc();
    result.map_err(|source: PlacementError| Error::Placement {
        action: label,
        source,
    })
}

/// Step 7: events for what changed this round.
async fn announce(
    cluster: &TiKVCluster,
    observed: &Observed,
    plan: &Plan,
    failure: Option<&str>,
    ctx: &Context,
) {
    let name = cluster.name_any();
    let pod = |ordinal: i32| naming::pod_name(&name, Component::Storage, ordinal);
    let mut events: Vec<(EventType, &str, String)> = Vec::new();
    match &plan.scale {
        ScaleStep::Create { replicas } if observed.placement.is_none() => events.push((
            EventType::Normal,
            "Creating",
            format!(
                "creating {} placement and {replicas} storage pods",
                cluster.spec.placement.replicas
            ),
        )),
        ScaleStep::ScaleOut { from, to } => events.push((
            EventType::Normal,
            "ScalingOut",
            format!("storage {from} -> {to} pods"),
        )),
        ScaleStep::Shrink { from, to } => events.push((
            EventType::Normal,
            "ScalingIn",
            format!("store of {} is gone; storage {from} -> {to} pods", pod(*to)),
        )),
        _ => {}
    }
    match (plan.action, failure) {
        (Some(_), Some(failure)) => events.push((
            EventType::Warning,
            "PlacementRequestFailed",
            failure.to_string(),
        )),
        (Some(PlacementAction::DeleteStore { store_id }), None) => {
            if let ScaleStep::RemoveStore { ordinal, .. } = plan.scale {
                events.push((
                    EventType::Normal,
                    "RemovingStore",
                    format!(
                        "asked placement to remove store {store_id} of {}",
                        pod(ordinal)
                    ),
                ));
            }
        }
        (Some(PlacementAction::AddEvictLeader { store_id }), None) => events.push((
            EventType::Normal,
            "EvictingLeaders",
            format!("moving leaders off store {store_id} before its pod restarts"),
        )),
        (Some(PlacementAction::RemoveEvictLeader { store_id }), None) => events.push((
            EventType::Normal,
            "PodUpgraded",
            format!("store {store_id} runs version {}", cluster.spec.version),
        )),
        (None, _) => {}
    }
    if let Some(UpgradeStep::Restart { ordinal, .. }) = &plan.upgrade {
        let lowered = observed.storage.as_ref().and_then(|s| s.partition) != Some(*ordinal);
        if lowered {
            events.push((
                EventType::Normal,
                "RestartingPod",
                format!(
                    "{} restarts with version {}",
                    pod(*ordinal),
                    cluster.spec.version
                ),
            ));
        }
    }
    for (type_, reason, note) in events {
        publish(cluster, ctx, type_, reason, &note).await;
    }
}

async fn publish(cluster: &TiKVCluster, ctx: &Context, type_: EventType, reason: &str, note: &str) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note.to_string()),
        action: "Reconcile".to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &cluster.object_ref(&())).await {
        tracing::warn!(error = %e, reason, "cannot publish event");
    }
}

/// Step 8: status, on every reconcile.
async fn write_status(
    cluster: &TiKVCluster,
    observed: &Observed,
    outcome: Outcome<'_>,
    ctx: &Context,
) -> Result<TiKVClusterStatus> {
    let (name, ns) = names(cluster)?;
    let status = status::build(&StatusInput {
        name: &name,
        namespace: &ns,
        generation: cluster.metadata.generation,
        previous: cluster.status.as_ref(),
        spec: &cluster.spec,
        observed,
        outcome,
        now: (ctx.clock)(),
    });
    let patch = serde_json::json!({
        "apiVersion": TiKVCluster::api_version(&()),
        "kind": TiKVCluster::kind(&()),
        "status": status,
    });
    let api: Api<TiKVCluster> = Api::namespaced(ctx.client.clone(), &ns);
    api.patch_status(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|source| Error::Status {
        name: format!("{ns}/{name}"),
        source,
    })?;
    Ok(status)
}

/// Deletion: owner references remove every object the operator made; the
/// claims outlive them unless `pvcRetentionPolicy.whenDeleted` is Delete.
async fn cleanup(cluster: &TiKVCluster, ctx: &Context) -> Result<Action> {
    let (name, ns) = names(cluster)?;
    if cluster.spec.pvc_retention_policy.when_deleted == RetentionAction::Delete {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
        claims
            .delete_collection(
                &DeleteParams::default(),
                &ListParams::default().labels(&naming::cluster_selector(&name)),
            )
            .await
            .map_err(|source| Error::Cleanup {
                name: format!("{ns}/{name}"),
                source,
            })?;
        publish(
            cluster,
            ctx,
            EventType::Normal,
            "DeletedVolumes",
            "deleted the cluster's volume claims (pvcRetentionPolicy.whenDeleted: Delete)",
        )
        .await;
    } else {
        publish(
            cluster,
            ctx,
            EventType::Normal,
            "RetainedVolumes",
            "kept the cluster's volume claims (pvcRetentionPolicy.whenDeleted: Retain)",
        )
        .await;
    }
    Ok(Action::await_change())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
