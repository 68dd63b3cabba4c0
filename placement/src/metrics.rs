//! Prometheus metrics, served at `/metrics` on the main port. Each server has
//! its own registry so several can run in one process (tests, playground).

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

pub struct Metrics {
    registry: Registry,
    pub grpc_requests: IntCounterVec,
    pub grpc_errors: IntCounterVec,
    pub tso_timestamps: IntCounter,
    pub region_heartbeats: IntCounter,
    regions: IntGauge,
    stores: IntGauge,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let grpc_requests = IntCounterVec::new(
            Opts::new("placement_grpc_requests_total", "gRPC requests by method"),
            &["method"],
        )?;
        let grpc_errors = IntCounterVec::new(
            Opts::new(
                "placement_grpc_errors_total",
                "gRPC responses carrying an error header, by method and error type",
            ),
            &["method", "type"],
        )?;
        let tso_timestamps = IntCounter::new(
            "placement_tso_timestamps_total",
            "Timestamps handed out by the TSO",
        )?;
        let region_heartbeats = IntCounter::new(
            "placement_region_heartbeats_total",
            "Region heartbeats received",
        )?;
        let regions = IntGauge::new("placement_regions", "Regions in the routing table")?;
        let stores = IntGauge::new("placement_stores", "Registered stores (any state)")?;
        registry.register(Box::new(grpc_requests.clone()))?;
        registry.register(Box::new(grpc_errors.clone()))?;
        registry.register(Box::new(tso_timestamps.clone()))?;
        registry.register(Box::new(region_heartbeats.clone()))?;
        registry.register(Box::new(regions.clone()))?;
        registry.register(Box::new(stores.clone()))?;
        Ok(Metrics {
            registry,
            grpc_requests,
            grpc_errors,
            tso_timestamps,
            region_heartbeats,
            regions,
            stores,
        })
    }

    /// Text exposition format, with the gauges refreshed first.
    pub fn render(&self, regions: usize, stores: usize) -> Result<String, prometheus::Error> {
        self.regions.set(i64::try_from(regions).unwrap_or(i64::MAX));
        self.stores.set(i64::try_from(stores).unwrap_or(i64::MAX));
        TextEncoder::new().encode_to_string(&self.registry.gather())
    }
}
