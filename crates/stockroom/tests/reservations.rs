//! Reservations over HTTP: sourcing, all-or-nothing, the two-phase lifecycle, expiry and
//! idempotency, on every backend.

use serde_json::{Value, json};
use std::time::Duration;
use testkit::{AppOptions, TestApp, backends, each_backend, spawn_app_with};

async fn setup(app: &TestApp) {
    app.create_item("SKU-1").await;
    app.create_item("SKU-2").await;
    app.create_warehouse("BER-1", 10).await;
    app.create_warehouse("MUC-1", 20).await;
    app.receive("BER-1", "SKU-1", 3).await;
    app.receive("MUC-1", "SKU-1", 10).await;
    app.receive("MUC-1", "SKU-2", 1).await;
}

fn line_at<'a>(reservation: &'a Value, warehouse: &str) -> Option<&'a Value> {
    reservation["lines"].as_array().unwrap().iter().find(|l| l["warehouse"] == warehouse)
}

#[tokio::test]
async fn a_line_without_warehouse_is_sourced_by_priority_and_split() {
    each_backend(|app| async move {
        setup(&app).await;
        let r = app
            .post(
                "/v1/reservations",
                json!({"reference": "cart-1", "ttl_seconds": 60, "lines": [{"sku": "SKU-1", "quantity": 5}]}),
            )
            .await
            .expect(201);
        assert_eq!(r["status"], "active");
        assert_eq!(r["reference"], "cart-1");
        assert!(r["id"].as_str().unwrap().starts_with("res_"));
        assert_eq!(line_at(&r, "BER-1").unwrap()["quantity"], 3, "the preferred warehouse first: {r}");
        assert_eq!(line_at(&r, "MUC-1").unwrap()["quantity"], 2);
        let stock = app.stock("SKU-1").await;
        assert_eq!((stock["reserved"].as_i64(), stock["available"].as_i64()), (Some(5), Some(8)));
        assert_eq!(app.get(&format!("/v1/reservations/{}", r["id"].as_str().unwrap())).await.expect(200), r);
        app.reconcile().await;
    })
    .await;
}

#[tokio::test]
async fn a_reservation_is_all_or_nothing_and_names_the_short_lines() {
    each_backend(|app| async move {
        setup(&app).await;
        let before = (app.stock("SKU-1").await, app.stock("SKU-2").await, app.all_events().await.len());
        let refused = app
            .post(
                "/v1/reservations",
                json!({"lines": [{"sku": "SKU-1", "quantity": 4}, {"sku": "SKU-2", "quantity": 5},
                                 {"sku": "SKU-1", "quantity": 4, "warehouse": "BER-1"}]}),
            )
            .await
            .expect_problem(409, "insufficient_stock");
        let lines = refused["lines"].as_array().unwrap();
        assert!(lines.contains(&json!({"sku": "SKU-2", "requested": 5, "available": 1})), "{refused}");
        assert!(
            lines.contains(&json!({"sku": "SKU-1", "warehouse": "BER-1", "requested": 4, "available": 3})),
            "{refused}"
        );
        let after = (app.stock("SKU-1").await, app.stock("SKU-2").await, app.all_events().await.len());
        assert_eq!(before, after, "a refused reservation changes nothing");
    })
    .await;
}

#[tokio::test]
async fn the_lifecycle_confirm_fulfill_takes_stock_out_of_the_building() {
    each_backend(|app| async move {
        setup(&app).await;
        let r = app
            .post("/v1/reservations", json!({"lines": [{"sku": "SKU-1", "quantity": 2, "warehouse": "MUC-1"}]}))
            .await
            .expect(201);
        let id = r["id"].as_str().unwrap();
        app.post(&format!("/v1/reservations/{id}/fulfill"), json!({})).await.expect_problem(409, "invalid_state");
        let confirmed = app.post(&format!("/v1/reservations/{id}/confirm"), json!({})).await.expect(200);
        assert_eq!(confirmed["status"], "confirmed");
        assert_eq!(
            app.post(&format!("/v1/reservations/{id}/confirm"), json!({})).await.expect(200)["status"],
            "confirmed"
        );
        let fulfilled = app.post(&format!("/v1/reservations/{id}/fulfill"), json!({})).await.expect(200);
        assert_eq!(fulfilled["status"], "fulfilled");
        let stock = app.stock("SKU-1").await;
        assert_eq!((stock["on_hand"].as_i64(), stock["reserved"].as_i64()), (Some(11), Some(0)));
        app.post(&format!("/v1/reservations/{id}/release"), json!({})).await.expect_problem(409, "invalid_state");
        app.post(&format!("/v1/reservations/{id}/confirm"), json!({})).await.expect_problem(409, "invalid_state");
        let kinds: Vec<String> = app.get("/v1/movements?sku=SKU-1&warehouse=MUC-1").await.expect(200)["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["kind"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(kinds, ["receipt", "reserve", "fulfill"]);
        app.reconcile().await;
    })
    .await;
}

#[tokio::test]
async fn release_gives_stock_back_and_repeating_it_is_a_no_op() {
    each_backend(|app| async move {
        setup(&app).await;
        let r = app.post("/v1/reservations", json!({"lines": [{"sku": "SKU-1", "quantity": 6}]})).await.expect(201);
        let id = r["id"].as_str().unwrap();
        app.post(&format!("/v1/reservations/{id}/confirm"), json!({})).await.expect(200);
        let released = app.post(&format!("/v1/reservations/{id}/release"), json!({})).await.expect(200);
        assert_eq!(released["status"], "released");
        assert_eq!(
            app.post(&format!("/v1/reservations/{id}/release"), json!({})).await.expect(200)["status"],
            "released"
        );
        assert_eq!(app.stock("SKU-1").await["reserved"], 0);
        app.post(&format!("/v1/reservations/{id}/confirm"), json!({})).await.expect_problem(409, "invalid_state");
        app.get("/v1/reservations/res_0000").await.expect_problem(404, "not_found");
        app.post("/v1/reservations/res_0000/confirm", json!({})).await.expect_problem(404, "not_found");
        app.reconcile().await;
    })
    .await;
}

#[tokio::test]
async fn part_of_a_reservation_is_given_back_and_the_rest_stays_held() {
    each_backend(|app| async move {
        setup(&app).await;
        let body = json!({"reference": "cart-9", "ttl_seconds": 600, "lines": [
            {"sku": "SKU-1", "quantity": 3, "warehouse": "MUC-1"},
            {"sku": "SKU-1", "quantity": 2, "warehouse": "BER-1"},
        ]});
        let id = app.post("/v1/reservations", body).await.expect(201)["id"].as_str().unwrap().to_owned();
        let reduce = format!("/v1/reservations/{id}/reduce");
        let before = app.stock("SKU-1").await;

        // More than held, or what it does not hold: refused, each line named, nothing changed.
        let bad = json!({"lines": [
            {"sku": "SKU-1", "warehouse": "MUC-1", "quantity": 4},
            {"sku": "SKU-2", "warehouse": "MUC-1", "quantity": 1},
        ]});
        let problem = app.post(&reduce, bad).await.expect_problem(422, "validation_failed");
        let fields: Vec<&str> =
            problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
        assert_eq!(fields, ["lines[0].quantity", "lines[1].quantity"], "[{}] {problem}", app.label());
        app.post(&reduce, json!({"lines": []})).await.expect_problem(422, "validation_failed");
        assert_eq!(app.stock("SKU-1").await, before);

        let reduced = app.post(&reduce, json!({"lines": [{"sku": "SKU-1", "warehouse": "MUC-1", "quantity": 1}]}));
        let reduced = reduced.await.expect(200);
        assert_eq!(reduced["status"], "active");
        assert_eq!(line_at(&reduced, "MUC-1").unwrap()["quantity"], 2, "{reduced}");
        assert_eq!(line_at(&reduced, "BER-1").unwrap()["quantity"], 2, "{reduced}");
        assert_eq!(app.stock("SKU-1").await["reserved"], 4);
        let events = app.all_events().await;
        assert_eq!(events.iter().filter(|e| e["type"] == "reservation.reduced").count(), 1);

        // Giving back all it still holds releases it; then it holds nothing to give.
        let rest = json!({"lines": [
            {"sku": "SKU-1", "warehouse": "MUC-1", "quantity": 2},
            {"sku": "SKU-1", "warehouse": "BER-1", "quantity": 2},
        ]});
        assert_eq!(app.post(&reduce, rest.clone()).await.expect(200)["status"], "released");
        app.post(&reduce, rest).await.expect_problem(409, "invalid_state");
        assert_eq!(app.stock("SKU-1").await["reserved"], 0);
        app.post(
            "/v1/reservations/res_nope/reduce",
            json!({"lines": [{"sku": "SKU-1", "warehouse": "MUC-1", "quantity": 1}]}),
        )
        .await
        .expect_problem(404, "not_found");
        app.reconcile().await;
    })
    .await;
}

#[tokio::test]
async fn an_expired_reservation_reads_as_expired_and_never_blocks_a_new_one() {
    // A sweeper that never runs during the test: expiry must not depend on it.
    for backend in backends() {
        let options = AppOptions { sweep_interval: Duration::from_secs(3600), ..AppOptions::default() };
        let app = spawn_app_with(backend, options).await;
        setup(&app).await;
        let r = app
            .post("/v1/reservations", json!({"ttl_seconds": 1, "lines": [{"sku": "SKU-2", "quantity": 1}]}))
            .await
            .expect(201);
        let id = r["id"].as_str().unwrap().to_owned();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(app.get(&format!("/v1/reservations/{id}")).await.expect(200)["status"], "expired");
        app.post(&format!("/v1/reservations/{id}/confirm"), json!({})).await.expect_problem(409, "invalid_state");
        // All of SKU-2 was held by the expired reservation; a new hold reclaims it inline.
        let again = app.post("/v1/reservations", json!({"lines": [{"sku": "SKU-2", "quantity": 1}]})).await.expect(201);
        assert_eq!(again["status"], "active");
        let kinds: Vec<String> = app.get("/v1/movements?sku=SKU-2").await.expect(200)["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["kind"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(kinds, ["receipt", "reserve", "expire", "reserve"]);
        assert_eq!(app.get(&format!("/v1/reservations/{id}")).await.expect(200)["status"], "expired");
        app.reconcile().await;
        app.shutdown().await;
    }
}

#[tokio::test]
async fn the_sweeper_expires_reservations_within_two_seconds() {
    each_backend(|app| async move {
        setup(&app).await;
        let r = app
            .post("/v1/reservations", json!({"ttl_seconds": 1, "lines": [{"sku": "SKU-1", "quantity": 4}]}))
            .await
            .expect(201);
        let id = r["id"].as_str().unwrap().to_owned();
        assert_eq!(app.stock("SKU-1").await["reserved"], 4);
        // Expiry is at 1 s; the sweeper must have released it by 1 s + 2 s.
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        loop {
            if app.stock("SKU-1").await["reserved"] == 0 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the sweeper did not release the stock in time");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(app.get(&format!("/v1/reservations/{id}")).await.expect(200)["status"], "expired");
        let events = app.all_events().await;
        assert!(events.iter().any(|e| e["type"] == "reservation.expired" && e["data"]["id"] == id.as_str()));
        app.reconcile().await;
    })
    .await;
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_answer_and_holds_once() {
    each_backend(|app| async move {
        setup(&app).await;
        let body = json!({"reference": "cart-9", "lines": [{"sku": "SKU-1", "quantity": 2}]});
        let replayed = |reply: &testkit::Reply| reply.headers.get("idempotent-replayed").map(|v| v.as_bytes().to_vec());
        let first = app.post_with("/v1/reservations", body.clone(), &[("Idempotency-Key", "abc")]).await;
        assert_eq!(replayed(&first), None, "a first answer is not a replay");
        let first = first.expect(201);
        let again = app.post_with("/v1/reservations", body.clone(), &[("Idempotency-Key", "abc")]).await;
        assert_eq!(replayed(&again), Some(b"true".to_vec()), "a repeat says it is a replay");
        let again = again.expect(201);
        assert_eq!(first, again);
        assert_eq!(app.stock("SKU-1").await["reserved"], 2);
        app.post_with(
            "/v1/reservations",
            json!({"lines": [{"sku": "SKU-1", "quantity": 3}]}),
            &[("Idempotency-Key", "abc")],
        )
        .await
        .expect_problem(422, "idempotency_key_reused");

        // A refusal is replayed too, even after stock arrives.
        let big = json!({"lines": [{"sku": "SKU-2", "quantity": 5}]});
        app.post_with("/v1/reservations", big.clone(), &[("Idempotency-Key", "big")])
            .await
            .expect_problem(409, "insufficient_stock");
        app.receive("MUC-1", "SKU-2", 10).await;
        let refused_again = app.post_with("/v1/reservations", big.clone(), &[("Idempotency-Key", "big")]).await;
        assert_eq!(replayed(&refused_again), Some(b"true".to_vec()));
        refused_again.expect_problem(409, "insufficient_stock");
        app.post("/v1/reservations", big).await.expect(201);

        let id = first["id"].as_str().unwrap();
        let confirmed = app
            .post_with(&format!("/v1/reservations/{id}/confirm"), json!({}), &[("Idempotency-Key", "c1")])
            .await
            .expect(200);
        assert_eq!(confirmed["status"], "confirmed");
        let confirmed_again =
            app.post_with(&format!("/v1/reservations/{id}/confirm"), json!({}), &[("Idempotency-Key", "c1")]).await;
        assert_eq!(replayed(&confirmed_again), Some(b"true".to_vec()), "run_write replays say so too");
        confirmed_again.expect(200);
        app.reconcile().await;
    })
    .await;
}
