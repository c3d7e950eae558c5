//! Batch evaluation: one compiled check run over one column array, as a bitmap of failing rows.

use arrow::array::{Array, ArrayRef, AsArray, StringArray};
use arrow::buffer::BooleanBuffer;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, TimeUnit};

use super::rules::Check;
use crate::contract::Format;
use crate::datetime::{is_email, is_phone, is_uuid, parse_date, parse_datetime, NANOS_PER_DAY};
use crate::{Error, Result};

/// Instants of a temporal or string column as nanoseconds since the epoch (days for `date`),
/// `None` where null or unparsable.
pub fn instants(array: &dyn Array, format: Format) -> Vec<Option<i128>> {
    let scale = |unit: &TimeUnit| -> i128 {
        match unit {
            TimeUnit::Second => 1_000_000_000,
            TimeUnit::Millisecond => 1_000_000,
            TimeUnit::Microsecond => 1_000,
            TimeUnit::Nanosecond => 1,
        }
    };
    let to_unit = |nanos: i128| match format {
        Format::Date => nanos.div_euclid(NANOS_PER_DAY),
        _ => nanos,
    };
    let len = array.len();
    let valid = |i: usize| array.is_valid(i);
    match array.data_type() {
        DataType::Timestamp(unit, _) => {
            let s = scale(unit);
            let Ok(a) = cast(array, &DataType::Int64) else {
                return vec![None; len];
            };
            let a = a.as_primitive::<arrow::datatypes::Int64Type>();
            (0..len)
                .map(|i| valid(i).then(|| to_unit(i128::from(a.value(i)) * s)))
                .collect()
        }
        DataType::Date32 => {
            let a = array.as_primitive::<arrow::datatypes::Date32Type>();
            (0..len)
                .map(|i| valid(i).then(|| to_unit(i128::from(a.value(i)) * NANOS_PER_DAY)))
                .collect()
        }
        DataType::Date64 => {
            let a = array.as_primitive::<arrow::datatypes::Date64Type>();
            (0..len)
                .map(|i| valid(i).then(|| to_unit(i128::from(a.value(i)) * 1_000_000)))
                .collect()
        }
        DataType::Utf8 => {
            let a = array.as_string::<i32>();
            (0..len)
                .map(|i| {
                    if !valid(i) {
                        return None;
                    }
                    match format {
                        Format::Date => parse_date(a.value(i)).map(i128::from),
                        _ => parse_datetime(a.value(i)),
                    }
                })
                .collect()
        }
        _ => vec![None; len],
    }
}

pub(super) fn string_check(a: &StringArray, check: &Check) -> Option<BooleanBuffer> {
    // Characters are counted only when the byte length cannot decide (a character is 1 to 4
    // bytes).
    let chars = |s: &str| {
        if s.is_ascii() {
            s.len()
        } else {
            s.chars().count()
        }
    };
    Some(match check {
        Check::MinLength(n) => failing(a, |s| s.len() >= n.saturating_mul(4) || chars(s) >= *n),
        Check::MaxLength(n) => failing(a, |s| s.len() <= *n || chars(s) <= *n),
        Check::EnumStr(set) => failing(a, |s| set.contains(s)),
        Check::Pattern(p) => failing(a, |s| p.is_match(s)),
        Check::Format(Format::Email) => failing(a, is_email),
        Check::Format(Format::Phone) => failing(a, is_phone),
        Check::Format(Format::Uuid) => failing(a, is_uuid),
        _ => return None,
    })
}

/// The non-null values of `a` that fail `ok`.
fn failing(a: &StringArray, ok: impl Fn(&str) -> bool) -> BooleanBuffer {
    BooleanBuffer::collect_bool(a.len(), |i| a.is_valid(i) && !ok(a.value(i)))
}

/// A column's parsed dates or date-times, shared by its `format` and bound checks so that each
/// value is parsed once.
pub(super) type Parsed = Option<(Format, Vec<Option<i128>>)>;

pub(super) fn parsed_as<'a>(
    array: &ArrayRef,
    format: Format,
    parsed: &'a mut Parsed,
) -> &'a [Option<i128>] {
    if parsed.as_ref().is_none_or(|(f, _)| *f != format) {
        *parsed = Some((format, instants(array.as_ref(), format)));
    }
    parsed.as_ref().map_or(&[], |(_, v)| v.as_slice())
}

pub(super) fn run_check(
    array: &ArrayRef,
    spec_format: Option<Format>,
    check: &Check,
    parsed: &mut Parsed,
) -> Result<BooleanBuffer> {
    let len = array.len();
    if let Check::NotNull = check {
        return Ok(match array.logical_nulls() {
            Some(n) => !n.inner(),
            None => BooleanBuffer::new_unset(len),
        });
    }
    match check {
        Check::Min(_)
        | Check::Max(_)
        | Check::ExclusiveMin(_)
        | Check::ExclusiveMax(_)
        | Check::EnumNum(_) => {
            let f = cast(array, &DataType::Float64)?;
            let f = f.as_primitive::<Float64Type>();
            let values = f.values();
            let pass = |v: f64| match check {
                Check::Min(b) => v >= *b,
                Check::Max(b) => v <= *b,
                Check::ExclusiveMin(b) => v > *b,
                Check::ExclusiveMax(b) => v < *b,
                Check::EnumNum(set) => set.contains(&v),
                _ => true,
            };
            Ok(BooleanBuffer::collect_bool(len, |i| {
                f.is_valid(i) && !pass(values[i])
            }))
        }
        Check::EnumBool(set) => {
            let b = array.as_boolean();
            Ok(BooleanBuffer::collect_bool(len, |i| {
                b.is_valid(i) && !set.contains(&b.value(i))
            }))
        }
        Check::Format(format @ (Format::Date | Format::DateTime))
            if array.data_type() == &DataType::Utf8 =>
        {
            let inst = parsed_as(array, *format, parsed);
            Ok(BooleanBuffer::collect_bool(len, |i| {
                array.is_valid(i) && inst[i].is_none()
            }))
        }
        Check::FormatMin(_) | Check::FormatMax(_) => {
            let format = spec_format.unwrap_or(Format::DateTime);
            let inst = parsed_as(array, format, parsed);
            // Unparsable values are the `format` rule's failures, not the bound's.
            Ok(BooleanBuffer::collect_bool(len, |i| {
                match (check, inst[i]) {
                    (Check::FormatMin(b), Some(v)) => v < *b,
                    (Check::FormatMax(b), Some(v)) => v > *b,
                    _ => false,
                }
            }))
        }
        _ => {
            let a = array.as_string::<i32>();
            string_check(a, check)
                .ok_or_else(|| Error::Internal(format!("check {check:?} on a string column")))
        }
    }
}
