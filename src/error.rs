//! Typed errors. Variants separate what the user must fix (contract, configuration, input data)
//! from environment failures (storage) and bugs, so the binary can map each to its own exit code.
//! Messages name the object, the column or JSON pointer, what was expected and what was found,
//! and never carry a record value (a value could be a card number).

use std::fmt;

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every failure the library reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A dataset contract is malformed or uses something unsupported.
    #[error("contract {file}: at {pointer}: {message}")]
    Contract {
        file: String,
        pointer: String,
        message: String,
    },
    /// A setting (in any layer), flag, `edp run` event, URL, model file or directory is invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// An input object cannot be processed as a whole (not Parquet, corrupt, wrong schema).
    #[error("input {object}: {message}")]
    BadInput { object: String, message: String },
    /// Reading or writing object storage failed.
    #[error("storage {object}: {source}")]
    Store {
        object: String,
        #[source]
        source: object_store::Error,
    },
    /// Encoding an output as Parquet failed (decoding failures are [`Error::BadInput`]).
    #[error("encoding {object}: {source}")]
    Encode {
        object: String,
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// Creating, writing or reading a spill or scratch file failed (the dedup index's run files,
    /// stage 2's current-state and scratch tables; disk full).
    #[error("spill: {0}")]
    Spill(String),
    /// Publishing a notification (SNS) or a dead letter (SQS) failed.
    #[error("notification: {0}")]
    Notify(String),
    /// Updating the Glue catalog failed (the prod outputs are published; a rerun retries).
    #[error("catalog: {0}")]
    Catalog(String),
    /// DataFusion failed while running a model or check.
    #[error("model {model}: {message}")]
    Query { model: String, message: String },
    /// The run was interrupted by a signal; outputs were aborted.
    #[error("interrupted by {0}: outputs aborted, nothing published")]
    Interrupted(&'static str),
    /// The run report does not balance: a row was lost or counted twice.
    #[error("conservation check failed: {0}")]
    Conservation(String),
    /// A bug: an invariant of the program did not hold.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// A contract error at `pointer` in `file`.
    pub fn contract(file: &str, pointer: impl fmt::Display, message: impl fmt::Display) -> Self {
        Error::Contract {
            file: file.to_string(),
            pointer: pointer.to_string(),
            message: message.to_string(),
        }
    }

    /// A file-level input error for `object`.
    pub fn bad_input(object: impl fmt::Display, message: impl fmt::Display) -> Self {
        Error::BadInput {
            object: object.to_string(),
            message: message.to_string(),
        }
    }

    /// The documented process exit code for this error (see README, "Exit codes").
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Contract { .. } | Error::Config(_) => 3,
            Error::BadInput { .. } => 4,
            Error::Store { .. } | Error::Spill(_) | Error::Notify(_) | Error::Catalog(_) => 5,
            Error::Query { .. } => 1,
            Error::Interrupted(_) => 143,
            Error::Conservation(_) => 6,
            Error::Encode { .. } | Error::Internal(_) => 70,
        }
    }

    /// True when the same run might succeed if tried again: the environment failed (storage,
    /// spill disk, notifications, the catalog), a model or check failed while running on the
    /// data (planning errors are configuration errors), the run was interrupted (a SIGTERM is
    /// AWS Batch stopping the job, e.g. a Spot reclaim), or an internal error (an encoder's
    /// included) that may not recur. What the user must fix (contract, configuration, input)
    /// and a conservation failure never change on a retry.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Store { .. }
            | Error::Spill(_)
            | Error::Notify(_)
            | Error::Catalog(_)
            | Error::Query { .. }
            | Error::Interrupted(_)
            | Error::Encode { .. }
            | Error::Internal(_) => true,
            Error::Contract { .. }
            | Error::Config(_)
            | Error::BadInput { .. }
            | Error::Conservation(_) => false,
        }
    }

    /// True when this failure is final for an AWS Batch job on `attempt` (1-based, `None`
    /// outside Batch) of `max_attempts`: retrying cannot help, or no attempt is left. A final
    /// failure is dead-lettered.
    pub fn is_final(&self, attempt: Option<u32>, max_attempts: u32) -> bool {
        !self.is_retryable() || attempt.is_some_and(|a| a >= max_attempts)
    }
}

/// Exit code of `edp validate` when at least one row broke a rule (not an error: the report is
/// printed).
pub const EXIT_ROWS_FAILED: u8 = 8;

impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Self {
        Error::Internal(format!("arrow: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_of_each() -> Vec<Error> {
        vec![
            Error::contract("c.json", "/properties/a", "bad"),
            Error::Config("x".into()),
            Error::bad_input("s3://b/k", "not Parquet"),
            Error::Encode {
                object: "s3://c/curated/part-00000.parquet".into(),
                source: parquet::errors::ParquetError::General("eof".into()),
            },
            Error::Store {
                object: "s3://b/k".into(),
                source: object_store::Error::NotFound {
                    path: "k".into(),
                    source: "gone".into(),
                },
            },
            Error::Spill("disk full".into()),
            Error::Notify("sns".into()),
            Error::Catalog("glue".into()),
            Error::Query {
                model: "m".into(),
                message: "resources exhausted".into(),
            },
            Error::Interrupted("SIGTERM"),
            Error::Conservation("1 != 2".into()),
            Error::Internal("bug".into()),
        ]
    }

    #[test]
    fn every_error_has_its_documented_exit_code_and_retryability() {
        let got: Vec<(u8, bool)> = one_of_each()
            .iter()
            .map(|e| (e.exit_code(), e.is_retryable()))
            .collect();
        assert_eq!(
            got,
            [
                (3, false),
                (3, false),
                (4, false),
                (70, true),
                (5, true),
                (5, true),
                (5, true),
                (5, true),
                (1, true),
                (143, true),
                (6, false),
                (70, true),
            ]
        );
    }

    #[test]
    fn a_retryable_failure_is_final_only_on_the_last_attempt() {
        let term = Error::Interrupted("SIGTERM");
        assert!(!term.is_final(Some(1), 3), "a Spot reclaim is retried");
        assert!(!term.is_final(Some(2), 3));
        assert!(term.is_final(Some(3), 3), "the last attempt");
        assert!(
            !term.is_final(None, 3),
            "outside Batch nothing retries, nothing is final"
        );
        let bad = Error::bad_input("k", "corrupt");
        assert!(bad.is_final(Some(1), 3), "bad input never gets better");
        assert!(bad.is_final(None, 3));
    }
}
