//! What the operator reports about a `TiKVCluster`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Observed state, rewritten on every reconcile.
#[derive(JsonSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TiKVClusterStatus {
    /// One word for humans and `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing` and `Degraded`, each with its own
    /// observedGeneration.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The version every pod runs once no upgrade is in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default)]
    pub placement: ComponentStatus,
    #[serde(default)]
    pub storage: ComponentStatus,
    /// The stores placement knows for this cluster's pods.
    #[serde(default)]
    pub stores: Vec<StoreStatus>,
    /// The storage pod being restarted by an upgrade, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeProgress>,
}

/// Summary of a cluster's state.
#[derive(JsonSchema, Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub enum Phase {
    Creating,
    Running,
    Scaling,
    Upgrading,
    Degraded,
    Paused,
    Failed,
}

/// Pod counts of one component.
#[derive(JsonSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// Pods the StatefulSet currently asks for.
    #[serde(default)]
    pub replicas: i32,
    #[serde(default)]
    pub ready_replicas: i32,
    /// Pods running the newest pod template.
    #[serde(default)]
    pub updated_replicas: i32,
}

/// One store as placement reports it.
#[derive(JsonSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StoreStatus {
    // The schema says int64 (Kubernetes knows no uint64 format; it warns on
    // every apply): ids and counts stay far below i64::MAX.
    #[schemars(with = "i64")]
    pub id: u64,
    /// The pod serving this store, when its address names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    pub address: String,
    /// `Up`, `Offline`, `Tombstone`, `Disconnected` or `Down`.
    pub state: String,
    #[schemars(with = "i64")]
    pub leader_count: u64,
    #[schemars(with = "i64")]
    pub region_count: u64,
}

/// An upgrade step in flight: leaders are being moved off `storeId` before
/// its pod restarts, or the pod is restarting.
#[derive(JsonSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeProgress {
    pub ordinal: i32,
    #[schemars(with = "i64")]
    pub store_id: u64,
    /// When leader eviction began; after the operator's timeout the pod
    /// restarts even if leaders remain.
    pub evicting_since: Time,
}
