//! `edp generate`: realistic DMS-style raw data for the six shop datasets, with known faults.
//!
//! Rows are CDC-shaped: an `Op` column (`I`, `U`, `D`), re-sent keys with later timestamps,
//! deletes of earlier keys, and DMS timestamps. Values look like a real shop's: names, streets
//! and cities with non-ASCII letters, e-mails folded to ASCII, E.164 phones, skewed order sizes,
//! popular and rare products, Luhn-valid card numbers of several brands. A fraction
//! (`fault_rate`) of rows carries one injected fault: a bad e-mail or phone, an impossible date,
//! an out-of-range amount, an unknown enum value, an orphan foreign key or a card number in free
//! text. The datasets are consistent with each other: entity counts derive from one [`World`].
//!
//! Generation is a pure function of (dataset, rows, seed, fault rate) through a SplitMix64
//! generator written here, so the same seed gives the same bytes on every machine and version of
//! the dependencies.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::datetime::format_micros;
use crate::protect::{luhn_valid, mask_card_numbers};
use crate::sink::{OutputStats, ParquetSink};
use crate::store::Location;
use crate::Result;

/// A generated dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum Dataset {
    Customers,
    Orders,
    OrderItems,
    Products,
    Inventory,
    Payments,
}

impl Dataset {
    /// All datasets, in dependency order.
    pub const ALL: [Dataset; 6] = [
        Dataset::Customers,
        Dataset::Products,
        Dataset::Inventory,
        Dataset::Orders,
        Dataset::OrderItems,
        Dataset::Payments,
    ];

    /// The dataset's name as used in contracts and keys.
    pub fn name(self) -> &'static str {
        match self {
            Dataset::Customers => "customers",
            Dataset::Orders => "orders",
            Dataset::OrderItems => "order_items",
            Dataset::Products => "products",
            Dataset::Inventory => "inventory",
            Dataset::Payments => "payments",
        }
    }
}

/// Default share of rows carrying an injected fault.
pub const DEFAULT_FAULT_RATE: f64 = 0.02;
/// Rows per generated row group.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;
/// Name of the object written under an output prefix (DMS CDC file naming).
pub const OBJECT_NAME: &str = "20250116-000000000.parquet";
const BATCH_ROWS: usize = 8192;
const WAREHOUSES: u64 = 4;
/// 2025-01-01 00:00:00 UTC in nanoseconds.
const BASE_NANOS: i128 = 1_735_689_600 * 1_000_000_000;

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct GenSpec {
    pub dataset: Dataset,
    pub rows: u64,
    pub seed: u64,
    pub fault_rate: f64,
}

/// Entity counts of one consistent shop.
#[derive(Debug, Clone, Copy)]
pub struct World {
    pub customers: u64,
    pub orders: u64,
    pub products: u64,
}

impl World {
    /// The shop in which `dataset` has about `rows` rows.
    pub fn for_rows(dataset: Dataset, rows: u64) -> World {
        let orders = match dataset {
            Dataset::Orders | Dataset::Payments => rows,
            Dataset::OrderItems => rows * 2 / 5,
            Dataset::Customers => rows * 4,
            Dataset::Products => rows * 50,
            Dataset::Inventory => rows * 50 / WAREHOUSES,
        };
        World {
            orders: orders.max(1),
            customers: (orders / 4).max(10),
            products: (orders / 50).max(20),
        }
    }
}

impl World {
    /// Rows of `dataset` in this shop (orders and payments: one per order; about 2.5 lines per
    /// order; one inventory row per product and warehouse).
    pub fn rows_of(&self, dataset: Dataset) -> u64 {
        match dataset {
            Dataset::Customers => self.customers,
            Dataset::Products => self.products,
            Dataset::Inventory => self.products * WAREHOUSES,
            Dataset::Orders | Dataset::Payments => self.orders,
            Dataset::OrderItems => self.orders * 5 / 2,
        }
    }
}

/// SplitMix64: small, fast, and stable forever.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n.max(1))) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// A stable hash of (seed, key, salt): attributes of an entity that must not change between
/// its versions.
fn stable(seed: u64, key: u64, salt: u64) -> SplitMix {
    let mut r = SplitMix::new(
        seed ^ key.wrapping_mul(0xA24B_AED4_963E_E407) ^ salt.wrapping_mul(0x9FB2_1C65_1E98_DF25),
    );
    r.next_u64();
    r
}

const FIRST: &[&str] = &[
    "José",
    "Zoë",
    "Łukasz",
    "Søren",
    "Amélie",
    "Björn",
    "Chloé",
    "Đorđe",
    "Émile",
    "François",
    "Günther",
    "Héloïse",
    "Ingrid",
    "Jürgen",
    "Kateřina",
    "Léa",
    "Małgorzata",
    "Nuño",
    "Øystein",
    "Paweł",
    "Renée",
    "Sinéad",
    "Tomás",
    "Ulrike",
    "Václav",
    "Zsófia",
    "Anna",
    "Ben",
    "Clara",
    "David",
    "Emma",
    "Felix",
    "Grace",
    "Hannah",
    "Isaac",
    "Jack",
    "Liam",
    "Mia",
    "Noah",
    "Olivia",
    "Sophia",
    "Lucas",
    "Mateo",
    "Aisha",
    "Chen",
    "Hiroshi",
    "Priya",
    "Kwame",
];
const LAST: &[&str] = &[
    "García",
    "Müller",
    "Nowak",
    "Jørgensen",
    "Dubois",
    "Łukasiewicz",
    "Öberg",
    "Novák",
    "Kovačević",
    "Szabó",
    "Çelik",
    "Nguyễn",
    "O'Brien",
    "Smith",
    "Johnson",
    "Brown",
    "Rossi",
    "Fernández",
    "Andersson",
    "Schröder",
    "Lefèvre",
    "Wiśniewski",
    "Papadopoulos",
    "Tanaka",
    "Kim",
    "Singh",
    "Okafor",
    "Silva",
    "Jansen",
    "Virtanen",
];
/// (city, street, ISO country, calling code, currency)
const PLACES: &[(&str, &str, &str, &str, &str)] = &[
    ("München", "Hauptstraße", "DE", "49", "EUR"),
    ("Kraków", "ulica Floriańska", "PL", "48", "PLN"),
    ("São Paulo", "Rua Augusta", "BR", "55", "BRL"),
    ("Zürich", "Bahnhofstrasse", "CH", "41", "CHF"),
    ("Malmö", "Södergatan", "SE", "46", "SEK"),
    ("Paris", "Rue de Rivoli", "FR", "33", "EUR"),
    ("London", "Baker Street", "GB", "44", "GBP"),
    ("New York", "Fifth Avenue", "US", "1", "USD"),
    ("Toronto", "Yonge Street", "CA", "1", "CAD"),
    ("Madrid", "Calle de Alcalá", "ES", "34", "EUR"),
    ("Amsterdam", "Prinsengracht", "NL", "31", "EUR"),
    ("Wien", "Mariahilfer Straße", "AT", "43", "EUR"),
    ("Praha", "Národní třída", "CZ", "420", "CZK"),
    ("København", "Strøget", "DK", "45", "DKK"),
    ("Dublin", "Grafton Street", "IE", "353", "EUR"),
    ("Tokyo", "Omotesandō", "JP", "81", "JPY"),
];
const DOMAINS: &[&str] = &[
    "gmail.com",
    "outlook.com",
    "yahoo.co.uk",
    "web.de",
    "gmx.ch",
    "proton.me",
    "icloud.com",
    "orange.fr",
];
const ORDER_STATUS: &[&str] = &[
    "pending",
    "paid",
    "shipped",
    "delivered",
    "cancelled",
    "refunded",
];
const TIERS: &[&str] = &["bronze", "silver", "gold", "platinum"];
const CATEGORIES: &[&str] = &[
    "electronics",
    "books",
    "home",
    "garden",
    "toys",
    "fashion",
    "beauty",
    "sports",
    "grocery",
];
const ADJECTIVES: &[&str] = &[
    "Classic", "Organic", "Smart", "Vintage", "Compact", "Deluxe", "Eco", "Nordic", "Crème",
    "Señor",
];
const NOUNS: &[&str] = &[
    "Kettle",
    "Headphones",
    "Notebook",
    "Backpack",
    "Lamp",
    "Sneakers",
    "Blender",
    "Café Mug",
    "Jacket",
    "Puzzle",
];
const METHODS: &[&str] = &["card", "paypal", "bank_transfer", "gift_card"];
const PAY_STATUS: &[&str] = &["authorized", "captured", "refunded", "failed"];
const NOTES: &[&str] = &[
    "Please leave the parcel at the door",
    "Gift for Zoë, please wrap it",
    "Call before delivery",
    "Deliver after 18:00 please",
    "Zweite Etage, bitte klingeln",
    "Entregar en recepción",
    "Fragile: contains glass",
];

fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let f = match c {
            'á' | 'à' | 'â' | 'ã' | 'å' => "a",
            'ä' | 'æ' => "ae",
            'ç' | 'č' | 'ć' => "c",
            'đ' => "d",
            'é' | 'è' | 'ê' | 'ë' | 'ě' | 'ễ' => "e",
            'í' | 'ï' => "i",
            'ł' => "l",
            'ñ' | 'ń' => "n",
            'ó' | 'ò' | 'ô' | 'õ' => "o",
            'ö' | 'ø' => "oe",
            'ř' => "r",
            'ś' | 'š' => "s",
            'ú' | 'ù' => "u",
            'ü' => "ue",
            'ý' => "y",
            'ż' | 'ź' => "z",
            'ß' => "ss",
            c if c.is_ascii_alphanumeric() => {
                out.push(c.to_ascii_lowercase());
                continue;
            }
            _ => "",
        };
        out.push_str(f);
    }
    out
}

fn email(r: &mut SplitMix, first: &str, last: &str) -> String {
    let domain = r.pick(DOMAINS);
    match r.below(3) {
        0 => format!("{}.{}@{domain}", fold(first), fold(last)),
        1 => format!(
            "{}{}{}@{domain}",
            fold(first).chars().next().unwrap_or('x'),
            fold(last),
            r.below(100)
        ),
        _ => format!(
            "{}_{}{}@{domain}",
            fold(last),
            fold(first),
            1950 + r.below(60)
        ),
    }
}

/// An E.164 phone of at most 12 digits (so it can never be mistaken for a 13+ digit card).
fn phone(r: &mut SplitMix, code: &str) -> String {
    let mut s = format!("+{code}");
    let national = 12 - code.len() - r.below(2) as usize;
    s.push(char::from(b'1' + r.below(9) as u8));
    for _ in 1..national {
        s.push(char::from(b'0' + r.below(10) as u8));
    }
    s
}

/// A Luhn-valid card number of a random major brand, formatted as people type them.
pub fn card_number(r: &mut SplitMix) -> String {
    let (prefix, len): (&str, usize) = *r.pick(&[
        ("4", 16),
        ("51", 16),
        ("55", 16),
        ("2221", 16),
        ("34", 15),
        ("37", 15),
        ("6011", 16),
        ("4", 13),
        ("35", 16),
    ]);
    let prefix = if prefix == "35" { "3530" } else { prefix };
    let mut digits: Vec<u8> = prefix.bytes().collect();
    while digits.len() < len - 1 {
        digits.push(b'0' + r.below(10) as u8);
    }
    digits.push(b'0');
    for check in b'0'..=b'9' {
        digits[len - 1] = check;
        if luhn_valid(&digits) {
            break;
        }
    }
    let plain = String::from_utf8(digits).unwrap_or_default();
    let sep = match r.below(5) {
        0 | 1 => return plain,
        2 | 3 => ' ',
        _ => '-',
    };
    let groups: &[usize] = if len == 15 {
        &[4, 6, 5]
    } else if len == 13 {
        &[4, 4, 5]
    } else {
        &[4, 4, 4, 4]
    };
    let mut out = String::with_capacity(len + 4);
    let mut pos = 0;
    for (i, g) in groups.iter().enumerate() {
        if i > 0 {
            out.push(sep);
        }
        out.push_str(&plain[pos..pos + g]);
        pos += g;
    }
    out
}

fn uuid(seed: u64, key: u64) -> String {
    let mut salt = 0;
    loop {
        let mut r = stable(seed, key, 0x5555 + salt);
        let (a, b) = (r.next_u64(), r.next_u64());
        let hex = format!(
            "{:016x}{:016x}",
            a,
            (b & 0x0fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000
        );
        let s = format!(
            "{}-{}-4{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[13..16],
            &hex[16..20],
            &hex[20..32]
        );
        // A key must never look like a card number to the free-text scan.
        if mask_card_numbers(&s).is_none() {
            return s;
        }
        salt += 1;
    }
}

fn micros(nanos: i128) -> i64 {
    (nanos / 1000) as i64
}

fn iso(nanos: i128) -> String {
    let s = format_micros(nanos);
    format!("{}T{}Z", &s[..10], &s[11..19])
}

/// A fault injected into one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    BadEmail,
    BadPhone,
    BadDate,
    OutOfRange,
    UnknownEnum,
    OrphanKey,
    CardInText,
    BadPattern,
}

/// One planned row: which entity, which CDC operation, when, which fault.
#[derive(Debug, Clone, Copy)]
struct Plan {
    key: u64,
    op: &'static str,
    time: i128,
    fault: Option<Fault>,
}

fn faults_of(d: Dataset) -> &'static [Fault] {
    use Fault::*;
    match d {
        Dataset::Customers => &[BadEmail, BadPhone, BadDate, UnknownEnum, BadPattern],
        Dataset::Orders => &[
            BadEmail,
            BadPhone,
            BadDate,
            OutOfRange,
            UnknownEnum,
            OrphanKey,
            CardInText,
        ],
        Dataset::OrderItems => &[BadDate, OutOfRange, OrphanKey],
        Dataset::Products => &[OutOfRange, UnknownEnum, BadPattern, CardInText],
        Dataset::Inventory => &[BadDate, OutOfRange, OrphanKey],
        Dataset::Payments => &[BadDate, OutOfRange, UnknownEnum, OrphanKey],
    }
}

struct Planner {
    r: SplitMix,
    next_key: u64,
    row: u64,
    spec: GenSpec,
}

impl Planner {
    fn next(&mut self) -> Plan {
        let r = &mut self.r;
        let time =
            BASE_NANOS + i128::from(self.row) * 400_000_000 + i128::from(r.below(400_000)) * 1000;
        self.row += 1;
        let roll = r.unit();
        let (key, op) = if self.next_key > 10 && roll < 0.10 {
            (1 + r.below(self.next_key - 1), "U")
        } else if self.next_key > 10 && roll < 0.11 {
            (1 + r.below(self.next_key - 1), "D")
        } else {
            self.next_key += 1;
            (self.next_key - 1, "I")
        };
        let fault = r
            .chance(self.spec.fault_rate)
            .then(|| *r.pick(faults_of(self.spec.dataset)));
        Plan {
            key,
            op,
            time,
            fault,
        }
    }
}

fn schema(d: Dataset) -> SchemaRef {
    let s = |n: &str, null: bool| Field::new(n, DataType::Utf8, null);
    let i = |n: &str| Field::new(n, DataType::Int64, false);
    let f = |n: &str, null: bool| Field::new(n, DataType::Float64, null);
    let op = s("Op", false);
    let fields = match d {
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
enum V {
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

struct Gen {
    seed: u64,
    world: World,
    dataset: Dataset,
}

impl Gen {
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

    fn row(&self, p: &Plan, r: &mut SplitMix) -> Vec<V> {
        let seed = self.seed;
        let w = &self.world;
        let fault = p.fault;
        let updated = if fault == Some(Fault::BadDate) {
            Gen::bad_date(r)
        } else {
            format_micros(p.time)
        };
        let created_nanos = BASE_NANOS - 86_400_000_000_000 * 30 + i128::from(p.key) * 200_000_000;
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
                    s(iso(created_nanos)),
                    s(updated),
                ]
            }
            Dataset::Orders => {
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
                    s(format_micros(created_nanos)),
                    s(updated),
                ]
            }
            Dataset::OrderItems => {
                let mut a = stable(seed, p.key, 3);
                let order = orphan(&mut a, w.orders);
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
                    s(updated),
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
                    V::T(micros(p.time)),
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
                    s(updated),
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
                let seq = format!("{:016}{:019}", p.time / 1_000_000_000, r.below(1_000_000));
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
                    s(format_micros(created_nanos)),
                    s(updated),
                    s(seq),
                ]
            }
        }
    }
}

fn build(schema: &SchemaRef, rows: Vec<Vec<V>>) -> Result<RecordBatch> {
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
                (Col::F(b), V::F(x)) => b.append_value(x),
                (Col::F(b), V::N) => b.append_null(),
                (Col::B(b), V::B(x)) => b.append_value(x),
                (Col::T(b), V::T(x)) => b.append_value(x),
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

/// Generates the batches of `spec`, calling `sink` with each.
pub fn batches(spec: GenSpec, mut sink: impl FnMut(RecordBatch) -> Result<()>) -> Result<()> {
    let schema = schema(spec.dataset);
    let gen = Gen {
        seed: spec.seed,
        world: World::for_rows(spec.dataset, spec.rows),
        dataset: spec.dataset,
    };
    let mut planner = Planner {
        r: SplitMix::new(spec.seed ^ (spec.dataset as u64 + 1).wrapping_mul(0xD6E8_FEB8_6659_FD93)),
        next_key: 1,
        row: 0,
        spec,
    };
    let mut values = SplitMix::new(spec.seed.rotate_left(17) ^ spec.dataset as u64);
    let mut left = spec.rows;
    while left > 0 {
        let n = left.min(BATCH_ROWS as u64) as usize;
        let rows: Vec<Vec<V>> = (0..n)
            .map(|_| gen.row(&planner.next(), &mut values))
            .collect();
        sink(build(&schema, rows)?)?;
        left -= n as u64;
    }
    Ok(())
}

/// The object `generate` writes for `out`: `out` itself when it ends in `.parquet`, else
/// `<out>/<OBJECT_NAME>`.
pub fn target(out: &Location) -> Location {
    if out.path.as_ref().ends_with(".parquet") {
        out.clone()
    } else {
        out.child(OBJECT_NAME)
    }
}

/// Generates `spec` into a Parquet object at `out` (see [`target`]).
pub async fn generate(spec: GenSpec, out: &Location) -> Result<OutputStats> {
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_created_by("edp generate".to_string())
        .build();
    let mut sink = ParquetSink::new(target(out), schema(spec.dataset), props)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<RecordBatch>(4);
    let producer = tokio::task::spawn_blocking(move || {
        batches(spec, |b| {
            tx.blocking_send(b)
                .map_err(|_| crate::Error::Internal("generator stopped".into()))
        })
    });
    while let Some(batch) = rx.recv().await {
        if let Err(e) = sink.write(&batch).await {
            sink.abort().await;
            return Err(e);
        }
    }
    match producer.await {
        Ok(Ok(())) => sink.finish().await,
        Ok(Err(e)) => {
            sink.abort().await;
            Err(e)
        }
        Err(e) => {
            sink.abort().await;
            Err(crate::Error::Internal(format!("generator panicked: {e}")))
        }
    }
}
