//! What a stage 1 run is given: the validated [`JobSpec`] with its foreign keys
//! ([`ReferenceTarget`]), its [`Shard`] of an array job, the dedup index's and the key sets'
//! shares of the memory limit and the default quarantine directory's name. The
//! defaults of the settings behind a spec are the settings' ([`crate::settings`]).

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::contract::{Contract, Reference};
use crate::output::Codec;
use crate::source::{Carry, CsvOptions};

/// The dedup index's default share of the memory limit (1/32: spilling is sequential and
/// cheap).
pub const INDEX_BUDGET_SHARE: usize = 32;
/// The foreign keys' key sets' share of the memory limit (1/8: 32M integer keys at the default
/// 2 GiB).
pub const REFERENCE_BUDGET_SHARE: usize = 8;
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

    pub(super) fn owns(&self, hash: u64) -> bool {
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

impl Shard {
    /// The shard count of an output object `name` edp writes ([`Shard::part_name`],
    /// [`Shard::report_name`]): 1 for `part-00000.parquet` and `_edp_report.json`, COUNT for
    /// `…-IIIII-of-CCCCC…`; `None` for any other name.
    pub fn count_of(name: &str) -> Option<u32> {
        if name == "part-00000.parquet" || name == "_edp_report.json" {
            return Some(1);
        }
        let rest = name
            .strip_prefix("part-")
            .and_then(|r| r.strip_suffix(".parquet"))
            .or_else(|| {
                name.strip_prefix("_edp_report-")
                    .and_then(|r| r.strip_suffix(".json"))
            })?;
        let (index, count) = rest.split_once("-of-")?;
        let digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(index) || !digits(count) {
            return None;
        }
        count.parse().ok()
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// A foreign key of the contract and where its referenced dataset is.
#[derive(Debug, Clone)]
pub struct ReferenceTarget {
    /// The referencing column.
    pub column: String,
    pub reference: Reference,
    /// The referenced dataset's curated prefix and contract; `None` when no location was
    /// given (a local run without `--reference`): the check is skipped and reported so.
    pub location: Option<(String, Arc<Contract>)>,
    /// Skip the check (and report it) when the referenced dataset has no curated objects: the
    /// contract's `missing: skip`, or `references_required` false.
    pub skip_missing: bool,
}

/// What `edp replay` carries from the quarantine it reads.
#[derive(Debug)]
pub struct Replay {
    /// The recorded failures that still hold.
    pub carry: Arc<Carry>,
    /// The protection its values carry ([`Contract::protection`] of the run that quarantined
    /// them), recorded again in the replay's own quarantine.
    pub protection: String,
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
    /// How CSV inputs are read.
    pub csv: CsvOptions,
    pub batch_size: NonZeroUsize,
    pub read_ahead: usize,
    pub codec: Codec,
    pub pci_enabled: bool,
    /// Check row rules (file-level checks always run).
    pub validation_enabled: bool,
    /// Keep only the latest version per primary key.
    pub deduplication_enabled: bool,
    pub pii_key: Vec<u8>,
    /// `pii_key` is the built-in development key (named so in the audit).
    pub pii_key_development: bool,
    pub progress: bool,
    /// Bytes the whole job may use (see the module docs for how it is shared).
    pub memory_limit: usize,
    /// Bytes the dedup index holds before it spills (by default [`INDEX_BUDGET_SHARE`] of
    /// the limit).
    pub index_memory: usize,
    /// Where the dedup index spills.
    pub spill_dir: PathBuf,
    /// The contract's foreign keys, checked when validating.
    pub references: Vec<ReferenceTarget>,
    pub shard: Shard,
    /// Set by a signal handler: the job stops at the next row group and aborts its outputs.
    pub interrupted: Arc<AtomicBool>,
    /// `edp replay`: the inputs are quarantine objects (their `_edp_` columns hidden) and
    /// `contract` is [`Contract::for_replay`].
    pub replay: Option<Arc<Replay>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_names_tell_their_shard_count() {
        for shard in [Shard::ALL, Shard { index: 3, count: 4 }] {
            assert_eq!(Shard::count_of(&shard.part_name()), Some(shard.count));
            assert_eq!(Shard::count_of(&shard.report_name()), Some(shard.count));
        }
        assert_eq!(Shard::count_of("part-00001-of-00002.parquet"), Some(2));
        assert_eq!(Shard::count_of("part-00001.parquet"), None);
        assert_eq!(Shard::count_of("part-1-of-2.parquet"), None);
        assert_eq!(Shard::count_of("notes.json"), None);
        assert_eq!(Shard::count_of("_edp_report-00000-of-0000x.json"), None);
    }
}
