//! Names, labels, ports and addresses shared by the builders, the placement
//! peer list and the store-to-pod mapping. A pod's identity is its
//! StatefulSet ordinal; its address is its DNS name through the headless
//! peer Service, so it survives restarts and rescheduling.

use std::collections::BTreeMap;

/// The two StatefulSets of a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Component {
    Placement,
    Storage,
}

impl Component {
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Placement => "placement",
            Component::Storage => "storage",
        }
    }
}

/// Placement's one port: gRPC, the HTTP API and Raft traffic between members.
pub const PLACEMENT_PORT: u16 = 2379;
/// Storage node gRPC (clients and store-to-store traffic).
pub const STORAGE_PORT: u16 = 20160;
/// Storage node status HTTP: `/metrics` and `/status`.
pub const STORAGE_STATUS_PORT: u16 = 20180;

/// Field manager of every server-side apply, and the events' reporter.
pub const MANAGER: &str = "shale-operator";
/// The finalizer that deletes claims (when asked) before the cluster goes.
pub const FINALIZER: &str = "shale.dev/cleanup";

/// Name of a component's StatefulSet (and its pods' prefix).
pub fn statefulset_name(cluster: &str, component: Component) -> String {
    format!("{cluster}-{}", component.as_str())
}

/// The headless Service that gives each pod a stable DNS name.
pub fn peer_service_name(cluster: &str, component: Component) -> String {
    format!("{cluster}-{}-peer", component.as_str())
}

/// The client Service in front of placement (what users connect to).
pub fn placement_service_name(cluster: &str) -> String {
    format!("{cluster}-placement")
}

/// The ConfigMap holding a component's TOML config file.
pub fn config_map_name(cluster: &str, component: Component) -> String {
    format!("{cluster}-{}-config", component.as_str())
}

/// Name of pod `ordinal` of a component.
pub fn pod_name(cluster: &str, component: Component, ordinal: i32) -> String {
    format!("{}-{ordinal}", statefulset_name(cluster, component))
}

/// Stable DNS name of pod `ordinal` of a component's StatefulSet, reached
/// through its headless Service.
pub fn pod_dns_name(cluster: &str, component: Component, ordinal: i32, namespace: &str) -> String {
    format!(
        "{}.{}.{namespace}.svc",
        pod_name(cluster, component, ordinal),
        peer_service_name(cluster, component)
    )
}

/// The `--initial-cluster` list placement members start from:
/// `name=http://host:2379,...` (Raft shares the client port).
pub fn placement_initial_cluster(cluster: &str, namespace: &str, replicas: i32) -> String {
    (0..replicas)
        .map(|i| {
            let host = pod_dns_name(cluster, Component::Placement, i, namespace);
            let name = pod_name(cluster, Component::Placement, i);
            format!("{name}=http://{host}:{PLACEMENT_PORT}")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Every placement member's `host:port`, the storage nodes' `--pd` list.
pub fn placement_members(cluster: &str, namespace: &str, replicas: i32) -> Vec<String> {
    (0..replicas)
        .map(|i| {
            let host = pod_dns_name(cluster, Component::Placement, i, namespace);
            format!("{host}:{PLACEMENT_PORT}")
        })
        .collect()
}

/// `host:port` of the placement client Service.
pub fn placement_client_addr(cluster: &str, namespace: &str) -> String {
    format!(
        "{}.{namespace}.svc:{PLACEMENT_PORT}",
        placement_service_name(cluster)
    )
}

/// Base URL of placement's HTTP API, as the operator reaches it.
pub fn placement_url(cluster: &str, namespace: &str) -> String {
    format!("http://{}", placement_client_addr(cluster, namespace))
}

/// The address storage pod `ordinal` advertises to placement.
pub fn store_address(cluster: &str, namespace: &str, ordinal: i32) -> String {
    format!(
        "{}:{STORAGE_PORT}",
        pod_dns_name(cluster, Component::Storage, ordinal, namespace)
    )
}

/// The storage ordinal a store address names, if it is one of this
/// cluster's pods.
pub fn store_ordinal(cluster: &str, namespace: &str, address: &str) -> Option<i32> {
    let prefix = format!("{}-", statefulset_name(cluster, Component::Storage));
    let suffix = format!(
        ".{}.{namespace}.svc:{STORAGE_PORT}",
        peer_service_name(cluster, Component::Storage)
    );
    let ordinal = address.strip_prefix(&prefix)?.strip_suffix(&suffix)?;
    if ordinal.is_empty() || !ordinal.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ordinal.parse().ok()
}

/// The ordinal in a StatefulSet pod's name.
pub fn pod_ordinal(statefulset: &str, pod: &str) -> Option<i32> {
    let rest = pod.strip_prefix(statefulset)?.strip_prefix('-')?;
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

/// Labels that select one component's pods; never change once created
/// (a StatefulSet's selector is immutable).
pub fn selector_labels(cluster: &str, component: Component) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "shale".to_string()),
        (
            "app.kubernetes.io/instance".to_string(),
            cluster.to_string(),
        ),
        (
            "app.kubernetes.io/component".to_string(),
            component.as_str().to_string(),
        ),
    ])
}

/// Selector labels plus the manager label, on every object the operator owns.
pub fn labels(cluster: &str, component: Component) -> BTreeMap<String, String> {
    let mut labels = selector_labels(cluster, component);
    labels.insert(
        "app.kubernetes.io/managed-by".to_string(),
        MANAGER.to_string(),
    );
    labels
}

/// `key=value,...` form of a label map, for list calls.
pub fn label_selector(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Selects every pod and claim of one cluster (both components).
pub fn cluster_selector(cluster: &str) -> String {
    format!("app.kubernetes.io/name=shale,app.kubernetes.io/instance={cluster}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_and_ordered() {
        assert_eq!(
            pod_dns_name("basic", Component::Storage, 2, "db"),
            "basic-storage-2.basic-storage-peer.db.svc"
        );
        assert_eq!(
            placement_initial_cluster("basic", "db", 2),
            "basic-placement-0=http://basic-placement-0.basic-placement-peer.db.svc:2379,\
             basic-placement-1=http://basic-placement-1.basic-placement-peer.db.svc:2379"
        );
        assert_eq!(
            placement_members("basic", "db", 1),
            ["basic-placement-0.basic-placement-peer.db.svc:2379"]
        );
        assert_eq!(
            placement_url("basic", "db"),
            "http://basic-placement.db.svc:2379"
        );
    }

    #[test]
    fn store_addresses_map_back_to_ordinals() {
        let addr = store_address("basic", "db", 12);
        assert_eq!(addr, "basic-storage-12.basic-storage-peer.db.svc:20160");
        assert_eq!(store_ordinal("basic", "db", &addr), Some(12));
        // Another cluster, namespace or port is not ours.
        assert_eq!(store_ordinal("other", "db", &addr), None);
        assert_eq!(store_ordinal("basic", "prod", &addr), None);
        assert_eq!(
            store_ordinal("basic", "db", "basic-storage-1.basic-storage-peer.db.svc:1"),
            None
        );
        assert_eq!(
            store_ordinal(
                "basic",
                "db",
                "basic-storage-x.basic-storage-peer.db.svc:20160"
            ),
            None
        );
        assert_eq!(pod_ordinal("basic-storage", "basic-storage-3"), Some(3));
        assert_eq!(pod_ordinal("basic-storage", "basic-storage-peer"), None);
        assert_eq!(pod_ordinal("basic-storage", "basic-storage-"), None);
    }

    #[test]
    fn selectors_cover_one_component_or_the_whole_cluster() {
        let sel = label_selector(&selector_labels("c", Component::Storage));
        assert_eq!(
            sel,
            "app.kubernetes.io/component=storage,app.kubernetes.io/instance=c,app.kubernetes.io/name=shale"
        );
        assert!(labels("c", Component::Placement).contains_key("app.kubernetes.io/managed-by"));
        assert_eq!(
            cluster_selector("c"),
            "app.kubernetes.io/name=shale,app.kubernetes.io/instance=c"
        );
    }
}
