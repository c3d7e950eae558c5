#!/usr/bin/env bash
# End-to-end benchmark of stage 1: generates `orders` rows with `edp generate` and runs
# `edp raw-to-curated` on them under /usr/bin/time -v, printing rows/s and peak memory. Then
# runs the same job written by hand in DuckDB (scripts/duckdb_orders.sql, the `duckdb` Python
# package installed into a virtual environment) on the same file and prints the time ratio.
#
#   scripts/bench.sh [ROWS...]        default: 2000000
#   scripts/bench.sh --stage2 [ORDERS] default: 1000000
#   scripts/bench.sh --datasets [ROWS] default: 1000000
#   scripts/bench.sh --csv [ROWS]      default: 2000000
#   scripts/bench.sh --ndjson [ROWS]   default: 2000000
#
# --stage2 benchmarks stage 2 instead: `edp generate --dataset all` with ORDERS orders over a
# year (and their lines, payments, customers, products, inventory), stage 1 on each dataset,
# then the full rebuild of every model with `edp curated-to-prod --memory-limit 1GiB` (which
# also runs the checks) against the same six models written by hand for DuckDB
# (scripts/duckdb_prod.sql, memory_limit 1GB) on the same curated files, in one run.
#
# --datasets runs stage 1 on each of the six datasets generated alone with ROWS rows (integer,
# uuid and composite keys, with and without a sequence column) and prints rows/s, peak RSS and
# spilled index entries per dataset, and each dataset's time per row relative to `orders`, so
# a regression on any key type shows.
#
# --csv runs the stage 1 `orders` comparison on ROWS rows generated as DMS CSV
# (`edp generate --format csv`: a full load without Op and a CDC object with it), the DuckDB
# script reading the same two CSV objects. --ndjson does the same with the two objects as
# NDJSON (`edp generate --format ndjson`), DuckDB reading them with read_json.
#
# Data and outputs go to $BENCH_DIR (default: a temporary directory, removed at the end).
# NO_DUCKDB=1 skips the DuckDB comparison.
set -euo pipefail
cd "$(dirname "$0")/.."

rows_list=("$@")
[ ${#rows_list[@]} -eq 0 ] && rows_list=(2000000)

# All targets: a build of the binary alone resolves features without the dev-dependencies and
# would compile arrow, parquet and DataFusion a second time.
cargo build --release --locked --all-targets >&2
edp=target/release/edp
work=${BENCH_DIR:-$(mktemp -d)}
[ -z "${BENCH_DIR:-}" ] && trap 'rm -rf "$work"' EXIT

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"

duckdb_venv() {
    venv="$work/venv"
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv" >&2
        "$venv/bin/pip" install --quiet duckdb >&2
    fi
}

peak_of() { awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2/1024}' "$1"; }
wall_of() { awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$1"; }

if [ "${rows_list[0]}" = "--datasets" ]; then
    rows=${rows_list[1]:-1000000}
    declare -A per_row
    for d in orders customers order_items products inventory payments; do
        raw="$work/ds-$d-$rows"
        [ -d "$raw" ] || "$edp" --progress never generate --dataset "$d" --rows "$rows" --out "$raw" --seed 1 >&2
        rm -rf "$work/ds-out"
        /usr/bin/time -v "$edp" --progress never --log-format json raw-to-curated \
            --input "$raw" --output "$work/ds-out" --contract "fixtures/contracts/$d.json" \
            --spill-dir "$work" 2> "$work/ds-time.txt" >/dev/null
        read -r wall spilled < <(python3 -c "import json;r=json.load(open('$work/ds-out/_edp_report.json'));print(r['durations']['total_ms']/1000, r['dedup_spilled_entries'])")
        per_row[$d]=$wall
        printf '%-12s rows=%s  wall=%ss  rows/s=%s  peak_rss=%s MiB  spilled=%s  x_orders=%s\n' "$d" "$rows" "$wall" \
            "$(python3 -c "print(f'{$rows/$wall:,.0f}')")" "$(peak_of "$work/ds-time.txt")" "$spilled" \
            "$(python3 -c "print(round($wall / ${per_row[orders]}, 2))")"
    done
    exit 0
fi

if [ "${rows_list[0]}" = "--stage2" ]; then
    orders=${rows_list[1]:-1000000}
    raw="$work/s2-raw-$orders" cur="$work/s2-cur-$orders"
    if [ ! -d "$cur" ]; then
        "$edp" --progress never generate --dataset all --rows "$orders" --out "$raw" --seed 1 >&2
        for d in customers orders order_items products inventory payments; do
            "$edp" --progress never --log-format json raw-to-curated --input "$raw/$d" \
                --output "$cur/$d" --contract "fixtures/contracts/$d.json" >/dev/null 2>&1
        done
    fi
    rows=$(python3 -c "import json,sys; print(sum(json.load(open(f'$cur/{d}/_edp_report.json'))['rows_curated'] for d in sys.argv[1:]))" customers orders order_items products inventory payments)
    rm -rf "$work/s2-prod"
    /usr/bin/time -v "$edp" --progress never --log-format json --memory-limit 1GiB curated-to-prod \
        --curated "$cur" --output "$work/s2-prod" --models models --contracts-dir fixtures/contracts \
        --spill-dir "$work" 2> "$work/s2-time.txt" >/dev/null
    wall=$(wall_of "$work/s2-time.txt")
    echo "edp     stage2 orders=$orders curated_rows=$rows  wall=${wall}s  peak_rss=$(peak_of "$work/s2-time.txt") MiB"
    python3 -c "import json; r=json.load(open('$work/s2-prod/_edp_prod_report.json')); print('        phases', r['durations'])"
    [ -n "${NO_DUCKDB:-}" ] && exit 0
    duckdb_venv
    rm -rf "$work/s2-duck" && mkdir -p "$work/s2-duck"
    sed -e "s|CUR|$cur|g" -e "s|OUT|$work/s2-duck|g" -e "s|THREADS|$(nproc)|g" -e "s|MEMORY|1GB|g" \
        scripts/duckdb_prod.sql > "$work/s2-duck.sql"
    /usr/bin/time -v "$venv/bin/python" -c "import duckdb,sys; duckdb.connect().execute(open(sys.argv[1]).read())" "$work/s2-duck.sql" \
        2> "$work/s2-duck-time.txt" >/dev/null
    dwall=$(wall_of "$work/s2-duck-time.txt")
    echo "duckdb  stage2 orders=$orders  wall=${dwall}s  peak_rss=$(peak_of "$work/s2-duck-time.txt") MiB"
    echo "edp is $(python3 -c "print(round($dwall / $wall, 2))")x faster than the DuckDB script"
    exit 0
fi
# The raw rows the DuckDB script reads, with filename and file_row_number, from the Parquet
# object or the DMS CSV objects (the full load's rows are inserts).
format=parquet
source="read_parquet('RAW/*.parquet', filename = true, file_row_number = true)"
cols="'order_id': 'BIGINT', 'customer_id': 'BIGINT', 'status': 'VARCHAR', 'total_amount': 'DOUBLE', 'currency': 'VARCHAR', 'email': 'VARCHAR', 'phone': 'VARCHAR', 'card_number': 'VARCHAR', 'notes': 'VARCHAR', 'shipping_country': 'VARCHAR', 'created_at': 'VARCHAR', 'updated_at': 'VARCHAR'"
if [ "${rows_list[0]}" = "--csv" ]; then
    format=csv
    rows_list=("${rows_list[1]:-2000000}")
    csv_opts="header = false, quote = '\"', escape = '\"', filename = true"
    source="(SELECT *, row_number() OVER (PARTITION BY filename) AS file_row_number FROM (
        SELECT 'I' AS Op, * FROM read_csv('RAW/LOAD*.csv', columns = {$cols}, $csv_opts)
        UNION ALL BY NAME
        SELECT * FROM read_csv('RAW/2*.csv', columns = {'Op': 'VARCHAR', $cols}, $csv_opts)))"
elif [ "${rows_list[0]}" = "--ndjson" ]; then
    format=ndjson
    rows_list=("${rows_list[1]:-2000000}")
    json_opts="format = 'newline_delimited', filename = true"
    source="(SELECT *, row_number() OVER (PARTITION BY filename) AS file_row_number FROM (
        SELECT 'I' AS Op, * FROM read_json('RAW/LOAD*.json', columns = {$cols}, $json_opts)
        UNION ALL BY NAME
        SELECT * FROM read_json('RAW/2*.json', columns = {'Op': 'VARCHAR', $cols}, $json_opts)))"
fi
for rows in "${rows_list[@]}"; do
    raw="$work/raw-$format-$rows"
    [ -d "$raw" ] || "$edp" --progress never generate --dataset orders --rows "$rows" --out "$raw" --seed 1 --format "$format" >&2
    rm -rf "$work/out-$rows"
    /usr/bin/time -v "$edp" --progress never --log-format json raw-to-curated \
        --input "$raw" --output "$work/out-$rows" --contract fixtures/contracts/orders.json \
        2> "$work/time-$rows.txt" >/dev/null
    wall=$(python3 -c "import json;r=json.load(open('$work/out-$rows/_edp_report.json'));print(r['durations']['total_ms']/1000)")
    peak=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2/1024}' "$work/time-$rows.txt")
    rps=$(python3 -c "print(f'{$rows/$wall:,.0f}')")
    echo "edp     orders ($format) rows=$rows  wall=${wall}s  rows/s=$rps  peak_rss=${peak} MiB  spilled=$(python3 -c "import json;print(json.load(open('$work/out-$rows/_edp_report.json'))['dedup_spilled_entries'])")"

    [ -n "${NO_DUCKDB:-}" ] && continue
    duckdb_venv
    rm -rf "$work/duck-$rows" && mkdir -p "$work/duck-$rows"
    src=${source//RAW/$raw}
    python3 -c "import sys; t = open('scripts/duckdb_orders.sql').read(); print(t.replace('SOURCE', sys.argv[1]).replace('OUT', sys.argv[2]).replace('THREADS', sys.argv[3]))" \
        "$src" "$work/duck-$rows" "$(nproc)" > "$work/duck-$rows.sql"
    start=$(date +%s.%N)
    /usr/bin/time -v "$venv/bin/python" -c "import duckdb,sys; duckdb.connect().execute(open(sys.argv[1]).read())" "$work/duck-$rows.sql" \
        2> "$work/duck-time-$rows.txt" >/dev/null
    end=$(date +%s.%N)
    dwall=$(python3 -c "print(round($end - $start, 3))")
    dpeak=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2/1024}' "$work/duck-time-$rows.txt")
    drps=$(python3 -c "print(f'{$rows/$dwall:,.0f}')")
    echo "duckdb  orders ($format) rows=$rows  wall=${dwall}s  rows/s=$drps  peak_rss=${dpeak} MiB"
    echo "edp is $(python3 -c "print(round($dwall / $wall, 2))")x faster than the DuckDB script"
done
