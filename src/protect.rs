//! PCI DSS and PII protection, applied to every string the program writes (curated and
//! quarantine alike).
//!
//! - `x-pci: "pan"` columns: every digit but the last four becomes `*`, separators kept.
//! - Every other string column (unless `x-pci: "none"`) is scanned for card numbers in free text:
//!   13 to 19 digits, single spaces or dashes allowed between digit groups, Luhn-valid, with the
//!   IIN prefix of a major brand (Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay,
//!   Maestro). Each hit is masked to its last four digits, separators kept. The scan repeats on
//!   its own output until nothing changes, so no candidate survives in any position.
//! - `x-pii`: `hash` (keyed HMAC-SHA-256, written as 64 letters `a`–`p`, one per nibble, so a
//!   token can never look like a card number), `mask` (every letter and digit but the last four
//!   becomes `*`), `redact` (`REDACTED`).
//!
//! A column in which no value holds a 13-digit candidate is passed through untouched (zero
//! copy): that pre-check ([`may_hold_pan`]) keeps the scan cheap on names, dates and enums.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray, StringBuilder};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Schema};
use sha2::{Digest, Sha256};

use crate::contract::{Contract, Pci, Pii};
use crate::Result;

const MIN_PAN_DIGITS: usize = 13;
const MAX_PAN_DIGITS: usize = 19;

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

/// One pass of the free-text scan over `bytes`, masking in place. Returns the number of card
/// numbers masked.
fn mask_pass(bytes: &mut [u8]) -> usize {
    let mut masked = 0;
    let mut i = 0;
    let mut groups: Vec<(usize, usize)> = Vec::new();
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        // Collect one run of digit groups joined by single separators.
        groups.clear();
        loop {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            groups.push((start, i));
            if i + 1 < bytes.len() && is_sep(bytes[i]) && bytes[i + 1].is_ascii_digit() {
                i += 1;
            } else {
                break;
            }
        }
        let mut g = 0;
        let mut digits: Vec<u8> = Vec::with_capacity(MAX_PAN_DIGITS);
        while g < groups.len() {
            let mut hit = None;
            // Longest span first, starting at group g.
            let mut total = 0;
            let mut ends = Vec::new();
            for (j, &(s, e)) in groups.iter().enumerate().skip(g) {
                total += e - s;
                if total > MAX_PAN_DIGITS {
                    break;
                }
                if total >= MIN_PAN_DIGITS {
                    ends.push(j);
                }
            }
            for &j in ends.iter().rev() {
                digits.clear();
                for &(s, e) in &groups[g..=j] {
                    digits.extend_from_slice(&bytes[s..e]);
                }
                if brand_prefix(&digits) && luhn_valid(&digits) {
                    hit = Some(j);
                    break;
                }
            }
            match hit {
                Some(j) => {
                    let mut keep = 4;
                    for &(s, e) in groups[g..=j].iter().rev() {
                        for b in bytes[s..e].iter_mut().rev() {
                            if keep > 0 {
                                keep -= 1;
                            } else {
                                *b = b'*';
                            }
                        }
                    }
                    masked += 1;
                    g = j + 1;
                }
                None => g += 1,
            }
        }
    }
    masked
}

/// Masks every card number in free text `s`; `None` when there was none (no allocation).
pub fn mask_card_numbers(s: &str) -> Option<String> {
    if !may_hold_pan(s.as_bytes()) {
        return None;
    }
    let mut bytes = s.as_bytes().to_vec();
    let mut total = 0;
    loop {
        let n = mask_pass(&mut bytes);
        if n == 0 {
            break;
        }
        total += n;
    }
    // Only ASCII digits were replaced by ASCII `*`, so the bytes are still UTF-8.
    (total > 0).then(|| String::from_utf8(bytes).unwrap_or_default())
}

/// Masks a declared card number: every digit but the last four becomes `*`.
pub fn mask_pan(s: &str) -> String {
    let mut bytes = s.as_bytes().to_vec();
    mask_pan_bytes(&mut bytes);
    // Only ASCII digits were replaced by ASCII `*`, so the bytes are still UTF-8.
    String::from_utf8(bytes).unwrap_or_default()
}

/// [`mask_pan`] in place; true when any digit was masked. The length never changes: each ASCII
/// digit becomes one `*` byte, and the bytes of other characters are left alone.
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

/// Masks a declared card-number column: one copy of the values buffer masked in place, the
/// offsets and nulls shared with `a` (masking keeps every value's length).
fn pan_column(a: &StringArray) -> Result<(Option<ArrayRef>, usize)> {
    let offsets = a.offsets();
    let base = offsets[0] as usize;
    let mut values = a.value_data()[base..offsets[a.len()] as usize].to_vec();
    let mut changed = 0;
    for (i, w) in offsets.windows(2).enumerate() {
        if a.is_valid(i) && mask_pan_bytes(&mut values[w[0] as usize - base..w[1] as usize - base])
        {
            changed += 1;
        }
    }
    let rebased = offsets.iter().map(|&o| o - offsets[0]).collect();
    Ok((Some(with_values(a, rebased, values)?), changed))
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

#[derive(Debug, Clone, Copy)]
enum Action {
    Pan,
    Scan,
    Pii(Pii),
}

/// Protection compiled against one schema.
#[derive(Debug, Clone)]
pub struct Protector {
    columns: Vec<(usize, Arc<str>, Action)>,
    mac: KeyedHash,
}

/// Values changed in one batch, per column name.
pub type MaskCounts = Vec<(Arc<str>, usize)>;

impl Protector {
    /// Plans protection of the string columns of `schema`. With `pci` false, card masking and
    /// scanning are off (PII transforms still apply). `pii_key` keys `x-pii: hash`.
    pub fn new(contract: &Contract, schema: &Schema, pci: bool, pii_key: &[u8]) -> Self {
        let mut columns = Vec::new();
        for (index, field) in schema.fields().iter().enumerate() {
            if field.data_type() != &DataType::Utf8 {
                continue;
            }
            let spec = contract.column(field.name());
            let action = match spec {
                Some(s) if s.pii.is_some() => s.pii.map(Action::Pii),
                Some(s) if s.pci == Pci::Pan => pci.then_some(Action::Pan),
                Some(s) if s.pci == Pci::None => None,
                _ => pci.then_some(Action::Scan),
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

    /// Protects one batch, returning it and the number of values changed per column. With
    /// `parallel`, columns are transformed on the rayon pool (see `map_columns` in the crate root).
    pub fn protect(
        &self,
        batch: &RecordBatch,
        parallel: bool,
    ) -> Result<(RecordBatch, MaskCounts)> {
        let transform = |(index, name, action): &(usize, Arc<str>, Action)| {
            let a = batch.column(*index).as_string::<i32>();
            let (new, n) = match action {
                Action::Scan => scan_column(a),
                Action::Pan => pan_column(a)?,
                Action::Pii(Pii::Hash) => hash_column(a, &self.mac)?,
                Action::Pii(Pii::Mask) => map_column(a, |s| Some(mask_pii(s))),
                Action::Pii(Pii::Redact) => map_column(a, |_| Some("REDACTED".to_string())),
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

fn map_column(a: &StringArray, f: impl Fn(&str) -> Option<String>) -> (Option<ArrayRef>, usize) {
    let mut b = StringBuilder::with_capacity(a.len(), a.values().len());
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

/// Masks card numbers in free text; builds a new array only when some value holds one, so a
/// column without any (nearly all) costs one read-only pass.
fn scan_column(a: &StringArray) -> (Option<ArrayRef>, usize) {
    if (0..a.len()).any(|i| a.is_valid(i) && mask_card_numbers(a.value(i)).is_some()) {
        map_column(a, mask_card_numbers)
    } else {
        (None, 0)
    }
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

#[cfg(test)]
mod tests {
    use super::*;
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
            mask_card_numbers("ref 123 4111111111111111").as_deref(),
            Some("ref 123 ************1111")
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
}
