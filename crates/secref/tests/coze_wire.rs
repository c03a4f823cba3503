#![cfg(feature = "coze")]
//! The Coze provider's bytes on the wire, compared with what
//! `coze-workload-identity` 0.1.14 sends (protocols.md §4.2, observed), and
//! the token answers a real server would not give (a `200` carrying an OAuth
//! `error`, no `access_token`, a non-numeric `expires_in`, a redirect). Runs
//! without external servers: a scripted token endpoint on 127.0.0.1.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use secref::config::Env;
use secref::providers::coze::{CozeProvider, TOKEN_EXCHANGE, TOKEN_RETRIEVAL};
use secref::{ErrorCode, Provider, SecretRef};
use serde_json::{json, Value};

#[derive(Clone, Debug)]
struct Seen {
    path: String,
    body: String,
    content_type: Option<String>,
    authorization: Option<String>,
}

/// What the scripted server answers: (status, body) for /id and /exchange.
#[derive(Clone)]
struct Script {
    id: (u16, Value),
    exchange: (u16, Value),
}

#[derive(Clone)]
struct Fake {
    script: Script,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn record(state: &Fake, path: &str, headers: &HeaderMap, body: Bytes) {
    let h = |n: &str| headers.get(n).map(|v| v.to_str().unwrap().to_string());
    state.seen.lock().unwrap().push(Seen {
        path: path.into(),
        body: String::from_utf8(body.to_vec()).unwrap(),
        content_type: h("content-type"),
        authorization: h("authorization"),
    });
}

fn answer((status, body): (u16, Value)) -> Response {
    let status = StatusCode::from_u16(status).unwrap();
    if status.is_redirection() {
        return (status, [("location", "http://127.0.0.1:9/elsewhere")]).into_response();
    }
    (status, Json(body)).into_response()
}

async fn start(script: Script) -> (String, Fake) {
    let fake = Fake {
        script,
        seen: Arc::default(),
    };
    let app = Router::new()
        .route(
            "/id",
            post(|State(s): State<Fake>, h: HeaderMap, b: Bytes| async move {
                record(&s, "id", &h, b).await;
                answer(s.script.id.clone())
            }),
        )
        .route(
            "/exchange",
            post(|State(s): State<Fake>, h: HeaderMap, b: Bytes| async move {
                record(&s, "exchange", &h, b).await;
                answer(s.script.exchange.clone())
            }),
        )
        .route(
            "/out/integration",
            post(|State(s): State<Fake>, h: HeaderMap, b: Bytes| async move {
                record(&s, "integration", &h, b).await;
                Json(json!({"code": 0, "msg": "success", "data": {"credential": "c"}}))
            }),
        )
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, fake)
}

fn provider(url: &str, extra: &[(&str, &str)]) -> CozeProvider {
    let mut env = Env::from_pairs([
        ("COZE_WORKLOAD_IDENTITY_CLIENT_ID", "cid"),
        ("COZE_WORKLOAD_IDENTITY_CLIENT_SECRET", "c sec&ret"),
        (
            "COZE_WORKLOAD_IDENTITY_TOKEN_ENDPOINT",
            &format!("{url}/id"),
        ),
        (
            "COZE_WORKLOAD_ACCESS_TOKEN_ENDPOINT",
            &format!("{url}/exchange"),
        ),
        ("COZE_OUTBOUND_AUTH_ENDPOINT", &format!("{url}/out/")),
    ]);
    for (k, v) in extra {
        env.set(*k, *v);
    }
    CozeProvider::from_env(&env).unwrap()
}

fn good() -> Script {
    Script {
        id: (200, json!({"access_token": "id.tok+/=", "expires_in": 600})),
        exchange: (200, json!({"access_token": "acc-tok", "expires_in": 300})),
    }
}

#[tokio::test]
async fn requests_match_the_sdk_byte_for_byte() {
    let (url, fake) = start(good()).await;
    let p = provider(&url, &[]);
    let r = SecretRef::parse("coze+credential://github").unwrap();
    let got = p.resolve_many(&[r]).await.unwrap();
    assert_eq!(got[0].as_ref().unwrap().secret.as_text().unwrap(), "c");
    let seen = fake.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].path, "id");
    assert_eq!(
        seen[0].body,
        "client_id=cid&client_secret=c+sec%26ret&grant_type=client_credentials"
    );
    assert_eq!(seen[0].authorization, None);
    assert_eq!(
        seen[1].body,
        "client_id=cid&subject_token=id.tok%2B%2F%3D\
         &subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aid_token\
         &grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange"
    );
    for s in &seen[..2] {
        assert_eq!(
            s.content_type.as_deref(),
            Some("application/x-www-form-urlencoded")
        );
    }
    // Outbound: JSON body (the SDK's has spaces after separators; same JSON).
    let body: Value = serde_json::from_str(&seen[2].body).unwrap();
    assert_eq!(body, json!({"integration_name": "github"}));
    assert_eq!(seen[2].authorization.as_deref(), Some("Bearer acc-tok"));
    assert_eq!(seen[2].content_type.as_deref(), Some("application/json"));
}

#[tokio::test]
async fn basic_auth_sends_form_encoded_credentials() {
    let (url, fake) = start(good()).await;
    let p = provider(&url, &[("SECREF_COZE_CLIENT_AUTH", "basic")]);
    p.access_token().await.unwrap();
    let seen = fake.seen.lock().unwrap().clone();
    assert_eq!(seen[0].body, "grant_type=client_credentials");
    // base64("cid:c+sec%26ret"), per RFC 6749 §2.3.1.
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some("Basic Y2lkOmMrc2VjJTI2cmV0")
    );
}

#[tokio::test]
async fn an_id_token_without_lifetime_is_not_cached() {
    let mut script = good();
    script.id = (200, json!({"access_token": "id"}));
    // An access token that is stale at once (expires_in below the buffer).
    script.exchange = (200, json!({"access_token": "a", "expires_in": 30}));
    let (url, fake) = start(script).await;
    let p = provider(&url, &[]);
    p.access_token().await.unwrap();
    p.access_token().await.unwrap();
    let paths: Vec<String> = fake
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.path.clone())
        .collect();
    assert_eq!(paths, ["id", "exchange", "id", "exchange"]);
}

#[tokio::test]
async fn malformed_token_answers_are_typed() {
    let cases: Vec<(Script, ErrorCode, &str, bool)> = vec![
        (
            Script {
                id: (200, json!({"error": "invalid_client"})),
                ..good()
            },
            ErrorCode::Unauthenticated,
            TOKEN_RETRIEVAL,
            false,
        ),
        (
            Script {
                id: (200, json!({"token_type": "Bearer"})),
                ..good()
            },
            ErrorCode::InvalidResponse,
            TOKEN_RETRIEVAL,
            false,
        ),
        (
            Script {
                exchange: (200, json!({"access_token": "a", "expires_in": "soon"})),
                ..good()
            },
            ErrorCode::InvalidResponse,
            TOKEN_EXCHANGE,
            false,
        ),
        (
            Script {
                exchange: (307, Value::Null),
                ..good()
            },
            ErrorCode::RedirectRefused,
            TOKEN_EXCHANGE,
            false,
        ),
        (
            Script {
                exchange: (429, json!({"error": "slow_down"})),
                ..good()
            },
            ErrorCode::RateLimited,
            TOKEN_EXCHANGE,
            true,
        ),
        (
            Script {
                id: (502, Value::Null),
                ..good()
            },
            ErrorCode::BackendUnavailable,
            TOKEN_RETRIEVAL,
            true,
        ),
    ];
    for (script, code, step, retryable) in cases {
        let (url, _) = start(script).await;
        let e = provider(&url, &[]).access_token().await.unwrap_err();
        assert_eq!(
            (e.code(), e.remote_code(), e.retryable()),
            (code, Some(step), retryable),
            "{e}"
        );
        assert!(!format!("{e:?}").contains("c sec&ret"));
    }
}

#[tokio::test]
async fn a_refused_id_token_is_not_reused() {
    let script = Script {
        exchange: (400, json!({"error": "invalid_grant"})),
        ..good()
    };
    let (url, fake) = start(script).await;
    let p = provider(&url, &[]);
    for _ in 0..2 {
        let e = p.access_token().await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::Unauthenticated);
        assert!(e.to_string().contains("invalid_grant"), "{e}");
    }
    let paths: Vec<String> = fake
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.path.clone())
        .collect();
    assert_eq!(paths, ["id", "exchange", "id", "exchange"]);
}
