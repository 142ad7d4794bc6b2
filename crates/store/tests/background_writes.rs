//! Background jobs on SQLite's direct writer (the expiry sweep) wait for a gap in the
//! foreground's: a foreground job queued while one runs goes before a background job that
//! was waiting, and a background job does not wait past its patience.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use store::{Db, DbOptions, StoreError};

type Order = Arc<Mutex<Vec<&'static str>>>;

fn job(
    order: &Order,
    name: &'static str,
    hold: Duration,
) -> impl FnOnce(&rusqlite::Transaction<'_>) -> Result<Option<()>, StoreError> + Send + 'static {
    let order = order.clone();
    move |_tx| {
        // Holds the writer thread, as a long batch would.
        std::thread::sleep(hold);
        order.lock().unwrap().push(name);
        Ok(Some(()))
    }
}

async fn sqlite_db() -> (Db, std::path::PathBuf) {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let path = std::env::temp_dir().join(format!("stockroom-background-{}-{nanos}.db", std::process::id()));
    let db = Db::connect(&format!("sqlite://{}", path.display()), &DbOptions::default()).await.expect("connect");
    (db, path)
}

async fn until(what: &str, condition: impl Fn() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < Duration::from_secs(5), "{what} never happened");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_background_job_lets_every_queued_foreground_job_go_first() {
    let (db, path) = sqlite_db().await;
    let order: Order = Arc::default();
    let first = tokio::spawn({
        let db = db.clone();
        let work = job(&order, "foreground 1", Duration::from_millis(300));
        async move { db.write_direct(work).await }
    });
    until("the first foreground job", || db.foreground_busy()).await;
    let background = tokio::spawn({
        let db = db.clone();
        let work = job(&order, "background", Duration::ZERO);
        async move { db.write_direct_background(Duration::from_secs(5), work).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Queued after the background job, while the first foreground job still runs.
    let second = tokio::spawn({
        let db = db.clone();
        let work = job(&order, "foreground 2", Duration::ZERO);
        async move { db.write_direct(work).await }
    });
    for handle in [first, background, second] {
        assert!(matches!(handle.await.unwrap(), Some(Ok(Some(())))));
    }
    assert_eq!(*order.lock().unwrap(), ["foreground 1", "foreground 2", "background"]);
    assert!(!db.foreground_busy());
    db.close().await;
    let _ = std::fs::remove_file(path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_job_stops_waiting_after_its_patience() {
    let (db, path) = sqlite_db().await;
    let order: Order = Arc::default();
    // A foreground that never leaves a gap for 2 s: a chain of jobs, each queued while the
    // previous one runs.
    let chain = tokio::spawn({
        let (db, order) = (db.clone(), order.clone());
        async move {
            let mut queued = Vec::new();
            for _ in 0..20 {
                let db = db.clone();
                let work = job(&order, "foreground", Duration::from_millis(100));
                queued.push(tokio::spawn(async move { db.write_direct(work).await }));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            for handle in queued {
                handle.await.unwrap();
            }
        }
    });
    until("the foreground", || db.foreground_busy()).await;
    let started = Instant::now();
    let done = db.write_direct_background(Duration::from_millis(100), job(&order, "background", Duration::ZERO)).await;
    assert!(matches!(done, Some(Ok(Some(())))));
    let waited = started.elapsed();
    chain.await.unwrap();
    let order = order.lock().unwrap().clone();
    let position = order.iter().position(|n| *n == "background").unwrap();
    // It ran among the foreground jobs, not after all 20 of them.
    assert!(position < order.len() - 1, "the background job waited for the whole chain: {order:?}");
    assert!(waited < Duration::from_millis(1_900), "waited {waited:?}");
    db.close().await;
    let _ = std::fs::remove_file(path);
}

#[tokio::test]
async fn postgresql_has_no_direct_writer() {
    let Ok(url) = std::env::var("STOCKROOM_TEST_POSTGRES_URL") else { return };
    let db = Db::connect(&url, &DbOptions::default()).await.expect("connect");
    let order: Order = Arc::default();
    assert!(
        db.write_direct_background(Duration::from_millis(10), job(&order, "background", Duration::ZERO))
            .await
            .is_none()
    );
    assert!(order.lock().unwrap().is_empty());
    db.close().await;
}
