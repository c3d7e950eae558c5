//! Foreign keys: before the passes, the key set of every `x-references` target is loaded from
//! the current state of the referenced dataset's curated data, for the validator to look up
//! ([`ForeignKey`]).
//!
//! The current state is [`current::winners`] over the referenced dataset's curated objects
//! (latest version per key, the same order as dedup, spilling past the index's budget), then a
//! read of only the referenced column (and the op column) of the winning rows, tombstones
//! dropped. The key sets of all foreign keys share [`REFERENCE_BUDGET_SHARE`] of the memory
//! limit; a set that outgrows it fails the run with a configuration error (exit 3) naming the
//! reference, rather than checking part of it.
//!
//! A reference without a location (a local run without `--reference`) is skipped and the report
//! says so. A location without curated objects fails the run (exit 4) unless the contract
//! (`missing: skip`) or `references_required: false` makes the check skippable; it is then
//! skipped and reported so.

use std::sync::Arc;

use crate::contract::Orphans;
use crate::report::{ReferenceCheck, ReferenceStatus};
use crate::source::{self, Input, Read};
use crate::stage1::current;
use crate::stage1::dedup::SpillConfig;
use crate::stage1::validate::{ForeignKey, KeyKind, KeySet};
use crate::store::Location;
use crate::{Error, Result};

use super::spec::{JobSpec, ReferenceTarget, REFERENCE_BUDGET_SHARE};

/// The key sets of the job's foreign keys, and the report's first draft of each check.
pub(super) async fn load(spec: &JobSpec) -> Result<(Vec<Arc<ForeignKey>>, Vec<ReferenceCheck>)> {
    let mut keys = Vec::new();
    let mut checks = Vec::new();
    if !spec.validation_enabled {
        return Ok((keys, checks));
    }
    let budget = spec.memory_limit / REFERENCE_BUDGET_SHARE;
    let mut used = 0usize;
    for target in &spec.references {
        let r = &target.reference;
        let mut check = ReferenceCheck {
            column: target.column.clone(),
            references: r.target(),
            location: target.location.as_ref().map(|(url, _)| url.clone()),
            orphans: match r.orphans {
                Orphans::Quarantine => "quarantine",
                Orphans::Keep => "keep",
            },
            status: ReferenceStatus::Checked,
            reason: None,
            objects: 0,
            keys: 0,
            orphans_quarantined: 0,
            orphans_kept: 0,
        };
        let Some((url, contract)) = &target.location else {
            let reason = format!(
                "no location for dataset `{}` (give --reference {}=URL)",
                r.dataset, r.dataset
            );
            tracing::warn!(column = %target.column, references = %check.references, "foreign key not checked: {reason}");
            check.status = ReferenceStatus::Skipped;
            check.reason = Some(reason);
            checks.push(check);
            continue;
        };
        let objects = source::curated_objects(&Location::parse(url)?).await?;
        if objects.is_empty() {
            if !target.skip_missing {
                return Err(Error::bad_input(
                    url,
                    format!(
                        "`{}` references {}, but this location holds no curated objects of `{}` \
                         (mark the check skippable with \"missing\": \"skip\" in the contract \
                         or --references-required false)",
                        target.column, check.references, r.dataset
                    ),
                ));
            }
            let reason = format!("no curated objects of `{}` at {url}", r.dataset);
            tracing::warn!(column = %target.column, references = %check.references, "foreign key not checked: {reason}");
            check.status = ReferenceStatus::Skipped;
            check.reason = Some(reason);
            checks.push(check);
            continue;
        }
        let mut opened = Vec::with_capacity(objects.len());
        for o in objects {
            opened.push(Input::open(o).await?);
        }
        let set = key_set(spec, target, contract, &opened, budget.saturating_sub(used)).await?;
        used += set.bytes();
        check.objects = opened.len();
        check.keys = set.len() as u64;
        tracing::info!(column = %target.column, references = %check.references, objects = check.objects, keys = check.keys, "foreign key set loaded");
        keys.push(Arc::new(ForeignKey {
            column: target.column.as_str().into(),
            target: check.references.as_str().into(),
            keep_orphans: r.orphans == Orphans::Keep,
            keys: set,
        }));
        checks.push(check);
    }
    Ok((keys, checks))
}

/// The referenced column of every live row of the current state of `opened` (the referenced
/// dataset's curated objects under `contract`), within `budget` bytes.
async fn key_set(
    spec: &JobSpec,
    target: &ReferenceTarget,
    contract: &crate::contract::Contract,
    opened: &[Input],
    budget: usize,
) -> Result<KeySet> {
    let name = &target.reference.column;
    let mut kind = None;
    for object in opened {
        let Ok(field) = object.schema().field_with_name(name) else {
            return Err(Error::bad_input(
                object.url(),
                format!(
                    "has no column `{name}`, which `{}` references",
                    target.column
                ),
            ));
        };
        match (KeyKind::of(field.data_type()), kind) {
            (None, _) => {
                return Err(Error::bad_input(
                    object.url(),
                    format!(
                        "column `{name}` has type {}: foreign keys reference integer or string \
                         columns",
                        field.data_type()
                    ),
                ))
            }
            (Some(k), Some(seen)) if k != seen => {
                return Err(Error::bad_input(
                    object.url(),
                    format!(
                        "column `{name}` is {} here and of another kind in an earlier object",
                        field.data_type()
                    ),
                ))
            }
            (k, _) => kind = k,
        }
    }
    let file_rows: Vec<u64> = opened.iter().map(Input::rows).collect();
    let spill = SpillConfig {
        budget: spec.index_memory,
        dir: spec.spill_dir.clone(),
    };
    let winners =
        current::winners(contract, opened, &file_rows, spec.batch_size.get(), spill).await?;
    let mut set = KeySet::new(kind.unwrap_or(KeyKind::Int));
    let op = contract.cdc_op.as_deref();
    for (f, object) in opened.iter().enumerate() {
        let schema = object.schema();
        let columns: Vec<usize> = (0..schema.fields().len())
            .filter(|&i| {
                let n = schema.field(i).name();
                n == name || Some(n.as_str()) == op
            })
            .collect();
        let mut groups = object.read(Read {
            batch_size: spec.batch_size.get(),
            keep: winners.as_ref().map(|w| Arc::new(w.rows[f].clone())),
            columns: Some(columns),
            read_ahead: spec.read_ahead,
        });
        while let Some(group) = groups.recv().await {
            let mut group = group?;
            while let Some(batch) = group.next_batch(object.url())? {
                let batch = match current::live_rows(&batch, op)? {
                    Some(live) => arrow::compute::filter_record_batch(&batch, &live)?,
                    None => batch,
                };
                let column = batch
                    .column_by_name(name)
                    .ok_or_else(|| Error::Internal(format!("column `{name}` not decoded")))?;
                set.extend(column)?;
                if set.bytes() > budget {
                    return Err(Error::Config(format!(
                        "the keys of {} that `{}` references outgrow their share of the memory \
                         limit (1/{REFERENCE_BUDGET_SHARE} of --memory-limit, {} MiB left); \
                         raise --memory-limit",
                        target.reference.target(),
                        target.column,
                        budget >> 20
                    )));
                }
            }
        }
    }
    Ok(set.seal())
}
