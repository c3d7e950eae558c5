#!/usr/bin/env bash
# The test command (see README): formatting, lints, then every test (unit, property and the
# end-to-end tests that run the built `edp` binary, some against an S3-protocol server).
# Sets up what the tests need on a fresh machine: a Python virtual environment under target/py
# with the `moto[server]` package, started on a free loopback port for the duration of the run,
# cfn-lint (likewise) and checkov (in target/py-checkov), which check the CloudFormation template
# in deploy/: cfn-lint that it is valid, checkov its security settings (waivers are inline in
# the template).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "scripts/test.sh: cargo not found; install Rust with rustup first" >&2
    exit 1
fi
# Python tools live in a project-local virtual environment: a stock Debian or Ubuntu Python
# refuses a system-wide `pip install` (PEP 668).
venv=${EDP_VENV:-target/py}
if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
python="$venv/bin/python"
if ! "$python" -c "import moto.server, flask_cors, cfnlint.runner, duckdb" >/dev/null 2>&1; then
    echo "scripts/test.sh: installing moto[server], cfn-lint and duckdb into $venv" >&2
    "$python" -m pip install --quiet 'moto[server]' cfn-lint duckdb
fi
# checkov pins an old boto3, so it gets a virtual environment of its own and moto keeps the
# current AWS libraries.
checkov_venv="$venv-checkov"
if [ ! -x "$checkov_venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$checkov_venv"
fi
if ! "$checkov_venv/bin/python" -c "import checkov.version" >/dev/null 2>&1; then
    echo "scripts/test.sh: installing checkov into $checkov_venv" >&2
    "$checkov_venv/bin/python" -m pip install --quiet checkov
fi
"$python" -c "import sys; from cfnlint.runner import main; sys.argv[0] = 'cfn-lint'; sys.exit(main())" deploy/edp.yaml
# Prints only failed checks and exits non-zero on any; --skip-download keeps it off the network
# (it would otherwise fetch Prisma Cloud guideline links, which the checks do not need).
"$checkov_venv/bin/python" -m checkov.main --quiet --compact --skip-download --framework cloudformation -f deploy/edp.yaml

port=$("$python" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
log=$(mktemp)
"$python" -m moto.server -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
moto_pid=$!
trap 'kill "$moto_pid" 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 100); do
    if "$python" -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
        break
    fi
    sleep 0.2
done
if ! kill -0 "$moto_pid" 2>/dev/null; then
    echo "scripts/test.sh: moto server failed to start:" >&2
    cat "$log" >&2
    exit 1
fi
export EDP_TEST_S3_ENDPOINT="http://127.0.0.1:$port"
# A Python with duckdb: the stage 2 test reads the prod output back with another engine.
export EDP_TEST_PYTHON="$(cd "$venv" && pwd)/bin/python"

cargo fmt --all -- --check
cargo clippy --release --locked --all-targets -- -D warnings
cargo test --release --locked
