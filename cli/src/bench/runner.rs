//! Runs an operation from N concurrent clients for a fixed time and records
//! every latency.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use hdrhistogram::Histogram;

/// What one measured run produced.
pub struct Sample {
    pub ops: u64,
    pub elapsed: Duration,
    pub latency_us: Histogram<u64>,
}

impl Sample {
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn percentile_ms(&self, q: f64) -> f64 {
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }
}

fn new_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000, 3).map_err(|e| anyhow!("histogram: {e}"))
}

/// One client's tally: operations done and their latencies.
struct Recorder {
    ops: u64,
    hist: Histogram<u64>,
}

impl Recorder {
    fn new() -> Result<Self> {
        Ok(Recorder {
            ops: 0,
            hist: new_histogram()?,
        })
    }

    fn record(&mut self, since: Instant) -> Result<()> {
        self.hist
            .record(since.elapsed().as_micros() as u64)
            .map_err(|e| anyhow!("histogram: {e}"))?;
        self.ops += 1;
        Ok(())
    }

    fn done(self) -> (u64, Histogram<u64>) {
        (self.ops, self.hist)
    }
}

/// A client task's result: operations done and their latencies.
type ClientTask = tokio::task::JoinHandle<Result<(u64, Histogram<u64>)>>;

/// Waits for every client and adds up what they measured.
async fn merge(tasks: Vec<ClientTask>, started: Instant) -> Result<Sample> {
    let mut latency_us = new_histogram()?;
    let mut ops = 0;
    for task in tasks {
        let (n, h) = task.await??;
        ops += n;
        latency_us.add(h).map_err(|e| anyhow!("histogram: {e}"))?;
    }
    Ok(Sample {
        ops,
        elapsed: started.elapsed(),
        latency_us,
    })
}

/// `op(client, seq)` from `clients` async tasks until `duration` has passed.
pub async fn run_async<F, Fut>(clients: usize, duration: Duration, op: F) -> Result<Sample>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send,
{
    let op = Arc::new(op);
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(clients);
    for client in 0..clients {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut rec = Recorder::new()?;
            while Instant::now() < deadline {
                let t = Instant::now();
                op(client, rec.ops).await?;
                rec.record(t)?;
            }
            Ok::<_, anyhow::Error>(rec.done())
        }));
    }
    merge(tasks, started).await
}

/// `op(client, seq)` from `clients` OS threads until `duration` has passed.
pub async fn run_blocking<F>(clients: usize, duration: Duration, op: F) -> Result<Sample>
where
    F: Fn(usize, u64) -> Result<()> + Send + Sync + 'static,
{
    let op = Arc::new(op);
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(clients);
    for client in 0..clients {
        let op = op.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            let mut rec = Recorder::new()?;
            while Instant::now() < deadline {
                let t = Instant::now();
                op(client, rec.ops)?;
                rec.record(t)?;
            }
            Ok::<_, anyhow::Error>(rec.done())
        }));
    }
    merge(tasks, started).await
}
