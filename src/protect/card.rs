//! Card numbers: Luhn, brand prefixes, the free-text scan and PAN masking, over bytes or chars.

use std::ops::Range;

use super::digits::{has_non_ascii_digit, scan_byte};
use super::Mode;

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
pub(super) fn digits_hold_card(digits: &[u8]) -> bool {
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
pub(super) fn mask_ascii_card_numbers(s: &str) -> Option<String> {
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
pub(super) fn mask_pan_value(s: &str) -> Option<String> {
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
pub(super) fn mask_pan_bytes(bytes: &mut [u8]) -> bool {
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
pub(super) fn mask_bytes(v: &mut [u8], mode: Mode) -> bool {
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
pub(super) fn bytes_may_need_mask(v: &[u8], mode: Mode) -> bool {
    let ascii = match mode {
        Mode::Pan => v.iter().filter(|b| b.is_ascii_digit()).count() > 4,
        Mode::Scan => may_hold_pan(v),
    };
    ascii || (!v.is_ascii() && std::str::from_utf8(v).is_ok_and(has_non_ascii_digit))
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
}
