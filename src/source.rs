//! Source: Parquet objects streamed from any object store, row group by row group.
//!
//! [`resolve`] turns input URLs into the ordered list of objects of a job (a URL may name one
//! object or a prefix). [`open`] reads an object's footer once (one ranged GET with a 64 KiB
//! prefetch) and normalises its schema, so `LargeUtf8` and `Utf8View` arrive as `Utf8` and every
//! later stage handles one string type. [`row_groups`] fetches row groups on a tokio task ahead of
//! the consumer through a bounded channel: while the pipeline decodes and checks one row group,
//! the next `read_ahead` are being fetched, and no more.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::BooleanArray;
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::{DataType, Field, Schema};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader, RowSelection,
};
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::arrow::ProjectionMask;
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use tokio::sync::mpsc;

use crate::store::{store_error, Location};
use crate::{Error, Result};

/// One input object of a job.
#[derive(Debug, Clone)]
pub struct InputObject {
    pub location: Location,
    pub size: u64,
}

/// An [`AsyncFileReader`] over one object, its size known from the listing.
#[derive(Clone)]
pub struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
}

impl AsyncFileReader for ObjectReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let meta = ParquetMetaDataReader::new()
                .with_prefetch_hint(Some(64 << 10))
                .with_arrow_reader_options(options)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(meta))
        }
        .boxed()
    }
}

fn hidden(path: &Path) -> bool {
    path.filename()
        .is_some_and(|f| f.starts_with('_') || f.starts_with('.'))
}

/// Job order of objects: full-load files (`LOAD…`) first, then the rest, each in name order.
fn job_order(a: &ObjectMeta, b: &ObjectMeta) -> std::cmp::Ordering {
    let load = |m: &ObjectMeta| !m.location.filename().is_some_and(|f| f.starts_with("LOAD"));
    (load(a), a.location.as_ref()).cmp(&(load(b), b.location.as_ref()))
}

/// Resolves input URLs into objects: a URL naming an object is that object; otherwise every
/// object under it as a prefix, skipping names that start with `_` or `.`.
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
                let mut metas: Vec<ObjectMeta> = loc
                    .store
                    .list(Some(&loc.path))
                    .try_collect()
                    .await
                    .or_else(|e| match e {
                        object_store::Error::NotFound { .. } => Ok(Vec::new()),
                        e => Err(store_error(url, e)),
                    })?;
                metas.retain(|m| !hidden(&m.location));
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

impl InputObject {
    /// A reader for this object.
    pub fn reader(&self) -> ObjectReader {
        ObjectReader {
            store: self.location.store.clone(),
            path: self.location.path.clone(),
            size: self.size,
        }
    }
}

fn normalise(dt: &DataType) -> Option<DataType> {
    match dt {
        DataType::LargeUtf8 | DataType::Utf8View => Some(DataType::Utf8),
        _ => None,
    }
}

/// Reads and checks the footer of `input`, returning metadata whose schema uses `Utf8` for all
/// strings. A missing, empty, truncated or non-Parquet object is a [`Error::BadInput`].
pub async fn open(input: &InputObject) -> Result<ArrowReaderMetadata> {
    let url = &input.location.url;
    if input.size == 0 {
        return Err(Error::bad_input(
            url,
            "empty object (0 bytes), expected a Parquet file",
        ));
    }
    let mut reader = input.reader();
    let meta = ArrowReaderMetadata::load_async(&mut reader, ArrowReaderOptions::new())
        .await
        .map_err(|e| read_error(url, "not a readable Parquet file", e))?;
    let schema = meta.schema();
    if schema
        .fields()
        .iter()
        .all(|f| normalise(f.data_type()).is_none())
    {
        return Ok(meta);
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match normalise(f.data_type()) {
            Some(dt) => f.as_ref().clone().with_data_type(dt),
            None => f.as_ref().clone(),
        })
        .collect();
    let options = ArrowReaderOptions::new().with_schema(Arc::new(Schema::new(fields)));
    ArrowReaderMetadata::try_new(meta.metadata().clone(), options)
        .map_err(|e| Error::bad_input(url, format!("cannot read schema: {e}")))
}

/// Maps a Parquet read error of `object`: a storage failure underneath stays a storage error,
/// anything else is bad input described by `what` ("corrupt Parquet data", …).
fn read_error(object: &str, what: &str, e: ParquetError) -> Error {
    match e {
        ParquetError::External(inner) => match inner.downcast::<object_store::Error>() {
            Ok(store) => store_error(object, *store),
            Err(other) => Error::bad_input(object, format!("{what}: {other}")),
        },
        e => Error::bad_input(object, format!("{what}: {e}")),
    }
}

/// Maps a decode error of `object` to the library error.
pub fn decode_error(object: &str, e: impl std::fmt::Display) -> Error {
    Error::bad_input(object, format!("corrupt Parquet data: {e}"))
}

/// One fetched row group, ready to decode.
pub struct RowGroup {
    /// Row number in the file of the row group's first row.
    pub first_row: u64,
    /// Rows in the row group (before any selection).
    pub rows: usize,
    /// Decodes the row group's selected rows in batches.
    pub reader: ParquetRecordBatchReader,
}

/// Streams the row groups of `input` as synchronous readers of `batch_size`-row batches,
/// fetching up to `read_ahead` row groups ahead. With `keep` (one bit per row of the file), only
/// the set rows are decoded, and row groups with no set row are not fetched at all; the
/// selection is built one row group at a time, so its size does not grow with the file. With
/// `projection`, only those columns are fetched and decoded (the key-only pass of sharding).
pub fn row_groups(
    input: &InputObject,
    meta: ArrowReaderMetadata,
    batch_size: usize,
    keep: Option<Arc<BooleanBuffer>>,
    projection: Option<ProjectionMask>,
    read_ahead: usize,
) -> mpsc::Receiver<Result<RowGroup>> {
    let (tx, rx) = mpsc::channel(read_ahead.max(1));
    let reader = input.reader();
    let url = input.location.url.clone();
    tokio::spawn(async move {
        let map_err = |e: ParquetError| read_error(&url, "corrupt Parquet data", e);
        let mut offset = 0usize;
        let groups: Vec<usize> = meta
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows().max(0) as usize)
            .collect();
        for (index, rows) in groups.into_iter().enumerate() {
            let start = offset;
            offset += rows;
            let mut builder =
                ParquetRecordBatchStreamBuilder::new_with_metadata(reader.clone(), meta.clone())
                    .with_batch_size(batch_size)
                    .with_row_groups(vec![index]);
            if let Some(mask) = &projection {
                builder = builder.with_projection(mask.clone());
            }
            if let Some(bits) = &keep {
                if start + rows > bits.len() {
                    let _ = tx
                        .send(Err(Error::Internal(
                            "selection shorter than the file".into(),
                        )))
                        .await;
                    return;
                }
                let slice = bits.slice(start, rows);
                if slice.count_set_bits() == 0 {
                    continue;
                }
                if slice.count_set_bits() < rows {
                    builder = builder.with_row_selection(RowSelection::from_filters(&[
                        BooleanArray::new(slice, None),
                    ]));
                }
            }
            let item = match builder.build() {
                Ok(mut stream) => match stream.next_row_group().await {
                    Ok(Some(reader)) => Ok(RowGroup {
                        first_row: start as u64,
                        rows,
                        reader,
                    }),
                    Ok(None) => continue,
                    Err(e) => Err(map_err(e)),
                },
                Err(e) => Err(map_err(e)),
            };
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                return;
            }
        }
    });
    rx
}
