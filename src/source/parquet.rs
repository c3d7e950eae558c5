//! Parquet, the first input format: footers read once, row groups cut into slices where the
//! offset index allows, and fetched ahead of the decoder through a bounded channel.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::BooleanArray;
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::{DataType, Field, Schema};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, RowSelection, RowSelector,
};
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::arrow::{parquet_to_arrow_schema, ProjectionMask};
use parquet::errors::ParquetError;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use tokio::sync::mpsc;

use super::{InputObject, Read, RowGroup};
use crate::store::store_error;
use crate::{Error, Result};

/// An [`AsyncFileReader`] over one object, its size known from the listing.
#[derive(Clone)]
struct ObjectReader {
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

impl InputObject {
    /// A reader for this object.
    fn reader(&self) -> ObjectReader {
        ObjectReader {
            store: self.location.store.clone(),
            path: self.location.path.clone(),
            size: self.size,
        }
    }
}

/// Footer reading: the offset index (page locations) is loaded when the file has one, so that a
/// large row group can be read in slices ([`slices`]).
fn read_options() -> ArrowReaderOptions {
    ArrowReaderOptions::new().with_offset_index_policy(PageIndexPolicy::Optional)
}

fn normalise(dt: &DataType) -> Option<DataType> {
    match dt {
        DataType::LargeUtf8 | DataType::Utf8View => Some(DataType::Utf8),
        _ => None,
    }
}

/// Reads and checks the footer of `input`, returning metadata whose schema uses `Utf8` for all
/// strings. An empty, truncated or non-Parquet object is a [`Error::BadInput`]; a storage
/// failure underneath stays a storage error ([`read_error`]).
pub(super) async fn open(input: &InputObject) -> Result<ArrowReaderMetadata> {
    let url = &input.location.url;
    if input.size == 0 {
        return Err(Error::bad_input(
            url,
            "empty object (0 bytes), expected a Parquet file",
        ));
    }
    let mut reader = input.reader();
    // The Arrow schema embedded in the footer is decoded below, where a decoder panic on
    // mangled metadata can be caught.
    let meta =
        ArrowReaderMetadata::load_async(&mut reader, read_options().with_skip_arrow_metadata(true))
            .await
            .map_err(|e| read_error(url, "not a readable Parquet file", e))?;
    check_chunks(url, meta.metadata(), input.size)?;
    warn_unsliced(url, &meta);
    let file = meta.metadata().file_metadata();
    let schema = crate::catch_quietly(|| {
        parquet_to_arrow_schema(file.schema_descr(), file.key_value_metadata())
    })
    .ok_or_else(|| Error::bad_input(url, "corrupt Arrow schema (ARROW:schema) in the footer"))?
    .map_err(|e| Error::bad_input(url, format!("cannot read schema: {e}")))?;
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match normalise(f.data_type()) {
            Some(dt) => f.as_ref().clone().with_data_type(dt),
            None => f.as_ref().clone(),
        })
        .collect();
    let options = read_options().with_schema(Arc::new(Schema::new(fields)));
    ArrowReaderMetadata::try_new(meta.metadata().clone(), options)
        .map_err(|e| Error::bad_input(url, format!("cannot read schema: {e}")))
}

/// Checks that every column chunk the footer declares lies inside the object: the Parquet
/// reader asserts it (a panic) when it fetches a chunk with a negative offset or length.
fn check_chunks(url: &str, md: &ParquetMetaData, size: u64) -> Result<()> {
    for (g, rg) in md.row_groups().iter().enumerate() {
        for c in rg.columns() {
            let start = c.dictionary_page_offset().unwrap_or(c.data_page_offset());
            let len = c.compressed_size();
            let inside = start >= 0
                && len >= 0
                && (start as u64)
                    .checked_add(len as u64)
                    .is_some_and(|end| end <= size);
            if !inside {
                return Err(Error::bad_input(
                    url,
                    format!(
                        "corrupt footer: column `{}` of row group {g} lies outside the object",
                        c.column_path()
                    ),
                ));
            }
        }
    }
    Ok(())
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

/// Rows per slice of a large row group.
pub const SLICE_ROWS: usize = 1 << 17;

/// A contiguous range of rows within one row group: the unit of work of both passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Slice {
    pub row_group: usize,
    /// Row number in the file of the slice's first row.
    pub first_row: usize,
    /// Its first row's position within the row group.
    pub offset: usize,
    pub rows: usize,
    /// Rows in the whole row group.
    pub group_rows: usize,
}

/// The work units of a file: each row group whole, except that a row group of more than
/// [`SLICE_ROWS`] rows in a file with an offset index is cut into slices of that many rows
/// (empty row groups have nothing to do).
/// A slice fetches only the pages that hold its rows (plus the column's dictionary), so memory
/// follows the slice, not the row group, and the slices of one row group go to different
/// cores. Without an offset index every slice would fetch the whole row group, so it stays whole.
pub(super) fn slices(meta: &ArrowReaderMetadata) -> Vec<Slice> {
    let md = meta.metadata();
    let mut out = Vec::new();
    let mut first = 0usize;
    for (row_group, g) in md.row_groups().iter().enumerate() {
        let group_rows = g.num_rows().max(0) as usize;
        let step = if indexed(md, row_group) {
            SLICE_ROWS
        } else {
            group_rows
        };
        let mut offset = 0;
        while offset < group_rows {
            let rows = step.min(group_rows - offset);
            out.push(Slice {
                row_group,
                first_row: first + offset,
                offset,
                rows,
                group_rows,
            });
            offset += rows;
        }
        first += group_rows;
    }
    out
}

/// True when every column chunk of row group `rg` has page locations in the offset index.
fn indexed(md: &ParquetMetaData, rg: usize) -> bool {
    md.offset_index()
        .and_then(|ix| ix.get(rg))
        .is_some_and(|cols| !cols.is_empty() && cols.iter().all(|c| !c.page_locations().is_empty()))
}

/// Warns when `meta` has row groups that [`slices`] cannot cut: they are read whole, so the
/// memory they take follows their size, not the configuration.
fn warn_unsliced(url: &str, meta: &ArrowReaderMetadata) {
    let md = meta.metadata();
    let largest = md
        .row_groups()
        .iter()
        .enumerate()
        .filter(|(rg, g)| g.num_rows().max(0) as usize > SLICE_ROWS && !indexed(md, *rg))
        .max_by_key(|(_, g)| g.compressed_size());
    if let Some((_, g)) = largest {
        tracing::warn!(
            object = url,
            rows = g.num_rows(),
            compressed_mib = g.compressed_size() >> 20,
            "row groups of more than {SLICE_ROWS} rows without an offset index are read whole: \
             memory grows with them (write the file with an offset index to read it in slices)"
        );
    }
}

/// The row selection, within its row group, of the rows of `slice` set in `keep` (all when
/// `None`); `None` when that is the whole row group, and an empty selection when no row is set.
fn slice_selection(slice: &Slice, keep: Option<BooleanBuffer>) -> Option<RowSelection> {
    let inner: Vec<RowSelector> = match keep {
        Some(bits) if bits.count_set_bits() < slice.rows => {
            RowSelection::from_filters(&[BooleanArray::new(bits, None)]).into()
        }
        _ if slice.rows == slice.group_rows => return None,
        _ => vec![RowSelector::select(slice.rows)],
    };
    let mut selectors = Vec::with_capacity(inner.len() + 2);
    if slice.offset > 0 {
        selectors.push(RowSelector::skip(slice.offset));
    }
    selectors.extend(inner);
    let after = slice.group_rows - slice.offset - slice.rows;
    if after > 0 {
        selectors.push(RowSelector::skip(after));
    }
    Some(selectors.into())
}

/// Streams the [`slices`] of `input` as synchronous readers of `batch_size`-row batches,
/// fetching up to `read_ahead` slices ahead. With `keep` (one bit per row of the file), only
/// the set rows are decoded, and slices with no set row are not fetched at all; the selection is
/// built one slice at a time, so its size does not grow with the file. With `columns`, only
/// those top-level columns are fetched and decoded (the key pass).
pub(super) fn row_groups(
    input: &InputObject,
    meta: &ArrowReaderMetadata,
    read: Read,
) -> mpsc::Receiver<Result<RowGroup>> {
    let Read {
        batch_size,
        keep,
        columns,
        read_ahead,
    } = read;
    let meta = meta.clone();
    let projection = columns
        .map(|roots| ProjectionMask::roots(meta.metadata().file_metadata().schema_descr(), roots));
    let (tx, rx) = mpsc::channel(read_ahead.max(1));
    let reader = input.reader();
    let url = input.location.url.clone();
    tokio::spawn(async move {
        let map_err = |e: ParquetError| read_error(&url, "corrupt Parquet data", e);
        for slice in slices(&meta) {
            let mut builder =
                ParquetRecordBatchStreamBuilder::new_with_metadata(reader.clone(), meta.clone())
                    .with_batch_size(batch_size)
                    .with_row_groups(vec![slice.row_group]);
            if let Some(mask) = &projection {
                builder = builder.with_projection(mask.clone());
            }
            let bits = match &keep {
                Some(bits) if slice.first_row + slice.rows > bits.len() => {
                    let _ = tx
                        .send(Err(Error::Internal(
                            "selection shorter than the file".into(),
                        )))
                        .await;
                    return;
                }
                Some(bits) => {
                    let bits = bits.slice(slice.first_row, slice.rows);
                    if bits.count_set_bits() == 0 {
                        continue;
                    }
                    Some(bits)
                }
                None => None,
            };
            if let Some(selection) = slice_selection(&slice, bits) {
                builder = builder.with_row_selection(selection);
            }
            let item = match builder.build() {
                Ok(mut stream) => match stream.next_row_group().await {
                    Ok(Some(reader)) => Ok(RowGroup::new(
                        slice.first_row as u64,
                        slice.rows,
                        Box::new(reader),
                    )),
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int64Array, RecordBatch};
    use arrow::datatypes::Int64Type;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;
    use proptest::prelude::*;

    /// One Int64 column holding each row's number: `groups` row groups of `rows` rows.
    fn file(groups: usize, rows: usize) -> Bytes {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(rows))
            .build();
        let mut out = Vec::new();
        let mut w = ArrowWriter::try_new(&mut out, schema.clone(), Some(props)).unwrap();
        let n = (groups * rows) as i64;
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(0..n))])
                .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        out.into()
    }

    /// The row numbers each slice decodes with `keep`, in order.
    fn decoded(data: &Bytes, keep: &BooleanBuffer) -> Vec<i64> {
        let meta = ArrowReaderMetadata::load(data, read_options()).unwrap();
        let mut out = Vec::new();
        for slice in slices(&meta) {
            let bits = keep.slice(slice.first_row, slice.rows);
            if bits.count_set_bits() == 0 {
                continue;
            }
            let mut b =
                ParquetRecordBatchReaderBuilder::new_with_metadata(data.clone(), meta.clone())
                    .with_row_groups(vec![slice.row_group]);
            if let Some(s) = slice_selection(&slice, Some(bits)) {
                b = b.with_row_selection(s);
            }
            for batch in b.build().unwrap() {
                out.extend(
                    batch
                        .unwrap()
                        .column(0)
                        .as_primitive::<Int64Type>()
                        .values(),
                );
            }
        }
        out
    }

    #[test]
    fn large_row_groups_are_sliced_when_indexed() {
        let data = file(2, SLICE_ROWS * 2 + 5);
        let meta = ArrowReaderMetadata::load(&data, read_options()).unwrap();
        let s = slices(&meta);
        let rows: Vec<(usize, usize, usize)> =
            s.iter().map(|s| (s.row_group, s.offset, s.rows)).collect();
        assert_eq!(
            rows,
            [
                (0, 0, SLICE_ROWS),
                (0, SLICE_ROWS, SLICE_ROWS),
                (0, 2 * SLICE_ROWS, 5),
                (1, 0, SLICE_ROWS),
                (1, SLICE_ROWS, SLICE_ROWS),
                (1, 2 * SLICE_ROWS, 5),
            ]
        );
        assert_eq!(s[3].first_row, 2 * SLICE_ROWS + 5);
        // Without the offset index a row group stays whole.
        let whole = ArrowReaderMetadata::load(&data, ArrowReaderOptions::new()).unwrap();
        assert_eq!(slices(&whole).len(), 2);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        /// Slices with a row selection decode exactly the kept rows, in file order.
        #[test]
        fn slices_decode_exactly_the_kept_rows(
            density in prop_oneof![Just(0u32), Just(100), 1u32..100],
            seed in any::<u64>(),
        ) {
            static DATA: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
            let data = DATA.get_or_init(|| file(2, SLICE_ROWS + 1000));
            let n = 2 * (SLICE_ROWS + 1000);
            let mut x = seed | 1;
            let keep = BooleanBuffer::collect_bool(n, |_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 100) < u64::from(density)
            });
            let expected: Vec<i64> = keep.set_indices().map(|i| i as i64).collect();
            prop_assert_eq!(decoded(data, &keep), expected);
        }
    }
}
