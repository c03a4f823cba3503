//! A faithful Infisical API double (universal auth, secrets v3, folders v1).
//!
//! It serves what `infisical-httpx-sdk` 1.1.0 and secref's provider use,
//! with Infisical's JSON shapes and error bodies
//! (`{"reqId","statusCode","message","error"}`):
//!
//! * `POST /api/v1/auth/universal-auth/login` → `{"accessToken","expiresIn",
//!   "accessTokenMaxTTL","tokenType"}`, the token an HS256 JWT with
//!   `iat`/`exp` (TTL seedable, to exercise renewal);
//! * `GET /api/v3/secrets/raw` (list) and `GET /api/v3/secrets/raw/{name}`
//!   (`version`, `viewSecretValue`: hidden values read `<hidden-by-infisical>`);
//! * `GET /api/v1/folders[/]`.
//!
//! It counts logins per client, records every request line, can revoke all
//! issued tokens and can be told to fail the next requests with a status.
//!
//! Seed (JSON):
//!
//! ```json
//! {"token_ttl_seconds": 600,
//!  "clients": [{"client_id": "cid", "client_secret": "csec", "projects": ["proj-1"]}],
//!  "tokens": ["<a JWT accepted verbatim>"],
//!  "secrets": [{"project": "proj-1", "environment": "dev", "path": "/app",
//!               "key": "DB_PASS", "values": ["v1", "v2"], "comment": "", "tags": ["db"]}],
//!  "folders": [{"project": "proj-1", "environment": "dev", "path": "/empty"}]}
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Sha256;

/// The seed: clients, static tokens, secrets and folders.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    /// Lifetime of issued access tokens, in seconds (default 600).
    #[serde(default)]
    pub token_ttl_seconds: Option<u64>,
    /// Machine identities for universal auth.
    #[serde(default)]
    pub clients: Vec<SeedClient>,
    /// Access tokens accepted verbatim (if one is a JWT, its `exp` is honoured).
    #[serde(default)]
    pub tokens: Vec<String>,
    /// Secrets; each value in `values` is one version, oldest first.
    #[serde(default)]
    pub secrets: Vec<SeedSecret>,
    /// Extra (possibly empty) folders.
    #[serde(default)]
    pub folders: Vec<SeedFolder>,
}

/// A universal-auth machine identity.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedClient {
    /// Its client id.
    pub client_id: String,
    /// Its client secret.
    pub client_secret: String,
    /// Projects it may read (default: all); others answer 403.
    #[serde(default)]
    pub projects: Option<Vec<String>>,
}

/// One secret with its versions.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedSecret {
    /// Project (workspace) id.
    pub project: String,
    /// Environment slug.
    pub environment: String,
    /// Folder path (default `/`).
    #[serde(default = "root")]
    pub path: String,
    /// The key.
    pub key: String,
    /// Values by version, oldest first (version numbers start at 1).
    pub values: Vec<String>,
    /// The comment.
    #[serde(default)]
    pub comment: String,
    /// Tag slugs.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// A folder.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedFolder {
    /// Project id.
    pub project: String,
    /// Environment slug.
    pub environment: String,
    /// Folder path.
    pub path: String,
}

fn root() -> String {
    "/".to_string()
}

/// One request the double received (method, path and raw query).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// The HTTP method.
    pub method: String,
    /// The path, percent-encoded as received.
    pub path: String,
    /// The raw query string.
    pub query: String,
}

#[derive(Default)]
struct Inner {
    seed: Seed,
    ttl: u64,
    logins: HashMap<String, u64>,
    /// Issued tokens still valid (until revoked), with their client.
    issued: HashMap<String, String>,
    requests: Vec<RecordedRequest>,
    faults: VecDeque<u16>,
    expired_rejections: u64,
    req_counter: u64,
}

struct Shared {
    inner: Mutex<Inner>,
    key: [u8; 32],
}

type AppState = Arc<Shared>;

/// A running double on 127.0.0.1.
pub struct InfisicalDouble {
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    shared: AppState,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for InfisicalDouble {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl InfisicalDouble {
    /// Starts the double on an ephemeral loopback port.
    pub async fn start(seed: Seed) -> std::io::Result<InfisicalDouble> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                ttl: seed.token_ttl_seconds.unwrap_or(600),
                seed,
                ..Inner::default()
            }),
            key: signing_key(),
        });
        let app = router(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(InfisicalDouble { url, shared, task })
    }

    /// Successful logins by `client_id`.
    pub fn logins(&self, client_id: &str) -> u64 {
        self.shared
            .inner
            .lock()
            .logins
            .get(client_id)
            .copied()
            .unwrap_or(0)
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.inner.lock().requests.clone()
    }

    /// Forgets every issued token (they answer 401 from now on).
    pub fn revoke_issued_tokens(&self) {
        self.shared.inner.lock().issued.clear();
    }

    /// Sets the lifetime of tokens issued from now on.
    pub fn set_token_ttl(&self, secs: u64) {
        self.shared.inner.lock().ttl = secs;
    }

    /// Makes the next resource requests fail with these statuses, in order.
    pub fn fail_next(&self, statuses: &[u16]) {
        self.shared.inner.lock().faults.extend(statuses);
    }

    /// How many requests came with an expired token.
    pub fn expired_rejections(&self) -> u64 {
        self.shared.inner.lock().expired_rejections
    }
}

/// `secref-fake infisical --seed <json file>`: serves until killed; returns
/// (exit code 2) only on bad arguments.
pub fn run_cli(args: &[String]) -> std::process::ExitCode {
    let usage = |msg: String| {
        eprintln!("secref-fake infisical: {msg}");
        std::process::ExitCode::from(2)
    };
    let seed = match args {
        [flag, path] if flag == "--seed" => {
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => return usage(format!("cannot read {path}: {e}")),
            };
            match serde_json::from_str::<Seed>(&text) {
                Ok(s) => s,
                Err(e) => return usage(format!("invalid seed: {e}")),
            }
        }
        [] => Seed::default(),
        _ => return usage("usage: secref-fake infisical [--seed <file.json>]".into()),
    };
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    rt.block_on(async {
        let double = InfisicalDouble::start(seed).await.expect("bind 127.0.0.1");
        println!("listening on {}", double.url);
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        std::future::pending::<std::process::ExitCode>().await
    })
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/auth/universal-auth/login", post(login))
        .route("/api/v3/secrets/raw", get(list_secrets))
        .route("/api/v3/secrets/raw/", get(list_secrets))
        .route("/api/v3/secrets/raw/{name}", get(retrieve_secret))
        .route("/api/v1/folders", get(list_folders))
        .route("/api/v1/folders/", get(list_folders))
        .fallback(|| async { error(404, "NotFound", "Route not found", "req-fallback") })
        .with_state(state)
}

// ---- helpers ---------------------------------------------------------------

fn signing_key() -> [u8; 32] {
    use std::hash::{BuildHasher, Hasher};
    let mut key = [0u8; 32];
    for chunk in key.chunks_mut(8) {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(now_nanos());
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    key
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

fn now_secs() -> u64 {
    (now_nanos() / 1_000_000_000) as u64
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn sign_jwt(key: &[u8], claims: &Value) -> String {
    let head = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = b64(claims.to_string().as_bytes());
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(format!("{head}.{body}").as_bytes());
    format!("{head}.{body}.{}", b64(&mac.finalize().into_bytes()))
}

fn jwt_exp(token: &str) -> Option<u64> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice::<Value>(&bytes)
        .ok()?
        .get("exp")?
        .as_u64()
}

fn error(status: u16, name: &str, message: &str, req_id: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        code,
        Json(json!({"reqId": req_id, "statusCode": status, "message": message, "error": name})),
    )
        .into_response()
}

fn error_name(status: u16) -> &'static str {
    match status {
        400 => "BadRequest",
        401 => "UnauthorizedError",
        403 => "PermissionDenied",
        404 => "NotFound",
        429 => "RateLimitExceeded",
        _ => "InternalServerError",
    }
}

fn record(state: &AppState, method: &Method, uri: &Uri) -> String {
    let mut inner = state.inner.lock();
    inner.req_counter += 1;
    inner.requests.push(RecordedRequest {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or("").to_string(),
    });
    format!("req-{}", inner.req_counter)
}

/// Who the bearer token belongs to: `Ok(Some(client))` for an issued token,
/// `Ok(None)` for a seeded static token, `Err` for a 401/fault response.
fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    req_id: &str,
) -> Result<Option<String>, Box<Response>> {
    let mut inner = state.inner.lock();
    if let Some(status) = inner.faults.pop_front() {
        return Err(Box::new(error(
            status,
            error_name(status),
            "Injected failure",
            req_id,
        )));
    }
    let Some(token) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return Err(Box::new(error(
            401,
            "UnauthorizedError",
            "Token missing",
            req_id,
        )));
    };
    if jwt_exp(token).is_some_and(|exp| exp <= now_secs()) {
        inner.expired_rejections += 1;
        return Err(Box::new(error(
            401,
            "UnauthorizedError",
            "Token expired",
            req_id,
        )));
    }
    if let Some(client) = inner.issued.get(token) {
        return Ok(Some(client.clone()));
    }
    if inner.seed.tokens.iter().any(|t| t == token) {
        return Ok(None);
    }
    Err(Box::new(error(
        401,
        "UnauthorizedError",
        "Invalid token",
        req_id,
    )))
}

fn may_read(inner: &Inner, client: &Option<String>, project: &str) -> bool {
    let Some(id) = client else { return true };
    inner
        .seed
        .clients
        .iter()
        .find(|c| &c.client_id == id)
        .and_then(|c| c.projects.as_ref())
        .is_none_or(|ps| ps.iter().any(|p| p == project))
}

fn secret_json(s: &SeedSecret, version: usize, view_value: bool) -> Value {
    let id = format!(
        "{:016x}",
        fnv(&format!(
            "{}|{}|{}|{}",
            s.project, s.environment, s.path, s.key
        ))
    );
    let tags: Vec<Value> = s
        .tags
        .iter()
        .map(|t| json!({"id": format!("tag-{t}"), "slug": t, "color": "#3b82f6", "name": t}))
        .collect();
    json!({
        "id": id,
        "_id": id,
        "workspace": s.project,
        "environment": s.environment,
        "version": version,
        "type": "shared",
        "secretKey": s.key,
        "secretValue": if view_value { s.values[version - 1].as_str() } else { "<hidden-by-infisical>" },
        "secretValueHidden": !view_value,
        "secretComment": s.comment,
        "secretReminderNote": null,
        "secretReminderRepeatDays": null,
        "skipMultilineEncoding": false,
        "secretPath": s.path,
        "folderId": format!("folder-{:08x}", fnv(&s.path) as u32),
        "tags": tags,
        "secretMetadata": [],
        "isRotatedSecret": false,
        "rotationId": null,
        "createdAt": "2026-01-01T00:00:00.000Z",
        "updatedAt": format!("2026-01-{:02}T00:00:00.000Z", version.min(28)),
    })
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

fn missing_params(q: &HashMap<String, String>, names: &[&str], req_id: &str) -> Option<Response> {
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !q.contains_key(*n))
        .collect();
    (!missing.is_empty()).then(|| {
        error(
            400,
            "BadRequest",
            &format!("Missing required parameters: {}", missing.join(", ")),
            req_id,
        )
    })
}

fn project_known(inner: &Inner, project: &str, env: &str) -> bool {
    inner
        .seed
        .secrets
        .iter()
        .map(|s| (&s.project, &s.environment))
        .chain(
            inner
                .seed
                .folders
                .iter()
                .map(|f| (&f.project, &f.environment)),
        )
        .any(|(p, e)| p == project && e == env)
}

fn norm_path(p: &str) -> String {
    let trimmed = p.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else if trimmed.starts_with('/') {
        trimmed.to_string()
    } else {
        format!("/{trimmed}")
    }
}

fn view_value(q: &HashMap<String, String>) -> bool {
    q.get("viewSecretValue").is_none_or(|v| v != "false")
}

// ---- handlers --------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LoginBody {
    client_id: String,
    client_secret: String,
}

async fn login(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    body: Option<Json<LoginBody>>,
) -> Response {
    let req_id = record(&state, &method, &uri);
    let Some(Json(body)) = body else {
        return error(400, "BadRequest", "Invalid request body", &req_id);
    };
    let mut inner = state.inner.lock();
    let ok = inner
        .seed
        .clients
        .iter()
        .any(|c| c.client_id == body.client_id && c.client_secret == body.client_secret);
    if !ok {
        return error(401, "UnauthorizedError", "Invalid credentials", &req_id);
    }
    *inner.logins.entry(body.client_id.clone()).or_default() += 1;
    let n = inner.logins[&body.client_id];
    let iat = now_secs();
    let ttl = inner.ttl;
    // JWT times are whole seconds: round the expiry up so that a token lives
    // at least `ttl` seconds. `iat + ttl` (rounded down) made a 1 s token
    // live anywhere between 0 and 1 s, and a request that crossed the second
    // boundary between the client's expiry check and this server's got a 401.
    let exp = now_nanos().div_ceil(1_000_000_000) as u64 + ttl;
    let token = sign_jwt(
        &state.key,
        &json!({
            "identityId": body.client_id,
            "authTokenType": "identityAccessToken",
            "tokenVersion": n,
            "iat": iat,
            "exp": exp,
        }),
    );
    inner.issued.insert(token.clone(), body.client_id);
    Json(json!({
        "accessToken": token,
        "expiresIn": ttl,
        "accessTokenMaxTTL": ttl.max(2_592_000),
        "tokenType": "Bearer",
    }))
    .into_response()
}

/// The 403 / 404 a real Infisical gives for a project the client may not
/// read, or an environment the project does not have; `None` when allowed.
fn project_access(
    inner: &Inner,
    client: &Option<String>,
    project: &str,
    env: &str,
    what: &str,
    req_id: &str,
) -> Option<Response> {
    if !may_read(inner, client, project) {
        return Some(error(
            403,
            "PermissionDenied",
            &format!("You are not allowed to read {what}"),
            req_id,
        ));
    }
    if !project_known(inner, project, env) {
        return Some(error(
            404,
            "NotFound",
            &format!("Environment with slug '{env}' in project with ID {project} not found"),
            req_id,
        ));
    }
    None
}

/// What both list endpoints check first, in Infisical's order: the
/// request is recorded, the token checked, then `workspaceId` and
/// `environment` required, then the client's access to that project.
fn scoped_listing(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    what: &str,
) -> Result<(), Box<Response>> {
    let req_id = record(state, method, uri);
    let client = authorize(state, headers, &req_id)?;
    if let Some(r) = missing_params(q, &["workspaceId", "environment"], &req_id) {
        return Err(Box::new(r));
    }
    let inner = state.inner.lock();
    let (project, env) = (&q["workspaceId"], &q["environment"]);
    match project_access(&inner, &client, project, env, what, &req_id) {
        Some(r) => Err(Box::new(r)),
        None => Ok(()),
    }
}

async fn list_secrets(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = scoped_listing(&state, &method, &uri, &headers, &q, "secrets") {
        return *r;
    }
    let inner = state.inner.lock();
    let (project, env) = (&q["workspaceId"], &q["environment"]);
    let path = norm_path(q.get("secretPath").map(String::as_str).unwrap_or("/"));
    let recursive = q.get("recursive").is_some_and(|v| v == "true");
    let view = view_value(&q);
    let secrets: Vec<Value> = inner
        .seed
        .secrets
        .iter()
        .filter(|s| &s.project == project && &s.environment == env)
        .filter(|s| {
            let p = norm_path(&s.path);
            p == path || (recursive && (path == "/" || p.starts_with(&format!("{path}/"))))
        })
        .map(|s| secret_json(s, s.values.len(), view))
        .collect();
    Json(json!({"secrets": secrets, "imports": []})).into_response()
}

async fn retrieve_secret(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let req_id = record(&state, &method, &uri);
    let client = match authorize(&state, &headers, &req_id) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    if let Some(r) = missing_params(&q, &["workspaceId", "environment"], &req_id) {
        return r;
    }
    let inner = state.inner.lock();
    let (project, env) = (&q["workspaceId"], &q["environment"]);
    if !may_read(&inner, &client, project) {
        return error(
            403,
            "PermissionDenied",
            "You are not allowed to read secrets",
            &req_id,
        );
    }
    let path = norm_path(q.get("secretPath").map(String::as_str).unwrap_or("/"));
    let Some(s) = inner.seed.secrets.iter().find(|s| {
        &s.project == project
            && &s.environment == env
            && norm_path(&s.path) == path
            && s.key == name
    }) else {
        return error(
            404,
            "NotFound",
            &format!("Secret with name '{name}' not found"),
            &req_id,
        );
    };
    let version = match q.get("version").map(|v| v.parse::<usize>()) {
        None => s.values.len(),
        Some(Ok(v)) if v >= 1 && v <= s.values.len() => v,
        Some(Ok(_)) => {
            return error(
                404,
                "NotFound",
                &format!("Secret version for '{name}' not found"),
                &req_id,
            )
        }
        Some(Err(_)) => return error(400, "BadRequest", "version must be a number", &req_id),
    };
    Json(json!({"secret": secret_json(s, version, view_value(&q))})).into_response()
}

async fn list_folders(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = scoped_listing(&state, &method, &uri, &headers, &q, "folders") {
        return *r;
    }
    let inner = state.inner.lock();
    let (project, env) = (&q["workspaceId"], &q["environment"]);
    let parent = norm_path(q.get("path").map(String::as_str).unwrap_or("/"));
    // Every folder on the way to a secret or seeded folder exists.
    let mut all: BTreeSet<String> = BTreeSet::new();
    let paths = inner
        .seed
        .secrets
        .iter()
        .filter(|s| &s.project == project && &s.environment == env)
        .map(|s| norm_path(&s.path))
        .chain(
            inner
                .seed
                .folders
                .iter()
                .filter(|f| &f.project == project && &f.environment == env)
                .map(|f| norm_path(&f.path)),
        );
    for p in paths {
        let mut acc = String::new();
        for seg in p.split('/').filter(|s| !s.is_empty()) {
            acc.push('/');
            acc.push_str(seg);
            all.insert(acc.clone());
        }
    }
    let env_id = format!("env-{:08x}", fnv(&format!("{project}|{env}")) as u32);
    let mut children: BTreeMap<String, Value> = BTreeMap::new();
    for p in &all {
        let (dir, name) = p.rsplit_once('/').expect("starts with /");
        if norm_path(dir) == parent {
            children.insert(
                name.to_string(),
                json!({
                    "id": format!("folder-{:08x}", fnv(p) as u32),
                    "name": name,
                    "envId": env_id,
                    "parentId": format!("folder-{:08x}", fnv(&parent) as u32),
                    "version": 1,
                    "isReserved": false,
                    "createdAt": "2026-01-01T00:00:00.000Z",
                    "updatedAt": "2026-01-01T00:00:00.000Z",
                }),
            );
        }
    }
    Json(json!({"folders": children.into_values().collect::<Vec<_>>()})).into_response()
}
