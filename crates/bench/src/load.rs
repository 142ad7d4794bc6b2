//! Load drivers: closed loop (N clients back to back, for throughput), open loop (requests
//! sent on a fixed schedule whatever the answers, for latency without coordinated omission),
//! and burst (many buyers released at once).

use crate::stats::{ErrorKind, Outcome, Recorder};
use futures::future::BoxFuture;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Hold,
    Read,
}

/// One request's result as a driver sees it.
#[derive(Debug, Clone)]
pub struct OpRecord {
    pub kind: OpKind,
    pub outcome: Outcome,
    /// Units the request asked to hold (0 for reads).
    pub units: i64,
    /// False for requests built to be unsatisfiable (more than a stock row holds).
    pub satisfiable: bool,
}

/// Builds and sends request number `index`.
pub type OpFn = Arc<dyn Fn(u64) -> BoxFuture<'static, OpRecord> + Send + Sync>;

/// Totals over every request of a run, inside or outside the measurement window, for the
/// consistency checks against the database.
#[derive(Debug, Default)]
pub struct Tally {
    /// Units of holds the client was told succeeded.
    pub acked_units: AtomicI64,
    /// Units of satisfiable holds refused for insufficient stock.
    pub refused_satisfiable_units: AtomicI64,
    /// Holds built to be unsatisfiable that were accepted anyway.
    pub accepted_unsatisfiable: AtomicI64,
    /// Hold requests of any outcome.
    pub holds_sent: AtomicI64,
}

impl Tally {
    fn add(&self, record: &OpRecord) {
        if record.kind != OpKind::Hold {
            return;
        }
        if matches!(record.outcome, Outcome::Error(ErrorKind::Backlog, _)) {
            return;
        }
        self.holds_sent.fetch_add(1, Ordering::Relaxed);
        match (&record.outcome, record.satisfiable) {
            (Outcome::Ok, true) => {
                self.acked_units.fetch_add(record.units, Ordering::Relaxed);
            }
            (Outcome::Ok, false) => {
                self.acked_units.fetch_add(record.units, Ordering::Relaxed);
                self.accepted_unsatisfiable.fetch_add(1, Ordering::Relaxed);
            }
            (Outcome::Refused, true) => {
                self.refused_satisfiable_units.fetch_add(record.units, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    pub fn get(counter: &AtomicI64) -> i64 {
        counter.load(Ordering::Relaxed)
    }
}

/// What a driver measured inside its window.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    pub window: Duration,
    pub holds: Recorder,
    pub reads: Recorder,
}

impl Measured {
    pub fn all(&self) -> Recorder {
        let mut all = self.holds.clone();
        all.merge(&self.reads);
        all
    }

    fn record(&mut self, record: &OpRecord, latency: Duration) {
        match record.kind {
            OpKind::Hold => self.holds.record(&record.outcome, latency),
            OpKind::Read => self.reads.record(&record.outcome, latency),
        }
    }

    fn merge(&mut self, other: &Measured) {
        self.holds.merge(&other.holds);
        self.reads.merge(&other.reads);
    }
}

/// `clients` tasks each send a request, wait for the answer, and send the next, for
/// `warmup + duration`; requests started after the warm-up and answered before the end count.
pub async fn closed_loop(
    clients: usize,
    warmup: Duration,
    duration: Duration,
    tally: &Arc<Tally>,
    op: &OpFn,
) -> Measured {
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let counter = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients.max(1) {
        let (op, tally, counter) = (op.clone(), tally.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let mut measured = Measured::default();
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let record = op(counter.fetch_add(1, Ordering::Relaxed)).await;
                let answered = Instant::now();
                tally.add(&record);
                if sent >= measure_from && answered <= end {
                    measured.record(&record, answered - sent);
                }
            }
            measured
        }));
    }
    let mut total = Measured { window: duration, ..Measured::default() };
    for task in tasks {
        if let Ok(measured) = task.await {
            total.merge(&measured);
        }
    }
    total
}

/// Sends `rate` requests per second on a fixed schedule until `stop` is cancelled, each as
/// its own task, and measures latency from the moment each request was due (so a stalled
/// system is charged for the wait). Requests due after the warm-up count; at most
/// `max_in_flight` are outstanding, the rest are counted as `Backlog` errors. The window runs
/// from the end of the warm-up to the stop or to the last counted answer, whichever is later,
/// so a system that cannot keep up shows the rate it really answered at.
pub async fn open_loop(
    rate: f64,
    warmup: Duration,
    stop: CancellationToken,
    max_in_flight: usize,
    tally: &Arc<Tally>,
    op: &OpFn,
) -> Measured {
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let start = Instant::now();
    let measure_from = start + warmup;
    let shared = Arc::new(Mutex::new(Measured::default()));
    let last_answer = Arc::new(Mutex::new(measure_from));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let tracker = TaskTracker::new();
    let mut next = start;
    let mut index = 0u64;
    let stopped_at = loop {
        let now = Instant::now();
        if stop.is_cancelled() {
            break now;
        }
        while next <= now {
            let due = next;
            next += interval;
            index += 1;
            let counted = due >= measure_from;
            if in_flight.load(Ordering::Relaxed) >= max_in_flight {
                if counted {
                    let record = OpRecord {
                        kind: OpKind::Hold,
                        outcome: Outcome::Error(ErrorKind::Backlog, format!("{max_in_flight} requests in flight")),
                        units: 0,
                        satisfiable: true,
                    };
                    lock(&shared).record(&record, Duration::ZERO);
                }
                continue;
            }
            in_flight.fetch_add(1, Ordering::Relaxed);
            let (op, tally, shared, in_flight, last_answer) =
                (op.clone(), tally.clone(), shared.clone(), in_flight.clone(), last_answer.clone());
            tracker.spawn(async move {
                let record = op(index).await;
                let answered = Instant::now();
                in_flight.fetch_sub(1, Ordering::Relaxed);
                tally.add(&record);
                if counted {
                    lock(&shared).record(&record, answered - due);
                    let mut last = last_answer.lock().unwrap_or_else(|e| e.into_inner());
                    *last = (*last).max(answered);
                }
            });
        }
        tokio::select! {
            () = tokio::time::sleep_until(next.into()) => {}
            () = stop.cancelled() => {}
        }
    };
    tracker.close();
    tracker.wait().await;
    let mut measured = lock(&shared).clone();
    let last = *last_answer.lock().unwrap_or_else(|e| e.into_inner());
    measured.window = stopped_at.max(last).saturating_duration_since(measure_from);
    measured
}

fn lock(m: &Mutex<Measured>) -> std::sync::MutexGuard<'_, Measured> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A cancellation token that fires after `after`.
pub fn stop_after(after: Duration) -> CancellationToken {
    let token = CancellationToken::new();
    let child = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        child.cancel();
    });
    token
}

/// `buyers` tasks wait at a gate and are released at once; returns the time from release to
/// the last answer, and latencies measured from the release.
pub async fn burst(buyers: usize, tally: &Arc<Tally>, op: &OpFn) -> (Duration, Measured) {
    let (gate, _) = tokio::sync::watch::channel(false);
    let ready = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(buyers);
    for index in 0..buyers {
        let (op, tally, ready) = (op.clone(), tally.clone(), ready.clone());
        let mut gate = gate.subscribe();
        tasks.push(tokio::spawn(async move {
            // Build the request before the gate opens, so release sends at once.
            let request = op(index as u64);
            ready.fetch_add(1, Ordering::Relaxed);
            let _ = gate.wait_for(|open| *open).await;
            let released = Instant::now();
            let record = request.await;
            let answered = Instant::now();
            tally.add(&record);
            (record, released, answered)
        }));
    }
    while ready.load(Ordering::Relaxed) < buyers {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let released = Instant::now();
    let _ = gate.send(true);
    let mut measured = Measured::default();
    let mut last = released;
    for task in tasks {
        if let Ok((record, _, answered)) = task.await {
            last = last.max(answered);
            measured.record(&record, answered.saturating_duration_since(released));
        }
    }
    measured.window = last - released;
    (measured.window, measured)
}
