//! Prometheus metrics for the storage node, served on the status port.

use std::sync::LazyLock;
use std::time::Instant;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

pub static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

fn register<C: prometheus::core::Collector + Clone + 'static>(c: C) -> C {
    // Registration only fails on duplicate names, which the statics below rule out.
    let _ = REGISTRY.register(Box::new(c.clone()));
    c
}

pub static GRPC_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    let opts = HistogramOpts::new(
        "shale_grpc_request_duration_seconds",
        "gRPC request latency",
    )
    .buckets(prometheus::exponential_buckets(0.0001, 2.0, 18).unwrap_or_default());
    register(HistogramVec::new(opts, &["method"]).unwrap_or_else(|_| unreachable_metric()))
});

pub static GRPC_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let opts = Opts::new(
        "shale_grpc_request_failures_total",
        "gRPC requests answered with a status error",
    );
    register(IntCounterVec::new(opts, &["method"]).unwrap_or_else(|_| unreachable_metric()))
});

pub static REGION_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let opts = Opts::new(
        "shale_region_errors_total",
        "requests rejected by the Region check",
    );
    register(IntCounterVec::new(opts, &["method"]).unwrap_or_else(|_| unreachable_metric()))
});

/// Metric constructors only fail on invalid names or label sets, which are
/// constants here; a failure is a programming error caught by the unit test.
fn unreachable_metric<T>() -> T {
    panic!("invalid metric definition")
}

pub fn observe(method: &'static str, started: Instant, ok: bool) {
    GRPC_DURATION
        .with_label_values(&[method])
        .observe(started.elapsed().as_secs_f64());
    if !ok {
        GRPC_FAILURES.with_label_values(&[method]).inc();
    }
}

/// The text exposition of every registered metric.
pub fn render() -> String {
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&REGISTRY.gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_register_and_render() {
        observe("raw_get", Instant::now(), false);
        REGION_ERRORS.with_label_values(&["raw_get"]).inc();
        let text = render();
        assert!(text.contains("shale_grpc_request_duration_seconds_bucket"));
        assert!(text.contains("shale_grpc_request_failures_total{method=\"raw_get\"} 1"));
        assert!(text.contains("shale_region_errors_total"));
    }
}
