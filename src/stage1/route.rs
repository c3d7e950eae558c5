//! Routing, the rule that sends each decoded row to exactly one place: curated when it is valid
//! and its key's winner, quarantine when it failed validation, and otherwise superseded (valid,
//! not the winner). A plain function over one batch's bitmaps, like DataFusion's `batch_filter`
//! beside its `FilterExecStream`: the data-pass worker calls it per batch and tests call it
//! directly.
//!
//! Tombstones (deletes among the curated rows) are counted by the worker from
//! [`Routed::keep`], since finding a delete needs the batch's op column
//! ([`DedupPlan::tombstones`](crate::stage1::dedup::DedupPlan::tombstones)).

use arrow::buffer::BooleanBuffer;

/// Where the rows of one batch go, with the counts the run report adds up.
#[derive(Debug)]
pub(super) struct Routed {
    /// Rows for curated: valid winners.
    pub(super) keep: BooleanBuffer,
    /// Rows for quarantine: those that failed validation (`None`: every row passed).
    pub(super) quarantine: Option<BooleanBuffer>,
    /// Winners that failed validation, whose keys the revisit looks at; `None` unless the batch
    /// has both a winner bitmap and failed rows.
    pub(super) failed_winners: Option<BooleanBuffer>,
    /// Rows set in `keep`.
    pub(super) curated: u64,
    /// Rows set in `quarantine`.
    pub(super) quarantined: u64,
    /// Valid rows that are not their key's winner: in neither bitmap.
    pub(super) superseded: u64,
}

/// Routes a batch of `rows` rows: `invalid` is the validator's verdict (true where a row broke
/// a rule; `None` when every row passed) and `winners` the batch's winner bits (see
/// [`batch_winners`]; `None` keeps every valid row). Every row ends in exactly one of curated,
/// quarantine and superseded.
pub(super) fn route(
    rows: usize,
    invalid: Option<&BooleanBuffer>,
    winners: Option<&BooleanBuffer>,
) -> Routed {
    let keep = match (invalid, winners) {
        (None, None) => BooleanBuffer::new_set(rows),
        (Some(invalid), None) => !invalid,
        (None, Some(winners)) => winners.clone(),
        (Some(invalid), Some(winners)) => winners & &!invalid,
    };
    let failed_winners = match (invalid, winners) {
        (Some(invalid), Some(winners)) => Some(invalid & winners),
        _ => None,
    };
    let failed = invalid.map_or(0, BooleanBuffer::count_set_bits);
    let kept = keep.count_set_bits();
    Routed {
        keep,
        quarantine: invalid.cloned(),
        failed_winners,
        curated: kept as u64,
        quarantined: failed as u64,
        superseded: (rows - failed - kept) as u64,
    }
}

/// The winner bits of a batch whose rows are the file's rows `rows`, from the file's winner
/// bits (one per row of the file).
pub(super) fn batch_winners(file_winners: &BooleanBuffer, rows: &[u64]) -> BooleanBuffer {
    BooleanBuffer::collect_bool(rows.len(), |i| file_winners.value(rows[i] as usize))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Bucket {
        Curated,
        Quarantine,
        Superseded,
    }

    /// Bits from a string of `0` and `1`.
    fn bits(s: &str) -> BooleanBuffer {
        s.chars().map(|c| c == '1').collect()
    }

    fn to_vec(b: &BooleanBuffer) -> Vec<bool> {
        b.iter().collect()
    }

    /// The rule, row by row: the reference `route` must agree with.
    fn expected(invalid: Option<&[bool]>, winners: Option<&[bool]>, rows: usize) -> Vec<Bucket> {
        (0..rows)
            .map(|i| {
                if invalid.is_some_and(|v| v[i]) {
                    Bucket::Quarantine
                } else if winners.is_none_or(|w| w[i]) {
                    Bucket::Curated
                } else {
                    Bucket::Superseded
                }
            })
            .collect()
    }

    /// Checks `route` against [`expected`] and that every row lands in exactly one bucket.
    fn check(invalid: Option<&[bool]>, winners: Option<&[bool]>, rows: usize) {
        let invalid_bits = invalid.map(BooleanBuffer::from);
        let winner_bits = winners.map(BooleanBuffer::from);
        let routed = route(rows, invalid_bits.as_ref(), winner_bits.as_ref());
        check_routed(&routed, invalid, winners, rows);
    }

    fn check_routed(
        routed: &Routed,
        invalid: Option<&[bool]>,
        winners: Option<&[bool]>,
        rows: usize,
    ) {
        let want = expected(invalid, winners, rows);
        assert_eq!(routed.keep.len(), rows);
        let quarantine = routed.quarantine.as_ref().map(to_vec);
        assert_eq!(quarantine.as_deref(), invalid);
        let (mut curated, mut quarantined, mut superseded) = (0u64, 0u64, 0u64);
        for (i, bucket) in want.iter().enumerate() {
            let kept = routed.keep.value(i);
            let failed = quarantine.as_ref().is_some_and(|q| q[i]);
            // Exactly one bucket: never both bitmaps; neither means superseded.
            assert!(!kept || !failed, "row {i} is both curated and quarantined");
            let got = match (kept, failed) {
                (true, _) => Bucket::Curated,
                (false, true) => Bucket::Quarantine,
                (false, false) => Bucket::Superseded,
            };
            assert_eq!(got, *bucket, "row {i}");
            match bucket {
                Bucket::Curated => curated += 1,
                Bucket::Quarantine => quarantined += 1,
                Bucket::Superseded => superseded += 1,
            }
        }
        assert_eq!(
            (routed.curated, routed.quarantined, routed.superseded),
            (curated, quarantined, superseded)
        );
        assert_eq!(
            routed.curated + routed.quarantined + routed.superseded,
            rows as u64
        );
        let want_failed_winners: Option<Vec<bool>> = match (invalid, winners) {
            (Some(v), Some(w)) => Some((0..rows).map(|i| v[i] && w[i]).collect()),
            _ => None,
        };
        assert_eq!(
            routed.failed_winners.as_ref().map(to_vec),
            want_failed_winners
        );
    }

    #[test]
    fn all_valid_winners_are_curated() {
        let routed = route(4, None, Some(&bits("1111")));
        assert_eq!(to_vec(&routed.keep), [true; 4]);
        assert!(routed.quarantine.is_none());
        assert!(routed.failed_winners.is_none());
        assert_eq!(
            (routed.curated, routed.quarantined, routed.superseded),
            (4, 0, 0)
        );
        check(None, Some(&[true; 4]), 4);
        // A verdict that names no failed row routes the same.
        check(Some(&[false; 4]), Some(&[true; 4]), 4);
    }

    #[test]
    fn without_dedup_every_valid_row_is_curated() {
        let routed = route(3, None, None);
        assert_eq!(to_vec(&routed.keep), [true; 3]);
        assert_eq!(
            (routed.curated, routed.quarantined, routed.superseded),
            (3, 0, 0)
        );
        check(Some(&[false, true, false]), None, 3);
    }

    #[test]
    fn invalid_winner_is_quarantined_and_recorded_for_the_revisit() {
        let routed = route(2, Some(&bits("10")), Some(&bits("11")));
        assert_eq!(to_vec(&routed.keep), [false, true]);
        assert_eq!(
            routed.quarantine.as_ref().map(to_vec),
            Some(vec![true, false])
        );
        assert_eq!(
            routed.failed_winners.as_ref().map(to_vec),
            Some(vec![true, false])
        );
        assert_eq!(
            (routed.curated, routed.quarantined, routed.superseded),
            (1, 1, 0)
        );
    }

    #[test]
    fn valid_non_winner_is_superseded() {
        let routed = route(2, None, Some(&bits("01")));
        assert_eq!(to_vec(&routed.keep), [false, true]);
        assert!(routed.quarantine.is_none());
        assert_eq!(
            (routed.curated, routed.quarantined, routed.superseded),
            (1, 0, 1)
        );
    }

    #[test]
    fn invalid_non_winner_is_quarantined_not_superseded() {
        let routed = route(1, Some(&bits("1")), Some(&bits("0")));
        assert_eq!(
            (routed.curated, routed.quarantined, routed.superseded),
            (0, 1, 0)
        );
        assert_eq!(
            routed.failed_winners.as_ref().map(to_vec),
            Some(vec![false])
        );
    }

    #[test]
    fn mixed_bitmaps() {
        // Rows: valid winner, invalid winner, valid loser, invalid loser, valid winner.
        let invalid = [false, true, false, true, false];
        let winners = [true, true, false, false, true];
        let routed = route(5, Some(&bits("01010")), Some(&bits("11001")));
        assert_eq!(to_vec(&routed.keep), [true, false, false, false, true]);
        assert_eq!(
            routed.failed_winners.as_ref().map(to_vec),
            Some(vec![false, true, false, false, false])
        );
        assert_eq!(
            (routed.curated, routed.quarantined, routed.superseded),
            (2, 2, 1)
        );
        check(Some(&invalid), Some(&winners), 5);
    }

    #[test]
    fn empty_batch() {
        for (invalid, winners) in [
            (None, None),
            (Some(bits("")), None),
            (None, Some(bits(""))),
            (Some(bits("")), Some(bits(""))),
        ] {
            let routed = route(0, invalid.as_ref(), winners.as_ref());
            assert_eq!(routed.keep.len(), 0);
            assert_eq!(
                (routed.curated, routed.quarantined, routed.superseded),
                (0, 0, 0)
            );
        }
    }

    #[test]
    fn batch_winners_reads_the_batch_rows_of_the_file() {
        // A sharded batch: file rows 1, 2 and 5 of a six-row file.
        let file = bits("011001");
        assert_eq!(
            to_vec(&batch_winners(&file, &[1, 2, 5])),
            [true, true, true]
        );
        assert_eq!(
            to_vec(&batch_winners(&file, &[0, 3, 4])),
            [false, false, false]
        );
        assert_eq!(batch_winners(&file, &[]).len(), 0);
    }

    /// Bits at bit offset `offset` of their buffer, the bits before it set: a sliced verdict
    /// must route like a fresh one.
    fn sliced(v: &[bool], offset: usize) -> BooleanBuffer {
        let mut all = vec![true; offset];
        all.extend_from_slice(v);
        BooleanBuffer::from(all).slice(offset, v.len())
    }

    proptest! {
        #[test]
        fn route_matches_the_row_by_row_rule(
            rows in prop::collection::vec(any::<(bool, bool)>(), 0..300),
            has_invalid in any::<bool>(),
            has_winners in any::<bool>(),
            offset in 0usize..9,
        ) {
            let n = rows.len();
            let invalid: Vec<bool> = rows.iter().map(|r| r.0).collect();
            let winners: Vec<bool> = rows.iter().map(|r| r.1).collect();
            let invalid = has_invalid.then_some(invalid.as_slice());
            let winners = has_winners.then_some(winners.as_slice());
            check(invalid, winners, n);
            let invalid_bits = invalid.map(|v| sliced(v, offset));
            let winner_bits = winners.map(|w| sliced(w, offset));
            let routed = route(n, invalid_bits.as_ref(), winner_bits.as_ref());
            check_routed(&routed, invalid, winners, n);
        }

        #[test]
        fn batch_winners_matches_indexing(
            file in prop::collection::vec(any::<bool>(), 1..200),
            picks in prop::collection::vec(any::<prop::sample::Index>(), 0..100),
        ) {
            let mut rows: Vec<u64> = picks.iter().map(|p| p.index(file.len()) as u64).collect();
            rows.sort_unstable();
            rows.dedup();
            let got = to_vec(&batch_winners(&BooleanBuffer::from(file.as_slice()), &rows));
            let want: Vec<bool> = rows.iter().map(|&r| file[r as usize]).collect();
            prop_assert_eq!(got, want);
        }
    }
}
