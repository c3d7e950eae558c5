//! PII transforms: `mask`, and the keyed `hash` (HMAC-SHA-256 with its key states precomputed).

use sha2::{Digest, Sha256};

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
pub(super) fn hash_token(key: &KeyedHash, s: &str) -> [u8; 64] {
    let out = key.mac(s.as_bytes());
    let mut token = [0u8; 64];
    for (pair, byte) in token.chunks_exact_mut(2).zip(out) {
        pair[0] = b'a' + (byte >> 4);
        pair[1] = b'a' + (byte & 15);
    }
    token
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
}
