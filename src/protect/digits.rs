//! Decimal digits of every script (Unicode category Nd), and the byte the scans read for a char.

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
pub(super) fn has_non_ascii_digit(s: &str) -> bool {
    s.chars()
        .any(|c| !c.is_ascii() && decimal_digit(c).is_some())
}

/// `c` as the one byte the scans read: ASCII as itself, a decimal digit of another script as its
/// ASCII digit, any other character as `x` (which ends a candidate like any letter).
pub(super) fn scan_byte(c: char) -> u8 {
    if c.is_ascii() {
        c as u8
    } else {
        decimal_digit(c).map_or(b'x', |d| b'0' + d)
    }
}
