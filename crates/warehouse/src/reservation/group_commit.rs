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
use kernel::{Clock, ReservationId, Timestamp};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::idempotency::Claim;
use store::{Db, Tx};
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

/// The `Idempotency-Key` of a hold: the first answer is stored with the key in the batch's
/// transaction and replayed for repeats, so the hold happens once however often it is sent.
#[derive(Clone)]
pub struct Idempotency {
    /// What the key is unique within (the route and the caller).
    pub scope: String,
    pub key: String,
    /// Of the request body: a repeat with another body is refused.
    pub fingerprint: String,
    /// The answer (status, body) to store for a refused hold: the caller's error document.
    pub render_refusal: Arc<dyn Fn(WarehouseError) -> (u16, String) + Send + Sync>,
}

impl std::fmt::Debug for Idempotency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotency").field("scope", &self.scope).field("key", &self.key).finish_non_exhaustive()
    }
}

/// One queued request.
#[derive(Debug, Clone)]
pub enum Op {
    Hold(HoldCommand),
    /// A hold under an idempotency key; answers [`Done::Answer`].
    HoldOnce(HoldCommand, Idempotency),
    Confirm(ReservationId),
    Release(ReservationId),
    Fulfill(ReservationId),
}

/// What a queued request got.
#[derive(Debug, Clone, PartialEq)]
pub enum Done {
    Reservation(Reservation),
    /// The first answer to an idempotency key, given now or replayed: a status (201 with the
    /// reservation, or the refusal's) and the body.
    Answer {
        status: u16,
        body: String,
    },
}

struct Job {
    op: Op,
    reply: oneshot::Sender<Result<Done>>,
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

    pub async fn submit(&self, op: Op) -> Result<Done> {
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

    async fn submit_for_reservation(&self, op: Op) -> Result<Reservation> {
        match self.submit(op).await? {
            Done::Reservation(reservation) => Ok(reservation),
            Done::Answer { .. } => Err(WarehouseError::Store(store::StoreError::Corrupt(
                "a plain request got an idempotent answer".into(),
            ))),
        }
    }

    pub async fn hold(&self, command: HoldCommand) -> Result<Reservation> {
        self.submit_for_reservation(Op::Hold(command)).await
    }

    /// Holds once per key: answers the stored (status, body) of the key's first request.
    /// A key used before with another body is refused with `IdempotencyKeyReused`.
    pub async fn hold_once(&self, command: HoldCommand, idempotency: Idempotency) -> Result<(u16, String)> {
        match self.submit(Op::HoldOnce(command, idempotency)).await? {
            Done::Answer { status, body } => Ok((status, body)),
            Done::Reservation(_) => {
                Err(WarehouseError::Store(store::StoreError::Corrupt("an idempotent hold got a plain answer".into())))
            }
        }
    }

    pub async fn confirm(&self, id: ReservationId) -> Result<Reservation> {
        self.submit_for_reservation(Op::Confirm(id)).await
    }

    pub async fn release(&self, id: ReservationId) -> Result<Reservation> {
        self.submit_for_reservation(Op::Release(id)).await
    }

    pub async fn fulfill(&self, id: ReservationId) -> Result<Reservation> {
        self.submit_for_reservation(Op::Fulfill(id)).await
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
async fn apply_with_fallback(db: &Db, clock: &dyn Clock, ops: &[Op]) -> Vec<Result<Done>> {
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
async fn apply_batch(db: &Db, clock: &dyn Clock, ops: &[Op]) -> Result<Vec<Result<Done>>> {
    let now = clock.now();
    let mut tx = db.begin().await?;
    let mut outcomes = Vec::with_capacity(ops.len());
    let mut i = 0;
    while i < ops.len() {
        let run: Vec<&Op> = ops[i..].iter().take_while(|op| matches!(op, Op::Hold(_) | Op::HoldOnce(..))).collect();
        if !run.is_empty() {
            i += run.len();
            outcomes.extend(hold_run(&mut tx, &run, now).await?);
            continue;
        }
        let outcome = match &ops[i] {
            Op::Confirm(id) => super::confirm(&mut tx, id, now).await,
            Op::Release(id) => super::release(&mut tx, id, now).await,
            Op::Fulfill(id) => super::fulfill(&mut tx, id, now).await,
            Op::Hold(_) | Op::HoldOnce(..) => unreachable!("holds are handled above"),
        };
        match outcome {
            // A database error aborts the whole transaction; refusals leave no writes.
            Err(WarehouseError::Store(e)) => return Err(WarehouseError::Store(e)),
            other => outcomes.push(other.map(Done::Reservation)),
        }
        i += 1;
    }
    tx.commit().await?;
    Ok(outcomes)
}

/// Where a hold of a run gets its outcome from.
enum Slot {
    /// The `n`th command given to `hold_batch`.
    Held(usize),
    /// The `n`th command, whose answer is stored with its idempotency key.
    HeldOnce(usize),
    /// Known without holding: a replay or a refusal of the key.
    Ready(Result<Done>),
    /// The same key and request as an earlier hold of the run: its answer.
    SameAs(usize),
}

/// A run of consecutive holds: claims the idempotency keys (a key claimed before answers its
/// stored response), holds all the fresh commands as one coalesced batch, and stores the
/// answers of the fresh keys, all in the batch's transaction.
async fn hold_run(tx: &mut Tx, run: &[&Op], now: Timestamp) -> Result<Vec<Result<Done>>> {
    // The first hold of each key in the run claims it; a repeat answers like that first one.
    // (scope, key) → (position in the run, fingerprint).
    let mut first_of_key: HashMap<(&str, &str), (usize, &str)> = HashMap::new();
    let mut to_claim: Vec<(usize, &Idempotency)> = Vec::new();
    for (position, op) in run.iter().enumerate() {
        if let Op::HoldOnce(_, idem) = op
            && !first_of_key.contains_key(&(idem.scope.as_str(), idem.key.as_str()))
        {
            first_of_key.insert((&idem.scope, &idem.key), (position, &idem.fingerprint));
            to_claim.push((position, idem));
        }
    }
    let keys: Vec<store::idempotency::KeyClaim> =
        to_claim.iter().map(|(_, i)| (i.scope.as_str(), i.key.as_str(), i.fingerprint.as_str())).collect();
    let mut claims: HashMap<usize, Claim> = if keys.is_empty() {
        HashMap::new()
    } else {
        let found = store::idempotency::claim_many(tx, &keys, now).await?;
        to_claim.iter().map(|(position, _)| *position).zip(found).collect()
    };

    let mut commands = Vec::with_capacity(run.len());
    let mut slots = Vec::with_capacity(run.len());
    for (position, op) in run.iter().enumerate() {
        match op {
            Op::Hold(command) => {
                slots.push(Slot::Held(commands.len()));
                commands.push(command.clone());
            }
            Op::HoldOnce(command, idem) => match claims.remove(&position) {
                Some(Claim::Fresh) => {
                    slots.push(Slot::HeldOnce(commands.len()));
                    commands.push(command.clone());
                }
                Some(Claim::Replay { status, body }) => slots.push(Slot::Ready(Ok(Done::Answer { status, body }))),
                Some(Claim::Mismatch) => slots.push(Slot::Ready(Err(WarehouseError::IdempotencyKeyReused))),
                None => {
                    let (first, fingerprint) = first_of_key[&(idem.scope.as_str(), idem.key.as_str())];
                    slots.push(if fingerprint == idem.fingerprint {
                        Slot::SameAs(first)
                    } else {
                        Slot::Ready(Err(WarehouseError::IdempotencyKeyReused))
                    });
                }
            },
            _ => unreachable!("a run holds only holds"),
        }
    }
    let mut held: Vec<Option<Result<Reservation>>> = if commands.is_empty() {
        Vec::new()
    } else {
        super::hold_batch(tx, commands, now).await?.into_iter().map(Some).collect()
    };
    let mut take = |n: usize| {
        held[n].take().ok_or_else(|| WarehouseError::Store(store::StoreError::Corrupt("a hold without outcome".into())))
    };
    let mut out: Vec<Result<Done>> = Vec::with_capacity(run.len());
    let mut answers: Vec<(&str, &str, u16, String)> = Vec::new();
    for (position, slot) in slots.into_iter().enumerate() {
        let done = match slot {
            Slot::Held(n) => take(n)?.map(Done::Reservation),
            Slot::HeldOnce(n) => {
                let Op::HoldOnce(_, idem) = run[position] else { unreachable!("the slot of an idempotent hold") };
                let (status, body) = match take(n)? {
                    Ok(reservation) => (201, serde_json::to_string(&reservation).unwrap_or_default()),
                    Err(refusal) => (idem.render_refusal)(refusal),
                };
                answers.push((&idem.scope, &idem.key, status, body.clone()));
                Ok(Done::Answer { status, body })
            }
            Slot::Ready(done) => done,
            Slot::SameAs(first) => match &out[first] {
                Ok(answer @ Done::Answer { .. }) => Ok(answer.clone()),
                Err(WarehouseError::IdempotencyKeyReused) => Err(WarehouseError::IdempotencyKeyReused),
                _ => Err(WarehouseError::Store(store::StoreError::Corrupt("a repeated key without answer".into()))),
            },
        };
        out.push(done);
    }
    if !answers.is_empty() {
        let rows: Vec<(&str, &str, u16, &str)> =
            answers.iter().map(|(s, k, st, b)| (*s, *k, *st, b.as_str())).collect();
        store::idempotency::save_many(tx, &rows).await?;
    }
    Ok(out)
}
