//! The direct SQLite writer (issue 13): a dedicated thread that owns a rusqlite connection to
//! the database file and applies a whole batch there, statement after statement, with cached
//! single-row prepared statements.
//!
//! Through sqlx every statement is a round trip to its worker thread (a channel send, a wake-up,
//! a reply per row): about a dozen hand-offs per batch, which is where most of a hold's time
//! went once SQLite's own work was down to tens of microseconds. Here a batch is one job: one
//! hand-off to the thread and one reply.
//!
//! The sqlx writer pool (one connection) stays the in-process write lock: [`crate::Db`] takes
//! its connection for as long as a direct job runs, so the two writers queue in order instead
//! of meeting in SQLite's sleeping busy handler. Other processes (the CLI) are covered by the
//! busy timeout, as for sqlx.

use crate::{DbOptions, SqliteSync, StoreError};
use kernel::{NewEvent, Timestamp};
use std::collections::HashMap;
use std::sync::mpsc;
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce(&mut rusqlite::Connection) + Send>;

/// The handle to the writer thread; it stops when the last handle is dropped.
#[derive(Debug, Clone)]
pub struct DirectWriter {
    jobs: mpsc::Sender<Job>,
}

/// Prepared statements the writer keeps: every statement it runs has a fixed text.
const STATEMENT_CACHE: usize = 128;

impl DirectWriter {
    /// Opens `path` with the same settings as the sqlx writer and starts the thread.
    pub(crate) fn open(path: &str, options: &DbOptions) -> Result<Self, StoreError> {
        // The file exists (the sqlx pools created it) and is opened for writing, never created.
        let conn = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let synchronous = match options.sqlite_sync {
            SqliteSync::Full => "FULL",
            SqliteSync::Normal => "NORMAL",
        };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA cache_size = -{}; \
             PRAGMA temp_store = MEMORY; PRAGMA synchronous = {synchronous}; PRAGMA wal_autocheckpoint = {}; \
             PRAGMA busy_timeout = {};",
            options.sqlite_writer_cache_kib,
            options.sqlite_wal_autocheckpoint_pages,
            options.acquire_timeout.as_millis()
        ))?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let (jobs, receiver) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("sqlite-direct-writer".into())
            .spawn(move || {
                let mut conn = conn;
                for job in receiver {
                    // Jobs catch their own panics (see `run`); this keeps the thread alive
                    // should dropping one panic too.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut conn)));
                }
            })
            .map_err(|e| StoreError::Missing(format!("cannot start the SQLite writer thread: {e}")))?;
        Ok(Self { jobs })
    }

    /// Runs `work` on the writer thread and answers what it returned. A panic in `work` (its
    /// transaction rolled back as it unwound) is raised again in the caller, so the executor
    /// and the workers' supervision see a panic, not a database error.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut rusqlite::Connection) -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Box::new(move |conn| {
                let _ = reply.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(conn))));
            }))
            .map_err(|_| StoreError::Corrupt("the SQLite writer thread has stopped".into()))?;
        match answer.await {
            Ok(Ok(done)) => Ok(done),
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => Err(StoreError::Corrupt("the SQLite writer thread dropped a job".into())),
        }
    }
}

/// [`crate::outbox::append`] on the direct writer: the same rows, in the same order.
pub fn append_events(tx: &rusqlite::Transaction<'_>, events: &[NewEvent], at: Timestamp) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let first_seq = lock_sequence(tx, events.len() as i64)?;
    let mut next_aggregate_seq: HashMap<&str, i64> = HashMap::new();
    let mut per_aggregate: Vec<(&str, i64)> = Vec::new();
    for event in events {
        match per_aggregate.iter_mut().find(|(a, _)| *a == event.aggregate) {
            Some((_, count)) => *count += 1,
            None => per_aggregate.push((&event.aggregate, 1)),
        }
    }
    let mut head = tx.prepare_cached(
        "INSERT INTO aggregate_heads (aggregate, last_seq) VALUES (?1, ?2) \
         ON CONFLICT (aggregate) DO UPDATE SET last_seq = aggregate_heads.last_seq + excluded.last_seq \
         RETURNING last_seq",
    )?;
    for (aggregate, count) in per_aggregate {
        let last: i64 = head.query_row(rusqlite::params![aggregate, count], |row| row.get(0))?;
        next_aggregate_seq.insert(aggregate, last - count + 1);
    }
    let at = at.to_rfc3339();
    let mut insert = tx.prepare_cached(
        "INSERT INTO events (seq, id, event_type, aggregate, aggregate_seq, at, version, data) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for (offset, event) in events.iter().enumerate() {
        let aggregate_seq = next_aggregate_seq
            .get_mut(event.aggregate.as_str())
            .ok_or_else(|| StoreError::Corrupt("aggregate head missing".into()))?;
        insert.execute(rusqlite::params![
            first_seq + offset as i64,
            format!("evt_{}", uuid::Uuid::now_v7().simple()),
            event.event_type,
            event.aggregate,
            *aggregate_seq,
            at,
            i64::from(event.version),
            event.data.to_string(),
        ])?;
        *aggregate_seq += 1;
    }
    Ok(())
}

/// [`crate::outbox::lock_sequence`] on the direct writer.
pub fn lock_sequence(tx: &rusqlite::Transaction<'_>, count: i64) -> Result<i64, StoreError> {
    let last: i64 = tx
        .prepare_cached("UPDATE event_sequence SET last_seq = last_seq + ?1 WHERE id = 1 RETURNING last_seq")?
        .query_row([count], |row| row.get(0))?;
    Ok(last - count + 1)
}
