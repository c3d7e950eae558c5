//! Stage 1: raw objects → curated and quarantine Parquet plus a run report.
//!
//! This folder owns the stage 1 job, from a validated [`JobSpec`] to its published outputs and
//! [`Report`]: file-level preparation, the passes below, the routing rule, the dedup index
//! ([`dedup`], which stage 2 reuses, as it does [`current`]) and the row validator
//! ([`validate`]). It must not touch
//! flags, settings or exit codes (a [`JobSpec`] arrives validated; errors go back as
//! [`Error`](crate::Error)), events and notifications (`app`) or stage 2; it reads inputs only
//! through [`source`](crate::source) and writes Parquet only through [`output`](crate::output).
//!
//! Streaming passes keep memory independent of the data volume; the key pass decodes only the
//! dedup columns, the data pass each owned row in full, once, and the revisit (only when
//! needed) decodes again just the rows it picks. They work on the source's work units
//! ([`Input::read`](crate::source::Input::read)): for Parquet, row groups, large ones cut into
//! slices of rows when the file's offset index allows fetching only a slice's pages. "Row
//! group" below means such a unit.
//!
//! 1. The key pass fetches and decodes only the dedup columns (key, event time, sequence, op).
//!    Row groups are turned into [`Offers`](dedup::Offers) (parsing, hashing) on the
//!    rayon pool while this task appends them to the index; the result is one bit per input
//!    row: the winners.
//!    A sharded job (`--shard INDEX/COUNT`) marks the rows whose key hash falls in its shard in
//!    the same pass and offers only those. Without a primary key there is no key pass (a
//!    sharded job then owns rows by a hash of their position).
//! 2. The data pass decodes every owned row once, one row group per thread of the rayon pool
//!    (one thread per core): validate; route each row (curated when valid and its key's
//!    winner, quarantine when invalid, superseded otherwise); protect the failing rows for
//!    quarantine; protect the valid winners and encode them into Parquet column chunks
//!    ([`RowGroupEncoder`](crate::output::RowGroupEncoder)). This task takes the results in
//!    input order and splices them into the outputs, so the output does not depend on thread
//!    timing.
//!
//! 3. The revisit, only when some key's winner failed validation: per key the most recent
//!    *valid* version wins, so those keys need their latest valid version. A second key pass
//!    offers only the valid rows of those keys (the data pass recorded one bit per failed row
//!    and the key hash of every failed winner), and a data pass over just the new winners (rows
//!    the first data pass counted as superseded) appends them to curated.
//!
//! Every decoded row ends in one count: curated (its key's latest valid version), quarantined
//! (invalid) or superseded (valid, not its key's latest valid version). A delete is checked on
//! its dedup columns only ([`Validator`](validate::Validator)), so a key-only delete reaches
//! curated as a tombstone.
//!
//! Foreign keys (`x-references`) are loaded before the passes (`references.rs`): each
//! referenced dataset's current state ([`current`], stage 2's too) gives a sorted key set the
//! validator searches; orphans are quarantined under `foreign_key`, or published and counted.
//!
//! File-level problems (unreadable footer, missing column, wrong type, schemas that cannot be
//! reconciled) are found from the footers before any data is read. Inputs whose schemas differ
//! only by added nullable columns are reconciled into one output schema, the missing columns read
//! as nulls. Any error aborts both uploads, so nothing partial becomes visible; the conservation
//! check runs before the outputs are completed, so an unbalanced run publishes nothing either.
//!
//! Memory: the dedup index gets `--index-memory` (default [`INDEX_BUDGET_SHARE`] of
//! `--memory-limit`, which is at least 256 MiB) and spills past it;
//! winners are kept as one bit per input row, failed rows too once a file has one, and the
//! revisit's keys as one hash per failed winner (~16 bytes) up to the index's share, past which
//! the revisit offers every valid row instead (the index spills). The rest of the budget covers
//! what is bounded by construction: `--read-ahead` compressed row groups fetched ahead, one row
//! group per worker (a decoded batch and its encoded pages, closed into a row group at 1/16 of
//! the limit, at most 32 MiB, and handed to this task as soon as it is closed), and each
//! output's multipart parts (3 × 10 MiB).
//!
//! The files, in the order a run uses them: `spec.rs` (the [`JobSpec`], its [`Shard`], the
//! index's memory share and the quarantine directory's name), `prepare.rs` (footers, schema
//! reconciliation, the validator, dedup plan and protectors of each input; `references.rs` the
//! foreign keys' sets), `key_pass.rs`
//! (step 1), `data_pass.rs` (step 2: the worker for one row group and the splicing of its
//! output), `route.rs` (the routing rule, a plain function over one batch's verdict and winner
//! bits), `revisit.rs` (step 3), `tally.rs` (the counts and the report) and `publish.rs` (the
//! writer policy; sealing, completing or aborting the outputs); `pool.rs` runs row groups on
//! the rayon pool and `progress.rs` draws the bar.

pub mod current;
pub mod dedup;
pub mod validate;

mod data_pass;
mod key_pass;
mod pool;
mod prepare;
mod progress;
mod publish;
mod references;
mod revisit;
mod route;
mod spec;
mod tally;

use std::time::Instant;

use crate::report::Report;
use crate::Result;

use data_pass::{data_pass, Selection};
use key_pass::find_winners;
use prepare::{check_spill_dir, prepare, Protectors, Schemas};
use progress::{phase, progress_bar};
use publish::{publish, Outputs};
use revisit::{revisit, Failed};
use tally::{start_report, tally, Counters};

pub use prepare::read_protection;
pub use spec::{
    JobSpec, ReferenceTarget, Replay, Shard, INDEX_BUDGET_SHARE, QUARANTINE_DIR,
    REFERENCE_BUDGET_SHARE,
};

/// Runs stage 1 (or, without an output, the check-only `validate`) and returns its report.
pub async fn run(spec: &JobSpec) -> Result<Report> {
    let started = Instant::now();
    check_spill_dir(&spec.spill_dir)?;
    let (mut prepared, schema, references) = prepare(spec).await?;
    let schemas = Schemas::new(spec, schema);
    let protectors = Protectors::new(spec, &schemas);
    let mut c = Counters::default();
    let bar = progress_bar(spec.progress);

    let (winners, spilled) = find_winners(spec, &mut prepared, &mut c, &bar).await?;
    let rows_in: u64 = prepared.iter().map(|p| p.owned_rows).sum();
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        rows_in,
        spilled,
        "key pass done"
    );

    let (mut outputs, output) = Outputs::open(spec, &schemas)?;
    let mut report = start_report(
        spec,
        &prepared,
        &protectors,
        references,
        output.is_some(),
        rows_in,
        spilled,
    );

    phase(
        &bar,
        if output.is_some() {
            "writing"
        } else {
            "checking"
        },
        rows_in,
    );
    let selections: Vec<Selection> = prepared
        .iter()
        .zip(&winners)
        .map(|(p, w)| Selection {
            decode: p.owned.clone(),
            winners: w.clone(),
        })
        .collect();
    let mut failed = Failed::new(prepared.len(), spec.index_memory);
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
    // The audit as a structured event too, for log-based retention (it holds no value and no
    // key, only column names, transforms, counts and the key's id).
    tracing::info!(
        dataset = %report.dataset,
        audit = %serde_json::to_string(&report.audit).unwrap_or_default(),
        "protection audit"
    );
    Ok(report)
}
