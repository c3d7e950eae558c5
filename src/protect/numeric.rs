//! Whether a number's integer digits, as a whole, are a card number (which refuses the file).

use arrow::datatypes::i256;

use super::card::digits_hold_card;

/// The smallest number with 13 digits: a number of smaller magnitude cannot hold a card number.
const MIN_SCANNED_NUMBER: u64 = 1_000_000_000_000;

/// True when the digits of `v` hold a card number ([`digits_hold_card`]); one comparison for a
/// value below 10^12.
pub(super) fn u64_holds_card(v: u64) -> bool {
    if v < MIN_SCANNED_NUMBER {
        return false;
    }
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    let mut n = v;
    while n > 0 {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    digits_hold_card(&buf[at..])
}

/// [`u64_holds_card`] for 128 bits: a value past `u64::MAX` has 20 digits or more.
pub(super) fn u128_holds_card(v: u128) -> bool {
    u64::try_from(v).is_ok_and(u64_holds_card)
}

/// [`u64_holds_card`] for the integer part of a decimal's unscaled value `v` at `scale`.
pub(super) fn decimal_holds_card(v: i128, scale: i8) -> bool {
    let v = v.unsigned_abs();
    let whole = match u32::try_from(scale) {
        Ok(s) => 10u128.checked_pow(s).map_or(0, |p| v / p),
        // A negative scale multiplies: the digits are followed by zeros.
        Err(_) => 10u128
            .checked_pow(u32::from(scale.unsigned_abs()))
            .and_then(|p| v.checked_mul(p))
            .unwrap_or(u128::MAX),
    };
    u128_holds_card(whole)
}

/// [`decimal_holds_card`] for a `Decimal256`: a value past 128 bits has far more than 19 digits.
pub(super) fn i256_holds_card(v: i256, scale: i8) -> bool {
    v.to_i128()
        .is_some_and(|small| decimal_holds_card(small, scale))
}

/// [`u64_holds_card`] for a float: only an integral value is a run of digits, and one of 1.8e19
/// or more has 20 digits.
pub(super) fn f64_holds_card(v: f64) -> bool {
    let v = v.abs();
    // NaN and infinities are not finite; a fraction is not a card number.
    if !v.is_finite() || !(1e12..1.8e19).contains(&v) || v.fract() != 0.0 {
        return false;
    }
    // Exact: an integral f64 below 2^64 converts to u64 without rounding.
    u64_holds_card(v as u64)
}
