//! Worker supervision: every background worker is a reconciler that does a bounded run per
//! tick; the supervisor runs it, restarts it after a failure or a panic (with backoff), and
//! counts both, so a worker is never silently gone.

use std::time::Duration;
use store::workers::{Worker, Workers};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Longest pause after repeated failures.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Runs `worker` until `shutdown`: after a run that did a full batch at once, else after its
/// interval; after a failure or a panic with backoff, reporting it down in `registry` until a
/// run succeeds again.
pub fn spawn(worker: Worker, shutdown: CancellationToken, registry: Workers) -> JoinHandle<()> {
    let name = worker.name;
    let interval = worker.interval;
    registry.up(name);
    tokio::spawn(async move {
        let mut failures: u32 = 0;
        loop {
            // Each run is its own task, so a panic is caught as a JoinError and counted.
            let outcome = tokio::spawn(worker.run()).await;
            let pause = match outcome {
                Ok(Ok(progress)) => {
                    if failures > 0 {
                        tracing::info!(worker = name, "worker recovered");
                    }
                    failures = 0;
                    registry.up(name);
                    metrics::counter!("stockroom_worker_runs_total", "worker" => name).increment(1);
                    metrics::counter!("stockroom_worker_items_total", "worker" => name).increment(progress.done as u64);
                    if progress.done > 0 {
                        tracing::debug!(worker = name, done = progress.done, "worker run");
                    }
                    if progress.more { Duration::ZERO } else { interval }
                }
                Ok(Err(error)) => {
                    failures += 1;
                    metrics::counter!("stockroom_worker_failures_total", "worker" => name).increment(1);
                    tracing::error!(worker = name, error = %error, failures, "worker run failed; restarting");
                    registry.down(name, error.to_string());
                    backoff(interval, failures)
                }
                Err(join_error) => {
                    failures += 1;
                    metrics::counter!("stockroom_worker_failures_total", "worker" => name).increment(1);
                    tracing::error!(worker = name, error = %join_error, failures, "worker panicked; restarting");
                    registry.down(name, format!("panicked: {join_error}"));
                    backoff(interval, failures)
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
        tracing::info!(worker = name, "worker stopped");
    })
}

fn backoff(interval: Duration, failures: u32) -> Duration {
    interval.saturating_mul(2u32.saturating_pow(failures.min(8))).min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use store::workers::Progress;

    #[tokio::test]
    async fn a_worker_that_fails_or_panics_is_run_again_and_reported_down_until_it_recovers() {
        let runs = Arc::new(AtomicUsize::new(0));
        let shutdown = CancellationToken::new();
        let registry = Workers::new();
        let counter = runs.clone();
        let worker = Worker::new("flaky", Duration::from_millis(1), move || {
            let counter = counter.clone();
            async move {
                match counter.fetch_add(1, Ordering::SeqCst) {
                    0 => Err(std::io::Error::other("first run fails")),
                    1 => panic!("second run panics"),
                    _ => Ok(Progress { done: 1, more: false }),
                }
            }
        });
        let handle = spawn(worker, shutdown.clone(), registry.clone());
        for _ in 0..200 {
            if runs.load(Ordering::SeqCst) >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        shutdown.cancel();
        handle.await.unwrap();
        assert!(runs.load(Ordering::SeqCst) >= 3, "the worker was not restarted after failing and panicking");
        let report = &registry.reports()[0];
        assert_eq!(report.state, store::workers::WorkerState::Up, "a recovered worker is up again");
        assert_eq!(report.failures, 2, "the failure and the panic are both counted");
    }
}
