//! Deduplication: keep the latest version of each primary key.
//!
//! The winner of a key is the row with the greatest `(event time, sequence, file, row)`: latest
//! `x-event-time`, ties broken by `x-sequence`, then by later position in the input (files in job
//! order, rows in file order). A winning `D` under `x-cdc-op` is kept as a tombstone row so later
//! stages can apply the delete.
//!
//! The index holds only keys and positions, never row data: the job's first pass offers the
//! valid rows of every batch ([`DedupIndex::offer`]), and [`DedupIndex::finish`] returns, per
//! input file, the sorted row numbers of the winners, which the second pass reads back with a
//! Parquet row selection. Keys are either one integer (a map keyed by `i64`) or the arrow row
//! encoding of the key columns (a map keyed by bytes), so entries are fixed-size records that
//! can later be written to hash-partitioned runs on disk when the index outgrows its budget.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::buffer::BooleanBuffer;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type, Schema};
use arrow::row::{RowConverter, SortField};
use hashbrown::HashMap;

use crate::contract::{ColumnType, Contract, Format};
use crate::validate::instants;
use crate::{Error, Result};

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

/// Column roles resolved against one file's schema.
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

enum Keys {
    Int(HashMap<i64, Candidate>),
    Bytes(RowConverter, HashMap<Box<[u8]>, Candidate>),
}

/// The index of winning rows, fed batch by batch.
pub struct DedupIndex {
    keys: Keys,
    offered: u64,
}

/// The result of deduplication.
#[derive(Debug, Default)]
pub struct Winners {
    /// Sorted winning row numbers, per input file.
    pub rows: Vec<Vec<u64>>,
    pub superseded: u64,
    pub tombstones: u64,
}

impl DedupIndex {
    /// An empty index for keys shaped like `plan`'s.
    pub fn new(plan: &DedupPlan) -> Result<Self> {
        let keys = if plan.key_types == [DataType::Int64] {
            Keys::Int(HashMap::new())
        } else {
            let fields = plan.key_types.iter().cloned().map(SortField::new).collect();
            Keys::Bytes(RowConverter::new(fields)?, HashMap::new())
        };
        Ok(DedupIndex { keys, offered: 0 })
    }

    /// Number of distinct keys held.
    pub fn len(&self) -> usize {
        match &self.keys {
            Keys::Int(m) => m.len(),
            Keys::Bytes(_, m) => m.len(),
        }
    }

    /// True when no key has been offered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Offers the rows of `batch` not marked in `invalid`; `first_row` is the position of the
    /// batch's first row in file number `file`.
    pub fn offer(
        &mut self,
        plan: &DedupPlan,
        batch: &RecordBatch,
        invalid: Option<&BooleanBuffer>,
        file: u32,
        first_row: u64,
    ) -> Result<()> {
        let n = batch.num_rows();
        let times: Vec<i64> = match plan.time {
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
        let seqs: Vec<i128> = match plan.seq {
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
        let ops = match plan.op {
            Some(i) => Some(cast(batch.column(i), &DataType::Utf8)?),
            None => None,
        };
        let ops = ops.as_ref().map(|a| a.as_string::<i32>());
        if file >= 1 << 23 || first_row + n as u64 >= 1 << ROW_BITS {
            return Err(Error::Config(
                "more than 2^23 input objects or 2^40 rows in one object".into(),
            ));
        }
        let candidate = |r: usize| {
            let tombstone =
                ops.is_some_and(|o| o.is_valid(r) && o.value(r).eq_ignore_ascii_case("D"));
            Candidate::new(times[r], seqs[r], file, first_row + r as u64, tombstone)
        };
        let keep = |r: usize| invalid.is_none_or(|m| !m.value(r));
        match &mut self.keys {
            Keys::Int(map) => {
                let k = cast(batch.column(plan.keys[0]), &DataType::Int64)?;
                let k = k.as_primitive::<Int64Type>();
                for r in (0..n).filter(|&r| keep(r)) {
                    self.offered += 1;
                    let c = candidate(r);
                    map.entry(k.value(r))
                        .and_modify(|old| {
                            if c > *old {
                                *old = c
                            }
                        })
                        .or_insert(c);
                }
            }
            Keys::Bytes(conv, map) => {
                let cols = plan
                    .keys
                    .iter()
                    .zip(&plan.key_types)
                    .map(|(&i, t)| cast(batch.column(i), t))
                    .collect::<Result<Vec<_>, _>>()?;
                let rows = conv.convert_columns(&cols)?;
                for r in (0..n).filter(|&r| keep(r)) {
                    self.offered += 1;
                    let c = candidate(r);
                    let key = rows.row(r);
                    match map.get_mut(key.as_ref()) {
                        Some(old) => {
                            if c > *old {
                                *old = c
                            }
                        }
                        None => {
                            map.insert(key.as_ref().into(), c);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The winners per file (sorted), with the counts of superseded rows and tombstones.
    pub fn finish(self, files: usize) -> Winners {
        let mut out = Winners {
            rows: vec![Vec::new(); files],
            ..Default::default()
        };
        let mut add = |c: &Candidate| {
            out.rows[c.file() as usize].push(c.row());
            out.tombstones += u64::from(c.tombstone());
        };
        let kept = match &self.keys {
            Keys::Int(m) => {
                m.values().for_each(&mut add);
                m.len()
            }
            Keys::Bytes(_, m) => {
                m.values().for_each(&mut add);
                m.len()
            }
        };
        for rows in &mut out.rows {
            rows.sort_unstable();
        }
        out.superseded = self.offered - kept as u64;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::Field;

    fn contract() -> Contract {
        Contract::from_json_str(
            "t.json",
            r#"{"title":"t","required":["id","ts"],"properties":{
                "id":{"type":"integer"},"ts":{"type":"string","format":"date-time"},
                "op":{"type":"string","enum":["I","U","D"]}},
               "x-primary-key":["id"],"x-event-time":"ts","x-cdc-op":"op"}"#,
        )
        .unwrap()
    }

    fn batch(ids: &[i64], ts: &[&str], ops: &[&str]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("ts", DataType::Utf8, false),
            Field::new("op", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(StringArray::from(ts.to_vec())),
                Arc::new(StringArray::from(ops.to_vec())),
            ],
        )
        .unwrap()
    }

    #[test]
    fn latest_wins_ties_go_to_later_rows_and_deletes_are_tombstones() {
        let c = contract();
        let b = batch(
            &[1, 1, 2, 2, 3, 3],
            &[
                "2025-01-02 00:00:00",
                "2025-01-01 00:00:00",
                "2025-01-01 00:00:00",
                "2025-01-01T00:00:00Z",
                "2025-01-01 00:00:00",
                "2025-01-03 00:00:00",
            ],
            &["I", "U", "I", "U", "I", "D"],
        );
        let plan = DedupPlan::new(&c, &b.schema(), "x").unwrap().unwrap();
        let mut index = DedupIndex::new(&plan).unwrap();
        index.offer(&plan, &b, None, 0, 0).unwrap();
        let w = index.finish(1);
        assert_eq!(w.rows, vec![vec![0, 3, 5]]);
        assert_eq!(w.superseded, 3);
        assert_eq!(w.tombstones, 1);
    }
}
