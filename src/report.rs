//! The run report: what came in, where every row went and why, and the conservation check.
//!
//! Conservation: `rows_in = rows_curated + rows_quarantined + duplicates_superseded`. Tombstones
//! are curated rows (deletes kept so later stages can apply them) and are counted inside
//! `rows_curated` as well as on their own. A run whose report does not balance fails.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::output::OutputStats;
use crate::{Error, Result};

/// One input object.
#[derive(Debug, Clone, Serialize)]
pub struct InputStats {
    pub url: String,
    pub rows: u64,
    pub bytes: u64,
}

/// Rows that broke one rule on one column.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct RuleCount {
    pub column: String,
    pub rule: String,
    pub rows: u64,
}

/// Time spent per stage, in milliseconds, summed over the threads that did the work. Stages
/// run in parallel and overlap with fetching, so they need not add up to `total`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StageTimes {
    /// Waiting for row groups to arrive from storage.
    pub read_wait_ms: u64,
    /// Decoding Parquet pages into Arrow.
    pub decode_ms: u64,
    pub validate_ms: u64,
    pub dedup_ms: u64,
    pub protect_ms: u64,
    /// Encoding and uploading outputs.
    pub write_ms: u64,
    pub total_ms: u64,
}

/// Durations accumulated while the job runs.
#[derive(Debug, Clone, Default)]
pub struct Timers {
    pub read_wait: Duration,
    pub decode: Duration,
    pub validate: Duration,
    pub dedup: Duration,
    pub protect: Duration,
    pub write: Duration,
}

impl Timers {
    /// Adds another thread's durations.
    pub fn add(&mut self, other: &Timers) {
        self.read_wait += other.read_wait;
        self.decode += other.decode;
        self.validate += other.validate;
        self.dedup += other.dedup;
        self.protect += other.protect;
        self.write += other.write;
    }

    /// Milliseconds per stage, with the job's total.
    pub fn to_stage_times(&self, total: Duration) -> StageTimes {
        let ms = |d: Duration| d.as_millis() as u64;
        StageTimes {
            read_wait_ms: ms(self.read_wait),
            decode_ms: ms(self.decode),
            validate_ms: ms(self.validate),
            dedup_ms: ms(self.dedup),
            protect_ms: ms(self.protect),
            write_ms: ms(self.write),
            total_ms: ms(total),
        }
    }
}

/// The conservation check as recorded in the report.
#[derive(Debug, Clone, Serialize)]
pub struct Conservation {
    pub holds: bool,
    pub equation: String,
}

/// Values changed by protection, per output and column.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Masked {
    pub curated: BTreeMap<String, u64>,
    pub quarantine: BTreeMap<String, u64>,
}

impl Masked {
    /// Adds another tally of masked values.
    pub fn add(&mut self, other: Masked) {
        for (into, from) in [
            (&mut self.curated, other.curated),
            (&mut self.quarantine, other.quarantine),
        ] {
            for (col, n) in from {
                *into.entry(col).or_default() += n;
            }
        }
    }
}

/// The protection audit: how each protected column was transformed, how many values, and
/// under which key (by id, never the key).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Audit {
    /// The key of `x-pii: hash`, when a column is hashed.
    pub pii_key: Option<KeyAudit>,
    /// Per protected column, in schema order.
    pub columns: Vec<ColumnAudit>,
}

/// The PII hash key, by id.
#[derive(Debug, Clone, Serialize)]
pub struct KeyAudit {
    /// The first 16 hex digits of the HMAC of `edp-pii-key-id` under the key: the same for
    /// one key in every run, and revealing nothing of it.
    pub id: String,
    /// True for the built-in development key (local commands without `PII_HASH_KEY`).
    pub development: bool,
}

/// One foreign key (`x-references`) of the run.
#[derive(Debug, Clone, Serialize)]
pub struct ReferenceCheck {
    /// The referencing column.
    pub column: String,
    /// `dataset.column`.
    pub references: String,
    /// The referenced dataset's curated prefix; `None` when none was given.
    pub location: Option<String>,
    /// `quarantine` or `keep`.
    pub orphans: &'static str,
    pub status: ReferenceStatus,
    /// Why a check was skipped.
    pub reason: Option<String>,
    /// Curated objects of the referenced dataset read.
    pub objects: usize,
    /// Distinct keys of its current state.
    pub keys: u64,
    /// Rows quarantined under rule `foreign_key` for this column.
    pub orphans_quarantined: u64,
    /// Curated rows whose value references nothing (`orphans: keep`).
    pub orphans_kept: u64,
}

/// Whether a foreign key was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferenceStatus {
    Checked,
    Skipped,
}

/// How a protected column is transformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transform {
    /// An `x-pci: pan` column: card numbers masked to their last four digits.
    PanMask,
    /// Any other column that can hold text: card numbers found in it masked.
    CardScan,
    Hash,
    Mask,
    Redact,
}

/// One protected column.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnAudit {
    pub column: String,
    pub transform: Transform,
    /// Values changed in curated and in quarantine.
    pub curated: u64,
    pub quarantine: u64,
}

/// The JSON run report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub edp_version: &'static str,
    pub command: String,
    pub dataset: String,
    pub contract: String,
    /// `INDEX/COUNT` of an array job; `0/1` when unsharded.
    pub shard: String,
    pub pci_dss_enabled: bool,
    pub inputs: Vec<InputStats>,
    pub curated: Option<OutputStats>,
    pub quarantine: Option<OutputStats>,
    pub rows_in: u64,
    pub rows_curated: u64,
    pub rows_quarantined: u64,
    pub duplicates_superseded: u64,
    /// Keys whose latest version failed validation and whose curated row is an earlier valid
    /// version (counted in `rows_curated`).
    pub earlier_valid_versions: u64,
    pub tombstones: u64,
    /// Dedup index entries written to spill files (0 when the index fit its budget).
    pub dedup_spilled_entries: u64,
    /// Rows failing each (column, rule); a row breaking two rules counts under both.
    pub failures: Vec<RuleCount>,
    /// The contract's foreign keys: checked or skipped (and why), keys, orphans.
    pub references: Vec<ReferenceCheck>,
    /// Curated rows whose foreign key (`orphans: keep`) references no current key.
    pub orphans_kept: u64,
    pub masked_values: Masked,
    pub audit: Audit,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub durations: StageTimes,
    pub rows_per_second: f64,
    pub conservation: Conservation,
}

impl Report {
    /// Computes the conservation check, failing when the counts do not balance.
    pub fn check_conservation(&mut self) -> Result<()> {
        let accounted = self.rows_curated + self.rows_quarantined + self.duplicates_superseded;
        let holds = accounted == self.rows_in;
        self.conservation = Conservation {
            holds,
            equation: format!(
                "rows_in {} {} rows_curated {} + rows_quarantined {} + duplicates_superseded {} = {}",
                self.rows_in,
                if holds { "=" } else { "!=" },
                self.rows_curated,
                self.rows_quarantined,
                self.duplicates_superseded,
                accounted
            ),
        };
        if holds {
            Ok(())
        } else {
            Err(Error::Conservation(self.conservation.equation.clone()))
        }
    }

    /// A few human lines for stderr: counts with thousands separators, the rate as `1.2M rows/s`.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} {}: {} rows in, {} curated ({} tombstones), {} quarantined, {} duplicates superseded; {} in {:.2} s\n",
            self.command,
            self.dataset,
            thousands(self.rows_in),
            thousands(self.rows_curated),
            thousands(self.tombstones),
            thousands(self.rows_quarantined),
            thousands(self.duplicates_superseded),
            rate(self.rows_per_second),
            self.durations.total_ms as f64 / 1000.0,
        );
        for f in self.failures.iter().take(10) {
            s.push_str(&format!(
                "  {} {}: {} rows\n",
                f.column,
                f.rule,
                thousands(f.rows)
            ));
        }
        if self.failures.len() > 10 {
            s.push_str(&format!(
                "  … and {} more rules\n",
                self.failures.len() - 10
            ));
        }
        let masked: u64 = self.masked_values.curated.values().sum::<u64>()
            + self.masked_values.quarantine.values().sum::<u64>();
        s.push_str(&format!("  protected values: {}\n", thousands(masked)));
        s.push_str(&format!("  conservation: {}\n", self.conservation.equation));
        if let Some(c) = &self.curated {
            s.push_str(&format!(
                "  curated:    {} ({} rows)\n",
                c.url,
                thousands(c.rows)
            ));
        }
        if let Some(q) = &self.quarantine {
            s.push_str(&format!(
                "  quarantine: {} ({} rows)\n",
                q.url,
                thousands(q.rows)
            ));
        }
        s
    }
}

/// A rate of rows per second as people read it: `950 rows/s`, `12.3k rows/s`, `1.2M rows/s`.
pub fn rate(per_second: f64) -> String {
    match per_second {
        r if r >= 1e6 => format!("{:.1}M rows/s", r / 1e6),
        r if r >= 1e3 => format!("{:.1}k rows/s", r / 1e3),
        r => format!("{r:.0} rows/s"),
    }
}

/// `n` with thousands separators: `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_rates_read_as_people_write_them() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(6_000_000), "6,000,000");
        assert_eq!(rate(950.4), "950 rows/s");
        assert_eq!(rate(12_345.0), "12.3k rows/s");
        assert_eq!(rate(4_540_334.017_4), "4.5M rows/s");
    }
}
