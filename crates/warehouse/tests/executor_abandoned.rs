//! The batch executor drops a request whose requester stopped waiting while it was queued
//! (the API's request timeout answers 503 "nothing was changed"), on every backend: it is
//! never applied, and the requests around it are.

use std::sync::Arc;
use std::time::Duration;
use store::batch::{Applied, Batch, BatchConfig, Executor, ExecutorError};
use store::{StoreError, Tx};

/// Inserts `n` into `probe`, after holding its batch for `hold_ms` (a slow batch ahead).
#[derive(Clone, Debug)]
struct Insert {
    n: i64,
    hold_ms: u64,
}

#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Executor(#[from] ExecutorError),
}

struct ProbeBatch;

impl Batch for ProbeBatch {
    type Op = Insert;
    type Outcome = i64;
    type Refusal = String;
    type Error = ProbeError;

    fn name(&self) -> &'static str {
        "probe"
    }

    async fn apply<'a>(
        &'a self,
        tx: &'a mut Tx,
        ops: &'a [Insert],
        _now: kernel::Timestamp,
    ) -> Applied<i64, ProbeError> {
        let mut answers = Vec::with_capacity(ops.len());
        for op in ops {
            tokio::time::sleep(Duration::from_millis(op.hold_ms)).await;
            sqlx::query("INSERT INTO probe (n) VALUES ($1)")
                .bind(op.n)
                .execute(&mut **tx)
                .await
                .map_err(StoreError::from)?;
            answers.push(Ok(op.n));
        }
        Ok(answers)
    }

    fn is_retryable(_error: &ProbeError) -> bool {
        false
    }

    fn lasting_refusal(_error: &ProbeError) -> Option<String> {
        None
    }

    fn replay_refusal(refusal: String) -> ProbeError {
        ProbeError::Store(StoreError::Corrupt(refusal))
    }
}

#[tokio::test]
async fn a_request_abandoned_while_queued_is_never_applied() {
    for backend in testdb::backends() {
        let database = testdb::TestDatabase::create(backend).await;
        let db = database.connect().await;
        let mut tx = db.begin().await.unwrap();
        sqlx::query("CREATE TABLE probe (n BIGINT NOT NULL)").execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
        // One request per batch, so the abandoned one waits in the queue behind the slow one.
        let config = BatchConfig { batch_max: 1, window: Duration::ZERO, queue_max: 16, workers: 1 };
        let clock: Arc<dyn kernel::Clock> = Arc::new(kernel::SystemClock);
        let (executor, _handles) =
            Executor::start(ProbeBatch, db.clone(), clock, config, store::workers::Workers::new());

        let slow = {
            let executor = executor.clone();
            tokio::spawn(async move { executor.submit(Insert { n: 1, hold_ms: 600 }).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let gave_up =
            tokio::time::timeout(Duration::from_millis(100), executor.submit(Insert { n: 2, hold_ms: 0 })).await;
        assert!(gave_up.is_err(), "[{backend:?}] the request was still queued behind the slow batch");
        let after = executor.submit(Insert { n: 3, hold_ms: 0 }).await.unwrap();
        assert_eq!(after, 3);
        assert_eq!(slow.await.unwrap().unwrap(), 1);

        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT n FROM probe ORDER BY n").fetch_all(db.reader()).await.unwrap();
        assert_eq!(applied, [1, 3], "[{backend:?}] the abandoned request was applied");
        drop(executor);
        database.drop_database().await;
    }
}
