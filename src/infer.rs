//! `edp contract infer`: a starting contract from a sample of an input's rows, what Deequ's
//! constraint suggestion and Great Expectations' profiler offer, written so that `edp` accepts
//! it as is.
//!
//! The input's objects are opened as stage 1 opens them (Parquet, NDJSON, CSV with a header;
//! no contract: every column is an extra column of its own type) and read in order until
//! `sample_rows` rows, each object giving at most its share (so that CDC objects are seen
//! after a large full load). One pass over the sample gathers per column: nulls, the values' types
//! (for CSV text, whether every value parses as an integer, number or boolean), the share of
//! values that fit each format, the distinct values while they are few, the smallest value and
//! a 64-bit hash of every value of an insert (for the primary key). From these:
//!
//! - the CDC columns by DMS's names and values: `Op` (values within `I`, `U`, `D`),
//!   `AR_H_CHANGE_SEQ` (`x-sequence`, a string, not scanned for card numbers), and as event
//!   time the first date-time column named like an update time (`updated…`, `modified…`,
//!   `changed…`, `last_update…`);
//! - per column its type, nullable unless no live row (not a delete) holds a null, `required`
//!   likewise; `format` when at least [`FORMAT_SHARE`] of its values fit one (`email`, `date`,
//!   `date-time`, `uuid`, `phone`); `enum` for strings with few distinct values; `minimum: 0`
//!   for numbers never negative; `x-pci: pan` when at least [`PAN_SHARE`] of its values are
//!   Luhn-valid card numbers of a known brand;
//! - the primary key: the first column (names `id` and `…_id` first) that is never null and
//!   unique over the sampled inserts (a key repeats over its CDC versions, not over its
//!   inserts), else the first such pair.
//!
//! Values are never printed except the distinct values of an `enum`, and a column whose values
//! hold a card number gets no `enum`. What was guessed goes into the contract's `$comment`.

use std::collections::{BTreeSet, HashSet};
use std::hash::Hasher;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Schema};
use serde_json::{json, Map, Value};

use crate::contract::Contract;
use crate::datetime::{is_email, is_phone, is_uuid, parse_date, parse_datetime};
use crate::protect::{brand_fits, luhn_valid, mask_card_numbers};
use crate::source::{resolve, CsvOptions, Decoding, Input, Read};
use crate::{Error, Result};

/// Share of a column's values that must fit a format for it to be declared.
pub const FORMAT_SHARE: f64 = 0.95;
/// Share of a column's values that must be card numbers for `x-pci: pan`.
pub const PAN_SHARE: f64 = 0.9;
/// Most distinct values of an `enum`.
const MAX_ENUM: usize = 12;
/// Longest value of an `enum`.
const MAX_ENUM_CHARS: usize = 40;
/// Rows each object may give the sample at least.
const MIN_OBJECT_ROWS: usize = 1000;

/// What `edp contract infer` reads.
#[derive(Debug, Clone)]
pub struct InferOptions {
    pub input: String,
    pub title: Option<String>,
    pub sample_rows: usize,
    pub csv: CsvOptions,
}

/// How a column's values are read.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Int,
    Float,
    Bool,
    /// Text; `parse`: from a CSV object, so its type comes from what its values parse as.
    Str {
        parse: bool,
    },
    DateTime,
    Date,
    /// A type a contract cannot declare (nested, binary): left to pass through.
    Other,
}

fn kind(ty: &DataType, text: bool) -> Kind {
    match ty {
        t if t.is_integer() => Kind::Int,
        t if t.is_floating() => Kind::Float,
        DataType::Decimal128(..) | DataType::Decimal256(..) => Kind::Float,
        DataType::Boolean => Kind::Bool,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Kind::Str { parse: text },
        DataType::Timestamp(..) => Kind::DateTime,
        DataType::Date32 | DataType::Date64 => Kind::Date,
        _ => Kind::Other,
    }
}

/// What one column's sampled values showed.
struct Stats {
    name: String,
    kind: Kind,
    /// Nulls among live rows (not deletes), and among all rows.
    live_nulls: u64,
    nulls: u64,
    values: u64,
    /// Text values that parse as each type (an integer with a leading zero does not count).
    ints: u64,
    floats: u64,
    bools: u64,
    emails: u64,
    dates: u64,
    datetimes: u64,
    uuids: u64,
    phones: u64,
    pans: u64,
    /// Some value holds a card number.
    holds_pan: bool,
    min: f64,
    /// Distinct values while there are at most [`MAX_ENUM`] short ones.
    distinct: Option<BTreeSet<String>>,
    /// A hash of the value of every sampled insert; `None` once an insert has it null.
    keys: Option<Vec<u64>>,
}

impl Stats {
    fn new(name: &str, kind: Kind) -> Stats {
        let keyable = matches!(kind, Kind::Int | Kind::Str { .. });
        Stats {
            name: name.to_string(),
            kind,
            live_nulls: 0,
            nulls: 0,
            values: 0,
            ints: 0,
            floats: 0,
            bools: 0,
            emails: 0,
            dates: 0,
            datetimes: 0,
            uuids: 0,
            phones: 0,
            pans: 0,
            holds_pan: false,
            min: f64::INFINITY,
            distinct: Some(BTreeSet::new()),
            keys: keyable.then(Vec::new),
        }
    }

    fn share(&self, n: u64) -> f64 {
        if self.values == 0 {
            0.0
        } else {
            n as f64 / self.values as f64
        }
    }

    /// Records one text value.
    fn text(&mut self, v: &str) {
        let leading_zero = v.len() > 1 && v.starts_with('0') && !v.starts_with("0.");
        if v.parse::<i64>().is_ok() && !leading_zero {
            self.ints += 1;
        }
        // A run of digits too long for an integer (a DMS change sequence, a long id) is text,
        // not a number that would lose its digits.
        let long_digits = v.bytes().all(|b| b.is_ascii_digit()) && v.parse::<i64>().is_err();
        if let Ok(x) = v.parse::<f64>() {
            if x.is_finite() && !leading_zero && !long_digits {
                self.floats += 1;
                self.min = self.min.min(x);
            }
        }
        if matches!(v, "true" | "false") {
            self.bools += 1;
        }
        self.emails += u64::from(is_email(v));
        self.dates += u64::from(parse_date(v).is_some());
        self.datetimes += u64::from(parse_datetime(v).is_some());
        self.uuids += u64::from(is_uuid(v));
        self.phones += u64::from(is_phone(v));
        self.pans += u64::from(is_pan(v));
        if mask_card_numbers(v).is_some() {
            self.holds_pan = true;
        }
        self.distinct_value(v);
    }

    fn distinct_value(&mut self, v: &str) {
        let Some(d) = &mut self.distinct else {
            return;
        };
        if d.contains(v) {
            return;
        }
        d.insert(v.to_string());
        if d.len() > MAX_ENUM || v.chars().count() > MAX_ENUM_CHARS {
            self.distinct = None;
        }
    }

    /// The column's type as the contract says it, after the sample.
    fn json_type(&self) -> &'static str {
        match self.kind {
            // Card numbers stay text (a number cannot be masked), however they parse.
            Kind::Str { parse: true } if self.holds_pan => "string",
            Kind::Int => "integer",
            Kind::Float => "number",
            Kind::Bool => "boolean",
            Kind::Str { parse: true } if self.values > 0 && self.ints == self.values => "integer",
            Kind::Str { parse: true } if self.values > 0 && self.floats == self.values => "number",
            Kind::Str { parse: true } if self.values > 0 && self.bools == self.values => "boolean",
            _ => "string",
        }
    }

    /// The format at least [`FORMAT_SHARE`] of the values fit, if any.
    fn format(&self) -> Option<&'static str> {
        match self.kind {
            Kind::DateTime => return Some("date-time"),
            Kind::Date => return Some("date"),
            Kind::Str { .. } if self.json_type() == "string" => {}
            _ => return None,
        }
        [
            ("email", self.emails),
            ("date", self.dates),
            ("date-time", self.datetimes),
            ("uuid", self.uuids),
            ("phone", self.phones),
        ]
        .into_iter()
        .find(|&(_, n)| n > 0 && self.share(n) >= FORMAT_SHARE)
        .map(|(f, _)| f)
    }

    fn is_pan(&self) -> bool {
        self.json_type() == "string" && self.pans > 0 && self.share(self.pans) >= PAN_SHARE
    }
}

/// True when `v` is one card number: 13 to 19 digits, single spaces or dashes between groups
/// allowed, Luhn-valid, of a known brand's prefix and length.
fn is_pan(v: &str) -> bool {
    let digits: Vec<u8> = v.bytes().filter(u8::is_ascii_digit).collect();
    v.bytes()
        .all(|b| b.is_ascii_digit() || b == b' ' || b == b'-')
        && (13..=19).contains(&digits.len())
        && luhn_valid(&digits)
        && brand_fits(&digits)
}

fn hash(bytes: &[u8]) -> u64 {
    let mut h = siphasher::sip::SipHasher13::new_with_keys(0, 0);
    h.write(bytes);
    h.finish()
}

/// The sample: every column's stats.
struct Sample {
    columns: Vec<Stats>,
    rows: u64,
    inserts: u64,
    deletes: u64,
    op: Option<usize>,
    objects: usize,
}

impl Sample {
    fn new() -> Sample {
        Sample {
            columns: Vec::new(),
            rows: 0,
            inserts: 0,
            deletes: 0,
            op: None,
            objects: 0,
        }
    }

    /// Adds the columns of `schema` not seen yet (`text`: a CSV object's): null in every row
    /// sampled so far. An object without the operation column (a DMS full load) holds inserts.
    fn extend(&mut self, schema: &Schema, text: bool) {
        for f in schema.fields() {
            if self.columns.iter().any(|c| c.name == *f.name()) {
                continue;
            }
            let mut stats = Stats::new(f.name(), kind(f.data_type(), text));
            stats.nulls = self.rows;
            stats.live_nulls = self.rows - self.deletes;
            if self.inserts > 0 {
                stats.keys = None;
            }
            self.columns.push(stats);
        }
        if self.op.is_none() {
            self.op = self.columns.iter().position(|c| {
                c.name.eq_ignore_ascii_case("op") && matches!(c.kind, Kind::Str { .. })
            });
        }
    }

    /// Adds the rows of `batch` (whose columns are the sample's, by name).
    fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        let arrays: Vec<Option<ArrayRef>> = self
            .columns
            .iter()
            .map(|c| batch.column_by_name(&c.name).cloned())
            .collect();
        // An object without the operation column (a DMS full load) holds inserts.
        let ops: Option<Vec<Option<String>>> = match self.op.and_then(|i| arrays[i].as_ref()) {
            Some(a) => {
                let a = cast(a, &DataType::Utf8)?;
                let s = a.as_string::<i32>();
                Some(
                    (0..batch.num_rows())
                        .map(|r| s.is_valid(r).then(|| s.value(r).to_string()))
                        .collect(),
                )
            }
            None => None,
        };
        let op_is = |r: usize, v: &str| ops.as_ref().is_some_and(|o| o[r].as_deref() == Some(v));
        let delete: Vec<bool> = (0..batch.num_rows()).map(|r| op_is(r, "D")).collect();
        let insert: Vec<bool> = (0..batch.num_rows())
            .map(|r| ops.is_none() || op_is(r, "I"))
            .collect();
        for (stats, array) in self.columns.iter_mut().zip(&arrays) {
            let Some(array) = array else {
                // A column of an earlier object that this one lacks: nulls.
                stats.nulls += batch.num_rows() as u64;
                stats.live_nulls += delete.iter().filter(|d| !**d).count() as u64;
                stats.keys = None;
                continue;
            };
            add_column(stats, array, &delete, &insert)?;
        }
        self.rows += batch.num_rows() as u64;
        self.inserts += insert.iter().filter(|i| **i).count() as u64;
        self.deletes += delete.iter().filter(|d| **d).count() as u64;
        Ok(())
    }
}

fn add_column(stats: &mut Stats, array: &ArrayRef, delete: &[bool], insert: &[bool]) -> Result<()> {
    let text = match stats.kind {
        Kind::Other | Kind::Bool | Kind::DateTime | Kind::Date => None,
        Kind::Int | Kind::Float | Kind::Str { .. } => Some(
            cast(array, &DataType::Utf8)
                .map_err(|e| Error::Internal(format!("column `{}`: {e}", stats.name)))?,
        ),
    };
    let text = text.as_ref().map(|t| t.as_string::<i32>());
    for row in 0..array.len() {
        if array.is_null(row) {
            stats.nulls += 1;
            stats.live_nulls += u64::from(!delete[row]);
            if insert[row] {
                stats.keys = None;
            }
            continue;
        }
        stats.values += 1;
        let Some(text) = text else {
            continue;
        };
        let v = text.value(row);
        if insert[row] {
            if let Some(keys) = &mut stats.keys {
                keys.push(hash(v.as_bytes()));
            }
        }
        match stats.kind {
            Kind::Str { .. } => stats.text(v),
            Kind::Int | Kind::Float => {
                if let Ok(x) = v.parse::<f64>() {
                    stats.min = stats.min.min(x);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The contract under which inputs are opened: no columns, every field an extra column.
fn open_contract() -> Result<Contract> {
    Contract::from_json_str(
        "(contract infer)",
        r#"{"title": "infer", "type": "object", "properties": {}}"#,
    )
}

/// Reads the sample of `options.input` and returns the inferred contract.
pub async fn infer(options: &InferOptions) -> Result<Value> {
    let objects = resolve(std::slice::from_ref(&options.input)).await?;
    let decoding = Decoding {
        contract: Arc::new(open_contract()?),
        csv: options.csv.clone(),
    };
    // Each object gives at most its share, so that a DMS full load does not fill the sample
    // before any CDC object (with `Op`) is seen.
    let quota = (options.sample_rows / objects.len().max(1)).max(MIN_OBJECT_ROWS);
    let mut sample: Option<Sample> = None;
    for object in objects {
        let taken = sample.as_ref().map_or(0, |s| s.rows) as usize;
        if taken >= options.sample_rows {
            break;
        }
        let until = (taken + quota).min(options.sample_rows);
        let csv = crate::source::is_csv(object.location.path.as_ref());
        if csv && !options.csv.header {
            return Err(Error::Config(format!(
                "{}: contract infer reads a CSV object's column names from its header: pass \
                 --csv-header true (DMS AddColumnName=true)",
                object.location.url
            )));
        }
        let input = Input::open_raw(object, &decoding).await?;
        let s = sample.get_or_insert_with(Sample::new);
        s.extend(input.schema(), csv);
        s.objects += 1;
        let mut units = input.read(Read {
            batch_size: 8192,
            keep: None,
            columns: None,
            read_ahead: 1,
        });
        'units: while let Some(unit) = units.recv().await {
            let mut unit = unit?;
            while let Some(batch) = unit.next_batch(input.url())? {
                let left = until - s.rows as usize;
                s.add(&batch.slice(0, batch.num_rows().min(left)))?;
                if s.rows as usize >= until {
                    break 'units;
                }
            }
        }
    }
    let sample = sample.ok_or_else(|| Error::bad_input(&options.input, "no objects"))?;
    if sample.rows == 0 {
        return Err(Error::bad_input(&options.input, "no rows to infer from"));
    }
    Ok(contract_json(&sample, options))
}

/// The input's last path segment without `-raw`; for an object (a name ending in a data
/// extension) its directory's, else its name without extension.
fn default_title(input: &str) -> String {
    let segments: Vec<&str> = input
        .split('/')
        .filter(|s| !s.is_empty() && *s != "." && *s != "..")
        .collect();
    let object = |s: &str| {
        crate::source::is_csv(s)
            || [
                ".parquet",
                ".json",
                ".jsonl",
                ".ndjson",
                ".json.gz",
                ".jsonl.gz",
                ".ndjson.gz",
            ]
            .iter()
            .any(|e| s.ends_with(e))
    };
    let name = match segments.as_slice() {
        [.., dir, last] if object(last) && !dir.contains(':') => dir.to_string(),
        [.., last] if object(last) => last.split('.').next().unwrap_or(last).to_string(),
        [.., last] => last.to_string(),
        [] => "dataset".to_string(),
    };
    let name = name.trim_end_matches("-raw");
    if name.is_empty() {
        "dataset".to_string()
    } else {
        name.to_string()
    }
}

/// True when `name` reads like an update time's column.
fn update_time_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["updated", "modified", "changed", "last_update"]
        .iter()
        .any(|p| n.starts_with(p))
}

/// True when no hash repeats.
fn unique(hashes: impl ExactSizeIterator<Item = u64>) -> bool {
    let mut seen = HashSet::with_capacity(hashes.len());
    hashes.into_iter().all(|h| seen.insert(h))
}

/// The primary key: a column, else a pair, never null and unique over the sampled inserts.
fn primary_key(sample: &Sample) -> Option<Vec<usize>> {
    let mut candidates: Vec<usize> = (0..sample.columns.len())
        .filter(|&i| Some(i) != sample.op)
        .filter(|&i| {
            let c = &sample.columns[i];
            c.nulls == 0
                && c.keys.as_ref().is_some_and(|k| !k.is_empty())
                && c.format() != Some("date-time")
        })
        .collect();
    let id_like = |i: &usize| {
        let n = sample.columns[*i].name.to_ascii_lowercase();
        !(n == "id" || n.ends_with("_id"))
    };
    candidates.sort_by_key(id_like);
    let keys = |i: usize| sample.columns[i].keys.as_deref().unwrap_or_default();
    for &i in &candidates {
        if unique(keys(i).iter().copied()) {
            return Some(vec![i]);
        }
    }
    let firsts = &candidates[..candidates.len().min(8)];
    for (n, &a) in firsts.iter().enumerate() {
        for &b in &firsts[n + 1..] {
            let (ka, kb) = (keys(a), keys(b));
            if ka.len() != kb.len() {
                continue;
            }
            let pairs = ka.iter().zip(kb).map(|(x, y)| x.rotate_left(17) ^ y);
            if unique(pairs) {
                let mut key = vec![a, b];
                key.sort_unstable();
                return Some(key);
            }
        }
    }
    None
}

fn contract_json(sample: &Sample, options: &InferOptions) -> Value {
    let cols = &sample.columns;
    let mut notes: Vec<String> = Vec::new();
    let op = sample.op.filter(|&i| {
        cols[i].distinct.as_ref().is_some_and(|d| {
            !d.is_empty() && d.iter().all(|v| ["I", "U", "D"].contains(&v.as_str()))
        })
    });
    let sequence = cols
        .iter()
        .position(|c| c.name.eq_ignore_ascii_case("AR_H_CHANGE_SEQ"));
    let key = primary_key(sample);
    let event_time = key.as_ref().and_then(|_| {
        cols.iter()
            .position(|c| c.format() == Some("date-time") && update_time_name(&c.name))
    });
    let mut properties = Map::new();
    let mut required = Vec::new();
    for (i, c) in cols.iter().enumerate() {
        if c.kind == Kind::Other {
            notes.push(format!(
                "`{}` is of a type a contract cannot declare: left out, it passes through as an \
                 extra column",
                c.name
            ));
            continue;
        }
        let ty = if Some(i) == sequence {
            "string"
        } else {
            c.json_type()
        };
        let mut p = Map::new();
        if c.live_nulls > 0 || c.values == 0 {
            p.insert("type".into(), json!([ty, "null"]));
        } else {
            p.insert("type".into(), json!(ty));
            required.push(c.name.clone());
        }
        let pan = c.is_pan();
        if let Some(f) = c.format() {
            p.insert("format".into(), json!(f));
            notes.push(format!("`{}` format {f}", c.name));
        } else if ty == "string" && !pan && !c.holds_pan && Some(i) != sequence && Some(i) != op {
            if let Some(d) = c
                .distinct
                .as_ref()
                .filter(|d| !d.is_empty() && c.values >= 20 && (d.len() as u64) * 4 <= c.values)
            {
                p.insert("enum".into(), json!(d.iter().collect::<Vec<_>>()));
                notes.push(format!("`{}` enum of the {} values seen", c.name, d.len()));
            }
        }
        if matches!(ty, "integer" | "number") && c.min >= 0.0 && c.min.is_finite() {
            p.insert("minimum".into(), json!(0));
        }
        if pan {
            p.insert("x-pci".into(), json!("pan"));
            notes.push(format!(
                "`{}` x-pci pan ({:.0}% of its values are card numbers)",
                c.name,
                100.0 * c.share(c.pans)
            ));
        } else if Some(i) == sequence {
            p.insert("x-pci".into(), json!("none"));
        }
        properties.insert(c.name.clone(), Value::Object(p));
    }
    let mut contract = Map::new();
    let title = options
        .title
        .clone()
        .unwrap_or_else(|| default_title(&options.input));
    let mut guessed = vec![format!(
        "Inferred by edp contract infer from {} ({} rows of {} object(s); {} inserts, {} deletes).",
        options.input, sample.rows, sample.objects, sample.inserts, sample.deletes
    )];
    match &key {
        Some(k) => guessed.push(format!(
            "Primary key {} (never null, unique over the sampled inserts).",
            k.iter()
                .map(|&i| format!("`{}`", cols[i].name))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        None => {
            guessed.push("No primary key found (no column or pair unique over the inserts).".into())
        }
    }
    if let Some(i) = op {
        guessed.push(format!("CDC operation `{}`.", cols[i].name));
    }
    if let Some(i) = event_time {
        guessed.push(format!("Event time `{}`.", cols[i].name));
    }
    if let Some(i) = sequence {
        guessed.push(format!("Sequence `{}`.", cols[i].name));
    }
    guessed.push(format!(
        "Required: the columns no live row has null. {}. Review before use: ranges say only \
         minimum 0 for columns never negative, enums list the values seen, x-pii transforms are \
         not guessed.",
        notes.join("; ")
    ));
    contract.insert("$comment".into(), json!(guessed.join(" ")));
    contract.insert("title".into(), json!(title));
    contract.insert("type".into(), json!("object"));
    contract.insert("required".into(), json!(required));
    contract.insert("properties".into(), Value::Object(properties));
    if let Some(k) = &key {
        contract.insert(
            "x-primary-key".into(),
            json!(k.iter().map(|&i| cols[i].name.clone()).collect::<Vec<_>>()),
        );
    }
    if let Some(i) = event_time {
        contract.insert("x-event-time".into(), json!(cols[i].name));
    }
    if let Some(i) = sequence.filter(|_| key.is_some()) {
        contract.insert("x-sequence".into(), json!(cols[i].name));
    }
    if let Some(i) = op {
        contract.insert("x-cdc-op".into(), json!(cols[i].name));
    }
    Value::Object(contract)
}
