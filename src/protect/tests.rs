//! Tests of protection as a whole: every string, byte and numeric form, refusals, nested values.

use arrow::array::{
    BinaryArray, BinaryViewArray, Decimal128Array, DictionaryArray, FixedSizeBinaryArray,
    Float64Array, Int64Array, Int64Builder, LargeBinaryArray, LargeStringArray, ListArray,
    ListBuilder, MapBuilder, StringArray, StringBuilder, StringViewArray, StructArray, UInt64Array,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{i256, Field, FieldRef, Int32Type};
use proptest::prelude::*;

use super::arrays::pan_column;
use super::card::{digits_hold_card, mask_bytes};
use super::numeric::{
    decimal_holds_card, f64_holds_card, i256_holds_card, u128_holds_card, u64_holds_card,
};
use super::*;

#[test]
fn pan_and_pii_transforms() {
    assert_eq!(mask_pan("4111-1111-1111-1111"), "****-****-****-1111");
    let cards = StringArray::from(vec![
        Some("4111-1111-1111-1111"),
        None,
        Some("ref 12"),
        Some("5555 5555 5555 4444 Zoë"),
    ]);
    let (masked, changed) = pan_column(&cards.slice(1, 3) as &StringArray).unwrap();
    let masked = masked.unwrap();
    let masked = masked.as_string::<i32>();
    assert_eq!(changed, 1);
    assert!(masked.is_null(0));
    assert_eq!(masked.value(1), "ref 12");
    assert_eq!(masked.value(2), "**** **** **** 4444 Zoë");
    assert_eq!(mask_pii("jane@example.com", None), "****@******e.com");
    let t = hash_pii(b"k", "jane@example.com", true);
    assert_eq!(t.len(), 64);
    assert!(t
        .bytes()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
}

#[test]
fn pii_columns_are_transformed_by_format_and_masks_scanned_for_cards() {
    let contract = Contract::from_json_str(
        "t.json",
        r#"{"title":"t","properties":{
            "email":{"type":"string","format":"email","x-pii":"mask"},
            "login":{"type":"string","format":"email","x-pii":"hash"},
            "name":{"type":"string","x-pii":"hash"}}}"#,
    )
    .unwrap();
    let column = |v: &str| Arc::new(StringArray::from(vec![v])) as ArrayRef;
    let batch = RecordBatch::try_from_iter([
        ("email", column("a@4111111111111111.com")),
        ("login", column("Bob@Example.com")),
        ("name", column("Bob@Example.com")),
    ])
    .unwrap();
    let protector = Protector::new(&contract, &batch.schema(), true, b"k");
    let (out, _) = protector.protect(&batch, OBJECT, false).unwrap();
    let value = |i: usize| out.column(i).as_string::<i32>().value(0).to_string();
    assert_eq!(value(0), "a***@************1111.com");
    assert_eq!(value(1), hash_pii(b"k", "bob@example.com", false));
    // Without `format: email` the case is kept.
    assert_eq!(value(2), hash_pii(b"k", "Bob@Example.com", false));
    assert_ne!(value(1), value(2));
}

const OBJECT: &str = "s3://raw/orders/part-a.parquet";
const CARD: &str = "4111111111111111";
const NOTE: &str = "paid with 4111111111111111, thanks";

fn arc(a: impl Array + 'static) -> ArrayRef {
    Arc::new(a)
}

/// Protects `columns` of one batch as extra columns (not in the contract, which allows them).
fn protect_extra(columns: Vec<(&str, ArrayRef)>) -> Result<RecordBatch> {
    let contract = Contract::from_json_str(
        "t.json",
        r#"{"title":"t","properties":{"id":{"type":"integer"}}}"#,
    )
    .unwrap();
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let protector = Protector::new(&contract, &batch.schema(), true, b"k");
    protector.protect(&batch, OBJECT, false).map(|(b, _)| b)
}

/// The checker's own digits: ASCII, full-width and Arabic-Indic (the scripts the tests use).
fn checker_digit(c: char) -> Option<u8> {
    let cp = u32::from(c);
    [0x30u32, 0xFF10, 0x0660]
        .iter()
        .find(|&&zero| (zero..zero + 10).contains(&cp))
        .map(|&zero| (cp - zero) as u8)
}

/// Luhn over digit values 0–9, written independently of [`luhn_valid`].
fn checker_luhn(digits: &[u8]) -> bool {
    const DOUBLED: [u32; 10] = [0, 2, 4, 6, 8, 1, 3, 5, 7, 9];
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                DOUBLED[usize::from(d)]
            } else {
                u32::from(d)
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Every card number left in `text`, by an independent reading of the rule: in each run of
/// digits (groups joined by single spaces or dashes), every start and every length from 13
/// to 19 digits.
fn cards_left(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let mut run = Vec::new();
        while let Some(&c) = chars.get(i) {
            if let Some(d) = checker_digit(c) {
                run.push(d);
            } else if run.is_empty()
                || !(c == ' ' || c == '-')
                || chars.get(i + 1).and_then(|&n| checker_digit(n)).is_none()
            {
                break;
            }
            i += 1;
        }
        if run.is_empty() {
            i += 1;
        }
        for start in 0..run.len() {
            for len in 13..=19 {
                let Some(window) = run.get(start..start + len) else {
                    break;
                };
                let ascii: Vec<u8> = window.iter().map(|d| b'0' + d).collect();
                if brand_fits(&ascii) && checker_luhn(window) {
                    found.push(String::from_utf8(ascii).unwrap());
                }
            }
        }
    }
    found
}

/// Every string and byte value in `a`, nested ones included (bytes decoded lossily).
fn text_values(a: &dyn Array) -> Vec<String> {
    let bytes = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
    match a.data_type() {
        DataType::Utf8 => a
            .as_string::<i32>()
            .iter()
            .flatten()
            .map(str::to_string)
            .collect(),
        DataType::LargeUtf8 => a
            .as_string::<i64>()
            .iter()
            .flatten()
            .map(str::to_string)
            .collect(),
        DataType::Utf8View => a
            .as_string_view()
            .iter()
            .flatten()
            .map(str::to_string)
            .collect(),
        DataType::Binary => a.as_binary::<i32>().iter().flatten().map(bytes).collect(),
        DataType::LargeBinary => a.as_binary::<i64>().iter().flatten().map(bytes).collect(),
        DataType::BinaryView => a.as_binary_view().iter().flatten().map(bytes).collect(),
        DataType::FixedSizeBinary(_) => a
            .as_fixed_size_binary()
            .iter()
            .flatten()
            .map(bytes)
            .collect(),
        DataType::List(_) => text_values(a.as_list::<i32>().values().as_ref()),
        DataType::Struct(_) => a
            .as_struct()
            .columns()
            .iter()
            .flat_map(|c| text_values(c.as_ref()))
            .collect(),
        DataType::Map(_, _) => text_values(a.as_map().entries()),
        DataType::Dictionary(_, _) => text_values(a.as_any_dictionary().values().as_ref()),
        _ => Vec::new(),
    }
}

/// Regression (issue 11, item 1): extra columns of these types were copied verbatim.
#[test]
fn masks_cards_in_every_string_and_byte_form() {
    let mut list = ListBuilder::new(StringBuilder::new());
    list.values().append_value("ok");
    list.values().append_value(NOTE);
    list.append(true);
    list.append(false);
    let mut map = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    map.keys().append_value(CARD);
    map.values().append_value(NOTE);
    map.append(true).unwrap();
    map.append(true).unwrap();
    let field: FieldRef = Arc::new(Field::new("note", DataType::Utf8, true));
    let notes = arc(StringArray::from(vec![Some(NOTE), None]));
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "dictionary",
            arc(DictionaryArray::<Int32Type>::from_iter([Some(NOTE), None])),
        ),
        ("large", arc(LargeStringArray::from(vec![Some(NOTE), None]))),
        (
            "view",
            arc(StringViewArray::from_iter([Some(NOTE), Some("x")])),
        ),
        ("list", arc(list.finish())),
        (
            "struct",
            arc(StructArray::from(vec![(field, notes.clone())])),
        ),
        ("map", arc(map.finish())),
        (
            "binary",
            arc(BinaryArray::from(vec![Some(NOTE.as_bytes()), None])),
        ),
        (
            "large_binary",
            arc(LargeBinaryArray::from(vec![
                Some(CARD.as_bytes()),
                Some(b"x".as_slice()),
            ])),
        ),
        (
            "binary_view",
            arc(BinaryViewArray::from_iter_values([
                NOTE.as_bytes(),
                b"x".as_slice(),
            ])),
        ),
        (
            "fixed_binary",
            arc(FixedSizeBinaryArray::try_from_iter(
                [CARD.as_bytes(), b"0000000000000000".as_slice()].into_iter(),
            )
            .unwrap()),
        ),
        ("utf8", notes),
    ];
    let input = RecordBatch::try_from_iter(columns.clone()).unwrap();
    for (field, column) in input.schema().fields().iter().zip(input.columns()) {
        let texts = text_values(column.as_ref());
        assert!(
            texts.iter().any(|t| !cards_left(t).is_empty()),
            "{}: no card to mask in {texts:?}",
            field.name()
        );
    }
    let batch = protect_extra(columns).unwrap();
    assert_eq!(batch.schema(), input.schema());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let texts = text_values(column.as_ref());
        assert!(
            texts.iter().all(|t| cards_left(t).is_empty()),
            "{}: {texts:?}",
            field.name()
        );
        assert!(
            texts.iter().any(|t| t.contains("************1111")),
            "{}: {texts:?}",
            field.name()
        );
    }
}

/// Regression (issue 11, item 1): numeric extra columns holding a card were copied verbatim.
#[test]
fn a_number_holding_a_card_refuses_the_file() {
    let mut list = ListBuilder::new(Int64Builder::new());
    list.values().append_value(4111111111111111);
    list.append(true);
    let cases: Vec<(&str, ArrayRef)> = vec![
        ("n_int64", arc(Int64Array::from(vec![7, 4111111111111111]))),
        (
            "n_negative",
            arc(Int64Array::from(vec![7, -4111111111111111])),
        ),
        (
            "n_uint64",
            arc(UInt64Array::from(vec![7, 4111111111111111])),
        ),
        (
            "n_decimal",
            arc(Decimal128Array::from(vec![7, 4111111111111111])
                .with_precision_and_scale(20, 0)
                .unwrap()),
        ),
        (
            "n_scaled",
            arc(Decimal128Array::from(vec![7, 411111111111111100])
                .with_precision_and_scale(20, 2)
                .unwrap()),
        ),
        (
            "n_float",
            arc(Float64Array::from(vec![7.0, 4111111111111111.0])),
        ),
        ("n_list", arc(list.finish())),
    ];
    for (name, column) in cases {
        let err = protect_extra(vec![(name, column)]).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, Error::BadInput { .. }), "{message}");
        assert!(
            message.contains(OBJECT)
                && message.contains(&format!("`{name}`"))
                && message.contains("cannot be masked")
                && message.contains("x-pci: \"none\"")
                && message.contains("x-pci: \"pan\""),
            "{message}"
        );
        assert!(!message.contains("4111"), "{message}");
    }
    let err = protect_extra(vec![(
        "n",
        arc(Int64Array::from(vec![7, 4111111111111111])),
    )])
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("row 1 of a batch") && err.contains("(Int64)"),
        "{err}"
    );
}

#[test]
fn numbers_that_cannot_be_cards_pass_untouched() {
    let contract = Contract::from_json_str(
        "t.json",
        r#"{"title":"t","properties":{"acct":{"type":"integer","x-pci":"none"}}}"#,
    )
    .unwrap();
    let small = arc(Int64Array::from(vec![
        Some(999_999_999_999),
        None,
        Some(-999_999_999_999),
    ]));
    // A null slot is not data, whatever it holds.
    let null_slot = arc(Int64Array::new(
        vec![4111111111111111, 5, 6].into(),
        Some(NullBuffer::from(vec![false, true, true])),
    ));
    let not_integral = arc(Float64Array::from(vec![
        4111111111111111.5,
        1e300,
        f64::NAN,
    ]));
    // Declared `x-pci: "none"`: not scanned.
    let acct = arc(Int64Array::from(vec![
        4111111111111111,
        4012888888881881,
        1,
    ]));
    let batch = RecordBatch::try_from_iter([
        ("small", small),
        ("null_slot", null_slot),
        ("not_integral", not_integral),
        ("acct", acct),
    ])
    .unwrap();
    let (out, counts) = Protector::new(&contract, &batch.schema(), true, b"k")
        .protect(&batch, OBJECT, false)
        .unwrap();
    assert!(counts.is_empty());
    for (before, after) in batch.columns().iter().zip(out.columns()) {
        assert!(Arc::ptr_eq(before, after), "{before:?} was copied");
    }
}

/// Regression (issue 11, item 1): full-width digits stayed readable in `x-pci: pan` columns.
#[test]
fn masks_digits_of_every_script() {
    assert_eq!(decimal_digit('7'), Some(7));
    assert_eq!(decimal_digit('７'), Some(7));
    assert_eq!(decimal_digit('٣'), Some(3));
    assert_eq!(decimal_digit('௧'), Some(1));
    assert_eq!(decimal_digit('\u{1D7D8}'), Some(0));
    assert_eq!(decimal_digit('²'), None);
    assert_eq!(decimal_digit('x'), None);
    assert_eq!(
        mask_pan("４１１１１１１１１１１１１１１１"),
        "************１１１１"
    );
    assert_eq!(mask_pan("٤١١١-١١١١-١١١١-١١١١"), "****-****-****-١١١١");
    assert_eq!(
        mask_card_numbers("card ４１１１ １１１１ １１１１ １１１１ ok").as_deref(),
        Some("card **** **** **** １１１１ ok")
    );
    assert_eq!(
        mask_card_numbers("٤١١١١١١١١١١١١١١١").as_deref(),
        Some("************١١١١")
    );
    assert_eq!(
        mask_card_numbers("4111 １１１１ 1111 １１１１").as_deref(),
        Some("**** **** **** １１１１")
    );
    assert_eq!(mask_card_numbers("Zoë ４ ２"), None);

    let cards = StringArray::from(vec![
        Some("４１１１１１１１１１１１１１１１"),
        None,
        Some("4111111111111111"),
    ]);
    let (masked, changed) = pan_column(&cards).unwrap();
    let masked = masked.unwrap();
    let masked = masked.as_string::<i32>();
    assert_eq!(changed, 2);
    assert_eq!(masked.value(0), "************１１１１");
    assert!(masked.is_null(1));
    assert_eq!(masked.value(2), "************1111");

    // Bytes keep their length: each byte of a masked character becomes `*`.
    let mut bytes = "４１１１１１１１１１１１１１１１".as_bytes().to_vec();
    assert!(mask_bytes(&mut bytes, Mode::Scan));
    assert_eq!(
        String::from_utf8(bytes).unwrap(),
        format!("{}１１１１", "*".repeat(36))
    );
}

#[test]
fn pan_columns_of_every_string_form_are_masked() {
    let contract = Contract::from_json_str(
        "t.json",
        r#"{"title":"t","properties":{"card":{"type":"string","x-pci":"pan"}}}"#,
    )
    .unwrap();
    let card = arc(LargeStringArray::from(vec![
        Some("４１１１１１１１１１１１１１１１"),
        Some("4111-1111-1111-1111"),
    ]));
    let batch = RecordBatch::try_from_iter([("card", card)]).unwrap();
    let (out, counts) = Protector::new(&contract, &batch.schema(), true, b"k")
        .protect(&batch, OBJECT, false)
        .unwrap();
    let masked = out.column(0).as_string::<i64>();
    assert_eq!(masked.value(0), "************１１１１");
    assert_eq!(masked.value(1), "****-****-****-1111");
    let expected: MaskCounts = vec![("card".into(), 2)];
    assert_eq!(counts, expected);
}

/// Regression (issue 11, item 1): a card glued to other digits was not masked.
#[test]
fn masks_cards_glued_to_other_digits() {
    assert_eq!(
        mask_card_numbers("004111111111111111").as_deref(),
        Some("00************1111")
    );
    assert_eq!(
        mask_card_numbers("ref124111111111111111").as_deref(),
        Some("ref12************1111")
    );
    assert_eq!(
        mask_card_numbers("order 7-4111-1111-1111-1111").as_deref(),
        Some("order 7-****-****-****-1111")
    );
    // Numbers are cards only as a whole.
    assert!(!digits_hold_card(b"124111111111111111"));
    assert!(digits_hold_card(b"4111111111111111"));
    assert!(!digits_hold_card(b"999999999999"));
    assert!(u64_holds_card(4111111111111111));
    assert!(!u64_holds_card(124111111111111111));
    assert!(!u64_holds_card(999_999_999_999));
    assert!(!u128_holds_card(4111111111111111 * 10u128.pow(20)));
    assert!(decimal_holds_card(4111111111111111 * 100, 2));
    assert!(!decimal_holds_card(4111111111111111, 2));
    assert!(decimal_holds_card(510_510_510_510_510, -1));
    assert!(i256_holds_card(i256::from_i128(-4111111111111111), 0));
    assert!(!i256_holds_card(
        i256::from_i128(4111111111111111).wrapping_mul(i256::from_i128(10i128.pow(30))),
        0
    ));
    assert!(f64_holds_card(4111111111111111.0));
    assert!(!f64_holds_card(4111111111111111.5));
    assert!(!f64_holds_card(1e300));
}

/// The shape of a generated column.
#[derive(Debug, Clone)]
enum Shape {
    Utf8,
    LargeUtf8,
    Utf8View,
    Binary,
    Dictionary,
    Map,
    List(Box<Shape>),
    Struct(Vec<Shape>),
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        Just(Shape::Utf8),
        Just(Shape::LargeUtf8),
        Just(Shape::Utf8View),
        Just(Shape::Binary),
        Just(Shape::Dictionary),
        Just(Shape::Map),
    ]
    .prop_recursive(3, 16, 3, |inner| {
        prop_oneof![
            inner.clone().prop_map(|s| Shape::List(Box::new(s))),
            prop::collection::vec(inner, 1..4).prop_map(Shape::Struct),
        ]
    })
}

/// An array of `shape` with one row per text, every leaf holding every text.
fn build(shape: &Shape, texts: &[String]) -> ArrayRef {
    match shape {
        Shape::Utf8 => arc(StringArray::from_iter_values(texts)),
        Shape::LargeUtf8 => arc(LargeStringArray::from_iter_values(texts)),
        Shape::Utf8View => arc(StringViewArray::from_iter_values(texts)),
        Shape::Binary => arc(BinaryArray::from_iter_values(
            texts.iter().map(String::as_bytes),
        )),
        Shape::Dictionary => arc(texts
            .iter()
            .map(String::as_str)
            .collect::<DictionaryArray<Int32Type>>()),
        Shape::Map => {
            let mut b = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
            for t in texts {
                b.keys().append_value(t);
                b.values().append_value(t);
                b.append(true).unwrap();
            }
            arc(b.finish())
        }
        Shape::List(inner) => {
            let values = build(inner, texts);
            let field = Arc::new(Field::new("item", values.data_type().clone(), true));
            let offsets = OffsetBuffer::from_lengths(std::iter::repeat_n(1, texts.len()));
            arc(ListArray::new(field, offsets, values, None))
        }
        Shape::Struct(shapes) => {
            let fields: Vec<(FieldRef, ArrayRef)> = shapes
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let a = build(s, texts);
                    let field = Field::new(format!("f{i}"), a.data_type().clone(), true);
                    (Arc::new(field), a)
                })
                .collect();
            arc(StructArray::from(fields))
        }
    }
}

/// Text around the card: letters, digits, separators, full-width digits, stars.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zé ]{0,6}",
        "[0-9]{1,4}",
        "[ -]",
        "[０-９]{1,3}",
        Just("*".to_string()),
    ]
}

/// A known card number (the generator's, in one of its layouts) in ASCII, full-width or
/// Arabic-Indic digits.
fn card() -> impl Strategy<Value = String> {
    (any::<u64>(), 0u32..4).prop_map(|(seed, script)| {
        let plain = crate::generate::card_number(&mut crate::generate::SplitMix::new(seed));
        let zero = match script {
            0 | 1 => return plain,
            2 => 0xFF10,
            _ => 0x0660,
        };
        plain
            .chars()
            .map(|c| {
                c.to_digit(10)
                    .and_then(|d| char::from_u32(zero + d))
                    .unwrap_or(c)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Masking never leaves a card number, in any string or byte form, at any depth, whatever
    /// digits and separators surround it (glued or not).
    #[test]
    fn no_card_survives_in_any_nested_form(
        shape in shape(),
        rows in prop::collection::vec(prop::collection::vec(piece(), 0..6), 1..5),
        card in card(),
        row in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
    ) {
        let mut rows = rows;
        let row = row.index(rows.len());
        let at = at.index(rows[row].len() + 1);
        rows[row].insert(at, card);
        let texts: Vec<String> = rows.iter().map(|pieces| pieces.concat()).collect();
        let input = build(&shape, &texts);
        prop_assert!(
            text_values(input.as_ref()).iter().any(|t| !cards_left(t).is_empty()),
            "no card in {:?}", texts
        );
        let place = Place { object: OBJECT, column: "c", column_type: input.data_type(), top: true };
        let (output, changed) = protect_array(&input, Mode::Scan, place).unwrap();
        let output = output.unwrap_or_else(|| input.clone());
        prop_assert!(changed > 0);
        prop_assert_eq!(output.data_type(), input.data_type());
        prop_assert_eq!(output.len(), input.len());
        for text in text_values(output.as_ref()) {
            prop_assert!(cards_left(&text).is_empty(), "{:?} -> {:?}", texts, text);
        }
    }
}
