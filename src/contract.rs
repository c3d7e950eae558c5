//! Dataset contracts: JSON Schema (draft 2020-12) documents with `x-` keywords, parsed and
//! compiled once before any data flows.
//!
//! Parsing is strict on purpose. A keyword the program does not implement, an unknown `x-` key,
//! a bad regex or contradictory bounds is an error naming the file and the JSON pointer, because a
//! silently ignored rule is a rule that never ran. The compiled [`Contract`] holds everything the
//! later stages need resolved ahead of time: column types, bounds as numbers, patterns as DFAs,
//! date bounds as instants, and the dedup and protection roles of columns.

use std::collections::BTreeSet;

use regex_automata::dfa::{dense, Automaton, StartKind};
use regex_automata::Input;
use serde_json::{Map, Value};

use crate::datetime::{parse_date, parse_datetime_bound, NANOS_PER_DAY};
use crate::{Error, Result};

/// Top-level keywords a contract may use.
const TOP_KEYWORDS: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "title",
    "description",
    "type",
    "required",
    "properties",
    "additionalProperties",
    "x-primary-key",
    "x-event-time",
    "x-sequence",
    "x-cdc-op",
];

/// Keywords a column (a member of `properties`) may use.
const COLUMN_KEYWORDS: &[&str] = &[
    "type",
    "title",
    "description",
    "$comment",
    "examples",
    "default",
    "enum",
    "const",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "formatMinimum",
    "formatMaximum",
    "x-pci",
    "x-pii",
    "x-references",
];

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
    /// Keyed HMAC-SHA-256 token (hex), stable across runs so joins still work.
    Hash,
    /// Every letter and digit but the last four replaced by `*`.
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
    /// `x-references` as (dataset, column). Recorded; checked by the foreign-key stage.
    pub references: Option<(String, String)>,
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
}

struct Parser<'a> {
    file: &'a str,
}

/// The JSON pointer of the first key that an object of `text` (valid JSON) declares twice:
/// `serde_json` keeps the last one silently, so a property declared twice would lose its first
/// rules without a word.
fn duplicate_key(text: &str) -> Option<String> {
    use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

    /// Walks a value at `pointer`, recording the first duplicate key in `found`.
    struct Walk<'a> {
        found: &'a mut Option<String>,
        pointer: String,
    }
    impl<'de> DeserializeSeed<'de> for Walk<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }
    impl<'de> Visitor<'de> for Walk<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E>(self, _: bool) -> std::result::Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> std::result::Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> std::result::Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> std::result::Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> std::result::Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> std::result::Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
            let mut i = 0usize;
            loop {
                let item = Walk {
                    found: &mut *self.found,
                    pointer: format!("{}/{i}", self.pointer),
                };
                if seq.next_element_seed(item)?.is_none() {
                    return Ok(());
                }
                i += 1;
            }
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                let pointer = format!("{}/{}", self.pointer, escape_pointer(&key));
                if !seen.insert(key) && self.found.is_none() {
                    *self.found = Some(pointer.clone());
                }
                map.next_value_seed(Walk {
                    found: &mut *self.found,
                    pointer,
                })?;
            }
            Ok(())
        }
    }

    let mut found = None;
    let walk = Walk {
        found: &mut found,
        pointer: String::new(),
    };
    // The text already parsed as JSON; a failure here leaves `found` as far as it got.
    let _ = walk.deserialize(&mut serde_json::Deserializer::from_str(text));
    found
}

fn escape_pointer(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

impl Parser<'_> {
    fn err(&self, pointer: &str, message: impl std::fmt::Display) -> Error {
        Error::contract(
            self.file,
            if pointer.is_empty() { "/" } else { pointer },
            message,
        )
    }

    fn check_keys(&self, obj: &Map<String, Value>, pointer: &str, allowed: &[&str]) -> Result<()> {
        for key in obj.keys() {
            if !allowed.contains(&key.as_str()) {
                let what = if key.starts_with("x-") {
                    "unknown extension keyword"
                } else {
                    "unsupported keyword"
                };
                return Err(self.err(
                    &format!("{pointer}/{}", escape_pointer(key)),
                    format!("{what} `{key}`; supported here: {}", allowed.join(", ")),
                ));
            }
        }
        Ok(())
    }

    fn string_list(&self, v: &Value, pointer: &str) -> Result<Vec<String>> {
        match v {
            Value::String(s) => Ok(vec![s.clone()]),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    item.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| self.err(&format!("{pointer}/{i}"), "expected a string"))
                })
                .collect(),
            _ => Err(self.err(pointer, "expected a string or an array of strings")),
        }
    }

    fn contract(&self, root: &Value) -> Result<Contract> {
        let obj = root
            .as_object()
            .ok_or_else(|| self.err("", "a contract must be a JSON object"))?;
        self.check_keys(obj, "", TOP_KEYWORDS)?;
        if let Some(t) = obj.get("type") {
            if t != "object" {
                return Err(self.err("/type", "the top-level type must be \"object\""));
            }
        }
        let dataset = match obj.get("title") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(self.err("/title", "expected the dataset name as a non-empty string")),
        };
        let required: BTreeSet<String> = match obj.get("required") {
            Some(v) => self.string_list(v, "/required")?.into_iter().collect(),
            None => BTreeSet::new(),
        };
        let props = obj
            .get("properties")
            .and_then(Value::as_object)
            .ok_or_else(|| self.err("/properties", "expected an object of column schemas"))?;
        let mut columns = Vec::with_capacity(props.len());
        for (name, schema) in props {
            let pointer = format!("/properties/{}", escape_pointer(name));
            columns.push(self.column(name, &pointer, schema, required.contains(name))?);
        }
        for name in &required {
            if !props.contains_key(name) {
                return Err(self.err(
                    "/required",
                    format!("required column `{name}` is not declared in properties"),
                ));
            }
        }
        let allow_extra_columns = match obj.get("additionalProperties") {
            None | Some(Value::Bool(true)) => true,
            Some(Value::Bool(false)) => false,
            Some(_) => {
                return Err(self.err("/additionalProperties", "only true or false is supported"))
            }
        };
        let primary_key = match obj.get("x-primary-key") {
            Some(v) => self.string_list(v, "/x-primary-key")?,
            None => Vec::new(),
        };
        let single = |key: &str| -> Result<Option<String>> {
            match obj.get(key) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(self.err(&format!("/{key}"), "expected a column name")),
            }
        };
        let contract = Contract {
            file: self.file.to_string(),
            dataset,
            allow_extra_columns,
            event_time: single("x-event-time")?,
            sequence: single("x-sequence")?,
            cdc_op: single("x-cdc-op")?,
            primary_key,
            columns,
        };
        self.check_roles(&contract)?;
        Ok(contract)
    }

    fn check_roles(&self, c: &Contract) -> Result<()> {
        for (i, key) in c.primary_key.iter().enumerate() {
            let pointer = format!("/x-primary-key/{i}");
            let col = c
                .column(key)
                .ok_or_else(|| self.err(&pointer, format!("column `{key}` is not declared")))?;
            if !col.required || col.nullable {
                return Err(self.err(
                    &pointer,
                    format!("primary key column `{key}` must be required and not nullable"),
                ));
            }
        }
        if c.event_time.is_some() && c.primary_key.is_empty() {
            return Err(self.err("/x-event-time", "x-event-time needs x-primary-key"));
        }
        if let Some(name) = &c.event_time {
            let col = c.column(name).ok_or_else(|| {
                self.err("/x-event-time", format!("column `{name}` is not declared"))
            })?;
            let ok = matches!(col.format, Some(Format::DateTime | Format::Date))
                || matches!(col.ty, ColumnType::Integer);
            if !ok {
                return Err(self.err(
                    "/x-event-time",
                    format!("column `{name}` must be an integer or have format date-time or date"),
                ));
            }
        }
        if let Some(name) = &c.sequence {
            let col = c.column(name).ok_or_else(|| {
                self.err("/x-sequence", format!("column `{name}` is not declared"))
            })?;
            if !matches!(col.ty, ColumnType::Integer | ColumnType::String) {
                return Err(self.err(
                    "/x-sequence",
                    format!("column `{name}` must be an integer or a string of digits"),
                ));
            }
        }
        if let Some(name) = &c.cdc_op {
            let col = c
                .column(name)
                .ok_or_else(|| self.err("/x-cdc-op", format!("column `{name}` is not declared")))?;
            if col.ty != ColumnType::String {
                return Err(self.err("/x-cdc-op", format!("column `{name}` must be a string")));
            }
        }
        Ok(())
    }

    fn number(&self, obj: &Map<String, Value>, key: &str, pointer: &str) -> Result<Option<f64>> {
        match obj.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.err(&format!("{pointer}/{key}"), "expected a number")),
        }
    }

    fn length(&self, obj: &Map<String, Value>, key: &str, pointer: &str) -> Result<Option<usize>> {
        match obj.get(key) {
            None => Ok(None),
            Some(v) => v.as_u64().map(|n| Some(n as usize)).ok_or_else(|| {
                self.err(
                    &format!("{pointer}/{key}"),
                    "expected a non-negative integer",
                )
            }),
        }
    }

    fn literal(&self, v: &Value, ty: ColumnType, pointer: &str) -> Result<Literal> {
        let lit = match (v, ty) {
            (Value::String(s), ColumnType::String) => Literal::Str(s.clone()),
            (Value::Number(n), ColumnType::Integer) if n.as_i64().is_some() => {
                Literal::Int(n.as_i64().unwrap_or_default())
            }
            (Value::Number(n), ColumnType::Number) => Literal::Num(n.as_f64().unwrap_or_default()),
            (Value::Bool(b), ColumnType::Boolean) => Literal::Bool(*b),
            _ => {
                return Err(self.err(
                    pointer,
                    format!("expected a {} literal for this column", ty.name()),
                ))
            }
        };
        Ok(lit)
    }

    fn column(
        &self,
        name: &str,
        pointer: &str,
        schema: &Value,
        required: bool,
    ) -> Result<ColumnSpec> {
        let obj = schema
            .as_object()
            .ok_or_else(|| self.err(pointer, "a column schema must be an object"))?;
        self.check_keys(obj, pointer, COLUMN_KEYWORDS)?;

        // Type and nullability; without `type`, the type comes from `enum` or `const`.
        let mut nullable = false;
        let mut ty = None;
        if let Some(t) = obj.get("type") {
            let tp = format!("{pointer}/type");
            for name in self.string_list(t, &tp)? {
                if name == "null" {
                    nullable = true;
                } else if let Some(parsed) = ColumnType::parse(&name) {
                    if ty.replace(parsed).is_some_and(|old| old != parsed) {
                        return Err(self.err(&tp, "a column may have one non-null type"));
                    }
                } else {
                    return Err(self.err(
                        &tp,
                        format!("unsupported type `{name}`; supported: integer, number, string, boolean, null"),
                    ));
                }
            }
        }
        let literal_source = obj
            .get("const")
            .or_else(|| obj.get("enum").and_then(|e| e.as_array()?.first()));
        let ty = match (ty, literal_source) {
            (Some(t), _) => t,
            (None, Some(Value::String(_))) => ColumnType::String,
            (None, Some(Value::Bool(_))) => ColumnType::Boolean,
            (None, Some(Value::Number(n))) if n.is_i64() => ColumnType::Integer,
            (None, Some(Value::Number(_))) => ColumnType::Number,
            _ => {
                return Err(self.err(
                    pointer,
                    "a column needs `type` (or `enum`/`const` to infer it from)",
                ))
            }
        };

        let numeric = matches!(ty, ColumnType::Integer | ColumnType::Number);
        let string = ty == ColumnType::String;
        let only_for = |key: &str, ok: bool, what: &str| -> Result<()> {
            if obj.contains_key(key) && !ok {
                return Err(self.err(
                    &format!("{pointer}/{key}"),
                    format!(
                        "`{key}` applies only to {what} columns, this one is {}",
                        ty.name()
                    ),
                ));
            }
            Ok(())
        };
        for key in ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"] {
            only_for(key, numeric, "integer or number")?;
        }
        for key in ["minLength", "maxLength", "pattern", "format", "x-pii"] {
            only_for(key, string, "string")?;
        }
        // Numbers are protected too (a number holding a card refuses the file), so `x-pci:
        // "none"` is how a numeric column opts out.
        only_for("x-pci", string || numeric, "string, integer or number")?;

        let minimum = self.number(obj, "minimum", pointer)?;
        let maximum = self.number(obj, "maximum", pointer)?;
        let exclusive_minimum = self.number(obj, "exclusiveMinimum", pointer)?;
        let exclusive_maximum = self.number(obj, "exclusiveMaximum", pointer)?;
        let low = [minimum, exclusive_minimum]
            .into_iter()
            .flatten()
            .reduce(f64::max);
        let high = [maximum, exclusive_maximum]
            .into_iter()
            .flatten()
            .reduce(f64::min);
        if let (Some(lo), Some(hi)) = (low, high) {
            let empty = lo > hi
                || (lo == hi && (exclusive_minimum == Some(lo) || exclusive_maximum == Some(hi)));
            if empty {
                return Err(self.err(
                    pointer,
                    format!("contradictory bounds: no value is >= {lo} and <= {hi}"),
                ));
            }
        }
        let min_length = self.length(obj, "minLength", pointer)?;
        let max_length = self.length(obj, "maxLength", pointer)?;
        if let (Some(lo), Some(hi)) = (min_length, max_length) {
            if lo > hi {
                return Err(self.err(
                    &format!("{pointer}/minLength"),
                    format!("contradictory bounds: minLength {lo} > maxLength {hi}"),
                ));
            }
        }

        let enum_values = match obj.get("enum") {
            None => None,
            Some(Value::Array(items)) if !items.is_empty() => Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| self.literal(v, ty, &format!("{pointer}/enum/{i}")))
                    .collect::<Result<Vec<_>>>()?,
            ),
            Some(_) => {
                return Err(self.err(&format!("{pointer}/enum"), "expected a non-empty array"))
            }
        };
        let const_value = match obj.get("const") {
            None => None,
            Some(v) => Some(self.literal(v, ty, &format!("{pointer}/const"))?),
        };
        if let (Some(c), Some(e)) = (&const_value, &enum_values) {
            if !e.contains(c) {
                return Err(self.err(
                    &format!("{pointer}/const"),
                    "const is not one of enum: no value can pass",
                ));
            }
        }

        let pattern = match obj.get("pattern") {
            None => None,
            Some(Value::String(p)) => Some(Pattern::new(p).map_err(|e| {
                self.err(&format!("{pointer}/pattern"), format!("invalid regex: {e}"))
            })?),
            Some(_) => return Err(self.err(&format!("{pointer}/pattern"), "expected a string")),
        };
        let format = match obj.get("format") {
            None => None,
            Some(Value::String(f)) => Some(Format::parse(f).ok_or_else(|| {
                self.err(
                    &format!("{pointer}/format"),
                    format!(
                        "unsupported format `{f}`; supported: email, phone, date-time, date, uuid"
                    ),
                )
            })?),
            Some(_) => return Err(self.err(&format!("{pointer}/format"), "expected a string")),
        };
        let bound = |key: &str| -> Result<Option<(String, i128)>> {
            let Some(v) = obj.get(key) else {
                return Ok(None);
            };
            let kp = format!("{pointer}/{key}");
            let s = v
                .as_str()
                .ok_or_else(|| self.err(&kp, "expected a date or date-time string"))?;
            let parsed = match format {
                Some(Format::DateTime) => parse_datetime_bound(s),
                Some(Format::Date) => parse_date(s)
                    .map(i128::from)
                    .or_else(|| parse_datetime_bound(s).map(|n| n.div_euclid(NANOS_PER_DAY))),
                _ => {
                    return Err(self.err(&kp, "needs `format: date-time` or `format: date`"));
                }
            };
            parsed.map(|n| Some((s.to_string(), n))).ok_or_else(|| {
                self.err(
                    &kp,
                    format!("`{s}` is not a valid {}", format.map_or("", Format::name)),
                )
            })
        };
        let format_minimum = bound("formatMinimum")?;
        let format_maximum = bound("formatMaximum")?;
        if let (Some((a, lo)), Some((b, hi))) = (&format_minimum, &format_maximum) {
            if lo > hi {
                return Err(self.err(
                    &format!("{pointer}/formatMinimum"),
                    format!("contradictory bounds: formatMinimum {a} is after formatMaximum {b}"),
                ));
            }
        }

        // Numbers are scanned by default like strings. Bounds do not exempt a column: they hold
        // for curated rows only, while quarantine receives exactly the out-of-range values (and
        // nothing is checked with validation off); a value below 10^12 costs one comparison.
        let pci = match obj.get("x-pci") {
            None if string || numeric => Pci::Scan,
            None => Pci::None,
            Some(Value::String(s)) if s == "pan" && !string => {
                return Err(self.err(
                    &format!("{pointer}/x-pci"),
                    "a card number stored as a number cannot be masked to its last four digits; \
                     declare the column `type: string`",
                ))
            }
            Some(Value::String(s)) if s == "pan" => Pci::Pan,
            Some(Value::String(s)) if s == "none" => Pci::None,
            Some(_) => {
                return Err(self.err(&format!("{pointer}/x-pci"), "expected \"pan\" or \"none\""))
            }
        };
        let pii = match obj.get("x-pii") {
            None => None,
            Some(Value::String(s)) => Some(match s.as_str() {
                "hash" => Pii::Hash,
                "mask" => Pii::Mask,
                "redact" => Pii::Redact,
                "encrypt" => {
                    return Err(self.err(
                        &format!("{pointer}/x-pii"),
                        "`encrypt` is not supported yet; supported: hash, mask, redact",
                    ))
                }
                other => {
                    return Err(self.err(
                        &format!("{pointer}/x-pii"),
                        format!("unknown action `{other}`; supported: hash, mask, redact"),
                    ))
                }
            }),
            Some(_) => return Err(self.err(&format!("{pointer}/x-pii"), "expected a string")),
        };
        if pii.is_some() && pci == Pci::Pan {
            return Err(self.err(pointer, "a column cannot be both x-pci \"pan\" and x-pii"));
        }
        let references = match obj.get("x-references") {
            None => None,
            Some(Value::String(s)) => match s.split_once('.') {
                Some((d, c)) if !d.is_empty() && !c.is_empty() && !c.contains('.') => {
                    Some((d.to_string(), c.to_string()))
                }
                _ => {
                    return Err(self.err(
                        &format!("{pointer}/x-references"),
                        "expected \"dataset.column\"",
                    ))
                }
            },
            Some(_) => {
                return Err(self.err(
                    &format!("{pointer}/x-references"),
                    "expected \"dataset.column\"",
                ))
            }
        };

        Ok(ColumnSpec {
            name: name.to_string(),
            pointer: pointer.to_string(),
            ty,
            nullable,
            required,
            minimum,
            maximum,
            exclusive_minimum,
            exclusive_maximum,
            min_length,
            max_length,
            enum_values,
            const_value,
            pattern,
            format,
            format_minimum,
            format_maximum,
            pci,
            pii,
            references,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Contract::from_json_str("c.json", text)
            .unwrap_err()
            .to_string()
    }

    /// Regression (issue 11, item 8): a property declared twice was silently last-wins.
    #[test]
    fn a_key_declared_twice_is_an_error_at_its_pointer() {
        let e = err(
            r#"{"title":"t","properties":{"id":{"type":"integer"},"a/b":{"type":"string"},"a/b":{"type":"integer"}}}"#,
        );
        assert!(
            e.contains("/properties/a~1b") && e.contains("declared twice"),
            "{e}"
        );
        let e =
            err(r#"{"title":"t","properties":{"id":{"type":"integer","minimum":1,"minimum":2}}}"#);
        assert!(e.contains("/properties/id/minimum"), "{e}");
        let e = err(r#"{"title":"t","required":[{"x":1,"x":2}],"properties":{}}"#);
        assert!(e.contains("/required/0/x"), "{e}");
    }

    const BASE: &str = r#"{"title":"t","required":["id"],"properties":{"id":{"type":"integer"},COL},"x-primary-key":["id"]}"#;

    fn with(col: &str) -> String {
        BASE.replace("COL", col)
    }

    #[test]
    fn parses_orders_like_contract() {
        let c = Contract::from_json_str(
            "c.json",
            &with(r#""s":{"enum":["a","b"]},"e":{"type":["string","null"],"format":"email","x-pii":"hash"},"p":{"type":"string","x-pci":"pan"}"#),
        )
        .unwrap();
        assert_eq!(c.dataset, "t");
        let s = c.column("s").unwrap();
        assert_eq!(s.ty, ColumnType::String);
        assert!(!s.nullable);
        let e = c.column("e").unwrap();
        assert!(e.nullable && e.pii == Some(Pii::Hash) && e.format == Some(Format::Email));
        assert_eq!(c.column("p").unwrap().pci, Pci::Pan);
        // Numbers are scanned too: an integer wide enough could be a card number.
        assert_eq!(c.column("id").unwrap().pci, Pci::Scan);
    }

    #[test]
    fn x_pci_on_numbers() {
        let c = Contract::from_json_str(
            "c.json",
            &with(r#""n":{"type":"integer","x-pci":"none"},"b":{"type":"boolean"},"q":{"type":"integer","minimum":0,"maximum":10}"#),
        )
        .unwrap();
        assert_eq!(c.column("n").unwrap().pci, Pci::None);
        assert_eq!(c.column("b").unwrap().pci, Pci::None);
        // Bounds hold for curated rows only; quarantine gets the out-of-range values.
        assert_eq!(c.column("q").unwrap().pci, Pci::Scan);
        let e = err(&with(r#""n":{"type":"number","x-pci":"pan"}"#));
        assert!(
            e.contains("/properties/n/x-pci")
                && e.contains("cannot be masked")
                && e.contains("type: string"),
            "{e}"
        );
        let e = err(&with(r#""b":{"type":"boolean","x-pci":"none"}"#));
        assert!(
            e.contains("/properties/b/x-pci") && e.contains("applies only to"),
            "{e}"
        );
    }

    #[test]
    fn rejects_unsupported_and_unknown_keywords() {
        let e = err(&with(r#""x":{"oneOf":[]}"#));
        assert!(
            e.contains("/properties/x/oneOf") && e.contains("unsupported keyword"),
            "{e}"
        );
        let e = err(&with(r#""x":{"type":"string","x-secret":true}"#));
        assert!(
            e.contains("/properties/x/x-secret") && e.contains("unknown extension"),
            "{e}"
        );
        let e = err(&BASE
            .replace("COL", r#""x":{"type":"string"}"#)
            .replace("\"title\"", "\"x-rules\":[],\"title\""));
        assert!(e.contains("/x-rules"), "{e}");
    }

    #[test]
    fn rejects_bad_regex_and_contradictions() {
        let e = err(&with(r#""x":{"type":"string","pattern":"(["}"#));
        assert!(
            e.contains("/properties/x/pattern") && e.contains("invalid regex"),
            "{e}"
        );
        let e = err(&with(r#""x":{"type":"number","minimum":5,"maximum":1}"#));
        assert!(e.contains("contradictory"), "{e}");
        let e = err(&with(
            r#""x":{"type":"number","minimum":1,"exclusiveMaximum":1}"#,
        ));
        assert!(e.contains("contradictory"), "{e}");
        let e = err(&with(
            r#""x":{"type":"string","minLength":5,"maxLength":1}"#,
        ));
        assert!(e.contains("/properties/x/minLength"), "{e}");
        let e = err(&with(
            r#""x":{"type":"string","format":"date","formatMinimum":"2025-01-01","formatMaximum":"2024-01-01"}"#,
        ));
        assert!(e.contains("contradictory"), "{e}");
        let e = err(&with(r#""x":{"type":"integer","pattern":"a"}"#));
        assert!(e.contains("applies only to string"), "{e}");
        let e = err(&with(r#""x":{"enum":["a"],"const":"b"}"#));
        assert!(e.contains("/properties/x/const"), "{e}");
    }

    #[test]
    fn pattern_is_unanchored_like_json_schema() {
        let p = Pattern::new("^[A-Z]{3}$").unwrap();
        assert!(p.is_match("EUR"));
        assert!(!p.is_match("EURO"));
        assert!(!p.is_match("eur"));
        let q = Pattern::new("[0-9]").unwrap();
        assert!(q.is_match("ab1c"));
        assert!(!q.is_match("abc"));
    }
}
