//! Issue 16 — building a resolver does not read the local store's file
//! (the SecFlow cold-resolve gap); the first `local://` read verifies it.
//! What users see through the built binary:
//!
//! * `secref get env://…` works while the store file is damaged, and
//!   `local://` fails typed (`integrity`), echoing no value;
//! * `secref serve` started over a damaged store answers `local://` reads
//!   with `INTEGRITY`, and serves them as soon as the good file is back
//!   (no restart): each read verifies the file again; `/readyz` reports
//!   `provider:local` not ready (`integrity`, or `wrong_key` for another
//!   key) until then.

use secref_testkit::cli::{run, run_ok, stderr, stdout, Sandbox, Served};

const TOKEN: &str = "cold-resolve-token-0123456789";
const VALUE: &str = "cold-resolve-value-4242";

fn sandbox() -> Sandbox {
    let sb = Sandbox::new(env!("CARGO_BIN_EXE_secref")).with_env("COLD_ENV", "cold-env-value");
    run_ok(sb.cmd().arg("init"));
    sb.set("local://secflow/dev/app/token/db", VALUE);
    sb
}

#[test]
fn a_damaged_store_fails_local_reads_typed_and_nothing_else() {
    let sb = sandbox();
    std::fs::write(sb.path("secrets.store"), b"{ damaged").unwrap();
    let o = run_ok(sb.cmd().args(["get", "env://COLD_ENV"]));
    assert_eq!(stdout(&o), "cold-env-value\n");
    let o = run(sb.cmd().args(["get", "local://secflow/dev/app/token/db"]));
    assert!(!o.status.success());
    assert!(
        stderr(&o).starts_with("error[integrity]: "),
        "{}",
        stderr(&o)
    );
}

#[test]
fn serve_over_a_damaged_store_serves_it_once_it_is_restored() {
    let sb = sandbox();
    let good = std::fs::read(sb.path("secrets.store")).unwrap();
    std::fs::write(sb.path("secrets.store"), b"{ damaged").unwrap();
    let served = Served::start(&sb, TOKEN, &[]);
    let body = serde_json::json!({"target_environment": "dev", "purpose": "secret.runtime_resolve",
        "items": [{"item_id": "a", "secret_ref": "secret://dev/app/token/db"}]});
    let read = || -> serde_json::Value {
        let (status, text) = served.post("/v1/secrets/resolve:batch", TOKEN, &body);
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).unwrap()
    };
    let v = read();
    assert_eq!(v["items"][0]["error"]["code"], "INTEGRITY", "{v}");
    assert_eq!(local_ready(&served), (503, serde_json::json!("integrity")));
    // Restored the way a backup is (rename): the next read serves it.
    let tmp = sb.path("restore.tmp");
    std::fs::write(&tmp, &good).unwrap();
    std::fs::rename(&tmp, sb.path("secrets.store")).unwrap();
    let v = read();
    assert_eq!(v["items"][0]["value"]["data"], VALUE, "{v}");
    // `/readyz` answers from a short-lived cache of its last round.
    let mut ready = local_ready(&served);
    for _ in 0..40 {
        if ready.0 == 200 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
        ready = local_ready(&served);
    }
    assert_eq!(ready, (200, serde_json::Value::Null));
    served.stop();
    assert!(!sb_log(&sb).contains(VALUE), "a value reached the log");
}

#[test]
fn serve_with_another_key_is_not_ready() {
    let sb = sandbox();
    // Another valid key in the key file (its mode stays 0600).
    std::fs::write(
        sb.path("store.key"),
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
    )
    .unwrap();
    let served = Served::start(&sb, TOKEN, &[]);
    assert_eq!(local_ready(&served), (503, serde_json::json!("wrong_key")));
    served.stop();
}

#[test]
fn a_store_damaged_in_place_is_reported_not_ready() {
    let sb = sandbox();
    let served = Served::start(&sb, TOKEN, &[]);
    assert_eq!(local_ready(&served), (200, serde_json::Value::Null));
    // One byte in the middle: same length, same trailing MAC bytes (what
    // the read fast path compares), so only a full verification sees it.
    let path = sb.path("secrets.store");
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] = if bytes[mid] == b'A' { b'B' } else { b'A' };
    std::fs::write(&path, &bytes).unwrap();
    // `/readyz` answers from a short-lived cache of its last round.
    let mut ready = local_ready(&served);
    for _ in 0..40 {
        if ready.0 == 503 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
        ready = local_ready(&served);
    }
    assert_eq!(ready, (503, serde_json::json!("integrity")));
    served.stop();
}

/// `/readyz`'s status and the `provider:local` check's error code.
fn local_ready(served: &Served) -> (u16, serde_json::Value) {
    let r = served.request(
        "GET",
        "/readyz",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        b"",
    );
    let v = r.json();
    let local = v["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "provider:local"))
        .unwrap_or_else(|| panic!("no provider:local check: {v}"));
    assert_eq!(local["ok"], local["error_code"].is_null(), "{v}");
    (r.status, local["error_code"].clone())
}

fn sb_log(sb: &Sandbox) -> String {
    std::fs::read_to_string(sb.path("serve.log")).unwrap_or_default()
}
