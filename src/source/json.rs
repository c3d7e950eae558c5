//! NDJSON, the third input format: objects named `*.json`, `*.jsonl` or `*.ndjson` (each
//! optionally `.gz`), one JSON object per line, fields by name, decoded by arrow-json.
//!
//! JSON escapes newlines inside strings, so a record never spans lines, and units could be cut
//! anywhere a line ends. But an object's fields are known only by reading it: [`open`] streams
//! the object once, counts its rows (non-blank lines), cuts them into units as CSV does, and
//! reads every line's top-level field names (values skipped, not built). Fields the contract
//! declares take its types; the CDC operation column, when no line holds it, is implied (`I` on
//! every row, as for a DMS full load); other fields are extra columns in first-seen order, typed
//! by arrow-json's schema inference over their first [`SAMPLE_VALUES`] values ([`inferred_type`];
//! a string when they are all null), and pass through like extra Parquet columns (`additionalProperties`
//! applies to them). A missing field, or `null`, is null.
//!
//! A line serde_json rejects at open (invalid JSON, nesting deeper than its recursion limit of
//! 128, not exactly one object: arrow-json's tape decoder is more lenient, e.g. about commas)
//! is marked then and never given to arrow-json. An object with more than
//! [`MAX_EXTRA_FIELDS`] extra fields, or with no line that is a JSON object (a pretty-printed
//! document, a JSON array), is a file-level error.
//!
//! [`row_groups`] decodes a batch of lines at once with arrow-json's decoder, projected to the
//! columns asked for. Integers are decoded as text and parsed here, so that `1.5` in an integer
//! column is a `type` failure and not a silent `1` (arrow-json casts numbers); a number or
//! boolean in a string column reads as its JSON text; a non-finite number (`"NaN"`, `1e999`)
//! is a `type` failure. When the batch fails as a whole, each of
//! its lines is decoded alone to find the bad ones: a line that is not UTF-8 (`utf8`), not one
//! JSON object (`json_syntax`), or holds a value that does not fit its column's type (`type`)
//! stays a row, null where it could not be read, and carries a [`RowFailure`] with its line
//! number (values of x-pii and x-pci pan columns withheld, a line that is not JSON withheld
//! whole when the contract has such columns, card numbers masked everywhere).

use std::io::{BufRead, Read as _};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanBufferBuilder, Float64Builder, Int64Builder, RecordBatch,
    StringArray,
};
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::json::reader::{infer_json_schema_from_iterator, Decoder as JsonDecoder};
use arrow::json::ReaderBuilder;
use serde::de::{Deserialize, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;
use tokio::sync::mpsc;

use super::csv::{column, Column, Decoding, MAX_RECORD_BYTES};
use super::text::{io_error, shown, stream, Source, Unit, UNIT_BYTES, UNIT_ROWS};
use super::{Decoded, Decoder, InputObject, Read, RowFailure, RowGroup};
use crate::contract::{rule_name, Contract};
use crate::{Error, Result};

/// Values of an extra field its type is inferred from.
const SAMPLE_VALUES: usize = 1000;
/// Most fields not in the contract an object may have (each is a column).
pub const MAX_EXTRA_FIELDS: usize = 1000;
/// Bytes of lines whose extra fields' values are sampled, at most.
const SAMPLE_BYTES: usize = 64 << 20;
/// What an arrow-json error about one field starts with (the field's name follows, quoted).
const FIELD_ERROR: &str = "whilst decoding field '";
const BOM: &[u8] = b"\xef\xbb\xbf";
/// The scan's error when an object has more than [`MAX_EXTRA_FIELDS`] extra fields.
const TOO_MANY_FIELDS: &str = "too many fields not in the contract";

/// True when `name` is an NDJSON object (`.json`, `.jsonl`, `.ndjson`, each optionally `.gz`).
pub(super) fn is_json(name: &str) -> bool {
    let name = name.strip_suffix(".gz").unwrap_or(name);
    [".json", ".jsonl", ".ndjson"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

/// What [`open`] learnt about an NDJSON object.
#[derive(Debug, Clone)]
pub(super) struct JsonMeta {
    schema: SchemaRef,
    columns: Arc<Vec<Column>>,
    units: Arc<Vec<Unit>>,
    rows: u64,
    /// One bit per row: set when serde_json rejected its line (not one JSON object).
    rejected: Arc<BooleanBuffer>,
}

impl JsonMeta {
    pub(super) fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    pub(super) fn rows(&self) -> u64 {
        self.rows
    }

    pub(super) fn units(&self) -> usize {
        self.units.len()
    }
}

/// Reads `object` once and learns its fields, rows and units.
pub(super) async fn open(object: &InputObject, decoding: &Decoding) -> Result<JsonMeta> {
    let src = Source::start(object);
    let url = object.location.url.clone();
    let contract = decoding.contract.clone();
    tokio::task::spawn_blocking(move || scan(&url, src.reader(), &contract))
        .await
        .map_err(|e| Error::Internal(format!("NDJSON scan panicked: {e}")))?
}

/// The extra fields seen so far, in first-seen order, with sampled values.
#[derive(Default)]
struct Fields {
    extra: Vec<(String, Vec<Value>)>,
    index: std::collections::HashMap<String, usize>,
    has_op: bool,
    /// Whether the current line's extra values are sampled.
    sampling: bool,
}

/// Reads one line's top-level field names into [`Fields`], skipping declared fields' values.
struct LineFields<'a> {
    contract: &'a Contract,
    fields: &'a mut Fields,
    key: &'a mut String,
}

/// A map key read into a reused buffer.
struct KeySeed<'a>(&'a mut String);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<(), E> {
        self.0.clear();
        self.0.push_str(v);
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for LineFields<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for LineFields<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        while map.next_key_seed(KeySeed(&mut *self.key))?.is_some() {
            let name = self.key.as_str();
            if self.contract.cdc_op.as_deref() == Some(name) {
                self.fields.has_op = true;
            }
            if self.contract.column(name).is_some() {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let i = match self.fields.index.get(name) {
                Some(&i) => i,
                None if self.fields.extra.len() >= MAX_EXTRA_FIELDS => {
                    return Err(serde::de::Error::custom(TOO_MANY_FIELDS));
                }
                None => {
                    let i = self.fields.extra.len();
                    self.fields.index.insert(name.to_string(), i);
                    self.fields.extra.push((name.to_string(), Vec::new()));
                    i
                }
            };
            let samples = &mut self.fields.extra[i].1;
            if self.fields.sampling && samples.len() < SAMPLE_VALUES {
                samples.push(map.next_value::<Value>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// Deepest nesting of arrays and objects a line may have (serde_json's recursion limit; it does
/// not apply to values it skips, and arrow-json recurses once per level in its messages).
const MAX_DEPTH: usize = 128;

/// True when `line` nests arrays and objects deeper than [`MAX_DEPTH`] (brackets inside strings
/// do not count).
fn too_deep(line: &[u8]) -> bool {
    if memchr::memchr2_iter(b'[', b'{', line)
        .nth(MAX_DEPTH)
        .is_none()
    {
        return false;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in line {
        match (in_string, b) {
            (true, _) if escaped => escaped = false,
            (true, b'\\') => escaped = true,
            (true, b'"') => in_string = false,
            (true, _) => {}
            (false, b'"') => in_string = true,
            (false, b'[' | b'{') => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return true;
                }
            }
            (false, b']' | b'}') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// True when `line` holds nothing but JSON whitespace.
fn blank(line: &[u8]) -> bool {
    line.iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}

fn scan(url: &str, mut src: Box<dyn BufRead + Send>, contract: &Contract) -> Result<JsonMeta> {
    let mut fields = Fields::default();
    let mut rejected = BooleanBufferBuilder::new(0);
    let mut sampled_bytes = 0usize;
    let mut key = String::new();
    let mut units: Vec<Unit> = Vec::new();
    let (mut rows, mut offset, mut line_no) = (0u64, 0u64, 0u64);
    // Where the current unit would start, and that byte's line number.
    let (mut start, mut start_line) = (0u64, 1u64);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut src)
            .take(MAX_RECORD_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| io_error(url, e))?;
        if n == 0 {
            break;
        }
        if line.len() > MAX_RECORD_BYTES {
            return Err(Error::bad_input(
                url,
                format!(
                    "line {} is longer than {} MiB",
                    line_no + 1,
                    MAX_RECORD_BYTES >> 20
                ),
            ));
        }
        line_no += 1;
        offset += n as u64;
        let text = match line.strip_prefix(BOM) {
            Some(rest) if offset == n as u64 => rest,
            _ => &line[..],
        };
        if blank(text) {
            continue;
        }
        fields.sampling = sampled_bytes < SAMPLE_BYTES;
        if fields.sampling {
            sampled_bytes += text.len();
        }
        let seed = LineFields {
            contract,
            fields: &mut fields,
            key: &mut key,
        };
        // A line serde_json rejects (invalid JSON, nested deeper than its recursion limit, not
        // one object) adds no fields and is never given to arrow-json; decoding reports it.
        let mut de = serde_json::Deserializer::from_slice(text);
        let parsed = if too_deep(text) {
            Err(serde::de::Error::custom("too deep"))
        } else {
            seed.deserialize(&mut de).and_then(|()| de.end())
        };
        match parsed {
            Ok(()) => rejected.append(false),
            Err(e) if e.to_string().starts_with(TOO_MANY_FIELDS) => {
                return Err(Error::bad_input(
                    url,
                    format!(
                        "line {line_no}: more than {MAX_EXTRA_FIELDS} distinct fields not in the \
                         contract (each would be a column)"
                    ),
                ))
            }
            Err(_) => rejected.append(true),
        }
        match units.last_mut() {
            Some(u) if u.rows < UNIT_ROWS && offset - u.start <= UNIT_BYTES => {
                u.rows += 1;
                u.end = offset;
            }
            _ => units.push(Unit {
                first_row: rows,
                rows: 1,
                start,
                end: offset,
                first_line: start_line,
            }),
        }
        rows += 1;
        start = offset;
        start_line = line_no + 1;
    }
    let rejected = rejected.finish();
    if rows == 0 {
        return Err(Error::bad_input(url, "empty NDJSON object: no lines"));
    }
    if rejected.count_set_bits() as u64 == rows {
        return Err(Error::bad_input(
            url,
            "no line is a JSON object: NDJSON holds one object per line (a pretty-printed \
             document or a JSON array is not NDJSON)",
        ));
    }
    let mut columns = Vec::new();
    for c in &contract.columns {
        let implied = contract.cdc_op.as_deref() == Some(c.name.as_str()) && !fields.has_op;
        columns.push(Column {
            implied,
            ..column(contract, &c.name)
        });
    }
    for (name, samples) in &fields.extra {
        columns.push(Column {
            name: name.as_str().into(),
            ty: inferred_type(samples),
            withhold: false,
            implied: false,
        });
    }
    let schema = Schema::new(
        columns
            .iter()
            .map(|c| Field::new(c.name.as_ref(), c.ty.clone(), true))
            .collect::<Vec<_>>(),
    );
    Ok(JsonMeta {
        schema: Arc::new(schema),
        columns: Arc::new(columns),
        units: Arc::new(units),
        rows,
        rejected: Arc::new(rejected),
    })
}

/// The type arrow-json infers for an extra field from `samples`; when their types do not merge
/// (an object here, a string there), the type of the first non-null one (rows of another type
/// then fail `type`); `Null` when they are all null (another object of the job gives the type).
/// Empty structs and null children become strings: Parquet cannot write them.
fn inferred_type(samples: &[Value]) -> DataType {
    let infer = |values: &[Value]| {
        let records = values.iter().map(|v| {
            let mut m = serde_json::Map::new();
            m.insert("v".into(), v.clone());
            Ok(Value::Object(m))
        });
        infer_json_schema_from_iterator(records)
            .ok()
            .and_then(|s| s.field_with_name("v").ok().map(|f| f.data_type().clone()))
    };
    let first = samples.iter().position(|v| !v.is_null());
    let ty = infer(samples).or_else(|| first.and_then(|i| infer(&samples[i..=i])));
    match ty {
        Some(DataType::Null) => DataType::Null,
        Some(t) => writable(t),
        None => DataType::Utf8,
    }
}

/// `ty` with what Parquet cannot write (an empty struct, a null child) made a string.
fn writable(ty: DataType) -> DataType {
    match ty {
        DataType::Null => DataType::Utf8,
        DataType::Struct(fields) if fields.is_empty() => DataType::Utf8,
        DataType::Struct(fields) => DataType::Struct(
            fields
                .iter()
                .map(|f| {
                    f.as_ref()
                        .clone()
                        .with_data_type(writable(f.data_type().clone()))
                })
                .collect(),
        ),
        DataType::List(f) => DataType::List(Arc::new(
            f.as_ref()
                .clone()
                .with_data_type(writable(f.data_type().clone())),
        )),
        t => t,
    }
}

/// Streams the units of the object that hold a row `read` keeps, in order.
pub(super) fn row_groups(
    input: &InputObject,
    meta: &JsonMeta,
    read: Read,
) -> mpsc::Receiver<Result<RowGroup>> {
    let meta = meta.clone();
    let batch_size = read.batch_size.max(1);
    stream(
        input,
        meta.units.clone(),
        meta.columns.len(),
        read,
        move |projection| {
            let plan = Arc::new(Plan::new(&meta, projection)?);
            Ok(move |unit: Unit, bytes, keep| -> Decoder {
                Box::new(UnitDecoder {
                    rejected: meta.rejected.slice(unit.first_row as usize, unit.rows),
                    bytes,
                    pos: 0,
                    line: unit.first_line,
                    unit,
                    index: 0,
                    keep,
                    plan: plan.clone(),
                    batch_size,
                    lines: Vec::new(),
                })
            })
        },
    )
}

/// How the projected columns are decoded.
struct Plan {
    columns: Arc<Vec<Column>>,
    projection: Vec<usize>,
    /// The batches' schema.
    schema: SchemaRef,
    /// What arrow-json decodes: the projected columns that are not implied, integers as text.
    decode_schema: SchemaRef,
    /// Whether a line that is not JSON may be shown.
    withhold_lines: bool,
}

impl Plan {
    fn new(meta: &JsonMeta, projection: Vec<usize>) -> std::result::Result<Plan, ArrowError> {
        let schema = Arc::new(meta.schema.project(&projection)?);
        let decode_fields: Vec<Field> = projection
            .iter()
            .map(|&c| &meta.columns[c])
            .filter(|c| !c.implied)
            .map(|c| {
                let ty = match c.ty {
                    DataType::Int64 => DataType::Utf8,
                    ref t => t.clone(),
                };
                Field::new(c.name.as_ref(), ty, true)
            })
            .collect();
        Ok(Plan {
            columns: meta.columns.clone(),
            projection,
            schema,
            decode_schema: Arc::new(Schema::new(decode_fields)),
            withhold_lines: meta.columns.iter().any(|c| c.withhold),
        })
    }

    /// An arrow-json decoder of the projected fields for `rows` lines; `lenient`: a value of
    /// the wrong type reads as null.
    fn decoder(&self, rows: usize, lenient: bool) -> std::result::Result<JsonDecoder, ArrowError> {
        ReaderBuilder::new(self.decode_schema.clone())
            .with_batch_size(rows.max(1))
            .with_coerce_primitive(true)
            .with_ignore_type_conflicts(lenient)
            .build_decoder()
    }

    /// A line that is not JSON, for its message: [`shown`], or withheld when a column's values
    /// may never be shown.
    fn line_text(&self, raw: &[u8]) -> String {
        if self.withhold_lines {
            "(line withheld: the contract has x-pii or x-pci pan columns)".to_string()
        } else {
            shown(raw)
        }
    }

    /// What a quarantine message may show of a value of column `name`.
    fn value_text(&self, name: &str, text: &str) -> String {
        let withhold = self
            .columns
            .iter()
            .any(|c| c.withhold && c.name.as_ref() == name);
        if withhold {
            "(value withheld: x-pii or x-pci column)".to_string()
        } else {
            shown(text.as_bytes())
        }
    }
}

/// Decodes one unit's lines into batches of the projected columns.
struct UnitDecoder {
    bytes: Vec<u8>,
    pos: usize,
    /// The line number at `pos`.
    line: u64,
    unit: Unit,
    /// Rows of the unit read so far.
    index: usize,
    keep: Option<BooleanBuffer>,
    /// The unit's rows whose line serde_json rejected at open.
    rejected: BooleanBuffer,
    plan: Arc<Plan>,
    batch_size: usize,
    /// The current batch's lines: byte range in `bytes`, line number, rejected at open.
    lines: Vec<Line>,
}

/// One line of a batch.
#[derive(Clone, Copy)]
struct Line {
    start: usize,
    end: usize,
    number: u64,
    rejected: bool,
}

impl UnitDecoder {
    /// The next row's line (range and number), skipping blank lines; `None` at the unit's end.
    fn next_line(&mut self) -> Option<(usize, usize, u64)> {
        while self.pos < self.bytes.len() {
            let start = self.pos;
            let end = memchr::memchr(b'\n', &self.bytes[start..])
                .map_or(self.bytes.len(), |i| start + i + 1);
            self.pos = end;
            let line = self.line;
            self.line += 1;
            let mut from = start;
            if self.unit.start == 0 && start == 0 && self.bytes.starts_with(BOM) {
                from += BOM.len();
            }
            if !blank(&self.bytes[from..end]) {
                return Some((from, end, line));
            }
        }
        None
    }

    /// Decodes the batch's lines at once; `None` when any of them fails.
    fn decode_all(&self) -> Option<RecordBatch> {
        if self.lines.iter().any(|l| l.rejected) {
            return None;
        }
        let mut d = self.plan.decoder(self.lines.len(), false).ok()?;
        for (i, l) in self.lines.iter().enumerate() {
            let line = &self.bytes[l.start..l.end];
            // One whole object per line: the decoder's state never carries into the next.
            if d.decode(line).ok()? != line.len() || d.has_partial_record() || d.len() != i + 1 {
                return None;
            }
        }
        d.flush().ok()?.filter(|b| b.num_rows() == self.lines.len())
    }

    /// Decodes the batch line by line: the rows that failed get a [`RowFailure`] and nulls
    /// where they could not be read.
    fn decode_each(
        &self,
        failures: &mut Vec<RowFailure>,
    ) -> std::result::Result<RecordBatch, ArrowError> {
        let mut out = self.plan.decoder(self.lines.len(), true)?;
        for (row, l) in self.lines.iter().enumerate() {
            let raw = &self.bytes[l.start..l.end];
            let failure = if l.rejected {
                Some(self.rejected_line(raw, l.number))
            } else {
                self.check_line(raw, l.number)
            };
            let fits = match &failure {
                Some(f) => f.rule == rule_name::TYPE,
                None => true,
            };
            out.decode(if fits { raw } else { b"{}" })?;
            if let Some(mut f) = failure {
                f.row = row;
                failures.push(f);
            }
        }
        match out.flush()? {
            Some(b) if b.num_rows() == self.lines.len() => Ok(b),
            _ => Err(ArrowError::JsonError(
                "lines decoded alone do not add up to the batch".into(),
            )),
        }
    }

    /// Why serde_json rejected `raw` (line `line`) at open: not UTF-8, not JSON, or not one
    /// object. serde_json's syntax errors name a position, never a value.
    fn rejected_line(&self, raw: &[u8], line: u64) -> RowFailure {
        let (rule, what) = if std::str::from_utf8(raw).is_err() {
            (rule_name::UTF8, "not valid UTF-8".to_string())
        } else if too_deep(raw) {
            (
                rule_name::JSON_SYNTAX,
                format!("arrays and objects nested deeper than {MAX_DEPTH}"),
            )
        } else {
            let mut de = serde_json::Deserializer::from_slice(raw);
            match IgnoredAny::deserialize(&mut de).and_then(|_| de.end()) {
                Err(e) => (rule_name::JSON_SYNTAX, format!("not one JSON value ({e})")),
                Ok(()) => (rule_name::JSON_SYNTAX, "not a JSON object".to_string()),
            }
        };
        RowFailure {
            row: 0,
            rule,
            column: "".into(),
            message: format!("line {line}: {what}: {}", self.plan.line_text(raw)),
        }
    }

    /// Why `raw` (line `line`) cannot be decoded alone, if it cannot.
    fn check_line(&self, raw: &[u8], line: u64) -> Option<RowFailure> {
        let fail = |rule, column: &str, message: String| {
            Some(RowFailure {
                row: 0,
                rule,
                column: column.into(),
                message,
            })
        };
        if std::str::from_utf8(raw).is_err() {
            return fail(
                rule_name::UTF8,
                "",
                format!("line {line}: not valid UTF-8: {}", self.plan.line_text(raw)),
            );
        }
        let syntax = |what: &str| {
            fail(
                rule_name::JSON_SYNTAX,
                "",
                format!("line {line}: {what}: {}", self.plan.line_text(raw)),
            )
        };
        if raw.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return syntax("not a JSON object");
        }
        let mut d = match self.plan.decoder(1, false) {
            Ok(d) => d,
            Err(e) => return syntax(&e.to_string()),
        };
        match d.decode(raw) {
            Ok(n) if n == raw.len() => {}
            Ok(_) => return syntax("more than one JSON value on the line"),
            Err(e) => {
                return syntax(&format!(
                    "not valid JSON ({})",
                    shown(e.to_string().as_bytes())
                ))
            }
        }
        if d.has_partial_record() {
            return syntax("the JSON object is not closed");
        }
        match d.flush() {
            Ok(Some(b)) if b.num_rows() == 1 => None,
            Ok(_) => syntax("more than one JSON value on the line"),
            Err(e) => {
                let e = e.to_string();
                let (column, what) = match e.split_once(FIELD_ERROR) {
                    Some((_, rest)) => match rest.split_once("': ") {
                        Some((name, what)) => (name, what),
                        None => ("", rest),
                    },
                    None => ("", e.as_str()),
                };
                // Integers are decoded as text: arrow-json then says "expected string".
                let integer = self
                    .plan
                    .columns
                    .iter()
                    .any(|c| c.ty == DataType::Int64 && c.name.as_ref() == column);
                let what = self.plan.value_text(column, what);
                let what = match integer {
                    true => format!("not an integer ({what})"),
                    false => what,
                };
                fail(
                    rule_name::TYPE,
                    column,
                    format!("line {line}: field `{column}`: {what}"),
                )
            }
        }
    }

    /// The batch's columns from what arrow-json decoded: implied columns filled, integers
    /// parsed from their text (a failure recorded per row).
    fn columns(
        &self,
        decoded: RecordBatch,
        failures: &mut Vec<RowFailure>,
    ) -> std::result::Result<Vec<ArrayRef>, ArrowError> {
        let n = self.lines.len();
        let mut decoded = decoded.columns().iter();
        let mut out = Vec::with_capacity(self.plan.projection.len());
        for &c in &self.plan.projection {
            let col = &self.plan.columns[c];
            if col.implied {
                out.push(Arc::new(StringArray::from(vec!["I"; n])) as ArrayRef);
                continue;
            }
            let array = decoded
                .next()
                .ok_or_else(|| ArrowError::JsonError("a decoded column is missing".into()))?;
            if col.ty == DataType::Float64 {
                out.push(self.finite(col, array, failures));
                continue;
            }
            if col.ty != DataType::Int64 {
                out.push(array.clone());
                continue;
            }
            let text = array.as_string::<i32>();
            let mut ints = Int64Builder::with_capacity(n);
            for row in 0..n {
                if text.is_null(row) {
                    ints.append_null();
                    continue;
                }
                let v = text.value(row);
                match v.parse::<i64>() {
                    Ok(x) => ints.append_value(x),
                    Err(_) => {
                        ints.append_null();
                        failures.push(RowFailure {
                            row,
                            rule: rule_name::TYPE,
                            column: col.name.clone(),
                            message: format!(
                                "line {}: `{}` is not an integer",
                                self.lines[row].number,
                                self.plan.value_text(&col.name, v)
                            ),
                        });
                    }
                }
            }
            out.push(Arc::new(ints.finish()));
        }
        Ok(out)
    }
}

impl UnitDecoder {
    /// A number column with its non-finite values (`"NaN"`, `"inf"`, `1e999`) null and each
    /// a `type` failure.
    fn finite(&self, col: &Column, array: &ArrayRef, failures: &mut Vec<RowFailure>) -> ArrayRef {
        let values = array.as_primitive::<arrow::datatypes::Float64Type>();
        if values.iter().flatten().all(f64::is_finite) {
            return array.clone();
        }
        let mut out = Float64Builder::with_capacity(values.len());
        for (row, v) in values.iter().enumerate() {
            match v {
                Some(x) if !x.is_finite() => {
                    out.append_null();
                    failures.push(RowFailure {
                        row,
                        rule: rule_name::TYPE,
                        column: col.name.clone(),
                        message: format!(
                            "line {}: `{x}` is not a finite number",
                            self.lines[row].number
                        ),
                    });
                }
                v => out.append_option(v),
            }
        }
        Arc::new(out.finish())
    }
}

impl Iterator for UnitDecoder {
    type Item = std::result::Result<Decoded, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.lines.clear();
        while self.lines.len() < self.batch_size && self.index < self.unit.rows {
            let Some((start, end, number)) = self.next_line() else {
                break;
            };
            let i = self.index;
            self.index += 1;
            if self.keep.as_ref().is_none_or(|k| k.value(i)) {
                self.lines.push(Line {
                    start,
                    end,
                    number,
                    rejected: self.rejected.value(i),
                });
            }
        }
        if self.lines.is_empty() {
            return None;
        }
        let mut failures = Vec::new();
        let decoded = if self.plan.decode_schema.fields().is_empty() {
            RecordBatch::try_new_with_options(
                self.plan.decode_schema.clone(),
                Vec::new(),
                &arrow::array::RecordBatchOptions::new().with_row_count(Some(self.lines.len())),
            )
        } else {
            match self.decode_all() {
                Some(b) => Ok(b),
                None => self.decode_each(&mut failures),
            }
        };
        let result = decoded
            .and_then(|d| self.columns(d, &mut failures))
            .and_then(|arrays| RecordBatch::try_new(self.plan.schema.clone(), arrays));
        failures.sort_by_key(|f| f.row);
        Some(result.map(|batch| Decoded {
            batch,
            failures,
            carried: Vec::new(),
            origin: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Float64Array, Int64Array};

    use super::super::csv::tests::{decoding_with, read_back_with};
    use super::*;
    use crate::source::CsvOptions;

    #[test]
    fn fields_by_name_extra_fields_inferred_and_bad_lines_kept_as_rows() {
        let text = concat!(
            "\u{feff}{\"i\": 1, \"s\": \"a\", \"ctx\": {\"ip\": \"10.0.0.1\"}}\n",
            "\r\n",
            "{\"x\": 2, \"i\": \"2\", \"b\": true, \"s\": 7}\r\n",
            "{\"i\": 2.5}\n",
            "{\"i\": 4, \"ctx\": \"not an object\"}\n",
            "{\"i\": 5\n",
            "{\"i\": 7 \"s\": \"a missing comma\"}\n",
        );
        let deep = format!("{{\"s\": {}1{}}}\n", "[".repeat(50_000), "]".repeat(50_000));
        let text = format!("{text}{deep}{{\"x\": \"NaN\"}}\n{{\"i\": 6}}");
        let (batches, failures) = read_back_with(
            text.as_bytes(),
            "x.ndjson",
            &decoding_with(CsvOptions::default()),
        );
        let b = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
        let names: Vec<&str> = b
            .schema_ref()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(names, ["s", "i", "x", "b", "ctx"]);
        assert!(matches!(b.column(4).data_type(), DataType::Struct(_)));
        let i = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(
            i.iter().collect::<Vec<_>>(),
            [
                Some(1),
                Some(2),
                None,
                Some(4),
                None,
                None,
                None,
                None,
                Some(6)
            ]
        );
        let s = b.column(0).as_string::<i32>();
        assert_eq!(s.value(0), "a");
        assert_eq!(
            s.value(1),
            "7",
            "a number in a string column reads as its text"
        );
        let x = b.column(2).as_any().downcast_ref::<Float64Array>().unwrap();
        assert_eq!(x.value(1), 2.0);
        let got: Vec<(usize, &str, &str)> = failures
            .iter()
            .map(|f| (f.row, f.rule, f.column.as_ref()))
            .collect();
        assert_eq!(
            got,
            [
                (2, rule_name::TYPE, "i"),
                (3, rule_name::TYPE, "ctx"),
                (4, rule_name::JSON_SYNTAX, ""),
                (5, rule_name::JSON_SYNTAX, ""),
                (6, rule_name::JSON_SYNTAX, ""),
                (0, rule_name::TYPE, "x"),
            ]
        );
        assert!(
            failures[4].message.contains("nested deeper than 128"),
            "{}",
            failures[4].message
        );
        assert!(
            failures[0].message.starts_with("line 4: `2.5`"),
            "{}",
            failures[0].message
        );
        assert!(
            failures[1].message.starts_with("line 5: field `ctx`"),
            "{}",
            failures[1].message
        );
        assert!(
            failures[2].message.starts_with("line 6:"),
            "{}",
            failures[2].message
        );
    }
}
