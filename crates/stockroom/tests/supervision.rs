//! Supervision: a panic inside a batch is answered with a 500 problem document, counted, and
//! the executor goes on; a worker that keeps failing is reported down by `/ready` until it
//! recovers. Fail points are global to the process, so this file holds one test.

use serde_json::{Value, json};
use std::time::Duration;
use testkit::{AppOptions, TestApp, backends, spawn_app_with};

async fn ready(app: &TestApp) -> (u16, Value) {
    let reply = app.get("/ready").await;
    (reply.status.as_u16(), reply.body)
}

fn worker<'a>(readiness: &'a Value, name: &str) -> &'a Value {
    readiness["workers"]
        .as_array()
        .and_then(|workers| workers.iter().find(|w| w["name"] == name))
        .unwrap_or_else(|| panic!("/ready does not list the worker {name}: {readiness}"))
}

/// Polls `/ready` until `check` holds, for up to 10 s.
async fn ready_until(app: &TestApp, what: &str, check: impl Fn(u16, &Value) -> bool) -> Value {
    for _ in 0..200 {
        let (status, body) = ready(app).await;
        if check(status, &body) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = ready(app).await;
    panic!("[{}] /ready never showed {what}: {status} {body}", app.label());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_batch_answers_500_and_the_executor_goes_on_and_ready_reports_a_worker_down() {
    let scenario = fail::FailScenario::setup();
    for backend in backends() {
        let options = AppOptions { sweep_interval: Duration::from_millis(50), ..AppOptions::default() };
        let app = spawn_app_with(backend, options).await;
        app.create_item("SHIRT").await;
        app.create_warehouse("BER-1", 10).await;
        app.receive("BER-1", "SHIRT", 10).await;
        let (status, readiness) = ready(&app).await;
        assert_eq!(status, 200, "[{}] {readiness}", app.label());
        assert_eq!(worker(&readiness, "reservations-0")["state"], "up");
        let hold = json!({"lines": [{"sku": "SHIRT", "quantity": 2}]});

        // One batch panics: its request gets a 500 problem document and nothing is held.
        fail::cfg("reservation-batch-apply", "1*panic").unwrap();
        let problem = app.post("/v1/reservations", hold.clone()).await.expect_problem(500, "internal");
        assert_eq!(problem["status"], 500, "[{}] {problem}", app.label());
        assert_eq!(app.stock("SHIRT").await["reserved"], 0, "[{}] the panicked batch rolled back", app.label());

        // The executor goes on: the next hold is served, and the panic is counted.
        let held = app.post("/v1/reservations", hold.clone()).await.expect(201);
        assert_eq!(held["status"], "active");
        assert_eq!(app.stock("SHIRT").await["reserved"], 2);
        // The panic is recorded before the batch is answered, so it shows at once.
        let (_, readiness) = ready(&app).await;
        // Whichever of the executor's workers (4 on PostgreSQL) took the batch counts it.
        let executors: Vec<&Value> = readiness["workers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w["name"].as_str().is_some_and(|n| n.starts_with("reservations-")))
            .collect();
        assert!(!executors.is_empty(), "[{}] {readiness}", app.label());
        assert!(executors.iter().all(|w| w["state"] == "up"), "[{}] {readiness}", app.label());
        let failures: u64 = executors.iter().map(|w| w["failures"].as_u64().unwrap_or(0)).sum();
        assert_eq!(failures, 1, "[{}] {readiness}", app.label());
        let executor = executors.iter().find(|w| w["failures"] == 1).unwrap();
        assert!(executor["last_error"].as_str().is_some_and(|e| e.contains("panicked")), "{readiness}");

        // A worker that keeps failing is down, and /ready says so by name.
        fail::cfg("sweeper-run", "return").unwrap();
        let down = ready_until(&app, "the sweeper down", |status, body| {
            status == 503 && worker(body, "sweeper")["state"] == "down"
        })
        .await;
        assert_eq!(down["status"], "unavailable");
        assert_eq!(down["database"], true, "[{}] the database is fine: {down}", app.label());
        assert!(worker(&down, "sweeper")["last_error"].as_str().is_some_and(|e| e.contains("failpoint")), "{down}");

        // Once it runs again it is up, and so is the server.
        fail::remove("sweeper-run");
        let recovered = ready_until(&app, "the sweeper up again", |status, _| status == 200).await;
        assert_eq!(worker(&recovered, "sweeper")["state"], "up");
        app.reconcile().await;
        app.shutdown().await;
    }
    scenario.teardown();
}
