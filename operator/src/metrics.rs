//! Prometheus metrics of the operator, served on `/metrics`.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramTimer, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub reconciliations: IntCounter,
    pub failures: IntCounterVec,
    pub placement_actions: IntCounterVec,
    pub duration: Histogram,
    pub leader: IntGauge,
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let reconciliations =
            IntCounter::new("shale_operator_reconciliations_total", "Reconciles started")?;
        let failures = IntCounterVec::new(
            Opts::new(
                "shale_operator_reconcile_failures_total",
                "Reconciles that failed, by failing step",
            ),
            &["error"],
        )?;
        let placement_actions = IntCounterVec::new(
            Opts::new(
                "shale_operator_placement_actions_total",
                "Requests sent to placement, by kind",
            ),
            &["action"],
        )?;
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "shale_operator_reconcile_duration_seconds",
                "Time spent in one reconcile",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )?;
        let leader = IntGauge::new(
            "shale_operator_leader",
            "1 while this replica holds the leader lease",
        )?;
        registry.register(Box::new(reconciliations.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(placement_actions.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        Ok(Metrics {
            registry,
            reconciliations,
            failures,
            placement_actions,
            duration,
            leader,
        })
    }

    /// Counts a reconcile and times it until the timer drops.
    pub fn reconcile_started(&self) -> HistogramTimer {
        self.reconciliations.inc();
        self.duration.start_timer()
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        String::from_utf8_lossy(&buffer).into_owned()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn renders_registered_metrics() {
        let m = Metrics::new().unwrap();
        drop(m.reconcile_started());
        m.failures.with_label_values(&["apply"]).inc();
        m.leader.set(1);
        let text = m.render();
        assert!(
            text.contains("shale_operator_reconciliations_total 1"),
            "{text}"
        );
        assert!(
            text.contains("shale_operator_reconcile_failures_total{error=\"apply\"} 1"),
            "{text}"
        );
        assert!(text.contains("shale_operator_leader 1"), "{text}");
        assert!(text.contains("shale_operator_reconcile_duration_seconds_count 1"));
    }
}
