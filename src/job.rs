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
//! File-level problems (unreadable footer, missing column, wrong type, schemas that differ
//! between inputs) are found from the footers before any data is read. Any error aborts both
//! uploads, so nothing partial becomes visible; the conservation check runs before the outputs
//! are completed, so an unbalanced run publishes nothing either.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::SchemaRef;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use object_store::{ObjectStoreExt, PutPayload};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ParquetRecordBatchReader, RowSelection, RowSelector,
};

use crate::contract::Contract;
use crate::dedup::{DedupIndex, DedupPlan};
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
/// Name of the curated (and quarantine) object under its output prefix.
pub const PART_NAME: &str = "part-00000.parquet";
/// Name of the quarantine prefix under the output when `--errors` is not given.
pub const QUARANTINE_DIR: &str = "_quarantine";
/// Name of the run report under the output prefix.
pub const REPORT_NAME: &str = "_edp_report.json";

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
    pub pii_key: Vec<u8>,
    pub progress: bool,
}

struct Prepared {
    input: InputObject,
    meta: ArrowReaderMetadata,
    validator: Validator,
    plan: Option<DedupPlan>,
    rows: u64,
}

struct Counters {
    timers: Timers,
    failures: BTreeMap<(String, &'static str), u64>,
    quarantined: u64,
    masked: Masked,
    /// Invalid row numbers per file, only when there is no primary key to deduplicate on.
    invalid_rows: Vec<Vec<u64>>,
}

fn add_counts(into: &mut BTreeMap<String, u64>, counts: MaskCounts) {
    for (col, n) in counts {
        *into.entry(col.to_string()).or_default() += n as u64;
    }
}

/// Row selection keeping exactly the sorted `rows` of a file of `total` rows.
pub fn select_rows(rows: &[u64], total: u64) -> RowSelection {
    let mut selectors = Vec::new();
    let mut pos = 0u64;
    let mut i = 0;
    while i < rows.len() {
        let start = rows[i];
        let mut end = start + 1;
        i += 1;
        while i < rows.len() && rows[i] == end {
            end += 1;
            i += 1;
        }
        if start > pos {
            selectors.push(RowSelector::skip((start - pos) as usize));
        }
        selectors.push(RowSelector::select((end - start) as usize));
        pos = end;
    }
    if pos < total {
        selectors.push(RowSelector::skip((total - pos) as usize));
    }
    RowSelection::from(selectors)
}

/// The sorted complement of sorted `rows` in `0..total`.
fn complement(rows: &[u64], total: u64) -> Vec<u64> {
    let mut out = Vec::with_capacity((total as usize).saturating_sub(rows.len()));
    let mut j = 0;
    for r in 0..total {
        if j < rows.len() && rows[j] == r {
            j += 1;
        } else {
            out.push(r);
        }
    }
    out
}

async fn prepare(spec: &JobSpec) -> Result<Vec<Prepared>> {
    let inputs = source::resolve(&spec.inputs).await?;
    let mut prepared: Vec<Prepared> = Vec::with_capacity(inputs.len());
    for input in inputs {
        let meta = source::open(&input).await?;
        let url = &input.location.url;
        if let Some(first) = prepared.first() {
            if first.meta.schema() != meta.schema() {
                return Err(Error::bad_input(
                    url,
                    format!(
                        "schema differs from the first input {}",
                        first.input.location.url
                    ),
                ));
            }
        }
        let validator = Validator::new(&spec.contract, meta.schema(), url)?;
        let plan = DedupPlan::new(&spec.contract, meta.schema(), url)?;
        let rows = meta.metadata().file_metadata().num_rows().max(0) as u64;
        prepared.push(Prepared {
            input,
            meta,
            validator,
            plan,
            rows,
        });
    }
    Ok(prepared)
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

/// Pass 1 over one file: validate, quarantine, index.
#[allow(clippy::too_many_arguments)]
async fn check_file(
    spec: &JobSpec,
    file: u32,
    p: &Prepared,
    index: &mut Option<DedupIndex>,
    quarantine: &mut Option<ParquetSink>,
    q_schema: &SchemaRef,
    protector: &Protector,
    c: &mut Counters,
    bar: &ProgressBar,
) -> Result<()> {
    let url = p.input.location.url.as_str();
    let mut rx = source::row_groups(
        &p.input,
        p.meta.clone(),
        spec.batch_size.get(),
        None,
        spec.read_ahead,
    );
    let mut first_row = 0u64;
    let mut invalid_rows = Vec::new();
    loop {
        let t = Instant::now();
        let Some(reader) = rx.recv().await else { break };
        c.timers.read_wait += t.elapsed();
        let reader = reader?;
        let batches = tokio::task::block_in_place(|| -> Result<Vec<RecordBatch>> {
            let mut out = Vec::new();
            let mut reader = reader;
            loop {
                let t = Instant::now();
                let Some(batch) = reader.next() else { break };
                c.timers.decode += t.elapsed();
                let batch = batch.map_err(|e| decode_error(url, e))?;
                let n = batch.num_rows() as u64;

                let t = Instant::now();
                let verdict = p.validator.validate(&batch, &spec.contract)?;
                c.timers.validate += t.elapsed();
                for f in &verdict.failures {
                    *c.failures
                        .entry((f.column.to_string(), f.rule))
                        .or_default() += f.count as u64;
                }

                let t = Instant::now();
                match (index.as_mut(), &p.plan) {
                    (Some(ix), Some(plan)) => {
                        ix.offer(plan, &batch, verdict.invalid.as_ref(), file, first_row)?
                    }
                    _ => {
                        if let Some(inv) = &verdict.invalid {
                            invalid_rows.extend(inv.set_indices().map(|r| first_row + r as u64));
                        }
                    }
                }
                c.timers.dedup += t.elapsed();

                if let Some(invalid) = &verdict.invalid {
                    c.quarantined += verdict.invalid_count() as u64;
                    if quarantine.is_some() {
                        let t = Instant::now();
                        let rows =
                            filter_record_batch(&batch, &BooleanArray::new(invalid.clone(), None))?;
                        let (rows, counts) = protector.protect(&rows)?;
                        add_counts(&mut c.masked.quarantine, counts);
                        c.timers.protect += t.elapsed();
                        if let Some(q) =
                            quarantine_batch(&rows, &verdict, url, first_row, q_schema)?
                        {
                            out.push(q);
                        }
                    }
                }
                first_row += n;
                bar.inc(n);
            }
            Ok(out)
        })?;
        if let Some(q) = quarantine.as_mut() {
            let t = Instant::now();
            for b in &batches {
                q.write(b).await?;
            }
            c.timers.write += t.elapsed();
        }
    }
    if first_row != p.rows {
        return Err(decode_error(
            url,
            format!(
                "footer declares {} rows but {} were decoded",
                p.rows, first_row
            ),
        ));
    }
    c.invalid_rows.push(invalid_rows);
    Ok(())
}

/// One row group of pass 2, decoded and protected.
struct Protected {
    batches: Vec<RecordBatch>,
    counts: MaskCounts,
    decode: Duration,
    protect: Duration,
}

fn protect_row_group(
    url: &str,
    reader: ParquetRecordBatchReader,
    protector: &Protector,
) -> Result<Protected> {
    let mut out = Protected {
        batches: Vec::new(),
        counts: Vec::new(),
        decode: Duration::ZERO,
        protect: Duration::ZERO,
    };
    let mut reader = reader;
    loop {
        let t = Instant::now();
        let Some(batch) = reader.next() else { break };
        out.decode += t.elapsed();
        let batch = batch.map_err(|e| decode_error(url, e))?;
        let t = Instant::now();
        let (batch, counts) = protector.protect(&batch)?;
        out.counts.extend(counts);
        out.protect += t.elapsed();
        out.batches.push(batch);
    }
    Ok(out)
}

/// Pass 2 over one file: read the kept rows, protect, write curated. Decoding and protecting
/// row group N+1 (on a blocking thread) overlaps with encoding and uploading row group N.
async fn write_file(
    spec: &JobSpec,
    p: &Prepared,
    keep: &[u64],
    curated: &mut ParquetSink,
    protector: &Arc<Protector>,
    c: &mut Counters,
    bar: &ProgressBar,
) -> Result<()> {
    if keep.is_empty() {
        return Ok(());
    }
    let url = p.input.location.url.clone();
    let selection = select_rows(keep, p.rows);
    let mut rx = source::row_groups(
        &p.input,
        p.meta.clone(),
        spec.batch_size.get(),
        Some(selection),
        spec.read_ahead,
    );
    let mut pending: Option<tokio::task::JoinHandle<Result<Protected>>> = None;
    loop {
        let t = Instant::now();
        let next = rx.recv().await;
        c.timers.read_wait += t.elapsed();
        let handle = match next {
            Some(reader) => {
                let reader = reader?;
                let (url, protector) = (url.clone(), protector.clone());
                Some(tokio::task::spawn_blocking(move || {
                    protect_row_group(&url, reader, &protector)
                }))
            }
            None => None,
        };
        if let Some(done) = pending.take() {
            let done = done
                .await
                .map_err(|e| Error::Internal(format!("protect task failed: {e}")))??;
            c.timers.decode += done.decode;
            c.timers.protect += done.protect;
            add_counts(&mut c.masked.curated, done.counts);
            let t = Instant::now();
            for b in &done.batches {
                curated.write(b).await?;
                bar.inc(b.num_rows() as u64);
            }
            c.timers.write += t.elapsed();
        }
        match handle {
            Some(h) => pending = Some(h),
            None => break,
        }
    }
    Ok(())
}

/// Runs stage 1 (or, without an output, the check-only `validate`) and returns its report.
pub async fn run(spec: &JobSpec) -> Result<Report> {
    let started = Instant::now();
    let prepared = prepare(spec).await?;
    let Some(first) = prepared.first() else {
        return Err(Error::Internal("no inputs resolved".into()));
    };
    let schema = first.meta.schema().clone();
    let q_schema = quarantine_schema(&schema);
    let protector = Arc::new(Protector::new(
        &spec.contract,
        &schema,
        spec.pci_enabled,
        &spec.pii_key,
    ));
    let rows_in: u64 = prepared.iter().map(|p| p.rows).sum();

    let output = spec.output.as_deref().map(Location::parse).transpose()?;
    let errors = match (&spec.errors, &output) {
        (Some(e), _) => Some(Location::parse(e)?),
        (None, Some(o)) => Some(o.child(QUARANTINE_DIR)),
        (None, None) => None,
    };
    let props = writer_properties(spec.codec);
    let mut outputs = Outputs {
        curated: output
            .as_ref()
            .map(|o| ParquetSink::new(o.child(PART_NAME), schema.clone(), props.clone()))
            .transpose()?,
        quarantine: errors
            .as_ref()
            .filter(|_| output.is_some())
            .map(|e| ParquetSink::new(e.child(PART_NAME), q_schema.clone(), props.clone()))
            .transpose()?,
    };
    let passes = if output.is_some() { 2 } else { 1 };
    let bar = progress_bar(spec.progress, rows_in * passes);
    let mut counters = Counters {
        timers: Timers::default(),
        failures: BTreeMap::new(),
        quarantined: 0,
        masked: Masked::default(),
        invalid_rows: Vec::new(),
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
        pci_dss_enabled: spec.pci_enabled,
        inputs: prepared
            .iter()
            .map(|p| InputStats {
                url: p.input.location.url.clone(),
                rows: p.rows,
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
        write_report(out, &report).await?;
    }
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
async fn execute(
    spec: &JobSpec,
    prepared: &[Prepared],
    outputs: &mut Outputs,
    q_schema: &SchemaRef,
    protector: &Arc<Protector>,
    c: &mut Counters,
    report: &mut Report,
    bar: &ProgressBar,
) -> Result<()> {
    let mut index = match &prepared[0].plan {
        Some(plan) => Some(DedupIndex::new(plan)?),
        None => None,
    };
    bar.set_message("checking");
    for (i, p) in prepared.iter().enumerate() {
        let file = u32::try_from(i).map_err(|_| Error::Config("too many input objects".into()))?;
        check_file(
            spec,
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
    let keep: Vec<Vec<u64>> = match index {
        Some(ix) => {
            let winners = ix.finish(prepared.len());
            report.duplicates_superseded = winners.superseded;
            report.tombstones = winners.tombstones;
            winners.rows
        }
        None => prepared
            .iter()
            .zip(&c.invalid_rows)
            .map(|(p, inv)| complement(inv, p.rows))
            .collect(),
    };
    c.timers.dedup += t.elapsed();
    report.rows_curated = keep.iter().map(|k| k.len() as u64).sum();
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
        for (p, rows) in prepared.iter().zip(&keep) {
            write_file(spec, p, rows, curated, protector, c, bar).await?;
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

async fn write_report(output: &Location, report: &Report) -> Result<()> {
    let loc = output.child(REPORT_NAME);
    let mut json =
        serde_json::to_vec_pretty(report).map_err(|e| Error::Internal(format!("report: {e}")))?;
    json.push(b'\n');
    loc.store
        .put(&loc.path, PutPayload::from(json))
        .await
        .map_err(|e| store_error(&loc.url, e))?;
    Ok(())
}
