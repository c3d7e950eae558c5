//! Sink: Parquet written to an object store through a multipart upload.
//!
//! An output is invisible until [`ParquetSink::finish`] writes the footer and completes the
//! upload (on S3 the multipart completion, on local disk the rename of the staging file). On any
//! error the job calls [`ParquetSink::abort`], which aborts the upload, so a failed run leaves no
//! partial object. Memory is bounded: the row group in progress is flushed once its encoded size
//! passes [`ROW_GROUP_FLUSH_BYTES`], and the upload buffers at most a few parts.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use object_store::buffered::BufWriter;
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::store::Location;
use crate::{Error, Result};

/// Size of one multipart upload part (S3 needs at least 5 MiB; 10,000 parts → ~100 GiB objects).
pub const PART_BYTES: usize = 10 << 20;
/// Parts uploaded concurrently per output.
pub const PART_CONCURRENCY: usize = 2;
/// The row group in progress is flushed past this many encoded bytes at most.
pub const ROW_GROUP_FLUSH_BYTES: usize = 32 << 20;
/// Rows per row group at most.
pub const ROW_GROUP_ROWS: usize = 1 << 20;

/// Output compression codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    Snappy,
    Zstd,
    None,
}

/// Writer properties for outputs: the codec, statistics per page, bounded row groups, and no
/// dictionary for `plain_columns` (near-unique values such as hashes, masked card numbers and
/// timestamps, where building a dictionary only to abandon it costs time).
pub fn writer_properties(codec: Codec, plain_columns: &[String]) -> WriterProperties {
    let compression = match codec {
        Codec::Snappy => Compression::SNAPPY,
        Codec::Zstd => Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()),
        Codec::None => Compression::UNCOMPRESSED,
    };
    let mut builder = WriterProperties::builder()
        .set_compression(compression)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_created_by(format!("edp {}", env!("CARGO_PKG_VERSION")));
    for column in plain_columns {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(column.as_str()), false);
    }
    builder.build()
}

/// What a finished output holds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OutputStats {
    pub url: String,
    pub rows: u64,
    pub bytes: u64,
}

/// A Parquet object being written.
pub struct ParquetSink {
    writer: AsyncArrowWriter<BufWriter>,
    location: Location,
    rows: u64,
    flush_bytes: usize,
}

impl ParquetSink {
    /// Starts writing `schema`-shaped batches to `location`. Nothing is sent until a part fills.
    pub fn new(location: Location, schema: SchemaRef, props: WriterProperties) -> Result<Self> {
        let upload =
            BufWriter::with_capacity(location.store.clone(), location.path.clone(), PART_BYTES)
                .with_max_concurrency(PART_CONCURRENCY);
        let writer = AsyncArrowWriter::try_new(upload, schema, Some(props)).map_err(|source| {
            Error::Parquet {
                object: location.url.clone(),
                source,
            }
        })?;
        Ok(ParquetSink {
            writer,
            location,
            rows: 0,
            flush_bytes: ROW_GROUP_FLUSH_BYTES,
        })
    }

    /// Flushes the row group in progress once its encoded size passes `bytes`.
    pub fn with_flush_bytes(mut self, bytes: usize) -> Self {
        self.flush_bytes = bytes;
        self
    }

    fn err(&self, source: parquet::errors::ParquetError) -> Error {
        match source {
            parquet::errors::ParquetError::External(inner) => Error::Store {
                object: self.location.url.clone(),
                source: object_store::Error::Generic {
                    store: "output",
                    source: inner,
                },
            },
            source => Error::Parquet {
                object: self.location.url.clone(),
                source,
            },
        }
    }

    /// Appends one batch, flushing the row group when it grows past its byte budget.
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.rows += batch.num_rows() as u64;
        if let Err(e) = self.writer.write(batch).await {
            return Err(self.err(e));
        }
        if self.writer.in_progress_size() > self.flush_bytes {
            if let Err(e) = self.writer.flush().await {
                return Err(self.err(e));
            }
        }
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Writes the footer and completes the upload: only now does the object become visible.
    pub async fn finish(mut self) -> Result<OutputStats> {
        if let Err(e) = self.writer.finish().await {
            // An I/O error may come from completing the upload, after which the upload cannot
            // be aborted again (object_store cleans up a failed completion itself); an encoding
            // error comes before any completion, so the upload is aborted here.
            let io = matches!(e, parquet::errors::ParquetError::External(_));
            let err = self.err(e);
            if !io {
                let mut upload = self.writer.into_inner();
                let _ = upload.abort().await;
            }
            return Err(err);
        }
        let bytes = self.writer.bytes_written() as u64;
        Ok(OutputStats {
            url: self.location.url.clone(),
            rows: self.rows,
            bytes,
        })
    }

    /// Abandons the output: aborts the upload so no object, partial or whole, appears.
    pub async fn abort(self) {
        let mut upload = self.writer.into_inner();
        if let Err(e) = upload.abort().await {
            tracing::warn!(object = %self.location.url, error = %e, "aborting upload failed");
        }
    }
}
