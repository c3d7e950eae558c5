//! The catalog of the prod tables: what Athena needs to know to query what stage 2 wrote.
//!
//! A prod table is Parquet under `s3://…/<model>/` with Hive partitions
//! (`year=YYYY/month=MM/day=DD/`, zero-padded strings). After a successful write, [`update`]
//! tells the AWS Glue Data Catalog about each table in one of the ways [`CatalogMode`] names:
//!
//! - **Glue**: the table and its partitions are registered. Partitions are diffed against the
//!   catalog (`GetPartitions`), so a rerun adds only what is missing and drops what is no longer
//!   written. Batches follow the API limits: 100 partitions per `BatchCreatePartition`, 25 per
//!   `BatchDeletePartition`.
//! - **Projection**: the table carries partition-projection properties and Athena computes the
//!   partitions from them; no partition calls, however many partitions a table has. Year ranges
//!   come from the partitions written, so every rerun widens them as data arrives.
//! - **Crawler**: the tables are registered as in Glue mode and a crawler the deployment owns is
//!   started to discover the partitions.
//! - **None**: the catalog is someone else's job.
//!
//! Tables are updated in place (`UpdateTable`, then `CreateTable` if missing) rather than dropped
//! and recreated: a query never sees the table missing, and grants on it survive. Every step is
//! idempotent, so a failure maps to [`Error::Catalog`], which is retryable: the data is already
//! written and a rerun repeats only the catalog update. [`ddl`] gives the same table as Athena
//! DDL, for deployments that manage tables with SQL and for documentation.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use arrow::datatypes::DataType;
use aws_sdk_glue::error::DisplayErrorContext;
use aws_sdk_glue::operation::create_database::CreateDatabaseError;
use aws_sdk_glue::operation::start_crawler::StartCrawlerError;
use aws_sdk_glue::operation::update_table::UpdateTableError;
use aws_sdk_glue::types::{
    Column, DatabaseInput, ErrorDetail, PartitionError, PartitionInput, PartitionValueList,
    SerDeInfo, StorageDescriptor, TableInput,
};

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
/// Year range of a projected table that has no partition yet.
const DEFAULT_YEAR_RANGE: &str = "2000,2100";
/// Partition errors listed in a failure message; the rest are counted.
const ERRORS_SHOWN: usize = 5;

/// One prod table as the catalog should know it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableDef {
    /// Model name, e.g. `fact_orders`.
    pub name: String,
    /// `s3://bucket/prefix/fact_orders/` (a missing trailing slash is added).
    pub location: String,
    /// `(name, hive type)` of the columns inside the files (see [`hive_type`]).
    pub columns: Vec<(String, String)>,
    /// Hive partition keys, outermost first, all of Hive type `string`: `["year", "month",
    /// "day"]`, `["year", "month"]` or none.
    pub partition_keys: Vec<String>,
    /// Values of every partition the table has (one value per key), e.g. `["2025", "01", "16"]`.
    /// In Glue mode, catalog partitions not listed here are removed.
    pub partitions: Vec<Vec<String>>,
    /// Table comment.
    pub description: String,
}

/// How [`update`] keeps the catalog current.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogMode {
    /// Tables and partitions registered in Glue.
    Glue,
    /// Tables registered with partition projection; no partitions in Glue.
    Projection,
    /// Tables registered, then the named Glue crawler started to find the partitions.
    Crawler(String),
    /// The catalog is not touched.
    None,
}

impl CatalogMode {
    /// The mode's name, as `--catalog` spells it.
    pub fn name(&self) -> &'static str {
        match self {
            CatalogMode::Glue => "glue",
            CatalogMode::Projection => "projection",
            CatalogMode::Crawler(_) => "crawler",
            CatalogMode::None => "none",
        }
    }

    /// `glue`, `projection`, `crawler` (with the crawler's name) or `none`.
    pub fn parse(mode: &str, crawler: Option<&str>) -> Result<Self> {
        match (mode, crawler) {
            ("glue", _) => Ok(CatalogMode::Glue),
            ("projection", _) => Ok(CatalogMode::Projection),
            ("none", _) => Ok(CatalogMode::None),
            ("crawler", Some(name)) if !name.is_empty() => {
                Ok(CatalogMode::Crawler(name.to_string()))
            }
            ("crawler", _) => Err(Error::Config(
                "--catalog crawler needs the crawler's name (glue_crawler, --glue-crawler)".into(),
            )),
            (other, _) => Err(Error::Config(format!(
                "catalog `{other}`: expected glue, projection, crawler or none"
            ))),
        }
    }
}

/// What [`update`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CatalogStats {
    /// Tables created or updated.
    pub tables: usize,
    /// Partitions added to Glue.
    pub partitions_added: usize,
    /// Partitions removed from Glue.
    pub partitions_removed: usize,
}

/// Hive/Athena type of an Arrow column: integers to `tinyint`…`bigint` (unsigned ones to the
/// next wider signed type, `UInt64` to `decimal(20,0)`), floats to `float`/`double`, strings to
/// `string`, `Date32` to `date`, timestamps to `timestamp`, decimals to `decimal(p,s)`, binaries
/// to `binary`. Any other type (nested, intervals, times…) is a configuration error naming
/// `column`.
pub fn hive_type(column: &str, dt: &DataType) -> Result<String> {
    let hive = match dt {
        DataType::Boolean => "boolean",
        DataType::Int8 => "tinyint",
        DataType::Int16 | DataType::UInt8 => "smallint",
        DataType::Int32 | DataType::UInt16 => "int",
        DataType::Int64 | DataType::UInt32 => "bigint",
        DataType::UInt64 => "decimal(20,0)",
        DataType::Float32 => "float",
        DataType::Float64 => "double",
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string",
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "binary",
        DataType::Date32 => "date",
        DataType::Timestamp(_, _) => "timestamp",
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) | DataType::Decimal128(p, s)
            if *s >= 0 =>
        {
            return Ok(format!("decimal({p},{s})"));
        }
        other => {
            return Err(Error::Config(format!(
                "column `{column}`: Arrow type {other} has no Hive/Athena equivalent; \
                 cast it in the model (for example to a string, bigint, double or decimal)"
            )));
        }
    };
    Ok(hive.to_string())
}

/// Athena DDL that creates `table` in `database`: `CREATE EXTERNAL TABLE IF NOT EXISTS`, the
/// columns, the comment, `PARTITIONED BY` the keys (as strings), `STORED AS PARQUET`, the
/// location and `TBLPROPERTIES` with `parquet.compression` (from `compression`, e.g. `zstd`;
/// `ZSTD` when empty) and, when `projection`, the [`projection_parameters`].
pub fn ddl(database: &str, table: &TableDef, compression: &str, projection: bool) -> String {
    let columns: Vec<String> = table
        .columns
        .iter()
        .map(|(name, ty)| format!("  {} {ty}", ident(name)))
        .collect();
    let mut parts = vec![format!(
        "CREATE EXTERNAL TABLE IF NOT EXISTS {}.{} (\n{}\n)",
        ident(database),
        ident(&table.name),
        columns.join(",\n")
    )];
    if !table.description.is_empty() {
        parts.push(format!("COMMENT {}", literal(&table.description)));
    }
    if !table.partition_keys.is_empty() {
        let keys: Vec<String> = table
            .partition_keys
            .iter()
            .map(|key| format!("  {} string", ident(key)))
            .collect();
        parts.push(format!("PARTITIONED BY (\n{}\n)", keys.join(",\n")));
    }
    parts.push("STORED AS PARQUET".to_string());
    parts.push(format!("LOCATION {}", literal(&dir(&table.location))));
    let mut properties = vec![(
        "parquet.compression".to_string(),
        compression_property(compression),
    )];
    if projection {
        properties.extend(projection_parameters(table));
    }
    let properties: Vec<String> = properties
        .iter()
        .map(|(key, value)| format!("  {}={}", literal(key), literal(value)))
        .collect();
    parts.push(format!("TBLPROPERTIES (\n{}\n)", properties.join(",\n")));
    parts.join("\n")
}

/// Partition-projection table parameters for `table`: `projection.enabled=true`; `year` an
/// integer ranging over the years written (`2000,2100` when none is), `month` `1,12` and `day`
/// `1,31`, both with 2 digits (`01`); any other key an `enum` of the values written (`injected`
/// when none is); and `storage.location.template` with the keys the table has, e.g.
/// `s3://…/fact_orders/year=${year}/month=${month}/day=${day}/`. An unpartitioned table gets no
/// parameters: there is nothing to project.
pub fn projection_parameters(table: &TableDef) -> BTreeMap<String, String> {
    let mut params = BTreeMap::new();
    if table.partition_keys.is_empty() {
        return params;
    }
    params.insert("projection.enabled".to_string(), "true".to_string());
    let mut template = dir(&table.location);
    for (i, key) in table.partition_keys.iter().enumerate() {
        let written = || {
            table
                .partitions
                .iter()
                .filter_map(move |values| values.get(i))
        };
        let mut set = |property: &str, value: String| {
            params.insert(format!("projection.{key}.{property}"), value);
        };
        match key.as_str() {
            "year" => {
                let years: BTreeSet<i64> = written().filter_map(|v| v.parse().ok()).collect();
                let range = match (years.first(), years.last()) {
                    (Some(first), Some(last)) => format!("{first},{last}"),
                    _ => DEFAULT_YEAR_RANGE.to_string(),
                };
                set("type", "integer".to_string());
                set("range", range);
            }
            "month" | "day" => {
                let last = if key == "month" { 12 } else { 31 };
                set("type", "integer".to_string());
                set("range", format!("1,{last}"));
                set("digits", "2".to_string());
            }
            _ => {
                let values: BTreeSet<&str> = written().map(String::as_str).collect();
                if values.is_empty() {
                    set("type", "injected".to_string());
                } else {
                    set("type", "enum".to_string());
                    set("values", values.into_iter().collect::<Vec<_>>().join(","));
                }
            }
        }
        template.push_str(&format!("{key}=${{{key}}}/"));
    }
    params.insert("storage.location.template".to_string(), template);
    params
}

/// Updates the Glue catalog after a successful write of `tables` (see the module docs for the
/// modes). Creates `database` if missing, creates or updates each table (external Parquet,
/// `parquet.compression` from `compression`), then in Glue mode syncs the partitions and in
/// Crawler mode starts the crawler. Does nothing in `None` mode.
pub async fn update(
    mode: &CatalogMode,
    database: &str,
    compression: &str,
    tables: &[TableDef],
) -> Result<CatalogStats> {
    let mut stats = CatalogStats::default();
    if *mode == CatalogMode::None {
        return Ok(stats);
    }
    for table in tables {
        check_partitions(database, table)?;
    }
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let glue = aws_sdk_glue::Client::new(&config);
    ensure_database(&glue, database).await?;
    let projection = *mode == CatalogMode::Projection;
    for table in tables {
        let input = table_input(table, compression, projection)?;
        put_table(&glue, database, input).await?;
        stats.tables += 1;
        if *mode == CatalogMode::Glue {
            let (added, removed) = sync_partitions(&glue, database, table).await?;
            stats.partitions_added += added;
            stats.partitions_removed += removed;
        }
    }
    if let CatalogMode::Crawler(name) = mode {
        start_crawler(&glue, database, name).await?;
    }
    tracing::info!(
        database = %database,
        tables = stats.tables,
        partitions_added = stats.partitions_added,
        partitions_removed = stats.partitions_removed,
        "catalog updated"
    );
    Ok(stats)
}

/// Every partition of `table` has one value per key (a bug in the caller otherwise).
fn check_partitions(database: &str, table: &TableDef) -> Result<()> {
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
async fn ensure_database(glue: &aws_sdk_glue::Client, database: &str) -> Result<()> {
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
async fn put_table(glue: &aws_sdk_glue::Client, database: &str, input: TableInput) -> Result<()> {
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
async fn sync_partitions(
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
async fn start_crawler(glue: &aws_sdk_glue::Client, database: &str, name: &str) -> Result<()> {
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
fn table_input(table: &TableDef, compression: &str, projection: bool) -> Result<TableInput> {
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

/// The `parquet.compression` property for a codec name: `zstd`, `zstd(3)` → `ZSTD`, `none` →
/// `UNCOMPRESSED`, empty → `ZSTD`.
fn compression_property(compression: &str) -> String {
    let codec = compression.split('(').next().unwrap_or_default().trim();
    match codec.to_ascii_lowercase().as_str() {
        "" => "ZSTD".to_string(),
        "none" | "uncompressed" => "UNCOMPRESSED".to_string(),
        other => other.to_ascii_uppercase(),
    }
}

/// `location` with a trailing slash.
fn dir(location: &str) -> String {
    if location.ends_with('/') {
        location.to_string()
    } else {
        format!("{location}/")
    }
}

/// A backquoted Hive identifier.
fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A single-quoted Hive string literal (Hive escapes with backslashes).
fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// An SDK failure while doing `action`, with the whole error chain.
fn sdk_error(action: impl fmt::Display, e: &impl std::error::Error) -> Error {
    Error::Catalog(format!("{action}: {}", DisplayErrorContext(e)))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::datatypes::{Field, Fields, TimeUnit};

    use super::*;

    fn daily(partitions: &[[&str; 3]]) -> TableDef {
        TableDef {
            name: "fact_orders".into(),
            location: "s3://prod/ecommerce/fact_orders/".into(),
            columns: vec![
                ("order_id".into(), "string".into()),
                ("total".into(), "decimal(18,2)".into()),
            ],
            partition_keys: vec!["year".into(), "month".into(), "day".into()],
            partitions: partitions
                .iter()
                .map(|p| p.iter().map(|v| v.to_string()).collect())
                .collect(),
            description: "Orders, one row per order".into(),
        }
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn hive_types() {
        let cases = [
            (DataType::Boolean, "boolean"),
            (DataType::Int8, "tinyint"),
            (DataType::Int16, "smallint"),
            (DataType::Int32, "int"),
            (DataType::Int64, "bigint"),
            (DataType::UInt8, "smallint"),
            (DataType::UInt16, "int"),
            (DataType::UInt32, "bigint"),
            (DataType::UInt64, "decimal(20,0)"),
            (DataType::Float32, "float"),
            (DataType::Float64, "double"),
            (DataType::Utf8, "string"),
            (DataType::LargeUtf8, "string"),
            (DataType::Utf8View, "string"),
            (DataType::Binary, "binary"),
            (DataType::Date32, "date"),
            (
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                "timestamp",
            ),
            (
                DataType::Timestamp(TimeUnit::Microsecond, None),
                "timestamp",
            ),
            (DataType::Decimal128(18, 2), "decimal(18,2)"),
        ];
        for (dt, expected) in cases {
            assert_eq!(hive_type("c", &dt).unwrap(), expected, "{dt}");
        }
    }

    #[test]
    fn unsupported_types_name_the_column() {
        let unsupported = [
            DataType::Null,
            DataType::Time64(TimeUnit::Microsecond),
            DataType::Decimal128(10, -2),
            DataType::List(Arc::new(Field::new("item", DataType::Int32, true))),
            DataType::Struct(Fields::empty()),
        ];
        for dt in unsupported {
            let err = hive_type("shipping", &dt).unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{dt}: {err}");
            assert!(err.to_string().contains("`shipping`"), "{err}");
        }
    }

    #[test]
    fn ddl_of_a_small_table() {
        let mut table = daily(&[["2025", "01", "16"]]);
        table.name = "daily_sales".into();
        table.location = "s3://prod/daily_sales".into();
        table.partition_keys.truncate(2);
        table.partitions = vec![];
        table.description = "Sales per day; the shop's view".into();
        let expected = "\
CREATE EXTERNAL TABLE IF NOT EXISTS `analytics`.`daily_sales` (
  `order_id` string,
  `total` decimal(18,2)
)
COMMENT 'Sales per day; the shop\\'s view'
PARTITIONED BY (
  `year` string,
  `month` string
)
STORED AS PARQUET
LOCATION 's3://prod/daily_sales/'
TBLPROPERTIES (
  'parquet.compression'='ZSTD'
)";
        assert_eq!(ddl("analytics", &table, "zstd", false), expected);
    }

    #[test]
    fn ddl_of_an_unpartitioned_projected_table() {
        let table = TableDef {
            name: "dim_customer".into(),
            location: "s3://prod/dim_customer/".into(),
            columns: vec![("customer id".into(), "bigint".into())],
            ..TableDef::default()
        };
        let expected = "\
CREATE EXTERNAL TABLE IF NOT EXISTS `analytics`.`dim_customer` (
  `customer id` bigint
)
STORED AS PARQUET
LOCATION 's3://prod/dim_customer/'
TBLPROPERTIES (
  'parquet.compression'='SNAPPY'
)";
        assert_eq!(ddl("analytics", &table, "snappy", true), expected);
    }

    #[test]
    fn ddl_with_projection() {
        let sql = ddl("analytics", &daily(&[["2024", "12", "31"]]), "", true);
        let properties = "TBLPROPERTIES (
  'parquet.compression'='ZSTD',
  'projection.day.digits'='2',
  'projection.day.range'='1,31',
  'projection.day.type'='integer',
  'projection.enabled'='true',
  'projection.month.digits'='2',
  'projection.month.range'='1,12',
  'projection.month.type'='integer',
  'projection.year.range'='2024,2024',
  'projection.year.type'='integer',
  'storage.location.template'=\
's3://prod/ecommerce/fact_orders/year=${year}/month=${month}/day=${day}/'
)";
        assert!(sql.ends_with(properties), "{sql}");
    }

    #[test]
    fn projection_of_a_daily_table() {
        let table = daily(&[
            ["2025", "01", "16"],
            ["2023", "12", "31"],
            ["2024", "02", "29"],
        ]);
        let expected = map(&[
            ("projection.enabled", "true"),
            ("projection.year.type", "integer"),
            ("projection.year.range", "2023,2025"),
            ("projection.month.type", "integer"),
            ("projection.month.range", "1,12"),
            ("projection.month.digits", "2"),
            ("projection.day.type", "integer"),
            ("projection.day.range", "1,31"),
            ("projection.day.digits", "2"),
            (
                "storage.location.template",
                "s3://prod/ecommerce/fact_orders/year=${year}/month=${month}/day=${day}/",
            ),
        ]);
        assert_eq!(projection_parameters(&table), expected);
    }

    #[test]
    fn projection_of_a_monthly_table_without_partitions() {
        let mut table = daily(&[]);
        table.partition_keys.truncate(2);
        let expected = map(&[
            ("projection.enabled", "true"),
            ("projection.year.type", "integer"),
            ("projection.year.range", "2000,2100"),
            ("projection.month.type", "integer"),
            ("projection.month.range", "1,12"),
            ("projection.month.digits", "2"),
            (
                "storage.location.template",
                "s3://prod/ecommerce/fact_orders/year=${year}/month=${month}/",
            ),
        ]);
        assert_eq!(projection_parameters(&table), expected);
    }

    #[test]
    fn projection_of_other_keys_and_of_unpartitioned_tables() {
        let table = TableDef {
            location: "s3://prod/t".into(),
            partition_keys: vec!["region".into()],
            partitions: vec![vec!["eu".into()], vec!["us".into()], vec!["eu".into()]],
            ..TableDef::default()
        };
        let params = projection_parameters(&table);
        assert_eq!(params["projection.region.type"], "enum");
        assert_eq!(params["projection.region.values"], "eu,us");
        assert_eq!(
            params["storage.location.template"],
            "s3://prod/t/region=${region}/"
        );

        let unpartitioned = TableDef {
            partition_keys: vec![],
            ..table
        };
        assert!(projection_parameters(&unpartitioned).is_empty());
    }

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

    #[test]
    fn compression_names() {
        assert_eq!(compression_property("zstd"), "ZSTD");
        assert_eq!(compression_property("zstd(3)"), "ZSTD");
        assert_eq!(compression_property("Snappy"), "SNAPPY");
        assert_eq!(compression_property("none"), "UNCOMPRESSED");
        assert_eq!(compression_property(""), "ZSTD");
    }
}
