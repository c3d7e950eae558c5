//! Current state of one dataset: the latest version of each primary key across all of its
//! curated objects, deletes applied. This is the table the models read under the dataset's name.
//!
//! It is [`current::winners`] (stage 1's deduplication over curated objects, one bit per row for
//! the winners) and a data pass that decodes only the winners (Parquet row selections), drops
//! the winning tombstones and the op column, and writes the rows to one local Parquet file in
//! the job's scratch directory. DataFusion then scans that file like any table, so memory does
//! not grow with the dataset: the index has its budget, and one batch is held at a time.
//!
//! Objects of one dataset may differ by added nullable columns (a contract that grew): the
//! state has every column in order of first appearance, read as null where an object lacks it.
//! A column with two types, or a missing column that is not nullable, is bad input.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{new_null_array, ArrayRef, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use crate::contract::Contract;
use crate::source::{Input, Read};
use crate::stage1::current;
use crate::stage1::dedup::SpillConfig;
use crate::{Error, Result};

/// Rows per row group of a scratch file: DataFusion reads it a row group per partition.
const SCRATCH_ROW_GROUP_ROWS: usize = 1 << 17;

/// How scratch files (current state, and models read by later ones) are written: Snappy,
/// row groups of [`SCRATCH_ROW_GROUP_ROWS`] so that every core scans a part of them, and
/// statistics per chunk only (nothing reads their page indexes).
pub(super) fn scratch_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(SCRATCH_ROW_GROUP_ROWS))
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .build()
}

/// The current state of one dataset, in a local Parquet file.
#[derive(Debug)]
pub struct DatasetState {
    pub dataset: String,
    pub file: PathBuf,
    pub schema: SchemaRef,
    pub stats: StateStats,
}

/// What building a dataset's current state read and kept.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StateStats {
    pub dataset: String,
    /// Curated objects read.
    pub objects: usize,
    /// Rows in all of them.
    pub rows_read: u64,
    /// Rows of the current state (live keys).
    pub rows_current: u64,
    /// Versions replaced by a later version of their key.
    pub superseded: u64,
    /// Keys whose latest version is a delete (removed from the state).
    pub deleted: u64,
    /// Dedup index entries written to spill files.
    pub spilled_entries: u64,
}

/// The union schema of `objects` (columns in order of first appearance, the op column left out),
/// checked: one type per column, and a column some object lacks must be nullable.
pub(crate) fn union_schema(contract: &Contract, objects: &[Input]) -> Result<SchemaRef> {
    let op = contract.cdc_op.as_deref();
    let mut fields: Vec<Field> = Vec::new();
    for object in objects {
        for f in object.schema().fields() {
            if Some(f.name().as_str()) == op {
                continue;
            }
            match fields.iter().find(|g| g.name() == f.name()) {
                Some(g) if g.data_type() != f.data_type() => {
                    return Err(Error::bad_input(
                        object.url(),
                        format!(
                            "column `{}` is {} here but {} in an earlier curated object",
                            f.name(),
                            f.data_type(),
                            g.data_type()
                        ),
                    ))
                }
                // A column nullable in any object is nullable in the union (curated typed
                // date-times became nullable when deletes stopped being checked on them).
                Some(_) if f.is_nullable() => {
                    if let Some(g) = fields.iter_mut().find(|g| g.name() == f.name()) {
                        g.set_nullable(true);
                    }
                }
                Some(_) => {}
                None => fields.push(f.as_ref().clone()),
            }
        }
    }
    for object in objects {
        for f in &mut fields {
            if object.schema().field_with_name(f.name()).is_err() {
                if !f.is_nullable() && contract.column(f.name()).is_some_and(|c| !c.nullable) {
                    return Err(Error::bad_input(
                        object.url(),
                        format!("missing column `{}`, which is not nullable", f.name()),
                    ));
                }
                *f = f.clone().with_nullable(true);
            }
        }
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// `batch` in `schema`'s column order, null columns where it lacks one.
fn align(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| match batch.schema().index_of(f.name()) {
            Ok(i) => batch.column(i).clone(),
            Err(_) => new_null_array(f.data_type(), batch.num_rows()),
        })
        .collect();
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// Builds the current state of `contract`'s dataset from `opened` (its curated objects in object
/// order, with their footers) into `<scratch>/<dataset>.parquet`.
pub async fn build(
    contract: &Contract,
    opened: &[Input],
    scratch: &Path,
    batch_size: usize,
    spill: SpillConfig,
) -> Result<DatasetState> {
    let schema = union_schema(contract, opened)?;
    let mut stats = StateStats {
        dataset: contract.dataset.clone(),
        objects: opened.len(),
        ..StateStats::default()
    };
    let file_rows: Vec<u64> = opened.iter().map(Input::rows).collect();
    stats.rows_read = file_rows.iter().sum();

    let winners = current::winners(contract, opened, &file_rows, batch_size, spill).await?;
    let path = scratch.join(format!("{}.parquet", contract.dataset));
    let file = std::fs::File::create(&path)
        .map_err(|e| Error::Spill(format!("{}: {e}", path.display())))?;
    let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(scratch_properties()))
        .map_err(|e| Error::Spill(format!("{}: {e}", path.display())))?;
    let op = contract.cdc_op.as_deref();
    for (f, object) in opened.iter().enumerate() {
        let keep = winners.as_ref().map(|w| Arc::new(w.rows[f].clone()));
        let mut groups = object.read(Read {
            batch_size,
            keep,
            columns: None,
            read_ahead: 1,
        });
        while let Some(group) = groups.recv().await {
            let mut group = group?;
            while let Some(batch) = group.next_batch(object.url())? {
                let batch = match current::live_rows(&batch, op)? {
                    Some(live) => filter_record_batch(&batch, &live)?,
                    None => batch,
                };
                if batch.num_rows() == 0 {
                    continue;
                }
                stats.rows_current += batch.num_rows() as u64;
                writer
                    .write(&align(&batch, &schema)?)
                    .map_err(|e| Error::Spill(format!("{}: {e}", path.display())))?;
            }
        }
    }
    writer
        .close()
        .map_err(|e| Error::Spill(format!("{}: {e}", path.display())))?;
    if let Some(w) = &winners {
        stats.superseded = w.superseded;
        stats.deleted = w.tombstones;
        stats.spilled_entries = w.spilled_entries;
    }
    Ok(DatasetState {
        dataset: contract.dataset.clone(),
        file: path,
        schema,
        stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::DataType;

    #[test]
    fn align_fills_missing_columns_with_nulls() {
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("b", DataType::Int64, false)])),
            vec![Arc::new(Int64Array::from(vec![7, 8]))],
        )
        .unwrap();
        let target = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Utf8, true),
            Field::new("b", DataType::Int64, false),
        ]));
        let out = align(&batch, &target).unwrap();
        assert_eq!(out.column(0).null_count(), 2);
        assert_eq!(
            out.column(1)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .values(),
            &[7, 8]
        );
    }
}
