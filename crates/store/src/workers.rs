//! Which background workers are up: the supervisor and the batch executors report here, and
//! `/ready` reads it, so a worker that is down is visible instead of silently gone.

use futures::future::BoxFuture;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What one run of a worker did; `more` asks for the next run at once (a full batch was
/// processed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub done: usize,
    pub more: bool,
}

pub type WorkerError = Box<dyn std::error::Error + Send + Sync>;

type Run = Arc<dyn Fn() -> BoxFuture<'static, Result<Progress, WorkerError>> + Send + Sync>;

/// A background worker as a context declares it: a reconciler doing one bounded run per
/// tick. The binary supervises every context's list (restart with backoff, counted, reported
/// here), so a context says what runs and the binary decides how.
#[derive(Clone)]
pub struct Worker {
    pub name: &'static str,
    /// Pause between runs that found nothing more to do.
    pub interval: Duration,
    run: Run,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("name", &self.name).field("interval", &self.interval).finish_non_exhaustive()
    }
}

impl Worker {
    pub fn new<F, Fut, E>(name: &'static str, interval: Duration, run: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Progress, E>> + Send + 'static,
        E: Into<WorkerError>,
    {
        let run = Arc::new(run);
        Self {
            name,
            interval,
            run: Arc::new(move || {
                let fut = run();
                Box::pin(async move { fut.await.map_err(Into::into) })
            }),
        }
    }

    /// One run.
    pub fn run(&self) -> BoxFuture<'static, Result<Progress, WorkerError>> {
        (self.run)()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Its last run succeeded (or it is waiting for work).
    Up,
    /// Its last run failed or panicked; it is backing off before the next.
    Down,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct WorkerReport {
    pub name: String,
    pub state: WorkerState,
    /// Failed or panicked runs since the process started.
    pub failures: u64,
    /// The latest failure, kept after the worker is up again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The registry; cheap to clone, shared by everything that runs or reports workers.
#[derive(Debug, Clone, Default)]
pub struct Workers {
    inner: Arc<Mutex<BTreeMap<String, WorkerReport>>>,
}

impl Workers {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, name: &str, change: impl FnOnce(&mut WorkerReport) -> R) -> R {
        let mut map = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let report = map.entry(name.to_owned()).or_insert_with(|| WorkerReport {
            name: name.to_owned(),
            state: WorkerState::Up,
            failures: 0,
            last_error: None,
        });
        change(report)
    }

    /// Registers a worker as up (also after it recovered).
    pub fn up(&self, name: &str) {
        self.with(name, |r| r.state = WorkerState::Up);
    }

    /// Marks a worker down after a failure or a panic, and counts it.
    pub fn down(&self, name: &str, error: impl Into<String>) {
        let error = error.into();
        self.with(name, |r| {
            r.state = WorkerState::Down;
            r.failures += 1;
            r.last_error = Some(error);
        });
    }

    /// Counts a failure that the worker survived without going down (a batch that panicked
    /// and was answered with an error).
    pub fn failed_but_up(&self, name: &str, error: impl Into<String>) {
        let error = error.into();
        self.with(name, |r| {
            r.failures += 1;
            r.last_error = Some(error);
        });
    }

    /// Every worker, by name.
    pub fn reports(&self) -> Vec<WorkerReport> {
        let map = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        map.values().cloned().collect()
    }

    /// The names of workers that are down.
    pub fn down_names(&self) -> Vec<String> {
        self.reports().into_iter().filter(|r| r.state == WorkerState::Down).map(|r| r.name).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_is_down_after_a_failure_and_up_again_after_recovering() {
        let workers = Workers::new();
        workers.up("sweeper");
        assert!(workers.down_names().is_empty());
        workers.down("sweeper", "database gone");
        assert_eq!(workers.down_names(), vec!["sweeper".to_owned()]);
        workers.up("sweeper");
        let report = &workers.reports()[0];
        assert_eq!((report.state, report.failures), (WorkerState::Up, 1));
        assert_eq!(report.last_error.as_deref(), Some("database gone"));
    }
}
