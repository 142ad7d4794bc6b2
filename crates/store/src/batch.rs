//! The batch executor (group commit): concurrent requests of one kind are queued and applied
//! in batches, one transaction per batch, each request answered only after its batch has
//! committed.
//!
//! A context defines its batch by implementing [`Batch`]: the operations it queues, what each
//! one answers, and how a list of them is applied in one transaction
//! (`apply(&mut Tx, &[Op]) -> Vec<Result<Outcome, Error>>`). The executor gives it:
//!
//! - a bounded queue: when it is full a request is refused at once with
//!   [`ExecutorError::Overloaded`] instead of piling up;
//! - batching: a worker takes whatever is queued (up to `batch_max`, waiting at most `window`
//!   for more) and applies it in queue order;
//! - idempotency keys: a request sent with a key is claimed in the batch's transaction; a key
//!   used before answers its stored outcome (typed, decoded again, never an HTTP body), another
//!   request under the same key is [`ExecutorError::KeyReused`], the same key twice in one
//!   batch answers the first's outcome, and each fresh key's outcome is stored before commit;
//! - failure handling: a batch that fails on a lock conflict is retried, on another database
//!   error its requests are applied one per transaction, so one bad request cannot fail others;
//! - supervision: a panic while applying a batch answers that batch's requests with
//!   [`ExecutorError::Panicked`], is counted, and the worker goes on; a worker whose loop
//!   panics is marked down in [`Workers`] and restarted;
//! - abandonment: a request whose requester stopped waiting while it was queued (the API's
//!   request timeout answered 503, the client went away) is dropped before its batch is
//!   applied, so what it was told ("nothing was changed") holds;
//! - metrics, labelled with the batch's name: `stockroom_group_commit_batch_size`,
//!   `stockroom_group_commit_rejected_total`, `stockroom_group_commit_fallbacks_total`,
//!   `stockroom_group_commit_direct_batches_total`,
//!   `stockroom_group_commit_panics_total`, `stockroom_group_commit_abandoned_total`.

use crate::idempotency::{self, Claim, KeyClaim};
use crate::workers::Workers;
use crate::{Db, StoreError, Tx};
use futures::FutureExt;
use kernel::{Clock, Timestamp};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;

/// Attempts of a batch that failed on a deadlock or serialization conflict.
const BATCH_ATTEMPTS_MAX: usize = 3;

/// Pause before a worker whose loop panicked starts again.
const WORKER_RESTART_PAUSE: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct BatchConfig {
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

impl Default for BatchConfig {
    fn default() -> Self {
        Self { batch_max: 512, window: Duration::ZERO, queue_max: 20_000, workers: 1 }
    }
}

/// Why the executor itself, not the batch, answered a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecutorError {
    /// The queue is full; nothing was changed and the request may be retried.
    #[error("too many requests are waiting; retry shortly")]
    Overloaded,
    /// The executor is stopping; nothing was changed.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// Applying the batch panicked; its transaction was rolled back, nothing was changed.
    #[error("the batch failed unexpectedly; nothing was changed")]
    Panicked,
    /// The idempotency key was used before with a different request; nothing was changed.
    #[error("the idempotency key was used before with a different request")]
    KeyReused,
}

/// A request's `Idempotency-Key`: its outcome is stored with the key in the batch's
/// transaction and replayed for repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// What the key is unique within (the route and the caller).
    pub scope: String,
    pub key: String,
    /// Of the request: a repeat with another request is refused.
    pub fingerprint: String,
}

/// What [`Batch::apply`] answers: one outcome per op, or an error that fails the batch.
pub type Applied<O, E> = Result<Vec<Result<O, E>>, E>;

/// A context's batch: what it queues and how a list of it is applied in one transaction.
pub trait Batch: Send + Sync + 'static {
    type Op: Clone + Send + Sync + 'static;
    /// What an applied op answers; stored (as JSON) with an idempotency key and replayed.
    type Outcome: Clone + Serialize + DeserializeOwned + Send + 'static;
    /// The lasting form of a refusal, stored with an idempotency key and replayed.
    type Refusal: Serialize + DeserializeOwned + Send;
    type Error: std::fmt::Display + From<StoreError> + From<ExecutorError> + Send + 'static;

    /// Names the executor in metrics, logs and the worker registry.
    fn name(&self) -> &'static str;

    /// Applies `ops` in order in `tx` and answers one outcome per op, exactly as if they were
    /// applied one by one. A refused op leaves no writes. An outer error means the
    /// transaction must be rolled back.
    fn apply<'a>(
        &'a self,
        tx: &'a mut Tx,
        ops: &'a [Self::Op],
        now: Timestamp,
    ) -> impl Future<Output = Applied<Self::Outcome, Self::Error>> + Send + 'a;

    /// Applies a batch of ops that carry no idempotency key on a faster path, where the batch
    /// has one for them (SQLite's direct writer, [`crate::direct`]), in a transaction of its
    /// own; `None` (nothing written) leaves them to [`Batch::apply`]. Outcomes must be exactly
    /// those [`Batch::apply`] would give.
    fn apply_direct<'a>(
        &'a self,
        db: &'a Db,
        ops: &'a [Self::Op],
        now: Timestamp,
    ) -> impl Future<Output = Option<Applied<Self::Outcome, Self::Error>>> + Send + 'a {
        let _ = (db, ops, now);
        std::future::ready(None)
    }

    /// A lock conflict worth retrying the whole batch for.
    fn is_retryable(error: &Self::Error) -> bool;

    /// The refusal to store with an idempotency key; `None` for one that a retry may turn
    /// into success (overload, contention), whose key is then released for that retry.
    fn lasting_refusal(error: &Self::Error) -> Option<Self::Refusal>;

    /// A stored refusal as the error it answers again.
    fn replay_refusal(refusal: Self::Refusal) -> Self::Error;
}

/// How an outcome is stored with its idempotency key.
#[derive(Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum StoredOutcome<O, R> {
    Done(O),
    Refused(R),
}

type Answer<B> = Result<<B as Batch>::Outcome, <B as Batch>::Error>;

/// An answer and whether it was replayed from an earlier request under its key.
type Replied<B> = (Answer<B>, bool);

/// What a request under an idempotency key got.
#[derive(Debug)]
pub struct Once<O, E> {
    pub answer: Result<O, E>,
    /// The answer is the stored one of an earlier request under the key (the API says so with
    /// `Idempotent-Replayed: true`).
    pub replayed: bool,
}

struct Request<B: Batch> {
    op: B::Op,
    key: Option<IdempotencyKey>,
}

struct Job<B: Batch> {
    request: Request<B>,
    reply: oneshot::Sender<Replied<B>>,
}

/// The handle requests go through; cheap to clone.
pub struct Executor<B: Batch> {
    queue: mpsc::Sender<Job<B>>,
    name: &'static str,
}

impl<B: Batch> Clone for Executor<B> {
    fn clone(&self) -> Self {
        Self { queue: self.queue.clone(), name: self.name }
    }
}

impl<B: Batch> std::fmt::Debug for Executor<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor").field("name", &self.name).finish_non_exhaustive()
    }
}

impl<B: Batch> Executor<B> {
    /// Starts the workers, registered in `workers` as `<name>-<n>`. They stop when every
    /// handle is dropped and the queue is drained.
    pub fn start(
        batch: B,
        db: Db,
        clock: Arc<dyn Clock>,
        config: BatchConfig,
        workers: Workers,
    ) -> (Self, Vec<JoinHandle<()>>) {
        let name = batch.name();
        let (queue, receiver) = mpsc::channel(config.queue_max.max(1));
        let shared = Arc::new(Shared { batch, db, clock, config, receiver: Mutex::new(receiver) });
        let handles = (0..shared.config.workers.max(1))
            .map(|n| {
                let (shared, workers) = (shared.clone(), workers.clone());
                tokio::spawn(supervised_worker(shared, workers, format!("{name}-{n}")))
            })
            .collect();
        (Self { queue, name }, handles)
    }

    /// Queues `op` and answers its outcome once its batch has committed.
    pub async fn submit(&self, op: B::Op) -> Answer<B> {
        self.enqueue(Request { op, key: None }).await.0
    }

    /// Like [`submit`](Self::submit), once per key: a key used before answers its stored
    /// outcome; under another request it is refused with [`ExecutorError::KeyReused`].
    pub async fn submit_once(&self, op: B::Op, key: IdempotencyKey) -> Once<B::Outcome, B::Error> {
        let (answer, replayed) = self.enqueue(Request { op, key: Some(key) }).await;
        Once { answer, replayed }
    }

    async fn enqueue(&self, request: Request<B>) -> Replied<B> {
        let (reply, answer) = oneshot::channel();
        if let Err(e) = self.queue.try_send(Job { request, reply }) {
            let error = match e {
                mpsc::error::TrySendError::Full(_) => {
                    metrics::counter!("stockroom_group_commit_rejected_total", "executor" => self.name).increment(1);
                    ExecutorError::Overloaded
                }
                mpsc::error::TrySendError::Closed(_) => ExecutorError::ShuttingDown,
            };
            return (Err(error.into()), false);
        }
        // A reply dropped unanswered means the worker died holding the request.
        answer.await.unwrap_or_else(|_| (Err(ExecutorError::Panicked.into()), false))
    }
}

struct Shared<B: Batch> {
    batch: B,
    db: Db,
    clock: Arc<dyn Clock>,
    config: BatchConfig,
    receiver: Mutex<mpsc::Receiver<Job<B>>>,
}

async fn supervised_worker<B: Batch>(shared: Arc<Shared<B>>, workers: Workers, worker: String) {
    workers.up(&worker);
    loop {
        match AssertUnwindSafe(worker_loop(&shared, &workers, &worker)).catch_unwind().await {
            Ok(()) => return,
            Err(panic) => {
                let message = panic_message(&panic);
                metrics::counter!("stockroom_worker_failures_total", "worker" => worker.clone()).increment(1);
                tracing::error!(worker, error = message, "batch worker panicked; restarting");
                workers.down(&worker, message);
                tokio::time::sleep(WORKER_RESTART_PAUSE).await;
                workers.up(&worker);
            }
        }
    }
}

/// Takes batches until the queue is closed and drained.
async fn worker_loop<B: Batch>(shared: &Shared<B>, workers: &Workers, worker: &str) {
    let name = shared.batch.name();
    while let Some(mut jobs) = next_batch(shared).await {
        // A requester that gave up while queued (the API's request timeout answered 503, or
        // the client went away) is not applied: its "nothing was changed" stays true.
        let queued = jobs.len();
        jobs.retain(|job| !job.reply.is_closed());
        if jobs.len() < queued {
            metrics::counter!("stockroom_group_commit_abandoned_total", "executor" => name)
                .increment((queued - jobs.len()) as u64);
        }
        if jobs.is_empty() {
            continue;
        }
        metrics::histogram!("stockroom_group_commit_batch_size", "executor" => name).record(jobs.len() as f64);
        let (requests, replies): (Vec<Request<B>>, Vec<_>) = jobs.into_iter().map(|j| (j.request, j.reply)).unzip();
        let answers = AssertUnwindSafe(apply_with_fallback(shared, &requests)).catch_unwind().await;
        match answers {
            Ok(answers) => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(answer);
                }
            }
            Err(panic) => {
                // The transaction was dropped, so rolled back: answer everyone, go on.
                let message = panic_message(&panic);
                metrics::counter!("stockroom_group_commit_panics_total", "executor" => name).increment(1);
                tracing::error!(executor = name, batch = replies.len(), error = message, "applying a batch panicked");
                workers.failed_but_up(worker, format!("a batch panicked: {message}"));
                for reply in replies {
                    let _ = reply.send((Err(ExecutorError::Panicked.into()), false));
                }
            }
        }
    }
}

async fn next_batch<B: Batch>(shared: &Shared<B>) -> Option<Vec<Job<B>>> {
    let config = &shared.config;
    let mut receiver = shared.receiver.lock().await;
    let first = receiver.recv().await?;
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
    Some(jobs)
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without message".to_owned())
}

/// Applies `requests` in one transaction; on a lock conflict retries, on another database
/// error applies each request in its own transaction.
async fn apply_with_fallback<B: Batch>(shared: &Shared<B>, requests: &[Request<B>]) -> Vec<Replied<B>> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match apply_batch(shared, requests).await {
            Ok(answers) => return answers,
            Err(e) if B::is_retryable(&e) && attempt < BATCH_ATTEMPTS_MAX => continue,
            Err(e) if requests.len() == 1 => return vec![(Err(e), false)],
            Err(e) => {
                let name = shared.batch.name();
                metrics::counter!("stockroom_group_commit_fallbacks_total", "executor" => name).increment(1);
                tracing::warn!(executor = name, error = %e, batch = requests.len(), "batch failed; applying its requests one by one");
                let mut answers = Vec::with_capacity(requests.len());
                for request in requests {
                    let mut one = Box::pin(apply_with_fallback(shared, std::slice::from_ref(request))).await;
                    answers.push(one.pop().unwrap_or_else(|| (Err(ExecutorError::Panicked.into()), false)));
                }
                return answers;
            }
        }
    }
}

/// Where a request of a batch gets its answer from.
enum Slot {
    /// The `n`th op given to [`Batch::apply`].
    Applied(usize),
    /// The `n`th op, whose outcome is stored with the request's key.
    AppliedOnce(usize),
    /// A stored outcome of the key, replayed.
    Replay(String),
    /// The key was used before with another request.
    KeyReused,
    /// The same key and request as the `n`th request of the batch: its answer.
    SameAs(usize),
}

/// One transaction: claims the batch's idempotency keys, applies the fresh ops, stores the
/// outcomes of the fresh keys, commits.
async fn apply_batch<B: Batch>(shared: &Shared<B>, requests: &[Request<B>]) -> Result<Vec<Replied<B>>, B::Error> {
    let now = shared.clock.now();
    if requests.iter().all(|r| r.key.is_none()) {
        let ops: Vec<B::Op> = requests.iter().map(|r| r.op.clone()).collect();
        if let Some(applied) = shared.batch.apply_direct(&shared.db, &ops, now).await {
            let answers = applied?;
            if answers.len() != ops.len() {
                return Err(miscounted(shared.batch.name(), answers.len(), ops.len()).into());
            }
            metrics::counter!("stockroom_group_commit_direct_batches_total", "executor" => shared.batch.name())
                .increment(1);
            return Ok(answers.into_iter().map(|answer| (answer, false)).collect());
        }
    }
    let mut tx = shared.db.begin().await?;

    // The first request of each key claims it; a repeat in the batch answers like it.
    let mut first_of_key: HashMap<(&str, &str), (usize, &str)> = HashMap::new();
    let mut to_claim: Vec<(usize, KeyClaim<'_>)> = Vec::new();
    for (position, request) in requests.iter().enumerate() {
        if let Some(key) = &request.key
            && !first_of_key.contains_key(&(key.scope.as_str(), key.key.as_str()))
        {
            first_of_key.insert((&key.scope, &key.key), (position, &key.fingerprint));
            to_claim.push((position, (&key.scope, &key.key, &key.fingerprint)));
        }
    }
    let mut claims: HashMap<usize, Claim> = if to_claim.is_empty() {
        HashMap::new()
    } else {
        let keys: Vec<KeyClaim<'_>> = to_claim.iter().map(|(_, k)| *k).collect();
        let found = idempotency::claim_many(&mut tx, &keys, now).await?;
        to_claim.iter().map(|(position, _)| *position).zip(found).collect()
    };

    let mut ops = Vec::with_capacity(requests.len());
    let mut slots = Vec::with_capacity(requests.len());
    for (position, request) in requests.iter().enumerate() {
        let slot = match &request.key {
            None => Slot::Applied(ops.len()),
            Some(key) => match claims.remove(&position) {
                Some(Claim::Fresh) => Slot::AppliedOnce(ops.len()),
                Some(Claim::ReplayOutcome(stored)) => Slot::Replay(stored),
                Some(Claim::Mismatch) => Slot::KeyReused,
                Some(Claim::Replay { .. }) => {
                    return Err(StoreError::Corrupt(format!(
                        "idempotency key {} of {} holds an answer of another kind",
                        key.key,
                        shared.batch.name()
                    ))
                    .into());
                }
                None => {
                    let (first, fingerprint) = first_of_key[&(key.scope.as_str(), key.key.as_str())];
                    if fingerprint == key.fingerprint { Slot::SameAs(first) } else { Slot::KeyReused }
                }
            },
        };
        if matches!(slot, Slot::Applied(_) | Slot::AppliedOnce(_)) {
            ops.push(request.op.clone());
        }
        slots.push(slot);
    }

    let mut applied: Vec<Option<Answer<B>>> = if ops.is_empty() {
        Vec::new()
    } else {
        shared.batch.apply(&mut tx, &ops, now).await?.into_iter().map(Some).collect()
    };
    if applied.len() != ops.len() {
        return Err(miscounted(shared.batch.name(), applied.len(), ops.len()).into());
    }
    let mut take = |n: usize| applied[n].take().ok_or_else(|| StoreError::Corrupt("an op answered twice".into()));

    let mut answers: Vec<Replied<B>> = Vec::with_capacity(requests.len());
    // How each key's first request was answered, for repeats in the batch.
    let mut of_first: HashMap<usize, KeyAnswer> = HashMap::new();
    let mut to_save: Vec<(&str, &str, String)> = Vec::new();
    let mut to_release: Vec<(&str, &str)> = Vec::new();
    for (position, slot) in slots.into_iter().enumerate() {
        let replayed = matches!(slot, Slot::Replay(_) | Slot::SameAs(_));
        let answer = match slot {
            Slot::Applied(n) => take(n)?,
            Slot::AppliedOnce(n) => {
                let key =
                    requests[position].key.as_ref().ok_or_else(|| StoreError::Corrupt("a key vanished".into()))?;
                let answer = take(n)?;
                let stored = match &answer {
                    Ok(outcome) => Some(encode::<B>(&StoredOutcome::Done(outcome.clone()))?),
                    Err(error) => match B::lasting_refusal(error) {
                        Some(refusal) => Some(encode::<B>(&StoredOutcome::<B::Outcome, _>::Refused(refusal))?),
                        None => None,
                    },
                };
                match stored {
                    Some(text) => {
                        to_save.push((&key.scope, &key.key, text.clone()));
                        of_first.insert(position, KeyAnswer::Stored(text));
                    }
                    None => {
                        to_release.push((&key.scope, &key.key));
                        of_first.insert(position, KeyAnswer::Released);
                    }
                }
                answer
            }
            Slot::Replay(stored) => {
                let answer = decode::<B>(&stored)?;
                of_first.insert(position, KeyAnswer::Stored(stored));
                answer
            }
            Slot::KeyReused => {
                of_first.insert(position, KeyAnswer::Reused);
                Err(ExecutorError::KeyReused.into())
            }
            Slot::SameAs(first) => match of_first.get(&first) {
                Some(KeyAnswer::Stored(stored)) => decode::<B>(stored)?,
                // The first's refusal was passing and its key released: this one may retry.
                Some(KeyAnswer::Released) => Err(ExecutorError::Overloaded.into()),
                Some(KeyAnswer::Reused) => Err(ExecutorError::KeyReused.into()),
                None => return Err(StoreError::Corrupt("a repeated key without a first answer".into()).into()),
            },
        };
        answers.push((answer, replayed));
    }
    idempotency::save_outcomes(&mut tx, &to_save).await?;
    idempotency::release_many(&mut tx, &to_release).await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(answers)
}

/// A batch that answered another number of outcomes than it was given ops: a bug.
fn miscounted(name: &str, answered: usize, ops: usize) -> StoreError {
    StoreError::Corrupt(format!("{name} answered {answered} outcomes for {ops} ops"))
}

/// How the first request of a key was answered.
enum KeyAnswer {
    /// Its outcome, as stored with the key.
    Stored(String),
    /// A passing refusal: the key was released.
    Released,
    /// The key belongs to another request.
    Reused,
}

fn encode<B: Batch>(stored: &StoredOutcome<B::Outcome, B::Refusal>) -> Result<String, StoreError> {
    serde_json::to_string(stored).map_err(|e| StoreError::Corrupt(format!("an outcome that does not serialize: {e}")))
}

fn decode<B: Batch>(stored: &str) -> Result<Answer<B>, StoreError> {
    let stored: StoredOutcome<B::Outcome, B::Refusal> = serde_json::from_str(stored)
        .map_err(|e| StoreError::Corrupt(format!("a stored outcome that does not parse: {e}")))?;
    Ok(match stored {
        StoredOutcome::Done(outcome) => Ok(outcome),
        StoredOutcome::Refused(refusal) => Err(B::replay_refusal(refusal)),
    })
}

/// The stored answer of an earlier request under `key`, without queueing anything: for a
/// caller whose own checks would refuse a retry before it reached the executor (a checkout's
/// "the cart is still open"). `Some(Err(KeyReused))` when the key holds another request;
/// `None` when the key is unused (or claimed by a batch not yet committed).
pub async fn stored_answer<B: Batch>(
    pool: &sqlx::AnyPool,
    key: &IdempotencyKey,
) -> Result<Option<Result<B::Outcome, B::Error>>, StoreError> {
    let row: Option<(String, Option<String>)> =
        sqlx::query_as("SELECT fingerprint, outcome FROM idempotency_keys WHERE scope = $1 AND idem_key = $2")
            .bind(key.scope.clone())
            .bind(key.key.clone())
            .fetch_optional(pool)
            .await?;
    Ok(match row {
        None | Some((_, None)) => None,
        Some((fingerprint, _)) if fingerprint != key.fingerprint => Some(Err(ExecutorError::KeyReused.into())),
        Some((_, Some(outcome))) => Some(decode::<B>(&outcome)?),
    })
}
