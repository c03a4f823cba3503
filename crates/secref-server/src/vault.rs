//! A Vault-compatible read API, so Vault clients (hvac, the Vault CLI,
//! secref's own `openbao+kv2://` provider) can read secrets from
//! `secref serve`.
//!
//! | route | answers |
//! |---|---|
//! | `GET /v1/<mount>/data/<path>[?version=N]` | KV v2 read; deleted / destroyed versions are 404 with the version's metadata, as Vault does |
//! | `GET /v1/<mount>/metadata/<path>` | KV v2 metadata with every version's state |
//! | `POST /v1/sys/wrapping/unwrap` | the wrapped answer, once |
//! | `GET /v1/auth/token/lookup-self` | facts about the caller's token (never the token) |
//!
//! Any of these with `X-Vault-Wrap-TTL` answers with a single-use wrapping
//! token instead of the data (data reads, metadata reads, `lookup-self`,
//! and `unwrap` itself, which re-wraps). Outstanding wrapping tokens are held
//! at most `max_wraps_per_principal` per caller (default
//! [`DEFAULT_WRAP_QUOTA`]); past it that caller's wrapped reads are 503
//! (retryable) and nobody else's are affected. Callers authenticate with the
//! server's bearer token sent as `X-Vault-Token` (or `Authorization:
//! Bearer`); access rules apply to the reference
//! `openbao+kv2://<mount>/<path>`. Every error — unknown path (404), wrong
//! method (405), bad input (400), too large a body (413), no or a bad token
//! (403) — is Vault's `{"errors":[…]}` body.
//!
//! When the resolver has a `[policy]`, each read (`execute`) and metadata
//! read (`metadata_read`) of that reference is also decided by it, on behalf
//! of [`AppState::request_context`](crate::AppState::request_context)
//! (subject = the token's name; `x-aud`, `x-jti`, `x-cnf-jkt`, … from the
//! headers), through [`secref::Resolver::authorize_as`]: a refusal is 403
//! `{"errors":["permission denied"]}`, a decision point outage 503, and a
//! grant's `wrap_ttl` obligation makes the read answer wrapped with that
//! TTL whatever `X-Vault-Wrap-TTL` says.
//!
//! **Where the data comes from.** secref's local store has no versions, so
//! this API serves an in-memory versioned KV v2 store ([`Kv2Store`]), seeded
//! at start from the JSON file named by `SECREF_SERVE_VAULT_SEED` (format in
//! [`Kv2Store::from_seed_json`]); without it the store is empty. It is a
//! faithful stand-in for KV v2 semantics (tests, local development), not a
//! persistent secret store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use parking_lot::RwLock;
use secref::policy::Authorization;
use secref::provider::Action;
use secref::{Error, Result, SecretRef};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::auth::{Caller, Principal};
use crate::expiring::{deadline, Expiring};
use crate::{AppState, Logged};

/// The environment variable naming the seed file.
pub const SEED_ENV: &str = "SECREF_SERVE_VAULT_SEED";

/// Longest wrap TTL accepted (Vault's default max is 32 days; keep it short).
const MAX_WRAP_TTL: Duration = Duration::from_secs(24 * 3600);

/// The default `max_wraps_per_principal`: outstanding wrapping tokens one
/// caller may hold; beyond it that caller's wrapped reads are answered 503
/// (retryable) instead of growing memory without bound.
pub const DEFAULT_WRAP_QUOTA: usize = 1_000;

/// The Vault API's routes over an in-memory KV v2 store seeded from
/// [`SEED_ENV`]. An unreadable seed makes every Vault request answer 500
/// (and is logged) rather than silently serving an empty store.
pub fn router(state: AppState) -> Router {
    let store = match std::env::var_os(SEED_ENV) {
        None => Ok(Kv2Store::default()),
        Some(path) => Kv2Store::from_seed_file(std::path::Path::new(&path)),
    };
    match store {
        Ok(store) => router_with_store(state, Arc::new(store)),
        Err(e) => {
            tracing::error!(error = %e, "vault API disabled: invalid {SEED_ENV}");
            Router::new().route("/v1/{*rest}", any(seed_broken))
        }
    }
}

async fn seed_broken() -> Response {
    vault_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the vault API's seed file is invalid; see the server log",
    )
}

/// The Vault API's routes over `store`.
pub fn router_with_store(state: AppState, store: Arc<Kv2Store>) -> Router {
    let api = Api {
        wraps: Arc::new(Expiring::new(state.config().max_wraps_per_principal)),
        state,
        store,
    };
    Router::new()
        .route("/v1/auth/token/lookup-self", get(lookup_self))
        .route("/v1/sys/wrapping/unwrap", post(unwrap))
        .route("/v1/{mount}/data/{*path}", get(read_data))
        .route("/v1/{mount}/metadata/{*path}", get(read_metadata))
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(api)
}

/// An unknown path under `/v1/` (not a SecFlow one), in Vault's shape.
pub async fn not_found() -> Response {
    vault_error(StatusCode::NOT_FOUND, "unsupported path")
}

async fn method_not_allowed() -> Response {
    vault_error(StatusCode::METHOD_NOT_ALLOWED, "unsupported operation")
}

#[derive(Clone)]
struct Api {
    state: AppState,
    store: Arc<Kv2Store>,
    /// Wrapping token → wrapped answer, owned by the caller who wrapped it.
    /// Removed on first use or expiry.
    wraps: Arc<Expiring<String, Value>>,
}

/// An in-memory, versioned KV v2 store keyed by `<mount>/<path>`.
#[derive(Debug, Default)]
pub struct Kv2Store {
    secrets: RwLock<BTreeMap<String, Kv2Secret>>,
}

#[derive(Debug, Clone)]
struct Kv2Secret {
    created_time: String,
    updated_time: String,
    custom_metadata: Option<Map<String, Value>>,
    versions: Vec<Kv2Version>,
}

#[derive(Debug, Clone)]
struct Kv2Version {
    /// `None` once destroyed.
    data: Option<Map<String, Value>>,
    created_time: String,
    deletion_time: String,
    destroyed: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedSecret {
    #[serde(default)]
    custom_metadata: Option<Map<String, Value>>,
    versions: Vec<SeedVersion>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedVersion {
    data: Map<String, Value>,
    #[serde(default)]
    created_time: Option<String>,
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    destroyed: bool,
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(SystemTime::now()).to_string()
}

impl Kv2Store {
    /// Parses a seed: an object from `<mount>/<path>` to
    /// `{"custom_metadata": {…}?, "versions": [{"data": {…}, "created_time"?, "deleted"?, "destroyed"?}, …]}`,
    /// versions numbered from 1 in order.
    ///
    /// ```
    /// let s = secref_server::vault::Kv2Store::from_seed_json(r#"{
    ///   "secret/myapp/api": {"versions": [{"data": {"token": "a"}}, {"data": {"token": "b"}, "deleted": true}]}
    /// }"#).unwrap();
    /// assert_eq!(s.current_version("secret/myapp/api"), Some(2));
    /// assert!(secref_server::vault::Kv2Store::from_seed_json(r#"{"secret/x": {"verions": []}}"#).is_err());
    /// ```
    pub fn from_seed_json(text: &str) -> Result<Kv2Store> {
        // Errors name the problem, never the seed's values.
        let seed: BTreeMap<String, SeedSecret> = serde_json::from_str(text).map_err(|e| {
            Error::config(format!(
                "vault seed: invalid JSON or shape at line {} column {}",
                e.line(),
                e.column()
            ))
        })?;
        let store = Kv2Store::default();
        for (key, s) in seed {
            let segs: Vec<&str> = key.split('/').collect();
            let plain = |x: &str| {
                !x.is_empty()
                    && x.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                    && x != "."
                    && x != ".."
            };
            if segs.len() < 2 || !segs.iter().all(|x| plain(x)) {
                return Err(Error::config(format!(
                    "vault seed: key '{key}' must be <mount>/<path> of A-Z a-z 0-9 . _ - segments"
                )));
            }
            if s.versions.is_empty() {
                return Err(Error::config(format!(
                    "vault seed: '{key}' has no versions"
                )));
            }
            let now = now_rfc3339();
            let versions = s
                .versions
                .into_iter()
                .map(|v| Kv2Version {
                    data: (!v.destroyed).then_some(v.data),
                    created_time: v.created_time.unwrap_or_else(|| now.clone()),
                    deletion_time: if v.deleted && !v.destroyed {
                        now.clone()
                    } else {
                        String::new()
                    },
                    destroyed: v.destroyed,
                })
                .collect::<Vec<_>>();
            store.secrets.write().insert(
                key,
                Kv2Secret {
                    created_time: versions[0].created_time.clone(),
                    updated_time: versions[versions.len() - 1].created_time.clone(),
                    custom_metadata: s.custom_metadata,
                    versions,
                },
            );
        }
        Ok(store)
    }

    /// Reads and parses a seed file.
    pub fn from_seed_file(path: &std::path::Path) -> Result<Kv2Store> {
        let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            Error::config(format!(
                "vault seed: cannot read {}: {}",
                path.display(),
                e.kind()
            ))
        })?);
        Kv2Store::from_seed_json(&text)
    }

    /// Writes a new version; returns its number.
    pub fn put(&self, key: &str, data: Map<String, Value>) -> u64 {
        let now = now_rfc3339();
        let mut all = self.secrets.write();
        let s = all.entry(key.to_string()).or_insert_with(|| Kv2Secret {
            created_time: now.clone(),
            updated_time: now.clone(),
            custom_metadata: None,
            versions: Vec::new(),
        });
        s.versions.push(Kv2Version {
            data: Some(data),
            created_time: now.clone(),
            deletion_time: String::new(),
            destroyed: false,
        });
        s.updated_time = now;
        s.versions.len() as u64
    }

    /// Soft-deletes a version; false if there is no such version.
    pub fn delete_version(&self, key: &str, version: u64) -> bool {
        self.with_version(key, version, |v| {
            if !v.destroyed {
                v.deletion_time = now_rfc3339();
            }
        })
    }

    /// Destroys a version's data; false if there is no such version.
    pub fn destroy_version(&self, key: &str, version: u64) -> bool {
        self.with_version(key, version, |v| {
            v.destroyed = true;
            v.data = None;
        })
    }

    /// The newest version number, if the secret exists.
    pub fn current_version(&self, key: &str) -> Option<u64> {
        self.secrets
            .read()
            .get(key)
            .map(|s| s.versions.len() as u64)
    }

    fn with_version(&self, key: &str, version: u64, f: impl FnOnce(&mut Kv2Version)) -> bool {
        let mut all = self.secrets.write();
        let Some(v) = all
            .get_mut(key)
            .and_then(|s| s.versions.get_mut((version as usize).wrapping_sub(1)))
        else {
            return false;
        };
        f(v);
        true
    }
}

/// An error in Vault's shape (for the shared layers too).
pub(crate) fn error(status: StatusCode, msg: &str) -> Response {
    vault_error(status, msg)
}

fn vault_error(status: StatusCode, msg: &str) -> Response {
    let errors: Vec<&str> = if msg.is_empty() { vec![] } else { vec![msg] };
    (status, axum::Json(json!({ "errors": errors }))).into_response()
}

fn envelope(data: Value) -> Value {
    json!({
        "request_id": uuid::Uuid::new_v4().to_string(),
        "lease_id": "",
        "renewable": false,
        "lease_duration": 0,
        "data": data,
        "wrap_info": null,
        "warnings": null,
        "auth": null,
        "mount_type": "kv",
    })
}

fn with_principal(mut resp: Response, p: &Principal) -> Response {
    resp.extensions_mut().insert(Logged {
        principal: p.name.clone(),
        items: 1,
    });
    resp
}

fn denied() -> Response {
    vault_error(StatusCode::FORBIDDEN, "permission denied")
}

/// Checks the caller, the access rules and (when the resolver has one) the
/// policy for `openbao+kv2://<mount>/<path>`; returns the caller and the
/// policy's obligations. A policy refusal is Vault's 403; a policy decision
/// point outage is a 503.
async fn authorize(
    api: &Api,
    caller: Option<Principal>,
    headers: &HeaderMap,
    key: &str,
    action: Action,
) -> std::result::Result<(Principal, Authorization), Box<Response>> {
    let Some(p) = caller else {
        return Err(Box::new(denied()));
    };
    // Rules see the parsed, canonical reference only: a path the grammar
    // rejects (`..`, `//`, `%2f`) is refused before any rule is consulted.
    let Ok(reference) = SecretRef::parse(format!("openbao+kv2://{key}")) else {
        return Err(Box::new(with_principal(
            vault_error(StatusCode::BAD_REQUEST, "invalid path"),
            &p,
        )));
    };
    if !api.state.access().decide(&p, &reference, action).allowed {
        return Err(Box::new(with_principal(denied(), &p)));
    }
    let ctx = api.state.request_context(&p, headers);
    match api
        .state
        .resolver()
        .authorize_as(&ctx, &reference, action)
        .await
    {
        Ok(granted) => Ok((p, granted)),
        Err(e) if e.retryable() => Err(Box::new(with_principal(
            vault_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the policy decision point is unavailable",
            ),
            &p,
        ))),
        Err(e)
            if matches!(
                e.code(),
                secref::ErrorCode::PermissionDenied | secref::ErrorCode::TenantMountMismatch
            ) =>
        {
            Err(Box::new(with_principal(denied(), &p)))
        }
        // The path does not make a valid reference.
        Err(_) => Err(Box::new(with_principal(
            vault_error(StatusCode::BAD_REQUEST, "invalid path"),
            &p,
        ))),
    }
}

fn version_meta(v: &Kv2Version, n: u64, s: &Kv2Secret) -> Value {
    json!({
        "created_time": v.created_time,
        "custom_metadata": s.custom_metadata,
        "deletion_time": v.deletion_time,
        "destroyed": v.destroyed,
        "version": n,
    })
}

#[derive(Deserialize)]
struct ReadQuery {
    version: Option<String>,
}

/// The `<mount>/<path>` of a request; a path axum cannot decode (bad
/// percent-encoding) is Vault's 400.
fn kv_key(
    path: std::result::Result<Path<(String, String)>, PathRejection>,
) -> std::result::Result<(String, String), Box<Response>> {
    path.map(|Path(p)| p)
        .map_err(|_| Box::new(vault_error(StatusCode::BAD_REQUEST, "invalid path")))
}

/// The wrap TTL a request asks for with `X-Vault-Wrap-TTL` (`None`: no
/// wrapping); an unusable value is Vault's 400.
fn asked_wrap(headers: &HeaderMap) -> std::result::Result<Option<Duration>, Box<Response>> {
    match headers.get("x-vault-wrap-ttl") {
        None => Ok(None),
        Some(v) => match v.to_str().ok().and_then(parse_vault_duration) {
            Some(d) if d > Duration::ZERO && d <= MAX_WRAP_TTL => Ok(Some(d)),
            _ => Err(Box::new(vault_error(
                StatusCode::BAD_REQUEST,
                "invalid wrap TTL",
            ))),
        },
    }
}

/// A 200 answer: wrapped for `owner` when `wrap_ttl` is set, else as is.
fn answer(
    api: &Api,
    owner: &str,
    wrap_ttl: Option<Duration>,
    body: Value,
    creation_path: &str,
) -> Response {
    match wrap_ttl {
        Some(ttl) => wrap(api, owner, body, ttl, creation_path),
        None => axum::Json(body).into_response(),
    }
}

async fn read_data(
    State(api): State<Api>,
    path: std::result::Result<Path<(String, String)>, PathRejection>,
    query: std::result::Result<Query<ReadQuery>, QueryRejection>,
    Caller(caller): Caller,
    headers: HeaderMap,
) -> Response {
    let (mount, path) = match kv_key(path) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    let key = format!("{mount}/{path}");
    let (p, granted) = match authorize(&api, caller, &headers, &key, Action::Read).await {
        Ok(g) => g,
        Err(r) => return *r,
    };
    let Ok(Query(q)) = query else {
        return with_principal(vault_error(StatusCode::BAD_REQUEST, "invalid query"), &p);
    };
    let asked_wrap = match asked_wrap(&headers) {
        Ok(w) => w,
        Err(r) => return with_principal(*r, &p),
    };
    // The policy's wrapping obligation wins over the caller's choice.
    let wrap_ttl = granted.wrap_ttl.map(|t| t.min(MAX_WRAP_TTL)).or(asked_wrap);
    let version = match q.version.as_deref() {
        None | Some("") | Some("0") => None,
        Some(v) => match v.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                return with_principal(vault_error(StatusCode::BAD_REQUEST, "invalid version"), &p)
            }
        },
    };
    let (status, body) = {
        let all = api.store.secrets.read();
        let Some(s) = all.get(&key) else {
            return with_principal(vault_error(StatusCode::NOT_FOUND, ""), &p);
        };
        let n = version.unwrap_or(s.versions.len() as u64);
        let Some(v) = s.versions.get((n as usize).wrapping_sub(1)) else {
            return with_principal(vault_error(StatusCode::NOT_FOUND, ""), &p);
        };
        let meta = version_meta(v, n, s);
        if v.destroyed || !v.deletion_time.is_empty() {
            // Vault's answer for a deleted or destroyed version: 404 with
            // the metadata and null data.
            (
                StatusCode::NOT_FOUND,
                envelope(json!({ "data": null, "metadata": meta })),
            )
        } else {
            (
                StatusCode::OK,
                envelope(json!({ "data": v.data, "metadata": meta })),
            )
        }
    };
    if status == StatusCode::OK {
        let creation_path = format!("{mount}/data/{path}");
        return with_principal(answer(&api, &p.name, wrap_ttl, body, &creation_path), &p);
    }
    with_principal((status, axum::Json(body)).into_response(), &p)
}

/// Stores `body` behind a new single-use wrapping token held by `owner`.
fn wrap(api: &Api, owner: &str, body: Value, ttl: Duration, creation_path: &str) -> Response {
    let token = crate::auth::generate_token();
    let token = format!(
        "hvs.{}",
        token
            .as_text()
            .unwrap_or_default()
            .trim_start_matches("srt_")
    );
    let accessor = uuid::Uuid::new_v4().simple().to_string();
    if api
        .wraps
        .insert(owner, token.clone(), body, deadline(ttl))
        .is_err()
    {
        return vault_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many outstanding wrapping tokens; unwrap or let them expire",
        );
    }
    axum::Json(json!({
        "request_id": uuid::Uuid::new_v4().to_string(),
        "lease_id": "",
        "renewable": false,
        "lease_duration": 0,
        "data": null,
        "wrap_info": {
            "token": token,
            "accessor": accessor,
            "ttl": ttl.as_secs(),
            "creation_time": now_rfc3339(),
            "creation_path": creation_path,
            "wrapped_accessor": "",
        },
        "warnings": null,
        "auth": null,
    }))
    .into_response()
}

/// `60`, `60s`, `5m`, `1h`.
fn parse_vault_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (digits, mult) = match s.as_bytes().last()? {
        b's' => (&s[..s.len() - 1], 1),
        b'm' => (&s[..s.len() - 1], 60),
        b'h' => (&s[..s.len() - 1], 3600),
        _ => (s, 1),
    };
    let n: u64 = digits.parse().ok()?;
    Some(Duration::from_secs(n.checked_mul(mult)?))
}

async fn read_metadata(
    State(api): State<Api>,
    path: std::result::Result<Path<(String, String)>, PathRejection>,
    Caller(caller): Caller,
    headers: HeaderMap,
) -> Response {
    let (mount, path) = match kv_key(path) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    let key = format!("{mount}/{path}");
    let (p, granted) = match authorize(&api, caller, &headers, &key, Action::MetadataRead).await {
        Ok(g) => g,
        Err(r) => return *r,
    };
    let wrap_ttl = match asked_wrap(&headers) {
        Ok(w) => granted.wrap_ttl.map(|t| t.min(MAX_WRAP_TTL)).or(w),
        Err(r) => return with_principal(*r, &p),
    };
    let all = api.store.secrets.read();
    let Some(s) = all.get(&key) else {
        return with_principal(vault_error(StatusCode::NOT_FOUND, ""), &p);
    };
    let versions: Map<String, Value> = s
        .versions
        .iter()
        .enumerate()
        .map(|(i, v)| {
            (
                (i + 1).to_string(),
                json!({
                    "created_time": v.created_time,
                    "deletion_time": v.deletion_time,
                    "destroyed": v.destroyed,
                }),
            )
        })
        .collect();
    let body = envelope(json!({
        "cas_required": false,
        "created_time": s.created_time,
        "current_version": s.versions.len(),
        "custom_metadata": s.custom_metadata,
        "delete_version_after": "0s",
        "max_versions": 0,
        "oldest_version": 0,
        "updated_time": s.updated_time,
        "versions": versions,
    }));
    drop(all);
    let creation_path = format!("{mount}/metadata/{path}");
    with_principal(answer(&api, &p.name, wrap_ttl, body, &creation_path), &p)
}

async fn lookup_self(
    State(api): State<Api>,
    Caller(caller): Caller,
    headers: HeaderMap,
) -> Response {
    let Some(p) = caller else {
        return denied();
    };
    let wrap_ttl = match asked_wrap(&headers) {
        Ok(w) => w,
        Err(r) => return with_principal(*r, &p),
    };
    // Vault also echoes the token as `id`; this server never sends tokens
    // back.
    let body = envelope(json!({
        "accessor": "",
        "creation_time": 0,
        "creation_ttl": 0,
        "display_name": format!("secref-{}", p.name),
        "entity_id": "",
        "expire_time": null,
        "explicit_max_ttl": 0,
        "meta": null,
        "num_uses": 0,
        "orphan": true,
        "path": "auth/token/create",
        "policies": ["default"],
        "renewable": false,
        "ttl": 0,
        "type": "service",
    }));
    with_principal(
        answer(&api, &p.name, wrap_ttl, body, "auth/token/lookup-self"),
        &p,
    )
}

#[derive(Deserialize, Default)]
struct UnwrapBody {
    #[serde(default)]
    token: Option<String>,
}

/// The wrapping token comes in the body (then the header must be a server
/// token, as hvac's `sys.unwrap(token)` sends it) or as `X-Vault-Token`.
/// With `X-Vault-Wrap-TTL` the unwrapped answer is wrapped anew (for the
/// caller who wrapped it first).
async fn unwrap(
    State(api): State<Api>,
    Caller(caller): Caller,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let limit = api.state.config().max_body_bytes;
    let Ok(body) = axum::body::to_bytes(body, limit).await else {
        return vault_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request body exceeds {limit} bytes"),
        );
    };
    let wrap_ttl = match asked_wrap(&headers) {
        Ok(w) => w,
        Err(r) => return *r,
    };
    let parsed: UnwrapBody = if body.is_empty() {
        UnwrapBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(_) => return vault_error(StatusCode::BAD_REQUEST, "failed to parse JSON input"),
        }
    };
    let wrapping = match parsed.token.filter(|t| !t.is_empty()) {
        Some(t) => {
            if caller.is_none() {
                return denied();
            }
            t
        }
        None => match headers.get("x-vault-token").and_then(|v| v.to_str().ok()) {
            Some(t) => t.to_string(),
            None => return denied(),
        },
    };
    match api.wraps.take(&wrapping) {
        Some((owner, body)) => answer(&api, &owner, wrap_ttl, body, "sys/wrapping/unwrap"),
        None => vault_error(
            StatusCode::BAD_REQUEST,
            "wrapping token is not valid or does not exist",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_vault_duration("60"), Some(Duration::from_secs(60)));
        assert_eq!(parse_vault_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_vault_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_vault_duration("x"), None);
        assert_eq!(parse_vault_duration(""), None);
    }

    #[test]
    fn store_versions() {
        let s = Kv2Store::default();
        let mut m = Map::new();
        m.insert("a".into(), json!("1"));
        assert_eq!(s.put("secret/x", m.clone()), 1);
        assert_eq!(s.put("secret/x", m), 2);
        assert!(s.delete_version("secret/x", 1));
        assert!(s.destroy_version("secret/x", 2));
        assert!(!s.delete_version("secret/x", 3));
        assert!(!s.delete_version("secret/x", 0));
        let all = s.secrets.read();
        assert!(all["secret/x"].versions[1].data.is_none());
    }
}
