//! The generation loop (the batches of a spec) and the Parquet object `edp generate` writes.

use arrow::array::RecordBatch;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::plan::Planner;
use super::rng::SplitMix;
use super::rows::{build, schema, Gen, V};
use super::{check_period, GenSpec, BATCH_ROWS, OBJECT_NAME, ROW_GROUP_ROWS};
use crate::output::{OutputStats, ParquetSink};
use crate::store::Location;
use crate::Result;

/// Generates the batches of `spec`, calling `sink` with each.
pub fn batches(spec: GenSpec, mut sink: impl FnMut(RecordBatch) -> Result<()>) -> Result<()> {
    check_period(spec.days, spec.end_day).map_err(crate::Error::Config)?;
    let schema = schema(spec.dataset);
    let gen = Gen::new(&spec);
    let mut planner = Planner::new(spec);
    let mut values = SplitMix::new(spec.seed.rotate_left(17) ^ spec.dataset as u64);
    let mut left = spec.rows;
    while left > 0 {
        let n = left.min(BATCH_ROWS as u64) as usize;
        let rows: Vec<Vec<V>> = (0..n)
            .map(|_| gen.row(&planner.next(), &mut values))
            .collect();
        sink(build(&schema, rows)?)?;
        left -= n as u64;
    }
    Ok(())
}

/// The object `generate` writes for `out`: `out` itself when it ends in `.parquet`, else
/// `<out>/<OBJECT_NAME>`.
pub fn target(out: &Location) -> Location {
    if out.path.as_ref().ends_with(".parquet") {
        out.clone()
    } else {
        out.child(OBJECT_NAME)
    }
}

/// Generates `spec` into a Parquet object at `out` (see [`target`]).
pub async fn generate(spec: GenSpec, out: &Location) -> Result<OutputStats> {
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_created_by("edp generate".to_string())
        .build();
    let mut sink = ParquetSink::new(target(out), schema(spec.dataset), props)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<RecordBatch>(4);
    let producer = tokio::task::spawn_blocking(move || {
        batches(spec, |b| {
            tx.blocking_send(b)
                .map_err(|_| crate::Error::Internal("generator stopped".into()))
        })
    });
    while let Some(batch) = rx.recv().await {
        if let Err(e) = sink.write(&batch).await {
            sink.abort().await;
            return Err(e);
        }
    }
    match producer.await {
        Ok(Ok(())) => sink.finish().await,
        Ok(Err(e)) => {
            sink.abort().await;
            Err(e)
        }
        Err(e) => {
            sink.abort().await;
            Err(crate::Error::Internal(format!("generator panicked: {e}")))
        }
    }
}
