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
    /// A flag, environment variable or URL is invalid.
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
    /// Parquet encoding or decoding failed for an object.
    #[error("parquet {object}: {source}")]
    Parquet {
        object: String,
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// Writing or reading the dedup index's spill files failed (disk full, permissions).
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
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Contract { .. } | Error::Config(_) => 3,
            Error::BadInput { .. } | Error::Parquet { .. } => 4,
            Error::Store { .. } | Error::Spill(_) | Error::Notify(_) | Error::Catalog(_) => 5,
            Error::Query { .. } => 1,
            Error::Interrupted(_) => 143,
            Error::Conservation(_) => 6,
            Error::Internal(_) => 70,
        }
    }
}

impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Self {
        Error::Internal(format!("arrow: {e}"))
    }
}
