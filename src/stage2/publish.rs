//! What stage 2 publishes besides the files: each prod table as the catalog sees it (columns,
//! location, partitions, the description from the model's header) and the checks' table.

use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};

use super::catalog::{self, TableDef};
use super::model::{Granularity, Model};
use super::write::Staged;
use super::{ProdSpec, VIOLATIONS_TABLE};
use crate::store::Location;
use crate::Result;

/// The catalog's view of a staged model.
pub(super) fn table_def(
    staged: &Staged,
    prefix: &Location,
    description: String,
) -> Result<TableDef> {
    let columns = staged
        .file_schema
        .fields()
        .iter()
        .map(|f| {
            Ok((
                f.name().clone(),
                catalog::hive_type(f.name(), f.data_type())?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(TableDef {
        name: staged.model.clone(),
        location: format!("{}/", prefix.url.trim_end_matches('/')),
        columns,
        partition_keys: staged.partition_keys.clone(),
        partitions: staged
            .partitions
            .values()
            .filter(|(v, _)| !v.is_empty())
            .map(|(v, _)| v.clone())
            .collect(),
        description,
    })
}

pub(super) fn description(m: &Model) -> String {
    m.sql
        .lines()
        .map_while(|l| l.trim_start().strip_prefix("--"))
        .map(str::trim)
        .filter(|l| {
            !l.split_once(':')
                .is_some_and(|(k, _)| k.bytes().all(|c| c.is_ascii_lowercase() || c == b'_'))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The model that holds the checks' rows.
pub(super) fn violations_model(spec: &ProdSpec) -> Model {
    Model {
        name: VIOLATIONS_TABLE.to_string(),
        path: spec.models_dir.join("checks"),
        sql:
            "-- Rows that break a check: the check, the row's keys, what was observed and expected."
                .into(),
        partition_by: None,
        granularity: Granularity::None,
        sort_by: vec!["check".into(), "keys".into()],
        key: Vec::new(),
    }
}

pub(super) fn violations_schema() -> SchemaRef {
    use arrow::datatypes::{Field, Schema};
    Arc::new(Schema::new(
        ["check", "keys", "observed", "expected", "run_id"]
            .iter()
            .map(|n| Field::new(*n, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ))
}
