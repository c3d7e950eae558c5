//! Output: Parquet written to an object store through a multipart upload.
//!
//! This folder owns encoding and uploading. Which columns get a dictionary or statistics, the
//! flush size and where an output goes are the caller's (stage 1's writer policy is in
//! `stage1/publish.rs`): it reads no contract and no settings and knows no stage.
//!
//! Encoding is split from writing so that it can run on worker threads: a [`RowGroupEncoder`]
//! turns batches into the encoded column chunks of one row group (anywhere, in parallel with
//! other encoders), and [`ParquetSink::append`] splices finished row groups into the file in
//! order, which is only a copy. [`ParquetSink::write`] does both on the caller's thread for
//! small outputs such as quarantine.
//!
//! An output is invisible until [`ParquetSink::finish`] writes the footer and completes the
//! upload (on S3 the multipart completion, on local disk the rename of the staging file); a job
//! with several outputs [seals](ParquetSink::seal) them all before it
//! [completes](ParquetSink::complete) any. On any
//! error the job calls [`ParquetSink::abort`], which aborts the upload, so a failed run leaves no
//! partial object. Memory is bounded: an encoder's row group is closed once its buffered size
//! passes the flush threshold ([`ROW_GROUP_FLUSH_BYTES`] at most), and the upload buffers at
//! most a few parts.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use object_store::buffered::BufWriter;
use parquet::arrow::arrow_writer::{
    compute_leaves, ArrowColumnChunk, ArrowColumnWriter, ArrowRowGroupWriterFactory,
    ArrowWriterOptions,
};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;

use crate::store::{store_error, Location};
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

/// Writer properties for outputs: the codec, statistics per page, bounded row groups, no
/// dictionary for `plain_columns` (near-unique values such as keys, masked card numbers and
/// timestamps, where building a dictionary only to abandon it costs time), and neither
/// dictionary nor statistics for `opaque_columns` (hash tokens: random values whose min/max
/// prune nothing), which Snappy does not compress either.
pub fn writer_properties(
    codec: Codec,
    plain_columns: &[String],
    opaque_columns: &[String],
) -> WriterProperties {
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
    for column in plain_columns.iter().chain(opaque_columns) {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(column.as_str()), false);
    }
    for column in opaque_columns {
        let path = ColumnPath::from(column.as_str());
        builder = builder.set_column_statistics_enabled(path.clone(), EnabledStatistics::None);
        // Tokens carry 4 bits per byte with no repeats: Snappy (no entropy coding) saved 3% of
        // their bytes for ~12% of a run's CPU (2M orders rows: 4.7 s → 4.2 s), so they are
        // stored as is. Zstd, which entropy-codes, still gets them.
        if codec == Codec::Snappy {
            builder = builder.set_column_compression(path, Compression::UNCOMPRESSED);
        }
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

/// The encoded column chunks of one row group, ready to be appended.
pub struct EncodedRowGroup {
    chunks: Vec<ArrowColumnChunk>,
    rows: usize,
}

/// Encodes batches into row groups of one output; `Send`, so it can work on any thread.
pub struct RowGroupEncoder {
    /// The output's URL, for errors.
    url: String,
    factory: Arc<ArrowRowGroupWriterFactory>,
    schema: SchemaRef,
    writers: Vec<ArrowColumnWriter>,
    rows: usize,
    flush_bytes: usize,
    done: Vec<EncodedRowGroup>,
}

impl RowGroupEncoder {
    /// The URL of the output this encoder's row groups go to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Encodes `batch`, closing the row group once it buffers more than the flush threshold or
    /// [`ROW_GROUP_ROWS`] rows.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), ParquetError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let mut writers = self.writers.iter_mut();
        for (field, column) in self.schema.fields().iter().zip(batch.columns()) {
            for leaf in compute_leaves(field, column)? {
                writers
                    .next()
                    .ok_or_else(|| ParquetError::General("more leaves than writers".into()))?
                    .write(&leaf)?;
            }
        }
        self.rows += batch.num_rows();
        let buffered: usize = self.writers.iter().map(|w| w.memory_size()).sum();
        if buffered > self.flush_bytes || self.rows >= ROW_GROUP_ROWS {
            self.close_row_group()?;
        }
        Ok(())
    }

    fn close_row_group(&mut self) -> Result<(), ParquetError> {
        if self.rows == 0 {
            return Ok(());
        }
        let fresh = self.factory.create_column_writers(0)?;
        let chunks = std::mem::replace(&mut self.writers, fresh)
            .into_iter()
            .map(ArrowColumnWriter::close)
            .collect::<Result<Vec<_>, _>>()?;
        self.done.push(EncodedRowGroup {
            chunks,
            rows: std::mem::take(&mut self.rows),
        });
        Ok(())
    }

    /// The row groups closed since the last call; the one in progress stays open.
    pub fn take_closed(&mut self) -> Vec<EncodedRowGroup> {
        std::mem::take(&mut self.done)
    }

    /// Closes the row group in progress and returns every row group encoded since the last call.
    pub fn take(&mut self) -> Result<Vec<EncodedRowGroup>, ParquetError> {
        self.close_row_group()?;
        Ok(self.take_closed())
    }
}

/// A Parquet object being written.
pub struct ParquetSink {
    file: SerializedFileWriter<Vec<u8>>,
    factory: Arc<ArrowRowGroupWriterFactory>,
    schema: SchemaRef,
    upload: BufWriter,
    location: Location,
    rows: u64,
    flush_bytes: usize,
    /// Encoder for [`ParquetSink::write`], made on first use.
    own: Option<RowGroupEncoder>,
}

impl ParquetSink {
    /// Starts writing `schema`-shaped batches to `location`. Nothing is sent until a part fills.
    pub fn new(location: Location, schema: SchemaRef, props: WriterProperties) -> Result<Self> {
        let upload =
            BufWriter::with_capacity(location.store.clone(), location.path.clone(), PART_BYTES)
                .with_max_concurrency(PART_CONCURRENCY);
        let parquet_err = |source| Error::Encode {
            object: location.url.clone(),
            source,
        };
        let writer = ArrowWriter::try_new_with_options(
            Vec::new(),
            schema.clone(),
            ArrowWriterOptions::new().with_properties(props),
        )
        .map_err(parquet_err)?;
        let (file, factory) = writer.into_serialized_writer().map_err(parquet_err)?;
        Ok(ParquetSink {
            file,
            factory: Arc::new(factory),
            schema,
            upload,
            location,
            rows: 0,
            flush_bytes: ROW_GROUP_FLUSH_BYTES,
            own: None,
        })
    }

    /// Closes row groups once their buffered size passes `bytes`.
    pub fn with_flush_bytes(mut self, bytes: usize) -> Self {
        self.flush_bytes = bytes;
        self
    }

    /// A new encoder for this output's row groups, to run on any thread.
    pub fn encoder(&self) -> Result<RowGroupEncoder> {
        Ok(RowGroupEncoder {
            url: self.location.url.clone(),
            factory: self.factory.clone(),
            schema: self.schema.clone(),
            writers: self
                .factory
                .create_column_writers(0)
                .map_err(|e| self.err(e))?,
            rows: 0,
            flush_bytes: self.flush_bytes,
            done: Vec::new(),
        })
    }

    fn err(&self, source: ParquetError) -> Error {
        Error::Encode {
            object: self.location.url.clone(),
            source,
        }
    }

    /// Appends encoded row groups in order and hands the bytes to the upload.
    pub async fn append(
        &mut self,
        groups: impl IntoIterator<Item = EncodedRowGroup>,
    ) -> Result<()> {
        for group in groups {
            // One allocation for the row group's bytes instead of a vector grown by doubling.
            let bytes: u64 = group.chunks.iter().map(|c| c.close().bytes_written).sum();
            self.file
                .inner_mut()
                .reserve(usize::try_from(bytes).unwrap_or(0));
            let spliced = (|| {
                let mut rg = self.file.next_row_group()?;
                for chunk in group.chunks {
                    chunk.append_to_row_group(&mut rg)?;
                }
                rg.close().map(|_| ())
            })();
            spliced.map_err(|e| self.err(e))?;
            self.rows += group.rows as u64;
            self.send().await?;
        }
        Ok(())
    }

    /// Moves the bytes the file writer has produced into the upload.
    async fn send(&mut self) -> Result<()> {
        let bytes = std::mem::take(self.file.inner_mut());
        if bytes.is_empty() {
            return Ok(());
        }
        self.upload
            .put(Bytes::from(bytes))
            .await
            .map_err(|e| store_error(&self.location.url, e))
    }

    /// Encodes and appends one batch on the caller's thread.
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if self.own.is_none() {
            self.own = Some(self.encoder()?);
        }
        let groups = match self.own.as_mut() {
            Some(enc) => enc
                .write(batch)
                .map(|()| enc.take_closed())
                .map_err(|source| Error::Encode {
                    object: self.location.url.clone(),
                    source,
                })?,
            None => Vec::new(),
        };
        self.append(groups).await
    }

    /// Rows written so far, including those [`ParquetSink::write`] holds in its open row group.
    pub fn rows(&self) -> u64 {
        self.rows + self.own.as_ref().map_or(0, |e| e.rows as u64)
    }

    /// Writes the footer and completes the upload: only now does the object become visible.
    pub async fn finish(mut self) -> Result<OutputStats> {
        if let Err(e) = self.seal().await {
            self.abort().await;
            return Err(e);
        }
        self.complete().await
    }

    /// Where the object is written.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Writes the footer and hands every byte to the upload, leaving its completion to
    /// [`ParquetSink::complete`]; on failure the caller aborts the upload. The upload still holds
    /// its last part (the whole object when it is under one part) and sends it on completion.
    /// A job seals all its outputs before it completes any, so encoding failures never leave one
    /// visible; a storage failure at completion is rolled back by the job.
    pub async fn seal(&mut self) -> Result<()> {
        if let Some(mut enc) = self.own.take() {
            let groups = enc.take().map_err(|e| self.err(e))?;
            self.append(groups).await?;
        }
        let footer = self.file.finish().and_then(|_| {
            self.file
                .flush()
                .map_err(|e| ParquetError::External(Box::new(e)))
        });
        footer.map_err(|e| self.err(e))?;
        self.send().await
    }

    /// Completes a [sealed](ParquetSink::seal) upload: the object becomes visible.
    pub async fn complete(mut self) -> Result<OutputStats> {
        // An error here comes from sending the last parts or completing the upload, after which
        // it cannot be aborted again: a failed part can leave an incomplete multipart upload,
        // which the bucket's AbortIncompleteMultipartUpload lifecycle rule removes.
        std::future::poll_fn(|cx| {
            tokio::io::AsyncWrite::poll_shutdown(std::pin::Pin::new(&mut self.upload), cx)
        })
        .await
        .map_err(|e| Error::Store {
            object: self.location.url.clone(),
            source: object_store::Error::Generic {
                store: "output",
                source: Box::new(e),
            },
        })?;
        Ok(OutputStats {
            url: self.location.url.clone(),
            rows: self.rows,
            bytes: self.file.bytes_written() as u64,
        })
    }

    /// Abandons the output: aborts the upload so no object, partial or whole, appears.
    pub async fn abort(mut self) {
        if let Err(e) = self.upload.abort().await {
            tracing::warn!(object = %self.location.url, error = %e, "aborting upload failed");
        }
    }
}
