//! Fixed-size entries in radix partitions: appended as order-preserving words, reduced by
//! sorting.

use std::io::Write;
use std::path::Path;

use rayon::prelude::*;

use super::spill::{read_run, Spill};
use super::{partition, Candidate, SPILL_PARTITIONS};
use crate::Result;

/// An `i64` as a `u64` with the same order.
pub(super) fn flip(v: i64) -> u64 {
    (v as u64) ^ (1 << 63)
}

fn unflip(v: u64) -> i64 {
    (v ^ (1 << 63)) as i64
}

/// Entries in radix partitions: `[key (K words), time, (seq hi, seq lo,) pos]` as
/// order-preserving words. The key is an integer key (`K` = 1) or a 128-bit fingerprint of
/// any other key (`K` = 2); `S` is `K + 2` without a sequence column and `K + 4` with one.
/// Offering appends to the key's partition (sequential writes, no hash table, no allocation
/// per row); each partition is reduced at the end by sorting it, which fits in cache where a
/// table over all keys would not.
pub(super) struct Runs<const K: usize, const S: usize> {
    parts: Vec<Vec<[u64; S]>>,
    /// A partition this long triggers a spill of all of them.
    part_limit: usize,
}

impl<const K: usize, const S: usize> Runs<K, S> {
    /// Whether the entries carry a sequence.
    const SEQ: bool = S == K + 4;

    pub(super) fn new(max_entries: usize, rows: u64) -> Self {
        let part_limit = (max_entries / SPILL_PARTITIONS).max(1);
        let expected = usize::try_from(rows / SPILL_PARTITIONS as u64)
            .unwrap_or(usize::MAX)
            .saturating_mul(5)
            / 4
            + 16;
        Runs {
            parts: (0..SPILL_PARTITIONS)
                .map(|_| Vec::with_capacity(expected.min(part_limit)))
                .collect(),
            part_limit,
        }
    }

    fn words(key: [u64; K], c: &Candidate) -> [u64; S] {
        let mut w = [0u64; S];
        w[..K].copy_from_slice(&key);
        w[K] = flip(c.time);
        if Self::SEQ {
            w[K + 1] = flip(c.seq_hi);
            w[K + 2] = c.seq_lo;
        }
        w[S - 1] = c.pos;
        w
    }

    fn candidate(w: &[u64; S]) -> Candidate {
        let (seq_hi, seq_lo) = if Self::SEQ {
            (unflip(w[K + 1]), w[K + 2])
        } else {
            (i64::MIN, 0)
        };
        Candidate {
            time: unflip(w[K]),
            seq_hi,
            seq_lo,
            pos: w[S - 1],
        }
    }

    /// Appends an entry; true when its partition is full and everything should be spilled.
    pub(super) fn push(&mut self, hash: u64, key: [u64; K], c: &Candidate) -> bool {
        let part = &mut self.parts[partition(hash)];
        part.push(Self::words(key, c));
        part.len() >= self.part_limit
    }

    pub(super) fn spill(&mut self, spill: &mut Spill) -> std::io::Result<u64> {
        let mut written = 0;
        let mut buf = Vec::new();
        for (part, file) in self.parts.iter_mut().zip(&mut spill.files) {
            buf.clear();
            for w in part.iter() {
                for word in w {
                    buf.extend_from_slice(&word.to_le_bytes());
                }
            }
            file.write_all(&buf)?;
            written += part.len() as u64;
            part.clear();
        }
        Ok(written)
    }

    /// Reduces every partition, as many at once as the pool has threads (a partition's spilled
    /// runs are in memory only while it is sorted), and calls `add` with the winner of every
    /// key.
    pub(super) fn reduce_all(
        &mut self,
        dir: Option<&Path>,
        add: &mut impl FnMut(&Candidate) -> Result<()>,
    ) -> Result<()> {
        let threads = rayon::current_num_threads().max(1);
        let mut parts = std::mem::take(&mut self.parts).into_iter().enumerate();
        loop {
            let chunk: Vec<(usize, Vec<[u64; S]>)> = parts.by_ref().take(threads).collect();
            if chunk.is_empty() {
                return Ok(());
            }
            let winners: Vec<Result<Vec<Candidate>>> = chunk
                .into_par_iter()
                .map(|(p, entries)| Self::reduce(entries, &read_run(dir, p)?))
                .collect();
            for w in winners {
                w?.iter().try_for_each(&mut *add)?;
            }
        }
    }

    /// The winner of every key among a partition's in-memory `entries` and `spilled` runs.
    fn reduce(mut entries: Vec<[u64; S]>, spilled: &[u8]) -> Result<Vec<Candidate>> {
        entries.reserve(spilled.len() / (8 * S));
        for rec in spilled.chunks_exact(8 * S) {
            let mut w = [0u64; S];
            for (i, word) in rec.chunks_exact(8).enumerate() {
                let mut b = [0u8; 8];
                b.copy_from_slice(word);
                w[i] = u64::from_le_bytes(b);
            }
            entries.push(w);
        }
        entries.sort_unstable();
        Ok(entries
            .iter()
            .enumerate()
            .filter(|&(i, w)| entries.get(i + 1).is_none_or(|next| next[..K] != w[..K]))
            .map(|(_, w)| Self::candidate(w))
            .collect())
    }
}
