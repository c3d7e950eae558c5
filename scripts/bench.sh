#!/usr/bin/env bash
# End-to-end benchmark of stage 1: generates `orders` rows with `edp generate` and runs
# `edp raw-to-curated` on them under /usr/bin/time -v, printing rows/s and peak memory.
#
#   scripts/bench.sh [ROWS...]        default: 2000000
#
# Data and outputs go to $BENCH_DIR (default: a temporary directory, removed at the end).
set -euo pipefail
cd "$(dirname "$0")/.."

rows_list=("$@")
[ ${#rows_list[@]} -eq 0 ] && rows_list=(2000000)

cargo build --release --locked --bin edp >&2
edp=target/release/edp
work=${BENCH_DIR:-$(mktemp -d)}
[ -z "${BENCH_DIR:-}" ] && trap 'rm -rf "$work"' EXIT

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
for rows in "${rows_list[@]}"; do
    raw="$work/raw-$rows"
    [ -d "$raw" ] || "$edp" --progress never generate --dataset orders --rows "$rows" --out "$raw" --seed 1 >&2
    rm -rf "$work/out-$rows"
    /usr/bin/time -v "$edp" --progress never --log-format json raw-to-curated \
        --input "$raw" --output "$work/out-$rows" --contract fixtures/contracts/orders.json \
        2> "$work/time-$rows.txt" >/dev/null
    wall=$(python3 -c "import json;r=json.load(open('$work/out-$rows/_edp_report.json'));print(r['durations']['total_ms']/1000)")
    peak=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2/1024}' "$work/time-$rows.txt")
    rps=$(python3 -c "print(f'{$rows/$wall:,.0f}')")
    echo "orders rows=$rows  wall=${wall}s  rows/s=$rps  peak_rss=${peak} MiB"
done
