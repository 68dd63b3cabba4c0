//! The `TiKVCluster` resource (API group `shale.dev`, version `v1alpha1`).
//!
//! The types live here so the operator, the chart's CRD and the examples agree
//! on one shape. The schema carries the rules the API server enforces
//! (minimums, and CEL rules across fields); [`TiKVClusterSpec::validate`]
//! repeats them and checks what a schema cannot (the config text), so the
//! operator never acts on a spec that slipped past an older CRD.

mod status;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use status::{ComponentStatus, Phase, StoreStatus, TiKVClusterStatus, UpgradeProgress};

/// API group of every Shale resource.
pub const GROUP: &str = "shale.dev";
/// The one served version.
pub const VERSION: &str = "v1alpha1";

/// Desired state of one Shale cluster: a placement service and storage nodes.
// Each printcolumn repeats keys like `type_`, which clippy mistakes for
// duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "shale.dev",
    version = "v1alpha1",
    kind = "TiKVCluster",
    plural = "tikvclusters",
    shortname = "tkc",
    category = "shale",
    namespaced,
    status = "TiKVClusterStatus",
    derive = "PartialEq",
    doc = "A Shale cluster: placement (PD's role) and storage nodes (TiKV's role).",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.version"),
    printcolumn(
        name = "Placement",
        type_ = "integer",
        description = "Ready placement replicas",
        json_path = ".status.placement.readyReplicas"
    ),
    printcolumn(
        name = "Stores",
        type_ = "integer",
        description = "Ready storage replicas",
        json_path = ".status.storage.readyReplicas"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self.storage.replicas >= self.maxReplicas").message("storage.replicas must be at least maxReplicas"))]
#[serde(rename_all = "camelCase")]
pub struct TiKVClusterSpec {
    /// Image tag of every component, e.g. `v0.1.0`. Changing it upgrades the
    /// cluster: placement first, then storage nodes one pod at a time.
    #[schemars(length(min = 1, max = 128))]
    pub version: String,
    /// Replicas of each Region (PD's `max-replicas`).
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1, max = 7))]
    pub max_replicas: i32,
    /// While true the operator changes nothing and only reports status.
    #[serde(default)]
    pub paused: bool,
    /// The placement service. Its replica count is fixed at creation: the
    /// members form one group from their initial peer list.
    #[x_kube(validation = Rule::new("self.replicas == oldSelf.replicas").message("placement.replicas cannot change after creation"))]
    pub placement: ComponentSpec,
    /// The storage nodes. Scaling in removes the highest-ordinal stores
    /// through placement before their pods go away.
    pub storage: ComponentSpec,
    /// What happens to the volumes of removed or deleted pods.
    #[serde(default)]
    pub pvc_retention_policy: PvcRetentionPolicy,
}

/// One component: how many pods, what they run and what they keep.
#[derive(KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[x_kube(validation = Rule::new("has(self.storage) == has(oldSelf.storage) && (!has(self.storage) || self.storage == oldSelf.storage)").message("storage (volume size and class) cannot change after creation"))]
#[serde(rename_all = "camelCase")]
pub struct ComponentSpec {
    /// Number of pods.
    #[schemars(range(min = 1, max = 1000))]
    pub replicas: i32,
    /// Image repository without a tag; the tag is `spec.version`. Defaults to
    /// the operator's default image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// CPU and memory for the server container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// The persistent volume each pod gets for its data directory; fixed at
    /// creation (a StatefulSet's claim templates cannot change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<VolumeSpec>,
    /// Extra server configuration as TOML text, written to the server's
    /// config file (keys as in the server's `--config` file, kebab-case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
}

/// A pod's data volume.
#[derive(JsonSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSpec {
    /// Requested size, e.g. `10Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Quantity>,
    /// Storage class of the claims; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// Keep or delete volume claims, mirroring the StatefulSet policy of the
/// same name.
#[derive(JsonSchema, Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PvcRetentionPolicy {
    /// Claims of pods removed by scale-in. Their store is Tombstone and
    /// cannot rejoin, so the default is `Delete`.
    #[serde(default = "delete")]
    pub when_scaled: RetentionAction,
    /// Claims left when the TiKVCluster is deleted. The default `Retain`
    /// keeps the data until someone deletes the claims.
    #[serde(default = "retain")]
    pub when_deleted: RetentionAction,
}

impl Default for PvcRetentionPolicy {
    fn default() -> Self {
        PvcRetentionPolicy {
            when_scaled: RetentionAction::Delete,
            when_deleted: RetentionAction::Retain,
        }
    }
}

/// `Retain` or `Delete`.
#[derive(JsonSchema, Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub enum RetentionAction {
    Retain,
    Delete,
}

impl RetentionAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RetentionAction::Retain => "Retain",
            RetentionAction::Delete => "Delete",
        }
    }
}

fn delete() -> RetentionAction {
    RetentionAction::Delete
}

fn retain() -> RetentionAction {
    RetentionAction::Retain
}

fn default_max_replicas() -> i32 {
    3
}

/// Placement config keys the operator sets itself (flags or the spec).
pub const PLACEMENT_MANAGED_KEYS: &[&str] = &[
    "name",
    "data-dir",
    "listen-addr",
    "advertise-addr",
    "initial-cluster",
    "max-replicas",
];
/// Storage node config keys the operator sets itself through flags.
pub const STORAGE_MANAGED_KEYS: &[&str] = &[
    "data-dir",
    "listen-addr",
    "advertise-addr",
    "status-addr",
    "pd-endpoints",
];

/// Why a spec cannot be reconciled; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSpec(pub String);

impl TiKVClusterSpec {
    /// The schema's rules, plus what only code can check: the config texts
    /// must be TOML tables that leave operator-managed keys alone.
    pub fn validate(&self) -> Result<(), InvalidSpec> {
        if self.version.trim().is_empty() {
            return Err(InvalidSpec("version must not be empty".into()));
        }
        if self.max_replicas < 1 {
            return Err(InvalidSpec("maxReplicas must be at least 1".into()));
        }
        for (name, component) in [("placement", &self.placement), ("storage", &self.storage)] {
            if component.replicas < 1 {
                return Err(InvalidSpec(format!("{name}.replicas must be at least 1")));
            }
        }
        if self.storage.replicas < self.max_replicas {
            return Err(InvalidSpec(format!(
                "storage.replicas ({}) must be at least maxReplicas ({})",
                self.storage.replicas, self.max_replicas
            )));
        }
        parse_config("placement", &self.placement, PLACEMENT_MANAGED_KEYS)?;
        parse_config("storage", &self.storage, STORAGE_MANAGED_KEYS)?;
        Ok(())
    }
}

/// The component's config text as a TOML table (empty when unset).
pub fn parse_config(
    name: &str,
    component: &ComponentSpec,
    managed: &[&str],
) -> Result<toml::Table, InvalidSpec> {
    let Some(text) = component.config.as_deref() else {
        return Ok(toml::Table::new());
    };
    let table: toml::Table = text
        .parse()
        .map_err(|e| InvalidSpec(format!("{name}.config is not valid TOML: {e}")))?;
    if let Some(key) = managed.iter().find(|k| table.contains_key(**k)) {
        return Err(InvalidSpec(format!(
            "{name}.config must not set {key:?}: the operator sets it"
        )));
    }
    Ok(table)
}

/// The CRD as YAML, exactly as the chart ships it.
pub fn crd_yaml() -> Result<String, serde_saphyr::ser::Error> {
    let body = serde_saphyr::to_string(&TiKVCluster::crd())?;
    Ok(format!(
        "# Generated by `cargo run -p shale-crds --bin crdgen`; do not edit.\n{body}"
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
