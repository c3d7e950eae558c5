//! Hand-written parsers for the `date`, `date-time`, `email`, `phone` and `uuid` formats.
//!
//! They run once per value on the hot path, so they work on bytes without allocating. Date-times
//! are read the way DMS and databases write them: `T` or a space between date and time, optional
//! fractional seconds (1 to 9 digits), optional offset (`Z`, `+01:00`, `+0100`, `+01`). A value
//! without an offset is UTC. Parsed instants are nanoseconds since the Unix epoch as `i128`, so
//! sentinel dates such as `9999-12-31` stay representable.

/// Nanoseconds in one day.
pub const NANOS_PER_DAY: i128 = 86_400 * 1_000_000_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date (year, month, day) of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Two ASCII digits as a number.
#[inline]
fn two_digits(hi: u8, lo: u8) -> Option<u32> {
    let (h, l) = (hi.wrapping_sub(b'0'), lo.wrapping_sub(b'0'));
    (h < 10 && l < 10).then_some(u32::from(h) * 10 + u32::from(l))
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// Parses `YYYY-MM-DD` into days since the epoch.
pub fn parse_date(s: &str) -> Option<i64> {
    parse_date_bytes(s.as_bytes())
}

/// [`parse_date`] on bytes: exactly ten, in the `YYYY-MM-DD` pattern.
fn parse_date_bytes(b: &[u8]) -> Option<i64> {
    let &[y0, y1, y2, y3, b'-', m0, m1, b'-', d0, d1] = b else {
        return None;
    };
    let year = i64::from(two_digits(y0, y1)? * 100 + two_digits(y2, y3)?);
    let month = two_digits(m0, m1)?;
    let day = two_digits(d0, d1)?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    Some(days_from_civil(year, month, day))
}

/// Nanoseconds per unit of a fraction of `n` digits.
const FRACTION_SCALE: [u32; 10] = [
    0,
    100_000_000,
    10_000_000,
    1_000_000,
    100_000,
    10_000,
    1_000,
    100,
    10,
    1,
];

/// Parses an ISO 8601 / SQL date-time into nanoseconds since the epoch (UTC). Fixed positions
/// are matched as byte patterns and the fraction is read in one pass: this runs for every
/// date-time value, twice for the event time (key pass and validation).
pub fn parse_datetime(s: &str) -> Option<i128> {
    let (head, mut rest) = s.as_bytes().split_at_checked(19)?;
    let (date, time) = head.split_at(10);
    let days = parse_date_bytes(date)?;
    let &[b'T' | b't' | b' ', h0, h1, b':', m0, m1, b':', s0, s1] = time else {
        return None;
    };
    let (hour, minute, second) = (
        two_digits(h0, h1)?,
        two_digits(m0, m1)?,
        two_digits(s0, s1)?,
    );
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut nanos = 0u32;
    if let [b'.', frac @ ..] = rest {
        let mut n = 0;
        while let Some(d) = frac
            .get(n)
            .map(|c| c.wrapping_sub(b'0'))
            .filter(|d| *d < 10)
        {
            if n == 9 {
                return None;
            }
            nanos = nanos * 10 + u32::from(d);
            n += 1;
        }
        if n == 0 {
            return None;
        }
        nanos *= FRACTION_SCALE[n];
        rest = &frac[n..];
    }
    let secs =
        days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_seconds(rest)?;
    Some(i128::from(secs) * 1_000_000_000 + i128::from(nanos))
}

/// The UTC offset that ends a date-time, in seconds: none, `Z`, `±HH`, `±HHMM` or `±HH:MM`.
fn offset_seconds(rest: &[u8]) -> Option<i64> {
    let (sign, tail) = match rest {
        [] | [b'Z' | b'z'] => return Some(0),
        [sign @ (b'+' | b'-'), tail @ ..] => (*sign, tail),
        _ => return None,
    };
    let (h, m) = match *tail {
        [h1, h2] => (two_digits(h1, h2)?, 0),
        [h1, h2, b':', m1, m2] | [h1, h2, m1, m2] => (two_digits(h1, h2)?, two_digits(m1, m2)?),
        _ => return None,
    };
    if h > 23 || m > 59 {
        return None;
    }
    let secs = i64::from(h * 3600 + m * 60);
    Some(if sign == b'+' { secs } else { -secs })
}

/// Parses a contract bound for a date-time column: a full date-time or a bare date (midnight UTC).
pub fn parse_datetime_bound(s: &str) -> Option<i128> {
    parse_datetime(s).or_else(|| parse_date(s).map(|d| i128::from(d) * NANOS_PER_DAY))
}

/// Bytes allowed in the local part of an e-mail address besides `.`: letters, digits and the
/// RFC 5322 atom specials.
const EMAIL_LOCAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = (i as u8).is_ascii_alphanumeric();
        i += 1;
    }
    let specials = b"!#$%&'*+/=?^_`{|}~-";
    let mut j = 0;
    while j < specials.len() {
        t[specials[j] as usize] = true;
        j += 1;
    }
    t
};

/// A practical e-mail check: one `@`, a dot-atom local part of at most 64 characters, and a domain
/// of at least two DNS labels ending in an alphabetic top-level label. One pass over the bytes.
pub fn is_email(s: &str) -> bool {
    let b = s.as_bytes();
    let Some(at) = b.iter().position(|&c| c == b'@') else {
        return false;
    };
    let (local, domain) = (&b[..at], &b[at + 1..]);
    if local.is_empty()
        || local.len() > 64
        || local[0] == b'.'
        || local[local.len() - 1] == b'.'
        || domain.len() > 253
    {
        return false;
    }
    let mut prev_dot = false;
    for &c in local {
        let dot = c == b'.';
        if (dot && prev_dot) || !(dot || EMAIL_LOCAL[usize::from(c)]) {
            return false;
        }
        prev_dot = dot;
    }
    let mut labels = 0;
    let mut start = 0;
    for i in 0..=domain.len() {
        if i < domain.len() && domain[i] != b'.' {
            if !(domain[i].is_ascii_alphanumeric() || domain[i] == b'-') {
                return false;
            }
            continue;
        }
        let label = &domain[start..i];
        if label.is_empty()
            || label.len() > 63
            || label[0] == b'-'
            || label[label.len() - 1] == b'-'
        {
            return false;
        }
        labels += 1;
        start = i + 1;
        if i == domain.len() {
            return labels >= 2 && label.len() >= 2 && label.iter().all(u8::is_ascii_alphabetic);
        }
    }
    false
}

/// E.164: `+`, a non-zero country digit, 7 to 15 digits in all, no separators.
pub fn is_phone(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 8
        && b.len() <= 16
        && b[0] == b'+'
        && b[1] != b'0'
        && b[1..].iter().all(u8::is_ascii_digit)
}

/// A UUID in its canonical 8-4-4-4-12 hexadecimal form, either case.
pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Formats nanoseconds since the epoch as `YYYY-MM-DD HH:MM:SS.ffffff` (UTC), the way DMS writes.
pub fn format_micros(nanos: i128) -> String {
    let secs = nanos.div_euclid(1_000_000_000) as i64;
    let micros = (nanos.rem_euclid(1_000_000_000) / 1000) as u32;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{micros:06}",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn digits(b: &[u8]) -> Option<u32> {
        let mut v = 0u32;
        for &c in b {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + u32::from(c - b'0');
        }
        Some(v)
    }

    fn reference_date_bytes(b: &[u8]) -> Option<i64> {
        if b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let year = i64::from(digits(&b[0..4])?);
        let month = digits(&b[5..7])?;
        let day = digits(&b[8..10])?;
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        Some(days_from_civil(year, month, day))
    }

    /// The previous, straightforward date-time parser that [`parse_datetime`] must agree with
    /// (date and time of day; the offset is parsed by the shared `offset_seconds`).
    fn reference_datetime(s: &str) -> Option<i128> {
        let b = s.as_bytes();
        if b.len() < 19 {
            return None;
        }
        let days = reference_date_bytes(&b[..10])?;
        if !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
            return None;
        }
        let hour = digits(&b[11..13])?;
        let minute = digits(&b[14..16])?;
        let second = digits(&b[17..19])?;
        if hour > 23 || minute > 59 || second > 60 {
            return None;
        }
        let mut rest = &b[19..];
        let mut nanos: i128 = 0;
        if let Some((&b'.', frac)) = rest.split_first() {
            let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
            if n == 0 || n > 9 {
                return None;
            }
            nanos = i128::from(digits(&frac[..n])? * FRACTION_SCALE[n]);
            rest = &frac[n..];
        }
        // The offset is parsed by the shared `offset_seconds`.
        let secs =
            days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_seconds(rest)?;
        Some(i128::from(secs) * 1_000_000_000 + nanos)
    }

    /// The straightforward e-mail check that [`is_email`] must agree with.
    fn reference_email(s: &str) -> bool {
        let Some((local, domain)) = s.split_once('@') else {
            return false;
        };
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b".!#$%&'*+/=?^_`{|}~-".contains(&c));
        if !local_ok || domain.len() > 253 {
            return false;
        }
        let mut labels = 0;
        let mut last = "";
        for label in domain.split('.') {
            let ok = !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-');
            if !ok {
                return false;
            }
            labels += 1;
            last = label;
        }
        labels >= 2 && last.len() >= 2 && last.bytes().all(|c| c.is_ascii_alphabetic())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]
        #[test]
        fn datetime_parser_agrees_with_the_reference(
            s in "[0-9]{4}-[0-1][0-9]-[0-3][0-9][T t][0-2][0-9]:[0-6][0-9]:[0-6][0-9](\\.[0-9]{0,11})?(Z|z|[+-][0-9]{1,2}(:?[0-9]{2})?)?[x ]?",
            mangle in proptest::option::of((0usize..40, any::<u8>())),
        ) {
            let mut b = s.into_bytes();
            if let Some((i, c)) = mangle {
                let n = b.len();
                b[i % n] = c;
            }
            let s = String::from_utf8_lossy(&b);
            prop_assert_eq!(parse_datetime(&s), reference_datetime(&s), "{}", s);
        }
    }

    proptest! {
        #[test]
        fn email_check_agrees_with_the_reference(s in "[a-z0-9.@+_-]{0,12}(@[a-zé.-]{0,10})?") {
            prop_assert_eq!(is_email(&s), reference_email(&s));
        }
    }

    #[test]
    fn datetime_forms_agree() {
        let base = parse_datetime("2025-01-16T10:23:45Z").unwrap();
        assert_eq!(parse_datetime("2025-01-16 10:23:45").unwrap(), base);
        assert_eq!(parse_datetime("2025-01-16T11:23:45+01:00").unwrap(), base);
        assert_eq!(parse_datetime("2025-01-16T11:23:45+0100").unwrap(), base);
        assert_eq!(
            parse_datetime("2025-01-16 10:23:45.5").unwrap(),
            base + 500_000_000
        );
        assert_eq!(
            parse_datetime("2025-01-16 10:23:45.123456789").unwrap(),
            base + 123_456_789
        );
        assert_eq!(base, 1_737_023_025 * 1_000_000_000);
    }

    #[test]
    fn datetime_rejects_garbage() {
        for s in [
            "2025-02-30 00:00:00",
            "2025-13-01 00:00:00",
            "2025-01-16",
            "2025-01-16X10:23:45",
            "2025-01-16 24:00:00",
            "2025-01-16 10:23:45.",
            "2025-01-16 10:23:45.1234567890",
            "2025-01-16 10:23:45+1",
            "not a date at all!!",
        ] {
            assert_eq!(parse_datetime(s), None, "{s}");
        }
    }

    #[test]
    fn civil_round_trip() {
        for days in [-800_000, -1, 0, 1, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(parse_date("2024-02-29"), Some(19_782));
        assert_eq!(parse_date("2023-02-29"), None);
    }

    #[test]
    fn formats() {
        assert!(!is_email("zoë.smith@example.com"));
        assert!(is_email("zoe.smith+tag@mail.example.co.uk"));
        assert!(!is_email("jane@@example.com"));
        assert!(!is_email("no-at-sign.example.com"));
        assert!(!is_email("a b@example.com"));
        assert!(!is_email("john@example"));
        assert!(is_phone("+4915112345678"));
        assert!(!is_phone("+49 151 12345678"));
        assert!(!is_phone("015112345678"));
        assert!(is_uuid("123e4567-e89b-12d3-a456-426614174000"));
        assert!(!is_uuid("123e4567e89b12d3a456426614174000"));
        assert_eq!(
            format_micros(parse_datetime("2025-01-16 10:23:45.123456").unwrap()),
            "2025-01-16 10:23:45.123456"
        );
    }
}
