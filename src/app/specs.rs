//! Turning settings into a stage's specification: [`job_spec`] for stage 1 (raw → curated,
//! `validate`) and [`prod_spec`] for stage 2 (curated → prod), shared by the commands and by
//! `edp run`. Runtime policy that is not a setting lives here too: the development PII key
//! the local commands use (with a warning) when `pii_hash_key` is unset and `edp run` refuses,
//! where a foreign key's referenced dataset and contract are ([`references`]), the AWS Batch
//! array shard, and whether a progress bar is drawn.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::cli::Progress;
use crate::contract::{Contract, Pii};
use crate::settings::{Bytes, Setting, Settings};
use crate::source::{Carry, CsvOptions};
use crate::stage1::{JobSpec, ReferenceTarget, Replay, Shard, INDEX_BUDGET_SHARE};
use crate::stage2::catalog::CatalogMode;
use crate::stage2::ProdSpec;
use crate::{Error, Result};

/// Key used for `x-pii: hash` when PII_HASH_KEY is not set (development only; warned about).
const DEV_PII_KEY: &str = "edp-development-key-not-for-production";

/// Where a stage 1 job reads and writes, and what only the command line says.
pub struct JobTarget {
    pub inputs: Vec<String>,
    pub contract: PathBuf,
    /// Curated prefix; `None` for `validate` (writes nothing).
    pub output: Option<String>,
    /// Quarantine prefix; `None`: `<output>/_quarantine`.
    pub errors: Option<String>,
    /// `--shard`; `None`: AWS Batch's array environment, else the whole input.
    pub shard: Option<Shard>,
    pub progress: Progress,
    /// Refuse the development PII key (`edp run`, the production entry): a contract that hashes
    /// PII then needs `pii_hash_key`.
    pub production: bool,
    /// Curated prefixes of referenced datasets by name (`--reference DATASET=URL`).
    pub references: Vec<(String, String)>,
    /// Curated root whose `<dataset>-curated/` holds a referenced dataset not in `references`
    /// (`edp run`: the curated bucket under the key's prefix).
    pub reference_root: Option<String>,
    /// `edp replay`: the inputs are quarantine objects, whose protection record this is
    /// ([`crate::stage1::read_protection`]).
    pub replay: Option<String>,
}

/// The contract's foreign keys with their referenced datasets' locations: `--reference` first,
/// then `<reference_root>/<dataset>-curated`; the referenced contract is `<dataset>.json` beside
/// the job's contract, and must have the referenced column.
fn references(
    settings: &Settings,
    target: &JobTarget,
    contract: &Contract,
) -> Result<Vec<ReferenceTarget>> {
    let dir = target.contract.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for column in &contract.columns {
        let Some(reference) = &column.references else {
            continue;
        };
        let dataset = &reference.dataset;
        let url = target
            .references
            .iter()
            .find(|(d, _)| d == dataset)
            .map(|(_, u)| u.clone())
            .or_else(|| {
                target
                    .reference_root
                    .as_ref()
                    .map(|root| format!("{}/{dataset}-curated", root.trim_end_matches('/')))
            });
        let location = match url {
            Some(url) => {
                let path = dir.join(format!("{dataset}.json"));
                let referenced = Contract::from_path(&path).map_err(|e| {
                    Error::Config(format!(
                        "`{}` references {}: its contract {}: {e}",
                        column.name,
                        reference.target(),
                        path.display()
                    ))
                })?;
                if referenced.column(&reference.column).is_none() {
                    return Err(Error::Config(format!(
                        "`{}` references {}, which is not a column of contract {}",
                        column.name,
                        reference.target(),
                        path.display()
                    )));
                }
                Some((url, Arc::new(referenced)))
            }
            None => None,
        };
        out.push(ReferenceTarget {
            column: column.name.clone(),
            reference: reference.clone(),
            location,
            skip_missing: reference.skip_missing || !settings.references_required,
        });
    }
    for (dataset, _) in &target.references {
        if !out.iter().any(|r| &r.reference.dataset == dataset) {
            return Err(Error::Config(format!(
                "--reference {dataset}=…: contract {} references no column of `{dataset}`",
                target.contract.display()
            )));
        }
    }
    Ok(out)
}

/// The array-job shard from AWS Batch's environment, if any.
fn shard_from_env() -> Result<Option<Shard>> {
    match (
        std::env::var("AWS_BATCH_JOB_ARRAY_INDEX"),
        std::env::var("AWS_BATCH_JOB_ARRAY_SIZE"),
    ) {
        (Ok(i), Ok(n)) => Shard::parse(&format!("{i}/{n}"))
            .map(Some)
            .map_err(Error::Config),
        (Ok(_), Err(_)) => Err(Error::Config(
            "AWS_BATCH_JOB_ARRAY_INDEX is set but AWS_BATCH_JOB_ARRAY_SIZE is not".into(),
        )),
        _ => Ok(None),
    }
}

/// Whether to draw the progress bar: `auto` draws it only when stderr is a terminal.
fn draw_progress(progress: Progress) -> bool {
    match progress {
        Progress::Always => true,
        Progress::Never => false,
        Progress::Auto => std::io::stderr().is_terminal(),
    }
}

/// The scratch directory: `spill_dir`, else the system temp dir.
fn spill_dir(settings: &Settings) -> PathBuf {
    settings
        .spill_dir
        .clone()
        .unwrap_or_else(std::env::temp_dir)
}

/// The smallest `memory_limit` a job honours: below it, the fixed costs (decode and encode
/// buffers, row groups in flight, multipart parts, DataFusion's operators) exceed the limit.
pub const MIN_MEMORY_LIMIT: usize = 256 << 20;

/// The job's memory limit and its dedup index's budget (`index_memory`, else 1/32 of the
/// limit); a limit below [`MIN_MEMORY_LIMIT`] or an index budget over the limit is an error.
fn memory(settings: &Settings) -> Result<(usize, usize)> {
    let limit = settings.memory_limit.0;
    if limit < MIN_MEMORY_LIMIT {
        return Err(Error::Config(format!(
            "memory_limit {} is below the 256MiB a job needs; to make the dedup index spill \
             sooner, lower index_memory (--index-memory) instead",
            settings.memory_limit.show()
        )));
    }
    let index = settings
        .index_memory
        .map_or(limit / INDEX_BUDGET_SHARE, |b| b.0);
    if index > limit / 2 {
        return Err(Error::Config(format!(
            "index_memory {} is over half of memory_limit {}",
            Bytes(index).show(),
            settings.memory_limit.show()
        )));
    }
    Ok((limit, index))
}

/// The CSV dialect of the settings; a delimiter that is not one ASCII character other than a
/// quote or a line break is an error.
pub(crate) fn csv_options(settings: &Settings) -> Result<CsvOptions> {
    let delimiter = match settings.csv_delimiter.as_bytes() {
        [b] if b.is_ascii() && !matches!(b, b'"' | b'\n' | b'\r') => *b,
        _ => {
            return Err(Error::Config(format!(
                "csv_delimiter `{}` is not one ASCII character other than a quote or a line \
                 break",
                settings.csv_delimiter.escape_debug()
            )))
        }
    };
    Ok(CsvOptions {
        delimiter,
        null_value: settings.csv_null_value.clone(),
        header: settings.csv_header,
        timestamp_column: settings.csv_timestamp_column.clone(),
    })
}

/// What `edp replay` carries, after checking that replaying under `contract` is sound: the
/// quarantine's recorded protection is the contract's (protected values cannot be checked or
/// protected differently), rows are validated, a keyed contract orders versions by event time
/// (stage 2 would otherwise order released rows by path), and every foreign key is checked
/// (orphans must not be released unchecked).
fn replay(
    settings: &Settings,
    target: &JobTarget,
    contract: &Contract,
    recorded: &str,
    references: &mut [ReferenceTarget],
) -> Result<Replay> {
    let file = target.contract.display();
    let was: BTreeMap<String, String> = serde_json::from_str(recorded)
        .map_err(|e| Error::Config(format!("the quarantine's protection record: {e}")))?;
    let now = contract.protection(settings.pci_dss_enabled);
    if was != now {
        return Err(Error::Config(format!(
            "the quarantine's values were protected as {recorded}, contract {file} (with \
             pci_dss_enabled {}) protects {}: replay cannot change how a column is protected \
             (run stage 1 again from the raw data)",
            settings.pci_dss_enabled,
            serde_json::to_string(&now).unwrap_or_default()
        )));
    }
    if !settings.validation_enabled {
        return Err(Error::Config(
            "replay with validation off would release every quarantined row unchecked".into(),
        ));
    }
    if !contract.primary_key.is_empty() && contract.event_time.is_none() {
        return Err(Error::Config(format!(
            "contract {file} has a primary key but no x-event-time: released rows would be \
             ordered against the curated ones by object path"
        )));
    }
    for r in references.iter_mut() {
        if r.location.is_none() {
            return Err(Error::Config(format!(
                "`{}` references {}: replay checks foreign keys again, pass --reference {}=URL",
                r.column,
                r.reference.target(),
                r.reference.dataset
            )));
        }
        r.skip_missing = false;
    }
    Ok(Replay {
        carry: Arc::new(Carry {
            pairs: contract.protected_value_rules(),
            rules: crate::contract::rule_name::DECODING.to_vec(),
        }),
        protection: recorded.to_string(),
    })
}

/// A stage 1 job from the settings and its target; reads the contract.
pub fn job_spec(
    settings: &Settings,
    target: JobTarget,
    interrupted: Arc<AtomicBool>,
) -> Result<JobSpec> {
    let (memory_limit, index_memory) = memory(settings)?;
    let mut contract = Contract::from_path(&target.contract)?;
    let mut references = references(settings, &target, &contract)?;
    let replay = match &target.replay {
        Some(recorded) => {
            let replay = replay(settings, &target, &contract, recorded, &mut references)?;
            contract = contract.for_replay();
            Some(Arc::new(replay))
        }
        None => None,
    };
    if !settings.pci_dss_enabled {
        tracing::warn!("PCI DSS protection is OFF: card numbers will be written unmasked. Never do this with real card data.");
    }
    let needs_key = contract.columns.iter().any(|c| c.pii == Some(Pii::Hash));
    let (pii_key, pii_key_development) = match &settings.pii_hash_key {
        Some(k) if !k.is_empty() => (k.clone().into_bytes(), false),
        _ if needs_key && target.production => {
            return Err(Error::Config(format!(
                "the contract {} hashes PII (x-pii: hash) and PII_HASH_KEY is not set: `edp run` \
                 refuses the built-in development key, whose tokens anyone with the source can \
                 reverse by dictionary; set PII_HASH_KEY (the deploy template reads it from \
                 Secrets Manager)",
                target.contract.display()
            )))
        }
        _ => {
            if needs_key {
                tracing::warn!("PII_HASH_KEY is not set: hashing PII with the built-in development key; set PII_HASH_KEY in production");
            }
            (DEV_PII_KEY.as_bytes().to_vec(), true)
        }
    };
    Ok(JobSpec {
        inputs: target.inputs,
        output: target.output,
        errors: target.errors,
        contract: Arc::new(contract),
        csv: csv_options(settings)?,
        batch_size: settings.batch_size,
        read_ahead: settings.read_ahead,
        codec: settings.compression,
        pci_enabled: settings.pci_dss_enabled,
        validation_enabled: settings.validation_enabled,
        deduplication_enabled: settings.deduplication_enabled,
        pii_key,
        pii_key_development,
        progress: draw_progress(target.progress),
        memory_limit,
        index_memory,
        spill_dir: spill_dir(settings),
        references,
        shard: match target.shard {
            Some(s) => s,
            None => shard_from_env()?.unwrap_or(Shard::ALL),
        },
        interrupted,
        replay,
    })
}

/// A stage 2 run from the settings: `curated` and `output` roots, the models `only` (empty:
/// all) or those reading `dataset` (`edp run` on a curated object).
pub fn prod_spec(
    settings: &Settings,
    curated: String,
    output: String,
    only: Vec<String>,
    dataset: Option<String>,
    interrupted: Arc<AtomicBool>,
) -> Result<ProdSpec> {
    let (memory_limit, index_memory) = memory(settings)?;
    Ok(ProdSpec {
        curated,
        output,
        models_dir: settings.models_dir.clone(),
        contracts_dir: settings.contracts_dir.clone(),
        only,
        dataset,
        memory_limit,
        index_memory,
        spill_dir: spill_dir(settings),
        batch_size: settings.batch_size.get(),
        codec: settings.prod_compression,
        target_file_size: settings.target_file_size.0 as u64,
        catalog: CatalogMode::new(settings.catalog, settings.glue_crawler.as_deref())?,
        database: settings.glue_database.clone(),
        interrupted,
    })
}

/// The contract of `dataset` in the contracts directory.
pub fn contract_path(settings: &Settings, dataset: &str) -> PathBuf {
    Path::new(&settings.contracts_dir).join(format!("{dataset}.json"))
}
