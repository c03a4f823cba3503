//! `secref serve` as a Vault agent, driven through the built binary the way
//! a user runs it: the Vault API over the local store (written and read
//! from both sides: `secref set`/`get` and HTTP), the access rules on every
//! Vault action, and the caching proxy mode in front of another
//! `secref serve` (KV v2) and, when the suite provides one, a real
//! RustyVault (KV v1).

use secref_testkit::cli::{run, run_ok, stdout, Reply, Sandbox, Served};
use serde_json::{json, Value};

const TOKEN: &str = "canary-agent-token-0a1b2c3d4e";
const READER: &str = "canary-agent-reader-9f8e7d6c";

fn sandbox() -> Sandbox {
    Sandbox::initialized(env!("CARGO_BIN_EXE_secref"))
}

fn vault(s: &Served, method: &str, path: &str, token: &str, body: Option<Value>) -> Reply {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    s.request(
        method,
        path,
        &[
            ("X-Vault-Token", token),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    )
}

/// Every answer of the Vault API: no-store, and errors in Vault's shape.
fn check_shape(r: &Reply) {
    assert_eq!(r.header("cache-control"), Some("no-store"), "{r:?}");
    // Vault's one exception: a deleted or destroyed version is a 404 with
    // that version's metadata instead of errors.
    if r.status >= 400 && r.json()["data"]["metadata"].is_null() {
        assert!(r.json()["errors"].is_array(), "{r:?}");
    }
}

#[test]
fn secref_set_is_readable_by_vault_clients_and_vault_writes_by_secref_get() {
    let sb = sandbox();
    sb.set("local://myapp/db#password", "canary-agent-pw-1");
    let s = Served::start(&sb, TOKEN, &[]);

    // The issue's "done when": set with the CLI, read at secret/data/myapp/db.
    let r = vault(&s, "GET", "/v1/secret/data/myapp/db", TOKEN, None);
    check_shape(&r);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json()["data"]["data"],
        json!({"password": "canary-agent-pw-1"})
    );
    assert_eq!(r.json()["data"]["metadata"]["version"], 1);

    // A Vault write (cas on the version read) is what `secref get` sees.
    let w = vault(
        &s,
        "POST",
        "/v1/secret/data/myapp/db",
        TOKEN,
        Some(
            json!({"data": {"password": "canary-agent-pw-2", "user": "app"}, "options": {"cas": 1}}),
        ),
    );
    check_shape(&w);
    assert_eq!(w.status, 200, "{w:?}");
    assert_eq!(w.json()["data"]["version"], 2);
    let got = run_ok(sb.cmd().args(["get", "local://myapp/db#password"]));
    assert_eq!(stdout(&got).trim(), "canary-agent-pw-2");

    // A stale cas is Vault's 400 and writes nothing.
    let stale = vault(
        &s,
        "PUT",
        "/v1/secret/data/myapp/db",
        TOKEN,
        Some(json!({"data": {"password": "x"}, "options": {"cas": 1}})),
    );
    check_shape(&stale);
    assert_eq!(stale.status, 400, "{stale:?}");
    let got = run_ok(sb.cmd().args(["get", "local://myapp/db#password"]));
    assert_eq!(stdout(&got).trim(), "canary-agent-pw-2");

    // The CLI's change is seen by the next Vault read, at once.
    sb.set("local://myapp/db#password", "canary-agent-pw-3");
    let r = vault(&s, "GET", "/v1/secret/data/myapp/db", TOKEN, None);
    assert_eq!(r.json()["data"]["data"]["password"], "canary-agent-pw-3");
    assert_eq!(r.json()["data"]["metadata"]["version"], 3);

    // Soft delete via the API; the CLI sees it removed; undelete; destroy.
    let d = vault(&s, "DELETE", "/v1/secret/data/myapp/db", TOKEN, None);
    assert_eq!(d.status, 204, "{d:?}");
    let gone = run(sb.cmd().args(["get", "local://myapp/db#password"]));
    assert_eq!(gone.status.code(), Some(3));
    let r = vault(&s, "GET", "/v1/secret/data/myapp/db", TOKEN, None);
    check_shape(&r);
    assert_eq!(r.status, 404);
    assert_ne!(r.json()["data"]["metadata"]["deletion_time"], "");
    let u = vault(
        &s,
        "POST",
        "/v1/secret/undelete/myapp/db",
        TOKEN,
        Some(json!({"versions": [3]})),
    );
    assert_eq!(u.status, 204, "{u:?}");
    let got = run_ok(sb.cmd().args(["get", "local://myapp/db#password"]));
    assert_eq!(stdout(&got).trim(), "canary-agent-pw-3");
    let x = vault(
        &s,
        "PUT",
        "/v1/secret/destroy/myapp/db",
        TOKEN,
        Some(json!({"versions": [1]})),
    );
    assert_eq!(x.status, 204, "{x:?}");
    let pinned = run(sb
        .cmd()
        .args(["get", "local://myapp/db#password?version=1"]));
    assert_eq!(pinned.status.code(), Some(3));
    let m = vault(&s, "GET", "/v1/secret/metadata/myapp/db", TOKEN, None);
    assert_eq!(m.json()["data"]["versions"]["1"]["destroyed"], true);
    assert_eq!(m.json()["data"]["current_version"], 3);
    let l = vault(&s, "LIST", "/v1/secret/metadata/myapp", TOKEN, None);
    assert_eq!(l.json()["data"]["keys"], json!(["db"]));

    // Errors: Vault's shape and status codes.
    for (method, path, token, status) in [
        (
            "GET",
            "/v1/secret/data/myapp/db",
            "wrong-token-wrong-token",
            403,
        ),
        ("GET", "/v1/secret/data/nope/here", TOKEN, 404),
        ("GET", "/v1/nomount/data/x", TOKEN, 404),
        ("COPY", "/v1/secret/data/myapp/db", TOKEN, 405),
        ("GET", "/v1/secret/data/myapp/db?version=x", TOKEN, 400),
    ] {
        let r = vault(&s, method, path, token, None);
        check_shape(&r);
        assert_eq!(r.status, status, "{method} {path}: {r:?}");
    }
    let bad = s.request(
        "POST",
        "/v1/secret/data/myapp/db",
        &[("X-Vault-Token", TOKEN)],
        b"{not json",
    );
    check_shape(&bad);
    assert_eq!(bad.status, 400);
    // (413 on a declared oversize body, in Vault's shape, is proven by
    // boundary_listeners.rs.)

    let log = s.log();
    s.stop();
    assert!(!log.contains("canary-agent-pw"), "a value leaked: {log}");
    assert!(!log.contains(TOKEN), "the token leaked: {log}");
}

#[test]
fn access_rules_cover_every_vault_action() {
    let sb = sandbox().with_env("SECREF_READER_TOKEN", READER);
    sb.set("local://app/db#password", "canary-agent-rule-1");
    sb.write(
        "secref.toml",
        r#"
[server.tokens.reader]
token_env = "SECREF_READER_TOKEN"
[[server.rules]]
principals = ["default"]
refs = ["*"]
[[server.rules]]
principals = ["reader"]
refs = ["openbao+kv2://secret/app/*"]
actions = ["read", "metadata_read", "list"]
"#,
    );
    let s = Served::start(&sb, TOKEN, &[]);
    let r = vault(&s, "GET", "/v1/secret/data/app/db", READER, None);
    assert_eq!(r.status, 200, "{r:?}\n{}", s.log());
    let r = vault(&s, "LIST", "/v1/secret/metadata/app", READER, None);
    assert_eq!(r.status, 200, "{r:?}");
    for (method, path, body) in [
        (
            "POST",
            "/v1/secret/data/app/db",
            json!({"data": {"password": "x"}}),
        ),
        ("DELETE", "/v1/secret/data/app/db", json!({})),
        ("POST", "/v1/secret/delete/app/db", json!({"versions": [1]})),
        ("PUT", "/v1/secret/destroy/app/db", json!({"versions": [1]})),
        ("DELETE", "/v1/secret/metadata/app/db", json!({})),
        (
            "POST",
            "/v1/secret/metadata/app/db",
            json!({"max_versions": 1}),
        ),
    ] {
        let r = vault(&s, method, path, READER, Some(body));
        check_shape(&r);
        assert_eq!(r.status, 403, "{method} {path}: {r:?}");
        assert_eq!(r.json(), json!({"errors": ["permission denied"]}));
    }
    let r = vault(&s, "GET", "/v1/secret/data/other/x", READER, None);
    assert_eq!(r.status, 403);
    // Nothing changed.
    let got = run_ok(sb.cmd().args(["get", "local://app/db#password"]));
    assert_eq!(stdout(&got).trim(), "canary-agent-rule-1");
    let m = vault(&s, "GET", "/v1/secret/metadata/app/db", TOKEN, None);
    assert_eq!(m.json()["data"]["current_version"], 1);
    s.stop();
}

/// A proxy `secref serve` whose `secret` mount reads `upstream` through the
/// `openbao+kv2://` provider, with the given cache settings.
fn proxy(upstream: &Served, cache: &str) -> (Sandbox, Served) {
    let sb = Sandbox::new(env!("CARGO_BIN_EXE_secref"));
    sb.write(
        "secref.toml",
        &format!(
            r#"
[cache]
{cache}
[server.vault.mounts.secret]
backend = "openbao+kv2://secret/{{path}}"
"#
        ),
    );
    let mut cmd = sb.cmd();
    cmd.env("SECREF_SERVE_TOKEN", TOKEN)
        .env("VAULT_ADDR", format!("http://{}", upstream.addr()))
        .env("VAULT_TOKEN", TOKEN);
    let s = Served::start_cmd(&sb, cmd, &[]);
    (sb, s)
}

fn version_of(r: &Reply) -> Value {
    r.json()["data"]["metadata"]["version"].clone()
}

#[test]
fn proxy_caches_upstream_reads_never_goes_back_a_version_and_invalidates() {
    let up_sb = sandbox();
    up_sb.set("local://app/api#token", "canary-agent-up-1");
    let up = Served::start(&up_sb, TOKEN, &[]);
    let (_psb, p) = proxy(&up, "ttl_seconds = 300");

    let r = vault(&p, "GET", "/v1/secret/data/app/api", TOKEN, None);
    check_shape(&r);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["data"]["data"]["token"], "canary-agent-up-1");
    assert_eq!(version_of(&r), 1);

    // A new upstream version: the proxy still answers from its cache...
    up_sb.set("local://app/api#token", "canary-agent-up-2");
    let r = vault(&p, "GET", "/v1/secret/data/app/api", TOKEN, None);
    assert_eq!(version_of(&r), 1, "served from the cache");
    // ...until it has seen version 2 (a pinned read): then a latest read
    // never answers the older cached version again (vault#28137).
    let r = vault(&p, "GET", "/v1/secret/data/app/api?version=2", TOKEN, None);
    assert_eq!(r.json()["data"]["data"]["token"], "canary-agent-up-2");
    let r = vault(&p, "GET", "/v1/secret/data/app/api", TOKEN, None);
    assert_eq!(version_of(&r), 2, "{r:?}");
    assert_eq!(r.json()["data"]["data"]["token"], "canary-agent-up-2");

    // Explicit invalidation by path.
    up_sb.set("local://app/api#token", "canary-agent-up-3");
    let r = vault(&p, "GET", "/v1/secret/data/app/api", TOKEN, None);
    assert_eq!(version_of(&r), 2);
    let i = vault(
        &p,
        "POST",
        "/v1/sys/secref/invalidate",
        TOKEN,
        Some(json!({"path": "secret/app/api"})),
    );
    assert_eq!(i.status, 204, "{i:?}");
    let r = vault(&p, "GET", "/v1/secret/data/app/api", TOKEN, None);
    assert_eq!(version_of(&r), 3);
    assert_eq!(r.json()["data"]["data"]["token"], "canary-agent-up-3");

    // Metadata reads through; a pinned deleted version is Vault's 404.
    let m = vault(&p, "GET", "/v1/secret/metadata/app/api", TOKEN, None);
    assert_eq!(m.status, 200, "{m:?}");
    assert_eq!(m.json()["data"]["current_version"], 3);
    run_ok(up_sb.cmd().args(["rm", "local://app/api?version=1"]));
    let r = vault(&p, "GET", "/v1/secret/data/app/api?version=1", TOKEN, None);
    check_shape(&r);
    assert_eq!(r.status, 404, "{r:?}");

    // The proxy is read-only: Vault's own error for that.
    let w = vault(
        &p,
        "POST",
        "/v1/secret/data/app/api",
        TOKEN,
        Some(json!({"data": {"token": "x"}})),
    );
    check_shape(&w);
    assert_eq!(w.status, 405);
    assert_eq!(
        w.json(),
        json!({"errors": ["cannot write to readonly storage"]})
    );
    // A wrong token at the proxy never reaches the cache.
    let r = vault(
        &p,
        "GET",
        "/v1/secret/data/app/api",
        "wrong-token-wrong-token",
        None,
    );
    assert_eq!(r.status, 403);

    let log = p.log() + &up.log();
    p.stop();
    up.stop();
    assert!(!log.contains("canary-agent-up"), "a value leaked: {log}");
}

#[test]
fn proxy_serves_stale_within_the_grace_only_while_upstream_is_down_then_fails_closed() {
    let up_sb = sandbox();
    up_sb.set("local://app/api#token", "canary-agent-grace");
    let up = Served::start(&up_sb, TOKEN, &[]);
    let (_psb, p) = proxy(&up, "ttl_seconds = 1\nstale_grace_seconds = 8");
    let r = vault(&p, "GET", "/v1/secret/data/app/api", TOKEN, None);
    assert_eq!(r.status, 200, "{r:?}");
    up.stop();
    // Past the TTL, upstream unreachable: the stale value, within the grace.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let r = vault(&p, "GET", "/v1/secret/data/app/api", TOKEN, None);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["data"]["data"]["token"], "canary-agent-grace");
    // After the grace: fail closed, retryable (503), never the old value.
    let mut last = r;
    for _ in 0..100 {
        if last.status != 200 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        last = vault(&p, "GET", "/v1/secret/data/app/api", TOKEN, None);
    }
    check_shape(&last);
    assert_eq!(last.status, 503, "{last:?}");
    assert!(!last.body.contains("canary-agent-grace"));
    p.stop();
}

#[test]
fn proxy_in_front_of_rusty_vault_kv1() {
    let (Ok(addr), Ok(token)) = (
        std::env::var("SECREF_TEST_VAULT_ADDR"),
        std::env::var("SECREF_TEST_VAULT_TOKEN"),
    ) else {
        eprintln!(
            "skipped: SECREF_TEST_VAULT_ADDR / SECREF_TEST_VAULT_TOKEN are not set (scripts/test.sh starts RustyVault and sets them)"
        );
        return;
    };
    // scripts/test.sh writes the KV v1 secret secret/myapp/api there.
    let sb = Sandbox::new(env!("CARGO_BIN_EXE_secref"));
    sb.write(
        "secref.toml",
        "[cache]\nttl_seconds = 300\n[server.vault.mounts.rv]\nbackend = \"openbao://secret/{path}\"\nkv_version = 1\n",
    );
    let mut cmd = sb.cmd();
    cmd.env("SECREF_SERVE_TOKEN", TOKEN)
        .env("VAULT_ADDR", &addr)
        .env("VAULT_TOKEN", &token);
    let p = Served::start_cmd(&sb, cmd, &[]);
    for _ in 0..2 {
        // The second read is answered from the proxy's cache.
        let r = vault(&p, "GET", "/v1/rv/myapp/api", TOKEN, None);
        check_shape(&r);
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json()["data"]["token"], "rv-canary-value-5e11");
        assert_eq!(r.json()["data"]["user"], "app");
    }
    let r = vault(&p, "GET", "/v1/rv/myapp/nope", TOKEN, None);
    assert_eq!(r.status, 404, "{r:?}");
    let w = vault(
        &p,
        "PUT",
        "/v1/rv/myapp/api",
        TOKEN,
        Some(json!({"token": "x"})),
    );
    assert_eq!(w.status, 405, "{w:?}");
    let log = p.log();
    p.stop();
    assert!(!log.contains("rv-canary-value"), "a value leaked: {log}");
    assert!(!log.contains(&token), "the upstream token leaked");
}

/// vaultrs, the Rust Vault client, against `secref serve`: reads what
/// `secref set` wrote, writes what `secref get` reads, versions, soft
/// delete, undelete, destroy, metadata and listing.
#[test]
fn vaultrs_reads_writes_and_manages_versions() {
    use std::collections::HashMap;
    use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
    use vaultrs::kv2;

    // reqwest (under vaultrs) wants a process-wide rustls provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sb = sandbox();
    sb.set("local://myapp/db#password", "canary-agent-rs-1");
    let s = Served::start(&sb, TOKEN, &[]);
    let client = VaultClient::new(
        VaultClientSettingsBuilder::default()
            .address(format!("http://{}", s.addr()))
            .token(TOKEN)
            .build()
            .unwrap(),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let got: HashMap<String, String> = kv2::read(&client, "secret", "myapp/db").await.unwrap();
        assert_eq!(got["password"], "canary-agent-rs-1");

        let data = HashMap::from([("token", "canary-agent-rs-2")]);
        let v = kv2::set(&client, "secret", "rs/app", &data).await.unwrap();
        assert_eq!(v.version, 1);
        let data = HashMap::from([("token", "canary-agent-rs-3")]);
        assert_eq!(
            kv2::set(&client, "secret", "rs/app", &data)
                .await
                .unwrap()
                .version,
            2
        );
        let got = run_ok(sb.cmd().args(["get", "local://rs/app#token"]));
        assert_eq!(stdout(&got).trim(), "canary-agent-rs-3");
        let old: HashMap<String, String> = kv2::read_version(&client, "secret", "rs/app", 1)
            .await
            .unwrap();
        assert_eq!(old["token"], "canary-agent-rs-2");

        kv2::delete_latest(&client, "secret", "rs/app")
            .await
            .unwrap();
        assert!(
            kv2::read::<HashMap<String, String>>(&client, "secret", "rs/app")
                .await
                .is_err()
        );
        kv2::undelete_versions(&client, "secret", "rs/app", vec![2])
            .await
            .unwrap();
        kv2::destroy_versions(&client, "secret", "rs/app", vec![1])
            .await
            .unwrap();
        let meta = kv2::read_metadata(&client, "secret", "rs/app")
            .await
            .unwrap();
        assert_eq!(meta.current_version, 2);
        assert!(meta.versions["1"].destroyed);
        assert_eq!(kv2::list(&client, "secret", "rs").await.unwrap(), ["app"]);
    });
    let got = run_ok(sb.cmd().args(["get", "local://rs/app#token"]));
    assert_eq!(stdout(&got).trim(), "canary-agent-rs-3");
    s.stop();
}

/// Reads through the Vault API land in the audit stream as the resolver's
/// own reads do: the event, the version, never the value.
#[test]
fn vault_api_reads_are_audited_without_values() {
    let sb = sandbox();
    sb.set("local://app/db#password", "canary-agent-audit");
    let audit = sb.path("audit.jsonl");
    sb.write(
        "secref.toml",
        &format!(
            "[audit]\nsink = \"file\"\npath = {:?}\n",
            audit.display().to_string()
        ),
    );
    let s = Served::start(&sb, TOKEN, &[]);
    let r = vault(&s, "GET", "/v1/secret/data/app/db", TOKEN, None);
    assert_eq!(r.status, 200, "{r:?}");
    let r = vault(&s, "GET", "/v1/secret/data/app/nope", TOKEN, None);
    assert_eq!(r.status, 404, "{r:?}");
    s.stop();
    let text = std::fs::read_to_string(&audit).unwrap_or_default();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2, "{text}");
    assert_eq!(events[0]["event_type"], "SECRET_READ");
    assert_eq!(events[0]["subject"], "default");
    assert_eq!(events[0]["kv_version"], "1");
    assert_eq!(events[1]["event_type"], "SECRET_ERROR");
    assert_eq!(events[1]["error_code"], "not_found");
    assert!(
        !text.contains("canary-agent-audit"),
        "a value leaked: {text}"
    );
}
