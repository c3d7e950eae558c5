//! Stage 2 end to end: `edp curated-to-prod` over curated objects of the six datasets, checked
//! against an independent computation of every model in `models/` and every check in
//! `models/checks/`. The reference is plain Rust over the rows of the curated files: the current
//! state per primary key, joins as hash maps, money in integer cents. No SQL runs here. Also:
//! a rerun is byte-identical and follows an order that moved to another day, DuckDB reads the Hive
//! layout back, and a model naming an unknown column fails before anything is written.

mod aws;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float64Type, Int64Type, SchemaRef, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType,
};
use edp::datetime::{civil_from_days, days_from_civil};
use tempfile::tempdir;

use crate::util::{
    self, args, contract, edp, ok, parse_micros, read_parquet, stage1, stderr, write_parquet,
    DATASETS, ORDER_STATUSES,
};

// ---------------------------------------------------------------------------------------------
// Cells and rows

/// One cell of a curated or prod table, or of the reference computation.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Val {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// Microseconds since the epoch: curated date-times.
    Micros(i64),
    /// Milliseconds since the epoch: prod timestamps.
    Millis(i64),
    /// Days since the epoch.
    Date(i32),
    /// Unscaled value and scale: cents are `Dec(cents, 2)`.
    Dec(i128, i8),
}

impl Val {
    fn int(&self) -> Option<i64> {
        match self {
            Val::Int(v) => Some(*v),
            Val::Null => None,
            v => panic!("not an integer: {v:?}"),
        }
    }

    fn float(&self) -> Option<f64> {
        match self {
            Val::Float(v) => Some(*v),
            Val::Null => None,
            v => panic!("not a float: {v:?}"),
        }
    }

    fn text(&self) -> Option<&str> {
        match self {
            Val::Str(v) => Some(v.as_str()),
            Val::Null => None,
            v => panic!("not a string: {v:?}"),
        }
    }

    fn bool(&self) -> Option<bool> {
        match self {
            Val::Bool(v) => Some(*v),
            Val::Null => None,
            v => panic!("not a boolean: {v:?}"),
        }
    }

    fn micros(&self) -> Option<i64> {
        match self {
            Val::Micros(v) => Some(*v),
            Val::Null => None,
            v => panic!("not a curated date-time: {v:?}"),
        }
    }

    fn cents(&self) -> Option<i128> {
        match self {
            Val::Dec(v, 2) => Some(*v),
            Val::Null => None,
            v => panic!("not a decimal with two places: {v:?}"),
        }
    }
}

/// A row: column name to cell, ordered so that a row always prints the same way.
type Row = BTreeMap<String, Val>;

fn get<'a>(row: &'a Row, col: &str) -> &'a Val {
    row.get(col)
        .unwrap_or_else(|| panic!("no column {col} in {row:?}"))
}

fn int(row: &Row, col: &str) -> Option<i64> {
    get(row, col).int()
}

/// A non-null integer column (a key).
fn id(row: &Row, col: &str) -> i64 {
    int(row, col).unwrap_or_else(|| panic!("null {col} in {row:?}"))
}

fn float(row: &Row, col: &str) -> Option<f64> {
    get(row, col).float()
}

fn text<'a>(row: &'a Row, col: &str) -> Option<&'a str> {
    get(row, col).text()
}

/// A curated date-time column as microseconds.
fn ts(row: &Row, col: &str) -> Option<i64> {
    get(row, col).micros()
}

fn s(v: &str) -> Val {
    Val::Str(v.to_string())
}

fn row<const N: usize>(cells: [(&str, Val); N]) -> Row {
    cells.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// The cells of `cols`, printed: a map key that compares like the cells.
fn key_of(row: &Row, cols: &[&str]) -> String {
    let cells: Vec<&Val> = cols.iter().map(|c| get(row, c)).collect();
    format!("{cells:?}")
}

/// Rows by a non-null integer column.
fn by_int<'a>(rows: &'a [Row], col: &str) -> HashMap<i64, &'a Row> {
    rows.iter().map(|r| (id(r, col), r)).collect()
}

/// The rows of a batch.
fn rows_of(batch: &RecordBatch) -> Vec<Row> {
    let columns: Vec<(&str, Vec<Val>)> = batch
        .schema_ref()
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, a)| (f.name().as_str(), cells(f.name(), a)))
        .collect();
    (0..batch.num_rows())
        .map(|i| {
            columns
                .iter()
                .map(|(name, values)| (name.to_string(), values[i].clone()))
                .collect()
        })
        .collect()
}

fn cells(name: &str, a: &ArrayRef) -> Vec<Val> {
    (0..a.len())
        .map(|i| {
            if a.is_null(i) {
                return Val::Null;
            }
            match a.data_type() {
                DataType::Boolean => Val::Bool(a.as_boolean().value(i)),
                DataType::Int64 => Val::Int(a.as_primitive::<Int64Type>().value(i)),
                DataType::Float64 => Val::Float(a.as_primitive::<Float64Type>().value(i)),
                DataType::Utf8 => Val::Str(a.as_string::<i32>().value(i).to_string()),
                DataType::Utf8View => Val::Str(a.as_string_view().value(i).to_string()),
                DataType::Timestamp(TimeUnit::Microsecond, _) => {
                    Val::Micros(a.as_primitive::<TimestampMicrosecondType>().value(i))
                }
                DataType::Timestamp(TimeUnit::Millisecond, _) => {
                    Val::Millis(a.as_primitive::<TimestampMillisecondType>().value(i))
                }
                DataType::Date32 => Val::Date(a.as_primitive::<Date32Type>().value(i)),
                DataType::Decimal128(_, scale) => {
                    Val::Dec(a.as_primitive::<Decimal128Type>().value(i), *scale)
                }
                other => panic!("column {name}: unexpected type {other:?}"),
            }
        })
        .collect()
}

/// Writes `rows` as Parquet with `schema` (the string, integer, float and boolean columns of raw
/// CDC files).
fn write_rows(path: &Path, schema: &SchemaRef, rows: &[Row]) {
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| -> ArrayRef {
            let cells = rows.iter().map(|r| get(r, f.name()));
            match f.data_type() {
                DataType::Utf8 => Arc::new(StringArray::from(
                    cells
                        .map(|v| v.text().map(str::to_string))
                        .collect::<Vec<_>>(),
                )),
                DataType::Int64 => {
                    Arc::new(Int64Array::from(cells.map(Val::int).collect::<Vec<_>>()))
                }
                DataType::Float64 => Arc::new(Float64Array::from(
                    cells.map(Val::float).collect::<Vec<_>>(),
                )),
                DataType::Boolean => {
                    Arc::new(BooleanArray::from(cells.map(Val::bool).collect::<Vec<_>>()))
                }
                other => panic!("{}: cannot write {other:?}", f.name()),
            }
        })
        .collect();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    write_parquet(path, &batch, None);
}

// ---------------------------------------------------------------------------------------------
// Files

/// Every file below `dir`, sorted (none when `dir` does not exist).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if !path.ends_with("_edp_manifest.json") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// `path` relative to `base`, with `/` between segments.
fn relative(base: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(base).unwrap();
    rel.iter()
        .map(|seg| seg.to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether a relative path has a segment starting with `_` or `.`.
fn hidden(rel: &str) -> bool {
    rel.split('/').any(|seg| seg.starts_with(['_', '.']))
}

/// `part-NNNNN.parquet`.
fn is_part_file(name: &str) -> bool {
    name.len() == "part-00000.parquet".len()
        && name.starts_with("part-")
        && name.ends_with(".parquet")
        && name[5..10].bytes().all(|b| b.is_ascii_digit())
}

/// The stems of the `*.sql` files directly in `dir`.
fn sql_stems(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    for path in files_under(from) {
        let target = to.join(path.strip_prefix(from).unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(path, target).unwrap();
    }
}

/// Every file below `prod` except under `_`/`.` segments (the run report), with its bytes.
fn snapshot(prod: &Path) -> BTreeMap<String, Vec<u8>> {
    files_under(prod)
        .into_iter()
        .map(|p| (relative(prod, &p), p))
        .filter(|(rel, _)| !hidden(rel))
        .map(|(rel, p)| (rel, std::fs::read(p).unwrap()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Running the stages

fn primary_key(dataset: &str) -> &'static [&'static str] {
    match dataset {
        "customers" => &["customer_id"],
        "products" => &["product_id"],
        "inventory" => &["product_id", "warehouse_id"],
        "orders" => &["order_id"],
        "order_items" => &["order_item_id"],
        "payments" => &["payment_id"],
        other => panic!("unknown dataset {other}"),
    }
}

fn models_dir() -> PathBuf {
    util::root().join("models")
}

fn raw_object(dir: &Path, dataset: &str) -> PathBuf {
    dir.join("raw")
        .join(dataset)
        .join("20250116-000000000.parquet")
}

fn run_stage1(input: &Path, out: &Path, dataset: &str) {
    ok(edp(&args(&stage1(input, out, &contract(dataset)))));
}

/// `edp curated-to-prod` from `curated` into `prod` with the models in `models`.
fn run_stage2(curated: &Path, prod: &Path, models: &Path) -> Output {
    let contracts = util::root().join("fixtures/contracts");
    edp(&[
        "curated-to-prod",
        "--curated",
        curated.to_str().unwrap(),
        "--output",
        prod.to_str().unwrap(),
        "--models",
        models.to_str().unwrap(),
        "--contracts-dir",
        contracts.to_str().unwrap(),
        "--catalog",
        "none",
    ])
}

/// Generates the six datasets (`rows` orders) into `dir/raw/` and runs stage 1 on each into
/// `dir/curated/<dataset>/base/`; returns the curated root.
fn curated_base(dir: &Path, rows: u64) -> PathBuf {
    let raw = dir.join("raw");
    ok(edp(&[
        "generate",
        "--dataset",
        "all",
        "--rows",
        &rows.to_string(),
        "--out",
        raw.to_str().unwrap(),
        "--seed",
        "42",
    ]));
    let curated = dir.join("curated");
    for dataset in DATASETS {
        let out = curated.join(dataset).join("base");
        run_stage1(&raw_object(dir, dataset), &out, dataset);
    }
    curated
}

// ---------------------------------------------------------------------------------------------
// Current state

/// Every curated object of `dataset`: the `*.parquet` files below `curated/<dataset>/` outside
/// segments starting with `_` or `.`, in path order.
fn curated_objects(curated: &Path, dataset: &str) -> Vec<PathBuf> {
    let base = curated.join(dataset);
    let mut objects: Vec<(String, PathBuf)> = files_under(&base)
        .into_iter()
        .map(|p| (relative(&base, &p), p))
        .filter(|(rel, _)| rel.ends_with(".parquet") && !hidden(rel))
        .collect();
    objects.sort();
    objects.into_iter().map(|(_, p)| p).collect()
}

/// (updated_at, sequence, object, row): the greatest wins.
type Rank = (Option<i64>, Option<u128>, usize, usize);

/// The current state of `dataset`: per primary key, the row of greatest [`Rank`] across its
/// curated objects, dropped when that row is a delete; without the `Op` column.
fn current_state(curated: &Path, dataset: &str) -> Vec<Row> {
    let keys = primary_key(dataset);
    let mut latest: HashMap<String, (Rank, Row)> = HashMap::new();
    for (object, path) in curated_objects(curated, dataset).iter().enumerate() {
        for (n, r) in rows_of(&read_parquet(path)).into_iter().enumerate() {
            let seq = r
                .get("AR_H_CHANGE_SEQ")
                .and_then(|v| v.text()?.parse::<u128>().ok());
            let rank = (ts(&r, "updated_at"), seq, object, n);
            let key = key_of(&r, keys);
            if latest.get(&key).is_none_or(|(best, _)| *best < rank) {
                latest.insert(key, (rank, r));
            }
        }
    }
    latest
        .into_values()
        .map(|(_, r)| r)
        .filter(|r| text(r, "Op") != Some("D"))
        .map(|mut r| {
            r.remove("Op");
            r
        })
        .collect()
}

/// The current state of the six datasets.
struct Current {
    customers: Vec<Row>,
    products: Vec<Row>,
    inventory: Vec<Row>,
    orders: Vec<Row>,
    order_items: Vec<Row>,
    payments: Vec<Row>,
}

impl Current {
    fn load(curated: &Path) -> Current {
        let state = |dataset: &str| current_state(curated, dataset);
        Current {
            customers: state("customers"),
            products: state("products"),
            inventory: state("inventory"),
            orders: state("orders"),
            order_items: state("order_items"),
            payments: state("payments"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The reference: models/*.sql and models/checks/*.sql computed in Rust

const REVENUE: [&str; 3] = ["paid", "shipped", "delivered"];

/// A number as a cast of Float64 to DECIMAL(_, 2) holds it: hundredths, rounded half away from
/// zero.
fn hundredths(x: f64) -> i128 {
    (x * 100.0).round() as i128
}

/// `n / d` (d > 0) rounded to an integer, halves away from zero.
fn div_round(n: i128, d: i128) -> i128 {
    let q = (2 * n.abs() + d) / (2 * d);
    if n < 0 {
        -q
    } else {
        q
    }
}

fn money(cents: Option<i128>) -> Val {
    cents.map_or(Val::Null, |c| Val::Dec(c, 2))
}

/// The UTC date of a date-time.
fn date_of(micros: Option<i64>) -> Val {
    micros.map_or(
        Val::Null,
        |m| Val::Date(m.div_euclid(86_400_000_000) as i32),
    )
}

/// A curated cell as prod holds it: date-times in milliseconds (rounded down).
fn prod_cell(v: &Val) -> Val {
    match v {
        Val::Micros(m) => Val::Millis(m.div_euclid(1000)),
        v => v.clone(),
    }
}

/// Copies `cols` of `from` into `to` as prod holds them.
fn copy(to: &mut Row, from: &Row, cols: &[&str]) {
    for col in cols {
        to.insert(col.to_string(), prod_cell(get(from, col)));
    }
}

/// A column of a left-joined row (null without a match).
fn joined(r: Option<&Row>, col: &str) -> Val {
    r.map_or(Val::Null, |r| prod_cell(get(r, col)))
}

fn project(r: &Row, cols: &[&str]) -> Row {
    cols.iter()
        .map(|c| (c.to_string(), get(r, c).clone()))
        .collect()
}

fn is_revenue(fact_order: &Row) -> bool {
    matches!(get(fact_order, "is_revenue"), Val::Bool(true))
}

/// fact_order_items.sql: each current line with its order's date, status and customer and its
/// product's category; line_amount from unit_price and discount_pct at two decimals.
fn fact_order_items(cur: &Current) -> Vec<Row> {
    let orders = by_int(&cur.orders, "order_id");
    let products = by_int(&cur.products, "product_id");
    cur.order_items
        .iter()
        .map(|i| {
            let order = int(i, "order_id").and_then(|k| orders.get(&k).copied());
            let product = int(i, "product_id").and_then(|k| products.get(&k).copied());
            let price = float(i, "unit_price").map(hundredths);
            let discount = float(i, "discount_pct").map(hundredths);
            let line = match (int(i, "quantity"), price, discount) {
                (Some(q), Some(p), Some(d)) => {
                    Some(div_round(i128::from(q) * p * (10_000 - d), 10_000))
                }
                _ => None,
            };
            let mut r = row([
                ("unit_price", money(price)),
                ("discount_pct", money(discount)),
                ("line_amount", money(line)),
                (
                    "order_date",
                    date_of(order.and_then(|o| ts(o, "created_at"))),
                ),
                ("status", joined(order, "status")),
                ("customer_id", joined(order, "customer_id")),
                ("category", joined(product, "category")),
            ]);
            let cols = [
                "order_item_id",
                "order_id",
                "product_id",
                "quantity",
                "updated_at",
            ];
            copy(&mut r, i, &cols);
            r
        })
        .collect()
}

/// fact_orders.sql: each current order with its customer's country and tier, its lines, its
/// captured payments, its latest payment's method (by created_at, then payment_id) and its date.
fn fact_orders(cur: &Current, items: &[Row]) -> Vec<Row> {
    let customers = by_int(&cur.customers, "customer_id");
    // (count, Σ quantity, Σ line_amount) per order.
    let mut lines: HashMap<i64, (i64, i64, i128)> = HashMap::new();
    for i in items {
        if let Some(order) = int(i, "order_id") {
            let l = lines.entry(order).or_default();
            l.0 += 1;
            l.1 += int(i, "quantity").unwrap_or(0);
            l.2 += get(i, "line_amount").cents().unwrap_or(0);
        }
    }
    let mut paid: HashMap<i64, i128> = HashMap::new();
    // (created_at, payment_id, method) of the latest payment per order.
    let mut latest: HashMap<i64, (Option<i64>, &str, &Val)> = HashMap::new();
    for p in &cur.payments {
        let Some(order) = int(p, "order_id") else {
            continue;
        };
        if text(p, "status") == Some("captured") {
            *paid.entry(order).or_default() += float(p, "amount").map_or(0, hundredths);
        }
        // created_at and payment_id are required: no nulls to order.
        let at = ts(p, "created_at");
        let payment = text(p, "payment_id").unwrap_or_default();
        if latest
            .get(&order)
            .is_none_or(|&(t, best, _)| (t, best) < (at, payment))
        {
            latest.insert(order, (at, payment, get(p, "method")));
        }
    }
    cur.orders
        .iter()
        .map(|o| {
            let order = id(o, "order_id");
            let customer = int(o, "customer_id").and_then(|c| customers.get(&c).copied());
            let (count, units, amount) = lines.get(&order).copied().unwrap_or_default();
            let status = text(o, "status");
            let mut r = row([
                (
                    "total_amount",
                    money(float(o, "total_amount").map(hundredths)),
                ),
                ("country", joined(customer, "country")),
                ("loyalty_tier", joined(customer, "loyalty_tier")),
                ("item_count", Val::Int(count)),
                ("units", Val::Int(units)),
                ("items_amount", money(Some(amount))),
                (
                    "paid_amount",
                    money(Some(paid.get(&order).copied().unwrap_or(0))),
                ),
                (
                    "payment_method",
                    latest.get(&order).map_or(Val::Null, |l| l.2.clone()),
                ),
                (
                    "is_revenue",
                    status.map_or(Val::Null, |s| Val::Bool(REVENUE.contains(&s))),
                ),
                ("order_date", date_of(ts(o, "created_at"))),
            ]);
            let cols = [
                "order_id",
                "customer_id",
                "status",
                "currency",
                "email",
                "phone",
                "card_number",
                "notes",
                "shipping_country",
                "created_at",
                "updated_at",
            ];
            copy(&mut r, o, &cols);
            r
        })
        .collect()
}

/// agg_daily_sales.sql over the reference fact_orders.
fn agg_daily_sales(fact_orders: &[Row]) -> Vec<Row> {
    #[derive(Default)]
    struct Day {
        orders: i64,
        units: i64,
        revenue: Option<i128>,
        customers: HashSet<i64>,
        refunded: i64,
    }
    let group = ["order_date", "shipping_country", "currency"];
    let mut days: BTreeMap<String, (Row, Day)> = BTreeMap::new();
    for o in fact_orders {
        let (_, day) = days
            .entry(key_of(o, &group))
            .or_insert_with(|| (project(o, &group), Day::default()));
        if is_revenue(o) {
            day.orders += 1;
            day.units += int(o, "units").unwrap_or(0);
            *day.revenue.get_or_insert(0) += get(o, "total_amount").cents().unwrap_or(0);
            day.customers.extend(int(o, "customer_id"));
        }
        day.refunded += i64::from(text(o, "status") == Some("refunded"));
    }
    days.into_values()
        .map(|(mut r, d)| {
            let average = d
                .revenue
                .map(|revenue| div_round(revenue, i128::from(d.orders)));
            r.extend(row([
                ("orders", Val::Int(d.orders)),
                ("units", Val::Int(d.units)),
                ("revenue", money(Some(d.revenue.unwrap_or(0)))),
                ("customers", Val::Int(d.customers.len() as i64)),
                ("avg_order_value", money(average)),
                ("refunded_orders", Val::Int(d.refunded)),
            ]));
            r
        })
        .collect()
}

/// agg_daily_product_sales.sql over the reference fact_order_items.
fn agg_daily_product_sales(items: &[Row]) -> Vec<Row> {
    let group = ["order_date", "product_id", "category"];
    let mut sales: BTreeMap<String, (Row, i64, Option<i128>)> = BTreeMap::new();
    let revenue_lines = items
        .iter()
        .filter(|i| text(i, "status").is_some_and(|s| REVENUE.contains(&s)));
    for i in revenue_lines {
        let (_, units, revenue) = sales
            .entry(key_of(i, &group))
            .or_insert_with(|| (project(i, &group), 0, None));
        *units += int(i, "quantity").unwrap_or(0);
        if let Some(c) = get(i, "line_amount").cents() {
            *revenue = Some(revenue.unwrap_or(0) + c);
        }
    }
    sales
        .into_values()
        .map(|(mut r, units, revenue)| {
            r.insert("units".into(), Val::Int(units));
            r.insert("revenue".into(), money(revenue));
            r
        })
        .collect()
}

/// dim_customers.sql: each current customer with its revenue orders of the reference
/// fact_orders.
fn dim_customers(cur: &Current, fact_orders: &[Row]) -> Vec<Row> {
    // (count, Σ total_amount, first and last created_at) of revenue orders per customer.
    let mut revenue: HashMap<i64, (i64, i128, i64, i64)> = HashMap::new();
    for o in fact_orders.iter().filter(|o| is_revenue(o)) {
        let (Some(customer), Val::Millis(at)) = (int(o, "customer_id"), get(o, "created_at"))
        else {
            continue;
        };
        let e = revenue.entry(customer).or_insert((0, 0, *at, *at));
        e.0 += 1;
        e.1 += get(o, "total_amount").cents().unwrap_or(0);
        e.2 = e.2.min(*at);
        e.3 = e.3.max(*at);
    }
    cur.customers
        .iter()
        .map(|c| {
            let orders = revenue.get(&id(c, "customer_id"));
            let mut r = row([
                ("customer_since", date_of(ts(c, "created_at"))),
                ("order_count", Val::Int(orders.map_or(0, |e| e.0))),
                ("lifetime_value", money(Some(orders.map_or(0, |e| e.1)))),
                (
                    "first_order_at",
                    orders.map_or(Val::Null, |e| Val::Millis(e.2)),
                ),
                (
                    "last_order_at",
                    orders.map_or(Val::Null, |e| Val::Millis(e.3)),
                ),
            ]);
            let cols = [
                "customer_id",
                "email",
                "first_name",
                "last_name",
                "phone",
                "street",
                "city",
                "postal_code",
                "country",
                "loyalty_tier",
                "marketing_opt_in",
                "created_at",
                "updated_at",
            ];
            copy(&mut r, c, &cols);
            r
        })
        .collect()
}

/// dim_products.sql: each current product with its current inventory.
fn dim_products(cur: &Current) -> Vec<Row> {
    // (Σ on hand, warehouses with stock, any at or under its reorder level) per product.
    let mut stock: HashMap<i64, (i64, i64, bool)> = HashMap::new();
    for s in &cur.inventory {
        let e = stock.entry(id(s, "product_id")).or_default();
        let on_hand = int(s, "quantity_on_hand");
        e.0 += on_hand.unwrap_or(0);
        e.1 += i64::from(on_hand.is_some_and(|q| q > 0));
        e.2 |= matches!(
            (on_hand, int(s, "reorder_level")),
            (Some(q), Some(level)) if q <= level
        );
    }
    cur.products
        .iter()
        .map(|p| {
            let (on_hand, in_stock, below) =
                stock.get(&id(p, "product_id")).copied().unwrap_or_default();
            let mut r = row([
                ("price", money(float(p, "price").map(hundredths))),
                ("quantity_on_hand", Val::Int(on_hand)),
                ("warehouses_in_stock", Val::Int(in_stock)),
                ("below_reorder", Val::Bool(below)),
            ]);
            let cols = [
                "product_id",
                "sku",
                "name",
                "description",
                "category",
                "weight_kg",
                "active",
                "updated_at",
            ];
            copy(&mut r, p, &cols);
            r
        })
        .collect()
}

/// A dq_violations row without its check and run_id: (keys, observed, expected). The decimal
/// texts of order_total_matches_items are compared as cents.
type Violation = (String, Option<String>, Option<String>);

/// models/checks/*.sql: the violations of each check.
fn violations(cur: &Current, fact_orders: &[Row]) -> BTreeMap<String, Vec<Violation>> {
    let orders: HashSet<i64> = cur.orders.iter().map(|o| id(o, "order_id")).collect();
    let products: HashSet<i64> = cur.products.iter().map(|p| id(p, "product_id")).collect();
    let unknown = |known: &HashSet<i64>, k: Option<i64>| k.is_none_or(|k| !known.contains(&k));
    let string = |v: Option<i64>| v.map(|v| v.to_string());
    let existing_order = || Some("an existing order_id".to_string());
    let mut out: BTreeMap<&str, Vec<Violation>> = BTreeMap::new();
    out.insert(
        "inventory_not_negative",
        cur.inventory
            .iter()
            .filter(|s| int(s, "quantity_on_hand").is_some_and(|q| q < 0))
            .map(|s| {
                let keys = format!("{}/{}", id(s, "product_id"), id(s, "warehouse_id"));
                (
                    keys,
                    string(int(s, "quantity_on_hand")),
                    Some(">= 0".to_string()),
                )
            })
            .collect(),
    );
    out.insert(
        "order_items_known_order",
        cur.order_items
            .iter()
            .filter(|i| unknown(&orders, int(i, "order_id")))
            .map(|i| {
                let keys = id(i, "order_item_id").to_string();
                (keys, string(int(i, "order_id")), existing_order())
            })
            .collect(),
    );
    out.insert(
        "order_items_known_product",
        cur.order_items
            .iter()
            .filter(|i| unknown(&products, int(i, "product_id")))
            .map(|i| {
                let keys = id(i, "order_item_id").to_string();
                let expected = Some("an existing product_id".to_string());
                (keys, string(int(i, "product_id")), expected)
            })
            .collect(),
    );
    out.insert(
        "order_total_matches_items",
        fact_orders
            .iter()
            .filter_map(|o| {
                let total = get(o, "total_amount").cents()?;
                let items = get(o, "items_amount").cents()?;
                let wrong = id(o, "item_count") > 0 && (total - items).abs() > 1;
                let keys = id(o, "order_id").to_string();
                wrong.then(|| (keys, Some(total.to_string()), Some(items.to_string())))
            })
            .collect(),
    );
    out.insert(
        "payments_known_order",
        cur.payments
            .iter()
            .filter(|p| unknown(&orders, int(p, "order_id")))
            .map(|p| {
                let keys = text(p, "payment_id").unwrap_or_default().to_string();
                (keys, string(int(p, "order_id")), existing_order())
            })
            .collect(),
    );
    out.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// The reference result: each model's rows (day models with their order_date) and each check's
/// violations.
struct Expected {
    models: BTreeMap<&'static str, Vec<Row>>,
    checks: BTreeMap<String, Vec<Violation>>,
}

impl Expected {
    fn compute(cur: &Current) -> Expected {
        let items = fact_order_items(cur);
        let orders = fact_orders(cur, &items);
        let models = BTreeMap::from([
            ("agg_daily_sales", agg_daily_sales(&orders)),
            ("agg_daily_product_sales", agg_daily_product_sales(&items)),
            ("dim_customers", dim_customers(cur, &orders)),
            ("dim_products", dim_products(cur)),
            ("fact_order_items", items),
            ("fact_orders", orders),
        ]);
        Expected {
            checks: violations(cur, &models["fact_orders"]),
            models,
        }
    }

    fn rows(&self, model: &str) -> &[Row] {
        &self.models[model]
    }
}

// ---------------------------------------------------------------------------------------------
// Prod: layout, schemas, reading back

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// `year=YYYY/month=MM/day=DD/` from order_date, which is not inside the files.
    Day,
    /// `year=YYYY/month=MM/` from order_date, which is inside the files.
    Month,
    /// No partitions.
    Flat,
}

/// Prod column types.
#[derive(Debug, Clone, Copy)]
enum Ty {
    Int,
    Float,
    Str,
    Bool,
    Ts,
    Date,
    Money,
    Pct,
}

impl Ty {
    fn data_type(self) -> DataType {
        match self {
            Ty::Int => DataType::Int64,
            Ty::Float => DataType::Float64,
            Ty::Str => DataType::Utf8,
            Ty::Bool => DataType::Boolean,
            Ty::Ts => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            Ty::Date => DataType::Date32,
            Ty::Money => DataType::Decimal128(18, 2),
            Ty::Pct => DataType::Decimal128(5, 2),
        }
    }
}

/// A model as its SQL file defines it.
struct Model {
    name: &'static str,
    layout: Layout,
    key: &'static [&'static str],
    sort_by: &'static [&'static str],
    /// The columns inside the files, in order.
    columns: &'static [(&'static str, Ty)],
}

static MODELS: [Model; 6] = [
    Model {
        name: "fact_orders",
        layout: Layout::Day,
        key: &["order_id"],
        sort_by: &["order_id"],
        columns: &[
            ("order_id", Ty::Int),
            ("customer_id", Ty::Int),
            ("status", Ty::Str),
            ("total_amount", Ty::Money),
            ("currency", Ty::Str),
            ("email", Ty::Str),
            ("phone", Ty::Str),
            ("card_number", Ty::Str),
            ("notes", Ty::Str),
            ("shipping_country", Ty::Str),
            ("created_at", Ty::Ts),
            ("updated_at", Ty::Ts),
            ("country", Ty::Str),
            ("loyalty_tier", Ty::Str),
            ("item_count", Ty::Int),
            ("units", Ty::Int),
            ("items_amount", Ty::Money),
            ("paid_amount", Ty::Money),
            ("payment_method", Ty::Str),
            ("is_revenue", Ty::Bool),
        ],
    },
    Model {
        name: "fact_order_items",
        layout: Layout::Day,
        key: &["order_item_id"],
        sort_by: &["order_id", "order_item_id"],
        columns: &[
            ("order_item_id", Ty::Int),
            ("order_id", Ty::Int),
            ("product_id", Ty::Int),
            ("quantity", Ty::Int),
            ("unit_price", Ty::Money),
            ("discount_pct", Ty::Pct),
            ("line_amount", Ty::Money),
            ("updated_at", Ty::Ts),
            ("status", Ty::Str),
            ("customer_id", Ty::Int),
            ("category", Ty::Str),
        ],
    },
    Model {
        name: "agg_daily_sales",
        layout: Layout::Month,
        key: &["order_date", "shipping_country", "currency"],
        sort_by: &["order_date", "shipping_country", "currency"],
        columns: &[
            ("order_date", Ty::Date),
            ("shipping_country", Ty::Str),
            ("currency", Ty::Str),
            ("orders", Ty::Int),
            ("units", Ty::Int),
            ("revenue", Ty::Money),
            ("customers", Ty::Int),
            ("avg_order_value", Ty::Money),
            ("refunded_orders", Ty::Int),
        ],
    },
    Model {
        name: "agg_daily_product_sales",
        layout: Layout::Month,
        key: &["order_date", "product_id", "category"],
        sort_by: &["order_date", "product_id"],
        columns: &[
            ("order_date", Ty::Date),
            ("product_id", Ty::Int),
            ("category", Ty::Str),
            ("units", Ty::Int),
            ("revenue", Ty::Money),
        ],
    },
    Model {
        name: "dim_customers",
        layout: Layout::Flat,
        key: &["customer_id"],
        sort_by: &["customer_id"],
        columns: &[
            ("customer_id", Ty::Int),
            ("email", Ty::Str),
            ("first_name", Ty::Str),
            ("last_name", Ty::Str),
            ("phone", Ty::Str),
            ("street", Ty::Str),
            ("city", Ty::Str),
            ("postal_code", Ty::Str),
            ("country", Ty::Str),
            ("loyalty_tier", Ty::Str),
            ("marketing_opt_in", Ty::Bool),
            ("created_at", Ty::Ts),
            ("updated_at", Ty::Ts),
            ("customer_since", Ty::Date),
            ("order_count", Ty::Int),
            ("lifetime_value", Ty::Money),
            ("first_order_at", Ty::Ts),
            ("last_order_at", Ty::Ts),
        ],
    },
    Model {
        name: "dim_products",
        layout: Layout::Flat,
        key: &["product_id"],
        sort_by: &["product_id"],
        columns: &[
            ("product_id", Ty::Int),
            ("sku", Ty::Str),
            ("name", Ty::Str),
            ("description", Ty::Str),
            ("category", Ty::Str),
            ("price", Ty::Money),
            ("weight_kg", Ty::Float),
            ("active", Ty::Bool),
            ("updated_at", Ty::Ts),
            ("quantity_on_hand", Ty::Int),
            ("warehouses_in_stock", Ty::Int),
            ("below_reorder", Ty::Bool),
        ],
    },
];

const DQ_COLUMNS: [(&str, Ty); 5] = [
    ("check", Ty::Str),
    ("keys", Ty::Str),
    ("observed", Ty::Str),
    ("expected", Ty::Str),
    ("run_id", Ty::Str),
];

const HIVE_NULL: &str = "__HIVE_DEFAULT_PARTITION__";

fn model(name: &str) -> &'static Model {
    MODELS.iter().find(|m| m.name == name).unwrap()
}

/// The partition directories of an order_date under `layout` (zero-padded values, Hive's
/// default partition for null).
fn partition_dirs(layout: Layout, date: &Val) -> String {
    let names: &[&str] = match layout {
        Layout::Day => &["year", "month", "day"],
        Layout::Month => &["year", "month"],
        Layout::Flat => &[],
    };
    let values = match date {
        Val::Date(days) => {
            let (y, m, d) = civil_from_days(i64::from(*days));
            [format!("{y:04}"), format!("{m:02}"), format!("{d:02}")]
        }
        _ => [HIVE_NULL, HIVE_NULL, HIVE_NULL].map(String::from),
    };
    names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("/")
}

/// The order_date that day partition directories stand for (checked by the caller through
/// [`partition_dirs`]).
fn date_of_dirs(dirs: &str) -> Val {
    let values: Vec<&str> = dirs
        .split('/')
        .map(|seg| seg.split_once('=').map_or("", |(_, v)| v))
        .collect();
    if values.first() == Some(&HIVE_NULL) {
        return Val::Null;
    }
    let numbers: Vec<i64> = values
        .iter()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("partition {dirs}: {v:?} is not a number"))
        })
        .collect();
    let &[y, m, d] = numbers.as_slice() else {
        panic!("partition {dirs}: not year/month/day");
    };
    Val::Date(days_from_civil(y, m as u32, d as u32) as i32)
}

/// Asserts a prod file's columns are `columns` in order, with their types (a string column may
/// use any Arrow string layout).
fn assert_schema(what: &str, batch: &RecordBatch, columns: &[(&str, Ty)]) {
    let have: Vec<(String, DataType)> = batch
        .schema_ref()
        .fields()
        .iter()
        .map(|f| {
            let dt = match f.data_type() {
                DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
                dt => dt.clone(),
            };
            (f.name().clone(), dt)
        })
        .collect();
    let want: Vec<(String, DataType)> = columns
        .iter()
        .map(|(name, ty)| (name.to_string(), ty.data_type()))
        .collect();
    assert_eq!(have, want, "{what}: columns and types");
}

/// Asserts the rows of one file are in `sort_by` order.
fn assert_sorted(what: &str, rows: &[Row], sort_by: &[&str]) {
    let keys: Vec<Vec<&Val>> = rows
        .iter()
        .map(|r| sort_by.iter().map(|c| get(r, c)).collect())
        .collect();
    if let Some(i) = keys.windows(2).position(|w| w[0] > w[1]) {
        panic!(
            "{what}: rows {i} and {} out of {sort_by:?} order: {:?} > {:?}",
            i + 1,
            keys[i],
            keys[i + 1]
        );
    }
}

/// The rows of a prod model, read back from every file below `prod/<model>/`: each file named
/// `part-NNNNN.parquet`, with the model's columns, sorted, in the partition of its rows; a day
/// model's order_date rebuilt from its directories.
fn read_model(prod: &Path, model: &Model) -> Vec<Row> {
    let name = model.name;
    let base = prod.join(name);
    let files = files_under(&base);
    assert!(!files.is_empty(), "{name}: no files in {}", base.display());
    let mut rows = Vec::new();
    for path in files {
        let rel = relative(&base, &path);
        let (dirs, file) = rel.rsplit_once('/').unwrap_or(("", rel.as_str()));
        if rel == "_edp_manifest.json" {
            continue;
        }
        assert!(is_part_file(file), "{name}: unexpected file {rel}");
        let batch = read_parquet(&path);
        let what = format!("{name}/{rel}");
        assert!(
            batch.num_rows() > 0 || model.layout == Layout::Flat,
            "{what}: an empty partition file"
        );
        assert_schema(&what, &batch, model.columns);
        let file_rows = rows_of(&batch);
        assert_sorted(&what, &file_rows, model.sort_by);
        let day = (model.layout == Layout::Day).then(|| date_of_dirs(dirs));
        for mut r in file_rows {
            if let Some(date) = &day {
                r.insert("order_date".into(), date.clone());
            }
            let date = r.get("order_date").unwrap_or(&Val::Null);
            assert_eq!(
                partition_dirs(model.layout, date),
                dirs,
                "{what}: a row in the wrong partition"
            );
            rows.push(r);
        }
    }
    rows
}

/// The partition directories of the files of `model` that hold a row whose `col` is `k`.
fn partitions_holding(prod: &Path, model: &str, col: &str, k: i64) -> Vec<String> {
    let base = prod.join(model);
    files_under(&base)
        .iter()
        .filter(|p| {
            rows_of(&read_parquet(p))
                .iter()
                .any(|r| int(r, col) == Some(k))
        })
        .map(|p| {
            let rel = relative(&base, p);
            rel.rsplit_once('/')
                .map_or(String::new(), |(dirs, _)| dirs.to_string())
        })
        .collect()
}

/// Rows by key; asserts no key is there twice.
fn keyed<'a>(what: &str, key: &[&str], rows: &'a [Row]) -> BTreeMap<String, &'a Row> {
    let mut out = BTreeMap::new();
    for r in rows {
        let k = key_of(r, key);
        assert!(out.insert(k.clone(), r).is_none(), "{what}: key {k} twice");
    }
    out
}

/// Asserts `prod` rows equal the `expected` rows: the same keys, every column equal.
fn assert_rows_match(what: &str, key: &[&str], expected: &[Row], prod: &[Row]) {
    let want = keyed(&format!("{what} (reference)"), key, expected);
    let have = keyed(&format!("{what} (prod)"), key, prod);
    let missing: Vec<&String> = want
        .keys()
        .filter(|k| !have.contains_key(*k))
        .take(5)
        .collect();
    let extra: Vec<&String> = have
        .keys()
        .filter(|k| !want.contains_key(*k))
        .take(5)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: {} rows expected, {} in prod; missing {missing:?}, unexpected {extra:?}",
        want.len(),
        have.len()
    );
    let mut diffs = Vec::new();
    for (k, w) in &want {
        let h = have[k];
        let columns: BTreeSet<&String> = w.keys().chain(h.keys()).collect();
        for c in columns {
            if w.get(c) != h.get(c) {
                diffs.push(format!(
                    "{k} {c}: expected {:?}, prod {:?}",
                    w.get(c),
                    h.get(c)
                ));
            }
        }
    }
    assert!(
        diffs.is_empty(),
        "{what}: {} cells differ, first: {:#?}",
        diffs.len(),
        &diffs[..diffs.len().min(10)]
    );
}

/// A decimal's text as cents.
fn decimal_cents(text: &str) -> i128 {
    let x: f64 = text
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a decimal: {text:?}"));
    hundredths(x)
}

/// Asserts prod/dq_violations holds exactly the expected violations of every check, all under
/// one non-empty run_id.
fn assert_violations(prod: &Path, expected: &BTreeMap<String, Vec<Violation>>) {
    let base = prod.join("dq_violations");
    let mut got: BTreeMap<String, Vec<Violation>> = expected
        .keys()
        .map(|check| (check.clone(), Vec::new()))
        .collect();
    let mut run_ids = BTreeSet::new();
    for path in files_under(&base) {
        let rel = relative(&base, &path);
        if rel == "_edp_manifest.json" {
            continue;
        }
        assert!(is_part_file(&rel), "dq_violations: unexpected file {rel}");
        let batch = read_parquet(&path);
        assert_schema(&format!("dq_violations/{rel}"), &batch, &DQ_COLUMNS);
        for r in rows_of(&batch) {
            let check = text(&r, "check").expect("check").to_string();
            let numeric = check == "order_total_matches_items";
            let canonical = |col: &str| {
                text(&r, col).map(|t| {
                    if numeric {
                        decimal_cents(t).to_string()
                    } else {
                        t.to_string()
                    }
                })
            };
            let keys = text(&r, "keys").expect("keys").to_string();
            let v = (keys, canonical("observed"), canonical("expected"));
            got.get_mut(&check)
                .unwrap_or_else(|| panic!("dq_violations: unknown check {check}"))
                .push(v);
            run_ids.insert(text(&r, "run_id").unwrap_or_default().to_string());
        }
    }
    assert!(
        run_ids.len() <= 1 && !run_ids.contains(""),
        "dq_violations: run_id {run_ids:?}"
    );
    for (check, want) in expected {
        let mut want = want.clone();
        want.sort();
        let mut have = got[check].clone();
        have.sort();
        let missing: Vec<&Violation> = want
            .iter()
            .filter(|v| have.binary_search(v).is_err())
            .take(5)
            .collect();
        let extra: Vec<&Violation> = have
            .iter()
            .filter(|v| want.binary_search(v).is_err())
            .take(5)
            .collect();
        assert!(
            have == want,
            "{check}: {} violations expected, {} in dq_violations; missing {missing:?}, \
             unexpected {extra:?}",
            want.len(),
            have.len()
        );
    }
}

/// Reads every model and dq_violations back from `prod` and asserts they equal the reference
/// computed from `cur`; returns the reference.
fn assert_prod_matches(cur: &Current, prod: &Path) -> Expected {
    let expected = Expected::compute(cur);
    assert_eq!(
        expected.checks.keys().cloned().collect::<BTreeSet<_>>(),
        sql_stems(&models_dir().join("checks")),
        "the reference computes every check in models/checks/"
    );
    for m in &MODELS {
        assert_rows_match(m.name, m.key, expected.rows(m.name), &read_model(prod, m));
    }
    assert_violations(prod, &expected.checks);
    expected
}

// ---------------------------------------------------------------------------------------------
// The second CDC objects

const CDC_OBJECT: &str = "20250201-000000000.parquet";

/// Date-times after every generated one, one second apart, as DMS writes them.
struct Clock(u32);

impl Clock {
    fn next(&mut self) -> Val {
        self.0 += 1;
        let t = self.0;
        Val::Str(format!(
            "2025-02-01 {:02}:{:02}:{:02}.000000",
            t / 3600,
            t / 60 % 60,
            t % 60
        ))
    }
}

/// A copy of raw row `r` with CDC operation `op` and `cells` replaced.
fn changed<const N: usize>(r: &Row, op: &str, cells: [(&str, Val); N]) -> Row {
    let mut r = r.clone();
    r.insert("Op".into(), s(op));
    for (col, v) in cells {
        assert!(r.insert(col.to_string(), v).is_some(), "no column {col}");
    }
    r
}

/// The raw schema of `dataset` and, in raw order, the raw row of each key's version in its
/// curated objects, with whether that version is a delete.
fn curated_versions(dir: &Path, curated: &Path, dataset: &str) -> (SchemaRef, Vec<(Row, bool)>) {
    let keys = primary_key(dataset);
    let version = |r: &Row| {
        let at = match get(r, "updated_at") {
            Val::Str(t) => parse_micros(t),
            v => v.micros(),
        };
        format!("{} {at:?}", key_of(r, keys))
    };
    let mut deletes = HashMap::new();
    for path in curated_objects(curated, dataset) {
        for r in rows_of(&read_parquet(&path)) {
            deletes.insert(version(&r), text(&r, "Op") == Some("D"));
        }
    }
    let raw = read_parquet(&raw_object(dir, dataset));
    let versions = rows_of(&raw)
        .into_iter()
        .filter_map(|r| deletes.get(&version(&r)).map(|&d| (r, d)))
        .collect();
    (raw.schema(), versions)
}

/// The versions that are not deletes.
fn live_rows(versions: &[(Row, bool)]) -> Vec<&Row> {
    versions
        .iter()
        .filter(|(_, d)| !d)
        .map(|(r, _)| r)
        .collect()
}

/// Writes `rows` as raw object `name` of `dataset` and runs stage 1 on it into
/// `curated/<dataset>/<name>/`, asserting every row is valid.
fn write_cdc(
    dir: &Path,
    curated: &Path,
    dataset: &str,
    name: &str,
    schema: &SchemaRef,
    rows: &[Row],
) {
    let raw = dir.join(name).join(dataset).join(CDC_OBJECT);
    write_rows(&raw, schema, rows);
    let out = curated.join(dataset).join(name);
    run_stage1(&raw, &out, dataset);
    let report = util::report(&out);
    assert_eq!(report["rows_quarantined"], 0, "{dataset} {name}: {report}");
    assert_eq!(
        report["rows_curated"],
        rows.len() as u64,
        "{dataset} {name}"
    );
}

fn next_status(status: &str) -> &'static str {
    match status {
        "pending" => "paid",
        "paid" => "refunded",
        "shipped" => "delivered",
        "delivered" => "refunded",
        "cancelled" => "pending",
        _ => "paid",
    }
}

/// What the second CDC objects of [`scenario`] change.
#[derive(Default)]
struct Changes {
    /// Orders whose status changes, with the new status.
    status: Vec<(i64, String)>,
    /// Orders whose created_at moves to another day, with the new UTC date (y, m, d).
    moved: Vec<(i64, (i64, u32, u32))>,
    deleted: Vec<i64>,
    /// An update carrying its base version's updated_at (the later object wins), new status.
    tie: (i64, String),
    /// An update older than its base version (the base version stays), base status.
    stale: (i64, String),
    /// Orders deleted in the base object and inserted again.
    reinserted: Vec<i64>,
    deleted_lines: Vec<i64>,
    /// Lines given a quantity, price and discount, with their line_amount in cents.
    priced_lines: Vec<(i64, i128)>,
    /// An order with two new payments at the same created_at, and the method of the one with
    /// the greater payment_id.
    paid_order: (i64, String),
    /// A captured payment of a deleted order.
    orphan_payment: String,
    /// Payments with a competing version at the same updated_at, and the status that wins by
    /// sequence.
    sequenced: Vec<(String, String)>,
}

/// The second orders object: status updates, moves to other days, deletes, a tie on updated_at,
/// a stale update and re-inserts of deleted orders.
fn orders_cdc(dir: &Path, curated: &Path, clock: &mut Clock, changes: &mut Changes) {
    let (schema, versions) = curated_versions(dir, curated, "orders");
    let live = live_rows(&versions);
    // Deletes whose row would make a valid insert: a key-only delete has its other columns
    // null, and a delete is not checked on them, so they may also hold a fault.
    let insertable = |r: &Row| {
        text(r, "status").is_some_and(|s| ORDER_STATUSES.contains(&s))
            && float(r, "total_amount").is_some_and(|a| (0.0..=1_000_000.0).contains(&a))
            && text(r, "email").is_some_and(edp::datetime::is_email)
            && text(r, "phone").is_none_or(edp::datetime::is_phone)
    };
    let dead: Vec<&Row> = versions
        .iter()
        .filter(|(r, d)| *d && insertable(r))
        .map(|(r, _)| r)
        .collect();
    assert!(
        live.len() > 100 && !dead.is_empty(),
        "{} live and {} deleted orders with a whole row",
        live.len(),
        dead.len()
    );
    let mut out = Vec::new();
    for r in &live[..20] {
        let status = next_status(text(r, "status").unwrap());
        changes.status.push((id(r, "order_id"), status.into()));
        out.push(changed(
            r,
            "U",
            [("status", s(status)), ("updated_at", clock.next())],
        ));
    }
    // The last microsecond of a day, a local time whose UTC date is the day before, another year.
    let moves = [
        ("2024-11-30 23:59:59.999999", (2024, 11, 30)),
        ("2025-01-01T01:30:00+02:00", (2024, 12, 31)),
        ("2023-06-15 08:00:00", (2023, 6, 15)),
    ];
    for (r, (created_at, date)) in live[20..23].iter().zip(moves) {
        changes.moved.push((id(r, "order_id"), date));
        out.push(changed(
            r,
            "U",
            [("created_at", s(created_at)), ("updated_at", clock.next())],
        ));
    }
    for r in &live[23..28] {
        changes.deleted.push(id(r, "order_id"));
        out.push(changed(r, "D", [("updated_at", clock.next())]));
    }
    let tie = live[28];
    let status = next_status(text(tie, "status").unwrap());
    changes.tie = (id(tie, "order_id"), status.into());
    out.push(changed(tie, "U", [("status", s(status))]));
    let stale = live[29];
    let status = text(stale, "status").unwrap();
    changes.stale = (id(stale, "order_id"), status.into());
    out.push(changed(
        stale,
        "U",
        // Created before it was updated, so the stale version is valid (the contract's
        // `updated_after_created` rule) and loses on its event time alone.
        [
            ("status", s(next_status(status))),
            ("created_at", s("2000-12-31 00:00:00.000000")),
            ("updated_at", s("2001-01-01 00:00:00.000000")),
        ],
    ));
    for r in dead.iter().take(2) {
        changes.reinserted.push(id(r, "order_id"));
        out.push(changed(r, "I", [("updated_at", clock.next())]));
    }
    write_cdc(dir, curated, "orders", "cdc1", &schema, &out);
}

/// The second order_items object: deletes, and lines whose amounts round at a half cent or whose
/// discount has three decimals (rounded to two before it applies).
fn order_items_cdc(dir: &Path, curated: &Path, clock: &mut Clock, changes: &mut Changes) {
    let (schema, versions) = curated_versions(dir, curated, "order_items");
    let live = live_rows(&versions);
    let mut out = Vec::new();
    for r in &live[..4] {
        changes.deleted_lines.push(id(r, "order_item_id"));
        out.push(changed(r, "D", [("updated_at", clock.next())]));
    }
    // (quantity, unit_price, discount_pct, line_amount in cents): 4.5 and 22.5 cents round up;
    // 12.345 % is 12.35 %, so 10 × 999.99 costs 8764.91 (12.345 % would give 8765.41).
    let prices = [
        (1, 0.05, 10.0, 5),
        (3, 0.15, 50.0, 23),
        (7, 19.99, 33.33, 9329),
        (10, 999.99, 12.345, 876_491),
    ];
    for (r, (quantity, price, discount, cents)) in live[4..8].iter().zip(prices) {
        changes.priced_lines.push((id(r, "order_item_id"), cents));
        out.push(changed(
            r,
            "U",
            [
                ("quantity", Val::Int(quantity)),
                ("unit_price", Val::Float(price)),
                ("discount_pct", Val::Float(discount)),
                ("updated_at", clock.next()),
            ],
        ));
    }
    write_cdc(dir, curated, "order_items", "cdc1", &schema, &out);
}

/// The second payments object: competing versions at the same updated_at decided by sequence,
/// two new payments of one order at the same created_at, a payment of a deleted order.
fn payments_cdc(dir: &Path, curated: &Path, clock: &mut Clock, changes: &mut Changes) {
    let (schema, versions) = curated_versions(dir, curated, "payments");
    let live = live_rows(&versions);
    let mut out = Vec::new();
    for (r, seq) in live[..2].iter().zip(["0".repeat(35), "9".repeat(35)]) {
        let base = text(r, "status").unwrap();
        let status = if base == "captured" {
            "failed"
        } else {
            "captured"
        };
        let winner = if seq.starts_with('9') { status } else { base };
        let payment = text(r, "payment_id").unwrap().to_string();
        changes.sequenced.push((payment, winner.into()));
        out.push(changed(
            r,
            "U",
            [("status", s(status)), ("AR_H_CHANGE_SEQ", Val::Str(seq))],
        ));
    }
    let template = live[2];
    let payment = |n: u32, order: i64, method: &str, status: &str, amount: f64, at: Val| {
        changed(
            template,
            "I",
            [
                (
                    "payment_id",
                    Val::Str(format!("cafe{n:04}-beef-4bad-9dad-deadbeef{n:04}")),
                ),
                ("order_id", Val::Int(order)),
                ("method", s(method)),
                ("card_number", Val::Null),
                ("card_brand", Val::Null),
                ("amount", Val::Float(amount)),
                ("status", s(status)),
                ("created_at", at.clone()),
                ("updated_at", at),
                ("AR_H_CHANGE_SEQ", Val::Str(format!("{n:035}"))),
            ],
        )
    };
    let order = changes.status[0].0;
    out.push(payment(
        1,
        order,
        "paypal",
        "captured",
        123.45,
        clock.next(),
    ));
    out.push(payment(
        2,
        order,
        "gift_card",
        "authorized",
        10.0,
        clock.next(),
    ));
    changes.paid_order = (order, "gift_card".into());
    let orphan = payment(
        3,
        changes.deleted[0],
        "paypal",
        "captured",
        99.99,
        clock.next(),
    );
    changes.orphan_payment = text(&orphan, "payment_id").unwrap().to_string();
    out.push(orphan);
    write_cdc(dir, curated, "payments", "cdc1", &schema, &out);
}

/// Generated data (3,000 orders) through stage 1 into `dir/curated/<dataset>/base/`, plus a
/// second CDC object for orders, order_items and payments in `.../cdc1/`; returns the curated
/// root and what the second objects change.
fn scenario(dir: &Path) -> (PathBuf, Changes) {
    let curated = curated_base(dir, 3000);
    let mut clock = Clock(0);
    let mut changes = Changes::default();
    orders_cdc(dir, &curated, &mut clock, &mut changes);
    order_items_cdc(dir, &curated, &mut clock, &mut changes);
    payments_cdc(dir, &curated, &mut clock, &mut changes);
    (curated, changes)
}

/// Asserts the reference follows the second CDC objects as [`Changes`] describes (so the
/// comparison with prod covers those cases).
fn assert_reference_follows(cur: &Current, expected: &Expected, changes: &Changes) {
    let orders = by_int(expected.rows("fact_orders"), "order_id");
    for (order, status) in &changes.status {
        assert_eq!(text(orders[order], "status"), Some(status.as_str()));
    }
    for (order, (y, m, d)) in &changes.moved {
        let date = Val::Date(days_from_civil(*y, *m, *d) as i32);
        assert_eq!(get(orders[order], "order_date"), &date, "order {order}");
    }
    for order in &changes.deleted {
        assert!(!orders.contains_key(order), "order {order} deleted");
    }
    let (order, status) = &changes.tie;
    assert_eq!(text(orders[order], "status"), Some(status.as_str()), "tie");
    let (order, status) = &changes.stale;
    assert_eq!(
        text(orders[order], "status"),
        Some(status.as_str()),
        "stale"
    );
    for order in &changes.reinserted {
        assert!(orders.contains_key(order), "order {order} re-inserted");
    }
    let (order, method) = &changes.paid_order;
    assert_eq!(text(orders[order], "payment_method"), Some(method.as_str()));
    assert!(get(orders[order], "paid_amount").cents().unwrap() >= 12_345);

    let lines = by_int(expected.rows("fact_order_items"), "order_item_id");
    for line in &changes.deleted_lines {
        assert!(!lines.contains_key(line), "line {line} deleted");
    }
    for (line, cents) in &changes.priced_lines {
        assert_eq!(
            get(lines[line], "line_amount"),
            &Val::Dec(*cents, 2),
            "line {line}"
        );
    }
    assert!(
        lines
            .values()
            .any(|l| matches!(get(l, "order_date"), Val::Null)),
        "lines of unknown orders (Hive's default partition)"
    );

    for (payment, status) in &changes.sequenced {
        let p = cur
            .payments
            .iter()
            .find(|p| text(p, "payment_id") == Some(payment.as_str()))
            .unwrap();
        assert_eq!(
            text(p, "status"),
            Some(status.as_str()),
            "payment {payment}"
        );
    }
    let orphans = &expected.checks["payments_known_order"];
    assert!(orphans.iter().any(|v| v.0 == changes.orphan_payment));
    for (check, v) in &expected.checks {
        eprintln!("{check}: {} violations", v.len());
    }
    for (name, rows) in &expected.models {
        assert!(!rows.is_empty(), "{name}: reference rows");
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn stage2_models_match_an_independent_computation() {
    let dir = tempdir().unwrap();
    let (curated, changes) = scenario(dir.path());
    let prod = dir.path().join("prod");
    ok(run_stage2(&curated, &prod, &models_dir()));

    let names: BTreeSet<String> = MODELS.iter().map(|m| m.name.to_string()).collect();
    assert_eq!(
        sql_stems(&models_dir()),
        names,
        "the reference computes every model in models/"
    );
    let cur = Current::load(&curated);
    let expected = assert_prod_matches(&cur, &prod);
    assert_reference_follows(&cur, &expected, &changes);

    let report = std::fs::read_to_string(prod.join("_edp_prod_report.json")).unwrap();
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert!(report.get("models").is_some(), "{report}");
}

#[test]
fn stage2_rerun_changes_nothing() {
    let dir = tempdir().unwrap();
    let curated = curated_base(dir.path(), 1000);
    let prod = dir.path().join("prod");
    ok(run_stage2(&curated, &prod, &models_dir()));
    let first = snapshot(&prod);
    ok(run_stage2(&curated, &prod, &models_dir()));
    let second = snapshot(&prod);
    assert_eq!(
        first.keys().collect::<Vec<_>>(),
        second.keys().collect::<Vec<_>>(),
        "the rerun writes the same files"
    );
    let differ: Vec<&String> = first
        .iter()
        .filter(|(path, bytes)| second[*path] != **bytes)
        .map(|(path, _)| path)
        .collect();
    assert!(differ.is_empty(), "the rerun changed {differ:?}");
    let before = assert_prod_matches(&Current::load(&curated), &prod);

    // A new CDC object moves an order with lines to another day.
    let (schema, versions) = curated_versions(dir.path(), &curated, "orders");
    let lines_of = |order: i64| -> Vec<i64> {
        before
            .rows("fact_order_items")
            .iter()
            .filter(|i| int(i, "order_id") == Some(order))
            .map(|i| id(i, "order_item_id"))
            .collect()
    };
    let date_of = |order: i64| {
        before
            .rows("fact_orders")
            .iter()
            .find(|o| int(o, "order_id") == Some(order))
            .map(|o| get(o, "order_date").clone())
    };
    let shares_its_day = |order: i64| {
        let day = date_of(order);
        before
            .rows("fact_orders")
            .iter()
            .filter(|o| Some(get(o, "order_date").clone()) == day)
            .count()
            > 1
    };
    let order = *live_rows(&versions)
        .iter()
        .find(|o| {
            let order = id(o, "order_id");
            !lines_of(order).is_empty() && shares_its_day(order)
        })
        .unwrap();
    let order_id = id(order, "order_id");
    let old = partitions_holding(&prod, "fact_orders", "order_id", order_id);
    assert_eq!(old.len(), 1, "order {order_id} in {old:?}");
    let moved = changed(
        order,
        "U",
        [
            ("created_at", s("2024-11-15 10:00:00.000000")),
            ("updated_at", Clock(0).next()),
        ],
    );
    write_cdc(dir.path(), &curated, "orders", "cdc1", &schema, &[moved]);
    ok(run_stage2(&curated, &prod, &models_dir()));

    let new = "year=2024/month=11/day=15";
    let now = partitions_holding(&prod, "fact_orders", "order_id", order_id);
    assert_eq!(now, [new], "order {order_id} moved from {}", old[0]);
    assert!(
        !files_under(&prod.join("fact_orders").join(&old[0])).is_empty(),
        "the old partition keeps its other orders"
    );
    for line in lines_of(order_id) {
        let now = partitions_holding(&prod, "fact_order_items", "order_item_id", line);
        assert_eq!(now, [new], "line {line} follows its order");
    }
    // Every order and line exactly once, every model as the reference computes it.
    assert_prod_matches(&Current::load(&curated), &prod);
    let third = snapshot(&prod);
    let dim = "dim_products/part-00000.parquet";
    assert!(
        first.contains_key(dim) && third.get(dim) == first.get(dim),
        "an unchanged model keeps its bytes"
    );
}

/// Prints a note and skips unless `EDP_TEST_PYTHON` names a python with duckdb installed.
#[test]
fn stage2_output_reads_back_in_duckdb() {
    let Some(python) = std::env::var_os("EDP_TEST_PYTHON") else {
        eprintln!("note: EDP_TEST_PYTHON (a python with duckdb) is not set: DuckDB check skipped");
        return;
    };
    let dir = tempdir().unwrap();
    let (curated, changes) = scenario(dir.path());
    let prod = dir.path().join("prod");
    ok(run_stage2(&curated, &prod, &models_dir()));

    let rows = read_model(&prod, model("fact_orders"));
    let total: i128 = rows
        .iter()
        .filter_map(|r| get(r, "total_amount").cents())
        .sum();
    let days: BTreeSet<String> = rows
        .iter()
        .map(|r| partition_dirs(Layout::Day, get(r, "order_date")))
        .collect();
    let mut sample: Vec<i64> = changes.moved.iter().map(|(order, _)| *order).collect();
    sample.extend(rows.iter().step_by(997).map(|r| id(r, "order_id")));
    sample.sort_unstable();
    sample.dedup();
    let ids = sample
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");

    let out = Command::new(python)
        .args(["-c", DUCKDB_SCRIPT, prod.to_str().unwrap(), ids.as_str()])
        .output()
        .expect("run EDP_TEST_PYTHON");
    assert!(
        out.status.success(),
        "duckdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["count"], rows.len() as u64, "{got}");
    let sign = if total < 0 { "-" } else { "" };
    let total = format!("{sign}{}.{:02}", total.abs() / 100, total.abs() % 100);
    assert_eq!(got["total"], total, "{got}");
    assert_eq!(got["days"], days.len() as u64, "{got}");
    let types = &got["types"];
    assert_eq!(types["total_amount"], "DECIMAL(18,2)", "{got}");
    assert_eq!(types["created_at"], "TIMESTAMP WITH TIME ZONE", "{got}");
    assert_eq!(types["year"], "VARCHAR", "{got}");
    assert!(types.get("order_date").is_none(), "{got}");

    // The partition values DuckDB parses are the dates the reference computes.
    let expected = Expected::compute(&Current::load(&curated));
    let orders = by_int(expected.rows("fact_orders"), "order_id");
    let want: Vec<serde_json::Value> = sample
        .iter()
        .map(|order| {
            let Val::Date(date) = get(orders[order], "order_date") else {
                panic!("order {order} has no order_date");
            };
            let (y, m, d) = civil_from_days(i64::from(*date));
            serde_json::json!([
                order,
                format!("{y:04}"),
                format!("{m:02}"),
                format!("{d:02}")
            ])
        })
        .collect();
    assert_eq!(got["dates"], serde_json::Value::Array(want));
}

/// Reads prod/fact_orders with DuckDB's Hive partitioning (partition values as strings) and
/// prints, as JSON, the count, Σ total_amount, distinct days, column types and the partition
/// values of the orders in argv[2].
const DUCKDB_SCRIPT: &str = r#"
import json, sys, duckdb
prod, ids = sys.argv[1], sys.argv[2]
src = ("read_parquet('" + prod + "/fact_orders/**/*.parquet', hive_partitioning=true, "
       "hive_types_autocast=false)")
con = duckdb.connect()
count, total, days = con.execute(
    "SELECT count(*), sum(total_amount), count(DISTINCT year || month || day) FROM " + src
).fetchone()
types = {r[0]: r[1] for r in con.execute("DESCRIBE SELECT * FROM " + src).fetchall()}
dates = con.execute(
    "SELECT order_id, year, month, day FROM " + src
    + " WHERE order_id IN (" + ids + ") ORDER BY order_id"
).fetchall()
print(json.dumps({"count": count, "total": str(total), "days": days, "types": types,
                  "dates": [list(d) for d in dates]}))
"#;

#[test]
fn stage2_unknown_column_is_an_error_naming_file_and_line() {
    let dir = tempdir().unwrap();
    let curated = curated_base(dir.path(), 300);
    let models = dir.path().join("models");
    copy_dir(&models_dir(), &models);
    let file = models.join("dim_products.sql");
    let sql = std::fs::read_to_string(&file).unwrap();
    let line = 1 + sql
        .lines()
        .position(|l| l.trim() == "p.weight_kg,")
        .expect("dim_products.sql selects p.weight_kg");
    std::fs::write(file, sql.replacen("p.weight_kg,", "p.no_such_column,", 1)).unwrap();

    let prod = dir.path().join("prod");
    let out = run_stage2(&curated, &prod, &models);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    let at_line = format!("line {line}");
    for needle in ["dim_products.sql", at_line.as_str(), "no_such_column"] {
        assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
    }
    assert!(
        files_under(&prod).is_empty(),
        "nothing written: {:?}",
        files_under(&prod)
    );
}
