//! Per-request outcomes and latency: HDR histograms in microseconds, counters per outcome.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Why a request failed (a refusal for lack of stock is not a failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// PostgreSQL 40P01.
    Deadlock,
    /// PostgreSQL 40001.
    Serialization,
    /// SQLite busy or locked.
    Busy,
    /// The server refused for load (group-commit queue full, HTTP 503).
    Overloaded,
    /// A pool or HTTP timeout.
    Timeout,
    /// Open loop only: the request was due but too many were in flight, so it was not sent.
    Backlog,
    Other,
}

/// What one request came to.
#[derive(Debug, Clone)]
pub enum Outcome {
    Ok,
    /// Refused for insufficient stock: a correct answer, counted apart from errors.
    Refused,
    Error(ErrorKind, String),
}

impl Outcome {
    pub fn other(message: impl std::fmt::Display) -> Self {
        Outcome::Error(ErrorKind::Other, message.to_string())
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorCounts {
    pub deadlock: u64,
    pub serialization: u64,
    pub busy: u64,
    pub overloaded: u64,
    pub timeout: u64,
    pub backlog: u64,
    pub other: u64,
}

impl ErrorCounts {
    pub fn add(&mut self, kind: ErrorKind) {
        let slot = match kind {
            ErrorKind::Deadlock => &mut self.deadlock,
            ErrorKind::Serialization => &mut self.serialization,
            ErrorKind::Busy => &mut self.busy,
            ErrorKind::Overloaded => &mut self.overloaded,
            ErrorKind::Timeout => &mut self.timeout,
            ErrorKind::Backlog => &mut self.backlog,
            ErrorKind::Other => &mut self.other,
        };
        *slot += 1;
    }

    pub fn merge(&mut self, o: &ErrorCounts) {
        self.deadlock += o.deadlock;
        self.serialization += o.serialization;
        self.busy += o.busy;
        self.overloaded += o.overloaded;
        self.timeout += o.timeout;
        self.backlog += o.backlog;
        self.other += o.other;
    }

    pub fn total(&self) -> u64 {
        self.deadlock + self.serialization + self.busy + self.overloaded + self.timeout + self.backlog + self.other
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// Outcomes and latencies of a set of requests. Latency is recorded for every request that
/// got an answer (success, refusal or error), never for requests not sent.
#[derive(Debug, Clone)]
pub struct Recorder {
    hist: Histogram<u64>,
    pub ok: u64,
    pub refused: u64,
    pub errors: ErrorCounts,
    /// The first error message seen, to show what went wrong.
    pub error_sample: Option<String>,
}

/// Longest latency the histograms hold (longer ones are clamped to it): 10 minutes.
const LATENCY_MAX_US: u64 = 600_000_000;

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            hist: Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid bounds"),
            ok: 0,
            refused: 0,
            errors: ErrorCounts::default(),
            error_sample: None,
        }
    }

    pub fn record(&mut self, outcome: &Outcome, latency: Duration) {
        match outcome {
            Outcome::Ok => self.ok += 1,
            Outcome::Refused => self.refused += 1,
            Outcome::Error(kind, message) => {
                self.errors.add(*kind);
                if self.error_sample.is_none() {
                    self.error_sample = Some(message.clone());
                }
                if *kind == ErrorKind::Backlog {
                    return;
                }
            }
        }
        self.hist.saturating_record((latency.as_micros() as u64).clamp(1, LATENCY_MAX_US));
    }

    pub fn merge(&mut self, other: &Recorder) {
        self.hist.add(&other.hist).expect("same bounds");
        self.ok += other.ok;
        self.refused += other.refused;
        self.errors.merge(&other.errors);
        if self.error_sample.is_none() {
            self.error_sample.clone_from(&other.error_sample);
        }
    }

    pub fn attempted(&self) -> u64 {
        self.ok + self.refused + self.errors.total()
    }

    pub fn latency(&self) -> Latency {
        if self.hist.is_empty() {
            return Latency::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            p50_ms: ms(self.hist.value_at_quantile(0.50)),
            p95_ms: ms(self.hist.value_at_quantile(0.95)),
            p99_ms: ms(self.hist.value_at_quantile(0.99)),
            p999_ms: ms(self.hist.value_at_quantile(0.999)),
            max_ms: ms(self.hist.max()),
            mean_ms: self.hist.mean() / 1000.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorder_counts_and_merges() {
        let mut a = Recorder::new();
        a.record(&Outcome::Ok, Duration::from_millis(1));
        a.record(&Outcome::Refused, Duration::from_millis(2));
        let mut b = Recorder::new();
        b.record(&Outcome::Error(ErrorKind::Deadlock, "deadlock".into()), Duration::from_millis(100));
        b.record(&Outcome::Error(ErrorKind::Backlog, "backlog".into()), Duration::ZERO);
        a.merge(&b);
        assert_eq!(a.ok, 1);
        assert_eq!(a.refused, 1);
        assert_eq!(a.errors.deadlock, 1);
        assert_eq!(a.errors.backlog, 1);
        assert_eq!(a.attempted(), 4);
        let latency = a.latency();
        assert!((latency.max_ms - 100.0).abs() < 0.5, "{latency:?}");
        assert!((latency.p50_ms - 2.0).abs() < 0.1, "{latency:?}");
    }
}
