//! The text objects `edp generate --format csv|ndjson` writes under a prefix: a full-load object
//! ([`LOAD_NAME`] and an extension) without the `Op` column and a CDC object ([`CDC_NAME`]) with
//! `Op`; `.gz` when gzipped. CSV is laid out as the DMS S3 target writes it by default: no
//! header, `Op` first, `,` between fields, `\n` after records, quotes only where a value needs
//! them (a delimiter, quote or newline inside), doubled quotes, a null as an empty field and an
//! empty string as `""`. NDJSON holds one object per line, fields in column order, a null field
//! left out. Date-times are `YYYY-MM-DD HH:MM:SS.ffffff` (JSON strings), numbers in Rust's
//! shortest round-trip form.
//!
//! The full load holds the inserts among the first half of the rows, the CDC object every other
//! row, both in generation order. A key's later versions are later in time than its insert, so
//! moving inserts into the full load changes no winner: the CSV objects hold the same data as the
//! Parquet object of the same spec.

use std::io::Write as _;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType};
use flate2::write::GzEncoder;
use object_store::buffered::BufWriter;
use tokio::io::AsyncWriteExt;

use super::write::batches;
use super::GenSpec;
use crate::datetime::format_micros;
use crate::output::OutputStats;
use crate::store::Location;
use crate::{Error, Result};

/// The full-load object's name, without its extension.
pub const LOAD_NAME: &str = "LOAD00000001";
/// The CDC object's name without its extension (DMS CDC file naming, the day of the generated
/// period's end).
pub const CDC_NAME: &str = "20250116-000000000";

/// A text format `generate` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextFormat {
    Csv,
    Ndjson,
}

impl TextFormat {
    /// The objects' extension.
    pub fn extension(self) -> &'static str {
        match self {
            TextFormat::Csv => ".csv",
            TextFormat::Ndjson => ".json",
        }
    }
}

/// One object's encoder: CSV records or NDJSON lines, gzipped when asked.
struct Encoder {
    format: TextFormat,
    csv: csv_core::Writer,
    record: Vec<u8>,
    gzip: Option<GzEncoder<Vec<u8>>>,
    plain: Vec<u8>,
    rows: u64,
}

impl Encoder {
    fn new(format: TextFormat, gzip: bool) -> Encoder {
        Encoder {
            format,
            csv: csv_core::Writer::new(),
            record: Vec::new(),
            gzip: gzip.then(|| GzEncoder::new(Vec::new(), flate2::Compression::default())),
            plain: Vec::new(),
            rows: 0,
        }
    }

    /// Appends `field` (quoted where needed) to the current record.
    fn field(&mut self, field: &[u8]) {
        let start = self.record.len();
        self.record.resize(start + 2 * field.len() + 2, 0);
        let (_, _, n) = self.csv.field(field, &mut self.record[start..]);
        self.record.truncate(start + n);
    }

    fn delimiter(&mut self) {
        let start = self.record.len();
        self.record.resize(start + 2, 0);
        let (_, n) = self.csv.delimiter(&mut self.record[start..]);
        self.record.truncate(start + n);
    }

    /// Ends the record and moves it to the object's bytes.
    fn end_record(&mut self) -> Result<()> {
        match self.format {
            TextFormat::Csv => {
                let start = self.record.len();
                self.record.resize(start + 4, 0);
                let (_, n) = self.csv.terminator(&mut self.record[start..]);
                self.record.truncate(start + n);
            }
            TextFormat::Ndjson => self.record.extend_from_slice(b"}\n"),
        }
        match &mut self.gzip {
            Some(gz) => gz.write_all(&self.record).map_err(gzip_error)?,
            None => self.plain.extend_from_slice(&self.record),
        }
        self.record.clear();
        self.rows += 1;
        Ok(())
    }

    /// The bytes encoded since the last call.
    fn take(&mut self) -> Vec<u8> {
        match &mut self.gzip {
            Some(gz) => std::mem::take(gz.get_mut()),
            None => std::mem::take(&mut self.plain),
        }
    }

    /// The last bytes (the gzip trailer).
    fn finish(self) -> Result<Vec<u8>> {
        Ok(match self.gzip {
            Some(gz) => gz.finish().map_err(gzip_error)?,
            None => self.plain,
        })
    }
}

/// Compressing into memory fails only when memory does.
fn gzip_error(e: std::io::Error) -> Error {
    Error::Internal(format!("gzip: {e}"))
}

/// A failed write of the generated object `url`.
fn upload_error(url: &str, e: std::io::Error) -> Error {
    Error::Store {
        object: url.to_string(),
        source: object_store::Error::Generic {
            store: "generate",
            source: Box::new(e),
        },
    }
}

/// Appends column `c` of `row` as one JSON field (`"name":value`, after a `,` unless it is the
/// record's first); a null is left out.
fn json_value(enc: &mut Encoder, batch: &RecordBatch, c: usize, row: usize) -> Result<()> {
    let col = batch.column(c);
    if col.is_null(row) {
        return Ok(());
    }
    let out = &mut enc.record;
    out.push(if out.is_empty() { b'{' } else { b',' });
    let name = batch.schema_ref().field(c).name().clone();
    serde_json::to_writer(&mut *out, &name).map_err(json_error)?;
    out.push(b':');
    match col.data_type() {
        DataType::Utf8 => serde_json::to_writer(&mut *out, col.as_string::<i32>().value(row))
            .map_err(json_error)?,
        DataType::Int64 => out.extend(
            col.as_primitive::<Int64Type>()
                .value(row)
                .to_string()
                .bytes(),
        ),
        DataType::Float64 => out.extend(
            col.as_primitive::<Float64Type>()
                .value(row)
                .to_string()
                .bytes(),
        ),
        DataType::Boolean => out.extend(col.as_boolean().value(row).to_string().bytes()),
        DataType::Timestamp(TimeUnit::Microsecond, _) => serde_json::to_writer(
            &mut *out,
            &format_micros(
                i128::from(col.as_primitive::<TimestampMicrosecondType>().value(row)) * 1000,
            ),
        )
        .map_err(json_error)?,
        other => {
            return Err(Error::Internal(format!(
                "generator column of type {other} has no JSON form"
            )))
        }
    }
    Ok(())
}

/// Writing JSON into memory fails only when memory does.
fn json_error(e: serde_json::Error) -> Error {
    Error::Internal(format!("JSON: {e}"))
}

/// Appends column `c` of `row` as text; a null is an empty field, an empty string `""`.
fn value(enc: &mut Encoder, batch: &RecordBatch, c: usize, row: usize) -> Result<()> {
    let col = batch.column(c);
    if col.is_null(row) {
        return Ok(());
    }
    let text = match col.data_type() {
        DataType::Utf8 => {
            let v = col.as_string::<i32>().value(row);
            if v.is_empty() {
                enc.record.extend_from_slice(b"\"\"");
                return Ok(());
            }
            enc.field(v.as_bytes());
            return Ok(());
        }
        DataType::Int64 => col.as_primitive::<Int64Type>().value(row).to_string(),
        DataType::Float64 => col.as_primitive::<Float64Type>().value(row).to_string(),
        DataType::Boolean => col.as_boolean().value(row).to_string(),
        DataType::Timestamp(TimeUnit::Microsecond, _) => format_micros(
            i128::from(col.as_primitive::<TimestampMicrosecondType>().value(row)) * 1000,
        ),
        other => {
            return Err(Error::Internal(format!(
                "generator column of type {other} has no CSV form"
            )))
        }
    };
    enc.field(text.as_bytes());
    Ok(())
}

/// Encodes `batch` (rows `first..`) into the two objects: inserts among the first `load_rows`
/// rows into `load` without `Op` (column 0), every other row into `cdc`.
fn encode(
    batch: &RecordBatch,
    first: u64,
    load_rows: u64,
    load: &mut Encoder,
    cdc: &mut Encoder,
) -> Result<()> {
    let op = batch.column(0).as_string_opt::<i32>();
    for row in 0..batch.num_rows() {
        let to_load = first + (row as u64) < load_rows
            && op.is_some_and(|op| op.is_valid(row) && op.value(row) == "I");
        let (enc, from) = if to_load {
            (&mut *load, 1)
        } else {
            (&mut *cdc, 0)
        };
        for c in from..batch.num_columns() {
            match enc.format {
                TextFormat::Csv => {
                    if c > from {
                        enc.delimiter();
                    }
                    value(enc, batch, c, row)?;
                }
                TextFormat::Ndjson => json_value(enc, batch, c, row)?,
            }
        }
        if enc.format == TextFormat::Ndjson && enc.record.is_empty() {
            enc.record.push(b'{');
        }
        enc.end_record()?;
    }
    Ok(())
}

/// Every row of `batch` as one CDC object's bytes: what tests read back.
#[cfg(test)]
pub(crate) fn to_csv(batch: &RecordBatch, gzip: bool) -> Result<Vec<u8>> {
    let (mut load, mut cdc) = (
        Encoder::new(TextFormat::Csv, gzip),
        Encoder::new(TextFormat::Csv, gzip),
    );
    encode(batch, 0, 0, &mut load, &mut cdc)?;
    let mut bytes = cdc.take();
    bytes.extend(cdc.finish()?);
    Ok(bytes)
}

/// Generates `spec` as the two `format` objects under the prefix `out`.
pub async fn generate_text(
    spec: GenSpec,
    out: &Location,
    format: TextFormat,
    gzip: bool,
) -> Result<Vec<OutputStats>> {
    let ext = format!("{}{}", format.extension(), if gzip { ".gz" } else { "" });
    let names = [format!("{LOAD_NAME}{ext}"), format!("{CDC_NAME}{ext}")];
    let targets: Vec<Location> = names.iter().map(|n| out.child(n)).collect();
    let mut uploads: Vec<BufWriter> = targets
        .iter()
        .map(|t| BufWriter::new(t.store.clone(), t.path.clone()))
        .collect();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(usize, Vec<u8>)>(8);
    let producer = tokio::task::spawn_blocking(move || -> Result<[u64; 2]> {
        let (mut load, mut cdc) = (Encoder::new(format, gzip), Encoder::new(format, gzip));
        let mut first = 0u64;
        let send = |i: usize, bytes: Vec<u8>| {
            tx.blocking_send((i, bytes))
                .map_err(|_| Error::Internal("upload stopped".into()))
        };
        batches(spec, |b| {
            encode(&b, first, spec.rows / 2, &mut load, &mut cdc)?;
            first += b.num_rows() as u64;
            send(0, load.take())?;
            send(1, cdc.take())
        })?;
        let rows = [load.rows, cdc.rows];
        send(0, load.finish()?)?;
        send(1, cdc.finish()?)?;
        Ok(rows)
    });
    let mut bytes = [0u64; 2];
    let mut failed = None;
    while let Some((i, chunk)) = rx.recv().await {
        bytes[i] += chunk.len() as u64;
        if let Err(e) = uploads[i].write_all(&chunk).await {
            failed = Some(upload_error(&targets[i].url, e));
            break;
        }
    }
    drop(rx);
    let rows = match producer.await {
        Ok(Ok(rows)) if failed.is_none() => rows,
        Ok(Err(e)) => {
            failed = failed.or(Some(e));
            [0, 0]
        }
        Err(e) => {
            failed = failed.or(Some(Error::Internal(format!("generator panicked: {e}"))));
            [0, 0]
        }
        Ok(Ok(_)) => [0, 0],
    };
    if let Some(e) = failed {
        for u in &mut uploads {
            let _ = u.abort().await;
        }
        return Err(e);
    }
    let mut stats = Vec::new();
    for (i, (u, t)) in uploads.iter_mut().zip(&targets).enumerate() {
        u.shutdown().await.map_err(|e| upload_error(&t.url, e))?;
        stats.push(OutputStats {
            url: t.url.clone(),
            rows: rows[i],
            bytes: bytes[i],
        });
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::{
        BooleanArray, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray,
    };
    use arrow::datatypes::{Field, Schema};

    /// Three rows of every generator type, with a quote, delimiter and newline in a string.
    fn sample() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("Op", DataType::Utf8, true),
            Field::new("id", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("x", DataType::Float64, true),
            Field::new("b", DataType::Boolean, true),
            Field::new(
                "t",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["I", "U", "I"])),
                Arc::new(Int64Array::from(vec![Some(1), Some(2), None])),
                Arc::new(StringArray::from(vec![Some("a,\"b\"\nc"), Some(""), None])),
                Arc::new(Float64Array::from(vec![Some(0.1), Some(353.93), None])),
                Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![Some(1_000_001), None, None])
                        .with_timezone("UTC"),
                ),
            ],
        )
        .unwrap()
    }

    #[test]
    fn values_are_quoted_only_where_needed_and_empty_strings_differ_from_nulls() {
        let batch = sample();
        let csv = || Encoder::new(TextFormat::Csv, false);
        let (mut load, mut cdc) = (csv(), csv());
        encode(&batch, 0, 1, &mut load, &mut cdc).unwrap();
        assert_eq!(
            String::from_utf8(load.finish().unwrap()).unwrap(),
            "1,\"a,\"\"b\"\"\nc\",0.1,true,1970-01-01 00:00:01.000001\n"
        );
        assert_eq!(
            String::from_utf8(cdc.finish().unwrap()).unwrap(),
            "U,2,\"\",353.93,false,\nI,,,,,\n"
        );
    }

    #[test]
    fn ndjson_lines_leave_nulls_out_and_escape_strings() {
        let batch = sample();
        let json = || Encoder::new(TextFormat::Ndjson, false);
        let (mut load, mut cdc) = (json(), json());
        encode(&batch, 0, 1, &mut load, &mut cdc).unwrap();
        assert_eq!(
            String::from_utf8(load.finish().unwrap()).unwrap(),
            "{\"id\":1,\"s\":\"a,\\\"b\\\"\\nc\",\"x\":0.1,\"b\":true,\
             \"t\":\"1970-01-01 00:00:01.000001\"}\n"
        );
        assert_eq!(
            String::from_utf8(cdc.finish().unwrap()).unwrap(),
            "{\"Op\":\"U\",\"id\":2,\"s\":\"\",\"x\":353.93,\"b\":false}\n{\"Op\":\"I\"}\n"
        );
    }
}
