//! Unit tests of the dedup index: the winner order, ties and tombstones.

use super::*;
use std::sync::Arc;

use arrow::array::{Int64Array, StringArray};
use arrow::datatypes::Field;

fn contract() -> Contract {
    Contract::from_json_str(
        "t.json",
        r#"{"title":"t","required":["id","ts"],"properties":{
                "id":{"type":"integer"},"ts":{"type":"string","format":"date-time"},
                "op":{"type":"string","enum":["I","U","D"]}},
               "x-primary-key":["id"],"x-event-time":"ts","x-cdc-op":"op"}"#,
    )
    .unwrap()
}

fn batch(ids: &[i64], ts: &[&str], ops: &[&str]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("ts", DataType::Utf8, false),
        Field::new("op", DataType::Utf8, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ids.to_vec())),
            Arc::new(StringArray::from(ts.to_vec())),
            Arc::new(StringArray::from(ops.to_vec())),
        ],
    )
    .unwrap()
}

#[test]
fn latest_wins_ties_go_to_later_rows_and_deletes_are_tombstones() {
    let c = contract();
    let b = batch(
        &[1, 1, 2, 2, 3, 3],
        &[
            "2025-01-02 00:00:00",
            "2025-01-01 00:00:00",
            "2025-01-01 00:00:00",
            "2025-01-01T00:00:00Z",
            "2025-01-01 00:00:00",
            "2025-01-03 00:00:00",
        ],
        &["I", "U", "I", "U", "I", "D"],
    );
    let plan = DedupPlan::new(&c, &b.schema(), "x").unwrap().unwrap();
    let mut index = DedupIndex::new(&plan, 6, None).unwrap();
    index
        .offer(&plan, &b, None, 0, &[0, 1, 2, 3, 4, 5])
        .unwrap();
    let w = index.finish(&[6]).unwrap();
    assert_eq!(w.rows[0].set_indices().collect::<Vec<_>>(), vec![0, 3, 5]);
    assert_eq!(w.superseded, 3);
    assert_eq!(w.tombstones, 1);
}
