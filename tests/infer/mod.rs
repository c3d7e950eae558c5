//! `edp contract infer` on every generated dataset: the contract it prints is accepted as is,
//! finds what the hand-written contracts in `fixtures/contracts` declare (primary key, CDC
//! columns, card number and format columns), curates the dataset with few quarantined rows and
//! never prints a card number.

use std::path::Path;

use serde_json::Value;
use tempfile::TempDir;

use crate::util::*;

/// Runs `edp contract infer` with `extra` arguments on `input`; returns the contract's text.
fn infer(input: &Path, extra: &[&str]) -> String {
    let mut a = vec!["contract", "infer", "--input", input.to_str().unwrap()];
    a.extend_from_slice(extra);
    let o = edp(&a);
    ok(o.clone());
    String::from_utf8(o.stdout).unwrap()
}

/// The properties of `contract` for which `pick` holds, in order.
fn columns(contract: &Value, pick: impl Fn(&Value) -> bool) -> Vec<String> {
    contract["properties"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, p)| pick(p))
        .map(|(n, _)| n.clone())
        .collect()
}

#[test]
fn inferred_contracts_find_keys_cdc_columns_and_card_numbers_and_curate_their_dataset() {
    let dir = TempDir::new().unwrap();
    let raw = dir.path().join("raw");
    ok(edp(&[
        "generate",
        "--dataset",
        "all",
        "--rows",
        "3000",
        "--seed",
        "5",
        "--out",
        raw.to_str().unwrap(),
    ]));
    for dataset in DATASETS {
        let input = raw.join(dataset).join("20250116-000000000.parquet");
        let text = infer(&input, &[]);
        assert!(
            find_pans(&text).is_empty(),
            "{dataset}: a card number printed"
        );
        let inferred: Value = serde_json::from_str(&text).unwrap();
        let fixture: Value =
            serde_json::from_str(&std::fs::read_to_string(contract(dataset)).unwrap()).unwrap();
        assert_eq!(inferred["title"], dataset);
        for key in ["x-primary-key", "x-event-time", "x-cdc-op", "x-sequence"] {
            assert_eq!(inferred[key], fixture[key], "{dataset} {key}");
        }
        let pan = |p: &Value| p["x-pci"] == "pan";
        assert_eq!(
            columns(&inferred, pan),
            columns(&fixture, pan),
            "{dataset} x-pci"
        );
        for (name, p) in fixture["properties"].as_object().unwrap() {
            let format = &p["format"];
            if format.is_string() {
                assert_eq!(
                    &inferred["properties"][name]["format"], format,
                    "{dataset}.{name}"
                );
            }
        }
        assert!(inferred["$comment"]
            .as_str()
            .unwrap()
            .contains("Primary key"));

        // Accepted as is: it curates its dataset, quarantining few rows.
        let path = dir.path().join(format!("{dataset}.json"));
        std::fs::write(&path, &text).unwrap();
        let out = dir.path().join(format!("out-{dataset}"));
        ok(edp(&args(&stage1(&input, &out, &path))));
        let r = report(&out);
        let (rows, quarantined) = (
            r["rows_in"].as_u64().unwrap(),
            r["rows_quarantined"].as_u64().unwrap(),
        );
        assert!(rows >= 50, "{dataset}: {rows} rows");
        assert!(
            quarantined * 10 < rows,
            "{dataset}: {quarantined} of {rows} quarantined"
        );
        assert!(r["rows_curated"].as_u64().unwrap() > rows / 2, "{dataset}");
    }
}

#[test]
fn infer_reads_ndjson_and_csv_with_a_header_and_refuses_csv_without_one() {
    let dir = TempDir::new().unwrap();
    let json = dir.path().join("json");
    ok(edp(&[
        "generate",
        "--dataset",
        "orders",
        "--rows",
        "3000",
        "--format",
        "ndjson",
        "--out",
        json.to_str().unwrap(),
    ]));
    // The full load (no Op) comes first; the CDC object adds Op.
    let inferred: Value = serde_json::from_str(&infer(&json, &["--title", "orders"])).unwrap();
    assert_eq!(inferred["x-primary-key"], serde_json::json!(["order_id"]));
    assert_eq!(inferred["x-cdc-op"], "Op");
    assert_eq!(inferred["properties"]["order_id"]["type"], "integer");
    assert_eq!(inferred["properties"]["total_amount"]["type"], "number");
    assert_eq!(inferred["properties"]["email"]["format"], "email");

    let csv = dir.path().join("csv");
    std::fs::create_dir(&csv).unwrap();
    std::fs::write(
        csv.join("x.csv"),
        "id,amount,flag,zip,when,card,seq\n\
         1,2.5,true,01234,2024-01-18 01:09:16,4111111111111111,20240118010916000000000000000000001\n\
         2,3,false,99999,2024-01-19 02:00:00,5555555555554444,20240119020000000000000000000000002\n",
    )
    .unwrap();
    let o = edp(&["contract", "infer", "--input", csv.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("--csv-header true"), "{}", stderr(&o));
    let inferred: Value = serde_json::from_str(&infer(&csv, &["--csv-header", "true"])).unwrap();
    let ty = |c: &str| inferred["properties"][c]["type"].clone();
    assert_eq!(
        [
            ty("id"),
            ty("amount"),
            ty("flag"),
            ty("zip"),
            ty("card"),
            ty("seq")
        ],
        ["integer", "number", "boolean", "string", "string", "string"].map(Value::from),
        "a leading zero, a card number or too many digits keep a column text"
    );
    assert_eq!(inferred["properties"]["card"]["x-pci"], "pan");
    assert_eq!(inferred["properties"]["when"]["format"], "date-time");
    assert_eq!(inferred["title"], "csv");
    assert_eq!(inferred["x-primary-key"], serde_json::json!(["id"]));
}
