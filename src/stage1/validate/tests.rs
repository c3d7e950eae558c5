//! Unit tests of the validator: length rules count characters, curated rows carry typed dates.

use super::check::string_check;
use super::*;
use arrow::array::StringArray;
use arrow::datatypes::{Date32Type, TimestampMicrosecondType};

#[test]
fn length_rules_count_characters_not_bytes() {
    let a = StringArray::from(vec![
        Some("a"),
        Some("ab"),
        Some("é"),
        Some("éé"),
        Some("ééé"),
        Some("abcd"),
        Some("éééé"),
        None,
    ]);
    let fails = |check: Check| -> Vec<bool> {
        let rows = string_check(&a, &check).unwrap();
        (0..a.len()).map(|i| rows.value(i)).collect()
    };
    let (t, f) = (true, false);
    assert_eq!(fails(Check::MinLength(2)), [t, f, t, f, f, f, f, f]);
    assert_eq!(fails(Check::MaxLength(3)), [f, f, f, f, f, t, t, f]);
}

#[test]
fn curated_rows_carry_typed_dates() {
    let contract = Contract::from_json_str(
        "t.json",
        r#"{"title": "t", "type": "object", "required": ["at", "day"], "properties": {
                "at": {"type": "string", "format": "date-time"},
                "day": {"type": "string", "format": "date"},
                "note": {"type": ["string", "null"]}}}"#,
    )
    .unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("at", DataType::Utf8, false),
        Field::new("day", DataType::Utf8, false),
        Field::new("note", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec![
                "2025-01-16 12:34:56.1234567+01:00",
                "not a time",
                "1969-12-31T23:59:59.9999999Z",
                "9999-12-31 23:59:59",
            ])),
            Arc::new(StringArray::from(vec![
                "2025-01-16",
                "2025-01-17",
                "1969-12-31",
                "1970-01-02",
            ])),
            Arc::new(StringArray::from(vec![
                Some("x"),
                None,
                Some("y"),
                Some("z"),
            ])),
        ],
    )
    .unwrap();
    let verdict = Validator::new(&contract, &schema, "t")
        .unwrap()
        .validate(&batch, false)
        .unwrap();
    let invalid = verdict.invalid.clone().unwrap();
    let keep = BooleanArray::new(!&invalid, None);
    let c_schema = curated_schema(&contract, &schema);
    let curated = verdict.curated(batch, Some(&keep), &c_schema).unwrap();
    assert_eq!(curated.schema(), c_schema);
    assert_eq!(curated.num_rows(), 3);
    let at = curated.column(0).as_primitive::<TimestampMicrosecondType>();
    // Digits past the microsecond are dropped (towards the past), the offset applied.
    assert_eq!(at.value(0), 1_737_027_296_123_456);
    assert_eq!(at.value(1), -1);
    assert_eq!(at.value(2), 253_402_300_799_000_000);
    assert_eq!(at.data_type(), c_schema.field(0).data_type());
    let day = curated.column(1).as_primitive::<Date32Type>();
    assert_eq!(day.values().to_vec(), vec![20_104, -1, 1]);
    assert_eq!(curated.column(2).as_string::<i32>().value(2), "z");
}

/// A contract with `x-rules` over an integer, a number, a date-time and an optional column.
fn rules_contract(rules: &str) -> Result<Contract> {
    Contract::from_json_str(
        "r.json",
        &format!(
            r#"{{"title": "r", "type": "object", "required": ["id", "created_at", "updated_at"],
                "x-primary-key": ["id"], "x-cdc-op": "Op",
                "properties": {{
                    "Op": {{"type": ["string", "null"]}},
                    "id": {{"type": "integer"}},
                    "total": {{"type": ["number", "null"]}},
                    "discount": {{"type": ["number", "null"]}},
                    "email": {{"type": ["string", "null"]}},
                    "phone": {{"type": ["string", "null"]}},
                    "created_at": {{"type": "string", "format": "date-time"}},
                    "updated_at": {{"type": "string", "format": "date-time"}}}},
                "x-rules": {rules}}}"#
        ),
    )
}

/// op, id, total, discount, phone, created_at, updated_at.
type Row = (
    &'static str,
    i64,
    Option<f64>,
    Option<f64>,
    Option<&'static str>,
    &'static str,
    &'static str,
);

#[test]
fn row_rules_break_where_false_and_pass_where_null() {
    let contract = rules_contract(
        r#"[{"name": "updated_after_created", "check": "updated_at >= created_at"},
            {"name": "discount_within_total", "check": "discount <= total"},
            {"name": "reachable", "check": "coalesce(phone, email) IS NOT NULL"},
            {"name": "ratio", "check": "id / cast(total AS BIGINT) < 100",
             "description": "fails to evaluate where total is 0"},
            {"name": "small_id", "check": "id < 6",
             "description": "reads only the key; the delete of row 5 breaks it"},
            {"name": "guarded", "check": "total = 0 OR id / cast(total AS BIGINT) < 100",
             "description": "fails on the batch, on no row alone (short-circuit)"}]"#,
    )
    .unwrap();
    assert_eq!(contract.rules[0].columns, ["created_at", "updated_at"]);
    // No `email` column in the data: the rule reads it as null.
    let schema = Arc::new(Schema::new(vec![
        Field::new("Op", DataType::Utf8, true),
        Field::new("id", DataType::Int64, false),
        Field::new("total", DataType::Float64, true),
        Field::new("discount", DataType::Float64, true),
        Field::new("phone", DataType::Utf8, true),
        Field::new("created_at", DataType::Utf8, false),
        Field::new("updated_at", DataType::Utf8, false),
    ]));
    let rows: [Row; 6] = [
        // 0: every rule holds; `updated_at` is an hour later in another offset.
        (
            "I",
            1,
            Some(10.0),
            Some(1.0),
            Some("+1"),
            "2025-01-16T12:00:00+02:00",
            "2025-01-16T11:00:00Z",
        ),
        // 1: updated before created (text order says otherwise: instants are compared).
        (
            "U",
            2,
            Some(10.0),
            Some(1.0),
            Some("+1"),
            "2025-01-16T12:00:00Z",
            "2025-01-16T13:00:00+02:00",
        ),
        // 2: discount over total, no phone and no email.
        (
            "U",
            3,
            Some(10.0),
            Some(11.0),
            None,
            "2025-01-16T12:00:00Z",
            "2025-01-16T12:00:00Z",
        ),
        // 3: null discount and an invalid date: both rules are null, so they pass.
        (
            "U",
            4,
            Some(10.0),
            None,
            Some("+1"),
            "not a time",
            "2025-01-16T12:00:00Z",
        ),
        // 4: total 0: the division fails on this row only.
        (
            "U",
            5,
            Some(0.0),
            None,
            Some("+1"),
            "2025-01-16T12:00:00Z",
            "2025-01-16T12:00:00Z",
        ),
        // 5: a delete breaking every rule: row rules do not apply to deletes.
        (
            "D",
            6,
            Some(0.0),
            Some(11.0),
            None,
            "2025-01-16T12:00:00Z",
            "2025-01-15T12:00:00Z",
        ),
    ];
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(arrow::array::Int64Array::from_iter_values(
                rows.iter().map(|r| r.1),
            )),
            Arc::new(arrow::array::Float64Array::from_iter(
                rows.iter().map(|r| r.2),
            )),
            Arc::new(arrow::array::Float64Array::from_iter(
                rows.iter().map(|r| r.3),
            )),
            Arc::new(StringArray::from_iter(rows.iter().map(|r| r.4))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.5))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.6))),
        ],
    )
    .unwrap();
    let verdict = Validator::new(&contract, &schema, "t")
        .unwrap()
        .validate(&batch, false)
        .unwrap();
    let broken: Vec<(String, String, Vec<usize>)> = verdict
        .failures
        .iter()
        .map(|f| {
            (
                f.rule.to_string(),
                f.message.to_string(),
                f.rows.set_indices().collect(),
            )
        })
        .collect();
    let by_rule = |rule: &str| -> Vec<(String, Vec<usize>)> {
        broken
            .iter()
            .filter(|b| b.0 == rule)
            .map(|b| (b.1.clone(), b.2.clone()))
            .collect()
    };
    assert_eq!(
        by_rule("updated_after_created"),
        [("`updated_at >= created_at` is false".to_string(), vec![1])]
    );
    assert_eq!(by_rule("discount_within_total").len(), 1);
    assert_eq!(by_rule("discount_within_total")[0].1, [2]);
    assert_eq!(by_rule("reachable")[0].1, [2]);
    let ratio = by_rule("ratio");
    assert_eq!(ratio.len(), 1, "{ratio:?}");
    assert!(ratio[0].0.contains("could not be evaluated"), "{ratio:?}");
    assert_eq!(ratio[0].1, [4]);
    // A rule over dedup columns only does not apply to deletes either, and a rule that fails
    // on the batch but on none of its rows breaks nowhere.
    assert!(by_rule("small_id").is_empty(), "{broken:?}");
    assert!(by_rule("guarded").is_empty(), "{broken:?}");
    // The invalid date of row 3 is a `format` failure, not a rule's.
    assert_eq!(by_rule("format")[0].1, [3]);
    let column = |rule: &str| {
        verdict
            .failures
            .iter()
            .find(|f| &*f.rule == rule)
            .map(|f| f.column.to_string())
    };
    assert_eq!(column("reachable").as_deref(), Some("email,phone"));
}

#[test]
fn row_rules_are_checked_when_the_contract_is_parsed() {
    let err = |rules: &str| rules_contract(rules).unwrap_err().to_string();
    let e = err(r#"[{"name": "a", "check": "shipped_at >= created_at"}]"#);
    assert!(
        e.contains("r.json") && e.contains("/x-rules/0/check") && e.contains("shipped_at"),
        "{e}"
    );
    let e = err(r#"[{"name": "a", "check": "total + 1"}]"#);
    assert!(
        e.contains("/x-rules/0/check") && e.contains("not boolean"),
        "{e}"
    );
    let e = err(r#"[{"name": "a", "check": "sum(total) > 0"}]"#);
    assert!(e.contains("aggregate"), "{e}");
    let e = err(r#"[{"name": "a", "check": "total >"}]"#);
    assert!(e.contains("/x-rules/0/check"), "{e}");
    let e = err(r#"[{"name": "a", "check": "true"}, {"name": "a", "check": "true"}]"#);
    assert!(e.contains("/x-rules/1/name") && e.contains("twice"), "{e}");
    let e = err(r#"[{"name": "format", "check": "true"}]"#);
    assert!(
        e.contains("/x-rules/0/name") && e.contains("keyword"),
        "{e}"
    );
    let e = err(r#"[{"name": "a b", "check": "true"}]"#);
    assert!(e.contains("/x-rules/0/name"), "{e}");
    let e = err(r#"[{"name": "a", "check": "true", "severity": "warn"}]"#);
    assert!(e.contains("/x-rules/0/severity"), "{e}");
    // Column names are as written: `op` is not `Op`.
    let e = err(r#"[{"name": "a", "check": "op = 'I'"}]"#);
    assert!(e.contains("/x-rules/0/check"), "{e}");
    assert!(rules_contract(r#"[{"name": "a", "check": "Op IN ('I', 'U') OR id > 0"}]"#).is_ok());
}
