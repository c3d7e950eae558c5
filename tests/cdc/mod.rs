//! Stage 1 under real CDC and hostile input (issue 11): key-only deletes, the latest valid
//! version, all-null columns, card numbers in columns of any type, and a failed run that
//! publishes nothing. Inputs are built row by row here, so each expectation is written out.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, DictionaryArray, Float64Array, Int64Array, ListArray, NullArray,
    RecordBatch, StringArray, StructArray,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Int32Type, Schema};
use tempfile::TempDir;

use crate::util::*;

const CONTRACT: &str = r#"{
  "title": "shop_orders",
  "type": "object",
  "required": ["id", "ts", "status", "amount"],
  "properties": {
    "Op":       { "type": "string", "enum": ["I", "U", "D"] },
    "id":       { "type": "integer", "minimum": 1 },
    "ts":       { "type": "string", "format": "date-time" },
    "status":   { "enum": ["new", "paid", "shipped"] },
    "amount":   { "type": "number", "minimum": 0 },
    "discount": { "type": ["number", "null"] }
  },
  "x-primary-key": ["id"],
  "x-event-time": "ts",
  "x-cdc-op": "Op"
}"#;

/// One raw row: op, id, event time, status, amount (`None`: null, as in a key-only delete).
type Row = (
    &'static str,
    i64,
    &'static str,
    Option<&'static str>,
    Option<f64>,
);

fn batch(rows: &[Row]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("Op", DataType::Utf8, true),
        Field::new("id", DataType::Int64, true),
        Field::new("ts", DataType::Utf8, true),
        Field::new("status", DataType::Utf8, true),
        Field::new("amount", DataType::Float64, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
        Arc::new(StringArray::from(
            rows.iter().map(|r| r.3).collect::<Vec<_>>(),
        )),
        Arc::new(Float64Array::from(
            rows.iter().map(|r| r.4).collect::<Vec<_>>(),
        )),
    ];
    RecordBatch::try_new(schema, columns).unwrap()
}

fn contract_file(dir: &Path) -> PathBuf {
    let path = dir.join("shop_orders.json");
    std::fs::write(&path, CONTRACT).unwrap();
    path
}

/// Runs stage 1 over `input` (a file or a prefix) into `dir/<name>` and returns the output.
fn run(dir: &Path, input: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let mut a = stage1(input, &out, &contract_file(dir));
    a.extend(extra.iter().map(|s| s.to_string()));
    ok(edp(&args(&a)));
    out
}

/// Curated `(id, ts, op)` sorted by id.
fn curated(out: &Path) -> Vec<(i64, Option<String>, Option<String>)> {
    let b = read_parquet(&out.join("part-00000.parquet"));
    let ids = ints(&b, "id");
    let ts: Vec<Option<String>> = micros(&b, "ts")
        .into_iter()
        .map(|m| m.map(|m| m.to_string()))
        .collect();
    let ops = strings(&b, "Op");
    let mut rows: Vec<_> = (0..b.num_rows())
        .map(|i| (ids[i], ts[i].clone(), ops[i].clone()))
        .collect();
    rows.sort();
    rows
}

fn at(ts: &str) -> Option<String> {
    parse_micros(ts).map(|m| m.to_string())
}

#[test]
fn key_only_deletes_reach_curated_as_tombstones() {
    let dir = TempDir::new().unwrap();
    let raw = dir.path().join("raw.parquet");
    write_parquet(
        &raw,
        &batch(&[
            ("I", 1, "2025-01-16T10:00:00Z", Some("new"), Some(10.0)),
            ("I", 2, "2025-01-16T10:00:00Z", Some("new"), Some(20.0)),
            // As DMS writes a delete without a full row image: key, event time, op.
            ("D", 1, "2025-01-16T11:00:00Z", None, None),
            // A delete's other columns are not checked at all.
            ("D", 2, "2025-01-16T11:00:00Z", Some("lost"), Some(-1.0)),
            // A delete is checked on its key and event time.
            ("D", 3, "not a time", None, None),
        ]),
        None,
    );
    let out = run(dir.path(), &raw, "out", &[]);
    assert_eq!(
        curated(&out),
        [
            (1, at("2025-01-16T11:00:00Z"), Some("D".into())),
            (2, at("2025-01-16T11:00:00Z"), Some("D".into())),
        ]
    );
    let rep = report(&out);
    assert_eq!(rep["tombstones"], 2);
    assert_eq!(rep["rows_quarantined"], 1);
    let q = read_parquet(&out.join("_quarantine/part-00000.parquet"));
    assert_eq!(ints(&q, "id"), [3]);
    assert_eq!(
        quarantine_errors(&q)[0],
        [("ts".to_string(), "format".to_string())]
    );
}

/// Raw versions of five keys over two files: the expected curated row of each key is its
/// latest valid version.
fn versions() -> (Vec<Row>, Vec<Row>) {
    let first = vec![
        ("I", 1, "2025-01-16T10:00:00Z", Some("new"), Some(10.0)),
        ("U", 1, "2025-01-16T11:00:00Z", Some("paid"), Some(10.0)),
        ("I", 2, "2025-01-16T10:00:00Z", Some("new"), Some(20.0)),
        ("I", 3, "2025-01-16T10:00:00Z", Some("bogus"), Some(30.0)),
        ("I", 4, "2025-01-16T10:00:00Z", Some("new"), Some(40.0)),
        ("I", 5, "2025-01-16T10:00:00Z", Some("new"), Some(50.0)),
        ("D", 5, "2025-01-16T11:00:00Z", None, None),
    ];
    let second = vec![
        // Latest version invalid: the 11:00 version stays current.
        ("U", 1, "2025-01-16T12:00:00Z", Some("bogus"), Some(10.0)),
        // Across files: the earlier file's version stays current.
        ("U", 4, "2025-01-16T12:00:00Z", Some("paid"), Some(-4.0)),
        // After an invalid update the delete before it is the latest valid version.
        ("U", 5, "2025-01-16T12:00:00Z", Some("paid"), None),
    ];
    (first, second)
}

fn expected_versions() -> Vec<(i64, Option<String>, Option<String>)> {
    vec![
        (1, at("2025-01-16T11:00:00Z"), Some("U".into())),
        (2, at("2025-01-16T10:00:00Z"), Some("I".into())),
        (4, at("2025-01-16T10:00:00Z"), Some("I".into())),
        (5, at("2025-01-16T11:00:00Z"), Some("D".into())),
    ]
}

#[test]
fn an_invalid_latest_version_keeps_the_previous_valid_one() {
    let dir = TempDir::new().unwrap();
    let (first, second) = versions();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    write_parquet(&input.join("LOAD00000001.parquet"), &batch(&first), None);
    write_parquet(
        &input.join("20250116-120000000.parquet"),
        &batch(&second),
        None,
    );
    let out = run(dir.path(), &input, "out", &[]);
    assert_eq!(curated(&out), expected_versions());
    let rep = report(&out);
    assert_eq!(rep["rows_in"], 10);
    assert_eq!(rep["rows_quarantined"], 4, "{rep}");
    assert_eq!(rep["rows_curated"], 4);
    // Key 1 at 10:00, key 5's insert.
    assert_eq!(rep["duplicates_superseded"], 2);
    assert_eq!(rep["earlier_valid_versions"], 3);
    assert_eq!(rep["tombstones"], 1);

    // The same rows cut into one file give the same curated rows.
    let one = dir.path().join("one.parquet");
    let all: Vec<Row> = first.iter().chain(&second).copied().collect();
    write_parquet(&one, &batch(&all), None);
    assert_eq!(
        curated(&run(dir.path(), &one, "one", &[])),
        expected_versions()
    );

    // So do two shards together.
    let mut shards = Vec::new();
    for index in 0..2 {
        let shard = format!("{index}/2");
        let o = run(dir.path(), &input, "shards", &["--shard", &shard]);
        let b = read_parquet(&o.join(format!("part-{index:05}-of-00002.parquet")));
        shards.extend(ints(&b, "id"));
    }
    shards.sort_unstable();
    assert_eq!(shards, [1, 2, 4, 5]);
}

#[test]
fn an_all_null_column_reads_as_the_contract_type() {
    let dir = TempDir::new().unwrap();
    let base = batch(&[
        ("I", 1, "2025-01-16T10:00:00Z", Some("new"), Some(10.0)),
        ("I", 2, "2025-01-16T10:00:00Z", Some("new"), Some(20.0)),
    ]);
    // What pyarrow writes for columns of `None`: Arrow type Null.
    let mut fields: Vec<Field> = base
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("discount", DataType::Null, true));
    fields.push(Field::new("comment", DataType::Null, true));
    let mut columns = base.columns().to_vec();
    columns.push(Arc::new(NullArray::new(2)));
    columns.push(Arc::new(NullArray::new(2)));
    let raw = dir.path().join("raw.parquet");
    write_parquet(
        &raw,
        &RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap(),
        None,
    );
    let out = run(dir.path(), &raw, "out", &[]);
    let c = read_parquet(&out.join("part-00000.parquet"));
    assert_eq!(c.num_rows(), 2);
    let discount = c.column_by_name("discount").unwrap();
    assert_eq!(discount.data_type(), &DataType::Float64);
    assert_eq!(discount.null_count(), 2);
    let comment = c.column_by_name("comment").unwrap();
    assert_eq!(comment.data_type(), &DataType::Utf8);
    assert_eq!(comment.null_count(), 2);
}

const PAN: &str = "4111111111111111";

/// Every file under `dir`, as bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

fn holds(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn card_numbers_are_masked_in_columns_of_every_string_and_byte_type() {
    let dir = TempDir::new().unwrap();
    let base = batch(&[
        ("I", 1, "2025-01-16T10:00:00Z", Some("new"), Some(10.0)),
        // Invalid: quarantine must not leak either.
        ("I", 2, "2025-01-16T10:00:00Z", Some("bogus"), Some(20.0)),
    ]);
    let text = format!("card {PAN} on file");
    let glued = format!("ref12{PAN}");
    let dict: DictionaryArray<Int32Type> =
        vec![text.as_str(), glued.as_str()].into_iter().collect();
    let item = Arc::new(Field::new("item", DataType::Utf8, true));
    let list = ListArray::new(
        item.clone(),
        OffsetBuffer::from_lengths([2, 1]),
        Arc::new(StringArray::from(vec![
            Some("a"),
            Some(text.as_str()),
            Some(glued.as_str()),
        ])),
        None,
    );
    let inner = StructArray::from(vec![(
        Arc::new(Field::new("memo", DataType::Utf8, true)),
        Arc::new(StringArray::from(vec![text.as_str(), "x"])) as ArrayRef,
    )]);
    let binary = BinaryArray::from_iter_values([text.as_bytes(), b"plain"]);
    let wide = format!("\u{ff14}{}", "\u{ff11}".repeat(15));
    let extra: Vec<(&str, ArrayRef)> = vec![
        ("dict", Arc::new(dict)),
        ("list", Arc::new(list)),
        ("nested", Arc::new(inner)),
        ("blob", Arc::new(binary)),
        (
            "fullwidth",
            Arc::new(StringArray::from(vec![wide.as_str(), "none"])),
        ),
    ];
    let mut fields: Vec<Field> = base
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut columns = base.columns().to_vec();
    for (name, a) in extra {
        fields.push(Field::new(name, a.data_type().clone(), true));
        columns.push(a);
    }
    let raw = dir.path().join("raw.parquet");
    write_parquet(
        &raw,
        &RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap(),
        None,
    );
    let out = run(dir.path(), &raw, "out", &["--compression", "none"]);
    assert_eq!(report(&out)["rows_quarantined"], 1);
    let written = files(&out);
    assert!(written.len() >= 3, "{written:?}");
    for (path, bytes) in &written {
        assert!(
            !holds(bytes, PAN.as_bytes()),
            "{} holds the card number",
            path.display()
        );
        assert!(
            !holds(bytes, "\u{ff14}\u{ff11}\u{ff11}\u{ff11}\u{ff14}".as_bytes()),
            "{} holds the full-width card number",
            path.display()
        );
    }
    // The values are there, masked to their last four digits.
    let c = read_parquet(&out.join("part-00000.parquet"));
    let blob = c.column_by_name("blob").unwrap();
    let blob = blob.as_any().downcast_ref::<BinaryArray>().unwrap();
    assert_eq!(blob.value(0), b"card ************1111 on file");
}

#[test]
fn a_card_number_in_a_number_column_refuses_the_file() {
    let dir = TempDir::new().unwrap();
    let base = batch(&[("I", 1, "2025-01-16T10:00:00Z", Some("new"), Some(10.0))]);
    let mut fields: Vec<Field> = base
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("reference", DataType::Int64, true));
    let mut columns = base.columns().to_vec();
    columns.push(Arc::new(Int64Array::from(vec![PAN
        .parse::<i64>()
        .unwrap()])));
    let raw = dir.path().join("raw.parquet");
    write_parquet(
        &raw,
        &RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap(),
        None,
    );
    let out = dir.path().join("out");
    let o = edp(&args(&stage1(&raw, &out, &contract_file(dir.path()))));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(
        err.contains("reference") && err.contains("raw.parquet"),
        "{err}"
    );
    assert!(!err.contains(PAN), "{err}");
    assert!(
        !out.exists() || files(&out).is_empty(),
        "something was written"
    );
}

#[test]
fn a_run_that_cannot_publish_everything_publishes_nothing() {
    let dir = TempDir::new().unwrap();
    let (first, second) = versions();
    let all: Vec<Row> = first.iter().chain(&second).copied().collect();
    let raw = dir.path().join("raw.parquet");
    write_parquet(&raw, &batch(&all), None);
    let contract = contract_file(dir.path());
    // A run into `out` where a directory holds the name `blocked` (under `out`): it must fail.
    let fails = |out: &Path, blocked: &str| {
        std::fs::create_dir_all(out.join(blocked).join("blocker")).unwrap();
        let o = edp(&args(&stage1(&raw, out, &contract)));
        assert!(!o.status.success(), "{}", stderr(&o));
    };

    // The curated object cannot be completed.
    let out = dir.path().join("a");
    fails(&out, "part-00000.parquet");
    assert!(!out.join("_quarantine/part-00000.parquet").exists());
    assert!(!out.join("_edp_report.json").exists());

    // A failed rerun leaves no report of the run before it beside its own parts.
    let out = dir.path().join("c");
    ok(edp(&args(&stage1(&raw, &out, &contract))));
    assert!(out.join("_edp_report.json").exists());
    std::fs::remove_file(out.join("part-00000.parquet")).unwrap();
    fails(&out, "part-00000.parquet");
    assert!(!out.join("_edp_report.json").exists());
    assert!(!out.join("_quarantine/part-00000.parquet").exists());

    // The report cannot be written: neither part stays visible.
    let out = dir.path().join("b");
    fails(&out, "_edp_report.json");
    assert!(!out.join("part-00000.parquet").exists());
    assert!(!out.join("_quarantine/part-00000.parquet").exists());
}
