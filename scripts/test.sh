#!/usr/bin/env bash
# The test command (see README): formatting, lints, then every test (unit, property and the
# end-to-end tests that run the built `edp` binary). Needs only the Rust toolchain; crates come
# from the registry through Cargo.lock.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "scripts/test.sh: cargo not found; install Rust with rustup first" >&2
    exit 1
fi

cargo fmt --all -- --check
cargo clippy --release --locked --all-targets -- -D warnings
cargo test --release --locked
