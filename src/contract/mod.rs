//! Dataset contracts: JSON Schema (draft 2020-12) documents with `x-` keywords, parsed and
//! compiled once before any data flows. This module owns the contract: its parsing and its typed
//! model ([`Contract`], [`ColumnSpec`] and their enums). It must not touch data, and its only
//! I/O is reading the contract file ([`Contract::from_path`]).
//!
//! Parsing is strict on purpose. A keyword the program does not implement, an unknown `x-` key,
//! a bad regex or contradictory bounds is an error naming the file and the JSON pointer, because a
//! silently ignored rule is a rule that never ran. The compiled [`Contract`] holds everything the
//! later stages need resolved ahead of time: column types, bounds as numbers, patterns as DFAs,
//! date bounds as instants, row rules type-checked, and the dedup and protection roles of
//! columns.
//!
//! The model and the public API are here; `parse` holds the keyword lists and the checks that
//! turn a JSON document into a [`Contract`]; `row_rules` plans `x-rules` expressions (with
//! DataFusion: planning an expression is not touching data).

mod parse;
mod row_rules;

use std::sync::Arc;

use regex_automata::dfa::{dense, Automaton, StartKind};
use regex_automata::Input;
use serde_json::Value;

use crate::{Error, Result};
use parse::{duplicate_key, Parser};

pub use row_rules::RowRule;

/// The names under which quarantine and the report count a failure of a contract keyword (of a
/// foreign key, or of decoding a text input), which an `x-rules` rule may therefore not take.
pub mod rule_name {
    pub const REQUIRED: &str = "required";
    pub const TYPE: &str = "type";
    pub const MINIMUM: &str = "minimum";
    pub const MAXIMUM: &str = "maximum";
    pub const EXCLUSIVE_MINIMUM: &str = "exclusiveMinimum";
    pub const EXCLUSIVE_MAXIMUM: &str = "exclusiveMaximum";
    pub const MIN_LENGTH: &str = "minLength";
    pub const MAX_LENGTH: &str = "maxLength";
    pub const ENUM: &str = "enum";
    pub const CONST: &str = "const";
    pub const PATTERN: &str = "pattern";
    pub const FORMAT: &str = "format";
    pub const FORMAT_MINIMUM: &str = "formatMinimum";
    pub const FORMAT_MAXIMUM: &str = "formatMaximum";
    pub const FOREIGN_KEY: &str = "foreign_key";
    /// A CSV line with more or fewer fields than the object's columns.
    pub const CSV_FIELDS: &str = "csv_fields";
    /// A CSV line whose quoting is broken.
    pub const CSV_QUOTE: &str = "csv_quote";
    /// A text input value that is not UTF-8.
    pub const UTF8: &str = "utf8";
    /// An NDJSON line that is not one JSON object.
    pub const JSON_SYNTAX: &str = "json_syntax";
    /// The rules a text input's decoding reports: a row failing one has nulls where its values
    /// could not be read.
    pub const DECODING: &[&str] = &[TYPE, CSV_FIELDS, CSV_QUOTE, UTF8, JSON_SYNTAX];
    pub(super) const ALL: &[&str] = &[
        REQUIRED,
        TYPE,
        MINIMUM,
        MAXIMUM,
        EXCLUSIVE_MINIMUM,
        EXCLUSIVE_MAXIMUM,
        MIN_LENGTH,
        MAX_LENGTH,
        ENUM,
        CONST,
        PATTERN,
        FORMAT,
        FORMAT_MINIMUM,
        FORMAT_MAXIMUM,
        FOREIGN_KEY,
        CSV_FIELDS,
        CSV_QUOTE,
        UTF8,
        JSON_SYNTAX,
    ];
}

/// Largest compiled pattern DFA accepted, in bytes.
const DFA_SIZE_LIMIT: usize = 8 << 20;

/// The JSON type a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Integer,
    Number,
    String,
    Boolean,
}

impl ColumnType {
    /// The Arrow type a raw value of this type is read as when the input does not carry a type
    /// of its own (an all-null Parquet column; text formats): `Int64`, `Float64`, `Boolean`,
    /// `Utf8` (date-time and date strings included: validation parses them).
    pub fn arrow_type(self) -> arrow::datatypes::DataType {
        use arrow::datatypes::DataType;
        match self {
            ColumnType::Integer => DataType::Int64,
            ColumnType::Number => DataType::Float64,
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::String => DataType::Utf8,
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "integer" => ColumnType::Integer,
            "number" => ColumnType::Number,
            "string" => ColumnType::String,
            "boolean" => ColumnType::Boolean,
            _ => return None,
        })
    }

    /// The JSON Schema name of the type.
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Integer => "integer",
            ColumnType::Number => "number",
            ColumnType::String => "string",
            ColumnType::Boolean => "boolean",
        }
    }
}

/// A `format` the validator checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Email,
    Phone,
    DateTime,
    Date,
    Uuid,
}

impl Format {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "email" => Format::Email,
            "phone" => Format::Phone,
            "date-time" => Format::DateTime,
            "date" => Format::Date,
            "uuid" => Format::Uuid,
            _ => return None,
        })
    }

    /// The JSON Schema name of the format.
    pub fn name(self) -> &'static str {
        match self {
            Format::Email => "email",
            Format::Phone => "phone",
            Format::DateTime => "date-time",
            Format::Date => "date",
            Format::Uuid => "uuid",
        }
    }

    /// The Arrow type validation parses a string of this format into (what curated output stores
    /// and row rules see): `Timestamp(Microsecond, "UTC")` for `date-time`, `Date32` for `date`.
    pub fn parsed_type(self) -> Option<arrow::datatypes::DataType> {
        use arrow::datatypes::{DataType, TimeUnit};
        match self {
            Format::DateTime => Some(DataType::Timestamp(
                TimeUnit::Microsecond,
                Some("UTC".into()),
            )),
            Format::Date => Some(DataType::Date32),
            Format::Email | Format::Phone | Format::Uuid => None,
        }
    }
}

/// How card data in a column is protected (`x-pci`; see `protect` for the rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pci {
    /// `x-pci: "pan"` (string columns only): the column holds card numbers; every value is masked
    /// to its last four digits.
    Pan,
    /// Default for string, integer and number columns: text is scanned for Luhn-valid card
    /// numbers and masked; a number holding one refuses the file (it cannot be masked).
    Scan,
    /// `x-pci: "none"`: the column is known not to hold card data and is not scanned.
    None,
}

/// How a PII column is transformed (`x-pii`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pii {
    /// Keyed HMAC-SHA-256 token of the trimmed value (lowercased for `format: email`), as 64
    /// lowercase hex digits: stable across runs and datasets under one key, so joins still work.
    Hash,
    /// Masked by the column's format (`j***@example.com`, `+44********89`, else every letter
    /// and digit but the last four replaced by `*`).
    Mask,
    /// The value replaced by `REDACTED`.
    Redact,
}

/// A literal from `enum` or `const`.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    Int(i64),
    Num(f64),
    Bool(bool),
}

/// A compiled `pattern`: an unanchored DFA, matching anywhere as JSON Schema requires.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    dfa: dense::DFA<Vec<u32>>,
}

impl Pattern {
    /// Compiles `source`; the error text says why it was rejected.
    pub fn new(source: &str) -> Result<Self, String> {
        let dfa = dense::Builder::new()
            .configure(
                dense::DFA::config()
                    .start_kind(StartKind::Unanchored)
                    .dfa_size_limit(Some(DFA_SIZE_LIMIT))
                    .determinize_size_limit(Some(DFA_SIZE_LIMIT)),
            )
            .build(source)
            .map_err(|e| e.to_string())?;
        Ok(Pattern {
            source: source.to_string(),
            dfa,
        })
    }

    /// True when the pattern matches somewhere in `s`.
    pub fn is_match(&self, s: &str) -> bool {
        matches!(
            self.dfa.try_search_fwd(&Input::new(s).earliest(true)),
            Ok(Some(_))
        )
    }

    /// The pattern as written in the contract.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// A foreign key (`x-references`): the column's values must be keys of the current state of
/// `dataset`'s curated data (its `column`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub dataset: String,
    pub column: String,
    /// What becomes of a row whose value the referenced dataset does not hold.
    pub orphans: Orphans,
    /// The check is skipped (and reported so) when the referenced dataset has no curated data,
    /// instead of failing the run.
    pub skip_missing: bool,
}

/// What becomes of an orphan (a row whose referenced key does not exist).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Orphans {
    /// Quarantined under rule `foreign_key`.
    Quarantine,
    /// Published and counted (`orphans_kept`): a parent arriving later is normal in CDC.
    Keep,
}

impl Reference {
    /// `dataset.column`, as the contract writes it.
    pub fn target(&self) -> String {
        format!("{}.{}", self.dataset, self.column)
    }
}

/// One column of a contract, with every rule resolved.
#[derive(Debug, Clone)]
pub struct ColumnSpec {
    pub name: String,
    /// JSON pointer of the column in the contract, for error messages.
    pub pointer: String,
    pub ty: ColumnType,
    pub nullable: bool,
    pub required: bool,
    pub minimum: Option<f64>,
    pub maximum: Option<f64>,
    pub exclusive_minimum: Option<f64>,
    pub exclusive_maximum: Option<f64>,
    pub min_length: Option<usize>,
    pub max_length: Option<usize>,
    pub enum_values: Option<Vec<Literal>>,
    pub const_value: Option<Literal>,
    pub pattern: Option<Pattern>,
    pub format: Option<Format>,
    /// `formatMinimum` as written and as an instant (ns since epoch) or a day number.
    pub format_minimum: Option<(String, i128)>,
    pub format_maximum: Option<(String, i128)>,
    pub pci: Pci,
    pub pii: Option<Pii>,
    /// `x-references`: the foreign key the column's values must meet.
    pub references: Option<Reference>,
}

impl ColumnSpec {
    /// The Arrow type of the column's values when the data does not carry a type of its own, as
    /// validation leaves them: a `date-time` or `date` string parsed, otherwise
    /// [`ColumnType::arrow_type`].
    pub fn typed_arrow_type(&self) -> arrow::datatypes::DataType {
        self.format
            .and_then(Format::parsed_type)
            .unwrap_or_else(|| self.ty.arrow_type())
    }
}

/// A compiled dataset contract.
#[derive(Debug, Clone)]
pub struct Contract {
    /// Where the contract came from, for messages.
    pub file: String,
    /// The dataset name (`title`).
    pub dataset: String,
    pub columns: Vec<ColumnSpec>,
    /// `additionalProperties: false` makes unknown file columns a file-level error.
    pub allow_extra_columns: bool,
    pub primary_key: Vec<String>,
    pub event_time: Option<String>,
    pub sequence: Option<String>,
    pub cdc_op: Option<String>,
    /// `x-rules`: named SQL boolean expressions every row must not make false.
    pub rules: Vec<RowRule>,
}

impl Contract {
    /// Reads and compiles a contract file from the local filesystem.
    pub fn from_path(path: &std::path::Path) -> Result<Self> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::contract(&file, "", format!("cannot read: {e}")))?;
        Self::from_json_str(&file, &text)
    }

    /// Parses and compiles contract text; `file` names it in errors.
    pub fn from_json_str(file: &str, text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Error::contract(file, "", format!("not valid JSON: {e}")))?;
        if let Some(pointer) = duplicate_key(text) {
            return Err(Error::contract(
                file,
                &pointer,
                "declared twice in one object (JSON parsers keep only one of them)",
            ));
        }
        Parser { file }.contract(&value)
    }

    /// The column named `name`, if the contract declares it.
    pub fn column(&self, name: &str) -> Option<&ColumnSpec> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The protection stage 1 applies per column: `hash`, `mask` or `redact` for `x-pii`, `pan`
    /// for `x-pci: pan` when PCI DSS protection is on. Recorded in quarantine output, so that
    /// `edp replay` knows which values arrive protected.
    pub fn protection(&self, pci_dss: bool) -> std::collections::BTreeMap<String, String> {
        self.columns
            .iter()
            .filter_map(|c| {
                let how = match (c.pii, c.pci) {
                    (Some(Pii::Hash), _) => "hash",
                    (Some(Pii::Mask), _) => "mask",
                    (Some(Pii::Redact), _) => "redact",
                    (None, Pci::Pan) if pci_dss => "pan",
                    _ => return None,
                };
                Some((c.name.clone(), how.to_string()))
            })
            .collect()
    }

    /// (column, rule) of every value rule of the `x-pii` and `x-pci: pan` columns, and of every
    /// row rule reading one: what `edp replay` cannot check again on protected values, and
    /// carries over from quarantine.
    pub fn protected_value_rules(&self) -> Vec<(String, Arc<str>)> {
        use rule_name::*;
        // Every rule on a column's value: not presence, not the foreign key, not decoding.
        let rules = ALL
            .iter()
            .filter(|r| !DECODING.contains(r) && ![REQUIRED, FOREIGN_KEY].contains(r));
        let protected = self.protected_columns();
        let values = self
            .columns
            .iter()
            .filter(|c| protected.contains(&c.name.as_str()))
            .flat_map(|c| rules.clone().map(|r| (c.name.clone(), Arc::from(*r))));
        // Row rules reading a protected column would run on tokens or masks.
        let row_rules = self
            .rules
            .iter()
            .filter(|r| r.columns.iter().any(|c| protected.contains(&c.as_str())))
            .map(|r| (r.columns.join(","), Arc::from(r.name.as_str())));
        values.chain(row_rules).collect()
    }

    /// The columns holding protected values: `x-pii`, and `x-pci: pan`.
    fn protected_columns(&self) -> Vec<&str> {
        self.columns
            .iter()
            .filter(|c| c.pii.is_some() || c.pci == Pci::Pan)
            .map(|c| c.name.as_str())
            .collect()
    }

    /// The contract `edp replay` checks quarantined rows under. Their `x-pii` and `x-pci: pan`
    /// columns hold protected values (tokens, masks), so those columns' value rules (range,
    /// length, enum, const, pattern, format) are not checked again, and their `x-pii` transform
    /// is not applied again (a token hashed twice would no longer join; tokens are not scanned
    /// for card numbers, as when they were made); presence, type and
    /// nullability still are, and card masking is applied again (masking is idempotent). Rows
    /// that failed such a rule stay failing ([`Contract::protected_value_rules`]). Row rules
    /// reading such a column are left out (their failures are carried too).
    pub fn for_replay(&self) -> Contract {
        let mut c = self.clone();
        let protected: Vec<String> = self
            .protected_columns()
            .into_iter()
            .map(String::from)
            .collect();
        c.rules
            .retain(|r| !r.columns.iter().any(|col| protected.contains(col)));
        for col in &mut c.columns {
            if col.pii.is_none() && col.pci != Pci::Pan {
                continue;
            }
            // Tokens are not scanned for card numbers (as when they were made).
            if col.pii == Some(Pii::Hash) {
                col.pci = Pci::None;
            }
            col.pii = None;
            col.minimum = None;
            col.maximum = None;
            col.exclusive_minimum = None;
            col.exclusive_maximum = None;
            col.min_length = None;
            col.max_length = None;
            col.enum_values = None;
            col.const_value = None;
            col.pattern = None;
            col.format = None;
            col.format_minimum = None;
            col.format_maximum = None;
        }
        c
    }
}

#[cfg(test)]
mod tests;
