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
