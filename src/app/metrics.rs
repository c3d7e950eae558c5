//! CloudWatch Embedded Metric Format: one JSON line on stdout per processed object, which the
//! CloudWatch agent (or the awslogs driver of AWS Batch) turns into metrics without API calls.
//!
//! Dimension sets are (`Stage`, `Dataset`) and (`Stage`) alone, the roll-up alarms watch; never a
//! job id, which would create a new metric per run. A failed run still emits its line, with
//! `ErrorCount` 1.

use std::time::Duration;

use serde_json::json;

use crate::report::Report;

/// Metric namespace.
pub const NAMESPACE: &str = "edp";

/// The `_aws` member of an EMF line declaring `metrics` (name, unit) under the dimension sets.
fn envelope(metrics: &[(&str, &str)]) -> serde_json::Value {
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let metrics: Vec<serde_json::Value> = metrics
        .iter()
        .map(|(name, unit)| json!({"Name": name, "Unit": unit}))
        .collect();
    json!({
        "Timestamp": timestamp,
        "CloudWatchMetrics": [{
            "Namespace": NAMESPACE,
            "Dimensions": [["Stage", "Dataset"], ["Stage"]],
            "Metrics": metrics
        }]
    })
}

/// The EMF line for one run of `stage` on `dataset`; `report` is `None` when the run failed.
pub fn emf(stage: &str, dataset: &str, report: Option<&Report>, elapsed: Duration) -> String {
    let minutes = elapsed.as_secs_f64().max(1e-9) / 60.0;
    let (records, failure_rate, dedup_rate, errors) = match report {
        Some(r) => {
            let rows = r.rows_in.max(1) as f64;
            (
                r.rows_in,
                100.0 * r.rows_quarantined as f64 / rows,
                100.0 * r.duplicates_superseded as f64 / rows,
                0,
            )
        }
        None => (0, 0.0, 0.0, 1),
    };
    json!({
        "_aws": envelope(&[
            ("RecordsProcessed", "Count"),
            ("RecordsPerMinute", "None"),
            ("ValidationFailureRate", "Percent"),
            ("DeduplicationRate", "Percent"),
            ("Duration", "Milliseconds"),
            ("ErrorCount", "Count"),
        ]),
        "Stage": stage,
        "Dataset": dataset,
        "RecordsProcessed": records,
        "RecordsPerMinute": records as f64 / minutes,
        "ValidationFailureRate": failure_rate,
        "DeduplicationRate": dedup_rate,
        "Duration": elapsed.as_millis() as u64,
        "ErrorCount": errors,
    })
    .to_string()
}

/// The EMF line for one stage 2 run triggered by `dataset`; `report` is `None` when it failed.
/// `RecordsProcessed` counts the curated rows read, `RowsWritten` the prod rows, `Violations`
/// the rows the checks selected.
pub fn emf_prod(
    dataset: &str,
    report: Option<&crate::stage2::ProdReport>,
    elapsed: Duration,
) -> String {
    let (read, written, violations, errors) = match report {
        Some(r) => (
            r.datasets.iter().map(|d| d.rows_read).sum::<u64>(),
            r.models.iter().map(|m| m.rows).sum::<u64>(),
            r.violations,
            0,
        ),
        None => (0, 0, 0, 1),
    };
    json!({
        "_aws": envelope(&[
            ("RecordsProcessed", "Count"),
            ("RowsWritten", "Count"),
            ("Violations", "Count"),
            ("Duration", "Milliseconds"),
            ("ErrorCount", "Count"),
        ]),
        "Stage": "curated-to-prod",
        "Dataset": dataset,
        "RecordsProcessed": read,
        "RowsWritten": written,
        "Violations": violations,
        "Duration": elapsed.as_millis() as u64,
        "ErrorCount": errors,
    })
    .to_string()
}
