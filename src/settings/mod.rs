//! The settings of every command: one typed struct, [`Settings`], whose fields, defaults,
//! environment variables and help are declared once, in the table at the `settings!` call
//! below. A new setting is one entry there plus, when it has one, its flag.
//!
//! Layers fill the typed fields in order, each overriding the ones before: built-in defaults,
//! the config file, `CONFIG_JSON`, environment variables, command-line flags. The config file
//! is `--config FILE`, else `/app/config/config.json` when it exists; it and `CONFIG_JSON` are
//! flat JSON objects of these keys. Text values (file, JSON, environment) are parsed once, when
//! their layer loads, by the field type's [`Setting::parse`]; an unknown key or a value of the
//! wrong shape is an error naming its source, never ignored. Flags arrive typed from clap and are
//! assigned, not re-parsed: numbers, sizes and booleans parsed by the same [`Setting::parse`]
//! (through [`parser`]), enums by clap's `ValueEnum`. Each value remembers where it came from,
//! so `edp config show` can say.
//!
//! This module reads the config file and the environment it is handed; it starts nothing and
//! knows no stage: turning settings into a job is the app's business ([`crate::app`]). Secrets
//! are redacted when shown and in errors.

use std::fmt;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use clap::ValueEnum;
use serde_json::Value;

use crate::output::Codec;
use crate::{Error, Result};

/// The config file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "/app/config/config.json";

/// A value type a setting can have: parsed from the text of a file, `CONFIG_JSON`, an
/// environment variable or a flag, and shown by `edp config show`.
pub trait Setting: Sized {
    /// What a valid value looks like, for error messages.
    const EXPECTED: &'static str;
    /// The value of `text`, or `None` when it is not of this shape.
    fn parse(text: &str) -> Option<Self>;
    /// The value as `edp config show` prints it.
    fn show(&self) -> String;
}

/// A clap value parser from [`Setting::parse`], so flags and text layers accept the same forms.
pub fn parser<T: Setting>(text: &str) -> std::result::Result<T, String> {
    T::parse(text).ok_or_else(|| format!("`{text}`: expected {}", T::EXPECTED))
}

impl Setting for bool {
    const EXPECTED: &'static str = "true or false";
    fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        }
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

/// Integers: decimal digits, surrounding spaces allowed.
macro_rules! integer_setting {
    ($($ty:ty => $expected:literal),+) => {$(
        impl Setting for $ty {
            const EXPECTED: &'static str = $expected;
            fn parse(text: &str) -> Option<Self> {
                text.trim().parse().ok()
            }
            fn show(&self) -> String {
                self.to_string()
            }
        }
    )+};
}

integer_setting!(
    usize => "a non-negative integer",
    NonZeroUsize => "a positive integer",
    u32 => "a non-negative integer"
);

/// Text as given (not trimmed: a key's bytes are its own).
impl Setting for String {
    const EXPECTED: &'static str = "a string";
    fn parse(text: &str) -> Option<Self> {
        Some(text.to_string())
    }
    fn show(&self) -> String {
        self.clone()
    }
}

impl Setting for PathBuf {
    const EXPECTED: &'static str = "a path";
    fn parse(text: &str) -> Option<Self> {
        Some(PathBuf::from(text.trim()))
    }
    fn show(&self) -> String {
        self.display().to_string()
    }
}

impl Setting for Codec {
    const EXPECTED: &'static str = "snappy, zstd or none";
    fn parse(text: &str) -> Option<Self> {
        Codec::from_str(text.trim(), true).ok()
    }
    fn show(&self) -> String {
        self.to_possible_value()
            .map_or_else(String::new, |v| v.get_name().to_string())
    }
}

/// An optional value: unset unless a layer sets it.
impl<T: Setting> Setting for Option<T> {
    const EXPECTED: &'static str = T::EXPECTED;
    fn parse(text: &str) -> Option<Self> {
        T::parse(text).map(Some)
    }
    fn show(&self) -> String {
        self.as_ref().map_or_else(|| "<unset>".to_string(), T::show)
    }
}

/// A size in bytes of at least 1 MiB, written as a number with an optional unit (B, KiB, MiB,
/// GiB, KB, MB, GB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bytes(pub usize);

const MIB: usize = 1 << 20;
const GIB: usize = 1 << 30;

impl Setting for Bytes {
    const EXPECTED: &'static str = "a size of at least 1MiB, like 512MiB or 2GiB";
    fn parse(text: &str) -> Option<Self> {
        let t = text.trim();
        let split = t
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let value: f64 = num.parse().ok()?;
        let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "k" | "kib" => 1024.0,
            "m" | "mib" => MIB as f64,
            "g" | "gib" => GIB as f64,
            "kb" => 1e3,
            "mb" => 1e6,
            "gb" => 1e9,
            _ => return None,
        };
        let bytes = value * scale;
        (bytes >= MIB as f64).then_some(Bytes(bytes as usize))
    }
    fn show(&self) -> String {
        match self.0 {
            b if b % GIB == 0 => format!("{}GiB", b / GIB),
            b if b % MIB == 0 => format!("{}MiB", b / MIB),
            b => b.to_string(),
        }
    }
}

/// A share between 0 and 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Share(pub f64);

impl Setting for Share {
    const EXPECTED: &'static str = "a share between 0 and 1";
    fn parse(text: &str) -> Option<Self> {
        let v: f64 = text.trim().parse().ok()?;
        (0.0..=1.0).contains(&v).then_some(Share(v))
    }
    fn show(&self) -> String {
        self.0.to_string()
    }
}

/// How stage 2 updates the catalog after a successful write (the crawler's name is its own
/// setting, `glue_crawler`).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Catalog {
    /// Glue tables and partitions.
    Glue,
    /// Glue tables with partition-projection properties, no partitions.
    Projection,
    /// Start the Glue crawler `glue_crawler`.
    Crawler,
    /// Leave the catalog alone.
    None,
}

impl Setting for Catalog {
    const EXPECTED: &'static str = "glue, projection, crawler or none";
    fn parse(text: &str) -> Option<Self> {
        Catalog::from_str(text.trim(), true).ok()
    }
    fn show(&self) -> String {
        self.to_possible_value()
            .map_or_else(String::new, |v| v.get_name().to_string())
    }
}

/// One setting's name, environment variable, help and secrecy.
#[derive(Debug)]
pub struct Key {
    pub name: &'static str,
    pub env: &'static str,
    pub help: &'static str,
    pub secret: bool,
}

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

macro_rules! secret {
    () => {
        false
    };
    (secret) => {
        true
    };
}

/// Declares [`Settings`], its [`Layer`] of overrides and [`KEYS`] from one table:
/// `/// help` `name: Type = default, "ENV_VAR" [, secret];`.
macro_rules! settings {
    ($($(#[doc = $doc:literal])+ $name:ident: $ty:ty = $default:expr, $env:literal $(, $secret:ident)?;)+) => {
        /// The effective value of every setting, and where each came from.
        #[derive(Debug, Clone)]
        pub struct Settings {
            $($(#[doc = $doc])+ pub $name: $ty,)+
            sources: Vec<Source>,
        }

        impl Default for Settings {
            fn default() -> Self {
                Settings {
                    $($name: $default,)+
                    sources: vec![Source::Default; KEYS.len()],
                }
            }
        }

        /// One layer of settings: `None` leaves the value of the layers below.
        #[derive(Debug, Default)]
        pub struct Layer {
            $(pub $name: Option<$ty>,)+
        }

        /// Every setting, in the order `edp config show` prints them.
        pub const KEYS: &[Key] = &[$(Key {
            name: stringify!($name),
            env: $env,
            help: concat!($($doc),+),
            secret: secret!($($secret)?),
        },)+];

        impl Layer {
            /// Sets `name` from `text`: `Ok(false)` when there is no such setting,
            /// `Err(expected)` when the text is not of its shape.
            fn set_text(&mut self, name: &str, text: &str) -> std::result::Result<bool, &'static str> {
                match name {
                    $(stringify!($name) => {
                        self.$name = Some(<$ty as Setting>::parse(text).ok_or(<$ty as Setting>::EXPECTED)?);
                    })+
                    _ => return Ok(false),
                }
                Ok(true)
            }

            /// Writes this layer's values over `to`, recording `source` for each.
            fn apply(self, to: &mut Settings, source: &Source) {
                let mut i = 0;
                $(
                    if let Some(v) = self.$name {
                        to.$name = v;
                        to.sources[i] = source.clone();
                    }
                    i += 1;
                )+
                debug_assert_eq!(i, KEYS.len());
            }
        }

        impl Settings {
            /// The value of setting `i` of [`KEYS`] as `config show` prints it.
            fn show_value(&self, i: usize) -> String {
                let mut at = 0;
                $(
                    if at == i {
                        return Setting::show(&self.$name);
                    }
                    at += 1;
                )+
                let _ = at;
                String::new()
            }
        }
    };
}

settings! {
    /// rows per record batch read from Parquet
    batch_size: NonZeroUsize = NonZeroUsize::new(8192).unwrap_or(NonZeroUsize::MIN), "BATCH_SIZE";
    /// memory budget of a job, e.g. 512MiB or 2GiB; the dedup index spills past its share
    memory_limit: Bytes = Bytes(2 * GIB), "MEMORY_LIMIT";
    /// memory the dedup index holds before it spills (default: 1/32 of memory_limit)
    index_memory: Option<Bytes> = None, "INDEX_MEMORY";
    /// row groups (or slices of large ones) fetched ahead of decoding
    read_ahead: usize = 2, "READ_AHEAD";
    /// stage 1 output codec: snappy, zstd or none
    compression: Codec = Codec::Snappy, "COMPRESSION";
    /// tracing filter of the logs on stderr
    log_level: String = "info".to_string(), "LOG_LEVEL";
    /// mask card numbers (x-pci columns and free text); off is logged as a warning
    pci_dss_enabled: bool = true, "PCI_DSS_ENABLED";
    /// check row rules; with false only file-level checks run
    validation_enabled: bool = true, "VALIDATION_ENABLED";
    /// keep only the latest version per primary key
    deduplication_enabled: bool = true, "DEDUPLICATION_ENABLED";
    /// with false a foreign key whose referenced dataset has no curated objects is skipped (and reported) instead of failing the run
    references_required: bool = true, "REFERENCES_REQUIRED";
    /// CSV inputs: the field delimiter, one ASCII character (DMS CsvDelimiter)
    csv_delimiter: String = ",".to_string(), "CSV_DELIMITER";
    /// CSV inputs: an unquoted field equal to this is null, as an unquoted empty field always is (DMS CsvNullValue)
    csv_null_value: Option<String> = None, "CSV_NULL_VALUE";
    /// CSV inputs: the first line names the columns (DMS AddColumnName)
    csv_header: bool = false, "CSV_HEADER";
    /// CSV inputs: the name of the extra last column DMS adds (DMS TimestampColumnName)
    csv_timestamp_column: Option<String> = None, "CSV_TIMESTAMP_COLUMN";
    /// where the dedup index and stage 2 spill (default: the system temp dir)
    spill_dir: Option<PathBuf> = None, "SPILL_DIR";
    /// curated output bucket of `edp run`
    curated_bucket: Option<String> = None, "CURATED_BUCKET";
    /// quarantine bucket of `edp run`
    error_bucket: Option<String> = None, "ERROR_BUCKET";
    /// directory of the dataset contracts, <dataset>.json
    contracts_dir: PathBuf = PathBuf::from("/app/config/contracts"), "CONTRACTS_DIR";
    /// prod output bucket of `edp run` on curated objects
    prod_bucket: Option<String> = None, "PROD_BUCKET";
    /// stage 2 SQL models, <name>.sql (checks in checks/)
    models_dir: PathBuf = PathBuf::from("/app/config/models"), "MODELS_DIR";
    /// stage 2 catalog update: glue, projection, crawler or none
    catalog: Catalog = Catalog::None, "CATALOG";
    /// Glue database of the prod tables
    glue_database: String = "edp_prod".to_string(), "GLUE_DATABASE";
    /// crawler that the crawler catalog mode starts
    glue_crawler: Option<String> = None, "GLUE_CRAWLER";
    /// stage 2 output codec: zstd, snappy or none
    prod_compression: Codec = Codec::Zstd, "PROD_COMPRESSION";
    /// stage 2 files are closed past this size
    target_file_size: Bytes = Bytes(256 * MIB), "TARGET_FILE_SIZE";
    /// KMS key for SSE-KMS on S3 writes
    kms_key_id: Option<String> = None, "KMS_KEY_ID";
    /// SNS topic `edp run` alerts on
    sns_topic_arn: Option<String> = None, "SNS_TOPIC_ARN";
    /// SQS queue for events that failed for good
    dead_letter_queue_url: Option<String> = None, "DEAD_LETTER_QUEUE_URL";
    /// share of quarantined rows above which `edp run` alerts
    validation_failure_threshold: Share = Share(0.1), "VALIDATION_FAILURE_THRESHOLD";
    /// attempts AWS Batch makes (the job definition's); the last one dead-letters
    max_attempts: u32 = 3, "MAX_ATTEMPTS";
    /// AWS region
    aws_default_region: Option<String> = None, "AWS_DEFAULT_REGION";
    /// key of x-pii hash tokens (a development key is used, with a warning, when unset)
    pii_hash_key: Option<String> = None, "PII_HASH_KEY", secret;
}

/// The help of setting `name` for its flag: its text, config key, environment variable and
/// default, from [`KEYS`] and [`Settings::default`].
pub fn flag_help(name: &str) -> String {
    let defaults = Settings::default();
    match KEYS.iter().position(|k| k.name == name) {
        Some(i) => {
            let key = &KEYS[i];
            let mut help = key.help.trim().to_string();
            if let Some(first) = help.get(..1) {
                help = first.to_uppercase() + &help[1..];
            }
            let default = defaults.show_value(i);
            let default = if default == "<unset>" || key.secret {
                String::new()
            } else {
                format!(", default {default}")
            };
            format!("{help} [config {}, env {}{default}]", key.name, key.env)
        }
        None => String::new(),
    }
}

impl Settings {
    /// Resolves every setting. `file` is `--config` (which must exist); `env` reads the
    /// environment (a parameter so tests need not touch the process's); `flags` is the
    /// command-line layer.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
        flags: Layer,
    ) -> Result<Settings> {
        let mut settings = Settings::default();
        let file = match file {
            Some(p) => Some(p.to_path_buf()),
            None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.exists()),
        };
        if let Some(path) = file {
            let source = Source::File(path.clone());
            let text = std::fs::read_to_string(&path)
                .map_err(|e| Error::Config(format!("{source}: cannot read: {e}")))?;
            json_layer(&text, &source)?.apply(&mut settings, &source);
        }
        if let Some(text) = env("CONFIG_JSON") {
            json_layer(&text, &Source::ConfigJson)?.apply(&mut settings, &Source::ConfigJson);
        }
        for key in KEYS {
            if let Some(text) = env(key.env) {
                let source = Source::Env(key.env);
                let mut layer = Layer::default();
                set(&mut layer, key.name, &text, &source)?;
                layer.apply(&mut settings, &source);
            }
        }
        flags.apply(&mut settings, &Source::Flag);
        Ok(settings)
    }

    /// Where setting `name` came from.
    pub fn source(&self, name: &str) -> Option<&Source> {
        KEYS.iter()
            .position(|k| k.name == name)
            .map(|i| &self.sources[i])
    }

    /// Every setting with its value (secrets redacted) and source, one per line.
    pub fn show(&self) -> String {
        let mut out = String::new();
        for (i, key) in KEYS.iter().enumerate() {
            let text = self.show_value(i);
            let text = if key.secret && text != "<unset>" {
                "<redacted>".to_string()
            } else {
                text
            };
            out.push_str(&format!(
                "{:<28} = {:<24} # {} ({})\n",
                key.name,
                text,
                self.sources[i],
                key.help.trim()
            ));
        }
        out
    }
}

/// Sets `name` of `layer` from `text`; the error names the key, its source and the expected
/// form (never the value of a secret).
fn set(layer: &mut Layer, name: &str, text: &str, source: &Source) -> Result<()> {
    match layer.set_text(name, text) {
        Ok(true) => Ok(()),
        Ok(false) => {
            let known: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
            Err(Error::Config(format!(
                "{source}: unknown key `{name}`; known keys: {}",
                known.join(", ")
            )))
        }
        Err(expected) => {
            let secret = KEYS.iter().any(|k| k.name == name && k.secret);
            let found = if secret {
                "a redacted value".to_string()
            } else {
                format!("`{text}`")
            };
            Err(Error::Config(format!(
                "{name} (from {source}): expected {expected}, found {found}"
            )))
        }
    }
}

/// A flat JSON object of settings as a layer.
fn json_layer(text: &str, source: &Source) -> Result<Layer> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| Error::Config(format!("{source}: not valid JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| Error::Config(format!("{source}: expected a JSON object of settings")))?;
    let mut layer = Layer::default();
    for (name, value) in obj {
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
        set(&mut layer, name, &text, source)?;
    }
    Ok(layer)
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
        let flags = Layer {
            read_ahead: Some(5),
            ..Layer::default()
        };
        let s = Settings::load(Some(&file), env, flags).unwrap();
        assert_eq!(s.batch_size.get(), 3000);
        assert_eq!(s.source("batch_size"), Some(&Source::Env("BATCH_SIZE")));
        assert_eq!(s.read_ahead, 5);
        assert_eq!(s.source("read_ahead"), Some(&Source::Flag));
        assert_eq!(s.log_level, "debug");
        assert_eq!(s.source("log_level"), Some(&Source::File(file.clone())));
        assert_eq!(s.memory_limit, Bytes(1 << 30));
        assert_eq!(s.compression, Codec::Snappy);
        assert_eq!(s.source("compression"), Some(&Source::Default));
        let shown = s.show();
        assert!(
            shown.contains("<redacted>") && !shown.contains("s3cr3t"),
            "{shown}"
        );
        assert!(
            shown.contains("memory_limit") && shown.contains("1GiB"),
            "{shown}"
        );

        std::fs::write(&file, r#"{"batch_sise": 1}"#).unwrap();
        let e = Settings::load(Some(&file), |_| None, Layer::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown key `batch_sise`") && e.contains("config.json"),
            "{e}"
        );
        let e = Settings::load(
            None,
            |k| (k == "CONFIG_JSON").then(|| "[1]".to_string()),
            Layer::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("CONFIG_JSON"), "{e}");
        let e = Settings::load(
            None,
            |k| (k == "PCI_DSS_ENABLED").then(|| "maybe".to_string()),
            Layer::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("environment PCI_DSS_ENABLED") && e.contains("true or false"),
            "{e}"
        );
        let e = Settings::load(
            None,
            |k| (k == "PII_HASH_KEY").then(|| "x".to_string()),
            Layer::default(),
        )
        .map(|s| s.pii_hash_key);
        assert_eq!(e.unwrap(), Some("x".to_string()));
    }

    #[test]
    fn every_key_has_an_env_var_a_help_and_a_shown_default() {
        let defaults = Settings::default();
        let mut seen = std::collections::BTreeSet::new();
        for (i, key) in KEYS.iter().enumerate() {
            assert!(seen.insert(key.env), "{} declared twice", key.env);
            assert_eq!(key.env, key.name.to_uppercase(), "{}", key.name);
            assert!(!key.help.trim().is_empty(), "{}", key.name);
            assert!(!defaults.show_value(i).is_empty(), "{}", key.name);
        }
        assert_eq!(
            flag_help("batch_size"),
            "Rows per record batch read from Parquet [config batch_size, env BATCH_SIZE, default 8192]"
        );
        assert_eq!(
            flag_help("curated_bucket"),
            "Curated output bucket of `edp run` [config curated_bucket, env CURATED_BUCKET]"
        );
    }

    #[test]
    fn sizes_and_shares_parse_as_documented() {
        assert_eq!(Bytes::parse("512MiB"), Some(Bytes(512 << 20)));
        assert_eq!(Bytes::parse(" 2GiB "), Some(Bytes(2 << 30)));
        assert_eq!(Bytes::parse("1.5GB"), Some(Bytes(1_500_000_000)));
        assert_eq!(Bytes::parse("1048576"), Some(Bytes(1 << 20)));
        assert_eq!(Bytes::parse("100KiB"), None, "below 1MiB");
        assert_eq!(Bytes::parse("3 parsecs"), None);
        assert_eq!(Bytes(3 << 30).show(), "3GiB");
        assert_eq!(Bytes(1_500_000_000).show(), "1500000000");
        assert_eq!(Share::parse("0.25"), Some(Share(0.25)));
        assert_eq!(Share::parse("1.5"), None);
        assert_eq!(Catalog::parse("Projection"), Some(Catalog::Projection));
        assert_eq!(Codec::parse("ZSTD"), Some(Codec::Zstd));
        assert_eq!(Codec::Zstd.show(), "zstd");
        assert_eq!(<Option<u32>>::parse("7"), Some(Some(7)));
        assert!(parser::<Bytes>("7 furlongs")
            .unwrap_err()
            .contains("at least 1MiB"));
    }
}
