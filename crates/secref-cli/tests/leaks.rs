//! Canary sweep across the `secref` binaries: a value planted in a local
//! store is read back through `get`, `run`, `check`, `export` and `secref
//! serve` (SecFlow API) with `RUST_LOG=trace`, and every output — stdout,
//! stderr, the server's log (access log included) and every file left in the
//! sandbox — is searched for it in plain, hex, base64 and URL-encoded forms.
//! Only the outputs whose job is to carry the value (`get`'s and `export`'s
//! stdout, the server's resolve answer) are exempt, and those are checked to
//! really carry it.

use std::process::Output;

use secref_testkit::capture::{assert_no_canary, assert_no_canary_in};
use secref_testkit::cli::{feed_stdin, run, run_ok, stderr, stdout, Sandbox, Served};

/// The planted value: spaces and URL/base64-special characters make its
/// encoded forms differ from the plain one.
const CANARY: &str = "canary-5e1d leak/+=&?q";
/// The server's bearer token: a credential, so it must not leak either.
const TOKEN: &str = "serve-token-canary-90ab17";
const REF: &str = "local://app/db#password";

fn sandbox() -> Sandbox {
    Sandbox::new(env!("CARGO_BIN_EXE_secref")).with_env("RUST_LOG", "trace")
}

/// Both streams of `o` are free of the canary and the token.
fn assert_clean(what: &str, o: &Output) {
    for (stream, bytes) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
        let label = format!("{what} {stream}");
        assert_no_canary_in(&label, bytes, CANARY);
        assert_no_canary_in(&label, bytes, TOKEN);
    }
}

fn assert_logged(what: &str, log: &str) {
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "{what}: no trace logs were written"
    );
}

/// A sandbox with an initialized store holding the canary at [`REF`].
fn planted() -> Sandbox {
    let sb = sandbox();
    let o = run_ok(sb.cmd().arg("init"));
    assert_clean("init", &o);
    let o = feed_stdin(sb.cmd().args(["set", REF]), CANARY.as_bytes());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_clean("set", &o);
    sb
}

/// Every file the commands left behind is free of the canary and token.
/// The store is scanned too: it is encrypted, so not even it may hold them.
fn assert_files_clean(sb: &Sandbox) {
    let files = sb.files();
    assert!(
        files.iter().any(|f| f.ends_with("secrets.store")),
        "the store is among the scanned files: {files:?}"
    );
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        let label = file.display().to_string();
        assert_no_canary_in(&label, &bytes, CANARY);
        assert_no_canary_in(&label, &bytes, TOKEN);
    }
}

#[test]
fn the_file_sweep_finds_an_encoded_canary_anywhere_below_the_sandbox() {
    let sb = planted();
    std::fs::create_dir_all(sb.path("home/.cache/deep")).unwrap();
    let url_encoded =
        percent_encoding::utf8_percent_encode(CANARY, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    sb.write("home/.cache/deep/leak.log", &format!("x={url_encoded}\n"));
    let caught = std::panic::catch_unwind(|| assert_files_clean(&sb));
    assert!(caught.is_err(), "the sweep missed a planted leak");
}

#[test]
fn cli_commands_never_leak_the_canary() {
    // RUST_LOG=trace reaches the binary (so a clean stderr means something):
    // a missing store is a DEBUG event.
    let bare = sandbox();
    let o = run(bare.cmd().args(["get", "env://HOME"]));
    assert_logged("get without a store", &stderr(&o));

    let sb = planted();

    // get: stdout is the value (its job); stderr is clean.
    let o = run_ok(sb.cmd().args(["get", REF]));
    assert_eq!(stdout(&o), format!("{CANARY}\n"));
    assert_no_canary_in("get stderr", &o.stderr, CANARY);
    for failing in ["local://app/db#nope", "local://app/db#password/x"] {
        let o = run(sb.cmd().args(["get", failing]));
        assert!(!o.status.success());
        assert_clean(failing, &o);
    }

    // run: the child sees the value; what it prints is masked.
    let o = run_ok(sb.cmd().args([
        "run",
        "--env",
        &format!("DB={REF}"),
        "--",
        "sh",
        "-c",
        "echo \"$DB\"; echo \"$DB\" >&2",
    ]));
    assert!(
        stdout(&o).contains("<concealed by secref>"),
        "{}",
        stdout(&o)
    );
    assert_clean("run", &o);

    // check: a table of names and statuses, never values.
    let o = run(sb.cmd().args([
        "check",
        "--env",
        &format!("DB={REF}"),
        "--env",
        "GONE=local://app/none",
    ]));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_clean("check", &o);

    // export: stdout carries the value in the format's quoting; stderr is
    // clean, and so is a failing export's stdout.
    for format in ["json", "dotenv", "shell"] {
        let o =
            run_ok(
                sb.cmd()
                    .args(["export", "--format", format, "--env", &format!("DB={REF}")]),
            );
        assert!(!o.stdout.is_empty());
        assert_no_canary_in("export stderr", &o.stderr, CANARY);
    }
    let o = run_ok(
        sb.cmd()
            .args(["export", "--format", "json", "--env", &format!("DB={REF}")]),
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["DB"], CANARY);
    let o = run(sb.cmd().args([
        "export",
        "--format",
        "json",
        "--env",
        &format!("DB={REF}"),
        "--env",
        "GONE=local://app/none",
    ]));
    assert_eq!(o.status.code(), Some(3));
    assert_clean("failed export", &o);

    assert_files_clean(&sb);
}

fn envelope(purpose: &str, refs: &[&str]) -> serde_json::Value {
    let items: Vec<_> = refs
        .iter()
        .enumerate()
        .map(|(i, r)| serde_json::json!({"item_id": format!("item-{i}"), "secret_ref": r}))
        .collect();
    serde_json::json!({
        "request_id": "leaks-1", "trace_id": "leaks-t", "target_environment": "dev",
        "purpose": purpose, "items": items,
    })
}

#[test]
fn serve_never_leaks_the_canary_or_its_token() {
    let sb = planted();
    let served = Served::start(&sb, TOKEN, &[]);

    // The resolve answer carries the value: that is its job.
    let (status, body) = served.post(
        "/v1/secrets/resolve:batch",
        TOKEN,
        &envelope("secret.runtime_resolve", &[REF, "local://app/none"]),
    );
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["items"][0]["value"]["data"], CANARY);
    assert_eq!(v["items"][1]["result"], "failed");

    // Every other answer is free of both.
    let others = [
        ("/v1/secrets/validate:batch", TOKEN, "secret.validate"),
        ("/v1/secrets/metadata:batch", TOKEN, "secret.metadata"),
        (
            "/v1/secrets/resolve:batch",
            "wrong-token-0123456789",
            "secret.runtime_resolve",
        ),
        ("/v1/secrets/resolve:batch", TOKEN, "secret.validate"),
    ];
    for (path, token, purpose) in others {
        let (status, body) = served.post(path, token, &envelope(purpose, &[REF]));
        assert!(status == 200 || status >= 400, "{status}");
        assert_no_canary(&body, CANARY);
        assert_no_canary(&body, TOKEN);
    }
    served.stop();

    let log = std::fs::read_to_string(sb.path("serve.log")).unwrap();
    assert_logged("serve", &log);
    assert!(
        log.contains("route=/v1/secrets/metadata:batch status=200"),
        "the access log is in the scanned output: {log}"
    );
    assert_files_clean(&sb);
}
