//! File-level preparation, before any data is read: open every input's footer, check it
//! against the contract, reconcile the inputs' schemas into the job's, and resolve the
//! validator, dedup plan and protectors once for the passes.

use std::sync::Arc;

use arrow::array::{new_null_array, ArrayRef, RecordBatch};
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::contract::Contract;
use crate::protect::Protector;
use crate::report::ReferenceCheck;
use crate::source::{self, Input};
use crate::stage1::dedup::DedupPlan;
use crate::stage1::validate::{
    curated_schema, quarantine_schema, Validator, PROTECTION_KEY, QUARANTINE_COLUMNS,
};
use crate::{Error, Result};

use super::spec::JobSpec;

/// The protection record (`edp replay`) the quarantine objects `urls` name share: which of
/// their columns hold protected values. Objects without one (not quarantine output, or written
/// before records existed) or disagreeing are bad input; an object under `output` is refused,
/// since replay would overwrite what it reads.
pub async fn read_protection(urls: &[String], output: &str) -> Result<String> {
    let out = crate::store::Location::parse(output)?;
    let under = format!("{}/", out.url.trim_end_matches('/'));
    let mut record: Option<String> = None;
    for object in source::resolve(urls).await? {
        let url = object.location.url.clone();
        if url.starts_with(&under) || url == out.url {
            return Err(Error::Config(format!(
                "--output {output} holds the quarantine object {url} being replayed: write the \
                 released rows elsewhere"
            )));
        }
        let input = Input::open(object).await?;
        let Some(this) = input.key_value(PROTECTION_KEY) else {
            return Err(Error::bad_input(
                &url,
                "not a quarantine object written by this edp: no protection record in its \
                 metadata",
            ));
        };
        match &record {
            Some(r) if r != this => {
                return Err(Error::bad_input(
                    &url,
                    format!("its protection record {this} differs from another object's {r}"),
                ))
            }
            Some(_) => {}
            None => record = Some(this.to_string()),
        }
    }
    record.ok_or_else(|| Error::Internal("no quarantine objects".into()))
}

/// An input opened for the job: the input, what was resolved against the job's schema, and
/// the rows this shard owns (set by the key pass of a sharded job).
pub(super) struct Prepared {
    pub(super) input: Input,
    /// Validator and dedup plan resolved against the job's (reconciled) schema.
    pub(super) validator: Arc<Validator>,
    pub(super) plan: Option<Arc<DedupPlan>>,
    /// Rows in the file.
    pub(super) rows: u64,
    /// This shard's rows of the file (all rows when unsharded).
    pub(super) owned: Option<Arc<BooleanBuffer>>,
    pub(super) owned_rows: u64,
}

/// The job's output schema: the first input's columns, then columns that later inputs add. A
/// column missing from some input must be nullable and not required; a column present in two
/// inputs must have one type, except that an all-null column (Arrow type Null) takes the type of
/// the others, or [`null_column_type`] when every input has it all-null.
fn reconcile(contract: &Contract, inputs: &[(String, SchemaRef)]) -> Result<SchemaRef> {
    let mut fields: Vec<Field> = Vec::new();
    for (url, schema) in inputs {
        for f in schema.fields() {
            match fields.iter_mut().find(|g| g.name() == f.name()) {
                // An all-null column (Arrow type Null) takes the type other inputs give it.
                Some(g) if g.data_type() == &DataType::Null => {
                    *g = f.as_ref().clone().with_nullable(true);
                }
                Some(g) if f.data_type() == &DataType::Null => {
                    *g = g.clone().with_nullable(true);
                }
                Some(g) if g.data_type() != f.data_type() => {
                    return Err(Error::bad_input(
                        url,
                        format!(
                            "column `{}` has type {} here but {} in an earlier input",
                            f.name(),
                            f.data_type(),
                            g.data_type()
                        ),
                    ))
                }
                Some(g) => {
                    if f.is_nullable() {
                        *g = g.clone().with_nullable(true);
                    }
                }
                None => fields.push(f.as_ref().clone()),
            }
        }
    }
    for field in &mut fields {
        if field.data_type() == &DataType::Null {
            *field = field
                .clone()
                .with_data_type(null_column_type(contract, field.name()));
        }
        let missing: Vec<&String> = inputs
            .iter()
            .filter(|(_, s)| s.field_with_name(field.name()).is_err())
            .map(|(u, _)| u)
            .collect();
        if let Some(url) = missing.first() {
            let required = contract.column(field.name()).is_some_and(|c| c.required);
            if required || !field.is_nullable() {
                return Err(Error::bad_input(
                    url,
                    format!(
                        "lacks column `{}`, which other inputs have and which is {}",
                        field.name(),
                        if required {
                            "required by the contract"
                        } else {
                            "not nullable"
                        }
                    ),
                ));
            }
            *field = field.clone().with_nullable(true);
        }
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// The type an all-null input column (Arrow type Null, what pyarrow writes for a column of
/// `None`s) is read as: its contract type, or a string when the contract does not name it.
fn null_column_type(contract: &Contract, name: &str) -> DataType {
    contract
        .column(name)
        .map_or(DataType::Utf8, |c| c.ty.arrow_type())
}

/// `batch` in the job's schema: columns in order, absent and all-null (type Null) ones as
/// nulls of the job's type.
pub(super) fn adapt(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch);
    }
    let n = batch.num_rows();
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Ok(c.clone()),
            Some(c) if c.data_type() == &DataType::Null => Ok(new_null_array(f.data_type(), n)),
            Some(c) => Err(Error::Internal(format!(
                "column `{}` decoded as {}, expected {}",
                f.name(),
                c.data_type(),
                f.data_type()
            ))),
            None => Ok(new_null_array(f.data_type(), n)),
        })
        .collect::<Result<_>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// Opens and checks every input, reconciles their schemas and loads the foreign keys' key sets
/// (after the file-level checks: a bad input fails before the referenced data is read); returns
/// the inputs, the job's schema and the report's draft of each foreign key.
pub(super) async fn prepare(
    spec: &JobSpec,
) -> Result<(Vec<Prepared>, SchemaRef, Vec<ReferenceCheck>)> {
    let objects = source::resolve(&spec.inputs).await?;
    let mut opened = Vec::with_capacity(objects.len());
    let decoding = source::Decoding {
        contract: spec.contract.clone(),
        csv: spec.csv.clone(),
    };
    for object in objects {
        let mut input = Input::open_raw(object, &decoding).await?;
        if let Some(replay) = &spec.replay {
            input.as_quarantine(&QUARANTINE_COLUMNS, replay.carry.clone())?;
        }
        // File-level checks against the file's own schema: required columns, types.
        Validator::new(&spec.contract, input.schema(), input.url())?;
        opened.push(input);
    }
    let schemas: Vec<(String, SchemaRef)> = opened
        .iter()
        .map(|i| (i.url().to_string(), i.schema().clone()))
        .collect();
    let schema = reconcile(&spec.contract, &schemas)?;
    let (keys, references) = super::references::load(spec).await?;
    let mut prepared = Vec::with_capacity(opened.len());
    for input in opened {
        let url = input.url().to_string();
        let rows = input.rows();
        let validator = Validator::new(&spec.contract, &schema, &url)?
            .with_foreign_keys(&keys, &schema, &url)?;
        prepared.push(Prepared {
            validator: Arc::new(validator),
            plan: if spec.deduplication_enabled {
                DedupPlan::new(&spec.contract, &schema, &url)?.map(Arc::new)
            } else {
                None
            },
            input,
            rows,
            owned: None,
            owned_rows: rows,
        });
    }
    Ok((prepared, schema, references))
}

/// The job's input schema (reconciled across inputs) and the schemas of its two outputs.
pub(super) struct Schemas {
    pub(super) input: SchemaRef,
    pub(super) quarantine: SchemaRef,
    pub(super) curated: SchemaRef,
}

/// Protection plans for the two outputs: quarantine rows keep the input types (a date-time
/// column there is text, scanned for card numbers like any other), curated rows have typed dates.
pub(super) struct Protectors {
    pub(super) quarantine: Arc<Protector>,
    pub(super) curated: Arc<Protector>,
}

impl Schemas {
    /// The schemas of a job whose (reconciled) input schema is `schema`: curated has typed
    /// dates when the job validates.
    pub(super) fn new(spec: &JobSpec, schema: SchemaRef) -> Schemas {
        Schemas {
            quarantine: quarantine_schema(&schema),
            curated: if spec.validation_enabled {
                curated_schema(&spec.contract, &schema)
            } else {
                schema.clone()
            },
            input: schema,
        }
    }
}

impl Protectors {
    /// The job's protection plans for the two outputs' schemas.
    pub(super) fn new(spec: &JobSpec, schemas: &Schemas) -> Protectors {
        let protector = |s: &Schema| {
            Arc::new(Protector::new(
                &spec.contract,
                s,
                spec.pci_enabled,
                &spec.pii_key,
            ))
        };
        Protectors {
            quarantine: protector(&schemas.input),
            curated: protector(&schemas.curated),
        }
    }
}

/// Fails early when the spill directory is missing or not writable, before any output starts.
pub(super) fn check_spill_dir(dir: &std::path::Path) -> Result<()> {
    if !dir.is_dir() {
        return Err(Error::Config(format!(
            "spill directory {} is not a directory",
            dir.display()
        )));
    }
    let probe = tempfile::Builder::new()
        .prefix(".edp-probe-")
        .tempfile_in(dir);
    probe.map(drop).map_err(|e| {
        let message = format!("spill directory {} is not writable: {e}", dir.display());
        // Permissions are the configuration's to fix; a full disk may be free on a retry.
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            Error::Config(message)
        } else {
            Error::Spill(message)
        }
    })
}

/// The number of the job's `i`th input object, as dedup candidates record it.
pub(super) fn file_number(i: usize) -> Result<u32> {
    u32::try_from(i).map_err(|_| Error::Config("too many input objects".into()))
}
