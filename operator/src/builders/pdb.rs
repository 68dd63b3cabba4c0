//! PodDisruptionBudgets: voluntary disruptions (node drains) take one pod of
//! a component at a time, so placement keeps its quorum and every Region
//! keeps a majority of its replicas.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{metadata, BuildInput};
use crate::naming::{self, Component};

pub fn pod_disruption_budget(input: &BuildInput<'_>, component: Component) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: metadata(
            input,
            naming::statefulset_name(input.name, component),
            component,
        ),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(naming::selector_labels(input.name, component)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}
