#!/usr/bin/env bash
# SecFlow benchmark: the official Python SDK vs secref's client against the
# same `secref serve` (release builds). Writes the `## SecFlow` section of
# BENCHMARKS.md. Not part of the test suite (timings are not asserted).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/python/requirements.txt
cargo build --release --quiet -p secref-cli
cargo build --release --quiet -p secref-server --example secflow_bench_client
"$VENV/bin/python" scripts/bench_secflow.py \
  "$ROOT/target/release/secref" "$ROOT/target/release/examples/secflow_bench_client"
