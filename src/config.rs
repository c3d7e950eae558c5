//! Layered configuration: built-in defaults, the config file, `CONFIG_JSON`, environment
//! variables and command-line flags, each overriding the ones before.
//!
//! Every key is declared once in [`KEYS`] with its environment variable and default, so the
//! layers cannot drift apart and `edp config show` can list every value with where it came from.
//! The config file is `--config FILE`, else `/app/config/config.json` when it exists; it and
//! `CONFIG_JSON` are flat JSON objects of these keys. An unknown key or a value of the wrong
//! shape is an error naming its source, never ignored. Secrets are redacted when shown.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde_json::Value;

use crate::{Error, Result};

/// The config file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "/app/config/config.json";

/// One configuration key.
#[derive(Debug)]
pub struct Key {
    pub name: &'static str,
    pub env: &'static str,
    pub default: Option<&'static str>,
    pub secret: bool,
    pub help: &'static str,
}

const fn key(
    name: &'static str,
    env: &'static str,
    default: Option<&'static str>,
    help: &'static str,
) -> Key {
    Key {
        name,
        env,
        default,
        secret: false,
        help,
    }
}

/// Every configuration key.
pub const KEYS: &[Key] = &[
    key(
        "batch_size",
        "BATCH_SIZE",
        Some("8192"),
        "rows per record batch",
    ),
    key(
        "memory_limit",
        "MEMORY_LIMIT",
        Some("2GiB"),
        "memory budget of a job",
    ),
    key(
        "read_ahead",
        "READ_AHEAD",
        Some("2"),
        "row groups (or slices of large ones) fetched ahead of decoding",
    ),
    key(
        "compression",
        "COMPRESSION",
        Some("snappy"),
        "output codec: snappy, zstd or none",
    ),
    key("log_level", "LOG_LEVEL", Some("info"), "tracing filter"),
    key(
        "pci_dss_enabled",
        "PCI_DSS_ENABLED",
        Some("true"),
        "mask card numbers",
    ),
    key(
        "validation_enabled",
        "VALIDATION_ENABLED",
        Some("true"),
        "check row rules",
    ),
    key(
        "deduplication_enabled",
        "DEDUPLICATION_ENABLED",
        Some("true"),
        "keep the latest version per key",
    ),
    key(
        "spill_dir",
        "SPILL_DIR",
        None,
        "where the dedup index spills (default: the temp dir)",
    ),
    key(
        "curated_bucket",
        "CURATED_BUCKET",
        None,
        "curated output bucket of `edp run`",
    ),
    key(
        "error_bucket",
        "ERROR_BUCKET",
        None,
        "quarantine bucket of `edp run`",
    ),
    key(
        "contracts_dir",
        "CONTRACTS_DIR",
        Some("/app/config/contracts"),
        "contracts of `edp run`",
    ),
    key(
        "prod_bucket",
        "PROD_BUCKET",
        None,
        "prod output bucket of `edp run` on curated objects",
    ),
    key(
        "models_dir",
        "MODELS_DIR",
        Some("/app/config/models"),
        "stage 2 SQL models (checks in checks/)",
    ),
    key(
        "catalog",
        "CATALOG",
        Some("none"),
        "stage 2 catalog update: glue, projection, crawler or none",
    ),
    key(
        "glue_database",
        "GLUE_DATABASE",
        Some("edp_prod"),
        "Glue database of the prod tables",
    ),
    key(
        "glue_crawler",
        "GLUE_CRAWLER",
        None,
        "crawler started by --catalog crawler",
    ),
    key(
        "prod_compression",
        "PROD_COMPRESSION",
        Some("zstd"),
        "stage 2 output codec: zstd, snappy or none",
    ),
    key(
        "target_file_size",
        "TARGET_FILE_SIZE",
        Some("256MiB"),
        "stage 2 files are closed past this size",
    ),
    key(
        "kms_key_id",
        "KMS_KEY_ID",
        None,
        "KMS key for SSE-KMS on S3 writes",
    ),
    key(
        "sns_topic_arn",
        "SNS_TOPIC_ARN",
        None,
        "topic `edp run` alerts on failures",
    ),
    key(
        "dead_letter_queue_url",
        "DEAD_LETTER_QUEUE_URL",
        None,
        "queue for events that failed for good",
    ),
    key(
        "validation_failure_threshold",
        "VALIDATION_FAILURE_THRESHOLD",
        Some("0.1"),
        "share of failing rows that triggers an alert",
    ),
    key(
        "max_attempts",
        "MAX_ATTEMPTS",
        Some("3"),
        "attempts AWS Batch makes (the job definition's)",
    ),
    key(
        "aws_default_region",
        "AWS_DEFAULT_REGION",
        None,
        "AWS region",
    ),
    Key {
        name: "pii_hash_key",
        env: "PII_HASH_KEY",
        default: None,
        secret: true,
        help: "key of x-pii hash tokens",
    },
];

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    ConfigJson,
    Env(&'static str),
    Flag,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => write!(f, "default"),
            Source::File(p) => write!(f, "config file {}", p.display()),
            Source::ConfigJson => write!(f, "CONFIG_JSON"),
            Source::Env(name) => write!(f, "environment {name}"),
            Source::Flag => write!(f, "command line"),
        }
    }
}

/// The effective configuration.
#[derive(Debug)]
pub struct Config {
    values: Vec<(&'static Key, Option<(String, Source)>)>,
}

fn json_layer(text: &str, source: &Source) -> Result<Vec<(&'static Key, String)>> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| Error::Config(format!("{source}: not valid JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| Error::Config(format!("{source}: expected a JSON object of settings")))?;
    let mut out = Vec::new();
    for (name, value) in obj {
        let key = KEYS.iter().find(|k| k.name == name).ok_or_else(|| {
            let known: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
            Error::Config(format!(
                "{source}: unknown key `{name}`; known keys: {}",
                known.join(", ")
            ))
        })?;
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => {
                return Err(Error::Config(format!(
                    "{source}: key `{name}` must be a string, number or boolean"
                )))
            }
        };
        out.push((key, text));
    }
    Ok(out)
}

impl Config {
    /// Resolves every key. `file` is `--config` (which must exist); `env` reads the environment
    /// (a parameter so tests need not touch the process's); `flags` are (key, value) pairs given
    /// on the command line.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
        flags: &[(&str, Option<String>)],
    ) -> Result<Config> {
        let mut values: Vec<(&'static Key, Option<(String, Source)>)> = KEYS
            .iter()
            .map(|k| (k, k.default.map(|d| (d.to_string(), Source::Default))))
            .collect();
        let mut set = |key: &'static Key, value: String, source: Source| {
            if let Some(slot) = values.iter_mut().find(|(k, _)| k.name == key.name) {
                slot.1 = Some((value, source));
            }
        };
        let file = match file {
            Some(p) => Some(p.to_path_buf()),
            None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.exists()),
        };
        if let Some(path) = file {
            let source = Source::File(path.clone());
            let text = std::fs::read_to_string(&path)
                .map_err(|e| Error::Config(format!("{source}: cannot read: {e}")))?;
            for (key, value) in json_layer(&text, &source)? {
                set(key, value, source.clone());
            }
        }
        if let Some(text) = env("CONFIG_JSON") {
            for (key, value) in json_layer(&text, &Source::ConfigJson)? {
                set(key, value, Source::ConfigJson);
            }
        }
        for key in KEYS {
            if let Some(value) = env(key.env) {
                set(key, value, Source::Env(key.env));
            }
        }
        for (name, value) in flags {
            let key = KEYS
                .iter()
                .find(|k| k.name == *name)
                .ok_or_else(|| Error::Internal(format!("flag for unknown key {name}")))?;
            if let Some(value) = value {
                set(key, value.clone(), Source::Flag);
            }
        }
        Ok(Config { values })
    }

    /// The raw value of `name` and its source.
    pub fn get(&self, name: &str) -> Option<&(String, Source)> {
        self.values
            .iter()
            .find(|(k, _)| k.name == name)
            .and_then(|(_, v)| v.as_ref())
    }

    /// The value of `name` parsed with `parse`; the error names the key, its source and the
    /// expected form (never the value of a secret).
    pub fn parse_with<T>(
        &self,
        name: &str,
        expected: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>> {
        let Some((text, source)) = self.get(name) else {
            return Ok(None);
        };
        let secret = KEYS.iter().any(|k| k.name == name && k.secret);
        parse(text.trim()).map(Some).ok_or_else(|| {
            let found = if secret {
                "a redacted value".to_string()
            } else {
                format!("`{text}`")
            };
            Error::Config(format!(
                "{name} (from {source}): expected {expected}, found {found}"
            ))
        })
    }

    /// The value of `name` parsed with [`FromStr`].
    pub fn parse<T: FromStr>(&self, name: &str, expected: &str) -> Result<Option<T>> {
        self.parse_with(name, expected, |s| s.parse().ok())
    }

    /// A boolean key: `true` or `false`.
    pub fn flag(&self, name: &str) -> Result<bool> {
        Ok(self
            .parse_with(name, "true or false", |s| {
                match s.to_ascii_lowercase().as_str() {
                    "true" => Some(true),
                    "false" => Some(false),
                    _ => None,
                }
            })?
            .unwrap_or(false))
    }

    /// Every key with its value (secrets redacted) and source, one per line.
    pub fn show(&self) -> String {
        let mut out = String::new();
        for (key, value) in &self.values {
            let (text, source) = match value {
                Some((_, source)) if key.secret => ("<redacted>".to_string(), source.to_string()),
                Some((v, source)) => (v.clone(), source.to_string()),
                None => ("<unset>".to_string(), "default".to_string()),
            };
            out.push_str(&format!(
                "{:<22} = {:<24} # {} ({})\n",
                key.name, text, source, key.help
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_override_in_order_and_unknown_keys_fail() {
        let dir = tempfile::TempDir::new().unwrap();
        let file = dir.path().join("config.json");
        std::fs::write(&file, r#"{"batch_size": 1000, "log_level": "debug", "memory_limit": "1GiB", "pii_hash_key": "s3cr3t"}"#).unwrap();
        let env = |k: &str| match k {
            "CONFIG_JSON" => Some(r#"{"batch_size": 2000, "read_ahead": 4}"#.to_string()),
            "BATCH_SIZE" => Some("3000".to_string()),
            _ => None,
        };
        let c = Config::load(
            Some(&file),
            env,
            &[("read_ahead", Some("5".into())), ("compression", None)],
        )
        .unwrap();
        assert_eq!(
            c.get("batch_size").unwrap(),
            &("3000".to_string(), Source::Env("BATCH_SIZE"))
        );
        assert_eq!(c.get("read_ahead").unwrap().1, Source::Flag);
        assert_eq!(c.get("log_level").unwrap().1, Source::File(file.clone()));
        assert_eq!(
            c.get("compression").unwrap(),
            &("snappy".to_string(), Source::Default)
        );
        let shown = c.show();
        assert!(
            shown.contains("<redacted>") && !shown.contains("s3cr3t"),
            "{shown}"
        );

        std::fs::write(&file, r#"{"batch_sise": 1}"#).unwrap();
        let e = Config::load(Some(&file), |_| None, &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown key `batch_sise`") && e.contains("config.json"),
            "{e}"
        );
        let e = Config::load(
            None,
            |k| (k == "CONFIG_JSON").then(|| "[1]".to_string()),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("CONFIG_JSON"), "{e}");
        let c = Config::load(
            None,
            |k| (k == "PCI_DSS_ENABLED").then(|| "maybe".to_string()),
            &[],
        )
        .unwrap();
        let e = c.flag("pci_dss_enabled").unwrap_err().to_string();
        assert!(
            e.contains("environment PCI_DSS_ENABLED") && e.contains("true or false"),
            "{e}"
        );
    }
}
