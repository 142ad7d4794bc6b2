//! The `stockroom` binary itself: `serve` (log line, bootstrap key, scoped keys, graceful
//! shutdown), `migrate`, `keys create` and `reconcile`, on every backend.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testkit::{TestDatabase, backends};

/// Runs the binary to completion without blocking the test's runtime: the in-process server
/// of `spawn_app` shares that thread, and a worker of it caught mid-transaction would hold
/// the SQLite write lock the child waits for.
async fn stockroom(args: &[&str], database_url: &str) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_stockroom"))
        .args(args)
        .env("STOCKROOM_DATABASE_URL", database_url)
        .env_remove("STOCKROOM_ADMIN_KEY")
        .output()
        .await
        .expect("run stockroom")
}

/// Starts `serve` on an ephemeral port; returns the child, its base URL and its stdout lines
/// up to the "listening on" line.
fn serve(database_url: &str, admin_key: Option<&str>) -> (Child, String, Vec<String>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_stockroom"));
    command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("STOCKROOM_DATABASE_URL", database_url)
        .env("RUST_LOG", "info")
        .env_remove("STOCKROOM_ADMIN_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(key) = admin_key {
        command.env("STOCKROOM_ADMIN_KEY", key);
    }
    let mut child = command.spawn().expect("spawn serve");
    let stdout = child.stdout.take().unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        lines.push(line.clone());
        if let Some(i) = line.find("listening on http://") {
            let url = line[i + "listening on ".len()..].trim().to_owned();
            return (child, url, lines);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("serve exited without the listening line: {lines:?}");
}

fn terminate(mut child: Child) -> std::process::ExitStatus {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "serve did not stop within 10 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn serve_logs_its_address_honours_scoped_keys_and_stops_on_sigterm() {
    for backend in backends() {
        let database = TestDatabase::create(backend).await;
        let output = stockroom(&["migrate"], &database.url).await;
        assert!(output.status.success(), "{output:?}");
        let output = stockroom(&["keys", "create", "--scope", "inventory:read"], &database.url).await;
        assert!(output.status.success(), "{output:?}");
        let reader_key = String::from_utf8(output.stdout).unwrap().trim().to_owned();
        assert!(reader_key.starts_with("sk_"));
        assert_ne!(stockroom(&["keys", "create", "--scope", "root"], &database.url).await.status.code(), Some(0));

        let (child, url, _) = serve(&database.url, Some("cli-admin"));
        events::install_tls();
        let client = reqwest::Client::new();
        let status = |r: reqwest::Response| r.status().as_u16();
        let get = client.get(format!("{url}/v1/warehouses")).bearer_auth(&reader_key).send().await.unwrap();
        assert_eq!(status(get), 200);
        let post = client
            .post(format!("{url}/v1/warehouses"))
            .bearer_auth(&reader_key)
            .json(&serde_json::json!({"code": "X", "name": "X"}))
            .send()
            .await
            .unwrap();
        assert_eq!(status(post), 403);
        let admin = client
            .post(format!("{url}/v1/warehouses"))
            .bearer_auth("cli-admin")
            .json(&serde_json::json!({"code": "X", "name": "X"}))
            .send()
            .await
            .unwrap();
        assert_eq!(status(admin), 201);
        assert!(terminate(child).success(), "serve exits 0 after SIGTERM");
        database.drop_database().await;
    }
}

#[tokio::test]
async fn the_first_start_without_a_key_prints_an_admin_key_once() {
    for backend in backends() {
        let database = TestDatabase::create(backend).await;
        let (child, url, lines) = serve(&database.url, None);
        let printed = lines.iter().find_map(|l| l.split("store it now): ").nth(1)).expect("the key is printed");
        events::install_tls();
        let reply = reqwest::Client::new()
            .get(format!("{url}/v1/warehouses"))
            .bearer_auth(printed.trim())
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status().as_u16(), 200);
        terminate(child);
        let (child, _, lines) = serve(&database.url, None);
        assert!(!lines.iter().any(|l| l.contains("admin key")), "printed only on the first start: {lines:?}");
        terminate(child);
        database.drop_database().await;
    }
}

#[tokio::test]
async fn reconcile_exits_one_on_a_mismatch() {
    for backend in backends() {
        let app = testkit::spawn_app(backend).await;
        app.create_item("SKU-1").await;
        app.create_warehouse("BER-1", 10).await;
        app.receive("BER-1", "SKU-1", 5).await;
        let url = app.database_url().to_owned();
        let clean = stockroom(&["reconcile"], &url).await;
        assert!(clean.status.success(), "{clean:?}");
        let report: serde_json::Value = serde_json::from_slice(&clean.stdout).unwrap();
        assert_eq!(report["checked"], 1);

        // Corrupt a level behind the ledger's back, as a bug or a manual edit would.
        sqlx::query("UPDATE stock_levels SET on_hand = on_hand + 1").execute(app.db.reader()).await.unwrap();
        let dirty = stockroom(&["reconcile"], &url).await;
        assert_eq!(dirty.status.code(), Some(1), "{dirty:?}");
        let report: serde_json::Value = serde_json::from_slice(&dirty.stdout).unwrap();
        assert_eq!(report["mismatches"][0]["sku"], "SKU-1");
        assert_eq!(report["mismatches"][0]["expected_on_hand"], 5);
        app.shutdown().await;
    }
}

#[tokio::test]
async fn commands_other_than_serve_and_migrate_refuse_a_missing_or_unmigrated_database() {
    // A mistyped SQLite path: refused, and no empty database is left behind.
    let typo = std::env::temp_dir().join(format!("stockroom_typo_{}.db", uuid::Uuid::new_v4().simple()));
    let url = format!("sqlite://{}", typo.display());
    for args in [&["reconcile"][..], &["export", "stock"][..], &["keys", "create", "--scope", "inventory:read"][..]] {
        let out = stockroom(args, &url).await;
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("no SQLite database"), "{args:?}: {out:?}");
        assert!(!typo.exists(), "{args:?} created {}", typo.display());
    }
    for backend in backends() {
        // A database that exists but was never migrated: refused with what to do.
        let database = TestDatabase::create(backend).await;
        if backend == store::Backend::Sqlite {
            std::fs::write(database.url.trim_start_matches("sqlite://"), b"").unwrap();
        }
        let out = stockroom(&["reconcile"], &database.url).await;
        assert_eq!(out.status.code(), Some(1), "[{backend:?}] {out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("stockroom migrate"), "[{backend:?}] {out:?}");
        // After `migrate` the same command runs.
        assert!(stockroom(&["migrate"], &database.url).await.status.success());
        let out = stockroom(&["reconcile"], &database.url).await;
        assert!(out.status.success(), "[{backend:?}] {out:?}");
        database.drop_database().await;
    }
}

#[tokio::test]
async fn export_writes_stock_as_csv_and_movements_as_json_lines() {
    for backend in backends() {
        let app = testkit::spawn_app(backend).await;
        app.create_item("SKU-1").await;
        app.create_item("SKU-2").await;
        app.create_warehouse("BER-1", 10).await;
        app.receive("BER-1", "SKU-1", 5).await;
        app.receive("BER-1", "SKU-2", 7).await;
        app.post("/v1/reservations", serde_json::json!({"lines": [{"sku": "SKU-2", "quantity": 3}]})).await.expect(201);
        let url = app.database_url().to_owned();

        let csv = stockroom(&["export", "stock"], &url).await;
        assert!(csv.status.success(), "{csv:?}");
        let text = String::from_utf8(csv.stdout).unwrap();
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            ["warehouse,sku,on_hand,reserved", "BER-1,SKU-1,5,0", "BER-1,SKU-2,7,3"]
        );

        let jsonl = stockroom(&["export", "movements", "--format", "jsonl"], &url).await;
        assert!(jsonl.status.success(), "{jsonl:?}");
        let rows: Vec<serde_json::Value> =
            String::from_utf8(jsonl.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let kinds: Vec<&str> = rows.iter().map(|r| r["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["receipt", "receipt", "reserve"]);
        assert_eq!(rows[2]["reserved_after"], 3);
        app.shutdown().await;
    }
}

fn write_temp(name: &str, contents: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("stockroom-import-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[tokio::test]
async fn import_applies_batches_reports_rows_and_skips_what_it_applied_before() {
    for backend in backends() {
        let app = testkit::spawn_app(backend).await;
        app.create_warehouse("BER-1", 10).await;
        let url = app.database_url().to_owned();

        let items =
            write_temp("items.csv", "sku,name,weight_grams,key\nA,Apple,100,i-a\nB C,Broken,1,i-bad\nC,Cherry,,i-c\n");
        let out = stockroom(&["import", "items", items.to_str().unwrap()], &url).await;
        assert_eq!(out.status.code(), Some(1), "a bad row is reported: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("row 2: sku"), "{stderr}");
        assert_eq!(app.get("/v1/items/C").await.expect(200)["name"], "Cherry");

        // Batches of 2: row 4 names an unknown warehouse; it alone is rejected.
        let receipts = write_temp(
            "receipts.jsonl",
            concat!(
                "{\"warehouse\":\"BER-1\",\"sku\":\"A\",\"quantity\":5,\"key\":\"r1\"}\n",
                "{\"warehouse\":\"BER-1\",\"sku\":\"A\",\"quantity\":2,\"key\":\"r2\"}\n",
                "{\"warehouse\":\"BER-1\",\"sku\":\"C\",\"quantity\":1,\"key\":\"r3\"}\n",
                "{\"warehouse\":\"NOPE\",\"sku\":\"C\",\"quantity\":1,\"key\":\"r4\"}\n",
                "{\"warehouse\":\"BER-1\",\"sku\":\"C\",\"quantity\":4,\"key\":\"r5\"}\n",
            ),
        );
        let out = stockroom(&["import", "receipts", receipts.to_str().unwrap(), "--batch-size", "2"], &url).await;
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("row 4: warehouse: unknown warehouse NOPE"), "{stderr}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("4 applied, 0 skipped"), "{out:?}");
        assert_eq!(app.stock("A").await["on_hand"], 7);
        assert_eq!(app.stock("C").await["on_hand"], 5);

        // Run again: applied rows are skipped, nothing is received twice.
        let again = stockroom(&["import", "receipts", receipts.to_str().unwrap(), "--batch-size", "2"], &url).await;
        let summary = String::from_utf8_lossy(&again.stdout);
        assert!(summary.contains("0 applied, 4 skipped"), "{summary}");
        assert_eq!(app.stock("A").await["on_hand"], 7);

        let adjustments = write_temp(
            "adjustments.csv",
            "warehouse,sku,delta,counted,reason,key\nBER-1,A,-1,,damaged,a1\nBER-1,C,,10,count,a2\n",
        );
        let out = stockroom(&["import", "adjustments", adjustments.to_str().unwrap()], &url).await;
        assert!(out.status.success(), "{out:?}");
        assert_eq!(app.stock("A").await["on_hand"], 6);
        assert_eq!(app.stock("C").await["on_hand"], 10);
        app.reconcile().await;
        app.shutdown().await;
    }
}

#[tokio::test]
async fn a_bounded_import_applies_every_row_exactly_once_over_many_small_transactions() {
    for backend in backends() {
        let app = testkit::spawn_app(backend).await;
        app.create_warehouse("BER-1", 10).await;
        for sku in ["A", "B", "C"] {
            app.create_item(sku).await;
        }
        let url = app.database_url().to_owned();
        // 600 rows, one of them refused (an unknown SKU), no key column: keyed by content.
        let mut rows = String::from("warehouse,sku,quantity,reference\n");
        let mut expected = [0i64; 3];
        for n in 0..600usize {
            if n == 333 {
                rows.push_str("BER-1,NOPE,1,PO-x\n");
                continue;
            }
            let (sku, quantity) = (n % 3, 1 + (n % 7) as i64);
            expected[sku] += quantity;
            rows.push_str(&format!("BER-1,{},{quantity},PO-{}\n", ["A", "B", "C"][sku], n / 50));
        }
        let file = write_temp("receipts-bounded.csv", &rows);
        let path = file.to_str().unwrap();
        // A bound of 1 ms keeps transactions far below --batch-size; a short pause after each.
        let args = ["import", "receipts", path, "--batch-size", "500", "--max-tx-ms", "1", "--pause-ms", "1"];
        let out = stockroom(&args, &url).await;
        assert_eq!(out.status.code(), Some(1), "the unknown SKU is rejected: {out:?}");
        let summary = String::from_utf8_lossy(&out.stdout);
        assert!(
            summary.contains("600 rows read, 599 applied, 0 skipped") && summary.contains("1 rejected"),
            "{summary}"
        );
        let transactions: u64 = summary
            .split(", ")
            .find_map(|part| part.split_once(" transactions (").map(|(n, _)| n))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no transaction count in {summary}"));
        assert!(transactions > 2, "the bound splits the file into more than its 2 batches: {summary}");
        for (sku, units) in ["A", "B", "C"].iter().zip(expected) {
            assert_eq!(app.stock(sku).await["on_hand"], units, "{sku}");
        }
        // Again, bounded or not: nothing is applied twice.
        let again = stockroom(&args, &url).await;
        assert!(String::from_utf8_lossy(&again.stdout).contains("0 applied, 599 skipped"), "{again:?}");
        let unbounded = ["import", "receipts", path, "--max-tx-ms", "0", "--pause-ms", "0"];
        let again = stockroom(&unbounded, &url).await;
        assert!(String::from_utf8_lossy(&again.stdout).contains("0 applied, 599 skipped"), "{again:?}");
        for (sku, units) in ["A", "B", "C"].iter().zip(expected) {
            assert_eq!(app.stock(sku).await["on_hand"], units, "{sku}");
        }
        app.reconcile().await;
        app.shutdown().await;
    }
}

#[tokio::test]
async fn an_import_keyed_by_content_is_a_no_op_under_another_name_and_rejects_are_written_or_kept_back() {
    for backend in backends() {
        let app = testkit::spawn_app(backend).await;
        app.create_warehouse("BER-1", 10).await;
        app.create_item("A").await;
        let url = app.database_url().to_owned();
        // No key column: rows are keyed by content and occurrence, so the two equal rows are
        // two receipts, and a renamed copy with its columns in another order is the same data.
        let rows = "warehouse,sku,quantity\nBER-1,A,2\nBER-1,A,2\nBER-1,NOPE,1\nBER-1,A,3\n";
        let first = write_temp("receipts-monday.csv", rows);
        let rejects = first.with_file_name("rejects.jsonl");
        let path = first.to_str().unwrap();

        // A dry run reports what would happen and keeps nothing.
        let out = stockroom(&["import", "receipts", path, "--dry-run"], &url).await;
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let summary = String::from_utf8_lossy(&out.stdout);
        assert!(
            summary.contains("3 applied") && summary.contains("1 rejected") && summary.contains("dry run"),
            "{summary}"
        );
        assert_eq!(app.stock("A").await["on_hand"], 0);
        // All or nothing: one row is bad, so nothing is kept.
        let out = stockroom(&["import", "receipts", path, "--all-or-nothing"], &url).await;
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("nothing kept"), "{out:?}");
        assert_eq!(app.stock("A").await["on_hand"], 0);

        // Applied: the good rows go in, the bad one is written to the rejects file.
        let out = stockroom(&["import", "receipts", path, "--rejects", rejects.to_str().unwrap()], &url).await;
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert_eq!(app.stock("A").await["on_hand"], 7);
        let written = std::fs::read_to_string(&rejects).unwrap();
        let lines: Vec<serde_json::Value> = written.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 1, "{written}");
        assert_eq!((lines[0]["row"].as_i64(), lines[0]["text"].as_str()), (Some(3), Some("BER-1,NOPE,1")));
        assert!(lines[0]["reason"].as_str().unwrap().contains("NOPE"), "{written}");

        let copy = write_temp("receipts-copy.csv", "sku,quantity,warehouse\nA,2,BER-1\nA,2,BER-1\nA,3,BER-1\n");
        let out = stockroom(&["import", "receipts", copy.to_str().unwrap()], &url).await;
        assert!(out.status.success(), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("0 applied, 3 skipped"), "{out:?}");
        assert_eq!(app.stock("A").await["on_hand"], 7, "a renamed copy applies nothing again");
        // With a batch id the rows are keyed by it and their number instead.
        let out = stockroom(&["import", "receipts", copy.to_str().unwrap(), "--batch-id", "delivery-7"], &url).await;
        assert!(String::from_utf8_lossy(&out.stdout).contains("3 applied"), "{out:?}");
        let renamed = write_temp("delivery-7.csv", "sku,quantity,warehouse\nA,2,BER-1\nA,2,BER-1\nA,3,BER-1\n");
        let again =
            stockroom(&["import", "receipts", renamed.to_str().unwrap(), "--batch-id", "delivery-7"], &url).await;
        assert!(String::from_utf8_lossy(&again.stdout).contains("0 applied"), "{again:?}");
        assert_eq!(app.stock("A").await["on_hand"], 14);
        app.reconcile().await;
        app.shutdown().await;
    }
}
