//! The shop's vocabulary (names, places, products, notes) and the makers of single values.

use super::rng::{stable, SplitMix};
use crate::protect::{luhn_valid, mask_card_numbers};

pub(super) const FIRST: &[&str] = &[
    "José",
    "Zoë",
    "Łukasz",
    "Søren",
    "Amélie",
    "Björn",
    "Chloé",
    "Đorđe",
    "Émile",
    "François",
    "Günther",
    "Héloïse",
    "Ingrid",
    "Jürgen",
    "Kateřina",
    "Léa",
    "Małgorzata",
    "Nuño",
    "Øystein",
    "Paweł",
    "Renée",
    "Sinéad",
    "Tomás",
    "Ulrike",
    "Václav",
    "Zsófia",
    "Anna",
    "Ben",
    "Clara",
    "David",
    "Emma",
    "Felix",
    "Grace",
    "Hannah",
    "Isaac",
    "Jack",
    "Liam",
    "Mia",
    "Noah",
    "Olivia",
    "Sophia",
    "Lucas",
    "Mateo",
    "Aisha",
    "Chen",
    "Hiroshi",
    "Priya",
    "Kwame",
];
pub(super) const LAST: &[&str] = &[
    "García",
    "Müller",
    "Nowak",
    "Jørgensen",
    "Dubois",
    "Łukasiewicz",
    "Öberg",
    "Novák",
    "Kovačević",
    "Szabó",
    "Çelik",
    "Nguyễn",
    "O'Brien",
    "Smith",
    "Johnson",
    "Brown",
    "Rossi",
    "Fernández",
    "Andersson",
    "Schröder",
    "Lefèvre",
    "Wiśniewski",
    "Papadopoulos",
    "Tanaka",
    "Kim",
    "Singh",
    "Okafor",
    "Silva",
    "Jansen",
    "Virtanen",
];
/// (city, street, ISO country, calling code, currency)
pub(super) const PLACES: &[(&str, &str, &str, &str, &str)] = &[
    ("München", "Hauptstraße", "DE", "49", "EUR"),
    ("Kraków", "ulica Floriańska", "PL", "48", "PLN"),
    ("São Paulo", "Rua Augusta", "BR", "55", "BRL"),
    ("Zürich", "Bahnhofstrasse", "CH", "41", "CHF"),
    ("Malmö", "Södergatan", "SE", "46", "SEK"),
    ("Paris", "Rue de Rivoli", "FR", "33", "EUR"),
    ("London", "Baker Street", "GB", "44", "GBP"),
    ("New York", "Fifth Avenue", "US", "1", "USD"),
    ("Toronto", "Yonge Street", "CA", "1", "CAD"),
    ("Madrid", "Calle de Alcalá", "ES", "34", "EUR"),
    ("Amsterdam", "Prinsengracht", "NL", "31", "EUR"),
    ("Wien", "Mariahilfer Straße", "AT", "43", "EUR"),
    ("Praha", "Národní třída", "CZ", "420", "CZK"),
    ("København", "Strøget", "DK", "45", "DKK"),
    ("Dublin", "Grafton Street", "IE", "353", "EUR"),
    ("Tokyo", "Omotesandō", "JP", "81", "JPY"),
];
const DOMAINS: &[&str] = &[
    "gmail.com",
    "outlook.com",
    "yahoo.co.uk",
    "web.de",
    "gmx.ch",
    "proton.me",
    "icloud.com",
    "orange.fr",
];
pub(super) const ORDER_STATUS: &[&str] = &[
    "pending",
    "paid",
    "shipped",
    "delivered",
    "cancelled",
    "refunded",
];
pub(super) const TIERS: &[&str] = &["bronze", "silver", "gold", "platinum"];
pub(super) const CATEGORIES: &[&str] = &[
    "electronics",
    "books",
    "home",
    "garden",
    "toys",
    "fashion",
    "beauty",
    "sports",
    "grocery",
];
pub(super) const ADJECTIVES: &[&str] = &[
    "Classic", "Organic", "Smart", "Vintage", "Compact", "Deluxe", "Eco", "Nordic", "Crème",
    "Señor",
];
pub(super) const NOUNS: &[&str] = &[
    "Kettle",
    "Headphones",
    "Notebook",
    "Backpack",
    "Lamp",
    "Sneakers",
    "Blender",
    "Café Mug",
    "Jacket",
    "Puzzle",
];
pub(super) const METHODS: &[&str] = &["card", "paypal", "bank_transfer", "gift_card"];
pub(super) const PAY_STATUS: &[&str] = &["authorized", "captured", "refunded", "failed"];
pub(super) const NOTES: &[&str] = &[
    "Please leave the parcel at the door",
    "Gift for Zoë, please wrap it",
    "Call before delivery",
    "Deliver after 18:00 please",
    "Zweite Etage, bitte klingeln",
    "Entregar en recepción",
    "Fragile: contains glass",
];

pub(super) fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let f = match c {
            'á' | 'à' | 'â' | 'ã' | 'å' => "a",
            'ä' | 'æ' => "ae",
            'ç' | 'č' | 'ć' => "c",
            'đ' => "d",
            'é' | 'è' | 'ê' | 'ë' | 'ě' | 'ễ' => "e",
            'í' | 'ï' => "i",
            'ł' => "l",
            'ñ' | 'ń' => "n",
            'ó' | 'ò' | 'ô' | 'õ' => "o",
            'ö' | 'ø' => "oe",
            'ř' => "r",
            'ś' | 'š' => "s",
            'ú' | 'ù' => "u",
            'ü' => "ue",
            'ý' => "y",
            'ż' | 'ź' => "z",
            'ß' => "ss",
            c if c.is_ascii_alphanumeric() => {
                out.push(c.to_ascii_lowercase());
                continue;
            }
            _ => "",
        };
        out.push_str(f);
    }
    out
}

pub(super) fn email(r: &mut SplitMix, first: &str, last: &str) -> String {
    let domain = r.pick(DOMAINS);
    match r.below(3) {
        0 => format!("{}.{}@{domain}", fold(first), fold(last)),
        1 => format!(
            "{}{}{}@{domain}",
            fold(first).chars().next().unwrap_or('x'),
            fold(last),
            r.below(100)
        ),
        _ => format!(
            "{}_{}{}@{domain}",
            fold(last),
            fold(first),
            1950 + r.below(60)
        ),
    }
}

/// An E.164 phone of at most 12 digits (so it can never be mistaken for a 13+ digit card).
pub(super) fn phone(r: &mut SplitMix, code: &str) -> String {
    let mut s = format!("+{code}");
    let national = 12 - code.len() - r.below(2) as usize;
    s.push(char::from(b'1' + r.below(9) as u8));
    for _ in 1..national {
        s.push(char::from(b'0' + r.below(10) as u8));
    }
    s
}

/// A Luhn-valid card number of a random major brand, formatted as people type them.
pub fn card_number(r: &mut SplitMix) -> String {
    let (prefix, len): (&str, usize) = *r.pick(&[
        ("4", 16),
        ("51", 16),
        ("55", 16),
        ("2221", 16),
        ("34", 15),
        ("37", 15),
        ("6011", 16),
        ("4", 13),
        ("35", 16),
    ]);
    let prefix = if prefix == "35" { "3530" } else { prefix };
    let mut digits: Vec<u8> = prefix.bytes().collect();
    while digits.len() < len - 1 {
        digits.push(b'0' + r.below(10) as u8);
    }
    digits.push(b'0');
    for check in b'0'..=b'9' {
        digits[len - 1] = check;
        if luhn_valid(&digits) {
            break;
        }
    }
    let plain = String::from_utf8(digits).unwrap_or_default();
    let sep = match r.below(5) {
        0 | 1 => return plain,
        2 | 3 => ' ',
        _ => '-',
    };
    let groups: &[usize] = if len == 15 {
        &[4, 6, 5]
    } else if len == 13 {
        &[4, 4, 5]
    } else {
        &[4, 4, 4, 4]
    };
    let mut out = String::with_capacity(len + 4);
    let mut pos = 0;
    for (i, g) in groups.iter().enumerate() {
        if i > 0 {
            out.push(sep);
        }
        out.push_str(&plain[pos..pos + g]);
        pos += g;
    }
    out
}

pub(super) fn uuid(seed: u64, key: u64) -> String {
    let mut salt = 0;
    loop {
        let mut r = stable(seed, key, 0x5555 + salt);
        let (a, b) = (r.next_u64(), r.next_u64());
        let hex = format!(
            "{:016x}{:016x}",
            a,
            (b & 0x0fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000
        );
        let s = format!(
            "{}-{}-4{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[13..16],
            &hex[16..20],
            &hex[20..32]
        );
        // A key must never look like a card number to the free-text scan.
        if mask_card_numbers(&s).is_none() {
            return s;
        }
        salt += 1;
    }
}
