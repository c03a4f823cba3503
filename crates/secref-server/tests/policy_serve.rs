//! `[policy]` applied to `secref serve` callers: the SecFlow API asks the
//! resolver on behalf of a per-request policy context whose subject is the
//! server's name for the caller and whose token facts come from headers.

use std::time::Duration;

use secref::policy::Policy;
use secref::providers::secflow::SecFlowProvider;
use secref::providers::FileProvider;
use secref::{CacheConfig, ErrorCode, Resolver, Secret, SecretRef};
use secref_server::{Server, ServerConfig};
use secref_testkit::secflow_files::{secflow_file_tree, CI_TOKEN_ENV};
use serde_json::{json, Value};

const CANARY: &str = "canary-policy-serve-5e1";
const TOKEN: &str = "serve-token-policy-0123456789";
const CI_TOKEN: &str = "ci-token-policy-0123456789ab";

struct Serve {
    url: String,
    _dir: tempfile::TempDir,
}

/// A server over files, whose resolver allows subject `ci` (the named
/// token) and no one else.
async fn start() -> Serve {
    let files = ["a", "b", "c", "d"].map(|name| (name, CANARY.as_bytes()));
    let (dir, toml_text) = secflow_file_tree(&files, "");
    let cfg = ServerConfig::from_table(Some(&toml::from_str(&toml_text).unwrap())).unwrap();
    let policy: toml::Table = toml::from_str(
        r#"
        grant_max_uses = 100
        [[rules]]
        subject = "ci"
        ref_prefix = "file://"
    "#,
    )
    .unwrap();
    let resolver = Resolver::builder()
        .provider(FileProvider::new())
        .cache(CacheConfig::disabled())
        .policy(Policy::from_table(&policy, &secref::config::Env::default()).unwrap())
        .build()
        .unwrap();
    let env = secref::config::Env::from_pairs([(CI_TOKEN_ENV, CI_TOKEN)]);
    let server = Server::with_env(resolver, cfg, Secret::from(TOKEN), &env).unwrap();
    let listener = server.bind().await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(server.serve(listener, std::future::pending()));
    Serve { url, _dir: dir }
}

fn r(s: &str) -> SecretRef {
    SecretRef::parse(s).unwrap()
}

/// One SecFlow batch request with extra headers; returns the items.
async fn batch(
    url: &str,
    op: &str,
    token: &str,
    headers: &[(&str, &str)],
    refs: &[&str],
) -> Vec<Value> {
    let items: Vec<Value> = refs
        .iter()
        .enumerate()
        .map(|(i, r)| json!({"item_id": format!("item-{i}"), "secret_ref": r}))
        .collect();
    let mut req = reqwest::Client::new()
        .post(format!("{url}/v1/secrets/{op}:batch"))
        .bearer_auth(token)
        .json(&json!({"request_id":"r","trace_id":"t","target_environment":"dev","items":items}));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    body["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn the_policy_allows_one_subject_and_denies_another() {
    let serve = start().await;
    // Through the SecFlow SDK client: ci reads, the default token is denied.
    let ci = SecFlowProvider::new(
        &serve.url,
        Secret::from(CI_TOKEN),
        "dev",
        Duration::from_secs(5),
    )
    .unwrap();
    let out = secref::Provider::resolve_many(&ci, &[r("secret://dev/app/token/a")])
        .await
        .unwrap();
    assert_eq!(
        out[0].as_ref().unwrap().secret.expose_bytes(),
        CANARY.as_bytes()
    );
    let default = SecFlowProvider::new(
        &serve.url,
        Secret::from(TOKEN),
        "dev",
        Duration::from_secs(5),
    )
    .unwrap();
    let out = secref::Provider::resolve_many(&default, &[r("secret://dev/app/token/a")])
        .await
        .unwrap();
    let e = out[0].as_ref().unwrap_err();
    assert_eq!(e.code(), ErrorCode::PermissionDenied);
    assert!(!format!("{e:?} {e}").contains(CANARY));

    // On the wire: a `denied` item with the code and the policy's reason,
    // and no value.
    let items = batch(
        &serve.url,
        "resolve",
        TOKEN,
        &[],
        &["secret://dev/app/token/b"],
    )
    .await;
    assert_eq!(items[0]["result"], "denied", "{items:?}");
    assert_eq!(items[0]["error"]["code"], "PERMISSION_DENIED");
    assert_eq!(items[0]["error"]["decision_id"], "policy-DENY");
    assert!(items[0].get("value").is_none());
    // A header cannot claim another subject.
    let items = batch(
        &serve.url,
        "resolve",
        TOKEN,
        &[("x-subject", "ci")],
        &["secret://dev/app/token/b"],
    )
    .await;
    assert_eq!(items[0]["result"], "denied");
    // Metadata and validate are enforced too (action metadata_read).
    for op in ["metadata", "validate"] {
        let items = batch(&serve.url, op, TOKEN, &[], &["secret://dev/app/token/a"]).await;
        assert_eq!(items[0]["result"], "denied", "{op}: {items:?}");
        let items = batch(&serve.url, op, CI_TOKEN, &[], &["secret://dev/app/token/a"]).await;
        assert_eq!(items[0]["result"], "allowed", "{op}: {items:?}");
    }
}

#[tokio::test]
async fn token_facts_come_from_headers_and_a_jti_counts_once_per_request() {
    let serve = start().await;
    // A token for another audience is refused.
    let items = batch(
        &serve.url,
        "resolve",
        CI_TOKEN,
        &[("x-aud", "someone.else")],
        &["secret://dev/app/token/a"],
    )
    .await;
    assert_eq!(items[0]["result"], "denied", "{items:?}");
    assert_eq!(
        items[0]["error"]["decision_id"],
        "policy-SECRET_AUTHZ_FAILED"
    );
    // Two new grants in one request under one jti: both allowed.
    let jti = [("x-jti", "jti-1"), ("x-aud", "crud.secrets")];
    let items = batch(
        &serve.url,
        "resolve",
        CI_TOKEN,
        &jti,
        &["secret://dev/app/token/b", "secret://dev/app/token/c"],
    )
    .await;
    assert!(items.iter().all(|i| i["result"] == "allowed"), "{items:?}");
    // The same jti on a later request that needs a new grant: a replay.
    let items = batch(
        &serve.url,
        "resolve",
        CI_TOKEN,
        &jti,
        &["secret://dev/app/token/d"],
    )
    .await;
    assert_eq!(items[0]["result"], "denied", "{items:?}");
    // Existing grants keep working under it.
    let items = batch(
        &serve.url,
        "resolve",
        CI_TOKEN,
        &jti,
        &["secret://dev/app/token/b"],
    )
    .await;
    assert_eq!(items[0]["result"], "allowed", "{items:?}");
}

// ---- The Vault API ------------------------------------------------------------

/// The Vault API over a one-secret store, whose resolver's policy allows
/// `ci` on `secret/app/` (reads there wrapped for 30 s) and no one else.
async fn start_vault() -> String {
    let cfg = ServerConfig::from_table(Some(
        &toml::from_str("bind = '127.0.0.1:0'\n[tokens.ci]\ntoken_env = 'CI_TOK'\n").unwrap(),
    ))
    .unwrap();
    let policy: toml::Table = toml::from_str(
        r#"
        grant_max_uses = 100
        [[rules]]
        subject = "ci"
        ref_prefix = "openbao+kv2://secret/app/wrapped"
        wrap_ttl_seconds = 30
        [[rules]]
        subject = "ci"
        ref_prefix = "openbao+kv2://secret/app/"
    "#,
    )
    .unwrap();
    let resolver = Resolver::builder()
        .provider(FileProvider::new())
        .policy(Policy::from_table(&policy, &secref::config::Env::default()).unwrap())
        .build()
        .unwrap();
    let env = secref::config::Env::from_pairs([(CI_TOKEN_ENV, CI_TOKEN)]);
    let server = Server::with_env(resolver, cfg, Secret::from(TOKEN), &env).unwrap();
    let seed = format!(
        r#"{{"secret/app/db": {{"versions": [{{"data": {{"password": "{CANARY}"}}}}]}},
            "secret/app/wrapped": {{"versions": [{{"data": {{"password": "{CANARY}"}}}}]}}}}"#
    );
    // A real local store (kept for the test process's life).
    let dir = Box::leak(Box::new(tempfile::tempdir().unwrap()));
    let store = secref::store::Store::create(
        &dir.path().join("s.store"),
        &secref::store::StoreKey::generate(),
    )
    .unwrap();
    secref_testkit::vault_seed::seed_store(&store, &seed);
    let server = server.with_local_store(Ok(store));
    let router = server.layered(secref_server::vault::router(server.state().clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

async fn vault_get(url: &str, path: &str, token: &str) -> (u16, String) {
    let resp = reqwest::Client::new()
        .get(format!("{url}/v1/{path}"))
        .header("x-vault-token", token)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn the_vault_api_applies_the_policy_and_its_wrap_obligation() {
    let url = start_vault().await;
    let (status, body) = vault_get(&url, "secret/data/app/db", CI_TOKEN).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(CANARY));
    let (status, body) = vault_get(&url, "secret/metadata/app/db", CI_TOKEN).await;
    assert_eq!(status, 200, "{body}");
    // The default token: Vault's 403, no value, for data and metadata.
    for path in ["secret/data/app/db", "secret/metadata/app/db"] {
        let (status, body) = vault_get(&url, path, TOKEN).await;
        assert_eq!(status, 403, "{path}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({"errors": ["permission denied"]})
        );
    }
    // The wrap obligation: ci gets a wrapping token, not the data.
    let (status, body) = vault_get(&url, "secret/data/app/wrapped", CI_TOKEN).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        !body.contains(CANARY),
        "the obligated read was answered unwrapped"
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["wrap_info"]["ttl"], 30, "{v}");
}

#[tokio::test]
async fn a_client_side_wrap_obligation_reaches_the_real_vault_provider() {
    let capture = secref_testkit::capture::install();
    let url = start_vault().await;
    let vault =
        secref::providers::vault::VaultProvider::from_env(&secref::config::Env::from_pairs([
            ("VAULT_ADDR", url.as_str()),
            ("VAULT_TOKEN", CI_TOKEN),
        ]))
        .unwrap();
    let policy: toml::Table = toml::from_str(
        r#"
        [[rules]]
        subject = "svc"
        ref_prefix = "openbao+kv2://secret/app/db"
        wrap_ttl_seconds = 20
    "#,
    )
    .unwrap();
    let client = Resolver::builder()
        .provider(vault)
        .policy(Policy::from_table(&policy, &secref::config::Env::default()).unwrap())
        .build()
        .unwrap();
    let got = client
        .read("openbao+kv2://secret/app/db#password")
        .as_(&secref::policy::Context::for_subject("svc"))
        .await
        .unwrap();
    assert_eq!(got.as_text().unwrap(), CANARY);
    let logs = strip_ansi(&capture.text());
    // The provider read with X-Vault-Wrap-TTL and unwrapped the answer.
    assert!(logs.contains("wrapped=true"), "{logs}");
    secref_testkit::capture::assert_no_canary(&logs, CANARY);
    secref_testkit::capture::assert_no_canary(&logs, CI_TOKEN);
}

/// The captured log without terminal colour codes.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
