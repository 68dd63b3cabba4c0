//! The Shale operator: reconciles `TiKVCluster` resources into placement and
//! storage StatefulSets. This crate grows into the kube-rs controller; the
//! naming rules below are shared by the builders and the placement peer list.

/// Stable DNS name of pod `ordinal` of a component's StatefulSet, reached
/// through its headless Service.
pub fn pod_dns_name(cluster: &str, component: &str, ordinal: u32, namespace: &str) -> String {
    format!("{cluster}-{component}-{ordinal}.{cluster}-{component}-peer.{namespace}.svc")
}

/// The `--initial-cluster` list placement replicas start from.
pub fn placement_initial_cluster(
    cluster: &str,
    namespace: &str,
    replicas: u32,
    peer_port: u16,
) -> String {
    (0..replicas)
        .map(|i| {
            let host = pod_dns_name(cluster, "placement", i, namespace);
            format!("{cluster}-placement-{i}=http://{host}:{peer_port}")
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_and_ordered() {
        assert_eq!(
            pod_dns_name("basic", "storage", 2, "db"),
            "basic-storage-2.basic-storage-peer.db.svc"
        );
        let list = placement_initial_cluster("basic", "db", 2, 2380);
        assert_eq!(
            list,
            "basic-placement-0=http://basic-placement-0.basic-placement-peer.db.svc:2380,\
             basic-placement-1=http://basic-placement-1.basic-placement-peer.db.svc:2380"
        );
    }
}
