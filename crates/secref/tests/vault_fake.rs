#![cfg(feature = "vault")]
//! The Vault provider against a small in-process fake that answers with the
//! JSON shapes of the Vault API docs: KV v2 versions (deleted, destroyed),
//! KV v1, AppRole login, renew-self, lookup-self, response wrapping, leases,
//! error bodies and standby redirects. Edge cases a real server cannot be
//! made to produce on demand live here; `vault_rustyvault.rs` runs against
//! a real server.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use secref::config::Env;
use secref::providers::vault::VaultProvider;
use secref::{ErrorCode, Provider, Resolver, SecretRef};
use serde_json::{json, Value};

const ROOT: &str = "canary-root-token-7d1e";
const ROLE_ID: &str = "role-1234";
const SECRET_ID: &str = "canary-secret-id-93ab";
const VALUE: &str = "canary-value-c0ffee";

#[derive(Default)]
struct Fake {
    tokens: Mutex<Vec<String>>,
    wraps: Mutex<HashMap<String, Value>>,
    logins: AtomicUsize,
    renews: AtomicUsize,
    lookups: AtomicUsize,
    refuse_renew: std::sync::atomic::AtomicBool,
    login_ttl: AtomicUsize,
    seq: AtomicUsize,
    seen: Mutex<Vec<String>>,
    namespaces: Mutex<Vec<String>>,
    /// Answer every `status/*` path with this status (error mapping tests).
    redirect_to: Mutex<Option<String>>,
}

fn vault_error(status: StatusCode, msg: &str) -> Response {
    (status, axum::Json(json!({ "errors": [msg] }))).into_response()
}

fn ok(body: Value) -> Response {
    axum::Json(body).into_response()
}

fn envelope(data: Value) -> Value {
    json!({
        "request_id": "req-1", "lease_id": "", "renewable": false, "lease_duration": 0,
        "data": data, "wrap_info": null, "warnings": null, "auth": null, "mount_type": "kv"
    })
}

fn kv2_version(version: u64) -> (StatusCode, Value) {
    let shown = if version == 0 { 5 } else { version };
    let meta = |deleted: &str, destroyed: bool| {
        json!({ "created_time": "2024-01-01T00:00:00Z", "custom_metadata": {"owner": "team-a"},
                "deletion_time": deleted, "destroyed": destroyed, "version": shown })
    };
    match version {
        1 => (
            StatusCode::OK,
            envelope(json!({ "data": {"token": "v1-value"}, "metadata": meta("", false) })),
        ),
        2 => (
            StatusCode::NOT_FOUND,
            envelope(json!({ "data": null, "metadata": meta("2024-02-01T00:00:00Z", false) })),
        ),
        3 => (
            StatusCode::NOT_FOUND,
            envelope(json!({ "data": null, "metadata": meta("", true) })),
        ),
        // A 200 that carries a deleted version (some proxies do this).
        4 => (
            StatusCode::OK,
            envelope(json!({ "data": null, "metadata": meta("2024-02-02T00:00:00Z", false) })),
        ),
        _ => (
            StatusCode::OK,
            envelope(json!({
                "data": {"token": VALUE, "port": 5432, "nested": {"a": [1, true]}},
                "metadata": meta("", false)
            })),
        ),
    }
}

impl Fake {
    fn new_token(&self) -> String {
        let t = format!(
            "canary-client-token-{}",
            self.seq.fetch_add(1, Ordering::SeqCst)
        );
        self.tokens.lock().unwrap().push(t.clone());
        t
    }

    fn authed(&self, h: &HeaderMap) -> Option<String> {
        let t = h.get("x-vault-token")?.to_str().ok()?.to_string();
        (t == ROOT || self.tokens.lock().unwrap().contains(&t)).then_some(t)
    }

    fn auth_block(&self, token: String) -> Value {
        json!({ "request_id": "r", "lease_id": "", "renewable": false, "lease_duration": 0, "data": null,
                "wrap_info": null, "warnings": null,
                "auth": { "client_token": token, "accessor": "acc", "policies": ["default"],
                          "token_policies": ["default"], "metadata": {"role_name": "app"},
                          "lease_duration": self.login_ttl.load(Ordering::SeqCst), "renewable": true,
                          "entity_id": "", "token_type": "service", "orphan": true } })
    }

    fn handle(&self, method: &Method, uri: &Uri, h: &HeaderMap, body: &Bytes) -> Response {
        let path = uri.path().trim_start_matches("/v1/").to_string();
        self.seen
            .lock()
            .unwrap()
            .push(format!("{method} {}", uri.path_and_query().unwrap()));
        if let Some(ns) = h.get("x-vault-namespace").and_then(|v| v.to_str().ok()) {
            self.namespaces.lock().unwrap().push(ns.to_string());
        }
        let query = uri.query().unwrap_or("");
        if let Some(target) = self.redirect_to.lock().unwrap().clone() {
            if path.starts_with("secret/") {
                return (
                    StatusCode::TEMPORARY_REDIRECT,
                    [(
                        "location",
                        format!("{target}{}", uri.path_and_query().unwrap()),
                    )],
                )
                    .into_response();
            }
        }
        if path == "auth/approle/login" {
            let b: Value = serde_json::from_slice(body).unwrap_or_default();
            if b["role_id"] == ROLE_ID && b["secret_id"] == SECRET_ID {
                self.logins.fetch_add(1, Ordering::SeqCst);
                return ok(self.auth_block(self.new_token()));
            }
            return vault_error(StatusCode::BAD_REQUEST, "invalid role or secret ID");
        }
        if path == "sys/wrapping/unwrap" {
            let t = h
                .get("x-vault-token")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            return match self.wraps.lock().unwrap().remove(t) {
                Some(v) => ok(v),
                None => vault_error(
                    StatusCode::BAD_REQUEST,
                    "wrapping token is not valid or does not exist",
                ),
            };
        }
        let Some(token) = self.authed(h) else {
            return vault_error(StatusCode::FORBIDDEN, "permission denied");
        };
        let answer = match path.as_str() {
            "auth/token/lookup-self" => {
                self.lookups.fetch_add(1, Ordering::SeqCst);
                return ok(envelope(
                    json!({ "id": token, "display_name": "approle", "policies": ["default"],
                                           "ttl": 3600, "renewable": true, "type": "service" }),
                ));
            }
            "auth/token/renew-self" => {
                self.renews.fetch_add(1, Ordering::SeqCst);
                if self.refuse_renew.load(Ordering::SeqCst) {
                    return vault_error(StatusCode::FORBIDDEN, "permission denied");
                }
                return ok(self.auth_block(token));
            }
            "sys/leases/renew" => {
                let b: Value = serde_json::from_slice(body).unwrap_or_default();
                return if b["lease_id"] == "database/creds/app/abc" {
                    ok(
                        json!({ "lease_id": "database/creds/app/abc", "renewable": true,
                               "lease_duration": b["increment"].as_u64().unwrap_or(3600) }),
                    )
                } else {
                    vault_error(StatusCode::BAD_REQUEST, "lease not found")
                };
            }
            "sys/leases/revoke" => {
                let b: Value = serde_json::from_slice(body).unwrap_or_default();
                return if b["lease_id"] == "database/creds/app/abc" {
                    StatusCode::NO_CONTENT.into_response()
                } else {
                    vault_error(StatusCode::BAD_REQUEST, "invalid lease")
                };
            }
            "secret/data/myapp/api" => {
                let v = query
                    .strip_prefix("version=")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                kv2_version(v)
            }
            "secret/metadata/myapp/api" => (
                StatusCode::OK,
                envelope(json!({
                    "cas_required": false, "created_time": "2024-01-01T00:00:00Z", "current_version": 5,
                    "custom_metadata": {"owner": "team-a", "tier": 1}, "delete_version_after": "0s",
                    "max_versions": 0, "oldest_version": 0, "updated_time": "2024-03-01T00:00:00Z",
                    "versions": {
                        "10": {"created_time": "2024-03-01T00:00:00Z", "deletion_time": "", "destroyed": false},
                        "1": {"created_time": "2024-01-01T00:00:00Z", "deletion_time": "", "destroyed": false},
                        "2": {"created_time": "2024-01-02T00:00:00Z", "deletion_time": "2024-02-01T00:00:00Z", "destroyed": false},
                        "3": {"created_time": "2024-01-03T00:00:00Z", "deletion_time": "", "destroyed": true}
                    }
                })),
            ),
            "kv1/app/db" => (
                StatusCode::OK,
                json!({
                    "request_id": "r", "lease_id": "", "renewable": false, "lease_duration": 2764800,
                    "data": {"password": VALUE, "user": "app"}, "wrap_info": null, "warnings": null, "auth": null
                }),
            ),
            "database/creds/app" => (
                StatusCode::OK,
                json!({
                    "request_id": "r", "lease_id": "database/creds/app/abc", "renewable": true, "lease_duration": 3600,
                    "data": {"password": VALUE, "username": "v-app"}, "wrap_info": null, "warnings": null, "auth": null
                }),
            ),
            "status/429" => return vault_error(StatusCode::TOO_MANY_REQUESTS, "rate limited"),
            "status/503" => return vault_error(StatusCode::SERVICE_UNAVAILABLE, "Vault is sealed"),
            "status/500" => return (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
            "secret/data/denied" => return vault_error(StatusCode::FORBIDDEN, "permission denied"),
            _ => return vault_error(StatusCode::NOT_FOUND, ""),
        };
        let (status, body) = answer;
        if let Some(ttl) = h.get("x-vault-wrap-ttl") {
            if status == StatusCode::OK {
                let wt = format!(
                    "canary-wrapping-token-{}",
                    self.seq.fetch_add(1, Ordering::SeqCst)
                );
                self.wraps.lock().unwrap().insert(wt.clone(), body);
                let creation_path =
                    if path == "secret/data/myapp/api" && query.contains("version=9") {
                        "secret/data/elsewhere".to_string()
                    } else {
                        path.clone()
                    };
                return ok(
                    json!({ "request_id": "", "lease_id": "", "renewable": false, "lease_duration": 0,
                    "data": null, "warnings": null, "auth": null,
                    "wrap_info": { "token": wt, "accessor": "wacc", "ttl": ttl.to_str().unwrap().trim_end_matches('s').parse::<u64>().unwrap_or(60),
                                   "creation_time": "2024-01-01T00:00:00Z", "creation_path": creation_path,
                                   "wrapped_accessor": "" } }),
                );
            }
        }
        (status, axum::Json(body)).into_response()
    }
}

async fn start(fake: Arc<Fake>) -> SocketAddr {
    let app = axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let fake = fake.clone();
            async move { fake.handle(&method, &uri, &headers, &body) }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn token_env(addr: SocketAddr) -> Env {
    Env::from_pairs([
        ("VAULT_ADDR", format!("http://{addr}")),
        ("VAULT_TOKEN", ROOT.to_string()),
    ])
}

fn approle_env(addr: SocketAddr) -> Env {
    Env::from_pairs([
        ("VAULT_ADDR", format!("http://{addr}")),
        ("VAULT_ROLE_ID", ROLE_ID.to_string()),
        ("VAULT_SECRET_ID", SECRET_ID.to_string()),
    ])
}

async fn read(p: &VaultProvider, r: &str) -> secref::Result<secref::Resolved> {
    let r = SecretRef::parse(r)?;
    p.resolve_many(&[r]).await?.pop().unwrap()
}

fn assert_clean(text: &str) {
    for canary in [
        "canary-root",
        "canary-secret-id",
        "canary-value",
        "canary-client-token",
        "canary-wrapping",
    ] {
        secref_testkit::capture::assert_no_canary(text, canary);
    }
}

#[tokio::test]
async fn kv2_latest_pinned_and_fields() {
    let fake = Arc::new(Fake::default());
    let addr = start(fake.clone()).await;
    let p = VaultProvider::from_env(&token_env(addr)).unwrap();

    let got = read(&p, "openbao+kv2://secret/myapp/api#token")
        .await
        .unwrap();
    assert_eq!(got.secret.as_text().unwrap(), VALUE);
    assert_eq!(got.version.as_deref(), Some("5"));
    assert!(got.lease.is_none());

    let port = read(&p, "hashicorp+kv2://secret/myapp/api#port")
        .await
        .unwrap();
    assert_eq!(port.secret.as_text().unwrap(), "5432");
    let nested = read(&p, "openbao+kv2://secret/myapp/api#nested")
        .await
        .unwrap();
    assert_eq!(nested.secret.as_text().unwrap(), r#"{"a":[1,true]}"#);
    let whole = read(&p, "openbao+kv2://secret/myapp/api").await.unwrap();
    let v: Value = serde_json::from_slice(whole.secret.expose_bytes()).unwrap();
    assert_eq!(v["token"], VALUE);

    let pinned = read(&p, "openbao+kv2://secret/myapp/api#token?version=1")
        .await
        .unwrap();
    assert_eq!(pinned.secret.as_text().unwrap(), "v1-value");
    assert_eq!(pinned.version.as_deref(), Some("1"));

    let e = read(&p, "openbao+kv2://secret/myapp/api#nope")
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::FieldNotFound);
    assert_clean(&format!("{e:?} {e}"));

    // The mount appears once (the reference SDK asks for secret/data/secret/…).
    let seen = fake.seen.lock().unwrap().clone();
    assert!(
        seen.contains(&"GET /v1/secret/data/myapp/api?version=1".to_string()),
        "{seen:?}"
    );
    assert!(!seen.iter().any(|s| s.contains("secret/data/secret")));
}

#[tokio::test]
async fn kv2_deleted_and_destroyed_versions() {
    let addr = start(Arc::new(Fake::default())).await;
    let p = VaultProvider::from_env(&token_env(addr)).unwrap();
    let e = read(&p, "openbao+kv2://secret/myapp/api#token?version=2")
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::VersionDeleted, "{e}");
    assert!(!e.retryable());
    let e = read(&p, "openbao+kv2://secret/myapp/api#token?version=3")
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::VersionDestroyed, "{e}");
    let e = read(&p, "openbao+kv2://secret/myapp/api#token?version=4")
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        ErrorCode::VersionDeleted,
        "200 with deletion_time: {e}"
    );
    let e = read(&p, "openbao+kv2://secret/nothing/here")
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
    assert_eq!(e.reference(), Some("openbao+kv2://secret/nothing/here"));
}

#[tokio::test]
async fn kv2_metadata() {
    let addr = start(Arc::new(Fake::default())).await;
    let p = VaultProvider::from_env(&token_env(addr)).unwrap();
    let r = SecretRef::parse("openbao+kv2://secret/myapp/api").unwrap();
    let m = p.metadata(&[r]).await.unwrap().pop().unwrap().unwrap();
    assert_eq!(m.current_version.as_deref(), Some("5"));
    let order: Vec<&str> = m.versions.iter().map(|v| v.version.as_str()).collect();
    assert_eq!(order, ["1", "2", "3", "10"]);
    assert_eq!(
        m.versions[1].deleted_at.as_deref(),
        Some("2024-02-01T00:00:00Z")
    );
    assert!(m.versions[2].destroyed);
    assert_eq!(m.custom.get("owner").map(String::as_str), Some("team-a"));
    assert_eq!(m.custom.get("tier").map(String::as_str), Some("1"));
    let v1 = SecretRef::parse("openbao://kv1/app/db").unwrap();
    let e = p.metadata(&[v1]).await.unwrap().pop().unwrap().unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unsupported);
}

#[tokio::test]
async fn kv1_reads_and_leases() {
    let fake = Arc::new(Fake::default());
    let addr = start(fake.clone()).await;
    let p = VaultProvider::from_env(&token_env(addr)).unwrap();
    let got = read(&p, "openbao://kv1/app/db#password").await.unwrap();
    assert_eq!(got.secret.as_text().unwrap(), VALUE);
    assert!(got.version.is_none());
    assert!(got.lease.is_none(), "a KV v1 TTL hint is not a lease");
    let e = read(&p, "openbao://kv1/app/db#password?version=1")
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidReference);
    let e = read(&p, "openbao://kv1/app/db?foo=1").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidReference);

    let dynamic = read(&p, "openbao://database/creds/app#password")
        .await
        .unwrap();
    let lease = dynamic.lease.clone().unwrap();
    assert_eq!(lease.id, "database/creds/app/abc");
    assert_eq!(lease.ttl, Some(std::time::Duration::from_secs(3600)));
    assert!(lease.renewable);
    assert!(dynamic.expires_at.is_some());

    let renewed = p
        .renew_lease(&lease.id, Some(std::time::Duration::from_secs(600)))
        .await
        .unwrap();
    assert_eq!(renewed.ttl, Some(std::time::Duration::from_secs(600)));
    assert!(renewed.renewable);
    let e = p.renew_lease("other", None).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Usage);

    let out = p
        .revoke_leases(
            &["database/creds/app/abc".to_string(), "other".to_string()],
            secref::provider::RevokeReason::JobCompleted,
        )
        .await
        .unwrap();
    assert_eq!(out[0].as_ref().unwrap().status, "revoked");
    assert_eq!(out[1].as_ref().unwrap_err().code(), ErrorCode::Usage);
    assert!(fake
        .seen
        .lock()
        .unwrap()
        .contains(&"PUT /v1/sys/leases/revoke".to_string()));
}

#[tokio::test]
async fn wrapping_per_ref_and_global() {
    let fake = Arc::new(Fake::default());
    let addr = start(fake.clone()).await;
    let p = VaultProvider::from_env(&token_env(addr)).unwrap();
    let got = read(&p, "openbao+kv2://secret/myapp/api#token?wrap_ttl=60s")
        .await
        .unwrap();
    assert_eq!(got.secret.as_text().unwrap(), VALUE);
    assert_eq!(got.version.as_deref(), Some("5"));
    assert!(
        fake.wraps.lock().unwrap().is_empty(),
        "the wrapping token was used once"
    );
    assert!(fake
        .seen
        .lock()
        .unwrap()
        .contains(&"POST /v1/sys/wrapping/unwrap".to_string()));

    // A wrapping token created for another path is refused, never unwrapped.
    let e = read(
        &p,
        "openbao+kv2://secret/myapp/api#token?version=9&wrap_ttl=60s",
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), ErrorCode::PermissionDenied);
    assert_clean(&format!("{e:?}"));

    let e = read(&p, "openbao+kv2://secret/myapp/api#token?wrap_ttl=soon")
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidReference);

    let mut env = token_env(addr);
    env.set("VAULT_WRAP_TTL", "2m");
    let g = VaultProvider::from_env(&env).unwrap();
    let got = read(&g, "openbao://kv1/app/db#password").await.unwrap();
    assert_eq!(got.secret.as_text().unwrap(), VALUE);
    // Wrapped errors are not wrapped: a 404 stays a 404.
    let e = read(&g, "openbao+kv2://secret/myapp/api#token?version=3")
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::VersionDestroyed);
}

#[tokio::test]
async fn error_mapping() {
    let addr = start(Arc::new(Fake::default())).await;
    let p = VaultProvider::from_env(&token_env(addr)).unwrap();
    let e = read(&p, "openbao+kv2://secret/denied").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::PermissionDenied);
    assert!(e.message().contains("permission denied"), "{e}");
    // Only the retryable item failed, others did not: item-level.
    let refs = [
        SecretRef::parse("openbao://status/429").unwrap(),
        SecretRef::parse("openbao://kv1/app/db#user").unwrap(),
    ];
    let out = p.resolve_many(&refs).await.unwrap();
    let e = out[0].as_ref().unwrap_err();
    assert_eq!(e.code(), ErrorCode::RateLimited);
    assert!(e.retryable());
    assert_eq!(out[1].as_ref().unwrap().secret.as_text().unwrap(), "app");
    // Everything failed retryably: the backend is down, request-level.
    let e = p
        .resolve_many(&[SecretRef::parse("openbao://status/503").unwrap()])
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::BackendUnavailable);
    assert!(e.retryable() && e.hint().unwrap().contains("sealed"));
    let e = p
        .resolve_many(&[SecretRef::parse("openbao://status/500").unwrap()])
        .await
        .unwrap_err();
    assert!(e.retryable());

    let mut env = token_env(addr);
    env.set("VAULT_TOKEN", "canary-root-token-wrong");
    let bad = VaultProvider::from_env(&env).unwrap();
    let e = bad.lookup_self().await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unauthenticated);
    let e = read(&bad, "openbao://kv1/app/db#user").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::PermissionDenied);
    assert_clean(&format!("{e:?} {e}"));

    // Nothing listens: connection failures are retryable.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let p = VaultProvider::from_env(&token_env(closed)).unwrap();
    let e = p
        .resolve_many(&[SecretRef::parse("openbao://kv1/app/db").unwrap()])
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::BackendUnavailable);
    assert!(e.retryable());
}

#[tokio::test]
async fn approle_login_is_single_flight_and_renews() {
    let fake = Arc::new(Fake::default());
    fake.login_ttl.store(3600, Ordering::SeqCst);
    let addr = start(fake.clone()).await;
    let p = VaultProvider::from_env(&approle_env(addr)).unwrap();
    let refs: Vec<SecretRef> = (0..16)
        .map(|_| SecretRef::parse("openbao://kv1/app/db#user").unwrap())
        .collect();
    let reads = refs.iter().map(|r| {
        let p = p.clone();
        let r = r.clone();
        async move { p.resolve_many(&[r]).await }
    });
    for out in futures::future::join_all(reads).await {
        assert_eq!(
            out.unwrap()[0].as_ref().unwrap().secret.as_text().unwrap(),
            "app"
        );
    }
    assert_eq!(
        fake.logins.load(Ordering::SeqCst),
        1,
        "one login for 16 concurrent reads"
    );
    assert_eq!(
        fake.renews.load(Ordering::SeqCst),
        0,
        "a fresh token is not renewed"
    );
    let info = p.lookup_self().await.unwrap();
    assert_eq!(info.display_name, "approle");
    assert!(info.renewable);

    // A margin larger than the TTL makes every use renew first.
    let mut env = approle_env(addr);
    env.set("VAULT_RENEW_MARGIN", "7200");
    let p = VaultProvider::from_env(&env).unwrap();
    let logins = fake.logins.load(Ordering::SeqCst);
    read(&p, "openbao://kv1/app/db#user").await.unwrap();
    read(&p, "openbao://kv1/app/db#user").await.unwrap();
    assert_eq!(fake.logins.load(Ordering::SeqCst), logins + 1);
    assert_eq!(fake.renews.load(Ordering::SeqCst), 1, "second use renewed");

    // Renewal refused: log in again.
    fake.refuse_renew.store(true, Ordering::SeqCst);
    read(&p, "openbao://kv1/app/db#user").await.unwrap();
    assert_eq!(fake.renews.load(Ordering::SeqCst), 2);
    assert_eq!(
        fake.logins.load(Ordering::SeqCst),
        logins + 2,
        "re-login after refusal"
    );
}

#[tokio::test]
async fn approle_relogin_when_token_revoked_and_bad_secret_id() {
    let fake = Arc::new(Fake::default());
    fake.login_ttl.store(3600, Ordering::SeqCst);
    let addr = start(fake.clone()).await;
    let p = VaultProvider::from_env(&approle_env(addr)).unwrap();
    read(&p, "openbao://kv1/app/db#user").await.unwrap();
    fake.tokens.lock().unwrap().clear(); // revoke every issued token
    let got = read(&p, "openbao://kv1/app/db#user").await.unwrap();
    assert_eq!(got.secret.as_text().unwrap(), "app");
    assert_eq!(fake.logins.load(Ordering::SeqCst), 2);
    // A real denial with a valid token does not log in again.
    let e = read(&p, "openbao+kv2://secret/denied").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::PermissionDenied);
    assert_eq!(fake.logins.load(Ordering::SeqCst), 2);

    let mut env = approle_env(addr);
    env.set("VAULT_SECRET_ID", "canary-secret-id-wrong");
    let bad = VaultProvider::from_env(&env).unwrap();
    let e = bad
        .resolve_many(&[SecretRef::parse("openbao://kv1/app/db").unwrap()])
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unauthenticated);
    assert!(e.message().contains("invalid role or secret ID"), "{e}");
    assert_clean(&format!("{e:?} {e}"));
}

#[tokio::test]
async fn redirects_stay_on_the_configured_origin() {
    // Standby → active on the same origin would loop here; use a second
    // fake as "another host" and check it never sees the token.
    let other = Arc::new(Fake::default());
    let other_addr = start(other.clone()).await;
    let fake = Arc::new(Fake::default());
    *fake.redirect_to.lock().unwrap() = Some(format!("http://{other_addr}"));
    let addr = start(fake.clone()).await;
    let p = VaultProvider::from_env(&token_env(addr)).unwrap();
    let e = read(&p, "openbao+kv2://secret/myapp/api#token")
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::RedirectRefused);
    assert!(
        other.seen.lock().unwrap().is_empty(),
        "nothing was sent to the other host"
    );

    // Explicitly allowed: followed, with the token.
    let mut env = token_env(addr);
    env.set("VAULT_REDIRECT_ALLOW", format!("http://{other_addr}"));
    let p = VaultProvider::from_env(&env).unwrap();
    let got = read(&p, "openbao+kv2://secret/myapp/api#token")
        .await
        .unwrap();
    assert_eq!(got.secret.as_text().unwrap(), VALUE);

    // Redirecting to itself forever stops after a bounded number of hops.
    *fake.redirect_to.lock().unwrap() = Some(format!("http://{addr}"));
    let p = VaultProvider::from_env(&token_env(addr)).unwrap();
    let before = fake.seen.lock().unwrap().len();
    let e = read(&p, "openbao+kv2://secret/myapp/api#token")
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::RedirectRefused);
    assert_eq!(
        fake.seen.lock().unwrap().len() - before,
        4,
        "first request + 3 hops"
    );
}

#[tokio::test]
async fn canaries_stay_out_of_logs_spans_and_errors() {
    let capture = secref_testkit::capture::install();

    let fake = Arc::new(Fake::default());
    fake.login_ttl.store(3600, Ordering::SeqCst);
    let addr = start(fake.clone()).await;
    let mut env = approle_env(addr);
    env.set("VAULT_RENEW_MARGIN", "7200");
    let p = VaultProvider::from_env(&env).unwrap();
    let resolver = Resolver::builder().provider(p.clone()).build().unwrap();
    let mut errors = String::new();
    for r in [
        "openbao+kv2://secret/myapp/api#token",
        "openbao+kv2://secret/myapp/api#token?wrap_ttl=30s",
        "openbao+kv2://secret/myapp/api?version=1",
        "openbao+kv2://secret/myapp/api#token?version=2",
        "openbao+kv2://secret/myapp/api#missing",
        "openbao://kv1/app/db#password",
        "openbao+kv2://secret/denied",
    ] {
        match resolver.read(r).detailed().await {
            Ok(v) => errors.push_str(&format!("{v:?}")),
            Err(e) => errors.push_str(&format!("{e:?} {e}")),
        }
    }
    let _ = p.lookup_self().await;
    errors.push_str(&format!("{p:?}"));
    let logs = capture.text();
    assert!(logs.contains("vault read"), "the capture works");
    assert_clean(&logs);
    assert_clean(&errors);
}

#[tokio::test]
async fn connect_fails_fast_on_wrong_credentials() {
    let fake = Arc::new(Fake::default());
    let addr = start(fake.clone()).await;
    let cfg = |env: Env| secref::Config {
        env,
        ..secref::Config::default()
    };
    assert!(VaultProvider::connect(&cfg(token_env(addr))).await.is_ok());
    let mut env = approle_env(addr);
    env.set("VAULT_SECRET_ID", "canary-secret-id-bad");
    let e = VaultProvider::connect(&cfg(env)).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unauthenticated);
    assert_clean(&format!("{e:?} {e}"));
    let mut env = token_env(addr);
    env.set("VAULT_TOKEN", "canary-root-token-bad");
    let e = VaultProvider::connect(&cfg(env)).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unauthenticated);
    // Nothing configured at all: no provider, not an error.
    let none = cfg(Env::from_pairs(Vec::<(String, String)>::new()));
    assert!(VaultProvider::configured(&none).unwrap().is_none());
}

#[tokio::test]
async fn namespace_header_is_sent() {
    let fake = Arc::new(Fake::default());
    let addr = start(fake.clone()).await;
    let mut env = token_env(addr);
    env.set("VAULT_NAMESPACE", "/team-a/");
    let p = VaultProvider::from_env(&env).unwrap();
    read(&p, "openbao://kv1/app/db#user").await.unwrap();
    assert_eq!(*fake.namespaces.lock().unwrap(), ["team-a"]);
    env.set("VAULT_NAMESPACE", "team a");
    assert_eq!(
        VaultProvider::from_env(&env).unwrap_err().code(),
        ErrorCode::Config
    );
}
