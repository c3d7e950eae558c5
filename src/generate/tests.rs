//! Tests of whole generated datasets: the period and its checks, times, deletes, faults.

use std::collections::{BTreeMap, HashMap};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type};

use super::plan::{delete_columns, KEY_ONLY_DELETE};
use super::rows::schema;
use super::time::{MICRO, MINUTE, SECOND};
use super::*;
use crate::datetime::{days_from_civil, is_email, is_phone, parse_datetime};

pub(super) fn spec(dataset: Dataset, rows: u64) -> GenSpec {
    GenSpec {
        dataset,
        rows,
        seed: 7,
        fault_rate: 0.0,
        days: DEFAULT_DAYS,
        end_day: DEFAULT_END_DAY,
    }
}

fn generated(spec: GenSpec) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    batches(spec, |b| {
        out.push(b);
        Ok(())
    })
    .unwrap();
    out
}

/// A string column, a null as the empty string.
fn strings(batches: &[RecordBatch], name: &str) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let a = b.column_by_name(name).unwrap().as_string::<i32>();
            (0..a.len())
                .map(|i| a.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn ints(batches: &[RecordBatch], name: &str) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            let a = b.column_by_name(name).unwrap().as_primitive::<Int64Type>();
            a.values().to_vec()
        })
        .collect()
}

fn floats(batches: &[RecordBatch], name: &str) -> Vec<f64> {
    batches
        .iter()
        .flat_map(|b| {
            let a = b
                .column_by_name(name)
                .unwrap()
                .as_primitive::<Float64Type>();
            a.values().to_vec()
        })
        .collect()
}

/// Whether each value of a column is null.
fn nulls(batches: &[RecordBatch], name: &str) -> Vec<bool> {
    batches
        .iter()
        .flat_map(|b| {
            let a = b.column_by_name(name).unwrap();
            (0..a.len()).map(|i| a.is_null(i)).collect::<Vec<_>>()
        })
        .collect()
}

fn nanos(s: &str) -> i128 {
    parse_datetime(s).unwrap_or_else(|| panic!("{s}"))
}

#[test]
fn the_default_period_and_its_checks() {
    assert_eq!(parse_day(DEFAULT_END_DATE), Ok(DEFAULT_END_DAY));
    assert_eq!(LAST_END_DAY, days_from_civil(9999, 12, 31));
    assert!(parse_day("2025-02-30").is_err());
    assert!(parse_day("16/01/2025").is_err());
    assert!(check_period(DEFAULT_DAYS, DEFAULT_END_DAY).is_ok());
    assert!(check_period(1, DEFAULT_END_DAY).is_ok());
    assert!(check_period(0, DEFAULT_END_DAY).is_err());
    assert!(check_period(MAX_DAYS + 1, DEFAULT_END_DAY).is_err());
    assert!(check_period(1, LAST_END_DAY).is_ok());
    assert!(check_period(1, LAST_END_DAY + 1).is_err());
    // Customers sign up in the two years before the period: it starts on 1972-01-01 or later.
    let first_1972 = days_from_civil(1972, 1, 1);
    assert!(check_period(10, first_1972 + 9).is_ok());
    assert!(check_period(10, first_1972 + 8).is_err());
    let spec = GenSpec {
        days: 0,
        ..spec(Dataset::Orders, 10)
    };
    let err = batches(spec, |_| Ok(())).unwrap_err();
    assert!(matches!(err, crate::Error::Config(_)), "{err}");
}

#[test]
fn orders_spread_over_a_shops_year() {
    let batches = generated(spec(Dataset::Orders, 20_000));
    let op = strings(&batches, "Op");
    let ids = ints(&batches, "order_id");
    let created = strings(&batches, "created_at");
    let updated = strings(&batches, "updated_at");
    let first = DEFAULT_END_DAY - i64::from(DEFAULT_DAYS) + 1;
    let mut per_day: BTreeMap<i64, u64> = BTreeMap::new();
    let (mut night, mut orders) = (0u32, 0u32);
    let mut first_version: HashMap<i64, i128> = HashMap::new();
    for (r, op) in op.iter().enumerate() {
        let (created, updated) = (&created[r], &updated[r]);
        let u = nanos(updated);
        // Only a key-only delete lacks created_at.
        if created.is_empty() {
            assert_eq!(op, "D", "row {r}");
            assert!(u > first_version[&ids[r]], "row {r}: {updated} too early");
            continue;
        }
        let c = nanos(created);
        assert!(
            u >= c,
            "row {r}: updated_at {updated} < created_at {created}"
        );
        if op != "I" {
            // Re-sends and deletes come after the key's first version.
            assert!(u > first_version[&ids[r]], "row {r}: {updated} too early");
            continue;
        }
        assert_eq!(u, c, "an order's first version is its creation");
        first_version.insert(ids[r], u);
        orders += 1;
        let day = parse_date(&created[..10]).unwrap();
        assert!((first..=DEFAULT_END_DAY).contains(&day), "{created}");
        *per_day.entry(day).or_default() += 1;
        let hour: u32 = created[11..13].parse().unwrap();
        night += u32::from((1..=5).contains(&hour));
    }
    assert!(
        per_day.len() >= 300,
        "orders on only {} days",
        per_day.len()
    );
    // Nights (01:00 to 05:59 UTC) are quiet.
    assert!(
        f64::from(night) < 0.10 * f64::from(orders),
        "{night} of {orders}"
    );
    // Weekends are busier than weekdays, per day (2025-01-11 was a Saturday).
    let saturday = days_from_civil(2025, 1, 11);
    let (mut weekend, mut weekday) = ((0, 0), (0, 0));
    for day in first..=DEFAULT_END_DAY {
        let n = per_day.get(&day).copied().unwrap_or(0);
        let slot = if (day - saturday).rem_euclid(7) < 2 {
            &mut weekend
        } else {
            &mut weekday
        };
        slot.0 += n;
        slot.1 += 1;
    }
    let avg = |(n, days): (u64, u64)| n as f64 / days as f64;
    assert!(avg(weekend) > avg(weekday), "{weekend:?} {weekday:?}");
    // Growth: days 200 to 289 (before the peak season) are busier than the first 90.
    let span =
        |from: i64, to: i64| -> u64 { per_day.range(first + from..first + to).map(|e| e.1).sum() };
    let (early, late) = (span(0, 90), span(200, 290));
    assert!(late as f64 > 1.1 * early as f64, "{early} then {late}");
    // The busiest day is Black Friday.
    let busiest = per_day.iter().max_by_key(|e| *e.1).unwrap();
    assert_eq!(*busiest.0, days_from_civil(2024, 11, 29), "{per_day:?}");
    // Order ids grow with created_at (but for ids beyond the expected count).
    let mut by_id: Vec<(i64, i128)> = first_version.into_iter().collect();
    by_id.sort_unstable();
    let in_order = by_id.windows(2).filter(|w| w[0].1 <= w[1].1).count();
    assert!(in_order as f64 > 0.99 * (by_id.len() - 1) as f64);
}

#[test]
fn lines_payments_and_customers_fit_their_orders_in_time() {
    let world = World::for_rows(Dataset::Orders, 4_000);
    let of = |d: Dataset| generated(spec(d, world.rows_of(d)));
    let orders = of(Dataset::Orders);
    // Key-only deletes have no created_at.
    let created: HashMap<i64, i128> = ints(&orders, "order_id")
        .into_iter()
        .zip(strings(&orders, "created_at"))
        .filter(|(_, c)| !c.is_empty())
        .map(|(k, c)| (k, nanos(&c)))
        .collect();
    let placed: Vec<i128> = created.values().copied().collect();
    let period_start = *placed.iter().min().unwrap();
    let period_end = *placed.iter().max().unwrap();

    let payments = of(Dataset::Payments);
    let pay_created = strings(&payments, "created_at");
    let pay_updated = strings(&payments, "updated_at");
    // The period's last microsecond: a payment of an order just before it is clamped to it.
    let last = i128::from(DEFAULT_END_DAY + 1) * NANOS_PER_DAY - MICRO;
    let mut matched = 0;
    for (r, order) in ints(&payments, "order_id").into_iter().enumerate() {
        if pay_created[r].is_empty() {
            continue; // a key-only delete
        }
        let (c, u) = (nanos(&pay_created[r]), nanos(&pay_updated[r]));
        assert!(u >= c, "payment row {r}");
        if let Some(&o) = created.get(&order) {
            matched += 1;
            let soon = (o + 30 * SECOND).min(last);
            assert!((soon..=o + 10 * MINUTE).contains(&c), "payment row {r}");
        }
    }
    assert!(matched > payments.iter().map(|b| b.num_rows()).sum::<usize>() * 4 / 5);

    let items = of(Dataset::OrderItems);
    let item_updated = strings(&items, "updated_at");
    let item_key_only = nulls(&items, "order_id");
    for (r, order) in ints(&items, "order_id").into_iter().enumerate() {
        if item_key_only[r] {
            continue; // a key-only delete
        }
        if let Some(&o) = created.get(&order) {
            assert!(nanos(&item_updated[r]) >= o, "order_items row {r}");
        }
    }

    // Customers signed up before the period, so before any of their orders.
    let customers = of(Dataset::Customers);
    let start = i128::from(DEFAULT_END_DAY - i64::from(DEFAULT_DAYS) + 1) * NANOS_PER_DAY;
    assert!(period_start >= start && period_end < start + 365 * NANOS_PER_DAY);
    let signed_up = strings(&customers, "created_at");
    let cust_updated = strings(&customers, "updated_at");
    for (created, updated) in signed_up.iter().zip(&cust_updated) {
        assert!(nanos(updated) >= start, "{updated}");
        if created.is_empty() {
            continue; // a key-only delete
        }
        let c = nanos(created);
        assert!(
            (start - 730 * NANOS_PER_DAY..start).contains(&c),
            "{created}"
        );
    }
}

#[test]
fn another_period_moves_every_time_into_it() {
    let end = days_from_civil(2024, 6, 30);
    let a = GenSpec {
        days: 30,
        end_day: end,
        ..spec(Dataset::Payments, 3_000)
    };
    let batches = generated(a);
    let lo = i128::from(end - 29) * NANOS_PER_DAY;
    let hi = i128::from(end + 1) * NANOS_PER_DAY;
    for col in ["created_at", "updated_at"] {
        // Key-only deletes have no created_at.
        for s in strings(&batches, col).into_iter().filter(|s| !s.is_empty()) {
            assert!((lo..hi).contains(&nanos(&s)), "{col} {s}");
        }
    }
    // Deterministic: the same spec gives the same rows.
    let again = generated(a);
    for col in ["updated_at", "AR_H_CHANGE_SEQ"] {
        assert_eq!(strings(&batches, col), strings(&again, col), "{col}");
    }
}

#[test]
fn deletes_with_only_their_key_and_invalid_last_versions() {
    let rows = 20_000;
    let batches = generated(GenSpec {
        fault_rate: 0.05,
        ..spec(Dataset::Orders, rows)
    });
    let kept = delete_columns(Dataset::Orders);
    let optional = ["phone", "card_number", "notes"];
    let columns: Vec<(String, Vec<bool>)> = schema(Dataset::Orders)
        .fields()
        .iter()
        .map(|f| (f.name().clone(), nulls(&batches, f.name())))
        .collect();
    let op = strings(&batches, "Op");
    let (mut deletes, mut key_only) = (0u32, 0u32);
    for (r, op) in op.iter().enumerate() {
        let mut others = columns
            .iter()
            .filter(|(name, _)| !kept.contains(&name.as_str()));
        for (name, null) in columns.iter().filter(|(n, _)| kept.contains(&n.as_str())) {
            assert!(!null[r], "row {r}: {name} is null");
        }
        deletes += u32::from(op == "D");
        if others.all(|(_, null)| null[r]) {
            assert_eq!(op, "D", "row {r}: only a delete may carry only its key");
            key_only += 1;
        } else {
            for (name, null) in columns
                .iter()
                .filter(|(n, _)| !kept.contains(&n.as_str()) && !optional.contains(&n.as_str()))
            {
                assert!(!null[r], "row {r}: {name} is null");
            }
        }
    }
    assert!(deletes > 100, "{deletes} deletes");
    assert!(
        (f64::from(key_only) / f64::from(deletes) - KEY_ONLY_DELETE).abs() < 0.15,
        "{key_only} of {deletes} deletes key-only"
    );

    // A re-send that stage 1 rejects is its key's last version (or is followed only by
    // other rejected re-sends); no re-send has an impossible date or an orphan customer.
    let ids = ints(&batches, "order_id");
    let updated = strings(&batches, "updated_at");
    let status = strings(&batches, "status");
    let amount = floats(&batches, "total_amount");
    let email = strings(&batches, "email");
    let phone = strings(&batches, "phone");
    let customer = ints(&batches, "customer_id");
    let customers = World::for_rows(Dataset::Orders, rows).customers;
    let rejected: Vec<bool> = (0..op.len())
        .map(|r| {
            op[r] == "U"
                && (status[r] == "on_hold"
                    || !(0.0..=1_000_000.0).contains(&amount[r])
                    || !is_email(&email[r])
                    || !(phone[r].is_empty() || is_phone(&phone[r])))
        })
        .collect();
    let mut versions: HashMap<i64, Vec<(i128, usize)>> = HashMap::new();
    for (r, t) in updated.iter().enumerate() {
        if let Some(t) = parse_datetime(t) {
            versions.entry(ids[r]).or_default().push((t, r));
        }
    }
    for (r, _) in op.iter().enumerate().filter(|(_, op)| op.as_str() == "U") {
        let t = nanos(&updated[r]);
        assert!(
            customer[r] >= 1 && customer[r] as u64 <= customers,
            "row {r}"
        );
        if rejected[r] {
            for &(u, s) in &versions[&ids[r]] {
                assert!(
                    s == r || u < t || rejected[s],
                    "row {r}: a rejected re-send is followed by row {s}"
                );
            }
        }
    }
    let n = rejected.iter().filter(|&&x| x).count();
    assert!(n > 200, "{n} rejected last versions");
}
