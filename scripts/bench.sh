#!/usr/bin/env bash
# Side-by-side benchmark: secref against the official SDKs and clients of
# every backend, each next to a raw floor, measured in one run on 127.0.0.1.
#
#   scripts/bench.sh            # release build; writes bench/report.md + bench/report.png
#   scripts/bench.sh --quick    # debug build, tiny counts: checks every client produced a result
#
# Builds the binaries, installs the peers into a throw-away virtualenv
# (target/bench-venv, from bench/requirements.txt), starts RustyVault,
# oidc-provider and moto (scripts/lib/servers.sh, as scripts/test.sh does),
# then scripts/bench.py starts `secref serve`, the Infisical and Coze doubles
# and the floor server, runs every workload for every client and writes the
# report. Everything it starts is stopped on exit; every loop is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TERM_COLOR=never
source "$ROOT/scripts/lib/servers.sh"

# BENCH_PROFILE=debug measures the debug build (when a release build does
# not fit the time at hand; the report names the profile).
PROFILE=${BENCH_PROFILE:-release}
for arg in "$@"; do
  [ "$arg" = "--quick" ] && PROFILE=debug
done
CARGO_PROFILE=$PROFILE
[ "$PROFILE" = debug ] && CARGO_PROFILE=dev

echo "[bench] building ($CARGO_PROFILE profile)"
cargo build --profile "$CARGO_PROFILE" --quiet -p secref-cli -p secref-testkit -p secref-bench --bins

echo "[bench] virtualenv target/bench-venv (bench/requirements.txt)"
VENV="$ROOT/target/bench-venv"
if [ ! -x "$VENV/bin/pip" ]; then
  python3 -m venv --clear "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r bench/requirements.txt ||
  { echo "ERROR: pip install -r bench/requirements.txt failed (see above)" >&2; exit 1; }

echo "[bench] starting rusty_vault, oidc-provider, moto"
start_rusty_vault
start_oidc_provider
start_moto

"$VENV/bin/python" scripts/bench.py --profile "$PROFILE" "$@"
