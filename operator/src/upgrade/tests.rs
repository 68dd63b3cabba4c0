use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::fixtures::{settled_sts, store};

fn pods(revisions: &[(&str, bool)]) -> Vec<PodView> {
    revisions
        .iter()
        .enumerate()
        .map(|(o, (rev, ready))| PodView {
            ordinal: o as i32,
            revision: Some(rev.to_string()),
            ready: *ready,
        })
        .collect()
}

fn stores(leaders: &[u64]) -> BTreeMap<i32, StoreInfo> {
    leaders
        .iter()
        .enumerate()
        .map(|(o, l)| (o as i32, store(o as u64 + 1, o as i32, StoreState::Up, *l)))
        .collect()
}

fn upgrading_sts() -> StsView {
    StsView {
        update_revision: Some("new".into()),
        ..settled_sts(3, "old")
    }
}

struct Case {
    sts: StsView,
    pods: Vec<PodView>,
    stores: Option<BTreeMap<i32, StoreInfo>>,
    evicting: Vec<u64>,
    placement_rolled_out: bool,
    in_flight: Option<UpgradeProgress>,
}

impl Case {
    fn new() -> Case {
        Case {
            sts: upgrading_sts(),
            pods: pods(&[("old", true), ("old", true), ("old", true)]),
            stores: Some(stores(&[5, 5, 5])),
            evicting: Vec::new(),
            placement_rolled_out: true,
            in_flight: None,
        }
    }

    fn next(&self) -> UpgradeStep {
        next(&UpgradeInput {
            replicas: 3,
            sts: Some(&self.sts),
            pods: &self.pods,
            stores: self.stores.as_ref(),
            evicting: Some(&self.evicting),
            placement_rolled_out: self.placement_rolled_out,
            in_flight: self.in_flight.as_ref(),
            now: Timestamp::UNIX_EPOCH + SignedDuration::from_secs(30),
            evict_timeout: SignedDuration::from_secs(60),
        })
    }
}

fn flight(ordinal: i32, store_id: u64) -> UpgradeProgress {
    UpgradeProgress {
        ordinal,
        store_id,
        evicting_since: Time(Timestamp::UNIX_EPOCH),
    }
}

#[test]
fn nothing_to_do_when_every_pod_is_current() {
    let mut case = Case::new();
    case.sts = settled_sts(3, "old");
    assert_eq!(case.next(), UpgradeStep::Idle);
    assert_eq!(UpgradeStep::Idle.partition(Some(&case.sts), 3), 3);
}

#[test]
fn stale_statefulset_status_decides_nothing() {
    let mut case = Case::new();
    case.sts.fresh = false;
    assert_eq!(case.next(), UpgradeStep::Settling);
    assert_eq!(UpgradeStep::Settling.partition(Some(&case.sts), 3), 3);
}

#[test]
fn starts_with_the_highest_ordinal_by_evicting_its_leaders() {
    let case = Case::new();
    let step = case.next();
    assert_eq!(
        step,
        UpgradeStep::EvictLeader {
            ordinal: 2,
            store_id: 3
        }
    );
    assert_eq!(step.partition(Some(&case.sts), 3), 3, "no pod rolls yet");
    let progress = step.progress(None, Timestamp::UNIX_EPOCH).unwrap();
    assert_eq!((progress.ordinal, progress.store_id), (2, 3));
}

#[test]
fn waits_for_placement_and_for_every_pod_to_be_ready() {
    let mut case = Case::new();
    case.placement_rolled_out = false;
    assert!(matches!(case.next(), UpgradeStep::Wait { reason } if reason.contains("placement")));
    let mut case = Case::new();
    case.pods = pods(&[("old", true), ("old", false), ("old", true)]);
    assert!(matches!(case.next(), UpgradeStep::Wait { reason } if reason.contains("pod 1")));
}

#[test]
fn waits_for_leaders_then_restarts() {
    let mut case = Case::new();
    case.in_flight = Some(flight(2, 3));
    case.evicting = vec![3];
    assert_eq!(
        case.next(),
        UpgradeStep::WaitLeaders {
            ordinal: 2,
            store_id: 3,
            leaders: 5
        }
    );
    case.stores = Some(stores(&[5, 5, 0]));
    let step = case.next();
    assert_eq!(
        step,
        UpgradeStep::Restart {
            ordinal: 2,
            store_id: Some(3)
        }
    );
    assert_eq!(step.partition(Some(&case.sts), 3), 2);
}

#[test]
fn a_lost_scheduler_is_added_again() {
    let mut case = Case::new();
    case.in_flight = Some(flight(2, 3));
    assert_eq!(
        case.next(),
        UpgradeStep::EvictLeader {
            ordinal: 2,
            store_id: 3
        }
    );
}

#[test]
fn the_restarted_pod_gets_its_leaders_back_once_ready_and_up() {
    let mut case = Case::new();
    case.in_flight = Some(flight(2, 3));
    case.evicting = vec![3];
    case.pods = pods(&[("old", true), ("old", true), ("new", false)]);
    assert!(matches!(case.next(), UpgradeStep::Wait { .. }));
    case.pods = pods(&[("old", true), ("old", true), ("new", true)]);
    let step = case.next();
    assert_eq!(
        step,
        UpgradeStep::RemoveEvictLeader {
            ordinal: 2,
            store_id: 3
        }
    );
    assert_eq!(
        step.progress(case.in_flight.as_ref(), Timestamp::UNIX_EPOCH),
        None
    );
}

#[test]
fn a_pod_without_a_live_store_restarts_directly() {
    let mut case = Case::new();
    let mut s = stores(&[5, 5]);
    s.insert(2, store(3, 2, StoreState::Tombstone, 0));
    case.stores = Some(s);
    assert_eq!(
        case.next(),
        UpgradeStep::Restart {
            ordinal: 2,
            store_id: None
        }
    );
    case.stores = None;
    assert!(matches!(case.next(), UpgradeStep::Wait { reason } if reason.contains("unreachable")));
}

#[test]
fn a_scheduler_left_on_an_upgraded_pod_is_removed_before_the_next_pod() {
    // The status recording pod 2's step was not seen this round.
    let mut case = Case::new();
    case.pods = pods(&[("old", true), ("old", true), ("new", true)]);
    case.evicting = vec![3];
    assert_eq!(
        case.next(),
        UpgradeStep::RemoveEvictLeader {
            ordinal: 2,
            store_id: 3
        }
    );
    // Schedulers on stores of pods not yet upgraded are not touched.
    case.pods = pods(&[("old", true), ("old", true), ("old", true)]);
    assert_eq!(
        case.next(),
        UpgradeStep::EvictLeader {
            ordinal: 2,
            store_id: 3
        }
    );
}
