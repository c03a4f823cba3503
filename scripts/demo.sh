#!/usr/bin/env bash
# The main job on the embedded default: a throw-away encrypted store, two
# secrets, and a command run with them in its environment — its output
# masked. Nothing outside a temp dir is touched.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet -p secref-cli
SECREF="$PWD/target/debug/secref"

DEMO="$(mktemp -d)"
trap 'rm -rf "$DEMO"' EXIT
export SECREF_STORE="$DEMO/secref.store" SECREF_KEY_FILE="$DEMO/key"
unset SECREF_KEY

echo "\$ secref init"
"$SECREF" init
echo
echo "\$ printf 'hunter2-db-password' | secref set local://app/db#password"
printf 'hunter2-db-password' | "$SECREF" set local://app/db#password
echo "\$ printf 'tok_live_0123456789' | secref set local://app/api-token"
printf 'tok_live_0123456789' | "$SECREF" set local://app/api-token

cat > "$DEMO/app.env" <<'ENV'
DB_PASSWORD=local://app/db#password
API_TOKEN=local://app/api-token
LOG_LEVEL=info
ENV
echo
echo "\$ cat app.env"; cat "$DEMO/app.env"
echo
echo "\$ secref check --env-file app.env"
"$SECREF" check --env-file "$DEMO/app.env"
echo
echo "\$ secref run --env-file app.env -- sh -c '…prints its secrets…'"
"$SECREF" run --env-file "$DEMO/app.env" -- sh -c '
  echo "LOG_LEVEL=$LOG_LEVEL"
  echo "connecting with password $DB_PASSWORD"
  printf "token as base64: %s\n" "$(printf %s "$API_TOKEN" | base64)"
  printf "{\"token\": \"%s\"}\n" "$API_TOKEN"
  echo "password length: ${#DB_PASSWORD}"
'
echo
echo "The store file holds no plaintext:"
if grep -q 'hunter2-db-password' "$SECREF_STORE"; then echo "LEAK"; exit 1; else echo "  grep hunter2-db-password $SECREF_STORE → no match"; fi
