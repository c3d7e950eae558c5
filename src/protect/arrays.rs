//! Protection of one Arrow array by its type: strings, bytes, numbers, and nested arrays.

use std::sync::Arc;

use arrow::array::{
    make_array, Array, ArrayRef, AsArray, BinaryViewArray, BinaryViewBuilder, FixedSizeBinaryArray,
    GenericBinaryArray, GenericStringArray, GenericStringBuilder, OffsetSizeTrait, PrimitiveArray,
    StringArray, StringViewArray, StringViewBuilder,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{
    i256, ArrowPrimitiveType, DataType, Decimal128Type, Decimal256Type, Decimal64Type, Float64Type,
    Int64Type, UInt64Type,
};

use super::card::{
    bytes_may_need_mask, mask_ascii_card_numbers, mask_bytes, mask_card_numbers, mask_pan_bytes,
    mask_pan_value,
};
use super::numeric::{decimal_holds_card, f64_holds_card, i256_holds_card, u64_holds_card};
use super::pii::{hash_token, KeyedHash};
use super::{Changed, Mode, Place};
use crate::{Error, Result};

/// Protects one array by `mode`: a column, or a child of one at `place`. Every Arrow type is
/// named here, so a type added to Arrow is a compile error rather than a silent pass-through.
pub(super) fn protect_array(a: &ArrayRef, mode: Mode, place: Place<'_>) -> Result<Changed> {
    match a.data_type() {
        DataType::Utf8 => strings(a.as_string::<i32>(), mode),
        DataType::LargeUtf8 => strings(a.as_string::<i64>(), mode),
        DataType::Utf8View => string_views(a.as_string_view(), mode),
        DataType::Binary => binaries(a.as_binary::<i32>(), mode),
        DataType::LargeBinary => binaries(a.as_binary::<i64>(), mode),
        DataType::BinaryView => binary_views(a.as_binary_view(), mode),
        DataType::FixedSizeBinary(_) => fixed_binaries(a.as_fixed_size_binary(), mode),
        DataType::Int64 => refuse_cards(a.as_primitive::<Int64Type>(), place, |v: i64| {
            u64_holds_card(v.unsigned_abs())
        }),
        DataType::UInt64 => refuse_cards(a.as_primitive::<UInt64Type>(), place, u64_holds_card),
        DataType::Decimal64(_, scale) => {
            refuse_cards(a.as_primitive::<Decimal64Type>(), place, |v: i64| {
                decimal_holds_card(i128::from(v), *scale)
            })
        }
        DataType::Decimal128(_, scale) => {
            refuse_cards(a.as_primitive::<Decimal128Type>(), place, |v: i128| {
                decimal_holds_card(v, *scale)
            })
        }
        DataType::Decimal256(_, scale) => {
            refuse_cards(a.as_primitive::<Decimal256Type>(), place, |v: i256| {
                i256_holds_card(v, *scale)
            })
        }
        DataType::Float64 => refuse_cards(a.as_primitive::<Float64Type>(), place, f64_holds_card),
        DataType::List(_)
        | DataType::LargeList(_)
        | DataType::FixedSizeList(_, _)
        | DataType::ListView(_)
        | DataType::LargeListView(_)
        | DataType::Struct(_)
        | DataType::Map(_, _)
        | DataType::Union(_, _)
        | DataType::Dictionary(_, _) => nested(a, mode, place, 0),
        // Run ends are positions, not data: only the values (the second child) are protected.
        DataType::RunEndEncoded(_, _) => nested(a, mode, place, 1),
        // Cannot hold text or 13 significant digits (see the module docs).
        DataType::Null
        | DataType::Boolean
        | DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::Float16
        | DataType::Float32
        | DataType::Decimal32(_, _)
        | DataType::Timestamp(_, _)
        | DataType::Date32
        | DataType::Date64
        | DataType::Time32(_)
        | DataType::Time64(_)
        | DataType::Duration(_)
        | DataType::Interval(_) => Ok((None, 0)),
    }
}

/// A nested array (list, struct, map, union, dictionary, run-end encoded) with its children from
/// `first` on protected, the parent's own buffers (offsets, sizes, type ids, dictionary keys) and
/// nulls kept; `None` when no child changed.
fn nested(a: &ArrayRef, mode: Mode, place: Place<'_>, first: usize) -> Result<Changed> {
    let data = a.to_data();
    let mut children = Vec::with_capacity(data.child_data().len());
    let mut changed = 0;
    let mut any = false;
    for (i, child) in data.child_data().iter().enumerate() {
        if i < first {
            children.push(child.clone());
            continue;
        }
        match protect_array(&make_array(child.clone()), mode, place.child())? {
            (Some(new), n) => {
                any = true;
                changed += n;
                children.push(new.to_data());
            }
            (None, _) => children.push(child.clone()),
        }
    }
    if !any {
        return Ok((None, 0));
    }
    // Each child kept its length and type, so the parent validates as before.
    let data = data.into_builder().child_data(children).build()?;
    Ok((Some(make_array(data)), changed))
}

/// Refuses the file when a valid value of numeric array `a` holds a card number by
/// `holds_card`; numbers are never changed. Null slots are not data and are not looked at.
fn refuse_cards<T: ArrowPrimitiveType>(
    a: &PrimitiveArray<T>,
    place: Place<'_>,
    holds_card: impl Fn(T::Native) -> bool,
) -> Result<Changed> {
    let hit = a
        .values()
        .iter()
        .enumerate()
        .find(|&(i, &v)| holds_card(v) && a.is_valid(i));
    match hit {
        Some((index, _)) => Err(place.refusal(index)),
        None => Ok((None, 0)),
    }
}

/// Protects a `Utf8` or `LargeUtf8` array.
fn strings<O: OffsetSizeTrait>(a: &GenericStringArray<O>, mode: Mode) -> Result<Changed> {
    match mode {
        Mode::Scan => Ok(scan_column(a)),
        Mode::Pan => pan_column(a),
    }
}

/// The bytes of `a`'s values, from its first offset to its last.
fn referenced_values<O: OffsetSizeTrait>(a: &GenericStringArray<O>) -> Option<&[u8]> {
    let offsets = a.offsets();
    let (first, last) = (offsets.first()?.as_usize(), offsets.last()?.as_usize());
    a.value_data().get(first..last)
}

/// Masks card numbers in free text; builds a new array only when some value holds one, so a
/// column without any (nearly all) costs one read-only pass. One look over the values buffer
/// sends an ASCII-only array down the byte path without a per-value check for other digits.
fn scan_column<O: OffsetSizeTrait>(a: &GenericStringArray<O>) -> Changed {
    let ascii = referenced_values(a).is_some_and(|v| v.is_ascii());
    let mask: fn(&str) -> Option<String> = if ascii {
        mask_ascii_card_numbers
    } else {
        mask_card_numbers
    };
    if (0..a.len()).any(|i| a.is_valid(i) && mask(a.value(i)).is_some()) {
        map_column(a, mask)
    } else {
        (None, 0)
    }
}

/// Masks a declared card-number column. ASCII values (the usual case, checked once over the
/// values buffer): one copy of the values buffer masked in place, the nulls shared with `a` and
/// the offsets too when they start at 0 (masking keeps every value's length). Otherwise the
/// values are rebuilt with new offsets, a non-ASCII digit (several bytes) becoming one `*`.
pub(super) fn pan_column<O: OffsetSizeTrait>(a: &GenericStringArray<O>) -> Result<Changed> {
    let values = referenced_values(a)
        .ok_or_else(|| Error::Internal("string offsets past the values buffer".into()))?;
    if !values.is_ascii() {
        return Ok(map_column(a, mask_pan_value));
    }
    let offsets = a.offsets();
    let base = offsets[0].as_usize();
    let mut values = values.to_vec();
    let mut changed = 0;
    for (i, w) in offsets.windows(2).enumerate() {
        let range = w[0].as_usize() - base..w[1].as_usize() - base;
        if a.is_valid(i) && values.get_mut(range).is_some_and(mask_pan_bytes) {
            changed += 1;
        }
    }
    if changed == 0 {
        return Ok((None, 0));
    }
    let offsets = if base == 0 {
        offsets.clone()
    } else {
        let rebased: Vec<O> = offsets
            .iter()
            .map(|&o| O::usize_as(o.as_usize() - base))
            .collect();
        OffsetBuffer::new(rebased.into())
    };
    let array = GenericStringArray::<O>::try_new(offsets, values.into(), a.nulls().cloned())?;
    Ok((Some(Arc::new(array)), changed))
}

/// `a` with every value `f` changes replaced (`f` returns `None` for a value it keeps). Card
/// masking never makes a value longer, so its output fits the offset type of its input.
pub(super) fn map_column<O: OffsetSizeTrait>(
    a: &GenericStringArray<O>,
    f: impl Fn(&str) -> Option<String>,
) -> Changed {
    let mut b = GenericStringBuilder::<O>::with_capacity(a.len(), a.values().len());
    let mut changed = 0;
    for i in 0..a.len() {
        if a.is_null(i) {
            b.append_null();
            continue;
        }
        let v = a.value(i);
        match f(v) {
            Some(new) => {
                changed += 1;
                b.append_value(new);
            }
            None => b.append_value(v),
        }
    }
    (Some(Arc::new(b.finish())), changed)
}

/// Protects a `Utf8View` array: rebuilt (views are not masked in place) when some value changes.
fn string_views(a: &StringViewArray, mode: Mode) -> Result<Changed> {
    let mask: fn(&str) -> Option<String> = match mode {
        Mode::Scan => mask_card_numbers,
        Mode::Pan => mask_pan_value,
    };
    if !(0..a.len()).any(|i| a.is_valid(i) && mask(a.value(i)).is_some()) {
        return Ok((None, 0));
    }
    let mut b = StringViewBuilder::with_capacity(a.len());
    let mut changed = 0;
    for i in 0..a.len() {
        if a.is_null(i) {
            b.append_null();
            continue;
        }
        let v = a.value(i);
        match mask(v) {
            Some(new) => {
                changed += 1;
                b.try_append_value(new)?;
            }
            None => b.try_append_value(v)?,
        }
    }
    Ok((Some(Arc::new(b.finish())), changed))
}

/// Protects a `Binary` or `LargeBinary` array: one copy of the values buffer masked in place
/// ([`mask_bytes`] keeps lengths), offsets and nulls shared with `a`.
fn binaries<O: OffsetSizeTrait>(a: &GenericBinaryArray<O>, mode: Mode) -> Result<Changed> {
    if !(0..a.len()).any(|i| a.is_valid(i) && bytes_may_need_mask(a.value(i), mode)) {
        return Ok((None, 0));
    }
    let mut values = a.value_data().to_vec();
    let mut changed = 0;
    for (i, w) in a.offsets().windows(2).enumerate() {
        let range = w[0].as_usize()..w[1].as_usize();
        if a.is_valid(i) && values.get_mut(range).is_some_and(|v| mask_bytes(v, mode)) {
            changed += 1;
        }
    }
    if changed == 0 {
        return Ok((None, 0));
    }
    let array =
        GenericBinaryArray::<O>::try_new(a.offsets().clone(), values.into(), a.nulls().cloned())?;
    Ok((Some(Arc::new(array)), changed))
}

/// Protects a `BinaryView` array: rebuilt when some value changes.
fn binary_views(a: &BinaryViewArray, mode: Mode) -> Result<Changed> {
    if !(0..a.len()).any(|i| a.is_valid(i) && bytes_may_need_mask(a.value(i), mode)) {
        return Ok((None, 0));
    }
    let mut b = BinaryViewBuilder::with_capacity(a.len());
    let mut changed = 0;
    let mut value = Vec::new();
    for i in 0..a.len() {
        if a.is_null(i) {
            b.append_null();
            continue;
        }
        value.clear();
        value.extend_from_slice(a.value(i));
        if mask_bytes(&mut value, mode) {
            changed += 1;
        }
        b.try_append_value(&value)?;
    }
    if changed == 0 {
        return Ok((None, 0));
    }
    Ok((Some(Arc::new(b.finish())), changed))
}

/// Protects a `FixedSizeBinary` array: values copied and masked in place (lengths kept), nulls
/// shared with `a`.
fn fixed_binaries(a: &FixedSizeBinaryArray, mode: Mode) -> Result<Changed> {
    if !(0..a.len()).any(|i| a.is_valid(i) && bytes_may_need_mask(a.value(i), mode)) {
        return Ok((None, 0));
    }
    let mut values = Vec::with_capacity(a.value_size() * a.len());
    let mut changed = 0;
    for i in 0..a.len() {
        let start = values.len();
        values.extend_from_slice(a.value(i));
        if a.is_valid(i) && mask_bytes(&mut values[start..], mode) {
            changed += 1;
        }
    }
    if changed == 0 {
        return Ok((None, 0));
    }
    let array = FixedSizeBinaryArray::try_new_with_len(
        a.value_length(),
        values.into(),
        a.nulls().cloned(),
        a.len(),
    )?;
    Ok((Some(Arc::new(array)), changed))
}

/// Replaces every value by its keyed hash token.
pub(super) fn hash_column(
    a: &StringArray,
    mac: &KeyedHash,
    email: bool,
) -> Result<(Option<ArrayRef>, usize)> {
    let changed = a.len() - a.null_count();
    let mut scratch = String::new();
    let mut values = Vec::with_capacity(64 * changed);
    let mut offsets = Vec::with_capacity(a.len() + 1);
    offsets.push(0i32);
    for i in 0..a.len() {
        if a.is_valid(i) {
            values.extend_from_slice(&hash_token(mac, a.value(i), email, &mut scratch));
        }
        offsets.push(
            i32::try_from(values.len()).map_err(|_| {
                crate::Error::Internal("hash tokens of one batch exceed 2 GiB".into())
            })?,
        );
    }
    Ok((Some(with_values(a, offsets, values)?), changed))
}

/// A string column with `a`'s nulls and new `offsets` and `values` (one value per row of `a`).
fn with_values(a: &StringArray, offsets: Vec<i32>, values: Vec<u8>) -> Result<ArrayRef> {
    let array = StringArray::try_new(
        OffsetBuffer::new(offsets.into()),
        values.into(),
        a.nulls().cloned(),
    )?;
    Ok(Arc::new(array))
}
