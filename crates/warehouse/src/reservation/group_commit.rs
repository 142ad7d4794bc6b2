//! Group commit: concurrent reservation requests are queued and applied in batches, one
//! transaction per batch, each request answered only after its batch has committed.
//!
//! A flash sale is otherwise bound by one row lock and one fsync per buyer. Here workers take
//! whatever is queued (up to `batch_max`, waiting at most `window` for more), apply it in
//! queue order (consecutive holds as one coalesced [`hold_batch`](super::hold_batch)), and
//! commit once. Outcomes are exactly those of applying the requests one by one in order.
//!
//! The queue is bounded: when it is full, requests are refused at once with
//! [`WarehouseError::Overloaded`] (503 with `Retry-After` over HTTP) instead of piling up.
//! A batch that fails on the database is retried if the failure is a lock conflict, and
//! otherwise re-applied one request per transaction, so one bad request cannot fail others.

use super::{HoldCommand, Reservation};
use crate::{Result, WarehouseError};
use kernel::{Clock, ReservationId};
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::Db;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;

/// Attempts of a batch that failed on a deadlock or serialization conflict.
const BATCH_ATTEMPTS_MAX: usize = 3;

#[derive(Debug, Clone)]
pub struct GroupCommitConfig {
    /// Most requests in one transaction.
    pub batch_max: usize,
    /// How long a worker waits for more requests after the first; zero takes only what is
    /// queued (batches then form while the previous batch commits).
    pub window: Duration,
    /// Most requests waiting; beyond it requests are refused with `Overloaded`.
    pub queue_max: usize,
    /// Workers applying batches concurrently: 1 on SQLite (one writer anyway); a few on
    /// PostgreSQL so one batch's commit overlaps the next batch's work.
    pub workers: usize,
}

impl Default for GroupCommitConfig {
    fn default() -> Self {
        Self { batch_max: 512, window: Duration::ZERO, queue_max: 20_000, workers: 1 }
    }
}

/// One queued request.
#[derive(Debug, Clone)]
pub enum Op {
    Hold(HoldCommand),
    Confirm(ReservationId),
    Release(ReservationId),
    Fulfill(ReservationId),
}

struct Job {
    op: Op,
    reply: oneshot::Sender<Result<Reservation>>,
}

/// The handle requests go through; cheap to clone.
#[derive(Debug, Clone)]
pub struct GroupCommit {
    queue: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("op", &self.op).finish()
    }
}

impl GroupCommit {
    /// Starts the workers. They stop when every handle is dropped and the queue is drained.
    pub fn start(db: Db, clock: Arc<dyn Clock>, config: GroupCommitConfig) -> (Self, Vec<JoinHandle<()>>) {
        let (queue, receiver) = mpsc::channel(config.queue_max.max(1));
        let receiver = Arc::new(Mutex::new(receiver));
        let workers = (0..config.workers.max(1))
            .map(|_| {
                let (db, clock, receiver, config) = (db.clone(), clock.clone(), receiver.clone(), config.clone());
                tokio::spawn(async move { worker(db, clock, receiver, config).await })
            })
            .collect();
        (Self { queue }, workers)
    }

    pub async fn submit(&self, op: Op) -> Result<Reservation> {
        let (reply, answer) = oneshot::channel();
        self.queue.try_send(Job { op, reply }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                metrics::counter!("stockroom_group_commit_rejected_total").increment(1);
                WarehouseError::Overloaded
            }
            mpsc::error::TrySendError::Closed(_) => WarehouseError::ShuttingDown,
        })?;
        answer.await.map_err(|_| WarehouseError::ShuttingDown)?
    }

    pub async fn hold(&self, command: HoldCommand) -> Result<Reservation> {
        self.submit(Op::Hold(command)).await
    }

    pub async fn confirm(&self, id: ReservationId) -> Result<Reservation> {
        self.submit(Op::Confirm(id)).await
    }

    pub async fn release(&self, id: ReservationId) -> Result<Reservation> {
        self.submit(Op::Release(id)).await
    }

    pub async fn fulfill(&self, id: ReservationId) -> Result<Reservation> {
        self.submit(Op::Fulfill(id)).await
    }
}

async fn worker(db: Db, clock: Arc<dyn Clock>, receiver: Arc<Mutex<mpsc::Receiver<Job>>>, config: GroupCommitConfig) {
    loop {
        let jobs = {
            let mut receiver = receiver.lock().await;
            let Some(first) = receiver.recv().await else {
                return;
            };
            let mut jobs = vec![first];
            let deadline = Instant::now() + config.window;
            while jobs.len() < config.batch_max {
                match receiver.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) if config.window.is_zero() => break,
                    Err(_) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        match tokio::time::timeout(left, receiver.recv()).await {
                            Ok(Some(job)) => jobs.push(job),
                            _ => break,
                        }
                    }
                }
            }
            jobs
        };
        metrics::histogram!("stockroom_group_commit_batch_size").record(jobs.len() as f64);
        let ops: Vec<Op> = jobs.iter().map(|j| j.op.clone()).collect();
        let outcomes = apply_with_fallback(&db, clock.as_ref(), &ops).await;
        for (job, outcome) in jobs.into_iter().zip(outcomes) {
            let _ = job.reply.send(outcome);
        }
    }
}

/// Applies `ops` in one transaction; on a lock conflict retries, on another database error
/// applies each op in its own transaction.
async fn apply_with_fallback(db: &Db, clock: &dyn Clock, ops: &[Op]) -> Vec<Result<Reservation>> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match apply_batch(db, clock, ops).await {
            Ok(outcomes) => return outcomes,
            Err(e) if is_retryable(&e) && attempt < BATCH_ATTEMPTS_MAX => continue,
            Err(e) if ops.len() == 1 => return vec![Err(e)],
            Err(e) => {
                tracing::warn!(error = %e, batch = ops.len(), "batch failed; applying its requests one by one");
                let mut outcomes = Vec::with_capacity(ops.len());
                for op in ops {
                    let mut one = Box::pin(apply_with_fallback(db, clock, std::slice::from_ref(op))).await;
                    outcomes.push(one.pop().unwrap_or(Err(WarehouseError::ShuttingDown)));
                }
                return outcomes;
            }
        }
    }
}

fn is_retryable(error: &WarehouseError) -> bool {
    matches!(error, WarehouseError::Store(e) if e.is_retryable())
}

/// One transaction: consecutive holds as one coalesced batch, the other ops one by one, in
/// queue order.
async fn apply_batch(db: &Db, clock: &dyn Clock, ops: &[Op]) -> Result<Vec<Result<Reservation>>> {
    let now = clock.now();
    let mut tx = db.begin().await?;
    let mut outcomes = Vec::with_capacity(ops.len());
    let mut i = 0;
    while i < ops.len() {
        if let Op::Hold(_) = ops[i] {
            let run: Vec<HoldCommand> = ops[i..]
                .iter()
                .map_while(|op| match op {
                    Op::Hold(command) => Some(command.clone()),
                    _ => None,
                })
                .collect();
            i += run.len();
            outcomes.extend(super::hold_batch(&mut tx, run, now).await?);
            continue;
        }
        let outcome = match &ops[i] {
            Op::Confirm(id) => super::confirm(&mut tx, id, now).await,
            Op::Release(id) => super::release(&mut tx, id, now).await,
            Op::Fulfill(id) => super::fulfill(&mut tx, id, now).await,
            Op::Hold(_) => unreachable!("holds are handled above"),
        };
        match outcome {
            // A database error aborts the whole transaction; refusals leave no writes.
            Err(WarehouseError::Store(e)) => return Err(WarehouseError::Store(e)),
            other => outcomes.push(other),
        }
        i += 1;
    }
    tx.commit().await?;
    Ok(outcomes)
}
