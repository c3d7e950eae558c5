//! The job's progress bar on stderr, drawn when the spec's `progress` is set. Each phase (key
//! pass, data pass, and the revisit's two) restarts it over the rows that phase reads, so every
//! input row is counted once per phase, at a rate shown like `1.2M rows/s`.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use crate::report::rate;

/// A bar, drawn on stderr when `enabled`; [`phase`] starts each phase.
pub(super) fn progress_bar(enabled: bool) -> ProgressBar {
    let target = if enabled {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(0), target);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>16} [{bar:40}] {human_pos}/{human_len} rows ({rate}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key(
            "rate",
            |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = w.write_str(&rate(state.per_sec()));
            },
        )
        .progress_chars("=> "),
    );
    bar
}

/// Restarts `bar` for a phase named `name` over `rows` rows.
pub(super) fn phase(bar: &ProgressBar, name: &'static str, rows: u64) {
    bar.reset();
    bar.set_length(rows);
    bar.set_message(name);
}
