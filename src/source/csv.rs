//! DMS CSV, the second input format: objects named `*.csv` or `*.csv.gz`, read the way the DMS
//! S3 target writes them by default (no header, `,` between fields, `\n` after records, RFC 4180
//! quoting, an unquoted empty field is null and a quoted `""` an empty string), each setting
//! overridable ([`CsvOptions`]).
//!
//! A CSV object says nothing about itself up front, so [`open`] streams it once: records are
//! split by `csv-core` (quotes, doubled quotes, delimiters and newlines inside quotes), counted,
//! and cut into work units of at most [`UNIT_ROWS`] records or [`UNIT_BYTES`] bytes, each
//! remembered by its byte range (of the decompressed stream for `.gz`), first row and first
//! line. The columns come from the contract ([`Decoding`]): the CDC operation column first,
//! then the other properties in declaration order, then the configured timestamp column. The
//! operation column is present or not by the field count of the object's first records: DMS
//! writes it in CDC files and leaves it out of full-load (`LOAD…`) files, so a count one short
//! of the contract's is a full load, whose rows are inserts: its operation column reads `I`
//! (what `IncludeOpForFullLoad=true` would have written). With a header (`AddColumnName=true`)
//! the header names the columns instead.
//!
//! [`row_groups`] streams the object again and decodes each unit on the consumer's thread into
//! Arrow arrays of the contract's types, only the requested columns and rows. A line that cannot
//! be decoded stays a row: its values are null where they could not be read and the row carries
//! a [`RowFailure`] (`csv_fields`, `csv_quote`, `utf8` or `type`, with its line number and the
//! line or value as text, card numbers masked; values of x-pii and x-pci pan columns withheld,
//! and a line that cannot be split withheld whole when the contract has such columns; a record
//! over [`MAX_RECORD_BYTES`] fails the object), so validation
//! quarantines it and conservation counts it. A quote left open swallows the rest of the object
//! into one such row (there is no other reading of it).
//!
//! Units cannot be found by seeking to a byte offset and looking for a newline, because a
//! newline may sit inside a quoted value: that is why the object is read once whole at open.

use std::io::BufRead;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
};
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use csv_core::{ReadFieldResult, ReadRecordResult, Terminator};
use tokio::sync::mpsc;

use super::text::{io_error, shown, stream, Source, Unit, UNIT_BYTES, UNIT_ROWS};
use super::{Decoded, Decoder, InputObject, Read, RowFailure, RowGroup};
use crate::contract::{rule_name, Contract, Pci};
use crate::{Error, Result};

/// Records whose field count decides whether the operation column is present.
const SAMPLE_RECORDS: usize = 1000;
/// Longest record accepted, in bytes: a longer one (a quote left open near the start of a huge
/// object) makes the object a file-level error instead of one row holding the rest of it.
pub const MAX_RECORD_BYTES: usize = 64 << 20;

/// The CSV dialect, DMS's S3 target settings with their defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvOptions {
    /// `CsvDelimiter`.
    pub delimiter: u8,
    /// `CsvNullValue`: an unquoted field equal to it is null (an unquoted empty field always is).
    pub null_value: Option<String>,
    /// `AddColumnName`: the first record names the columns.
    pub header: bool,
    /// `TimestampColumnName`: an extra last column of that name.
    pub timestamp_column: Option<String>,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            delimiter: b',',
            null_value: None,
            header: false,
            timestamp_column: None,
        }
    }
}

/// How a job's text inputs are decoded: the contract gives their columns and types.
#[derive(Debug, Clone)]
pub struct Decoding {
    pub contract: Arc<Contract>,
    pub csv: CsvOptions,
}

/// True when `name` is a CSV object (`.csv`, `.csv.gz`).
pub fn is_csv(name: &str) -> bool {
    name.ends_with(".csv") || name.ends_with(".csv.gz")
}

/// One field of the object's records (for NDJSON, one field name of its objects).
#[derive(Debug)]
pub(super) struct Column {
    pub(super) name: Arc<str>,
    pub(super) ty: DataType,
    /// Its values are never shown in messages (x-pii, x-pci pan).
    pub(super) withhold: bool,
    /// The operation column of a full load, which its records do not hold: `I` on every row.
    pub(super) implied: bool,
}

/// What [`open`] learnt about a CSV object.
#[derive(Debug, Clone)]
pub(super) struct CsvMeta {
    schema: SchemaRef,
    columns: Arc<Vec<Column>>,
    units: Arc<Vec<Unit>>,
    rows: u64,
    options: CsvOptions,
}

impl CsvMeta {
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

fn reader(options: &CsvOptions) -> csv_core::Reader {
    csv_core::ReaderBuilder::new()
        .delimiter(options.delimiter)
        .terminator(Terminator::Any(b'\n'))
        .build()
}

/// One record split by `csv-core`: its fields unescaped in `out`, field ends in `ends`.
#[derive(Default)]
struct RecordBuf {
    out: Vec<u8>,
    ends: Vec<usize>,
    fields: usize,
}

impl RecordBuf {
    fn new() -> Self {
        RecordBuf {
            out: vec![0; 4096],
            ends: vec![0; 64],
            fields: 0,
        }
    }

    fn field(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.out[start..self.ends[i]]
    }

    /// Reads the next record from `input` (`at_end`: nothing follows it). Returns the bytes
    /// consumed and whether a record was read; `None` when more input is needed.
    fn read(
        &mut self,
        core: &mut csv_core::Reader,
        input: &[u8],
        nout: &mut usize,
        nend: &mut usize,
    ) -> (Option<bool>, usize) {
        let mut used = 0;
        loop {
            let (res, nin, o, e) = core.read_record(
                &input[used..],
                &mut self.out[*nout..],
                &mut self.ends[*nend..],
            );
            used += nin;
            *nout += o;
            *nend += e;
            match res {
                ReadRecordResult::InputEmpty => return (None, used),
                ReadRecordResult::OutputFull => {
                    let n = self.out.len();
                    self.out.resize(n * 2, 0);
                }
                ReadRecordResult::OutputEndsFull => {
                    let n = self.ends.len();
                    self.ends.resize(n * 2, 0);
                }
                ReadRecordResult::Record => {
                    self.fields = *nend;
                    return (Some(true), used);
                }
                ReadRecordResult::End => return (Some(false), used),
            }
        }
    }
}

/// Record scanning over a stream, for [`open`].
struct Scanner {
    src: Box<dyn BufRead + Send>,
    core: csv_core::Reader,
    record: RecordBuf,
    offset: u64,
    eof: bool,
}

impl Scanner {
    /// The next record: its line, its end offset; `None` at the end.
    fn next(&mut self) -> std::io::Result<Option<(u64, u64)>> {
        let line = self.core.line();
        let (mut nout, mut nend) = (0, 0);
        loop {
            let buf: &[u8] = if self.eof { &[] } else { self.src.fill_buf()? };
            let at_end = buf.is_empty();
            let (done, used) = self.record.read(&mut self.core, buf, &mut nout, &mut nend);
            self.offset += used as u64;
            if !at_end {
                self.src.consume(used);
            } else {
                self.eof = true;
            }
            if self.record.out.len() > MAX_RECORD_BYTES {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "the record starting at line {line} is longer than {} MiB (a quote left \
                         open?)",
                        MAX_RECORD_BYTES >> 20
                    ),
                ));
            }
            match done {
                Some(true) => return Ok(Some((line, self.offset))),
                Some(false) => return Ok(None),
                None if at_end => return Ok(None),
                None => {}
            }
        }
    }
}

/// The record layout when the object has no header: the operation column (if `with_op`), the
/// other contract properties in order, the timestamp column.
fn contract_layout(contract: &Contract, options: &CsvOptions, with_op: bool) -> Vec<Column> {
    let ts = options.timestamp_column.as_deref();
    let op = contract.cdc_op.as_deref();
    let mut cols = Vec::new();
    if let (true, Some(op)) = (with_op, op) {
        cols.push(column(contract, op));
    }
    for c in &contract.columns {
        if Some(c.name.as_str()) != op && Some(c.name.as_str()) != ts {
            cols.push(column(contract, &c.name));
        }
    }
    if let Some(ts) = ts {
        cols.push(column(contract, ts));
    }
    cols
}

/// The column `name`: the contract's type, a string when the contract does not declare it.
pub(super) fn column(contract: &Contract, name: &str) -> Column {
    let spec = contract.column(name);
    Column {
        name: name.into(),
        ty: spec.map_or(DataType::Utf8, |c| c.ty.arrow_type()),
        withhold: spec.is_some_and(|c| c.pii.is_some() || c.pci == Pci::Pan),
        implied: false,
    }
}

/// Reads `object` once and learns its layout, rows and units.
pub(super) async fn open(object: &InputObject, decoding: &Decoding) -> Result<CsvMeta> {
    let src = Source::start(object);
    let url = object.location.url.clone();
    let decoding = decoding.clone();
    tokio::task::spawn_blocking(move || scan(&url, src.reader(), &decoding))
        .await
        .map_err(|e| Error::Internal(format!("CSV scan panicked: {e}")))?
}

fn scan(url: &str, src: Box<dyn BufRead + Send>, decoding: &Decoding) -> Result<CsvMeta> {
    let options = &decoding.csv;
    let mut s = Scanner {
        src,
        core: reader(options),
        record: RecordBuf::new(),
        offset: 0,
        eof: false,
    };
    let next = |s: &mut Scanner| s.next().map_err(|e| io_error(url, e));
    let header = if options.header {
        match next(&mut s)? {
            Some(_) => Some(
                (0..s.record.fields)
                    .map(|i| String::from_utf8_lossy(s.record.field(i)).into_owned())
                    .collect::<Vec<_>>(),
            ),
            None => return Err(Error::bad_input(url, "empty CSV object: no header line")),
        }
    } else {
        None
    };
    let mut units: Vec<Unit> = Vec::new();
    let mut counts: Vec<usize> = Vec::new();
    let mut rows = 0u64;
    let mut start = s.offset;
    while let Some((line, end)) = next(&mut s)? {
        if counts.len() < SAMPLE_RECORDS {
            counts.push(s.record.fields);
        }
        match units.last_mut() {
            Some(u) if u.rows < UNIT_ROWS && end - u.start <= UNIT_BYTES => {
                u.rows += 1;
                u.end = end;
            }
            _ => units.push(Unit {
                first_row: rows,
                rows: 1,
                start,
                end,
                first_line: line,
            }),
        }
        rows += 1;
        start = end;
    }
    let mut columns = match header {
        Some(names) => header_layout(url, &decoding.contract, options, &names)?,
        None => sampled_layout(url, &decoding.contract, options, &counts)?,
    };
    if let Some(op) = &decoding.contract.cdc_op {
        if !columns.iter().any(|c| *c.name == **op) {
            columns.insert(
                0,
                Column {
                    implied: true,
                    ..column(&decoding.contract, op)
                },
            );
        }
    }
    let fields: Vec<Field> = columns
        .iter()
        .map(|c| Field::new(c.name.as_ref(), c.ty.clone(), true))
        .collect();
    Ok(CsvMeta {
        schema: Arc::new(Schema::new(fields)),
        columns: Arc::new(columns),
        units: Arc::new(units),
        rows,
        options: options.clone(),
    })
}

/// The layout a header names: contract columns by name, others as strings.
fn header_layout(
    url: &str,
    contract: &Contract,
    options: &CsvOptions,
    names: &[String],
) -> Result<Vec<Column>> {
    let mut seen = std::collections::HashSet::new();
    for n in names {
        if n.is_empty() {
            return Err(Error::bad_input(url, "the header has an empty column name"));
        }
        if !seen.insert(n.as_str()) {
            return Err(Error::bad_input(
                url,
                format!("the header names column `{n}` twice"),
            ));
        }
    }
    if let Some(ts) = &options.timestamp_column {
        if names.last() != Some(ts) {
            return Err(Error::bad_input(
                url,
                format!("the header's last column is not the timestamp column `{ts}`"),
            ));
        }
    }
    Ok(names.iter().map(|n| column(contract, n)).collect())
}

/// The layout without a header: with or without the operation column, by the most common
/// field count of the first records.
fn sampled_layout(
    url: &str,
    contract: &Contract,
    options: &CsvOptions,
    counts: &[usize],
) -> Result<Vec<Column>> {
    let with_op = contract_layout(contract, options, true);
    let mut tally: std::collections::BTreeMap<usize, usize> = Default::default();
    for &c in counts {
        *tally.entry(c).or_default() += 1;
    }
    let Some((&common, _)) = tally.iter().max_by_key(|(c, n)| (**n, **c)) else {
        return Err(Error::bad_input(url, "empty CSV object: no lines"));
    };
    if common == with_op.len() {
        return Ok(with_op);
    }
    if contract.cdc_op.is_some() && common + 1 == with_op.len() {
        return Ok(contract_layout(contract, options, false));
    }
    let expected = match &contract.cdc_op {
        Some(op) => format!(
            "{} (with `{op}` first, a CDC file) or {} (a full load without it)",
            with_op.len(),
            with_op.len() - 1
        ),
        None => with_op.len().to_string(),
    };
    Err(Error::bad_input(
        url,
        format!(
            "no line has the contract's field count: expected {expected} fields, \
             the first lines mostly have {common}"
        ),
    ))
}

/// Streams the units of the object that hold a row `read` keeps, in order.
pub(super) fn row_groups(
    input: &InputObject,
    meta: &CsvMeta,
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
            let schema = Arc::new(meta.schema.project(&projection)?);
            Ok(move |unit, bytes, keep| -> Decoder {
                Box::new(UnitDecoder {
                    core: reader(&meta.options),
                    bytes,
                    pos: 0,
                    unit,
                    index: 0,
                    keep,
                    columns: meta.columns.clone(),
                    projection: projection.clone(),
                    schema: schema.clone(),
                    batch_size,
                    null_value: meta.options.null_value.clone(),
                    delimiter: meta.options.delimiter,
                    record: RecordBuf::new(),
                    raw: reader(&meta.options),
                    quote_scratch: Vec::new(),
                })
            })
        },
    )
}

/// Decodes one unit's records into batches of the projected columns.
struct UnitDecoder {
    core: csv_core::Reader,
    bytes: Vec<u8>,
    pos: usize,
    unit: Unit,
    /// Records of the unit read so far.
    index: usize,
    keep: Option<BooleanBuffer>,
    columns: Arc<Vec<Column>>,
    projection: Vec<usize>,
    schema: SchemaRef,
    batch_size: usize,
    null_value: Option<String>,
    delimiter: u8,
    record: RecordBuf,
    /// Splits a record's raw bytes into raw fields when it holds quotes.
    raw: csv_core::Reader,
    quote_scratch: Vec<u8>,
}

enum Builder {
    Str(StringBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
}

impl Builder {
    fn new(ty: &DataType, n: usize) -> Builder {
        match ty {
            DataType::Int64 => Builder::Int(Int64Builder::with_capacity(n)),
            DataType::Float64 => Builder::Float(Float64Builder::with_capacity(n)),
            DataType::Boolean => Builder::Bool(BooleanBuilder::with_capacity(n)),
            _ => Builder::Str(StringBuilder::with_capacity(n, n * 16)),
        }
    }

    fn append_null(&mut self) {
        match self {
            Builder::Str(b) => b.append_null(),
            Builder::Int(b) => b.append_null(),
            Builder::Float(b) => b.append_null(),
            Builder::Bool(b) => b.append_null(),
        }
    }

    /// Appends `v`; on failure appends null and returns the rule and what was expected.
    fn append(&mut self, v: &[u8]) -> std::result::Result<(), (&'static str, &'static str)> {
        let Ok(s) = std::str::from_utf8(v) else {
            self.append_null();
            return Err((rule_name::UTF8, "valid UTF-8"));
        };
        let ok = match self {
            Builder::Str(b) => {
                b.append_value(s);
                return Ok(());
            }
            Builder::Int(b) => s.parse::<i64>().map(|x| b.append_value(x)).is_ok(),
            Builder::Float(b) => match s.parse::<f64>() {
                Ok(x) if x.is_finite() => {
                    b.append_value(x);
                    true
                }
                _ => false,
            },
            Builder::Bool(b) => match parse_bool(s) {
                Some(x) => {
                    b.append_value(x);
                    true
                }
                None => false,
            },
        };
        if ok {
            return Ok(());
        }
        self.append_null();
        Err((
            rule_name::TYPE,
            match self {
                Builder::Int(_) => "an integer",
                Builder::Float(_) => "a finite number",
                _ => "a boolean (true/false, t/f, 1/0)",
            },
        ))
    }

    fn finish(self) -> ArrayRef {
        match self {
            Builder::Str(mut b) => Arc::new(b.finish()),
            Builder::Int(mut b) => Arc::new(b.finish()),
            Builder::Float(mut b) => Arc::new(b.finish()),
            Builder::Bool(mut b) => Arc::new(b.finish()),
        }
    }
}

/// Booleans as databases export them: `true`/`false`, `t`/`f`, `1`/`0` (any case).
fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "t" | "1" => Some(true),
        "false" | "f" | "0" => Some(false),
        _ => None,
    }
}

/// How the raw fields of a record holding quotes were written.
enum Quoting {
    /// Per field: written in quotes.
    Fields(Vec<bool>),
    /// A quote inside an unquoted value, or a quoted value not closed.
    Broken,
}

impl UnitDecoder {
    /// A line that could not be split into columns, for its message: [`shown`], or withheld when
    /// a column's values may never be shown (which of its fields they are is unknown).
    fn line_text(&self, raw: &[u8]) -> String {
        if self.columns.iter().any(|c| c.withhold) {
            "(line withheld: the contract has x-pii or x-pci pan columns)".to_string()
        } else {
            shown(raw)
        }
    }

    /// Reads the next record of the unit, returning where its raw bytes start (they end at
    /// `self.pos`).
    fn next_record(&mut self) -> Option<usize> {
        let start = self.pos;
        let (mut nout, mut nend) = (0, 0);
        loop {
            // csv-core drops a byte order mark on its first read of 3 bytes or more: only the
            // object's first unit may start with one, so a later unit's first read is one byte.
            let end = if self.pos == 0 && self.unit.start > 0 {
                self.bytes.len().min(1)
            } else {
                self.bytes.len()
            };
            let input = &self.bytes[self.pos..end];
            let at_end = input.is_empty();
            let (done, used) = self
                .record
                .read(&mut self.core, input, &mut nout, &mut nend);
            self.pos += used;
            match done {
                Some(true) => return Some(start),
                Some(false) => return None,
                None if at_end => return None,
                None => {}
            }
        }
    }

    /// Splits `raw` into its written fields to tell quoted values (a quoted `""` is an empty
    /// string, an unquoted empty field null) and broken quoting apart.
    fn quoting(&mut self, raw: &[u8], object_start: bool) -> Quoting {
        self.raw.reset();
        // As in `next_record`: a byte order mark is dropped at the object's start only.
        let raw = match raw.strip_prefix(b"\xef\xbb\xbf") {
            Some(rest) if object_start => rest,
            _ => raw,
        };
        if raw.starts_with(b"\xef\xbb\xbf") {
            return Quoting::Broken;
        }
        self.quote_scratch.resize(raw.len() + 1, 0);
        let (mut at, mut field_start) = (0, 0);
        let mut quoted = Vec::new();
        loop {
            let (res, nin, _) = self.raw.read_field(&raw[at..], &mut self.quote_scratch);
            at += nin;
            let record_end = match res {
                ReadFieldResult::Field { record_end } => record_end,
                ReadFieldResult::End => return Quoting::Fields(quoted),
                ReadFieldResult::InputEmpty | ReadFieldResult::OutputFull => continue,
            };
            let mut field = &raw[field_start..at];
            field_start = at;
            if quoted.is_empty() {
                while let [b'\n' | b'\r', rest @ ..] = field {
                    field = rest;
                }
            }
            if let [rest @ .., last] = field {
                if *last == b'\n' || *last == self.delimiter {
                    field = rest;
                }
            }
            match field.strip_prefix(b"\"") {
                Some(inner) => match inner.strip_suffix(b"\"") {
                    Some(inner) if pairs_only(inner) => quoted.push(true),
                    _ => return Quoting::Broken,
                },
                None if field.contains(&b'"') => return Quoting::Broken,
                None => quoted.push(false),
            }
            if record_end {
                return Quoting::Fields(quoted);
            }
        }
    }
}

/// True when every quote in `inner` (a quoted value without its outer quotes) is doubled.
fn pairs_only(inner: &[u8]) -> bool {
    let mut i = 0;
    while i < inner.len() {
        if inner[i] == b'"' {
            if inner.get(i + 1) != Some(&b'"') {
                return false;
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    true
}

impl Iterator for UnitDecoder {
    type Item = std::result::Result<Decoded, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut builders: Vec<Builder> = self
            .projection
            .iter()
            .map(|&c| Builder::new(&self.columns[c].ty, self.batch_size))
            .collect();
        let mut failures = Vec::new();
        let mut n = 0usize;
        // A full load's implied operation column is the first and holds no field.
        let implied = usize::from(self.columns.first().is_some_and(|c| c.implied));
        let expected = self.columns.len() - implied;
        while n < self.batch_size && self.index < self.unit.rows {
            let line = self.core.line() + self.unit.first_line - 1;
            let Some(start) = self.next_record() else {
                break;
            };
            let i = self.index;
            self.index += 1;
            if self.keep.as_ref().is_some_and(|k| !k.value(i)) {
                continue;
            }
            let raw_end = self.pos;
            let raw = std::mem::take(&mut self.bytes);
            let record_raw = &raw[start..raw_end];
            // csv-core skips blank lines before a record as part of it.
            let line = line + record_raw.iter().take_while(|&&b| b == b'\n').count() as u64;
            let quoting = if record_raw.contains(&b'"') {
                self.quoting(record_raw, self.unit.start == 0 && start == 0)
            } else {
                Quoting::Fields(Vec::new())
            };
            let broken = match (&quoting, self.record.fields) {
                (Quoting::Broken, _) => Some((
                    rule_name::CSV_QUOTE,
                    format!(
                        "line {line}: a quote inside an unquoted value or a quoted value not \
                         closed: {}",
                        self.line_text(record_raw)
                    ),
                )),
                (_, f) if f != expected => Some((
                    rule_name::CSV_FIELDS,
                    format!(
                        "line {line}: {f} fields, expected {expected}: {}",
                        self.line_text(record_raw)
                    ),
                )),
                _ => None,
            };
            if let Some((rule, message)) = broken {
                builders.iter_mut().for_each(Builder::append_null);
                failures.push(RowFailure {
                    row: n,
                    rule,
                    column: "".into(),
                    message,
                });
            } else {
                for (b, &c) in builders.iter_mut().zip(&self.projection) {
                    if self.columns[c].implied {
                        let _ = b.append(b"I");
                        continue;
                    }
                    let field = c - implied;
                    let v = self.record.field(field);
                    let quoted =
                        matches!(&quoting, Quoting::Fields(q) if q.get(field) == Some(&true));
                    let null = !quoted
                        && (v.is_empty()
                            || self.null_value.as_deref().map(str::as_bytes) == Some(v));
                    if null {
                        b.append_null();
                        continue;
                    }
                    if let Err((rule, what)) = b.append(v) {
                        let col = &self.columns[c];
                        let value = if col.withhold {
                            "(value withheld: x-pii or x-pci column)".to_string()
                        } else {
                            format!("`{}`", shown(v))
                        };
                        failures.push(RowFailure {
                            row: n,
                            rule,
                            column: col.name.clone(),
                            message: format!("line {line}: {value} is not {what}"),
                        });
                    }
                }
            }
            self.bytes = raw;
            n += 1;
        }
        if n == 0 {
            return None;
        }
        let arrays: Vec<ArrayRef> = builders.into_iter().map(Builder::finish).collect();
        Some(
            RecordBatch::try_new(self.schema.clone(), arrays).map(|batch| Decoded {
                batch,
                failures,
                carried: Vec::new(),
                origin: None,
            }),
        )
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use arrow::array::{BooleanArray, Float64Array, Int64Array, StringArray};
    use proptest::prelude::*;

    use crate::store::Location;

    fn decoding() -> Decoding {
        decoding_with(CsvOptions::default())
    }

    pub(in crate::source) fn decoding_with(csv: CsvOptions) -> Decoding {
        let contract = Contract::from_json_str(
            "t.json",
            r#"{"title": "t", "type": "object", "properties": {
                "s": {"type": ["string", "null"]}, "i": {"type": ["integer", "null"]},
                "x": {"type": ["number", "null"]}, "b": {"type": ["boolean", "null"]}}}"#,
        )
        .unwrap();
        Decoding {
            contract: Arc::new(contract),
            csv,
        }
    }

    /// Writes `bytes` as `name` in a temporary directory, opens it and reads every row back.
    fn read_back(bytes: &[u8], name: &str) -> (Vec<RecordBatch>, Vec<RowFailure>) {
        read_back_with(bytes, name, &decoding())
    }

    /// Writes `bytes` as `name`, opens it as a raw input and decodes every row, 7 to a batch.
    pub(in crate::source) fn read_back_with(
        bytes: &[u8],
        name: &str,
        decoding: &Decoding,
    ) -> (Vec<RecordBatch>, Vec<RowFailure>) {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let location = Location::parse(path.to_str().unwrap()).unwrap();
            let object = InputObject {
                location,
                size: bytes.len() as u64,
            };
            let input = super::super::Input::open_raw(object, decoding)
                .await
                .unwrap();
            let mut units = input.read(Read {
                batch_size: 7,
                keep: None,
                columns: None,
                read_ahead: 1,
            });
            let (mut batches, mut failures) = (Vec::new(), Vec::new());
            while let Some(unit) = units.recv().await {
                let mut unit = unit.unwrap();
                while let Some(d) = unit.next_decoded("t").unwrap() {
                    batches.push(d.batch);
                    failures.extend(d.failures);
                }
            }
            (batches, failures)
        })
    }

    fn text() -> impl Strategy<Value = Option<String>> {
        prop::option::of("[a-z0-9 ,;\"\n\ré漢]{0,12}")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Any table the generator writes as CSV reads back as the same values: nulls, empty
        /// strings, delimiters, quotes, newlines and non-ASCII text inside values.
        #[test]
        fn generated_csv_reads_back_as_the_same_values(
            rows in prop::collection::vec(
                (text(), any::<Option<i64>>(), prop::option::of(-1e12f64..1e12), any::<Option<bool>>()),
                1..60,
            ),
            gzip in any::<bool>(),
        ) {
            let schema = decoding();
            let fields: Vec<Field> = ["s", "i", "x", "b"]
                .iter()
                .map(|n| {
                    let ty = schema.contract.column(n).unwrap().ty.arrow_type();
                    Field::new(*n, ty, true)
                })
                .collect();
            let batch = RecordBatch::try_new(
                Arc::new(Schema::new(fields)),
                vec![
                    Arc::new(StringArray::from_iter(rows.iter().map(|r| r.0.clone()))),
                    Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.1))),
                    Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.2))),
                    Arc::new(BooleanArray::from_iter(rows.iter().map(|r| r.3))),
                ],
            )
            .unwrap();
            let bytes = crate::generate::to_csv(&batch, gzip).unwrap();
            let name = if gzip { "x.csv.gz" } else { "x.csv" };
            let (batches, failures) = read_back(&bytes, name);
            prop_assert!(failures.is_empty(), "{failures:?}");
            let back = arrow::compute::concat_batches(&batch.schema(), &batches).unwrap();
            for c in 0..4 {
                prop_assert_eq!(back.column(c).to_data(), batch.column(c).to_data());
            }
        }
    }

    #[test]
    fn units_split_large_objects_at_record_boundaries() {
        let line = "\"a\nb\",7,1.5,t\n";
        let n = UNIT_ROWS + 10;
        let (batches, failures) = read_back(line.repeat(n).as_bytes(), "x.csv");
        assert!(failures.is_empty(), "{failures:?}");
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows, n);
        for b in &batches {
            let s = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
            let i = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
            assert!(s.iter().all(|v| v == Some("a\nb")));
            assert!(i.iter().all(|v| v == Some(7)));
        }
    }

    #[test]
    fn the_configured_delimiter_splits_quoted_values_and_bad_lines_name_their_line() {
        let options = CsvOptions {
            delimiter: b';',
            ..CsvOptions::default()
        };
        let text = "\"a;b\";1;2.5;t\n\"x\"\"y\";;;\n\n\n4111111111111111;1\n";
        let (batches, failures) = read_back_with(text.as_bytes(), "x.csv", &decoding_with(options));
        let b = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
        let s = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
        let i = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            [Some("a;b"), Some("x\"y"), None]
        );
        assert_eq!(i.iter().collect::<Vec<_>>(), [Some(1), None, None]);
        assert_eq!(failures.len(), 1, "{failures:?}");
        let f = &failures[0];
        assert_eq!((f.row, f.rule), (2, rule_name::CSV_FIELDS));
        assert_eq!(
            f.message,
            "line 5: 2 fields, expected 4: ************1111;1"
        );
    }
}
