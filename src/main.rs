//! The `edp` binary: parses the command line, loads the settings, starts logging and the async
//! runtime, runs the command through the library ([`edp::app::run`]) and maps its one error type
//! to one exit code ([`edp::Error::exit_code`], README "Exit codes").

use std::process::ExitCode;

use clap::Parser;
use edp::app::cli::Cli;
use edp::settings::Settings;
use edp::Error;

fn main() -> ExitCode {
    edp::alloc::tune_allocator();
    edp::install_panic_hook();
    let cli = Cli::parse();
    let configured = Settings::load(
        cli.global.config.as_deref(),
        |k| std::env::var(k).ok(),
        cli.layer(),
    )
    .and_then(|settings| {
        edp::app::init_logging(cli.global.log_format, &settings).map(|json| (settings, json))
    });
    let (settings, json_logs) = match configured {
        Ok(c) => c,
        Err(e) => {
            eprintln!("edp: error: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the async runtime: {e}")))
        .and_then(|runtime| runtime.block_on(edp::app::run(cli, settings)));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = e.exit_code();
            if json_logs {
                tracing::error!(exit_code = code, "{e}");
            } else {
                eprintln!("edp: error: {e}");
            }
            ExitCode::from(code)
        }
    }
}
