//! The SecFlow client provider against (1) a real `secref serve` in-process
//! and (2) a fault-injecting test double. All on 127.0.0.1.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use parking_lot::Mutex;
use secref::provider::{Action, Provider, RevokeReason};
use secref::providers::secflow::SecFlowProvider;
use secref::providers::{EnvProvider, FileProvider};
use secref::{CacheConfig, Error, ErrorCode, Resolver, RetryPolicy, Secret, SecretRef};
use secref_server::{Server, ServerConfig};
use secref_testkit::secflow_files::{secflow_file_tree, CI_TOKEN_ENV};
use serde_json::{json, Value};

const CANARY: &str = "canary-7f3a9c-value";
const TOKEN: &str = "serve-token-0123456789";
const CI_TOKEN: &str = "ci-token-0123456789abc";

/// A running `secref serve` over a temp dir of files.
struct Serve {
    url: String,
    dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start_serve(rules: &str) -> Serve {
    let numbered: Vec<(String, String)> = (0..150)
        .map(|i| (format!("n{i}"), format!("v{i}")))
        .collect();
    let mut files: Vec<(&str, &[u8])> =
        vec![("text", CANARY.as_bytes()), ("bin", b"\xff\x00\xfebin")];
    files.extend(numbered.iter().map(|(n, v)| (n.as_str(), v.as_bytes())));
    let (dir, toml_text) = secflow_file_tree(&files, rules);
    let table: toml::Table = toml::from_str(&toml_text).unwrap();
    let cfg = ServerConfig::from_table(Some(&table)).unwrap();
    let resolver = Resolver::builder()
        .provider(EnvProvider::new())
        .provider(FileProvider::new())
        .cache(CacheConfig::disabled())
        .build()
        .unwrap();
    let env = secref::config::Env::from_pairs([(CI_TOKEN_ENV, CI_TOKEN)]);
    let server = Server::with_env(resolver, cfg, Secret::from(TOKEN), &env).unwrap();
    let listener = server.bind().await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(server.serve(listener, async {
        let _ = rx.await;
    }));
    Serve {
        url,
        dir,
        _stop: tx,
    }
}

/// A server over `resolver` on 127.0.0.1 (any port), with `TOKEN` as its
/// default token and `extra_toml` added to its config.
fn server_with(resolver: Resolver, extra_toml: &str) -> Server {
    let table: toml::Table =
        toml::from_str(&format!("bind = '127.0.0.1:0'\n{extra_toml}")).unwrap();
    let cfg = ServerConfig::from_table(Some(&table)).unwrap();
    Server::new(resolver, cfg, Secret::from(TOKEN)).unwrap()
}

/// Serves `server` over TCP until the test ends; returns its base URL.
async fn serve_tcp(server: Server) -> String {
    let listener = server.bind().await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(server.serve(listener, std::future::pending()));
    url
}

fn client(url: &str, token: &str, env: &str) -> SecFlowProvider {
    SecFlowProvider::new(url, Secret::from(token), env, Duration::from_secs(5)).unwrap()
}

fn r(s: &str) -> SecretRef {
    SecretRef::parse(s).unwrap()
}

fn assert_no_canary(e: &Error) {
    assert!(!format!("{e:?} {e}").contains(CANARY));
}

#[tokio::test]
async fn provider_against_real_serve() {
    let serve = start_serve("").await;
    let p = client(&serve.url, TOKEN, "dev");
    let out = p
        .resolve_many(&[
            r("secret://dev/app/token/text"),
            r("secret://dev/app/token/bin"),
            r("secret://dev/app/token/missing"),
            r("secret://prod/app/token/text"),
            r(&format!(
                "file://{}/s/dev/app/token/text",
                serve.dir.path().display()
            )),
        ])
        .await
        .unwrap();
    let text = out[0].as_ref().unwrap();
    assert_eq!(text.secret.expose_bytes(), CANARY.as_bytes());
    assert!(text.lease.as_ref().unwrap().id.starts_with("lease-"));
    assert_eq!(text.version.as_deref(), Some("current"));
    assert!(text.expires_at.is_some());
    assert_eq!(
        out[1].as_ref().unwrap().secret.expose_bytes(),
        b"\xff\x00\xfebin"
    );
    let missing = out[2].as_ref().unwrap_err();
    assert_eq!(missing.code(), ErrorCode::NotFound);
    assert_eq!(missing.remote_code(), Some("NOT_FOUND"));
    assert!(missing.request_id().unwrap().starts_with("secref-"));
    assert!(!missing.retryable());
    let mismatch = out[3].as_ref().unwrap_err();
    assert_eq!(mismatch.code(), ErrorCode::PermissionDenied);
    // The file behind the template, named directly: host-local, and no rule
    // names it, so the default token is denied.
    assert_eq!(
        out[4].as_ref().unwrap_err().code(),
        ErrorCode::PermissionDenied
    );
    for e in out.iter().filter_map(|o| o.as_ref().err()) {
        assert_no_canary(e);
    }

    // Validate, metadata, permission check.
    let v = p
        .validate(&[
            r("secret://dev/app/token/text"),
            r("secret://dev/app/token/nope"),
        ])
        .await
        .unwrap();
    assert_eq!(v[0].as_ref().unwrap().exists, Some(true));
    assert_eq!(v[0].as_ref().unwrap().namespace.as_deref(), Some("dev/app"));
    assert_eq!(v[1].as_ref().unwrap().exists, Some(false));
    let m = p
        .metadata(&[r("secret://dev/app/token/text")])
        .await
        .unwrap();
    let m = m[0].as_ref().unwrap();
    assert_eq!(m.reference, "secret://dev/app/token/text");
    assert_eq!(m.custom.get("service").map(String::as_str), Some("app"));
    let perm = p
        .permission_check(&[r("secret://dev/app/token/text")], Action::Read)
        .await
        .unwrap();
    assert!(perm[0].as_ref().unwrap().allowed);

    // Leases are real: revoke once, the second time it is gone.
    let lease = text.lease.as_ref().unwrap().id.clone();
    let rev = p
        .revoke_leases(std::slice::from_ref(&lease), RevokeReason::JobCompleted)
        .await
        .unwrap();
    assert_eq!(rev[0].as_ref().unwrap().status, "revoked");
    let again = p
        .revoke_leases(&[lease], RevokeReason::Other)
        .await
        .unwrap();
    assert_eq!(again[0].as_ref().unwrap_err().code(), ErrorCode::NotFound);

    // Wrong token: request-level unauthenticated, not retryable.
    let bad = client(&serve.url, "wrong-token-xxxxxxxxxx", "dev");
    let e = bad
        .resolve_many(&[r("secret://dev/app/token/text")])
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unauthenticated);
    assert_eq!(e.remote_code(), Some("UNAUTHENTICATED"));
    assert!(!e.retryable());
}

#[tokio::test]
async fn resolver_over_provider_splits_batches_and_routes_leases() {
    let serve = start_serve("").await;
    let resolver = Resolver::builder()
        .provider(client(&serve.url, TOKEN, "dev"))
        .build()
        .unwrap();
    let refs: Vec<String> = (0..150)
        .map(|i| format!("secret://dev/app/token/n{i}"))
        .collect();
    let all = resolver.resolve_many(&refs).await.unwrap();
    assert_eq!(all.len(), 150);
    assert_eq!(
        all[&r("secret://dev/app/token/n149")].expose_bytes(),
        b"v149"
    );
    let d = resolver
        .read("secret://dev/app/token/text")
        .detailed()
        .await
        .unwrap();
    let lease = d.lease.unwrap().id;
    let out = resolver
        .revoke_leases(&[lease], RevokeReason::JobCompleted)
        .await
        .unwrap();
    assert!(out[0].is_ok());
}

#[tokio::test]
async fn access_rules_deny_and_permission_check_says_so() {
    let rules = "[[rules]]\nprincipals = ['ci']\nrefs = ['secret://dev/app/token/n*']\nactions = ['read']\n";
    let serve = start_serve(rules).await;
    let ci = client(&serve.url, CI_TOKEN, "dev");
    let out = ci
        .resolve_many(&[
            r("secret://dev/app/token/n1"),
            r("secret://dev/app/token/text"),
        ])
        .await
        .unwrap();
    assert_eq!(out[0].as_ref().unwrap().secret.expose_bytes(), b"v1");
    let denied = out[1].as_ref().unwrap_err();
    assert_eq!(denied.code(), ErrorCode::PermissionDenied);
    assert_no_canary(denied);
    let perm = ci
        .permission_check(
            &[
                r("secret://dev/app/token/n1"),
                r("secret://dev/app/token/text"),
            ],
            Action::Read,
        )
        .await
        .unwrap();
    assert!(perm[0].as_ref().unwrap().allowed);
    assert!(!perm[1].as_ref().unwrap().allowed);
    assert_eq!(
        perm[1].as_ref().unwrap().decision_id.as_deref(),
        Some("default-deny")
    );
    // The default token is named by no rule: denied everything.
    let default = client(&serve.url, TOKEN, "dev");
    let out = default
        .resolve_many(&[r("secret://dev/app/token/n1")])
        .await
        .unwrap();
    assert_eq!(
        out[0].as_ref().unwrap_err().code(),
        ErrorCode::PermissionDenied
    );
}

#[tokio::test]
async fn server_rejects_bad_requests_in_secflow_shape() {
    let serve = start_serve("").await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/secrets/resolve:batch", serve.url);
    // No token: 401, nothing resolved.
    let resp = http.post(&url).body("{}").send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "UNAUTHENTICATED");
    assert_eq!(body["error"]["retryable"], false);
    assert!(body["request_id"].is_string() && body["trace_id"].is_string());
    // Too large: 413.
    let big = vec![b' '; 2 * 1024 * 1024];
    let resp = http
        .post(&url)
        .bearer_auth(TOKEN)
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "PAYLOAD_TOO_LARGE");
    // Invalid envelopes: 400 INVALID_REQUEST, ids echoed.
    for bad in [
        json!({"request_id":"r1","trace_id":"t1","target_environment":"qa","purpose":"secret.runtime_resolve","items":[{"item_id":"item-1","secret_ref":"env://A"}]}),
        json!({"request_id":"r1","trace_id":"t1","target_environment":"dev","items":[]}),
        json!({"request_id":"r1","trace_id":"t1","target_environment":"dev","items":[{"item_id":"a","secret_ref":"env://A"},{"item_id":"a","secret_ref":"env://B"}]}),
        json!({"request_id":"r1","trace_id":"t1","target_environment":"dev","items":[{"item_id":"a"}]}),
        json!({"request_id":"r1","trace_id":"t1","target_environment":"dev","purpose":"secret.validate","items":[{"item_id":"a","secret_ref":"env://A"}]}),
    ] {
        let resp = http
            .post(&url)
            .bearer_auth(TOKEN)
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "INVALID_REQUEST");
        assert_eq!(body["request_id"], "r1");
    }
    // Unknown path: SecFlow-shaped 404.
    let resp = http
        .post(format!("{}/v1/nope", serve.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let health = http
        .get(format!("{}/healthz", serve.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn non_loopback_bind_is_refused() {
    let table: toml::Table = toml::from_str("bind = '0.0.0.0:0'").unwrap();
    let cfg = ServerConfig::from_table(Some(&table)).unwrap();
    let resolver = Resolver::builder()
        .provider(EnvProvider::new())
        .build()
        .unwrap();
    let server = Server::new(resolver, cfg, Secret::from(TOKEN)).unwrap();
    assert_eq!(server.bind().await.unwrap_err().code(), ErrorCode::Config);
}

// ---------------------------------------------------------------------------
// The fault-injecting double: `/<scenario>/v1/...` answers per scenario.

#[derive(Default)]
struct Seen {
    request_ids: Vec<String>,
    other_host_auth: Vec<String>,
}

#[derive(Clone)]
struct Double {
    seen: Arc<Mutex<Seen>>,
    other: String,
}

async fn fault(
    State(d): State<Double>,
    Path((scenario, _op)): Path<(String, String)>,
    body: String,
) -> Response {
    let req: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    if let Some(id) = req["request_id"].as_str() {
        d.seen.lock().request_ids.push(id.to_string());
    }
    let err = |status: u16, code: &str, retryable: bool| {
        (
            StatusCode::from_u16(status).unwrap(),
            axum::Json(json!({"error":{"code":code,"message":"injected","retryable":retryable},"request_id":"srv-1"})),
        )
            .into_response()
    };
    match scenario.as_str() {
        "json503" => err(503, "UNAVAILABLE", true),
        "bare500" => (StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response(),
        "bare503" => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        "unauth" => err(401, "TOKEN_REVOKED", false),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            StatusCode::OK.into_response()
        }
        "malformed" => (StatusCode::OK, "{not json").into_response(),
        "oversized" => (StatusCode::OK, vec![b' '; 4 * 1024 * 1024 + 16]).into_response(),
        "error200" => (
            StatusCode::OK,
            axum::Json(json!({"error":{"code":"RATE_LIMITED","message":"slow down","retryable":true},"items":[]})),
        )
            .into_response(),
        "items" => axum::Json(json!({"request_id":"srv-2","items":[
            {"item_id":"item-2","result":"denied","error":{"code":"WEIRD_POLICY","message":"no","retryable":false,"decision_id":"d-9"}},
            {"item_id":"item-1","result":"failed","error":{"code":"SECRET_EXPIRED","message":"old","retryable":false}},
        ]}))
        .into_response(),
        "redirect" => (
            StatusCode::TEMPORARY_REDIRECT,
            [("location", format!("{}/v1/secrets/resolve:batch", d.other))],
        )
            .into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn record_other(State(d): State<Double>, headers: HeaderMap) -> StatusCode {
    if let Some(v) = headers.get("authorization") {
        d.seen
            .lock()
            .other_host_auth
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    StatusCode::OK
}

async fn start_double() -> (String, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    // "Another host": 127.0.0.2 where the system allows it.
    let other_l = match tokio::net::TcpListener::bind("127.0.0.2:0").await {
        Ok(l) => l,
        Err(_) => tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    let other = format!("http://{}", other_l.local_addr().unwrap());
    let d = Double {
        seen: seen.clone(),
        other,
    };
    let other_app = Router::new()
        .fallback(post(record_other).get(record_other))
        .with_state(d.clone());
    tokio::spawn(async move { axum::serve(other_l, other_app).await });
    let app = Router::new()
        .route("/{scenario}/v1/secrets/{op}", post(fault))
        .with_state(d);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (url, seen)
}

async fn fail_with(base: &str, scenario: &str, timeout: Duration) -> Error {
    let p = SecFlowProvider::new(
        &format!("{base}/{scenario}"),
        Secret::from(CANARY),
        "dev",
        timeout,
    )
    .unwrap();
    let e = p
        .resolve_many(&[r("secret://dev/app/token/a")])
        .await
        .unwrap_err();
    assert!(
        !format!("{e:?} {e}").contains(CANARY),
        "{scenario}: token leaked"
    );
    e
}

#[tokio::test]
async fn faults_map_to_codes() {
    let (base, seen) = start_double().await;
    let t = Duration::from_secs(5);
    for (scenario, code, retryable, remote) in [
        (
            "json503",
            ErrorCode::BackendUnavailable,
            true,
            "UNAVAILABLE",
        ),
        // By the shared status table: 5xx is retryable for every provider.
        ("bare500", ErrorCode::BackendUnavailable, true, "HTTP_ERROR"),
        ("bare503", ErrorCode::BackendUnavailable, true, "HTTP_ERROR"),
        ("unauth", ErrorCode::Unauthenticated, false, "TOKEN_REVOKED"),
        (
            "malformed",
            ErrorCode::InvalidResponse,
            false,
            "INVALID_RESPONSE",
        ),
        ("oversized", ErrorCode::TooLarge, false, "TOO_LARGE"),
        ("error200", ErrorCode::RateLimited, true, "RATE_LIMITED"),
        (
            "redirect",
            ErrorCode::RedirectRefused,
            false,
            "HTTP_REDIRECT",
        ),
    ] {
        let e = fail_with(&base, scenario, t).await;
        assert_eq!(
            (e.code(), e.retryable(), e.remote_code()),
            (code, retryable, Some(remote)),
            "{scenario}: {e:?}"
        );
        assert!(e.request_id().is_some(), "{scenario}");
    }
    // The server's request id is kept when it sends one.
    assert_eq!(
        fail_with(&base, "json503", t).await.request_id(),
        Some("srv-1")
    );
    // Timeout (no wall-clock assertion: only the code).
    let e = fail_with(&base, "slow", Duration::from_millis(300)).await;
    assert_eq!((e.code(), e.retryable()), (ErrorCode::Timeout, true));
    assert_eq!(e.remote_code(), Some("TRANSPORT_TIMEOUT"));
    // The redirect target never saw the token.
    assert!(seen.lock().other_host_auth.is_empty());
}

#[tokio::test]
async fn item_level_codes_keep_remote_code_and_order() {
    let (base, _) = start_double().await;
    let p = client(&format!("{base}/items"), "t", "dev");
    let out = p
        .resolve_many(&[r("secret://dev/a/b/one"), r("secret://dev/a/b/two")])
        .await
        .unwrap();
    let one = out[0].as_ref().unwrap_err();
    assert_eq!(
        (one.code(), one.remote_code()),
        (ErrorCode::Expired, Some("SECRET_EXPIRED"))
    );
    assert_eq!(one.request_id(), Some("srv-2"));
    let two = out[1].as_ref().unwrap_err();
    assert_eq!(
        (two.code(), two.remote_code()),
        (ErrorCode::PermissionDenied, Some("WEIRD_POLICY"))
    );
}

#[tokio::test]
async fn connection_reset_is_retryable_transport_error() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = l.accept().await else {
                return;
            };
            let mut buf = [0u8; 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut sock, &mut buf).await;
            // Close without answering (a reset or EOF mid-request).
            drop(sock);
        }
    });
    let e = fail_with(&url, "x", Duration::from_secs(5)).await;
    assert_eq!(
        (e.code(), e.retryable()),
        (ErrorCode::BackendUnavailable, true)
    );
    assert_eq!(e.remote_code(), Some("TRANSPORT_ERROR"));
}

#[tokio::test]
async fn resolver_retry_resends_the_same_request_id() {
    let (base, seen) = start_double().await;
    let resolver = Resolver::builder()
        .provider(client(&format!("{base}/json503"), "t", "dev"))
        .retry(RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            deadline: Duration::from_secs(10),
        })
        .build()
        .unwrap();
    let e = resolver.resolve("secret://dev/a/b/c").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::BackendUnavailable);
    let ids = seen.lock().request_ids.clone();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(ids.iter().all(|i| *i == ids[0] && i.starts_with("secref-")));
    // A later, separate call gets a fresh id.
    let _ = resolver.resolve("secret://dev/a/b/c").await;
    let ids = seen.lock().request_ids.clone();
    assert_ne!(ids[3], ids[0]);
}

#[tokio::test]
async fn default_template_reads_the_local_store() {
    use secref::store::{Store, StoreKey, KEY_ENV, STORE_ENV};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secref.store");
    let key = StoreKey::generate();
    let store = Store::create(&path, &key).unwrap();
    let local = |s: &str| match SecretRef::parse(s).unwrap().kind() {
        secref::RefKind::Local(l) => l.clone(),
        _ => unreachable!(),
    };
    store
        .set(
            &local("local://secflow/dev/app/password/db"),
            Secret::from(CANARY),
        )
        .unwrap();
    let cfg = secref::Config {
        env: secref::config::Env::from_pairs([
            (STORE_ENV, path.to_str().unwrap().to_string()),
            (KEY_ENV, key.to_base64().to_string()),
        ]),
        ..secref::Config::default()
    };
    let server = server_with(Resolver::from_config(&cfg).unwrap(), "");
    let p = client(&serve_tcp(server).await, TOKEN, "dev");
    let out = p
        .resolve_many(&[
            r("secret://dev/app/password/db"),
            r("local://secflow/dev/app/password/db"),
        ])
        .await
        .unwrap();
    for o in &out {
        assert_eq!(o.as_ref().unwrap().secret.expose_bytes(), CANARY.as_bytes());
    }
}

/// One raw HTTP/1.1 request over a Unix socket; returns (status, JSON body).
#[cfg(unix)]
async fn unix_post(path: &std::path::Path, uri: &str, body: &Value) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::UnixStream::connect(path).await.unwrap();
    let body = body.to_string();
    let req = format!(
        "POST {uri} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let status: u16 = text[9..12].parse().unwrap();
    let (_, body) = text.split_once("\r\n\r\n").unwrap();
    // The server answers with a fixed length (no chunking) for JSON bodies.
    (status, serde_json::from_str(body).unwrap())
}

#[cfg(unix)]
#[tokio::test]
async fn unix_socket_callers_are_identified_by_uid_and_exe() {
    use std::os::unix::fs::PermissionsExt;
    let uid = unsafe { libc::getuid() };
    let exe = std::env::current_exe().unwrap();
    let rules = format!(
        "[[rules]]\nprincipals = ['uid:{uid}']\nrefs = ['env://SECREF_UDS_A']\nactions = ['read']\n\
         [[rules]]\nprincipals = ['exe:{}']\nrefs = ['env://SECREF_UDS_B']\nactions = ['read']\n",
        exe.display()
    );
    std::env::set_var("SECREF_UDS_A", CANARY);
    std::env::set_var("SECREF_UDS_B", "b-value");
    std::env::set_var("SECREF_UDS_C", "c-value");
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("secref.sock");
    let resolver = Resolver::builder()
        .provider(EnvProvider::new())
        .build()
        .unwrap();
    let server = server_with(resolver, &rules);
    let tcp = server.bind().await.unwrap();
    let tcp_url = format!("http://{}", tcp.local_addr().unwrap());
    let unix = server.bind_unix(&sock).unwrap();
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    tokio::spawn(server.serve_all(tcp, Some(unix), std::future::pending()));

    let req = json!({"request_id":"r-uds","trace_id":"t-uds","target_environment":"dev",
        "purpose":"secret.runtime_resolve","items":[
        {"item_id":"item-1","secret_ref":"env://SECREF_UDS_A"},
        {"item_id":"item-2","secret_ref":"env://SECREF_UDS_B"},
        {"item_id":"item-3","secret_ref":"env://SECREF_UDS_C"}]});
    // No token needed on the socket: the kernel says who we are.
    let (status, body) = unix_post(&sock, "/v1/secrets/resolve:batch", &req).await;
    assert_eq!(status, 200, "{body}");
    let items = body["items"].as_array().unwrap();
    assert_eq!(items[0]["value"]["data"], CANARY);
    assert_eq!(items[0]["decision_id"], "rule-1");
    assert_eq!(items[1]["value"]["data"], "b-value");
    assert_eq!(items[1]["decision_id"], "rule-2");
    assert_eq!(items[2]["result"], "denied");
    // Over TCP, the default token matches no rule: denied.
    let p = client(&tcp_url, TOKEN, "dev");
    let out = p.resolve_many(&[r("env://SECREF_UDS_A")]).await.unwrap();
    assert_eq!(
        out[0].as_ref().unwrap_err().code(),
        ErrorCode::PermissionDenied
    );
}

/// A provider that never answers in time.
#[derive(Debug)]
struct Stuck;

#[async_trait::async_trait]
impl Provider for Stuck {
    fn name(&self) -> &str {
        "stuck"
    }
    fn families(&self) -> &[&'static str] {
        &["env"]
    }
    async fn resolve_many(
        &self,
        refs: &[SecretRef],
    ) -> secref::provider::BatchResult<secref::Resolved> {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok(refs
            .iter()
            .map(|_| Ok(secref::Resolved::new(Secret::from("late"))))
            .collect())
    }
}

#[tokio::test]
async fn slow_backends_hit_the_request_timeout() {
    let resolver = Resolver::builder().provider(Stuck).build().unwrap();
    // `Stuck` serves env://, which only a rule naming it may read.
    let server = server_with(
        resolver,
        "request_timeout_seconds = 0.2\n[[rules]]\nprincipals = ['*']\nrefs = ['env://*']",
    );
    let e = client(&serve_tcp(server).await, TOKEN, "dev")
        .resolve_many(&[r("env://ANY")])
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.retryable(), e.remote_code()),
        (ErrorCode::Timeout, true, Some("TIMEOUT"))
    );
}
