//! Builders from the example manifest: every object's shape.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::{json, Value};
use shale_crds::{TiKVCluster, TiKVClusterSpec};

use super::*;

fn example() -> TiKVClusterSpec {
    let text = include_str!("../../../examples/basic.yaml");
    let cluster: TiKVCluster = serde_saphyr::from_str(text).unwrap();
    cluster.spec
}

fn owner() -> OwnerReference {
    OwnerReference {
        api_version: "shale.dev/v1alpha1".into(),
        kind: "TiKVCluster".into(),
        name: "basic".into(),
        uid: "uid-1".into(),
        controller: Some(true),
        block_owner_deletion: None,
    }
}

fn input(spec: &TiKVClusterSpec) -> BuildInput<'_> {
    BuildInput {
        name: "basic",
        namespace: "db",
        owner: owner(),
        spec,
        default_image: "registry.example/shale",
        storage_replicas: spec.storage.replicas,
        storage_partition: spec.storage.replicas,
    }
}

fn json_of<T: serde::Serialize>(object: &T) -> Value {
    serde_json::to_value(object).unwrap()
}

fn env(container: &Value, name: &str) -> Value {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no env {name}"))
}

#[test]
fn builds_every_object_with_owner_and_labels() {
    let spec = example();
    let desired = build(&input(&spec)).unwrap();
    let names = |metas: Vec<&ObjectMeta>| -> Vec<String> {
        metas.iter().map(|m| m.name.clone().unwrap()).collect()
    };
    assert_eq!(
        names(desired.services.iter().map(|o| &o.metadata).collect()),
        [
            "basic-placement",
            "basic-placement-peer",
            "basic-storage-peer"
        ]
    );
    assert_eq!(
        names(desired.config_maps.iter().map(|o| &o.metadata).collect()),
        ["basic-placement-config", "basic-storage-config"]
    );
    assert_eq!(
        names(desired.stateful_sets.iter().map(|o| &o.metadata).collect()),
        ["basic-placement", "basic-storage"]
    );
    assert_eq!(
        names(
            desired
                .pod_disruption_budgets
                .iter()
                .map(|o| &o.metadata)
                .collect()
        ),
        ["basic-placement", "basic-storage"]
    );
    let metas: Vec<&ObjectMeta> = desired
        .services
        .iter()
        .map(|o| &o.metadata)
        .chain(desired.config_maps.iter().map(|o| &o.metadata))
        .chain(desired.stateful_sets.iter().map(|o| &o.metadata))
        .chain(desired.pod_disruption_budgets.iter().map(|o| &o.metadata))
        .collect();
    for meta in metas {
        assert_eq!(meta.namespace.as_deref(), Some("db"));
        assert_eq!(meta.owner_references.as_deref(), Some(&[owner()][..]));
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(labels["app.kubernetes.io/instance"], "basic");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "shale-operator");
    }
}

#[test]
fn storage_statefulset_gives_each_pod_identity_volume_and_placement() {
    let spec = example();
    let mut i = input(&spec);
    i.storage_replicas = 4;
    i.storage_partition = 2;
    let sts = json_of(&build(&i).unwrap().stateful_sets[1]);
    assert_eq!(sts["apiVersion"], "apps/v1");
    assert_eq!(sts["kind"], "StatefulSet");
    let s = &sts["spec"];
    assert_eq!(s["replicas"], 4);
    assert_eq!(s["serviceName"], "basic-storage-peer");
    assert_eq!(s["podManagementPolicy"], "Parallel");
    assert_eq!(
        s["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 2}})
    );
    assert_eq!(
        s["persistentVolumeClaimRetentionPolicy"],
        json!({"whenScaled": "Delete", "whenDeleted": "Retain"})
    );
    assert_eq!(
        s["selector"]["matchLabels"],
        json!({
            "app.kubernetes.io/name": "shale",
            "app.kubernetes.io/instance": "basic",
            "app.kubernetes.io/component": "storage"
        })
    );
    let claim = &s["volumeClaimTemplates"][0];
    assert_eq!(claim["metadata"]["name"], "data");
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "10Gi");
    assert_eq!(claim["spec"]["accessModes"], json!(["ReadWriteOnce"]));

    let pod = &s["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["fsGroup"], 65532);
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "registry.example/shale:0.1.0");
    assert_eq!(c["command"], json!(["storage-node"]));
    assert_eq!(
        env(c, "POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(
        env(c, "SHALE_ADVERTISE_ADDR")["value"],
        "$(POD_NAME).basic-storage-peer.$(POD_NAMESPACE).svc:20160"
    );
    assert_eq!(env(c, "SHALE_DATA_DIR")["value"], "/var/lib/shale/store");
    assert_eq!(env(c, "SHALE_ADDR")["value"], "0.0.0.0:20160");
    assert_eq!(env(c, "SHALE_STATUS_ADDR")["value"], "0.0.0.0:20180");
    assert_eq!(
        env(c, "SHALE_PD")["value"],
        "basic-placement-0.basic-placement-peer.db.svc:2379,\
         basic-placement-1.basic-placement-peer.db.svc:2379,\
         basic-placement-2.basic-placement-peer.db.svc:2379"
    );
    assert_eq!(
        env(c, "SHALE_STORAGE_CONFIG")["value"],
        "/etc/shale/config.toml"
    );
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/status");
    assert_eq!(c["resources"]["requests"]["memory"], "512Mi");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    let mounts: Vec<&str> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    assert_eq!(mounts, ["/var/lib/shale", "/etc/shale", "/tmp"]);
}

#[test]
fn placement_statefulset_starts_members_from_the_peer_list() {
    let mut spec = example();
    spec.placement.image = Some("mirror/shale".into());
    let sts = json_of(&build(&input(&spec)).unwrap().stateful_sets[0]);
    let s = &sts["spec"];
    assert_eq!(s["replicas"], 3);
    assert_eq!(s["serviceName"], "basic-placement-peer");
    assert_eq!(s["updateStrategy"], json!({"type": "RollingUpdate"}));
    assert_eq!(
        s["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
        "1Gi"
    );
    let c = &s["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "mirror/shale:0.1.0");
    assert_eq!(c["command"], json!(["placement"]));
    assert_eq!(
        c["args"],
        json!([
            "--config",
            "/etc/shale/config.toml",
            "--data-dir",
            "/var/lib/shale/placement",
            "--listen-addr",
            "0.0.0.0:2379",
            "--advertise-addr",
            "$(POD_NAME).basic-placement-peer.$(POD_NAMESPACE).svc:2379",
            "--name",
            "$(POD_NAME)",
            "--initial-cluster",
            "basic-placement-0=http://basic-placement-0.basic-placement-peer.db.svc:2379,\
             basic-placement-1=http://basic-placement-1.basic-placement-peer.db.svc:2379,\
             basic-placement-2=http://basic-placement-2.basic-placement-peer.db.svc:2379"
        ])
    );
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/pd/api/v1/ping");
}

#[test]
fn config_maps_carry_the_spec_config_and_max_replicas() {
    let mut spec = example();
    spec.max_replicas = 5;
    spec.storage.replicas = 5;
    spec.placement.config = Some("log-level = \"debug\"".into());
    let desired = build(&input(&spec)).unwrap();
    let placement = &desired.config_maps[0].data.as_ref().unwrap()[CONFIG_FILE];
    let parsed: toml::Table = placement.parse().unwrap();
    assert_eq!(parsed["max-replicas"].as_integer(), Some(5));
    assert_eq!(parsed["log-level"].as_str(), Some("debug"));
    let storage = &desired.config_maps[1].data.as_ref().unwrap()[CONFIG_FILE];
    assert_eq!(storage.trim(), "sync-log = true");
}

#[test]
fn config_changes_change_the_pod_template() {
    let spec = example();
    let hash = |spec: &TiKVClusterSpec| {
        let sts = &build(&input(spec)).unwrap().stateful_sets[1];
        let template = sts.spec.template.metadata.as_ref().unwrap();
        template.annotations.as_ref().unwrap()[CONFIG_HASH_ANNOTATION].clone()
    };
    let before = hash(&spec);
    assert_eq!(before, hash(&spec), "deterministic");
    let mut changed = spec.clone();
    changed.storage.config = Some("sync-log = false".into());
    assert_ne!(before, hash(&changed));
    assert_eq!(stable_hash(""), "cbf29ce484222325");
}

#[test]
fn invalid_config_is_a_build_error() {
    let mut spec = example();
    spec.storage.config = Some("[[[".into());
    let err = build(&input(&spec)).unwrap_err();
    assert_eq!(err.component, "storage");
}

#[test]
fn services_and_budgets() {
    let spec = example();
    let desired = build(&input(&spec)).unwrap();
    let client = json_of(&desired.services[0]);
    assert_eq!(client["spec"]["type"], "ClusterIP");
    assert_eq!(client["spec"]["ports"][0]["port"], 2379);
    assert_eq!(
        client["spec"]["selector"]["app.kubernetes.io/component"],
        "placement"
    );
    let peer = json_of(&desired.services[2]);
    assert_eq!(peer["spec"]["clusterIP"], "None");
    assert_eq!(peer["spec"]["publishNotReadyAddresses"], true);
    let ports: Vec<i64> = peer["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_i64().unwrap())
        .collect();
    assert_eq!(ports, [20160, 20180]);
    let pdb = json_of(&desired.pod_disruption_budgets[1]);
    assert_eq!(pdb["apiVersion"], "policy/v1");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"],
        "storage"
    );
}
