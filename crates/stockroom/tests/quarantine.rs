//! Unit quarantine of items without lots: held units stay on hand, are never sold, and leave
//! only as a `quarantine_release` or `scrap` movement. Over HTTP on every backend.

use serde_json::{Value, json};
use testkit::{TestApp, each_backend};

async fn kinds(app: &TestApp) -> Vec<String> {
    app.get("/v1/movements?sku=BOX").await.expect(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["kind"].as_str().unwrap().to_owned())
        .collect()
}

fn warehouse<'a>(stock: &'a Value, code: &str) -> &'a Value {
    stock["warehouses"].as_array().unwrap().iter().find(|w| w["warehouse"] == code).unwrap()
}

#[tokio::test]
async fn quarantined_units_stay_on_hand_are_never_held_and_leave_by_release_or_scrap() {
    each_backend(|app| async move {
        app.create_item("BOX").await;
        app.create_warehouse("BER-1", 10).await;
        app.receive("BER-1", "BOX", 10).await;
        app.post("/v1/reservations", json!({"lines": [{"sku": "BOX", "quantity": 3}]})).await.expect(201);

        let body = json!({"warehouse": "BER-1", "quantity": 4, "reason": "water damage"});
        let entry = app.post("/v1/stock/BOX/quarantine", body).await.expect(201);
        assert_eq!((entry["status"].as_str(), entry["units"].as_i64()), (Some("held"), Some(4)), "{entry}");
        let stock = app.stock("BOX").await;
        let counts = |v: &Value| {
            (v["on_hand"].as_i64(), v["reserved"].as_i64(), v["unavailable"].as_i64(), v["available"].as_i64())
        };
        assert_eq!(counts(&stock), (Some(10), Some(3), Some(4), Some(3)), "{stock}");
        assert_eq!(counts(warehouse(&stock, "BER-1")), (Some(10), Some(3), Some(4), Some(3)), "{stock}");
        let short = app.post("/v1/reservations", json!({"lines": [{"sku": "BOX", "quantity": 4}]})).await;
        assert_eq!(short.expect_problem(409, "insufficient_stock")["lines"][0]["available"], 3);

        let before = kinds(&app).await;
        let too_many = json!({"warehouse": "BER-1", "quantity": 4, "reason": "more damage"});
        app.post("/v1/stock/BOX/quarantine", too_many).await.expect_problem(409, "insufficient_stock");
        let bad =
            app.post("/v1/stock/BOX/quarantine", json!({"warehouse": "HAM-9", "quantity": 0, "reason": ""})).await;
        let problem = bad.expect_problem(422, "validation_failed");
        let fields: Vec<&str> =
            problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
        assert!(fields.contains(&"quantity") && fields.contains(&"reason"), "every bad field named: {problem}");
        app.post("/v1/stock/BOX/quarantine", json!({"warehouse": "HAM-9", "quantity": 1, "reason": "x"}))
            .await
            .expect_problem(422, "validation_failed");
        app.post("/v1/stock/NOPE/quarantine", json!({"warehouse": "BER-1", "quantity": 1, "reason": "x"}))
            .await
            .expect_problem(404, "not_found");
        app.post("/v1/stock/BOX/quarantine", json!({"warehouse": "BER-1", "quantity": 1, "reason": "x", "extra": 1}))
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(kinds(&app).await, before, "refused requests change nothing");

        let id = entry["id"].as_str().unwrap();
        let listed = app.get("/v1/quarantine?warehouse=BER-1&status=held").await.expect(200);
        assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");
        app.get("/v1/quarantine?status=lost").await.expect_problem(422, "validation_failed");

        let second = json!({"warehouse": "BER-1", "quantity": 2, "reason": "crushed"});
        let second = app.post("/v1/stock/BOX/quarantine", second).await.expect(201);
        let released = app.post(&format!("/v1/quarantine/{id}/release"), json!({})).await.expect(200);
        assert_eq!(released["status"], "released");
        app.post(&format!("/v1/quarantine/{id}/scrap"), json!({})).await.expect_problem(409, "invalid_state");
        let scrapped =
            app.post(&format!("/v1/quarantine/{}/scrap", second["id"].as_str().unwrap()), json!({})).await.expect(200);
        assert_eq!(scrapped["status"], "scrapped");
        app.post("/v1/quarantine/nope/release", json!({})).await.expect_problem(404, "not_found");

        let stock = app.stock("BOX").await;
        assert_eq!(counts(&stock), (Some(8), Some(3), Some(0), Some(5)), "scrap takes 2 off hand: {stock}");
        let kinds = kinds(&app).await;
        for kind in ["quarantine", "quarantine_release", "scrap"] {
            assert!(kinds.iter().any(|k| k == kind), "a {kind} movement in {kinds:?}");
        }
        app.reconcile().await;
    })
    .await;
}

#[tokio::test]
async fn items_with_lots_quarantine_whole_lots_instead() {
    each_backend(|app| async move {
        app.post("/v1/items", json!({"sku": "MILK", "name": "Milk", "track_lots": true})).await.expect(201);
        app.create_warehouse("BER-1", 10).await;
        app.post(
            "/v1/receipts",
            json!({"warehouse": "BER-1", "lines": [{"sku": "MILK", "quantity": 5, "lot": "L1", "expires_on": "2099-01-01"}]}),
        )
        .await
        .expect(201);
        app.post("/v1/stock/MILK/quarantine", json!({"warehouse": "BER-1", "quantity": 1, "reason": "x"}))
            .await
            .expect_problem(422, "validation_failed");
        app.reconcile().await;
    })
    .await;
}
