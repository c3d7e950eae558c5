//! Deduplication: keep the latest version of each primary key.
//!
//! The winner of a key is the row with the greatest `(event time, sequence, file, row)`: latest
//! `x-event-time`, ties broken by `x-sequence`, then by later position in the input (files in job
//! order, rows in file order). A winning `D` under `x-cdc-op` is kept as a tombstone row so later
//! stages can apply the delete.
//!
//! The index holds only keys and positions, never row data. A worker computes each batch's
//! [`Offers`] (key, stable key hash, candidate per row: the date-time parsing and hashing), and
//! the index's thread only appends them ([`DedupIndex::insert`]). [`DedupIndex::finish`] returns,
//! per input file, a bitmap of the winning rows (one bit per input row), which the job hands to
//! the source as the rows to decode ([`Read::keep`](crate::source::Read::keep)).
//!
//! Every key becomes a fixed-size entry: an integer key as itself, any other key (strings,
//! uuids, composite keys) as a 128-bit fingerprint of its arrow row encoding. Entries are
//! appended to [`SPILL_PARTITIONS`] radix partitions by key hash as word arrays (24 bytes per
//! entry with an integer key, 32 with a fingerprint, 16 more with a sequence column), and each
//! partition is reduced at the end by sorting it: sequential appends and cache-sized sorts,
//! where one hash table over all keys would miss the cache on nearly every offer, and no
//! allocation per row.
//!
//! The fingerprint is SipHash-1-3 with 128-bit output under a key drawn at random once per
//! process (so input cannot be crafted to collide). Two distinct keys share a fingerprint with
//! probability about n²/2¹²⁹ for n distinct keys: below 10⁻¹⁸ at ten billion keys. A collision
//! would not be detected (the index holds no key bytes); its effect would be that the two keys
//! count as one, so only the later of their winners is kept. The fingerprint decides only
//! which entries are the same key, never an output byte, so outputs do not depend on the
//! random key.
//!
//! The index has a memory budget. When it is full, its entries are appended to the partitions'
//! run files in a temporary directory under the spill directory, and memory starts empty again.
//! At the end, each partition is reduced on its own (all runs of one partition hold every
//! version of their keys), so the result is identical with and without spilling. The run files
//! are deleted when the index is dropped, whether the job succeeded or not.
//!
//! [`Offers::hashes`] gives every row a hash of its key that is stable across processes and
//! versions: it picks spill partitions and array-job shards.
//!
//! The partitions are in `runs` and the run files in `spill`; this module holds the
//! winner order, the plan, the offers and the index.

mod runs;
mod spill;

use arrow::array::{Array, AsArray, RecordBatch};
use std::io::Write;
use std::path::PathBuf;

use arrow::array::BooleanBufferBuilder;
use arrow::buffer::BooleanBuffer;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type, Schema};
use arrow::row::{RowConverter, SortField};
use siphasher::sip128::SipHasher13;

use crate::contract::{ColumnType, Contract, Format};
use crate::stage1::validate::instants;
use crate::{Error, Result};
use runs::{flip, Runs};
use spill::Spill;

/// The ordering and identity of one candidate row, packed into 32 bytes so the index stays
/// small: fields compare in declaration order, which is the winner order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Candidate {
    /// Event time in nanoseconds since the epoch (saturating outside 1677–2262) or the integer
    /// event-time value; `i64::MIN` when null.
    pub time: i64,
    /// Sequence value (high and low halves of an `i128`); `i128::MIN` when absent, null or not
    /// a number.
    seq_hi: i64,
    seq_lo: u64,
    /// `file << 41 | row << 1 | tombstone`: later files, then later rows, win ties.
    pos: u64,
}

/// Bits of [`Candidate::pos`] holding the row number.
const ROW_BITS: u32 = 40;

impl Candidate {
    /// A candidate; `row` must be below 2^40 and `file` below 2^23.
    pub fn new(time: i64, seq: i128, file: u32, row: u64, tombstone: bool) -> Self {
        Candidate {
            time,
            seq_hi: (seq >> 64) as i64,
            seq_lo: seq as u64,
            pos: (u64::from(file) << (ROW_BITS + 1)) | (row << 1) | u64::from(tombstone),
        }
    }

    /// Index of the input file in job order.
    pub fn file(&self) -> u32 {
        (self.pos >> (ROW_BITS + 1)) as u32
    }

    /// Row number within the file.
    pub fn row(&self) -> u64 {
        (self.pos >> 1) & ((1 << ROW_BITS) - 1)
    }

    /// The row is a CDC delete.
    pub fn tombstone(&self) -> bool {
        self.pos & 1 == 1
    }
}

fn saturate(t: i128) -> i64 {
    t.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// Column roles (key, event time, sequence, op) resolved against one schema: the job's, or an
/// object's projected to its dedup columns (the key pass).
#[derive(Debug)]
pub struct DedupPlan {
    keys: Vec<usize>,
    key_types: Vec<DataType>,
    time: Option<(usize, Option<Format>)>,
    seq: Option<usize>,
    op: Option<usize>,
}

impl DedupPlan {
    /// Resolves the contract's dedup columns in `schema`; `None` when the contract has no
    /// primary key (every valid row is kept).
    pub fn new(contract: &Contract, schema: &Schema, object: &str) -> Result<Option<Self>> {
        if contract.primary_key.is_empty() {
            return Ok(None);
        }
        let find = |name: &str| {
            schema.index_of(name).map_err(|_| {
                Error::bad_input(
                    object,
                    format!("missing column `{name}` needed for deduplication"),
                )
            })
        };
        let mut keys = Vec::new();
        let mut key_types = Vec::new();
        for name in &contract.primary_key {
            keys.push(find(name)?);
            let spec = contract
                .column(name)
                .ok_or_else(|| Error::Internal(format!("key {name} not in contract")))?;
            key_types.push(match spec.ty {
                ColumnType::Integer => DataType::Int64,
                ColumnType::Number => DataType::Float64,
                ColumnType::Boolean => DataType::Boolean,
                ColumnType::String => DataType::Utf8,
            });
        }
        let time = match &contract.event_time {
            Some(name) => Some((find(name)?, contract.column(name).and_then(|c| c.format))),
            None => None,
        };
        let optional = |name: &Option<String>| name.as_ref().and_then(|n| schema.index_of(n).ok());
        Ok(Some(DedupPlan {
            keys,
            key_types,
            time,
            seq: optional(&contract.sequence),
            op: optional(&contract.cdc_op),
        }))
    }
}

/// Number of hash partitions the index spills into.
pub const SPILL_PARTITIONS: usize = 64;

/// The index's memory budget and where it spills.
#[derive(Debug, Clone)]
pub struct SpillConfig {
    /// Bytes the index may hold in memory.
    pub budget: usize,
    /// Directory for run files (a temporary directory is made inside it).
    pub dir: PathBuf,
}

/// FNV-1a over `bytes`, then a SplitMix64 finaliser: stable across processes and versions.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

fn int_hash(k: i64) -> u64 {
    stable_hash(&k.to_le_bytes())
}

/// The 128-bit fingerprint of an encoded key, under this process's random key (module doc).
fn fingerprint(hasher: &SipHasher13, bytes: &[u8]) -> [u64; 2] {
    let (hi, lo) = hasher.hash(bytes).as_u64();
    [hi, lo]
}

/// This process's fingerprint hasher: keys drawn once from the OS-seeded `RandomState`.
fn fingerprinter() -> &'static SipHasher13 {
    static HASHER: std::sync::OnceLock<SipHasher13> = std::sync::OnceLock::new();
    HASHER.get_or_init(|| {
        use std::hash::BuildHasher;
        let seed = std::collections::hash_map::RandomState::new();
        SipHasher13::new_with_keys(seed.hash_one(0u8), seed.hash_one(1u8))
    })
}

/// The 128-bit fingerprint of `bytes` under this process's key, as the index fingerprints a
/// string key (foreign keys hold string keys so).
pub(crate) fn key_fingerprint(bytes: &[u8]) -> u128 {
    fingerprinter().hash(bytes).as_u128()
}

/// The index's entries: integer keys or fingerprints, without or with a sequence.
enum Keys {
    Int3(Runs<1, 3>),
    Int5(Runs<1, 5>),
    Fp4(Runs<2, 4>),
    Fp6(Runs<2, 6>),
}

impl Keys {
    /// Appends an entry; true when a partition is full and everything should be spilled.
    fn push(&mut self, hash: u64, key: &OfferKey, c: &Candidate) -> Result<bool> {
        Ok(match (self, key) {
            (Keys::Int3(runs), OfferKey::Int(k)) => runs.push(hash, [flip(*k)], c),
            (Keys::Int5(runs), OfferKey::Int(k)) => runs.push(hash, [flip(*k)], c),
            (Keys::Fp4(runs), OfferKey::Fingerprint(f)) => runs.push(hash, *f, c),
            (Keys::Fp6(runs), OfferKey::Fingerprint(f)) => runs.push(hash, *f, c),
            _ => return Err(Error::Internal("offers of another key shape".into())),
        })
    }
}

/// One offered key.
enum OfferKey {
    Int(i64),
    Fingerprint([u64; 2]),
}

fn partition(hash: u64) -> usize {
    ((hash >> 20) % SPILL_PARTITIONS as u64) as usize
}

/// The index of winning rows, fed batch by batch.
pub struct DedupIndex {
    keys: Keys,
    offered: u64,
    config: Option<SpillConfig>,
    spill: Option<Spill>,
}

/// The result of deduplication.
#[derive(Debug, Default)]
pub struct Winners {
    /// Per input file, one bit per row: set for the winners.
    pub rows: Vec<BooleanBuffer>,
    pub kept: u64,
    pub superseded: u64,
    pub tombstones: u64,
    /// Entries written to spill files (0 when the index fit its budget).
    pub spilled_entries: u64,
}

/// The keys of one batch's offers: the integer keys, or one fingerprint per row (zeros for a
/// null key).
enum OfferKeys {
    Int(arrow::array::Int64Array),
    Fingerprints(Vec<[u64; 2]>),
}

/// What one batch offers to the index: per row its key, stable key hash and candidate. Built by
/// [`DedupPlan::offers`] on a worker thread, so that the index's own thread only appends.
pub struct Offers {
    keys: OfferKeys,
    hashes: Vec<u64>,
    candidates: Vec<Candidate>,
}

impl Offers {
    /// The stable hash of each row's key (0 for a null key): picks the row's shard.
    pub fn hashes(&self) -> &[u64] {
        &self.hashes
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.candidates.len()
    }

    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.candidates.is_empty()
    }
}

impl DedupPlan {
    fn key_columns(&self, batch: &RecordBatch) -> Result<Vec<arrow::array::ArrayRef>> {
        Ok(self
            .keys
            .iter()
            .zip(&self.key_types)
            .map(|(&i, t)| cast(batch.column(i), t))
            .collect::<Result<Vec<_>, _>>()?)
    }

    /// The offers of `batch`, whose row `i` is row `rows[i]` of input file number `file`.
    /// `batch` holds at least the plan's columns at the plan's positions.
    pub fn offers(&self, batch: &RecordBatch, file: u32, rows: &[u64]) -> Result<Offers> {
        let n = batch.num_rows();
        if rows.len() != n {
            return Err(Error::Internal(format!(
                "{} row numbers for {n} rows",
                rows.len()
            )));
        }
        if file >= 1 << 23 || rows.last().is_some_and(|&r| r >= 1 << ROW_BITS) {
            return Err(Error::Config(
                "more than 2^23 input objects or 2^40 rows in one object".into(),
            ));
        }
        let times: Vec<i64> = match self.time {
            None => vec![i64::MIN; n],
            Some((i, format)) => {
                let col = batch.column(i);
                if col.data_type().is_integer() {
                    let c = cast(col, &DataType::Int64)?;
                    let c = c.as_primitive::<Int64Type>();
                    (0..n)
                        .map(|r| if c.is_valid(r) { c.value(r) } else { i64::MIN })
                        .collect()
                } else {
                    instants(col.as_ref(), format.unwrap_or(Format::DateTime))
                        .into_iter()
                        .map(|t| t.map_or(i64::MIN, saturate))
                        .collect()
                }
            }
        };
        let seqs: Vec<i128> = match self.seq {
            None => vec![i128::MIN; n],
            Some(i) => {
                let col = batch.column(i);
                if col.data_type().is_integer() {
                    let c = cast(col, &DataType::Int64)?;
                    let c = c.as_primitive::<Int64Type>();
                    (0..n)
                        .map(|r| {
                            if c.is_valid(r) {
                                i128::from(c.value(r))
                            } else {
                                i128::MIN
                            }
                        })
                        .collect()
                } else {
                    let c = cast(col, &DataType::Utf8)?;
                    let c = c.as_string::<i32>();
                    (0..n)
                        .map(|r| {
                            if c.is_valid(r) {
                                c.value(r).trim().parse::<i128>().unwrap_or(i128::MIN)
                            } else {
                                i128::MIN
                            }
                        })
                        .collect()
                }
            }
        };
        let ops = match self.op {
            Some(i) => Some(cast(batch.column(i), &DataType::Utf8)?),
            None => None,
        };
        let ops = ops.as_ref().map(|a| a.as_string::<i32>());
        let candidates = (0..n)
            .map(|r| {
                let tombstone =
                    ops.is_some_and(|o| o.is_valid(r) && o.value(r).eq_ignore_ascii_case("D"));
                Candidate::new(times[r], seqs[r], file, rows[r], tombstone)
            })
            .collect();
        let cols = self.key_columns(batch)?;
        let (keys, hashes) = if self.key_types == [DataType::Int64] {
            let k = cols[0].as_primitive::<Int64Type>().clone();
            let hashes = (0..n)
                .map(|r| {
                    if k.is_valid(r) {
                        int_hash(k.value(r))
                    } else {
                        0
                    }
                })
                .collect();
            (OfferKeys::Int(k), hashes)
        } else {
            let conv =
                RowConverter::new(self.key_types.iter().cloned().map(SortField::new).collect())?;
            let encoded = conv.convert_columns(&cols)?;
            let hasher = fingerprinter();
            let mut fingerprints = Vec::with_capacity(n);
            let hashes = (0..n)
                .map(|r| {
                    if cols.iter().any(|c| c.is_null(r)) {
                        fingerprints.push([0, 0]);
                        0
                    } else {
                        let key = encoded.row(r);
                        fingerprints.push(fingerprint(hasher, key.as_ref()));
                        stable_hash(key.as_ref())
                    }
                })
                .collect();
            (OfferKeys::Fingerprints(fingerprints), hashes)
        };
        Ok(Offers {
            keys,
            hashes,
            candidates,
        })
    }

    /// Rows of `batch` set in `rows` whose CDC op is a delete: the tombstones among them.
    pub fn tombstones(&self, batch: &RecordBatch, rows: &BooleanBuffer) -> Result<u64> {
        let Some(i) = self.op else { return Ok(0) };
        let ops = cast(batch.column(i), &DataType::Utf8)?;
        let ops = ops.as_string::<i32>();
        Ok(rows
            .set_indices()
            .filter(|&r| ops.is_valid(r) && ops.value(r).eq_ignore_ascii_case("D"))
            .count() as u64)
    }
}

impl DedupIndex {
    /// An empty index for keys shaped like `plan`'s, expecting at most `rows` offers. With a
    /// spill configuration, the index holds at most what `budget` allows and spills the rest;
    /// without, it grows as needed.
    pub fn new(plan: &DedupPlan, rows: u64, spill: Option<SpillConfig>) -> Result<Self> {
        let int = plan.key_types == [DataType::Int64];
        let words = usize::from(!int) + if plan.seq.is_some() { 5 } else { 3 };
        let max_entries = spill.as_ref().map_or(usize::MAX, |c| {
            (c.budget / (8 * words)).max(SPILL_PARTITIONS)
        });
        let keys = match (int, plan.seq.is_some()) {
            (true, false) => Keys::Int3(Runs::new(max_entries, rows)),
            (true, true) => Keys::Int5(Runs::new(max_entries, rows)),
            (false, false) => Keys::Fp4(Runs::new(max_entries, rows)),
            (false, true) => Keys::Fp6(Runs::new(max_entries, rows)),
        };
        Ok(DedupIndex {
            keys,
            offered: 0,
            config: spill,
            spill: None,
        })
    }

    /// Offers the rows of `batch` not marked in `skip`; `rows[i]` is the row number of the
    /// batch's row `i` in file number `file`.
    pub fn offer(
        &mut self,
        plan: &DedupPlan,
        batch: &RecordBatch,
        skip: Option<&BooleanBuffer>,
        file: u32,
        rows: &[u64],
    ) -> Result<()> {
        self.insert(&plan.offers(batch, file, rows)?, skip)
    }

    /// Adds the offers not marked in `skip`. Rows with a null key are never offered: they
    /// fail validation.
    pub fn insert(&mut self, offers: &Offers, skip: Option<&BooleanBuffer>) -> Result<()> {
        let wanted = |r: usize| skip.is_none_or(|m| !m.value(r));
        for r in (0..offers.len()).filter(|&r| wanted(r)) {
            let key = match &offers.keys {
                OfferKeys::Int(k) if k.is_valid(r) => OfferKey::Int(k.value(r)),
                OfferKeys::Fingerprints(f) if offers.hashes[r] != 0 => OfferKey::Fingerprint(f[r]),
                _ => continue,
            };
            self.offered += 1;
            if self
                .keys
                .push(offers.hashes[r], &key, &offers.candidates[r])?
            {
                self.spill_all()?;
            }
        }
        Ok(())
    }

    /// The winners per file as bitmaps over `file_rows[f]` rows, with the counts of
    /// superseded rows and tombstones. Reads the spill partitions back one at a time.
    pub fn finish(mut self, file_rows: &[u64]) -> Result<Winners> {
        let mut bits: Vec<BooleanBufferBuilder> = file_rows
            .iter()
            .map(|&n| {
                let mut b = BooleanBufferBuilder::new(n as usize);
                b.append_n(n as usize, false);
                b
            })
            .collect();
        let mut out = Winners::default();
        let mut add = |c: &Candidate| -> Result<()> {
            let file = bits
                .get_mut(c.file() as usize)
                .ok_or_else(|| Error::Internal(format!("winner in unknown file {}", c.file())))?;
            file.set_bit(c.row() as usize, true);
            out.kept += 1;
            out.tombstones += u64::from(c.tombstone());
            Ok(())
        };
        if self.spill.is_some() {
            self.spill_all()?;
        }
        let mut spill = self.spill.take();
        if let Some(spill) = &mut spill {
            for f in &mut spill.files {
                f.flush()
                    .map_err(|e| Error::Spill(format!("{}: {e}", spill.dir.path().display())))?;
            }
        }
        let dir = spill.as_ref().map(|s| s.dir.path().to_path_buf());
        match &mut self.keys {
            Keys::Int3(runs) => runs.reduce_all(dir.as_deref(), &mut add)?,
            Keys::Int5(runs) => runs.reduce_all(dir.as_deref(), &mut add)?,
            Keys::Fp4(runs) => runs.reduce_all(dir.as_deref(), &mut add)?,
            Keys::Fp6(runs) => runs.reduce_all(dir.as_deref(), &mut add)?,
        }
        out.spilled_entries = spill.as_ref().map_or(0, |s| s.spilled_entries);
        out.rows = bits.iter_mut().map(BooleanBufferBuilder::finish).collect();
        out.superseded = self.offered - out.kept;
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
