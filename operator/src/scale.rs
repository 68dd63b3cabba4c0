//! Scaling storage, decided from what is observed (pure).
//!
//! Scale-out only raises the StatefulSet's replicas: new stores register
//! with placement themselves. Scale-in goes one pod at a time from the
//! highest ordinal: placement deletes the store (Up -> Offline), moves its
//! Regions away, marks it Tombstone, and only then does the StatefulSet
//! shrink, so no pod holding data is ever removed.

use std::collections::BTreeMap;

use crate::placement_api::{StoreInfo, StoreState};

/// The next scaling step of the storage StatefulSet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScaleStep {
    /// No StatefulSet yet: create it at the desired size.
    Create { replicas: i32 },
    /// The StatefulSet has the desired size and no store needs removing.
    Steady { replicas: i32 },
    /// Raise the StatefulSet to `to` pods.
    ScaleOut { from: i32, to: i32 },
    /// Ask placement to delete the store of pod `ordinal`. Also used for a
    /// live store whose pod is already gone (a pod removed before its store
    /// registered, or by hand), so no orphan keeps Regions.
    RemoveStore {
        replicas: i32,
        ordinal: i32,
        store_id: u64,
    },
    /// The store of pod `ordinal` is leaving; wait for Tombstone.
    WaitTombstone {
        replicas: i32,
        ordinal: i32,
        store_id: u64,
        state: StoreState,
    },
    /// Pod `to` holds no store any more: shrink by one.
    Shrink { from: i32, to: i32 },
    /// Scale-in needs placement's word and placement cannot be reached.
    WaitPlacement { replicas: i32, ordinal: i32 },
}

impl ScaleStep {
    /// The StatefulSet size to apply with this step.
    pub fn replicas(&self) -> i32 {
        match *self {
            ScaleStep::Create { replicas }
            | ScaleStep::Steady { replicas }
            | ScaleStep::RemoveStore { replicas, .. }
            | ScaleStep::WaitTombstone { replicas, .. }
            | ScaleStep::WaitPlacement { replicas, .. } => replicas,
            ScaleStep::ScaleOut { to, .. } | ScaleStep::Shrink { to, .. } => to,
        }
    }

    /// True once nothing is left to do.
    pub fn is_steady(&self) -> bool {
        matches!(self, ScaleStep::Steady { .. } | ScaleStep::Create { .. })
    }
}

/// Decides the next step from the desired size, the StatefulSet's current
/// size (None: not created yet) and placement's stores by ordinal (None:
/// placement unreachable).
pub fn next(
    desired: i32,
    current: Option<i32>,
    stores: Option<&BTreeMap<i32, StoreInfo>>,
) -> ScaleStep {
    let Some(current) = current else {
        return ScaleStep::Create { replicas: desired };
    };
    if desired > current {
        return ScaleStep::ScaleOut {
            from: current,
            to: desired,
        };
    }
    if desired == current {
        // A live store beyond the last pod has lost its pod: remove it.
        let orphan = stores.and_then(|stores| {
            stores
                .range(current..)
                .find(|(_, s)| is_live(s.state))
                .map(|(ordinal, s)| (*ordinal, s.id))
        });
        return match orphan {
            Some((ordinal, store_id)) => ScaleStep::RemoveStore {
                replicas: current,
                ordinal,
                store_id,
            },
            None => ScaleStep::Steady { replicas: current },
        };
    }
    let ordinal = current - 1;
    let Some(stores) = stores else {
        return ScaleStep::WaitPlacement {
            replicas: current,
            ordinal,
        };
    };
    match stores.get(&ordinal) {
        None => ScaleStep::Shrink {
            from: current,
            to: ordinal,
        },
        Some(store) => match store.state {
            StoreState::Tombstone => ScaleStep::Shrink {
                from: current,
                to: ordinal,
            },
            StoreState::Offline => ScaleStep::WaitTombstone {
                replicas: current,
                ordinal,
                store_id: store.id,
                state: store.state,
            },
            StoreState::Up | StoreState::Disconnected | StoreState::Down | StoreState::Unknown => {
                ScaleStep::RemoveStore {
                    replicas: current,
                    ordinal,
                    store_id: store.id,
                }
            }
        },
    }
}

/// A store placement still counts on.
fn is_live(state: StoreState) -> bool {
    !matches!(state, StoreState::Tombstone | StoreState::Offline)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stores(states: &[(i32, u64, StoreState)]) -> BTreeMap<i32, StoreInfo> {
        states
            .iter()
            .map(|&(ordinal, id, state)| {
                (
                    ordinal,
                    StoreInfo {
                        id,
                        address: format!("pod-{ordinal}"),
                        state,
                        leader_count: 0,
                        region_count: 0,
                    },
                )
            })
            .collect()
    }

    use StoreState::*;

    #[test]
    fn create_and_scale_out_need_no_placement() {
        assert_eq!(next(3, None, None), ScaleStep::Create { replicas: 3 });
        assert_eq!(
            next(5, Some(3), None),
            ScaleStep::ScaleOut { from: 3, to: 5 }
        );
        assert_eq!(next(5, Some(3), None).replicas(), 5);
        assert_eq!(next(3, Some(3), None), ScaleStep::Steady { replicas: 3 });
    }

    #[test]
    fn scale_in_removes_the_highest_store_first() {
        let s = stores(&[(0, 1, Up), (1, 2, Up), (2, 3, Up), (3, 4, Up)]);
        let step = next(3, Some(4), Some(&s));
        assert_eq!(
            step,
            ScaleStep::RemoveStore {
                replicas: 4,
                ordinal: 3,
                store_id: 4
            }
        );
        assert_eq!(step.replicas(), 4, "the pod stays until its store is gone");
    }

    #[test]
    fn scale_in_waits_for_tombstone_then_shrinks_by_one() {
        let offline = stores(&[(2, 3, Up), (3, 4, Offline)]);
        assert!(matches!(
            next(2, Some(4), Some(&offline)),
            ScaleStep::WaitTombstone {
                ordinal: 3,
                store_id: 4,
                replicas: 4,
                ..
            }
        ));
        let gone = stores(&[(2, 3, Up), (3, 4, Tombstone)]);
        assert_eq!(
            next(2, Some(4), Some(&gone)),
            ScaleStep::Shrink { from: 4, to: 3 }
        );
        // The next pod down is handled on the next round.
        assert!(matches!(
            next(2, Some(3), Some(&gone)),
            ScaleStep::RemoveStore {
                ordinal: 2,
                store_id: 3,
                ..
            }
        ));
    }

    #[test]
    fn a_pod_without_a_store_shrinks_at_once() {
        let s = stores(&[(0, 1, Up)]);
        assert_eq!(
            next(1, Some(2), Some(&s)),
            ScaleStep::Shrink { from: 2, to: 1 }
        );
    }

    #[test]
    fn unreachable_placement_blocks_scale_in_only() {
        assert_eq!(
            next(3, Some(4), None),
            ScaleStep::WaitPlacement {
                replicas: 4,
                ordinal: 3
            }
        );
    }

    #[test]
    fn orphan_live_store_beyond_the_last_pod_is_removed() {
        let s = stores(&[(0, 1, Up), (3, 9, Disconnected), (4, 5, Tombstone)]);
        assert_eq!(
            next(3, Some(3), Some(&s)),
            ScaleStep::RemoveStore {
                replicas: 3,
                ordinal: 3,
                store_id: 9
            }
        );
        let settled = stores(&[(0, 1, Up), (3, 9, Offline), (4, 5, Tombstone)]);
        assert_eq!(
            next(3, Some(3), Some(&settled)),
            ScaleStep::Steady { replicas: 3 }
        );
    }
}
