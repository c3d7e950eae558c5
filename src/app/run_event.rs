//! `edp run`, the AWS Batch entry point: reads the event, routes every object it names to its
//! stage (see [`super::event::route`]) before processing any, skips objects that are not data
//! ([`Route::hidden`](super::event::Route::hidden)), runs each other one, prints one EMF line
//! per object run on stdout, and applies the failure policy: an SNS alert on every failure and
//! when a run's quarantine share passes `validation_failure_threshold` (stage 1) or its checks
//! find violations (stage 2), and a dead letter when the failure is final
//! ([`crate::Error::is_final`]: not retryable, or the last of `max_attempts`).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tracing::Instrument;

use super::cli::{Global, RunArgs};
use super::event::{self, ObjectEvent, Route, Stage};
use super::metrics;
use super::notify::{Notifier, Targets};
use super::specs::{contract_path, job_spec, prod_spec, JobTarget};
use crate::settings::Settings;
use crate::{stage1, stage2, Error, Result};

/// Where the event comes from, for messages.
fn event_source(args: &RunArgs) -> String {
    match &args.event {
        Some(e) if e == "-" => "stdin".to_string(),
        Some(path) => path.clone(),
        None => "--bucket/--key".to_string(),
    }
}

/// The event document. Bytes that are not UTF-8 are kept (replaced) so that they fail as "not
/// JSON" and are dead-lettered like any other bad event.
fn read_event(args: &RunArgs) -> Result<String> {
    let bytes = match (&args.event, &args.bucket, &args.key) {
        (Some(e), _, _) if e == "-" => {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
                .map_err(|e| Error::Config(format!("event on stdin: cannot read: {e}")))?;
            bytes
        }
        (Some(path), _, _) => std::fs::read(path)
            .map_err(|e| Error::Config(format!("event {path}: cannot read: {e}")))?,
        (None, Some(bucket), Some(key)) => serde_json::json!({"bucket": bucket, "key": key})
            .to_string()
            .into_bytes(),
        _ => {
            return Err(Error::Config(
                "give an EVENT file or --bucket and --key".into(),
            ))
        }
    };
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `edp run`: every object of the event, one after the other; on failure (the event's own
/// included: unreadable, not JSON, too large for a message) the alert and, when final, the
/// dead letter.
pub async fn run_event(
    settings: &Settings,
    global: &Global,
    args: &RunArgs,
    interrupted: Arc<AtomicBool>,
) -> Result<u8> {
    let source = event_source(args);
    let request_id = std::env::var("AWS_BATCH_JOB_ID").unwrap_or_else(|_| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("local-{:x}-{:x}", std::process::id(), nanos)
    });
    let targets = Targets {
        topic_arn: settings.sns_topic_arn.clone(),
        dead_letter_queue_url: settings.dead_letter_queue_url.clone(),
    };
    let notifier = Notifier::new(targets).await;
    let run = Run {
        settings,
        global,
        args,
        interrupted,
        request_id: &request_id,
        notifier: notifier.as_ref(),
    };
    let (doc, result) = match read_event(args) {
        Ok(doc) => {
            let result = run.objects(&doc, &source).await;
            (doc, result)
        }
        Err(e) => (String::new(), Err(e)),
    };
    if let (Err(e), Some(n)) = (&result, &notifier) {
        let (code, reason) = (e.exit_code(), e.to_string());
        let attempt = std::env::var("AWS_BATCH_JOB_ATTEMPT")
            .ok()
            .and_then(|a| a.parse().ok());
        let alert = serde_json::json!({
            "request_id": request_id, "event_source": source, "reason": reason,
            "exit_code": code, "attempt": attempt,
        });
        if let Err(err) = n.alert("edp run failed", &alert).await {
            tracing::error!("{err}");
        }
        if e.is_final(attempt, settings.max_attempts) {
            if let Err(err) = n.dead_letter(&doc, &reason, code, &request_id).await {
                tracing::error!("{err}");
            }
        }
    }
    result
}

/// One `edp run` invocation's context.
struct Run<'a> {
    settings: &'a Settings,
    global: &'a Global,
    args: &'a RunArgs,
    interrupted: Arc<AtomicBool>,
    request_id: &'a str,
    notifier: Option<&'a Notifier>,
}

/// A bucket setting `edp run` needs, or an error naming its flag and variable.
fn required<'s>(value: &'s Option<String>, name: &str, flag: &str) -> Result<&'s str> {
    value.as_deref().ok_or_else(|| {
        Error::Config(format!(
            "{name} is not set (--{flag}, env {}, or the config file)",
            name.to_uppercase()
        ))
    })
}

/// `bucket` under the key's prefix before its dataset segment: the root of stage 2's curated
/// datasets and prod tables, and where stage 1's foreign keys find their referenced datasets.
fn root_url(bucket: &str, route: &Route) -> String {
    match route.root_prefix.as_str() {
        "" => format!("s3://{bucket}"),
        p => format!("s3://{bucket}/{p}"),
    }
}

/// What `edp run` does for one object, built before any object is processed.
enum Job {
    Curate(Box<stage1::JobSpec>),
    Prod(Box<stage2::ProdSpec>),
}

impl Run<'_> {
    /// Every record is routed, and its job built (settings, contract, models directory), before
    /// any is processed: a bad second record must not leave the first one's outputs behind a
    /// failed event.
    async fn objects(&self, doc: &str, source: &str) -> Result<u8> {
        let mut jobs = Vec::new();
        for object in event::parse_event(doc, source)? {
            let route = event::route(&object.key)?;
            if route.hidden {
                tracing::info!(
                    key = %object.key,
                    "not a data object (a `_` or `.` name below the dataset): skipped"
                );
                continue;
            }
            let job = match route.stage {
                Stage::CuratedToProd => Job::Prod(Box::new(self.prod_spec(&route)?)),
                Stage::RawToCurated => Job::Curate(Box::new(self.curate_spec(&object, &route)?)),
            };
            jobs.push((object, route, job));
        }
        for (object, route, job) in jobs {
            let span = tracing::info_span!(
                "job",
                request_id = %self.request_id,
                bucket = %object.bucket,
                key = %object.key,
                dataset = %route.dataset,
                stage = route.stage.name()
            );
            match job {
                Job::Prod(spec) => self.prod(&object, &route, &spec).instrument(span).await?,
                Job::Curate(spec) => self.curate(&object, &route, &spec).instrument(span).await?,
            }
        }
        Ok(0)
    }

    /// Stage 2's spec for the models that read the curated object's dataset.
    fn prod_spec(&self, route: &Route) -> Result<stage2::ProdSpec> {
        let s = self.settings;
        let curated = required(&s.curated_bucket, "curated_bucket", "curated-bucket")?;
        let prod = required(&s.prod_bucket, "prod_bucket", "prod-bucket")?;
        if !std::path::Path::new(&s.models_dir).is_dir() {
            return Err(Error::Config(format!(
                "models directory {} (models_dir) does not exist",
                s.models_dir.display()
            )));
        }
        prod_spec(
            s,
            root_url(curated, route),
            root_url(prod, route),
            Vec::new(),
            Some(route.dataset.clone()),
            self.interrupted.clone(),
        )
    }

    /// Stage 2 for the models that read the curated object's dataset.
    async fn prod(
        &self,
        object: &ObjectEvent,
        route: &Route,
        spec: &stage2::ProdSpec,
    ) -> Result<()> {
        tracing::info!("processing");
        let started = std::time::Instant::now();
        let result = stage2::run(spec).await;
        println!(
            "{}",
            metrics::emf_prod(&route.dataset, result.as_ref().ok(), started.elapsed())
        );
        let report = result?;
        eprint!("{}", report.summary());
        if report.violations > 0 {
            tracing::warn!(violations = report.violations, "checks found violations");
            if let Some(n) = self.notifier {
                let alert = serde_json::json!({
                    "request_id": self.request_id, "bucket": object.bucket, "key": object.key,
                    "dataset": route.dataset, "violations": report.violations,
                    "checks": report.checks,
                });
                n.alert("edp: stage 2 checks found violations", &alert)
                    .await?;
            }
        }
        Ok(())
    }

    /// Stage 1's spec for the raw object into the curated and error buckets.
    fn curate_spec(&self, object: &ObjectEvent, route: &Route) -> Result<stage1::JobSpec> {
        let s = self.settings;
        let curated = required(&s.curated_bucket, "curated_bucket", "curated-bucket")?;
        let errors = required(&s.error_bucket, "error_bucket", "errors-bucket")?;
        let target = JobTarget {
            inputs: vec![format!("s3://{}/{}", object.bucket, object.key)],
            contract: contract_path(s, &route.dataset),
            output: Some(format!("s3://{curated}/{}", route.curated_prefix)),
            errors: Some(format!("s3://{errors}/{}", route.errors_prefix)),
            shard: self.args.process.shard,
            progress: self.global.progress,
            production: true,
            references: Vec::new(),
            reference_root: Some(root_url(curated, route)),
            replay: None,
        };
        job_spec(s, target, self.interrupted.clone())
    }

    /// Stage 1 of the raw object into the curated and error buckets.
    async fn curate(
        &self,
        object: &ObjectEvent,
        route: &Route,
        spec: &stage1::JobSpec,
    ) -> Result<()> {
        let s = self.settings;
        tracing::info!("processing");
        let started = std::time::Instant::now();
        let result = stage1::run(spec).await;
        println!(
            "{}",
            metrics::emf(
                route.stage.name(),
                &route.dataset,
                result.as_ref().ok(),
                started.elapsed()
            )
        );
        let report = result?;
        tracing::info!(
            rows_in = report.rows_in,
            rows_curated = report.rows_curated,
            rows_quarantined = report.rows_quarantined,
            duplicates_superseded = report.duplicates_superseded,
            "done"
        );
        eprint!("{}", report.summary());
        let threshold = s.validation_failure_threshold.0;
        let rate = report.rows_quarantined as f64 / report.rows_in.max(1) as f64;
        if rate > threshold {
            tracing::warn!(
                rate,
                threshold,
                "validation failure rate over the threshold"
            );
            if let Some(n) = self.notifier {
                let alert = serde_json::json!({
                    "request_id": self.request_id, "bucket": object.bucket, "key": object.key,
                    "dataset": route.dataset, "validation_failure_rate": rate, "threshold": threshold,
                    "rows_in": report.rows_in, "rows_quarantined": report.rows_quarantined,
                });
                n.alert("edp: validation failure rate over threshold", &alert)
                    .await?;
            }
        }
        Ok(())
    }
}
