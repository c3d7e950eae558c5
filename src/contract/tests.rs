//! Unit tests of contract parsing: keyword checks, error pointers, pattern semantics.

use super::*;

fn err(text: &str) -> String {
    Contract::from_json_str("c.json", text)
        .unwrap_err()
        .to_string()
}

/// Regression (issue 11, item 8): a property declared twice was silently last-wins.
#[test]
fn a_key_declared_twice_is_an_error_at_its_pointer() {
    let e = err(
        r#"{"title":"t","properties":{"id":{"type":"integer"},"a/b":{"type":"string"},"a/b":{"type":"integer"}}}"#,
    );
    assert!(
        e.contains("/properties/a~1b") && e.contains("declared twice"),
        "{e}"
    );
    let e = err(r#"{"title":"t","properties":{"id":{"type":"integer","minimum":1,"minimum":2}}}"#);
    assert!(e.contains("/properties/id/minimum"), "{e}");
    let e = err(r#"{"title":"t","required":[{"x":1,"x":2}],"properties":{}}"#);
    assert!(e.contains("/required/0/x"), "{e}");
}

const BASE: &str = r#"{"title":"t","required":["id"],"properties":{"id":{"type":"integer"},COL},"x-primary-key":["id"]}"#;

fn with(col: &str) -> String {
    BASE.replace("COL", col)
}

#[test]
fn parses_orders_like_contract() {
    let c = Contract::from_json_str(
        "c.json",
        &with(r#""s":{"enum":["a","b"]},"e":{"type":["string","null"],"format":"email","x-pii":"hash"},"p":{"type":"string","x-pci":"pan"}"#),
    )
    .unwrap();
    assert_eq!(c.dataset, "t");
    let s = c.column("s").unwrap();
    assert_eq!(s.ty, ColumnType::String);
    assert!(!s.nullable);
    let e = c.column("e").unwrap();
    assert!(e.nullable && e.pii == Some(Pii::Hash) && e.format == Some(Format::Email));
    assert_eq!(c.column("p").unwrap().pci, Pci::Pan);
    // Numbers are scanned too: an integer wide enough could be a card number.
    assert_eq!(c.column("id").unwrap().pci, Pci::Scan);
}

#[test]
fn x_pci_on_numbers() {
    let c = Contract::from_json_str(
        "c.json",
        &with(r#""n":{"type":"integer","x-pci":"none"},"b":{"type":"boolean"},"q":{"type":"integer","minimum":0,"maximum":10}"#),
    )
    .unwrap();
    assert_eq!(c.column("n").unwrap().pci, Pci::None);
    assert_eq!(c.column("b").unwrap().pci, Pci::None);
    // Bounds hold for curated rows only; quarantine gets the out-of-range values.
    assert_eq!(c.column("q").unwrap().pci, Pci::Scan);
    let e = err(&with(r#""n":{"type":"number","x-pci":"pan"}"#));
    assert!(
        e.contains("/properties/n/x-pci")
            && e.contains("cannot be masked")
            && e.contains("type: string"),
        "{e}"
    );
    let e = err(&with(r#""b":{"type":"boolean","x-pci":"none"}"#));
    assert!(
        e.contains("/properties/b/x-pci") && e.contains("applies only to"),
        "{e}"
    );
}

#[test]
fn rejects_unsupported_and_unknown_keywords() {
    let e = err(&with(r#""x":{"oneOf":[]}"#));
    assert!(
        e.contains("/properties/x/oneOf") && e.contains("unsupported keyword"),
        "{e}"
    );
    let e = err(&with(r#""x":{"type":"string","x-secret":true}"#));
    assert!(
        e.contains("/properties/x/x-secret") && e.contains("unknown extension"),
        "{e}"
    );
    let e = err(&BASE
        .replace("COL", r#""x":{"type":"string"}"#)
        .replace("\"title\"", "\"x-owner\":\"ops\",\"title\""));
    assert!(e.contains("/x-owner"), "{e}");
}

#[test]
fn rejects_bad_regex_and_contradictions() {
    let e = err(&with(r#""x":{"type":"string","pattern":"(["}"#));
    assert!(
        e.contains("/properties/x/pattern") && e.contains("invalid regex"),
        "{e}"
    );
    let e = err(&with(r#""x":{"type":"number","minimum":5,"maximum":1}"#));
    assert!(e.contains("contradictory"), "{e}");
    let e = err(&with(
        r#""x":{"type":"number","minimum":1,"exclusiveMaximum":1}"#,
    ));
    assert!(e.contains("contradictory"), "{e}");
    let e = err(&with(
        r#""x":{"type":"string","minLength":5,"maxLength":1}"#,
    ));
    assert!(e.contains("/properties/x/minLength"), "{e}");
    let e = err(&with(
        r#""x":{"type":"string","format":"date","formatMinimum":"2025-01-01","formatMaximum":"2024-01-01"}"#,
    ));
    assert!(e.contains("contradictory"), "{e}");
    let e = err(&with(r#""x":{"type":"integer","pattern":"a"}"#));
    assert!(e.contains("applies only to string"), "{e}");
    let e = err(&with(r#""x":{"enum":["a"],"const":"b"}"#));
    assert!(e.contains("/properties/x/const"), "{e}");
}

#[test]
fn pattern_is_unanchored_like_json_schema() {
    let p = Pattern::new("^[A-Z]{3}$").unwrap();
    assert!(p.is_match("EUR"));
    assert!(!p.is_match("EURO"));
    assert!(!p.is_match("eur"));
    let q = Pattern::new("[0-9]").unwrap();
    assert!(q.is_match("ab1c"));
    assert!(!q.is_match("abc"));
}

#[test]
fn x_references_as_a_target_or_an_object() {
    let c = Contract::from_json_str(
        "c.json",
        &with(
            r#""a":{"type":"integer","x-references":"customers.customer_id"},
               "b":{"type":"string","x-references":{"to":"orders.order_id","orphans":"keep","missing":"skip"}}"#,
        ),
    )
    .unwrap();
    let a = c.column("a").unwrap().references.clone().unwrap();
    assert_eq!(a.target(), "customers.customer_id");
    assert_eq!((a.orphans, a.skip_missing), (Orphans::Quarantine, false));
    let b = c.column("b").unwrap().references.clone().unwrap();
    assert_eq!(b.target(), "orders.order_id");
    assert_eq!((b.orphans, b.skip_missing), (Orphans::Keep, true));
    for (col, pointer) in [
        (
            r#""a":{"type":"integer","x-references":"customers"}"#,
            "/properties/a/x-references",
        ),
        (
            r#""a":{"type":"integer","x-references":{"orphans":"keep"}}"#,
            "/properties/a/x-references",
        ),
        (
            r#""a":{"type":"integer","x-references":{"to":"c.id","orphans":"drop"}}"#,
            "/properties/a/x-references/orphans",
        ),
        (
            r#""a":{"type":"integer","x-references":{"to":"c.id","on":"x"}}"#,
            "/properties/a/x-references/on",
        ),
    ] {
        let e = err(&with(col));
        assert!(e.contains(pointer), "{col}: {e}");
    }
}

/// `edp replay` cannot check protected values: payments' card number (x-pci pan) loses its
/// value rules and the row rule reading it, and their failures are carried instead; other
/// columns keep theirs.
#[test]
fn replay_contract_leaves_out_checks_of_protected_values_and_carries_them() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/contracts/payments.json");
    let c = Contract::from_path(&path).unwrap();
    let carried: Vec<(String, String)> = c
        .protected_value_rules()
        .into_iter()
        .map(|(col, rule)| (col, rule.to_string()))
        .collect();
    assert!(carried.contains(&("card_number".into(), "pattern".into())));
    let rule = c
        .rules
        .iter()
        .find(|r| r.columns.iter().any(|col| col == "card_number"))
        .unwrap();
    assert!(carried.contains(&(rule.columns.join(","), rule.name.clone())));
    assert!(!carried.iter().any(|(col, _)| col == "amount"));
    let replay = c.for_replay();
    assert!(replay.rules.iter().all(|r| r.name != rule.name));
    assert!(replay
        .rules
        .iter()
        .any(|r| r.name == "updated_after_created"));
    let card = replay.column("card_number").unwrap();
    assert_eq!(card.pci, Pci::Pan, "masking still applies");
    assert!(card.pattern.is_none() && card.enum_values.is_none());
    assert_eq!(replay.column("amount").unwrap().maximum, Some(1_000_000.0));
    assert_eq!(
        c.protection(true).get("card_number").map(String::as_str),
        Some("pan")
    );
    assert!(c.protection(false).is_empty());
}
