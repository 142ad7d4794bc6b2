//! Crash-resume of the order sagas with the real binary, on every backend: `serve` is killed
//! with SIGKILL while sagas wait on payment and while a client fires checkouts, payments and
//! cancels, then restarted on the same database. Every saga step is its own transaction, so
//! after each restart the books must show no acknowledged order lost, every order's holds,
//! fulfilments, promotion uses and saga agreeing with its status, checkouts whose hold
//! expired while the server was down cancelled by the restarted saga worker, and a clean
//! reconciliation.

use reqwest::Method;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::{TestDatabase, backends};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const ADMIN_KEY: &str = "crash-admin-key";
/// The detail of a 503 whose request never reached the database (`api::error`).
const BUSY: &str = "the database is busy; retry";
/// The fast channel's `checkout_hold_ttl_seconds` (a channel accepts 1 and up): 4 leaves
/// room for a checkout under load on a busy machine before the kill.
const FAST_TTL_SECONDS: u64 = 4;
const WAREHOUSES: [&str; 2] = ["CW1", "CW2"];
/// Sold on the slow channel, whose holds outlast the test.
const SLOW_SKUS: [&str; 3] = ["CR-A", "CR-B", "CR-C"];
/// Sold on the fast channel, whose holds expire while the server is down.
const FAST_SKU: &str = "CR-F";
const UNITS_PER_WAREHOUSE: i64 = 30;
const SLOW_CODE: &str = "CRASH-FEW";
const SLOW_CODE_USES: i64 = 6;
/// One use: every round's first fast order takes it, and the expiry while down gives it back.
const FAST_CODE: &str = "CRASH-FAST";
const CLIENTS: usize = 6;
/// How long the client fires at the server before it is killed, per round; round 0 kills it
/// with no request in flight, while sagas only wait on payment.
const KILL_AFTER_MS: [u64; 5] = [0, 80, 300, 650, 1100];

const AWAITING: &str = "awaiting_payment";
const PAID: &str = "paid";
const CANCELLED: &str = "cancelled";

/// `stockroom serve` as a child process.
struct Server {
    child: Child,
    api: Api,
}

/// Starts `serve` on an ephemeral port and waits for its "listening on" line; its output is
/// drained by a thread so a chatty log can never block it.
fn serve(database_url: &str) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stockroom"))
        .args(["serve", "--listen", "127.0.0.1:0", "--saga-interval-ms", "100", "--sweep-interval-ms", "200"])
        .env("STOCKROOM_DATABASE_URL", database_url)
        .env("STOCKROOM_ADMIN_KEY", ADMIN_KEY)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn serve");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let url = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(i) = line.find("listening on http://") {
                    break line[i + "listening on ".len()..].trim().to_owned();
                }
                seen.push(line);
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("serve exited without the listening line: {seen:?}");
            }
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Server { child, api: Api::new(url) }
}

async fn start(database_url: &str) -> Server {
    let url = database_url.to_owned();
    tokio::task::spawn_blocking(move || serve(&url)).await.unwrap()
}

impl Server {
    /// SIGKILL: no shutdown, no flush, transactions in flight lost.
    fn kill9(mut self) {
        self.child.kill().expect("kill -9 serve");
        self.child.wait().expect("reap serve");
    }
}

#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    url: String,
}

type Answer = Result<(u16, Value), reqwest::Error>;

impl Api {
    fn new(url: String) -> Self {
        events::install_tls();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
        Self { http, url }
    }

    /// Sends a request; a 503 for a busy database (no connection to the single SQLite writer
    /// in time, so nothing was done) is retried a few times, as a client is told to.
    async fn call(&self, method: Method, path: &str, body: Option<&Value>, headers: &[(&str, &str)]) -> Answer {
        let mut attempt = 0;
        loop {
            let mut request = self.http.request(method.clone(), format!("{}{path}", self.url)).bearer_auth(ADMIN_KEY);
            if let Some(body) = body {
                request = request.json(body);
            }
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let response = request.send().await?;
            let status = response.status().as_u16();
            let bytes = response.bytes().await?;
            let answer = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            attempt += 1;
            if status == 503 && answer["detail"] == BUSY && attempt < 5 {
                tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
                continue;
            }
            return Ok((status, answer));
        }
    }

    /// The Prometheus text of `GET /metrics`.
    async fn metrics(&self) -> String {
        let response = self.http.get(format!("{}/metrics", self.url)).send().await.expect("GET /metrics");
        assert_eq!(response.status().as_u16(), 200);
        response.text().await.expect("the metrics text")
    }

    async fn post(&self, path: &str, body: &Value) -> Answer {
        self.call(Method::POST, path, Some(body), &[]).await
    }

    /// A request the server must answer with `status`.
    #[track_caller]
    fn expect(answer: Answer, status: u16, what: &str) -> Value {
        let (got, body) = answer.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(got, status, "{what}: {body}");
        body
    }

    async fn get_ok(&self, path: &str) -> Value {
        Self::expect(self.call(Method::GET, path, None, &[]).await, 200, path)
    }

    async fn post_ok(&self, path: &str, body: Value, status: u16) -> Value {
        Self::expect(self.post(path, &body).await, status, path)
    }

    async fn put_ok(&self, path: &str, body: Value) -> Value {
        Self::expect(self.call(Method::PUT, path, Some(&body), &[]).await, 200, path)
    }

    /// Every item of a paginated list.
    async fn all(&self, path: &str) -> Vec<Value> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut items = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let page = match &next {
                Some(cursor) => self.get_ok(&format!("{path}{sep}limit=1000&next={cursor}")).await,
                None => self.get_ok(&format!("{path}{sep}limit=1000")).await,
            };
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next"].as_str() {
                Some(cursor) => next = Some(cursor.to_owned()),
                None => return items,
            }
        }
    }
}

async fn seed(api: &Api) {
    for (i, code) in WAREHOUSES.iter().enumerate() {
        api.post_ok("/v1/warehouses", json!({"code": code, "name": code, "priority": 10 + i}), 201).await;
    }
    for sku in SLOW_SKUS.iter().chain([&FAST_SKU]) {
        api.post_ok("/v1/items", json!({"sku": sku, "name": sku, "weight_grams": 100}), 201).await;
        for warehouse in WAREHOUSES {
            api.post_ok(
                "/v1/receipts",
                json!({"warehouse": warehouse, "lines": [{"sku": sku, "quantity": UNITS_PER_WAREHOUSE}]}),
                201,
            )
            .await;
        }
        let handle = sku.to_lowercase();
        api.post_ok(
            "/v1/products",
            json!({"handle": handle, "name": sku, "variants": [{"sku": sku, "options": {}}]}),
            201,
        )
        .await;
    }
    for (channel, ttl) in [("crash-slow", 3600), ("crash-fast", FAST_TTL_SECONDS)] {
        api.post_ok(
            "/v1/channels",
            json!({"code": channel, "name": channel, "currency": "EUR", "country": "DE", "warehouses": WAREHOUSES,
                   "checkout_hold_ttl_seconds": ttl}),
            201,
        )
        .await;
    }
    for sku in SLOW_SKUS {
        api.put_ok(&format!("/v1/prices/{sku}"), json!({"channel": "crash-slow", "amount": "12.50"})).await;
    }
    api.put_ok(&format!("/v1/prices/{FAST_SKU}"), json!({"channel": "crash-fast", "amount": "7.00"})).await;
    for (code, channel, uses) in [(SLOW_CODE, "crash-slow", SLOW_CODE_USES), (FAST_CODE, "crash-fast", 1)] {
        api.post_ok(
            "/v1/promotions",
            json!({"code": code, "channel": channel, "kind": "fixed", "value": "1.00", "usage_limit": uses}),
            201,
        )
        .await;
    }
}

/// What the client knows of an order: the status last acknowledged, and every status it may
/// have reached through requests whose answer was lost in a crash.
#[derive(Debug, Clone)]
struct Known {
    fast: bool,
    acked: &'static str,
    possible: BTreeSet<&'static str>,
    total: String,
}

/// A checkout sent whose answer was lost: retried with the same key after the restart.
#[derive(Debug, Clone)]
struct Pending {
    cart: String,
    key: String,
    body: Value,
}

#[derive(Debug, Default)]
struct Ledger {
    orders: HashMap<String, Known>,
    /// Orders no client is working on, with a certain status.
    idle: Vec<String>,
    pending: Vec<Pending>,
    /// Carts whose checkout was sent, acknowledged or not.
    checked_out_carts: BTreeSet<String>,
    /// Round 0's orders, kept from the clients so they wait on payment through every round.
    kept_waiting: BTreeSet<String>,
}

impl Ledger {
    fn acknowledge(&mut self, order: &Value, fast: bool) -> String {
        let id = order["id"].as_str().unwrap().to_owned();
        let status = status_of(order);
        self.orders.insert(
            id.clone(),
            Known {
                fast,
                acked: status,
                possible: BTreeSet::from([status]),
                total: order["totals"]["total"].as_str().unwrap().to_owned(),
            },
        );
        if !fast && status != CANCELLED {
            self.idle.push(id.clone());
        }
        id
    }

    /// Takes an idle order in one of `statuses`, so no other client works on it meanwhile.
    fn take(&mut self, rng: &mut Rng, statuses: &[&str]) -> Option<(String, Known)> {
        let candidates: Vec<usize> =
            (0..self.idle.len()).filter(|i| statuses.contains(&self.orders[&self.idle[*i]].acked)).collect();
        if candidates.is_empty() {
            return None;
        }
        let id = self.idle.swap_remove(candidates[rng.below(candidates.len())]);
        let known = self.orders[&id].clone();
        Some((id, known))
    }
}

fn status_of(order: &Value) -> &'static str {
    match order["status"].as_str() {
        Some(AWAITING) => AWAITING,
        Some(PAID) => PAID,
        Some(CANCELLED) => CANCELLED,
        other => panic!("unexpected order status {other:?}: {order}"),
    }
}

/// xorshift: reproducible per client and round, no dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn address() -> Value {
    json!({"country": "DE", "postal_code": "10115"})
}

/// A cart with one line. `Ok(None)`: the line is short of stock.
async fn fill_cart(
    api: &Api,
    channel: &str,
    sku: &str,
    quantity: i64,
    customer: &str,
) -> Result<Option<String>, reqwest::Error> {
    let (status, cart) = api.post("/v1/carts", &json!({"channel": channel, "customer": customer})).await?;
    assert_eq!(status, 201, "cart: {cart}");
    let cart = cart["id"].as_str().unwrap().to_owned();
    let (status, body) =
        api.post(&format!("/v1/carts/{cart}/lines"), &json!({"sku": sku, "quantity": quantity})).await?;
    match (status, body["code"].as_str()) {
        (200, _) => Ok(Some(cart)),
        (409, Some("insufficient_stock")) => Ok(None),
        other => panic!("add line: {other:?} {body}"),
    }
}

/// Checks a cart out. `Ok(None)`: refused (stock or promotion uses gone). `Err`: the server
/// went away, and the checkout stays pending.
async fn check_out(
    api: &Api,
    ledger: &Mutex<Ledger>,
    cart: &str,
    fast: bool,
    code: Option<&str>,
) -> Result<Option<String>, reqwest::Error> {
    let body = match code {
        Some(code) => json!({"shipping_address": address(), "promotion_codes": [code]}),
        None => json!({"shipping_address": address()}),
    };
    let key = format!("co-{cart}");
    {
        let mut ledger = ledger.lock().unwrap();
        ledger.checked_out_carts.insert(cart.to_owned());
        ledger.pending.push(Pending { cart: cart.to_owned(), key: key.clone(), body: body.clone() });
    }
    let path = format!("/v1/carts/{cart}/checkout");
    let (status, order) = api.call(Method::POST, &path, Some(&body), &[("idempotency-key", key.as_str())]).await?;
    let mut ledger = ledger.lock().unwrap();
    ledger.pending.retain(|p| p.cart != cart);
    match (status, order["code"].as_str()) {
        (201, _) => {
            assert_eq!(order["status"], AWAITING, "{order}");
            Ok(Some(ledger.acknowledge(&order, fast)))
        }
        (409, Some("insufficient_stock" | "conflict")) => Ok(None),
        other => panic!("checkout: {other:?} {order}"),
    }
}

/// Places an order on the slow channel: a cart with one line, then a checkout.
async fn place(
    api: &Api,
    ledger: &Mutex<Ledger>,
    sku: &str,
    quantity: i64,
    code: Option<&str>,
    customer: &str,
) -> Result<Option<String>, reqwest::Error> {
    match fill_cart(api, "crash-slow", sku, quantity, customer).await? {
        Some(cart) => check_out(api, ledger, &cart, false, code).await,
        None => Ok(None),
    }
}

/// An order on the fast channel, with its one promotion use: its cart is filled first, so
/// the kill follows the checkout's commit at once, well within the hold even under load.
async fn place_fast(api: &Api, ledger: &Mutex<Ledger>, round: usize) -> Vec<String> {
    let cart = fill_cart(api, "crash-fast", FAST_SKU, 2, &format!("fast-{round}")).await.unwrap().unwrap();
    vec![check_out(api, ledger, &cart, true, Some(FAST_CODE)).await.unwrap().expect("a fast order is placed")]
}

/// One client firing checkouts, payments, failed payments and cancels until the server dies.
async fn client(api: Api, ledger: Arc<Mutex<Ledger>>, round: usize, n: usize) {
    let mut rng = Rng::new((round * 100 + n) as u64 + 7);
    for step in 0.. {
        let roll = rng.below(10);
        let outcome = async {
            if roll < 4 {
                let sku = SLOW_SKUS[rng.below(SLOW_SKUS.len())];
                let code = (rng.below(3) == 0).then_some(SLOW_CODE);
                let customer = format!("crash-{round}-{n}-{step}");
                place(&api, &ledger, sku, 1 + rng.below(2) as i64, code, &customer).await?;
                return Ok(());
            }
            let (target, statuses): (&'static str, &[&str]) = match roll {
                4..=6 => (PAID, &[AWAITING]),
                7 => ("failed", &[AWAITING]),
                _ => (CANCELLED, &[AWAITING, PAID]),
            };
            let Some((id, known)) = ledger.lock().unwrap().take(&mut rng, statuses) else { return Ok(()) };
            let reaches = if target == PAID { PAID } else { CANCELLED };
            ledger.lock().unwrap().orders.get_mut(&id).unwrap().possible.insert(reaches);
            let answer = match target {
                CANCELLED => api.call(Method::POST, &format!("/v1/orders/{id}/cancel"), None, &[]).await,
                status => {
                    let status = if status == PAID { "captured" } else { "failed" };
                    let payment = json!({"provider": "test", "reference": format!("{id}-{step}"), "amount": known.total, "status": status});
                    api.post(&format!("/v1/orders/{id}/payments"), &payment).await
                }
            };
            let (status, order) = answer?;
            assert_eq!(status, 200, "{target} {id}: {order}");
            assert_eq!(status_of(&order), reaches, "{target} {id}: {order}");
            let mut ledger = ledger.lock().unwrap();
            let known = ledger.orders.get_mut(&id).unwrap();
            known.acked = reaches;
            known.possible = BTreeSet::from([reaches]);
            if reaches != CANCELLED {
                ledger.idle.push(id);
            }
            Ok::<(), reqwest::Error>(())
        }
        .await;
        if outcome.is_err() {
            return;
        }
    }
}

fn millis(rfc3339: &str) -> i128 {
    OffsetDateTime::parse(rfc3339, &Rfc3339).unwrap_or_else(|e| panic!("{rfc3339}: {e}")).unix_timestamp_nanos()
        / 1_000_000
}

fn now_millis() -> i128 {
    OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000
}

/// After a restart: retries the checkouts whose answer was lost (a committed one must answer
/// its order), then checks that every acknowledged order is there in a status it may have
/// reached, and that no order exists that no client asked for.
async fn resync(api: &Api, ledger: &Mutex<Ledger>, label: &str) {
    let by_cart: HashMap<String, String> = api
        .all("/v1/orders")
        .await
        .iter()
        .map(|o| (o["cart"].as_str().unwrap().to_owned(), o["id"].as_str().unwrap().to_owned()))
        .collect();
    let pending = std::mem::take(&mut ledger.lock().unwrap().pending);
    for p in pending {
        let path = format!("/v1/carts/{}/checkout", p.cart);
        let answer = api.call(Method::POST, &path, Some(&p.body), &[("idempotency-key", p.key.as_str())]).await;
        let (status, order) = answer.unwrap_or_else(|e| panic!("[{label}] retry: {e}"));
        match (by_cart.get(&p.cart), status) {
            (Some(id), _) => {
                assert_eq!(status, 201, "[{label}] the retried checkout of a committed order answers it: {order}");
                assert_eq!(order["id"].as_str(), Some(id.as_str()), "[{label}] {order}");
                ledger.lock().unwrap().acknowledge(&order, false);
            }
            (None, 201) => {
                ledger.lock().unwrap().acknowledge(&order, false);
            }
            (None, 409) => {
                assert!(matches!(order["code"].as_str(), Some("insufficient_stock" | "conflict")), "[{label}] {order}")
            }
            (None, other) => panic!("[{label}] retried checkout: {other} {order}"),
        }
    }
    let orders = api.all("/v1/orders").await;
    let mut ledger = ledger.lock().unwrap();
    let present: BTreeSet<String> = orders.iter().map(|o| o["id"].as_str().unwrap().to_owned()).collect();
    for id in ledger.orders.keys() {
        assert!(present.contains(id), "[{label}] acknowledged order {id} was lost");
    }
    for order in &orders {
        let cart = order["cart"].as_str().unwrap();
        assert!(ledger.checked_out_carts.contains(cart), "[{label}] an order nobody placed: {order}");
    }
    ledger.idle.clear();
    for order in &orders {
        let id = order["id"].as_str().unwrap().to_owned();
        let status = status_of(order);
        let known = ledger.orders.get_mut(&id).unwrap_or_else(|| panic!("[{label}] unacknowledged order {id} kept"));
        // An expired fast order is cancelled by the worker whatever the client knew.
        let expired = known.fast && status == CANCELLED;
        assert!(expired || known.possible.contains(status), "[{label}] {id} is {status}, acknowledged {known:?}");
        known.acked = status;
        known.possible = BTreeSet::from([status]);
        if !known.fast && status != CANCELLED && !ledger.kept_waiting.contains(&id) {
            ledger.idle.push(id);
        }
    }
}

fn allocation_of(order: &Value) -> BTreeMap<(String, String), i64> {
    let mut allocation = BTreeMap::new();
    for line in order["lines"].as_array().unwrap() {
        for a in line["allocated"].as_array().unwrap() {
            let key = (line["sku"].as_str().unwrap().to_owned(), a["warehouse"].as_str().unwrap().to_owned());
            *allocation.entry(key).or_insert(0) += a["quantity"].as_i64().unwrap();
        }
    }
    allocation
}

/// Every order's holds, fulfilments, promotion uses and sagas against its status; stock
/// reserved and promotion uses taken against the live orders; reconciliation.
async fn check_books(api: &Api, label: &str) {
    let orders = api.all("/v1/orders").await;
    let mut reserved: BTreeMap<String, i64> = BTreeMap::new();
    let mut uses: BTreeMap<String, i64> = BTreeMap::new();
    for order in &orders {
        let id = order["id"].as_str().unwrap();
        let status = status_of(order);
        let allocation = allocation_of(order);
        assert!(!allocation.is_empty(), "[{label}] {order}");
        let reservations = api.all(&format!("/v1/reservations?reference={id}")).await;
        let mut held = BTreeMap::new();
        let want_hold = match status {
            AWAITING => "active",
            PAID => "confirmed",
            _ => "released",
        };
        for r in &reservations {
            assert_eq!(r["status"], want_hold, "[{label}] {status} order {id}: {r}");
            for l in r["lines"].as_array().unwrap() {
                let key = (l["sku"].as_str().unwrap().to_owned(), l["warehouse"].as_str().unwrap().to_owned());
                *held.entry(key).or_insert(0) += l["quantity"].as_i64().unwrap();
            }
        }
        assert_eq!(held, allocation, "[{label}] order {id}'s holds are its allocation: {reservations:?}");
        let sagas = api.all(&format!("/v1/sagas?order={id}")).await;
        let of_kind = |kind: &str| sagas.iter().filter(|s| s["kind"] == kind).cloned().collect::<Vec<_>>();
        let checkout = of_kind("checkout");
        let cancellation = of_kind("cancellation");
        assert_eq!(checkout.len(), 1, "[{label}] one checkout saga per order: {sagas:?}");
        let saga = &checkout[0];
        let was_paid = order["totals"]["paid"] != "0.00";
        let fulfillments = order["fulfillments"].as_array().unwrap();
        let promotion_status = match status {
            AWAITING => "held",
            PAID => "kept",
            _ => "released",
        };
        for p in order["promotions"].as_array().unwrap() {
            assert_eq!(p["status"], promotion_status, "[{label}] {order}");
            if status != CANCELLED {
                *uses.entry(p["code"].as_str().unwrap().to_owned()).or_insert(0) += 1;
            }
        }
        match status {
            AWAITING => {
                assert_eq!(
                    (&saga["status"], &saga["step"]),
                    (&json!("running"), &json!("await_payment")),
                    "[{label}] {saga}"
                );
                assert!(fulfillments.is_empty() && cancellation.is_empty(), "[{label}] {order} {sagas:?}");
            }
            PAID => {
                assert_eq!((&saga["status"], &saga["outcome"]), (&json!("done"), &json!("paid")), "[{label}] {saga}");
                let mut requested = BTreeMap::new();
                for f in fulfillments {
                    assert_eq!(f["status"], "requested", "[{label}] {order}");
                    for l in f["lines"].as_array().unwrap() {
                        let key = (l["sku"].as_str().unwrap().to_owned(), f["warehouse"].as_str().unwrap().to_owned());
                        *requested.entry(key).or_insert(0) += l["quantity"].as_i64().unwrap();
                    }
                }
                assert_eq!(requested, allocation, "[{label}] a paid order's fulfilments are its allocation: {order}");
                assert!(cancellation.is_empty(), "[{label}] {sagas:?}");
            }
            _ if was_paid => {
                // Cancelled after payment: the checkout saga had finished; the refund waits.
                assert_eq!(saga["outcome"], "paid", "[{label}] {saga}");
                assert_eq!(cancellation.len(), 1, "[{label}] {sagas:?}");
                assert_eq!(cancellation[0]["step"], "await_refund", "[{label}] {sagas:?}");
                assert!(fulfillments.iter().all(|f| f["status"] == "cancelled"), "[{label}] {order}");
            }
            _ => {
                assert_eq!(
                    (&saga["status"], &saga["outcome"]),
                    (&json!("done"), &json!("compensated")),
                    "[{label}] {saga}"
                );
                assert!(fulfillments.is_empty() && cancellation.is_empty(), "[{label}] {order} {sagas:?}");
            }
        }
        if status != CANCELLED {
            for ((sku, _), quantity) in allocation {
                *reserved.entry(sku).or_insert(0) += quantity;
            }
        }
    }
    for sku in SLOW_SKUS.iter().chain([&FAST_SKU]) {
        let stock = api.get_ok(&format!("/v1/stock/{sku}")).await;
        assert_eq!(stock["on_hand"], UNITS_PER_WAREHOUSE * WAREHOUSES.len() as i64, "[{label}] {stock}");
        assert_eq!(
            stock["reserved"],
            reserved.get(*sku).copied().unwrap_or(0),
            "[{label}] reserved = live orders' holds: {stock}"
        );
    }
    for code in [SLOW_CODE, FAST_CODE] {
        let promotion = api.get_ok(&format!("/v1/promotions/{code}")).await;
        assert_eq!(
            promotion["uses_taken"],
            uses.get(code).copied().unwrap_or(0),
            "[{label}] uses = orders holding {code}"
        );
    }
    let report = api.get_ok("/v1/reconciliation").await;
    assert_eq!(report["mismatches"], json!([]), "[{label}] {report}");
}

/// The fast orders of a round, placed just before the kill, expire while the server is
/// down: the restarted server's saga worker cancels them and gives their stock and use back.
async fn expect_expired_by_the_restarted_server(api: &Api, fast: &[String], killed_at: i128, label: &str) {
    let started = Instant::now();
    for id in fast {
        let order = loop {
            let order = api.get_ok(&format!("/v1/orders/{id}")).await;
            if order["status"] == CANCELLED {
                break order;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "[{label}] {id} never expired: {order}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(order["cancel_reason"], "hold_expired", "[{label}] {order}");
        assert!(
            millis(order["hold_expires_at"].as_str().unwrap()) > killed_at,
            "[{label}] the hold ran out before the kill: {order}"
        );
        let sagas = api.get_ok(&format!("/v1/sagas?order={id}")).await;
        let saga = &sagas["items"][0];
        assert_eq!(saga["outcome"], "compensated", "[{label}] {saga}");
        let compensation = saga["steps"].as_array().unwrap().last().unwrap();
        assert_eq!(compensation["name"], "release_holds", "[{label}] {saga}");
        assert!(
            millis(compensation["at"].as_str().unwrap()) > killed_at,
            "[{label}] compensated by the restarted server: {saga}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_mid_saga_the_server_resumes_and_the_books_agree() {
    for backend in backends() {
        let label = format!("{backend:?}");
        let began = Instant::now();
        let database = TestDatabase::create(backend).await;
        let mut server = start(&database.url).await;
        seed(&server.api).await;
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        for (round, kill_after) in KILL_AFTER_MS.into_iter().enumerate() {
            let label = format!("{label} round {round}");
            let api = server.api.clone();
            let clients: Vec<_> = if kill_after == 0 {
                // Sagas waiting: a few orders placed, none in flight. They are kept from the
                // clients, so they wait on payment through every round whatever the timing.
                for i in 0..6 {
                    let code = (i % 3 == 0).then_some(SLOW_CODE);
                    let sku = SLOW_SKUS[i % SLOW_SKUS.len()];
                    let id = place(&api, &ledger, sku, 1, code, &format!("wait-{i}")).await.unwrap().expect("placed");
                    let mut ledger = ledger.lock().unwrap();
                    ledger.idle.retain(|idle| *idle != id);
                    ledger.kept_waiting.insert(id);
                }
                Vec::new()
            } else {
                (0..CLIENTS).map(|n| tokio::spawn(client(api.clone(), ledger.clone(), round, n))).collect()
            };
            tokio::time::sleep(Duration::from_millis(kill_after)).await;
            let fast = place_fast(&api, &ledger, round).await;
            let killed_at = now_millis();
            server.kill9();
            for c in clients {
                c.await.unwrap();
            }
            // Down past the fast orders' hold.
            tokio::time::sleep(Duration::from_millis(FAST_TTL_SECONDS * 1000 + 200)).await;
            server = start(&database.url).await;
            resync(&server.api, &ledger, &label).await;
            expect_expired_by_the_restarted_server(&server.api, &fast, killed_at, &label).await;
            check_books(&server.api, &label).await;
        }
        // A payment reported after the restarts completes the saga of every order still awaiting one.
        let waiting: Vec<(String, Known)> = {
            let ledger = ledger.lock().unwrap();
            ledger.orders.iter().filter(|(_, k)| k.acked == AWAITING).map(|(id, k)| (id.clone(), k.clone())).collect()
        };
        assert!(
            waiting.len() >= 6,
            "[{label}] the waiting orders of round 0 survive awaiting payment: {}",
            waiting.len()
        );
        for (id, known) in &waiting {
            let payment = json!({"provider": "test", "reference": format!("{id}-late"), "amount": known.total, "status": "captured"});
            let order = server.api.post_ok(&format!("/v1/orders/{id}/payments"), payment, 200).await;
            assert_eq!(order["status"], PAID, "[{label}] {order}");
        }
        check_books(&server.api, &format!("{label} after late payments")).await;
        {
            let ledger = ledger.lock().unwrap();
            let cancelled = ledger.orders.values().filter(|k| k.acked == CANCELLED).count();
            eprintln!(
                "[{label}] {} orders ({} paid late, {cancelled} cancelled), {} rounds, {:.1} s",
                ledger.orders.len(),
                waiting.len(),
                KILL_AFTER_MS.len(),
                began.elapsed().as_secs_f64()
            );
        }
        server.kill9();
        database.drop_database().await;
    }
}

/// When the server is killed between ships: right after the last ship is answered (so the
/// progress subscriber has not yet followed them), or while ships are in flight.
const SHIP_KILLS: [Option<u64>; 3] = [None, Some(15), Some(60)];

/// Picks and packs every pending fulfilment of the warehouses, at the expected weight.
async fn pick_and_pack_all(api: &Api) -> Vec<String> {
    let mut packed = Vec::new();
    for warehouse in WAREHOUSES {
        loop {
            let (status, list) = api.post("/v1/picklists", &json!({"warehouse": warehouse})).await.unwrap();
            if status == 409 {
                break;
            }
            assert_eq!(status, 201, "pick list: {list}");
            let picked = testkit::picked_as_listed(&list);
            let id = list["id"].as_str().unwrap();
            api.post_ok(&format!("/v1/picklists/{id}/complete"), json!({"picked": picked}), 200).await;
            for fulfillment in list["fulfillments"].as_array().unwrap() {
                let fulfillment = fulfillment.as_str().unwrap();
                let now = api.get_ok(&format!("/v1/fulfillments/{fulfillment}")).await;
                let package = json!({"weight_grams": now["expected_weight_grams"], "lines": now["lines"]});
                let path = format!("/v1/fulfillments/{fulfillment}/pack");
                let done = api.post_ok(&path, json!({"packages": [package]}), 200).await;
                assert_eq!(done["status"], "packed", "{done}");
                packed.push(fulfillment.to_owned());
            }
        }
    }
    packed
}

/// Every `order.fulfilled` event of the feed, by order.
async fn fulfilled_events(api: &Api) -> BTreeMap<String, usize> {
    let mut by_order = BTreeMap::new();
    let mut after = 0;
    loop {
        let page = api.get_ok(&format!("/v1/events?after={after}&limit=1000&type=order.fulfilled")).await;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        let Some(last) = items.last() else { return by_order };
        after = last["seq"].as_i64().unwrap();
        for event in &items {
            *by_order.entry(event["data"]["order"].as_str().unwrap().to_owned()).or_default() += 1;
        }
    }
}

/// Shipping a fulfilment and moving its order to `fulfilled` are two transactions of two
/// contexts, joined by the `fulfillment.shipped` event and the order's progress subscriber.
/// `serve` is killed with SIGKILL between them (and while ships are in flight); after each
/// restart every order whose fulfilments all shipped becomes `fulfilled` exactly once, the
/// stock of every shipped fulfilment is consumed once, and the books reconcile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_between_ship_and_the_order_status_every_order_still_becomes_fulfilled_once() {
    for backend in backends() {
        let label = format!("{backend:?}");
        let database = TestDatabase::create(backend).await;
        let mut server = start(&database.url).await;
        seed(&server.api).await;
        let mut orders = Vec::new();
        for (round, kill) in SHIP_KILLS.into_iter().enumerate() {
            let label = format!("{label} round {round}");
            let api = server.api.clone();
            let mut these = Vec::new();
            for i in 0..4 {
                let customer = format!("ship-{round}-{i}");
                let cart = fill_cart(&api, "crash-slow", SLOW_SKUS[i % SLOW_SKUS.len()], 1 + i as i64 % 2, &customer)
                    .await
                    .unwrap()
                    .expect("stock for the round");
                let body = json!({"shipping_address": address()});
                let key = format!("ship-co-{cart}");
                let path = format!("/v1/carts/{cart}/checkout");
                let answer = api.call(Method::POST, &path, Some(&body), &[("idempotency-key", key.as_str())]).await;
                let order = Api::expect(answer, 201, "checkout");
                let id = order["id"].as_str().unwrap().to_owned();
                let payment = json!({"provider": "test", "reference": format!("{id}-ship"), "amount": order["totals"]["total"], "status": "captured"});
                api.post_ok(&format!("/v1/orders/{id}/payments"), payment, 200).await;
                these.push(id);
            }
            let requested: usize = {
                let mut n = 0;
                for id in &these {
                    n += api.get_ok(&format!("/v1/orders/{id}")).await["fulfillments"].as_array().unwrap().len();
                }
                n
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            while api.all("/v1/fulfillments?status=pending").await.len() < requested {
                assert!(Instant::now() < deadline, "[{label}] the intake took too long");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let packed = pick_and_pack_all(&api).await;
            assert_eq!(packed.len(), requested, "[{label}]");

            let ships: Vec<_> = packed
                .iter()
                .map(|id| {
                    let (api, id) = (api.clone(), id.clone());
                    tokio::spawn(async move {
                        api.post(&format!("/v1/fulfillments/{id}/ship"), &json!({"carrier": "dhl", "tracking": id}))
                            .await
                    })
                })
                .collect();
            match kill {
                None => {
                    for ship in ships {
                        Api::expect(ship.await.unwrap(), 200, "ship");
                    }
                    // Orders the progress subscriber (polling every 100 ms) has not followed yet:
                    // the kill lands between their ship and their status.
                    let mut unfollowed = 0;
                    for id in &these {
                        unfollowed += usize::from(api.get_ok(&format!("/v1/orders/{id}")).await["status"] == PAID);
                    }
                    eprintln!("[{label}] killed with {unfollowed} of {} shipped orders not yet fulfilled", these.len());
                    // This server picked, packed and shipped exactly this round's fulfilments.
                    let metrics = api.metrics().await;
                    for line in [
                        format!("stockroom_fulfillments_shipped_total {}", packed.len()),
                        format!("stockroom_packings_total{{result=\"ok\"}} {}", packed.len()),
                        format!("stockroom_picklist_stops_total {}", packed.len()),
                    ] {
                        assert!(metrics.lines().any(|l| l == line), "[{label}] /metrics lacks `{line}`");
                    }
                    server.kill9();
                }
                Some(after_ms) => {
                    tokio::time::sleep(Duration::from_millis(after_ms)).await;
                    server.kill9();
                    for ship in ships {
                        // Answered, refused after the kill, or lost: the restart tells.
                        let _ = ship.await.unwrap();
                    }
                }
            }
            server = start(&database.url).await;
            let api = server.api.clone();
            for id in &packed {
                let now = api.get_ok(&format!("/v1/fulfillments/{id}")).await;
                if now["status"] == "packed" {
                    api.post_ok(&format!("/v1/fulfillments/{id}/ship"), json!({"carrier": "dhl", "tracking": id}), 200)
                        .await;
                } else {
                    assert_eq!(now["status"], "shipped", "[{label}] {now}");
                }
            }
            let deadline = Instant::now() + Duration::from_secs(20);
            for id in &these {
                while api.get_ok(&format!("/v1/orders/{id}")).await["status"] != "fulfilled" {
                    assert!(Instant::now() < deadline, "[{label}] order {id} never became fulfilled");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            orders.extend(these);
            let fulfilled = fulfilled_events(&api).await;
            for id in &orders {
                assert_eq!(fulfilled.get(id), Some(&1), "[{label}] order {id}: order.fulfilled exactly once");
            }
            for sku in SLOW_SKUS {
                let stock = api.get_ok(&format!("/v1/stock/{sku}")).await;
                assert_eq!(stock["reserved"], 0, "[{label}] every hold shipped: {stock}");
            }
            let report = api.get_ok("/v1/reconciliation").await;
            assert_eq!(report["mismatches"], json!([]), "[{label}] {report}");
            eprintln!(
                "[{label}] {} fulfilments shipped across the kill, {} orders fulfilled so far",
                packed.len(),
                orders.len()
            );
        }
        server.kill9();
        database.drop_database().await;
    }
}
