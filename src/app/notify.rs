//! Failure notifications of `edp run`: an SNS message when a run fails, when its validation
//! failure rate passes the configured threshold or when stage 2's checks find violations, and a
//! dead-letter SQS message (the event and the reason) when a run fails for good.
//!
//! "For good" is [`crate::Error::is_final`]: the failure will not change on a retry (a
//! contract, configuration or input problem, or a conservation failure), or this is the last
//! attempt AWS Batch makes (`AWS_BATCH_JOB_ATTEMPT` has reached `max_attempts`). Messages carry
//! keys, counts and error messages, which by construction never hold a record value. The
//! clients use the official AWS SDK, configured from the standard environment
//! (`AWS_ENDPOINT_URL` for tests).

use serde_json::json;

use crate::{Error, Result};

/// Where notifications go; `None` fields are not sent.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    pub topic_arn: Option<String>,
    pub dead_letter_queue_url: Option<String>,
}

/// AWS clients for the targets, created once per run.
pub struct Notifier {
    targets: Targets,
    sns: aws_sdk_sns::Client,
    sqs: aws_sdk_sqs::Client,
}

impl Notifier {
    /// Clients from the standard AWS environment; `None` when there is no target at all.
    pub async fn new(targets: Targets) -> Option<Notifier> {
        if targets.topic_arn.is_none() && targets.dead_letter_queue_url.is_none() {
            return None;
        }
        let config = aws_config::load_from_env().await;
        Some(Notifier {
            targets,
            sns: aws_sdk_sns::Client::new(&config),
            sqs: aws_sdk_sqs::Client::new(&config),
        })
    }

    /// Publishes `message` (JSON) to the topic under `subject`.
    pub async fn alert(&self, subject: &str, message: &serde_json::Value) -> Result<()> {
        let Some(topic) = &self.targets.topic_arn else {
            return Ok(());
        };
        let subject: String = subject.chars().filter(char::is_ascii).take(100).collect();
        self.sns
            .publish()
            .topic_arn(topic)
            .subject(subject)
            .message(message.to_string())
            .send()
            .await
            .map_err(|e| {
                Error::Notify(format!(
                    "SNS publish to {topic}: {}",
                    aws_sdk_sns::error::DisplayErrorContext(e)
                ))
            })?;
        tracing::info!(topic = %topic, "alert published");
        Ok(())
    }

    /// Sends the event and the reason it failed to the dead-letter queue.
    pub async fn dead_letter(
        &self,
        event: &str,
        reason: &str,
        exit_code: u8,
        request_id: &str,
    ) -> Result<()> {
        let Some(queue) = &self.targets.dead_letter_queue_url else {
            return Ok(());
        };
        let body = dead_letter_body(event, reason, exit_code, request_id);
        self.sqs
            .send_message()
            .queue_url(queue)
            .message_body(body)
            .send()
            .await
            .map_err(|e| {
                Error::Notify(format!(
                    "SQS send to {queue}: {}",
                    aws_sdk_sqs::error::DisplayErrorContext(e)
                ))
            })?;
        tracing::info!(queue = %queue, "event sent to the dead-letter queue");
        Ok(())
    }
}

/// The largest SQS message body (256 KiB).
const SQS_MAX_BYTES: usize = 256 << 10;
/// How much of an oversized event a dead letter keeps.
const EVENT_HEAD_BYTES: usize = 4 << 10;

/// The dead letter's JSON body: the event (parsed when it is JSON, else as text), the reason,
/// the exit code and the request id. An event too large for one SQS message is replaced by its
/// size, SHA-256 and first 4 KiB, so the failure is still recorded and can be traced.
fn dead_letter_body(event: &str, reason: &str, exit_code: u8, request_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let parsed: serde_json::Value = serde_json::from_str(event).unwrap_or_else(|_| json!(event));
    let body = json!({
        "event": parsed,
        "reason": reason,
        "exit_code": exit_code,
        "request_id": request_id,
    })
    .to_string();
    if body.len() <= SQS_MAX_BYTES {
        return body;
    }
    let mut head = EVENT_HEAD_BYTES.min(event.len());
    while !event.is_char_boundary(head) {
        head -= 1;
    }
    let digest: String = Sha256::digest(event.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    json!({
        "event": {
            "truncated": true,
            "bytes": event.len(),
            "sha256": digest,
            "head": &event[..head],
        },
        "reason": reason,
        "exit_code": exit_code,
        "request_id": request_id,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letters_keep_the_event_and_fit_one_sqs_message() {
        let small = dead_letter_body(r#"{"bucket":"b","key":"k"}"#, "bad", 4, "r1");
        let v: serde_json::Value = serde_json::from_str(&small).unwrap();
        assert_eq!(v["event"]["key"], "k");
        assert_eq!(v["exit_code"], 4);

        let text = dead_letter_body("\u{0}not json\u{7f}", "not JSON", 3, "r2");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["event"], "\u{0}not json\u{7f}");

        let huge = format!("{{\"key\":\"{}\"}}", "é".repeat(300_000));
        let body = dead_letter_body(&huge, "too big", 3, "r3");
        assert!(body.len() <= SQS_MAX_BYTES, "{}", body.len());
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["event"]["truncated"], true);
        assert_eq!(v["event"]["bytes"], huge.len());
        assert!(huge.starts_with(v["event"]["head"].as_str().unwrap()));
        assert_eq!(v["event"]["sha256"].as_str().unwrap().len(), 64);
    }
}
