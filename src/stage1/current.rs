//! The current state of a dataset's curated objects, as stage 2's tables and stage 1's foreign
//! keys need it: stage 1's deduplication run over curated objects instead of raw ones, with the
//! same [`DedupPlan`] and [`DedupIndex`] (so the same order, `(event time, sequence, object
//! order, row order)`, and the same spilling past the index's budget). [`winners`] is a key pass
//! reading only the key, event-time, sequence and op columns of every object; a caller then
//! decodes only the winners (Parquet row selections) and drops the winning tombstones
//! ([`live_rows`]).

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::DataType;

use crate::contract::Contract;
use crate::source::{Input, Read};
use crate::stage1::dedup::{DedupIndex, DedupPlan, SpillConfig, Winners};
use crate::{Error, Result};

/// Rows of `batch` that are not CDC deletes under `op` (case-insensitive `D`).
pub fn live_rows(batch: &RecordBatch, op: Option<&str>) -> Result<Option<BooleanArray>> {
    let Some(i) = op.and_then(|name| batch.schema().index_of(name).ok()) else {
        return Ok(None);
    };
    let ops = cast(batch.column(i), &DataType::Utf8)?;
    let ops = ops.as_string::<i32>();
    let live: BooleanArray = (0..ops.len())
        .map(|r| Some(!(ops.is_valid(r) && ops.value(r).eq_ignore_ascii_case("D"))))
        .collect();
    Ok(Some(live))
}

/// The winners of every object of `opened` (in object order, `file_rows` rows each), one bit per
/// row; `None` without a primary key (every row is current).
pub async fn winners(
    contract: &Contract,
    opened: &[Input],
    file_rows: &[u64],
    batch_size: usize,
    spill: SpillConfig,
) -> Result<Option<Winners>> {
    if contract.primary_key.is_empty() {
        return Ok(None);
    }
    let names: Vec<&str> = contract
        .primary_key
        .iter()
        .chain(&contract.event_time)
        .chain(&contract.sequence)
        .chain(&contract.cdc_op)
        .map(String::as_str)
        .collect();
    let total: u64 = file_rows.iter().sum();
    let mut index: Option<DedupIndex> = None;
    for (f, object) in opened.iter().enumerate() {
        let url = object.url();
        let schema = object.schema();
        let columns: Vec<usize> = (0..schema.fields().len())
            .filter(|&i| names.contains(&schema.field(i).name().as_str()))
            .collect();
        let projected = schema.project(&columns)?;
        let Some(plan) = DedupPlan::new(contract, &projected, url)? else {
            return Ok(None);
        };
        if index.is_none() {
            index = Some(DedupIndex::new(&plan, total, Some(spill.clone()))?);
        }
        let Some(index) = index.as_mut() else {
            return Err(Error::Internal("dedup index not built".into()));
        };
        let file =
            u32::try_from(f).map_err(|_| Error::Config("too many curated objects".into()))?;
        let mut groups = object.read(Read {
            batch_size,
            keep: None,
            columns: Some(columns),
            read_ahead: 1,
        });
        while let Some(group) = groups.recv().await {
            let mut group = group?;
            let mut row = group.first_row;
            while let Some(batch) = group.next_batch(url)? {
                let n = batch.num_rows() as u64;
                let rows: Vec<u64> = (row..row + n).collect();
                index.offer(&plan, &batch, None, file, &rows)?;
                row += n;
            }
        }
    }
    match index {
        Some(index) => Ok(Some(index.finish(file_rows)?)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    #[test]
    fn deletes_are_not_live_and_missing_op_means_all_live() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("Op", DataType::Utf8, true),
            Field::new("id", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![
                    Some("I"),
                    Some("d"),
                    None,
                    Some("U"),
                ])),
                Arc::new(Int64Array::from(vec![1, 2, 3, 4])),
            ],
        )
        .unwrap();
        let live = live_rows(&batch, Some("Op")).unwrap().unwrap();
        assert_eq!(
            live.iter().collect::<Vec<_>>(),
            vec![Some(true), Some(false), Some(true), Some(true)]
        );
        assert!(live_rows(&batch, Some("op_missing")).unwrap().is_none());
        assert!(live_rows(&batch, None).unwrap().is_none());
    }
}
