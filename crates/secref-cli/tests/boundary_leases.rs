//! Issue 9 item 4 — one caller cannot lock out everyone: `secref serve`'s
//! lease and wrapping-token state is bounded per principal, resolving holds
//! nothing server-side, and `revoke:batch` obeys the `lease_revoke` rules
//! and lets a caller revoke only its own leases. Every test starts the built
//! binary with a real config file and talks HTTP to it on 127.0.0.1.

use base64::Engine as _;
use secref_testkit::cli::{feed_stdin, run_ok, stderr, Sandbox, Served};
use serde_json::{json, Value};

const TOKEN: &str = "boundary-default-token-0123";
const OTHER: &str = "boundary-other-token-4567";

/// A server with `server_toml` appended to a `[server]` table that names a
/// second token `other`; `env://APP_A` … `env://APP_D` hold values. The
/// sandbox is returned second so it outlives the server.
fn serve(server_toml: &str) -> (Served, Sandbox) {
    serve_with(server_toml, &[])
}

fn serve_with(server_toml: &str, env: &[(&str, &str)]) -> (Served, Sandbox) {
    let mut sb = Sandbox::new(env!("CARGO_BIN_EXE_secref")).with_env("OTHER_TOKEN", OTHER);
    for k in ["A", "B", "C", "D"] {
        sb = sb.with_env(&format!("APP_{k}"), &format!("value-{k}"));
    }
    for (k, v) in env {
        sb = sb.with_env(k, v);
    }
    let cfg = sb.write(
        "secref.toml",
        &format!(
            "[server]\n{server_toml}\n[server.tokens.other]\ntoken_env = \"OTHER_TOKEN\"\n{}",
            // `env://` is host-local: denied unless a rule names it.
            if server_toml.contains("[[server.rules]]") {
                ""
            } else {
                "[[server.rules]]\nprincipals = [\"*\"]\nrefs = [\"*\", \"env://APP_*\"]\n"
            }
        ),
    );
    // `secret/app/api` of the Vault API is this local store entry.
    run_ok(sb.cmd().arg("init"));
    let o = feed_stdin(sb.cmd().args(["set", "local://app/api#token"]), b"seeded");
    assert!(o.status.success(), "{}", stderr(&o));
    let served = Served::start(&sb, TOKEN, &["--config", cfg.to_str().unwrap()]);
    (served, sb)
}

fn call(s: &Served, path: &str, token: &str, body: Value) -> Value {
    let (status, text) = s.post(path, token, &body);
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// Resolves `refs` (one item each) as `token`; returns the answer's items.
fn resolve(s: &Served, token: &str, refs: &[&str], ttl: Option<u64>) -> Vec<Value> {
    let items: Vec<Value> = refs
        .iter()
        .enumerate()
        .map(|(i, r)| json!({"item_id": format!("item-{}", i + 1), "secret_ref": r}))
        .collect();
    let mut body = json!({
        "target_environment": "dev",
        "purpose": "secret.runtime_resolve",
        "items": items,
    });
    if let Some(t) = ttl {
        body["lease_ttl_seconds"] = json!(t);
    }
    let v = call(s, "/v1/secrets/resolve:batch", token, body);
    v["items"].as_array().unwrap().clone()
}

/// The lease ids of a successful resolve.
fn leases(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| {
            assert_eq!(i["result"], "allowed", "{i}");
            i["lease_id"].as_str().unwrap().to_string()
        })
        .collect()
}

fn revoke(s: &Served, token: &str, ids: &[String]) -> Vec<Value> {
    let items: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            json!({"item_id": format!("item-{}", i + 1), "lease_id": id, "reason": "job_completed"})
        })
        .collect();
    let body = json!({"purpose": "secret.lease_revoke", "items": items});
    let v = call(s, "/v1/leases/revoke:batch", token, body);
    v["items"].as_array().unwrap().clone()
}

fn code(item: &Value) -> &str {
    item["error"]["code"].as_str().unwrap_or_default()
}

#[test]
fn one_principal_at_its_quota_leaves_the_others_alone() {
    let (s, _sb) = serve("max_revoked_leases_per_principal = 3");
    let refs = ["env://APP_A", "env://APP_B", "env://APP_C", "env://APP_D"];
    let mine = leases(&resolve(&s, TOKEN, &refs, None));
    let out = revoke(&s, TOKEN, &mine);
    for item in &out[..3] {
        assert_eq!(item["result"], "allowed", "{item}");
        assert_eq!(item["status"], "revoked");
    }
    // The fourth revocation is over this caller's quota: refused, retryable.
    assert_eq!(out[3]["result"], "failed");
    assert_eq!(code(&out[3]), "RATE_LIMITED");
    assert_eq!(out[3]["error"]["retryable"], true);
    assert_eq!(out[3]["lease_id"], mine[3].as_str());

    // Another principal resolves and revokes up to its own quota as if
    // nothing happened.
    let theirs = leases(&resolve(&s, OTHER, &refs, None));
    for item in revoke(&s, OTHER, &theirs[..3]) {
        assert_eq!(item["result"], "allowed", "{item}");
    }
    // And the full caller still resolves: resolving never needs the table.
    assert_eq!(leases(&resolve(&s, TOKEN, &refs, Some(60))).len(), 4);
    s.stop();
}

#[test]
fn resolves_hold_nothing_on_the_server() {
    // A quota of one: had each resolve stored a lease, the table would be
    // full after the first.
    let (s, _sb) = serve("max_revoked_leases_per_principal = 1");
    let mut seen = std::collections::HashSet::new();
    for round in 0..100 {
        let ttl = (round % 2 == 0).then_some(86_400);
        let items = resolve(&s, TOKEN, &["env://APP_A", "env://APP_B"], ttl);
        for (item, want) in items.iter().zip(["value-A", "value-B"]) {
            assert_eq!(item["value"]["data"], want);
        }
        for id in leases(&items) {
            assert!(id.starts_with("lease-"), "{id}");
            // The reference is sealed inside: not in the id's bytes.
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&id["lease-".len()..])
                .unwrap();
            assert!(!raw.windows(4).any(|w| w == b"APP_"), "{id}");
            assert!(seen.insert(id), "lease ids are unique");
        }
    }
    // The one revocation slot is still free.
    let last: Vec<String> = seen.into_iter().take(1).collect();
    assert_eq!(revoke(&s, TOKEN, &last)[0]["result"], "allowed");
    s.stop();
}

#[test]
fn revoke_needs_lease_revoke_on_the_leases_reference() {
    let rules = r#"
[[server.rules]]
principals = ["default"]
refs = ["env://APP_A"]
actions = ["read"]

[[server.rules]]
principals = ["default"]
refs = ["env://APP_B"]
actions = ["read", "lease_revoke"]
"#;
    // Rules must follow the [server.tokens.other] table: put them last.
    let sb = Sandbox::new(env!("CARGO_BIN_EXE_secref"))
        .with_env("OTHER_TOKEN", OTHER)
        .with_env("APP_A", "value-A")
        .with_env("APP_B", "value-B");
    let cfg = sb.write(
        "secref.toml",
        &format!("[server]\n[server.tokens.other]\ntoken_env = \"OTHER_TOKEN\"\n{rules}"),
    );
    let s = Served::start(&sb, TOKEN, &["--config", cfg.to_str().unwrap()]);

    // What permission-check says …
    let check = call(
        &s,
        "/v1/secrets/permission-check:batch",
        TOKEN,
        json!({
            "target_environment": "dev",
            "purpose": "secret.permission_check",
            "items": [
                {"item_id": "a", "secret_ref": "env://APP_A", "action": "lease_revoke"},
                {"item_id": "b", "secret_ref": "env://APP_B", "action": "lease_revoke"},
            ],
        }),
    );
    assert_eq!(check["items"][0]["allowed"], false, "{check}");
    assert_eq!(check["items"][1]["allowed"], true, "{check}");

    // … is what revoke does.
    let ids = leases(&resolve(&s, TOKEN, &["env://APP_A", "env://APP_B"], None));
    let out = revoke(&s, TOKEN, &ids);
    assert_eq!(out[0]["result"], "denied", "{}", out[0]);
    assert_eq!(code(&out[0]), "PERMISSION_DENIED");
    assert_eq!(out[0]["error"]["decision_id"], "default-deny");
    assert_eq!(out[0]["lease_id"], ids[0].as_str());
    assert_eq!(out[1]["result"], "allowed", "{}", out[1]);
    assert_eq!(out[1]["status"], "revoked");
    // The refused lease was not revoked behind the answer: still denied,
    // not "already revoked".
    assert_eq!(code(&revoke(&s, TOKEN, &ids[..1])[0]), "PERMISSION_DENIED");
    s.stop();
}

#[test]
fn a_principal_revokes_only_its_own_leases() {
    let (s, _sb) = serve("");
    let ids = leases(&resolve(&s, TOKEN, &["env://APP_A"], None));
    // Someone else's lease does not exist for them, and stays live.
    let out = revoke(&s, OTHER, &ids);
    assert_eq!(out[0]["result"], "failed");
    assert_eq!(code(&out[0]), "NOT_FOUND");
    // A forged or edited id is not found either.
    let mut edited = ids[0].clone();
    let last = edited.pop().unwrap();
    edited.push(if last == 'A' { 'B' } else { 'A' });
    for forged in [
        edited.as_str(),
        "lease-00000000-0000-4000-8000-000000000000",
    ] {
        let out = revoke(&s, TOKEN, &[forged.to_string()]);
        assert_eq!(code(&out[0]), "NOT_FOUND", "{forged}");
    }
    // The owner revokes it, once.
    assert_eq!(revoke(&s, TOKEN, &ids)[0]["result"], "allowed");
    assert_eq!(code(&revoke(&s, TOKEN, &ids)[0]), "NOT_FOUND");
    s.stop();
}

#[test]
fn wrapping_token_quota_is_per_principal() {
    let (s, _sb) = serve("max_wraps_per_principal = 2");
    let wrapped = |token: &str| {
        s.request(
            "GET",
            "/v1/secret/data/app/api",
            &[("X-Vault-Token", token), ("X-Vault-Wrap-TTL", "60s")],
            b"",
        )
    };
    let first = wrapped(TOKEN);
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(wrapped(TOKEN).status, 200);
    let over = wrapped(TOKEN);
    assert_eq!(over.status, 503, "{}", over.body);
    assert!(over.json()["errors"][0]
        .as_str()
        .unwrap()
        .contains("wrapping"));
    // The other principal is not affected.
    assert_eq!(wrapped(OTHER).status, 200);
    // Unwrapping frees a slot of the caller who wrapped.
    let token = first.json()["wrap_info"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let un = s.request(
        "POST",
        "/v1/sys/wrapping/unwrap",
        &[("X-Vault-Token", &token)],
        b"",
    );
    assert_eq!(un.status, 200, "{}", un.body);
    assert_eq!(un.json()["data"]["data"]["token"], "seeded");
    assert_eq!(wrapped(TOKEN).status, 200);
    s.stop();
}
