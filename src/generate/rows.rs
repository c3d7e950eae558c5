//! Per-dataset schemas and row builders: the values of one planned row, and a batch of rows.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::plan::{delete_columns, expected_keys, Fault, Plan};
use super::rng::{stable, SplitMix};
use super::time::{
    iso, micros, Calendar, MICRO, MINUTE, SECOND, T_AFTER, T_FIRST, T_ORDER, T_SIGNUP,
};
use super::values::{
    card_number, email, fold, phone, uuid, ADJECTIVES, CATEGORIES, FIRST, LAST, METHODS, NOTES,
    NOUNS, ORDER_STATUS, PAY_STATUS, PLACES, TIERS,
};
use super::{Dataset, GenSpec, World, SIGNUP_DAYS, WAREHOUSES};
use crate::datetime::{format_micros, NANOS_PER_DAY};
use crate::Result;

/// The regular delays of a re-send or delete after its key's first version: up to four weeks
/// (and a minute).
const REGULAR_DELAY: i128 = 28 * NANOS_PER_DAY;
/// How long after the latest regular version a key's faulty last version comes, at most.
const LATE_DELAY: i128 = 2 * NANOS_PER_DAY;

pub(super) fn schema(d: Dataset) -> SchemaRef {
    let s = |n: &str, null: bool| Field::new(n, DataType::Utf8, null);
    let i = |n: &str| Field::new(n, DataType::Int64, false);
    let f = |n: &str, null: bool| Field::new(n, DataType::Float64, null);
    let op = s("Op", false);
    let fields: Vec<Field> = match d {
        Dataset::Customers => vec![
            op,
            i("customer_id"),
            s("email", false),
            s("first_name", false),
            s("last_name", false),
            s("phone", true),
            s("street", false),
            s("city", false),
            s("postal_code", false),
            s("country", false),
            s("loyalty_tier", false),
            Field::new("marketing_opt_in", DataType::Boolean, false),
            s("created_at", false),
            s("updated_at", false),
        ],
        Dataset::Orders => vec![
            op,
            i("order_id"),
            i("customer_id"),
            s("status", false),
            f("total_amount", false),
            s("currency", false),
            s("email", false),
            s("phone", true),
            s("card_number", true),
            s("notes", true),
            s("shipping_country", false),
            s("created_at", false),
            s("updated_at", false),
        ],
        Dataset::OrderItems => vec![
            op,
            i("order_item_id"),
            i("order_id"),
            i("product_id"),
            i("quantity"),
            f("unit_price", false),
            f("discount_pct", false),
            s("updated_at", false),
        ],
        Dataset::Products => vec![
            op,
            i("product_id"),
            s("sku", false),
            s("name", false),
            s("description", true),
            s("category", false),
            f("price", false),
            f("weight_kg", true),
            Field::new("active", DataType::Boolean, false),
            Field::new(
                "updated_at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
        ],
        Dataset::Inventory => vec![
            op,
            i("product_id"),
            i("warehouse_id"),
            i("quantity_on_hand"),
            i("reorder_level"),
            s("updated_at", false),
        ],
        Dataset::Payments => vec![
            op,
            s("payment_id", false),
            i("order_id"),
            s("method", false),
            s("card_number", true),
            s("card_brand", true),
            f("amount", false),
            s("currency", false),
            s("status", false),
            s("created_at", false),
            s("updated_at", false),
            s("AR_H_CHANGE_SEQ", false),
        ],
    };
    // A key-only delete leaves every other column null.
    let keep = delete_columns(d);
    let fields: Vec<Field> = fields
        .into_iter()
        .map(|f| {
            let nullable = f.is_nullable() || !keep.contains(&f.name().as_str());
            f.with_nullable(nullable)
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// Builders for one batch, one per column, filled row by row.
enum Col {
    S(StringBuilder),
    I(Int64Builder),
    F(Float64Builder),
    B(BooleanBuilder),
    T(TimestampMicrosecondBuilder),
}

/// Column values of one row, in schema order.
pub(super) enum V {
    S(String),
    N,
    I(i64),
    F(f64),
    B(bool),
    T(i64),
}

fn s(v: impl Into<String>) -> V {
    V::S(v.into())
}

fn opt(v: Option<String>) -> V {
    v.map_or(V::N, V::S)
}

pub(super) struct Gen {
    seed: u64,
    world: World,
    dataset: Dataset,
    /// The period rows fall in, and the two years before it in which customers signed up.
    period: Calendar,
    signup: Calendar,
    /// The period's last microsecond (nanoseconds since the epoch).
    last: i128,
    /// The expected distinct keys of the generated dataset and of the shop's orders.
    keys: f64,
    order_keys: f64,
    /// Per column in schema order: whether a key-only delete carries it ([`delete_columns`]).
    kept_on_delete: Vec<bool>,
}

impl Gen {
    pub(super) fn new(spec: &GenSpec) -> Gen {
        let world = World::for_rows(spec.dataset, spec.rows);
        let first_day = spec.end_day - i64::from(spec.days) + 1;
        Gen {
            seed: spec.seed,
            world,
            dataset: spec.dataset,
            period: Calendar::new(first_day, spec.days),
            signup: Calendar::new(first_day - i64::from(SIGNUP_DAYS), SIGNUP_DAYS),
            last: i128::from(spec.end_day + 1) * NANOS_PER_DAY - MICRO,
            keys: expected_keys(spec.rows),
            order_keys: expected_keys(world.orders),
            kept_on_delete: schema(spec.dataset)
                .fields()
                .iter()
                .map(|f| delete_columns(spec.dataset).contains(&f.name().as_str()))
                .collect(),
        }
    }

    /// When key `key` of about `keys` comes in `cal`: keys spread in key order, each at a
    /// stable jitter within its share of the activity. A key beyond the expected count (one of
    /// the few more than expected, an order id of the world that no orders row has, an orphan)
    /// comes at a stable random point of the activity, so it does not distort its shape.
    fn spread(&self, cal: &Calendar, key: u64, salt: u64, keys: f64) -> i128 {
        let mut r = stable(self.seed, key, salt);
        let q = (key.saturating_sub(1) as f64 + r.unit()) / keys;
        cal.at(if q < 1.0 { q } else { r.unit() })
    }

    /// When order `order` was created (the same in every dataset of one [`World`]).
    fn order_created(&self, order: u64) -> i128 {
        self.spread(&self.period, order, T_ORDER, self.order_keys)
    }

    /// When the first version of key `key` of the generated dataset was written.
    fn first_version(&self, key: u64) -> i128 {
        self.spread(&self.period, key, T_FIRST, self.keys)
    }

    /// `order_created` plus a stable delay of `min` to `max` for entity `key` (an order line or
    /// a payment), within the period.
    fn after_order(&self, order: u64, key: u64, min: i128, max: i128) -> i128 {
        let delay = min + ((max - min) as f64 * stable(self.seed, key, T_AFTER).unit()) as i128;
        ((self.order_created(order) + delay) / MICRO * MICRO).min(self.last)
    }

    /// The time of row `p` whose key's first version is at `first`: `first` for an insert; for
    /// a re-send or delete, a minute to four weeks later (most within days: payment, shipping,
    /// delivery, refunds), or a point in the first 95% of the time between `first` and the
    /// period's end when that delay would pass it. A faulty re-send ([`Plan::latest`]) comes
    /// after all of those, up to two days after the latest of them (or in the last 5% before
    /// the period's end): it is its key's last version.
    fn version(&self, first: i128, p: &Plan) -> i128 {
        if p.op == "I" {
            return first;
        }
        let u = p.later;
        let span = (self.last - first).max(0);
        // Regular versions come at most `regular` after `first`: four weeks and a minute, or
        // 95% of the time left when that is less. A faulty re-send comes after them.
        let horizon = span / 20 * 19;
        let regular = (MINUTE + REGULAR_DELAY).min(horizon);
        let t = if p.latest {
            let room = (span - regular).min(LATE_DELAY) - MICRO;
            first + regular + MICRO + (room.max(0) as f64 * u) as i128
        } else {
            let delay = MINUTE + (u * u * u * u * REGULAR_DELAY as f64) as i128;
            if delay <= horizon {
                first + delay
            } else {
                first + (horizon as f64 * u) as i128
            }
        };
        (t / MICRO * MICRO).min(self.last)
    }

    fn bad_date(r: &mut SplitMix) -> String {
        r.pick(&[
            "2025-02-30 10:00:00",
            "16/01/2025 10:00",
            "2025-13-01 00:00:00",
            "yesterday",
            "2025-01-16 25:61:00",
        ])
        .to_string()
    }

    /// The values of row `p`: a key-only delete's columns other than [`delete_columns`] are
    /// null (its whole row is drawn all the same, so the draws of later rows do not depend on
    /// it).
    pub(super) fn row(&self, p: &Plan, r: &mut SplitMix) -> Vec<V> {
        let mut values = self.full_row(p, r);
        if p.key_only {
            for (v, &kept) in values.iter_mut().zip(&self.kept_on_delete) {
                if !kept {
                    *v = V::N;
                }
            }
        }
        values
    }

    fn full_row(&self, p: &Plan, r: &mut SplitMix) -> Vec<V> {
        let seed = self.seed;
        let w = &self.world;
        let fault = p.fault;
        // An impossible date replaces the valid `updated_at` of time `t`.
        let bad_date = (fault == Some(Fault::BadDate)).then(|| Gen::bad_date(r));
        let updated = |t: i128| bad_date.clone().unwrap_or_else(|| format_micros(t));
        let orphan = |r: &mut SplitMix, n: u64| {
            if fault == Some(Fault::OrphanKey) {
                n + 1 + r.below(1000)
            } else {
                1 + r.below(n)
            }
        };
        let op = s(p.op);
        match self.dataset {
            Dataset::Customers => {
                let mut a = stable(seed, p.key, 1);
                let (first, last) = (*a.pick(FIRST), *a.pick(LAST));
                let place = *a.pick(PLACES);
                let mut mail = email(&mut a, first, last);
                if fault == Some(Fault::BadEmail) {
                    mail = mail.replace('@', if r.chance(0.5) { "@@" } else { " at " });
                }
                let mut tel = a.chance(0.85).then(|| phone(&mut a, place.3));
                if fault == Some(Fault::BadPhone) {
                    tel = Some(format!(
                        "0{} {}",
                        100 + r.below(900),
                        100_000 + r.below(900_000)
                    ));
                }
                let tier = if fault == Some(Fault::UnknownEnum) {
                    "diamond"
                } else {
                    *r.pick(TIERS)
                };
                let country = if fault == Some(Fault::BadPattern) {
                    place.2.to_lowercase()
                } else {
                    place.2.to_string()
                };
                vec![
                    op,
                    V::I(p.key as i64),
                    s(mail),
                    s(first),
                    s(last),
                    opt(tel),
                    s(format!("{} {}", place.1, 1 + a.below(250))),
                    s(place.0),
                    s(format!("{:05}", a.below(100_000))),
                    s(country),
                    s(tier),
                    V::B(r.chance(0.4)),
                    s(iso(self.spread(&self.signup, p.key, T_SIGNUP, self.keys))),
                    s(updated(self.version(self.first_version(p.key), p))),
                ]
            }
            Dataset::Orders => {
                let created = self.order_created(p.key);
                let mut a = stable(seed, p.key, 2);
                let customer = orphan(&mut a, w.customers);
                let mut c = stable(seed, customer, 1);
                let (first, last) = (*c.pick(FIRST), *c.pick(LAST));
                let place = *c.pick(PLACES);
                let mut mail = email(&mut c, first, last);
                if fault == Some(Fault::BadEmail) {
                    mail = format!("{}@", fold(first));
                }
                let mut tel = c.chance(0.85).then(|| phone(&mut c, place.3));
                if fault == Some(Fault::BadPhone) {
                    tel = Some(format!("{}-{}", 100 + r.below(900), 1000 + r.below(9000)));
                }
                let status = if fault == Some(Fault::UnknownEnum) {
                    "on_hold"
                } else {
                    *r.pick(ORDER_STATUS)
                };
                // Skewed order sizes: most orders small, a long tail of large ones.
                let mut total = (5.0
                    + 400.0 * a.unit().powi(4) * if a.chance(0.02) { 50.0 } else { 1.0 } * 100.0)
                    .round()
                    / 100.0;
                if fault == Some(Fault::OutOfRange) {
                    total = if r.chance(0.5) { -12.5 } else { 1_250_000.0 };
                }
                let card = a.chance(0.6).then(|| card_number(&mut a));
                let notes = if fault == Some(Fault::CardInText) {
                    Some(format!(
                        "{first} says: please charge my card {} thanks",
                        card_number(r)
                    ))
                } else {
                    r.chance(0.3).then(|| r.pick(NOTES).to_string())
                };
                vec![
                    op,
                    V::I(p.key as i64),
                    V::I(customer as i64),
                    s(status),
                    V::F(total),
                    s(place.4),
                    s(mail),
                    opt(tel),
                    opt(card),
                    opt(notes),
                    s(place.2),
                    s(format_micros(created)),
                    s(updated(self.version(created, p))),
                ]
            }
            Dataset::OrderItems => {
                let mut a = stable(seed, p.key, 3);
                let order = orphan(&mut a, w.orders);
                // Written with its order, within two seconds.
                let first = self.after_order(order, p.key, 0, 2 * SECOND);
                // Popular and rare products: a steep power law over product ids.
                let product = 1 + ((w.products as f64) * a.unit().powi(3)) as u64;
                let mut quantity = 1 + (a.unit().powi(6) * 20.0) as i64;
                let mut price = (50.0 + 200_000.0 * a.unit().powi(5)).round() / 100.0;
                if fault == Some(Fault::OutOfRange) {
                    if r.chance(0.5) {
                        quantity = 0;
                    } else {
                        price = -1.0;
                    }
                }
                vec![
                    op,
                    V::I(p.key as i64),
                    V::I(order as i64),
                    V::I(product as i64),
                    V::I(quantity),
                    V::F(price),
                    V::F(*a.pick(&[0.0, 0.0, 0.0, 5.0, 10.0, 25.0])),
                    s(updated(self.version(first, p))),
                ]
            }
            Dataset::Products => {
                let mut a = stable(seed, p.key, 4);
                let name = format!("{} {}", a.pick(ADJECTIVES), a.pick(NOUNS));
                let category = if fault == Some(Fault::UnknownEnum) {
                    "weapons"
                } else {
                    *a.pick(CATEGORIES)
                };
                let sku = if fault == Some(Fault::BadPattern) {
                    format!("sku_{}", p.key)
                } else {
                    format!("SKU-{:06}", p.key % 1_000_000)
                };
                let mut price = (99.0 + 50_000.0 * a.unit().powi(3)).round() / 100.0;
                if fault == Some(Fault::OutOfRange) {
                    price = -(1.0 + r.below(100) as f64);
                }
                let description = if fault == Some(Fault::CardInText) {
                    Some(format!("Test purchase made with {}", card_number(r)))
                } else {
                    a.chance(0.8)
                        .then(|| format!("{name}: handpicked for {}", a.pick(PLACES).0))
                };
                let weight = a
                    .chance(0.9)
                    .then(|| (a.unit() * 2500.0).round() / 100.0 + 0.05);
                vec![
                    op,
                    V::I(p.key as i64),
                    s(sku),
                    s(name),
                    opt(description),
                    s(category),
                    V::F(price),
                    weight.map_or(V::N, V::F),
                    V::B(r.chance(0.9)),
                    V::T(micros(self.version(self.first_version(p.key), p))),
                ]
            }
            Dataset::Inventory => {
                let product = (p.key - 1) / WAREHOUSES + 1;
                let product = if fault == Some(Fault::OrphanKey) {
                    w.products + product
                } else {
                    product
                };
                let warehouse = (p.key - 1) % WAREHOUSES + 1;
                let mut qty = r.below(500) as i64;
                if fault == Some(Fault::OutOfRange) {
                    qty = -(1 + r.below(20) as i64);
                }
                vec![
                    op,
                    V::I(product as i64),
                    V::I(warehouse as i64),
                    V::I(qty),
                    V::I(10 + r.below(40) as i64),
                    s(updated(self.version(self.first_version(p.key), p))),
                ]
            }
            Dataset::Payments => {
                let mut a = stable(seed, p.key, 6);
                let order = orphan(&mut a, w.orders);
                let method = *a.pick(METHODS);
                let (card, brand) = if method == "card" {
                    let c = card_number(&mut a);
                    let brand = match c.as_bytes()[0] {
                        b'4' => "visa",
                        b'5' | b'2' => "mastercard",
                        b'3' if c.starts_with("35") => "jcb",
                        b'3' => "amex",
                        _ => "discover",
                    };
                    (Some(c), Some(brand.to_string()))
                } else {
                    (None, None)
                };
                let status = if fault == Some(Fault::UnknownEnum) {
                    "pending_review"
                } else {
                    *r.pick(PAY_STATUS)
                };
                let mut amount = (5.0 + 40_000.0 * a.unit().powi(4)).round() / 100.0;
                if fault == Some(Fault::OutOfRange) {
                    amount = -amount;
                }
                // Paid half a minute to ten minutes after the order was placed.
                let created = self.after_order(order, p.key, 30 * SECOND, 10 * MINUTE);
                let time = self.version(created, p);
                let seq = format!("{:016}{:019}", time / SECOND, r.below(1_000_000));
                vec![
                    op,
                    s(uuid(seed, p.key)),
                    V::I(order as i64),
                    s(method),
                    opt(card),
                    opt(brand),
                    V::F(amount),
                    s(PLACES[order as usize % PLACES.len()].4),
                    s(status),
                    s(format_micros(created)),
                    s(updated(time)),
                    s(seq),
                ]
            }
        }
    }
}

pub(super) fn build(schema: &SchemaRef, rows: Vec<Vec<V>>) -> Result<RecordBatch> {
    let n = rows.len();
    let mut cols: Vec<Col> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 => Col::S(StringBuilder::with_capacity(n, n * 16)),
            DataType::Int64 => Col::I(Int64Builder::with_capacity(n)),
            DataType::Float64 => Col::F(Float64Builder::with_capacity(n)),
            DataType::Boolean => Col::B(BooleanBuilder::with_capacity(n)),
            _ => Col::T(TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC")),
        })
        .collect();
    for row in rows {
        for (col, v) in cols.iter_mut().zip(row) {
            match (col, v) {
                (Col::S(b), V::S(x)) => b.append_value(x),
                (Col::S(b), V::N) => b.append_null(),
                (Col::I(b), V::I(x)) => b.append_value(x),
                (Col::I(b), V::N) => b.append_null(),
                (Col::F(b), V::F(x)) => b.append_value(x),
                (Col::F(b), V::N) => b.append_null(),
                (Col::B(b), V::B(x)) => b.append_value(x),
                (Col::B(b), V::N) => b.append_null(),
                (Col::T(b), V::T(x)) => b.append_value(x),
                (Col::T(b), V::N) => b.append_null(),
                _ => {
                    return Err(crate::Error::Internal(
                        "generator column/value mismatch".into(),
                    ))
                }
            }
        }
    }
    let arrays: Vec<ArrayRef> = cols
        .into_iter()
        .map(|c| -> ArrayRef {
            match c {
                Col::S(mut b) => Arc::new(b.finish()),
                Col::I(mut b) => Arc::new(b.finish()),
                Col::F(mut b) => Arc::new(b.finish()),
                Col::B(mut b) => Arc::new(b.finish()),
                Col::T(mut b) => Arc::new(b.finish()),
            }
        })
        .collect();
    Ok(RecordBatch::try_new(schema.clone(), arrays)?)
}
