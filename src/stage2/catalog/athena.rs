//! What Athena reads of a prod table: the Hive type of each column, the `CREATE EXTERNAL TABLE`
//! DDL, the partition-projection parameters, and the quoting and property spellings they share.

use std::collections::{BTreeMap, BTreeSet};

use arrow::datatypes::DataType;

use super::TableDef;
use crate::{Error, Result};

/// Year range of a projected table that has no partition yet.
const DEFAULT_YEAR_RANGE: &str = "2000,2100";

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

/// The `parquet.compression` property for a codec name: `zstd`, `zstd(3)` → `ZSTD`, `none` →
/// `UNCOMPRESSED`, empty → `ZSTD`.
pub(super) fn compression_property(compression: &str) -> String {
    let codec = compression.split('(').next().unwrap_or_default().trim();
    match codec.to_ascii_lowercase().as_str() {
        "" => "ZSTD".to_string(),
        "none" | "uncompressed" => "UNCOMPRESSED".to_string(),
        other => other.to_ascii_uppercase(),
    }
}

/// `location` with a trailing slash.
pub(super) fn dir(location: &str) -> String {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::datatypes::{Field, Fields, TimeUnit};

    use super::super::tests::daily;
    use super::*;

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
    fn compression_names() {
        assert_eq!(compression_property("zstd"), "ZSTD");
        assert_eq!(compression_property("zstd(3)"), "ZSTD");
        assert_eq!(compression_property("Snappy"), "SNAPPY");
        assert_eq!(compression_property("none"), "UNCOMPRESSED");
        assert_eq!(compression_property(""), "ZSTD");
    }
}
