//! Inputs: the objects of a job and what the passes need from each, whatever its format.
//!
//! [`resolve`] turns input URLs into the ordered list of objects of a job (a URL may name one
//! object or a prefix). [`Input::open`] reads what a format says about an object up front (for
//! Parquet the footer, one ranged GET with a 64 KiB prefetch) and normalises its schema, so
//! `LargeUtf8` and `Utf8View` arrive as `Utf8` and every later stage handles one string type.
//! An [`Input`] then offers the job its schema, its row count, its work units and
//! [`Input::read`]: the units fetched on a tokio task ahead of the consumer through a bounded
//! channel (while the pipeline decodes and checks one, the next `read_ahead` are being
//! fetched, and no more), each decoding only the columns and rows asked for.
//!
//! The passes see only this interface, so a new format is a new [`Format`] variant and its
//! module ([`parquet`], [`csv`] for DMS CSV, [`json`] for NDJSON, sharing [`text`]); nothing here validates, deduplicates or writes. A
//! text format decodes into the contract's types, and a line it cannot decode is still a row:
//! its batch carries a [`RowFailure`] for it, which validation turns into a quarantine reason.
mod csv;
mod json;
mod parquet;
mod text;

use std::sync::Arc;

use ::parquet::arrow::arrow_reader::ArrowReaderMetadata;
use arrow::array::RecordBatch;
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt};
use tokio::sync::mpsc;

use crate::store::{store_error, Location};
use crate::{Error, Result};

pub use csv::{is_csv, CsvOptions, Decoding};

/// One input object of a job.
#[derive(Debug, Clone)]
pub struct InputObject {
    pub location: Location,
    pub size: u64,
}

/// True when `object`, listed under `prefix`, is not data: its name or a directory between the
/// prefix and it starts with `_` or `.` (`_SUCCESS`, `_temporary/`, `.hidden/`, edp's own
/// `_quarantine/` when an output lies under the input).
fn hidden(prefix: &Path, object: &Path) -> bool {
    let below: Vec<_> = match object.prefix_match(prefix) {
        Some(parts) => parts.collect(),
        None => object.parts().collect(),
    };
    below.iter().any(|p| {
        let p = p.as_ref();
        p.starts_with('_') || p.starts_with('.')
    })
}

/// Job order of objects: full-load files (`LOAD…`) first, then the rest, each in name order.
fn job_order(a: &ObjectMeta, b: &ObjectMeta) -> std::cmp::Ordering {
    let load = |m: &ObjectMeta| !m.location.filename().is_some_and(|f| f.starts_with("LOAD"));
    (load(a), a.location.as_ref()).cmp(&(load(b), b.location.as_ref()))
}

/// The data objects under the prefix `loc` (none when it does not exist), in listing order:
/// objects that are not data ([`hidden`]) left out. Stage 1's inputs and the curated objects
/// ([`curated_objects`]) are listed through it.
pub(crate) async fn list_data(loc: &Location) -> Result<Vec<ObjectMeta>> {
    let mut metas: Vec<ObjectMeta> = loc
        .store
        .list(Some(&loc.path))
        .try_collect()
        .await
        .or_else(|e| match e {
            object_store::Error::NotFound { .. } => Ok(Vec::new()),
            e => Err(store_error(&loc.url, e)),
        })?;
    metas.retain(|m| !hidden(&loc.path, &m.location));
    Ok(metas)
}

/// The curated Parquet objects of one dataset under `loc` (the `.parquet` data objects, none
/// when the prefix does not exist), in object order (path order): what stage 2's current state
/// and stage 1's foreign keys read.
pub async fn curated_objects(loc: &Location) -> Result<Vec<InputObject>> {
    let mut objects: Vec<InputObject> = list_data(loc)
        .await?
        .into_iter()
        .filter(|m| m.location.as_ref().ends_with(".parquet"))
        .map(|m| InputObject {
            size: m.size,
            location: loc.at(m.location),
        })
        .collect();
    objects.sort_by(|a, b| a.location.path.as_ref().cmp(b.location.path.as_ref()));
    Ok(objects)
}

/// Resolves input URLs into objects: a URL naming an object is that object; otherwise every
/// object under it as a prefix, skipping objects that are not data (see [`hidden`]).
pub async fn resolve(urls: &[String]) -> Result<Vec<InputObject>> {
    let mut out = Vec::new();
    for url in urls {
        let loc = Location::parse(url)?;
        match loc.store.head(&loc.path).await {
            Ok(meta) => out.push(InputObject {
                size: meta.size,
                location: loc,
            }),
            Err(object_store::Error::NotFound { .. })
            | Err(object_store::Error::NotImplemented { .. }) => {
                let mut metas = list_data(&loc).await?;
                if metas.is_empty() {
                    return Err(Error::bad_input(
                        url,
                        "no such object, and no objects under it as a prefix",
                    ));
                }
                metas.sort_by(job_order);
                for m in metas {
                    out.push(InputObject {
                        size: m.size,
                        location: loc.at(m.location),
                    });
                }
            }
            Err(e) => return Err(store_error(url, e)),
        }
    }
    Ok(out)
}

/// An input object opened for a job.
#[derive(Debug, Clone)]
pub struct Input {
    pub object: InputObject,
    format: Format,
    /// Set for a quarantine object read by `edp replay` ([`Input::as_quarantine`]).
    quarantine: Option<QuarantineView>,
}

/// How `edp replay` reads a quarantine object: its own columns, and the failures it recorded
/// that are carried over.
#[derive(Debug, Clone)]
struct QuarantineView {
    /// The object's columns without the trailing ones quarantine adds.
    schema: SchemaRef,
    /// The index in the object of the first added column; the source, row and errors
    /// columns are `added`, `added + 1`, `added + 2`.
    added: usize,
    /// The recorded failures carried over.
    carry: Arc<Carry>,
}

/// What an input's format knows about it once opened.
#[derive(Debug, Clone)]
enum Format {
    /// A Parquet file and its footer.
    Parquet(ArrowReaderMetadata),
    /// A DMS CSV object (`.csv`, `.csv.gz`), its layout and units.
    Csv(csv::CsvMeta),
    /// An NDJSON object (`.json`, `.jsonl`, `.ndjson`, optionally `.gz`), its fields and units.
    Json(json::JsonMeta),
}

/// What [`Input::read`] decodes.
#[derive(Debug, Clone)]
pub struct Read {
    /// Rows per batch.
    pub batch_size: usize,
    /// One bit per row of the input: only set rows are decoded, and units without one are not
    /// fetched (`None`: every row).
    pub keep: Option<Arc<BooleanBuffer>>,
    /// Indices of the top-level columns of [`Input::schema`] to decode, ascending (`None`: all).
    pub columns: Option<Vec<usize>>,
    /// Units fetched ahead of the one being decoded.
    pub read_ahead: usize,
}

impl Input {
    /// Opens the Parquet object `object` (curated data): reads and checks its footer. An empty,
    /// truncated or unreadable object is an [`Error::BadInput`]; a storage failure stays a
    /// storage error.
    pub async fn open(object: InputObject) -> Result<Input> {
        let meta = parquet::open(&object).await?;
        Ok(Input {
            object,
            format: Format::Parquet(meta),
            quarantine: None,
        })
    }

    /// Opens a raw input `object` by its name's format: CSV (`.csv`, `.csv.gz`) or NDJSON
    /// (`.json`, `.jsonl`, `.ndjson`, each optionally `.gz`) decoded as `decoding` says (the
    /// object is read once to find its rows), otherwise Parquet.
    pub async fn open_raw(object: InputObject, decoding: &Decoding) -> Result<Input> {
        let name = object.location.path.as_ref();
        let format = if csv::is_csv(name) {
            Format::Csv(csv::open(&object, decoding).await?)
        } else if json::is_json(name) {
            Format::Json(json::open(&object, decoding).await?)
        } else {
            return Self::open(object).await;
        };
        Ok(Input {
            object,
            format,
            quarantine: None,
        })
    }

    /// Reads the object as quarantine output (`edp replay`): its last columns, which must be
    /// `added` (source, row number, errors) in order, are hidden from the schema and reads; each
    /// row's recorded source and row become its [`Decoded::origin`], and its recorded failures
    /// (a list of `{rule, column, message}`) that `carry` holds its carried failures
    /// ([`Decoded::carried`]). An object that does not end in `added` is bad input.
    pub fn as_quarantine(&mut self, added: &[&str; 3], carry: Arc<Carry>) -> Result<()> {
        let schema = self.schema().clone();
        let n = schema.fields().len();
        let tail: Vec<&str> = schema
            .fields()
            .iter()
            .skip(n.saturating_sub(added.len()))
            .map(|f| f.name().as_str())
            .collect();
        if tail != added {
            return Err(Error::bad_input(
                self.url(),
                format!(
                    "not a quarantine object: its last columns are not {}",
                    added.join(", ")
                ),
            ));
        }
        let keep: Vec<usize> = (0..n - added.len()).collect();
        self.quarantine = Some(QuarantineView {
            schema: Arc::new(schema.project(&keep)?),
            added: n - added.len(),
            carry,
        });
        Ok(())
    }

    /// The value of `key` in a Parquet object's file metadata, if it has one.
    pub fn key_value(&self, key: &str) -> Option<&str> {
        let Format::Parquet(meta) = &self.format else {
            return None;
        };
        meta.metadata()
            .file_metadata()
            .key_value_metadata()?
            .iter()
            .find(|kv| kv.key == key)?
            .value
            .as_deref()
    }

    /// The object's URL, for messages and reports.
    pub fn url(&self) -> &str {
        &self.object.location.url
    }

    /// The object's schema, strings normalised to `Utf8`.
    pub fn schema(&self) -> &SchemaRef {
        if let Some(q) = &self.quarantine {
            return &q.schema;
        }
        match &self.format {
            Format::Parquet(meta) => meta.schema(),
            Format::Csv(meta) => meta.schema(),
            Format::Json(meta) => meta.schema(),
        }
    }

    /// Rows in the object.
    pub fn rows(&self) -> u64 {
        match &self.format {
            Format::Parquet(meta) => meta.metadata().file_metadata().num_rows().max(0) as u64,
            Format::Csv(meta) => meta.rows(),
            Format::Json(meta) => meta.rows(),
        }
    }

    /// The number of work units [`Input::read`] yields when every row is read: for Parquet,
    /// row groups, large ones cut into slices where the file's offset index allows fetching
    /// only a slice's pages; for CSV and NDJSON, runs of consecutive records.
    pub fn units(&self) -> usize {
        match &self.format {
            Format::Parquet(meta) => parquet::slices(meta).len(),
            Format::Csv(meta) => meta.units(),
            Format::Json(meta) => meta.units(),
        }
    }

    /// Streams the work units of the object, in row order, each decoding what `read` asks for.
    pub fn read(&self, mut read: Read) -> mpsc::Receiver<Result<RowGroup>> {
        let Some(q) = &self.quarantine else {
            return self.read_format(read);
        };
        // The source, row and errors columns are read last and taken off each batch.
        let mut columns = read
            .columns
            .take()
            .unwrap_or_else(|| (0..q.schema.fields().len()).collect());
        columns.extend(q.added..q.added + 3);
        read.columns = Some(columns);
        // One unit in hand here: the format's own channel holds the read-ahead.
        let (tx, out) = mpsc::channel(1);
        let mut groups = self.read_format(read);
        let carry = q.carry.clone();
        tokio::spawn(async move {
            while let Some(group) = groups.recv().await {
                let group = group.map(|g| g.carrying(carry.clone()));
                if tx.send(group).await.is_err() {
                    break;
                }
            }
        });
        out
    }

    fn read_format(&self, read: Read) -> mpsc::Receiver<Result<RowGroup>> {
        match &self.format {
            Format::Parquet(meta) => parquet::row_groups(&self.object, meta, read),
            Format::Csv(meta) => csv::row_groups(&self.object, meta, read),
            Format::Json(meta) => json::row_groups(&self.object, meta, read),
        }
    }
}

/// Maps a decode error of `object` (named by its format, from its name) to the library error.
pub fn decode_error(object: &str, e: impl std::fmt::Display) -> Error {
    let format = if csv::is_csv(object) {
        "CSV"
    } else if json::is_json(object) {
        "NDJSON"
    } else {
        "Parquet"
    };
    Error::bad_input(object, format!("corrupt {format} data: {e}"))
}

/// A row a text input could not decode as the contract says: its values are null where they
/// could not be read, and validation quarantines it under `rule`.
#[derive(Debug, Clone)]
pub struct RowFailure {
    /// The row's index in its batch.
    pub row: usize,
    /// `csv_fields`, `csv_quote`, `utf8` or `type` ([`crate::contract::rule_name`]).
    pub rule: &'static str,
    /// The column whose value failed; empty when the line as a whole did.
    pub column: Arc<str>,
    /// The line number and what was wrong, card numbers masked.
    pub message: String,
}

/// One decoded batch and the rows of it that could not be decoded.
pub struct Decoded {
    pub batch: RecordBatch,
    pub failures: Vec<RowFailure>,
    /// Failures recorded before (`edp replay`: in quarantine) that still hold, beside whatever
    /// else the row's checks find.
    pub carried: Vec<Carried>,
    /// Where each row first came from (`edp replay`: the source object and row quarantine
    /// recorded), when not from this object.
    pub origin: Option<Origin>,
}

/// Each row's source object and row number, as quarantine recorded them.
#[derive(Debug, Clone)]
pub struct Origin {
    pub sources: arrow::array::StringArray,
    pub rows: arrow::array::UInt64Array,
}

/// A failure recorded in quarantine that still holds (`edp replay`).
#[derive(Debug, Clone)]
pub struct Carried {
    /// The row's index in its batch.
    pub row: usize,
    /// The rule as recorded: a contract keyword, a decoding rule or an `x-rules` name.
    pub rule: Arc<str>,
    pub column: Arc<str>,
    pub message: String,
}

pub(super) type Decoder = Box<dyn Iterator<Item = std::result::Result<Decoded, ArrowError>> + Send>;

/// One fetched work unit (a row group or slice of one, a run of CSV records), ready to decode.
pub struct RowGroup {
    /// Row number in the object of the first row.
    pub first_row: u64,
    /// Rows covered (before any selection).
    pub rows: usize,
    /// Decodes the selected rows in batches.
    reader: Decoder,
}

impl RowGroup {
    fn new(
        first_row: u64,
        rows: usize,
        reader: Box<dyn Iterator<Item = std::result::Result<RecordBatch, ArrowError>> + Send>,
    ) -> Self {
        Self::decoded(
            first_row,
            rows,
            Box::new(reader.map(|b| {
                b.map(|batch| Decoded {
                    batch,
                    failures: Vec::new(),
                    carried: Vec::new(),
                    origin: None,
                })
            })),
        )
    }

    fn decoded(first_row: u64, rows: usize, reader: Decoder) -> Self {
        RowGroup {
            first_row,
            rows,
            reader,
        }
    }

    /// The next batch of this unit of `url` with the rows it could not decode, `None` at its
    /// end. A decoder that panics on corrupt data (the Parquet decoder does on some pages, a
    /// length past the end of a buffer) reports bad input like any other corrupt data.
    pub fn next_decoded(&mut self, url: &str) -> Result<Option<Decoded>> {
        let reader = &mut self.reader;
        crate::catch_quietly(|| reader.next())
            .ok_or_else(|| decode_error(url, "the decoder failed on a corrupt page"))?
            .transpose()
            .map_err(|e| decode_error(url, e))
    }

    /// This unit with its batches' last three columns (quarantine's source, row and errors)
    /// turned into each row's origin and carried failures, and taken off.
    fn carrying(self, carry: Arc<Carry>) -> RowGroup {
        let reader = self.reader.map(move |d| d.and_then(|d| carried(d, &carry)));
        RowGroup::decoded(self.first_row, self.rows, Box::new(reader))
    }

    /// [`RowGroup::next_decoded`] for readers of keys and curated data: a row that could not be
    /// decoded has nulls where its values could not be read, and only validation reports it.
    pub fn next_batch(&mut self, url: &str) -> Result<Option<RecordBatch>> {
        Ok(self.next_decoded(url)?.map(|d| d.batch))
    }
}

/// Which failures recorded in quarantine `edp replay` carries over (see
/// [`Input::as_quarantine`]).
#[derive(Debug, Clone, Default)]
pub struct Carry {
    /// (column, rule) pairs carried; for an `x-rules` rule, the columns it reads,
    /// comma-separated, as quarantine records them.
    pub pairs: Vec<(String, Arc<str>)>,
    /// Rules carried whatever the column (decoding rules: the value could not be read).
    pub rules: Vec<&'static str>,
}

impl Carry {
    fn find(&self, column: &str, rule: &str) -> Option<Arc<str>> {
        self.pairs
            .iter()
            .find(|(c, r)| c == column && &**r == rule)
            .map(|(_, r)| r.clone())
            .or_else(|| {
                self.rules
                    .iter()
                    .find(|r| **r == rule)
                    .map(|r| Arc::from(*r))
            })
    }
}

/// `d` without its last three columns, quarantine's source, row and errors: the first two
/// become its origin, the entries of the errors lists that `carry` holds its carried failures.
/// A row without its list is corrupt data (the list is never null in quarantine output).
fn carried(d: Decoded, carry: &Carry) -> std::result::Result<Decoded, ArrowError> {
    use arrow::array::{Array, AsArray};
    let Decoded {
        batch,
        failures,
        mut carried,
        ..
    } = d;
    let corrupt =
        |what: &str| ArrowError::InvalidArgumentError(format!("quarantine errors: {what}"));
    let last = batch
        .num_columns()
        .checked_sub(1)
        .filter(|&l| l >= 2)
        .ok_or_else(|| corrupt("the columns are missing"))?;
    let sources = batch
        .column(last - 2)
        .as_string_opt::<i32>()
        .ok_or_else(|| corrupt("the source column is not text"))?
        .clone();
    let rows = batch
        .column(last - 1)
        .as_primitive_opt::<arrow::datatypes::UInt64Type>()
        .ok_or_else(|| corrupt("the row column is not an unsigned integer"))?
        .clone();
    if sources.null_count() > 0 || rows.null_count() > 0 {
        return Err(corrupt("a row without its source or row number"));
    }
    let errors = batch
        .column(last)
        .as_list_opt::<i32>()
        .ok_or_else(|| corrupt("not a list"))?;
    for row in 0..errors.len() {
        if errors.is_null(row) {
            return Err(corrupt("a row without its list"));
        }
        let list = errors.value(row);
        let entries = list
            .as_struct_opt()
            .ok_or_else(|| corrupt("not a list of structs"))?;
        let text = |name: &str| {
            entries
                .column_by_name(name)
                .and_then(|c| c.as_string_opt::<i32>())
                .ok_or_else(|| corrupt(&format!("no `{name}` text field")))
        };
        let (rules, columns, messages) = (text("rule")?, text("column")?, text("message")?);
        for e in 0..entries.len() {
            let (rule, column) = (rules.value(e), columns.value(e));
            if let Some(rule) = carry.find(column, rule) {
                let message = messages.value(e);
                carried.push(Carried {
                    row,
                    rule,
                    column: column.into(),
                    message: match message.strip_prefix(CARRIED) {
                        Some(_) => message.to_string(),
                        None => format!("{CARRIED}{message}"),
                    },
                });
            }
        }
    }
    let keep: Vec<usize> = (0..last - 2).collect();
    Ok(Decoded {
        batch: batch.project(&keep)?,
        failures,
        carried,
        origin: Some(Origin { sources, rows }),
    })
}

/// What a carried failure's message starts with.
const CARRIED: &str = "carried from quarantine: ";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_under_underscore_or_dot_directories_are_not_data() {
        let prefix = Path::from("shop/.staging/orders-raw");
        let hidden_at = |key: &str| hidden(&prefix, &Path::from(key));
        assert!(!hidden_at("shop/.staging/orders-raw/2026/12/01/x.parquet"));
        assert!(hidden_at(
            "shop/.staging/orders-raw/2026/_temporary/0/x.parquet"
        ));
        assert!(hidden_at("shop/.staging/orders-raw/.hidden/x.parquet"));
        assert!(hidden_at(
            "shop/.staging/orders-raw/out/_quarantine/part-00000.parquet"
        ));
        assert!(hidden_at("shop/.staging/orders-raw/_SUCCESS"));
        assert!(hidden_at("shop/.staging/orders-raw/2026/.x.parquet.crc"));
    }
}
