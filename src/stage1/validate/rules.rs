//! Rule compilation: a contract column's rules turned into checks, once per file.

use std::sync::Arc;

use arrow::datatypes::DataType;

use crate::contract::{rule_name, ColumnSpec, ColumnType, Format, Literal, Pattern};

#[derive(Debug)]
pub(super) enum Check {
    NotNull,
    Min(f64),
    Max(f64),
    ExclusiveMin(f64),
    ExclusiveMax(f64),
    MinLength(usize),
    MaxLength(usize),
    EnumStr(hashbrown::HashSet<String>),
    EnumNum(Vec<f64>),
    EnumBool(Vec<bool>),
    Pattern(Box<Pattern>),
    Format(Format),
    FormatMin(i128),
    FormatMax(i128),
}

#[derive(Debug)]
pub(super) struct Rule {
    pub(super) name: &'static str,
    pub(super) message: Arc<str>,
    pub(super) check: Check,
}

#[derive(Debug)]
pub(super) struct ColumnRules {
    pub(super) index: usize,
    pub(super) name: Arc<str>,
    /// The column's `format`, which tells how temporal bounds read its values.
    pub(super) format: Option<Format>,
    /// The type its values are written as in curated output, when that is not the input type.
    pub(super) typed: Option<DataType>,
    pub(super) rules: Vec<Rule>,
}

pub(super) fn type_ok(spec: &ColumnSpec, dt: &DataType) -> bool {
    use DataType::*;
    let temporal = match spec.format {
        Some(Format::DateTime) => matches!(dt, Timestamp(_, _) | Date32 | Date64),
        Some(Format::Date) => matches!(dt, Date32 | Date64 | Timestamp(_, _)),
        _ => false,
    };
    temporal
        || matches!(dt, Null) && spec.nullable
        || match spec.ty {
            ColumnType::Integer => dt.is_integer(),
            ColumnType::Number => {
                dt.is_integer()
                    || dt.is_floating()
                    || matches!(dt, Decimal128(_, _) | Decimal256(_, _))
            }
            ColumnType::String => matches!(dt, Utf8 | LargeUtf8 | Utf8View),
            ColumnType::Boolean => matches!(dt, Boolean),
        }
}

pub(super) fn expected_types(spec: &ColumnSpec) -> &'static str {
    match (spec.ty, spec.format) {
        (_, Some(Format::DateTime)) => "a timestamp or an ISO 8601 date-time string",
        (_, Some(Format::Date)) => "a date or an ISO 8601 date string",
        (ColumnType::Integer, _) => "an integer type",
        (ColumnType::Number, _) => "a numeric type",
        (ColumnType::String, _) => "a string type",
        (ColumnType::Boolean, _) => "boolean",
    }
}

fn literal_text(l: &Literal) -> String {
    match l {
        Literal::Str(s) => s.clone(),
        Literal::Int(i) => i.to_string(),
        Literal::Num(n) => n.to_string(),
        Literal::Bool(b) => b.to_string(),
    }
}

fn set_check(values: &[Literal]) -> Check {
    match values.first() {
        Some(Literal::Str(_)) => Check::EnumStr(
            values
                .iter()
                .filter_map(|l| match l {
                    Literal::Str(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
        ),
        Some(Literal::Bool(_)) => Check::EnumBool(
            values
                .iter()
                .filter_map(|l| match l {
                    Literal::Bool(b) => Some(*b),
                    _ => None,
                })
                .collect(),
        ),
        _ => Check::EnumNum(
            values
                .iter()
                .filter_map(|l| match l {
                    Literal::Int(i) => Some(*i as f64),
                    Literal::Num(n) => Some(*n),
                    _ => None,
                })
                .collect(),
        ),
    }
}

pub(super) fn rules_for(spec: &ColumnSpec) -> Vec<Rule> {
    let mut rules = Vec::new();
    let mut push = |name: &'static str, message: String, check: Check| {
        rules.push(Rule {
            name,
            message: message.into(),
            check,
        })
    };
    if !spec.nullable {
        push(
            rule_name::REQUIRED,
            "must not be null".into(),
            Check::NotNull,
        );
    }
    if let Some(v) = spec.minimum {
        push(rule_name::MINIMUM, format!("must be >= {v}"), Check::Min(v));
    }
    if let Some(v) = spec.maximum {
        push(rule_name::MAXIMUM, format!("must be <= {v}"), Check::Max(v));
    }
    if let Some(v) = spec.exclusive_minimum {
        push(
            rule_name::EXCLUSIVE_MINIMUM,
            format!("must be > {v}"),
            Check::ExclusiveMin(v),
        );
    }
    if let Some(v) = spec.exclusive_maximum {
        push(
            rule_name::EXCLUSIVE_MAXIMUM,
            format!("must be < {v}"),
            Check::ExclusiveMax(v),
        );
    }
    if let Some(v) = spec.min_length {
        push(
            rule_name::MIN_LENGTH,
            format!("must have at least {v} characters"),
            Check::MinLength(v),
        );
    }
    if let Some(v) = spec.max_length {
        push(
            rule_name::MAX_LENGTH,
            format!("must have at most {v} characters"),
            Check::MaxLength(v),
        );
    }
    if let Some(values) = &spec.enum_values {
        let list: Vec<String> = values.iter().map(literal_text).collect();
        push(
            rule_name::ENUM,
            format!("must be one of [{}]", list.join(", ")),
            set_check(values),
        );
    }
    if let Some(c) = &spec.const_value {
        push(
            rule_name::CONST,
            format!("must equal {}", literal_text(c)),
            set_check(std::slice::from_ref(c)),
        );
    }
    if let Some(p) = &spec.pattern {
        push(
            rule_name::PATTERN,
            format!("must match pattern {}", p.source()),
            Check::Pattern(Box::new(p.clone())),
        );
    }
    if let Some(f) = spec.format {
        push(
            rule_name::FORMAT,
            format!("must be a valid {}", f.name()),
            Check::Format(f),
        );
    }
    if let Some((text, v)) = &spec.format_minimum {
        push(
            rule_name::FORMAT_MINIMUM,
            format!("must be on or after {text}"),
            Check::FormatMin(*v),
        );
    }
    if let Some((text, v)) = &spec.format_maximum {
        push(
            rule_name::FORMAT_MAXIMUM,
            format!("must be on or before {text}"),
            Check::FormatMax(*v),
        );
    }
    rules
}
