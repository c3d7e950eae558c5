//! `edp run` events: which object arrived, and where its outputs go.
//!
//! Three shapes are accepted: the seed format `{"bucket", "key", "event_type"}`, an EventBridge
//! "Object Created" event (`detail.bucket.name`, `detail.object.key`) and an S3 notification
//! (`Records[].s3.bucket.name`, `Records[].s3.object.key`). Keys arrive URL-encoded as S3 sends
//! them (`+` is a space, `%2B` a plus) and are decoded in all three shapes.
//!
//! The key decides the dataset and the stage: `<prefix>/<dataset>-raw/<rest>` is stage 1,
//! `<prefix>/<dataset>-curated/<rest>` stage 2. Output locations are a pure function of the key,
//! one prefix per object: stage 1 of `<prefix>/<dataset>-raw/<dirs>/<name>` (extension kept, so
//! `x.parquet` and `x.csv` do not meet) writes under `<prefix>/<dataset>-curated/<dirs>/<name>/`
//! in the curated bucket (where stage 2 picks it up) and `<prefix>/<dataset>-errors/<dirs>/<name>/`
//! in the error bucket. Objects under a `_` or `.` name below the dataset segment are not data
//! ([`Route::hidden`]; `edp run` skips them). A repeated event
//! (EventBridge delivers at least once) overwrites the same objects instead of adding new ones.
//! Keys with `.` or `..` segments, empty segments or a leading `/` are rejected: they could
//! escape the configured prefixes.

use serde_json::Value;

use crate::{Error, Result};

/// One object named by an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEvent {
    pub bucket: String,
    /// The decoded key.
    pub key: String,
}

/// The pipeline stage a key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    RawToCurated,
    CuratedToProd,
}

impl Stage {
    /// The stage's name, as in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Stage::RawToCurated => "raw-to-curated",
            Stage::CuratedToProd => "curated-to-prod",
        }
    }
}

/// Where an object's outputs go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dataset: String,
    pub stage: Stage,
    /// Output prefix in the curated bucket.
    pub curated_prefix: String,
    /// Output prefix in the error bucket.
    pub errors_prefix: String,
    /// The key's prefix before the `<dataset>-raw/` or `<dataset>-curated/` segment (empty at
    /// the bucket's root): stage 2's curated root and prod prefix.
    pub root_prefix: String,
    /// The object is not data: its name or a directory below the dataset segment starts with
    /// `_` or `.` (`_temporary/`, `.hidden/`, `.parquet`), as a prefix listing skips it.
    pub hidden: bool,
}

/// Decodes `%XX` escapes and `+` (a space), as S3 encodes keys in events.
pub fn url_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn text<'a>(v: &'a Value, path: &[&str], source: &str) -> Result<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p).ok_or_else(|| {
            Error::Config(format!("event {source}: missing `{}`", path.join(".")))
        })?;
    }
    cur.as_str().ok_or_else(|| {
        Error::Config(format!(
            "event {source}: `{}` is not a string",
            path.join(".")
        ))
    })
}

fn object(bucket: &str, key: &str, source: &str) -> Result<ObjectEvent> {
    let decoded = url_decode(key).ok_or_else(|| {
        Error::Config(format!(
            "event {source}: key is not valid URL-encoded UTF-8"
        ))
    })?;
    if bucket.is_empty() || decoded.is_empty() {
        return Err(Error::Config(format!(
            "event {source}: empty bucket or key"
        )));
    }
    Ok(ObjectEvent {
        bucket: bucket.to_string(),
        key: decoded,
    })
}

/// Parses an event document (see the module docs); `source` names it in errors.
pub fn parse_event(doc: &str, source: &str) -> Result<Vec<ObjectEvent>> {
    let v: Value = serde_json::from_str(doc)
        .map_err(|e| Error::Config(format!("event {source}: not valid JSON: {e}")))?;
    if let Some(records) = v.get("Records") {
        let records = records
            .as_array()
            .filter(|r| !r.is_empty())
            .ok_or_else(|| {
                Error::Config(format!(
                    "event {source}: `Records` must be a non-empty array"
                ))
            })?;
        return records
            .iter()
            .map(|r| {
                object(
                    text(r, &["s3", "bucket", "name"], source)?,
                    text(r, &["s3", "object", "key"], source)?,
                    source,
                )
            })
            .collect();
    }
    if v.get("detail").is_some() {
        let kind = v.get("detail-type").and_then(Value::as_str).unwrap_or("");
        if kind != "Object Created" {
            return Err(Error::Config(format!(
                "event {source}: detail-type `{kind}` is not \"Object Created\""
            )));
        }
        return Ok(vec![object(
            text(&v, &["detail", "bucket", "name"], source)?,
            text(&v, &["detail", "object", "key"], source)?,
            source,
        )?]);
    }
    if v.get("bucket").is_some() || v.get("key").is_some() {
        return Ok(vec![object(
            text(&v, &["bucket"], source)?,
            text(&v, &["key"], source)?,
            source,
        )?]);
    }
    Err(Error::Config(format!(
        "event {source}: expected {{\"bucket\",\"key\"}}, an EventBridge \"Object Created\" event or an S3 notification with Records"
    )))
}

/// Routes a decoded key to its dataset, stage and output prefix.
pub fn route(key: &str) -> Result<Route> {
    let bad = |why: &str| Error::Config(format!("key `{key}`: {why}"));
    if key.starts_with('/') {
        return Err(bad("absolute keys are rejected"));
    }
    let parts: Vec<&str> = key.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err(bad("empty, `.` or `..` segments are rejected"));
    }
    let (at, dataset, stage) = parts
        .iter()
        .enumerate()
        .find_map(|(i, p)| {
            if let Some(d) = p.strip_suffix("-raw") {
                Some((i, d, Stage::RawToCurated))
            } else {
                p.strip_suffix("-curated")
                    .map(|d| (i, d, Stage::CuratedToProd))
            }
        })
        .ok_or_else(|| bad("expected a `<dataset>-raw/` or `<dataset>-curated/` segment"))?;
    let valid_name = !dataset.is_empty()
        && dataset
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_');
    if !valid_name {
        return Err(bad(
            "the dataset name must be lowercase letters, digits and `_`",
        ));
    }
    let rest = &parts[at + 1..];
    let Some((file, dirs)) = rest.split_last() else {
        return Err(bad("no object name after the dataset segment"));
    };
    let prefix = |suffix: &str| {
        let mut out: Vec<String> = parts[..at].iter().map(|p| p.to_string()).collect();
        out.push(format!("{dataset}-{suffix}"));
        out.extend(dirs.iter().map(|p| p.to_string()));
        out.push(file.to_string());
        out.join("/")
    };
    Ok(Route {
        dataset: dataset.to_string(),
        stage,
        curated_prefix: prefix("curated"),
        errors_prefix: prefix("errors"),
        root_prefix: parts[..at].join("/"),
        hidden: rest
            .iter()
            .any(|p| p.starts_with('_') || p.starts_with('.')),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_shapes_and_decoding() {
        let seed = r#"{"bucket":"raw","key":"ecommerce/orders-raw/a+b%2Bc%C3%A9.parquet","event_type":"ObjectCreated:Put"}"#;
        let eb = r#"{"detail-type":"Object Created","source":"aws.s3","detail":{"bucket":{"name":"raw"},"object":{"key":"ecommerce/orders-raw/a+b%2Bc%C3%A9.parquet"}}}"#;
        let s3 = r#"{"Records":[{"s3":{"bucket":{"name":"raw"},"object":{"key":"ecommerce/orders-raw/a+b%2Bc%C3%A9.parquet"}}}]}"#;
        for doc in [seed, eb, s3] {
            let e = parse_event(doc, "e.json").unwrap();
            assert_eq!(
                e,
                vec![ObjectEvent {
                    bucket: "raw".into(),
                    key: "ecommerce/orders-raw/a b+cé.parquet".into()
                }]
            );
        }
    }

    #[test]
    fn malformed_events() {
        for (doc, needle) in [
            ("{", "not valid JSON"),
            (r#"{"Records":[]}"#, "non-empty array"),
            (
                r#"{"detail-type":"Object Deleted","detail":{}}"#,
                "Object Created",
            ),
            (r#"{"bucket":"b"}"#, "missing `key`"),
            (r#"{"bucket":"b","key":"a%zz"}"#, "URL-encoded"),
            (r#"{"x":1}"#, "expected"),
        ] {
            let e = parse_event(doc, "e.json").unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains("e.json"), "{doc}: {e}");
        }
    }

    #[test]
    fn routes_and_rejects() {
        let r = route("ecommerce/orders-raw/year=2025/month=01/day=16/x.parquet").unwrap();
        assert_eq!(r.dataset, "orders");
        assert_eq!(r.stage, Stage::RawToCurated);
        assert_eq!(
            r.curated_prefix,
            "ecommerce/orders-curated/year=2025/month=01/day=16/x.parquet"
        );
        assert_eq!(
            r.errors_prefix,
            "ecommerce/orders-errors/year=2025/month=01/day=16/x.parquet"
        );
        assert!(!r.hidden);
        // One output prefix per object: the extension stays, and names that are not data are
        // marked hidden instead of writing above or beside other outputs.
        let prefixes: Vec<String> = ["a/16/x.parquet", "a/16/x.csv", "a/16/x/y.parquet"]
            .iter()
            .map(|k| route(&format!("orders-raw/{k}")).unwrap().curated_prefix)
            .collect();
        assert_eq!(
            prefixes,
            [
                "orders-curated/a/16/x.parquet",
                "orders-curated/a/16/x.csv",
                "orders-curated/a/16/x/y.parquet"
            ]
        );
        for hidden in [
            "orders-raw/16/.parquet",
            "orders-raw/16/x/.parquet",
            "orders-raw/_temporary/0/x.parquet",
            "orders-raw/.staging/x.parquet",
        ] {
            assert!(route(hidden).unwrap().hidden, "{hidden}");
        }
        assert!(!route("_shop/orders-raw/x.parquet").unwrap().hidden);
        assert_eq!(
            route("order_items-curated/f.parquet").unwrap().stage,
            Stage::CuratedToProd
        );
        for bad in [
            "/abs/orders-raw/x.parquet",
            "ecommerce/../orders-raw/x.parquet",
            "a//orders-raw/x",
            "ecommerce/orders-raw/",
            "ecommerce/x.parquet",
            "Orders-raw/x",
            "x/orders-raw/./y",
        ] {
            assert!(route(bad).is_err(), "{bad}");
        }
    }
}
