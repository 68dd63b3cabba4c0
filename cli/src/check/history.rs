//! What a check records and concludes: the clock operations are timed
//! with, the anomalies found, the gaps between successful writes, and the
//! verdict.

use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

/// Microseconds since the check started: every operation is timed on this
/// one monotonic clock, so real-time order between operations is known.
#[derive(Clone, Copy, Debug)]
pub struct Clock(Instant, SystemTime);

impl Clock {
    fn start() -> Self {
        Clock(Instant::now(), SystemTime::now())
    }

    pub fn now_us(&self) -> u64 {
        self.0.elapsed().as_micros() as u64
    }

    /// The wall-clock time of the check's zero, in UTC (RFC 3339), so that
    /// "N s into the check" can be found in the servers' logs.
    pub fn zero_utc(&self) -> String {
        let ms = self
            .1
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        shale_placement::api::format::rfc3339_ms(ms as u64)
    }
}

/// One violated invariant, with what is needed to understand it.
#[derive(Debug, Clone)]
pub struct Anomaly {
    pub workload: &'static str,
    pub kind: &'static str,
    pub detail: String,
}

/// The outcome of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Consistent,
    Anomalies(usize),
    /// The cluster did not answer well enough to verify (or made no
    /// progress at all, so nothing was tested).
    Unverified(String),
}

impl Verdict {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Verdict::Consistent => ExitCode::SUCCESS,
            Verdict::Anomalies(_) => ExitCode::from(1),
            Verdict::Unverified(_) => ExitCode::from(2),
        }
    }
}

/// Shared by every workload of a check.
pub struct Report {
    clock: Clock,
    anomalies: Mutex<Vec<Anomaly>>,
    unverified: Mutex<Vec<String>>,
    /// Completion times of acknowledged writes, for write availability.
    writes: Mutex<Vec<u64>>,
    /// When the workloads were due to stop (the end of the availability
    /// window; operations still running then may finish later).
    workload_end_us: Mutex<Option<u64>>,
}

impl Default for Report {
    fn default() -> Self {
        Self::new()
    }
}

impl Report {
    pub fn new() -> Self {
        Report {
            clock: Clock::start(),
            anomalies: Mutex::default(),
            unverified: Mutex::default(),
            writes: Mutex::default(),
            workload_end_us: Mutex::default(),
        }
    }

    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Records (and prints at once) a violated invariant.
    pub fn anomaly(&self, workload: &'static str, kind: &'static str, detail: String) {
        println!("ANOMALY [{workload}] {kind}: {detail}");
        self.anomalies.lock().push(Anomaly {
            workload,
            kind,
            detail,
        });
    }

    /// Records that part of the verification could not be done.
    pub fn unverified(&self, what: String) {
        println!("UNVERIFIED: {what}");
        self.unverified.lock().push(what);
    }

    /// Writes were acknowledged at these times (on [`Report::clock`]).
    pub fn writes_acknowledged(&self, at_us: impl IntoIterator<Item = u64>) {
        self.writes.lock().extend(at_us);
    }

    /// A workload was due to stop at `deadline` (later calls keep the
    /// latest). Writes acknowledged after it do not count: a straggler that
    /// finishes late would stretch the window past the run.
    pub fn workload_deadline(&self, deadline: Instant) {
        let at = deadline.saturating_duration_since(self.clock.0).as_micros() as u64;
        let mut end = self.workload_end_us.lock();
        *end = Some(end.map_or(at, |e| e.max(at)));
    }

    /// The longest time no write was acknowledged, between the start of
    /// the check and the workloads' deadline.
    pub fn longest_write_gap(&self) -> Gap {
        let end = self
            .workload_end_us
            .lock()
            .unwrap_or_else(|| self.clock.now_us());
        let mut writes: Vec<u64> = self
            .writes
            .lock()
            .iter()
            .copied()
            .filter(|&t| t <= end)
            .collect();
        writes.sort_unstable();
        longest_gap(&writes, end)
    }

    /// Prints the summary and decides the verdict.
    pub fn finish(&self) -> Verdict {
        let anomalies = self.anomalies.lock().clone();
        let unverified = self.unverified.lock().clone();
        let writes = self.writes.lock().len();
        let gap = self.longest_write_gap();
        println!(
            "shale check: {writes} writes acknowledged, longest time without an acknowledged write {:.1}s (from {:.1}s to {:.1}s into the check)",
            gap.length().as_secs_f64(),
            gap.from_us as f64 / 1e6,
            gap.to_us as f64 / 1e6,
        );
        if !anomalies.is_empty() {
            println!("shale check: {} ANOMALIES:", anomalies.len());
            for a in &anomalies {
                println!("  [{}] {}: {}", a.workload, a.kind, a.detail);
            }
            return Verdict::Anomalies(anomalies.len());
        }
        if !unverified.is_empty() {
            return Verdict::Unverified(unverified.join("; "));
        }
        println!("shale check: no anomalies");
        Verdict::Consistent
    }
}

/// The longest gap between consecutive `times` (sorted), counting from 0
/// and up to `end`.
/// A stretch of the check's clock (microseconds) with no acknowledged write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub from_us: u64,
    pub to_us: u64,
}

impl Gap {
    pub fn length(&self) -> Duration {
        Duration::from_micros(self.to_us - self.from_us)
    }
}

/// The longest stretch between 0, the sorted `times` and `end`.
pub fn longest_gap(times: &[u64], end: u64) -> Gap {
    let mut last = 0;
    let mut longest = Gap {
        from_us: 0,
        to_us: 0,
    };
    for &t in times.iter().chain(std::iter::once(&end)) {
        if t.saturating_sub(last) > longest.to_us - longest.from_us {
            longest = Gap {
                from_us: last,
                to_us: t,
            };
        }
        last = last.max(t);
    }
    longest
}

/// When an operation ran, on the check's clock.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    pub invoked_us: u64,
    pub completed_us: u64,
}

/// Operations on one register in a total order (`pos`): a write's
/// position is that of the value it wrote, a read's that of the value it
/// returned. Linearizable iff an operation that completed before another
/// was invoked is not after it: a later write is strictly after, a later
/// read at or after. Returns the first violating pair (earlier, later).
pub fn real_time_violation(ops: &[(Span, u64, bool)]) -> Option<(usize, usize)> {
    // (completed, index) ascending; sweep operations by invocation time.
    let mut by_completion: Vec<usize> = (0..ops.len()).collect();
    by_completion.sort_by_key(|&i| ops[i].0.completed_us);
    let mut by_invocation: Vec<usize> = (0..ops.len()).collect();
    by_invocation.sort_by_key(|&i| ops[i].0.invoked_us);
    let mut done = 0;
    // The completed operation with the highest position so far.
    let mut highest: Option<usize> = None;
    for &j in &by_invocation {
        let (span, pos, is_write) = ops[j];
        while done < by_completion.len()
            && ops[by_completion[done]].0.completed_us < span.invoked_us
        {
            let i = by_completion[done];
            if highest.is_none_or(|h| ops[i].1 > ops[h].1) {
                highest = Some(i);
            }
            done += 1;
        }
        if let Some(h) = highest {
            let before = ops[h].1;
            let violated = if is_write {
                before >= pos
            } else {
                before > pos
            };
            if violated {
                return Some((h, j));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_zero_is_printed_as_utc_like_the_server_logs() {
        // Seed 28's run id (unix ms) and the store log time it matches.
        let started = UNIX_EPOCH + Duration::from_millis(1_796_682_652_316);
        let clock = Clock(Instant::now(), started);
        assert_eq!(clock.zero_utc(), "2026-12-07T22:30:52.316Z");
    }

    fn op(invoked_us: u64, completed_us: u64, pos: u64, is_write: bool) -> (Span, u64, bool) {
        (
            Span {
                invoked_us,
                completed_us,
            },
            pos,
            is_write,
        )
    }

    #[test]
    fn gaps_count_from_the_start_and_to_the_end() {
        let gap = |from_us, to_us| Gap { from_us, to_us };
        assert_eq!(longest_gap(&[], 50), gap(0, 50));
        assert_eq!(longest_gap(&[10, 12, 40], 45), gap(12, 40));
        assert_eq!(longest_gap(&[5, 6], 100), gap(6, 100));
        assert_eq!(longest_gap(&[30, 31], 20), gap(0, 30));
    }

    #[test]
    fn the_write_gap_ends_at_the_workloads_deadline() {
        let report = Report::new();
        let start = report.clock.0;
        report.writes_acknowledged([1_500_000, 2_000_000, 9_000_000]);
        report.workload_deadline(start + Duration::from_secs(4));
        // The write acknowledged at 9 s finished after the deadline: the
        // window is [0, 4 s], and its longest gap is 2 s to 4 s.
        assert_eq!(
            report.longest_write_gap(),
            Gap {
                from_us: 2_000_000,
                to_us: 4_000_000
            }
        );
    }

    #[test]
    fn overlapping_operations_may_take_any_order() {
        // A write [0, 10] of value 1 and a read [5, 8] seeing 0 or 1.
        assert_eq!(
            real_time_violation(&[op(0, 10, 1, true), op(5, 8, 0, false)]),
            None
        );
        assert_eq!(
            real_time_violation(&[op(0, 10, 1, true), op(5, 8, 1, false)]),
            None
        );
    }

    #[test]
    fn a_read_after_an_acknowledged_write_must_see_it() {
        let ops = [op(0, 10, 1, true), op(11, 12, 0, false)];
        assert_eq!(real_time_violation(&ops), Some((0, 1)));
    }

    #[test]
    fn a_read_cannot_go_back_after_a_newer_read() {
        let ops = [op(0, 3, 2, false), op(4, 5, 1, false)];
        assert_eq!(real_time_violation(&ops), Some((0, 1)));
        let ops = [op(0, 3, 1, false), op(4, 5, 1, false)];
        assert_eq!(real_time_violation(&ops), None);
    }

    #[test]
    fn a_write_cannot_come_before_a_read_that_saw_it_first() {
        // The read completed before the write was even invoked, yet saw its value.
        let ops = [op(0, 3, 5, false), op(4, 9, 5, true)];
        assert_eq!(real_time_violation(&ops), Some((0, 1)));
    }
}
