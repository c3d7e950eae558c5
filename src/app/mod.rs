//! The application around the pipeline: the command line ([`cli`]), what each command does
//! ([`run`], the dispatch), settings turned into stage specifications ([`specs`]), and `edp run`'s
//! event handling with its alert and dead-letter policy ([`run_event`], [`event`], [`notify`],
//! [`metrics`]). Both stages are reached only through here, so policy written once serves both.
//! This folder owns process concerns (logging, signals, stdout/stderr); it must not hold
//! pipeline logic: a stage's behaviour is the same whether a command or an event started it.

pub mod cli;
pub mod event;
pub mod metrics;
pub mod notify;
pub mod run_event;
pub mod specs;

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cli::{
    Cli, Command, ConfigAction, ContractAction, GenFormat, GenerateArgs, LogFormat, ProdAction,
    Selection,
};
use specs::{job_spec, prod_spec, JobTarget};

use crate::generate::{self, Dataset, GenSpec, World};
use crate::infer::InferOptions;
use crate::settings::Settings;
use crate::store::Location;
use crate::{stage1, stage2, Error, Result, EXIT_ROWS_FAILED};

/// Sets up logging on stderr with the `log_level` filter; returns true when logs are JSON.
pub fn init_logging(format: Option<LogFormat>, settings: &Settings) -> Result<bool> {
    let level = settings.log_level.as_str();
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .map_err(|e| Error::Config(format!("log_level `{level}`: {e}")))?;
    let json = match format {
        Some(f) => f == LogFormat::Json,
        None => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
    Ok(json)
}

/// Sets `flag` on SIGTERM (AWS Batch's stop) or Ctrl-C; the job then aborts its outputs.
fn watch_signals(flag: Arc<AtomicBool>) {
    tokio::spawn(async move {
        let name = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        };
        tracing::warn!("{name} received: stopping, aborting uploads, removing spill files");
        flag.store(true, Ordering::Relaxed);
    });
}

/// Runs the command; the exit code on success (0, or [`EXIT_ROWS_FAILED`] for `validate`).
pub async fn run(cli: Cli, settings: Settings) -> Result<u8> {
    if let Some(key) = settings.kms_key_id.as_ref().filter(|k| !k.is_empty()) {
        crate::store::use_sse_kms(key.clone());
    }
    let interrupted = Arc::new(AtomicBool::new(false));
    watch_signals(interrupted.clone());
    let progress = cli.global.progress;
    match cli.command {
        Command::RawToCurated(args) => {
            let target = JobTarget {
                inputs: args.input.inputs,
                contract: args.input.contract,
                output: Some(args.output),
                errors: args.errors,
                shard: args.input.process.shard,
                progress,
                production: false,
                references: args.input.references,
                reference_root: None,
                replay: None,
            };
            let report = stage1::run(&job_spec(&settings, target, interrupted)?).await?;
            eprint!("{}", report.summary());
            Ok(0)
        }
        Command::Replay(args) => {
            let recorded = stage1::read_protection(&args.quarantine, &args.output).await?;
            let target = JobTarget {
                inputs: args.quarantine,
                contract: args.contract,
                output: Some(args.output),
                errors: None,
                shard: args.process.shard,
                progress,
                production: false,
                references: args.references,
                reference_root: None,
                replay: Some(recorded),
            };
            let report = stage1::run(&job_spec(&settings, target, interrupted)?).await?;
            eprint!("{}", report.summary());
            Ok(0)
        }
        Command::Validate(args) => {
            let target = JobTarget {
                inputs: args.input.inputs,
                contract: args.input.contract,
                output: None,
                errors: None,
                shard: args.input.process.shard,
                progress,
                production: false,
                references: args.input.references,
                reference_root: None,
                replay: None,
            };
            let report = stage1::run(&job_spec(&settings, target, interrupted)?).await?;
            eprint!("{}", report.summary());
            let json = serde_json::to_string_pretty(&report)
                .map_err(|e| Error::Internal(format!("serialising the report: {e}")))?;
            println!("{json}");
            Ok(if report.rows_quarantined > 0 {
                EXIT_ROWS_FAILED
            } else {
                0
            })
        }
        Command::CuratedToProd(args) => {
            let spec = prod_spec(
                &settings,
                args.curated,
                args.output,
                args.model,
                None,
                interrupted,
            )?;
            let report = stage2::run(&spec).await?;
            eprint!("{}", report.summary());
            Ok(0)
        }
        Command::Prod {
            action: ProdAction::Ddl {
                curated, output, ..
            },
        } => {
            let spec = prod_spec(&settings, curated, output, Vec::new(), None, interrupted)?;
            print!("{}", stage2::ddl(&spec).await?);
            Ok(0)
        }
        Command::Generate(args) => {
            generate_data(&args).await?;
            Ok(0)
        }
        Command::Run(args) => {
            run_event::run_event(&settings, &cli.global, &args, interrupted).await
        }
        Command::Config {
            action: ConfigAction::Show,
        } => {
            print!("{}", settings.show());
            Ok(0)
        }
        Command::Contract {
            action: ContractAction::Infer(args),
        } => {
            let options = InferOptions {
                input: args.input,
                title: args.title,
                sample_rows: args.sample_rows.max(1),
                csv: specs::csv_options(&settings)?,
            };
            let contract = crate::infer::infer(&options).await?;
            let text = serde_json::to_string_pretty(&contract)
                .map_err(|e| Error::Internal(format!("serialising the contract: {e}")))?;
            println!("{text}");
            Ok(0)
        }
    }
}

/// `edp generate`: one dataset, or all six sized by the number of orders.
async fn generate_data(args: &GenerateArgs) -> Result<()> {
    if !(0.0..=1.0).contains(&args.fault_rate) {
        return Err(Error::Config(format!(
            "--fault-rate {} is not between 0 and 1",
            args.fault_rate
        )));
    }
    generate::check_period(args.days, args.end_date).map_err(Error::Config)?;
    let text = match args.format {
        GenFormat::Parquet => None,
        GenFormat::Csv => Some(generate::TextFormat::Csv),
        GenFormat::Ndjson => Some(generate::TextFormat::Ndjson),
    };
    if args.gzip && text.is_none() {
        return Err(Error::Config("--gzip needs --format csv or ndjson".into()));
    }
    if text.is_some() && args.out.ends_with(".parquet") {
        return Err(Error::Config(format!(
            "--out {}: with --format csv or ndjson the output is a prefix",
            args.out
        )));
    }
    let out = Location::parse(&args.out)?;
    let plan: Vec<(Dataset, u64, Location)> = match args.dataset {
        Selection::All => {
            let world = World::for_rows(Dataset::Orders, args.rows);
            Dataset::ALL
                .iter()
                .map(|&d| (d, world.rows_of(d), out.child(d.name())))
                .collect()
        }
        Selection::One(d) => vec![(d, args.rows, out.clone())],
    };
    for (dataset, rows, loc) in plan {
        let spec = GenSpec {
            dataset,
            rows,
            seed: args.seed,
            fault_rate: args.fault_rate,
            days: args.days,
            end_day: args.end_date,
        };
        let stats = match text {
            None => vec![generate::generate(spec, &loc).await?],
            Some(format) => generate::generate_text(spec, &loc, format, args.gzip).await?,
        };
        for s in stats {
            eprintln!(
                "generated {} rows of {} into {} ({} bytes)",
                s.rows,
                dataset.name(),
                s.url,
                s.bytes
            );
        }
    }
    Ok(())
}
