//! The AuthZEN HTTP PDP against a Rust double on 127.0.0.1: the request's
//! shape, allow with grant terms, deny, and every kind of outage.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use secref::policy::{AuthZenPdp, Context, GrantTerms, Policy, PolicySettings};
use secref::{CacheConfig, ErrorCode, Resolver, Secret};
use secref_testkit::fixed::FixedProvider;
use serde_json::{json, Value};

#[derive(Default)]
struct Seen {
    bodies: Vec<Value>,
    auth: Vec<Option<String>>,
}

async fn evaluation(
    State(seen): State<Arc<Mutex<Seen>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> axum::response::Response {
    let subject = body["subject"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    {
        let mut s = seen.lock().unwrap();
        s.bodies.push(body);
        s.auth.push(
            headers
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned()),
        );
    }
    match subject.as_str() {
        "svc-allow" => Json(json!({
            "decision": true,
            "context": {"decision_id": "az-1", "max_uses": 2, "ttl_seconds": 60}
        }))
        .into_response(),
        "svc-deny" => {
            Json(json!({"decision": false, "context": {"decision_id": "az-2"}})).into_response()
        }
        "svc-500" => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        "svc-garbage" => (StatusCode::OK, "not json").into_response(),
        _ => Json(json!({"decision": "yes"})).into_response(),
    }
}

async fn start() -> (SocketAddr, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let app = Router::new()
        .route("/access/v1/evaluation", post(evaluation))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen)
}

#[tokio::test]
async fn authzen_pdp_round_trip() {
    let (addr, seen) = start().await;
    let pdp = AuthZenPdp::new(
        &format!("http://{addr}/"),
        secref::http::ClientOptions::default().timeout(Duration::from_secs(5)),
        Some(Secret::from("pdp-bearer-token")),
        GrantTerms::new(Duration::from_secs(300), 1),
    )
    .unwrap();
    assert!(!format!("{pdp:?}").contains("pdp-bearer-token"));
    let policy = Policy::new(PolicySettings::default(), Arc::new(pdp));
    let r = Resolver::builder()
        .provider(FixedProvider::new("authzen-canary-77"))
        .cache(CacheConfig::disabled())
        .policy(policy)
        .build()
        .unwrap();
    let reference = "openbao+kv2://secret/app#token";

    // Allow: the response context's terms (max_uses 2) apply.
    let ctx = Context::for_subject("svc-allow")
        .with_tenant("dev")
        .with_audience(["crud.secrets"])
        .with_cnf_jkt("jkt-1")
        .with_correlation_id("corr-9");
    r.read(reference).as_(&ctx).await.unwrap();
    r.read(reference).as_(&ctx).await.unwrap();
    let e = r.read(reference).as_(&ctx).await.unwrap_err();
    assert_eq!(e.remote_code(), Some("SECRET_AUTHZ_FAILED"));
    {
        let s = seen.lock().unwrap();
        assert_eq!(s.bodies.len(), 1, "one decision for the grant");
        let b = &s.bodies[0];
        assert_eq!(b["subject"]["type"], "user");
        assert_eq!(b["subject"]["id"], "svc-allow");
        assert_eq!(b["resource"]["type"], "secret");
        assert_eq!(b["resource"]["id"], reference);
        assert_eq!(b["resource"]["properties"]["tenant"], "dev");
        assert_eq!(b["action"]["name"], "execute");
        assert_eq!(b["context"]["binding"], "jkt-1");
        assert_eq!(b["context"]["correlation_id"], "corr-9");
        assert_eq!(s.auth[0].as_deref(), Some("Bearer pdp-bearer-token"));
        assert!(!b.to_string().contains("authzen-canary-77"));
    }

    // Deny.
    let e = r
        .read(reference)
        .as_(&Context::for_subject("svc-deny"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::PermissionDenied);
    assert_eq!(e.remote_code(), Some("DENY"));

    // Outages: 5xx, a body that is not JSON, a non-boolean decision, and a
    // closed port are all PDP_UNAVAILABLE, retryable — never an allow.
    for subject in ["svc-500", "svc-garbage", "svc-odd"] {
        let e = r
            .read(reference)
            .as_(&Context::for_subject(subject))
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::BackendUnavailable, "{subject}");
        assert_eq!(e.remote_code(), Some("PDP_UNAVAILABLE"), "{subject}");
        assert!(e.retryable());
    }
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let table: toml::Table = toml::from_str(&format!(
        "[pdp]\nurl = \"http://{closed}\"\ntimeout_seconds = 2"
    ))
    .unwrap();
    let down = Resolver::builder()
        .provider(FixedProvider::new("authzen-canary-77"))
        .policy(Policy::from_table(&table, &secref::config::Env::default()).unwrap())
        .build()
        .unwrap();
    let e = down
        .read(reference)
        .as_(&Context::for_subject("svc-allow"))
        .await
        .unwrap_err();
    assert_eq!(e.remote_code(), Some("PDP_UNAVAILABLE"));
}

#[test]
fn authzen_pdp_token_comes_from_the_environment() {
    let table: toml::Table =
        toml::from_str("[pdp]\nurl = \"http://127.0.0.1:9\"\ntoken_env = \"MY_PDP_TOKEN\"")
            .unwrap();
    let e = Policy::from_table(&table, &secref::config::Env::default()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Config);
    let env = secref::config::Env::from_pairs([("MY_PDP_TOKEN", "tok-canary-1")]);
    let p = Policy::from_table(&table, &env).unwrap();
    assert!(!format!("{p:?}").contains("tok-canary-1"));
}
