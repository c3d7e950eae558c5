//! Card numbers: Luhn, brand IINs and lengths, the free-text scan and PAN masking, over bytes or chars.

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

/// The card lengths allowed for `digits` by the brands whose IIN they start with: bit `n` set
/// when some brand starting so has `n`-digit numbers (0 when none does). The table
/// ([Wikipedia's IIN list](https://en.wikipedia.org/wiki/Payment_card_number)):
///
/// | brand | IIN | lengths |
/// |---|---|---|
/// | Visa | 4 | 13, 16, 19 |
/// | Mastercard | 51–55, 2221–2720 | 16 |
/// | American Express | 34, 37 | 15 |
/// | Discover | 6011, 644–649, 65 | 16–19 |
/// | JCB | 3528–3589 | 16–19 |
/// | Diners Club | 300–305, 309, 36, 38–39 | 14–19 |
/// | UnionPay | 62, 81 | 16–19 |
/// | Maestro | 50, 56–69 | 13–19 (12 exists; the scan starts at 13) |
/// | RuPay | 60, 65, 81, 82, 508, 353, 356 | 16 |
/// | Mir | 2200–2204 | 16–19 |
/// | UATP | 1 | 15 |
fn brand_lengths(digits: &[u8]) -> u32 {
    const fn span(lo: u32, hi: u32) -> u32 {
        (u32::MAX >> (31 - hi)) & !((1 << lo) - 1)
    }
    const fn one(n: u32) -> u32 {
        1 << n
    }
    if digits.len() < 4 {
        return 0;
    }
    let prefix = |n: usize| -> u32 {
        digits[..n]
            .iter()
            .fold(0, |acc, d| acc * 10 + u32::from(d - b'0'))
    };
    let (p1, p2, p3, p4) = (prefix(1), prefix(2), prefix(3), prefix(4));
    let mut lengths = 0;
    let mut brand = |matches: bool, allowed: u32| {
        if matches {
            lengths |= allowed;
        }
    };
    brand(p1 == 4, one(13) | one(16) | one(19)); // Visa
    brand(
        (51..=55).contains(&p2) || (2221..=2720).contains(&p4),
        one(16),
    ); // Mastercard
    brand(p2 == 34 || p2 == 37, one(15)); // American Express
    brand(
        p4 == 6011 || (644..=649).contains(&p3) || p2 == 65,
        span(16, 19),
    ); // Discover
    brand((3528..=3589).contains(&p4), span(16, 19)); // JCB
    brand(
        (300..=305).contains(&p3) || p3 == 309 || matches!(p2, 36 | 38 | 39),
        span(14, 19),
    ); // Diners Club
    brand(p2 == 62 || p2 == 81, span(16, 19)); // UnionPay
    brand(p2 == 50 || (56..=69).contains(&p2), span(13, 19)); // Maestro
    brand(
        matches!(p2, 60 | 65 | 81 | 82) || matches!(p3, 508 | 353 | 356),
        one(16),
    ); // RuPay
    brand((2200..=2204).contains(&p4), span(16, 19)); // Mir
    brand(p1 == 1, one(15)); // UATP
    lengths
}

/// True when `digits` (ASCII digits, the whole candidate) start with a card brand's IIN and have
/// one of that brand's lengths (see [`brand_lengths`]); Luhn is checked separately.
pub fn brand_fits(digits: &[u8]) -> bool {
    digits.len() < 32 && brand_lengths(digits) & (1 << digits.len()) != 0
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
/// digits with a brand's IIN, one of its lengths, that pass Luhn. The brand is read from the
/// first digits, so its lengths are the same for every span.
fn card_at(digits: &[u8]) -> Option<usize> {
    if digits.len() < MIN_PAN_DIGITS {
        return None;
    }
    let lengths = brand_lengths(digits);
    let longest = digits.len().min(MAX_PAN_DIGITS);
    (MIN_PAN_DIGITS..=longest)
        .rev()
        .find(|&len| lengths & (1 << len) != 0 && luhn_valid(&digits[..len]))
}

/// True when `digits` (the integer digits of a number) are, as a whole, a card number: 13 to 19
/// digits, a brand's IIN and length, Luhn. Unlike free text, a card glued inside a longer number is not
/// looked for: 8% of 2024's epoch microseconds and half of all snowflake ids hold one by that
/// rule, so every file with such a column would be refused.
pub(super) fn digits_hold_card(digits: &[u8]) -> bool {
    (MIN_PAN_DIGITS..=MAX_PAN_DIGITS).contains(&digits.len())
        && brand_fits(digits)
        && luhn_valid(digits)
}

/// Masks the card numbers of one run of digits, `run` being the positions of its digits in
/// `bytes`: every digit is a possible start, each with its longest card span; every hit is
/// masked but its last four digits, all of them found before any is masked. A hit that starts in
/// the digits before a card (`697 4188…`, where `697 41…` is a Maestro span) so masks its part of
/// the card, and the card's own hit the rest. Returns the hits.
fn mask_run(bytes: &mut [u8], run: &[usize]) -> usize {
    let mut hits = 0;
    let mut digits = [0u8; MAX_PAN_DIGITS];
    // Allocated at the first hit only: most runs hold none.
    let mut to_mask: Option<Vec<bool>> = None;
    for start in 0..run.len().saturating_sub(MIN_PAN_DIGITS - 1) {
        let span = &run[start..run.len().min(start + MAX_PAN_DIGITS)];
        for (d, &p) in digits.iter_mut().zip(span) {
            *d = bytes[p];
        }
        if let Some(len) = card_at(&digits[..span.len()]) {
            hits += 1;
            let marks = to_mask.get_or_insert_with(|| vec![false; run.len()]);
            for m in &mut marks[start..start + len - 4] {
                *m = true;
            }
        }
    }
    if let Some(marks) = to_mask {
        for (&p, _) in run.iter().zip(&marks).filter(|(_, &m)| m) {
            bytes[p] = b'*';
        }
    }
    hits
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
        assert!(brand_fits(b"378282246310005"));
        assert!(brand_fits(b"2221000000000009"));
        assert!(!brand_fits(b"9111111111111111"));
        // Amex numbers have 15 digits, Mastercard's 16.
        assert!(!brand_fits(b"3782822463100051"));
        assert!(!brand_fits(b"222100000000000"));
    }

    /// `prefix` completed to `len` digits (filled with `7`s) with the Luhn check digit.
    fn card_of(prefix: &str, len: usize) -> String {
        let mut digits: Vec<u8> = prefix.bytes().collect();
        digits.resize(len, b'7');
        for check in b'0'..=b'9' {
            digits[len - 1] = check;
            if luhn_valid(&digits) {
                break;
            }
        }
        String::from_utf8(digits).unwrap()
    }

    /// Every brand of the IIN table, at the edges of its ranges and at each of its lengths, plus
    /// public test cards: masked in free text wherever it stands and however it is grouped.
    #[test]
    fn every_brand_is_masked_in_free_text() {
        let mut cards: Vec<String> = [
            "4111111111111111",
            "4222222222222",
            "5555555555554444",
            "2223003122003222",
            "378282246310005",
            "6011000990139424",
            "3530111333300000",
            "30569309025904",
            "38520000023237",
            "6200000000000005",
            "6759649826438453",
            "135412345678911",
        ]
        .map(String::from)
        .to_vec();
        let table: [(&[&str], &[usize]); 11] = [
            (&["4"], &[13, 16, 19]),
            (&["51", "55", "2221", "2720"], &[16]),
            (&["34", "37"], &[15]),
            (&["6011", "644", "649", "65"], &[16, 17, 18, 19]),
            (&["3528", "3589"], &[16, 17, 18, 19]),
            (
                &["300", "305", "309", "36", "38", "39"],
                &[14, 15, 16, 17, 18, 19],
            ),
            (&["62", "81"], &[16, 17, 18, 19]),
            (&["50", "56", "60", "69"], &[13, 14, 15, 16, 17, 18, 19]),
            (&["82", "508", "353", "356"], &[16]),
            (&["2200", "2204"], &[16, 17, 18, 19]),
            (&["1"], &[15]),
        ];
        for (prefixes, lengths) in table {
            for prefix in prefixes {
                for &len in lengths {
                    cards.push(card_of(prefix, len));
                }
            }
        }
        for card in &cards {
            let masked = format!("{}{}", "*".repeat(card.len() - 4), &card[card.len() - 4..]);
            let grouped = |sep: &str| {
                let chunks: Vec<&str> = (0..card.len())
                    .step_by(4)
                    .map(|i| &card[i..card.len().min(i + 4)])
                    .collect();
                chunks.join(sep)
            };
            for (text, expected) in [
                (card.clone(), masked.clone()),
                (format!("paid {card} today"), format!("paid {masked} today")),
                (format!("card:{card}."), format!("card:{masked}.")),
                (format!("({card})"), format!("({masked})")),
            ] {
                assert_eq!(mask_card_numbers(&text), Some(expected), "{text}");
            }
            for sep in [" ", "-"] {
                let text = grouped(sep);
                let out = mask_card_numbers(&text).unwrap_or_else(|| panic!("{text}"));
                assert_eq!(out.len(), text.len());
                let kept: String = out.chars().filter(char::is_ascii_digit).collect();
                assert_eq!(kept, &card[card.len() - 4..], "{text} -> {out}");
            }
        }
    }

    #[test]
    fn numbers_of_no_brand_length_are_left_alone() {
        // 13-digit epoch milliseconds (UATP numbers have 15 digits), a 16-digit Amex-prefixed
        // number, a 17-digit Mastercard-prefixed one: all Luhn-valid.
        for digits in [
            card_of("17330112", 13),
            card_of("37", 16),
            card_of("51", 17),
            card_of("9", 16),
        ] {
            assert!(luhn_valid(digits.as_bytes()));
            assert_eq!(mask_card_numbers(&format!("id {digits}")), None, "{digits}");
        }
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
        // Every digit of a run is a possible start: "341111111111111" (Amex's IIN and length,
        // from the `3` of `123`) is Luhn-valid, and so is the card from its own start; both are
        // masked, so the false hit leaves no digit of the card readable.
        assert_eq!(
            mask_card_numbers("ref 123 4111111111111111").as_deref(),
            Some("ref 12* ************1111")
        );
        // "697 418878423513" is a 13-digit Maestro span starting before the card.
        assert_eq!(
            mask_card_numbers("order 697 4188784235133621").as_deref(),
            Some("order *** ************3621")
        );
        assert_eq!(
            mask_card_numbers("call +4915112345670 or 4111111111111112"),
            None
        );
        assert_eq!(mask_card_numbers("no digits here"), None);
    }

    #[test]
    fn masks_adjacent_cards() {
        // Spans across the two are card numbers too (Visa from a `1` of the first one), so the
        // first card's last four go with them: over-masking is the safe direction.
        let out = mask_card_numbers("4111111111111111 4012888888881881").unwrap();
        assert_eq!(out, "**************** ************1881");
    }
}
