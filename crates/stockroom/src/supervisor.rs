//! Worker supervision: every background worker is a reconciler that does a bounded run per
//! tick; the supervisor runs it, restarts it after a failure or a panic (with backoff), and
//! counts both, so a worker is never silently gone.

use std::future::Future;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What one run did; `more` asks for the next run at once (a full batch was processed).
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub done: usize,
    pub more: bool,
}

/// Longest pause after repeated failures.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

pub fn spawn<F, Fut>(name: &'static str, interval: Duration, shutdown: CancellationToken, run: F) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<Progress>> + Send + 'static,
{
    tokio::spawn(async move {
        let mut failures: u32 = 0;
        loop {
            // Each run is its own task, so a panic is caught as a JoinError and counted.
            let outcome = tokio::spawn(run()).await;
            let pause = match outcome {
                Ok(Ok(progress)) => {
                    failures = 0;
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
                    tracing::error!(worker = name, error = ?error, failures, "worker run failed; restarting");
                    backoff(interval, failures)
                }
                Err(join_error) => {
                    failures += 1;
                    metrics::counter!("stockroom_worker_failures_total", "worker" => name).increment(1);
                    tracing::error!(worker = name, error = %join_error, failures, "worker panicked; restarting");
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

    #[tokio::test]
    async fn a_worker_that_fails_or_panics_is_run_again() {
        let runs = Arc::new(AtomicUsize::new(0));
        let shutdown = CancellationToken::new();
        let counter = runs.clone();
        let handle = spawn("flaky", Duration::from_millis(1), shutdown.clone(), move || {
            let counter = counter.clone();
            async move {
                match counter.fetch_add(1, Ordering::SeqCst) {
                    0 => anyhow::bail!("first run fails"),
                    1 => panic!("second run panics"),
                    _ => Ok(Progress { done: 1, more: false }),
                }
            }
        });
        for _ in 0..200 {
            if runs.load(Ordering::SeqCst) >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        shutdown.cancel();
        handle.await.unwrap();
        assert!(runs.load(Ordering::SeqCst) >= 3, "the worker was not restarted after failing and panicking");
    }
}
