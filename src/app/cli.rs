//! The command line: every subcommand and flag (clap derive), and [`Cli::layer`], the flags'
//! layer of the settings. A flag that sets a setting takes its help (text, config key,
//! environment variable, default) from [`crate::settings`], and for numbers, sizes and booleans
//! its value parser too, so the two cannot drift; flags that are not settings (inputs, outputs,
//! `generate`'s knobs) are plain.

use std::num::NonZeroUsize;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::generate::{self, Dataset};
use crate::output::Codec;
use crate::settings::{flag_help, parser, Bytes, Catalog, Layer};
use crate::stage1::Shard;

#[derive(Parser, Debug)]
#[command(
    name = "edp",
    version,
    about = "The e-commerce data processor: validates, deduplicates and protects raw DMS data into curated Parquet (stage 1), and builds Athena-ready prod tables from it with SQL models (stage 2)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug)]
pub struct Global {
    /// Config file (flat JSON of settings; see `edp config show`). Default: /app/config/config.json if it exists.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[arg(long, global = true, help = flag_help("batch_size"), value_parser = parser::<NonZeroUsize>)]
    pub batch_size: Option<NonZeroUsize>,
    /// Log format on stderr; default: text on a terminal, json otherwise.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Progress bar on stderr: auto shows it only on a terminal.
    #[arg(long, global = true, value_enum, default_value_t = Progress::Auto)]
    pub progress: Progress,
    #[arg(long, global = true, help = flag_help("memory_limit"), value_parser = parser::<Bytes>)]
    pub memory_limit: Option<Bytes>,
    #[arg(long, global = true, help = flag_help("index_memory"), value_parser = parser::<Bytes>)]
    pub index_memory: Option<Bytes>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    Auto,
    Always,
    Never,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Stage 1: validate, deduplicate and protect raw data into curated and quarantine Parquet.
    RawToCurated(RawToCurated),
    /// Stage 2: current state of every curated dataset through the SQL models into Athena-ready
    /// prod tables (Hive date partitions), then the catalog.
    CuratedToProd(CuratedToProd),
    /// Prod tables: `edp prod ddl` prints the Athena CREATE EXTERNAL TABLE of every model.
    Prod {
        #[command(subcommand)]
        action: ProdAction,
    },
    /// Check raw data against its contract and print the report; writes nothing.
    Validate(ValidateArgs),
    /// Re-check quarantined rows (after a contract fix, or once a late parent has arrived) and
    /// publish the rows that now pass as a new curated object, the rest to its quarantine.
    Replay(ReplayArgs),
    /// Write realistic synthetic raw data with known injected faults.
    Generate(GenerateArgs),
    /// The AWS Batch entry point: process the object named by an S3 or EventBridge event.
    Run(RunArgs),
    /// Configuration: `edp config show` prints every setting, its value and where it came from.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Contracts: `edp contract infer` prints a starting contract inferred from a sample of an
    /// input.
    Contract {
        #[command(subcommand)]
        action: ContractAction,
    },
}

#[derive(Subcommand, Debug)]
pub enum ContractAction {
    /// Infer a contract from a sample of an input's rows (Parquet, NDJSON, or CSV with a
    /// header) and print it: types, nullability and `required`, formats, enums, minimum 0 for
    /// columns never negative, the primary key, the CDC columns and `x-pci: pan` for card
    /// number columns; what was guessed is in its `$comment`. Never prints a card number.
    Infer(InferArgs),
}

#[derive(Args, Debug)]
pub struct InferArgs {
    /// Input object or prefix (local path, file:// or s3:// URL); its objects are read in job
    /// order until --sample-rows rows.
    #[arg(long)]
    pub input: String,
    /// The contract's title (its dataset name); default: the input's last path segment
    /// without extension and `-raw` suffix (the parent directory's when the input is an
    /// object).
    #[arg(long)]
    pub title: Option<String>,
    /// Rows sampled.
    #[arg(long, default_value_t = 100_000)]
    pub sample_rows: usize,
    #[command(flatten)]
    pub csv: CsvArgs,
}

#[derive(Subcommand, Debug)]
pub enum ProdAction {
    /// Plan every model against the curated footers and print its Athena DDL (reads no rows).
    Ddl {
        /// Curated root (as for curated-to-prod): the schemas come from its footers.
        #[arg(long)]
        curated: String,
        /// Prod root: the tables' LOCATION.
        #[arg(long)]
        output: String,
        #[command(flatten)]
        prod: ProdArgs,
    },
}

#[derive(Args, Debug)]
pub struct ProdArgs {
    #[arg(long, help = flag_help("models_dir"))]
    pub models: Option<PathBuf>,
    #[arg(long, help = flag_help("contracts_dir"))]
    pub contracts_dir: Option<PathBuf>,
    #[arg(long, value_enum, help = flag_help("catalog"))]
    pub catalog: Option<Catalog>,
    #[arg(long, help = flag_help("glue_database"))]
    pub glue_database: Option<String>,
    #[arg(long, help = flag_help("glue_crawler"))]
    pub glue_crawler: Option<String>,
    #[arg(long, value_enum, help = flag_help("prod_compression"))]
    pub compression: Option<Codec>,
    #[arg(long, help = flag_help("target_file_size"), value_parser = parser::<Bytes>)]
    pub target_file_size: Option<Bytes>,
    #[arg(long, help = flag_help("spill_dir"))]
    pub spill_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct CuratedToProd {
    /// Curated root: <dataset>-curated/ (as edp run writes it) or <dataset>/ per dataset below it.
    #[arg(long)]
    pub curated: String,
    /// Prod root: <output>/<model>/year=YYYY/month=MM/day=DD/part-00000.parquet, the report in
    /// <output>/_edp_prod_report.json.
    #[arg(long)]
    pub output: String,
    /// Build only these models (and the models they read). Repeatable; default: all.
    #[arg(long = "model", num_args = 1..)]
    pub model: Vec<String>,
    #[command(flatten)]
    pub prod: ProdArgs,
}

#[derive(Subcommand, Debug)]
pub enum ConfigAction {
    /// Print the effective configuration (secrets redacted) and the source of each value.
    Show,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The event: a JSON file, or - for stdin. Seed format {"bucket","key","event_type"}, an
    /// EventBridge "Object Created" event, or an S3 notification with Records[].
    #[arg(required_unless_present = "key", conflicts_with_all = ["bucket", "key"])]
    pub event: Option<String>,
    /// Instead of an event document: the bucket of the object (AWS Batch passes it as a job
    /// parameter from the EventBridge rule).
    #[arg(long, requires = "key")]
    pub bucket: Option<String>,
    /// Instead of an event document: the URL-encoded key of the object, as events carry it.
    #[arg(long, requires = "bucket")]
    pub key: Option<String>,
    #[arg(long, help = flag_help("curated_bucket"))]
    pub curated_bucket: Option<String>,
    #[arg(long, help = flag_help("error_bucket"))]
    pub errors_bucket: Option<String>,
    #[arg(long, help = flag_help("contracts_dir"))]
    pub contracts_dir: Option<PathBuf>,
    #[arg(long, help = flag_help("prod_bucket"))]
    pub prod_bucket: Option<String>,
    #[command(flatten)]
    pub process: ProcessArgs,
}

#[derive(Args, Debug)]
pub struct InputArgs {
    /// Input object or prefix: s3://bucket/key, file:///abs/path or a local path. Repeatable.
    #[arg(long = "input", required = true, num_args = 1..)]
    pub inputs: Vec<String>,
    /// The dataset contract (JSON Schema with x- keywords).
    #[arg(long)]
    pub contract: PathBuf,
    /// Curated prefix of a dataset the contract's x-references name, as DATASET=URL (its
    /// contract is DATASET.json beside --contract). Repeatable. A foreign key without one is
    /// not checked (the report says so).
    #[arg(long = "reference", value_name = "DATASET=URL", value_parser = parse_reference)]
    pub references: Vec<(String, String)>,
    #[command(flatten)]
    pub process: ProcessArgs,
}

fn parse_reference(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((d, u)) if !d.is_empty() && !u.is_empty() => Ok((d.to_string(), u.to_string())),
        _ => Err(format!(
            "`{s}`: expected DATASET=URL, e.g. customers=out/customers"
        )),
    }
}

/// How CSV inputs are read (DMS S3 target settings).
#[derive(Args, Debug)]
pub struct CsvArgs {
    #[arg(long, value_name = "CHAR", help = flag_help("csv_delimiter"))]
    pub csv_delimiter: Option<String>,
    #[arg(long, value_name = "TEXT", help = flag_help("csv_null_value"))]
    pub csv_null_value: Option<String>,
    #[arg(long, action = clap::ArgAction::Set, help = flag_help("csv_header"), value_parser = parser::<bool>)]
    pub csv_header: Option<bool>,
    #[arg(long, value_name = "NAME", help = flag_help("csv_timestamp_column"))]
    pub csv_timestamp_column: Option<String>,
}

#[derive(Args, Debug)]
pub struct ProcessArgs {
    #[arg(long, help = flag_help("read_ahead"), value_parser = parser::<usize>)]
    pub read_ahead: Option<usize>,
    #[arg(long, action = clap::ArgAction::Set, help = flag_help("pci_dss_enabled"), value_parser = parser::<bool>)]
    pub pci_dss: Option<bool>,
    #[arg(long, action = clap::ArgAction::Set, help = flag_help("validation_enabled"), value_parser = parser::<bool>)]
    pub validation: Option<bool>,
    #[arg(long, action = clap::ArgAction::Set, help = flag_help("deduplication_enabled"), value_parser = parser::<bool>)]
    pub deduplication: Option<bool>,
    #[arg(long, action = clap::ArgAction::Set, help = flag_help("references_required"), value_parser = parser::<bool>)]
    pub references_required: Option<bool>,
    #[arg(long, help = flag_help("spill_dir"))]
    pub spill_dir: Option<PathBuf>,
    #[command(flatten)]
    pub csv: CsvArgs,
    /// Process only the keys of shard INDEX of COUNT (an AWS Batch array child); default from
    /// AWS_BATCH_JOB_ARRAY_INDEX/AWS_BATCH_JOB_ARRAY_SIZE, else the whole input.
    #[arg(long, value_parser = Shard::parse)]
    pub shard: Option<Shard>,
}

#[derive(Args, Debug)]
pub struct RawToCurated {
    #[command(flatten)]
    pub input: InputArgs,
    /// Output prefix: curated Parquet goes to <output>/part-00000.parquet, the report to <output>/_edp_report.json.
    #[arg(long)]
    pub output: String,
    /// Quarantine prefix for failing rows; default <output>/_quarantine.
    #[arg(long)]
    pub errors: Option<String>,
    #[arg(long, value_enum, help = flag_help("compression"))]
    pub compression: Option<Codec>,
}

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// Quarantine object or prefix (a stage 1 output's `_quarantine/`), as a local path,
    /// file:// or s3:// URL. Repeatable.
    #[arg(long = "quarantine", required = true, num_args = 1..)]
    pub quarantine: Vec<String>,
    /// The (fixed) dataset contract the rows are checked against again.
    #[arg(long)]
    pub contract: PathBuf,
    /// Curated prefix of a dataset the contract's x-references name, as DATASET=URL.
    /// Repeatable.
    #[arg(long = "reference", value_name = "DATASET=URL", value_parser = parse_reference)]
    pub references: Vec<(String, String)>,
    /// Output prefix of the released rows (<output>/part-00000.parquet), of those still
    /// failing (<output>/_quarantine/) and of the report. Put it under the dataset's curated
    /// prefix for stage 2 to read it; a rerun into the same prefix rewrites the same objects.
    #[arg(long)]
    pub output: String,
    #[arg(long, value_enum, help = flag_help("compression"))]
    pub compression: Option<Codec>,
    #[command(flatten)]
    pub process: ProcessArgs,
}

#[derive(Args, Debug)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub input: InputArgs,
}

/// What `generate` writes: one dataset, or all six consistent with each other.
#[derive(Clone, Copy, Debug)]
pub enum Selection {
    One(Dataset),
    All,
}

fn parse_selection(s: &str) -> Result<Selection, String> {
    if s == "all" {
        return Ok(Selection::All);
    }
    Dataset::from_str(s, false).map(Selection::One).map_err(|_| {
        format!("`{s}`: expected customers, orders, order_items, products, inventory, payments or all")
    })
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Dataset to generate: customers, orders, order_items, products, inventory, payments, or
    /// all (each under <out>/<dataset>/, consistent with each other).
    #[arg(long, value_parser = parse_selection)]
    pub dataset: Selection,
    /// Rows to generate (for `all`: the number of orders; the other datasets are sized to match).
    #[arg(long)]
    pub rows: u64,
    /// Output object (ending in .parquet) or prefix.
    #[arg(long)]
    pub out: String,
    /// Random seed: the same seed gives the same bytes.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Share of rows carrying an injected fault (0 to 1).
    #[arg(long, default_value_t = generate::DEFAULT_FAULT_RATE)]
    pub fault_rate: f64,
    /// Days the rows' times span, ending on --end-date (1 to 36525): a shop's growth, weekly
    /// and daily rhythm and peak days over them.
    #[arg(long, default_value_t = generate::DEFAULT_DAYS)]
    pub days: u32,
    /// Last day of the period, YYYY-MM-DD (UTC, inclusive).
    #[arg(long, default_value = generate::DEFAULT_END_DATE, value_parser = generate::parse_day)]
    pub end_date: i64,
    /// Output format: parquet (one object); csv as DMS writes it (under each prefix a
    /// full-load LOAD00000001.csv without Op, holding the inserts among the first half of the
    /// rows, and a CDC 20250116-000000000.csv with Op first holding the rest; no header); or
    /// ndjson, the same two objects as .json, one JSON object per line, nulls left out.
    #[arg(long, value_enum, default_value_t = GenFormat::Parquet)]
    pub format: GenFormat,
    /// With --format csv or ndjson: gzip the objects (.csv.gz, .json.gz; DMS
    /// CompressionType=GZIP).
    #[arg(long)]
    pub gzip: bool,
}

/// What `generate` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GenFormat {
    Parquet,
    Csv,
    Ndjson,
}

impl Cli {
    /// The command-line layer of the settings: every setting a flag gave.
    pub fn layer(&self) -> Layer {
        let g = &self.global;
        let mut layer = Layer {
            batch_size: g.batch_size,
            memory_limit: g.memory_limit,
            index_memory: g.index_memory.map(Some),
            ..Layer::default()
        };
        let mut csv = None;
        let process = match &self.command {
            Command::RawToCurated(a) => {
                layer.compression = a.compression;
                Some(&a.input.process)
            }
            Command::Validate(a) => Some(&a.input.process),
            Command::Replay(a) => {
                layer.compression = a.compression;
                Some(&a.process)
            }
            Command::Run(a) => {
                layer.curated_bucket = a.curated_bucket.clone().map(Some);
                layer.error_bucket = a.errors_bucket.clone().map(Some);
                layer.prod_bucket = a.prod_bucket.clone().map(Some);
                layer.contracts_dir = a.contracts_dir.clone();
                Some(&a.process)
            }
            Command::CuratedToProd(CuratedToProd { prod, .. })
            | Command::Prod {
                action: ProdAction::Ddl { prod, .. },
            } => {
                layer.models_dir = prod.models.clone();
                layer.contracts_dir = prod.contracts_dir.clone();
                layer.catalog = prod.catalog;
                layer.glue_database = prod.glue_database.clone();
                layer.glue_crawler = prod.glue_crawler.clone().map(Some);
                layer.prod_compression = prod.compression;
                layer.target_file_size = prod.target_file_size;
                layer.spill_dir = prod.spill_dir.clone().map(Some);
                None
            }
            Command::Contract {
                action: ContractAction::Infer(a),
            } => {
                csv = Some(&a.csv);
                None
            }
            Command::Generate(_) | Command::Config { .. } => None,
        };
        if let Some(c) = process.map(|p| &p.csv).or(csv) {
            layer.csv_delimiter = c.csv_delimiter.clone();
            layer.csv_null_value = c.csv_null_value.clone().map(Some);
            layer.csv_header = c.csv_header;
            layer.csv_timestamp_column = c.csv_timestamp_column.clone().map(Some);
        }
        if let Some(p) = process {
            layer.read_ahead = p.read_ahead;
            layer.pci_dss_enabled = p.pci_dss;
            layer.validation_enabled = p.validation;
            layer.deduplication_enabled = p.deduplication;
            layer.references_required = p.references_required;
            layer.spill_dir = p.spill_dir.clone().map(Some);
        }
        layer
    }
}
