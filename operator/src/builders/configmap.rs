//! The TOML config file of each component: the spec's `config` text plus
//! the keys the operator derives from the spec.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use shale_crds::{parse_config, PLACEMENT_MANAGED_KEYS, STORAGE_MANAGED_KEYS};

use super::{metadata, BuildError, BuildInput};
use crate::naming::{self, Component};

/// Key (file name) of the config in its ConfigMap.
pub const CONFIG_FILE: &str = "config.toml";

/// The config file's text for a component.
pub fn config_text(input: &BuildInput<'_>, component: Component) -> Result<String, BuildError> {
    let (spec, managed) = match component {
        Component::Placement => (&input.spec.placement, PLACEMENT_MANAGED_KEYS),
        Component::Storage => (&input.spec.storage, STORAGE_MANAGED_KEYS),
    };
    let error = |message: String| BuildError {
        component: component.as_str(),
        message,
    };
    let mut table =
        parse_config(component.as_str(), spec, managed).map_err(|e| error(e.to_string()))?;
    if component == Component::Placement {
        table.insert(
            "max-replicas".to_string(),
            toml::Value::Integer(i64::from(input.spec.max_replicas)),
        );
    }
    toml::to_string(&table).map_err(|e| error(e.to_string()))
}

pub fn config_map(input: &BuildInput<'_>, component: Component, text: &str) -> ConfigMap {
    ConfigMap {
        metadata: metadata(
            input,
            naming::config_map_name(input.name, component),
            component,
        ),
        data: Some(BTreeMap::from([(
            CONFIG_FILE.to_string(),
            text.to_string(),
        )])),
        ..ConfigMap::default()
    }
}
