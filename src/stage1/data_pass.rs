//! The data pass (step 2 of the module docs, and the revisit's second half): every selected row
//! decoded once on the rayon pool, one row group per worker ([`work_row_group`]: validate,
//! [`route`], protect, encode), and the results folded into the outputs in input order, so the
//! output does not depend on thread timing.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{BooleanArray, RecordBatch};
use arrow::buffer::BooleanBuffer;
use arrow::compute::filter_record_batch;
use arrow::datatypes::SchemaRef;
use indicatif::ProgressBar;
use tokio::sync::mpsc;

use crate::output::{EncodedRowGroup, RowGroupEncoder};
use crate::protect::Protector;
use crate::source::{decode_error, Read, RowGroup};
use crate::stage1::dedup::DedupPlan;
use crate::stage1::validate::{quarantine_batch, Validator, Verdict};
use crate::{Error, Result};

use super::pool::{next_group, InFlight};
use super::prepare::{adapt, file_number, Prepared, Protectors, Schemas};
use super::publish::Outputs;
use super::revisit::Failed;
use super::route::{batch_winners, route};
use super::spec::JobSpec;
use super::tally::{add_counts, Counters};

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
pub(super) struct Done {
    quarantine: Vec<RecordBatch>,
    /// Protected curated rows, when the pass collects them instead of encoding them.
    curated: Vec<RecordBatch>,
    rows: u64,
    counters: Counters,
    /// The file's number, and (dedup jobs) its rows that failed validation and the key hashes
    /// of the winners among them, for the revisit.
    pub(super) file: usize,
    pub(super) invalid_rows: Vec<u64>,
    pub(super) failed_winners: Vec<u64>,
}

/// The data pass over one row group, on a worker thread: decode the owned rows, validate
/// them, protect and collect failing rows for quarantine, protect and encode the valid winners
/// with `encoder` (when writing), sending each output row group to `encoded` as soon as it is
/// closed, so that a large input row group is never held encoded in full. Each row ends in
/// exactly one count ([`route`]): curated, quarantined or superseded (valid but not its key's
/// winner).
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
    let mut group = group;
    loop {
        let t = Instant::now();
        let Some(decoded) = group.next_decoded(&w.url)? else {
            break;
        };
        let decoded_origin = decoded.origin;
        let batch = adapt(decoded.batch, &w.schema)?;
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
        }
        .with_decode_failures(n, &decoded.failures)
        .with_carried_failures(n, &decoded.carried);
        for f in &verdict.failures {
            *c.failures
                .entry((f.column.clone(), f.rule.clone()))
                .or_default() += f.count as u64;
        }
        let winners = w.winners.as_ref().map(|b| batch_winners(b, rows));
        let routed = route(n, verdict.invalid.as_ref(), winners.as_ref());
        c.quarantined += routed.quarantined;
        c.curated += routed.curated;
        c.superseded += routed.superseded;
        for (column, orphans) in &verdict.orphans_kept {
            *c.orphans_kept.entry(column.clone()).or_default() +=
                (orphans & &routed.keep).count_set_bits() as u64;
        }
        if let Some(plan) = &w.plan {
            c.tombstones += plan.tombstones(&batch, &routed.keep)?;
        }
        // Failed winners exist only where there are winners and failed rows.
        if let (Some(plan), Some(invalid), Some(lost)) =
            (&w.plan, &routed.quarantine, routed.failed_winners)
        {
            done.invalid_rows
                .extend(invalid.set_indices().map(|i| rows[i]));
            if lost.count_set_bits() > 0 {
                let lost_rows: Vec<u64> = lost.set_indices().map(|i| rows[i]).collect();
                let batch = filter_record_batch(&batch, &BooleanArray::new(lost, None))?;
                let offers = plan.offers(&batch, file_number(w.file)?, &lost_rows)?;
                done.failed_winners.extend_from_slice(offers.hashes());
            }
        }
        c.timers.validate += t.elapsed();

        let t = Instant::now();
        if let (Some(invalid), true) = (&routed.quarantine, w.write_quarantine) {
            let failing = filter_record_batch(&batch, &BooleanArray::new(invalid.clone(), None))?;
            let (failing, counts) = w.q_protector.protect(&failing, &w.url, w.column_parallel)?;
            add_counts(&mut c.masked.quarantine, counts);
            done.quarantine.extend(quarantine_batch(
                &failing,
                &verdict,
                &w.url,
                rows,
                decoded_origin.as_ref(),
                &w.q_schema,
            )?);
        }
        if encoder.is_none() && !w.collect_curated {
            c.timers.protect += t.elapsed();
            continue;
        }
        let keep = (routed.curated < n as u64).then(|| BooleanArray::new(routed.keep, None));
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
        enc.write(&curated).map_err(|source| Error::Encode {
            object: enc.url().to_string(),
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
        let rest = enc.take().map_err(|source| Error::Encode {
            object: enc.url().to_string(),
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
    mut done: Done,
    outputs: &mut Outputs,
    c: &mut Counters,
    failed: &mut Option<&mut Failed>,
    file_rows: u64,
    bar: &ProgressBar,
) -> Result<()> {
    if let Some(f) = failed.as_mut() {
        f.record(&done, file_rows);
    }
    c.add(std::mem::take(&mut done.counters));
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
    crate::alloc::trim_heap();
    Ok(())
}

/// The rows a data pass decodes and keeps, per file.
pub(super) struct Selection {
    /// Rows decoded (`None`: all).
    pub(super) decode: Option<Arc<BooleanBuffer>>,
    /// Rows kept when valid (`None`: every valid row).
    pub(super) winners: Option<Arc<BooleanBuffer>>,
}

/// A data pass: the selected rows of every file decoded once, its row groups worked on by the
/// rayon pool (one per thread at a time), and their results absorbed in input order. With
/// `failed`, the rows that fail validation and the failed winners' keys are recorded there. With
/// `collect_curated`, curated rows come back as batches and are written by this task.
#[allow(clippy::too_many_arguments)]
pub(super) async fn data_pass(
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
    let slices: usize = prepared.iter().map(|p| p.input.units()).sum();
    let column_parallel = slices < inflight.workers;
    for (i, (p, sel)) in prepared.iter().zip(selections).enumerate() {
        let file = Arc::new(FileWork {
            url: p.input.url().to_string(),
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
        let mut groups = p.input.read(Read {
            batch_size: spec.batch_size.get(),
            keep: sel.decode.clone(),
            columns: None,
            read_ahead: spec.read_ahead,
        });
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
