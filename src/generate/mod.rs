//! `edp generate`: realistic DMS-style raw data for the six shop datasets, with known faults.
//!
//! This folder owns the generator: the public API in this file ([`Dataset`], [`GenSpec`], the
//! period checks and the entity counts of one shop, [`World`]), the random source (`rng`), the
//! vocabulary and value makers (`values`), the time and seasonality model (`time`), the CDC plan
//! and fault injection (`plan`), the per-dataset schemas and row builders (`rows`) and the loop
//! that writes a dataset (`write`). It must not touch the pipeline: it reads no contract and no
//! settings, uses [`crate::protect`] only to make card numbers Luhn-valid and to keep keys from
//! looking like one, writes nothing but the one Parquet object it is given (through
//! [`crate::output::ParquetSink`]) or the two text objects (DMS CSV, NDJSON) under a prefix (`text`), and
//! takes no randomness and no time from the system, so that its output stays a pure function
//! of its spec.
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

mod plan;
mod rng;
mod rows;
mod text;
mod time;
mod values;
mod write;

use crate::datetime::{format_micros, parse_date, NANOS_PER_DAY};

pub use rng::SplitMix;
#[cfg(test)]
pub(crate) use text::to_csv;
pub use text::{generate_text, TextFormat, CDC_NAME, LOAD_NAME};
pub use values::card_number;
pub use write::{batches, generate, target};

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

#[cfg(test)]
mod tests;
