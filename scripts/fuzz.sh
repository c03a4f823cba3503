#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for SECONDS each (default 10) with
# cargo-fuzz (libFuzzer) on the nightly toolchain rustup already has, then
# prints executions, crashes, timeouts and peak RSS per target. cargo-fuzz
# is installed into .cache/cargo-fuzz (once). New inputs libFuzzer finds go
# to target/fuzz-corpus/<target> (scratch), never into the committed corpus;
# a crash is written to fuzz/artifacts/<target>/ and fails the script.
#
# Without a nightly toolchain (none can be downloaded on these machines) the
# same targets run on stable as a replay of the committed corpora
# (crates/secref-cli/tests/fuzz_corpora.rs), and the script says so.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECONDS_PER_TARGET=${1:-10}
# AddressSanitizer by default; FUZZ_SANITIZER=none builds several times faster
# (what the short run in scripts/test.sh uses: panics and the allocation
# limits are still caught, memory errors in unsafe code are not).
SANITIZER=${FUZZ_SANITIZER:-address}
export CARGO_INCREMENTAL=0

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "fuzz: no nightly toolchain installed: running the fuzz targets on STABLE as a replay of the committed corpora (no coverage-guided fuzzing)"
  cargo test -p secref-cli --test fuzz_corpora --quiet -- --nocapture
  exit 0
fi

CF_ROOT="$ROOT/.cache/cargo-fuzz"
if [ ! -x "$CF_ROOT/bin/cargo-fuzz" ]; then
  cargo install cargo-fuzz --locked --root "$CF_ROOT" --quiet
fi
export PATH="$CF_ROOT/bin:$PATH"

# One build dir under target/ (ignored, shared by runs); sanitizer builds
# cannot share artifacts with the stable ones anyway.
FUZZ_TARGET_DIR="$ROOT/target/fuzz-$SANITIZER"
cd fuzz
TARGETS=$(cargo +nightly fuzz list)
cargo +nightly fuzz build --release --debug-assertions --sanitizer "$SANITIZER" --target-dir "$FUZZ_TARGET_DIR" >/dev/null
printf '%-22s %12s %8s %9s %12s\n' target executions crashes timeouts peak_rss_mb
failed=0
for t in $TARGETS; do
  scratch="$ROOT/target/fuzz-corpus/$t"
  mkdir -p "$scratch" "artifacts/$t"
  log="$ROOT/target/fuzz-corpus/$t.log"
  # -timeout: one input taking over 10 s is a hang; -rss_limit_mb and
  # -malloc_limit_mb: the decoders' allocation caps (a body is at most
  # 1 MiB here, so 512 MiB of RSS or one 128 MiB allocation is a bug).
  set +e
  cargo +nightly fuzz run --release --debug-assertions --sanitizer "$SANITIZER" --target-dir "$FUZZ_TARGET_DIR" "$t" "$scratch" "corpus/$t" -- \
    -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=512 -malloc_limit_mb=128 \
    -max_len=65536 -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  execs=$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}')
  rss=$(grep -m1 'stat::peak_rss_mb' "$log" | awk '{print $2}')
  crashes=$(grep -c -E '^==[0-9]+== ?ERROR|panicked at|deadly signal' "$log" || true)
  timeouts=$(grep -c 'ERROR: libFuzzer: timeout' "$log" || true)
  printf '%-22s %12s %8s %9s %12s\n' "$t" "${execs:-?}" "$crashes" "$timeouts" "${rss:-?}"
  if [ "$rc" -ne 0 ]; then
    failed=1
    echo "fuzz: $t FAILED (exit $rc); log: $log; input in fuzz/artifacts/$t/" >&2
    tail -40 "$log" >&2
  fi
done
exit "$failed"
