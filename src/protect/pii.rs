//! PII transforms: the format-aware `mask`, and the keyed `hash` (HMAC-SHA-256 from the RustCrypto `hmac` and
//! `sha2` crates, as lowercase hex).
//!
//! The hash token is what Athena computes as
//! `lower(to_hex(hmac_sha256(to_utf8(v), to_utf8(key))))` over the normalised value, so an analyst
//! holding the key can hash a lookup value and join on it. Normalisation: surrounding whitespace
//! trimmed (Unicode `White_Space`, Rust's `str::trim`), and for a `format: email` column the
//! value lowercased (`str::to_lowercase`), so `Bob@Example.com ` and `bob@example.com` give one
//! token.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::contract::Format;

/// PII `mask`, by the column's format:
///
/// - `email`: the first character of the local part, `***`, then `@` and the domain
///   (`jane@example.com` → `j***@example.com`); a value without `@` is masked as other strings;
/// - `phone`: a leading `+` and the first two and last two digits kept, every other digit `*`,
///   other characters kept (`+447700900189` → `+44********89`); a value of at most four digits is
///   all `*`;
/// - anything else: every letter and digit but the last four becomes `*`.
pub fn mask_pii(s: &str, format: Option<Format>) -> String {
    match format {
        Some(Format::Email) => match s.split_once('@') {
            Some((local, domain)) => {
                let first: String = local.chars().take(1).collect();
                format!("{first}***@{domain}")
            }
            None => mask_but_last_four(s),
        },
        Some(Format::Phone) => {
            let digits = s.chars().filter(char::is_ascii_digit).count();
            let mut seen = 0;
            s.chars()
                .map(|c| {
                    if c.is_ascii_digit() {
                        seen += 1;
                        if digits <= 4 || (seen > 2 && seen + 2 <= digits) {
                            return '*';
                        }
                    }
                    c
                })
                .collect()
        }
        _ => mask_but_last_four(s),
    }
}

/// Every letter and digit of `s` but the last four becomes `*`.
fn mask_but_last_four(s: &str) -> String {
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

/// HMAC-SHA-256 under one key. The key's inner and outer pads are absorbed once, here; each value
/// then clones that state and costs only its own SHA-256 blocks.
#[derive(Clone)]
pub struct KeyedHash(Hmac<Sha256>);

impl std::fmt::Debug for KeyedHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyedHash(..)")
    }
}

impl KeyedHash {
    pub fn new(key: &[u8]) -> Self {
        // HMAC takes a key of any length (a longer one is hashed first), so this cannot fail.
        KeyedHash(Hmac::new_from_slice(key).unwrap_or_else(|_| unreachable!()))
    }

    /// The 32-byte MAC of `msg`.
    pub fn mac(&self, msg: &[u8]) -> [u8; 32] {
        let mut mac = self.0.clone();
        mac.update(msg);
        mac.finalize().into_bytes().into()
    }
}

/// The value the hash is taken over: `s` trimmed, and lowercased when `email`. `scratch` holds
/// the lowercased form, so an ASCII value costs no allocation.
fn normalise<'a>(s: &'a str, email: bool, scratch: &'a mut String) -> &'a str {
    let s = s.trim();
    if !email || (s.is_ascii() && !s.bytes().any(|b| b.is_ascii_uppercase())) {
        return s;
    }
    scratch.clear();
    if s.is_ascii() {
        scratch.extend(s.chars().map(|c| c.to_ascii_lowercase()));
    } else {
        scratch.push_str(&s.to_lowercase());
    }
    scratch
}

/// PII `hash`: the HMAC-SHA-256 token of `s` under `key` (see the module docs), 64 lowercase hex
/// digits. `email` selects the e-mail normalisation.
pub fn hash_pii(key: &[u8], s: &str, email: bool) -> String {
    let token = hash_token(&KeyedHash::new(key), s, email, &mut String::new());
    String::from_utf8_lossy(&token).into_owned()
}

/// The id of a PII key (the audit's `pii_key.id`): the first 16 hex digits of the HMAC of
/// `edp-pii-key-id` under it, stable for the key and revealing nothing of it.
pub fn key_id(key: &[u8]) -> String {
    hash_pii(key, "edp-pii-key-id", false)[..16].to_string()
}

/// The token bytes of [`hash_pii`] (ASCII hex), with the normalisation's buffer passed in.
pub(super) fn hash_token(key: &KeyedHash, s: &str, email: bool, scratch: &mut String) -> [u8; 64] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let out = key.mac(normalise(s, email, scratch).as_bytes());
    let mut token = [0u8; 64];
    for (pair, byte) in token.chunks_exact_mut(2).zip(out) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 15)];
    }
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test cases 1, 2 and 6 (a key longer than the block).
    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        let cases: [(&[u8], &[u8], &str); 3] = [
            (
                &[0x0b; 20],
                b"Hi There",
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            ),
            (
                b"Jefe",
                b"what do ya want for nothing?",
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First",
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
        ];
        for (key, msg, hex) in cases {
            let key = KeyedHash::new(key);
            let token = hash_token(
                &key,
                std::str::from_utf8(msg).unwrap(),
                false,
                &mut String::new(),
            );
            assert_eq!(std::str::from_utf8(&token).unwrap(), hex);
        }
    }

    #[test]
    fn masks_by_format() {
        assert_eq!(
            mask_pii("jane@example.com", Some(Format::Email)),
            "j***@example.com"
        );
        assert_eq!(
            mask_pii("Zoë@exemple.fr", Some(Format::Email)),
            "Z***@exemple.fr"
        );
        assert_eq!(
            mask_pii("+447700900189", Some(Format::Phone)),
            "+44********89"
        );
        assert_eq!(
            mask_pii("+1 415-555-0100", Some(Format::Phone)),
            "+1 4**-***-**00"
        );
        assert_eq!(mask_pii("1234", Some(Format::Phone)), "****");
        assert_eq!(mask_pii("Lindqvist", None), "*****vist");
        assert_eq!(mask_pii("no at sign", Some(Format::Email)), "** ** sign");
    }

    #[test]
    fn emails_are_trimmed_and_lowercased_other_values_only_trimmed() {
        let k = b"k";
        let bob = hash_pii(k, "bob@example.com", true);
        assert_eq!(hash_pii(k, "  Bob@Example.COM\t", true), bob);
        assert_eq!(hash_pii(k, "bob@example.com", false), bob);
        assert_ne!(hash_pii(k, "Bob@Example.com", false), bob);
        assert_eq!(hash_pii(k, " Bob ", false), hash_pii(k, "Bob", false));
        assert_eq!(
            hash_pii(k, "ÉLODIE@exemple.fr", true),
            hash_pii(k, "élodie@exemple.fr", true)
        );
        assert_ne!(hash_pii(b"k2", "bob@example.com", true), bob);
    }
}
