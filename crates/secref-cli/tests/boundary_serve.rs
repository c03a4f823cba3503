//! Issue 9 item 10 — serve correctness at the boundary, seen from a client of
//! the built `secref serve`: no answer may be cached (`Cache-Control:
//! no-store`, `Pragma: no-cache`), `X-Vault-Wrap-TTL` wraps every Vault
//! route that returns data, and every error speaks the shape of its API
//! (Vault `{"errors":[…]}`, SecFlow `{"error":{code,message,retryable}}`).

use secref_testkit::cli::{feed_stdin, run_ok, stderr, Reply, Sandbox, Served};
use serde_json::json;

const TOKEN: &str = "boundary-serve-token-89abcdef";

/// A server with `secret/myapp/api` in its local store, `env://APP_A`, and a small body limit.
fn serve() -> (Served, Sandbox) {
    let sb = Sandbox::new(env!("CARGO_BIN_EXE_secref")).with_env("APP_A", "value-A");
    run_ok(sb.cmd().arg("init"));
    let o = feed_stdin(
        sb.cmd().args(["set", "local://myapp/api#token"]),
        b"v1-value",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let cfg = sb.write(
        "secref.toml",
        "[server]\nmax_body_bytes = 1024\n\
         [[server.rules]]\nprincipals = ['*']\nrefs = ['*', 'env://APP_A']\n",
    );
    let s = Served::start(&sb, TOKEN, &["--config", cfg.to_str().unwrap()]);
    (s, sb)
}

fn assert_no_store(what: &str, r: &Reply) {
    assert_eq!(r.header("cache-control"), Some("no-store"), "{what}");
    assert_eq!(r.header("pragma"), Some("no-cache"), "{what}");
}

/// A Vault error: the status, a JSON `errors` array of strings.
fn assert_vault_error(what: &str, r: &Reply, status: u16) {
    assert_eq!(r.status, status, "{what}: {}", r.body);
    let v = r.json();
    let errors = v["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: {v}"));
    assert!(errors.iter().all(|e| e.is_string()), "{what}: {v}");
    assert_no_store(what, r);
}

/// A SecFlow request-level error with `code`.
fn assert_secflow_error(what: &str, r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.body);
    let v = r.json();
    assert_eq!(v["error"]["code"], code, "{what}: {v}");
    assert!(v["error"]["message"].is_string(), "{what}: {v}");
    assert!(v["error"]["retryable"].is_boolean(), "{what}: {v}");
    assert_no_store(what, r);
}

fn vault_get(s: &Served, path: &str, extra: &[(&str, &str)]) -> Reply {
    let mut headers = vec![("X-Vault-Token", TOKEN)];
    headers.extend_from_slice(extra);
    s.request("GET", path, &headers, b"")
}

#[test]
fn secflow_answers_are_never_cacheable() {
    let (s, _sb) = serve();
    let auth = format!("Bearer {TOKEN}");
    let body = json!({
        "target_environment": "dev",
        "purpose": "secret.runtime_resolve",
        "items": [{"item_id": "item-1", "secret_ref": "env://APP_A"}],
    })
    .to_string();
    let r = s.request(
        "POST",
        "/v1/secrets/resolve:batch",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["items"][0]["value"]["data"], "value-A");
    assert_no_store("resolve", &r);
    let r = s.request("POST", "/v1/secrets/resolve:batch", &[], body.as_bytes());
    assert_secflow_error("no token", &r, 401, "UNAUTHENTICATED");
    s.stop();
}

#[test]
fn vault_data_answers_are_never_cacheable() {
    let (s, _sb) = serve();
    let r = vault_get(&s, "/v1/secret/data/myapp/api", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["data"]["data"]["token"], "v1-value");
    assert_no_store("kv read", &r);
    let r = vault_get(&s, "/v1/secret/metadata/myapp/api", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_no_store("metadata read", &r);
    s.stop();
}

#[test]
fn wrap_ttl_wraps_metadata_and_lookup_self_too() {
    let (s, _sb) = serve();
    for (path, creation) in [
        ("/v1/secret/metadata/myapp/api", "secret/metadata/myapp/api"),
        ("/v1/auth/token/lookup-self", "auth/token/lookup-self"),
    ] {
        let r = vault_get(&s, path, &[("X-Vault-Wrap-TTL", "60s")]);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert_no_store(path, &r);
        let v = r.json();
        assert!(v["data"].is_null(), "{path}: the data is wrapped: {v}");
        assert_eq!(v["wrap_info"]["ttl"], 60, "{path}");
        assert_eq!(v["wrap_info"]["creation_path"], creation, "{path}");
        let wrapping = v["wrap_info"]["token"].as_str().unwrap().to_string();
        let un = s.request(
            "POST",
            "/v1/sys/wrapping/unwrap",
            &[("X-Vault-Token", &wrapping)],
            b"",
        );
        assert_eq!(un.status, 200, "{path}: {}", un.body);
        assert_no_store("unwrap", &un);
        let data = &un.json()["data"];
        if path.contains("metadata") {
            assert_eq!(data["current_version"], 1, "{data}");
        } else {
            assert_eq!(data["display_name"], "secref-default", "{data}");
        }
        // Single use.
        let again = s.request(
            "POST",
            "/v1/sys/wrapping/unwrap",
            &[("X-Vault-Token", &wrapping)],
            b"",
        );
        assert_vault_error("second unwrap", &again, 400);
    }
    // An unusable wrap TTL is refused before anything is read.
    let r = vault_get(
        &s,
        "/v1/secret/metadata/myapp/api",
        &[("X-Vault-Wrap-TTL", "soon")],
    );
    assert_vault_error("bad wrap ttl", &r, 400);
    s.stop();
}

#[test]
fn every_vault_error_is_vault_shaped() {
    let (s, _sb) = serve();
    let tok = [("X-Vault-Token", TOKEN)];
    // 405: a wrong method on a Vault route (Vault's own answer names no
    // `Allow`; the errors array says why).
    for (method, path) in [
        ("PUT", "/v1/sys/mounts"),
        ("DELETE", "/v1/auth/token/lookup-self"),
        ("GET", "/v1/sys/wrapping/unwrap"),
    ] {
        let r = s.request(method, path, &tok, b"");
        assert_vault_error(&format!("{method} {path}"), &r, 405);
        assert!(!r.json()["errors"].as_array().unwrap().is_empty());
    }
    // 404: an unknown Vault path, and a missing secret.
    assert_vault_error(
        "unknown path",
        &vault_get(&s, "/v1/nomount/data/x", &[]),
        404,
    );
    assert_vault_error(
        "missing secret",
        &vault_get(&s, "/v1/secret/data/nope", &[]),
        404,
    );
    // 400: a bad version, a path that does not decode.
    assert_vault_error(
        "bad version",
        &vault_get(&s, "/v1/secret/data/myapp/api?version=abc", &[]),
        400,
    );
    assert_vault_error(
        "undecodable path",
        &vault_get(&s, "/v1/secret/data/%FF%FE", &[]),
        400,
    );
    // 403: no token, a wrong token.
    let r = s.request("GET", "/v1/secret/data/myapp/api", &[], b"");
    assert_vault_error("no token", &r, 403);
    let r = s.request(
        "GET",
        "/v1/secret/data/myapp/api",
        &[("X-Vault-Token", "not-the-token-000000")],
        b"",
    );
    assert_vault_error("wrong token", &r, 403);
    // 413: a body over max_body_bytes.
    let big = vec![b' '; 4096];
    let r = s.request("POST", "/v1/sys/wrapping/unwrap", &tok, &big);
    assert_vault_error("too large", &r, 413);
    s.stop();
}

#[test]
fn secflow_errors_stay_secflow_shaped() {
    let (s, _sb) = serve();
    let auth = format!("Bearer {TOKEN}");
    let r = s.request(
        "GET",
        "/v1/secrets/resolve:batch",
        &[("Authorization", &auth)],
        b"",
    );
    assert_secflow_error("GET resolve", &r, 405, "METHOD_NOT_ALLOWED");
    assert_eq!(r.header("allow"), Some("POST"));
    let r = s.request(
        "POST",
        "/v1/secrets/unknown:batch",
        &[("Authorization", &auth)],
        b"{}",
    );
    assert_secflow_error("unknown :batch", &r, 404, "NOT_FOUND");
    let r = s.request("GET", "/nowhere", &[], b"");
    assert_secflow_error("unknown path", &r, 404, "NOT_FOUND");
    s.stop();
}
