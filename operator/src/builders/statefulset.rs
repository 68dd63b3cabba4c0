//! The two StatefulSets. Each pod gets a stable name and DNS identity
//! through its headless peer Service and a volume claim for its data
//! directory; servers take everything else from flags and environment.
//!
//! Placement rolls with the StatefulSet's own `RollingUpdate` (one pod at a
//! time, waiting for readiness). Storage rolls through a partition the
//! operator lowers pod by pod after evicting the pod's leaders.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy,
    StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, SeccompProfile, SecurityContext, TCPSocketAction, Volume, VolumeMount,
    VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use shale_crds::{ComponentSpec, RetentionAction};

use super::{image, metadata, stable_hash, BuildInput, CONFIG_FILE};
use crate::naming::{self, Component, PLACEMENT_PORT, STORAGE_PORT, STORAGE_STATUS_PORT};

/// Pod template annotation that changes (and so rolls pods) with the config.
pub const CONFIG_HASH_ANNOTATION: &str = "shale.dev/config-hash";
/// The user the image runs as; also owns the data volume (`fsGroup`).
const RUN_AS: i64 = 65532;
const DATA_VOLUME: &str = "data";
const CONFIG_VOLUME: &str = "config";
const DATA_MOUNT: &str = "/var/lib/shale";
const CONFIG_MOUNT: &str = "/etc/shale";

pub fn placement_statefulset(input: &BuildInput<'_>, config: &str) -> StatefulSet {
    let component = Component::Placement;
    let peer = naming::peer_service_name(input.name, component);
    let args = vec![
        "--config".to_string(),
        format!("{CONFIG_MOUNT}/{CONFIG_FILE}"),
        "--data-dir".to_string(),
        format!("{DATA_MOUNT}/placement"),
        "--listen-addr".to_string(),
        format!("0.0.0.0:{PLACEMENT_PORT}"),
        "--advertise-addr".to_string(),
        format!("$(POD_NAME).{peer}.$(POD_NAMESPACE).svc:{PLACEMENT_PORT}"),
        "--name".to_string(),
        "$(POD_NAME)".to_string(),
        "--initial-cluster".to_string(),
        naming::placement_initial_cluster(
            input.name,
            input.namespace,
            input.spec.placement.replicas,
        ),
    ];
    let container = Container {
        name: "placement".to_string(),
        image: Some(image(input.spec, component, input.default_image)),
        image_pull_policy: Some("IfNotPresent".to_string()),
        command: Some(vec!["placement".to_string()]),
        args: Some(args),
        env: Some(pod_identity_env()),
        ports: Some(vec![container_port("client", PLACEMENT_PORT)]),
        // Any member answers ping; requests that need the leader are
        // redirected to it, so every serving member can take traffic.
        readiness_probe: Some(http_probe("/pd/api/v1/ping", "client", 5)),
        liveness_probe: Some(tcp_probe("client")),
        resources: input.spec.placement.resources.clone(),
        volume_mounts: Some(volume_mounts()),
        security_context: Some(container_security()),
        ..Container::default()
    };
    let strategy = StatefulSetUpdateStrategy {
        type_: Some("RollingUpdate".to_string()),
        rolling_update: None,
    };
    statefulset(
        input,
        component,
        input.spec.placement.replicas,
        strategy,
        container,
        config,
        30,
    )
}

pub fn storage_statefulset(input: &BuildInput<'_>, config: &str) -> StatefulSet {
    let component = Component::Storage;
    let peer = naming::peer_service_name(input.name, component);
    let pd = naming::placement_members(input.name, input.namespace, input.spec.placement.replicas);
    let mut env = pod_identity_env();
    env.extend([
        env_var(
            "SHALE_STORAGE_CONFIG",
            &format!("{CONFIG_MOUNT}/{CONFIG_FILE}"),
        ),
        env_var("SHALE_DATA_DIR", &format!("{DATA_MOUNT}/store")),
        env_var("SHALE_ADDR", &format!("0.0.0.0:{STORAGE_PORT}")),
        env_var(
            "SHALE_ADVERTISE_ADDR",
            &format!("$(POD_NAME).{peer}.$(POD_NAMESPACE).svc:{STORAGE_PORT}"),
        ),
        env_var(
            "SHALE_STATUS_ADDR",
            &format!("0.0.0.0:{STORAGE_STATUS_PORT}"),
        ),
        env_var("SHALE_PD", &pd.join(",")),
    ]);
    let container = Container {
        name: "storage".to_string(),
        image: Some(image(input.spec, component, input.default_image)),
        image_pull_policy: Some("IfNotPresent".to_string()),
        command: Some(vec!["storage-node".to_string()]),
        env: Some(env),
        ports: Some(vec![
            container_port("grpc", STORAGE_PORT),
            container_port("status", STORAGE_STATUS_PORT),
        ]),
        readiness_probe: Some(http_probe("/status", "status", 5)),
        liveness_probe: Some(tcp_probe("grpc")),
        resources: input.spec.storage.resources.clone(),
        volume_mounts: Some(volume_mounts()),
        security_context: Some(container_security()),
        ..Container::default()
    };
    let strategy = StatefulSetUpdateStrategy {
        type_: Some("RollingUpdate".to_string()),
        rolling_update: Some(RollingUpdateStatefulSetStrategy {
            partition: Some(input.storage_partition),
            max_unavailable: None,
        }),
    };
    statefulset(
        input,
        component,
        input.storage_replicas,
        strategy,
        container,
        config,
        60,
    )
}

/// What both StatefulSets share.
fn statefulset(
    input: &BuildInput<'_>,
    component: Component,
    replicas: i32,
    update_strategy: StatefulSetUpdateStrategy,
    container: Container,
    config: &str,
    grace_seconds: i64,
) -> StatefulSet {
    let selector = naming::selector_labels(input.name, component);
    let spec = match component {
        Component::Placement => &input.spec.placement,
        Component::Storage => &input.spec.storage,
    };
    let template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(naming::labels(input.name, component)),
            annotations: Some(BTreeMap::from([(
                CONFIG_HASH_ANNOTATION.to_string(),
                stable_hash(config),
            )])),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container],
            volumes: Some(vec![
                Volume {
                    name: CONFIG_VOLUME.to_string(),
                    config_map: Some(ConfigMapVolumeSource {
                        name: naming::config_map_name(input.name, component),
                        ..ConfigMapVolumeSource::default()
                    }),
                    ..Volume::default()
                },
                Volume {
                    name: "tmp".to_string(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Volume::default()
                },
            ]),
            security_context: Some(pod_security()),
            affinity: Some(spread(selector.clone())),
            termination_grace_period_seconds: Some(grace_seconds),
            ..PodSpec::default()
        }),
    };
    let when_scaled = match component {
        Component::Storage => input.spec.pvc_retention_policy.when_scaled,
        // Placement never scales in (its size is fixed at creation).
        Component::Placement => RetentionAction::Retain,
    };
    StatefulSet {
        metadata: metadata(
            input,
            naming::statefulset_name(input.name, component),
            component,
        ),
        spec: StatefulSetSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            service_name: Some(naming::peer_service_name(input.name, component)),
            pod_management_policy: Some("Parallel".to_string()),
            update_strategy: Some(update_strategy),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_scaled: Some(when_scaled.as_str().to_string()),
                    // The finalizer deletes claims on cluster deletion when asked.
                    when_deleted: Some(RetentionAction::Retain.as_str().to_string()),
                },
            ),
            template,
            volume_claim_templates: Some(vec![volume_claim(input, component, spec)]),
            ..StatefulSetSpec::default()
        },
        status: None,
    }
}

/// Default data volume size when the spec names none.
pub fn default_volume_size(component: Component) -> &'static str {
    match component {
        Component::Placement => "1Gi",
        Component::Storage => "10Gi",
    }
}

fn volume_claim(
    input: &BuildInput<'_>,
    component: Component,
    spec: &ComponentSpec,
) -> PersistentVolumeClaim {
    let volume = spec.storage.clone().unwrap_or_default();
    let size = volume
        .size
        .unwrap_or_else(|| Quantity(default_volume_size(component).to_string()));
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.to_string()),
            labels: Some(naming::labels(input.name, component)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_string()]),
            storage_class_name: volume.storage_class_name,
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_string(), size)])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

/// POD_NAME and POD_NAMESPACE from the downward API; later values refer to
/// them as `$(POD_NAME)`.
fn pod_identity_env() -> Vec<EnvVar> {
    let field = |name: &str, path: &str| EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_string(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    vec![
        field("POD_NAME", "metadata.name"),
        field("POD_NAMESPACE", "metadata.namespace"),
    ]
}

fn env_var(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.to_string()),
        ..EnvVar::default()
    }
}

fn container_port(name: &str, port: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_string()),
        container_port: i32::from(port),
        protocol: Some("TCP".to_string()),
        ..ContainerPort::default()
    }
}

fn http_probe(path: &str, port: &str, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String(port.to_string()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(3),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

fn tcp_probe(port: &str) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::String(port.to_string()),
            ..TCPSocketAction::default()
        }),
        initial_delay_seconds: Some(15),
        period_seconds: Some(10),
        failure_threshold: Some(6),
        ..Probe::default()
    }
}

fn volume_mounts() -> Vec<VolumeMount> {
    vec![
        VolumeMount {
            name: DATA_VOLUME.to_string(),
            mount_path: DATA_MOUNT.to_string(),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: CONFIG_VOLUME.to_string(),
            mount_path: CONFIG_MOUNT.to_string(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "tmp".to_string(),
            mount_path: "/tmp".to_string(),
            ..VolumeMount::default()
        },
    ]
}

fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        fs_group: Some(RUN_AS),
        fs_group_change_policy: Some("OnRootMismatch".to_string()),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_string(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_string()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

/// Prefer one pod of a component per node.
fn spread(selector: BTreeMap<String, String>) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        label_selector: Some(LabelSelector {
                            match_labels: Some(selector),
                            ..LabelSelector::default()
                        }),
                        topology_key: "kubernetes.io/hostname".to_string(),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}
