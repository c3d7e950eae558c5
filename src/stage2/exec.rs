//! Models on DataFusion: the session (a memory pool of half the memory limit, spilling to the
//! spill directory), the models run as their inputs become ready (two at a time on two
//! cores), one model's sorted stream into its staged files and scratch table, and the rerun
//! with sort-merge joins when the pool cannot hold a hash join's build side.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{ident, DataFrame, ParquetReadOptions, SessionConfig, SessionContext};
use futures::StreamExt;
use parquet::arrow::ArrowWriter;

use super::model::Model;
use super::plan::{plan_error, Plan};
use super::state::scratch_properties;
use super::write::{ModelWriter, Staged, WriteOptions};
use super::{interrupted, ProdSpec};
use crate::{Error, Result};

pub(super) fn session(spec: &ProdSpec) -> Result<SessionContext> {
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

/// How a query error's message starts when the memory pool could not hold an operator that
/// cannot spill (a hash join's build side): the model is then run again with sort-merge joins.
const EXHAUSTED: &str = "resources exhausted: ";

pub(super) fn query_error(model: &Model, e: DataFusionError) -> Error {
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

/// Switches the session to plans that stay within the pool: sort-merge joins, which spill.
/// DataFusion plans them only with more than one target partition (with one, every join
/// becomes a collect-left hash join, whose build side cannot spill), so at least two are set.
pub(super) async fn low_memory_plans(ctx: &SessionContext) -> datafusion::error::Result<()> {
    ctx.sql("SET datafusion.optimizer.prefer_hash_join = false")
        .await?;
    let partitions = ctx.copied_config().target_partitions().max(2);
    ctx.sql(&format!(
        "SET datafusion.execution.target_partitions = {partitions}"
    ))
    .await?;
    Ok(())
}

/// Runs `f` (one model) with hash joins, and once more with sort-merge joins if the memory pool
/// could not hold an operator (a hash join's build side cannot spill in DataFusion 55) with
/// [`low_memory_plans`]: sort-merge joins, which spill. `low_memory` records that this
/// happened, so that models started later use them from the start.
async fn with_join_fallback<T, F, Fut>(
    ctx: &SessionContext,
    m: &Model,
    low_memory: &AtomicBool,
    f: F,
) -> Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    match f().await {
        Err(e) if exhausted(&e) => {
            tracing::warn!(model = %m.name, "{e}: running it again with sort-merge joins, which spill");
            low_memory.store(true, Ordering::Relaxed);
            low_memory_plans(ctx).await.map_err(|e| query_error(m, e))?;
            f().await
        }
        other => other,
    }
}

/// One model staged, and how long it took.
pub(super) struct ModelRun {
    pub(super) staged: Staged,
    pub(super) duration_ms: u64,
}

/// Runs every model of `plan`, each as soon as the tables it reads exist, as many at once as
/// there are cores: within one model, the final merge of its sort and its writer keep about
/// one core busy, so models that do not depend on each other overlap. Each runs on its own
/// task with its own session over the shared tables and memory pool (a join fallback changes
/// only its own settings). Results are in plan order.
pub(super) async fn run_models(
    ctx: &SessionContext,
    spec: &Arc<ProdSpec>,
    plan: &Plan,
    scratch: &Path,
    staging: &Path,
) -> Result<Vec<ModelRun>> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let low_memory = Arc::new(AtomicBool::new(false));
    let mut done: BTreeSet<&str> = plan.datasets.iter().map(String::as_str).collect();
    let mut pending: Vec<usize> = (0..plan.models.len()).collect();
    let mut results: Vec<Option<ModelRun>> = plan.models.iter().map(|_| None).collect();
    let mut running = futures::stream::FuturesUnordered::new();
    loop {
        let mut i = 0;
        while running.len() < cores && i < pending.len() {
            let (m, schema) = &plan.models[pending[i]];
            let ready = plan
                .reads
                .get(&m.name)
                .is_none_or(|reads| reads.iter().all(|r| done.contains(r.as_str())));
            if !ready {
                i += 1;
                continue;
            }
            let index = pending.remove(i);
            let task = SessionContext::new_with_state(ctx.state());
            let (m, schema, spec, staging) = (
                m.clone(),
                schema.clone(),
                spec.clone(),
                staging.to_path_buf(),
            );
            let low_memory = low_memory.clone();
            let tee = plan
                .read_later
                .contains(&m.name)
                .then(|| scratch.join(format!("model-{}.parquet", m.name)));
            running.push(tokio::spawn(async move {
                let t = Instant::now();
                if low_memory.load(Ordering::Relaxed) {
                    low_memory_plans(&task)
                        .await
                        .map_err(|e| query_error(&m, e))?;
                }
                let attempt = || async {
                    let df = task.sql(&m.sql).await.map_err(|e| plan_error(&m, e))?;
                    stage_model(&task, &spec, &m, df, &schema, &staging, tee.clone()).await
                };
                let staged = with_join_fallback(&task, &m, &low_memory, attempt).await?;
                let duration_ms = t.elapsed().as_millis() as u64;
                Ok::<_, Error>((
                    index,
                    ModelRun {
                        staged,
                        duration_ms,
                    },
                ))
            }));
        }
        let Some(finished) = running.next().await else {
            break;
        };
        let (index, run) = finished.map_err(|e| Error::Internal(format!("model task: {e}")))??;
        done.insert(plan.models[index].0.name.as_str());
        results[index] = Some(run);
    }
    results
        .into_iter()
        .zip(&plan.models)
        .map(|(r, (m, _))| {
            r.ok_or_else(|| Error::Internal(format!("model {} never became ready", m.name)))
        })
        .collect()
}

/// Runs one model's DataFrame into its staged output (and a scratch table when read later).
pub(super) async fn stage_model(
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
            let mut w = ArrowWriter::try_new(file, schema.clone(), Some(scratch_properties()))
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
