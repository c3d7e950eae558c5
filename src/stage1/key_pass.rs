//! The key pass (step 1 of the module docs): decode only the dedup columns, turn each row group
//! into [`Offers`] on the pool and append them to the [`DedupIndex`], whose result is one bit per
//! input row: the winners. A sharded job marks the rows it owns in the same pass. The revisit
//! runs it again over the rows a [`Revisit`] names.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::BooleanBufferBuilder;
use arrow::buffer::BooleanBuffer;
use indicatif::ProgressBar;

use crate::report::Timers;
use crate::source::{decode_error, Read, RowGroup};
use crate::stage1::dedup::{DedupIndex, DedupPlan, Offers, SpillConfig};
use crate::{Error, Result};

use super::pool::{next_group, InFlight};
use super::prepare::{file_number, Prepared};
use super::spec::JobSpec;
use super::tally::Counters;

/// Step 1 over every input: the index of all their keys, finished into each file's winners
/// (`None` for every file when the job has no primary key), and the entries it spilled.
pub(super) async fn find_winners(
    spec: &JobSpec,
    prepared: &mut [Prepared],
    c: &mut Counters,
    bar: &ProgressBar,
) -> Result<(Vec<Option<Arc<BooleanBuffer>>>, u64)> {
    let file_rows: Vec<u64> = prepared.iter().map(|p| p.rows).collect();
    let total_rows: u64 = file_rows.iter().sum();
    super::progress::phase(bar, "keys", total_rows);
    let mut index = match &prepared[0].plan {
        Some(plan) => Some(DedupIndex::new(
            plan,
            total_rows,
            Some(SpillConfig {
                budget: spec.index_memory,
                dir: spec.spill_dir.clone(),
            }),
        )?),
        None => None,
    };
    for (i, p) in prepared.iter_mut().enumerate() {
        let file = file_number(i)?;
        key_pass(spec, file, p, &mut index, c, bar, None).await?;
    }
    let t = Instant::now();
    let (winners, spilled) = match index {
        Some(ix) => {
            let w = tokio::task::block_in_place(|| ix.finish(&file_rows))?;
            let rows: Vec<_> = w.rows.into_iter().map(|b| Some(Arc::new(b))).collect();
            (rows, w.spilled_entries)
        }
        None => (vec![None; prepared.len()], 0),
    };
    c.timers.dedup += t.elapsed();
    Ok((winners, spilled))
}

/// The rows the revisit's key pass offers: the valid rows of the keys whose winner failed.
pub(super) struct Revisit<'a> {
    /// The keys (`None`: too many to hold; every key's valid rows are offered).
    pub(super) keys: Option<&'a hashbrown::HashSet<u64>>,
    /// The file's rows that failed validation (`None`: none did).
    pub(super) invalid: Option<&'a BooleanBuffer>,
}

/// The key pass over file number `file`: decode only its dedup columns (key, event time,
/// sequence, op), offer every owned row to the index and, in a sharded job, mark the rows this
/// shard owns. Without a primary key, a sharded job owns rows by a hash of their position and
/// nothing is decoded. With `revisit`, only the rows it names are offered (they are owned: a
/// shard owns keys by the same hash).
pub(super) async fn key_pass(
    spec: &JobSpec,
    file: u32,
    p: &mut Prepared,
    index: &mut Option<DedupIndex>,
    c: &mut Counters,
    bar: &ProgressBar,
    revisit: Option<&Revisit<'_>>,
) -> Result<()> {
    let url = p.input.url().to_string();
    let sharded = spec.shard.count > 1 && revisit.is_none();
    let mut owned = BooleanBufferBuilder::new(if sharded { p.rows as usize } else { 0 });
    let (Some(_), Some(ix)) = (&p.plan, index.as_mut()) else {
        if sharded {
            for row in 0..p.rows {
                let mut key = [0u8; 12];
                key[..4].copy_from_slice(&file.to_le_bytes());
                key[4..].copy_from_slice(&row.to_le_bytes());
                owned.append(spec.shard.owns(crate::stage1::dedup::stable_hash(&key)));
            }
            set_owned(p, owned.finish());
        }
        return Ok(());
    };
    let file_schema = p.input.schema().clone();
    let contract = &spec.contract;
    let names = contract
        .primary_key
        .iter()
        .chain(&contract.event_time)
        .chain(&contract.sequence)
        .chain(&contract.cdc_op);
    let mut roots: Vec<usize> = names.filter_map(|n| file_schema.index_of(n).ok()).collect();
    roots.sort_unstable();
    roots.dedup();
    let projected = file_schema.project(&roots)?;
    let plan = DedupPlan::new(contract, &projected, &url)?
        .ok_or_else(|| Error::Internal("key pass without a primary key".into()))?;
    let readers = p.input.read(Read {
        batch_size: spec.batch_size.get(),
        keep: None,
        columns: Some(roots),
        read_ahead: spec.read_ahead,
    });
    let plan = Arc::new(plan);
    let mut inflight = InFlight::new();
    let mut decoded = 0u64;
    let mut absorb = |done: KeyOffers, c: &mut Counters| -> Result<()> {
        c.timers.add(&done.timers);
        let t = Instant::now();
        for offers in &done.offers {
            let n = offers.len();
            let first = decoded as usize;
            let skip = if let Some(r) = revisit {
                Some(BooleanBuffer::collect_bool(n, |i| {
                    r.keys.is_some_and(|k| !k.contains(&offers.hashes()[i]))
                        || r.invalid.is_some_and(|b| b.value(first + i))
                }))
            } else {
                sharded.then(|| {
                    let skip =
                        BooleanBuffer::collect_bool(n, |r| !spec.shard.owns(offers.hashes()[r]));
                    owned.append_buffer(&!&skip);
                    skip
                })
            };
            ix.insert(offers, skip.as_ref())?;
            decoded += n as u64;
            bar.inc(n as u64);
        }
        c.timers.dedup += t.elapsed();
        Ok(())
    };
    let mut groups = readers;
    while let Some(group) = next_group(spec, &mut groups, c).await? {
        let finished = inflight.wait_for_worker().await?;
        let (plan, url) = (plan.clone(), url.clone());
        inflight.start(move || key_row_group(&plan, &url, file, group));
        if let Some(done) = finished {
            absorb(done, c)?;
        }
    }
    while let Some(done) = inflight.next(spec).await? {
        absorb(done, c)?;
    }
    if decoded != p.rows {
        return Err(decode_error(
            &url,
            format!("footer declares {} rows but {decoded} were decoded", p.rows),
        ));
    }
    if sharded {
        set_owned(p, owned.finish());
    }
    Ok(())
}

/// Records the rows of `p` this shard owns.
fn set_owned(p: &mut Prepared, owned: BooleanBuffer) {
    p.owned_rows = owned.count_set_bits() as u64;
    p.owned = Some(Arc::new(owned));
}

/// What the key pass gets from one row group: the offers of its batches.
struct KeyOffers {
    offers: Vec<Offers>,
    timers: Timers,
}

/// The key pass over one row group, on a worker: decode the dedup columns and compute the
/// offers (event times parsed, keys hashed), leaving the index only appends.
fn key_row_group(plan: &DedupPlan, url: &str, file: u32, group: RowGroup) -> Result<KeyOffers> {
    let mut done = KeyOffers {
        offers: Vec::new(),
        timers: Timers::default(),
    };
    let mut next = group.first_row;
    let mut group = group;
    loop {
        let t = Instant::now();
        let Some(batch) = group.next_batch(url)? else {
            break;
        };
        done.timers.decode += t.elapsed();
        let t = Instant::now();
        let n = batch.num_rows() as u64;
        let rows: Vec<u64> = (next..next + n).collect();
        next += n;
        done.offers.push(plan.offers(&batch, file, &rows)?);
        done.timers.dedup += t.elapsed();
    }
    Ok(done)
}
