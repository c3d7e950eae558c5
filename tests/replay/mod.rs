//! `edp replay`: quarantined rows checked again under a fixed contract; the rows that now pass
//! are published as curated, the rest stay quarantined, every row accounted for, and a rerun
//! releases nothing twice.

use std::collections::{HashMap, HashSet};

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use tempfile::TempDir;

use crate::util::*;

#[test]
fn replay_after_a_contract_fix_releases_exactly_the_fixed_rows_once() {
    let dir = TempDir::new().unwrap();
    let shop = dir.path().join("raw");
    ok(edp(&[
        "generate",
        "--dataset",
        "all",
        "--rows",
        "4000",
        "--seed",
        "21",
        "--out",
        shop.to_str().unwrap(),
    ]));
    let raw = shop.join("orders/20250116-000000000.parquet");
    // Replay checks foreign keys again: orders reference the curated customers.
    let customers = dir.path().join("customers-curated");
    ok(edp(&args(&stage1(
        &shop.join("customers"),
        &customers,
        &contract("customers"),
    ))));
    // A contract whose `maximum` on total_amount is too strict: many valid orders fail it.
    let fixed = std::fs::read_to_string(contract("orders")).unwrap();
    let strict = fixed.replace("\"maximum\": 1000000", "\"maximum\": 150");
    assert_ne!(strict, fixed);
    let strict_path = dir.path().join("orders.json");
    std::fs::write(&strict_path, strict).unwrap();
    let out = dir.path().join("curated");
    ok(edp(&args(&stage1(&raw, &out, &strict_path))));
    let first = report(&out);

    // The expectation, from the quarantine itself: rows whose only failure is that maximum.
    let q = read_parquet(&out.join("_quarantine/part-00000.parquet"));
    let errors = quarantine_errors(&q);
    let ids = q
        .column_by_name("order_id")
        .unwrap()
        .as_primitive::<Int64Type>();
    let emails = strings(&q, "email");
    let totals = q
        .column_by_name("total_amount")
        .unwrap()
        .as_primitive::<arrow::datatypes::Float64Type>();
    let only_maximum =
        |e: &Vec<(String, String)>| e.iter().all(|(c, r)| c == "total_amount" && r == "maximum");
    // The fixed contract's maximum is 1,000,000 (the generator injects larger amounts).
    let fixed_rows: Vec<usize> = (0..q.num_rows())
        .filter(|&r| only_maximum(&errors[r]) && totals.value(r) <= 1_000_000.0)
        .collect();
    let expected_keys: HashSet<i64> = fixed_rows.iter().map(|&r| ids.value(r)).collect();
    let expected_emails: HashMap<i64, HashSet<String>> =
        fixed_rows.iter().fold(HashMap::new(), |mut m, &r| {
            m.entry(ids.value(r)).or_default().extend(emails[r].clone());
            m
        });
    assert!(
        expected_keys.len() > 100,
        "{} keys to release",
        expected_keys.len()
    );
    assert!(
        fixed_rows.len() < q.num_rows(),
        "some rows fail other rules too"
    );

    let reference = format!("customers={}", customers.display());
    let replay = |to: &std::path::Path| {
        ok(edp(&[
            "replay",
            "--quarantine",
            out.join("_quarantine").to_str().unwrap(),
            "--contract",
            contract("orders").to_str().unwrap(),
            "--reference",
            &reference,
            "--output",
            to.to_str().unwrap(),
        ]))
    };
    let released_dir = dir.path().join("replayed");
    replay(&released_dir);
    let r = report(&released_dir);
    assert_eq!(r["command"], "replay");
    assert_eq!(r["rows_in"], q.num_rows() as u64);
    assert_eq!(r["rows_in"], first["rows_quarantined"]);
    assert_eq!(r["rows_curated"], expected_keys.len() as u64);
    assert_eq!(
        r["duplicates_superseded"],
        (fixed_rows.len() - expected_keys.len()) as u64
    );
    assert_eq!(
        r["rows_quarantined"],
        (q.num_rows() - fixed_rows.len()) as u64
    );
    assert!(r["conservation"]["holds"].as_bool().unwrap());
    // Only the amounts over the fixed maximum still fail it.
    let over = (0..q.num_rows())
        .filter(|&r| totals.is_valid(r) && totals.value(r) > 1_000_000.0)
        .count();
    let failures = r["failures"].as_array().unwrap();
    let maximum = failures
        .iter()
        .find(|f| f["column"] == "total_amount" && f["rule"] == "maximum");
    assert_eq!(
        maximum.map_or(0, |f| f["rows"].as_u64().unwrap()),
        over as u64
    );

    let curated = read_parquet(&released_dir.join("part-00000.parquet"));
    let released: HashSet<i64> = ints(&curated, "order_id").into_iter().collect();
    assert_eq!(released, expected_keys);
    // Hashed e-mails are released as they were quarantined (not hashed a second time).
    for (id, email) in ints(&curated, "order_id")
        .into_iter()
        .zip(strings(&curated, "email"))
    {
        if let Some(e) = email {
            assert!(
                expected_emails[&id].contains(&e),
                "order {id}: e-mail hashed again"
            );
        }
    }
    assert_no_pans(&curated, "released");
    // Tokens are written as stage 1 writes them: no statistics (min/max would be tokens).
    let reader = parquet::file::reader::SerializedFileReader::new(
        std::fs::File::open(released_dir.join("part-00000.parquet")).unwrap(),
    )
    .unwrap();
    let meta = parquet::file::reader::FileReader::metadata(&reader);
    let email = meta
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.name() == "email")
        .unwrap();
    assert!(meta.row_group(0).column(email).statistics().is_none());
    assert!(
        strings(&curated, "email")
            .iter()
            .flatten()
            .all(|e| e.len() == 64 && e.bytes().all(|b| b.is_ascii_hexdigit())),
        "e-mail tokens intact (not scanned and masked as card numbers)"
    );
    let still = read_parquet(&released_dir.join("_quarantine/part-00000.parquet"));
    assert_eq!(still.num_rows(), q.num_rows() - fixed_rows.len());
    // Rows still failing name the raw object and row they came from, as the first run did.
    let origin = |b: &arrow::array::RecordBatch| -> HashSet<(Option<String>, u64)> {
        strings(b, "_edp_source")
            .into_iter()
            .zip(uints(b, "_edp_row"))
            .collect()
    };
    let (first_origin, still_origin) = (origin(&q), origin(&still));
    assert!(still_origin.is_subset(&first_origin));
    assert_eq!(still_origin.len(), still.num_rows());
    assert!(still_origin.iter().all(|(s, _)| s
        .as_deref()
        .is_some_and(|s| s.ends_with("20250116-000000000.parquet"))));

    // A rerun into the same prefix rewrites the same objects: nothing is released twice.
    let before = std::fs::read(released_dir.join("part-00000.parquet")).unwrap();
    replay(&released_dir);
    let after = std::fs::read(released_dir.join("part-00000.parquet")).unwrap();
    assert_eq!(before, after);
    assert_eq!(report(&released_dir)["rows_curated"], r["rows_curated"]);

    // Refused before anything is read: an output holding the quarantine replayed (it would
    // overwrite the original run), and a contract protecting a column differently from the
    // run that quarantined it (tokens cannot become masks).
    let masked = fixed.replace("\"x-pii\": \"hash\"", "\"x-pii\": \"mask\"");
    assert_ne!(masked, fixed);
    let masked_path = dir.path().join("masked").join("orders.json");
    std::fs::create_dir_all(masked_path.parent().unwrap()).unwrap();
    std::fs::write(&masked_path, masked).unwrap();
    std::fs::copy(
        contract("customers"),
        masked_path.with_file_name("customers.json"),
    )
    .unwrap();
    for (contract_path, to, expect) in [
        (
            contract("orders"),
            out.clone(),
            "holds the quarantine object",
        ),
        (
            masked_path,
            dir.path().join("masked-out"),
            "cannot change how a column is protected",
        ),
    ] {
        let o = edp(&[
            "replay",
            "--quarantine",
            out.join("_quarantine").to_str().unwrap(),
            "--contract",
            contract_path.to_str().unwrap(),
            "--reference",
            &reference,
            "--output",
            to.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
        assert!(stderr(&o).contains(expect), "{}", stderr(&o));
    }
    assert!(!dir.path().join("masked-out").exists());
    assert_eq!(report(&out), first, "the original run is untouched");

    // Not a quarantine object: a clear error, nothing written.
    let o = edp(&[
        "replay",
        "--quarantine",
        raw.to_str().unwrap(),
        "--contract",
        contract("orders").to_str().unwrap(),
        "--output",
        dir.path().join("wrong").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not a quarantine object"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.path().join("wrong").exists());
}
