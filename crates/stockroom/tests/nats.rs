//! NATS JetStream against the real `nats-server` (when `STOCKROOM_TEST_NATS_URL` is set; `.ci/run`
//! sets it): every event in the stream exactly once, in `seq` order, with `Nats-Msg-Id` = the
//! event's id, also after the relay sends everything again; and a server of the test's own,
//! stopped mid-stream and started again: the offset waits, `/ready` says so, and afterwards
//! every event is in the stream exactly once. On both backends.

use async_nats::jetstream;
use serde_json::Value;
use std::time::{Duration, Instant};
use testkit::{AppOptions, TestApp, each_backend_with};

fn nats_url() -> Option<String> {
    std::env::var("STOCKROOM_TEST_NATS_URL").ok().filter(|u| !u.is_empty())
}

/// Settings with a stream and subjects of this test's own, so runs never share a stream.
fn settings(url: &str) -> events::nats::NatsSettings {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let mut s = events::nats::NatsSettings::new(url);
    s.stream = format!("T{tag}");
    s.subject_prefix = format!("t{tag}");
    s
}

async fn relay_offset(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT last_seq FROM worker_offsets WHERE worker = $1")
        .bind(events::nats::NATS_RELAY)
        .fetch_one(app.db.reader())
        .await
        .unwrap()
}

async fn head(app: &TestApp) -> i64 {
    app.all_events().await.last().map_or(0, |e| e["seq"].as_i64().unwrap())
}

async fn wait_until_published(app: &TestApp) {
    let head = head(app).await;
    let started = Instant::now();
    while relay_offset(app).await < head {
        assert!(started.elapsed() < Duration::from_secs(30), "[{}] the NATS relay stayed behind", app.label());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Every message of the stream, in stream order: (subject, Nats-Msg-Id, event).
async fn stream_messages(url: &str, s: &events::nats::NatsSettings) -> Vec<(String, String, Value)> {
    let client = async_nats::connect(url).await.unwrap();
    let js = jetstream::new(client);
    let mut stream = js.get_stream(&s.stream).await.unwrap();
    let count = stream.info().await.unwrap().state.messages;
    let mut out = Vec::new();
    for sequence in 1..=count {
        let m = stream.get_raw_message(sequence).await.unwrap();
        let id = m.headers.get("Nats-Msg-Id").map(|v| v.as_str().to_owned()).unwrap_or_default();
        out.push((m.subject.to_string(), id, serde_json::from_slice(&m.payload).unwrap()));
    }
    out
}

/// The stream holds every event of the feed exactly once, in `seq` order.
async fn assert_stream_is_the_feed(app: &TestApp, url: &str, s: &events::nats::NatsSettings) {
    let feed = app.all_events().await;
    let messages = stream_messages(url, s).await;
    assert_eq!(messages.len(), feed.len(), "[{}] stream and feed differ in length", app.label());
    for ((subject, id, event), expected) in messages.iter().zip(&feed) {
        assert_eq!(event, expected, "[{}]", app.label());
        assert_eq!(id, expected["id"].as_str().unwrap());
        assert_eq!(subject, &format!("{}.{}", s.subject_prefix, expected["type"].as_str().unwrap()));
    }
}

async fn some_changes(app: &TestApp, tag: &str) {
    app.create_warehouse(&format!("W-{tag}"), 1).await;
    for n in 0..5 {
        let sku = format!("{tag}-{n}");
        app.create_item(&sku).await;
        app.receive(&format!("W-{tag}"), &sku, 3).await;
    }
}

async fn delete_stream(url: &str, s: &events::nats::NatsSettings) {
    let js = jetstream::new(async_nats::connect(url).await.unwrap());
    let _ = js.delete_stream(&s.stream).await;
}

#[tokio::test]
async fn every_event_is_in_the_stream_once_in_order_even_when_sent_again() {
    let Some(url) = nats_url() else {
        eprintln!("STOCKROOM_TEST_NATS_URL is not set: NATS tests skipped");
        return;
    };
    let used = std::sync::Mutex::new(Vec::new());
    let options = || {
        let s = settings(&url);
        used.lock().unwrap().push(s.clone());
        let mut o = AppOptions::default();
        o.events.interval = Duration::from_millis(20);
        o.events.nats = Some(s);
        o
    };
    each_backend_with(options, |app| {
        let (url, s) = (url.clone(), used.lock().unwrap().last().cloned().unwrap());
        async move {
            some_changes(&app, "A").await;
            wait_until_published(&app).await;
            assert_stream_is_the_feed(&app, &url, &s).await;
            // As after a crash between the acknowledgements and the offset's move: everything
            // is published again, and JetStream keeps one of each.
            sqlx::query("UPDATE worker_offsets SET last_seq = 0 WHERE worker = $1")
                .bind(events::nats::NATS_RELAY)
                .execute(app.db.reader())
                .await
                .unwrap();
            some_changes(&app, "B").await;
            wait_until_published(&app).await;
            assert_stream_is_the_feed(&app, &url, &s).await;
            delete_stream(&url, &s).await;
        }
    })
    .await;
}

/// A `nats-server -js` of the test's own on a free port, with its store in a temporary
/// directory that outlives restarts.
struct OwnServer {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl OwnServer {
    fn start(port: u16, dir: std::path::PathBuf) -> Option<Self> {
        let mut server = Self { port, dir, child: None };
        server.restart().then_some(server)
    }

    fn restart(&mut self) -> bool {
        let child = std::process::Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        match child {
            Ok(child) => {
                self.child = Some(child);
                let started = Instant::now();
                while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
                    if started.elapsed() > Duration::from_secs(10) {
                        return false;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                true
            }
            Err(_) => false,
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn nats_stopped_and_started_mid_stream_loses_and_repeats_nothing() {
    if nats_url().is_none() {
        eprintln!("STOCKROOM_TEST_NATS_URL is not set: NATS tests skipped");
        return;
    }
    for backend in testkit::backends() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("stockroom-nats-{}", uuid::Uuid::new_v4().simple()));
        let Some(mut server) = OwnServer::start(port, dir) else {
            panic!("nats-server is not installed or did not start (STOCKROOM_TEST_NATS_URL is set)");
        };
        let s = settings(&server.url());
        let mut options = AppOptions::default();
        options.events.interval = Duration::from_millis(20);
        options.events.nats = Some(s.clone());
        let app = testkit::spawn_app_with(backend, options).await;
        some_changes(&app, "A").await;
        wait_until_published(&app).await;

        // Down: changes go on, the offset waits, /ready says which worker is down.
        server.kill();
        let offset_when_down = relay_offset(&app).await;
        some_changes(&app, "B").await;
        let started = Instant::now();
        loop {
            let ready = app.request(reqwest::Method::GET, "/ready", None, None, &[]).await;
            if ready.status == 503 {
                let down = ready.body["workers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|w| w["name"] == events::nats::NATS_RELAY && w["state"] == "down");
                assert!(down, "[{}] {}", app.label(), ready.body);
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "[{}] /ready never said NATS is down", app.label());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            relay_offset(&app).await,
            offset_when_down,
            "[{}] the offset moved while NATS was down",
            app.label()
        );

        // Up again (same store): everything arrives, once.
        assert!(server.restart(), "nats-server did not start again");
        some_changes(&app, "C").await;
        wait_until_published(&app).await;
        assert_stream_is_the_feed(&app, &server.url(), &s).await;
        app.shutdown().await;
    }
}
