#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need
# (Python packages in a local virtualenv, test servers), starts the servers
# on 127.0.0.1, runs every Rust and Python test, and stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TERM_COLOR=never

step() { printf '\n== %s\n' "$*"; }

# --- Python virtualenv with the seed SDKs (pinned) -------------------------
step "python virtualenv"
VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/python/requirements.txt
export SECREF_PYTHON="$VENV/bin/python"

# --- lint ------------------------------------------------------------------
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

# --- build once, then the Rust tests ----------------------------------------
step "cargo build"
cargo build --workspace --examples --quiet
export SECREF_BIN="$ROOT/target/debug/secref"
step "cargo test"
cargo test --workspace --quiet 2>&1 | tee target/cargo-test.log
grep -q '^test result: ok' target/cargo-test.log

# --- Python conformance suites ------------------------------------------------
step "pytest"
"$VENV/bin/python" -m pytest -q tests/python
