//! Text inputs end to end: the same generated data as Parquet, as DMS CSV (full load without
//! `Op` and CDC with it, plain, gzipped, with a header) and as NDJSON (plain, gzipped) gives the
//! same curated rows and report counts; lines that cannot be decoded end in quarantine with
//! their rule and line number.

use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use tempfile::TempDir;

use crate::util::*;

/// Generates every dataset (sized by `orders` rows) under `dir/<name>/` in `format`.
fn generate_all(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let mut a = vec![
        "generate",
        "--dataset",
        "all",
        "--rows",
        "2000",
        "--seed",
        "11",
        "--fault-rate",
        "0.05",
        "--out",
        out.to_str().unwrap(),
    ];
    a.extend_from_slice(extra);
    ok(edp(&a));
    out
}

/// Each row of `b` as text, without the columns `skip`, sorted: the rows as a multiset (an
/// output's row order follows its input objects' order, which differs between layouts).
fn sorted_rows(b: &RecordBatch, skip: &[&str]) -> Vec<String> {
    let options = FormatOptions::default().with_null("∅");
    let cols: Vec<(String, ArrayFormatter)> = b
        .schema()
        .fields()
        .iter()
        .zip(b.columns())
        .filter(|(f, _)| !skip.contains(&f.name().as_str()))
        .map(|(f, c)| {
            (
                format!("{}:{}", f.name(), c.data_type()),
                ArrayFormatter::try_new(c.as_ref(), &options).unwrap(),
            )
        })
        .collect();
    let mut rows: Vec<String> = (0..b.num_rows())
        .map(|r| {
            cols.iter()
                .map(|(n, f)| format!("{n}={}", f.value(r)))
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect();
    rows.sort();
    rows
}

/// Runs stage 1 on `input` into `out` and returns the curated rows, quarantined rows (without
/// their source and row number, and without the columns `raw_typed`) and the report.
fn curate(
    input: &Path,
    out: &Path,
    dataset: &str,
    extra: &[&str],
    raw_typed: &[&str],
) -> (Vec<String>, Vec<String>, serde_json::Value) {
    let mut a = stage1(input, out, &contract(dataset));
    a.extend(extra.iter().map(|s| s.to_string()));
    ok(edp(&args(&a)));
    let curated = read_parquet(&out.join("part-00000.parquet"));
    let quarantine = read_parquet(&out.join("_quarantine/part-00000.parquet"));
    (
        sorted_rows(&curated, &[]),
        sorted_rows(
            &quarantine,
            &[&["_edp_source", "_edp_row"], raw_typed].concat(),
        ),
        report(out),
    )
}

/// The report's counts, which must not depend on the input format.
fn counts(r: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "rows_in": r["rows_in"],
        "rows_curated": r["rows_curated"],
        "rows_quarantined": r["rows_quarantined"],
        "duplicates_superseded": r["duplicates_superseded"],
        "tombstones": r["tombstones"],
        "failures": r["failures"],
    })
}

#[test]
fn dms_csv_and_ndjson_give_the_curated_output_of_parquet() {
    let dir = TempDir::new().unwrap();
    let pq = generate_all(dir.path(), "pq", &[]);
    let csv = generate_all(dir.path(), "csv", &["--format", "csv"]);
    let gz = generate_all(dir.path(), "gz", &["--format", "csv", "--gzip"]);
    let json = generate_all(dir.path(), "json", &["--format", "ndjson"]);
    let json_gz = generate_all(dir.path(), "json-gz", &["--format", "ndjson", "--gzip"]);
    assert!(gz.join("orders/LOAD00000001.csv.gz").exists());
    assert!(json_gz.join("orders/LOAD00000001.json.gz").exists());
    let lines = std::fs::read_to_string(json.join("orders/LOAD00000001.json")).unwrap();
    assert!(
        lines.lines().all(|l| l.starts_with("{\"order_id\":")),
        "no Op in LOAD"
    );
    let load = std::fs::read_to_string(csv.join("orders/LOAD00000001.csv")).unwrap();
    let cdc = std::fs::read_to_string(csv.join("orders/20250116-000000000.csv")).unwrap();
    // The layout DMS writes: no Op in the full load, Op first in CDC files.
    assert!(load.lines().all(|l| !l.starts_with("I,")), "no Op in LOAD");
    assert!(cdc
        .lines()
        .all(|l| ["I,", "U,", "D,"].iter().any(|p| l.starts_with(p))));
    assert!(load.lines().count() > 500 && cdc.lines().count() > 500);

    let mut quarantined = 0;
    for dataset in DATASETS {
        let out = |name: &str| dir.path().join(format!("out-{name}-{dataset}"));
        // Quarantine keeps raw values as the input typed them: a Parquet timestamp column is
        // text in CSV (curated output types both alike).
        let raw = read_parquet(&pq.join(dataset).join("20250116-000000000.parquet"));
        let schema = raw.schema();
        let typed: Vec<&str> = schema
            .fields()
            .iter()
            .filter(|f| matches!(f.data_type(), arrow::datatypes::DataType::Timestamp(..)))
            .map(|f| f.name().as_str())
            .collect();
        let (c_pq, q_pq, r_pq) = curate(&pq.join(dataset), &out("pq"), dataset, &[], &typed);
        assert!(!c_pq.is_empty(), "{dataset}");
        quarantined += q_pq.len();
        for (name, root) in [
            ("csv", &csv),
            ("gz", &gz),
            ("json", &json),
            ("json-gz", &json_gz),
        ] {
            let (c, q, r) = curate(&root.join(dataset), &out(name), dataset, &[], &typed);
            assert_eq!(c, c_pq, "{dataset} {name}: curated rows");
            assert_eq!(q, q_pq, "{dataset} {name}: quarantined rows and reasons");
            assert_eq!(counts(&r), counts(&r_pq), "{dataset} {name}: report");
        }
    }
    assert!(quarantined > 100, "{quarantined} quarantined rows compared");

    // With a header (AddColumnName=true) the header names the columns.
    let names: Vec<String> = {
        let c: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(contract("orders")).unwrap()).unwrap();
        c["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    assert_eq!(names[0], "Op");
    let with_header = dir.path().join("header/orders");
    std::fs::create_dir_all(&with_header).unwrap();
    std::fs::write(
        with_header.join("LOAD00000001.csv"),
        format!("{}\n{load}", names[1..].join(",")),
    )
    .unwrap();
    std::fs::write(
        with_header.join("20250116-000000000.csv"),
        format!("{}\n{cdc}", names.join(",")),
    )
    .unwrap();
    let (c_pq, q_pq, r_pq) = curate(
        &pq.join("orders"),
        &dir.path().join("out-pq-orders"),
        "orders",
        &[],
        &[],
    );
    let (c, q, r) = curate(
        &with_header,
        &dir.path().join("out-header"),
        "orders",
        &["--csv-header", "true"],
        &[],
    );
    assert_eq!((c, q, counts(&r)), (c_pq, q_pq, counts(&r_pq)));
}

/// A valid order line after `Op`, with `notes` as given (already quoted if it must be).
fn order(id: u32, notes: &str) -> String {
    format!("I,{id},5,paid,10.5,EUR,a@example.com,,,{notes},DE,2024-01-18 01:09:16,2024-01-18 01:09:16\n")
}

#[test]
fn csv_lines_that_cannot_be_decoded_are_quarantined_with_their_rule_and_line() {
    let dir = TempDir::new().unwrap();
    let input = dir.path().join("raw");
    std::fs::create_dir(&input).unwrap();
    let text = [
        order(1, "\"comma, inside\""),
        "I,2,5,paid,10.5,EUR\n".to_string(),
        order(3, "plain").replace("10.5", "ten"),
        order(4, "\"two\nlines \"\"quoted\"\"\""),
        order(5, "bad\"quote 4111111111111111"),
        order(6, "\"\""),
        order(7, "\u{ff}"),
        order(8, "NULL"),
        order(9, "\"NULL\""),
        order(10, "\"open 4111111111111111"),
        order(11, "swallowed by the open quote"),
    ]
    .concat();
    let mut bytes = text.into_bytes();
    // Line 8 (order 7): `ÿ` re-encoded as a lone Latin-1 byte, not UTF-8.
    let at = bytes.windows(2).position(|w| w == "ÿ".as_bytes()).unwrap();
    bytes.splice(at..at + 2, [0xff]);
    std::fs::write(input.join("20250116-000000000.csv"), &bytes).unwrap();
    let out = dir.path().join("out");
    let mut a = stage1(&input, &out, &contract("orders"));
    a.extend(["--csv-null-value".to_string(), "NULL".to_string()]);
    let err = ok(edp(&args(&a)));
    assert!(
        err.contains("rows_in 10 = rows_curated 5 + rows_quarantined 5"),
        "{err}"
    );

    let curated = read_parquet(&out.join("part-00000.parquet"));
    let notes: Vec<(i64, Option<String>)> = ints(&curated, "order_id")
        .into_iter()
        .zip(strings(&curated, "notes"))
        .collect();
    assert_eq!(
        notes,
        vec![
            (1, Some("comma, inside".into())),
            (4, Some("two\nlines \"quoted\"".into())),
            (6, Some(String::new())),
            (8, None),
            (9, Some("NULL".into())),
        ]
    );

    let q = read_parquet(&out.join("_quarantine/part-00000.parquet"));
    let rows = uints(&q, "_edp_row");
    let errors = quarantine_errors(&q);
    assert_eq!(rows, vec![1, 2, 4, 6, 9]);
    let rule = |i: usize| errors[i].clone();
    assert_eq!(rule(0), vec![(String::new(), "csv_fields".to_string())]);
    assert_eq!(
        rule(1),
        vec![("total_amount".to_string(), "type".to_string())]
    );
    assert_eq!(rule(2), vec![(String::new(), "csv_quote".to_string())]);
    assert_eq!(rule(3), vec![("notes".to_string(), "utf8".to_string())]);
    assert_eq!(rule(4), vec![(String::new(), "csv_quote".to_string())]);
    let messages = messages(&q);
    // Line numbers count the newline inside order 4's quoted notes.
    for (m, line) in messages
        .iter()
        .zip(["line 2:", "line 3:", "line 6:", "line 8:", "line 11:"])
    {
        assert!(m.starts_with(line), "{m}");
    }
    assert!(messages[1].contains("`ten` is not a finite number"));
    // The orders contract hashes e-mails: a line that cannot be split is withheld.
    assert!(messages[2].contains("line withheld"), "{}", messages[2]);
    assert!(messages.iter().all(|m| !m.contains("a@example.com")));
    assert!(
        find_pans(&messages.join("\n")).is_empty(),
        "card numbers in quarantine messages"
    );
    assert_no_pans(&q, "quarantine");
    let r = report(&out);
    assert_eq!(r["rows_quarantined"], 5);
}

#[test]
fn ndjson_lines_that_cannot_be_decoded_are_quarantined_with_their_rule_and_line() {
    let dir = TempDir::new().unwrap();
    let input = dir.path().join("raw");
    std::fs::create_dir(&input).unwrap();
    let order = |id: &str, extra: &str| {
        format!(
            "{{\"Op\":\"I\",\"order_id\":{id},\"customer_id\":5,\"status\":\"paid\",\
             \"total_amount\":10.5,\"currency\":\"EUR\",\"email\":\"a@example.com\",\
             \"shipping_country\":\"DE\",\"created_at\":\"2024-01-18 01:09:16\",\
             \"updated_at\":\"2024-01-18 01:09:16\"{extra}}}\n"
        )
    };
    let text = [
        order("1", ",\"notes\":\"comma, \\\"quoted\\\"\\nand a newline\""),
        "\n".to_string(),
        order("2", ",\"notes\":\"x\"").replace("\"total_amount\":10.5", "\"total_amount\":\"ten\""),
        order("3.5", ""),
        "{\"order_id\": 4, \"notes\": \"4111111111111111\"\n".to_string(),
        "[1, 2]\n".to_string(),
        order("6", ",\"notes\":{\"nested\":1}"),
        order("7", ",\"notes\":\"\u{ff}\""),
        order("8", ",\"notes\":null,\"source\":\"web\""),
        format!("{}{}", order("9", "").trim_end(), order("10", "")),
        order("\"11\"", ",\"notes\":\"\""),
    ]
    .concat();
    let mut bytes = text.into_bytes();
    // Line 8 (order 7): `ÿ` re-encoded as a lone Latin-1 byte, not UTF-8.
    let at = bytes.windows(2).position(|w| w == "ÿ".as_bytes()).unwrap();
    bytes.splice(at..at + 2, [0xff]);
    std::fs::write(input.join("events.jsonl"), &bytes).unwrap();
    let out = dir.path().join("out");
    let err = ok(edp(&args(&stage1(&input, &out, &contract("orders")))));
    assert!(
        err.contains("rows_in 10 = rows_curated 3 + rows_quarantined 7"),
        "{err}"
    );

    let curated = read_parquet(&out.join("part-00000.parquet"));
    assert_eq!(ints(&curated, "order_id"), vec![1, 8, 11]);
    assert_eq!(
        strings(&curated, "notes"),
        vec![
            Some("comma, \"quoted\"\nand a newline".into()),
            None,
            Some(String::new())
        ]
    );
    // A field the contract does not declare is an extra column.
    assert_eq!(
        strings(&curated, "source"),
        vec![None, Some("web".into()), None]
    );

    let q = read_parquet(&out.join("_quarantine/part-00000.parquet"));
    assert_eq!(uints(&q, "_edp_row"), vec![1, 2, 3, 4, 5, 6, 8]);
    let errors = quarantine_errors(&q);
    let rules: Vec<(String, String)> = errors.iter().map(|e| e[0].clone()).collect();
    let at = |c: &str, r: &str| (c.to_string(), r.to_string());
    assert_eq!(
        rules,
        vec![
            at("total_amount", "type"),
            at("order_id", "type"),
            at("", "json_syntax"),
            at("", "json_syntax"),
            at("notes", "type"),
            at("", "utf8"),
            at("", "json_syntax"),
        ]
    );
    let messages = messages(&q);
    for (m, line) in messages.iter().zip([
        "line 3:", "line 4:", "line 5:", "line 6:", "line 7:", "line 8:", "line 10:",
    ]) {
        assert!(m.starts_with(line), "{m}");
    }
    assert!(
        messages[1].contains("`3.5` is not an integer"),
        "{}",
        messages[1]
    );
    // The orders contract hashes e-mails: a line that is not JSON is withheld.
    assert!(messages[2].contains("line withheld"), "{}", messages[2]);
    assert!(messages.iter().all(|m| !m.contains("a@example.com")));
    assert!(
        find_pans(&messages.join("\n")).is_empty(),
        "card numbers in quarantine messages"
    );
    assert_no_pans(&q, "quarantine");
}

/// The message of each quarantined row's (single) error.
fn messages(q: &RecordBatch) -> Vec<String> {
    use arrow::array::{Array, AsArray};
    let list = q.column_by_name("_edp_errors").unwrap().as_list::<i32>();
    (0..list.len())
        .map(|i| {
            let s = list.value(i);
            let m = s
                .as_struct()
                .column_by_name("message")
                .unwrap()
                .as_string::<i32>();
            m.value(0).to_string()
        })
        .collect()
}

#[test]
fn a_text_object_that_cannot_be_read_is_a_file_error_and_writes_nothing() {
    let dir = TempDir::new().unwrap();
    let csv = generate_all(dir.path(), "gz", &["--format", "csv", "--gzip"]);
    let whole = std::fs::read(csv.join("orders/20250116-000000000.csv.gz")).unwrap();
    let cut = dir.path().join("cut");
    std::fs::create_dir(&cut).unwrap();
    std::fs::write(
        cut.join("20250116-000000000.csv.gz"),
        &whole[..whole.len() / 2],
    )
    .unwrap();
    let wrong = dir.path().join("wrong");
    std::fs::create_dir(&wrong).unwrap();
    std::fs::write(wrong.join("x.csv"), "1,2,3\n4,5,6\n").unwrap();
    // NDJSON: a truncated gzip object, and a pretty-printed document (no line is an object).
    let json = generate_all(dir.path(), "json-gz", &["--format", "ndjson", "--gzip"]);
    let whole = std::fs::read(json.join("orders/20250116-000000000.json.gz")).unwrap();
    let cut_json = dir.path().join("cut-json");
    std::fs::create_dir(&cut_json).unwrap();
    std::fs::write(cut_json.join("x.json.gz"), &whole[..whole.len() / 2]).unwrap();
    let pretty = dir.path().join("pretty");
    std::fs::create_dir(&pretty).unwrap();
    std::fs::write(
        pretty.join("x.json"),
        "{\n  \"order_id\": 1,\n  \"Op\": \"I\"\n}\n",
    )
    .unwrap();
    for (input, expect) in [
        (&cut, "incomplete"),
        (
            &wrong,
            "no line has the contract's field count: expected 13",
        ),
        (&cut_json, "incomplete"),
        (&pretty, "no line is a JSON object"),
    ] {
        let out = dir
            .path()
            .join(format!("out-{}", input.display()).replace('/', "_"));
        let o = edp(&args(&stage1(input, &out, &contract("orders"))));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(4), "{err}");
        assert!(err.contains(expect), "{err}");
        assert!(!out.exists(), "nothing written for {}", input.display());
    }
}
