//! Property: after any sequence of stock, warehouse and channel changes, the availability view
//! of every channel equals the sum over the channel's active warehouses of what a model of
//! the stock says, on every backend. The view is driven as the server drives it: the
//! follower applies the outbox, then reads go through the cache.

use catalog::AvailabilityView;
use catalog::availability::ViewSettings;
use catalog::channel::{ChannelPatch, NewChannel, Sourcing};
use kernel::{ChannelCode, Clock, Currency, Quantity, SkuCode, SystemClock, WarehouseCode};
use proptest::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;
use store::Db;

const WAREHOUSES: [&str; 3] = ["W1", "W2", "W3"];
const SKUS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    Receive {
        warehouse: usize,
        sku: usize,
        units: i64,
    },
    Remove {
        warehouse: usize,
        sku: usize,
        units: i64,
    },
    SetActive {
        warehouse: usize,
        active: bool,
    },
    SetChannelWarehouses {
        channel: usize,
        warehouses: Vec<usize>,
    },
    /// Read the view now (so the cache holds entries the next changes must invalidate).
    Read,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..3usize, 0..SKUS, 1..20i64).prop_map(|(warehouse, sku, units)| Op::Receive { warehouse, sku, units }),
        2 => (0..3usize, 0..SKUS, 1..10i64).prop_map(|(warehouse, sku, units)| Op::Remove { warehouse, sku, units }),
        1 => (0..3usize, any::<bool>()).prop_map(|(warehouse, active)| Op::SetActive { warehouse, active }),
        1 => (0..2usize, proptest::sample::subsequence(vec![0usize, 1, 2], 1..=3))
            .prop_map(|(channel, warehouses)| Op::SetChannelWarehouses { channel, warehouses }),
        2 => Just(Op::Read),
    ]
}

fn code(raw: &str) -> WarehouseCode {
    WarehouseCode::parse(raw).unwrap()
}

fn sku(case: usize, s: usize) -> SkuCode {
    SkuCode::parse(format!("C{case}-S{s}")).unwrap()
}

fn channel_code(case: usize, c: usize) -> ChannelCode {
    ChannelCode::parse(format!("c{case}-{c}")).unwrap()
}

async fn set_active(db: &Db, warehouse: usize, active: bool, now: kernel::Timestamp) {
    let mut tx = db.begin().await.unwrap();
    let patch = warehouse::site::WarehousePatch { active: Some(active), ..Default::default() };
    warehouse::site::warehouse_update(&mut tx, &code(WAREHOUSES[warehouse]), patch, now).await.unwrap();
    tx.commit().await.unwrap();
}

#[derive(Debug, Default)]
struct Model {
    on_hand: HashMap<(usize, usize), i64>,
    active: [bool; 3],
    channels: Vec<Vec<usize>>,
}

async fn check(view: &AvailabilityView, case: usize, model: &Model) {
    while view.follow().await.unwrap() > 0 {}
    for (c, channel) in model.channels.iter().enumerate() {
        let skus: Vec<SkuCode> = (0..SKUS).map(|s| sku(case, s)).collect();
        let answer = view.read(&channel_code(case, c), &skus).await.unwrap();
        assert_eq!(answer.items.len(), SKUS);
        for (s, item) in answer.items.iter().enumerate() {
            let expected: i64 = channel
                .iter()
                .filter(|w| model.active[**w])
                .map(|w| model.on_hand.get(&(*w, s)).copied().unwrap_or(0))
                .sum();
            assert_eq!(item.available, expected, "case {case} channel {c} sku {s}: {model:?}");
            assert!(!item.stale);
        }
    }
}

async fn setup(db: &Db, case: usize, model: &Model, now: kernel::Timestamp) {
    for w in 0..3 {
        set_active(db, w, true, now).await;
    }
    let mut tx = db.begin().await.unwrap();
    let mut variants = Vec::new();
    for s in 0..SKUS {
        let new =
            warehouse::item::NewItem { sku: sku(case, s), name: "item".into(), weight_grams: None, track_lots: false };
        warehouse::item::item_create(&mut tx, new, now).await.unwrap();
        variants.push(catalog::product::NewVariant {
            sku: sku(case, s),
            options: Default::default(),
            backorder: false,
        });
    }
    let product = catalog::product::NewProduct {
        handle: kernel::ProductHandle::parse(format!("p{case}")).unwrap(),
        name: "product".into(),
        description: None,
        category: None,
        attributes: Default::default(),
        variants,
    };
    catalog::product::product_create(&mut tx, product, now).await.unwrap();
    for (c, warehouses) in model.channels.iter().enumerate() {
        let new = NewChannel {
            code: channel_code(case, c),
            name: "channel".into(),
            currency: Currency::parse("EUR").unwrap(),
            country: "DE".into(),
            warehouses: warehouses.iter().map(|w| code(WAREHOUSES[*w])).collect(),
            sourcing: Sourcing::Priority,
            split_penalty_minor: 0,
            cart_hold_ttl_seconds: 0,
            checkout_hold_ttl_seconds: 900,
        };
        catalog::channel::channel_create(&mut tx, new, now).await.unwrap();
    }
    tx.commit().await.unwrap();
}

async fn apply(db: &Db, case: usize, model: &mut Model, op: Op, now: kernel::Timestamp) {
    match op {
        Op::Receive { warehouse, sku: s, units } => {
            let mut tx = db.begin().await.unwrap();
            let receipt = warehouse::receipt::Receipt {
                warehouse: code(WAREHOUSES[warehouse]),
                reference: None,
                lines: vec![warehouse::receipt::ReceiptLine {
                    sku: sku(case, s),
                    quantity: Quantity::new(units).unwrap(),
                    lot: None,
                    expires_on: None,
                    bin: None,
                }],
            };
            warehouse::receipt::receive(&mut tx, receipt, now).await.unwrap();
            tx.commit().await.unwrap();
            *model.on_hand.entry((warehouse, s)).or_default() += units;
        }
        Op::Remove { warehouse, sku: s, units } => {
            let mut tx = db.begin().await.unwrap();
            let adjustment = warehouse::adjustment::Adjustment {
                warehouse: code(WAREHOUSES[warehouse]),
                sku: sku(case, s),
                change: warehouse::adjustment::Change::Delta(-units),
                lot: None,
                reason: None,
            };
            match warehouse::adjustment::adjust(&mut tx, adjustment, now).await {
                Ok(_) => {
                    tx.commit().await.unwrap();
                    *model.on_hand.entry((warehouse, s)).or_default() -= units;
                }
                Err(_) => tx.rollback().await.unwrap(),
            }
        }
        Op::SetActive { warehouse, active } => {
            set_active(db, warehouse, active, now).await;
            model.active[warehouse] = active;
        }
        Op::SetChannelWarehouses { channel, warehouses } => {
            let mut tx = db.begin().await.unwrap();
            let patch = ChannelPatch {
                warehouses: Some(warehouses.iter().map(|w| code(WAREHOUSES[*w])).collect()),
                ..Default::default()
            };
            catalog::channel::channel_update(&mut tx, &channel_code(case, channel), patch, now).await.unwrap();
            tx.commit().await.unwrap();
            model.channels[channel] = warehouses;
        }
        Op::Read => {}
    }
}

async fn run_case(db: &Db, case: usize, ops: Vec<Op>) {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut model = Model { active: [true; 3], channels: vec![vec![0, 1], vec![1, 2]], ..Default::default() };
    setup(db, case, &model, clock.now()).await;
    let view = AvailabilityView::start(db.clone(), clock.clone(), b"test-secret", ViewSettings::default(), None)
        .await
        .unwrap();
    for op in ops {
        let read = matches!(op, Op::Read);
        apply(db, case, &mut model, op, clock.now()).await;
        if read {
            check(&view, case, &model).await;
        }
    }
    check(&view, case, &model).await;
}

#[test]
fn the_view_equals_the_sum_of_the_channels_active_warehouses() {
    testdb::property_on_each_backend(
        (64, 12),
        &[("W1", 10), ("W2", 20), ("W3", 30)],
        proptest::collection::vec(op(), 1..30),
        |runtime, db, case, ops| runtime.block_on(run_case(db, case, ops)),
    );
}
