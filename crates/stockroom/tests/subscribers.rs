//! `store::subscriber` through its public Rust API on both backends: bounded batches in `seq`
//! order, a persisted offset, redelivery after a failed run, one holder at a time, and
//! start-up checks that refuse a subscriber that cannot run.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use store::outbox::StoredEvent;
use store::subscriber::{Subscriber, prepare, run_once, subscription};
use store::{Db, StoreError, Tx};
use testkit::{TestDatabase, backends, seed_warehouse};

/// Records what it is handed; fails its first `failures` runs after recording nothing.
struct Recorder {
    name: &'static str,
    failures: AtomicUsize,
    delay: Duration,
    seen: Mutex<Vec<StoredEvent>>,
}

impl Recorder {
    fn new(name: &'static str) -> Self {
        Self { name, failures: AtomicUsize::new(0), delay: Duration::ZERO, seen: Mutex::new(Vec::new()) }
    }

    fn seqs(&self) -> Vec<i64> {
        self.seen.lock().unwrap().iter().map(|e| e.seq).collect()
    }
}

impl Subscriber for Recorder {
    type Error = StoreError;

    fn name(&self) -> &'static str {
        self.name
    }

    fn event_types(&self) -> &'static [&'static str] {
        &["warehouse.created"]
    }

    async fn handle(&self, _tx: &mut Tx, events: &[StoredEvent], _now: kernel::Timestamp) -> Result<(), StoreError> {
        tokio::time::sleep(self.delay).await;
        if self.failures.load(Ordering::SeqCst) > 0 {
            self.failures.fetch_sub(1, Ordering::SeqCst);
            return Err(StoreError::Corrupt("the handler failed on purpose".into()));
        }
        self.seen.lock().unwrap().extend(events.iter().cloned());
        Ok(())
    }
}

async fn warehouses(db: &Db, from: usize, to: usize) {
    for n in from..to {
        seed_warehouse(db, &format!("W{n}"), 10).await;
    }
}

/// The stored offset; a subscriber that never committed a run starts at the feed's start.
async fn offset_of(db: &Db, name: &str) -> i64 {
    let offsets = store::subscriber::offsets(db).await.unwrap();
    offsets.into_iter().find(|o| o.subscriber == name).map(|o| o.offset).unwrap_or(0)
}

fn now() -> kernel::Timestamp {
    kernel::Timestamp::from_millis(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_gets_bounded_batches_in_order_once_each_and_resumes_from_its_offset() {
    for backend in backends() {
        let database = TestDatabase::create(backend).await;
        let db = database.connect().await;
        warehouses(&db, 0, 10).await;
        // Events of another type are scanned past, never handed over.
        let mut tx = db.begin().await.unwrap();
        let item = warehouse::item::NewItem {
            sku: kernel::SkuCode::parse("SKU-1").unwrap(),
            name: "an item".into(),
            weight_grams: None,
            track_lots: false,
        };
        warehouse::item::item_create(&mut tx, item, now()).await.unwrap();
        tx.commit().await.unwrap();

        let recorder = Recorder::new("recorder");
        let mut runs = 0;
        loop {
            // Read a minute after the first event was committed: the lag in time is the age
            // of the oldest event past the offset, at the run's clock.
            let first_at = store::outbox::events_after(db.reader(), 0, 1).await.unwrap()[0].at.clone();
            let first_ms = time::OffsetDateTime::parse(&first_at, &time::format_description::well_known::Rfc3339)
                .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
                .unwrap();
            let later = kernel::Timestamp::from_millis(first_ms + 60_000);
            let report = run_once(&db, &recorder, 3, later).await.unwrap();
            runs += 1;
            assert!(report.handled <= 3, "[{backend:?}] a run handles at most its batch: {report:?}");
            if report.lag > 0 {
                let next = store::outbox::events_after(db.reader(), report.offset, 1).await.unwrap();
                let next_ms = time::OffsetDateTime::parse(&next[0].at, &time::format_description::well_known::Rfc3339)
                    .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
                    .unwrap();
                assert_eq!(report.lag_ms, Some(first_ms + 60_000 - next_ms), "[{backend:?}] {report:?}");
                assert!(report.lag_ms.unwrap() > 0, "[{backend:?}] {report:?}");
            }
            if report.handled == 0 {
                assert_eq!(report.lag, 0, "[{backend:?}] {report:?}");
                assert_eq!(report.lag_ms, Some(0), "[{backend:?}] caught up: no lag in time");
                break;
            }
        }
        assert_eq!(runs, 5, "[{backend:?}] 10 events in batches of 3, then an empty run");
        let seqs = recorder.seqs();
        assert_eq!(seqs.len(), 10, "[{backend:?}] {seqs:?}");
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "[{backend:?}] in seq order, once each: {seqs:?}");
        assert!(recorder.seen.lock().unwrap().iter().all(|e| e.event_type == "warehouse.created"));
        let head = store::subscriber::offsets(&db).await.unwrap()[0].offset;
        assert!(head >= seqs[9], "[{backend:?}] the offset is past every handled event");

        // The offset is persisted: another instance of the subscriber goes on from it.
        let again = Recorder::new("recorder");
        warehouses(&db, 10, 12).await;
        while run_once(&db, &again, 3, now()).await.unwrap().handled > 0 {}
        assert_eq!(again.seen.lock().unwrap().len(), 2, "[{backend:?}] only the new events");
        assert!(again.seqs()[0] > seqs[9]);

        // A failed run moves nothing: the same events come again (at least once).
        let flaky = Recorder::new("flaky");
        flaky.failures.store(1, Ordering::SeqCst);
        assert!(run_once(&db, &flaky, 100, now()).await.is_err());
        assert_eq!(offset_of(&db, "flaky").await, 0, "[{backend:?}] the failed run kept the offset");
        let report = run_once(&db, &flaky, 100, now()).await.unwrap();
        assert_eq!(report.handled, 12, "[{backend:?}] everything is handed over again: {report:?}");
        db.close().await;
        database.drop_database().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_runs_of_one_subscriber_at_once_never_hand_over_the_same_event() {
    for backend in backends() {
        let database = TestDatabase::create(backend).await;
        let db = database.connect().await;
        warehouses(&db, 0, 8).await;
        // The offset row exists before the race (as after start-up), so only its lock keeps
        // the two runs apart.
        let clock: std::sync::Arc<dyn kernel::Clock> = std::sync::Arc::new(kernel::SystemClock);
        let shared = subscription(db.clone(), clock, Recorder::new("shared"), Duration::from_secs(1), 4);
        prepare(&db, &[shared], &["warehouse.created"], now()).await.unwrap();
        let mut recorder = Recorder::new("shared");
        recorder.delay = Duration::from_millis(200);
        let recorder = std::sync::Arc::new(recorder);
        // Two replicas' runs at once: the offset row lock makes the second wait and then go on
        // from where the first stopped.
        let runs: Vec<_> = (0..2)
            .map(|_| {
                let (db, recorder) = (db.clone(), recorder.clone());
                tokio::spawn(async move { run_once(&db, recorder.as_ref(), 4, now()).await.unwrap() })
            })
            .collect();
        let mut handled = 0;
        for run in runs {
            handled += run.await.unwrap().handled;
        }
        let mut seqs = recorder.seqs();
        assert_eq!(handled, 8, "[{backend:?}] the two runs handled two different batches");
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(seqs.len(), 8, "[{backend:?}] no event was handed over twice");
        db.close().await;
        database.drop_database().await;
    }
}

#[tokio::test]
async fn a_subscriber_that_cannot_start_fails_start_up() {
    for backend in backends() {
        let database = TestDatabase::create(backend).await;
        let db = database.connect().await;
        let clock: std::sync::Arc<dyn kernel::Clock> = std::sync::Arc::new(kernel::SystemClock);
        let make = |name| subscription(db.clone(), clock.clone(), Recorder::new(name), Duration::from_secs(1), 10);

        let unknown = prepare(&db, &[make("a")], &["stock.changed"], now()).await.unwrap_err();
        assert!(unknown.contains("warehouse.created"), "[{backend:?}] names the unknown type: {unknown}");
        let twice = prepare(&db, &[make("a"), make("a")], &["warehouse.created"], now()).await.unwrap_err();
        assert!(twice.contains("two subscribers are named a"), "[{backend:?}] {twice}");

        assert!(store::subscriber::offsets(&db).await.unwrap().is_empty(), "[{backend:?}] refused ones left none");
        prepare(&db, &[make("a")], &["warehouse.created"], now()).await.unwrap();
        let offsets = store::subscriber::offsets(&db).await.unwrap();
        assert_eq!(offsets.len(), 1, "[{backend:?}] a prepared subscriber has its offset row: {offsets:?}");
        assert_eq!((offsets[0].subscriber.as_str(), offsets[0].offset), ("a", 0));
        db.close().await;
        database.drop_database().await;
    }
}
