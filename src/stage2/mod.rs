//! Stage 2, curated → prod: SQL models over the current state of every dataset, written as
//! Athena-ready Parquet with Hive date partitions, then the catalog updated.
//!
//! Stage 2 owns the prod side: the models and checks, the prod tables under the output with
//! their manifests and the run report, and the catalog entries of those tables. It reads curated
//! data and never writes, moves or deletes a curated object; it writes nothing outside the prod
//! output, the scratch directory (`spill_dir`, where its temporary files are removed when the
//! run ends) and the catalog database it is given.
//!
//! A run has three phases, so that a mistake costs nothing and a failure publishes nothing:
//!
//! 1. **Plan** (no data read): contracts and curated footers give each dataset's schema; every
//!    model and check is parsed ([`model`]), ordered by the tables it reads (a model may read
//!    earlier models), and planned by DataFusion against empty tables of those schemas. An
//!    unknown table or column is a configuration error naming the file and line.
//! 2. **Stage**: each dataset's current state is built into a local scratch file ([`state`]:
//!    stage 1's dedup index over curated objects), registered under the dataset's name; each
//!    model runs on DataFusion as soon as the tables it reads exist, one per core at a time
//!    ([`run_models`]; memory pool of half `--memory-limit`, sorts and aggregations spill;
//!    hash joins, which cannot spill, fall back to sort-merge joins when the pool cannot hold a
//!    build side), its sorted stream is written partition by partition to local staging files
//!    ([`write`]), and teed into a scratch table when a later model or check reads it, so no
//!    model runs twice. Checks run last; their rows form the `dq_violations` table.
//! 3. **Publish**: changed files are uploaded, stale ones removed (several at once), per
//!    model; then the catalog is updated ([`catalog`]) and the report written beside the
//!    outputs.
//!
//! This module must not know Parquet encoding details (that is [`write`]) nor Glue's API
//! ([`catalog`]); stage 1 is used only through its dedup index (and the index's memory share),
//! inputs only through [`crate::source`].
//! [`run`] and [`ddl`] string the phases together; their parts live beside them: planning in
//! `plan.rs`, running models on DataFusion in `exec.rs`, and the published tables' definitions
//! (and the checks' table) in `publish.rs`.

pub mod catalog;
mod exec;
pub mod model;
mod plan;
mod publish;
pub mod state;
pub mod write;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::prelude::{cast, ident, lit, ParquetReadOptions};
use futures::StreamExt;
use object_store::ObjectStoreExt;

use crate::output::Codec;
use crate::stage1::dedup::SpillConfig;
use crate::store::{store_error, Location};
use crate::{Error, Result};
use catalog::{CatalogMode, CatalogStats};
use exec::{low_memory_plans, query_error, run_models};
use model::{Granularity, Model};
use plan::{plan_error, prepare, run_id, Prepared};
use publish::{description, table_def, violations_model, violations_schema};
use state::StateStats;
use write::{ModelWriter, Published, WriteOptions};

/// Name of the checks' output table.
pub const VIOLATIONS_TABLE: &str = "dq_violations";
/// The report's name under the output.
pub const REPORT: &str = "_edp_prod_report.json";

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
    /// Bytes each dataset's dedup index holds before it spills.
    pub index_memory: usize,
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

fn interrupted(spec: &ProdSpec) -> Result<()> {
    if spec.interrupted.load(Ordering::Relaxed) {
        return Err(Error::Interrupted("a signal"));
    }
    Ok(())
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
            budget: spec.index_memory,
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
    let runs = run_models(
        &ctx,
        &Arc::new(spec.clone()),
        &plan,
        scratch.path(),
        &staging,
    )
    .await?;
    let timings: Vec<u64> = runs.iter().map(|r| r.duration_ms).collect();
    let mut staged: Vec<_> = runs.into_iter().map(|r| r.staged).collect();
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
