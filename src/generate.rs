//! `edp generate`: realistic DMS-style raw data for the six shop datasets, with known faults.
//!
//! Rows are CDC-shaped: an `Op` column (`I`, `U`, `D`), re-sent keys with later timestamps,
//! deletes of earlier keys, and DMS timestamps. Half the deletes carry only the key, the event
//! time, `Op` (and the sequence column where there is one), every other column null, as DMS
//! writes a delete from PostgreSQL with the default replica identity or from MySQL with a minimal
//! row image; the others carry the whole row. Values look like a real shop's: names, streets
//! and cities with non-ASCII letters, e-mails folded to ASCII, E.164 phones, skewed order sizes,
//! popular and rare products, Luhn-valid card numbers of several brands. A fraction
//! (`fault_rate`) of rows carries one injected fault: a bad e-mail or phone, an impossible date,
//! an out-of-range amount, an unknown enum value, an orphan foreign key or a card number in free
//! text. Re-sends are three times likelier to carry a fault than inserts are
//! (inserts less likely, so the overall share stays `fault_rate`), and a faulty re-send carries a
//! fault that stage 1 rejects and is its key's last version: the key's curated row is then an
//! earlier, valid version. The datasets are consistent with each other: entity counts derive
//! from one [`World`].
//!
//! Times look like a shop's period (by default the year ending 2025-01-16): orders grow by half
//! over it, weekends are busier than weekdays, nights are quiet with peaks at lunchtime and in
//! the evening (UTC), and Black Friday, Cyber Monday and the last week before Christmas are peak
//! days. Order ids grow with `created_at`. Every later version of a key (re-send or delete) is
//! later than its first; order lines and payments follow their order; customers signed up in the
//! two years before the period, before any of their orders.
//!
//! Generation is a pure function of (dataset, rows, seed, fault rate, period) through a
//! SplitMix64 generator written here, so the same seed gives the same bytes on every machine and
//! version of the dependencies.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::datetime::{civil_from_days, format_micros, parse_date, NANOS_PER_DAY};
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
/// Default length of the generated period, in days.
pub const DEFAULT_DAYS: u32 = 365;
/// Default last day of the period (inclusive), as `--end-date` takes it: the day of
/// [`OBJECT_NAME`].
pub const DEFAULT_END_DATE: &str = "2025-01-16";
/// [`DEFAULT_END_DATE`] in days since 1970-01-01.
pub const DEFAULT_END_DAY: i64 = 20_104;
/// Longest period accepted, in days (a century).
pub const MAX_DAYS: u32 = 36_525;
/// 9999-12-31 in days since 1970-01-01: the latest end day accepted.
const LAST_END_DAY: i64 = 2_932_896;
/// Customers signed up during this many days before the period.
const SIGNUP_DAYS: u32 = 730;
/// Shares of planned rows that re-send an earlier key and that delete one.
const RESEND: f64 = 0.10;
const DELETE: f64 = 0.01;
/// Share of deletes that carry only the key, event time, op and sequence (the other columns
/// null), as DMS writes them from PostgreSQL with the default replica identity or from MySQL
/// with a minimal row image.
const KEY_ONLY_DELETE: f64 = 0.5;
/// How much likelier a re-send is to carry a fault than the requested rate: a faulty re-send is
/// its key's last version (see [`Gen::version`]) and invalid, so an earlier version of the key
/// is the one curated. Inserts carry faults less often, so that the overall rate stays the
/// requested one.
const RESEND_FAULT_BIAS: f64 = 3.0;
/// The regular delays of a re-send or delete after its key's first version: up to four weeks
/// (and a minute).
const REGULAR_DELAY: i128 = 28 * NANOS_PER_DAY;
/// How long after the latest regular version a key's faulty last version comes, at most.
const LATE_DELAY: i128 = 2 * NANOS_PER_DAY;

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct GenSpec {
    pub dataset: Dataset,
    pub rows: u64,
    pub seed: u64,
    pub fault_rate: f64,
    /// Length of the period the rows' times fall in, in days (1 to [`MAX_DAYS`]).
    pub days: u32,
    /// Last day of the period (inclusive, UTC), in days since 1970-01-01.
    pub end_day: i64,
}

/// Parses a date `YYYY-MM-DD` (as `--end-date` takes it) into days since 1970-01-01.
pub fn parse_day(s: &str) -> std::result::Result<i64, String> {
    parse_date(s).ok_or_else(|| format!("`{s}`: expected a date YYYY-MM-DD"))
}

/// Checks a period of `days` days ending on `end_day` (days since 1970-01-01): 1 to
/// [`MAX_DAYS`] days, ending by 9999-12-31, with customers' sign-ups (the two years before it)
/// after 1970-01-01.
pub fn check_period(days: u32, end_day: i64) -> std::result::Result<(), String> {
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(format!("--days {days} is not between 1 and {MAX_DAYS}"));
    }
    if end_day > LAST_END_DAY {
        return Err("--end-date is after 9999-12-31".into());
    }
    if end_day - i64::from(days) + 1 - i64::from(SIGNUP_DAYS) < 0 {
        return Err(format!(
            "a period of {days} days ending on {} starts before 1972-01-01 (customers sign up \
             in the two years before it, after 1970-01-01)",
            &format_micros(i128::from(end_day) * NANOS_PER_DAY)[..10]
        ));
    }
    Ok(())
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

/// Nanoseconds per microsecond, second, minute and hour.
const MICRO: i128 = 1_000;
const SECOND: i128 = 1_000_000_000;
const MINUTE: i128 = 60 * SECOND;
const HOUR: i128 = 3_600 * SECOND;
/// The largest `f64` below 1 that locating a quantile returns.
const BELOW_ONE: f64 = 1.0 - f64::EPSILON;
/// Growth over a period: its last day is this much busier than its first (+50%).
const GROWTH: f64 = 0.5;
/// Weights of Monday to Sunday: weekends are the busiest days.
const WEEKDAY: [f64; 7] = [1.0, 0.95, 0.95, 1.0, 1.1, 1.3, 1.25];
/// Weights of the hours of the day (UTC): quiet nights (under 3% of the day between 01:00 and
/// 06:00), a lunchtime peak and a larger evening one.
const HOURLY: [f64; 24] = [
    1.2, 0.6, 0.35, 0.25, 0.25, 0.4, 0.9, 1.6, 2.4, 3.0, 3.4, 3.9, 4.5, 4.2, 3.6, 3.4, 3.5, 3.9,
    4.4, 5.0, 5.4, 4.8, 3.4, 2.0,
];
/// Salts of the stable draws that place keys in time: orders, the first version of other
/// entities, customers' sign-ups, order lines' and payments' delays after their order.
const T_ORDER: u64 = 0x7101;
const T_FIRST: u64 = 0x7102;
const T_SIGNUP: u64 = 0x7103;
const T_AFTER: u64 = 0x7104;

/// The weekday of a day since 1970-01-01 (a Thursday), Monday being 0.
fn weekday_of(day: i64) -> usize {
    (day + 3).rem_euclid(7) as usize
}

/// The weight of a peak day, replacing its weekday's: Black Friday (the day after the fourth
/// Thursday of November) ×4, the weekend after it, Cyber Monday ×3.5, the last week of
/// Christmas shopping (15 to 22 December) ×3, 23 and 24 December ×2, a quiet Christmas Day.
fn peak(month: u32, date: u32, weekday: usize) -> Option<f64> {
    // The fourth Thursday of November is the 22nd to the 28th, so Black Friday is the Friday
    // 0 to 6 days after 23 November, and the days after it follow in the same way.
    let since_23_nov = match month {
        11 => i64::from(date) - 23,
        12 => i64::from(date) + 7,
        _ => -1,
    };
    let after_friday = (weekday as i64 + 3) % 7; // Friday 0, Saturday 1, Sunday 2, Monday 3
    if (after_friday..=after_friday + 6).contains(&since_23_nov) {
        match after_friday {
            0 => return Some(4.0),
            1 => return Some(2.5),
            2 => return Some(2.2),
            3 => return Some(3.5),
            _ => {}
        }
    }
    match (month, date) {
        (12, 15..=22) => Some(3.0),
        (12, 23 | 24) => Some(2.0),
        (12, 25) => Some(0.6),
        _ => None,
    }
}

/// The relative activity of `day` (days since 1970-01-01), `i` days into a period of `n`:
/// linear growth by [`GROWTH`] over the period times the weekday's or the peak day's weight.
fn day_weight(day: i64, i: u32, n: u32) -> f64 {
    let growth = 1.0 + GROWTH * f64::from(i) / f64::from(n.saturating_sub(1).max(1));
    let (_, month, date) = civil_from_days(day);
    let weekday = weekday_of(day);
    growth * peak(month, date, weekday).unwrap_or(WEEKDAY[weekday])
}

/// The inverse of a cumulative distribution over buckets of positive weights, with a guide
/// table (Chen and Asau) so that a lookup takes one or two steps.
struct Cdf {
    /// `cum[i]`: the share of buckets `0..=i`; the last is 1.
    cum: Vec<f64>,
    /// `guide[j]`: the first bucket whose `cum` exceeds `j / guide.len()`.
    guide: Vec<u32>,
}

impl Cdf {
    /// `weights` must be non-empty and positive.
    fn new(weights: &[f64]) -> Cdf {
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let mut cum: Vec<f64> = weights
            .iter()
            .map(|w| {
                acc += w;
                acc / total
            })
            .collect();
        if let Some(last) = cum.last_mut() {
            *last = 1.0;
        }
        let n = cum.len();
        let mut guide = Vec::with_capacity(n);
        let mut i = 0;
        for j in 0..n {
            while i + 1 < n && cum[i] <= j as f64 / n as f64 {
                i += 1;
            }
            guide.push(i as u32);
        }
        Cdf { cum, guide }
    }

    /// The bucket holding quantile `q` (in `[0, 1)`) and where in the bucket `q` falls, in
    /// `[0, 1)`: monotonic in `q`.
    fn locate(&self, q: f64) -> (usize, f64) {
        let n = self.cum.len();
        let mut i = self.guide[((q * n as f64) as usize).min(n - 1)] as usize;
        while i + 1 < n && self.cum[i] <= q {
            i += 1;
        }
        let lo = if i == 0 { 0.0 } else { self.cum[i - 1] };
        let within = (q - lo) / (self.cum[i] - lo);
        (i, within.clamp(0.0, BELOW_ONE))
    }
}

/// A period of whole UTC days and how a shop's activity spreads over it: per-day weights
/// ([`day_weight`]: growth, weekday, peak days), then per-hour weights within a day
/// ([`HOURLY`]), then uniform within the hour.
struct Calendar {
    first_day: i64,
    days: Cdf,
    hours: Cdf,
}

impl Calendar {
    /// The `days` days (at least one) from `first_day` (days since 1970-01-01).
    fn new(first_day: i64, days: u32) -> Calendar {
        let weights: Vec<f64> = (0..days.max(1))
            .map(|i| day_weight(first_day + i64::from(i), i, days))
            .collect();
        Calendar {
            first_day,
            days: Cdf::new(&weights),
            hours: Cdf::new(&HOURLY),
        }
    }

    /// The instant (nanoseconds since the epoch, whole microseconds) at quantile `q` (in
    /// `[0, 1)`) of the period's activity. Monotonic in `q`, so keys spread in key order are
    /// in time order.
    fn at(&self, q: f64) -> i128 {
        let (day, q) = self.days.locate(q);
        let (hour, q) = self.hours.locate(q);
        let micros = (q * 3_600_000_000.0) as i128;
        (i128::from(self.first_day) + day as i128) * NANOS_PER_DAY
            + hour as i128 * HOUR
            + micros * MICRO
    }
}

/// The expected number of distinct keys among `rows` planned rows: the first ten are new
/// keys, then all but the re-sends and deletes (see [`Planner::next`]).
fn expected_keys(rows: u64) -> f64 {
    let first = rows.min(10) as f64;
    (first + rows.saturating_sub(10) as f64 * (1.0 - RESEND - DELETE)).max(1.0)
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

/// One planned row: which entity, which CDC operation, which fault, and where a re-send or
/// delete falls after its key's first version (in `[0, 1)`, see [`Gen::version`]).
#[derive(Debug, Clone, Copy)]
struct Plan {
    key: u64,
    op: &'static str,
    later: f64,
    fault: Option<Fault>,
    /// A delete that carries only the key, event time, op and sequence (see
    /// [`delete_columns`]).
    key_only: bool,
    /// A faulty re-send: its key's last version, after every other one.
    latest: bool,
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

/// The faults of a faulty re-send, its key's last version: those stage 1 rejects on a column
/// other than the event time (an orphan key is the foreign-key stage's, a card in free text is
/// masked, and an impossible event time would not be the latest).
fn latest_faults_of(d: Dataset) -> &'static [Fault] {
    use Fault::*;
    match d {
        Dataset::Customers => &[BadEmail, BadPhone, UnknownEnum, BadPattern],
        Dataset::Orders => &[BadEmail, BadPhone, OutOfRange, UnknownEnum],
        Dataset::OrderItems | Dataset::Inventory => &[OutOfRange],
        Dataset::Products => &[OutOfRange, UnknownEnum, BadPattern],
        Dataset::Payments => &[OutOfRange, UnknownEnum],
    }
}

/// The columns a key-only delete carries: the CDC op, the primary key, the event time and the
/// sequence (the columns a contract checks on a delete). Every other column may be null, in
/// the schema too.
fn delete_columns(d: Dataset) -> &'static [&'static str] {
    match d {
        Dataset::Customers => &["Op", "customer_id", "updated_at"],
        Dataset::Orders => &["Op", "order_id", "updated_at"],
        Dataset::OrderItems => &["Op", "order_item_id", "updated_at"],
        Dataset::Products => &["Op", "product_id", "updated_at"],
        Dataset::Inventory => &["Op", "product_id", "warehouse_id", "updated_at"],
        Dataset::Payments => &["Op", "payment_id", "updated_at", "AR_H_CHANGE_SEQ"],
    }
}

struct Planner {
    r: SplitMix,
    next_key: u64,
    spec: GenSpec,
    /// Fault rates of re-sends ([`RESEND_FAULT_BIAS`] times the requested rate, at most 1) and
    /// of inserts after the first ten rows (what keeps the overall rate the requested one;
    /// deletes and the first ten rows have the requested rate).
    resend_fault_rate: f64,
    insert_fault_rate: f64,
}

impl Planner {
    fn new(spec: GenSpec) -> Planner {
        let f = spec.fault_rate;
        let resend_fault_rate = (RESEND_FAULT_BIAS * f).min(1.0);
        let insert_fault_rate = ((f - RESEND * resend_fault_rate - DELETE * f)
            / (1.0 - RESEND - DELETE))
            .clamp(0.0, 1.0);
        Planner {
            r: SplitMix::new(
                spec.seed ^ (spec.dataset as u64 + 1).wrapping_mul(0xD6E8_FEB8_6659_FD93),
            ),
            next_key: 1,
            spec,
            resend_fault_rate,
            insert_fault_rate,
        }
    }

    /// The next row: after ten new keys, [`RESEND`] of the rows re-send an earlier key and
    /// [`DELETE`] delete one, [`KEY_ONLY_DELETE`] of the deletes with only their key.
    fn next(&mut self) -> Plan {
        let r = &mut self.r;
        let later = r.unit();
        let roll = r.unit();
        let warm = self.next_key > 10;
        let (key, op) = if warm && roll < RESEND {
            (1 + r.below(self.next_key - 1), "U")
        } else if warm && roll < RESEND + DELETE {
            (1 + r.below(self.next_key - 1), "D")
        } else {
            self.next_key += 1;
            (self.next_key - 1, "I")
        };
        let key_only = op == "D" && r.chance(KEY_ONLY_DELETE);
        let dataset = self.spec.dataset;
        let (rate, kinds) = match op {
            "U" => (self.resend_fault_rate, latest_faults_of(dataset)),
            "I" if warm => (self.insert_fault_rate, faults_of(dataset)),
            _ => (self.spec.fault_rate, faults_of(dataset)),
        };
        let fault = r.chance(rate).then(|| *r.pick(kinds));
        Plan {
            key,
            op,
            later,
            fault,
            key_only,
            latest: op == "U" && fault.is_some(),
        }
    }
}

fn schema(d: Dataset) -> SchemaRef {
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
    fn new(spec: &GenSpec) -> Gen {
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
    fn row(&self, p: &Plan, r: &mut SplitMix) -> Vec<V> {
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

/// Generates the batches of `spec`, calling `sink` with each.
pub fn batches(spec: GenSpec, mut sink: impl FnMut(RecordBatch) -> Result<()>) -> Result<()> {
    check_period(spec.days, spec.end_day).map_err(crate::Error::Config)?;
    let schema = schema(spec.dataset);
    let gen = Gen::new(&spec);
    let mut planner = Planner::new(spec);
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

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, Int64Type};

    use super::*;
    use crate::datetime::{days_from_civil, is_email, is_phone, parse_datetime};

    fn spec(dataset: Dataset, rows: u64) -> GenSpec {
        GenSpec {
            dataset,
            rows,
            seed: 7,
            fault_rate: 0.0,
            days: DEFAULT_DAYS,
            end_day: DEFAULT_END_DAY,
        }
    }

    fn generated(spec: GenSpec) -> Vec<RecordBatch> {
        let mut out = Vec::new();
        batches(spec, |b| {
            out.push(b);
            Ok(())
        })
        .unwrap();
        out
    }

    /// A string column, a null as the empty string.
    fn strings(batches: &[RecordBatch], name: &str) -> Vec<String> {
        batches
            .iter()
            .flat_map(|b| {
                let a = b.column_by_name(name).unwrap().as_string::<i32>();
                (0..a.len())
                    .map(|i| a.value(i).to_string())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn ints(batches: &[RecordBatch], name: &str) -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| {
                let a = b.column_by_name(name).unwrap().as_primitive::<Int64Type>();
                a.values().to_vec()
            })
            .collect()
    }

    fn floats(batches: &[RecordBatch], name: &str) -> Vec<f64> {
        batches
            .iter()
            .flat_map(|b| {
                let a = b
                    .column_by_name(name)
                    .unwrap()
                    .as_primitive::<Float64Type>();
                a.values().to_vec()
            })
            .collect()
    }

    /// Whether each value of a column is null.
    fn nulls(batches: &[RecordBatch], name: &str) -> Vec<bool> {
        batches
            .iter()
            .flat_map(|b| {
                let a = b.column_by_name(name).unwrap();
                (0..a.len()).map(|i| a.is_null(i)).collect::<Vec<_>>()
            })
            .collect()
    }

    fn nanos(s: &str) -> i128 {
        parse_datetime(s).unwrap_or_else(|| panic!("{s}"))
    }

    #[test]
    fn the_default_period_and_its_checks() {
        assert_eq!(parse_day(DEFAULT_END_DATE), Ok(DEFAULT_END_DAY));
        assert_eq!(LAST_END_DAY, days_from_civil(9999, 12, 31));
        assert!(parse_day("2025-02-30").is_err());
        assert!(parse_day("16/01/2025").is_err());
        assert!(check_period(DEFAULT_DAYS, DEFAULT_END_DAY).is_ok());
        assert!(check_period(1, DEFAULT_END_DAY).is_ok());
        assert!(check_period(0, DEFAULT_END_DAY).is_err());
        assert!(check_period(MAX_DAYS + 1, DEFAULT_END_DAY).is_err());
        assert!(check_period(1, LAST_END_DAY).is_ok());
        assert!(check_period(1, LAST_END_DAY + 1).is_err());
        // Customers sign up in the two years before the period: it starts on 1972-01-01 or later.
        let first_1972 = days_from_civil(1972, 1, 1);
        assert!(check_period(10, first_1972 + 9).is_ok());
        assert!(check_period(10, first_1972 + 8).is_err());
        let spec = GenSpec {
            days: 0,
            ..spec(Dataset::Orders, 10)
        };
        let err = batches(spec, |_| Ok(())).unwrap_err();
        assert!(matches!(err, crate::Error::Config(_)), "{err}");
    }

    #[test]
    fn peak_days_fall_on_their_dates() {
        let weight = |y, m, d| {
            let day = days_from_civil(y, m, d);
            peak(m, d, weekday_of(day))
        };
        // Black Friday, then its weekend and Cyber Monday, in three years.
        for (y, m, d) in [(2023, 11, 24), (2024, 11, 29), (2025, 11, 28)] {
            assert_eq!(weight(y, m, d), Some(4.0), "{y}-{m}-{d}");
        }
        assert_eq!(weight(2024, 11, 30), Some(2.5));
        assert_eq!(weight(2024, 12, 1), Some(2.2));
        for (y, m, d) in [(2023, 11, 27), (2024, 12, 2), (2025, 12, 1)] {
            assert_eq!(weight(y, m, d), Some(3.5), "{y}-{m}-{d}");
        }
        // The Friday a week earlier and the Thursday (Thanksgiving) are ordinary days.
        assert_eq!(weight(2024, 11, 22), None);
        assert_eq!(weight(2024, 11, 28), None);
        assert_eq!(weight(2024, 12, 9), None);
        assert_eq!(weight(2024, 12, 18), Some(3.0));
        assert_eq!(weight(2024, 12, 25), Some(0.6));
        assert_eq!(weight(2024, 7, 5), None);
        // 2025-01-16 was a Thursday.
        assert_eq!(weekday_of(DEFAULT_END_DAY), 3);
    }

    #[test]
    fn inverse_cdf_is_monotonic_and_exact_at_bucket_edges() {
        let cdf = Cdf::new(&[1.0, 3.0, 0.5, 0.5]);
        assert_eq!(cdf.locate(0.0), (0, 0.0));
        assert_eq!(cdf.locate(0.2), (1, 0.0));
        assert_eq!(cdf.locate(0.8), (2, 0.0));
        assert_eq!(cdf.locate(0.95).0, 3);
        assert!(cdf.locate(BELOW_ONE).1 < 1.0);
        let cal = Calendar::new(DEFAULT_END_DAY - 364, 365);
        let mut last = i128::MIN;
        for i in 0..10_000 {
            let t = cal.at(f64::from(i) / 10_000.0);
            assert!(t >= last);
            last = t;
        }
        assert!(last < i128::from(DEFAULT_END_DAY + 1) * NANOS_PER_DAY);
    }

    #[test]
    fn orders_spread_over_a_shops_year() {
        let batches = generated(spec(Dataset::Orders, 20_000));
        let op = strings(&batches, "Op");
        let ids = ints(&batches, "order_id");
        let created = strings(&batches, "created_at");
        let updated = strings(&batches, "updated_at");
        let first = DEFAULT_END_DAY - i64::from(DEFAULT_DAYS) + 1;
        let mut per_day: BTreeMap<i64, u64> = BTreeMap::new();
        let (mut night, mut orders) = (0u32, 0u32);
        let mut first_version: HashMap<i64, i128> = HashMap::new();
        for (r, op) in op.iter().enumerate() {
            let (created, updated) = (&created[r], &updated[r]);
            let u = nanos(updated);
            // Only a key-only delete lacks created_at.
            if created.is_empty() {
                assert_eq!(op, "D", "row {r}");
                assert!(u > first_version[&ids[r]], "row {r}: {updated} too early");
                continue;
            }
            let c = nanos(created);
            assert!(
                u >= c,
                "row {r}: updated_at {updated} < created_at {created}"
            );
            if op != "I" {
                // Re-sends and deletes come after the key's first version.
                assert!(u > first_version[&ids[r]], "row {r}: {updated} too early");
                continue;
            }
            assert_eq!(u, c, "an order's first version is its creation");
            first_version.insert(ids[r], u);
            orders += 1;
            let day = parse_date(&created[..10]).unwrap();
            assert!((first..=DEFAULT_END_DAY).contains(&day), "{created}");
            *per_day.entry(day).or_default() += 1;
            let hour: u32 = created[11..13].parse().unwrap();
            night += u32::from((1..=5).contains(&hour));
        }
        assert!(
            per_day.len() >= 300,
            "orders on only {} days",
            per_day.len()
        );
        // Nights (01:00 to 05:59 UTC) are quiet.
        assert!(
            f64::from(night) < 0.10 * f64::from(orders),
            "{night} of {orders}"
        );
        // Weekends are busier than weekdays, per day (2025-01-11 was a Saturday).
        let saturday = days_from_civil(2025, 1, 11);
        let (mut weekend, mut weekday) = ((0, 0), (0, 0));
        for day in first..=DEFAULT_END_DAY {
            let n = per_day.get(&day).copied().unwrap_or(0);
            let slot = if (day - saturday).rem_euclid(7) < 2 {
                &mut weekend
            } else {
                &mut weekday
            };
            slot.0 += n;
            slot.1 += 1;
        }
        let avg = |(n, days): (u64, u64)| n as f64 / days as f64;
        assert!(avg(weekend) > avg(weekday), "{weekend:?} {weekday:?}");
        // Growth: days 200 to 289 (before the peak season) are busier than the first 90.
        let span = |from: i64, to: i64| -> u64 {
            per_day.range(first + from..first + to).map(|e| e.1).sum()
        };
        let (early, late) = (span(0, 90), span(200, 290));
        assert!(late as f64 > 1.1 * early as f64, "{early} then {late}");
        // The busiest day is Black Friday.
        let busiest = per_day.iter().max_by_key(|e| *e.1).unwrap();
        assert_eq!(*busiest.0, days_from_civil(2024, 11, 29), "{per_day:?}");
        // Order ids grow with created_at (but for ids beyond the expected count).
        let mut by_id: Vec<(i64, i128)> = first_version.into_iter().collect();
        by_id.sort_unstable();
        let in_order = by_id.windows(2).filter(|w| w[0].1 <= w[1].1).count();
        assert!(in_order as f64 > 0.99 * (by_id.len() - 1) as f64);
    }

    #[test]
    fn lines_payments_and_customers_fit_their_orders_in_time() {
        let world = World::for_rows(Dataset::Orders, 4_000);
        let of = |d: Dataset| generated(spec(d, world.rows_of(d)));
        let orders = of(Dataset::Orders);
        // Key-only deletes have no created_at.
        let created: HashMap<i64, i128> = ints(&orders, "order_id")
            .into_iter()
            .zip(strings(&orders, "created_at"))
            .filter(|(_, c)| !c.is_empty())
            .map(|(k, c)| (k, nanos(&c)))
            .collect();
        let placed: Vec<i128> = created.values().copied().collect();
        let period_start = *placed.iter().min().unwrap();
        let period_end = *placed.iter().max().unwrap();

        let payments = of(Dataset::Payments);
        let pay_created = strings(&payments, "created_at");
        let pay_updated = strings(&payments, "updated_at");
        // The period's last microsecond: a payment of an order just before it is clamped to it.
        let last = i128::from(DEFAULT_END_DAY + 1) * NANOS_PER_DAY - MICRO;
        let mut matched = 0;
        for (r, order) in ints(&payments, "order_id").into_iter().enumerate() {
            if pay_created[r].is_empty() {
                continue; // a key-only delete
            }
            let (c, u) = (nanos(&pay_created[r]), nanos(&pay_updated[r]));
            assert!(u >= c, "payment row {r}");
            if let Some(&o) = created.get(&order) {
                matched += 1;
                let soon = (o + 30 * SECOND).min(last);
                assert!((soon..=o + 10 * MINUTE).contains(&c), "payment row {r}");
            }
        }
        assert!(matched > payments.iter().map(|b| b.num_rows()).sum::<usize>() * 4 / 5);

        let items = of(Dataset::OrderItems);
        let item_updated = strings(&items, "updated_at");
        let item_key_only = nulls(&items, "order_id");
        for (r, order) in ints(&items, "order_id").into_iter().enumerate() {
            if item_key_only[r] {
                continue; // a key-only delete
            }
            if let Some(&o) = created.get(&order) {
                assert!(nanos(&item_updated[r]) >= o, "order_items row {r}");
            }
        }

        // Customers signed up before the period, so before any of their orders.
        let customers = of(Dataset::Customers);
        let start = i128::from(DEFAULT_END_DAY - i64::from(DEFAULT_DAYS) + 1) * NANOS_PER_DAY;
        assert!(period_start >= start && period_end < start + 365 * NANOS_PER_DAY);
        let signed_up = strings(&customers, "created_at");
        let cust_updated = strings(&customers, "updated_at");
        for (created, updated) in signed_up.iter().zip(&cust_updated) {
            assert!(nanos(updated) >= start, "{updated}");
            if created.is_empty() {
                continue; // a key-only delete
            }
            let c = nanos(created);
            assert!(
                (start - 730 * NANOS_PER_DAY..start).contains(&c),
                "{created}"
            );
        }
    }

    #[test]
    fn another_period_moves_every_time_into_it() {
        let end = days_from_civil(2024, 6, 30);
        let a = GenSpec {
            days: 30,
            end_day: end,
            ..spec(Dataset::Payments, 3_000)
        };
        let batches = generated(a);
        let lo = i128::from(end - 29) * NANOS_PER_DAY;
        let hi = i128::from(end + 1) * NANOS_PER_DAY;
        for col in ["created_at", "updated_at"] {
            // Key-only deletes have no created_at.
            for s in strings(&batches, col).into_iter().filter(|s| !s.is_empty()) {
                assert!((lo..hi).contains(&nanos(&s)), "{col} {s}");
            }
        }
        // Deterministic: the same spec gives the same rows.
        let again = generated(a);
        for col in ["updated_at", "AR_H_CHANGE_SEQ"] {
            assert_eq!(strings(&batches, col), strings(&again, col), "{col}");
        }
    }

    #[test]
    fn faults_keep_their_rate_and_favour_re_sends() {
        let n = 200_000u32;
        for f in [0.0, 0.02, 0.05, 0.3, 1.0] {
            let mut planner = Planner::new(GenSpec {
                fault_rate: f,
                ..spec(Dataset::Orders, u64::from(n))
            });
            let (mut faults, mut resends, mut faulty_resends) = (0u32, 0u32, 0u32);
            let (mut deletes, mut key_only) = (0u32, 0u32);
            for _ in 0..n {
                let p = planner.next();
                faults += u32::from(p.fault.is_some());
                match p.op {
                    "U" => {
                        resends += 1;
                        faulty_resends += u32::from(p.latest);
                        assert_eq!(p.latest, p.fault.is_some());
                        if let Some(fault) = p.fault {
                            assert!(
                                latest_faults_of(Dataset::Orders).contains(&fault),
                                "{fault:?}"
                            );
                        }
                    }
                    "D" => {
                        deletes += 1;
                        key_only += u32::from(p.key_only);
                        assert!(!p.latest);
                    }
                    _ => assert!(!p.latest && !p.key_only),
                }
            }
            let share = |a: u32, b: u32| f64::from(a) / f64::from(b.max(1));
            assert!(
                (share(faults, n) - f).abs() < 0.005,
                "{f}: {faults} faults in {n} rows"
            );
            let resend_rate = (RESEND_FAULT_BIAS * f).min(1.0);
            assert!(
                (share(faulty_resends, resends) - resend_rate).abs() < 0.02,
                "{f}: {faulty_resends} of {resends} re-sends faulty"
            );
            assert!(
                (share(key_only, deletes) - KEY_ONLY_DELETE).abs() < 0.05,
                "{key_only} of {deletes} deletes key-only"
            );
        }
    }

    #[test]
    fn deletes_with_only_their_key_and_invalid_last_versions() {
        let rows = 20_000;
        let batches = generated(GenSpec {
            fault_rate: 0.05,
            ..spec(Dataset::Orders, rows)
        });
        let kept = delete_columns(Dataset::Orders);
        let optional = ["phone", "card_number", "notes"];
        let columns: Vec<(String, Vec<bool>)> = schema(Dataset::Orders)
            .fields()
            .iter()
            .map(|f| (f.name().clone(), nulls(&batches, f.name())))
            .collect();
        let op = strings(&batches, "Op");
        let (mut deletes, mut key_only) = (0u32, 0u32);
        for (r, op) in op.iter().enumerate() {
            let mut others = columns
                .iter()
                .filter(|(name, _)| !kept.contains(&name.as_str()));
            for (name, null) in columns.iter().filter(|(n, _)| kept.contains(&n.as_str())) {
                assert!(!null[r], "row {r}: {name} is null");
            }
            deletes += u32::from(op == "D");
            if others.all(|(_, null)| null[r]) {
                assert_eq!(op, "D", "row {r}: only a delete may carry only its key");
                key_only += 1;
            } else {
                for (name, null) in columns
                    .iter()
                    .filter(|(n, _)| !kept.contains(&n.as_str()) && !optional.contains(&n.as_str()))
                {
                    assert!(!null[r], "row {r}: {name} is null");
                }
            }
        }
        assert!(deletes > 100, "{deletes} deletes");
        assert!(
            (f64::from(key_only) / f64::from(deletes) - KEY_ONLY_DELETE).abs() < 0.15,
            "{key_only} of {deletes} deletes key-only"
        );

        // A re-send that stage 1 rejects is its key's last version (or is followed only by
        // other rejected re-sends); no re-send has an impossible date or an orphan customer.
        let ids = ints(&batches, "order_id");
        let updated = strings(&batches, "updated_at");
        let status = strings(&batches, "status");
        let amount = floats(&batches, "total_amount");
        let email = strings(&batches, "email");
        let phone = strings(&batches, "phone");
        let customer = ints(&batches, "customer_id");
        let customers = World::for_rows(Dataset::Orders, rows).customers;
        let rejected: Vec<bool> = (0..op.len())
            .map(|r| {
                op[r] == "U"
                    && (status[r] == "on_hold"
                        || !(0.0..=1_000_000.0).contains(&amount[r])
                        || !is_email(&email[r])
                        || !(phone[r].is_empty() || is_phone(&phone[r])))
            })
            .collect();
        let mut versions: HashMap<i64, Vec<(i128, usize)>> = HashMap::new();
        for (r, t) in updated.iter().enumerate() {
            if let Some(t) = parse_datetime(t) {
                versions.entry(ids[r]).or_default().push((t, r));
            }
        }
        for (r, _) in op.iter().enumerate().filter(|(_, op)| op.as_str() == "U") {
            let t = nanos(&updated[r]);
            assert!(
                customer[r] >= 1 && customer[r] as u64 <= customers,
                "row {r}"
            );
            if rejected[r] {
                for &(u, s) in &versions[&ids[r]] {
                    assert!(
                        s == r || u < t || rejected[s],
                        "row {r}: a rejected re-send is followed by row {s}"
                    );
                }
            }
        }
        let n = rejected.iter().filter(|&&x| x).count();
        assert!(n > 200, "{n} rejected last versions");
    }
}
