//! End-to-end tests: the `edp` binary on generated data, checked by reading the outputs back.

mod cdc;
#[path = "csv/mod.rs"]
mod csv_inputs;
mod infer;
#[path = "props/mod.rs"]
mod props;
mod replay;
mod stage2;
mod util;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use tempfile::TempDir;
use util::*;

fn run_stage1(dir: &Path, dataset: &str, input: &Path) -> (std::path::PathBuf, String) {
    let out = dir.join(format!("{dataset}-curated"));
    let err = ok(edp(&[
        "raw-to-curated",
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--contract",
        contract(dataset).to_str().unwrap(),
        "--batch-size",
        "1000",
    ]));
    (out, err)
}

#[test]
fn orders_end_to_end_dedup_quarantine_and_masking() {
    use arrow::array::Array;

    /// The rules of a contract date-time with `formatMinimum: 2000-01-01`.
    fn date_time(v: Option<&str>, col: &'static str, expect: &mut Vec<(&str, &str)>) {
        const Y2000: i128 = 946_684_800 * 1_000_000_000;
        match v.map(edp::datetime::parse_datetime) {
            None => expect.push((col, "required")),
            Some(None) => expect.push((col, "format")),
            Some(Some(t)) if t < Y2000 => expect.push((col, "formatMinimum")),
            Some(Some(_)) => {}
        }
    }

    let dir = TempDir::new().unwrap();
    let raw_path = generate(dir.path(), "orders", 6000, 7, 0.05);
    let (out, stderr) = run_stage1(dir.path(), "orders", &raw_path);
    assert!(stderr.contains("conservation: rows_in 6000 ="), "{stderr}");

    let raw = read_parquet(&raw_path);
    let curated = read_parquet(&out.join("part-00000.parquet"));
    let quarantine = read_parquet(&out.join("_quarantine/part-00000.parquet"));
    let rep = report(&out);
    assert_eq!(rep["rows_in"], 6000);
    assert_eq!(
        rep["rows_curated"].as_u64().unwrap(),
        curated.num_rows() as u64
    );
    assert_eq!(
        rep["rows_quarantined"].as_u64().unwrap(),
        quarantine.num_rows() as u64
    );
    assert!(rep["conservation"]["holds"].as_bool().unwrap());
    assert!(
        rep["duplicates_superseded"].as_u64().unwrap() > 300,
        "generator re-sends ~10% of keys"
    );

    // Validity, computed here from the contract's rules: a delete is checked only on its key
    // (order_id, always >= 1 here), event time and op; every other row on every rule.
    let q_rows: Vec<u64> = uints(&quarantine, "_edp_row");
    let q_errors = quarantine_errors(&quarantine);
    let q_by_row: HashMap<u64, &Vec<(String, String)>> =
        q_rows.iter().copied().zip(q_errors.iter()).collect();
    let raw_ops = strings(&raw, "Op");
    let customer = ints(&raw, "customer_id");
    let status = strings(&raw, "status");
    let amount = floats(&raw, "total_amount");
    let currency = strings(&raw, "currency");
    let email = strings(&raw, "email");
    let phone = strings(&raw, "phone");
    let notes = strings(&raw, "notes");
    let country = strings(&raw, "shipping_country");
    let created = strings(&raw, "created_at");
    let updated = strings(&raw, "updated_at");
    let time = |r: usize| {
        updated[r]
            .as_deref()
            .and_then(edp::datetime::parse_datetime)
    };
    let is_delete = |r: usize| {
        raw_ops[r]
            .as_deref()
            .is_some_and(|op| op.eq_ignore_ascii_case("D"))
    };
    let upper = |s: &Option<String>, n: usize| {
        s.as_deref()
            .is_some_and(|s| s.len() == n && s.bytes().all(|b| b.is_ascii_uppercase()))
    };
    let mut valid = vec![false; raw.num_rows()];
    let mut seen_faults = 0;
    for r in 0..raw.num_rows() {
        let mut expect: Vec<(&str, &str)> = Vec::new();
        date_time(updated[r].as_deref(), "updated_at", &mut expect);
        let mut other: Vec<(&str, &str)> = Vec::new();
        match status[r].as_deref() {
            None => other.push(("status", "required")),
            Some(s) if !ORDER_STATUSES.contains(&s) => other.push(("status", "enum")),
            _ => {}
        }
        if raw.column_by_name("customer_id").unwrap().is_null(r) {
            other.push(("customer_id", "required"));
        } else if customer[r] < 1 {
            other.push(("customer_id", "minimum"));
        }
        if raw.column_by_name("total_amount").unwrap().is_null(r) {
            other.push(("total_amount", "required"));
        } else if amount[r] < 0.0 {
            other.push(("total_amount", "minimum"));
        } else if amount[r] > 1_000_000.0 {
            other.push(("total_amount", "maximum"));
        }
        match &currency[r] {
            None => other.push(("currency", "required")),
            c if !upper(c, 3) => other.push(("currency", "pattern")),
            _ => {}
        }
        match email[r].as_deref() {
            None => other.push(("email", "required")),
            Some(e) if !edp::datetime::is_email(e) => other.push(("email", "format")),
            _ => {}
        }
        if phone[r]
            .as_deref()
            .is_some_and(|p| !edp::datetime::is_phone(p))
        {
            other.push(("phone", "format"));
        }
        if notes[r]
            .as_deref()
            .is_some_and(|n| n.chars().count() > 2000)
        {
            other.push(("notes", "maxLength"));
        }
        if country[r].is_some() && !upper(&country[r], 2) {
            other.push(("shipping_country", "pattern"));
        }
        date_time(created[r].as_deref(), "created_at", &mut other);
        if !is_delete(r) {
            expect.extend(other);
        }
        valid[r] = expect.is_empty();
        for (col, rule) in expect {
            seen_faults += 1;
            let errs = q_by_row
                .get(&(r as u64))
                .unwrap_or_else(|| panic!("raw row {r} ({col} {rule}) not quarantined"));
            assert!(
                errs.contains(&(col.to_string(), rule.to_string())),
                "row {r}: {errs:?} lacks {col} {rule}"
            );
        }
    }
    assert!(seen_faults > 50, "only {seen_faults} faults injected");
    // Quarantine holds exactly the invalid rows: a delete whose other columns are null (or
    // faulty) is not among them.
    let quarantined: HashSet<u64> = q_rows.iter().copied().collect();
    assert_eq!(quarantined.len(), q_rows.len(), "a row quarantined twice");
    for (r, &v) in valid.iter().enumerate() {
        assert_eq!(
            quarantined.contains(&(r as u64)),
            !v,
            "raw row {r} ({:?}): valid {v}",
            raw_ops[r]
        );
    }
    let key_only_deletes = (0..raw.num_rows())
        .filter(|&r| is_delete(r) && status[r].is_none() && email[r].is_none())
        .count();
    assert!(
        key_only_deletes > 10,
        "{key_only_deletes} deletes carry only their key"
    );
    let sources = strings(&quarantine, "_edp_source");
    assert!(sources.iter().all(|s| s
        .as_deref()
        .unwrap()
        .ends_with("20250116-000000000.parquet")));

    // Dedup: per key the most recent valid version wins, the greatest (event time, row) among
    // the key's valid rows; a key without a valid row has no curated row. The latest version
    // of a key (among all its rows, an unparseable event time losing to any other) may be
    // invalid: then an earlier valid version is curated.
    let keys = ints(&raw, "order_id");
    let mut latest: HashMap<i64, (Option<i128>, usize)> = HashMap::new();
    let mut latest_valid: HashMap<i64, (i128, usize)> = HashMap::new();
    for (r, &k) in keys.iter().enumerate() {
        let rank = (time(r), r);
        let e = latest.entry(k).or_insert(rank);
        if rank >= *e {
            *e = rank;
        }
        if valid[r] {
            let rank = (time(r).unwrap(), r);
            let e = latest_valid.entry(k).or_insert(rank);
            if rank >= *e {
                *e = rank;
            }
        }
    }
    assert!(
        latest_valid.len() < latest.len(),
        "some keys have no valid version"
    );
    let earlier: HashSet<i64> = latest_valid
        .iter()
        .filter(|(k, (_, r))| latest[*k].1 != *r)
        .map(|(k, _)| *k)
        .collect();
    assert!(
        earlier.len() > 10,
        "only {} keys' latest version is invalid after a valid one",
        earlier.len()
    );
    assert_eq!(
        rep["earlier_valid_versions"].as_u64().unwrap(),
        earlier.len() as u64
    );
    let valid_rows = valid.iter().filter(|&&v| v).count();
    assert_eq!(
        rep["duplicates_superseded"].as_u64().unwrap(),
        (valid_rows - latest_valid.len()) as u64
    );
    let cur_keys = ints(&curated, "order_id");
    assert_eq!(cur_keys.len(), latest_valid.len());
    assert_eq!(
        cur_keys.iter().copied().collect::<HashSet<_>>().len(),
        cur_keys.len(),
        "duplicate keys in curated"
    );
    // Date-times are typed in curated output, as read in quarantine.
    let cur_updated = micros(&curated, "updated_at");
    let cur_created = micros(&curated, "created_at");
    assert_eq!(
        quarantine
            .schema()
            .field_with_name("updated_at")
            .unwrap()
            .data_type(),
        &arrow::datatypes::DataType::Utf8
    );
    let cur_ops = strings(&curated, "Op");
    let cur_cards = strings(&curated, "card_number");
    let cur_email = strings(&curated, "email");
    let raw_cards = strings(&raw, "card_number");
    // The columns a key-only delete leaves null.
    let others = [
        "customer_id",
        "status",
        "total_amount",
        "currency",
        "email",
        "phone",
        "card_number",
        "notes",
        "shipping_country",
        "created_at",
    ];
    let (mut tombstones, mut key_only_tombstones, mut earlier_seen) = (0, 0, 0);
    for (i, k) in cur_keys.iter().enumerate() {
        let r = latest_valid[k].1;
        assert_eq!(
            cur_updated[i],
            parse_micros(updated[r].as_deref().unwrap()),
            "order {k}: not the latest valid version"
        );
        assert_eq!(
            cur_created[i],
            created[r].as_deref().and_then(parse_micros),
            "order {k}"
        );
        assert_eq!(cur_ops[i], raw_ops[r]);
        earlier_seen += usize::from(earlier.contains(k));
        if cur_ops[i].as_deref() == Some("D") {
            tombstones += 1;
            let raw_nulls = others
                .iter()
                .filter(|&&c| raw.column_by_name(c).unwrap().is_null(r))
                .count();
            if raw_nulls == others.len() {
                key_only_tombstones += 1;
                for c in others {
                    assert!(
                        curated.column_by_name(c).unwrap().is_null(i),
                        "order {k}: key-only tombstone with {c}"
                    );
                }
            }
        }
        // PAN column masked to its last four digits, separators kept.
        assert_eq!(
            cur_cards[i].clone(),
            raw_cards[r].as_deref().map(edp::protect::mask_pan)
        );
        if let Some(c) = &cur_cards[i] {
            assert_eq!(c.chars().filter(char::is_ascii_digit).count(), 4, "{c}");
        }
        // PII hashed: HMAC-SHA-256 hex of the trimmed, lowercased e-mail; a null stays null.
        assert_eq!(
            cur_email[i],
            email[r]
                .as_deref()
                .map(|e| hmac_hex(DEV_PII_KEY, &e.trim().to_lowercase()))
        );
    }
    assert_eq!(earlier_seen, earlier.len());
    assert!(tombstones > 10);
    assert!(
        key_only_tombstones > 0,
        "no curated tombstone comes from a key-only delete"
    );
    assert_eq!(rep["tombstones"].as_u64().unwrap(), tombstones as u64);

    // The audit names each protected column with its transform and counts, and the key by id.
    let audit = &rep["audit"];
    let audited = |name: &str| {
        audit["columns"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["column"] == name)
            .unwrap_or_else(|| panic!("no audit of {name}: {audit}"))
            .clone()
    };
    assert_eq!(audited("email")["transform"], "hash");
    assert_eq!(
        audited("email")["curated"].as_u64().unwrap(),
        cur_email.iter().flatten().count() as u64
    );
    assert_eq!(audited("card_number")["transform"], "pan_mask");
    assert_eq!(
        audited("card_number")["curated"].as_u64().unwrap(),
        cur_cards.iter().flatten().count() as u64
    );
    assert_eq!(audited("notes")["transform"], "card_scan");
    assert_eq!(audit["pii_key"]["development"], true);
    assert_eq!(
        audit["pii_key"]["id"].as_str().unwrap(),
        &hmac_hex(DEV_PII_KEY, "edp-pii-key-id")[..16]
    );

    // Card numbers in free text are masked everywhere, including quarantine.
    let raw_notes_with_pans = strings(&raw, "notes")
        .iter()
        .flatten()
        .filter(|n| !find_pans(n).is_empty())
        .count();
    assert!(raw_notes_with_pans > 5, "generator put cards in notes");
    assert_no_pans(&curated, "curated");
    assert_no_pans(&quarantine, "quarantine");
    let masked = &rep["masked_values"]["curated"];
    assert!(
        masked["notes"].as_u64().unwrap() > 0 && masked["card_number"].as_u64().unwrap() > 0,
        "{masked}"
    );
    let report_text = std::fs::read_to_string(out.join("_edp_report.json")).unwrap();
    assert!(find_pans(&report_text).is_empty());
}

#[test]
fn every_dataset_runs_and_balances() {
    let dir = TempDir::new().unwrap();
    for dataset in [
        "customers",
        "order_items",
        "products",
        "inventory",
        "payments",
    ] {
        let raw_path = generate(dir.path(), dataset, 3000, 11, 0.05);
        let (out, _) = run_stage1(dir.path(), dataset, &raw_path);
        let rep = report(&out);
        let curated = read_parquet(&out.join("part-00000.parquet"));
        let quarantine = read_parquet(&out.join("_quarantine/part-00000.parquet"));
        let sum = rep["rows_curated"].as_u64().unwrap()
            + rep["rows_quarantined"].as_u64().unwrap()
            + rep["duplicates_superseded"].as_u64().unwrap();
        assert_eq!(sum, 3000, "{dataset}");
        assert_eq!(
            rep["rows_curated"].as_u64().unwrap(),
            curated.num_rows() as u64
        );
        assert!(quarantine.num_rows() > 10, "{dataset}: faults quarantined");
        // Some keys' latest version is a faulty re-send: an earlier version is curated.
        assert!(
            rep["earlier_valid_versions"].as_u64().unwrap() > 0,
            "{dataset}: {rep}"
        );
        assert_no_pans(&curated, dataset);
        assert_no_pans(&quarantine, dataset);
        // A delete is checked only on its key, event time and sequence: a tombstone's other
        // columns may be null (a key-only delete) or anything.
        let ops = strings(&curated, "Op");
        let live = |i: usize| ops[i].as_deref() != Some("D");
        if dataset == "inventory" {
            // Composite key: (product_id, warehouse_id) unique in curated.
            let p = ints(&curated, "product_id");
            let w = ints(&curated, "warehouse_id");
            let pairs: HashSet<(i64, i64)> = p.iter().copied().zip(w.iter().copied()).collect();
            assert_eq!(pairs.len(), curated.num_rows());
            let q = ints(&curated, "quantity_on_hand");
            assert!((0..q.len()).filter(|&i| live(i)).all(|i| q[i] >= 0));
        }
        if dataset == "payments" {
            let ids = strings(&curated, "payment_id");
            assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());
            assert!(strings(&curated, "card_number").iter().flatten().all(|c| c
                .chars()
                .filter(char::is_ascii_digit)
                .count()
                == 4));
        }
        if dataset == "customers" {
            assert!(strings(&curated, "street")
                .iter()
                .enumerate()
                .all(|(i, s)| s.as_deref() == Some("REDACTED") || (s.is_none() && !live(i))));
        }
    }
}

/// The shipped payments rules over generated data with rows broken on purpose: a card payment
/// without its brand, a payment created after its update. Exactly those rows are quarantined
/// under the rule's name, and the report counts them.
/// Foreign keys against the current state of a curated `customers` with fewer customers than
/// the orders reference: orphans are quarantined under `foreign_key` (or kept and counted), every
/// published row's customer exists, and a reference without curated data fails unless skippable.
#[test]
fn foreign_keys_quarantine_or_keep_orphans_of_the_referenced_current_state() {
    let dir = TempDir::new().unwrap();
    let customers_raw = generate(dir.path(), "customers", 300, 3, 0.0);
    let (customers, _) = run_stage1(dir.path(), "customers", &customers_raw);
    let cur = read_parquet(&customers.join("part-00000.parquet"));
    let live: HashSet<i64> = ints(&cur, "customer_id")
        .into_iter()
        .zip(strings(&cur, "Op"))
        .filter(|(_, op)| op.as_deref() != Some("D"))
        .map(|(id, _)| id)
        .collect();
    let orders_raw = generate(dir.path(), "orders", 3000, 5, 0.0);
    let reference = format!("customers={}", customers.display());
    let run = |contract_path: &Path, out: &Path, extra: &[&str]| {
        let mut a = stage1(&orders_raw, out, contract_path);
        a.extend(extra.iter().map(|s| s.to_string()));
        edp(&args(&a))
    };
    // Which rows of an output are live (not tombstones) orphans.
    let orphans = |b: &arrow::array::RecordBatch| -> Vec<bool> {
        ints(b, "customer_id")
            .into_iter()
            .zip(strings(b, "Op"))
            .map(|(c, op)| op.as_deref() != Some("D") && !live.contains(&c))
            .collect()
    };

    // The shipped contract keeps orphans (parents arrive late in CDC); a strict one, written
    // here, quarantines them. Both read customers.json beside them.
    let shipped = std::fs::read_to_string(contract("orders")).unwrap();
    let keep_ref =
        r#""x-references": {"to": "customers.customer_id", "orphans": "keep", "missing": "skip"}"#;
    assert!(shipped.contains(keep_ref));
    let strict = dir.path().join("strict");
    std::fs::create_dir(&strict).unwrap();
    std::fs::write(
        strict.join("orders.json"),
        shipped.replace(keep_ref, r#""x-references": "customers.customer_id""#),
    )
    .unwrap();
    std::fs::copy(contract("customers"), strict.join("customers.json")).unwrap();
    let strict = strict.join("orders.json");

    let out = dir.path().join("quarantined");
    ok(run(&strict, &out, &["--reference", &reference]));
    let q = read_parquet(&out.join("_quarantine/part-00000.parquet"));
    let errors = quarantine_errors(&q);
    let q_orphans = orphans(&q);
    let by_fk: Vec<bool> = errors
        .iter()
        .map(|e| e.contains(&("customer_id".to_string(), "foreign_key".to_string())))
        .collect();
    assert_eq!(
        by_fk, q_orphans,
        "quarantined under foreign_key exactly the orphans"
    );
    let n_orphans = q_orphans.iter().filter(|&&o| o).count();
    assert!(n_orphans > 10, "{n_orphans} orphans");
    let curated = read_parquet(&out.join("part-00000.parquet"));
    assert!(curated.num_rows() > 100);
    assert!(orphans(&curated).iter().all(|&o| !o));
    let rep = report(&out);
    let check = &rep["references"][0];
    assert_eq!(check["status"], "checked");
    assert_eq!(check["references"], "customers.customer_id");
    assert_eq!(check["keys"], live.len() as u64);
    assert_eq!(check["orphans_quarantined"], n_orphans as u64);
    assert_eq!(rep["orphans_kept"], 0);
    assert_eq!(rep["conservation"]["holds"], true);

    // `orphans: keep` publishes them and counts them.
    let kept = dir.path().join("kept");
    ok(run(
        &contract("orders"),
        &kept,
        &["--reference", &reference],
    ));
    let curated = read_parquet(&kept.join("part-00000.parquet"));
    let n_kept = orphans(&curated).iter().filter(|&&o| o).count();
    assert!(n_kept > 10, "{n_kept} kept");
    let rep = report(&kept);
    assert_eq!(rep["orphans_kept"], n_kept as u64);
    assert_eq!(rep["references"][0]["orphans_kept"], n_kept as u64);
    assert!(!rep["failures"].to_string().contains("foreign_key"));

    // A location without curated objects fails the run, unless the check may be skipped
    // (the flag, or the shipped contract's `missing: skip`).
    let empty = dir.path().join("no-customers");
    std::fs::create_dir(&empty).unwrap();
    let missing = format!("customers={}", empty.display());
    let o = run(&strict, &dir.path().join("m1"), &["--reference", &missing]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("no curated objects of `customers`"));
    assert!(!dir.path().join("m1/part-00000.parquet").exists());
    for (i, (c, flags)) in [
        (&strict, vec!["--references-required", "false"]),
        (&contract("orders"), vec![]),
    ]
    .into_iter()
    .enumerate()
    {
        let skipped = dir.path().join(format!("skipped{i}"));
        let mut extra = vec!["--reference", missing.as_str()];
        extra.extend(flags);
        ok(run(c, &skipped, &extra));
        assert_eq!(report(&skipped)["references"][0]["status"], "skipped");
    }
    // Without a location the check is skipped and the report says how to give one.
    let none = dir.path().join("m3");
    ok(run(&contract("orders"), &none, &[]));
    let reason = report(&none)["references"][0]["reason"].to_string();
    assert!(reason.contains("--reference customers=URL"), "{reason}");
}

#[test]
fn row_rules_quarantine_exactly_the_rows_that_break_them() {
    use arrow::array::{Array, RecordBatch, StringArray};
    use std::sync::Arc;

    let dir = TempDir::new().unwrap();
    let raw_path = generate(dir.path(), "payments", 3000, 5, 0.0);
    let raw = read_parquet(&raw_path);
    let ids = strings(&raw, "payment_id");
    let ops = strings(&raw, "Op");
    let method = strings(&raw, "method");
    let mut brand = strings(&raw, "card_brand");
    let mut created = strings(&raw, "created_at");
    let (mut no_brand, mut late) = (HashSet::new(), HashSet::new());
    for i in 0..raw.num_rows() {
        if ops[i].as_deref() == Some("D") {
            continue;
        }
        if i % 37 == 0 && method[i].as_deref() == Some("card") {
            brand[i] = None;
            no_brand.insert(i);
        } else if i % 41 == 0 {
            created[i] = Some("2099-01-01T00:00:00Z".into());
            late.insert(i);
        }
    }
    assert!(no_brand.len() > 5 && late.len() > 5);
    let column = |v: Vec<Option<String>>| Arc::new(StringArray::from(v)) as Arc<dyn Array>;
    let schema = raw.schema();
    let mut columns = raw.columns().to_vec();
    columns[schema.index_of("card_brand").unwrap()] = column(brand);
    columns[schema.index_of("created_at").unwrap()] = column(created);
    let broken = RecordBatch::try_new(schema.clone(), columns).unwrap();
    write_parquet(&raw_path, &broken, None);

    let (out, _) = run_stage1(dir.path(), "payments", &raw_path);
    let quarantine = read_parquet(&out.join("_quarantine/part-00000.parquet"));
    let q_ids = strings(&quarantine, "payment_id");
    let errors = quarantine_errors(&quarantine);
    let quarantined_by = |rule: &str| -> HashSet<String> {
        (0..quarantine.num_rows())
            .filter(|&r| errors[r].iter().any(|(_, e)| e == rule))
            .map(|r| q_ids[r].clone().unwrap())
            .collect()
    };
    let expected = |rows: &HashSet<usize>| -> HashSet<String> {
        rows.iter().map(|&i| ids[i].clone().unwrap()).collect()
    };
    assert_eq!(quarantined_by("card_number_iff_card"), expected(&no_brand));
    assert_eq!(quarantined_by("updated_after_created"), expected(&late));
    // Nothing else was wrong with the data.
    assert_eq!(quarantine.num_rows(), no_brand.len() + late.len());
    assert!(errors
        .iter()
        .flatten()
        .filter(|(_, rule)| rule == "card_number_iff_card")
        .all(|(c, _)| c == "method,card_number,card_brand"));
    let rep = report(&out);
    let counted = |rule: &str| {
        rep["failures"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["rule"] == rule)
            .map(|f| f["rows"].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(counted("card_number_iff_card"), no_brand.len() as u64);
    assert_eq!(counted("updated_after_created"), late.len() as u64);
}

#[test]
fn hashed_emails_join_across_datasets_whatever_their_case() {
    use arrow::array::{Array, RecordBatch, StringArray};
    use std::sync::Arc;

    let dir = TempDir::new().unwrap();
    let customers_raw = generate(dir.path(), "customers", 500, 3, 0.0);
    let orders_raw = generate(dir.path(), "orders", 2000, 3, 0.0);
    // Every other order carries its customer's address in upper case (surrounding spaces would
    // fail `format: email`; the trim is tested in protect::pii).
    let raw = read_parquet(&orders_raw);
    let emails: Vec<Option<String>> = strings(&raw, "email")
        .into_iter()
        .enumerate()
        .map(|(i, e)| e.map(|e| if i % 2 == 0 { e.to_uppercase() } else { e }))
        .collect();
    let mut columns = raw.columns().to_vec();
    columns[raw.schema().index_of("email").unwrap()] =
        Arc::new(StringArray::from(emails)) as Arc<dyn Array>;
    write_parquet(
        &orders_raw,
        &RecordBatch::try_new(raw.schema(), columns).unwrap(),
        None,
    );

    let (customers_out, _) = run_stage1(dir.path(), "customers", &customers_raw);
    let (orders_out, _) = run_stage1(dir.path(), "orders", &orders_raw);
    let customers = read_parquet(&customers_out.join("part-00000.parquet"));
    let orders = read_parquet(&orders_out.join("part-00000.parquet"));
    let token_of: HashMap<i64, String> = ints(&customers, "customer_id")
        .into_iter()
        .zip(strings(&customers, "email"))
        .filter_map(|(id, e)| Some((id, e?)))
        .collect();
    let order_ids = ints(&orders, "order_id");
    let order_emails = strings(&orders, "email");
    // Every version of an order carries its customer's address (deletes carry none).
    let raw_emails: HashMap<i64, String> = ints(&raw, "order_id")
        .into_iter()
        .zip(strings(&raw, "email"))
        .filter_map(|(id, e)| Some((id, e?)))
        .collect();
    let mut joined = 0;
    for (i, customer) in ints(&orders, "customer_id").into_iter().enumerate() {
        let Some(token) = &order_emails[i] else {
            continue;
        };
        // The token is the HMAC of the trimmed, lowercased address, computed independently.
        let original = &raw_emails[&order_ids[i]];
        assert_eq!(token, &hmac_hex(DEV_PII_KEY, &original.to_lowercase()));
        if let Some(customer_token) = token_of.get(&customer) {
            assert_eq!(token, customer_token, "order {}", order_ids[i]);
            joined += 1;
        }
    }
    assert!(joined > 1000, "{joined} orders joined their customer");
}

#[test]
fn generate_is_deterministic() {
    let dir = TempDir::new().unwrap();
    let a = generate(&dir.path().join("a"), "payments", 2000, 5, 0.02);
    let b = generate(&dir.path().join("b"), "payments", 2000, 5, 0.02);
    let c = generate(&dir.path().join("c"), "payments", 2000, 6, 0.02);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_ne!(std::fs::read(&a).unwrap(), std::fs::read(&c).unwrap());
    let batch = read_parquet(&a);
    assert_eq!(batch.num_rows(), 2000);
    let names = strings(
        &read_parquet(&generate(dir.path(), "customers", 500, 5, 0.0)),
        "last_name",
    );
    assert!(
        names.iter().flatten().any(|n| !n.is_ascii()),
        "names with non-ASCII letters"
    );
}

#[test]
fn validate_writes_nothing_and_exits_8_on_failures() {
    let dir = TempDir::new().unwrap();
    let raw = generate(dir.path(), "orders", 2000, 3, 0.05);
    let o = edp(&[
        "validate",
        "--input",
        raw.to_str().unwrap(),
        "--contract",
        contract("orders").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(8), "{}", stderr(&o));
    let rep: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rep["rows_in"], 2000);
    assert!(rep["rows_quarantined"].as_u64().unwrap() > 0);
    assert!(rep["curated"].is_null());
    let clean = generate(&dir.path().join("clean"), "orders", 2000, 3, 0.0);
    let o = edp(&[
        "validate",
        "--input",
        clean.to_str().unwrap(),
        "--contract",
        contract("orders").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let entries: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries.len(), 2, "validate wrote something: {entries:?}");
}

#[test]
fn pci_can_be_turned_off_loudly() {
    let dir = TempDir::new().unwrap();
    let raw = generate(dir.path(), "orders", 1000, 9, 0.0);
    let out = dir.path().join("out");
    let o = edp_env(
        &[
            "raw-to-curated",
            "--input",
            raw.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--contract",
            contract("orders").to_str().unwrap(),
        ],
        &[("PCI_DSS_ENABLED", "false")],
    );
    let err = ok(o);
    assert!(err.contains("PCI DSS protection is OFF"), "{err}");
    let curated = read_parquet(&out.join("part-00000.parquet"));
    assert!(strings(&curated, "card_number")
        .iter()
        .flatten()
        .any(|c| !find_pans(c).is_empty()));
}

#[test]
fn a_prefix_of_several_files_is_one_job() {
    let dir = TempDir::new().unwrap();
    let a = generate(&dir.path().join("a"), "orders", 1500, 21, 0.0);
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    // The same rows twice under two names: every key of the second copy supersedes the first.
    std::fs::copy(&a, input.join("20250116-000000001.parquet")).unwrap();
    std::fs::copy(&a, input.join("20250116-000000002.parquet")).unwrap();
    let (out, _) = run_stage1(dir.path(), "orders", &input);
    let rep = report(&out);
    let single = generate(&dir.path().join("b"), "orders", 1500, 21, 0.0);
    let (out1, _) = run_stage1(&dir.path().join("b"), "orders", &single);
    let rep1 = report(&out1);
    assert_eq!(rep["rows_in"], 3000);
    assert_eq!(rep["rows_curated"], rep1["rows_curated"]);
    assert_eq!(
        rep["duplicates_superseded"].as_u64().unwrap(),
        rep1["duplicates_superseded"].as_u64().unwrap() + 1500
    );
}

mod bad_input {
    use super::*;

    fn expect_failure(args: &[&str], code: i32, needle: &str) -> String {
        let o = edp(args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(code), "{err}");
        assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
        err
    }

    #[test]
    fn corrupt_truncated_empty_and_non_parquet_inputs() {
        let dir = TempDir::new().unwrap();
        let good = generate(dir.path(), "orders", 500, 1, 0.0);
        let bytes = std::fs::read(&good).unwrap();
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "truncated.parquet",
                bytes[..bytes.len() / 2].to_vec(),
                "not a readable Parquet file",
            ),
            ("empty.parquet", Vec::new(), "empty object"),
            (
                "text.parquet",
                b"order_id,status\n1,paid\n".to_vec(),
                "not a readable Parquet file",
            ),
            (
                "corrupt.parquet",
                {
                    let mut b = bytes.clone();
                    for x in &mut b[8..bytes.len() / 2] {
                        *x = 0xAB;
                    }
                    b
                },
                "corrupt Parquet data",
            ),
        ];
        for (name, content, needle) in cases {
            let input = dir.path().join(name);
            std::fs::write(&input, content).unwrap();
            let out = dir.path().join(format!("out-{name}"));
            let err = expect_failure(&args(&stage1(&input, &out, &contract("orders"))), 4, needle);
            assert!(err.contains(name), "error names the object: {err}");
            assert!(
                !out.exists() || std::fs::read_dir(&out).unwrap().next().is_none(),
                "{name}: partial output"
            );
        }
    }

    /// Page checksums are verified where a file carries them. `fixtures/checksummed.parquet`
    /// was written by pyarrow 26 (the parquet crate cannot write page CRCs):
    /// `ids = list(range(1, 1001)); ids[500] = 0x0102030405060708; ids[999] =
    /// 0x0202030405060708; pq.write_table(pa.table({"id": pa.array(ids, pa.int64()), "note":
    /// [f"row {i}" for i in range(1000)]}), path, compression="none", use_dictionary=False,
    /// write_page_checksum=True)`; the marker at row 500 occurs once in the file, in its data
    /// page (it is neither the minimum nor the maximum, so no statistic holds it).
    #[test]
    fn a_bit_flip_in_a_checksummed_page_is_bad_input() {
        let dir = TempDir::new().unwrap();
        let contract = dir.path().join("c.json");
        std::fs::write(
            &contract,
            r#"{"title":"c","required":["id"],"properties":{"id":{"type":"integer"},
                "note":{"type":"string"}},"x-primary-key":["id"]}"#,
        )
        .unwrap();
        let good = root().join("fixtures/checksummed.parquet");
        let out = dir.path().join("good");
        ok(edp(&args(&stage1(&good, &out, &contract))));
        assert_eq!(report(&out)["rows_curated"], 1000);

        let mut bytes = std::fs::read(&good).unwrap();
        let marker = 0x0102030405060708i64.to_le_bytes();
        let at: Vec<usize> = (0..bytes.len() - 8)
            .filter(|&i| bytes[i..i + 8] == marker)
            .collect();
        assert_eq!(at.len(), 1, "the marker is in the data page only");
        bytes[at[0]] ^= 0x10;
        let flipped = dir.path().join("flipped.parquet");
        std::fs::write(&flipped, bytes).unwrap();
        let out = dir.path().join("flipped");
        let err = expect_failure(&args(&stage1(&flipped, &out, &contract)), 4, "checksum");
        assert!(err.contains("flipped.parquet"), "{err}");
        assert!(
            !out.exists() || std::fs::read_dir(&out).unwrap().next().is_none(),
            "partial output"
        );
    }

    #[test]
    fn missing_column_and_wrong_type() {
        let dir = TempDir::new().unwrap();
        let good = generate(dir.path(), "orders", 300, 1, 0.0);
        let batch = read_parquet(&good);
        let missing = dir.path().join("missing.parquet");
        let idx = batch.schema().index_of("status").unwrap();
        let mut b = batch.clone();
        b.remove_column(idx);
        write_parquet(&missing, &b, None);
        let out = dir.path().join("out1");
        expect_failure(
            &args(&stage1(&missing, &out, &contract("orders"))),
            4,
            "missing required column `status`",
        );
        assert!(!out.exists());

        let wrong = dir.path().join("wrong.parquet");
        let idx = batch.schema().index_of("order_id").unwrap();
        let as_text =
            arrow::compute::cast(batch.column(idx), &arrow::datatypes::DataType::Utf8).unwrap();
        let mut fields: Vec<_> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields[idx] =
            arrow::datatypes::Field::new("order_id", arrow::datatypes::DataType::Utf8, false);
        let mut cols = batch.columns().to_vec();
        cols[idx] = as_text;
        let b = arrow::array::RecordBatch::try_new(
            std::sync::Arc::new(arrow::datatypes::Schema::new(fields)),
            cols,
        )
        .unwrap();
        write_parquet(&wrong, &b, None);
        let out = dir.path().join("out2");
        expect_failure(
            &args(&stage1(&wrong, &out, &contract("orders"))),
            4,
            "column `order_id` has type Utf8, expected an integer type",
        );
        assert!(!out.exists());
    }

    #[test]
    fn malformed_contracts() {
        let dir = TempDir::new().unwrap();
        let good = generate(dir.path(), "orders", 100, 1, 0.0);
        let base = std::fs::read_to_string(contract("orders")).unwrap();
        let cases = [
            ("notjson.json", "{ not json".to_string(), "not valid JSON"),
            (
                "oneof.json",
                base.replace(
                    "\"currency\":         { \"type\": \"string\",",
                    "\"currency\":         { \"oneOf\": [], \"type\": \"string\",",
                ),
                "/properties/currency/oneOf",
            ),
            (
                "badregex.json",
                base.replace("^[A-Z]{3}$", "^[A-Z{3}$"),
                "/properties/currency/pattern",
            ),
            (
                "bounds.json",
                base.replace(
                    "\"minimum\": 0, \"maximum\": 1000000",
                    "\"minimum\": 10, \"maximum\": 1",
                ),
                "contradictory bounds",
            ),
            (
                "xkey.json",
                base.replace(
                    "\"x-cdc-op\": \"Op\"",
                    "\"x-cdc-op\": \"Op\", \"x-owner\": \"sales\"",
                ),
                "unknown extension keyword `x-owner`",
            ),
        ];
        for (name, text, needle) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            let out = dir.path().join("out");
            let err = expect_failure(&args(&stage1(&good, &out, &path)), 3, needle);
            assert!(err.contains(name), "{err}");
            assert!(!out.exists());
        }
    }

    #[test]
    fn unreachable_output_leaves_nothing() {
        let dir = TempDir::new().unwrap();
        let good = generate(dir.path(), "orders", 500, 1, 0.05);
        let blocker = dir.path().join("blocker");
        std::fs::write(&blocker, "a file, not a directory").unwrap();
        let out = blocker.join("out");
        let err = expect_failure(
            &args(&stage1(&good, &out, &contract("orders"))),
            5,
            "blocker/out",
        );
        assert_eq!(
            err.lines().filter(|l| l.starts_with("edp: error")).count(),
            1,
            "{err}"
        );
    }

    #[test]
    fn missing_input_and_bad_usage() {
        let dir = TempDir::new().unwrap();
        let out = dir.path().join("out");
        let nothing = dir.path().join("nothing-here");
        expect_failure(
            &args(&stage1(&nothing, &out, &contract("orders"))),
            4,
            "no objects under it",
        );
        let o = edp(&["raw-to-curated", "--output", "x"]);
        assert_eq!(o.status.code(), Some(2));
        let o = edp(&["generate", "--dataset", "nope", "--rows", "1", "--out", "x"]);
        assert_eq!(o.status.code(), Some(2));
    }
}

/// Rows of a curated output sorted by `key`, rendered as text for comparison (timestamps as
/// their integer value: arrow formats a `UTC` zone only with its chrono-tz feature).
fn sorted_rows(batch: &arrow::array::RecordBatch, key: &str) -> Vec<String> {
    let keys = ints(batch, key);
    let mut order: Vec<usize> = (0..batch.num_rows()).collect();
    order.sort_by_key(|&i| keys[i]);
    let columns: Vec<arrow::array::ArrayRef> = batch
        .columns()
        .iter()
        .map(|c| match c.data_type() {
            arrow::datatypes::DataType::Timestamp(_, _) => {
                arrow::compute::cast(c, &arrow::datatypes::DataType::Int64).unwrap()
            }
            _ => c.clone(),
        })
        .collect();
    let cols: Vec<_> = columns
        .iter()
        .map(|c| {
            arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &Default::default()).unwrap()
        })
        .collect();
    order
        .iter()
        .map(|&i| {
            cols.iter()
                .map(|f| f.value(i).to_string())
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect()
}

#[test]
fn spilling_gives_identical_output() {
    let dir = TempDir::new().unwrap();
    let raw = generate(dir.path(), "orders", 100_000, 13, 0.05);
    let spill = dir.path().join("spill");
    std::fs::create_dir(&spill).unwrap();
    let run = |out: &str, index: &str| {
        let out = dir.path().join(out);
        ok(edp(&[
            "--index-memory",
            index,
            "raw-to-curated",
            "--input",
            raw.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--contract",
            contract("orders").to_str().unwrap(),
            "--spill-dir",
            spill.to_str().unwrap(),
        ]));
        out
    };
    let a = run("big", "64MiB");
    let b = run("tiny", "1MiB");
    assert_eq!(report(&a)["dedup_spilled_entries"], 0);
    assert!(
        report(&b)["dedup_spilled_entries"].as_u64().unwrap() > 10_000,
        "{}",
        report(&b)
    );
    let ca = read_parquet(&a.join("part-00000.parquet"));
    let cb = read_parquet(&b.join("part-00000.parquet"));
    assert_eq!(sorted_rows(&ca, "order_id"), sorted_rows(&cb, "order_id"));
    assert_eq!(
        std::fs::read_dir(&spill).unwrap().count(),
        0,
        "spill files left behind"
    );
}

#[test]
fn a_large_row_group_is_read_in_slices_with_the_same_result() {
    let dir = TempDir::new().unwrap();
    let raw = generate(dir.path(), "orders", 300_000, 23, 0.02);
    // The same rows as one row group of 300,000 rows, with the offset index parquet-rs writes.
    let whole = read_parquet(&raw);
    let one_dir = dir.path().join("one");
    std::fs::create_dir(&one_dir).unwrap();
    write_parquet(
        &one_dir.join("20250116-000000000.parquet"),
        &whole,
        Some(1_000_000),
    );
    let run = |input: &Path, out: &str, shard: Option<&str>| {
        let out = dir.path().join(out);
        let mut a = stage1(input, &out, &contract("orders"));
        if let Some(s) = shard {
            a.extend(["--shard".to_string(), s.to_string()]);
        }
        ok(edp(&args(&a)));
        out
    };
    let a = run(raw.parent().unwrap(), "groups", None);
    let b = run(&one_dir, "slices", None);
    let (ca, cb) = (
        read_parquet(&a.join("part-00000.parquet")),
        read_parquet(&b.join("part-00000.parquet")),
    );
    assert!(ca.num_rows() > 250_000);
    assert_eq!(sorted_rows(&ca, "order_id"), sorted_rows(&cb, "order_id"));
    let groups = |p: &Path| {
        parquet::file::reader::FileReader::metadata(
            &parquet::file::reader::SerializedFileReader::new(std::fs::File::open(p).unwrap())
                .unwrap(),
        )
        .num_row_groups()
    };
    // Slices of 131,072 rows: one row group per slice, then one for the keys whose latest
    // version was invalid (the revisit's rows, written together).
    assert!(report(&b)["earlier_valid_versions"].as_u64().unwrap() > 0);
    assert_eq!(groups(&b.join("part-00000.parquet")), 4);
    for key in [
        "rows_in",
        "rows_quarantined",
        "duplicates_superseded",
        "earlier_valid_versions",
        "tombstones",
    ] {
        assert_eq!(report(&a)[key], report(&b)[key], "{key}");
    }
    // Shards select rows within slices.
    let mut union = Vec::new();
    for i in 0..2 {
        let s = run(&one_dir, &format!("shard{i}"), Some(&format!("{i}/2")));
        union.extend(sorted_rows(
            &read_parquet(&s.join(format!("part-{i:05}-of-00002.parquet"))),
            "order_id",
        ));
    }
    union.sort();
    let mut expected = sorted_rows(&ca, "order_id");
    expected.sort();
    assert_eq!(union, expected);
}

#[test]
fn shards_together_equal_one_process() {
    let dir = TempDir::new().unwrap();
    let raw = generate(dir.path(), "payments", 6000, 17, 0.05);
    let contract_path = contract("payments");
    let curate = |out: &Path, extra: &[&str], env: &[(&str, &str)]| {
        let base = [
            "raw-to-curated",
            "--input",
            raw.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--contract",
            contract_path.to_str().unwrap(),
        ];
        ok(edp_env(&[&base[..], extra].concat(), env));
    };
    let single = dir.path().join("single");
    curate(&single, &[], &[]);
    let sharded = dir.path().join("sharded");
    for i in 0..3 {
        curate(
            &sharded,
            &[],
            &[
                ("AWS_BATCH_JOB_ARRAY_INDEX", &i.to_string()),
                ("AWS_BATCH_JOB_ARRAY_SIZE", "3"),
            ],
        );
    }
    let one = read_parquet(&single.join("part-00000.parquet"));
    let mut union: Vec<String> = Vec::new();
    let mut quarantined = 0;
    let mut rows_in = 0;
    for i in 0..3 {
        let part = read_parquet(&sharded.join(format!("part-{i:05}-of-00003.parquet")));
        assert!(part.num_rows() > 0);
        union.extend(
            strings(&part, "payment_id")
                .into_iter()
                .flatten()
                .zip(micros(&part, "updated_at").into_iter().flatten())
                .map(|(a, b)| format!("{a} {b}")),
        );
        quarantined +=
            read_parquet(&sharded.join(format!("_quarantine/part-{i:05}-of-00003.parquet")))
                .num_rows();
        let rep: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(sharded.join(format!("_edp_report-{i:05}-of-00003.json")))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(rep["shard"], format!("{i}/3"));
        rows_in += rep["rows_in"].as_u64().unwrap();
    }
    let mut expected: Vec<String> = strings(&one, "payment_id")
        .into_iter()
        .flatten()
        .zip(micros(&one, "updated_at").into_iter().flatten())
        .map(|(a, b)| format!("{a} {b}"))
        .collect();
    union.sort();
    expected.sort();
    assert_eq!(union, expected);
    assert_eq!(rows_in, 6000);
    assert_eq!(
        quarantined,
        read_parquet(&single.join("_quarantine/part-00000.parquet")).num_rows()
    );

    // A rerun with another shard count replaces the three shards' parts and reports instead of
    // adding beside them; the other shards of its own count stay.
    let listing = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "_quarantine")
            .collect();
        names.sort();
        names
    };
    for (shard, expected) in [
        (
            "0/2",
            vec![
                "_edp_report-00000-of-00002.json",
                "part-00000-of-00002.parquet",
            ],
        ),
        (
            "1/2",
            vec![
                "_edp_report-00000-of-00002.json",
                "_edp_report-00001-of-00002.json",
                "part-00000-of-00002.parquet",
                "part-00001-of-00002.parquet",
            ],
        ),
    ] {
        curate(&sharded, &["--shard", shard], &[]);
        assert_eq!(listing(&sharded), expected, "after {shard}");
        let parts: Vec<String> = listing(&sharded.join("_quarantine"));
        assert!(
            parts.iter().all(|p| p.ends_with("-of-00002.parquet")),
            "{parts:?}"
        );
    }
}

#[test]
fn inputs_with_added_nullable_columns_are_reconciled() {
    let dir = TempDir::new().unwrap();
    let raw = generate(dir.path(), "orders", 1000, 23, 0.0);
    let batch = read_parquet(&raw);
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    // The older full load lacks the nullable `notes` column; the CDC file has it.
    let mut old = batch.slice(0, 500);
    old.remove_column(old.schema().index_of("notes").unwrap());
    write_parquet(&input.join("LOAD00000001.parquet"), &old, None);
    write_parquet(
        &input.join("20250116-000000000.parquet"),
        &batch.slice(500, 500),
        None,
    );
    let (out, _) = run_stage1(dir.path(), "orders", &input);
    let curated = read_parquet(&out.join("part-00000.parquet"));
    assert!(curated
        .schema()
        .field_with_name("notes")
        .unwrap()
        .is_nullable());
    assert_eq!(report(&out)["rows_in"], 1000);

    // A missing required column cannot be reconciled.
    let mut bad = batch.slice(0, 10);
    bad.remove_column(bad.schema().index_of("status").unwrap());
    write_parquet(&input.join("LOAD00000002.parquet"), &bad, None);
    let o = edp(&[
        "raw-to-curated",
        "--input",
        input.to_str().unwrap(),
        "--output",
        dir.path().join("o2").to_str().unwrap(),
        "--contract",
        contract("orders").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("LOAD00000002.parquet"));
}

#[test]
fn bad_spill_dir_and_shard_specs() {
    let dir = TempDir::new().unwrap();
    let raw = generate(dir.path(), "orders", 100, 1, 0.0);
    let out = dir.path().join("out");
    let base = [
        "raw-to-curated",
        "--input",
        raw.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--contract",
    ];
    let c = contract("orders");
    let o = edp(&[
        &base[..],
        &[c.to_str().unwrap(), "--spill-dir", "/nonexistent/spill"],
    ]
    .concat());
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("spill directory /nonexistent/spill"));
    assert!(!out.exists());
    // A memory limit the job cannot honour is refused, and so is an index budget over half
    // of the limit.
    for (flag, value, needle) in [
        (
            "--memory-limit",
            "64MiB",
            "memory_limit 64MiB is below the 256MiB",
        ),
        (
            "--index-memory",
            "2GiB",
            "index_memory 2GiB is over half of memory_limit 2GiB",
        ),
    ] {
        let o = edp(&[&[flag, value][..], &base[..], &[c.to_str().unwrap()]].concat());
        assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{}", stderr(&o));
        assert!(!out.exists());
    }
    for bad in ["3/2", "x/4", "1/0", "2"] {
        let o = edp(&[&base[..], &[c.to_str().unwrap(), "--shard", bad]].concat());
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", stderr(&o));
    }
}

#[test]
fn sigterm_aborts_outputs_and_removes_spill_files() {
    let dir = TempDir::new().unwrap();
    let raw = generate(dir.path(), "orders", 400_000, 29, 0.02);
    let spill = dir.path().join("spill");
    std::fs::create_dir(&spill).unwrap();
    let out = dir.path().join("out");
    let child = std::process::Command::new(edp_bin())
        .args([
            "--progress",
            "never",
            "--log-format",
            "text",
            "--index-memory",
            "1MiB",
            "raw-to-curated",
            "--input",
        ])
        .arg(&raw)
        .arg("--output")
        .arg(&out)
        .args([
            "--contract",
            contract("orders").to_str().unwrap(),
            "--spill-dir",
            spill.to_str().unwrap(),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the index has spilled, so the signal lands mid-run with files on disk.
    let started = std::time::Instant::now();
    while std::fs::read_dir(&spill).unwrap().count() == 0 {
        assert!(
            started.elapsed().as_secs() < 60,
            "no spill directory appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let output = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(143), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert_eq!(
        std::fs::read_dir(&spill).unwrap().count(),
        0,
        "spill files left behind"
    );
    let visible: Vec<_> = walk(&out)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet" || e == "json"))
        .collect();
    assert!(visible.is_empty(), "partial outputs: {visible:?}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flat_map(|e| {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p)
            } else {
                vec![p]
            }
        })
        .collect()
}

#[test]
fn s3_in_s3_out_with_multipart_and_no_partial_objects() {
    let s3 = S3Server::start();
    s3.create_bucket("raw");
    s3.create_bucket("curated");
    let env = s3.env();
    let env = env_refs(&env);
    s3.generate_orders(
        250000,
        "s3://raw/ecommerce/orders-raw/",
        3,
        edp::generate::DEFAULT_FAULT_RATE,
    );
    let args = |input: &str, output: &str| {
        edp_env(
            &[
                "raw-to-curated",
                "--input",
                input,
                "--output",
                output,
                "--contract",
                contract("orders").to_str().unwrap(),
            ],
            &env,
        )
    };
    ok(args(
        "s3://raw/ecommerce/orders-raw/",
        "s3://curated/ecommerce/orders/",
    ));
    let objects = s3.list("curated");
    let names: Vec<&str> = objects.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "ecommerce/orders/_edp_report.json",
            "ecommerce/orders/_quarantine/part-00000.parquet",
            "ecommerce/orders/part-00000.parquet"
        ]
    );
    let curated_size = objects[2].1;
    assert!(
        curated_size > 2 * edp::output::PART_BYTES as u64,
        "curated object of {curated_size} bytes needed several parts"
    );
    let curated = s3.read_parquet("curated", "ecommerce/orders/part-00000.parquet");
    let quarantine = s3.read_parquet("curated", "ecommerce/orders/_quarantine/part-00000.parquet");
    let raw = s3.read_parquet("raw", "ecommerce/orders-raw/20250116-000000000.parquet");
    assert_eq!(raw.num_rows(), 250_000);
    assert!(curated.num_rows() > 200_000);
    assert!(quarantine.num_rows() > 1000);
    assert_no_pans(&curated, "s3 curated");

    // A bad object fails the run and leaves nothing behind in the output bucket.
    s3.create_bucket("curated2");
    let store = s3.store("raw");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(object_store::ObjectStoreExt::put(
        &store,
        &object_store::path::Path::from("bad/x.parquet"),
        b"not parquet at all".to_vec().into(),
    ))
    .unwrap();
    let o = args("s3://raw/bad/", "s3://curated2/orders/");
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("s3://raw/bad/x.parquet"));
    assert!(s3.list("curated2").is_empty());
}

#[test]
fn run_event_routes_decodes_and_is_idempotent() {
    let s3 = S3Server::start();
    s3.create_bucket("raw-ev");
    s3.create_bucket("cur-ev");
    s3.create_bucket("err-ev");
    let mut env = s3.env();
    env.push(("CURATED_BUCKET", "cur-ev".into()));
    env.push(("ERROR_BUCKET", "err-ev".into()));
    env.push((
        "CONTRACTS_DIR",
        root().join("fixtures/contracts").to_str().unwrap().into(),
    ));
    let env = env_refs(&env);
    let key = "ecommerce/orders-raw/year=2025/month=01/day=16/dms load+1 é.parquet";
    let encoded =
        "ecommerce/orders-raw/year%3D2025/month%3D01/day%3D16/dms+load%2B1+%C3%A9.parquet";
    s3.generate_orders(
        3000,
        &format!("s3://raw-ev/{key}"),
        8,
        edp::generate::DEFAULT_FAULT_RATE,
    );

    let dir = TempDir::new().unwrap();
    let events = [
        format!(r#"{{"bucket":"raw-ev","key":"{encoded}","event_type":"ObjectCreated:Put"}}"#),
        format!(
            r#"{{"version":"0","detail-type":"Object Created","source":"aws.s3","detail":{{"bucket":{{"name":"raw-ev"}},"object":{{"key":"{encoded}","size":1}}}}}}"#
        ),
        format!(
            r#"{{"Records":[{{"eventName":"ObjectCreated:Put","s3":{{"bucket":{{"name":"raw-ev"}},"object":{{"key":"{encoded}"}}}}}}]}}"#
        ),
    ];
    let mut listings = Vec::new();
    for (i, ev) in events.iter().enumerate() {
        let path = dir.path().join(format!("event-{i}.json"));
        std::fs::write(&path, ev).unwrap();
        let o = edp_env(
            &["--log-format", "json", "run", path.to_str().unwrap()],
            &env,
        );
        let err = stderr(&o);
        assert!(o.status.success(), "{err}");
        // Structured logs carry the request context; EMF metrics arrive on stdout.
        assert!(
            err.lines()
                .any(|l| l.contains("\"dataset\":\"orders\"") && l.contains("request_id")),
            "{err}"
        );
        let stdout = String::from_utf8_lossy(&o.stdout);
        let emf: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        assert_eq!(
            emf["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            serde_json::json!([["Stage", "Dataset"], ["Stage"]])
        );
        assert_eq!(emf["RecordsProcessed"], 3000);
        assert_eq!(emf["Dataset"], "orders");
        assert_eq!(emf["ErrorCount"], 0);
        assert!(emf["ValidationFailureRate"].as_f64().unwrap() > 0.0);
        listings.push((s3.list("cur-ev"), s3.list("err-ev")));
    }
    // The AWS Batch job definition passes bucket and key as parameters instead of a document.
    ok(edp_env(
        &["run", "--bucket", "raw-ev", "--key", encoded],
        &env,
    ));
    listings.push((s3.list("cur-ev"), s3.list("err-ev")));
    // An object under a `_` directory is not data: skipped, nothing written, not a failure.
    let skipped = ok(edp_env(
        &[
            "run",
            "--bucket",
            "raw-ev",
            "--key",
            "ecommerce/orders-raw/_temporary/0/x.parquet",
        ],
        &env,
    ));
    assert!(skipped.contains("skipped"), "{skipped}");
    assert_eq!(s3.list("cur-ev"), listings[listings.len() - 1].0);
    let prefix = "ecommerce/orders-curated/year=2025/month=01/day=16/dms load+1 é.parquet";
    let errors = "ecommerce/orders-errors/year=2025/month=01/day=16/dms load+1 é.parquet";
    let (cur, err) = &listings[0];
    let cur_keys: Vec<&str> = cur.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        cur_keys,
        [
            format!("{prefix}/_edp_report.json"),
            format!("{prefix}/part-00000.parquet")
        ]
    );
    assert_eq!(
        err.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        [format!("{errors}/part-00000.parquet")]
    );
    // The same event four times (in four shapes) leaves the same objects, nothing duplicated.
    assert!(listings
        .iter()
        .all(|(c, e)| c.iter().map(|x| &x.0).eq(cur.iter().map(|x| &x.0)) && e.len() == 1));
    let curated = s3.read_parquet("cur-ev", &format!("{prefix}/part-00000.parquet"));
    assert!(curated.num_rows() > 2000);

    // Keys that try to escape the configured prefixes are rejected.
    let path = dir.path().join("escape.json");
    std::fs::write(
        &path,
        r#"{"bucket":"raw-ev","key":"ecommerce/orders-raw/..%2F..%2Fetc/x.parquet"}"#,
    )
    .unwrap();
    let o = edp_env(&["run", path.to_str().unwrap()], &env);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("`..` segments are rejected"),
        "{}",
        stderr(&o)
    );

    // Without PII_HASH_KEY, `edp run` refuses to hash the contract's e-mails with the
    // development key, before reading or writing anything.
    let no_key: Vec<(&str, &str)> = env
        .iter()
        .copied()
        .filter(|(k, _)| *k != "PII_HASH_KEY")
        .collect();
    let before = (s3.list("cur-ev"), s3.list("err-ev"));
    let o = edp_env(&["run", "--bucket", "raw-ev", "--key", encoded], &no_key);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("PII_HASH_KEY is not set") && stderr(&o).contains("orders.json"),
        "{}",
        stderr(&o)
    );
    assert_eq!((s3.list("cur-ev"), s3.list("err-ev")), before);

    // A notification whose second record is bad processes none of its records: a key that
    // cannot be routed, or a dataset without a contract (every job is built, its contract
    // read, before any runs).
    let good = "ecommerce/orders-raw/year=2025/month=01/day=17/second.parquet";
    s3.generate_orders(100, &format!("s3://raw-ev/{good}"), 9, 0.0);
    let record = |key: &str| {
        format!(
            r#"{{"eventName":"ObjectCreated:Put","s3":{{"bucket":{{"name":"raw-ev"}},"object":{{"key":"{key}"}}}}}}"#
        )
    };
    for (bad, needle) in [
        (
            "ecommerce/orders-raw/..%2F..%2Fetc/x.parquet",
            "`..` segments are rejected",
        ),
        (
            "ecommerce/refunds-raw/year=2025/month=01/day=17/r.parquet",
            "refunds.json",
        ),
    ] {
        std::fs::write(
            &path,
            format!(r#"{{"Records":[{},{}]}}"#, record(good), record(bad)),
        )
        .unwrap();
        let o = edp_env(&["run", path.to_str().unwrap()], &env);
        assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{}", stderr(&o));
        assert!(
            !s3.list("cur-ev").iter().any(|(k, _)| k.contains("day=17")),
            "the first record was processed"
        );
    }
}

#[test]
fn transient_storage_errors_are_retried_and_logged() {
    let s3 = S3Server::start();
    s3.create_bucket("raw-rt");
    s3.create_bucket("cur-rt");
    let env = s3.env();
    s3.generate_orders(
        2000,
        "s3://raw-rt/orders-raw/",
        4,
        edp::generate::DEFAULT_FAULT_RATE,
    );

    let proxy = FaultyProxy::start(&s3.endpoint, 2);
    let mut env = env.clone();
    env.retain(|(k, _)| !k.starts_with("AWS_ENDPOINT"));
    env.push(("AWS_ENDPOINT", proxy.endpoint.clone()));
    let env = env_refs(&env);
    let o = edp_env(
        &[
            "raw-to-curated",
            "--input",
            "s3://raw-rt/orders-raw/",
            "--output",
            "s3://cur-rt/orders/",
            "--contract",
            contract("orders").to_str().unwrap(),
        ],
        &env,
    );
    let err = ok(o);
    assert_eq!(
        proxy
            .faults_served
            .load(std::sync::atomic::Ordering::SeqCst),
        2
    );
    let retries = err
        .lines()
        .filter(|l| l.contains("503") && l.contains("retry"))
        .count();
    assert_eq!(retries, 2, "each retry is logged: {err}");
    assert_eq!(
        s3.read_parquet("cur-rt", "orders/part-00000.parquet")
            .num_rows() as u64,
        report_rows(&s3)
    );

    // More faults than the 3 retries allow: the run fails with a storage error, writing nothing.
    let proxy = FaultyProxy::start(&s3.endpoint, 100);
    let env: Vec<(&str, String)> = s3
        .env()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("AWS_ENDPOINT"))
        .chain([("AWS_ENDPOINT", proxy.endpoint.clone())])
        .collect();
    let env = env_refs(&env);
    let o = edp_env(
        &[
            "raw-to-curated",
            "--input",
            "s3://raw-rt/orders-raw/",
            "--output",
            "s3://cur-rt/again/",
            "--contract",
            contract("orders").to_str().unwrap(),
        ],
        &env,
    );
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert_eq!(
        proxy
            .faults_served
            .load(std::sync::atomic::Ordering::SeqCst),
        4,
        "1 try + 3 retries"
    );
    assert!(s3
        .list("cur-rt")
        .iter()
        .all(|(k, _)| k.starts_with("orders/")));
}

fn report_rows(s3: &S3Server) -> u64 {
    let rep: serde_json::Value =
        serde_json::from_slice(&s3.get("cur-rt", "orders/_edp_report.json")).unwrap();
    rep["rows_curated"].as_u64().unwrap()
}

#[test]
fn sigterm_during_a_multipart_upload_leaves_no_object() {
    let s3 = S3Server::start();
    s3.create_bucket("raw-term");
    s3.create_bucket("cur-term");
    let env = s3.env();
    let env = env_refs(&env);
    s3.generate_orders(
        600000,
        "s3://raw-term/orders-raw/",
        6,
        edp::generate::DEFAULT_FAULT_RATE,
    );
    let mut cmd = std::process::Command::new(edp_bin());
    cmd.args([
        "--progress",
        "never",
        "--log-format",
        "text",
        "raw-to-curated",
        "--input",
        "s3://raw-term/orders-raw/",
        "--output",
        "s3://cur-term/orders/",
    ])
    .args(["--contract", contract("orders").to_str().unwrap()])
    .stderr(std::process::Stdio::piped());
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let started = std::time::Instant::now();
    while s3.multipart_uploads("cur-term") == 0 {
        assert!(
            started.elapsed().as_secs() < 120,
            "no multipart upload started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(143),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        s3.list("cur-term").is_empty(),
        "objects left: {:?}",
        s3.list("cur-term")
    );
    assert_eq!(
        s3.multipart_uploads("cur-term"),
        0,
        "the multipart upload was not aborted"
    );
}

#[test]
fn configuration_layers_and_config_show() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("config.json");
    std::fs::write(&file, r#"{"batch_size": 1000, "read_ahead": 3, "pii_hash_key": "file-secret", "log_level": "warn"}"#).unwrap();
    let o = edp_env(
        &[
            "--config",
            file.to_str().unwrap(),
            "--batch-size",
            "4000",
            "config",
            "show",
        ],
        &[
            (
                "CONFIG_JSON",
                r#"{"read_ahead": 4, "memory_limit": "1GiB"}"#,
            ),
            ("MEMORY_LIMIT", "768MiB"),
        ],
    );
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", stderr(&o));
    let line = |key: &str| {
        out.lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("{key} missing: {out}"))
            .to_string()
    };
    assert!(line("batch_size").contains("4000") && line("batch_size").contains("command line"));
    assert!(line("read_ahead").contains("= 4") && line("read_ahead").contains("CONFIG_JSON"));
    assert!(
        line("memory_limit").contains("768MiB")
            && line("memory_limit").contains("environment MEMORY_LIMIT")
    );
    assert!(line("log_level").contains("warn") && line("log_level").contains("config file"));
    assert!(line("compression").contains("snappy") && line("compression").contains("default"));
    assert!(line("pii_hash_key").contains("<redacted>") && !out.contains("file-secret"));

    // Unknown keys and bad values are errors naming their source.
    let o = edp_env(
        &["config", "show"],
        &[("CONFIG_JSON", r#"{"batch_sise": 1}"#)],
    );
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o).contains("CONFIG_JSON: unknown key `batch_sise`"),
        "{}",
        stderr(&o)
    );
    let raw = generate(dir.path(), "orders", 200, 1, 0.0);
    let o = edp_env(
        &[
            "validate",
            "--input",
            raw.to_str().unwrap(),
            "--contract",
            contract("orders").to_str().unwrap(),
        ],
        &[("VALIDATION_ENABLED", "sometimes")],
    );
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o).contains(
            "validation_enabled (from environment VALIDATION_ENABLED): expected true or false"
        ),
        "{}",
        stderr(&o)
    );
}

#[test]
fn validation_and_deduplication_can_be_turned_off() {
    let dir = TempDir::new().unwrap();
    let raw = generate(dir.path(), "orders", 3000, 31, 0.05);
    let run = |name: &str, env: &[(&str, &str)]| {
        let out = dir.path().join(name);
        ok(edp_env(
            &[
                "raw-to-curated",
                "--input",
                raw.to_str().unwrap(),
                "--output",
                out.to_str().unwrap(),
                "--contract",
                contract("orders").to_str().unwrap(),
            ],
            env,
        ));
        report(&out)
    };
    let full = run("full", &[]);
    let no_validation = run("noval", &[("VALIDATION_ENABLED", "false")]);
    let no_dedup = run("nodedup", &[("DEDUPLICATION_ENABLED", "false")]);
    assert!(
        full["rows_quarantined"].as_u64().unwrap() > 0
            && full["duplicates_superseded"].as_u64().unwrap() > 0
    );
    assert_eq!(no_validation["rows_quarantined"], 0);
    assert_eq!(no_dedup["duplicates_superseded"], 0);
    assert_eq!(
        no_dedup["rows_curated"].as_u64().unwrap(),
        3000 - full["rows_quarantined"].as_u64().unwrap()
    );
    // Unchecked date-times are not parsed: curated keeps them as text, unparsable ones included.
    let curated = read_parquet(&dir.path().join("noval/part-00000.parquet"));
    let updated = strings(&curated, "updated_at");
    assert_eq!(
        updated.len() as u64,
        no_validation["rows_curated"].as_u64().unwrap()
    );
    assert!(updated
        .iter()
        .any(|u| edp::datetime::parse_datetime(u.as_deref().unwrap()).is_none()));
}

/// Bodies of the messages waiting in an SQS queue.
fn receive_all(rt: &tokio::runtime::Runtime, sqs: &aws_sdk_sqs::Client, url: &str) -> Vec<String> {
    let out = rt
        .block_on(
            sqs.receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send(),
        )
        .unwrap();
    out.messages()
        .iter()
        .filter_map(|m| m.body().map(str::to_string))
        .collect()
}

#[test]
fn failures_alert_on_sns_and_dead_letter_on_sqs() {
    let s3 = S3Server::start();
    for b in ["raw-n", "cur-n", "err-n"] {
        s3.create_bucket(b);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let conf = s3.sdk_config(&rt);
    let sns = aws_sdk_sns::Client::new(&conf);
    let sqs = aws_sdk_sqs::Client::new(&conf);
    let topic = rt
        .block_on(sns.create_topic().name("edp-alerts").send())
        .unwrap()
        .topic_arn()
        .unwrap()
        .to_string();
    let queue = |name: &str| {
        rt.block_on(sqs.create_queue().queue_name(name).send())
            .unwrap()
            .queue_url()
            .unwrap()
            .to_string()
    };
    let alerts = queue("alerts-sub");
    let dlq = queue("edp-dlq");
    let alerts_arn = rt
        .block_on(
            sqs.get_queue_attributes()
                .queue_url(&alerts)
                .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                .send(),
        )
        .unwrap()
        .attributes()
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    rt.block_on(
        sns.subscribe()
            .topic_arn(&topic)
            .protocol("sqs")
            .endpoint(&alerts_arn)
            .attributes("RawMessageDelivery", "true")
            .send(),
    )
    .unwrap();

    let mut env = s3.env();
    env.extend([
        ("CURATED_BUCKET", "cur-n".to_string()),
        ("ERROR_BUCKET", "err-n".to_string()),
        (
            "CONTRACTS_DIR",
            root()
                .join("fixtures/contracts")
                .to_str()
                .unwrap()
                .to_string(),
        ),
        ("SNS_TOPIC_ARN", topic.clone()),
        ("DEAD_LETTER_QUEUE_URL", dlq.clone()),
    ]);
    let env = env_refs(&env);

    // A corrupt object: exit 4, an alert, and the event with its reason in the dead-letter queue.
    let store = s3.store("raw-n");
    rt.block_on(object_store::ObjectStoreExt::put(
        &store,
        &object_store::path::Path::from("shop/orders-raw/bad.parquet"),
        b"PAR1 garbage".to_vec().into(),
    ))
    .unwrap();
    let o = edp_env(
        &[
            "run",
            "--bucket",
            "raw-n",
            "--key",
            "shop/orders-raw/bad.parquet",
        ],
        &env,
    );
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let dead = receive_all(&rt, &sqs, &dlq);
    assert_eq!(dead.len(), 1, "{dead:?}");
    let dead: serde_json::Value = serde_json::from_str(&dead[0]).unwrap();
    assert_eq!(dead["event"]["key"], "shop/orders-raw/bad.parquet");
    assert_eq!(dead["exit_code"], 4);
    assert!(
        dead["reason"]
            .as_str()
            .unwrap()
            .contains("not a readable Parquet file"),
        "{dead}"
    );
    let alerted = receive_all(&rt, &sqs, &alerts);
    assert_eq!(alerted.len(), 1, "{alerted:?}");
    let alert: serde_json::Value = serde_json::from_str(&alerted[0]).unwrap();
    assert_eq!(alert["exit_code"], 4);

    // An event that is not JSON (random bytes) and one too large for an SQS message are
    // dead-lettered too: the first as text, the second as its size, digest and head.
    let events = tempfile::TempDir::new().unwrap();
    let garbage = events.path().join("garbage.json");
    std::fs::write(&garbage, [0xff, 0x00, b'{', 0x9c, b'x']).unwrap();
    let huge = events.path().join("huge.json");
    let pad = "x".repeat(300 << 10);
    std::fs::write(
        &huge,
        serde_json::json!({"bucket": "raw-n", "key": "shop/orders-raw/bad.parquet", "pad": pad})
            .to_string(),
    )
    .unwrap();
    for (file, huge_event) in [(&garbage, false), (&huge, true)] {
        let o = edp_env(&["run", file.to_str().unwrap()], &env);
        let code = if huge_event { 4 } else { 3 };
        assert_eq!(o.status.code(), Some(code), "{}", stderr(&o));
        assert_eq!(receive_all(&rt, &sqs, &alerts).len(), 1);
        let dead = receive_all(&rt, &sqs, &dlq);
        assert_eq!(dead.len(), 1, "{dead:?}");
        let dead: serde_json::Value = serde_json::from_str(&dead[0]).unwrap();
        assert_eq!(dead["exit_code"], code);
        if huge_event {
            assert_eq!(dead["event"]["truncated"], true, "{dead}");
            assert!(dead["event"]["bytes"].as_u64().unwrap() > 300 << 10);
        } else {
            assert!(dead["event"].as_str().unwrap().contains('x'), "{dead}");
        }
    }

    // A storage error before the last attempt alerts but leaves the retry to AWS Batch.
    let mut retry_env = env.clone();
    retry_env.retain(|(k, _)| *k != "CURATED_BUCKET");
    retry_env.extend([
        ("CURATED_BUCKET", "no-such-bucket"),
        ("AWS_BATCH_JOB_ATTEMPT", "1"),
    ]);
    s3.generate_orders(
        2000,
        "s3://raw-n/shop/orders-raw/ok.parquet",
        2,
        edp::generate::DEFAULT_FAULT_RATE,
    );
    let o = edp_env(
        &[
            "run",
            "--bucket",
            "raw-n",
            "--key",
            "shop/orders-raw/ok.parquet",
        ],
        &retry_env,
    );
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert_eq!(receive_all(&rt, &sqs, &alerts).len(), 1);
    assert!(
        receive_all(&rt, &sqs, &dlq).is_empty(),
        "not final: Batch retries it"
    );

    // A SIGTERM (AWS Batch stopping the job, a Spot reclaim) is retried: before the last
    // attempt it alerts and exits 143 without a dead letter; on the last one it dead-letters.
    s3.generate_orders(
        200_000,
        "s3://raw-n/shop/orders-raw/big.parquet",
        3,
        edp::generate::DEFAULT_FAULT_RATE,
    );
    for (attempt, dead_letters) in [("1", 0), ("3", 1)] {
        let mut term_env = env.clone();
        term_env.extend([("AWS_BATCH_JOB_ATTEMPT", attempt), ("BATCH_SIZE", "256")]);
        let args = [
            "run",
            "--bucket",
            "raw-n",
            "--key",
            "shop/orders-raw/big.parquet",
        ];
        let o = edp_terminated(&args, &term_env);
        assert_eq!(o.status.code(), Some(143), "{}", stderr(&o));
        assert_eq!(
            receive_all(&rt, &sqs, &alerts).len(),
            1,
            "attempt {attempt}"
        );
        let dead = receive_all(&rt, &sqs, &dlq);
        assert_eq!(dead.len(), dead_letters, "attempt {attempt}: {dead:?}");
        if let Some(d) = dead.first() {
            let d: serde_json::Value = serde_json::from_str(d).unwrap();
            assert_eq!(d["exit_code"], 143, "{d}");
        }
    }
    assert!(
        s3.list("cur-n").iter().all(|(k, _)| !k.contains("big")),
        "an interrupted run publishes nothing"
    );

    // A run whose validation failure rate passes the threshold succeeds and alerts.
    let faulty = generate_faulty(&s3, "s3://raw-n/shop/orders-raw/faulty.parquet");
    let o = edp_env(&["run", "--bucket", "raw-n", "--key", &faulty], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    let alerted = receive_all(&rt, &sqs, &alerts);
    assert_eq!(alerted.len(), 1, "{alerted:?}");
    let alert: serde_json::Value = serde_json::from_str(&alerted[0]).unwrap();
    assert!(
        alert["validation_failure_rate"].as_f64().unwrap() > 0.1,
        "{alert}"
    );
    assert!(find_pans(&alerted[0]).is_empty());
}

/// Generates orders with a 50% fault rate at `url` and returns its key.
fn generate_faulty(s3: &S3Server, url: &str) -> String {
    s3.generate_orders(2000, url, 42, 0.5);
    url.trim_start_matches("s3://raw-n/").to_string()
}

#[test]
fn kms_key_id_encrypts_s3_writes() {
    let s3 = S3Server::start();
    s3.create_bucket("raw-kms");
    s3.create_bucket("cur-kms");
    s3.generate_orders(
        1000,
        "s3://raw-kms/orders-raw/",
        9,
        edp::generate::DEFAULT_FAULT_RATE,
    );
    let key_id = "arn:aws:kms:us-east-1:123456789012:key/edp-test";
    let mut env = s3.env();
    env.push(("KMS_KEY_ID", key_id.to_string()));
    let env = env_refs(&env);
    ok(edp_env(
        &[
            "raw-to-curated",
            "--input",
            "s3://raw-kms/orders-raw/",
            "--output",
            "s3://cur-kms/orders/",
            "--contract",
            contract("orders").to_str().unwrap(),
        ],
        &env,
    ));
    for key in [
        "orders/part-00000.parquet",
        "orders/_quarantine/part-00000.parquet",
        "orders/_edp_report.json",
    ] {
        assert_eq!(
            s3.encryption("cur-kms", key),
            ("aws:kms".to_string(), key_id.to_string()),
            "{key}"
        );
    }
}
