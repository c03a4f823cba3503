//! The Vault-compatible API of `secref serve`: raw answers compared with the
//! Vault API docs' shapes (golden files in `tests/fixtures/vault/`), then
//! secref's own `openbao+kv2://` provider against it, with canaries.

use std::net::SocketAddr;
use std::path::PathBuf;

use secref::config::Env;
use secref::providers::vault::VaultProvider;
use secref::providers::EnvProvider;
use secref::store::{Store, StoreKey};
use secref::{ErrorCode, Provider, Resolver, Secret, SecretRef};
use secref_server::{Server, ServerConfig};
use serde_json::Value;

const TOKEN: &str = "canary-server-token-6b1d2f0e";

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/vault")
}

fn golden(name: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Where free-form user data lives: only the type is compared there.
const FREE_FORM: &[&str] = &[
    "data.data",
    "data.metadata.custom_metadata",
    "data.custom_metadata",
];

/// Same keys and value types, recursively; values ignored.
fn assert_shape(actual: &Value, want: &Value, path: &str) {
    use Value::*;
    match (actual, want) {
        (Object(a), Object(w)) if FREE_FORM.contains(&path) => {
            let _ = (a, w);
        }
        (Object(a), Object(w)) if path == "data.versions" => {
            let sample = w.values().next().unwrap();
            for (k, v) in a {
                assert!(k.parse::<u64>().is_ok(), "{path}: version key {k}");
                assert_shape(v, sample, &format!("{path}.*"));
            }
        }
        (Object(a), Object(w)) => {
            let mut ak: Vec<&std::string::String> = a.keys().collect();
            let mut wk: Vec<&std::string::String> = w.keys().collect();
            ak.sort();
            wk.sort();
            assert_eq!(ak, wk, "keys at '{path}'");
            for (k, wv) in w {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                assert_shape(&a[k], wv, &p);
            }
        }
        (Array(a), Array(w)) => {
            if let (Some(x), Some(y)) = (a.first(), w.first()) {
                assert_shape(x, y, &format!("{path}[]"));
            }
        }
        (String(_), String(_)) | (Number(_), Number(_)) | (Bool(_), Bool(_)) | (Null, Null) => {}
        _ => panic!("type at '{path}': got {actual}, want like {want}"),
    }
}

async fn start() -> SocketAddr {
    let dir = Box::leak(Box::new(tempfile::tempdir().unwrap()));
    let store = Store::create(&dir.path().join("s.store"), &StoreKey::generate()).unwrap();
    let seed = std::fs::read_to_string(fixtures().join("seed.json")).unwrap();
    secref_testkit::vault_seed::seed_store(&store, &seed);
    let resolver = Resolver::builder()
        .provider(EnvProvider::new())
        .build()
        .unwrap();
    let server = Server::with_env(
        resolver,
        ServerConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            ..ServerConfig::default()
        },
        Secret::from(TOKEN),
        &Env::from_pairs(Vec::<(String, String)>::new()),
    )
    .unwrap()
    .with_local_store(Ok(store));
    let listener = server.bind().await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server.serve(listener, std::future::pending()));
    addr
}

async fn get(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    wrap: Option<&str>,
) -> (u16, Value) {
    let c = reqwest::Client::new();
    let mut rb = c.get(format!("http://{addr}/v1/{path}"));
    if let Some(t) = token {
        rb = rb.header("X-Vault-Token", t);
    }
    if let Some(w) = wrap {
        rb = rb.header("X-Vault-Wrap-TTL", w);
    }
    let resp = rb.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn answers_have_vaults_shapes() {
    let addr = start().await;
    let (s, body) = get(addr, "secret/data/myapp/api", Some(TOKEN), None).await;
    assert_eq!(s, 200);
    assert_shape(&body, &golden("kv2_read.json"), "");
    assert_eq!(body["data"]["metadata"]["version"], 5);
    assert_eq!(body["data"]["data"]["token"], "canary-kv2-v5-e4f0");

    let (s, body) = get(addr, "secret/data/myapp/api?version=2", Some(TOKEN), None).await;
    assert_eq!(s, 200);
    // The local store keeps text: a number written through the API reads
    // back as its JSON text.
    assert_eq!(body["data"]["data"]["port"], "5432");

    let (s, body) = get(addr, "secret/data/myapp/api?version=3", Some(TOKEN), None).await;
    assert_eq!(
        s, 404,
        "a deleted version is a 404 with metadata, as in Vault"
    );
    assert_shape(&body, &golden("kv2_deleted_404.json"), "");
    assert_ne!(body["data"]["metadata"]["deletion_time"], "");

    let (s, body) = get(addr, "secret/data/myapp/api?version=4", Some(TOKEN), None).await;
    assert_eq!(s, 404);
    assert_eq!(body["data"]["metadata"]["destroyed"], true);
    assert!(body["data"]["data"].is_null());

    let (s, body) = get(addr, "secret/metadata/myapp/api", Some(TOKEN), None).await;
    assert_eq!(s, 200);
    assert_shape(&body, &golden("kv2_metadata.json"), "");
    assert_eq!(body["data"]["current_version"], 5);
    assert_eq!(body["data"]["versions"]["4"]["destroyed"], true);

    let (s, body) = get(addr, "secret/data/myapp/api", Some(TOKEN), Some("60s")).await;
    assert_eq!(s, 200);
    assert_shape(&body, &golden("wrapped.json"), "");
    assert_eq!(body["wrap_info"]["creation_path"], "secret/data/myapp/api");
    assert_eq!(body["wrap_info"]["ttl"], 60);
    assert!(body["data"].is_null());

    for (path, token, status) in [
        ("secret/data/myapp/api", None, 403),
        (
            "secret/data/myapp/api",
            Some("wrong-token-wrong-token"),
            403,
        ),
        ("secret/data/nope/here", Some(TOKEN), 404),
        ("secret/data/myapp/api?version=9", Some(TOKEN), 404),
    ] {
        let (s, body) = get(addr, path, token, None).await;
        assert_eq!(s, status, "{path}");
        assert_shape(&body, &golden("error.json"), "");
    }
}

#[tokio::test]
async fn unwrap_is_single_use() {
    let addr = start().await;
    let (_, body) = get(
        addr,
        "secret/data/myapp/api?version=2",
        Some(TOKEN),
        Some("1m"),
    )
    .await;
    let wt = body["wrap_info"]["token"].as_str().unwrap().to_string();
    let c = reqwest::Client::new();
    let unwrap = || {
        c.post(format!("http://{addr}/v1/sys/wrapping/unwrap"))
            .header("X-Vault-Token", wt.clone())
            .send()
    };
    let first = unwrap().await.unwrap();
    assert_eq!(first.status().as_u16(), 200);
    let v: Value = first.json().await.unwrap();
    assert_shape(&v, &golden("kv2_read.json"), "");
    assert_eq!(v["data"]["data"]["token"], "canary-kv2-v2-51c7");
    let second = unwrap().await.unwrap();
    assert_eq!(second.status().as_u16(), 400);
    let v: Value = second.json().await.unwrap();
    assert_eq!(
        v["errors"][0],
        "wrapping token is not valid or does not exist"
    );
}

fn provider(addr: SocketAddr, token: &str) -> VaultProvider {
    VaultProvider::from_env(&Env::from_pairs([
        ("VAULT_ADDR", format!("http://{addr}")),
        ("VAULT_TOKEN", token.to_string()),
    ]))
    .unwrap()
}

async fn read(p: &VaultProvider, r: &str) -> secref::Result<secref::Resolved> {
    p.resolve_many(&[SecretRef::parse(r).unwrap()])
        .await?
        .pop()
        .unwrap()
}

#[tokio::test]
async fn the_rust_provider_against_the_server() {
    let capture = secref_testkit::capture::install();

    let addr = start().await;
    let p = provider(addr, TOKEN);
    let info = p.lookup_self().await.unwrap();
    assert_eq!(info.display_name, "secref-default");

    let mut seen = String::new();
    let got = read(&p, "openbao+kv2://secret/myapp/api#token?version=2")
        .await
        .unwrap();
    assert_eq!(got.secret.as_text().unwrap(), "canary-kv2-v2-51c7");
    assert_eq!(got.version.as_deref(), Some("2"));
    let latest = read(&p, "hashicorp+kv2://secret/myapp/api#token")
        .await
        .unwrap();
    assert_eq!(latest.secret.as_text().unwrap(), "canary-kv2-v5-e4f0");
    assert_eq!(latest.version.as_deref(), Some("5"));
    let whole = read(&p, "openbao+kv2://secret/myapp/api?version=2")
        .await
        .unwrap();
    assert_eq!(
        whole.secret.as_text().unwrap(),
        r#"{"port":"5432","token":"canary-kv2-v2-51c7"}"#
    );
    let port = read(&p, "openbao+kv2://secret/myapp/api#port?version=2")
        .await
        .unwrap();
    assert_eq!(port.secret.as_text().unwrap(), "5432");
    let wrapped = read(
        &p,
        "openbao+kv2://secret/myapp/api#token?version=1&wrap_ttl=30s",
    )
    .await
    .unwrap();
    assert_eq!(wrapped.secret.as_text().unwrap(), "canary-kv2-v1-3a9f");

    for (r, code) in [
        (
            "openbao+kv2://secret/myapp/api#token?version=3",
            ErrorCode::VersionDeleted,
        ),
        (
            "openbao+kv2://secret/myapp/api#token?version=4",
            ErrorCode::VersionDestroyed,
        ),
        (
            "openbao+kv2://secret/myapp/api#token?version=9",
            ErrorCode::NotFound,
        ),
        (
            "openbao+kv2://secret/myapp/api#nope",
            ErrorCode::FieldNotFound,
        ),
        ("openbao+kv2://secret/nope/here", ErrorCode::NotFound),
    ] {
        let e = read(&p, r).await.unwrap_err();
        assert_eq!(e.code(), code, "{r}: {e}");
        seen.push_str(&format!("{e:?} {e}"));
    }

    let m = p
        .metadata(&[SecretRef::parse("openbao+kv2://secret/myapp/api").unwrap()])
        .await
        .unwrap()
        .pop()
        .unwrap()
        .unwrap();
    assert_eq!(m.current_version.as_deref(), Some("5"));
    assert_eq!(m.versions.len(), 5);
    assert!(m.versions[2].deleted_at.is_some());
    assert!(m.versions[3].destroyed);
    assert_eq!(m.custom.get("owner").map(String::as_str), Some("team-a"));

    let bad = provider(addr, "canary-wrong-token-1f2e3d");
    let e = read(&bad, "openbao+kv2://secret/myapp/api#token")
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::PermissionDenied);
    seen.push_str(&format!("{e:?} {e} {p:?}"));

    let logs = capture.text();
    assert!(logs.contains("vault read"), "the capture works");
    for text in [&logs, &seen] {
        for canary in ["canary-kv2", "canary-server-token", "canary-wrong-token"] {
            secref_testkit::capture::assert_no_canary(text, canary);
        }
        assert!(!text.contains("hvs."), "a token leaked: {text}");
    }
}

/// What `secref get openbao+kv2://secret/myapp/api#token?version=2` does:
/// `Resolver::from_config` picks the Vault provider up from `VAULT_*`.
#[tokio::test]
async fn resolver_from_config_reads_kv2_from_the_server() {
    let addr = start().await;
    let mut cfg = secref::Config {
        env: Env::from_pairs([
            ("VAULT_ADDR", format!("http://{addr}")),
            ("VAULT_TOKEN", TOKEN.to_string()),
            ("SECREF_STORE", "/nonexistent/secref.store".to_string()),
        ]),
        ..secref::Config::default()
    };
    let resolver = Resolver::from_config(&cfg).unwrap();
    let v = resolver
        .resolve("openbao+kv2://secret/myapp/api#token?version=2")
        .await
        .unwrap();
    assert_eq!(v.as_text().unwrap(), "canary-kv2-v2-51c7");

    cfg.env.set("VAULT_VERIFY_SSL", "maybe");
    let e = Resolver::from_config(&cfg).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Config);
}
