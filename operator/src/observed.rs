//! What exists, reduced to the facts the decisions need: StatefulSet
//! progress, storage pods by ordinal, and placement's stores by ordinal.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;

use crate::naming;
use crate::placement_api::{StoreInfo, StoreState};

/// Pod label carrying the StatefulSet revision the pod was created from.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// A StatefulSet's spec and status, flattened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StsView {
    pub replicas: i32,
    pub partition: Option<i32>,
    /// The status describes the current spec (`observedGeneration`).
    pub fresh: bool,
    pub ready_replicas: i32,
    pub updated_replicas: i32,
    pub current_revision: Option<String>,
    pub update_revision: Option<String>,
    /// The version its pod template runs: the tag of its image.
    pub version: Option<String>,
}

/// The tag of an image reference (`repo:tag`), if it has one.
fn image_tag(image: &str) -> Option<&str> {
    image
        .rsplit_once(':')
        .map(|(_, tag)| tag)
        .filter(|tag| !tag.contains('/'))
}

impl StsView {
    pub fn of(sts: &StatefulSet) -> StsView {
        let spec = &sts.spec;
        let status = sts.status.as_ref();
        let generation = sts.metadata.generation;
        StsView {
            replicas: spec.replicas.unwrap_or(1),
            partition: spec
                .update_strategy
                .as_ref()
                .and_then(|u| u.rolling_update.as_ref())
                .and_then(|r| r.partition),
            fresh: status.and_then(|s| s.observed_generation) >= generation,
            ready_replicas: status.and_then(|s| s.ready_replicas).unwrap_or(0),
            updated_replicas: status.and_then(|s| s.updated_replicas).unwrap_or(0),
            current_revision: status.and_then(|s| s.current_revision.clone()),
            update_revision: status.and_then(|s| s.update_revision.clone()),
            version: spec
                .template
                .spec
                .as_ref()
                .and_then(|p| p.containers.first())
                .and_then(|c| c.image.as_deref())
                .and_then(image_tag)
                .map(str::to_string),
        }
    }

    /// Every pod runs the newest template and is ready.
    pub fn rolled_out(&self) -> bool {
        self.fresh
            && self.ready_replicas >= self.replicas
            && self.updated_replicas >= self.replicas
            && self.current_revision.is_some()
            && self.current_revision == self.update_revision
    }
}

/// One storage pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodView {
    pub ordinal: i32,
    pub revision: Option<String>,
    pub ready: bool,
}

impl PodView {
    pub fn of(statefulset: &str, pod: &Pod) -> Option<PodView> {
        let name = pod.metadata.name.as_deref()?;
        let ordinal = naming::pod_ordinal(statefulset, name)?;
        let ready = pod.metadata.deletion_timestamp.is_none()
            && pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let revision = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(REVISION_LABEL).cloned());
        Some(PodView {
            ordinal,
            revision,
            ready,
        })
    }
}

/// What placement says, or why it could not be asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlacementView {
    Known {
        /// This cluster's stores by storage ordinal; the live store when an
        /// address was reused after a Tombstone.
        stores: BTreeMap<i32, StoreInfo>,
        /// Stores with an evict-leader scheduler.
        evicting: Vec<u64>,
    },
    Unreachable(String),
}

impl PlacementView {
    pub fn stores(&self) -> Option<&BTreeMap<i32, StoreInfo>> {
        match self {
            PlacementView::Known { stores, .. } => Some(stores),
            PlacementView::Unreachable(_) => None,
        }
    }

    pub fn evicting(&self) -> Option<&[u64]> {
        match self {
            PlacementView::Known { evicting, .. } => Some(evicting),
            PlacementView::Unreachable(_) => None,
        }
    }
}

/// Maps stores to the storage ordinals whose address they carry. Several
/// stores can share an address (a pod that came back after its store was
/// removed); the one that is not Tombstone wins, then the newest.
pub fn stores_by_ordinal(
    cluster: &str,
    namespace: &str,
    stores: Vec<StoreInfo>,
) -> BTreeMap<i32, StoreInfo> {
    let mut by_ordinal: BTreeMap<i32, StoreInfo> = BTreeMap::new();
    for store in stores {
        let Some(ordinal) = naming::store_ordinal(cluster, namespace, &store.address) else {
            continue;
        };
        let replace = match by_ordinal.get(&ordinal) {
            None => true,
            Some(held) => {
                let held_live = held.state != StoreState::Tombstone;
                let new_live = store.state != StoreState::Tombstone;
                (new_live && !held_live) || (new_live == held_live && store.id > held.id)
            }
        };
        if replace {
            by_ordinal.insert(ordinal, store);
        }
    }
    by_ordinal
}

/// Everything the dereference step read.
#[derive(Clone, Debug)]
pub struct Observed {
    pub placement: Option<StsView>,
    pub storage: Option<StsView>,
    pub storage_pods: Vec<PodView>,
    pub placement_api: PlacementView,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(id: u64, ordinal: i32, state: StoreState) -> StoreInfo {
        StoreInfo {
            id,
            address: naming::store_address("c", "ns", ordinal),
            state,
            leader_count: 0,
            region_count: 0,
        }
    }

    #[test]
    fn live_store_wins_over_tombstone_at_the_same_address() {
        let map = stores_by_ordinal(
            "c",
            "ns",
            vec![
                store(9, 3, StoreState::Up),
                store(4, 3, StoreState::Tombstone),
                store(1, 0, StoreState::Up),
                StoreInfo {
                    address: "elsewhere:20160".into(),
                    ..store(2, 0, StoreState::Up)
                },
            ],
        );
        assert_eq!(map.len(), 2);
        assert_eq!(map[&3].id, 9);
        assert_eq!(map[&0].id, 1);

        let only_dead = stores_by_ordinal(
            "c",
            "ns",
            vec![
                store(4, 3, StoreState::Tombstone),
                store(6, 3, StoreState::Tombstone),
            ],
        );
        assert_eq!(only_dead[&3].id, 6);
    }

    #[test]
    fn rolled_out_needs_fresh_status_and_one_revision() {
        let mut view = StsView {
            replicas: 3,
            partition: Some(3),
            fresh: true,
            ready_replicas: 3,
            updated_replicas: 3,
            current_revision: Some("a".into()),
            update_revision: Some("a".into()),
            version: Some("v1".into()),
        };
        assert!(view.rolled_out());
        view.update_revision = Some("b".into());
        assert!(!view.rolled_out());
        view.update_revision = Some("a".into());
        view.fresh = false;
        assert!(!view.rolled_out());
    }

    #[test]
    fn the_version_is_the_tag_of_the_template_image() {
        assert_eq!(image_tag("shale:e2e-b"), Some("e2e-b"));
        assert_eq!(image_tag("registry:5000/shale:0.1.0"), Some("0.1.0"));
        assert_eq!(image_tag("registry:5000/shale"), None);
        assert_eq!(image_tag("shale"), None);
    }
}
