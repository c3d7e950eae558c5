//! Parsing: a contract's JSON document checked keyword by keyword and compiled into a
//! [`Contract`], every error naming the file and the JSON pointer.

use std::collections::BTreeSet;

use arrow::datatypes::{Field, Schema};
use serde_json::{Map, Value};

use super::{
    ColumnSpec, ColumnType, Contract, Format, Literal, Orphans, Pattern, Pci, Pii, Reference,
    RowRule,
};
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
    "x-rules",
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

pub(super) struct Parser<'a> {
    pub(super) file: &'a str,
}

/// The JSON pointer of the first key that an object of `text` (valid JSON) declares twice:
/// `serde_json` keeps the last one silently, so a property declared twice would lose its first
/// rules without a word.
pub(super) fn duplicate_key(text: &str) -> Option<String> {
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

    /// `x-references`: `"dataset.column"`, or `{"to": "dataset.column", "orphans": "quarantine" |
    /// "keep", "missing": "fail" | "skip"}` (defaults: quarantine, fail).
    fn reference(&self, v: &Value, pointer: &str) -> Result<Reference> {
        let target = |v: &Value, pointer: &str| match v.as_str().and_then(|s| s.split_once('.')) {
            Some((d, c)) if !d.is_empty() && !c.is_empty() && !c.contains('.') => {
                Ok((d.to_string(), c.to_string()))
            }
            _ => Err(self.err(pointer, "expected \"dataset.column\"")),
        };
        let choice = |obj: &Map<String, Value>, key: &str, values: [&str; 2]| match obj.get(key) {
            None => Ok(false),
            Some(Value::String(s)) if s == values[0] => Ok(false),
            Some(Value::String(s)) if s == values[1] => Ok(true),
            Some(_) => Err(self.err(
                &format!("{pointer}/{key}"),
                format!("expected \"{}\" or \"{}\"", values[0], values[1]),
            )),
        };
        let (target, keep, skip) = match v {
            Value::Object(obj) => {
                self.check_keys(obj, pointer, &["to", "orphans", "missing", "description"])?;
                let to = obj
                    .get("to")
                    .ok_or_else(|| self.err(pointer, "missing `to`: \"dataset.column\""))?;
                (
                    target(to, &format!("{pointer}/to"))?,
                    choice(obj, "orphans", ["quarantine", "keep"])?,
                    choice(obj, "missing", ["fail", "skip"])?,
                )
            }
            _ => (target(v, pointer)?, false, false),
        };
        Ok(Reference {
            dataset: target.0,
            column: target.1,
            orphans: if keep {
                Orphans::Keep
            } else {
                Orphans::Quarantine
            },
            skip_missing: skip,
        })
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

    pub(super) fn contract(&self, root: &Value) -> Result<Contract> {
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
            rules: match obj.get("x-rules") {
                Some(v) => self.row_rules(v, &columns)?,
                None => Vec::new(),
            },
            columns,
        };
        self.check_roles(&contract)?;
        Ok(contract)
    }

    /// `x-rules`: an array of `{"name", "check", "description"?}`, each check planned against
    /// the contract's columns (see `row_rules`).
    fn row_rules(&self, v: &Value, columns: &[ColumnSpec]) -> Result<Vec<RowRule>> {
        let items = v
            .as_array()
            .ok_or_else(|| self.err("/x-rules", "expected an array of {name, check} objects"))?;
        let schema = Schema::new(
            columns
                .iter()
                .map(|c| Field::new(&c.name, c.typed_arrow_type(), true))
                .collect::<Vec<_>>(),
        );
        let mut rules: Vec<RowRule> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let pointer = format!("/x-rules/{i}");
            let obj = item
                .as_object()
                .ok_or_else(|| self.err(&pointer, "expected an object with name and check"))?;
            self.check_keys(obj, &pointer, &["name", "check", "description"])?;
            let name = match obj.get("name") {
                Some(Value::String(s))
                    if !s.is_empty()
                        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
                {
                    s.clone()
                }
                _ => {
                    return Err(self.err(
                        &format!("{pointer}/name"),
                        "expected a rule name of ASCII letters, digits and _",
                    ))
                }
            };
            if super::rule_name::ALL.contains(&name.as_str()) {
                return Err(self.err(
                    &format!("{pointer}/name"),
                    format!(
                        "`{name}` names a contract keyword's rule in reports and quarantine; \
                         choose another name"
                    ),
                ));
            }
            if rules.iter().any(|r| r.name == name) {
                return Err(self.err(
                    &format!("{pointer}/name"),
                    format!("rule `{name}` is declared twice"),
                ));
            }
            let check = match obj.get("check") {
                Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
                _ => {
                    return Err(self.err(
                        &format!("{pointer}/check"),
                        "expected a SQL boolean expression over the row's columns",
                    ))
                }
            };
            if obj.get("description").is_some_and(|d| !d.is_string()) {
                return Err(self.err(&format!("{pointer}/description"), "expected a string"));
            }
            let rule = RowRule::new(name, check, pointer.clone(), &schema)
                .map_err(|e| self.err(&format!("{pointer}/check"), e))?;
            rules.push(rule);
        }
        Ok(rules)
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
            Some(v) => Some(self.reference(v, &format!("{pointer}/x-references"))?),
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
