//! Parses references in bulk, for the differential test against the Python
//! `secrets_sdk` parser (`tests/python/test_uri_differential.py`).
//!
//! Reads JSON lines `{"input": "…", "tenant_mounts": ["secret", …]}` on stdin
//! (`tenant_mounts` optional; empty or absent turns the tenant guard off) and
//! writes one JSON line per input: `{"ok": "<canonical>"}` or
//! `{"code": "<error code>", "message": "<error text>"}`.
//!
//! ```text
//! echo '{"input":"OpenBao+KV2://secret/a/"}' | cargo run --example canonicalize
//! {"ok":"openbao+kv2://secret/a"}
//! ```

use std::io::{self, BufRead, BufWriter, Write};

use secref::SecretRef;
use serde_json::{json, Value};

fn main() -> io::Result<()> {
    let stdin = io::stdin();
    let mut out = BufWriter::new(io::stdout().lock());
    for line in stdin.lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<Value>(&line) {
            Ok(request) => answer(&request),
            Err(e) => json!({ "code": "bad_request", "message": e.to_string() }),
        };
        writeln!(out, "{reply}")?;
    }
    out.flush()
}

/// Parses one request's input, with the tenant guard when mounts are given.
fn answer(request: &Value) -> Value {
    let Some(input) = request.get("input").and_then(Value::as_str) else {
        return json!({ "code": "bad_request", "message": "missing string field 'input'" });
    };
    let mounts: Vec<&str> = request
        .get("tenant_mounts")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    match SecretRef::parse_for_tenant(input, "dev", &mounts) {
        Ok(r) => json!({ "ok": r.to_canonical() }),
        Err(e) => json!({ "code": e.code().as_str(), "message": e.to_string() }),
    }
}
