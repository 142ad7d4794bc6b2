//! Property: random sequences of cart, checkout, payment, cancellation and expiry requests
//! over HTTP agree, after every step, with a simple model of orders, stock and promotion
//! uses, on every backend. One app per backend serves every case; each case has its own
//! SKUs, channel and promotion code, so cases do not see each other's stock.

use kernel::{Clock, FakeClock, SystemClock};
use proptest::prelude::*;
use reqwest::Method;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use testkit::{AppOptions, TestApp, backends, spawn_app_with};

const CASES: u32 = 48;
const STEPS_MAX: usize = 12;
const WAREHOUSES: [&str; 2] = ["MW1", "MW2"];
const SKUS: usize = 2;
/// Unit prices of a case's SKUs, in cents.
const PRICES: [i64; SKUS] = [500, 320];
/// The promotion's fixed discount off the order, in cents.
const DISCOUNT: i64 = 100;
const HOLD_TTL_SECONDS: i64 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Partial {
    Reject,
    ShipAvailable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Payment {
    /// What is still to pay.
    Full,
    /// Half of what is still to pay (all of it when that is one cent).
    Partial,
    /// One cent more than is still to pay: refused.
    Over,
    Failed,
}

#[derive(Debug, Clone)]
enum Op {
    NewCart,
    AddLine {
        cart: usize,
        sku: usize,
        quantity: i64,
    },
    ChangeLine {
        cart: usize,
        sku: usize,
        quantity: i64,
    },
    Checkout {
        cart: usize,
        partial: Partial,
        promotion: bool,
    },
    Pay {
        order: usize,
        payment: Payment,
    },
    Cancel {
        order: usize,
    },
    CancelTwice {
        order: usize,
    },
    /// The clock moves past every hold of the case; the saga worker expires what is unpaid.
    Expire,
}

#[derive(Debug, Clone)]
struct Case {
    /// Units received per SKU and warehouse.
    units: [[i64; WAREHOUSES.len()]; SKUS],
    promotion_uses: i64,
    ops: Vec<Op>,
}

/// Which cart or order an op works on, counted back from the newest: mostly the newest.
fn recent() -> impl Strategy<Value = usize> {
    prop_oneof![4 => Just(0usize), 1 => 1..3usize]
}

fn op() -> impl Strategy<Value = Op> {
    let partial = prop_oneof![Just(Partial::Reject), Just(Partial::ShipAvailable)];
    let payment = prop_oneof![3 => Just(Payment::Full), 2 => Just(Payment::Partial), 1 => Just(Payment::Over), 2 => Just(Payment::Failed)];
    prop_oneof![
        2 => Just(Op::NewCart),
        4 => (recent(), 0..SKUS, 1..4i64).prop_map(|(cart, sku, quantity)| Op::AddLine { cart, sku, quantity }),
        1 => (recent(), 0..SKUS, 1..5i64).prop_map(|(cart, sku, quantity)| Op::ChangeLine { cart, sku, quantity }),
        4 => (recent(), partial, any::<bool>()).prop_map(|(cart, partial, promotion)| Op::Checkout { cart, partial, promotion }),
        4 => (recent(), payment).prop_map(|(order, payment)| Op::Pay { order, payment }),
        2 => recent().prop_map(|order| Op::Cancel { order }),
        1 => recent().prop_map(|order| Op::CancelTwice { order }),
        1 => Just(Op::Expire),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        proptest::array::uniform2((1..7i64, 0..5i64).prop_map(|(first, second)| [first, second])),
        1..3i64,
        // A cart with a line first, so most sequences get somewhere.
        (0..SKUS, 1..4i64, proptest::collection::vec(op(), 4..STEPS_MAX - 1))
            .prop_map(|(sku, quantity, ops)| [vec![Op::NewCart, Op::AddLine { cart: 0, sku, quantity }], ops].concat()),
    )
        .prop_map(|(units, promotion_uses, ops)| Case { units, promotion_uses, ops })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    AwaitingPayment,
    Paid,
    Cancelled,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::AwaitingPayment => "awaiting_payment",
            Status::Paid => "paid",
            Status::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone)]
struct CartModel {
    id: String,
    /// In the order lines were first added.
    lines: Vec<(usize, i64)>,
    checked_out: bool,
}

#[derive(Debug, Clone)]
struct OrderModel {
    id: String,
    status: Status,
    /// Units held per SKU.
    allocated: [i64; SKUS],
    promotion: bool,
    total: i64,
    paid: i64,
    cancel_reason: Option<&'static str>,
}

/// What the shop should look like.
#[derive(Debug)]
struct Model {
    available: [i64; SKUS],
    uses_taken: i64,
    usage_limit: i64,
    carts: Vec<CartModel>,
    orders: Vec<OrderModel>,
}

fn money(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// One case's names in the shared app.
struct Names {
    case: usize,
    channel: String,
    code: String,
}

impl Names {
    fn sku(&self, i: usize) -> String {
        format!("M{}-S{i}", self.case)
    }
}

async fn seed(app: &TestApp, names: &Names, case: &Case) {
    for (i, units) in case.units.iter().enumerate() {
        let sku = names.sku(i);
        app.post("/v1/items", json!({"sku": sku, "name": sku, "weight_grams": 100})).await.expect(201);
        for (w, quantity) in units.iter().enumerate() {
            if *quantity > 0 {
                app.receive(WAREHOUSES[w], &sku, *quantity).await;
            }
        }
        let handle = format!("m{}-p{i}", names.case);
        app.post("/v1/products", json!({"handle": handle, "name": sku, "variants": [{"sku": sku, "options": {}}]}))
            .await
            .expect(201);
    }
    app.post(
        "/v1/channels",
        json!({"code": names.channel, "name": names.channel, "currency": "EUR", "country": "DE",
               "warehouses": WAREHOUSES, "sourcing": "priority", "checkout_hold_ttl_seconds": HOLD_TTL_SECONDS}),
    )
    .await
    .expect(201);
    for (i, price) in PRICES.iter().enumerate() {
        app.put_json(
            &format!("/v1/prices/{}", names.sku(i)),
            json!({"channel": names.channel, "amount": money(*price)}),
        )
        .await
        .expect(200);
    }
    app.post(
        "/v1/promotions",
        json!({"code": names.code, "channel": names.channel, "kind": "fixed", "value": money(DISCOUNT),
               "target": "order", "usage_limit": case.promotion_uses}),
    )
    .await
    .expect(201);
}

/// The shop as the server shows it, against the model: every order's status, paid amount
/// and cancel reason, every SKU's available stock, the promotion's uses.
async fn compare(app: &TestApp, names: &Names, model: &Model, step: &str) {
    for order in &model.orders {
        let got = app.get(&format!("/v1/orders/{}", order.id)).await.expect(200);
        assert_eq!(got["status"], order.status.as_str(), "[{}] after {step}: {got}", app.label());
        assert_eq!(got["totals"]["paid"], money(order.paid), "[{}] after {step}: {got}", app.label());
        assert_eq!(got["cancel_reason"].as_str(), order.cancel_reason, "[{}] after {step}: {got}", app.label());
    }
    for (i, available) in model.available.iter().enumerate() {
        let stock = app.stock(&names.sku(i)).await;
        assert_eq!(stock["available"], *available, "[{}] after {step}: {stock}", app.label());
    }
    let promotion = app.get(&format!("/v1/promotions/{}", names.code)).await.expect(200);
    assert_eq!(promotion["uses_taken"], model.uses_taken, "[{}] after {step}: {promotion}", app.label());
    for cart in &model.carts {
        let got = app.get(&format!("/v1/carts/{}", cart.id)).await.expect(200);
        let lines: Vec<(String, i64)> = got["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| (l["sku"].as_str().unwrap().to_owned(), l["quantity"].as_i64().unwrap()))
            .collect();
        let want: Vec<(String, i64)> = cart.lines.iter().map(|(s, q)| (names.sku(*s), *q)).collect();
        assert_eq!(lines, want, "[{}] after {step}: {got}", app.label());
        let status = if cart.checked_out { "checked_out" } else { "open" };
        assert_eq!(got["status"], status, "[{}] after {step}: {got}", app.label());
    }
}

/// The `i`-th newest of `len` things, wrapping around; none when there are none.
fn index_of(len: usize, i: usize) -> Option<usize> {
    if len == 0 { None } else { Some(len - 1 - i % len) }
}

fn pick<T>(items: &mut [T], i: usize) -> Option<&mut T> {
    let index = index_of(items.len(), i)?;
    items.get_mut(index)
}

async fn cancel(app: &TestApp, id: &str) -> testkit::Reply {
    app.request(Method::POST, &format!("/v1/orders/{id}/cancel"), None, Some(testkit::ADMIN_KEY), &[]).await
}

/// Gives back what an order holds.
fn release(model: &mut Model, order: usize) {
    let order = &mut model.orders[order];
    for (sku, units) in order.allocated.iter().enumerate() {
        model.available[sku] += units;
    }
    if order.promotion {
        model.uses_taken -= 1;
    }
}

/// Applies one step to the server and to the model, checking the server's answer.
/// Counts what the requests of every case answered, to show what the cases exercised.
type Tally = std::sync::Mutex<std::collections::BTreeMap<String, usize>>;

fn count(tally: &Tally, what: &str, reply: &testkit::Reply) {
    *tally.lock().unwrap().entry(format!("{what} {}", reply.status.as_u16())).or_insert(0) += 1;
}

async fn step(app: &TestApp, clock: &FakeClock, names: &Names, model: &mut Model, op: &Op, n: usize, tally: &Tally) {
    let label = app.label();
    match *op {
        Op::NewCart => {
            let cart = app
                .post("/v1/carts", json!({"channel": names.channel, "customer": format!("m{}-c{n}", names.case)}))
                .await
                .expect(201);
            model.carts.push(CartModel {
                id: cart["id"].as_str().unwrap().to_owned(),
                lines: Vec::new(),
                checked_out: false,
            });
        }
        Op::AddLine { cart, sku, quantity } | Op::ChangeLine { cart, sku, quantity } => {
            let add = matches!(op, Op::AddLine { .. });
            let available = model.available[sku];
            let Some(cart) = pick(&mut model.carts, cart) else { return };
            // The cart checks stock against the availability view, which follows the events.
            app.availability_caught_up().await;
            let reply = if add {
                app.post(&format!("/v1/carts/{}/lines", cart.id), json!({"sku": names.sku(sku), "quantity": quantity}))
                    .await
            } else {
                app.patch(&format!("/v1/carts/{}/lines/{}", cart.id, names.sku(sku)), json!({"quantity": quantity}))
                    .await
            };
            count(tally, if add { "add line" } else { "change line" }, &reply);
            let current = cart.lines.iter().position(|(s, _)| *s == sku);
            let wanted = if add { current.map(|i| cart.lines[i].1).unwrap_or(0) + quantity } else { quantity };
            if cart.checked_out {
                reply.expect_problem(409, "invalid_state");
            } else if !add && current.is_none() {
                reply.expect_problem(404, "not_found");
            } else if wanted > available {
                let problem = reply.expect_problem(409, "insufficient_stock");
                assert_eq!(problem["lines"][0]["available"], available, "[{label}] {problem}");
            } else {
                reply.expect(200);
                match current {
                    Some(i) => cart.lines[i].1 = wanted,
                    None => cart.lines.push((sku, wanted)),
                }
            }
        }
        Op::Checkout { cart, partial, promotion } => {
            let Some(cart) = pick(&mut model.carts, cart).cloned() else { return };
            let mut body = json!({"shipping_address": {"country": "DE"},
                                  "partial": if partial == Partial::Reject { "reject" } else { "ship_available" }});
            if promotion {
                body["promotion_codes"] = json!([names.code]);
            }
            let key = format!("m{}-k{n}", names.case);
            let reply = app
                .post_with(&format!("/v1/carts/{}/checkout", cart.id), body, &[("idempotency-key", key.as_str())])
                .await;
            count(tally, &format!("checkout {partial:?} promotion={promotion}"), &reply);
            let allocated: Vec<(usize, i64)> =
                cart.lines.iter().map(|(sku, quantity)| (*sku, (*quantity).min(model.available[*sku]))).collect();
            let short = cart.lines.iter().zip(&allocated).any(|((_, want), (_, got))| got < want);
            if cart.checked_out {
                reply.expect_problem(409, "invalid_state");
            } else if cart.lines.is_empty() {
                let problem = reply.expect_problem(422, "validation_failed");
                assert_eq!(problem["errors"][0]["field"], "cart", "[{label}] {problem}");
            } else if (partial == Partial::Reject && short) || allocated.iter().all(|(_, units)| *units == 0) {
                reply.expect_problem(409, "insufficient_stock");
            } else if promotion && model.uses_taken >= model.usage_limit {
                let problem = reply.expect_problem(409, "conflict");
                assert!(problem["detail"].as_str().unwrap_or("").contains("promotion_codes[0]"), "[{label}] {problem}");
            } else {
                let order = reply.expect(201);
                assert_eq!(order["status"], "awaiting_payment", "[{label}] {order}");
                let mut held = [0; SKUS];
                let mut subtotal = 0;
                for (sku, units) in &allocated {
                    held[*sku] = *units;
                    model.available[*sku] -= units;
                    subtotal += units * PRICES[*sku];
                }
                for (i, line) in order["lines"].as_array().unwrap().iter().enumerate() {
                    let (sku, quantity) = cart.lines[i];
                    assert_eq!(line["sku"], names.sku(sku), "[{label}] {order}");
                    let units: i64 =
                        line["allocated"].as_array().unwrap().iter().map(|a| a["quantity"].as_i64().unwrap()).sum();
                    assert_eq!(units, held[sku], "[{label}] {order}");
                    assert_eq!(line["cancelled"], quantity - held[sku], "[{label}] {order}");
                }
                let total = subtotal - if promotion { DISCOUNT } else { 0 };
                assert_eq!(order["totals"]["total"], money(total), "[{label}] {order}");
                if promotion {
                    model.uses_taken += 1;
                }
                model.orders.push(OrderModel {
                    id: order["id"].as_str().unwrap().to_owned(),
                    status: Status::AwaitingPayment,
                    allocated: held,
                    promotion,
                    total,
                    paid: 0,
                    cancel_reason: None,
                });
                model.carts.iter_mut().find(|c| c.id == cart.id).unwrap().checked_out = true;
            }
        }
        Op::Pay { order, payment } => {
            let Some(index) = index_of(model.orders.len(), order) else { return };
            let o = model.orders[index].clone();
            let outstanding = o.total - o.paid;
            let (status, amount) = match payment {
                Payment::Full => ("captured", outstanding),
                Payment::Partial => ("authorized", (outstanding / 2).max(1)),
                Payment::Over => ("captured", outstanding + 1),
                Payment::Failed => ("failed", outstanding.max(1)),
            };
            let body = json!({"provider": "test", "reference": format!("m{}-p{n}", names.case), "amount": money(amount), "status": status});
            let reply = app.post(&format!("/v1/orders/{}/payments", o.id), body).await;
            count(tally, &format!("pay {payment:?} {:?}", o.status), &reply);
            match (o.status, payment) {
                // A failed report for an order no longer awaiting payment may be recorded or
                // refused; either way it changes nothing the model shows.
                (Status::Paid | Status::Cancelled, Payment::Failed) => {
                    assert!(matches!(reply.status.as_u16(), 200 | 409), "[{label}] {}", reply.body)
                }
                (Status::Paid | Status::Cancelled, _) => {
                    reply.expect_problem(409, "invalid_state");
                }
                (Status::AwaitingPayment, Payment::Over) => {
                    reply.expect_problem(422, "validation_failed");
                }
                (Status::AwaitingPayment, Payment::Failed) => {
                    assert_eq!(reply.expect(200)["status"], "cancelled", "[{label}]");
                    release(model, index);
                    let o = &mut model.orders[index];
                    o.status = Status::Cancelled;
                    o.cancel_reason = Some("payment_failed");
                }
                (Status::AwaitingPayment, Payment::Full | Payment::Partial) => {
                    let answer = reply.expect(200);
                    let o = &mut model.orders[index];
                    o.paid += amount;
                    if o.paid >= o.total {
                        o.status = Status::Paid;
                    }
                    assert_eq!(answer["status"], o.status.as_str(), "[{label}] {answer}");
                }
            }
        }
        Op::Cancel { order } | Op::CancelTwice { order } => {
            let Some(index) = index_of(model.orders.len(), order) else { return };
            let times = if matches!(op, Op::CancelTwice { .. }) { 2 } else { 1 };
            for _ in 0..times {
                let reply = cancel(app, &model.orders[index].id).await;
                count(tally, "cancel", &reply);
                if model.orders[index].status == Status::Cancelled {
                    reply.expect_problem(409, "invalid_state");
                } else {
                    assert_eq!(reply.expect(200)["cancel_reason"], "requested", "[{label}]");
                    release(model, index);
                    let o = &mut model.orders[index];
                    o.status = Status::Cancelled;
                    o.cancel_reason = Some("requested");
                }
            }
        }
        Op::Expire => {
            clock.advance_seconds(HOLD_TTL_SECONDS + 1);
            let expiring: Vec<usize> =
                (0..model.orders.len()).filter(|i| model.orders[*i].status == Status::AwaitingPayment).collect();
            let started = Instant::now();
            *tally.lock().unwrap().entry("expired orders".into()).or_insert(0) += expiring.len();
            for index in expiring {
                let id = model.orders[index].id.clone();
                loop {
                    let got = app.get(&format!("/v1/orders/{id}")).await.expect(200);
                    if got["status"] == "cancelled" {
                        break;
                    }
                    assert!(
                        started.elapsed() < Duration::from_secs(10),
                        "[{label}] the saga worker never expired {got}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                release(model, index);
                let o = &mut model.orders[index];
                o.status = Status::Cancelled;
                o.cancel_reason = Some("hold_expired");
            }
        }
    }
}

#[test]
fn cart_checkout_payment_cancel_and_expiry_sequences_agree_with_the_model() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    for backend in backends() {
        let started = Instant::now();
        let clock = FakeClock::at(SystemClock.now());
        let options = AppOptions {
            clock: Arc::new(clock.clone()),
            orders: stockroom::OrderConfig { saga_interval: Duration::from_millis(20), ..Default::default() },
            ..Default::default()
        };
        let app = runtime.block_on(async {
            let app = spawn_app_with(backend, options).await;
            for code in WAREHOUSES {
                app.create_warehouse(code, 10).await;
            }
            app
        });
        let case_no = AtomicUsize::new(0);
        let tally = Tally::default();
        let config = proptest::test_runner::Config {
            cases: CASES,
            failure_persistence: None,
            max_shrink_iters: 64,
            ..Default::default()
        };
        let mut runner = proptest::test_runner::TestRunner::new(config);
        let result = runner.run(&case(), |case| {
            let n = case_no.fetch_add(1, Ordering::SeqCst);
            let names = Names { case: n, channel: format!("model-{n}"), code: format!("MODEL-{n}") };
            runtime.block_on(async {
                seed(&app, &names, &case).await;
                let mut model = Model {
                    available: case.units.map(|u| u.iter().sum()),
                    uses_taken: 0,
                    usage_limit: case.promotion_uses,
                    carts: Vec::new(),
                    orders: Vec::new(),
                };
                compare(&app, &names, &model, "seeding").await;
                for (i, op) in case.ops.iter().enumerate() {
                    step(&app, &clock, &names, &mut model, op, i, &tally).await;
                    compare(&app, &names, &model, &format!("step {i} {op:?}")).await;
                }
                app.reconcile().await;
            });
            Ok(())
        });
        runtime.block_on(app.shutdown());
        result.unwrap_or_else(|e| panic!("[{backend:?}] {e}"));
        eprintln!(
            "[{backend:?}] {CASES} cases in {:.1} s: {:?}",
            started.elapsed().as_secs_f64(),
            tally.lock().unwrap()
        );
    }
}
