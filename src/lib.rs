//! edp, the e-commerce data processor.
//!
//! The library holds the application and the pipeline; `main.rs` only parses flags, loads the
//! settings, starts logging and the runtime and maps the one error type to an exit code.
//! [`app`] is the application (commands, `edp run`'s events and failure policy) over the two
//! stages and [`settings`], the one typed settings model. Stage 1 (raw → curated, [`stage1`]):
//!
//! ```text
//! source   (inputs behind one interface: Parquet row groups from object_store, read-ahead)
//!   -> stage1::dedup    (key pass: index of key -> winning row, one bit per input row)
//!   -> stage1::validate (data pass: vectorised rules compiled from the contract; each row
//!                        routed to curated, quarantine or superseded)
//!   -> protect          (PAN masking, free-text card scan, PII transforms)
//!   -> output           (Parquet over multipart upload, visible only when complete)
//!   -> report           (JSON run report with the conservation check)
//! ```
//!
//! Stage 2 (curated → prod: current state, SQL models on DataFusion, Athena-ready partitions,
//! the Glue catalog) lives in [`stage2`] and reuses the [`source`] interface and stage 1's dedup
//! index.
//!
//! Every stage works on Arrow `RecordBatch`es through a plain per-batch function, so tests and
//! benches call the same code the job runs.

pub mod alloc;
pub mod app;
pub mod contract;
pub mod datetime;
pub mod error;
pub mod generate;
pub mod infer;
pub mod output;
pub mod protect;
pub mod report;
pub mod settings;
pub mod source;
pub mod stage1;
pub mod stage2;
pub mod store;

pub use error::{Error, Result, EXIT_ROWS_FAILED};

thread_local! {
    /// Set while [`catch_quietly`] runs on this thread: the hook of [`install_panic_hook`] then
    /// prints nothing.
    static QUIET_PANICS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, returning `None` when it panics, without the panic hook's message. For decoders of
/// untrusted bytes in other crates that panic on some malformed input (arrow-ipc's schema
/// decoder reaches `unimplemented!` on an unknown type tag), so that the caller reports bad
/// input instead of a crash.
pub fn catch_quietly<R>(f: impl FnOnce() -> R) -> Option<R> {
    QUIET_PANICS.with(|q| q.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET_PANICS.with(|q| q.set(false));
    result.ok()
}

/// Installs a panic hook that stays silent inside [`catch_quietly`] and otherwise prints as
/// the default hook does.
pub fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !QUIET_PANICS.with(|q| q.get()) {
            default(info);
        }
    }));
}

/// `f` over `columns`, on the rayon pool when `parallel`. The job asks for it only when it has
/// fewer row groups (slices) than cores: nested in row-group parallelism, column-parallel loops
/// left cores idle (see `stage1::pool::InFlight`).
pub(crate) fn map_columns<T: Sync, R: Send>(
    columns: &[T],
    parallel: bool,
    f: impl Fn(&T) -> R + Sync + Send,
) -> Vec<R> {
    use rayon::prelude::*;
    if parallel {
        columns.par_iter().map(f).collect()
    } else {
        columns.iter().map(f).collect()
    }
}
