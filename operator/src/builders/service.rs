//! Services: a client Service for placement, and a headless peer Service per
//! component that gives every pod a stable DNS name. Peer Services publish
//! pods before they are ready: placement members must find each other to
//! become ready at all.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{metadata, BuildInput};
use crate::naming::{self, Component, PLACEMENT_PORT, STORAGE_PORT, STORAGE_STATUS_PORT};

fn port(name: &str, number: u16) -> ServicePort {
    ServicePort {
        name: Some(name.to_string()),
        port: i32::from(number),
        target_port: Some(IntOrString::String(name.to_string())),
        protocol: Some("TCP".to_string()),
        ..ServicePort::default()
    }
}

fn ports(component: Component) -> Vec<ServicePort> {
    match component {
        Component::Placement => vec![port("client", PLACEMENT_PORT)],
        Component::Storage => vec![
            port("grpc", STORAGE_PORT),
            port("status", STORAGE_STATUS_PORT),
        ],
    }
}

/// `<cluster>-placement`: what clients and the operator connect to.
pub fn placement_service(input: &BuildInput<'_>) -> Service {
    Service {
        metadata: metadata(
            input,
            naming::placement_service_name(input.name),
            Component::Placement,
        ),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            selector: Some(naming::selector_labels(input.name, Component::Placement)),
            ports: Some(ports(Component::Placement)),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// `<cluster>-<component>-peer`: headless, the StatefulSet's `serviceName`.
pub fn peer_service(input: &BuildInput<'_>, component: Component) -> Service {
    Service {
        metadata: metadata(
            input,
            naming::peer_service_name(input.name, component),
            component,
        ),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_string()),
            publish_not_ready_addresses: Some(true),
            selector: Some(naming::selector_labels(input.name, component)),
            ports: Some(ports(component)),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}
