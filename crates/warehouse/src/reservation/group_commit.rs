//! Reservations through the batch executor (`store::batch`): concurrent holds, confirms,
//! releases and fulfilments share transactions, so a flash sale is not bound by one row lock
//! and one fsync per buyer.
//!
//! [`ReservationBatch`] is the warehouse's [`Batch`]: consecutive holds of a batch are one
//! coalesced [`hold_batch`](super::hold_batch), the other ops apply one by one, in queue
//! order; outcomes are exactly those of applying the requests one by one. [`GroupCommit`] is
//! the typed handle the API, the CLI and the benchmark use. Outcomes are domain values
//! ([`Reservation`] or a [`WarehouseError`]); the API renders them, stored replays included.

use super::{HoldCommand, Reservation};
use crate::{Refusal, Result, WarehouseError};
use kernel::{Clock, ReservationId, Timestamp};
use std::sync::Arc;
use store::batch::{Batch, Executor, IdempotencyKey, Once};
use store::workers::Workers;
use store::{Db, Tx};
use tokio::task::JoinHandle;

pub use store::batch::BatchConfig as GroupCommitConfig;

/// One queued reservation request.
#[derive(Debug, Clone)]
pub enum ReservationOp {
    Hold(HoldCommand),
    Confirm(ReservationId),
    Release(ReservationId),
    Fulfill(ReservationId),
}

/// Applies reservation ops in the caller's transaction, in order: consecutive holds as one
/// coalesced batch, the others one by one. A refusal leaves no writes; a database error
/// aborts (the caller rolls back). Another context's batch can call this (or
/// [`hold_batch`](super::hold_batch)) inside its own transaction to hold stock together with
/// its own writes.
pub async fn apply_ops(tx: &mut Tx, ops: &[ReservationOp], now: Timestamp) -> Result<Vec<Result<Reservation>>> {
    let mut outcomes = Vec::with_capacity(ops.len());
    let mut i = 0;
    while i < ops.len() {
        let holds: Vec<HoldCommand> = ops[i..]
            .iter()
            .map_while(|op| match op {
                ReservationOp::Hold(command) => Some(command.clone()),
                _ => None,
            })
            .collect();
        if !holds.is_empty() {
            i += holds.len();
            outcomes.extend(super::hold_batch(tx, holds, now).await?);
            continue;
        }
        let outcome = match &ops[i] {
            ReservationOp::Confirm(id) => super::confirm(tx, id, now).await,
            ReservationOp::Release(id) => super::release(tx, id, now).await,
            ReservationOp::Fulfill(id) => super::fulfill(tx, id, now).await,
            ReservationOp::Hold(_) => unreachable!("holds are taken above"),
        };
        match outcome {
            // A database error aborts the whole transaction; refusals leave no writes.
            Err(WarehouseError::Store(e)) => return Err(WarehouseError::Store(e)),
            other => outcomes.push(other),
        }
        i += 1;
    }
    Ok(outcomes)
}

/// The warehouse's batch of reservation ops.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReservationBatch;

impl Batch for ReservationBatch {
    type Op = ReservationOp;
    type Outcome = Reservation;
    type Refusal = Refusal;
    type Error = WarehouseError;

    fn name(&self) -> &'static str {
        "reservations"
    }

    async fn apply(&self, tx: &mut Tx, ops: &[ReservationOp], now: Timestamp) -> Result<Vec<Result<Reservation>>> {
        #[cfg(feature = "failpoints")]
        fail::fail_point!("reservation-batch-apply");
        apply_ops(tx, ops, now).await
    }

    /// Batches of holds only, on SQLite's direct writer ([`super::hold_batch_direct`]).
    async fn apply_direct(
        &self,
        db: &Db,
        ops: &[ReservationOp],
        now: Timestamp,
    ) -> Option<Result<Vec<Result<Reservation>>>> {
        let commands: Vec<HoldCommand> = ops
            .iter()
            .map(|op| match op {
                ReservationOp::Hold(command) => Some(command.clone()),
                _ => None,
            })
            .collect::<Option<_>>()?;
        match db
            .write_direct(move |tx| {
                // On the writer thread: a panic here is raised again in the executor.
                #[cfg(feature = "failpoints")]
                fail::fail_point!("reservation-batch-apply");
                super::hold_batch_direct(tx, commands, now)
            })
            .await?
        {
            Ok(Some(outcomes)) => Some(Ok(outcomes)),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }

    fn is_retryable(error: &WarehouseError) -> bool {
        matches!(error, WarehouseError::Store(e) if e.is_retryable())
    }

    fn lasting_refusal(error: &WarehouseError) -> Option<Refusal> {
        error.refusal()
    }

    fn replay_refusal(refusal: Refusal) -> WarehouseError {
        WarehouseError::Refused(refusal)
    }
}

/// The handle requests go through; cheap to clone.
#[derive(Debug, Clone)]
pub struct GroupCommit {
    executor: Executor<ReservationBatch>,
}

impl GroupCommit {
    /// Starts the workers (registered in `workers`). They stop when every handle is dropped
    /// and the queue is drained.
    pub fn start(
        db: Db,
        clock: Arc<dyn Clock>,
        config: GroupCommitConfig,
        workers: Workers,
    ) -> (Self, Vec<JoinHandle<()>>) {
        let (executor, handles) = Executor::start(ReservationBatch, db, clock, config, workers);
        (Self { executor }, handles)
    }

    pub async fn hold(&self, command: HoldCommand) -> Result<Reservation> {
        self.executor.submit(ReservationOp::Hold(command)).await
    }

    /// Holds once per key: a repeat answers the first outcome (the reservation, or the
    /// refusal as [`WarehouseError::Refused`]), marked replayed; another request under the key
    /// is refused with `IdempotencyKeyReused`.
    pub async fn hold_once(&self, command: HoldCommand, key: IdempotencyKey) -> Once<Reservation, WarehouseError> {
        self.executor.submit_once(ReservationOp::Hold(command), key).await
    }

    pub async fn confirm(&self, id: ReservationId) -> Result<Reservation> {
        self.executor.submit(ReservationOp::Confirm(id)).await
    }

    pub async fn release(&self, id: ReservationId) -> Result<Reservation> {
        self.executor.submit(ReservationOp::Release(id)).await
    }

    pub async fn fulfill(&self, id: ReservationId) -> Result<Reservation> {
        self.executor.submit(ReservationOp::Fulfill(id)).await
    }
}
