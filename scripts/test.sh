#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need
# (Python packages in a local virtualenv, test servers), starts the servers
# on 127.0.0.1, runs every Rust and Python test, and stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TERM_COLOR=never
# A one-shot run gains nothing from incremental caches; they only take disk.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}

# Each step prints how long the previous one took (informative only; nothing
# asserts it). The last step (pytest) prints no timing so that pytest's
# summary stays the final line CI reads.
STEP_NAME=""
STEP_START=$SECONDS
step() {
  if [ -n "$STEP_NAME" ]; then
    printf '   (%s took %ds)\n' "$STEP_NAME" $((SECONDS - STEP_START))
  fi
  STEP_NAME=$*
  STEP_START=$SECONDS
  printf '\n== %s\n' "$*"
}

# Clean-up hooks, port helpers and the server start-up functions, shared
# with scripts/bench.sh.
source "$ROOT/scripts/lib/servers.sh"


# --- Python virtualenv with the seed SDKs (pinned) -------------------------
step "python virtualenv"
VENV="$ROOT/.venv"
# Checks pip, not python: a venv creation that was interrupted leaves python
# without pip, and is simply recreated.
if [ ! -x "$VENV/bin/pip" ]; then
  python3 -m venv --clear "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/python/requirements.txt ||
  { echo "ERROR: pip install -r tests/python/requirements.txt failed (see above)" >&2; exit 1; }
export SECREF_PYTHON="$VENV/bin/python"

# --- lint ------------------------------------------------------------------
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

# --- RustyVault: a real Vault-compatible server (vault provider tests) -------
# (each start_* function is documented in scripts/lib/servers.sh)
step "rusty_vault"
start_rusty_vault

# --- Tansu: a Kafka-compatible broker (audit Kafka sink tests) ---------------
step "tansu (kafka)"
start_tansu

# --- oidc-provider: a real OAuth2 server (coze provider tests) ---------------
step "oidc-provider"
start_oidc_provider

# --- moto: a real AWS API server (aws-sm:// and aws-ssm:// tests) -----------
step "moto (aws)"
start_moto

# --- OTLP receiver (otel tests) and redis (replica tests) ------------------
step "otlp receiver"
start_otlp_receiver
step "redis"
start_redis

# --- build once, then the Rust tests ----------------------------------------
step "cargo build"
cargo build --workspace --bins --examples --quiet

step "cargo features"
# Each feature gates what it names: the library builds with none of them and
# with each provider alone (CONTRIBUTING.md, "Adding a provider"). `check`,
# not `build`: type-checking proves the gating; code generation for every
# feature set would only cost minutes. A warning (code left unused by a
# feature set) fails the step, as clippy's -D warnings does for the default.
for feature in "" secflow vault infisical coze aws kafka blocking; do
  checked=$(cargo check -p secref --no-default-features --features "$feature" --quiet 2>&1) || {
    echo "$checked"; exit 1; }
  if [ -n "$checked" ]; then
    echo "features '$feature' built with warnings:"; echo "$checked"; exit 1
  fi
done
export SECREF_BIN="$ROOT/target/debug/secref"
step "cargo test"
# Free disk before the largest step, so a failure to link says why.
df -h target | tail -n 1 | awk '{print "   (disk: " $4 " free of " $2 ")"}'
# --no-fail-fast: one failing binary must not hide the others' results.
# pipefail makes a failing `cargo test` fail the pipeline despite `tee`.
cargo test --workspace --no-fail-fast --quiet 2>&1 | tee target/cargo-test.log
# The fault-injection matrix (crates/secref/tests/fault_matrix.rs) as a table.
if [ -f target/fault-matrix.md ]; then cat target/fault-matrix.md; fi

# --- RustyVault: the CLI end to end (once `secref get` exists) ---------------
if "$SECREF_BIN" help get >/dev/null 2>&1; then
  step "secref get hashicorp://… against rusty_vault"
  RV_GOT=$(VAULT_ADDR="$SECREF_TEST_VAULT_ADDR" VAULT_TOKEN="$SECREF_TEST_VAULT_TOKEN" \
    SECREF_STORE="$RV_DIR/none.store" "$SECREF_BIN" get 'hashicorp://secret/myapp/api#token')
  [ "$RV_GOT" = "rv-canary-value-5e11" ] || { echo "secref get returned the wrong value" >&2; exit 1; }
fi

# --- benchmark harness, quick: every client x workload once ------------------
# scripts/bench.py with tiny counts on the debug binaries built above, against
# the servers started above; fails naming any (workload, client) that produced
# no figure. It never judges a time (the full run is scripts/bench.sh).
step "bench --quick"
"$VENV/bin/python" scripts/bench.py --quick --profile debug

# --- fuzzing: every cargo-fuzz target for a few seconds ----------------------
# scripts/fuzz.sh installs cargo-fuzz into .cache/cargo-fuzz (once) and runs
# each target in fuzz/ for 5 s on the nightly toolchain rustup already has;
# without a nightly it replays the committed corpora on stable and says so
# (the same replay also runs in `cargo test`: fuzz_corpora.rs).
step "fuzz (5 s per target)"
FUZZ_SANITIZER=none scripts/fuzz.sh 5

# --- Python conformance suites ------------------------------------------------
step "pytest (everything before took ${SECONDS}s)"
"$VENV/bin/python" -m pytest -q tests/python
