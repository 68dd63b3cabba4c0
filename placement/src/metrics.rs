//! Prometheus metrics, served at `/metrics` on the main port. Each server has
//! its own registry so several can run in one process (tests, playground).

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

pub struct Metrics {
    registry: Registry,
    pub grpc_requests: IntCounterVec,
    pub grpc_errors: IntCounterVec,
    pub tso_timestamps: IntCounter,
    pub region_heartbeats: IntCounter,
    /// Times this member became the serving leader.
    pub leader_changes: IntCounter,
    /// Scheduling operators by type (e.g. `balance-region`) and event
    /// (`create`, `finish`, `timeout`, `cancel`).
    pub operators: IntCounterVec,
    is_leader: IntGauge,
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
        let leader_changes = IntCounter::new(
            "placement_leader_takeovers_total",
            "Times this member took over as the serving leader",
        )?;
        let operators = IntCounterVec::new(
            Opts::new(
                "placement_operators_total",
                "Scheduling operators by type and event (create, finish, timeout, cancel)",
            ),
            &["type", "event"],
        )?;
        let is_leader = IntGauge::new("placement_is_leader", "1 while this member leads")?;
        let regions = IntGauge::new("placement_regions", "Regions in the routing table")?;
        let stores = IntGauge::new("placement_stores", "Registered stores (any state)")?;
        registry.register(Box::new(grpc_requests.clone()))?;
        registry.register(Box::new(grpc_errors.clone()))?;
        registry.register(Box::new(tso_timestamps.clone()))?;
        registry.register(Box::new(region_heartbeats.clone()))?;
        registry.register(Box::new(leader_changes.clone()))?;
        registry.register(Box::new(operators.clone()))?;
        registry.register(Box::new(is_leader.clone()))?;
        registry.register(Box::new(regions.clone()))?;
        registry.register(Box::new(stores.clone()))?;
        Ok(Metrics {
            registry,
            grpc_requests,
            grpc_errors,
            tso_timestamps,
            region_heartbeats,
            leader_changes,
            operators,
            is_leader,
            regions,
            stores,
        })
    }

    /// Text exposition format, with the gauges refreshed first.
    pub fn render(
        &self,
        is_leader: bool,
        regions: usize,
        stores: usize,
    ) -> Result<String, prometheus::Error> {
        self.is_leader.set(i64::from(is_leader));
        self.regions.set(i64::try_from(regions).unwrap_or(i64::MAX));
        self.stores.set(i64::try_from(stores).unwrap_or(i64::MAX));
        TextEncoder::new().encode_to_string(&self.registry.gather())
    }
}
