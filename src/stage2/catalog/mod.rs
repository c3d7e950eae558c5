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
//!
//! The Glue calls (tables, partitions, the crawler) are in `glue.rs`; what Athena reads (Hive
//! types, the DDL, the partition-projection parameters) is in `athena.rs`.

mod athena;
mod glue;

pub use athena::{ddl, hive_type, projection_parameters};

use crate::settings::Catalog;
use crate::{Error, Result};
use glue::{
    check_partitions, ensure_database, put_table, start_crawler, sync_partitions, table_input,
};

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

    /// The mode of the `catalog` setting; `crawler` needs the crawler's name (`glue_crawler`).
    pub fn new(catalog: Catalog, crawler: Option<&str>) -> Result<Self> {
        match (catalog, crawler) {
            (Catalog::Glue, _) => Ok(CatalogMode::Glue),
            (Catalog::Projection, _) => Ok(CatalogMode::Projection),
            (Catalog::None, _) => Ok(CatalogMode::None),
            (Catalog::Crawler, Some(name)) if !name.is_empty() => {
                Ok(CatalogMode::Crawler(name.to_string()))
            }
            (Catalog::Crawler, _) => Err(Error::Config(
                "--catalog crawler needs the crawler's name (glue_crawler, --glue-crawler)".into(),
            )),
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

#[cfg(test)]
mod tests {
    use super::TableDef;

    /// `fact_orders`, partitioned by day, with `partitions` (the table of the Glue and Athena
    /// tests).
    pub(super) fn daily(partitions: &[[&str; 3]]) -> TableDef {
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
}
