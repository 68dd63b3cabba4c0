//! The `TiKVCluster` resource (API group `shale.dev`, version `v1alpha1`).
//!
//! The spec types live here so the operator, the chart and the CLI agree on
//! one shape. Kubernetes derives (kube + schemars) come with the operator.

use serde::{Deserialize, Serialize};

/// Desired state of one Shale cluster.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TiKVClusterSpec {
    /// Image tag for every component.
    pub version: String,
    /// Replicas per Region.
    #[serde(default = "default_max_replicas")]
    pub max_replicas: u32,
    /// Stop reconciling while true.
    #[serde(default)]
    pub paused: bool,
    pub placement: ComponentSpec,
    pub storage: ComponentSpec,
}

/// One component (placement or storage): how many pods and how they look.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComponentSpec {
    pub replicas: u32,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub storage_size: Option<String>,
    #[serde(default)]
    pub storage_class_name: Option<String>,
}

fn default_max_replicas() -> u32 {
    3
}

/// Why a spec cannot be reconciled.
#[derive(Debug, PartialEq, Eq)]
pub struct InvalidSpec(pub String);

impl TiKVClusterSpec {
    /// The rules the schema cannot express on its own.
    pub fn validate(&self) -> Result<(), InvalidSpec> {
        if self.placement.replicas == 0 || self.storage.replicas == 0 {
            return Err(InvalidSpec("replicas must be at least 1".into()));
        }
        if self.storage.replicas < self.max_replicas {
            return Err(InvalidSpec(format!(
                "storage.replicas ({}) must be at least maxReplicas ({})",
                self.storage.replicas, self.max_replicas
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(storage: u32, max: u32) -> TiKVClusterSpec {
        TiKVClusterSpec {
            version: "v0.1.0".into(),
            max_replicas: max,
            paused: false,
            placement: ComponentSpec {
                replicas: 3,
                ..Default::default()
            },
            storage: ComponentSpec {
                replicas: storage,
                ..Default::default()
            },
        }
    }

    #[test]
    fn storage_must_cover_max_replicas() {
        assert!(spec(3, 3).validate().is_ok());
        assert!(spec(2, 3).validate().is_err());
        assert!(spec(0, 0).validate().is_err());
    }
}
