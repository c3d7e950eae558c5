//! PCI DSS and PII protection, applied to every value the program writes (curated and quarantine
//! alike), whatever its Arrow type.
//!
//! Card data is looked for in every physical form a column can take, so that protection holds
//! by construction and not by the types a file happens to use:
//!
//! - strings: `Utf8`, `LargeUtf8`, `Utf8View`;
//! - bytes: `Binary`, `LargeBinary`, `BinaryView`, `FixedSizeBinary`, scanned as text (below);
//! - dictionaries: their values are protected, their keys kept;
//! - nested values: the children of `List`, `LargeList`, `FixedSizeList`, `ListView`,
//!   `LargeListView`, `Struct`, `Map`, `Union` and the values of `RunEndEncoded`, the parent
//!   rebuilt around the protected children with its offsets, sizes, type ids, run ends and nulls;
//! - numbers wide enough for 13 digits: `Int64`, `UInt64`, `Decimal64`/`128`/`256` (by the digits
//!   of the integer part) and `Float64` (integral values only).
//!
//! Rules:
//!
//! - `x-pci: "pan"` columns: every decimal digit but the last four becomes `*`, separators kept.
//!   Digits of every script count (Unicode category Nd: full-width `４`, Arabic-Indic `٤`, …).
//! - Every other column (unless `x-pci: "none"`) is scanned for card numbers in free text. A *run*
//!   is digits with single spaces or dashes allowed between digit groups. Every digit of a run is
//!   a possible start, tried left to right, the longest span first (19 digits down to 13): a span
//!   with the IIN prefix of a major brand (Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay,
//!   Maestro) that passes Luhn is masked to its last four digits, separators kept, and the scan
//!   goes on after it. So a card glued to other digits (`004111…`, `ref12` + card) is found. The
//!   scan repeats on its own output until nothing changes, so no candidate survives anywhere. A
//!   value holding non-ASCII digits is scanned on its characters, each digit read as its ASCII
//!   value, and the matching characters are masked.
//! - A number cannot be partly masked: one whose integer digits, as a whole, are a card number
//!   (13 to 19 digits, brand prefix, Luhn; a card glued inside a longer number is not looked for,
//!   see [`digits_hold_card`]) refuses the whole file ([`Error::BadInput`]), with a message that names the column, its type
//!   and the row but never the value, and says how to fix the contract. A value below 10^12 in
//!   magnitude has at most 12 digits and costs one comparison.
//! - Types that cannot hold text or 13 significant digits pass through untouched: `Null`,
//!   `Boolean`, integers of up to 32 bits, `Float16`, `Float32` (a 24-bit mantissa), `Decimal32`
//!   (at most 10 digits) and the temporal types (dates, times, timestamps, durations, intervals:
//!   an `i64` timestamp could equal a card number numerically, but it is written and read as an
//!   instant, never as that number).
//! - `x-pii` on a `Utf8` column: `hash` (keyed HMAC-SHA-256, written as 64 letters `a`–`p`, one
//!   per nibble, so a token can never look like a card number), `mask` (every letter and digit
//!   but the last four becomes `*`), `redact` (`REDACTED`). A PII column of another type gets the
//!   card protection instead.
//!
//! Masking only replaces characters by `*`. An ASCII value keeps its length, so an ASCII string
//! array is masked in one copy of its values buffer with its offsets and nulls shared; a string
//! with non-ASCII digits gets shorter (one `*` per character) and its array new offsets. Byte
//! values always keep their length: every byte of a masked character becomes `*`, so valid UTF-8
//! stays valid UTF-8.
//!
//! An array in which no value may hold a card ([`may_hold_pan`] on each value, plus a look for
//! non-ASCII digits in a non-ASCII value) is returned untouched (zero copy), and so is a nested
//! array none of whose children changed: the scan stays cheap on names, dates and enums.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::{
    make_array, Array, ArrayRef, AsArray, BinaryViewArray, BinaryViewBuilder, FixedSizeBinaryArray,
    GenericBinaryArray, GenericStringArray, GenericStringBuilder, OffsetSizeTrait, PrimitiveArray,
    RecordBatch, StringArray, StringViewArray, StringViewBuilder,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{
    i256, ArrowPrimitiveType, DataType, Decimal128Type, Decimal256Type, Decimal64Type, Float64Type,
    Int64Type, Schema, UInt64Type,
};
use sha2::{Digest, Sha256};

use crate::contract::{Contract, Pci, Pii};
use crate::{Error, Result};

const MIN_PAN_DIGITS: usize = 13;
const MAX_PAN_DIGITS: usize = 19;
/// The smallest number with 13 digits: a number of smaller magnitude cannot hold a card number.
const MIN_SCANNED_NUMBER: u64 = 1_000_000_000_000;

/// True when `digits` (ASCII digit bytes) pass the Luhn checksum.
pub fn luhn_valid(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// True when `digits` start with the IIN of a major card brand.
pub fn brand_prefix(digits: &[u8]) -> bool {
    let prefix = |n: usize| -> u32 {
        digits[..n]
            .iter()
            .fold(0, |acc, d| acc * 10 + u32::from(d - b'0'))
    };
    if digits.len() < 6 {
        return false;
    }
    let (p2, p3, p4) = (prefix(2), prefix(3), prefix(4));
    match digits[0] {
        b'4' => true,                        // Visa
        b'2' => (2221..=2720).contains(&p4), // Mastercard 2-series
        b'5' => (50..=58).contains(&p2),     // Mastercard, Maestro
        b'3' => {
            matches!(p2, 34 | 37 | 36 | 38 | 39)                               // Amex, Diners
                || (300..=305).contains(&p3)                                   // Diners
                || (3528..=3589).contains(&p4) // JCB
        }
        b'6' => {
            p4 == 6011 || (644..=649).contains(&p3) || matches!(p2, 62 | 63 | 65 | 67)
            // Discover, UnionPay, Maestro
        }
        _ => false,
    }
}

/// The zero of every block of decimal digits in Unicode (general category Nd), sorted. Each block
/// is ten consecutive code points, the digits 0 to 9. Generated with Python 3.11's `unicodedata`
/// (Unicode 14.0.0) as
/// `[cp for cp in range(0x110000) if unicodedata.category(chr(cp)) == "Nd" and unicodedata.decimal(chr(cp)) == 0]`,
/// each block checked to hold the digits 0–9 in order (660 digits in 66 blocks).
const ND_ZEROS: [u32; 66] = [
    0x0030, 0x0660, 0x06F0, 0x07C0, 0x0966, 0x09E6, 0x0A66, 0x0AE6, 0x0B66, 0x0BE6, 0x0C66, 0x0CE6,
    0x0D66, 0x0DE6, 0x0E50, 0x0ED0, 0x0F20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80,
    0x1A90, 0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0,
    0xFF10, 0x104A0, 0x10D30, 0x11066, 0x110F0, 0x11136, 0x111D0, 0x112F0, 0x11450, 0x114D0,
    0x11650, 0x116C0, 0x11730, 0x118E0, 0x11950, 0x11C50, 0x11D50, 0x11DA0, 0x16A60, 0x16AC0,
    0x16B50, 0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E140, 0x1E2F0, 0x1E950, 0x1FBF0,
];

/// The value of `c` when it is a decimal digit of any script (Unicode category Nd, see
/// `ND_ZEROS`): `'7'`, `'７'` and `'٧'` are all 7. Other numeric characters (`'²'`, `'½'`,
/// Roman numerals) are not decimal digits.
pub fn decimal_digit(c: char) -> Option<u8> {
    let cp = u32::from(c);
    if cp < 0x80 {
        return if c.is_ascii_digit() {
            Some((cp - u32::from(b'0')) as u8)
        } else {
            None
        };
    }
    if cp < 0x0660 {
        return None;
    }
    let blocks = ND_ZEROS.partition_point(|&zero| zero <= cp);
    let zero = *ND_ZEROS.get(blocks.checked_sub(1)?)?;
    let d = cp - zero;
    (d < 10).then_some(d as u8)
}

/// True when `s` holds a decimal digit outside ASCII.
fn has_non_ascii_digit(s: &str) -> bool {
    s.chars()
        .any(|c| !c.is_ascii() && decimal_digit(c).is_some())
}

/// `c` as the one byte the scans read: ASCII as itself, a decimal digit of another script as its
/// ASCII digit, any other character as `x` (which ends a candidate like any letter).
fn scan_byte(c: char) -> u8 {
    if c.is_ascii() {
        c as u8
    } else {
        decimal_digit(c).map_or(b'x', |d| b'0' + d)
    }
}

fn is_sep(b: u8) -> bool {
    b == b' ' || b == b'-'
}

/// Quick pre-check: could `bytes` hold 13 digits separated by at most single spaces or dashes?
///
/// Any other byte ends a candidate, so the answer is whether some stretch free of other bytes
/// holds one. A stretch shorter than 13 bytes cannot, so the scan looks at 13-byte windows: the
/// last other byte in a window moves the next window past it, and only from a window free of
/// other bytes are digits counted, up to the stretch's end. Dates, phone numbers and prose are
/// mostly skipped 13 bytes at a time instead of being counted byte by byte.
///
/// Only ASCII digits count: a value holding other decimal digits must be checked with
/// `has_non_ascii_digit` as well (as [`mask_card_numbers`] does); a card glued to other digits
/// still has 13 digits in a stretch.
pub fn may_hold_pan(bytes: &[u8]) -> bool {
    let other = |b: u8| !(b.is_ascii_digit() || is_sep(b));
    let mut start = 0;
    while start + MIN_PAN_DIGITS <= bytes.len() {
        let window = &bytes[start..start + MIN_PAN_DIGITS];
        if let Some(last) = window.iter().rposition(|&b| other(b)) {
            start += last + 1;
            continue;
        }
        // Count the stretch from `start` to the next other byte.
        let mut run = 0usize;
        let mut prev_sep = false;
        let from = start;
        start = bytes.len();
        for (i, &b) in bytes.iter().enumerate().skip(from) {
            if b.is_ascii_digit() {
                run += 1;
                if run >= MIN_PAN_DIGITS {
                    return true;
                }
                prev_sep = false;
            } else if !is_sep(b) {
                start = i + 1;
                break;
            } else if run > 0 && !prev_sep {
                prev_sep = true;
            } else {
                run = 0;
                prev_sep = false;
            }
        }
    }
    false
}

/// The length of the longest card number that starts at `digits[0]` (ASCII digits): 13 to 19
/// digits with a brand's prefix that pass Luhn. The brand is read from the first digits, so it is
/// the same for every length.
fn card_at(digits: &[u8]) -> Option<usize> {
    if digits.len() < MIN_PAN_DIGITS || !brand_prefix(digits) {
        return None;
    }
    let longest = digits.len().min(MAX_PAN_DIGITS);
    (MIN_PAN_DIGITS..=longest)
        .rev()
        .find(|&len| luhn_valid(&digits[..len]))
}

/// True when `digits` (the integer digits of a number) are, as a whole, a card number: 13 to 19
/// digits, brand prefix, Luhn. Unlike free text, a card glued inside a longer number is not
/// looked for: 8% of 2024's epoch microseconds and half of all snowflake ids hold one by that
/// rule, so every file with such a column would be refused.
fn digits_hold_card(digits: &[u8]) -> bool {
    (MIN_PAN_DIGITS..=MAX_PAN_DIGITS).contains(&digits.len())
        && brand_prefix(digits)
        && luhn_valid(digits)
}

/// Masks the card numbers of one run of digits, `run` being the positions of its digits in
/// `bytes`: every digit is a possible start, tried left to right, the longest span first; a hit
/// is masked but its last four digits and the scan goes on after it. Returns the hits.
fn mask_run(bytes: &mut [u8], run: &[usize]) -> usize {
    let mut masked = 0;
    let mut digits = [0u8; MAX_PAN_DIGITS];
    let mut start = 0;
    while start + MIN_PAN_DIGITS <= run.len() {
        let span = &run[start..run.len().min(start + MAX_PAN_DIGITS)];
        for (d, &p) in digits.iter_mut().zip(span) {
            *d = bytes[p];
        }
        match card_at(&digits[..span.len()]) {
            Some(len) => {
                for &p in &span[..len - 4] {
                    bytes[p] = b'*';
                }
                masked += 1;
                start += len;
            }
            None => start += 1,
        }
    }
    masked
}

/// One pass of the free-text scan over `bytes` (ASCII digits, any other byte ends a run), masking
/// in place. Returns the number of card numbers masked.
fn mask_pass(bytes: &mut [u8]) -> usize {
    let mut masked = 0;
    let mut run: Vec<usize> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        // Collect one run of digit groups joined by single separators.
        run.clear();
        loop {
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                run.push(i);
                i += 1;
            }
            if i + 1 < bytes.len() && is_sep(bytes[i]) && bytes[i + 1].is_ascii_digit() {
                i += 1;
            } else {
                break;
            }
        }
        masked += mask_run(bytes, &run);
    }
    masked
}

/// The free-text scan, repeated on its own output until a pass masks nothing: the last pass
/// tried every start and length, so no card number is left. Returns the number masked.
fn mask_all(bytes: &mut [u8]) -> usize {
    let mut total = 0;
    loop {
        let n = mask_pass(bytes);
        if n == 0 {
            return total;
        }
        total += n;
    }
}

/// Masks every card number in free text `s`; `None` when there was none (no allocation).
pub fn mask_card_numbers(s: &str) -> Option<String> {
    if !s.is_ascii() && has_non_ascii_digit(s) {
        return masked_chars(s, Mode::Scan).map(|marks| render(s, &marks));
    }
    mask_ascii_card_numbers(s)
}

/// [`mask_card_numbers`] for a value whose digits are all ASCII (its other non-ASCII characters
/// end candidates like any letter).
fn mask_ascii_card_numbers(s: &str) -> Option<String> {
    if !may_hold_pan(s.as_bytes()) {
        return None;
    }
    let mut bytes = s.as_bytes().to_vec();
    // Only ASCII digits are replaced by ASCII `*`, so the bytes are still UTF-8.
    (mask_all(&mut bytes) > 0).then(|| String::from_utf8(bytes).unwrap_or_default())
}

/// Masks a declared card number: every decimal digit (of any script) but the last four becomes
/// `*`.
pub fn mask_pan(s: &str) -> String {
    mask_pan_value(s).unwrap_or_else(|| s.to_string())
}

/// [`mask_pan`], `None` when `s` has at most four digits (nothing to mask).
fn mask_pan_value(s: &str) -> Option<String> {
    if s.is_ascii() {
        let mut bytes = s.as_bytes().to_vec();
        // Only ASCII digits are replaced by ASCII `*`, so the bytes are still UTF-8.
        return mask_pan_bytes(&mut bytes).then(|| String::from_utf8(bytes).unwrap_or_default());
    }
    masked_chars(s, Mode::Pan).map(|marks| render(s, &marks))
}

/// [`mask_pan`] in place over ASCII digits; true when any digit was masked. The length never
/// changes: each ASCII digit becomes one `*` byte, and the bytes of other characters are left
/// alone.
fn mask_pan_bytes(bytes: &mut [u8]) -> bool {
    let digits = bytes.iter().filter(|b| b.is_ascii_digit()).count();
    let mut to_mask = digits.saturating_sub(4);
    let changed = to_mask > 0;
    for b in bytes.iter_mut() {
        if to_mask == 0 {
            break;
        }
        if b.is_ascii_digit() {
            *b = b'*';
            to_mask -= 1;
        }
    }
    changed
}

/// The characters of `s` as scan bytes ([`scan_byte`], one per character) masked by `mode`;
/// `None` when nothing was masked. This is how values with non-ASCII digits are masked: the same
/// byte-level rules run on the characters.
fn masked_chars(s: &str, mode: Mode) -> Option<Vec<u8>> {
    let mut marks: Vec<u8> = s.chars().map(scan_byte).collect();
    let changed = match mode {
        Mode::Pan => mask_pan_bytes(&mut marks),
        Mode::Scan => may_hold_pan(&marks) && mask_all(&mut marks) > 0,
    };
    changed.then_some(marks)
}

/// `s` with every character whose mark ([`masked_chars`]) is `*` written as one `*`.
fn render(s: &str, marks: &[u8]) -> String {
    s.chars()
        .zip(marks)
        .map(|(c, &m)| if m == b'*' { '*' } else { c })
        .collect()
}

/// Masks one byte value in place by `mode`, keeping its length; true when it changed. UTF-8
/// holding non-ASCII digits is masked by characters, every byte of a masked character becoming
/// `*`; any other value by its ASCII digits.
fn mask_bytes(v: &mut [u8], mode: Mode) -> bool {
    let unicode = std::str::from_utf8(v).is_ok_and(|s| !s.is_ascii() && has_non_ascii_digit(s));
    if !unicode {
        return match mode {
            Mode::Pan => mask_pan_bytes(v),
            Mode::Scan => may_hold_pan(v) && mask_all(v) > 0,
        };
    }
    let ranges = match std::str::from_utf8(v) {
        Ok(s) => masked_char_ranges(s, mode),
        Err(_) => return false,
    };
    for range in &ranges {
        if let Some(bytes) = v.get_mut(range.clone()) {
            bytes.fill(b'*');
        }
    }
    !ranges.is_empty()
}

/// The byte ranges of the characters of `s` that `mode` masks (characters already `*` left out).
fn masked_char_ranges(s: &str, mode: Mode) -> Vec<Range<usize>> {
    let Some(marks) = masked_chars(s, mode) else {
        return Vec::new();
    };
    let mut ranges = Vec::new();
    for ((i, c), &m) in s.char_indices().zip(&marks) {
        if m == b'*' && c != '*' {
            ranges.push(i..i + c.len_utf8());
        }
    }
    ranges
}

/// Cheap pre-check for byte values: false when `v` certainly needs no masking by `mode`.
fn bytes_may_need_mask(v: &[u8], mode: Mode) -> bool {
    let ascii = match mode {
        Mode::Pan => v.iter().filter(|b| b.is_ascii_digit()).count() > 4,
        Mode::Scan => may_hold_pan(v),
    };
    ascii || (!v.is_ascii() && std::str::from_utf8(v).is_ok_and(has_non_ascii_digit))
}

/// True when the digits of `v` hold a card number ([`digits_hold_card`]); one comparison for a
/// value below 10^12.
fn u64_holds_card(v: u64) -> bool {
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
fn u128_holds_card(v: u128) -> bool {
    u64::try_from(v).is_ok_and(u64_holds_card)
}

/// [`u64_holds_card`] for the integer part of a decimal's unscaled value `v` at `scale`.
fn decimal_holds_card(v: i128, scale: i8) -> bool {
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
fn i256_holds_card(v: i256, scale: i8) -> bool {
    v.to_i128()
        .is_some_and(|small| decimal_holds_card(small, scale))
}

/// [`u64_holds_card`] for a float: only an integral value is a run of digits, and one of 1.8e19
/// or more has 20 digits.
fn f64_holds_card(v: f64) -> bool {
    let v = v.abs();
    // NaN and infinities are not finite; a fraction is not a card number.
    if !v.is_finite() || !(1e12..1.8e19).contains(&v) || v.fract() != 0.0 {
        return false;
    }
    // Exact: an integral f64 below 2^64 converts to u64 without rounding.
    u64_holds_card(v as u64)
}

/// PII `mask`: every letter and digit but the last four becomes `*`.
pub fn mask_pii(s: &str) -> String {
    let total = s.chars().filter(|c| c.is_alphanumeric()).count();
    let mut seen = 0;
    s.chars()
        .map(|c| {
            if c.is_alphanumeric() {
                seen += 1;
                if seen + 4 <= total {
                    return '*';
                }
            }
            c
        })
        .collect()
}

/// HMAC-SHA-256 under one key, with the inner and outer states after the padded key already
/// compressed: a value then costs exactly its own SHA-256 blocks (two for a short string), with
/// no per-value copy of a MAC object. Agrees with the `hmac` crate (property test).
#[derive(Clone)]
pub struct KeyedHash {
    inner: [u32; 8],
    outer: [u32; 8],
}

impl std::fmt::Debug for KeyedHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyedHash(..)")
    }
}

/// SHA-256 initial state (FIPS 180-4).
const SHA256_H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

impl KeyedHash {
    pub fn new(key: &[u8]) -> Self {
        let mut block = [0u8; 64];
        if key.len() > 64 {
            block[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let state = |pad: u8| {
            let mut padded = block;
            padded.iter_mut().for_each(|b| *b ^= pad);
            let mut h = SHA256_H0;
            sha2::compress256(&mut h, &[padded.into()]);
            h
        };
        KeyedHash {
            inner: state(0x36),
            outer: state(0x5c),
        }
    }

    /// The 32-byte MAC of `msg`.
    pub fn mac(&self, msg: &[u8]) -> [u8; 32] {
        let inner = finish(self.inner, msg);
        finish(self.outer, &inner)
    }
}

/// Absorbs `msg` into `state` (one 64-byte block already compressed) and pads: the SHA-256
/// digest of block ‖ `msg`.
fn finish(mut state: [u32; 8], msg: &[u8]) -> [u8; 32] {
    let mut chunks = msg.chunks_exact(64);
    for chunk in &mut chunks {
        let block: [u8; 64] = chunk.try_into().unwrap_or([0; 64]);
        sha2::compress256(&mut state, &[block.into()]);
    }
    let rest = chunks.remainder();
    let bits = ((64 + msg.len()) as u64) * 8;
    let mut tail = [0u8; 128];
    tail[..rest.len()].copy_from_slice(rest);
    tail[rest.len()] = 0x80;
    let end = if rest.len() < 56 { 64 } else { 128 };
    tail[end - 8..end].copy_from_slice(&bits.to_be_bytes());
    for block in tail[..end].chunks_exact(64) {
        let block: [u8; 64] = block.try_into().unwrap_or([0; 64]);
        sha2::compress256(&mut state, &[block.into()]);
    }
    let mut out = [0u8; 32];
    for (bytes, word) in out.chunks_exact_mut(4).zip(state) {
        bytes.copy_from_slice(&word.to_be_bytes());
    }
    out
}

/// PII `hash`: HMAC-SHA-256 of `s` under `key`, one letter `a`–`p` per nibble.
pub fn hash_pii(key: &[u8], s: &str) -> String {
    let token = hash_token(&KeyedHash::new(key), s);
    String::from_utf8_lossy(&token).into_owned()
}

/// The token bytes of [`hash_pii`] (ASCII letters), without allocating.
fn hash_token(key: &KeyedHash, s: &str) -> [u8; 64] {
    let out = key.mac(s.as_bytes());
    let mut token = [0u8; 64];
    for (pair, byte) in token.chunks_exact_mut(2).zip(out) {
        pair[0] = b'a' + (byte >> 4);
        pair[1] = b'a' + (byte & 15);
    }
    token
}

/// How the strings and bytes of one column are protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `x-pci: "pan"`: every digit but the last four masked.
    Pan,
    /// The free-text scan.
    Scan,
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Card(Mode),
    Pii(Pii),
}

/// Where a protected array sits, for the message that refuses a number holding a card.
#[derive(Debug, Clone, Copy)]
struct Place<'a> {
    object: &'a str,
    column: &'a str,
    /// The type of the whole column.
    column_type: &'a DataType,
    /// True for the column's own array, whose indices are the rows of the batch; false for a
    /// child (list items, struct fields, dictionary values), whose indices are not.
    top: bool,
}

impl Place<'_> {
    fn child(self) -> Self {
        Place { top: false, ..self }
    }

    /// The error refusing the file because of the number at `index` (never the value itself).
    fn refusal(self, index: usize) -> Error {
        let which = if self.top {
            format!("row {index} of a batch")
        } else {
            "a value".to_string()
        };
        Error::bad_input(
            self.object,
            format!(
                "column `{}` ({}): {which} is a number whose digits form a card number (13 to 19 \
                 digits, a card brand's prefix, Luhn-valid), and a number cannot be masked to its \
                 last four digits, so the file is refused. If the column does not hold card data, \
                 declare it with `x-pci: \"none\"` in the contract (adding it to `properties` if \
                 it is not there); if it does, store card numbers as strings, declared \
                 `type: string` with `x-pci: \"pan\"`",
                self.column, self.column_type
            ),
        )
    }
}

/// An array's protection: the new array, or `None` when nothing changed (the input is kept, zero
/// copy), and the number of values changed.
type Changed = (Option<ArrayRef>, usize);

/// Protection compiled against one schema.
#[derive(Debug, Clone)]
pub struct Protector {
    columns: Vec<(usize, Arc<str>, Action)>,
    mac: KeyedHash,
}

/// Values changed in one batch, per column name.
pub type MaskCounts = Vec<(Arc<str>, usize)>;

impl Protector {
    /// Plans protection of the columns of `schema`, of every type (see the module docs). With
    /// `pci` false, card masking and scanning are off (PII transforms still apply). `pii_key`
    /// keys `x-pii: hash`.
    pub fn new(contract: &Contract, schema: &Schema, pci: bool, pii_key: &[u8]) -> Self {
        let mut columns = Vec::new();
        for (index, field) in schema.fields().iter().enumerate() {
            let spec = contract.column(field.name());
            let action = match spec {
                Some(s) if s.pii.is_some() && field.data_type() == &DataType::Utf8 => {
                    s.pii.map(Action::Pii)
                }
                Some(s) if s.pci == Pci::None => None,
                Some(s) if s.pci == Pci::Pan => pci.then_some(Action::Card(Mode::Pan)),
                _ => pci.then_some(Action::Card(Mode::Scan)),
            };
            if let Some(a) = action {
                columns.push((index, field.name().as_str().into(), a));
            }
        }
        Protector {
            columns,
            mac: KeyedHash::new(pii_key),
        }
    }

    /// Protects one batch of `object` (named in errors), returning it and the number of values
    /// changed per column (for a nested column, the strings changed inside it). A number holding
    /// a card number is an [`Error::BadInput`]. With `parallel`, columns are transformed on the
    /// rayon pool (see `map_columns` in the crate root).
    pub fn protect(
        &self,
        batch: &RecordBatch,
        object: &str,
        parallel: bool,
    ) -> Result<(RecordBatch, MaskCounts)> {
        let transform = |(index, name, action): &(usize, Arc<str>, Action)| {
            let column = batch.columns().get(*index).ok_or_else(|| {
                Error::Internal(format!(
                    "protection planned a column `{name}` the batch lacks"
                ))
            })?;
            let (new, n) = match action {
                Action::Card(mode) => {
                    let place = Place {
                        object,
                        column: name,
                        column_type: column.data_type(),
                        top: true,
                    };
                    protect_array(column, *mode, place)?
                }
                Action::Pii(pii) => {
                    let a = column.as_string_opt::<i32>().ok_or_else(|| {
                        Error::Internal(format!("PII column `{name}` is not Utf8 as planned"))
                    })?;
                    match pii {
                        Pii::Hash => hash_column(a, &self.mac)?,
                        Pii::Mask => map_column(a, |s| Some(mask_pii(s))),
                        Pii::Redact => map_column(a, |_| Some("REDACTED".to_string())),
                    }
                }
            };
            Ok((*index, new, name.clone(), n))
        };
        let changed: Vec<(usize, Option<ArrayRef>, Arc<str>, usize)> =
            crate::map_columns(&self.columns, parallel, transform)
                .into_iter()
                .collect::<Result<_>>()?;
        let mut arrays: Vec<ArrayRef> = batch.columns().to_vec();
        let mut counts = Vec::new();
        for (index, new, name, n) in changed {
            if let Some(new) = new {
                arrays[index] = new;
            }
            if n > 0 {
                counts.push((name, n));
            }
        }
        Ok((RecordBatch::try_new(batch.schema(), arrays)?, counts))
    }
}

/// Protects one array by `mode`: a column, or a child of one at `place`. Every Arrow type is
/// named here, so a type added to Arrow is a compile error rather than a silent pass-through.
fn protect_array(a: &ArrayRef, mode: Mode, place: Place<'_>) -> Result<Changed> {
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
fn pan_column<O: OffsetSizeTrait>(a: &GenericStringArray<O>) -> Result<Changed> {
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
fn map_column<O: OffsetSizeTrait>(
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
fn hash_column(a: &StringArray, mac: &KeyedHash) -> Result<(Option<ArrayRef>, usize)> {
    let changed = a.len() - a.null_count();
    let mut values = Vec::with_capacity(64 * changed);
    let mut offsets = Vec::with_capacity(a.len() + 1);
    offsets.push(0i32);
    for i in 0..a.len() {
        if a.is_valid(i) {
            values.extend_from_slice(&hash_token(mac, a.value(i)));
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        BinaryArray, Decimal128Array, DictionaryArray, Float64Array, Int64Array, Int64Builder,
        LargeBinaryArray, LargeStringArray, ListArray, ListBuilder, MapBuilder, StringBuilder,
        StructArray, UInt64Array,
    };
    use arrow::buffer::NullBuffer;
    use arrow::datatypes::{Field, FieldRef, Int32Type};
    use proptest::prelude::*;

    /// The byte-by-byte pre-check that [`may_hold_pan`] must agree with.
    fn reference_may_hold_pan(bytes: &[u8]) -> bool {
        let mut run = 0usize;
        let mut prev_sep = false;
        for &b in bytes {
            if b.is_ascii_digit() {
                run += 1;
                if run >= MIN_PAN_DIGITS {
                    return true;
                }
                prev_sep = false;
            } else if is_sep(b) && run > 0 && !prev_sep {
                prev_sep = true;
            } else {
                run = 0;
                prev_sep = false;
            }
        }
        false
    }

    proptest! {
        #[test]
        fn keyed_hash_is_hmac_sha256(
            key in prop::collection::vec(any::<u8>(), 0..100),
            msg in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            use hmac::{Hmac, Mac};
            let mut reference = Hmac::<Sha256>::new_from_slice(&key).unwrap();
            reference.update(&msg);
            let expected: [u8; 32] = reference.finalize().into_bytes().into();
            prop_assert_eq!(KeyedHash::new(&key).mac(&msg), expected);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]
        #[test]
        fn pan_pre_check_agrees_with_the_reference(
            s in prop::collection::vec(
                prop_oneof!["[0-9]{1,7}", "[0-9]{12,14}", "[ -]", "[ -]{2}", "[a:]"],
                0..12,
            )
                .prop_map(|parts| parts.concat())
        ) {
            prop_assert_eq!(may_hold_pan(s.as_bytes()), reference_may_hold_pan(s.as_bytes()));
        }
    }

    #[test]
    fn luhn_and_brands() {
        assert!(luhn_valid(b"4111111111111111"));
        assert!(!luhn_valid(b"4111111111111112"));
        assert!(brand_prefix(b"378282246310005"));
        assert!(brand_prefix(b"2221000000000009"));
        assert!(!brand_prefix(b"9111111111111111"));
    }

    #[test]
    fn masks_free_text_keeping_separators() {
        assert_eq!(
            mask_card_numbers("card 4111 1111 1111 1111 thanks").as_deref(),
            Some("card **** **** **** 1111 thanks")
        );
        assert_eq!(
            mask_card_numbers("Zoë paid with 5555-5555-5555-4444.").as_deref(),
            Some("Zoë paid with ****-****-****-4444.")
        );
        assert_eq!(
            mask_card_numbers("ref 120 4111111111111111").as_deref(),
            Some("ref 120 ************1111")
        );
        // Every digit of a run is a possible start: "34111111111111111" (Amex prefix, from the
        // `3` of `123`) is Luhn-valid and comes first, and most of the card is masked with it.
        assert_eq!(
            mask_card_numbers("ref 123 4111111111111111").as_deref(),
            Some("ref 1** *********1111111")
        );
        assert_eq!(
            mask_card_numbers("call +4915112345670 or 4111111111111112"),
            None
        );
        assert_eq!(mask_card_numbers("no digits here"), None);
    }

    #[test]
    fn masks_adjacent_cards() {
        let out = mask_card_numbers("4111111111111111 4012888888881881").unwrap();
        assert_eq!(out, "************1111 ************1881");
    }

    #[test]
    fn pan_and_pii_transforms() {
        assert_eq!(mask_pan("4111-1111-1111-1111"), "****-****-****-1111");
        let cards = StringArray::from(vec![
            Some("4111-1111-1111-1111"),
            None,
            Some("ref 12"),
            Some("5555 5555 5555 4444 Zoë"),
        ]);
        let (masked, changed) = pan_column(&cards.slice(1, 3) as &StringArray).unwrap();
        let masked = masked.unwrap();
        let masked = masked.as_string::<i32>();
        assert_eq!(changed, 1);
        assert!(masked.is_null(0));
        assert_eq!(masked.value(1), "ref 12");
        assert_eq!(masked.value(2), "**** **** **** 4444 Zoë");
        assert_eq!(mask_pii("jane@example.com"), "****@******e.com");
        let t = hash_pii(b"k", "jane@example.com");
        assert_eq!(t.len(), 64);
        assert!(t.bytes().all(|c| (b'a'..=b'p').contains(&c)));
        assert_eq!(t, hash_pii(b"k", "jane@example.com"));
        assert_ne!(t, hash_pii(b"k2", "jane@example.com"));
    }

    const OBJECT: &str = "s3://raw/orders/part-a.parquet";
    const CARD: &str = "4111111111111111";
    const NOTE: &str = "paid with 4111111111111111, thanks";

    fn arc(a: impl Array + 'static) -> ArrayRef {
        Arc::new(a)
    }

    /// Protects `columns` of one batch as extra columns (not in the contract, which allows them).
    fn protect_extra(columns: Vec<(&str, ArrayRef)>) -> Result<RecordBatch> {
        let contract = Contract::from_json_str(
            "t.json",
            r#"{"title":"t","properties":{"id":{"type":"integer"}}}"#,
        )
        .unwrap();
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let protector = Protector::new(&contract, &batch.schema(), true, b"k");
        protector.protect(&batch, OBJECT, false).map(|(b, _)| b)
    }

    /// The checker's own digits: ASCII, full-width and Arabic-Indic (the scripts the tests use).
    fn checker_digit(c: char) -> Option<u8> {
        let cp = u32::from(c);
        [0x30u32, 0xFF10, 0x0660]
            .iter()
            .find(|&&zero| (zero..zero + 10).contains(&cp))
            .map(|&zero| (cp - zero) as u8)
    }

    /// Luhn over digit values 0–9, written independently of [`luhn_valid`].
    fn checker_luhn(digits: &[u8]) -> bool {
        const DOUBLED: [u32; 10] = [0, 2, 4, 6, 8, 1, 3, 5, 7, 9];
        let sum: u32 = digits
            .iter()
            .rev()
            .enumerate()
            .map(|(i, &d)| {
                if i % 2 == 1 {
                    DOUBLED[usize::from(d)]
                } else {
                    u32::from(d)
                }
            })
            .sum();
        sum.is_multiple_of(10)
    }

    /// Every card number left in `text`, by an independent reading of the rule: in each run of
    /// digits (groups joined by single spaces or dashes), every start and every length from 13
    /// to 19 digits.
    fn cards_left(text: &str) -> Vec<String> {
        let chars: Vec<char> = text.chars().collect();
        let mut found = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let mut run = Vec::new();
            while let Some(&c) = chars.get(i) {
                if let Some(d) = checker_digit(c) {
                    run.push(d);
                } else if run.is_empty()
                    || !(c == ' ' || c == '-')
                    || chars.get(i + 1).and_then(|&n| checker_digit(n)).is_none()
                {
                    break;
                }
                i += 1;
            }
            if run.is_empty() {
                i += 1;
            }
            for start in 0..run.len() {
                for len in 13..=19 {
                    let Some(window) = run.get(start..start + len) else {
                        break;
                    };
                    let ascii: Vec<u8> = window.iter().map(|d| b'0' + d).collect();
                    if brand_prefix(&ascii) && checker_luhn(window) {
                        found.push(String::from_utf8(ascii).unwrap());
                    }
                }
            }
        }
        found
    }

    /// Every string and byte value in `a`, nested ones included (bytes decoded lossily).
    fn text_values(a: &dyn Array) -> Vec<String> {
        let bytes = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
        match a.data_type() {
            DataType::Utf8 => a
                .as_string::<i32>()
                .iter()
                .flatten()
                .map(str::to_string)
                .collect(),
            DataType::LargeUtf8 => a
                .as_string::<i64>()
                .iter()
                .flatten()
                .map(str::to_string)
                .collect(),
            DataType::Utf8View => a
                .as_string_view()
                .iter()
                .flatten()
                .map(str::to_string)
                .collect(),
            DataType::Binary => a.as_binary::<i32>().iter().flatten().map(bytes).collect(),
            DataType::LargeBinary => a.as_binary::<i64>().iter().flatten().map(bytes).collect(),
            DataType::BinaryView => a.as_binary_view().iter().flatten().map(bytes).collect(),
            DataType::FixedSizeBinary(_) => a
                .as_fixed_size_binary()
                .iter()
                .flatten()
                .map(bytes)
                .collect(),
            DataType::List(_) => text_values(a.as_list::<i32>().values().as_ref()),
            DataType::Struct(_) => a
                .as_struct()
                .columns()
                .iter()
                .flat_map(|c| text_values(c.as_ref()))
                .collect(),
            DataType::Map(_, _) => text_values(a.as_map().entries()),
            DataType::Dictionary(_, _) => text_values(a.as_any_dictionary().values().as_ref()),
            _ => Vec::new(),
        }
    }

    /// Regression (issue 11, item 1): extra columns of these types were copied verbatim.
    #[test]
    fn masks_cards_in_every_string_and_byte_form() {
        let mut list = ListBuilder::new(StringBuilder::new());
        list.values().append_value("ok");
        list.values().append_value(NOTE);
        list.append(true);
        list.append(false);
        let mut map = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        map.keys().append_value(CARD);
        map.values().append_value(NOTE);
        map.append(true).unwrap();
        map.append(true).unwrap();
        let field: FieldRef = Arc::new(Field::new("note", DataType::Utf8, true));
        let notes = arc(StringArray::from(vec![Some(NOTE), None]));
        let columns: Vec<(&str, ArrayRef)> = vec![
            (
                "dictionary",
                arc(DictionaryArray::<Int32Type>::from_iter([Some(NOTE), None])),
            ),
            ("large", arc(LargeStringArray::from(vec![Some(NOTE), None]))),
            (
                "view",
                arc(StringViewArray::from_iter([Some(NOTE), Some("x")])),
            ),
            ("list", arc(list.finish())),
            (
                "struct",
                arc(StructArray::from(vec![(field, notes.clone())])),
            ),
            ("map", arc(map.finish())),
            (
                "binary",
                arc(BinaryArray::from(vec![Some(NOTE.as_bytes()), None])),
            ),
            (
                "large_binary",
                arc(LargeBinaryArray::from(vec![
                    Some(CARD.as_bytes()),
                    Some(b"x".as_slice()),
                ])),
            ),
            (
                "binary_view",
                arc(BinaryViewArray::from_iter_values([
                    NOTE.as_bytes(),
                    b"x".as_slice(),
                ])),
            ),
            (
                "fixed_binary",
                arc(FixedSizeBinaryArray::try_from_iter(
                    [CARD.as_bytes(), b"0000000000000000".as_slice()].into_iter(),
                )
                .unwrap()),
            ),
            ("utf8", notes),
        ];
        let input = RecordBatch::try_from_iter(columns.clone()).unwrap();
        for (field, column) in input.schema().fields().iter().zip(input.columns()) {
            let texts = text_values(column.as_ref());
            assert!(
                texts.iter().any(|t| !cards_left(t).is_empty()),
                "{}: no card to mask in {texts:?}",
                field.name()
            );
        }
        let batch = protect_extra(columns).unwrap();
        assert_eq!(batch.schema(), input.schema());
        for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
            let texts = text_values(column.as_ref());
            assert!(
                texts.iter().all(|t| cards_left(t).is_empty()),
                "{}: {texts:?}",
                field.name()
            );
            assert!(
                texts.iter().any(|t| t.contains("************1111")),
                "{}: {texts:?}",
                field.name()
            );
        }
    }

    /// Regression (issue 11, item 1): numeric extra columns holding a card were copied verbatim.
    #[test]
    fn a_number_holding_a_card_refuses_the_file() {
        let mut list = ListBuilder::new(Int64Builder::new());
        list.values().append_value(4111111111111111);
        list.append(true);
        let cases: Vec<(&str, ArrayRef)> = vec![
            ("n_int64", arc(Int64Array::from(vec![7, 4111111111111111]))),
            (
                "n_negative",
                arc(Int64Array::from(vec![7, -4111111111111111])),
            ),
            (
                "n_uint64",
                arc(UInt64Array::from(vec![7, 4111111111111111])),
            ),
            (
                "n_decimal",
                arc(Decimal128Array::from(vec![7, 4111111111111111])
                    .with_precision_and_scale(20, 0)
                    .unwrap()),
            ),
            (
                "n_scaled",
                arc(Decimal128Array::from(vec![7, 411111111111111100])
                    .with_precision_and_scale(20, 2)
                    .unwrap()),
            ),
            (
                "n_float",
                arc(Float64Array::from(vec![7.0, 4111111111111111.0])),
            ),
            ("n_list", arc(list.finish())),
        ];
        for (name, column) in cases {
            let err = protect_extra(vec![(name, column)]).unwrap_err();
            let message = err.to_string();
            assert!(matches!(err, Error::BadInput { .. }), "{message}");
            assert!(
                message.contains(OBJECT)
                    && message.contains(&format!("`{name}`"))
                    && message.contains("cannot be masked")
                    && message.contains("x-pci: \"none\"")
                    && message.contains("x-pci: \"pan\""),
                "{message}"
            );
            assert!(!message.contains("4111"), "{message}");
        }
        let err = protect_extra(vec![(
            "n",
            arc(Int64Array::from(vec![7, 4111111111111111])),
        )])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("row 1 of a batch") && err.contains("(Int64)"),
            "{err}"
        );
    }

    #[test]
    fn numbers_that_cannot_be_cards_pass_untouched() {
        let contract = Contract::from_json_str(
            "t.json",
            r#"{"title":"t","properties":{"acct":{"type":"integer","x-pci":"none"}}}"#,
        )
        .unwrap();
        let small = arc(Int64Array::from(vec![
            Some(999_999_999_999),
            None,
            Some(-999_999_999_999),
        ]));
        // A null slot is not data, whatever it holds.
        let null_slot = arc(Int64Array::new(
            vec![4111111111111111, 5, 6].into(),
            Some(NullBuffer::from(vec![false, true, true])),
        ));
        let not_integral = arc(Float64Array::from(vec![
            4111111111111111.5,
            1e300,
            f64::NAN,
        ]));
        // Declared `x-pci: "none"`: not scanned.
        let acct = arc(Int64Array::from(vec![
            4111111111111111,
            4012888888881881,
            1,
        ]));
        let batch = RecordBatch::try_from_iter([
            ("small", small),
            ("null_slot", null_slot),
            ("not_integral", not_integral),
            ("acct", acct),
        ])
        .unwrap();
        let (out, counts) = Protector::new(&contract, &batch.schema(), true, b"k")
            .protect(&batch, OBJECT, false)
            .unwrap();
        assert!(counts.is_empty());
        for (before, after) in batch.columns().iter().zip(out.columns()) {
            assert!(Arc::ptr_eq(before, after), "{before:?} was copied");
        }
    }

    /// Regression (issue 11, item 1): full-width digits stayed readable in `x-pci: pan` columns.
    #[test]
    fn masks_digits_of_every_script() {
        assert_eq!(decimal_digit('7'), Some(7));
        assert_eq!(decimal_digit('７'), Some(7));
        assert_eq!(decimal_digit('٣'), Some(3));
        assert_eq!(decimal_digit('௧'), Some(1));
        assert_eq!(decimal_digit('\u{1D7D8}'), Some(0));
        assert_eq!(decimal_digit('²'), None);
        assert_eq!(decimal_digit('x'), None);
        assert_eq!(
            mask_pan("４１１１１１１１１１１１１１１１"),
            "************１１１１"
        );
        assert_eq!(mask_pan("٤١١١-١١١١-١١١١-١١١١"), "****-****-****-١١١١");
        assert_eq!(
            mask_card_numbers("card ４１１１ １１１１ １１１１ １１１１ ok").as_deref(),
            Some("card **** **** **** １１１１ ok")
        );
        assert_eq!(
            mask_card_numbers("٤١١١١١١١١١١١١١١١").as_deref(),
            Some("************١١١١")
        );
        assert_eq!(
            mask_card_numbers("4111 １１１１ 1111 １１１１").as_deref(),
            Some("**** **** **** １１１１")
        );
        assert_eq!(mask_card_numbers("Zoë ４ ２"), None);

        let cards = StringArray::from(vec![
            Some("４１１１１１１１１１１１１１１１"),
            None,
            Some("4111111111111111"),
        ]);
        let (masked, changed) = pan_column(&cards).unwrap();
        let masked = masked.unwrap();
        let masked = masked.as_string::<i32>();
        assert_eq!(changed, 2);
        assert_eq!(masked.value(0), "************１１１１");
        assert!(masked.is_null(1));
        assert_eq!(masked.value(2), "************1111");

        // Bytes keep their length: each byte of a masked character becomes `*`.
        let mut bytes = "４１１１１１１１１１１１１１１１".as_bytes().to_vec();
        assert!(mask_bytes(&mut bytes, Mode::Scan));
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            format!("{}１１１１", "*".repeat(36))
        );
    }

    #[test]
    fn pan_columns_of_every_string_form_are_masked() {
        let contract = Contract::from_json_str(
            "t.json",
            r#"{"title":"t","properties":{"card":{"type":"string","x-pci":"pan"}}}"#,
        )
        .unwrap();
        let card = arc(LargeStringArray::from(vec![
            Some("４１１１１１１１１１１１１１１１"),
            Some("4111-1111-1111-1111"),
        ]));
        let batch = RecordBatch::try_from_iter([("card", card)]).unwrap();
        let (out, counts) = Protector::new(&contract, &batch.schema(), true, b"k")
            .protect(&batch, OBJECT, false)
            .unwrap();
        let masked = out.column(0).as_string::<i64>();
        assert_eq!(masked.value(0), "************１１１１");
        assert_eq!(masked.value(1), "****-****-****-1111");
        let expected: MaskCounts = vec![("card".into(), 2)];
        assert_eq!(counts, expected);
    }

    /// Regression (issue 11, item 1): a card glued to other digits was not masked.
    #[test]
    fn masks_cards_glued_to_other_digits() {
        assert_eq!(
            mask_card_numbers("004111111111111111").as_deref(),
            Some("00************1111")
        );
        assert_eq!(
            mask_card_numbers("ref124111111111111111").as_deref(),
            Some("ref12************1111")
        );
        assert_eq!(
            mask_card_numbers("order 7-4111-1111-1111-1111").as_deref(),
            Some("order 7-****-****-****-1111")
        );
        // Numbers are cards only as a whole.
        assert!(!digits_hold_card(b"124111111111111111"));
        assert!(digits_hold_card(b"4111111111111111"));
        assert!(!digits_hold_card(b"999999999999"));
        assert!(u64_holds_card(4111111111111111));
        assert!(!u64_holds_card(124111111111111111));
        assert!(!u64_holds_card(999_999_999_999));
        assert!(!u128_holds_card(4111111111111111 * 10u128.pow(20)));
        assert!(decimal_holds_card(4111111111111111 * 100, 2));
        assert!(!decimal_holds_card(4111111111111111, 2));
        assert!(decimal_holds_card(510_510_510_510_510, -1));
        assert!(i256_holds_card(i256::from_i128(-4111111111111111), 0));
        assert!(!i256_holds_card(
            i256::from_i128(4111111111111111).wrapping_mul(i256::from_i128(10i128.pow(30))),
            0
        ));
        assert!(f64_holds_card(4111111111111111.0));
        assert!(!f64_holds_card(4111111111111111.5));
        assert!(!f64_holds_card(1e300));
    }

    /// The shape of a generated column.
    #[derive(Debug, Clone)]
    enum Shape {
        Utf8,
        LargeUtf8,
        Utf8View,
        Binary,
        Dictionary,
        Map,
        List(Box<Shape>),
        Struct(Vec<Shape>),
    }

    fn shape() -> impl Strategy<Value = Shape> {
        prop_oneof![
            Just(Shape::Utf8),
            Just(Shape::LargeUtf8),
            Just(Shape::Utf8View),
            Just(Shape::Binary),
            Just(Shape::Dictionary),
            Just(Shape::Map),
        ]
        .prop_recursive(3, 16, 3, |inner| {
            prop_oneof![
                inner.clone().prop_map(|s| Shape::List(Box::new(s))),
                prop::collection::vec(inner, 1..4).prop_map(Shape::Struct),
            ]
        })
    }

    /// An array of `shape` with one row per text, every leaf holding every text.
    fn build(shape: &Shape, texts: &[String]) -> ArrayRef {
        match shape {
            Shape::Utf8 => arc(StringArray::from_iter_values(texts)),
            Shape::LargeUtf8 => arc(LargeStringArray::from_iter_values(texts)),
            Shape::Utf8View => arc(StringViewArray::from_iter_values(texts)),
            Shape::Binary => arc(BinaryArray::from_iter_values(
                texts.iter().map(String::as_bytes),
            )),
            Shape::Dictionary => arc(texts
                .iter()
                .map(String::as_str)
                .collect::<DictionaryArray<Int32Type>>()),
            Shape::Map => {
                let mut b = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
                for t in texts {
                    b.keys().append_value(t);
                    b.values().append_value(t);
                    b.append(true).unwrap();
                }
                arc(b.finish())
            }
            Shape::List(inner) => {
                let values = build(inner, texts);
                let field = Arc::new(Field::new("item", values.data_type().clone(), true));
                let offsets = OffsetBuffer::from_lengths(std::iter::repeat_n(1, texts.len()));
                arc(ListArray::new(field, offsets, values, None))
            }
            Shape::Struct(shapes) => {
                let fields: Vec<(FieldRef, ArrayRef)> = shapes
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let a = build(s, texts);
                        let field = Field::new(format!("f{i}"), a.data_type().clone(), true);
                        (Arc::new(field), a)
                    })
                    .collect();
                arc(StructArray::from(fields))
            }
        }
    }

    /// Text around the card: letters, digits, separators, full-width digits, stars.
    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zé ]{0,6}",
            "[0-9]{1,4}",
            "[ -]",
            "[０-９]{1,3}",
            Just("*".to_string()),
        ]
    }

    /// A known card number (the generator's, in one of its layouts) in ASCII, full-width or
    /// Arabic-Indic digits.
    fn card() -> impl Strategy<Value = String> {
        (any::<u64>(), 0u32..4).prop_map(|(seed, script)| {
            let plain = crate::generate::card_number(&mut crate::generate::SplitMix::new(seed));
            let zero = match script {
                0 | 1 => return plain,
                2 => 0xFF10,
                _ => 0x0660,
            };
            plain
                .chars()
                .map(|c| {
                    c.to_digit(10)
                        .and_then(|d| char::from_u32(zero + d))
                        .unwrap_or(c)
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Masking never leaves a card number, in any string or byte form, at any depth, whatever
        /// digits and separators surround it (glued or not).
        #[test]
        fn no_card_survives_in_any_nested_form(
            shape in shape(),
            rows in prop::collection::vec(prop::collection::vec(piece(), 0..6), 1..5),
            card in card(),
            row in any::<prop::sample::Index>(),
            at in any::<prop::sample::Index>(),
        ) {
            let mut rows = rows;
            let row = row.index(rows.len());
            let at = at.index(rows[row].len() + 1);
            rows[row].insert(at, card);
            let texts: Vec<String> = rows.iter().map(|pieces| pieces.concat()).collect();
            let input = build(&shape, &texts);
            prop_assert!(
                text_values(input.as_ref()).iter().any(|t| !cards_left(t).is_empty()),
                "no card in {:?}", texts
            );
            let place = Place { object: OBJECT, column: "c", column_type: input.data_type(), top: true };
            let (output, changed) = protect_array(&input, Mode::Scan, place).unwrap();
            let output = output.unwrap_or_else(|| input.clone());
            prop_assert!(changed > 0);
            prop_assert_eq!(output.data_type(), input.data_type());
            prop_assert_eq!(output.len(), input.len());
            for text in text_values(output.as_ref()) {
                prop_assert!(cards_left(&text).is_empty(), "{:?} -> {:?}", texts, text);
            }
        }
    }
}
