//! Trust at the boundary (issue 9, items 1 and 2), proven on the real
//! binary: `secref serve` started with a real config file, asked over real
//! TCP by a restricted token and by the default token; `secref get` run the
//! way a user runs it.
//!
//! * A rule allowing `file://<dir>/allowed/*` cannot be escaped: `..`, `.`,
//!   `//`, percent escapes are not references; symlinks, FIFOs, devices,
//!   `/proc` pseudo-files and files over 1 MiB are refused by the file
//!   provider; the server stays up and serves the next request.
//! * With no rules, the default token reads the local store but not the
//!   server's environment or files, on every SecFlow route; `refs = ["*"]`
//!   does not grant them either, only a rule that names the scheme.

use secref_testkit::cli::{feed_stdin, run, run_ok, stderr, Sandbox, Served};
use serde_json::{json, Value};

/// The default (admin) token; it is in the server's environment, so
/// `/proc/<pid>/environ` holds it.
const ADMIN: &str = "boundary-admin-token-5a7c31";
/// The restricted token `reader` of the config file.
const READER: &str = "boundary-reader-token-9e4d02";
/// What the allowed file holds.
const ALLOWED: &str = "allowed-value-77c1";
/// What lies outside the allowed directory.
const OUTSIDE: &str = "outside-value-3f0b";
/// A variable in the server's environment.
const ENV_CANARY: &str = "env-canary-b41e";

fn sandbox() -> Sandbox {
    Sandbox::new(env!("CARGO_BIN_EXE_secref"))
        .with_env("SECREF_READER_TOKEN", READER)
        .with_env("BOUNDARY_ENV_CANARY", ENV_CANARY)
}

/// `srv/allowed/{ok.txt, app.json, at-cap, big, fifo, link, dirlink}` and
/// `srv/other/secret.key`; returns the absolute path of `srv`.
fn plant(sb: &Sandbox) -> String {
    let srv = sb.path("srv");
    let allowed = srv.join("allowed");
    std::fs::create_dir_all(&allowed).unwrap();
    std::fs::create_dir_all(srv.join("other")).unwrap();
    std::fs::write(allowed.join("ok.txt"), ALLOWED).unwrap();
    std::fs::write(allowed.join("app.json"), r#"{"db":{"password":"pw-1"}}"#).unwrap();
    std::fs::write(allowed.join("at-cap"), vec![b'a'; 1024 * 1024]).unwrap();
    std::fs::write(allowed.join("big"), vec![b'b'; 1024 * 1024 + 1]).unwrap();
    std::fs::write(srv.join("other/secret.key"), OUTSIDE).unwrap();
    std::os::unix::fs::symlink("../other/secret.key", allowed.join("link")).unwrap();
    std::os::unix::fs::symlink("../other", allowed.join("dirlink")).unwrap();
    let fifo = allowed.join("fifo");
    let o = run(std::process::Command::new("mkfifo").arg(&fifo));
    assert!(o.status.success(), "mkfifo: {}", stderr(&o));
    srv.display().to_string()
}

fn envelope(purpose: &str, refs: &[&str]) -> Value {
    let items: Vec<_> = refs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut item = json!({"item_id": format!("item-{i}"), "secret_ref": r});
            if purpose == "secret.permission_check" {
                item["action"] = json!("read");
            }
            item
        })
        .collect();
    json!({
        "request_id": "boundary-1", "trace_id": "boundary-t", "target_environment": "dev",
        "purpose": purpose, "items": items,
    })
}

/// Resolves one reference; returns the item.
fn resolve(served: &Served, token: &str, reference: &str) -> Value {
    let (status, body) = served.post(
        "/v1/secrets/resolve:batch",
        token,
        &envelope("secret.runtime_resolve", &[reference]),
    );
    assert_eq!(status, 200, "{reference}: {body}");
    for secret in [OUTSIDE, ADMIN, READER, ENV_CANARY] {
        assert!(!body.contains(secret), "{reference} leaked: {body}");
    }
    let v: Value = serde_json::from_str(&body).unwrap();
    v["items"][0].clone()
}

/// The item failed with `code`, and the server still serves the allowed file.
fn assert_refused(served: &Served, reference: &str, code: &str) {
    let item = resolve(served, READER, reference);
    assert_eq!(item["result"], "failed", "{reference}: {item}");
    assert_eq!(item["error"]["code"], code, "{reference}: {item}");
    assert_eq!(item["error"]["retryable"], false, "{reference}: {item}");
    assert!(item.get("value").is_none(), "{reference}: {item}");
}

fn assert_served(served: &Served, reference: &str, want: &str) {
    let item = resolve(served, READER, reference);
    assert_eq!(item["result"], "allowed", "{reference}: {item}");
    assert_eq!(item["value"]["data"], want, "{reference}");
}

fn assert_denied(item: &Value) {
    assert_eq!(item["result"], "denied", "{item}");
    assert_eq!(item["error"]["code"], "PERMISSION_DENIED", "{item}");
    assert_eq!(item["error"]["decision_id"], "default-deny", "{item}");
}

#[test]
fn file_rules_cannot_be_escaped() {
    let sb = sandbox();
    let srv = plant(&sb);
    sb.write(
        "secref.toml",
        &format!(
            "[server.tokens.reader]\ntoken_env = \"SECREF_READER_TOKEN\"\n\
             [[server.rules]]\nprincipals = [\"reader\"]\n\
             refs = [\"file://{srv}/allowed/*\", \"file:///dev/zero\", \"file:///proc/*\"]\n\
             actions = [\"read\"]\n"
        ),
    );
    let served = Served::start(&sb, ADMIN, &[]);
    let allowed = format!("file://{srv}/allowed");
    let ok = format!("{allowed}/ok.txt");
    assert_served(&served, &ok, ALLOWED);
    assert_served(&served, &format!("{allowed}/app.json#/db/password"), "pw-1");

    // Not references at all: rejected by the grammar, before any rule.
    for escape in [
        format!("{allowed}/../other/secret.key"),
        format!("{allowed}/./../other/secret.key"),
        format!("{allowed}/../../store.key"),
        format!("{allowed}//../other/secret.key"),
        format!("{allowed}/"),
        format!("{allowed}/%2e%2e/other/secret.key"),
        format!("{allowed}/%2E%2E%2Fother%2Fsecret.key"),
        format!("{allowed}/..%2fother/secret.key"),
    ] {
        assert_refused(&served, &escape, "ILLEGAL_SEGMENT");
    }
    // Outside the rule: denied like any other reference.
    assert_denied(&resolve(
        &served,
        READER,
        &format!("file://{srv}/other/secret.key"),
    ));
    assert_denied(&resolve(&served, READER, &format!("file://{srv}/allowedx")));

    // Allowed by the rule's text, refused by the file provider.
    for (reference, code) in [
        (format!("{allowed}/link"), "UNSUPPORTED"),
        (format!("{allowed}/dirlink/secret.key"), "UNSUPPORTED"),
        (format!("{allowed}/fifo"), "UNSUPPORTED"),
        ("file:///dev/zero".to_string(), "UNSUPPORTED"),
        ("file:///proc/self/environ".to_string(), "UNSUPPORTED"),
        (
            format!("file:///proc/{}/environ", served.pid()),
            "UNSUPPORTED",
        ),
        (format!("{allowed}/big"), "TOO_LARGE"),
    ] {
        assert_refused(&served, &reference, code);
        // Still healthy after each: the next request is answered.
        assert_served(&served, &ok, ALLOWED);
    }
    // Exactly at the 1 MiB cap is fine.
    let item = resolve(&served, READER, &format!("{allowed}/at-cap"));
    assert_eq!(item["result"], "allowed", "{item}");

    // Every route refuses traversal the same way.
    let escape = format!("{allowed}/../other/secret.key");
    for (path, purpose) in [
        ("/v1/secrets/validate:batch", "secret.validate"),
        ("/v1/secrets/metadata:batch", "secret.metadata"),
        (
            "/v1/secrets/permission-check:batch",
            "secret.permission_check",
        ),
    ] {
        let (status, body) = served.post(path, READER, &envelope(purpose, &[&escape]));
        assert_eq!(status, 200, "{path}: {body}");
        assert!(!body.contains(OUTSIDE), "{path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["items"][0]["error"]["code"], "ILLEGAL_SEGMENT",
            "{path}: {body}"
        );
    }
    let status = served.stop();
    assert!(status.success(), "{status}");
}

#[test]
fn every_scheme_is_matched_by_its_canonical_form() {
    let sb = sandbox();
    sb.write(
        "secref.toml",
        "[server.tokens.reader]\ntoken_env = \"SECREF_READER_TOKEN\"\n\
         [[server.rules]]\nprincipals = [\"reader\"]\n\
         refs = [\"openbao+kv2://secret/app/*\", \"local://app/*\", \"secret://dev/app/*\"]\n",
    );
    run_ok(sb.cmd().arg("init"));
    let o = feed_stdin(sb.cmd().args(["set", "local://app/db"]), b"app-db");
    assert!(o.status.success(), "{}", stderr(&o));
    let served = Served::start(&sb, ADMIN, &[]);
    // SecFlow API: a spelling the grammar rejects never reaches a rule; a
    // spelling it accepts is matched canonically.
    for escape in [
        "local://app/../other/x",
        "local://app/./db",
        "local://app//db",
        "local://app/%2e%2e/other",
        "secret://dev/app/../x",
        "secret://dev/app/token/..",
        "secret://dev/app/token/a%2fb",
    ] {
        assert_refused(&served, escape, "ILLEGAL_SEGMENT");
    }
    assert_served(&served, "LOCAL://app/db", "app-db");
    assert_denied(&resolve(&served, READER, "local://apple/db"));

    // Vault API.
    let get = |path: &str| served.request("GET", path, &[("X-Vault-Token", READER)], b"");
    // Allowed and absent: Vault's 404.
    assert_eq!(get("/v1/secret/data/app/x").status, 404);
    // Traversal spelled in the path: not a reference, refused as such.
    for path in [
        "/v1/secret/data/app/%2e%2e/other",
        "/v1/secret/data/app/..%2fother",
        "/v1/secret/data/app//other",
    ] {
        let reply = get(path);
        assert_eq!(reply.status, 400, "{path}: {}", reply.body);
    }
    assert_eq!(get("/v1/secret/data/other/x").status, 403);
    served.stop();
}

#[test]
fn a_rule_pattern_that_is_not_canonical_stops_the_server() {
    let sb = sandbox();
    sb.write(
        "secref.toml",
        "[[server.rules]]\nprincipals = [\"*\"]\nrefs = [\"file:///srv/a/../b\"]\n",
    );
    // Spawned, not run to completion: were the pattern accepted, the server
    // would serve forever; it is killed after a bounded wait instead.
    let mut child = sb
        .cmd()
        .env("SECREF_SERVE_TOKEN", ADMIN)
        .args(["serve", "--bind", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..600 {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    if child.try_wait().unwrap().is_none() {
        child.kill().unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not a valid reference"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn without_rules_the_server_keeps_its_environment_and_files() {
    let sb = sandbox();
    let srv = plant(&sb);
    run_ok(sb.cmd().arg("init"));
    let o = feed_stdin(sb.cmd().args(["set", "local://app/db"]), b"store-value");
    assert!(o.status.success(), "{}", stderr(&o));
    let served = Served::start(&sb, ADMIN, &[]);
    let file = format!("file://{srv}/allowed/ok.txt");
    let key = format!("file://{}", sb.path("store.key").display());
    let host_local = [
        "env://BOUNDARY_ENV_CANARY",
        "env://SECREF_SERVE_TOKEN",
        &file,
        &key,
    ];

    let item = resolve(&served, ADMIN, "local://app/db");
    assert_eq!(item["value"]["data"], "store-value", "{item}");
    // The same shape as any other denial: no hint why.
    let mut messages = Vec::new();
    for r in host_local {
        let item = resolve(&served, ADMIN, r);
        assert_denied(&item);
        messages.push(item["error"]["message"].as_str().unwrap().to_string());
    }
    assert!(messages.windows(2).all(|w| w[0] == w[1]), "{messages:?}");
    for (path, purpose) in [
        ("/v1/secrets/validate:batch", "secret.validate"),
        ("/v1/secrets/metadata:batch", "secret.metadata"),
    ] {
        let (status, body) = served.post(path, ADMIN, &envelope(purpose, &host_local));
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        for item in v["items"].as_array().unwrap() {
            assert_denied(item);
        }
    }
    let (_, body) = served.post(
        "/v1/secrets/permission-check:batch",
        ADMIN,
        &envelope(
            "secret.permission_check",
            &["local://app/db", &file, "env://HOME"],
        ),
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    let allowed: Vec<_> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["allowed"].clone())
        .collect();
    assert_eq!(allowed, [json!(true), json!(false), json!(false)], "{body}");
    served.stop();
}

#[test]
fn a_star_rule_does_not_grant_host_local_refs_a_named_one_does() {
    let sb = sandbox();
    let srv = plant(&sb);
    sb.write(
        "secref.toml",
        &format!(
            "[[server.rules]]\nprincipals = [\"*\"]\nrefs = [\"*\"]\n\
             [[server.rules]]\nprincipals = [\"default\"]\n\
             refs = [\"env://BOUNDARY_*\", \"file://{srv}/allowed/ok.txt\"]\n"
        ),
    );
    run_ok(sb.cmd().arg("init"));
    let served = Served::start(&sb, ADMIN, &[]);
    // `*` covers the store (absent here: not_found, not denied)…
    let item = resolve(&served, ADMIN, "local://app/none");
    assert_eq!(item["error"]["code"], "NOT_FOUND", "{item}");
    // … but not the host: only the rule naming env:// / file:// does.
    assert_denied(&resolve(&served, ADMIN, "env://SECREF_SERVE_TOKEN"));
    assert_denied(&resolve(
        &served,
        ADMIN,
        &format!("file://{srv}/other/secret.key"),
    ));
    // The values are canaries themselves: read them outside `resolve`'s
    // no-canary check.
    let file = format!("file://{srv}/allowed/ok.txt");
    let (_, body) = served.post(
        "/v1/secrets/resolve:batch",
        ADMIN,
        &envelope(
            "secret.runtime_resolve",
            &["env://BOUNDARY_ENV_CANARY", &file],
        ),
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["items"][0]["value"]["data"], ENV_CANARY, "{body}");
    assert_eq!(v["items"][0]["decision_id"], "rule-2", "{body}");
    assert_eq!(v["items"][1]["value"]["data"], ALLOWED, "{body}");
    served.stop();
}

#[test]
fn cli_refuses_traversal_and_non_regular_files() {
    let sb = sandbox();
    let srv = plant(&sb);
    for bad in [
        "file:///a/../b",
        "file:///a/./b",
        "file:///a//b",
        "file:///a/%2e%2e/b",
    ] {
        let o = run(sb.cmd().args(["get", bad]));
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains("illegal_segment"), "{bad}: {err}");
        assert!(err.contains("file://"), "{bad}: {err}");
    }
    let o = run(sb.cmd().args(["get", "file://relative/path"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("absolute path"), "{}", stderr(&o));

    let o = run_ok(
        sb.cmd()
            .args(["get", &format!("file://{srv}/allowed/ok.txt")]),
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains(ALLOWED));
    for (name, code) in [
        ("fifo", "unsupported"),
        ("link", "unsupported"),
        ("big", "too_large"),
    ] {
        let o = run(sb
            .cmd()
            .args(["get", &format!("file://{srv}/allowed/{name}")]));
        assert_eq!(o.status.code(), Some(1), "{name}: {}", stderr(&o));
        assert!(stderr(&o).contains(code), "{name}: {}", stderr(&o));
        assert!(!String::from_utf8_lossy(&o.stdout).contains(OUTSIDE));
    }
    // `[file]` raises the cap and opts into symlinks.
    sb.write(
        "secref.toml",
        "[file]\nmax_bytes = 2097152\nfollow_symlinks = true\n",
    );
    run_ok(sb.cmd().args(["get", &format!("file://{srv}/allowed/big")]));
    let o = run_ok(
        sb.cmd()
            .args(["get", &format!("file://{srv}/allowed/link")]),
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains(OUTSIDE));
    // Still never a FIFO.
    let o = run(sb
        .cmd()
        .args(["get", &format!("file://{srv}/allowed/fifo")]));
    assert!(stderr(&o).contains("unsupported"), "{}", stderr(&o));
}
