//! The job's two outputs, from opening them with the writer policy to publishing the run: every
//! output sealed before any completes, the report written last, and nothing left visible when
//! any of it fails.

use std::time::Instant;

use object_store::{ObjectStoreExt, PutPayload};

use parquet::file::metadata::KeyValue;

use crate::contract::{ColumnSpec, ColumnType, Format, Pci, Pii};
use crate::output::{writer_properties, ParquetSink, ROW_GROUP_FLUSH_BYTES};
use crate::report::Report;
use crate::store::{store_error, Location};
use crate::{Error, Result};

use super::prepare::Schemas;
use super::spec::{JobSpec, Shard, QUARANTINE_DIR};
use super::tally::Counters;
use super::validate::PROTECTION_KEY;

/// The curated and quarantine sinks; `None` when the job writes nothing (or once completed).
pub(super) struct Outputs {
    pub(super) curated: Option<ParquetSink>,
    pub(super) quarantine: Option<ParquetSink>,
    /// The prefixes the parts go to (curated, then quarantine): where a committed run removes
    /// the parts and reports of another shard count.
    prefixes: Vec<Location>,
}

impl Outputs {
    /// Aborts both uploads: nothing of them becomes visible.
    pub(super) async fn abort(&mut self) {
        if let Some(s) = self.curated.take() {
            s.abort().await;
        }
        if let Some(s) = self.quarantine.take() {
            s.abort().await;
        }
    }

    /// Opens the job's outputs under `--output` (quarantine under `--errors`, by default
    /// [`QUARANTINE_DIR`] of the output), with the writer policy below. Returns them with the
    /// output prefix, `None` for a check-only job, which opens neither.
    pub(super) fn open(spec: &JobSpec, schemas: &Schemas) -> Result<(Outputs, Option<Location>)> {
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
        // Replay's contract has no transform on columns that arrive protected: its record says
        // which hold tokens.
        let recorded: std::collections::BTreeMap<String, String> = spec
            .replay
            .as_ref()
            .and_then(|r| serde_json::from_str(&r.protection).ok())
            .unwrap_or_default();
        let opaque = names(&|c| {
            c.pii == Some(Pii::Hash) || recorded.get(&c.name).is_some_and(|how| how == "hash")
        });
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
        // Quarantine records which of its columns hold protected values, for `edp replay`.
        let protection = match &spec.replay {
            Some(r) => r.protection.clone(),
            None => serde_json::to_string(&contract.protection(spec.pci_enabled))
                .map_err(|e| Error::Internal(format!("protection record: {e}")))?,
        };
        let quarantine_props = props
            .clone()
            .into_builder()
            .set_key_value_metadata(Some(vec![KeyValue::new(
                PROTECTION_KEY.to_string(),
                protection,
            )]))
            .build();
        let part = spec.shard.part_name();
        let flush_bytes = (spec.memory_limit / 16).clamp(1 << 20, ROW_GROUP_FLUSH_BYTES);
        let outputs = Outputs {
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
                    ParquetSink::new(e.child(&part), schemas.quarantine.clone(), quarantine_props)
                        .map(|s| s.with_flush_bytes(flush_bytes / 4))
                })
                .transpose()?,
            prefixes: output
                .iter()
                .chain(errors.iter().filter(|_| output.is_some()))
                .cloned()
                .collect(),
        };
        Ok((outputs, output))
    }
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

/// Publishes a run (all or nothing, as far as object storage allows): every output is sealed
/// (footer written, every byte handed to its upload) before any is completed; an earlier run's
/// report at the same key is deleted before the first completion, and the new one written last;
/// when a completion or the report fails, the outputs already completed are deleted again. A
/// reader that waits for the report never sees a partial run; one that lists the prefix can see
/// curated and quarantine in the moment between their completions and the report.
pub(super) async fn publish(
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
    if result.is_ok() {
        remove_stale(&outputs.prefixes, spec.shard).await;
    }
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

/// Removes, from each of `prefixes`, the parts and reports an earlier run with another shard
/// count left (a run over the same input with 4 shards after one with 2, or unsharded): they
/// would be read as current beside this run's. Parts of this shard count are the sibling
/// shards' and stay. Runs after this run's report is written, so a failure here loses nothing
/// of this run: it is logged, and the next run tries again.
async fn remove_stale(prefixes: &[Location], shard: Shard) {
    for prefix in prefixes {
        let listed = match prefix.store.list_with_delimiter(Some(&prefix.path)).await {
            Ok(listed) => listed,
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => {
                tracing::warn!(prefix = %prefix.url, error = %e, "listing for stale shard parts failed");
                continue;
            }
        };
        for object in listed.objects {
            let stale = object
                .location
                .filename()
                .is_some_and(|name| Shard::count_of(name).is_some_and(|n| n != shard.count));
            if !stale {
                continue;
            }
            match prefix.store.delete(&object.location).await {
                Ok(()) => {
                    tracing::info!(object = %object.location, "removed a part of another shard count")
                }
                Err(e) => {
                    tracing::warn!(object = %object.location, error = %e, "removing a stale shard part failed")
                }
            }
        }
    }
}

/// Writes the run report (pretty JSON and a newline) to `loc`.
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
