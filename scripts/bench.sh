#!/usr/bin/env bash
# End-to-end benchmark of stage 1: generates `orders` rows with `edp generate` and runs
# `edp raw-to-curated` on them under /usr/bin/time -v, printing rows/s and peak memory. Then
# runs the same job written by hand in DuckDB (scripts/duckdb_orders.sql, the `duckdb` Python
# package installed into a virtual environment) on the same file and prints the time ratio.
#
#   scripts/bench.sh [ROWS...]        default: 2000000
#
# Data and outputs go to $BENCH_DIR (default: a temporary directory, removed at the end).
# NO_DUCKDB=1 skips the DuckDB comparison.
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
    echo "edp     orders rows=$rows  wall=${wall}s  rows/s=$rps  peak_rss=${peak} MiB  spilled=$(python3 -c "import json;print(json.load(open('$work/out-$rows/_edp_report.json'))['dedup_spilled_entries'])")"

    [ -n "${NO_DUCKDB:-}" ] && continue
    venv="$work/venv"
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv" >&2
        "$venv/bin/pip" install --quiet duckdb >&2
    fi
    rm -rf "$work/duck-$rows" && mkdir -p "$work/duck-$rows"
    sed -e "s|RAW|$raw|g" -e "s|OUT|$work/duck-$rows|g" -e "s|THREADS|$(nproc)|g" scripts/duckdb_orders.sql > "$work/duck-$rows.sql"
    start=$(date +%s.%N)
    /usr/bin/time -v "$venv/bin/python" -c "import duckdb,sys; duckdb.connect().execute(open(sys.argv[1]).read())" "$work/duck-$rows.sql" \
        2> "$work/duck-time-$rows.txt" >/dev/null
    end=$(date +%s.%N)
    dwall=$(python3 -c "print(round($end - $start, 3))")
    dpeak=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2/1024}' "$work/duck-time-$rows.txt")
    drps=$(python3 -c "print(f'{$rows/$dwall:,.0f}')")
    echo "duckdb  orders rows=$rows  wall=${dwall}s  rows/s=$drps  peak_rss=${dpeak} MiB"
    echo "edp is $(python3 -c "print(round($dwall / $wall, 2))")x faster than the DuckDB script"
done
