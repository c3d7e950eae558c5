//! The contract's row rules (`x-rules`, see `contract::RowRule`) run over one batch: the
//! columns a rule reads are gathered into a batch of their own (date-time and date strings as
//! the typed values validation parsed, an absent optional column as nulls) and the planned
//! expression is evaluated over it at once. A row breaks the rule where the result is false.
//!
//! An expression can fail on a value (an integer division by zero, a cast that does not parse):
//! the batch is then evaluated row by row, and each row it fails on breaks the rule with a
//! message that says so. DataFusion's own message is not kept: it can quote the value.

use std::sync::Arc;

use arrow::array::{new_null_array, Array, ArrayRef, AsArray, RecordBatch, RecordBatchOptions};
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::physical_expr::PhysicalExpr;

use super::{curated_type, RuleFailures};
use crate::contract::{Contract, RowRule};
use crate::{Error, Result};

/// One row rule planned against one schema.
#[derive(Debug)]
pub(super) struct RowCheck {
    name: Arc<str>,
    /// The columns the rule reads, comma-separated (the report's and quarantine's `column`).
    columns: Arc<str>,
    /// The message of a row that makes the expression false.
    message: Arc<str>,
    /// Per column the rule reads: its index in the validated schema, `None` when absent.
    inputs: Vec<Option<usize>>,
    /// The columns the rule reads, as it sees them.
    schema: SchemaRef,
    expr: Arc<dyn PhysicalExpr>,
}

impl RowCheck {
    /// Plans `rule` against `schema`, the schema of `object` (or the job's); a rule that cannot
    /// run on these column types is a file-level error.
    pub(super) fn new(
        contract: &Contract,
        rule: &RowRule,
        schema: &Schema,
        object: &str,
    ) -> Result<Self> {
        let mut inputs = Vec::with_capacity(rule.columns.len());
        let mut fields = Vec::with_capacity(rule.columns.len());
        for name in &rule.columns {
            let spec = contract.column(name);
            let (index, dt) = match schema.index_of(name) {
                Ok(i) => {
                    let dt = schema.field(i).data_type();
                    let format = spec.and_then(|c| c.format);
                    (
                        Some(i),
                        curated_type(format, dt).unwrap_or_else(|| dt.clone()),
                    )
                }
                Err(_) => (
                    None,
                    spec.ok_or_else(|| {
                        Error::Internal(format!("rule `{}` reads undeclared `{name}`", rule.name))
                    })?
                    .typed_arrow_type(),
                ),
            };
            inputs.push(index);
            fields.push(Field::new(name, dt, true));
        }
        let schema = Arc::new(Schema::new(fields));
        let expr = rule.plan(&schema).map_err(|e| {
            Error::bad_input(
                object,
                format!(
                    "rule `{}` (contract {} at {}) cannot run on these column types: {e}",
                    rule.name, contract.file, rule.pointer
                ),
            )
        })?;
        Ok(RowCheck {
            name: rule.name.as_str().into(),
            columns: rule.columns.join(",").into(),
            message: format!("`{}` is false", rule.check).into(),
            inputs,
            schema,
            expr,
        })
    }

    /// True when `failure` is this rule's.
    pub(super) fn made(&self, failure: &RuleFailures) -> bool {
        failure.rule == self.name && failure.column == self.columns
    }

    /// The rows of `batch` that break the rule (at most two entries: false, and not
    /// evaluable); `typed` holds the parsed date and date-time columns by index.
    pub(super) fn run(
        &self,
        batch: &RecordBatch,
        typed: &[(usize, ArrayRef)],
    ) -> Result<Vec<RuleFailures>> {
        let n = batch.num_rows();
        let columns = self
            .inputs
            .iter()
            .zip(self.schema.fields())
            .map(|(input, field)| match input {
                Some(i) => typed
                    .iter()
                    .find(|(j, _)| j == i)
                    .map_or_else(|| batch.column(*i).clone(), |(_, a)| a.clone()),
                None => new_null_array(field.data_type(), n),
            })
            .collect();
        let options = RecordBatchOptions::new().with_row_count(Some(n));
        let rows = RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)?;
        let (broken, failed) = match self.broken(&rows) {
            Ok(broken) => (broken, None),
            Err(_) => self.row_by_row(&rows)?,
        };
        let mut out = Vec::new();
        for (rows, message) in [
            (Some(broken), self.message.clone()),
            (failed, "could not be evaluated on this row (a division by zero, a failed cast or an overflow)".into()),
        ] {
            let Some(rows) = rows else { continue };
            let count = rows.count_set_bits();
            if count > 0 {
                out.push(RuleFailures {
                    rule: self.name.clone(),
                    column: self.columns.clone(),
                    message,
                    rows,
                    count,
                });
            }
        }
        Ok(out)
    }

    /// True where the expression is false over `rows`.
    fn broken(&self, rows: &RecordBatch) -> datafusion::error::Result<BooleanBuffer> {
        let value = self.expr.evaluate(rows)?.into_array(rows.num_rows())?;
        let result = value.as_boolean_opt().ok_or_else(|| {
            datafusion::error::DataFusionError::Internal("a row rule gave no boolean".into())
        })?;
        let falses = !result.values();
        Ok(match result.nulls() {
            Some(valid) => &falses & valid.inner(),
            None => falses,
        })
    }

    /// [`Self::broken`] one row at a time, for a batch the expression fails on: the rows where
    /// it is false, and the rows it fails on (`None` when it fails on none of them alone).
    fn row_by_row(&self, rows: &RecordBatch) -> Result<(BooleanBuffer, Option<BooleanBuffer>)> {
        let n = rows.num_rows();
        let (mut broken, mut failed) = (vec![false; n], vec![false; n]);
        for i in 0..n {
            match self.broken(&rows.slice(i, 1)) {
                Ok(b) => broken[i] = b.value(0),
                Err(_) => failed[i] = true,
            }
        }
        // A guarded rule (`total <> 0 AND id / total < 100`) can fail on a batch, where
        // DataFusion evaluates both sides, and on none of its rows, where it short-circuits.
        let failed = failed.contains(&true).then(|| failed.into());
        Ok((broken.into(), failed))
    }
}
