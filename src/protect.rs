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
//! copy): that pre-check ([`may_hold_pan`]) is what keeps the scan cheap on names, dates and enums.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray, StringBuilder};
use arrow::datatypes::{DataType, Schema};
use hmac::{Hmac, Mac};
use sha2::Sha256;

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
    sum % 10 == 0
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
    let digits = s.bytes().filter(u8::is_ascii_digit).count();
    let mut seen = 0;
    s.chars()
        .map(|c| {
            if c.is_ascii_digit() {
                seen += 1;
                if seen + 4 <= digits {
                    return '*';
                }
            }
            c
        })
        .collect()
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

/// The HMAC state after absorbing `key`: cloning it per value saves hashing the key each time.
pub fn keyed_mac(key: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
}

/// PII `hash`: HMAC-SHA-256 of `s` under `key`, one letter `a`–`p` per nibble.
pub fn hash_pii(key: &[u8], s: &str) -> String {
    hash_pii_with(&keyed_mac(key), s)
}

/// [`hash_pii`] with a precomputed keyed state.
pub fn hash_pii_with(mac: &Hmac<Sha256>, s: &str) -> String {
    let token = hash_token(mac, s);
    String::from_utf8_lossy(&token).into_owned()
}

/// The token bytes of [`hash_pii`] (ASCII letters), without allocating.
fn hash_token(mac: &Hmac<Sha256>, s: &str) -> [u8; 64] {
    let mut mac = mac.clone();
    mac.update(s.as_bytes());
    let out = mac.finalize().into_bytes();
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
    mac: Hmac<Sha256>,
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
            mac: keyed_mac(pii_key),
        }
    }

    /// Protects one batch, returning it and the number of values changed per column. Columns
    /// are transformed one after the other (the job already runs one row group per core).
    pub fn protect(&self, batch: &RecordBatch) -> Result<(RecordBatch, MaskCounts)> {
        let changed: Vec<(usize, Option<ArrayRef>, Arc<str>, usize)> = self
            .columns
            .iter()
            .map(|(index, name, action)| {
                let a = batch.column(*index).as_string::<i32>();
                let (new, n) = match action {
                    Action::Scan => scan_column(a),
                    Action::Pan => map_column(a, |s| {
                        let m = mask_pan(s);
                        (m != s).then_some(m)
                    }),
                    Action::Pii(Pii::Hash) => hash_column(a, &self.mac),
                    Action::Pii(Pii::Mask) => map_column(a, |s| Some(mask_pii(s))),
                    Action::Pii(Pii::Redact) => map_column(a, |_| Some("REDACTED".to_string())),
                };
                (*index, new, name.clone(), n)
            })
            .collect();
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
fn hash_column(a: &StringArray, mac: &Hmac<Sha256>) -> (Option<ArrayRef>, usize) {
    let mut b = StringBuilder::with_capacity(a.len(), 64 * (a.len() - a.null_count()));
    for i in 0..a.len() {
        if a.is_null(i) {
            b.append_null();
        } else {
            let token = hash_token(mac, a.value(i));
            b.append_value(std::str::from_utf8(&token).unwrap_or_default());
        }
    }
    let changed = a.len() - a.null_count();
    (Some(Arc::new(b.finish())), changed)
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
        assert_eq!(mask_pii("jane@example.com"), "****@******e.com");
        let t = hash_pii(b"k", "jane@example.com");
        assert_eq!(t.len(), 64);
        assert!(t.bytes().all(|c| (b'a'..=b'p').contains(&c)));
        assert_eq!(t, hash_pii(b"k", "jane@example.com"));
        assert_ne!(t, hash_pii(b"k2", "jane@example.com"));
    }
}
