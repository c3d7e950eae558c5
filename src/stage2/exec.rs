//! Models on DataFusion: the session (a memory pool of half the memory limit, spilling to the
//! spill directory), one model's sorted stream into its staged files and scratch table, and the
//! rerun with sort-merge joins when the pool cannot hold a hash join's build side.

use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// Switches the session to plans that stay within the pool: sort-merge joins, which spill
/// (DataFusion plans them only with more than one target partition, so that stays as it is).
pub(super) async fn low_memory_plans(ctx: &SessionContext) -> datafusion::error::Result<()> {
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
pub(super) async fn with_join_fallback<T, F, Fut>(
    ctx: &SessionContext,
    m: &Model,
    f: F,
) -> Result<T>
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
