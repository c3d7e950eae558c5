//! Prod output of one model: Athena-ready Parquet, partition by partition, staged locally, then
//! published.
//!
//! DataFusion's own partitioned writer names files randomly, keeps a writer open per partition
//! and writes integer partition values unpadded, so edp writes the model's sorted stream itself:
//! rows arrive ordered by (partition column, sort columns, key), so each partition's rows are
//! contiguous and only one file is open at a time. A file is closed at `--target-file-size`
//! (`part-00000.parquet`, `part-00001.parquet`, …) and its row groups at ~128 MiB of buffered
//! pages (less under a small memory limit). Timestamps are written as milliseconds in UTC
//! (Athena's precision), strings as plain UTF-8, the partition column is left out of the files
//! when the path holds all of it (day granularity), and `sorting_columns` records the order.
//!
//! Files go to a local staging directory first, with their SHA-256; nothing is visible until
//! every model and check of the run has been staged. [`publish`] then uploads the files whose
//! content differs from what the previous run recorded in `<model>/_edp_manifest.json`, deletes
//! every other object under the model (stale partitions and files), and writes the manifest
//! last. Names are deterministic, so a rerun over the same inputs uploads nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Date32Type, Field, Schema, SchemaRef, TimeUnit};
use futures::{StreamExt, TryStreamExt};
use object_store::buffered::BufWriter;
use object_store::ObjectStoreExt;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::model::{Granularity, Model};
use crate::datetime::civil_from_days;
use crate::output::Codec;
use crate::store::{store_error, Location};
use crate::{Error, Result};

/// Hive's name for a null partition value (Athena reads it as NULL).
pub const NULL_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";
/// The manifest of a model's published files.
pub const MANIFEST: &str = "_edp_manifest.json";
/// Buffered pages at which a row group is closed (capped further by the memory limit).
const ROW_GROUP_BYTES: usize = 128 << 20;

/// How a model's rows become files.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    pub codec: Codec,
    pub target_file_size: u64,
    /// Buffered pages at which a row group is closed.
    pub row_group_bytes: usize,
}

impl WriteOptions {
    /// Options for a job with `memory_limit` bytes: row groups of at most 128 MiB of buffered
    /// pages and at most an eighth of the limit (the writer holds about twice that).
    pub fn new(codec: Codec, target_file_size: u64, memory_limit: usize) -> Self {
        WriteOptions {
            codec,
            target_file_size,
            row_group_bytes: ROW_GROUP_BYTES.min(memory_limit / 8).max(1 << 20),
        }
    }
}

/// One staged file.
#[derive(Debug, Clone)]
pub struct StagedFile {
    /// Path below the model's prefix: `year=2025/month=01/day=16/part-00000.parquet`.
    pub rel: String,
    pub local: PathBuf,
    pub sha256: String,
    pub bytes: u64,
    pub rows: u64,
}

/// A model's staged output.
#[derive(Debug)]
pub struct Staged {
    pub model: String,
    /// The schema of the files (partition column removed when the path holds it).
    pub file_schema: SchemaRef,
    pub partition_keys: Vec<String>,
    /// Partition directory (`year=2025/month=01`, or empty) → its values and rows.
    pub partitions: BTreeMap<String, (Vec<String>, u64)>,
    pub files: Vec<StagedFile>,
    pub rows: u64,
}

struct OpenFile {
    partition: String,
    part: usize,
    rel: String,
    local: PathBuf,
    writer: ArrowWriter<File>,
    rows: u64,
}

/// Writes one model's sorted batches into staged partition files.
pub struct ModelWriter {
    staged: Staged,
    dir: PathBuf,
    granularity: Granularity,
    /// Index of the partition column in the model's schema.
    partition_col: Option<usize>,
    /// Columns of the model's schema that go into the files, in order.
    kept: Vec<usize>,
    props: WriterProperties,
    options: WriteOptions,
    open: Option<OpenFile>,
}

/// The prod type of a model column: timestamps in milliseconds (UTC when zoned), strings as
/// `Utf8`.
fn prod_type(dt: &DataType) -> DataType {
    match dt {
        DataType::Timestamp(_, tz) => {
            DataType::Timestamp(TimeUnit::Millisecond, tz.as_ref().map(|_| Arc::from("UTC")))
        }
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        other => other.clone(),
    }
}

/// The day count of each row of a partition column (Date32, Date64 or a timestamp).
fn day_numbers(model: &Model, array: &ArrayRef) -> Result<Vec<Option<i32>>> {
    let days = match array.data_type() {
        DataType::Date32 => array.clone(),
        DataType::Date64 | DataType::Timestamp(_, _) => cast(array, &DataType::Date32)?,
        other => {
            return Err(Error::Config(format!(
                "model {}: partition_by column is {other}, expected a DATE or TIMESTAMP",
                model.file()
            )))
        }
    };
    let days = days.as_primitive::<Date32Type>();
    Ok((0..days.len())
        .map(|i| days.is_valid(i).then(|| days.value(i)))
        .collect())
}

/// The partition directory and values of a day number under `granularity`.
fn partition_of(day: Option<i32>, granularity: Granularity) -> (String, Vec<String>) {
    let values: Vec<String> = match day {
        None => vec![NULL_PARTITION.to_string(); granularity.keys().len()],
        Some(d) => {
            let (y, m, d) = civil_from_days(i64::from(d));
            let all = [format!("{y:04}"), format!("{m:02}"), format!("{d:02}")];
            all[..granularity.keys().len()].to_vec()
        }
    };
    let dir = granularity
        .keys()
        .iter()
        .zip(&values)
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("/");
    (dir, values)
}

impl ModelWriter {
    /// A writer for `model`, whose rows have `schema`, staging under `dir`.
    pub fn new(model: &Model, schema: &Schema, dir: &Path, options: WriteOptions) -> Result<Self> {
        let partition_col = match &model.partition_by {
            Some(name) => Some(schema.index_of(name).map_err(|_| {
                Error::Config(format!(
                    "model {}: partition_by column `{name}` is not in the result",
                    model.file()
                ))
            })?),
            None => None,
        };
        let drop = partition_col.filter(|_| model.granularity == Granularity::Day);
        let kept: Vec<usize> = (0..schema.fields().len())
            .filter(|i| Some(*i) != drop)
            .collect();
        let fields: Vec<Field> = kept
            .iter()
            .map(|&i| {
                let f = schema.field(i);
                f.clone().with_data_type(prod_type(f.data_type()))
            })
            .collect();
        let file_schema = Arc::new(Schema::new(fields));
        let sorting: Vec<SortingColumn> = model
            .order()
            .iter()
            .map_while(|c| file_schema.index_of(c).ok())
            .map(|i| SortingColumn {
                column_idx: i as i32,
                descending: false,
                nulls_first: false,
            })
            .collect();
        let compression = match options.codec {
            Codec::Snappy => Compression::SNAPPY,
            Codec::Zstd => Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()),
            Codec::None => Compression::UNCOMPRESSED,
        };
        let props = WriterProperties::builder()
            .set_compression(compression)
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_sorting_columns((!sorting.is_empty()).then_some(sorting))
            .set_created_by(format!("edp {}", env!("CARGO_PKG_VERSION")))
            .build();
        let dir = dir.join(&model.name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::Spill(format!("{}: {e}", dir.display())))?;
        Ok(ModelWriter {
            staged: Staged {
                model: model.name.clone(),
                file_schema,
                partition_keys: model
                    .granularity
                    .keys()
                    .iter()
                    .map(|k| k.to_string())
                    .collect(),
                partitions: BTreeMap::new(),
                files: Vec::new(),
                rows: 0,
            },
            dir,
            granularity: model.granularity,
            partition_col,
            kept,
            props,
            options,
            open: None,
        })
    }

    /// What has been staged so far (before any row: the file schema and partition keys).
    pub fn staged(&self) -> &Staged {
        &self.staged
    }

    fn io(&self, e: impl std::fmt::Display) -> Error {
        Error::Spill(format!("staging {}: {e}", self.dir.display()))
    }

    /// `batch`'s rows as they go into the files.
    fn file_batch(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let columns = self
            .kept
            .iter()
            .zip(self.staged.file_schema.fields())
            .map(|(&i, f)| {
                let c = batch.column(i);
                if c.data_type() == f.data_type() {
                    Ok(c.clone())
                } else {
                    cast(c, f.data_type())
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RecordBatch::try_new(
            self.staged.file_schema.clone(),
            columns,
        )?)
    }

    /// Writes one sorted batch.
    pub fn write(&mut self, model: &Model, batch: &RecordBatch) -> Result<()> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        let rows = self.file_batch(batch)?;
        let Some(col) = self.partition_col else {
            return self.append(String::new(), Vec::new(), &rows);
        };
        let days = day_numbers(model, batch.column(col))?;
        let mut start = 0;
        while start < n {
            let mut end = start + 1;
            while end < n && days[end] == days[start] {
                end += 1;
            }
            let (dir, values) = partition_of(days[start], self.granularity);
            self.append(dir, values, &rows.slice(start, end - start))?;
            start = end;
        }
        Ok(())
    }

    fn append(&mut self, partition: String, values: Vec<String>, rows: &RecordBatch) -> Result<()> {
        if self.open.as_ref().is_some_and(|o| o.partition != partition) {
            self.close()?;
        }
        if self.open.is_none() {
            if let Some((_, _)) = self.staged.partitions.get(&partition) {
                // Rows of one partition arrive together; a partition seen again means the stream
                // was not sorted by the partition column.
                return Err(Error::Internal(format!(
                    "model {}: rows of partition `{partition}` are not contiguous",
                    self.staged.model
                )));
            }
            self.open_file(partition.clone(), 0)?;
        }
        let entry = self
            .staged
            .partitions
            .entry(partition)
            .or_insert_with(|| (values, 0));
        entry.1 += rows.num_rows() as u64;
        self.staged.rows += rows.num_rows() as u64;
        let (row_group_bytes, target) =
            (self.options.row_group_bytes, self.options.target_file_size);
        let Some(open) = self.open.as_mut() else {
            return Err(Error::Internal("no open file".into()));
        };
        open.writer
            .write(rows)
            .map_err(|e| Error::Spill(format!("{}: {e}", open.local.display())))?;
        open.rows += rows.num_rows() as u64;
        if open.writer.in_progress_size() >= row_group_bytes {
            open.writer
                .flush()
                .map_err(|e| Error::Spill(format!("{}: {e}", open.local.display())))?;
        }
        let size = open.writer.bytes_written() as u64 + open.writer.in_progress_size() as u64;
        if size >= target {
            let (partition, part) = (open.partition.clone(), open.part);
            self.close()?;
            self.open_file(partition, part + 1)?;
        }
        Ok(())
    }

    fn open_file(&mut self, partition: String, part: usize) -> Result<()> {
        let name = format!("part-{part:05}.parquet");
        let rel = if partition.is_empty() {
            name
        } else {
            format!("{partition}/{name}")
        };
        let local = self.dir.join(rel.replace('/', "__"));
        let file = File::create(&local).map_err(|e| self.io(e))?;
        let writer = ArrowWriter::try_new(
            file,
            self.staged.file_schema.clone(),
            Some(self.props.clone()),
        )
        .map_err(|e| self.io(e))?;
        self.open = Some(OpenFile {
            partition,
            part,
            rel,
            local,
            writer,
            rows: 0,
        });
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        if open.rows == 0 {
            drop(open.writer);
            return std::fs::remove_file(&open.local).map_err(|e| self.io(e));
        }
        self.seal(open)
    }

    /// Writes `open`'s footer and records the file with its hash.
    fn seal(&mut self, open: OpenFile) -> Result<()> {
        open.writer.close().map_err(|e| self.io(e))?;
        let (sha256, bytes) = hash_file(&open.local).map_err(|e| self.io(e))?;
        self.staged.files.push(StagedFile {
            rel: open.rel,
            local: open.local,
            sha256,
            bytes,
            rows: open.rows,
        });
        Ok(())
    }

    /// Closes the last file. A model with no rows has no files: an unpartitioned one still
    /// gets one empty file, so Athena sees an empty table rather than a missing one.
    pub fn finish(mut self) -> Result<Staged> {
        if self.staged.partitions.is_empty() && self.partition_col.is_none() {
            self.open_file(String::new(), 0)?;
            if let Some(open) = self.open.take() {
                self.seal(open)?;
                self.staged
                    .partitions
                    .insert(String::new(), (Vec::new(), 0));
            }
        }
        self.close()?;
        Ok(self.staged)
    }
}

fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    let hex = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((hex, bytes))
}

/// What publishing one model changed.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Published {
    pub files_uploaded: usize,
    pub files_unchanged: usize,
    pub files_removed: usize,
    /// Partition directories by what happened to them.
    pub partitions_written: Vec<String>,
    pub partitions_unchanged: Vec<String>,
    pub partitions_removed: Vec<String>,
}

fn partition_dir(rel: &str) -> &str {
    rel.rsplit_once('/').map_or("", |(d, _)| d)
}

/// Uploads and deletes a model's publication keeps in flight at once.
const PUBLISH_CONCURRENCY: usize = 8;

/// Uploads a staged file to `to` through a multipart upload (visible only when complete).
async fn upload(file: &StagedFile, to: Location) -> Result<()> {
    let mut writer = BufWriter::with_capacity(to.store.clone(), to.path.clone(), 10 << 20);
    let result = async {
        let mut local = tokio::fs::File::open(&file.local)
            .await
            .map_err(|e| Error::Spill(format!("{}: {e}", file.local.display())))?;
        tokio::io::copy(&mut local, &mut writer)
            .await
            .map_err(|e| Error::Store {
                object: to.url.clone(),
                source: object_store::Error::Generic {
                    store: "output",
                    source: Box::new(e),
                },
            })?;
        writer.shutdown().await.map_err(|e| Error::Store {
            object: to.url.clone(),
            source: object_store::Error::Generic {
                store: "output",
                source: Box::new(e),
            },
        })
    }
    .await;
    if result.is_err() {
        let _ = writer.abort().await;
    }
    result
}

/// Publishes `staged` under `prefix` (the model's prod location): see the module docs.
pub async fn publish(staged: &Staged, prefix: &Location) -> Result<Published> {
    let manifest_loc = prefix.child(MANIFEST);
    let previous: BTreeMap<String, String> = match manifest_loc.store.get(&manifest_loc.path).await
    {
        Ok(got) => {
            let bytes = got
                .bytes()
                .await
                .map_err(|e| store_error(&manifest_loc.url, e))?;
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("files").cloned())
                .and_then(|f| serde_json::from_value(f).ok())
                .unwrap_or_default()
        }
        Err(object_store::Error::NotFound { .. }) => BTreeMap::new(),
        Err(e) => return Err(store_error(&manifest_loc.url, e)),
    };
    let base = prefix.path.as_ref().to_string();
    let existing: BTreeMap<String, u64> = prefix
        .store
        .list(Some(&prefix.path))
        .map_ok(|m| {
            let rel = m
                .location
                .as_ref()
                .strip_prefix(&base)
                .unwrap_or(m.location.as_ref())
                .trim_start_matches('/')
                .to_string();
            (rel, m.size)
        })
        .try_collect::<Vec<_>>()
        .await
        .or_else(|e| match e {
            object_store::Error::NotFound { .. } => Ok(Vec::new()),
            e => Err(store_error(&prefix.url, e)),
        })?
        .into_iter()
        .filter(|(rel, _)| rel != MANIFEST)
        .collect();
    let mut out = Published::default();
    let written: BTreeSet<String> = staged.files.iter().map(|f| f.rel.clone()).collect();
    let mut touched: BTreeSet<String> = BTreeSet::new();
    let (same, changed): (Vec<&StagedFile>, Vec<&StagedFile>) =
        staged.files.iter().partition(|file| {
            previous.get(&file.rel) == Some(&file.sha256)
                && existing.get(&file.rel) == Some(&file.bytes)
        });
    out.files_unchanged = same.len();
    out.files_uploaded = changed.len();
    touched.extend(changed.iter().map(|f| partition_dir(&f.rel).to_string()));
    // Day-partitioned models have hundreds of small files: uploads and deletes are
    // latency-bound, so several are in flight at once.
    futures::stream::iter(&changed)
        .map(|file| upload(file, prefix.child(&file.rel)))
        .buffer_unordered(PUBLISH_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    let stale: Vec<&String> = existing.keys().filter(|r| !written.contains(*r)).collect();
    futures::stream::iter(&stale)
        .map(|rel| async move {
            let loc = prefix.child(rel);
            match loc.store.delete(&loc.path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(store_error(&loc.url, e)),
            }
        })
        .buffer_unordered(PUBLISH_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    let live: BTreeSet<String> = staged.partitions.keys().cloned().collect();
    let mut emptied: BTreeSet<String> = BTreeSet::new();
    for rel in stale {
        out.files_removed += 1;
        let dir = partition_dir(rel).to_string();
        if live.contains(&dir) {
            touched.insert(dir);
        } else {
            emptied.insert(dir);
        }
    }
    for dir in &live {
        if touched.contains(dir) {
            out.partitions_written.push(dir.clone());
        } else {
            out.partitions_unchanged.push(dir.clone());
        }
    }
    out.partitions_removed = emptied.into_iter().collect();
    let files: BTreeMap<&str, &str> = staged
        .files
        .iter()
        .map(|f| (f.rel.as_str(), f.sha256.as_str()))
        .collect();
    let manifest = serde_json::json!({ "model": staged.model, "files": files });
    manifest_loc
        .store
        .put(
            &manifest_loc.path,
            serde_json::to_vec_pretty(&manifest)
                .map_err(|e| Error::Internal(format!("manifest: {e}")))?
                .into(),
        )
        .await
        .map_err(|e| store_error(&manifest_loc.url, e))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_directories_are_zero_padded_and_nulls_use_hives_default() {
        let day = crate::datetime::days_from_civil(2025, 1, 6) as i32;
        assert_eq!(
            partition_of(Some(day), Granularity::Day),
            (
                "year=2025/month=01/day=06".to_string(),
                vec!["2025".into(), "01".into(), "06".into()]
            )
        );
        assert_eq!(
            partition_of(Some(day), Granularity::Month).0,
            "year=2025/month=01"
        );
        assert_eq!(
            partition_of(None, Granularity::Month).0,
            format!("year={NULL_PARTITION}/month={NULL_PARTITION}")
        );
        assert_eq!(partition_of(Some(day), Granularity::None).0, "");
    }

    #[test]
    fn prod_types_are_athenas() {
        assert_eq!(
            prod_type(&DataType::Timestamp(
                TimeUnit::Microsecond,
                Some("+00:00".into())
            )),
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
        );
        assert_eq!(prod_type(&DataType::Utf8View), DataType::Utf8);
        assert_eq!(
            prod_type(&DataType::Decimal128(18, 2)),
            DataType::Decimal128(18, 2)
        );
    }
}
