//! Models and checks: SQL files with a small header of settings.
//!
//! A model is `<models>/<name>.sql`: one SELECT over current-state tables (named by dataset) and
//! earlier models (named by model). A check is `<models>/checks/<name>.sql`: a SELECT of the rows
//! that break a rule, with the columns `keys`, `observed` and `expected`. The header is the
//! leading run of `--` comment lines; a comment line of the form `-- setting: value` sets one of
//! the settings below (dbt keeps them in a `config()` block; a comment keeps the file plain SQL
//! that any client can run):
//!
//! | setting | value | default |
//! |---|---|---|
//! | `partition_by` | a `DATE` (or timestamp) column of the result | none: not partitioned |
//! | `granularity` | `day` (`year=/month=/day=`), `month` (`year=/month=`) or `none` | `day` with `partition_by` |
//! | `sort_by` | columns, comma-separated, the rows are sorted by within a partition | the key |
//! | `key` | columns that identify a row, comma-separated (the last tie-breaker of the sort) | none |
//!
//! Settings are parsed when the models are loaded, before any data is read; an unknown setting
//! or a bad value is an error naming the file and line.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// How a partitioned model's date is cut into Hive partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    Day,
    Month,
    None,
}

impl Granularity {
    /// The Hive partition keys of this granularity.
    pub fn keys(self) -> &'static [&'static str] {
        match self {
            Granularity::Day => &["year", "month", "day"],
            Granularity::Month => &["year", "month"],
            Granularity::None => &[],
        }
    }
}

/// One model or check file.
#[derive(Debug, Clone)]
pub struct Model {
    /// File stem: the table name.
    pub name: String,
    pub path: PathBuf,
    pub sql: String,
    pub partition_by: Option<String>,
    pub granularity: Granularity,
    pub sort_by: Vec<String>,
    pub key: Vec<String>,
}

impl Model {
    /// The file name, for messages.
    pub fn file(&self) -> String {
        self.path.display().to_string()
    }

    /// The columns the rows are sorted by: partition column, `sort_by`, then the key columns
    /// not already named.
    pub fn order(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for c in self
            .partition_by
            .iter()
            .chain(&self.sort_by)
            .chain(&self.key)
        {
            if !out.contains(c) {
                out.push(c.clone());
            }
        }
        out
    }

    /// The 1-based line of the first occurrence of `word` (as a whole identifier) in the SQL,
    /// for error messages.
    pub fn line_of(&self, word: &str) -> Option<usize> {
        let word = word.to_ascii_lowercase();
        self.sql
            .lines()
            .position(|line| {
                let line = line.to_ascii_lowercase();
                line.match_indices(&word).any(|(i, _)| {
                    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
                    let before = line[..i].chars().next_back().is_none_or(|c| !ident(c));
                    let after = line[i + word.len()..]
                        .chars()
                        .next()
                        .is_none_or(|c| !ident(c));
                    before && after
                })
            })
            .map(|i| i + 1)
    }
}

fn columns(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect()
}

/// Parses one model file's text.
pub fn parse(path: &Path, sql: &str) -> Result<Model> {
    let file = path.display().to_string();
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
        })
        .ok_or_else(|| {
            Error::Config(format!(
                "model {file}: the file name must be lowercase letters, digits and `_`"
            ))
        })?
        .to_string();
    let bad = |line: usize, msg: String| Error::Config(format!("model {file}: line {line}: {msg}"));
    let mut model = Model {
        name,
        path: path.to_path_buf(),
        sql: sql.to_string(),
        partition_by: None,
        granularity: Granularity::None,
        sort_by: Vec::new(),
        key: Vec::new(),
    };
    let mut granularity = None;
    for (i, line) in sql.lines().enumerate() {
        let line_no = i + 1;
        let Some(comment) = line.trim_start().strip_prefix("--") else {
            if line.trim().is_empty() {
                continue;
            }
            break;
        };
        let Some((setting, value)) = comment.trim().split_once(':') else {
            continue;
        };
        if setting.is_empty() || !setting.bytes().all(|c| c.is_ascii_lowercase() || c == b'_') {
            continue;
        }
        let value = value.trim();
        match setting {
            "partition_by" => model.partition_by = Some(value.to_string()),
            "granularity" => {
                granularity = Some(match value {
                    "day" => Granularity::Day,
                    "month" => Granularity::Month,
                    "none" => Granularity::None,
                    other => {
                        return Err(bad(
                            line_no,
                            format!("granularity `{other}`: expected day, month or none"),
                        ))
                    }
                })
            }
            "sort_by" => model.sort_by = columns(value),
            "key" => model.key = columns(value),
            other => {
                return Err(bad(
                    line_no,
                    format!(
                        "unknown setting `{other}` (expected partition_by, granularity, sort_by \
                         or key)"
                    ),
                ))
            }
        }
    }
    model.granularity = match (&model.partition_by, granularity) {
        (Some(_), None) => Granularity::Day,
        (Some(_), Some(g)) => g,
        (None, None | Some(Granularity::None)) => Granularity::None,
        (None, Some(_)) => {
            return Err(Error::Config(format!(
                "model {file}: granularity needs a partition_by column"
            )))
        }
    };
    if model.granularity == Granularity::None {
        model.partition_by = None;
    }
    Ok(model)
}

/// The `*.sql` files of `dir`, parsed, in name order; `Ok(empty)` when `dir` does not exist and
/// `optional`.
pub fn load_dir(dir: &Path, optional: bool) -> Result<Vec<Model>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::Config(format!(
                "models directory {}: cannot read: {e}",
                dir.display()
            )))
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "sql"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p)
                .map_err(|e| Error::Config(format!("model {}: cannot read: {e}", p.display())))?;
            parse(p, &text)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_settings_are_parsed_and_the_body_ends_the_header() {
        let sql = "-- Orders, one row each.\n-- partition_by: order_date\n-- granularity: month\n\
                   -- sort_by: order_date, order_id\n-- key: order_id\nSELECT 1\n-- sort_by: x\n";
        let m = parse(Path::new("models/fact_orders.sql"), sql).unwrap();
        assert_eq!(m.name, "fact_orders");
        assert_eq!(m.partition_by.as_deref(), Some("order_date"));
        assert_eq!(m.granularity, Granularity::Month);
        assert_eq!(m.sort_by, ["order_date", "order_id"]);
        assert_eq!(m.order(), ["order_date", "order_id"]);
        assert_eq!(m.line_of("ORDER_ID"), Some(4));
        assert_eq!(m.line_of("order"), None);
    }

    #[test]
    fn partition_defaults_to_day_and_bad_settings_name_the_line() {
        let m = parse(Path::new("a.sql"), "-- partition_by: d\nSELECT 1").unwrap();
        assert_eq!(m.granularity, Granularity::Day);
        let m = parse(Path::new("a.sql"), "SELECT 1").unwrap();
        assert_eq!((m.granularity, m.partition_by), (Granularity::None, None));
        let e = parse(Path::new("a.sql"), "-- x\n-- partiton_by: d\nSELECT 1").unwrap_err();
        assert!(
            e.to_string()
                .contains("a.sql: line 2: unknown setting `partiton_by`"),
            "{e}"
        );
        let e = parse(
            Path::new("a.sql"),
            "-- partition_by: d\n-- granularity: week\nSELECT 1",
        )
        .unwrap_err();
        assert!(e.to_string().contains("line 2: granularity `week`"), "{e}");
        assert!(parse(Path::new("a.sql"), "-- granularity: day\nSELECT 1").is_err());
        assert!(parse(Path::new("Bad-Name.sql"), "SELECT 1").is_err());
    }
}
