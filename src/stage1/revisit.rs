//! The revisit (step 3 of the module docs): when some key's winner failed validation, a second
//! key pass over the valid rows of those keys and a data pass over just their new winners, so
//! that per key the most recent *valid* version is curated. [`Failed`] is what the first data
//! pass records for it.

use std::sync::Arc;

use arrow::array::BooleanBufferBuilder;
use arrow::buffer::BooleanBuffer;
use indicatif::ProgressBar;

use crate::stage1::dedup::{DedupIndex, SpillConfig};
use crate::{Error, Result};

use super::data_pass::{data_pass, Done, Selection};
use super::key_pass::{key_pass, Revisit};
use super::prepare::{file_number, Prepared, Protectors, Schemas};
use super::progress::phase;
use super::publish::Outputs;
use super::spec::JobSpec;
use super::tally::Counters;

/// What the revisit needs from the data pass: which rows failed validation and which keys'
/// winners were among them.
#[derive(Default)]
pub(super) struct Failed {
    /// Per file, one bit per row that failed validation, allocated at the file's first.
    rows: Vec<Option<BooleanBufferBuilder>>,
    /// Key hashes ([`Offers::hashes`](crate::stage1::dedup::Offers::hashes)) of the winners
    /// that failed validation; `None` once there were more than `max_keys` (the revisit then
    /// offers every valid row).
    winner_keys: Option<hashbrown::HashSet<u64>>,
    max_keys: usize,
    /// Whether any winner failed.
    any: bool,
}

impl Failed {
    /// Room for the key hashes of the index's budget, `index_memory` (~16 bytes each).
    pub(super) fn new(files: usize, index_memory: usize) -> Self {
        Failed {
            rows: (0..files).map(|_| None).collect(),
            winner_keys: Some(hashbrown::HashSet::new()),
            max_keys: index_memory / 16,
            any: false,
        }
    }

    /// Adds what one row group's worker found.
    pub(super) fn record(&mut self, done: &Done, file_rows: u64) {
        if !done.invalid_rows.is_empty() {
            let bits = self.rows[done.file].get_or_insert_with(|| {
                let mut b = BooleanBufferBuilder::new(file_rows as usize);
                b.append_n(file_rows as usize, false);
                b
            });
            for &r in &done.invalid_rows {
                bits.set_bit(r as usize, true);
            }
        }
        self.any |= !done.failed_winners.is_empty();
        if let Some(keys) = &mut self.winner_keys {
            keys.extend(&done.failed_winners);
            if keys.len() > self.max_keys {
                self.winner_keys = None;
            }
        }
    }
}

/// The revisit (step 3 of the module docs): when some keys' winners failed validation, curates
/// each such key's latest valid version, if it has one. Returns how many keys it curated and
/// how many index entries it spilled.
#[allow(clippy::too_many_arguments)]
pub(super) async fn revisit(
    spec: &JobSpec,
    schemas: &Schemas,
    prepared: &mut [Prepared],
    winners: &[Option<Arc<BooleanBuffer>>],
    failed: Failed,
    protectors: &Protectors,
    outputs: &mut Outputs,
    c: &mut Counters,
    bar: &ProgressBar,
) -> Result<(u64, u64)> {
    let Some(plan) = prepared[0].plan.clone() else {
        return Ok((0, 0));
    };
    if !failed.any {
        return Ok((0, 0));
    }
    let file_rows: Vec<u64> = prepared.iter().map(|p| p.rows).collect();
    let total: u64 = file_rows.iter().sum();
    phase(bar, "earlier versions", total);
    let mut index = Some(DedupIndex::new(
        &plan,
        total,
        Some(SpillConfig {
            budget: spec.index_memory,
            dir: spec.spill_dir.clone(),
        }),
    )?);
    let invalid: Vec<Option<BooleanBuffer>> = failed
        .rows
        .into_iter()
        .map(|b| b.map(|mut b| b.finish()))
        .collect();
    for (i, p) in prepared.iter_mut().enumerate() {
        let file = file_number(i)?;
        let only = Revisit {
            keys: failed.winner_keys.as_ref(),
            invalid: invalid[i].as_ref(),
        };
        key_pass(spec, file, p, &mut index, c, bar, Some(&only)).await?;
    }
    let index = index.ok_or_else(|| Error::Internal("revisit without an index".into()))?;
    let latest_valid = tokio::task::block_in_place(|| index.finish(&file_rows))?;
    // A key's latest valid version is new unless it was the winner (then it was curated).
    let selections: Vec<Selection> = latest_valid
        .rows
        .into_iter()
        .zip(winners)
        .map(|(valid, winner)| {
            let new = match winner {
                Some(w) => &valid & &!w.as_ref(),
                None => valid,
            };
            let new = Some(Arc::new(new));
            Selection {
                decode: new.clone(),
                winners: new,
            }
        })
        .collect();
    let picked: u64 = selections
        .iter()
        .filter_map(|s| s.decode.as_ref())
        .map(|b| b.count_set_bits() as u64)
        .sum();
    phase(bar, "earlier rows", picked);
    let mut d = Counters::default();
    data_pass(
        spec,
        schemas,
        prepared,
        &selections,
        protectors,
        outputs,
        &mut d,
        None,
        true,
        bar,
    )
    .await?;
    if d.quarantined > 0 || d.curated > c.superseded {
        return Err(Error::Internal(format!(
            "the revisit found {} invalid rows and {} earlier versions for {} superseded rows",
            d.quarantined, d.curated, c.superseded
        )));
    }
    c.timers.add(&d.timers);
    c.curated += d.curated;
    c.superseded -= d.curated;
    c.tombstones += d.tombstones;
    c.masked.add(d.masked);
    for (column, n) in d.orphans_kept {
        *c.orphans_kept.entry(column).or_default() += n;
    }
    Ok((d.curated, latest_valid.spilled_entries))
}
