//! What the passes count and how it becomes the run report: [`Counters`] merged from every row
//! group, the report's first draft, and [`tally`], which moves the counts in and checks
//! conservation before any output completes.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::contract::rule_name;
use crate::protect::MaskCounts;
use crate::report::{
    Audit, ColumnAudit, Conservation, InputStats, KeyAudit, Masked, ReferenceCheck, Report,
    RuleCount, Timers, Transform,
};
use crate::{Error, Result};

use super::prepare::{Prepared, Protectors};
use super::publish::Outputs;
use super::spec::JobSpec;

/// What the passes count, merged from every row group.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) timers: Timers,
    pub(super) failures: BTreeMap<(Arc<str>, Arc<str>), u64>,
    /// Curated rows whose foreign key (`orphans: keep`) references nothing, by column.
    pub(super) orphans_kept: BTreeMap<Arc<str>, u64>,
    pub(super) curated: u64,
    pub(super) quarantined: u64,
    pub(super) superseded: u64,
    pub(super) tombstones: u64,
    pub(super) masked: Masked,
}

impl Counters {
    /// Adds the counts of a finished row group.
    pub(super) fn add(&mut self, d: Counters) {
        self.timers.add(&d.timers);
        for (k, v) in d.failures {
            *self.failures.entry(k).or_default() += v;
        }
        for (k, v) in d.orphans_kept {
            *self.orphans_kept.entry(k).or_default() += v;
        }
        self.curated += d.curated;
        self.quarantined += d.quarantined;
        self.superseded += d.superseded;
        self.tombstones += d.tombstones;
        self.masked.add(d.masked);
    }
}

/// Adds a batch's masked values per column to `into`.
pub(super) fn add_counts(into: &mut BTreeMap<String, u64>, counts: MaskCounts) {
    for (col, n) in counts {
        *into.entry(col.to_string()).or_default() += n as u64;
    }
}

/// The audit's columns: curated's protected columns, then quarantine's others (its columns as
/// read), counts still 0; the key when a column is hashed.
fn start_audit(spec: &JobSpec, protectors: &Protectors) -> Audit {
    let mut columns: Vec<ColumnAudit> = Vec::new();
    for (column, transform) in protectors
        .curated
        .transforms()
        .chain(protectors.quarantine.transforms())
    {
        if !columns.iter().any(|c| c.column == column) {
            columns.push(ColumnAudit {
                column: column.to_string(),
                transform,
                curated: 0,
                quarantine: 0,
            });
        }
    }
    Audit {
        pii_key: columns
            .iter()
            .any(|c| c.transform == Transform::Hash)
            .then(|| KeyAudit {
                id: crate::protect::key_id(&spec.pii_key),
                development: spec.pii_key_development,
            }),
        columns,
    }
}

/// The report before the passes' counts: what the job read, with every count still 0 (`writes`:
/// the job has an output; without, it is the check-only `validate`).
pub(super) fn start_report(
    spec: &JobSpec,
    prepared: &[Prepared],
    protectors: &Protectors,
    references: Vec<ReferenceCheck>,
    writes: bool,
    rows_in: u64,
    spilled: u64,
) -> Report {
    Report {
        edp_version: env!("CARGO_PKG_VERSION"),
        command: match (spec.replay.is_some(), writes) {
            (true, _) => "replay",
            (false, true) => "raw-to-curated",
            (false, false) => "validate",
        }
        .to_string(),
        dataset: spec.contract.dataset.clone(),
        contract: spec.contract.file.clone(),
        shard: spec.shard.to_string(),
        pci_dss_enabled: spec.pci_enabled,
        inputs: prepared
            .iter()
            .map(|p| InputStats {
                url: p.input.url().to_string(),
                rows: p.owned_rows,
                bytes: p.input.object.size,
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
        references,
        orphans_kept: 0,
        masked_values: Masked::default(),
        audit: start_audit(spec, protectors),
        bytes_in: prepared.iter().map(|p| p.input.object.size).sum(),
        bytes_out: 0,
        durations: Default::default(),
        rows_per_second: 0.0,
        conservation: Conservation {
            holds: false,
            equation: String::new(),
        },
    }
}

/// Moves the counts into the report and checks conservation, before any output completes.
pub(super) fn tally(c: &Counters, outputs: &Outputs, report: &mut Report) -> Result<()> {
    report.rows_curated = c.curated;
    report.rows_quarantined = c.quarantined;
    report.duplicates_superseded = c.superseded;
    report.tombstones = c.tombstones;
    report.masked_values = c.masked.clone();
    for column in &mut report.audit.columns {
        let count = |m: &BTreeMap<String, u64>| m.get(&column.column).copied().unwrap_or(0);
        column.curated = count(&c.masked.curated);
        column.quarantine = count(&c.masked.quarantine);
    }
    report.failures = c
        .failures
        .iter()
        .map(|((column, rule), rows)| RuleCount {
            column: column.to_string(),
            rule: rule.to_string(),
            rows: *rows,
        })
        .collect();
    for check in &mut report.references {
        check.orphans_kept = c
            .orphans_kept
            .get(check.column.as_str())
            .copied()
            .unwrap_or(0);
        check.orphans_quarantined = c
            .failures
            .get(&(
                Arc::from(check.column.as_str()),
                Arc::from(rule_name::FOREIGN_KEY),
            ))
            .copied()
            .unwrap_or(0);
    }
    report.orphans_kept = c.orphans_kept.values().sum();
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
