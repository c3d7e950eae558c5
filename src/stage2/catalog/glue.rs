//! The Glue side of [`update`](super::update): the database, each table, its partitions (diffed
//! and batched within the API limits) and the crawler, every step idempotent.

use std::collections::BTreeSet;
use std::fmt;

use aws_sdk_glue::error::DisplayErrorContext;
use aws_sdk_glue::operation::create_database::CreateDatabaseError;
use aws_sdk_glue::operation::start_crawler::StartCrawlerError;
use aws_sdk_glue::operation::update_table::UpdateTableError;
use aws_sdk_glue::types::{
    Column, DatabaseInput, ErrorDetail, PartitionError, PartitionInput, PartitionValueList,
    SerDeInfo, StorageDescriptor, TableInput,
};

use super::athena::{compression_property, dir, projection_parameters};
use super::TableDef;
use crate::{Error, Result};

/// Hive SerDe of Parquet tables.
const PARQUET_SERDE: &str = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe";
/// Input format of Parquet tables.
const PARQUET_INPUT_FORMAT: &str = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat";
/// Output format of Parquet tables.
const PARQUET_OUTPUT_FORMAT: &str =
    "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat";
/// Most partitions one `BatchCreatePartition` accepts.
const CREATE_BATCH: usize = 100;
/// Most partitions one `BatchDeletePartition` accepts.
const DELETE_BATCH: usize = 25;
/// Page size of `GetPartitions` (the API's maximum).
const LIST_PAGE: i32 = 1000;
/// Partition errors listed in a failure message; the rest are counted.
const ERRORS_SHOWN: usize = 5;

/// Every partition of `table` has one value per key (a bug in the caller otherwise).
pub(super) fn check_partitions(database: &str, table: &TableDef) -> Result<()> {
    let keys = table.partition_keys.len();
    match table.partitions.iter().find(|values| values.len() != keys) {
        Some(values) => Err(Error::Internal(format!(
            "catalog {database}.{}: partition {values:?} has {} values for the {keys} keys {:?}",
            table.name,
            values.len(),
            table.partition_keys
        ))),
        None => Ok(()),
    }
}

/// Creates `database`; one that already exists is fine.
pub(super) async fn ensure_database(glue: &aws_sdk_glue::Client, database: &str) -> Result<()> {
    let input = DatabaseInput::builder()
        .name(database)
        .build()
        .map_err(|e| Error::Internal(format!("Glue database input {database}: {e}")))?;
    match glue.create_database().database_input(input).send().await {
        Ok(_) => {
            tracing::info!(database = %database, "Glue database created");
            Ok(())
        }
        Err(e)
            if e.as_service_error()
                .is_some_and(CreateDatabaseError::is_already_exists_exception) =>
        {
            Ok(())
        }
        Err(e) => Err(sdk_error(format_args!("create database {database}"), &e)),
    }
}

/// Updates the table `input` describes, or creates it when it does not exist yet.
pub(super) async fn put_table(
    glue: &aws_sdk_glue::Client,
    database: &str,
    input: TableInput,
) -> Result<()> {
    let name = input.name().to_string();
    let updated = glue
        .update_table()
        .database_name(database)
        .table_input(input.clone())
        .send()
        .await;
    match updated {
        Ok(_) => tracing::info!(database = %database, table = %name, "Glue table updated"),
        Err(e)
            if e.as_service_error()
                .is_some_and(UpdateTableError::is_entity_not_found_exception) =>
        {
            glue.create_table()
                .database_name(database)
                .table_input(input)
                .send()
                .await
                .map_err(|e| sdk_error(format_args!("create table {database}.{name}"), &e))?;
            tracing::info!(database = %database, table = %name, "Glue table created");
        }
        Err(e) => {
            return Err(sdk_error(
                format_args!("update table {database}.{name}"),
                &e,
            ))
        }
    }
    Ok(())
}

/// Makes the Glue partitions of `table` exactly `table.partitions`; returns (added, removed).
pub(super) async fn sync_partitions(
    glue: &aws_sdk_glue::Client,
    database: &str,
    table: &TableDef,
) -> Result<(usize, usize)> {
    if table.partition_keys.is_empty() {
        return Ok((0, 0));
    }
    let existing = existing_partitions(glue, database, &table.name).await?;
    let wanted: BTreeSet<Vec<String>> = table.partitions.iter().cloned().collect();
    let to_add: Vec<&Vec<String>> = wanted.difference(&existing).collect();
    let to_remove: Vec<&Vec<String>> = existing.difference(&wanted).collect();

    let base = storage_descriptor(table)?;
    let mut added = 0;
    for chunk in to_add.chunks(CREATE_BATCH) {
        let inputs: Vec<PartitionInput> = chunk
            .iter()
            .map(|values| partition_input(table, &base, values))
            .collect();
        let out = glue
            .batch_create_partition()
            .database_name(database)
            .table_name(&table.name)
            .set_partition_input_list(Some(inputs))
            .send()
            .await
            .map_err(|e| {
                sdk_error(
                    format_args!("create partitions of {database}.{}", table.name),
                    &e,
                )
            })?;
        // A partition that exists already (a concurrent run added it) is what we want.
        let present = check_batch(
            "create partitions",
            database,
            table,
            out.errors(),
            "AlreadyExistsException",
        )?;
        added += chunk.len().saturating_sub(present);
    }

    let mut removed = 0;
    for chunk in to_remove.chunks(DELETE_BATCH) {
        let values = chunk
            .iter()
            .map(|values| {
                PartitionValueList::builder()
                    .set_values(Some(values.to_vec()))
                    .build()
                    .map_err(|e| {
                        Error::Internal(format!(
                            "Glue partition values of {database}.{}: {e}",
                            table.name
                        ))
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let out = glue
            .batch_delete_partition()
            .database_name(database)
            .table_name(&table.name)
            .set_partitions_to_delete(Some(values))
            .send()
            .await
            .map_err(|e| {
                sdk_error(
                    format_args!("delete partitions of {database}.{}", table.name),
                    &e,
                )
            })?;
        // A partition already gone (a concurrent run removed it) is what we want.
        let gone = check_batch(
            "delete partitions",
            database,
            table,
            out.errors(),
            "EntityNotFoundException",
        )?;
        removed += chunk.len().saturating_sub(gone);
    }
    tracing::info!(
        database = %database,
        table = %table.name,
        added,
        removed,
        kept = wanted.len() - to_add.len(),
        "Glue partitions synced"
    );
    Ok((added, removed))
}

/// Values of every partition of `database.table` in Glue.
async fn existing_partitions(
    glue: &aws_sdk_glue::Client,
    database: &str,
    table: &str,
) -> Result<BTreeSet<Vec<String>>> {
    let mut found = BTreeSet::new();
    let mut next_token: Option<String> = None;
    loop {
        let out = glue
            .get_partitions()
            .database_name(database)
            .table_name(table)
            .exclude_column_schema(true)
            .max_results(LIST_PAGE)
            .set_next_token(next_token.take())
            .send()
            .await
            .map_err(|e| sdk_error(format_args!("list partitions of {database}.{table}"), &e))?;
        found.extend(out.partitions().iter().map(|p| p.values().to_vec()));
        match out.next_token() {
            Some(token) if !token.is_empty() => next_token = Some(token.to_string()),
            _ => return Ok(found),
        }
    }
}

/// Fails when a batch reported errors other than `benign`; returns how many were `benign`.
fn check_batch(
    action: &str,
    database: &str,
    table: &TableDef,
    errors: &[PartitionError],
    benign: &str,
) -> Result<usize> {
    let mut tolerated = 0;
    let mut failed = Vec::new();
    for error in errors {
        let detail = error.error_detail();
        let code = detail
            .and_then(ErrorDetail::error_code)
            .unwrap_or("unknown error");
        if code == benign {
            tolerated += 1;
            continue;
        }
        let message = detail
            .and_then(ErrorDetail::error_message)
            .unwrap_or_default();
        let partition = partition_name(&table.partition_keys, error.partition_values());
        failed.push(format!("{partition} ({code}: {message})"));
    }
    if failed.is_empty() {
        return Ok(tolerated);
    }
    let shown: Vec<&str> = failed
        .iter()
        .take(ERRORS_SHOWN)
        .map(String::as_str)
        .collect();
    let more = match failed.len().saturating_sub(ERRORS_SHOWN) {
        0 => String::new(),
        n => format!("; and {n} more"),
    };
    Err(Error::Catalog(format!(
        "{action} of {database}.{}: {} failed: {}{more}",
        table.name,
        failed.len(),
        shown.join("; ")
    )))
}

/// Starts crawler `name`; one that is running already is fine.
pub(super) async fn start_crawler(
    glue: &aws_sdk_glue::Client,
    database: &str,
    name: &str,
) -> Result<()> {
    match glue.start_crawler().name(name).send().await {
        Ok(_) => tracing::info!(crawler = %name, database = %database, "Glue crawler started"),
        Err(e)
            if e.as_service_error()
                .is_some_and(StartCrawlerError::is_crawler_running_exception) =>
        {
            tracing::info!(crawler = %name, database = %database, "Glue crawler already running");
        }
        Err(e) => {
            return Err(sdk_error(
                format_args!("start crawler {name} for database {database}"),
                &e,
            ));
        }
    }
    Ok(())
}

/// The Glue table of `table`: external Parquet, string partition keys, and the parameters
/// Athena reads (plus the projection ones when `projection`).
pub(super) fn table_input(
    table: &TableDef,
    compression: &str,
    projection: bool,
) -> Result<TableInput> {
    let partition_keys = table
        .partition_keys
        .iter()
        .map(|key| column(table, key, "string"))
        .collect::<Result<Vec<_>>>()?;
    let mut builder = TableInput::builder()
        .name(&table.name)
        .table_type("EXTERNAL_TABLE")
        .storage_descriptor(storage_descriptor(table)?)
        .set_partition_keys(Some(partition_keys))
        // What Athena's own CREATE EXTERNAL TABLE records.
        .parameters("EXTERNAL", "TRUE")
        .parameters("classification", "parquet")
        .parameters("parquet.compression", compression_property(compression));
    if !table.description.is_empty() {
        builder = builder.description(&table.description);
    }
    if projection {
        for (key, value) in projection_parameters(table) {
            builder = builder.parameters(key, value);
        }
    }
    builder
        .build()
        .map_err(|e| Error::Internal(format!("Glue table input {}: {e}", table.name)))
}

/// Columns, location and Parquet SerDe of `table`; partitions copy it with their own location.
fn storage_descriptor(table: &TableDef) -> Result<StorageDescriptor> {
    let columns = table
        .columns
        .iter()
        .map(|(name, ty)| column(table, name, ty))
        .collect::<Result<Vec<_>>>()?;
    let serde = SerDeInfo::builder()
        .serialization_library(PARQUET_SERDE)
        .parameters("serialization.format", "1")
        .build();
    Ok(StorageDescriptor::builder()
        .set_columns(Some(columns))
        .location(dir(&table.location))
        .input_format(PARQUET_INPUT_FORMAT)
        .output_format(PARQUET_OUTPUT_FORMAT)
        .serde_info(serde)
        .build())
}

/// A Glue column `name` of Hive type `ty` in `table`.
fn column(table: &TableDef, name: &str, ty: &str) -> Result<Column> {
    Column::builder()
        .name(name)
        .r#type(ty)
        .build()
        .map_err(|e| Error::Internal(format!("Glue column {name} of table {}: {e}", table.name)))
}

/// The Glue partition `values` of `table`: the table's storage descriptor at
/// `<location>year=2025/month=01/day=16/`.
fn partition_input(
    table: &TableDef,
    base: &StorageDescriptor,
    values: &[String],
) -> PartitionInput {
    let mut descriptor = base.clone();
    descriptor.location = Some(format!(
        "{}{}/",
        dir(&table.location),
        partition_name(&table.partition_keys, values)
    ));
    PartitionInput::builder()
        .set_values(Some(values.to_vec()))
        .storage_descriptor(descriptor)
        .build()
}

/// `year=2025/month=01/day=16` for `values` of `keys`.
fn partition_name(keys: &[String], values: &[String]) -> String {
    keys.iter()
        .zip(values)
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join("/")
}

/// An SDK failure while doing `action`, with the whole error chain.
fn sdk_error(action: impl fmt::Display, e: &impl std::error::Error) -> Error {
    Error::Catalog(format!("{action}: {}", DisplayErrorContext(e)))
}

#[cfg(test)]
mod tests {
    use super::super::tests::daily;
    use super::*;

    #[test]
    fn glue_table_and_partition_inputs() {
        let table = daily(&[["2025", "01", "16"]]);
        let input = table_input(&table, "snappy", false).unwrap();
        assert_eq!(input.name(), "fact_orders");
        assert_eq!(input.table_type(), Some("EXTERNAL_TABLE"));
        assert_eq!(input.description(), Some("Orders, one row per order"));
        let keys: Vec<_> = input
            .partition_keys()
            .iter()
            .map(|c| (c.name(), c.r#type()))
            .collect();
        assert_eq!(
            keys,
            [
                ("year", Some("string")),
                ("month", Some("string")),
                ("day", Some("string"))
            ]
        );
        let params = input.parameters().unwrap();
        assert_eq!(params["classification"], "parquet");
        assert_eq!(params["parquet.compression"], "SNAPPY");
        assert!(!params.contains_key("projection.enabled"));
        let sd = input.storage_descriptor().unwrap();
        assert_eq!(sd.location(), Some("s3://prod/ecommerce/fact_orders/"));
        assert_eq!(sd.input_format(), Some(PARQUET_INPUT_FORMAT));
        assert_eq!(sd.output_format(), Some(PARQUET_OUTPUT_FORMAT));
        assert_eq!(
            sd.serde_info().and_then(|s| s.serialization_library()),
            Some(PARQUET_SERDE)
        );
        let columns: Vec<_> = sd
            .columns()
            .iter()
            .map(|c| (c.name(), c.r#type()))
            .collect();
        assert_eq!(
            columns,
            [
                ("order_id", Some("string")),
                ("total", Some("decimal(18,2)"))
            ]
        );

        let partition = partition_input(&table, sd, &table.partitions[0]);
        assert_eq!(partition.values(), ["2025", "01", "16"]);
        let psd = partition.storage_descriptor().unwrap();
        assert_eq!(
            psd.location(),
            Some("s3://prod/ecommerce/fact_orders/year=2025/month=01/day=16/")
        );
        assert_eq!(psd.columns(), sd.columns());

        let projected = table_input(&table, "zstd", true).unwrap();
        let params = projected.parameters().unwrap();
        assert_eq!(params["projection.enabled"], "true");
        assert_eq!(params["projection.year.range"], "2025,2025");
        assert_eq!(params["parquet.compression"], "ZSTD");
    }

    #[test]
    fn partitions_must_match_the_keys() {
        let mut table = daily(&[["2025", "01", "16"]]);
        assert!(check_partitions("analytics", &table).is_ok());
        table.partitions.push(vec!["2025".into(), "01".into()]);
        let err = check_partitions("analytics", &table).unwrap_err();
        assert!(err.to_string().contains("analytics.fact_orders"), "{err}");
    }

    #[test]
    fn batch_errors() {
        let table = daily(&[]);
        let error = |code: &str| {
            PartitionError::builder()
                .partition_values("2025")
                .partition_values("01")
                .partition_values("16")
                .error_detail(
                    ErrorDetail::builder()
                        .error_code(code)
                        .error_message("boom")
                        .build(),
                )
                .build()
        };
        let benign = [error("AlreadyExistsException")];
        let tolerated = check_batch(
            "create partitions",
            "db",
            &table,
            &benign,
            "AlreadyExistsException",
        );
        assert_eq!(tolerated.unwrap(), 1);
        let bad = [
            error("AlreadyExistsException"),
            error("InternalServiceException"),
        ];
        let err = check_batch(
            "create partitions",
            "db",
            &table,
            &bad,
            "AlreadyExistsException",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("db.fact_orders"), "{err}");
        assert!(
            err.contains("year=2025/month=01/day=16 (InternalServiceException: boom)"),
            "{err}"
        );
    }
}
