//! Desired objects from the spec (pure): no I/O, so every shape is unit
//! tested. The controller applies them server-side in the order returned.

mod configmap;
mod pdb;
mod service;
mod statefulset;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use shale_crds::TiKVClusterSpec;

use crate::naming::{self, Component};

pub use configmap::{config_map, config_text, CONFIG_FILE};
pub use pdb::pod_disruption_budget;
pub use service::{peer_service, placement_service};
pub use statefulset::{placement_statefulset, storage_statefulset, CONFIG_HASH_ANNOTATION};

/// Everything a build needs: the spec, where the cluster lives, and the
/// round's decisions about the storage StatefulSet.
#[derive(Clone, Debug)]
pub struct BuildInput<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub owner: OwnerReference,
    pub spec: &'a TiKVClusterSpec,
    /// Image repository when the spec names none.
    pub default_image: &'a str,
    pub storage_replicas: i32,
    pub storage_partition: i32,
}

/// The desired objects of one cluster, in apply order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Desired {
    pub services: Vec<Service>,
    pub config_maps: Vec<ConfigMap>,
    pub stateful_sets: Vec<StatefulSet>,
    pub pod_disruption_budgets: Vec<PodDisruptionBudget>,
}

#[derive(Debug, thiserror::Error)]
#[error("{component} config: {message}")]
pub struct BuildError {
    pub component: &'static str,
    pub message: String,
}

/// Builds every object of the cluster.
pub fn build(input: &BuildInput<'_>) -> Result<Desired, BuildError> {
    let placement_config = config_text(input, Component::Placement)?;
    let storage_config = config_text(input, Component::Storage)?;
    Ok(Desired {
        services: vec![
            placement_service(input),
            peer_service(input, Component::Placement),
            peer_service(input, Component::Storage),
        ],
        config_maps: vec![
            config_map(input, Component::Placement, &placement_config),
            config_map(input, Component::Storage, &storage_config),
        ],
        stateful_sets: vec![
            placement_statefulset(input, &placement_config),
            storage_statefulset(input, &storage_config),
        ],
        pod_disruption_budgets: vec![
            pod_disruption_budget(input, Component::Placement),
            pod_disruption_budget(input, Component::Storage),
        ],
    })
}

/// `repository:version` for a component.
pub fn image(spec: &TiKVClusterSpec, component: Component, default_image: &str) -> String {
    let repository = match component {
        Component::Placement => spec.placement.image.as_deref(),
        Component::Storage => spec.storage.image.as_deref(),
    }
    .filter(|r| !r.is_empty())
    .unwrap_or(default_image);
    format!("{repository}:{}", spec.version)
}

/// Name, namespace, labels and the owner reference every object carries.
fn metadata(input: &BuildInput<'_>, name: String, component: Component) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(input.namespace.to_string()),
        labels: Some(naming::labels(input.name, component)),
        owner_references: Some(vec![input.owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// Stable 64-bit FNV-1a: the same text hashes the same across builds and
/// Rust versions, so an operator upgrade alone never restarts pods.
pub fn stable_hash(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
