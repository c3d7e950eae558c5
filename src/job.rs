//! The stage 1 job: raw objects → curated and quarantine Parquet plus a run report.
//!
//! Streaming passes keep memory independent of the data volume; the key and data passes decode
//! each row in full once, and the revisit (only when needed) decodes again just the rows it
//! picks. They work on [`source::slices`]: row groups, large ones cut into row ranges when the file's
//! offset index allows fetching only a range's pages. "Row group" below means such a slice.
//!
//! 1. The key pass fetches and decodes only the dedup columns (key, event time, sequence, op).
//!    Row groups are turned into [`Offers`] (parsing, hashing) on the
//!    rayon pool while this task appends them to the index; the result is one bit per input
//!    row: the winners.
//!    A sharded job (`--shard INDEX/COUNT`) marks the rows whose key hash falls in its shard in
//!    the same pass and offers only those. Without a primary key there is no key pass (a
//!    sharded job then owns rows by a hash of their position).
//! 2. The data pass decodes every owned row once, one row group per thread of the rayon pool
//!    (one thread per core): validate; protect the failing rows for quarantine; protect the valid
//!    winners and encode them into Parquet column chunks ([`RowGroupEncoder`]). This task takes
//!    the results in input order and splices them into the outputs, so the output does not
//!    depend on thread timing.
//!
//! 3. The revisit, only when some key's winner failed validation: per key the most recent
//!    *valid* version wins, so those keys need their latest valid version. A second key pass
//!    offers only the valid rows of those keys (the data pass recorded one bit per failed row
//!    and the key hash of every failed winner), and a data pass over just the new winners (rows
//!    the first data pass counted as superseded) appends them to curated.
//!
//! Every decoded row ends in one count: curated (its key's latest valid version), quarantined
//! (invalid) or superseded (valid, not its key's latest valid version). A delete is checked on
//! its dedup columns only ([`Validator`]), so a key-only delete reaches curated as a tombstone.
//!
//! File-level problems (unreadable footer, missing column, wrong type, schemas that cannot be
//! reconciled) are found from the footers before any data is read. Inputs whose schemas differ
//! only by added nullable columns are reconciled into one output schema, the missing columns read
//! as nulls. Any error aborts both uploads, so nothing partial becomes visible; the conservation
//! check runs before the outputs are completed, so an unbalanced run publishes nothing either.
//!
//! Memory: the dedup index gets [`INDEX_BUDGET_SHARE`] of `--memory-limit` and spills past it;
//! winners are kept as one bit per input row, failed rows too once a file has one, and the
//! revisit's keys as one hash per failed winner (~16 bytes) up to the index's share, past which
//! the revisit offers every valid row instead (the index spills). The rest of the budget covers what is bounded by
//! construction: `--read-ahead` compressed row groups fetched ahead, one row group per worker
//! (a decoded batch and its encoded pages, closed into a row group at 1/16 of the limit, at most
//! 32 MiB, and handed to this task as soon as it is closed), and each output's multipart parts
//! (3 × 10 MiB).

use std::collections::{BTreeMap, VecDeque};

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{new_null_array, ArrayRef, BooleanArray, BooleanBufferBuilder, RecordBatch};
use arrow::buffer::BooleanBuffer;
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use object_store::{ObjectStoreExt, PutPayload};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReader};
use parquet::arrow::ProjectionMask;
use tokio::sync::{mpsc, oneshot};

use crate::contract::{ColumnSpec, ColumnType, Contract, Format, Pci, Pii};
use crate::dedup::{DedupIndex, DedupPlan, Offers, SpillConfig};
use crate::protect::{MaskCounts, Protector};
use crate::report::{Conservation, InputStats, Masked, Report, RuleCount, Timers};
use crate::sink::{writer_properties, Codec, EncodedRowGroup, ParquetSink, RowGroupEncoder};
use crate::source::{self, decode_error, InputObject, RowGroup};
use crate::store::{store_error, Location};
use crate::validate::{curated_schema, quarantine_batch, quarantine_schema, Validator, Verdict};
use crate::{Error, Result};

/// Default rows per record batch.
pub const DEFAULT_BATCH_SIZE: usize = 8192;
/// Default number of row groups fetched ahead of decoding (besides one being fetched and one
/// per worker being decoded).
pub const DEFAULT_READ_AHEAD: usize = 1;
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
    plan: Option<Arc<DedupPlan>>,
    /// Rows in the file.
    rows: u64,
    /// This shard's rows of the file (all rows when unsharded).
    owned: Option<Arc<BooleanBuffer>>,
    owned_rows: u64,
}

/// What the passes count, merged from every row group.
#[derive(Default)]
struct Counters {
    timers: Timers,
    failures: BTreeMap<(Arc<str>, &'static str), u64>,
    curated: u64,
    quarantined: u64,
    superseded: u64,
    tombstones: u64,
    masked: Masked,
}

/// True for a number column that may take many distinct values: a `number` without an `enum`,
/// or an `integer` with neither an `enum` nor a `minimum`..`maximum` span of at most 65,536.
fn numeric_wide(c: &ColumnSpec) -> bool {
    let narrow_range = match (c.minimum, c.maximum) {
        (Some(lo), Some(hi)) => hi - lo <= 65_536.0,
        _ => false,
    };
    match c.ty {
        ColumnType::Number => c.enum_values.is_none(),
        ColumnType::Integer => c.enum_values.is_none() && !narrow_range,
        ColumnType::String | ColumnType::Boolean => false,
    }
}

fn add_counts(into: &mut BTreeMap<String, u64>, counts: MaskCounts) {
    for (col, n) in counts {
        *into.entry(col.to_string()).or_default() += n as u64;
    }
}

/// The job's output schema: the first input's columns, then columns that later inputs add. A
/// column missing from some input must be nullable and not required; a column present in two
/// inputs must have one type, except that an all-null column (Arrow type Null) takes the type of
/// the others, or [`null_column_type`] when every input has it all-null.
fn reconcile(contract: &Contract, inputs: &[(String, SchemaRef)]) -> Result<SchemaRef> {
    let mut fields: Vec<Field> = Vec::new();
    for (url, schema) in inputs {
        for f in schema.fields() {
            match fields.iter_mut().find(|g| g.name() == f.name()) {
                // An all-null column (Arrow type Null) takes the type other inputs give it.
                Some(g) if g.data_type() == &DataType::Null => {
                    *g = f.as_ref().clone().with_nullable(true);
                }
                Some(g) if f.data_type() == &DataType::Null => {
                    *g = g.clone().with_nullable(true);
                }
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
        if field.data_type() == &DataType::Null {
            *field = field
                .clone()
                .with_data_type(null_column_type(contract, field.name()));
        }
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

/// The type an all-null input column (Arrow type Null, what pyarrow writes for a column of
/// `None`s) is read as: its contract type, or a string when the contract does not name it.
fn null_column_type(contract: &Contract, name: &str) -> DataType {
    match contract.column(name).map(|c| c.ty) {
        Some(ColumnType::Integer) => DataType::Int64,
        Some(ColumnType::Number) => DataType::Float64,
        Some(ColumnType::Boolean) => DataType::Boolean,
        Some(ColumnType::String) | None => DataType::Utf8,
    }
}

/// `batch` in the job's schema: columns in order, absent and all-null (type Null) ones as
/// nulls of the job's type.
fn adapt(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch);
    }
    let n = batch.num_rows();
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Ok(c.clone()),
            Some(c) if c.data_type() == &DataType::Null => Ok(new_null_array(f.data_type(), n)),
            Some(c) => Err(Error::Internal(format!(
                "column `{}` decoded as {}, expected {}",
                f.name(),
                c.data_type(),
                f.data_type()
            ))),
            None => Ok(new_null_array(f.data_type(), n)),
        })
        .collect::<Result<_>>()?;
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
                DedupPlan::new(&spec.contract, &schema, &url)?.map(Arc::new)
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

/// The job's input schema (reconciled across inputs) and the schemas of its two outputs.
struct Schemas {
    input: SchemaRef,
    quarantine: SchemaRef,
    curated: SchemaRef,
}

/// Protection plans for the two outputs: quarantine rows keep the input types (a date-time
/// column there is text, scanned for card numbers like any other), curated rows have typed dates.
struct Protectors {
    quarantine: Arc<Protector>,
    curated: Arc<Protector>,
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

/// The rows the revisit's key pass offers: the valid rows of the keys whose winner failed.
struct Revisit<'a> {
    /// The keys (`None`: too many to hold; every key's valid rows are offered).
    keys: Option<&'a hashbrown::HashSet<u64>>,
    /// The file's rows that failed validation (`None`: none did).
    invalid: Option<&'a BooleanBuffer>,
}

/// The key pass over file number `file`: decode only its dedup columns (key, event time,
/// sequence, op), offer every owned row to the index and, in a sharded job, mark the rows this
/// shard owns. Without a primary key, a sharded job owns rows by a hash of their position and
/// nothing is decoded. With `revisit`, only the rows it names are offered (they are owned: a
/// shard owns keys by the same hash).
async fn key_pass(
    spec: &JobSpec,
    file: u32,
    p: &mut Prepared,
    index: &mut Option<DedupIndex>,
    c: &mut Counters,
    bar: &ProgressBar,
    revisit: Option<&Revisit<'_>>,
) -> Result<()> {
    let url = p.input.location.url.clone();
    let sharded = spec.shard.count > 1 && revisit.is_none();
    let mut owned = BooleanBufferBuilder::new(if sharded { p.rows as usize } else { 0 });
    let (Some(_), Some(ix)) = (&p.plan, index.as_mut()) else {
        if sharded {
            for row in 0..p.rows {
                let mut key = [0u8; 12];
                key[..4].copy_from_slice(&file.to_le_bytes());
                key[4..].copy_from_slice(&row.to_le_bytes());
                owned.append(spec.shard.owns(crate::dedup::stable_hash(&key)));
            }
            set_owned(p, owned.finish());
        }
        return Ok(());
    };
    let file_schema = p.meta.schema().clone();
    let contract = &spec.contract;
    let names = contract
        .primary_key
        .iter()
        .chain(&contract.event_time)
        .chain(&contract.sequence)
        .chain(&contract.cdc_op);
    let mut roots: Vec<usize> = names.filter_map(|n| file_schema.index_of(n).ok()).collect();
    roots.sort_unstable();
    roots.dedup();
    let projected = file_schema.project(&roots)?;
    let plan = DedupPlan::new(contract, &projected, &url)?
        .ok_or_else(|| Error::Internal("key pass without a primary key".into()))?;
    let mask = ProjectionMask::roots(p.meta.metadata().file_metadata().schema_descr(), roots);
    let readers = source::row_groups(
        &p.input,
        p.meta.clone(),
        spec.batch_size.get(),
        None,
        Some(mask),
        spec.read_ahead,
    );
    let plan = Arc::new(plan);
    let mut inflight = InFlight::new();
    let mut decoded = 0u64;
    let mut absorb = |done: KeyOffers, c: &mut Counters| -> Result<()> {
        c.timers.add(&done.timers);
        let t = Instant::now();
        for offers in &done.offers {
            let n = offers.len();
            let first = decoded as usize;
            let skip = if let Some(r) = revisit {
                Some(BooleanBuffer::collect_bool(n, |i| {
                    r.keys.is_some_and(|k| !k.contains(&offers.hashes()[i]))
                        || r.invalid.is_some_and(|b| b.value(first + i))
                }))
            } else {
                sharded.then(|| {
                    let skip =
                        BooleanBuffer::collect_bool(n, |r| !spec.shard.owns(offers.hashes()[r]));
                    owned.append_buffer(&!&skip);
                    skip
                })
            };
            ix.insert(offers, skip.as_ref())?;
            decoded += n as u64;
            bar.inc(n as u64);
        }
        c.timers.dedup += t.elapsed();
        Ok(())
    };
    let mut groups = readers;
    while let Some(group) = next_group(spec, &mut groups, c).await? {
        let finished = inflight.wait_for_worker().await?;
        let (plan, url) = (plan.clone(), url.clone());
        inflight.start(move || key_row_group(&plan, &url, file, group));
        if let Some(done) = finished {
            absorb(done, c)?;
        }
    }
    while let Some(done) = inflight.next(spec).await? {
        absorb(done, c)?;
    }
    if decoded != p.rows {
        return Err(decode_error(
            &url,
            format!("footer declares {} rows but {decoded} were decoded", p.rows),
        ));
    }
    if sharded {
        set_owned(p, owned.finish());
    }
    Ok(())
}

fn set_owned(p: &mut Prepared, owned: BooleanBuffer) {
    p.owned_rows = owned.count_set_bits() as u64;
    p.owned = Some(Arc::new(owned));
}

/// The number of the job's `i`th input object, as dedup candidates record it.
fn file_number(i: usize) -> Result<u32> {
    u32::try_from(i).map_err(|_| Error::Config("too many input objects".into()))
}

/// The next batch of a row group of `url`. The Parquet decoder panics on some corrupt pages
/// (a length past the end of a buffer); that is bad input like any other corrupt data.
fn decode_next(reader: &mut ParquetRecordBatchReader, url: &str) -> Result<Option<RecordBatch>> {
    crate::catch_quietly(|| reader.next())
        .ok_or_else(|| decode_error(url, "the decoder failed on a corrupt page"))?
        .transpose()
        .map_err(|e| decode_error(url, e))
}

/// What the key pass gets from one row group: the offers of its batches.
struct KeyOffers {
    offers: Vec<Offers>,
    timers: Timers,
}

/// The key pass over one row group, on a worker: decode the dedup columns and compute the
/// offers (event times parsed, keys hashed), leaving the index only appends.
fn key_row_group(plan: &DedupPlan, url: &str, file: u32, group: RowGroup) -> Result<KeyOffers> {
    let mut done = KeyOffers {
        offers: Vec::new(),
        timers: Timers::default(),
    };
    let mut next = group.first_row;
    let mut reader = group.reader;
    loop {
        let t = Instant::now();
        let Some(batch) = decode_next(&mut reader, url)? else {
            break;
        };
        done.timers.decode += t.elapsed();
        let t = Instant::now();
        let n = batch.num_rows() as u64;
        let rows: Vec<u64> = (next..next + n).collect();
        next += n;
        done.offers.push(plan.offers(&batch, file, &rows)?);
        done.timers.dedup += t.elapsed();
    }
    Ok(done)
}

/// What a data-pass worker needs about the file its row groups come from.
struct FileWork {
    url: String,
    /// The file's number in the job.
    file: usize,
    /// The job's input schema, which quarantine output extends.
    schema: SchemaRef,
    q_schema: SchemaRef,
    /// The schema of curated output (typed dates when validating).
    c_schema: SchemaRef,
    validator: Arc<Validator>,
    plan: Option<Arc<DedupPlan>>,
    /// Protection of quarantine rows (input types) and of curated rows (curated types).
    q_protector: Arc<Protector>,
    protector: Arc<Protector>,
    /// Winning rows of the file (one bit per row); `None` keeps every valid row.
    winners: Option<Arc<BooleanBuffer>>,
    /// Rows this shard owns, the only ones decoded; `None`: all.
    owned: Option<Arc<BooleanBuffer>>,
    validation: bool,
    write_quarantine: bool,
    /// Hand curated rows to the job task as batches (the revisit's few rows, written together
    /// in row groups closed at the flush size) instead of encoding them per input row group.
    collect_curated: bool,
    /// Check and protect columns in parallel: the job has fewer slices than workers.
    column_parallel: bool,
}

/// A worker's result for one row group (its curated row groups went out through the worker's
/// channel as they were encoded).
#[derive(Default)]
struct Done {
    quarantine: Vec<RecordBatch>,
    /// Protected curated rows, when the pass collects them instead of encoding them.
    curated: Vec<RecordBatch>,
    rows: u64,
    counters: Counters,
    /// The file's number, and (dedup jobs) its rows that failed validation and the key hashes
    /// of the winners among them, for the revisit.
    file: usize,
    invalid_rows: Vec<u64>,
    failed_winners: Vec<u64>,
}

/// What the revisit needs from the data pass: which rows failed validation and which keys'
/// winners were among them.
#[derive(Default)]
struct Failed {
    /// Per file, one bit per row that failed validation, allocated at the file's first.
    rows: Vec<Option<BooleanBufferBuilder>>,
    /// Key hashes ([`Offers::hashes`]) of the winners that failed validation; `None` once
    /// there were more than `max_keys` (the revisit then offers every valid row).
    winner_keys: Option<hashbrown::HashSet<u64>>,
    max_keys: usize,
    /// Whether any winner failed.
    any: bool,
}

impl Failed {
    /// Room for the key hashes of `memory_limit` / [`INDEX_BUDGET_SHARE`] (~16 bytes each).
    fn new(files: usize, memory_limit: usize) -> Self {
        Failed {
            rows: (0..files).map(|_| None).collect(),
            winner_keys: Some(hashbrown::HashSet::new()),
            max_keys: memory_limit / INDEX_BUDGET_SHARE / 16,
            any: false,
        }
    }

    fn record(&mut self, done: &Done, file_rows: u64) {
        if !done.invalid_rows.is_empty() {
            let bits = self.rows[done.file].get_or_insert_with(|| {
                let mut b = BooleanBufferBuilder::new(file_rows as usize);
                b.append_n(file_rows as usize, false);
                b
            });
            for &r in &done.invalid_rows {
                bits.set_bit(r as usize, true);
            }
        }
        self.any |= !done.failed_winners.is_empty();
        if let Some(keys) = &mut self.winner_keys {
            keys.extend(&done.failed_winners);
            if keys.len() > self.max_keys {
                self.winner_keys = None;
            }
        }
    }
}

/// The data pass over one row group, on a worker thread: decode the owned rows, validate
/// them, protect and collect failing rows for quarantine, protect and encode the valid winners
/// with `encoder` (when writing), sending each output row group to `encoded` as soon as it is
/// closed, so that a large input row group is never held encoded in full. Each row ends in
/// exactly one count: curated, quarantined or superseded (valid but not its key's winner).
fn work_row_group(
    w: &FileWork,
    group: RowGroup,
    mut encoder: Option<RowGroupEncoder>,
    encoded: mpsc::UnboundedSender<EncodedRowGroup>,
) -> Result<Done> {
    let first = group.first_row;
    let numbers: Vec<u64> = match &w.owned {
        Some(bits) => bits
            .slice(first as usize, group.rows)
            .set_indices()
            .map(|i| first + i as u64)
            .collect(),
        None => (first..first + group.rows as u64).collect(),
    };
    let mut done = Done {
        file: w.file,
        ..Done::default()
    };
    let c = &mut done.counters;
    let mut at = 0usize;
    let mut reader = group.reader;
    loop {
        let t = Instant::now();
        let Some(batch) = decode_next(&mut reader, &w.url)? else {
            break;
        };
        let batch = adapt(batch, &w.schema)?;
        c.timers.decode += t.elapsed();
        let n = batch.num_rows();
        let rows = numbers
            .get(at..at + n)
            .ok_or_else(|| decode_error(&w.url, "more rows decoded than the footer declares"))?;
        at += n;

        let t = Instant::now();
        let verdict = if w.validation {
            w.validator.validate(&batch, w.column_parallel)?
        } else {
            Verdict::default()
        };
        for f in &verdict.failures {
            *c.failures.entry((f.column.clone(), f.rule)).or_default() += f.count as u64;
        }
        let invalid = verdict.invalid.as_ref();
        let keep = BooleanBuffer::collect_bool(n, |i| {
            invalid.is_none_or(|m| !m.value(i))
                && w.winners.as_ref().is_none_or(|b| b.value(rows[i] as usize))
        });
        let (failed, kept) = (verdict.invalid_count(), keep.count_set_bits());
        c.quarantined += failed as u64;
        c.curated += kept as u64;
        c.superseded += (n - failed - kept) as u64;
        if let Some(plan) = &w.plan {
            c.tombstones += plan.tombstones(&batch, &keep)?;
        }
        if let (Some(plan), Some(winners), Some(invalid)) = (&w.plan, &w.winners, invalid) {
            done.invalid_rows
                .extend(invalid.set_indices().map(|i| rows[i]));
            let lost = BooleanBuffer::collect_bool(n, |i| {
                invalid.value(i) && winners.value(rows[i] as usize)
            });
            if lost.count_set_bits() > 0 {
                let lost_rows: Vec<u64> = lost.set_indices().map(|i| rows[i]).collect();
                let batch = filter_record_batch(&batch, &BooleanArray::new(lost, None))?;
                let offers = plan.offers(&batch, file_number(w.file)?, &lost_rows)?;
                done.failed_winners.extend_from_slice(offers.hashes());
            }
        }
        c.timers.validate += t.elapsed();

        let t = Instant::now();
        if let (Some(invalid), true) = (invalid, w.write_quarantine) {
            let failing = filter_record_batch(&batch, &BooleanArray::new(invalid.clone(), None))?;
            let (failing, counts) = w.q_protector.protect(&failing, &w.url, w.column_parallel)?;
            add_counts(&mut c.masked.quarantine, counts);
            done.quarantine.extend(quarantine_batch(
                &failing,
                &verdict,
                &w.url,
                rows,
                &w.q_schema,
            )?);
        }
        if encoder.is_none() && !w.collect_curated {
            c.timers.protect += t.elapsed();
            continue;
        }
        let keep = (kept < n).then(|| BooleanArray::new(keep, None));
        let curated = verdict.curated(batch, keep.as_ref(), &w.c_schema)?;
        let (curated, counts) = w.protector.protect(&curated, &w.url, w.column_parallel)?;
        add_counts(&mut c.masked.curated, counts);
        c.timers.protect += t.elapsed();
        let Some(enc) = encoder.as_mut() else {
            if curated.num_rows() > 0 {
                done.curated.push(curated);
            }
            continue;
        };
        let t = Instant::now();
        enc.write(&curated).map_err(|source| Error::Parquet {
            object: w.url.clone(),
            source,
        })?;
        // A closed receiver means the job is failing; its error is reported there.
        for rg in enc.take_closed() {
            let _ = encoded.send(rg);
        }
        c.timers.write += t.elapsed();
    }
    if at != numbers.len() {
        return Err(decode_error(
            &w.url,
            format!("expected {} rows but {at} were decoded", numbers.len()),
        ));
    }
    if let Some(mut enc) = encoder {
        let t = Instant::now();
        let rest = enc.take().map_err(|source| Error::Parquet {
            object: w.url.clone(),
            source,
        })?;
        for rg in rest {
            let _ = encoded.send(rg);
        }
        c.timers.write += t.elapsed();
    }
    done.rows = at as u64;
    Ok(done)
}

/// Folds a finished row group into the job: counts, then quarantine and curated output in
/// input order.
async fn absorb(
    done: Done,
    outputs: &mut Outputs,
    c: &mut Counters,
    failed: &mut Option<&mut Failed>,
    file_rows: u64,
    bar: &ProgressBar,
) -> Result<()> {
    if let Some(f) = failed.as_mut() {
        f.record(&done, file_rows);
    }
    let d = done.counters;
    c.timers.add(&d.timers);
    for (k, v) in d.failures {
        *c.failures.entry(k).or_default() += v;
    }
    c.curated += d.curated;
    c.quarantined += d.quarantined;
    c.superseded += d.superseded;
    c.tombstones += d.tombstones;
    c.masked.add(d.masked);
    let t = Instant::now();
    if let Some(q) = outputs.quarantine.as_mut() {
        for batch in &done.quarantine {
            q.write(batch).await?;
        }
    }
    if let Some(cur) = outputs.curated.as_mut() {
        for batch in &done.curated {
            cur.write(batch).await?;
        }
    }
    c.timers.write += t.elapsed();
    bar.inc(done.rows);
    trim_heap();
    Ok(())
}

/// Resident memory not accounted for by live allocations, above which [`trim_heap`] hands free
/// heap pages back to the kernel.
const RESIDENT_SLACK: usize = 96 << 20;

/// Returns free heap pages to the kernel when the process holds more than [`RESIDENT_SLACK`]
/// beyond its live allocations. Workers allocate a row group's buffers and this task frees
/// them, so free holes accumulate across the heap: at 20M rows the memory in use stayed at
/// 75–100 MiB while the free part of the heap grew from 33 to 138 MiB (mallinfo2 per row
/// group), and RSS with it. Trimmed pages fault back in when reused, so the slack sets the
/// price: trimming after every row group cost ~0.8 s more CPU on 2M rows, a 64 MiB slack ~9%
/// more CPU at 20M rows (peak 220 MiB), 96 MiB no measurable CPU (peak 230 MiB, 243 without).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_heap() {
    let resident = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok());
    // SAFETY: sysconf, mallinfo2 and malloc_trim only read settings and statistics of the
    // process and release the allocator's free pages.
    unsafe {
        let (Some(pages), Ok(page)) =
            (resident, usize::try_from(libc::sysconf(libc::_SC_PAGESIZE)))
        else {
            return;
        };
        let m = libc::mallinfo2();
        if (pages * page).saturating_sub(m.uordblks + m.hblkhd) > RESIDENT_SLACK {
            libc::malloc_trim(0);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_heap() {}

/// The rows a data pass decodes and keeps, per file.
struct Selection {
    /// Rows decoded (`None`: all).
    decode: Option<Arc<BooleanBuffer>>,
    /// Rows kept when valid (`None`: every valid row).
    winners: Option<Arc<BooleanBuffer>>,
}

/// A data pass: the selected rows of every file decoded once, its row groups worked on by the
/// rayon pool (one per thread at a time), and their results absorbed in input order. With
/// `failed`, the rows that fail validation and the failed winners' keys are recorded there. With
/// `collect_curated`, curated rows come back as batches and are written by this task.
#[allow(clippy::too_many_arguments)]
async fn data_pass(
    spec: &JobSpec,
    schemas: &Schemas,
    prepared: &[Prepared],
    selections: &[Selection],
    protectors: &Protectors,
    outputs: &mut Outputs,
    c: &mut Counters,
    mut failed: Option<&mut Failed>,
    collect_curated: bool,
    bar: &ProgressBar,
) -> Result<()> {
    let mut inflight = InFlight::new();
    // The curated row groups of each row group in flight, in the order they were started.
    let mut encoded: VecDeque<mpsc::UnboundedReceiver<EncodedRowGroup>> = VecDeque::new();
    let slices: usize = prepared.iter().map(|p| source::slices(&p.meta).len()).sum();
    let column_parallel = slices < inflight.workers;
    for (i, (p, sel)) in prepared.iter().zip(selections).enumerate() {
        let file = Arc::new(FileWork {
            url: p.input.location.url.clone(),
            file: i,
            schema: schemas.input.clone(),
            q_schema: schemas.quarantine.clone(),
            c_schema: schemas.curated.clone(),
            validator: p.validator.clone(),
            plan: p.plan.clone(),
            q_protector: protectors.quarantine.clone(),
            protector: protectors.curated.clone(),
            winners: sel.winners.clone(),
            owned: sel.decode.clone(),
            validation: spec.validation_enabled,
            write_quarantine: outputs.quarantine.is_some(),
            collect_curated: collect_curated && outputs.curated.is_some(),
            column_parallel,
        });
        let mut groups = source::row_groups(
            &p.input,
            p.meta.clone(),
            spec.batch_size.get(),
            sel.decode.clone(),
            None,
            spec.read_ahead,
        );
        while let Some(group) = next_group(spec, &mut groups, c).await? {
            // Start this row group before splicing the finished one: the workers stay busy
            // while this task writes.
            if inflight.is_full() {
                splice(encoded.pop_front(), outputs, c).await?;
            }
            let finished = inflight.wait_for_worker().await?;
            let encoder = match &outputs.curated {
                Some(sink) if !collect_curated => Some(sink.encoder()?),
                _ => None,
            };
            let file = file.clone();
            let (tx, rx) = mpsc::unbounded_channel();
            encoded.push_back(rx);
            inflight.start(move || work_row_group(&file, group, encoder, tx));
            if let Some(done) = finished {
                let rows = prepared[done.file].rows;
                absorb(done, outputs, c, &mut failed, rows, bar).await?;
            }
        }
    }
    loop {
        splice(encoded.pop_front(), outputs, c).await?;
        let Some(done) = inflight.next(spec).await? else {
            break;
        };
        let rows = prepared[done.file].rows;
        absorb(done, outputs, c, &mut failed, rows, bar).await?;
    }
    Ok(())
}

/// The revisit (step 3 of the module docs): when some keys' winners failed validation, curates
/// each such key's latest valid version, if it has one. Returns how many keys it curated and
/// how many index entries it spilled.
#[allow(clippy::too_many_arguments)]
async fn revisit(
    spec: &JobSpec,
    schemas: &Schemas,
    prepared: &mut [Prepared],
    winners: &[Option<Arc<BooleanBuffer>>],
    failed: Failed,
    protectors: &Protectors,
    outputs: &mut Outputs,
    c: &mut Counters,
    bar: &ProgressBar,
) -> Result<(u64, u64)> {
    let Some(plan) = prepared[0].plan.clone() else {
        return Ok((0, 0));
    };
    if !failed.any {
        return Ok((0, 0));
    }
    let file_rows: Vec<u64> = prepared.iter().map(|p| p.rows).collect();
    let total: u64 = file_rows.iter().sum();
    bar.set_message("earlier versions");
    bar.inc_length(total);
    let mut index = Some(DedupIndex::new(
        &plan,
        total,
        Some(SpillConfig {
            budget: spec.memory_limit / INDEX_BUDGET_SHARE,
            dir: spec.spill_dir.clone(),
        }),
    )?);
    let invalid: Vec<Option<BooleanBuffer>> = failed
        .rows
        .into_iter()
        .map(|b| b.map(|mut b| b.finish()))
        .collect();
    for (i, p) in prepared.iter_mut().enumerate() {
        let file = file_number(i)?;
        let only = Revisit {
            keys: failed.winner_keys.as_ref(),
            invalid: invalid[i].as_ref(),
        };
        key_pass(spec, file, p, &mut index, c, bar, Some(&only)).await?;
    }
    let index = index.ok_or_else(|| Error::Internal("revisit without an index".into()))?;
    let latest_valid = tokio::task::block_in_place(|| index.finish(&file_rows))?;
    // A key's latest valid version is new unless it was the winner (then it was curated).
    let selections: Vec<Selection> = latest_valid
        .rows
        .into_iter()
        .zip(winners)
        .map(|(valid, winner)| {
            let new = match winner {
                Some(w) => &valid & &!w.as_ref(),
                None => valid,
            };
            let new = Some(Arc::new(new));
            Selection {
                decode: new.clone(),
                winners: new,
            }
        })
        .collect();
    let picked: u64 = selections
        .iter()
        .filter_map(|s| s.decode.as_ref())
        .map(|b| b.count_set_bits() as u64)
        .sum();
    bar.inc_length(picked);
    let mut d = Counters::default();
    data_pass(
        spec,
        schemas,
        prepared,
        &selections,
        protectors,
        outputs,
        &mut d,
        None,
        true,
        bar,
    )
    .await?;
    if d.quarantined > 0 || d.curated > c.superseded {
        return Err(Error::Internal(format!(
            "the revisit found {} invalid rows and {} earlier versions for {} superseded rows",
            d.quarantined, d.curated, c.superseded
        )));
    }
    c.timers.add(&d.timers);
    c.curated += d.curated;
    c.superseded -= d.curated;
    c.tombstones += d.tombstones;
    c.masked.add(d.masked);
    Ok((d.curated, latest_valid.spilled_entries))
}

/// Appends the curated row groups of the oldest row group in flight as its worker encodes them,
/// until the worker is done (it drops its sender, also when it fails).
async fn splice(
    encoded: Option<mpsc::UnboundedReceiver<EncodedRowGroup>>,
    outputs: &mut Outputs,
    c: &mut Counters,
) -> Result<()> {
    let Some(mut encoded) = encoded else {
        return Ok(());
    };
    while let Some(rg) = encoded.recv().await {
        let t = Instant::now();
        if let Some(cur) = outputs.curated.as_mut() {
            cur.append([rg]).await?;
        }
        c.timers.write += t.elapsed();
    }
    Ok(())
}

/// The next row group of a pass, `None` at the end; stops at a signal and counts the time
/// spent waiting for storage.
async fn next_group(
    spec: &JobSpec,
    groups: &mut tokio::sync::mpsc::Receiver<Result<RowGroup>>,
    c: &mut Counters,
) -> Result<Option<RowGroup>> {
    check_interrupted(spec)?;
    let t = Instant::now();
    let group = groups.recv().await.transpose()?;
    c.timers.read_wait += t.elapsed();
    Ok(group)
}

/// Row groups being worked on by the rayon pool (one thread per core). Work inside a row group
/// is sequential unless the job has fewer row groups than workers: column-parallel loops nested
/// in it let a thread waiting on a stolen column pick up another whole row group, which left
/// one core idle for stretches of up to a second (perf timeline, 2M orders rows: ~125% CPU for
/// 0.8 s, then ~190%; median wall 2.69 → 2.51 s).
/// Results come back in the order the work was started; at most one row group per pool thread
/// is in flight.
struct InFlight<T> {
    queue: VecDeque<oneshot::Receiver<Result<T>>>,
    workers: usize,
}

impl<T: Send + 'static> InFlight<T> {
    fn new() -> Self {
        InFlight {
            queue: VecDeque::new(),
            workers: rayon::current_num_threads().max(1),
        }
    }

    /// Runs `work` on the pool. A panic becomes an internal error.
    fn start(&mut self, work: impl FnOnce() -> Result<T> + Send + 'static) {
        let (tx, rx) = oneshot::channel();
        rayon::spawn(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
                .unwrap_or_else(|_| Err(Error::Internal("a row group worker panicked".into())));
            let _ = tx.send(result);
        });
        self.queue.push_back(rx);
    }

    /// True when every worker is busy.
    fn is_full(&self) -> bool {
        self.queue.len() >= self.workers
    }

    /// When every worker is busy, waits for the oldest row group and returns its result, so
    /// that the caller can start the next one before handling it; `None` while one is free.
    async fn wait_for_worker(&mut self) -> Result<Option<T>> {
        if !self.is_full() {
            return Ok(None);
        }
        self.pop().await
    }

    /// The oldest result while any work is left (draining at the end of a pass).
    async fn next(&mut self, spec: &JobSpec) -> Result<Option<T>> {
        check_interrupted(spec)?;
        self.pop().await
    }

    async fn pop(&mut self) -> Result<Option<T>> {
        match self.queue.pop_front() {
            Some(rx) => rx
                .await
                .map_err(|_| Error::Internal("a row group worker stopped".into()))?
                .map(Some),
            None => Ok(None),
        }
    }
}

/// Runs stage 1 (or, without an output, the check-only `validate`) and returns its report.
pub async fn run(spec: &JobSpec) -> Result<Report> {
    let started = Instant::now();
    check_spill_dir(&spec.spill_dir)?;
    let (mut prepared, schema) = prepare(spec).await?;
    let schemas = Schemas {
        quarantine: quarantine_schema(&schema),
        curated: if spec.validation_enabled {
            curated_schema(&spec.contract, &schema)
        } else {
            schema.clone()
        },
        input: schema,
    };
    let protector = |s: &Schema| {
        Arc::new(Protector::new(
            &spec.contract,
            s,
            spec.pci_enabled,
            &spec.pii_key,
        ))
    };
    let protectors = Protectors {
        quarantine: protector(&schemas.input),
        curated: protector(&schemas.curated),
    };
    let mut c = Counters::default();
    let file_rows: Vec<u64> = prepared.iter().map(|p| p.rows).collect();
    let total_rows: u64 = file_rows.iter().sum();
    let key_pass_rows = if prepared[0].plan.is_some() {
        total_rows
    } else {
        0
    };
    let bar = progress_bar(spec.progress, key_pass_rows + total_rows);

    bar.set_message("keys");
    let mut index = match &prepared[0].plan {
        Some(plan) => Some(DedupIndex::new(
            plan,
            total_rows,
            Some(SpillConfig {
                budget: spec.memory_limit / INDEX_BUDGET_SHARE,
                dir: spec.spill_dir.clone(),
            }),
        )?),
        None => None,
    };
    for (i, p) in prepared.iter_mut().enumerate() {
        let file = file_number(i)?;
        key_pass(spec, file, p, &mut index, &mut c, &bar, None).await?;
    }
    let t = Instant::now();
    let (winners, spilled) = match index {
        Some(ix) => {
            let w = tokio::task::block_in_place(|| ix.finish(&file_rows))?;
            let rows: Vec<_> = w.rows.into_iter().map(|b| Some(Arc::new(b))).collect();
            (rows, w.spilled_entries)
        }
        None => (vec![None; prepared.len()], 0),
    };
    c.timers.dedup += t.elapsed();
    let rows_in: u64 = prepared.iter().map(|p| p.owned_rows).sum();
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        rows_in,
        spilled,
        "key pass done"
    );
    bar.set_length(key_pass_rows + rows_in);

    let output = spec.output.as_deref().map(Location::parse).transpose()?;
    let errors = match (&spec.errors, &output) {
        (Some(e), _) => Some(Location::parse(e)?),
        (None, Some(o)) => Some(o.child(QUARANTINE_DIR)),
        (None, None) => None,
    };
    // Near-unique columns are written without a dictionary: building one only to abandon it
    // at its size limit costs more than the rest of their encoding (perf: the dictionary
    // interner was ~15% of a run's CPU while it included the primary key). So are numbers
    // that may take many values: Snappy packs them about as well (2M orders rows: customer_id
    // and total_amount 16.7 MB → 16.5 MB) for ~10% less CPU. Hash tokens get no statistics
    // either.
    let contract = &spec.contract;
    let names = |keep: &dyn Fn(&ColumnSpec) -> bool| -> Vec<String> {
        contract
            .columns
            .iter()
            .filter(|c| keep(c))
            .map(|c| c.name.clone())
            .collect()
    };
    let opaque = names(&|c| c.pii == Some(Pii::Hash));
    let plain = names(&|c| {
        c.pci == Pci::Pan
            || contract.primary_key.len() == 1 && contract.primary_key[0] == c.name
            || matches!(
                c.format,
                Some(Format::DateTime | Format::Uuid | Format::Email | Format::Phone)
            )
            || numeric_wide(c)
    });
    let props = writer_properties(spec.codec, &plain, &opaque);
    let part = spec.shard.part_name();
    let flush_bytes = (spec.memory_limit / 16).clamp(1 << 20, crate::sink::ROW_GROUP_FLUSH_BYTES);
    let mut outputs = Outputs {
        curated: output
            .as_ref()
            .map(|o| {
                ParquetSink::new(o.child(&part), schemas.curated.clone(), props.clone())
                    .map(|s| s.with_flush_bytes(flush_bytes))
            })
            .transpose()?,
        quarantine: errors
            .as_ref()
            .filter(|_| output.is_some())
            .map(|e| {
                // Quarantine rows arrive a few at a time for the whole run: its row group is
                // closed at a quarter of the curated size so it never holds much.
                ParquetSink::new(e.child(&part), schemas.quarantine.clone(), props.clone())
                    .map(|s| s.with_flush_bytes(flush_bytes / 4))
            })
            .transpose()?,
    };
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
        earlier_valid_versions: 0,
        tombstones: 0,
        dedup_spilled_entries: spilled,
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

    bar.set_message(if output.is_some() {
        "writing"
    } else {
        "checking"
    });
    let selections: Vec<Selection> = prepared
        .iter()
        .zip(&winners)
        .map(|(p, w)| Selection {
            decode: p.owned.clone(),
            winners: w.clone(),
        })
        .collect();
    let mut failed = Failed::new(prepared.len(), spec.memory_limit);
    let result = async {
        data_pass(
            spec,
            &schemas,
            &prepared,
            &selections,
            &protectors,
            &mut outputs,
            &mut c,
            Some(&mut failed),
            false,
            &bar,
        )
        .await?;
        let (earlier, spilled) = revisit(
            spec,
            &schemas,
            &mut prepared,
            &winners,
            failed,
            &protectors,
            &mut outputs,
            &mut c,
            &bar,
        )
        .await?;
        report.earlier_valid_versions = earlier;
        report.dedup_spilled_entries += spilled;
        tally(&c, &outputs, &mut report)
    }
    .await;
    bar.finish_and_clear();
    if let Err(e) = result {
        outputs.abort().await;
        return Err(e);
    }
    publish(
        &mut outputs,
        &mut report,
        output.as_ref(),
        spec,
        started,
        &mut c,
    )
    .await?;
    Ok(report)
}

/// Publishes a run (all or nothing, as far as object storage allows): every output is sealed
/// (footer written, every byte handed to its upload) before any is completed; an earlier run's
/// report at the same key is deleted before the first completion, and the new one written last;
/// when a completion or the report fails, the outputs already completed are deleted again. A
/// reader that waits for the report never sees a partial run; one that lists the prefix can see
/// curated and quarantine in the moment between their completions and the report.
async fn publish(
    outputs: &mut Outputs,
    report: &mut Report,
    output: Option<&Location>,
    spec: &JobSpec,
    started: Instant,
    c: &mut Counters,
) -> Result<()> {
    let t = Instant::now();
    let sealed = async {
        if let Some(q) = outputs.quarantine.as_mut() {
            q.seal().await?;
        }
        if let Some(cur) = outputs.curated.as_mut() {
            cur.seal().await?;
        }
        Ok(())
    }
    .await;
    if let Err(e) = sealed {
        outputs.abort().await;
        return Err(e);
    }
    let mut visible: Vec<Location> = Vec::new();
    let report_at = output.map(|out| out.child(&spec.shard.report_name()));
    let result = async {
        if let Some(at) = &report_at {
            match at.store.delete(&at.path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_error(&at.url, e)),
            }
        }
        if let Some(q) = outputs.quarantine.take() {
            let loc = q.location().clone();
            report.quarantine = Some(q.complete().await?);
            visible.push(loc);
        }
        if let Some(cur) = outputs.curated.take() {
            let loc = cur.location().clone();
            report.curated = Some(cur.complete().await?);
            visible.push(loc);
        }
        report.bytes_out = [&report.curated, &report.quarantine]
            .iter()
            .filter_map(|o| o.as_ref().map(|s| s.bytes))
            .sum();
        c.timers.write += t.elapsed();
        let total = started.elapsed();
        report.durations = c.timers.to_stage_times(total);
        report.rows_per_second = report.rows_in as f64 / total.as_secs_f64().max(1e-9);
        match &report_at {
            Some(at) => write_report(at, report).await,
            None => Ok(()),
        }
    }
    .await;
    if result.is_err() {
        outputs.abort().await;
        for loc in &visible {
            if let Err(e) = loc.store.delete(&loc.path).await {
                tracing::warn!(object = %loc.url, error = %e, "removing a published output failed");
            }
        }
    }
    result
}

/// Moves the counts into the report and checks conservation, before any output completes.
fn tally(c: &Counters, outputs: &Outputs, report: &mut Report) -> Result<()> {
    report.rows_curated = c.curated;
    report.rows_quarantined = c.quarantined;
    report.duplicates_superseded = c.superseded;
    report.tombstones = c.tombstones;
    report.masked_values = c.masked.clone();
    report.failures = c
        .failures
        .iter()
        .map(|((column, rule), rows)| RuleCount {
            column: column.to_string(),
            rule: rule.to_string(),
            rows: *rows,
        })
        .collect();
    report.check_conservation()?;
    if let Some(curated) = &outputs.curated {
        if curated.rows() != c.curated {
            return Err(Error::Conservation(format!(
                "{} rows selected for curated but {} written",
                c.curated,
                curated.rows()
            )));
        }
    }
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
