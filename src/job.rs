//! The stage 1 job: raw objects → curated and quarantine Parquet plus a run report.
//!
//! Two passes keep memory independent of the data volume:
//!
//! 1. Every row group of every input is fetched (with read-ahead), decoded and validated.
//!    Failing rows are protected and written to quarantine at once; the keys, event times and
//!    positions of valid rows go to the dedup index. No row data is held.
//! 2. Each input is read again with a Parquet row selection of its winning rows only, which are
//!    protected and written to curated.
//!
//! With `--shard INDEX/COUNT` a pass 0 first decodes only the key columns to find the rows whose
//! key hash falls in this shard; passes 1 and 2 then decode only those rows (a Parquet row
//! selection), so COUNT processes together produce exactly what one process would.
//!
//! File-level problems (unreadable footer, missing column, wrong type, schemas that cannot be
//! reconciled) are found from the footers before any data is read. Inputs whose schemas differ
//! only by added nullable columns are reconciled into one output schema, the missing columns read
//! as nulls. Any error aborts both
//! uploads, so nothing partial becomes visible; the conservation check runs before the outputs
//! are completed, so an unbalanced run publishes nothing either.
//!
//! Memory: the dedup index gets [`INDEX_BUDGET_SHARE`] of `--memory-limit` and spills past it;
//! winners are kept as one bit per input row. The rest of the budget covers what is bounded by
//! construction: `--read-ahead` compressed row groups in flight, two decoded row groups in the
//! pass 2 pipeline, each output's row group buffer (flushed at 1/16 of the limit, at most
//! 32 MiB) and its multipart parts (3 × 10 MiB).

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{new_null_array, ArrayRef, BooleanArray, BooleanBufferBuilder, RecordBatch};
use arrow::buffer::BooleanBuffer;
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Field, Schema, SchemaRef};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use object_store::{ObjectStoreExt, PutPayload};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReader};
use parquet::arrow::ProjectionMask;

use crate::contract::{Contract, Format, Pci, Pii};
use crate::dedup::{DedupIndex, DedupPlan, SpillConfig};
use crate::protect::{MaskCounts, Protector};
use crate::report::{Conservation, InputStats, Masked, Report, RuleCount, Timers};
use crate::sink::{writer_properties, Codec, ParquetSink};
use crate::source::{self, decode_error, InputObject};
use crate::store::{store_error, Location};
use crate::validate::{quarantine_batch, quarantine_schema, Validator};
use crate::{Error, Result};

/// Default rows per record batch.
pub const DEFAULT_BATCH_SIZE: usize = 8192;
/// Default number of row groups fetched ahead of decoding.
pub const DEFAULT_READ_AHEAD: usize = 2;
/// Default memory limit: the original pipeline's budget.
pub const DEFAULT_MEMORY_LIMIT: usize = 2 << 30;
/// The dedup index's share of the memory limit (1/32: spilling is sequential and cheap).
pub const INDEX_BUDGET_SHARE: usize = 32;
/// Name of the quarantine prefix under the output when `--errors` is not given.
pub const QUARANTINE_DIR: &str = "_quarantine";

/// This process's part of an array job: it owns the keys whose hash modulo `count` is `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// The single shard of an unsharded job.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Parses `INDEX/COUNT` with `INDEX < COUNT`.
    pub fn parse(s: &str) -> std::result::Result<Shard, String> {
        let (i, c) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}`: expected INDEX/COUNT, e.g. 0/4"))?;
        let index: u32 = i
            .trim()
            .parse()
            .map_err(|_| format!("`{s}`: INDEX is not a number"))?;
        let count: u32 = c
            .trim()
            .parse()
            .map_err(|_| format!("`{s}`: COUNT is not a number"))?;
        if count == 0 || index >= count {
            return Err(format!(
                "`{s}`: INDEX must be below COUNT and COUNT at least 1"
            ));
        }
        Ok(Shard { index, count })
    }

    fn owns(&self, hash: u64) -> bool {
        hash % u64::from(self.count) == u64::from(self.index)
    }

    /// Name of this shard's data object under an output prefix.
    pub fn part_name(&self) -> String {
        if self.count == 1 {
            "part-00000.parquet".to_string()
        } else {
            format!("part-{:05}-of-{:05}.parquet", self.index, self.count)
        }
    }

    /// Name of this shard's run report under the output prefix.
    pub fn report_name(&self) -> String {
        if self.count == 1 {
            "_edp_report.json".to_string()
        } else {
            format!("_edp_report-{:05}-of-{:05}.json", self.index, self.count)
        }
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Everything a stage 1 run needs, validated.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub inputs: Vec<String>,
    /// Output prefix; `None` checks only (`edp validate`) and writes nothing.
    pub output: Option<String>,
    /// Quarantine prefix; defaults to `<output>/_quarantine`.
    pub errors: Option<String>,
    pub contract: Arc<Contract>,
    pub batch_size: NonZeroUsize,
    pub read_ahead: usize,
    pub codec: Codec,
    pub pci_enabled: bool,
    /// Check row rules (file-level checks always run).
    pub validation_enabled: bool,
    /// Keep only the latest version per primary key.
    pub deduplication_enabled: bool,
    pub pii_key: Vec<u8>,
    pub progress: bool,
    /// Bytes the whole job may use (see the module docs for how it is shared).
    pub memory_limit: usize,
    /// Where the dedup index spills.
    pub spill_dir: PathBuf,
    pub shard: Shard,
    /// Set by a signal handler: the job stops at the next row group and aborts its outputs.
    pub interrupted: Arc<AtomicBool>,
}

struct Prepared {
    input: InputObject,
    meta: ArrowReaderMetadata,
    /// Validator and dedup plan resolved against the job's (reconciled) schema.
    validator: Arc<Validator>,
    plan: Option<DedupPlan>,
    /// Rows in the file.
    rows: u64,
    /// This shard's rows of the file (all rows when unsharded).
    owned: Option<Arc<BooleanBuffer>>,
    owned_rows: u64,
}

struct Counters {
    timers: Timers,
    failures: BTreeMap<(String, &'static str), u64>,
    quarantined: u64,
    masked: Masked,
    /// Valid rows per file, only when there is no primary key to deduplicate on.
    valid: Vec<BooleanBuffer>,
}

fn add_counts(into: &mut BTreeMap<String, u64>, counts: MaskCounts) {
    for (col, n) in counts {
        *into.entry(col.to_string()).or_default() += n as u64;
    }
}

/// The job's output schema: the first input's columns, then columns that later inputs add. A
/// column missing from some input must be nullable and not required; a column present in two
/// inputs must have one type.
fn reconcile(contract: &Contract, inputs: &[(String, SchemaRef)]) -> Result<SchemaRef> {
    let mut fields: Vec<Field> = Vec::new();
    for (url, schema) in inputs {
        for f in schema.fields() {
            match fields.iter_mut().find(|g| g.name() == f.name()) {
                Some(g) if g.data_type() != f.data_type() => {
                    return Err(Error::bad_input(
                        url,
                        format!(
                            "column `{}` has type {} here but {} in an earlier input",
                            f.name(),
                            f.data_type(),
                            g.data_type()
                        ),
                    ))
                }
                Some(g) => {
                    if f.is_nullable() {
                        *g = g.clone().with_nullable(true);
                    }
                }
                None => fields.push(f.as_ref().clone()),
            }
        }
    }
    for field in &mut fields {
        let missing: Vec<&String> = inputs
            .iter()
            .filter(|(_, s)| s.field_with_name(field.name()).is_err())
            .map(|(u, _)| u)
            .collect();
        if let Some(url) = missing.first() {
            let required = contract.column(field.name()).is_some_and(|c| c.required);
            if required || !field.is_nullable() {
                return Err(Error::bad_input(
                    url,
                    format!(
                        "lacks column `{}`, which other inputs have and which is {}",
                        field.name(),
                        if required {
                            "required by the contract"
                        } else {
                            "not nullable"
                        }
                    ),
                ));
            }
            *field = field.clone().with_nullable(true);
        }
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// `batch` in the job's schema: columns in order, absent ones as nulls.
fn adapt(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch);
    }
    let n = batch.num_rows();
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) => c.clone(),
            None => new_null_array(f.data_type(), n),
        })
        .collect();
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

async fn prepare(spec: &JobSpec) -> Result<(Vec<Prepared>, SchemaRef)> {
    let inputs = source::resolve(&spec.inputs).await?;
    let mut opened = Vec::with_capacity(inputs.len());
    for input in inputs {
        let meta = source::open(&input).await?;
        // File-level checks against the file's own schema: required columns, types.
        Validator::new(&spec.contract, meta.schema(), &input.location.url)?;
        opened.push((input, meta));
    }
    let schemas: Vec<(String, SchemaRef)> = opened
        .iter()
        .map(|(i, m)| (i.location.url.clone(), m.schema().clone()))
        .collect();
    let schema = reconcile(&spec.contract, &schemas)?;
    let mut prepared = Vec::with_capacity(opened.len());
    for (input, meta) in opened {
        let url = input.location.url.clone();
        let rows = meta.metadata().file_metadata().num_rows().max(0) as u64;
        prepared.push(Prepared {
            validator: Arc::new(Validator::new(&spec.contract, &schema, &url)?),
            plan: if spec.deduplication_enabled {
                DedupPlan::new(&spec.contract, &schema, &url)?
            } else {
                None
            },
            input,
            meta,
            rows,
            owned: None,
            owned_rows: rows,
        });
    }
    Ok((prepared, schema))
}

struct Outputs {
    curated: Option<ParquetSink>,
    quarantine: Option<ParquetSink>,
}

impl Outputs {
    async fn abort(&mut self) {
        if let Some(s) = self.curated.take() {
            s.abort().await;
        }
        if let Some(s) = self.quarantine.take() {
            s.abort().await;
        }
    }
}

fn progress_bar(enabled: bool, total: u64) -> ProgressBar {
    let target = if enabled {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(total), target);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>10} [{bar:40}] {human_pos}/{human_len} rows ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

/// Fails early when the spill directory is missing or not writable, before any output starts.
fn check_spill_dir(dir: &std::path::Path) -> Result<()> {
    let probe = tempfile::Builder::new()
        .prefix(".edp-probe-")
        .tempfile_in(dir);
    probe.map(drop).map_err(|e| {
        Error::Config(format!(
            "spill directory {} is not a writable directory: {e}",
            dir.display()
        ))
    })
}

fn check_interrupted(spec: &JobSpec) -> Result<()> {
    if spec.interrupted.load(Ordering::Relaxed) {
        return Err(Error::Interrupted("signal"));
    }
    Ok(())
}

/// Pass 0 of a sharded job: decode only the key columns of `p` and mark the rows this shard
/// owns. Without a primary key, rows are owned by a hash of their position.
async fn own_rows(spec: &JobSpec, file: u32, p: &mut Prepared, c: &mut Counters) -> Result<()> {
    let url = p.input.location.url.clone();
    let mut bits = BooleanBufferBuilder::new(p.rows as usize);
    match &p.plan {
        None => {
            for row in 0..p.rows {
                let mut key = [0u8; 12];
                key[..4].copy_from_slice(&file.to_le_bytes());
                key[4..].copy_from_slice(&row.to_le_bytes());
                bits.append(spec.shard.owns(crate::dedup::stable_hash(&key)));
            }
        }
        Some(plan) => {
            let file_schema = p.meta.schema().clone();
            let names: Vec<&str> = spec
                .contract
                .primary_key
                .iter()
                .map(String::as_str)
                .collect();
            let roots: Vec<usize> = names
                .iter()
                .map(|n| file_schema.index_of(n))
                .collect::<Result<_, _>>()?;
            let mask =
                ProjectionMask::roots(p.meta.metadata().file_metadata().schema_descr(), roots);
            let mut rx = source::row_groups(
                &p.input,
                p.meta.clone(),
                spec.batch_size.get(),
                None,
                Some(mask),
                spec.read_ahead,
            );
            while let Some(reader) = rx.recv().await {
                check_interrupted(spec)?;
                let reader = reader?;
                let t = Instant::now();
                tokio::task::block_in_place(|| -> Result<()> {
                    for batch in reader {
                        let batch = batch.map_err(|e| decode_error(&url, e))?;
                        for h in plan.hash_key_columns(&key_columns(&batch, &names)?)? {
                            bits.append(spec.shard.owns(h));
                        }
                    }
                    Ok(())
                })?;
                c.timers.decode += t.elapsed();
            }
        }
    }
    if bits.len() as u64 != p.rows {
        return Err(decode_error(
            &url,
            format!(
                "footer declares {} rows but {} were decoded",
                p.rows,
                bits.len()
            ),
        ));
    }
    let owned = bits.finish();
    p.owned_rows = owned.count_set_bits() as u64;
    p.owned = Some(Arc::new(owned));
    Ok(())
}

/// The key columns of a key-only batch, in primary-key order.
fn key_columns(batch: &RecordBatch, names: &[&str]) -> Result<Vec<ArrayRef>> {
    names
        .iter()
        .map(|n| {
            batch
                .column_by_name(n)
                .cloned()
                .ok_or_else(|| Error::Internal(format!("key column {n} not decoded")))
        })
        .collect()
}

/// Depth of the channel between a batch worker and its consumer, in batches.
const WORKER_DEPTH: usize = 4;

/// A worker's result for one batch, with the time spent decoding it and working on it.
struct Worked<T> {
    value: T,
    decode: Duration,
    work: Duration,
}

/// Runs `work` on every batch of every row group from `readers`, on blocking threads, and sends
/// the results in order through a channel [`WORKER_DEPTH`] batches deep. Decoding and `work` for
/// later batches thus overlap with the consumer's handling of earlier ones, and at most a few
/// batches are in flight. Dropping the receiver stops the worker.
fn spawn_batch_worker<T, W>(
    url: String,
    mut readers: tokio::sync::mpsc::Receiver<Result<ParquetRecordBatchReader>>,
    work: W,
) -> tokio::sync::mpsc::Receiver<Result<Worked<T>>>
where
    T: Send + 'static,
    W: FnMut(RecordBatch) -> Result<T> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(WORKER_DEPTH);
    tokio::spawn(async move {
        let mut work = Some(work);
        while let Some(reader) = readers.recv().await {
            let reader = match reader {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            let Some(mut w) = work.take() else { return };
            let (btx, url) = (tx.clone(), url.clone());
            let done = tokio::task::spawn_blocking(move || {
                let mut reader = reader;
                loop {
                    let t = Instant::now();
                    let Some(batch) = reader.next() else {
                        return Some(w);
                    };
                    let decode = t.elapsed();
                    let t = Instant::now();
                    let item = batch
                        .map_err(|e| decode_error(&url, e))
                        .and_then(&mut w)
                        .map(|value| Worked {
                            value,
                            decode,
                            work: t.elapsed(),
                        });
                    let failed = item.is_err();
                    if btx.blocking_send(item).is_err() || failed {
                        return None;
                    }
                }
            })
            .await;
            match done {
                Ok(Some(w)) => work = Some(w),
                Ok(None) => return,
                Err(e) => {
                    let _ = tx
                        .send(Err(Error::Internal(format!("worker failed: {e}"))))
                        .await;
                    return;
                }
            }
        }
    });
    rx
}

/// What pass 1's worker produces for one batch.
struct Checked {
    batch: RecordBatch,
    verdict: crate::validate::Verdict,
    rows: Vec<u64>,
    quarantine: Option<(RecordBatch, MaskCounts)>,
}

/// Pass 1 over one file: validate and build quarantine rows on a worker; index and write here.
#[allow(clippy::too_many_arguments)]
async fn check_file(
    spec: &JobSpec,
    schema: &SchemaRef,
    file: u32,
    p: &Prepared,
    index: &mut Option<DedupIndex>,
    quarantine: &mut Option<ParquetSink>,
    q_schema: &SchemaRef,
    protector: &Arc<Protector>,
    c: &mut Counters,
    bar: &ProgressBar,
) -> Result<()> {
    let url = p.input.location.url.clone();
    let readers = source::row_groups(
        &p.input,
        p.meta.clone(),
        spec.batch_size.get(),
        p.owned.clone(),
        None,
        spec.read_ahead,
    );
    // Row numbers in the file of the rows decoded, in order.
    let mut numbers: Box<dyn Iterator<Item = u64> + Send> = match &p.owned {
        Some(bits) => {
            let bits = bits.clone();
            Box::new(
                (0..bits.len())
                    .filter(move |&i| bits.value(i))
                    .map(|i| i as u64),
            )
        }
        None => Box::new(0..p.rows),
    };
    let (validator, protector2) = (p.validator.clone(), protector.clone());
    let (schema2, q_schema2, url2) = (schema.clone(), q_schema.clone(), url.clone());
    let write_quarantine = quarantine.is_some();
    let validation = spec.validation_enabled;
    let mut results = spawn_batch_worker(url.clone(), readers, move |batch| {
        let batch = adapt(batch, &schema2)?;
        let n = batch.num_rows();
        let rows: Vec<u64> = numbers.by_ref().take(n).collect();
        if rows.len() != n {
            return Err(decode_error(
                &url2,
                "more rows decoded than the footer declares",
            ));
        }
        let verdict = if validation {
            validator.validate(&batch)?
        } else {
            crate::validate::Verdict::default()
        };
        let quarantine = match &verdict.invalid {
            Some(invalid) if write_quarantine => {
                let failing =
                    filter_record_batch(&batch, &BooleanArray::new(invalid.clone(), None))?;
                let (failing, counts) = protector2.protect(&failing)?;
                quarantine_batch(&failing, &verdict, &url2, &rows, &q_schema2)?.map(|q| (q, counts))
            }
            _ => None,
        };
        Ok(Checked {
            batch,
            verdict,
            rows,
            quarantine,
        })
    });
    let mut decoded = 0u64;
    let mut valid = BooleanBufferBuilder::new(if p.plan.is_none() { p.rows as usize } else { 0 });
    if p.plan.is_none() {
        valid.append_n(p.rows as usize, false);
    }
    loop {
        check_interrupted(spec)?;
        let t = Instant::now();
        let Some(item) = results.recv().await else {
            break;
        };
        c.timers.read_wait += t.elapsed();
        let Worked {
            value: checked,
            decode,
            work,
        } = item?;
        c.timers.decode += decode;
        c.timers.validate += work;
        let n = checked.rows.len() as u64;
        decoded += n;
        let verdict = &checked.verdict;
        for f in &verdict.failures {
            *c.failures
                .entry((f.column.to_string(), f.rule))
                .or_default() += f.count as u64;
        }
        let t = Instant::now();
        match (index.as_mut(), &p.plan) {
            (Some(ix), Some(plan)) => ix.offer(
                plan,
                &checked.batch,
                verdict.invalid.as_ref(),
                file,
                &checked.rows,
            )?,
            _ => {
                for (i, &r) in checked.rows.iter().enumerate() {
                    if verdict.invalid.as_ref().is_none_or(|inv| !inv.value(i)) {
                        valid.set_bit(r as usize, true);
                    }
                }
            }
        }
        c.timers.dedup += t.elapsed();
        c.quarantined += verdict.invalid_count() as u64;
        if let (Some(q), Some((rows, counts))) = (quarantine.as_mut(), checked.quarantine) {
            add_counts(&mut c.masked.quarantine, counts);
            let t = Instant::now();
            q.write(&rows).await?;
            c.timers.write += t.elapsed();
        }
        bar.inc(n);
    }
    if decoded != p.owned_rows {
        return Err(decode_error(
            &url,
            format!(
                "expected {} rows but {} were decoded",
                p.owned_rows, decoded
            ),
        ));
    }
    if p.plan.is_none() {
        c.valid.push(valid.finish());
    }
    Ok(())
}

/// Pass 2 over one file: read the kept rows, protect them on a worker, write curated here.
#[allow(clippy::too_many_arguments)]
async fn write_file(
    spec: &JobSpec,
    schema: &SchemaRef,
    p: &Prepared,
    keep: BooleanBuffer,
    curated: &mut ParquetSink,
    protector: &Arc<Protector>,
    c: &mut Counters,
    bar: &ProgressBar,
) -> Result<()> {
    if keep.count_set_bits() == 0 {
        return Ok(());
    }
    let url = p.input.location.url.clone();
    let readers = source::row_groups(
        &p.input,
        p.meta.clone(),
        spec.batch_size.get(),
        Some(Arc::new(keep)),
        None,
        spec.read_ahead,
    );
    let (protector, schema) = (protector.clone(), schema.clone());
    let mut results = spawn_batch_worker(url, readers, move |batch| {
        protector.protect(&adapt(batch, &schema)?)
    });
    loop {
        check_interrupted(spec)?;
        let t = Instant::now();
        let Some(item) = results.recv().await else {
            break;
        };
        c.timers.read_wait += t.elapsed();
        let Worked {
            value: (batch, counts),
            decode,
            work,
        } = item?;
        c.timers.decode += decode;
        c.timers.protect += work;
        add_counts(&mut c.masked.curated, counts);
        let t = Instant::now();
        curated.write(&batch).await?;
        c.timers.write += t.elapsed();
        bar.inc(batch.num_rows() as u64);
    }
    Ok(())
}

/// Runs stage 1 (or, without an output, the check-only `validate`) and returns its report.
pub async fn run(spec: &JobSpec) -> Result<Report> {
    let started = Instant::now();
    check_spill_dir(&spec.spill_dir)?;
    let (mut prepared, schema) = prepare(spec).await?;
    let q_schema = quarantine_schema(&schema);
    let protector = Arc::new(Protector::new(
        &spec.contract,
        &schema,
        spec.pci_enabled,
        &spec.pii_key,
    ));
    let mut counters = Counters {
        timers: Timers::default(),
        failures: BTreeMap::new(),
        quarantined: 0,
        masked: Masked::default(),
        valid: Vec::new(),
    };
    if spec.shard.count > 1 {
        for (i, p) in prepared.iter_mut().enumerate() {
            own_rows(spec, i as u32, p, &mut counters).await?;
        }
    }
    let rows_in: u64 = prepared.iter().map(|p| p.owned_rows).sum();

    let output = spec.output.as_deref().map(Location::parse).transpose()?;
    let errors = match (&spec.errors, &output) {
        (Some(e), _) => Some(Location::parse(e)?),
        (None, Some(o)) => Some(o.child(QUARANTINE_DIR)),
        (None, None) => None,
    };
    // Near-unique string columns are written without a dictionary.
    let plain: Vec<String> = spec
        .contract
        .columns
        .iter()
        .filter(|c| {
            c.pii == Some(Pii::Hash)
                || c.pci == Pci::Pan
                || matches!(
                    c.format,
                    Some(Format::DateTime | Format::Uuid | Format::Email)
                )
        })
        .map(|c| c.name.clone())
        .collect();
    let props = writer_properties(spec.codec, &plain);
    let part = spec.shard.part_name();
    let flush_bytes = (spec.memory_limit / 16).clamp(1 << 20, crate::sink::ROW_GROUP_FLUSH_BYTES);
    let mut outputs = Outputs {
        curated: output
            .as_ref()
            .map(|o| {
                ParquetSink::new(o.child(&part), schema.clone(), props.clone())
                    .map(|s| s.with_flush_bytes(flush_bytes))
            })
            .transpose()?,
        quarantine: errors
            .as_ref()
            .filter(|_| output.is_some())
            .map(|e| {
                ParquetSink::new(e.child(&part), q_schema.clone(), props.clone())
                    .map(|s| s.with_flush_bytes(flush_bytes))
            })
            .transpose()?,
    };
    let passes = if output.is_some() { 2 } else { 1 };
    let bar = progress_bar(spec.progress, rows_in * passes);
    let mut report = Report {
        edp_version: env!("CARGO_PKG_VERSION"),
        command: if output.is_some() {
            "raw-to-curated"
        } else {
            "validate"
        }
        .to_string(),
        dataset: spec.contract.dataset.clone(),
        contract: spec.contract.file.clone(),
        shard: spec.shard.to_string(),
        pci_dss_enabled: spec.pci_enabled,
        inputs: prepared
            .iter()
            .map(|p| InputStats {
                url: p.input.location.url.clone(),
                rows: p.owned_rows,
                bytes: p.input.size,
            })
            .collect(),
        curated: None,
        quarantine: None,
        rows_in,
        rows_curated: 0,
        rows_quarantined: 0,
        duplicates_superseded: 0,
        tombstones: 0,
        dedup_spilled_entries: 0,
        failures: Vec::new(),
        masked_values: Masked::default(),
        bytes_in: prepared.iter().map(|p| p.input.size).sum(),
        bytes_out: 0,
        durations: Default::default(),
        rows_per_second: 0.0,
        conservation: Conservation {
            holds: false,
            equation: String::new(),
        },
    };

    let result = execute(
        spec,
        &schema,
        &prepared,
        &mut outputs,
        &q_schema,
        &protector,
        &mut counters,
        &mut report,
        &bar,
    )
    .await;
    bar.finish_and_clear();
    if let Err(e) = result {
        outputs.abort().await;
        return Err(e);
    }
    let t = Instant::now();
    if let Some(q) = outputs.quarantine.take() {
        match q.finish().await {
            Ok(stats) => report.quarantine = Some(stats),
            Err(e) => {
                outputs.abort().await;
                return Err(e);
            }
        }
    }
    if let Some(cur) = outputs.curated.take() {
        report.curated = Some(cur.finish().await?);
    }
    counters.timers.write += t.elapsed();

    report.bytes_out = [&report.curated, &report.quarantine]
        .iter()
        .filter_map(|o| o.as_ref().map(|s| s.bytes))
        .sum();
    let total = started.elapsed();
    report.durations = counters.timers.to_stage_times(total);
    report.rows_per_second = rows_in as f64 / total.as_secs_f64().max(1e-9);
    if let Some(out) = &output {
        write_report(&out.child(&spec.shard.report_name()), &report).await?;
    }
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
async fn execute(
    spec: &JobSpec,
    schema: &SchemaRef,
    prepared: &[Prepared],
    outputs: &mut Outputs,
    q_schema: &SchemaRef,
    protector: &Arc<Protector>,
    c: &mut Counters,
    report: &mut Report,
    bar: &ProgressBar,
) -> Result<()> {
    let rows_in: u64 = prepared.iter().map(|p| p.owned_rows).sum();
    let spill = SpillConfig {
        budget: spec.memory_limit / INDEX_BUDGET_SHARE,
        dir: spec.spill_dir.clone(),
    };
    let mut index = match &prepared[0].plan {
        Some(plan) => Some(DedupIndex::new(plan, rows_in, Some(spill))?),
        None => None,
    };
    bar.set_message("checking");
    for (i, p) in prepared.iter().enumerate() {
        let file = u32::try_from(i).map_err(|_| Error::Config("too many input objects".into()))?;
        check_file(
            spec,
            schema,
            file,
            p,
            &mut index,
            &mut outputs.quarantine,
            q_schema,
            protector,
            c,
            bar,
        )
        .await?;
    }
    let t = Instant::now();
    let file_rows: Vec<u64> = prepared.iter().map(|p| p.rows).collect();
    let keep: Vec<BooleanBuffer> = match index {
        Some(ix) => {
            let winners = tokio::task::block_in_place(|| ix.finish(&file_rows))?;
            report.duplicates_superseded = winners.superseded;
            report.tombstones = winners.tombstones;
            report.dedup_spilled_entries = winners.spilled_entries;
            winners.rows
        }
        None => std::mem::take(&mut c.valid),
    };
    c.timers.dedup += t.elapsed();
    report.rows_curated = keep.iter().map(|k| k.count_set_bits() as u64).sum();
    report.rows_quarantined = c.quarantined;
    report.failures = c
        .failures
        .iter()
        .map(|((column, rule), rows)| RuleCount {
            column: column.clone(),
            rule: rule.to_string(),
            rows: *rows,
        })
        .collect();
    report.check_conservation()?;

    if let Some(curated) = outputs.curated.as_mut() {
        bar.set_message("writing");
        for (p, bits) in prepared.iter().zip(keep) {
            write_file(spec, schema, p, bits, curated, protector, c, bar).await?;
        }
        if curated.rows() != report.rows_curated {
            return Err(Error::Conservation(format!(
                "{} rows selected for curated but {} written",
                report.rows_curated,
                curated.rows()
            )));
        }
    }
    report.masked_values = c.masked.clone();
    Ok(())
}

async fn write_report(loc: &Location, report: &Report) -> Result<()> {
    let mut json =
        serde_json::to_vec_pretty(report).map_err(|e| Error::Internal(format!("report: {e}")))?;
    json.push(b'\n');
    loc.store
        .put(&loc.path, PutPayload::from(json))
        .await
        .map_err(|e| store_error(&loc.url, e))?;
    Ok(())
}
