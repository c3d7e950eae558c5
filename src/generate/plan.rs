//! The CDC plan of each row (insert, re-send or delete of which key) and the faults injected.

use super::rng::SplitMix;
use super::{Dataset, GenSpec};

/// Shares of planned rows that re-send an earlier key and that delete one.
const RESEND: f64 = 0.10;
const DELETE: f64 = 0.01;
/// Share of deletes that carry only the key, event time, op and sequence (the other columns
/// null), as DMS writes them from PostgreSQL with the default replica identity or from MySQL
/// with a minimal row image.
pub(super) const KEY_ONLY_DELETE: f64 = 0.5;
/// How much likelier a re-send is to carry a fault than the requested rate: a faulty re-send is
/// its key's last version (see [`Gen::version`](super::rows::Gen::version)) and invalid, so an
/// earlier version of the key is the one curated. Inserts carry faults less often, so that the
/// overall rate stays the requested one.
const RESEND_FAULT_BIAS: f64 = 3.0;

/// The expected number of distinct keys among `rows` planned rows: the first ten are new
/// keys, then all but the re-sends and deletes (see [`Planner::next`]).
pub(super) fn expected_keys(rows: u64) -> f64 {
    let first = rows.min(10) as f64;
    (first + rows.saturating_sub(10) as f64 * (1.0 - RESEND - DELETE)).max(1.0)
}

/// A fault injected into one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fault {
    BadEmail,
    BadPhone,
    BadDate,
    OutOfRange,
    UnknownEnum,
    OrphanKey,
    CardInText,
    BadPattern,
}

/// One planned row: which entity, which CDC operation, which fault, and where a re-send or
/// delete falls after its key's first version (in `[0, 1)`, see
/// [`Gen::version`](super::rows::Gen::version)).
#[derive(Debug, Clone, Copy)]
pub(super) struct Plan {
    pub(super) key: u64,
    pub(super) op: &'static str,
    pub(super) later: f64,
    pub(super) fault: Option<Fault>,
    /// A delete that carries only the key, event time, op and sequence (see
    /// [`delete_columns`]).
    pub(super) key_only: bool,
    /// A faulty re-send: its key's last version, after every other one.
    pub(super) latest: bool,
}

fn faults_of(d: Dataset) -> &'static [Fault] {
    use Fault::*;
    match d {
        Dataset::Customers => &[BadEmail, BadPhone, BadDate, UnknownEnum, BadPattern],
        Dataset::Orders => &[
            BadEmail,
            BadPhone,
            BadDate,
            OutOfRange,
            UnknownEnum,
            OrphanKey,
            CardInText,
        ],
        Dataset::OrderItems => &[BadDate, OutOfRange, OrphanKey],
        Dataset::Products => &[OutOfRange, UnknownEnum, BadPattern, CardInText],
        Dataset::Inventory => &[BadDate, OutOfRange, OrphanKey],
        Dataset::Payments => &[BadDate, OutOfRange, UnknownEnum, OrphanKey],
    }
}

/// The faults of a faulty re-send, its key's last version: those stage 1 rejects on a column
/// other than the event time (stage 1 does not check foreign keys, a card in free text is
/// masked, and an impossible event time would not be the latest).
fn latest_faults_of(d: Dataset) -> &'static [Fault] {
    use Fault::*;
    match d {
        Dataset::Customers => &[BadEmail, BadPhone, UnknownEnum, BadPattern],
        Dataset::Orders => &[BadEmail, BadPhone, OutOfRange, UnknownEnum],
        Dataset::OrderItems | Dataset::Inventory => &[OutOfRange],
        Dataset::Products => &[OutOfRange, UnknownEnum, BadPattern],
        Dataset::Payments => &[OutOfRange, UnknownEnum],
    }
}

/// The columns a key-only delete carries: the CDC op, the primary key, the event time and the
/// sequence (the columns a contract checks on a delete). Every other column may be null, in
/// the schema too.
pub(super) fn delete_columns(d: Dataset) -> &'static [&'static str] {
    match d {
        Dataset::Customers => &["Op", "customer_id", "updated_at"],
        Dataset::Orders => &["Op", "order_id", "updated_at"],
        Dataset::OrderItems => &["Op", "order_item_id", "updated_at"],
        Dataset::Products => &["Op", "product_id", "updated_at"],
        Dataset::Inventory => &["Op", "product_id", "warehouse_id", "updated_at"],
        Dataset::Payments => &["Op", "payment_id", "updated_at", "AR_H_CHANGE_SEQ"],
    }
}

pub(super) struct Planner {
    r: SplitMix,
    next_key: u64,
    spec: GenSpec,
    /// Fault rates of re-sends ([`RESEND_FAULT_BIAS`] times the requested rate, at most 1) and
    /// of inserts after the first ten rows (what keeps the overall rate the requested one;
    /// deletes and the first ten rows have the requested rate).
    resend_fault_rate: f64,
    insert_fault_rate: f64,
}

impl Planner {
    pub(super) fn new(spec: GenSpec) -> Planner {
        let f = spec.fault_rate;
        let resend_fault_rate = (RESEND_FAULT_BIAS * f).min(1.0);
        let insert_fault_rate = ((f - RESEND * resend_fault_rate - DELETE * f)
            / (1.0 - RESEND - DELETE))
            .clamp(0.0, 1.0);
        Planner {
            r: SplitMix::new(
                spec.seed ^ (spec.dataset as u64 + 1).wrapping_mul(0xD6E8_FEB8_6659_FD93),
            ),
            next_key: 1,
            spec,
            resend_fault_rate,
            insert_fault_rate,
        }
    }

    /// The next row: after ten new keys, [`RESEND`] of the rows re-send an earlier key and
    /// [`DELETE`] delete one, [`KEY_ONLY_DELETE`] of the deletes with only their key.
    pub(super) fn next(&mut self) -> Plan {
        let r = &mut self.r;
        let later = r.unit();
        let roll = r.unit();
        let warm = self.next_key > 10;
        let (key, op) = if warm && roll < RESEND {
            (1 + r.below(self.next_key - 1), "U")
        } else if warm && roll < RESEND + DELETE {
            (1 + r.below(self.next_key - 1), "D")
        } else {
            self.next_key += 1;
            (self.next_key - 1, "I")
        };
        let key_only = op == "D" && r.chance(KEY_ONLY_DELETE);
        let dataset = self.spec.dataset;
        let (rate, kinds) = match op {
            "U" => (self.resend_fault_rate, latest_faults_of(dataset)),
            "I" if warm => (self.insert_fault_rate, faults_of(dataset)),
            _ => (self.spec.fault_rate, faults_of(dataset)),
        };
        let fault = r.chance(rate).then(|| *r.pick(kinds));
        Plan {
            key,
            op,
            later,
            fault,
            key_only,
            latest: op == "U" && fault.is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::tests::spec;

    #[test]
    fn faults_keep_their_rate_and_favour_re_sends() {
        let n = 200_000u32;
        for f in [0.0, 0.02, 0.05, 0.3, 1.0] {
            let mut planner = Planner::new(GenSpec {
                fault_rate: f,
                ..spec(Dataset::Orders, u64::from(n))
            });
            let (mut faults, mut resends, mut faulty_resends) = (0u32, 0u32, 0u32);
            let (mut deletes, mut key_only) = (0u32, 0u32);
            for _ in 0..n {
                let p = planner.next();
                faults += u32::from(p.fault.is_some());
                match p.op {
                    "U" => {
                        resends += 1;
                        faulty_resends += u32::from(p.latest);
                        assert_eq!(p.latest, p.fault.is_some());
                        if let Some(fault) = p.fault {
                            assert!(
                                latest_faults_of(Dataset::Orders).contains(&fault),
                                "{fault:?}"
                            );
                        }
                    }
                    "D" => {
                        deletes += 1;
                        key_only += u32::from(p.key_only);
                        assert!(!p.latest);
                    }
                    _ => assert!(!p.latest && !p.key_only),
                }
            }
            let share = |a: u32, b: u32| f64::from(a) / f64::from(b.max(1));
            assert!(
                (share(faults, n) - f).abs() < 0.005,
                "{f}: {faults} faults in {n} rows"
            );
            let resend_rate = (RESEND_FAULT_BIAS * f).min(1.0);
            assert!(
                (share(faulty_resends, resends) - resend_rate).abs() < 0.02,
                "{f}: {faulty_resends} of {resends} re-sends faulty"
            );
            assert!(
                (share(key_only, deletes) - KEY_ONLY_DELETE).abs() < 0.05,
                "{key_only} of {deletes} deletes key-only"
            );
        }
    }
}
