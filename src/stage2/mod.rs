//! Stage 2, curated → prod: SQL models over the current state of every dataset, written as
//! Athena-ready Parquet with Hive date partitions, then the catalog updated.
//!
//! A run has three phases, so that a mistake costs nothing and a failure publishes nothing:
//!
//! 1. **Plan** (no data read): contracts and curated footers give each dataset's schema; every
//!    model and check is parsed ([`model`]), ordered by the tables it reads (a model may read
//!    earlier models), and planned by DataFusion against empty tables of those schemas. An
//!    unknown table or column is a configuration error naming the file and line.
//! 2. **Stage**: each dataset's current state is built into a local scratch file ([`state`]:
//!    stage 1's dedup index over curated objects), registered under the dataset's name; each
//!    model runs on DataFusion (memory pool of half `--memory-limit`, sorts and aggregations
//!    spill; hash joins, which cannot spill, fall back to sort-merge joins when the pool cannot
//!    hold a build side, see [`with_join_fallback`]), its sorted stream is written partition by
//!    partition to local staging files ([`write`]), and teed into a scratch table when a later
//!    model or check reads it, so no model runs twice. Checks run last; their rows form the
//!    `dq_violations` table.
//! 3. **Publish**: changed files are uploaded, stale ones removed, per model; then the catalog
//!    is updated ([`catalog`]) and the report written beside the outputs.
//!
//! This module must not know Parquet encoding details (that is [`write`]) nor Glue's API
//! ([`catalog`]); stage 1's modules are used only through the dedup index and the source.

pub mod catalog;
pub mod model;
pub mod state;
pub mod write;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{
    cast, ident, lit, DataFrame, ParquetReadOptions, SessionConfig, SessionContext,
};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ArrowReaderMetadata;
use parquet::arrow::ArrowWriter;
use sha2::{Digest, Sha256};

use crate::contract::Contract;
use crate::dedup::SpillConfig;
use crate::sink::Codec;
use crate::source::InputObject;
use crate::store::{store_error, Location};
use crate::{Error, Result};
use catalog::{CatalogMode, CatalogStats, TableDef};
use model::{Granularity, Model};
use state::StateStats;
use write::{ModelWriter, Published, Staged, WriteOptions};

/// Name of the checks' output table.
pub const VIOLATIONS_TABLE: &str = "dq_violations";
/// The report's name under the output.
pub const REPORT: &str = "_edp_prod_report.json";
/// Share of the memory limit given to the dedup index while current state is built.
const INDEX_BUDGET_SHARE: usize = 32;
/// Default `--target-file-size`.
pub const DEFAULT_TARGET_FILE_SIZE: u64 = 256 << 20;

/// Everything a stage 2 run needs.
#[derive(Debug, Clone)]
pub struct ProdSpec {
    /// Curated root: `<dataset>-curated/` (as `edp run` lays it out) or `<dataset>/` below it.
    pub curated: String,
    /// Prod root: `<output>/<model>/…`.
    pub output: String,
    pub models_dir: PathBuf,
    pub contracts_dir: PathBuf,
    /// Run only these models (and the models they read); empty: all.
    pub only: Vec<String>,
    /// Run only the models that read this dataset, directly or through other models.
    pub dataset: Option<String>,
    pub memory_limit: usize,
    pub spill_dir: PathBuf,
    pub batch_size: usize,
    pub codec: Codec,
    pub target_file_size: u64,
    pub catalog: CatalogMode,
    pub database: String,
    pub interrupted: Arc<AtomicBool>,
}

/// One model's lines in the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelReport {
    pub model: String,
    pub rows: u64,
    pub granularity: Granularity,
    /// Rows per partition directory (`year=2025/month=01/day=16`; `""` unpartitioned).
    pub partitions: BTreeMap<String, u64>,
    pub files: usize,
    pub bytes: u64,
    #[serde(flatten)]
    pub published: Published,
    pub duration_ms: u64,
}

/// One check's line in the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckReport {
    pub check: String,
    pub violations: u64,
    pub duration_ms: u64,
}

/// The stage 2 run report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProdReport {
    pub edp_version: &'static str,
    pub command: &'static str,
    /// Hash of the curated objects and the model files: the same inputs give the same id.
    pub run_id: String,
    pub curated: String,
    pub output: String,
    pub datasets: Vec<StateStats>,
    pub models: Vec<ModelReport>,
    pub checks: Vec<CheckReport>,
    pub violations: u64,
    pub catalog: CatalogReport,
    pub durations: Durations,
}

/// What the catalog update did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CatalogReport {
    pub mode: String,
    pub database: String,
    pub tables: usize,
    pub partitions_added: usize,
    pub partitions_removed: usize,
}

/// Milliseconds per phase.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Durations {
    pub plan_ms: u64,
    pub state_ms: u64,
    pub models_ms: u64,
    pub checks_ms: u64,
    pub publish_ms: u64,
    pub catalog_ms: u64,
    pub total_ms: u64,
}

impl ProdReport {
    /// A few lines for stderr.
    pub fn summary(&self) -> String {
        let n = crate::report::thousands;
        let mut out = format!("stage 2 run {} → {}\n", self.run_id, self.output);
        for d in &self.datasets {
            out += &format!(
                "  {:<12} {} current rows of {} read from {} objects ({} deleted)\n",
                d.dataset,
                n(d.rows_current),
                n(d.rows_read),
                d.objects,
                n(d.deleted)
            );
        }
        for m in &self.models {
            out += &format!(
                "  {:<24} {} rows, {} partitions ({} written, {} unchanged, {} removed), {} ms\n",
                m.model,
                n(m.rows),
                m.partitions.len(),
                m.published.partitions_written.len(),
                m.published.partitions_unchanged.len(),
                m.published.partitions_removed.len(),
                m.duration_ms
            );
        }
        for c in &self.checks {
            out += &format!("  check {:<30} {} violations\n", c.check, n(c.violations));
        }
        out += &format!(
            "  catalog {}: {} tables, {} partitions added, {} removed; total {} ms\n",
            self.catalog.mode,
            self.catalog.tables,
            self.catalog.partitions_added,
            self.catalog.partitions_removed,
            self.durations.total_ms
        );
        out
    }
}

fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

/// Every contract (`*.json`) of `dir`, by dataset.
fn load_contracts(dir: &Path) -> Result<BTreeMap<String, Contract>> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Error::Config(format!(
            "contracts directory {}: cannot read: {e}",
            dir.display()
        ))
    })?;
    let mut out = BTreeMap::new();
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        if path.extension().is_some_and(|x| x == "json") {
            let contract = Contract::from_path(&path)?;
            out.insert(contract.dataset.clone(), contract);
        }
    }
    Ok(out)
}

/// The curated objects of `dataset` below `root`, in object order (path order): every
/// `.parquet` object under `<dataset>-curated/` or else `<dataset>/`, except below a segment
/// starting with `_` or `.` (quarantine, reports, temporary directories).
async fn curated_objects(root: &Location, dataset: &str) -> Result<Vec<InputObject>> {
    for dir in [format!("{dataset}-curated"), dataset.to_string()] {
        let loc = root.child(&dir);
        let base = loc.path.as_ref().to_string();
        let metas: Vec<object_store::ObjectMeta> = loc
            .store
            .list(Some(&loc.path))
            .try_collect()
            .await
            .or_else(|e| match e {
                object_store::Error::NotFound { .. } => Ok(Vec::new()),
                e => Err(store_error(&loc.url, e)),
            })?;
        let mut objects: Vec<InputObject> = metas
            .into_iter()
            .filter(|m| {
                let rel = m.location.as_ref().strip_prefix(&base).unwrap_or("");
                rel.ends_with(".parquet")
                    && !rel
                        .split('/')
                        .any(|s| s.starts_with('_') || s.starts_with('.'))
            })
            .map(|m| InputObject {
                size: m.size,
                location: loc.at(m.location),
            })
            .collect();
        if !objects.is_empty() {
            objects.sort_by(|a, b| a.location.path.as_ref().cmp(b.location.path.as_ref()));
            return Ok(objects);
        }
    }
    Ok(Vec::new())
}

/// A DataFusion error of `model` as edp's: planning errors are configuration errors naming the
/// file and line (from DataFusion's spans, else the first line naming the missing identifier).
fn plan_error(model: &Model, e: DataFusionError) -> Error {
    let root = e.find_root();
    let message = e
        .diagnostic()
        .map(|d| d.message.clone())
        .unwrap_or_else(|| root.message().into_owned());
    let line = e
        .diagnostic()
        .and_then(|d| d.span)
        .map(|s| s.start.line as usize)
        .filter(|&l| l > 0)
        .or_else(|| {
            message
                .split(['\'', '"', '`'])
                .nth(1)
                .and_then(|name| model.line_of(name.rsplit('.').next().unwrap_or(name)))
        });
    match line {
        Some(line) => Error::Config(format!("model {}: line {line}: {message}", model.file())),
        None => Error::Config(format!("model {}: {message}", model.file())),
    }
}

/// How a query error's message starts when the memory pool could not hold an operator that
/// cannot spill (a hash join's build side): the model is then run again with sort-merge joins.
const EXHAUSTED: &str = "resources exhausted: ";

fn query_error(model: &Model, e: DataFusionError) -> Error {
    let root = e.find_root();
    let prefix = if matches!(root, DataFusionError::ResourcesExhausted(_)) {
        EXHAUSTED
    } else {
        ""
    };
    Error::Query {
        model: model.file(),
        message: format!("{prefix}{}", root.message()),
    }
}

fn exhausted(e: &Error) -> bool {
    matches!(e, Error::Query { message, .. } if message.starts_with(EXHAUSTED))
}

/// Switches the session to plans that stay within the pool: sort-merge joins, which spill
/// (DataFusion plans them only with more than one target partition, so that stays as it is).
async fn low_memory_plans(ctx: &SessionContext) -> datafusion::error::Result<()> {
    ctx.sql("SET datafusion.optimizer.prefer_hash_join = false")
        .await?;
    ctx.sql("SET datafusion.execution.target_partitions = 1")
        .await?;
    Ok(())
}

/// Runs `f` (one model or check) with hash joins, and once more with sort-merge joins if the
/// memory pool could not hold an operator (a hash join's build side cannot spill in DataFusion
/// 55) with [`low_memory_plans`]: sort-merge joins, which spill. They stay on
/// for the rest of the run once needed.
async fn with_join_fallback<T, F, Fut>(ctx: &SessionContext, m: &Model, f: F) -> Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    match f().await {
        Err(e) if exhausted(&e) => {
            tracing::warn!(model = %m.name, "{e}: running it again with sort-merge joins, which spill");
            low_memory_plans(ctx).await.map_err(|e| query_error(m, e))?;
            f().await
        }
        other => other,
    }
}

/// The tables `model` reads.
fn references(ctx: &SessionContext, model: &Model) -> Result<Vec<String>> {
    let state = ctx.state();
    let dialect = state.config().options().sql_parser.dialect;
    let stmt = state
        .sql_to_statement(&model.sql, &dialect)
        .map_err(|e| plan_error(model, e))?;
    Ok(state
        .resolve_table_references(&stmt)
        .map_err(|e| plan_error(model, e))?
        .iter()
        .map(|t| t.table().to_string())
        .collect())
}

/// `models` ordered so that each comes after the models it reads; a cycle is an error.
fn dependency_order(models: Vec<(Model, Vec<String>)>) -> Result<Vec<(Model, Vec<String>)>> {
    let names: BTreeSet<String> = models.iter().map(|(m, _)| m.name.clone()).collect();
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut pending = models;
    let mut out = Vec::new();
    while !pending.is_empty() {
        let (ready, rest): (Vec<_>, Vec<_>) = pending
            .into_iter()
            .partition(|(_, refs)| refs.iter().all(|r| !names.contains(r) || done.contains(r)));
        if ready.is_empty() {
            let stuck: Vec<String> = rest.iter().map(|(m, _)| m.file()).collect();
            return Err(Error::Config(format!(
                "models read each other in a cycle: {}",
                stuck.join(", ")
            )));
        }
        for (m, refs) in ready {
            done.insert(m.name.clone());
            out.push((m, refs));
        }
        pending = rest;
    }
    Ok(out)
}

fn session(spec: &ProdSpec) -> Result<SessionContext> {
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(spec.memory_limit / 2)))
        .with_disk_manager_builder(
            DiskManagerBuilder::default()
                .with_mode(DiskManagerMode::Directories(vec![spec.spill_dir.clone()])),
        )
        .build_arc()
        .map_err(|e| Error::Config(format!("query engine: {e}")))?;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let config = SessionConfig::new()
        .with_batch_size(spec.batch_size)
        .with_target_partitions(cores)
        .set_usize(
            "datafusion.execution.sort_spill_reservation_bytes",
            (spec.memory_limit / 2 / 64).clamp(256 << 10, 10 << 20),
        )
        .set_bool("datafusion.sql_parser.collect_spans", true)
        .set_bool("datafusion.sql_parser.map_string_types_to_utf8view", false)
        .set_bool(
            "datafusion.execution.parquet.schema_force_view_types",
            false,
        );
    Ok(SessionContext::new_with_config_rt(config, runtime))
}

fn register_empty(ctx: &SessionContext, name: &str, schema: SchemaRef) -> Result<()> {
    let table = MemTable::try_new(schema, vec![vec![]])
        .map_err(|e| Error::Internal(format!("empty table {name}: {e}")))?;
    ctx.deregister_table(name)
        .and_then(|_| ctx.register_table(name, Arc::new(table)))
        .map_err(|e| Error::Internal(format!("table {name}: {e}")))?;
    Ok(())
}

/// A model or check checked against its result schema: its settings name existing columns, the
/// partition column is a date; a check has `keys`, `observed` and `expected`.
fn check_settings(m: &Model, schema: &SchemaRef, is_check: bool) -> Result<()> {
    let missing = |c: &str| schema.index_of(c).is_err();
    let named = if is_check {
        vec!["keys".to_string(), "observed".into(), "expected".into()]
    } else {
        m.order()
    };
    if let Some(c) = named.iter().find(|c| missing(c)) {
        let what = if is_check {
            "a check must select"
        } else {
            "a setting names"
        };
        return Err(Error::Config(format!(
            "model {}: {what} column `{c}`, which is not in the result (columns: {})",
            m.file(),
            schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if let Some(p) = &m.partition_by {
        let dt = schema.field_with_name(p).map(|f| f.data_type().clone());
        if !matches!(
            dt,
            Ok(DataType::Date32 | DataType::Date64 | DataType::Timestamp(_, _))
        ) {
            return Err(Error::Config(format!(
                "model {}: partition_by column `{p}` must be a DATE or TIMESTAMP",
                m.file()
            )));
        }
    }
    Ok(())
}

/// A planned run: what to build, in order.
struct Plan {
    models: Vec<(Model, SchemaRef)>,
    checks: Vec<(Model, SchemaRef)>,
    /// Datasets some model or check reads.
    datasets: BTreeSet<String>,
    /// Models some later model or check reads (teed into scratch tables).
    read_later: BTreeSet<String>,
}

/// Phase 1: plans every model and check against empty tables of `schemas` (no data read).
async fn plan(
    ctx: &SessionContext,
    spec: &ProdSpec,
    schemas: &BTreeMap<String, SchemaRef>,
) -> Result<Plan> {
    let models = model::load_dir(&spec.models_dir, false)?;
    if models.is_empty() {
        return Err(Error::Config(format!(
            "models directory {}: no *.sql model files",
            spec.models_dir.display()
        )));
    }
    let checks = model::load_dir(&spec.models_dir.join("checks"), true)?;
    for (name, schema) in schemas {
        register_empty(ctx, name, schema.clone())?;
    }
    let mut with_refs = Vec::new();
    for m in models {
        let refs = references(ctx, &m)?;
        if schemas.contains_key(&m.name) || m.name == VIOLATIONS_TABLE {
            return Err(Error::Config(format!(
                "model {}: the name `{}` is taken by a dataset or the checks' table",
                m.file(),
                m.name
            )));
        }
        with_refs.push((m, refs));
    }
    let ordered = dependency_order(with_refs)?;
    let by_name: BTreeMap<String, Vec<String>> = ordered
        .iter()
        .map(|(m, r)| (m.name.clone(), r.clone()))
        .collect();
    for name in &spec.only {
        if !by_name.contains_key(name) {
            return Err(Error::Config(format!(
                "--model {name}: no such model in {} (models: {})",
                spec.models_dir.display(),
                by_name.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
    }
    // What the selection needs: the chosen models and, transitively, the models they read.
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    let mut reads_dataset: BTreeSet<String> = BTreeSet::new();
    for (m, refs) in &ordered {
        let chosen = match (&spec.dataset, spec.only.is_empty()) {
            (Some(d), _) => refs.contains(d) || refs.iter().any(|r| reads_dataset.contains(r)),
            (None, true) => true,
            (None, false) => spec.only.contains(&m.name),
        };
        if chosen {
            reads_dataset.insert(m.name.clone());
        }
    }
    let mut stack: Vec<String> = reads_dataset.iter().cloned().collect();
    while let Some(name) = stack.pop() {
        if wanted.insert(name.clone()) {
            stack.extend(
                by_name[&name]
                    .iter()
                    .filter(|r| by_name.contains_key(*r))
                    .cloned(),
            );
        }
    }
    let mut out = Plan {
        models: Vec::new(),
        checks: Vec::new(),
        datasets: BTreeSet::new(),
        read_later: BTreeSet::new(),
    };
    let available =
        |t: &String, planned: &BTreeSet<String>| schemas.contains_key(t) || planned.contains(t);
    let mut planned: BTreeSet<String> = BTreeSet::new();
    for (m, refs) in ordered
        .into_iter()
        .filter(|(m, _)| wanted.contains(&m.name))
    {
        let schema = plan_one(ctx, &m, &refs, false).await?;
        for r in &refs {
            if schemas.contains_key(r) {
                out.datasets.insert(r.clone());
            } else {
                out.read_later.insert(r.clone());
            }
        }
        register_empty(ctx, &m.name, schema.clone())?;
        planned.insert(m.name.clone());
        out.models.push((m, schema));
    }
    // dq_violations is one table: it is rewritten only by a run that can run every check (a
    // check of models outside this run's selection waits for a run that builds them).
    let mut planned_checks = Vec::new();
    for c in checks {
        let refs = references(ctx, &c)?;
        if !refs.iter().all(|r| available(r, &planned))
            && refs.iter().any(|r| by_name.contains_key(r))
        {
            tracing::info!(check = %c.name, "checks not run: a check reads models this run does not build");
            return Ok(out);
        }
        planned_checks.push((c, refs));
    }
    for (c, refs) in planned_checks {
        let schema = plan_one(ctx, &c, &refs, true).await?;
        for r in refs {
            if schemas.contains_key(&r) {
                out.datasets.insert(r);
            } else {
                out.read_later.insert(r);
            }
        }
        out.checks.push((c, schema));
    }
    Ok(out)
}

async fn plan_one(
    ctx: &SessionContext,
    m: &Model,
    refs: &[String],
    is_check: bool,
) -> Result<SchemaRef> {
    let df = ctx.sql(&m.sql).await.map_err(|e| plan_error(m, e))?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    df.into_optimized_plan().map_err(|e| plan_error(m, e))?;
    check_settings(m, &schema, is_check)?;
    tracing::debug!(model = %m.name, reads = ?refs, "planned");
    Ok(schema)
}

/// A stable id of the inputs: the curated objects (path, size) and the model files' text.
fn run_id(objects: &BTreeMap<String, Opened>, plan: &Plan) -> String {
    let mut h = Sha256::new();
    for (dataset, objs) in objects {
        h.update(dataset.as_bytes());
        for (o, _) in objs {
            h.update(o.location.path.as_ref().as_bytes());
            h.update(o.size.to_le_bytes());
        }
    }
    for (m, _) in plan.models.iter().chain(&plan.checks) {
        h.update(m.sql.as_bytes());
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn interrupted(spec: &ProdSpec) -> Result<()> {
    if spec.interrupted.load(Ordering::Relaxed) {
        return Err(Error::Interrupted("a signal"));
    }
    Ok(())
}

/// Runs one model's DataFrame into its staged output (and a scratch table when read later).
async fn stage_model(
    ctx: &SessionContext,
    spec: &ProdSpec,
    m: &Model,
    df: DataFrame,
    schema: &SchemaRef,
    staging: &Path,
    tee: Option<PathBuf>,
) -> Result<Staged> {
    let order: Vec<_> = m
        .order()
        .iter()
        .map(|c| ident(c).sort(true, false))
        .collect();
    let df = if order.is_empty() {
        df
    } else {
        df.sort(order).map_err(|e| query_error(m, e))?
    };
    let options = WriteOptions::new(spec.codec, spec.target_file_size, spec.memory_limit);
    let mut writer = ModelWriter::new(m, schema, staging, options)?;
    // Encoding runs on its own threads (the prod files, and the scratch table when a later
    // model reads this one) while DataFusion computes the next batches on the runtime's.
    let (prod_tx, mut prod_rx) = tokio::sync::mpsc::channel::<RecordBatch>(2);
    let model = m.clone();
    let prod = tokio::task::spawn_blocking(move || {
        while let Some(batch) = prod_rx.blocking_recv() {
            writer.write(&model, &batch)?;
        }
        writer.finish()
    });
    let scratch = match &tee {
        Some(path) => {
            let file = std::fs::File::create(path)
                .map_err(|e| Error::Spill(format!("{}: {e}", path.display())))?;
            let mut w = ArrowWriter::try_new(file, schema.clone(), None)
                .map_err(|e| Error::Spill(format!("{}: {e}", path.display())))?;
            let (tx, mut rx) = tokio::sync::mpsc::channel::<RecordBatch>(2);
            let name = m.name.clone();
            let task = tokio::task::spawn_blocking(move || {
                let err = |e| Error::Spill(format!("scratch {name}: {e}"));
                while let Some(batch) = rx.blocking_recv() {
                    w.write(&batch).map_err(err)?;
                }
                w.close().map(|_| ()).map_err(err)
            });
            Some((tx, task))
        }
        None => None,
    };
    let joined = |e: tokio::task::JoinError| Error::Internal(format!("writer of {}: {e}", m.name));
    let mut stream = df.execute_stream().await.map_err(|e| query_error(m, e))?;
    let mut sent = Ok(());
    while let Some(batch) = stream.next().await {
        interrupted(spec)?;
        let batch = batch.map_err(|e| query_error(m, e))?;
        // The planned schema is the contract: DataFusion may report nullability differently.
        let batch = RecordBatch::try_new(schema.clone(), batch.columns().to_vec())?;
        if let Some((tx, _)) = &scratch {
            if tx.send(batch.clone()).await.is_err() {
                sent = Err(());
                break;
            }
        }
        if prod_tx.send(batch).await.is_err() {
            sent = Err(());
            break;
        }
    }
    drop(stream);
    drop(prod_tx);
    // A closed channel means its writer failed: its own error says why.
    let staged = prod.await.map_err(joined)?;
    let scratch = match scratch {
        Some((tx, task)) => {
            drop(tx);
            Some(task.await.map_err(joined)?)
        }
        None => None,
    };
    let staged = staged?;
    if let Some(done) = scratch {
        done?;
    }
    if sent.is_err() {
        return Err(Error::Internal(format!(
            "writer of {} stopped early",
            m.name
        )));
    }
    if let Some(path) = tee {
        ctx.deregister_table(m.name.as_str())
            .map_err(|e| query_error(m, e))?;
        ctx.register_parquet(
            m.name.as_str(),
            path.display().to_string(),
            ParquetReadOptions::default(),
        )
        .await
        .map_err(|e| query_error(m, e))?;
    }
    Ok(staged)
}

/// A dataset's curated objects with their footers, read once for planning and building.
type Opened = Vec<(InputObject, ArrowReaderMetadata)>;

/// Everything before any row is read: the contracts, every dataset's curated objects and their
/// union schema (datasets without objects have none), and the planned models and checks.
struct Prepared {
    contracts: BTreeMap<String, Contract>,
    objects: BTreeMap<String, Opened>,
    schemas: BTreeMap<String, SchemaRef>,
    ctx: SessionContext,
    plan: Plan,
}

/// Phase 1 for `run` and `ddl`: lists and opens the curated objects (footers only) and plans.
async fn prepare(spec: &ProdSpec) -> Result<Prepared> {
    let contracts = load_contracts(&spec.contracts_dir)?;
    if let Some(d) = &spec.dataset {
        if !contracts.contains_key(d) {
            return Err(Error::Config(format!(
                "dataset `{d}` has no contract in {}",
                spec.contracts_dir.display()
            )));
        }
    }
    let root = Location::parse(&spec.curated)?;
    let mut objects = BTreeMap::new();
    let mut schemas = BTreeMap::new();
    for (dataset, contract) in &contracts {
        let mut opened = Vec::new();
        for o in curated_objects(&root, dataset).await? {
            let meta = crate::source::open(&o).await?;
            opened.push((o, meta));
        }
        if !opened.is_empty() {
            schemas.insert(dataset.clone(), state::union_schema(contract, &opened)?);
        }
        objects.insert(dataset.clone(), opened);
    }
    let ctx = session(spec)?;
    let plan = plan(&ctx, spec, &schemas).await?;
    Ok(Prepared {
        contracts,
        objects,
        schemas,
        ctx,
        plan,
    })
}

/// The catalog's view of a staged model.
fn table_def(staged: &Staged, prefix: &Location, description: String) -> Result<TableDef> {
    let columns = staged
        .file_schema
        .fields()
        .iter()
        .map(|f| {
            Ok((
                f.name().clone(),
                catalog::hive_type(f.name(), f.data_type())?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(TableDef {
        name: staged.model.clone(),
        location: format!("{}/", prefix.url.trim_end_matches('/')),
        columns,
        partition_keys: staged.partition_keys.clone(),
        partitions: staged
            .partitions
            .values()
            .filter(|(v, _)| !v.is_empty())
            .map(|(v, _)| v.clone())
            .collect(),
        description,
    })
}

fn description(m: &Model) -> String {
    m.sql
        .lines()
        .map_while(|l| l.trim_start().strip_prefix("--"))
        .map(str::trim)
        .filter(|l| {
            !l.split_once(':')
                .is_some_and(|(k, _)| k.bytes().all(|c| c.is_ascii_lowercase() || c == b'_'))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The model that holds the checks' rows.
fn violations_model(spec: &ProdSpec) -> Model {
    Model {
        name: VIOLATIONS_TABLE.to_string(),
        path: spec.models_dir.join("checks"),
        sql:
            "-- Rows that break a check: the check, the row's keys, what was observed and expected."
                .into(),
        partition_by: None,
        granularity: Granularity::None,
        sort_by: vec!["check".into(), "keys".into()],
        key: Vec::new(),
    }
}

/// Plans every model against the curated footers and returns the Athena DDL of each prod table
/// (`edp prod ddl`); nothing is read but footers, nothing written.
pub async fn ddl(spec: &ProdSpec) -> Result<String> {
    let Prepared { plan, .. } = prepare(spec).await?;
    let output = Location::parse(&spec.output)?;
    let mut out = String::new();
    let projection = spec.catalog == CatalogMode::Projection;
    let dir = tempfile::Builder::new()
        .prefix("edp-ddl-")
        .tempdir_in(&spec.spill_dir)
        .map_err(|e| Error::Config(format!("spill dir {}: {e}", spec.spill_dir.display())))?;
    let codec = format!("{:?}", spec.codec).to_lowercase();
    let mut tables: Vec<(Model, SchemaRef)> = plan.models.clone();
    if !plan.checks.is_empty() {
        tables.push((violations_model(spec), violations_schema()));
    }
    for (m, schema) in &tables {
        let writer = ModelWriter::new(m, schema, dir.path(), WriteOptions::new(spec.codec, 1, 1))?;
        let def = table_def(writer.staged(), &output.child(&m.name), description(m))?;
        out += &catalog::ddl(&spec.database, &def, &codec, projection);
        out += ";\n\n";
    }
    Ok(out)
}

fn violations_schema() -> SchemaRef {
    use arrow::datatypes::{Field, Schema};
    Arc::new(Schema::new(
        ["check", "keys", "observed", "expected", "run_id"]
            .iter()
            .map(|n| Field::new(*n, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ))
}

/// Runs stage 2 (see the module docs).
pub async fn run(spec: &ProdSpec) -> Result<ProdReport> {
    let started = Instant::now();
    let mut durations = Durations::default();
    let output = Location::parse(&spec.output)?;
    let Prepared {
        contracts,
        objects,
        schemas,
        ctx,
        plan,
    } = prepare(spec).await?;
    let missing: Vec<&String> = plan
        .datasets
        .iter()
        .filter(|d| !schemas.contains_key(*d))
        .collect();
    if !missing.is_empty() {
        return Err(Error::bad_input(
            &spec.curated,
            format!("no curated objects for {missing:?}"),
        ));
    }
    let run_id = run_id(&objects, &plan);
    durations.plan_ms = ms(started);

    let scratch = tempfile::Builder::new()
        .prefix("edp-prod-")
        .tempdir_in(&spec.spill_dir)
        .map_err(|e| Error::Config(format!("spill dir {}: {e}", spec.spill_dir.display())))?;
    let t = Instant::now();
    // Datasets are built concurrently, one per core: each build is sequential (decode, index,
    // encode), and each index has its own 1/32 of the budget.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let builds = plan.datasets.iter().map(|dataset| {
        let contract = contracts[dataset].clone();
        let objs = objects[dataset].clone();
        let dir = scratch.path().to_path_buf();
        let spill = SpillConfig {
            budget: spec.memory_limit / INDEX_BUDGET_SHARE,
            dir: spec.spill_dir.clone(),
        };
        let batch_size = spec.batch_size;
        tokio::spawn(async move { state::build(&contract, &objs, &dir, batch_size, spill).await })
    });
    let built: Vec<_> = futures::stream::iter(builds)
        .buffered(cores)
        .collect()
        .await;
    let mut datasets = Vec::new();
    for st in built {
        interrupted(spec)?;
        let st = st.map_err(|e| Error::Internal(format!("current state: {e}")))??;
        let dataset = &st.dataset;
        ctx.deregister_table(dataset.as_str())
            .map_err(|e| Error::Internal(format!("table {dataset}: {e}")))?;
        ctx.register_parquet(
            dataset.as_str(),
            st.file.display().to_string(),
            ParquetReadOptions::default(),
        )
        .await
        .map_err(|e| Error::Internal(format!("table {dataset}: {e}")))?;
        datasets.push(st.stats);
    }
    durations.state_ms = ms(t);

    let staging = scratch.path().join("staging");
    let t = Instant::now();
    let mut staged = Vec::new();
    let mut timings = Vec::new();
    for (m, schema) in &plan.models {
        let t = Instant::now();
        let tee = plan
            .read_later
            .contains(&m.name)
            .then(|| scratch.path().join(format!("model-{}.parquet", m.name)));
        let attempt = || async {
            let df = ctx.sql(&m.sql).await.map_err(|e| plan_error(m, e))?;
            stage_model(&ctx, spec, m, df, schema, &staging, tee.clone()).await
        };
        staged.push(with_join_fallback(&ctx, m, attempt).await?);
        timings.push(ms(t));
    }
    durations.models_ms = ms(t);

    let t = Instant::now();
    let mut checks = Vec::new();
    if !plan.checks.is_empty() {
        // Checks append to one table as they stream, so they cannot be rerun half-way: they use
        // the joins that spill from the start.
        low_memory_plans(&ctx)
            .await
            .map_err(|e| Error::Internal(format!("query engine: {e}")))?;
        let vm = violations_model(spec);
        let vschema = violations_schema();
        let options = WriteOptions::new(spec.codec, spec.target_file_size, spec.memory_limit);
        let mut writer = ModelWriter::new(&vm, &vschema, &staging, options)?;
        for (c, _) in &plan.checks {
            let t = Instant::now();
            let df = ctx.sql(&c.sql).await.map_err(|e| plan_error(c, e))?;
            let df = df
                .select(vec![
                    lit(c.name.clone()).alias("check"),
                    cast(ident("keys"), DataType::Utf8).alias("keys"),
                    cast(ident("observed"), DataType::Utf8).alias("observed"),
                    cast(ident("expected"), DataType::Utf8).alias("expected"),
                    lit(run_id.clone()).alias("run_id"),
                ])
                .and_then(|df| df.sort(vec![ident("keys").sort(true, false)]))
                .map_err(|e| query_error(c, e))?;
            let mut stream = df.execute_stream().await.map_err(|e| query_error(c, e))?;
            let mut violations = 0;
            while let Some(batch) = stream.next().await {
                interrupted(spec)?;
                let batch = batch.map_err(|e| query_error(c, e))?;
                violations += batch.num_rows() as u64;
                let batch = RecordBatch::try_new(vschema.clone(), batch.columns().to_vec())?;
                writer.write(&vm, &batch)?;
            }
            checks.push(CheckReport {
                check: c.name.clone(),
                violations,
                duration_ms: ms(t),
            });
        }
        staged.push(writer.finish()?);
    }
    durations.checks_ms = ms(t);
    interrupted(spec)?;

    let t = Instant::now();
    let mut models = Vec::new();
    let mut defs = Vec::new();
    let model_list: Vec<Model> = plan
        .models
        .iter()
        .map(|(m, _)| m.clone())
        .chain((!plan.checks.is_empty()).then(|| violations_model(spec)))
        .collect();
    for (i, (s, m)) in staged.iter().zip(&model_list).enumerate() {
        let prefix = output.child(&s.model);
        let published = write::publish(s, &prefix).await?;
        defs.push(table_def(s, &prefix, description(m))?);
        models.push(ModelReport {
            model: s.model.clone(),
            rows: s.rows,
            granularity: m.granularity,
            partitions: s
                .partitions
                .iter()
                .map(|(k, (_, rows))| (k.clone(), *rows))
                .collect(),
            files: s.files.len(),
            bytes: s.files.iter().map(|f| f.bytes).sum(),
            published,
            duration_ms: timings.get(i).copied().unwrap_or(durations.checks_ms),
        });
    }
    durations.publish_ms = ms(t);

    let t = Instant::now();
    let codec = format!("{:?}", spec.codec).to_lowercase();
    let stats: CatalogStats = catalog::update(&spec.catalog, &spec.database, &codec, &defs).await?;
    durations.catalog_ms = ms(t);
    durations.total_ms = ms(started);
    let report = ProdReport {
        edp_version: env!("CARGO_PKG_VERSION"),
        command: "curated-to-prod",
        run_id,
        curated: spec.curated.clone(),
        output: spec.output.clone(),
        datasets,
        violations: checks.iter().map(|c| c.violations).sum(),
        checks,
        models,
        catalog: CatalogReport {
            mode: spec.catalog.name().to_string(),
            database: spec.database.clone(),
            tables: stats.tables,
            partitions_added: stats.partitions_added,
            partitions_removed: stats.partitions_removed,
        },
        durations,
    };
    let loc = output.child(REPORT);
    let body =
        serde_json::to_vec_pretty(&report).map_err(|e| Error::Internal(format!("report: {e}")))?;
    loc.store
        .put(&loc.path, body.into())
        .await
        .map_err(|e| store_error(&loc.url, e))?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str) -> Model {
        model::parse(Path::new(&format!("{name}.sql")), "SELECT 1").unwrap()
    }

    #[test]
    fn models_run_after_the_models_they_read_and_cycles_are_errors() {
        let order = dependency_order(vec![
            (m("agg"), vec!["fact".into()]),
            (m("dim"), vec!["customers".into(), "fact".into()]),
            (m("fact"), vec!["orders".into(), "items".into()]),
            (m("items"), vec!["order_items".into()]),
        ])
        .unwrap();
        let names: Vec<&str> = order.iter().map(|(m, _)| m.name.as_str()).collect();
        assert_eq!(names, ["items", "fact", "agg", "dim"]);
        let e = dependency_order(vec![(m("a"), vec!["b".into()]), (m("b"), vec!["a".into()])])
            .unwrap_err();
        assert!(e.to_string().contains("cycle"), "{e}");
    }
}
