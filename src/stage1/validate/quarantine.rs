//! Quarantine output: the failing rows with their source object, row numbers and broken rules.

use std::sync::Arc;

use arrow::array::{ArrayRef, ListArray, RecordBatch, StringArray, StructArray, UInt64Array};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};

use super::Verdict;
use crate::source::Origin;
use crate::{Error, Result};

/// Quarantine column: the object the row came from.
pub const SOURCE_COLUMN: &str = "_edp_source";
/// Quarantine column: the row's 0-based position in its object.
pub const ROW_COLUMN: &str = "_edp_row";
/// Quarantine column: every rule the row broke, as a list of {rule, column, message}.
pub const ERRORS_COLUMN: &str = "_edp_errors";

/// Key of the quarantine file metadata that records which columns hold protected values
/// (JSON: column → `hash`, `mask`, `redact` or `pan`; [`crate::contract::Contract::protection`]).
pub const PROTECTION_KEY: &str = "edp.protection";

/// The columns quarantine output adds after the input's, in order.
pub const QUARANTINE_COLUMNS: [&str; 3] = [SOURCE_COLUMN, ROW_COLUMN, ERRORS_COLUMN];

/// The schema of quarantine output: the input columns plus source, row number and errors.
pub fn quarantine_schema(input: &Schema) -> SchemaRef {
    let mut fields: Vec<Arc<Field>> = input.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(SOURCE_COLUMN, DataType::Utf8, false)));
    fields.push(Arc::new(Field::new(ROW_COLUMN, DataType::UInt64, false)));
    fields.push(Arc::new(Field::new(
        ERRORS_COLUMN,
        DataType::List(Arc::new(Field::new(
            "item",
            DataType::Struct(error_fields()),
            false,
        ))),
        false,
    )));
    Arc::new(Schema::new(fields))
}

fn error_fields() -> Fields {
    Fields::from(vec![
        Field::new("rule", DataType::Utf8, false),
        Field::new("column", DataType::Utf8, false),
        Field::new("message", DataType::Utf8, false),
    ])
}

/// Quarantine rows: `rows` are the failing rows of a batch (already filtered by
/// `verdict.invalid`, and protected), extended with their source object, row numbers
/// (`numbers[i]` is the position of the batch's row `i` in the object; with `origin`, each row's
/// own source and number instead) and every rule each broke.
pub fn quarantine_batch(
    rows: &RecordBatch,
    verdict: &Verdict,
    source: &str,
    numbers: &[u64],
    origin: Option<&Origin>,
    schema: &SchemaRef,
) -> Result<Option<RecordBatch>> {
    let Some(invalid) = &verdict.invalid else {
        return Ok(None);
    };
    let n = rows.num_rows();
    let mut offsets = Vec::with_capacity(n + 1);
    offsets.push(0i32);
    let (mut rules, mut cols, mut msgs) = (Vec::new(), Vec::new(), Vec::new());
    let numbers_in = numbers;
    let mut numbers = Vec::with_capacity(n);
    // Each row's failures, in rule order: one walk over each rule's set bits (a text input
    // gives one rule entry per undecodable row, so a walk over every rule per row would grow with
    // the square of the failing rows).
    let mut per_row: Vec<Vec<usize>> = vec![Vec::new(); invalid.len()];
    for (i, f) in verdict.failures.iter().enumerate() {
        for row in f.rows.set_indices() {
            per_row[row].push(i);
        }
    }
    let mut sources = Vec::with_capacity(n);
    for row in invalid.set_indices() {
        match origin {
            Some(o) => {
                sources.push(o.sources.value(row));
                numbers.push(o.rows.value(row));
            }
            None => {
                sources.push(source);
                numbers.push(numbers_in[row]);
            }
        }
        for &i in &per_row[row] {
            let f = &verdict.failures[i];
            rules.push(f.rule.to_string());
            cols.push(f.column.to_string());
            msgs.push(f.message.to_string());
        }
        offsets.push(rules.len() as i32);
    }
    let structs = StructArray::new(
        error_fields(),
        vec![
            Arc::new(StringArray::from(rules)) as ArrayRef,
            Arc::new(StringArray::from(cols)),
            Arc::new(StringArray::from(msgs)),
        ],
        None,
    );
    let item = Arc::new(Field::new("item", DataType::Struct(error_fields()), false));
    let errors = ListArray::new(
        item,
        OffsetBuffer::new(offsets.into()),
        Arc::new(structs),
        None,
    );
    if numbers.len() != n {
        return Err(Error::Internal(format!(
            "{n} quarantine rows for {} failing rows",
            numbers.len()
        )));
    }
    let mut columns = rows.columns().to_vec();
    columns.push(Arc::new(StringArray::from(sources)));
    columns.push(Arc::new(UInt64Array::from(numbers)));
    columns.push(Arc::new(errors));
    Ok(Some(RecordBatch::try_new(schema.clone(), columns)?))
}
