use kube::CustomResourceExt;
use serde_json::{json, Value};

use super::*;

fn spec(storage: i32, max: i32) -> TiKVClusterSpec {
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
        pvc_retention_policy: PvcRetentionPolicy::default(),
    }
}

#[test]
fn storage_must_cover_max_replicas() {
    assert!(spec(3, 3).validate().is_ok());
    let err = spec(2, 3).validate().unwrap_err();
    assert!(err.0.contains("maxReplicas"), "{err}");
    assert!(spec(0, 0).validate().is_err());
    let mut no_version = spec(3, 3);
    no_version.version = " ".into();
    assert!(no_version.validate().is_err());
}

#[test]
fn config_must_be_toml_that_leaves_managed_keys_alone() {
    let mut s = spec(3, 3);
    s.storage.config = Some("sync-log = true\napi-version = 2\n".into());
    assert!(s.validate().is_ok());

    s.storage.config = Some("sync-log = [[[".into());
    let err = s.validate().unwrap_err();
    assert!(
        err.0.starts_with("storage.config is not valid TOML"),
        "{err}"
    );

    s.storage.config = Some("data-dir = \"/tmp\"".into());
    let err = s.validate().unwrap_err();
    assert!(err.0.contains("\"data-dir\""), "{err}");

    let mut p = spec(3, 3);
    p.placement.config = Some("max-replicas = 5".into());
    let err = p.validate().unwrap_err();
    assert!(err.0.starts_with("placement.config"), "{err}");
}

#[test]
fn example_manifest_parses_and_validates() {
    let text = include_str!("../../examples/basic.yaml");
    let cluster: TiKVCluster = serde_saphyr::from_str(text).unwrap();
    assert_eq!(cluster.metadata.name.as_deref(), Some("basic"));
    assert_eq!(cluster.spec.storage.replicas, 3);
    assert_eq!(cluster.spec.placement.replicas, 3);
    assert_eq!(
        cluster.spec.pvc_retention_policy,
        PvcRetentionPolicy::default()
    );
    cluster.spec.validate().unwrap();
}

#[test]
fn defaults_fill_in_omitted_fields() {
    let cluster: TiKVCluster = serde_json::from_value(json!({
        "apiVersion": "shale.dev/v1alpha1",
        "kind": "TiKVCluster",
        "metadata": {"name": "c"},
        "spec": {"version": "v1", "placement": {"replicas": 1}, "storage": {"replicas": 3}}
    }))
    .unwrap();
    assert_eq!(cluster.spec.max_replicas, 3);
    assert!(!cluster.spec.paused);
    assert_eq!(
        cluster.spec.pvc_retention_policy.when_scaled,
        RetentionAction::Delete
    );
    assert_eq!(
        cluster.spec.pvc_retention_policy.when_deleted,
        RetentionAction::Retain
    );
}

#[test]
fn crd_names_scope_and_columns() {
    let crd = TiKVCluster::crd();
    assert_eq!(crd.metadata.name.as_deref(), Some("tikvclusters.shale.dev"));
    assert_eq!(crd.spec.group, GROUP);
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.short_names, Some(vec!["tkc".to_string()]));
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, VERSION);
    let columns: Vec<&str> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        ["Phase", "Version", "Placement", "Stores", "Ready", "Age"]
    );
    assert!(version
        .subresources
        .as_ref()
        .and_then(|s| s.status.as_ref())
        .is_some());
}

/// The CRD's openAPIV3Schema, as the API server would evaluate it.
fn schema() -> Value {
    let crd = TiKVCluster::crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .unwrap();
    serde_json::to_value(schema).unwrap()
}

fn object(storage: i32, max: i32, placement: i32) -> Value {
    json!({
        "apiVersion": "shale.dev/v1alpha1",
        "kind": "TiKVCluster",
        "metadata": {"name": "c"},
        "spec": {
            "version": "v1",
            "maxReplicas": max,
            "placement": {"replicas": placement},
            "storage": {"replicas": storage}
        }
    })
}

fn cel_errors(obj: &Value, old: Option<&Value>) -> Vec<String> {
    match kube_cel::validate(&schema(), obj, old) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.into_vec().into_iter().map(|e| e.message).collect(),
    }
}

#[test]
fn cel_rule_rejects_fewer_stores_than_region_replicas() {
    assert!(cel_errors(&object(3, 3, 3), None).is_empty());
    assert!(cel_errors(&object(5, 3, 1), None).is_empty());
    assert_eq!(
        cel_errors(&object(2, 3, 3), None),
        ["storage.replicas must be at least maxReplicas"]
    );
}

#[test]
fn cel_rule_keeps_placement_replicas_fixed() {
    let old = object(3, 3, 3);
    assert!(cel_errors(&object(4, 3, 3), Some(&old)).is_empty());
    assert_eq!(
        cel_errors(&object(3, 3, 5), Some(&old)),
        ["placement.replicas cannot change after creation"]
    );
}

#[test]
fn cel_rule_keeps_volumes_fixed() {
    let mut old = object(3, 3, 3);
    old["spec"]["storage"]["storage"] = json!({"size": "10Gi"});
    let mut same = old.clone();
    same["spec"]["storage"]["replicas"] = json!(4);
    assert!(cel_errors(&same, Some(&old)).is_empty());

    let mut bigger = old.clone();
    bigger["spec"]["storage"]["storage"]["size"] = json!("20Gi");
    let mut added = object(3, 3, 3);
    added["spec"]["placement"]["storage"] = json!({"size": "1Gi"});
    for (new, base) in [(&bigger, &old), (&added, &object(3, 3, 3))] {
        assert_eq!(
            cel_errors(new, Some(base)),
            ["storage (volume size and class) cannot change after creation"]
        );
    }
}

/// Every `format` in the schema, with the path to it.
fn formats(value: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("format", Value::String(f)) => out.push((path.to_string(), f.clone())),
                    _ => formats(v, &format!("{path}.{k}"), out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| formats(v, path, out)),
        _ => {}
    }
}

#[test]
fn the_schema_uses_only_formats_kubernetes_knows() {
    // The API server warns on any other format on every apply of the CRD.
    const KNOWN: &[&str] = &[
        "int32",
        "int64",
        "float",
        "double",
        "byte",
        "date",
        "date-time",
    ];
    let mut found = Vec::new();
    formats(&schema(), "", &mut found);
    let unknown: Vec<_> = found
        .iter()
        .filter(|(_, f)| !KNOWN.contains(&f.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "formats Kubernetes does not know: {unknown:?}"
    );
    assert!(found.iter().any(|(_, f)| f == "int64"), "{found:?}");
}
