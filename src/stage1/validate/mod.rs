//! Validation: the contract's row rules, vectorised over Arrow arrays.
//!
//! [`Validator::new`] does the file-level work: it resolves every contract column to its index in
//! a schema and checks presence and type compatibility. The job runs it on each input's own
//! schema, so a file that cannot be checked fails before any of its rows is read, then builds
//! the passes' validator on the reconciled schema of all inputs. [`Validator::validate`] is the
//! per-batch function: each column's rules run over the whole array and produce one failure
//! bitmap per rule, never a per-row allocation. Columns are checked in parallel only on request
//! (`parallel`): the job runs one row group per core, and column-parallel loops nested in that
//! made the cores wait on each other. Messages describe the rule, not the value: a value could
//! be a card number.
//!
//! Date and date-time strings are parsed to check them, and the parsed values are kept: curated
//! output stores them typed ([`curated_schema`]: `Timestamp(µs, UTC)` and `Date32`), which
//! analysts can filter and prune on, and which costs far less to encode than the text (2M orders
//! rows: 104 MB of date-time strings against 28 MB of int64). Quarantine keeps the text as read.
//!
//! A delete (`x-cdc-op` value `D`) is checked only on its dedup columns (key, event time,
//! sequence, op): DMS writes a delete from a source without full row images as the key, the
//! event time and the op, every other column null, and the delete must reach curated. Row rules
//! (`x-rules`) and foreign keys do not apply to deletes either.
//!
//! The submodules split the work the same way: `rules` compiles a contract column's rules into
//! checks (once per file), `check` runs one check over one column array (per batch),
//! `row_checks` runs the contract's `x-rules` over the typed columns they read (after the
//! column checks, so date-time rules compare instants), `foreign_keys` looks up referencing
//! columns in the key sets the job loaded ([`Validator::with_foreign_keys`]), and `quarantine`
//! builds the quarantine rows.

mod check;
mod foreign_keys;
mod quarantine;
mod row_checks;
mod rules;

use std::sync::Arc;

use arrow::array::BooleanBufferBuilder;
use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, RecordBatch, RecordBatchOptions,
    TimestampMicrosecondArray,
};
use arrow::buffer::BooleanBuffer;
use arrow::compute::FilterBuilder;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::contract::{rule_name, Contract, Format};
use crate::source::{Carried, RowFailure};
use crate::{Error, Result};
use check::{parsed_as, run_check};
use foreign_keys::ForeignKeyCheck;
use row_checks::RowCheck;
use rules::{expected_types, rules_for, type_ok, Check, ColumnRules};

pub use check::instants;
pub use foreign_keys::{ForeignKey, KeyKind, KeySet};
pub use quarantine::{
    quarantine_batch, quarantine_schema, ERRORS_COLUMN, PROTECTION_KEY, QUARANTINE_COLUMNS,
    ROW_COLUMN, SOURCE_COLUMN,
};

/// The rows of one batch that broke one rule.
#[derive(Debug, Clone)]
pub struct RuleFailures {
    /// The contract keyword (`minimum`, `format`, …), `required` for a null in a non-null
    /// column, or the name of an `x-rules` rule.
    pub rule: Arc<str>,
    /// The column, or for an `x-rules` rule the columns it reads, comma-separated.
    pub column: Arc<str>,
    pub message: Arc<str>,
    /// True where the row broke the rule.
    pub rows: BooleanBuffer,
    pub count: usize,
}

/// What validation found in one batch.
#[derive(Debug, Default)]
pub struct Verdict {
    /// One entry per rule that at least one row broke.
    pub failures: Vec<RuleFailures>,
    /// True where the row broke at least one rule; `None` when every row passed.
    pub invalid: Option<BooleanBuffer>,
    /// Date and date-time string columns (by index) as their curated type, null where invalid.
    pub typed: Vec<(usize, ArrayRef)>,
    /// Per foreign key whose orphans are kept (`orphans: keep`), by column: true where the row
    /// is one (it may still be invalid for another rule).
    pub orphans_kept: Vec<(Arc<str>, BooleanBuffer)>,
}

impl Verdict {
    /// Number of rows that broke at least one rule.
    pub fn invalid_count(&self) -> usize {
        self.invalid
            .as_ref()
            .map_or(0, BooleanBuffer::count_set_bits)
    }

    /// Adds the rows of an `n`-row batch its input could not decode: each fails under its
    /// decoding rules and messages only (the nulls left where its values could not be read break
    /// no other rule), one entry per failure since each message names its line.
    pub fn with_decode_failures(mut self, n: usize, failures: &[RowFailure]) -> Verdict {
        if failures.is_empty() {
            return self;
        }
        let mut bad = BooleanBufferBuilder::new(n);
        bad.append_n(n, false);
        for f in failures {
            bad.set_bit(f.row, true);
        }
        let bad = bad.finish();
        let good = !&bad;
        for f in &mut self.failures {
            f.rows = &f.rows & &good;
            f.count = f.rows.count_set_bits();
        }
        self.failures.retain(|f| f.count > 0);
        for f in failures {
            self.failures.push(RuleFailures {
                rule: f.rule.into(),
                column: f.column.clone(),
                message: f.message.as_str().into(),
                rows: BooleanBuffer::collect_bool(n, |r| r == f.row),
                count: 1,
            });
        }
        self.invalid = Some(match self.invalid.take() {
            Some(invalid) => &invalid | &bad,
            None => bad,
        });
        self
    }

    /// Adds failures recorded before (`edp replay`) that still hold: each row fails under them
    /// besides whatever else it broke.
    pub fn with_carried_failures(mut self, n: usize, carried: &[Carried]) -> Verdict {
        if carried.is_empty() {
            return self;
        }
        let mut bad = BooleanBufferBuilder::new(n);
        bad.append_n(n, false);
        for f in carried {
            bad.set_bit(f.row, true);
            self.failures.push(RuleFailures {
                rule: f.rule.clone(),
                column: f.column.clone(),
                message: f.message.as_str().into(),
                rows: BooleanBuffer::collect_bool(n, |r| r == f.row),
                count: 1,
            });
        }
        let bad = bad.finish();
        self.invalid = Some(match self.invalid.take() {
            Some(invalid) => &invalid | &bad,
            None => bad,
        });
        self
    }

    /// The rows of `batch` selected by `keep` (all when `None`; never an invalid row), their
    /// date and date-time strings replaced by the typed values, in `schema` (the
    /// [`curated_schema`] of the batch's schema).
    pub fn curated(
        &self,
        batch: RecordBatch,
        keep: Option<&BooleanArray>,
        schema: &SchemaRef,
    ) -> Result<RecordBatch> {
        let mut columns = batch.columns().to_vec();
        for (index, array) in &self.typed {
            columns[*index] = array.clone();
        }
        let mut rows = batch.num_rows();
        if let Some(keep) = keep {
            let predicate = FilterBuilder::new(keep).optimize().build();
            rows = predicate.count();
            columns = columns
                .iter()
                .map(|c| predicate.filter(c))
                .collect::<std::result::Result<_, _>>()?;
        }
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(RecordBatch::try_new_with_options(
            schema.clone(),
            columns,
            &options,
        )?)
    }
}

/// The curated type of a column of type `dt` with `format`, when it differs from `dt`.
fn curated_type(format: Option<Format>, dt: &DataType) -> Option<DataType> {
    match dt {
        DataType::Utf8 => format.and_then(Format::parsed_type),
        _ => None,
    }
}

/// The schema of curated output for validated input of schema `input`: `date-time` strings
/// become `Timestamp(Microsecond, "UTC")` (digits past the microsecond are dropped), `date`
/// strings `Date32`; every other column keeps its type.
pub fn curated_schema(contract: &Contract, input: &Schema) -> SchemaRef {
    let fields: Vec<Field> = input
        .fields()
        .iter()
        .map(|f| {
            let format = contract.column(f.name()).and_then(|c| c.format);
            match curated_type(format, f.data_type()) {
                // Nullable: a delete's other columns are not checked, so a typed value may be
                // missing even where the input column has no nulls.
                Some(dt) => f.as_ref().clone().with_data_type(dt).with_nullable(true),
                None => f.as_ref().clone(),
            }
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, input.metadata().clone()))
}

/// Nanoseconds as microseconds, rounded towards the past. Divides in 64 bits when the value fits
/// (until 2262): 128-bit division is a library call, and this runs per value.
fn micros(nanos: i128) -> Option<i64> {
    match i64::try_from(nanos) {
        Ok(n) => Some(n.div_euclid(1_000)),
        Err(_) => i64::try_from(nanos.div_euclid(1_000)).ok(),
    }
}

/// Parsed instants as an array of `dt` (from [`curated_type`]), null where `None`.
fn typed_array(instants: &[Option<i128>], dt: &DataType) -> ArrayRef {
    match dt {
        DataType::Date32 => Arc::new(Date32Array::from_iter(
            instants
                .iter()
                .map(|v| v.and_then(|d| i32::try_from(d).ok())),
        )),
        _ => Arc::new(
            TimestampMicrosecondArray::from_iter(instants.iter().map(|v| v.and_then(micros)))
                .with_data_type(dt.clone()),
        ),
    }
}

/// Row rules compiled against one schema (an input's, or the job's reconciled one).
#[derive(Debug)]
pub struct Validator {
    columns: Vec<ColumnRules>,
    /// The contract's `x-rules`, planned against the schema.
    row_checks: Vec<RowCheck>,
    /// The foreign keys the job checks, resolved against the schema.
    foreign_keys: Vec<ForeignKeyCheck>,
    /// Index of the `x-cdc-op` column, when the schema has one.
    op: Option<usize>,
    /// Names of the columns checked on deletes too: key, event time, sequence, op.
    dedup_columns: Vec<Arc<str>>,
}

impl Validator {
    /// Resolves `contract` against the schema of `object`: every required column present, every
    /// present contract column of a compatible type, no unknown columns when
    /// `additionalProperties` is false.
    pub fn new(contract: &Contract, schema: &Schema, object: &str) -> Result<Self> {
        let mut columns = Vec::new();
        for spec in &contract.columns {
            let Ok(index) = schema.index_of(&spec.name) else {
                if spec.required {
                    return Err(Error::bad_input(
                        object,
                        format!(
                            "missing required column `{}` (contract {})",
                            spec.name, contract.file
                        ),
                    ));
                }
                continue;
            };
            let dt = schema.field(index).data_type();
            if !type_ok(spec, dt) {
                return Err(Error::bad_input(
                    object,
                    format!(
                        "column `{}` has type {dt}, expected {} (contract {} at {})",
                        spec.name,
                        expected_types(spec),
                        contract.file,
                        spec.pointer
                    ),
                ));
            }
            let mut rules = rules_for(spec);
            // A typed temporal column is a valid date-time by construction.
            if !matches!(
                dt,
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ) {
                rules.retain(|r| !matches!(r.check, Check::Format(_)));
            }
            if !rules.is_empty() {
                columns.push(ColumnRules {
                    index,
                    name: spec.name.as_str().into(),
                    format: spec.format,
                    typed: curated_type(spec.format, dt),
                    rules,
                });
            }
        }
        if !contract.allow_extra_columns {
            if let Some(extra) = schema
                .fields()
                .iter()
                .find(|f| contract.column(f.name()).is_none())
            {
                return Err(Error::bad_input(
                    object,
                    format!(
                        "column `{}` is not in contract {} (additionalProperties is false)",
                        extra.name(),
                        contract.file
                    ),
                ));
            }
        }
        let row_checks = contract
            .rules
            .iter()
            .map(|rule| RowCheck::new(contract, rule, schema, object))
            .collect::<Result<_>>()?;
        let dedup_columns = contract
            .primary_key
            .iter()
            .chain(&contract.event_time)
            .chain(&contract.sequence)
            .chain(&contract.cdc_op)
            .map(|n| Arc::from(n.as_str()))
            .collect();
        let op = contract
            .cdc_op
            .as_ref()
            .and_then(|n| schema.index_of(n).ok())
            .filter(|&i| schema.field(i).data_type() == &DataType::Utf8);
        Ok(Validator {
            columns,
            row_checks,
            foreign_keys: Vec::new(),
            op,
            dedup_columns,
        })
    }

    /// The validator checking `keys` too (the key sets the job loaded), resolved against
    /// `schema`, the schema of `object`.
    pub fn with_foreign_keys(
        mut self,
        keys: &[Arc<ForeignKey>],
        schema: &Schema,
        object: &str,
    ) -> Result<Self> {
        for key in keys {
            self.foreign_keys
                .extend(ForeignKeyCheck::new(key, schema, object)?);
        }
        Ok(self)
    }

    /// Checks every row of `batch` (which must have the schema the validator was built for).
    /// With `parallel`, columns are checked on the rayon pool: for a job with fewer row groups
    /// than cores, where nothing else would keep the other cores busy.
    pub fn validate(&self, batch: &RecordBatch, parallel: bool) -> Result<Verdict> {
        type Checked = (Vec<RuleFailures>, Option<(usize, ArrayRef)>);
        let check = |c: &ColumnRules| -> Result<Checked> {
            let array = batch.column(c.index);
            let mut out = Vec::new();
            let mut parsed = None;
            for rule in &c.rules {
                let rows = run_check(array, c.format, &rule.check, &mut parsed)?;
                let count = rows.count_set_bits();
                if count > 0 {
                    out.push(RuleFailures {
                        rule: rule.name.into(),
                        column: c.name.clone(),
                        message: rule.message.clone(),
                        rows,
                        count,
                    });
                }
            }
            let typed = c.typed.as_ref().map(|dt| {
                let format = c.format.unwrap_or(Format::DateTime);
                (
                    c.index,
                    typed_array(parsed_as(array, format, &mut parsed), dt),
                )
            });
            Ok((out, typed))
        };
        let (mut failures, mut typed) = (Vec::new(), Vec::new());
        for checked in crate::map_columns(&self.columns, parallel, check) {
            let (f, t) = checked?;
            failures.extend(f);
            typed.extend(t);
        }
        for rule in &self.row_checks {
            failures.extend(rule.run(batch, &typed)?);
        }
        let deletes = self.deletes(batch);
        if let Some(deletes) = &deletes {
            self.excuse_deletes(&mut failures, deletes);
        }
        let mut orphans_kept = Vec::new();
        for fk in &self.foreign_keys {
            let rows = fk.orphans(batch, deletes.as_ref())?;
            let count = rows.count_set_bits();
            if count == 0 {
                continue;
            }
            if fk.key.keep_orphans {
                orphans_kept.push((fk.key.column.clone(), rows));
            } else {
                failures.push(RuleFailures {
                    rule: rule_name::FOREIGN_KEY.into(),
                    column: fk.key.column.clone(),
                    message: fk.message().clone(),
                    rows,
                    count,
                });
            }
        }
        let invalid = failures
            .iter()
            .map(|f| f.rows.clone())
            .reduce(|a, b| &a | &b);
        Ok(Verdict {
            failures,
            invalid,
            typed,
            orphans_kept,
        })
    }
}

impl Validator {
    /// True where the row is a delete; `None` when there is no op column or no delete.
    fn deletes(&self, batch: &RecordBatch) -> Option<BooleanBuffer> {
        let ops = batch.column(self.op?).as_string_opt::<i32>()?;
        let deletes = BooleanBuffer::collect_bool(ops.len(), |i| {
            ops.is_valid(i) && ops.value(i).eq_ignore_ascii_case("D")
        });
        (deletes.count_set_bits() > 0).then_some(deletes)
    }

    /// Clears the failures of delete rows in columns other than the dedup columns (row rules
    /// included), dropping rules no row breaks any more.
    fn excuse_deletes(&self, failures: &mut Vec<RuleFailures>, deletes: &BooleanBuffer) {
        let kept = !deletes;
        failures.retain_mut(|f| {
            let row_rule = self.row_checks.iter().any(|r| r.made(f));
            if !row_rule && self.dedup_columns.contains(&f.column) {
                return true;
            }
            f.rows = &f.rows & &kept;
            f.count = f.rows.count_set_bits();
            f.count > 0
        });
    }
}

#[cfg(test)]
mod tests;
