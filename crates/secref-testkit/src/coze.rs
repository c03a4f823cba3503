//! A faithful Coze outbound-auth double (integration credentials, project env vars).
//!
//! Serves what `coze-workload-identity` 0.1.14 calls, with its `{code, msg,
//! data}` envelopes:
//!
//! * `POST /integration` `{"integration_name"}` → `data.credential`;
//! * `GET /env` → `data.secrets[{key, value}]`.
//!
//! Every request must carry `Authorization: Bearer <JWT>` issued by the
//! configured OAuth server: RS256, checked against the issuer's `/jwks`
//! (fetched on first use and again for an unknown key id), with the issuer,
//! audience (`urn:coze:outbound` unless the seed says otherwise) and expiry
//! verified. Anything else gets `401 {"code":401}`. Each request is recorded
//! with its lane headers (`x-tt-env`, `x-use-ppe`) and the token's
//! `client_id`; `GET /_test/requests` returns the log as JSON.
//!
//! Seed (JSON):
//! ```json
//! {"integrations": {"github": "ghp_…"},
//!  "env": [{"key": "DB_URL", "value": "…"}],
//!  "errors": {"broken": {"status": 200, "code": 500, "msg": "boom"}},
//!  "env_error": {"status": 503, "code": 503, "msg": "down"},
//!  "audience": "urn:coze:outbound"}
//! ```
//! `errors` apply to the named integration; `env_error` to `GET /env`.
//! An unknown integration answers `200 {"code":404,"msg":"integration not found"}`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The double's data and injected failures.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    /// Integration name → credential.
    #[serde(default)]
    pub integrations: BTreeMap<String, String>,
    /// The project's env vars, in order (duplicates allowed, as the API).
    #[serde(default)]
    pub env: Vec<EnvVar>,
    /// Injected failures per integration name.
    #[serde(default)]
    pub errors: BTreeMap<String, Failure>,
    /// An injected failure of `GET /env`.
    #[serde(default)]
    pub env_error: Option<Failure>,
    /// The audience access tokens must carry.
    #[serde(default)]
    pub audience: Option<String>,
}

/// One env var.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct EnvVar {
    /// Its key.
    pub key: String,
    /// Its value.
    pub value: String,
}

/// An injected failure: HTTP status and envelope.
#[derive(Clone, Debug, Deserialize)]
pub struct Failure {
    /// HTTP status (default 200).
    #[serde(default = "ok_status")]
    pub status: u16,
    /// The envelope's `code`.
    pub code: i64,
    /// The envelope's `msg`.
    #[serde(default)]
    pub msg: String,
}

fn ok_status() -> u16 {
    200
}

/// One request the double saw (never the token itself).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Recorded {
    /// `integration` or `env`.
    pub call: String,
    /// The `x-tt-env` header.
    pub lane: Option<String>,
    /// The `x-use-ppe` header.
    pub use_ppe: Option<String>,
    /// The verified token's `client_id` claim (None if rejected).
    pub client_id: Option<String>,
    /// The HTTP status answered.
    pub status: u16,
}

struct Inner {
    seed: Seed,
    issuer: String,
    http: reqwest::Client,
    jwks: Mutex<Option<JwkSet>>,
    log: Mutex<Vec<Recorded>>,
    seen: Mutex<HashSet<String>>,
    revoked: Mutex<HashSet<String>>,
}

/// A running double.
pub struct CozeDouble {
    /// Its base URL (`http://127.0.0.1:<port>`), for `COZE_OUTBOUND_AUTH_ENDPOINT`.
    pub url: String,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CozeDouble {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CozeDouble {
    /// Starts the double on an ephemeral 127.0.0.1 port, trusting tokens
    /// from `issuer` (an OAuth server serving `<issuer>/jwks`).
    pub async fn spawn(issuer: &str, seed: Seed) -> std::io::Result<CozeDouble> {
        let inner = Arc::new(Inner {
            seed,
            issuer: issuer.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            jwks: Mutex::new(None),
            log: Mutex::new(Vec::new()),
            seen: Mutex::new(HashSet::new()),
            revoked: Mutex::new(HashSet::new()),
        });
        let app = Router::new()
            .route("/integration", post(integration))
            .route("/env", get(env))
            .route("/_test/requests", get(requests))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(CozeDouble { url, inner, task })
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.log.lock().clone()
    }

    /// Makes every access token seen so far invalid (answered with 401), as
    /// if the server had revoked them.
    pub fn revoke_seen_tokens(&self) {
        let seen = self.inner.seen.lock().clone();
        self.inner.revoked.lock().extend(seen);
    }
}

/// `secref-fake coze --issuer <url> --seed <json>`: runs the double until
/// killed, after printing `listening on <url>`; returns (exit code 2) only
/// on bad arguments or when it cannot listen.
pub fn main(args: &[String]) -> std::process::ExitCode {
    const USAGE: &str = "usage: secref-fake coze --issuer <url> [--seed <json>]";
    let mut issuer = None;
    let mut seed = Seed::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match (a.as_str(), it.next()) {
            ("--issuer", Some(v)) => issuer = Some(v.clone()),
            ("--seed", Some(v)) => match serde_json::from_str(v) {
                Ok(s) => seed = s,
                Err(e) => return fail(&format!("invalid --seed: {e}")),
            },
            _ => return fail(USAGE),
        }
    }
    let Some(issuer) = issuer else {
        return fail(USAGE);
    };
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    rt.block_on(async {
        let double = match CozeDouble::spawn(&issuer, seed).await {
            Ok(d) => d,
            Err(e) => return fail(&format!("cannot listen: {e}")),
        };
        println!("listening on {}", double.url);
        std::future::pending::<std::process::ExitCode>().await
    })
}

fn fail(msg: &str) -> std::process::ExitCode {
    eprintln!("secref-fake coze: {msg}");
    std::process::ExitCode::from(2)
}

fn envelope(status: u16, code: i64, msg: &str, data: Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        Json(json!({"code": code, "msg": msg, "data": data})),
    )
        .into_response()
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

impl Inner {
    /// The verified token's `client_id`, or None.
    async fn authenticate(&self, headers: &HeaderMap) -> Option<String> {
        let token = header(headers, "authorization")?
            .strip_prefix("Bearer ")?
            .to_string();
        if self.revoked.lock().contains(&token) {
            return None;
        }
        let kid = jsonwebtoken::decode_header(&token).ok()?.kid?;
        let mut key = self.key_for(&kid);
        if key.is_none() {
            self.refresh_jwks().await;
            key = self.key_for(&kid);
        }
        let key = key?;
        let mut v = Validation::new(Algorithm::RS256);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[self.seed.audience.as_deref().unwrap_or("urn:coze:outbound")]);
        v.leeway = 0;
        let data = jsonwebtoken::decode::<Value>(&token, &key, &v).ok()?;
        let client_id = data.claims.get("client_id")?.as_str()?.to_string();
        self.seen.lock().insert(token);
        Some(client_id)
    }

    fn key_for(&self, kid: &str) -> Option<DecodingKey> {
        let jwks = self.jwks.lock();
        let jwk = jwks.as_ref()?.find(kid)?;
        DecodingKey::from_jwk(jwk).ok()
    }

    async fn refresh_jwks(&self) {
        let url = format!("{}/jwks", self.issuer);
        if let Ok(resp) = self.http.get(url).send().await {
            if let Ok(set) = resp.json::<JwkSet>().await {
                *self.jwks.lock() = Some(set);
            }
        }
    }

    fn record(&self, call: &str, headers: &HeaderMap, client_id: Option<String>, status: u16) {
        self.log.lock().push(Recorded {
            call: call.to_string(),
            lane: header(headers, "x-tt-env"),
            use_ppe: header(headers, "x-use-ppe"),
            client_id,
            status,
        });
    }
}

async fn integration(
    State(s): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Option<Json<Value>>,
) -> Response {
    let Some(client_id) = s.authenticate(&headers).await else {
        s.record("integration", &headers, None, 401);
        return envelope(401, 401, "invalid access token", Value::Null);
    };
    let name = body
        .as_ref()
        .and_then(|b| b.get("integration_name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let resp = match name {
        None => envelope(400, 400, "integration_name is required", Value::Null),
        Some(n) => match (s.seed.errors.get(&n), s.seed.integrations.get(&n)) {
            (Some(f), _) => envelope(f.status, f.code, &f.msg, Value::Null),
            (None, Some(c)) => envelope(200, 0, "success", json!({"credential": c})),
            (None, None) => envelope(200, 404, "integration not found", Value::Null),
        },
    };
    s.record(
        "integration",
        &headers,
        Some(client_id),
        resp.status().as_u16(),
    );
    resp
}

async fn env(State(s): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    let Some(client_id) = s.authenticate(&headers).await else {
        s.record("env", &headers, None, 401);
        return envelope(401, 401, "invalid access token", Value::Null);
    };
    let resp = match &s.seed.env_error {
        Some(f) => envelope(f.status, f.code, &f.msg, Value::Null),
        None => envelope(200, 0, "success", json!({"secrets": s.seed.env})),
    };
    s.record("env", &headers, Some(client_id), resp.status().as_u16());
    resp
}

async fn requests(State(s): State<Arc<Inner>>) -> Json<Vec<Recorded>> {
    Json(s.log.lock().clone())
}

/// A minimal OAuth token server for both steps of the Coze flow, for tests
/// that need no real identity provider (readiness): `POST /token` answers
/// client credentials (`client_id` + `client_secret` in the form) with an
/// ID token, and an RFC 8693 exchange of a token it issued with an access
/// token; anything else is `401 {"error":"invalid_client"}`. It stops when
/// dropped (run it on a runtime of its own to also cut open connections).
pub struct TokenServer {
    /// Its base URL; the endpoint is `<url>/token`.
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TokenServer {
    /// Starts it on an ephemeral 127.0.0.1 port, accepting `client_id` with
    /// `client_secret`.
    pub async fn spawn(client_id: &str, client_secret: &str) -> std::io::Result<TokenServer> {
        type Form = axum::Form<BTreeMap<String, String>>;
        let client = (client_id.to_string(), client_secret.to_string());
        let issued = Arc::new(Mutex::new(HashSet::<String>::new()));
        let app = Router::new().route(
            "/token",
            post(move |axum::Form(f): Form| {
                let (client, issued) = (client.clone(), issued.clone());
                async move {
                    let field = |k: &str| f.get(k).map(String::as_str);
                    let ok = if let Some(subject) = field("subject_token") {
                        issued.lock().contains(subject)
                    } else {
                        field("client_id") == Some(client.0.as_str())
                            && field("client_secret") == Some(client.1.as_str())
                    };
                    if !ok {
                        let body = json!({"error": "invalid_client"});
                        return (StatusCode::UNAUTHORIZED, Json(body)).into_response();
                    }
                    let token = format!("tok-{}", issued.lock().len() + 1);
                    issued.lock().insert(token.clone());
                    let body =
                        json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600});
                    Json(body).into_response()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(TokenServer { url, task })
    }
}
