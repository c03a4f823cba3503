//! `secret://<environment>/<service>/<kind>/<name>`: the SecFlow Runtime API,
//! wire-compatible with `secflow-sdk` 0.1.9.
//!
//! # Configuration
//!
//! | source | key | default | rule |
//! |---|---|---|---|
//! | env / `[secflow] base_url` | `SECFLOW_BASE_URL` | `https://secflow.intflow.dev` | `https://`, or `http://` for loopback only ([`validate_base_url`]) |
//! | env / `[secflow] token` (a reference), `token_env` or `token_file` | `SECFLOW_SDK_TOKEN` | — (required) | trimmed, non-empty; held as a [`Secret`] |
//! | env / `[secflow] target_environment` | `SECFLOW_TARGET_ENVIRONMENT` | `dev` | `dev`, `stage`, `prod` or `shared` |
//! | env / `[secflow] timeout_seconds` | `SECFLOW_TIMEOUT_SECONDS` | `30` | > 0 and ≤ 300 ([`parse_timeout`]) |
//!
//! A `[secflow]` table wins over the environment key by key; `token_env`
//! names the variable holding the token (default `SECFLOW_SDK_TOKEN`).
//! Dotenv files are applied to the [`Env`] first ([`Env::apply_dotenv`]).
//!
//! # Transport
//!
//! The shared transport ([`crate::http::HttpClient`]: one pooled keep-alive
//! client; the SDK opens a connection per request). Redirects are never
//! followed (`3xx` → `redirect_refused`, so the token never reaches another
//! host); bodies are capped at 4 MiB; the timeout covers the whole request
//! (the SDK's covers each socket operation).
//!
//! Every call is `POST` with `{"request_id","trace_id","target_environment",
//! "purpose","items":[{"item_id":"item-N",…}]}`; ids are `secref-<uuid4>`.
//! The wire types live in [`wire`], shared with `secref serve`.
//! Batches above 100 references are split (`max_batch` is 100 for resolves;
//! validate/metadata/permission checks are split here).
//!
//! **Retries and request ids.** The resolver retries retryable failures
//! through [`crate::RetryPolicy::run`]; `request_id`/`trace_id` are those of
//! the logical call ([`crate::http::call_ids`]), so a retry re-sends the
//! same ids, as the SDK does, and every other call gets fresh ones.
//!
//! # Error mapping
//!
//! The server's code is kept ([`Error::remote_code`]), and so are its
//! `retryable` flag and request id. Codes map as follows (request-level HTTP
//! 401 is always `unauthenticated`):
//!
//! | SecFlow code | secref code |
//! |---|---|
//! | `NOT_FOUND`, `SECRET_NOT_FOUND`, `REVISION_NOT_FOUND`, `LEASE_NOT_FOUND`, `NAMESPACE_NOT_FOUND` | `not_found` |
//! | `PERMISSION_DENIED`, `ACCESS_DENIED`, `FORBIDDEN`, any `*_DENIED` | `permission_denied` |
//! | `UNAUTHENTICATED`, `UNAUTHORIZED`, `INVALID_TOKEN`, `TOKEN_EXPIRED`, `TOKEN_REVOKED` | `unauthenticated` |
//! | `EXPIRED`, `SECRET_EXPIRED`, `LEASE_EXPIRED`, `REVISION_EXPIRED` | `expired` |
//! | `INVALID_SECRET_REF`, `INVALID_REF`, `INVALID_REFERENCE` | `invalid_reference` |
//! | `INVALID_REQUEST`, `VALIDATION_ERROR`, `BAD_REQUEST`, `PAYLOAD_TOO_LARGE` | `usage` |
//! | `RATE_LIMITED`, `TOO_MANY_REQUESTS`, `QUOTA_EXCEEDED` | `rate_limited` |
//! | `UNAVAILABLE`, `SERVICE_UNAVAILABLE`, `BACKEND_UNAVAILABLE`, `INTERNAL`, `INTERNAL_ERROR`, `TRANSPORT_ERROR`, `HTTP_ERROR` (5xx) | `backend_unavailable` |
//! | `TIMEOUT`, `DEADLINE_EXCEEDED`, `TRANSPORT_TIMEOUT` | `timeout` |
//! | `HTTP_REDIRECT` | `redirect_refused` |
//! | `INVALID_RESPONSE` | `invalid_response` |
//! | any secref code in upper case (what `secref serve` sends) | that code |
//! | anything else | `permission_denied` if the item's `result` is `denied`; else by HTTP status (403, 404, 408/504, 429, 5xx); else `invalid_response` |
//!
//! Transport failures: connect errors and broken connections are
//! `backend_unavailable` (`TRANSPORT_ERROR`), timeouts `timeout`
//! (`TRANSPORT_TIMEOUT`), both retryable. An error status *without* a JSON
//! error body maps by the shared status table ([`crate::http::status_code`]:
//! 5xx retryable like every other provider, though the SDK never retries a
//! bare 503; proxies answer those without bodies).
//!
//! # Cache semantics
//!
//! The resolver's cache gives `SecFlowSecretProvider`'s semantics; its options
//! map onto [`CacheConfig`](crate::CacheConfig) (`[cache]` or
//! `[provider_cache.secflow]` in `secref.toml`):
//!
//! | `SecFlowSecretProvider` | `CacheConfig` |
//! |---|---|
//! | `ttl_seconds=300` | `ttl_seconds = 300` |
//! | `stale_grace_seconds=0` | `stale_grace_seconds = 0` (stale only on retryable request-level errors; not extended) |
//! | `min_refresh_interval_seconds=5` | no equivalent: `Resolver::invalidate` is never rate-limited (the SDK's flight-leak quirk does not exist) |
//! | item failure drops the entry | same (fail closed); `not_found`/`permission_denied` are also remembered for `negative_ttl_seconds` |
//! | one partial `read_many` per refresh | one `resolve:batch` per ≤ 100 refs, single-flight per ref |

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use url::Url;
use zeroize::Zeroizing;

use crate::config::{check_timeout, parse_timeout, validate_base_url, Config, Env};
use crate::error::{Error, ErrorCode, Result};
use crate::http::{self, ClientOptions};
use crate::provider::{
    Action, BatchResult, Lease, LeaseRevocation, Metadata, Permission, Provider, Resolved,
    RevokeReason, Validation,
};
use crate::reference::{self, ParsedRef, RefKind, SecFlowRef, SecretRef};
use crate::secret::Secret;

pub mod wire;

pub use wire::ENVIRONMENTS;
use wire::{ErrorFields, Op, Request, RequestItem, ValueError};

/// The default service URL.
pub const DEFAULT_BASE_URL: &str = "https://secflow.intflow.dev";
/// Most items in one request.
pub const MAX_BATCH: usize = wire::MAX_BATCH_ITEMS;

/// The SecFlow Runtime API client. `Debug` never shows the token.
///
/// ```
/// use secref::config::Env;
/// use secref::providers::secflow::SecFlowProvider;
/// let env = Env::from_pairs([
///     ("SECFLOW_BASE_URL", "http://127.0.0.1:8787/"),
///     ("SECFLOW_SDK_TOKEN", "tok-canary"),
/// ]);
/// let p = SecFlowProvider::from_env(&env).unwrap();
/// assert_eq!(p.base_url().as_str(), "http://127.0.0.1:8787/");
/// assert!(!format!("{p:?}").contains("tok-canary"));
/// assert!(format!("{p:?}").contains("[REDACTED]"));
/// ```
pub struct SecFlowProvider {
    base_url: Url,
    token: Secret,
    target_environment: String,
    timeout: Duration,
    client: http::HttpClient,
}

impl fmt::Debug for SecFlowProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecFlowProvider")
            .field("base_url", &self.base_url.as_str())
            .field("token", &"[REDACTED]")
            .field("target_environment", &self.target_environment)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The `[secflow]` table of `secref.toml`. `token` takes only a reference
/// ([`crate::credentials`] replaces it by its value before this is read).
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecFlowTable {
    token: Option<zeroize::Zeroizing<String>>,
    base_url: Option<String>,
    token_env: Option<String>,
    token_file: Option<PathBuf>,
    target_environment: Option<String>,
    timeout_seconds: Option<f64>,
}

impl SecFlowProvider {
    /// A client for `base_url` (validated) with explicit settings.
    pub fn new(
        base_url: &str,
        token: Secret,
        target_environment: &str,
        timeout: Duration,
    ) -> Result<SecFlowProvider> {
        let base_url = validate_base_url("SECFLOW_BASE_URL", base_url)?;
        let target_environment = target_environment.trim();
        if !ENVIRONMENTS.contains(&target_environment) {
            return Err(Error::config(
                "SECFLOW_TARGET_ENVIRONMENT must be one of dev, stage, prod, shared",
            ));
        }
        if token.is_empty() {
            // The caller may not have read any variable: name none.
            return Err(Error::config("the SecFlow SDK token is empty"));
        }
        let timeout = check_timeout("SECFLOW_TIMEOUT_SECONDS", timeout.as_secs_f64())?;
        let client = ClientOptions::default()
            .timeout(timeout)
            .build_for("secflow")?;
        Ok(SecFlowProvider {
            base_url,
            token,
            target_environment: target_environment.to_string(),
            timeout,
            client,
        })
    }

    /// From `SECFLOW_*` variables (empty values count as unset).
    pub fn from_env(env: &Env) -> Result<SecFlowProvider> {
        SecFlowProvider::from_table(&toml::Table::new(), env)
    }

    /// From a `[secflow]` table, falling back to `SECFLOW_*` per key
    /// (reached through [`SecFlowProvider::from_config`]).
    pub(crate) fn from_table(table: &toml::Table, env: &Env) -> Result<SecFlowProvider> {
        let t: SecFlowTable =
            toml::Value::Table(table.clone())
                .try_into()
                .map_err(|e: toml::de::Error| crate::config::table_error("[secflow] table", &e))?;
        let base_url = t
            .base_url
            .or_else(|| env.get("SECFLOW_BASE_URL").map(str::to_string))
            .unwrap_or_else(|| DEFAULT_BASE_URL.to_string());
        let given = [t.token.is_some(), t.token_env.is_some(), t.token_file.is_some()];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(Error::config(
                "[secflow] takes one of token, token_env and token_file",
            ));
        }
        let token = match (&t.token_env, &t.token_file) {
            _ if t.token.is_some() => {
                let value = t.token.as_deref().map(|v| v.trim()).unwrap_or_default();
                if value.is_empty() {
                    return Err(Error::config("[secflow] token is empty"));
                }
                Secret::from(value)
            }
            // Both set is refused above.
            (_, Some(path)) => {
                let bytes = crate::credfile::read_private_file(path, "SecFlow token file")?
                    .ok_or_else(|| {
                        Error::config(format!(
                            "cannot read SecFlow token file {}: not found",
                            path.display()
                        ))
                    })?;
                let token = Secret::copy_from(bytes.trim_ascii());
                if token.is_empty() {
                    return Err(Error::config(format!(
                        "SecFlow token file {} is empty",
                        path.display()
                    )));
                }
                token
            }
            // Errors name the variable actually read: the renamed one when
            // `token_env` is set, never the default in its place.
            (named, None) => {
                let var = named.as_deref().unwrap_or("SECFLOW_SDK_TOKEN");
                let value = env.get(var).map(str::trim).unwrap_or_default();
                if value.is_empty() {
                    let hint = match named {
                        Some(_) => format!(
                            "set the SecFlow SDK token in {var} (the variable [secflow] token_env names)"
                        ),
                        None => format!("set the SecFlow SDK token in {var}"),
                    };
                    return Err(Error::config(format!("{var} is required")).with_hint(hint));
                }
                Secret::from(value)
            }
        };
        let target = t
            .target_environment
            .or_else(|| env.get("SECFLOW_TARGET_ENVIRONMENT").map(str::to_string))
            .unwrap_or_else(|| "dev".to_string());
        let timeout = match t.timeout_seconds {
            Some(secs) => check_timeout("[secflow] timeout_seconds", secs)?,
            None => match env.get("SECFLOW_TIMEOUT_SECONDS") {
                Some(raw) => parse_timeout("SECFLOW_TIMEOUT_SECONDS", raw)?,
                None => Duration::from_secs(30),
            },
        };
        SecFlowProvider::new(&base_url, token, &target, timeout)
    }

    /// From a loaded config: the `[secflow]` table if present (the table
    /// wins setting by setting, `SECFLOW_*` fills in), else the environment
    /// if `SECFLOW_SDK_TOKEN` is set, else `None` (not configured).
    ///
    /// ```
    /// use secref::config::Env;
    /// use secref::providers::secflow::SecFlowProvider;
    /// let mut cfg = secref::Config::from_toml_str(
    ///     "[secflow]\nbase_url = 'http://localhost:1'\ntoken_env = 'MY_TOKEN'\ntarget_environment = 'prod'",
    /// ).unwrap();
    /// cfg.env = Env::from_pairs([("MY_TOKEN", "t")]);
    /// assert!(SecFlowProvider::from_config(&cfg).unwrap().is_some());
    /// let mut bad = secref::Config::from_toml_str("[secflow]\nbase_ur = 'x'").unwrap();
    /// bad.env = cfg.env.clone();
    /// assert!(SecFlowProvider::from_config(&bad).is_err());
    /// ```
    pub fn from_config(cfg: &Config) -> Result<Option<SecFlowProvider>> {
        match cfg.section::<toml::Table>("secflow")? {
            Some(t) => SecFlowProvider::from_table(&t, &cfg.env).map(Some),
            None if cfg.env.get("SECFLOW_SDK_TOKEN").is_some() => {
                SecFlowProvider::from_env(&cfg.env).map(Some)
            }
            None => Ok(None),
        }
    }

    /// The service URL (validated).
    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    /// The environment requests target.
    pub fn target_environment(&self) -> &str {
        &self.target_environment
    }

    /// One operation over any number of items: split into requests of at
    /// most [`MAX_BATCH`] unique items, answered in input order (each raw
    /// item, or an item-level error when the server left it out).
    async fn batch(
        &self,
        op: Op,
        items: Vec<(String, RequestItem)>,
    ) -> BatchResult<Map<String, Value>> {
        // Duplicates (same key) are sent once and fanned out.
        let mut unique: Vec<usize> = Vec::new();
        let mut first: HashMap<&str, usize> = HashMap::new();
        let slot: Vec<usize> = items
            .iter()
            .enumerate()
            .map(|(i, (key, _))| {
                *first.entry(key.as_str()).or_insert_with(|| {
                    unique.push(i);
                    unique.len() - 1
                })
            })
            .collect();
        let mut answers: Vec<Result<Map<String, Value>>> = Vec::with_capacity(unique.len());
        for chunk in unique.chunks(MAX_BATCH) {
            let chunk_items: Vec<&(String, RequestItem)> =
                chunk.iter().map(|i| &items[*i]).collect();
            answers.extend(self.call(op, &chunk_items).await?);
        }
        // Move each answer out; only a duplicated reference gets a copy.
        let mut uses = vec![0usize; answers.len()];
        for s in &slot {
            uses[*s] += 1;
        }
        let mut answers: Vec<Option<Result<Map<String, Value>>>> =
            answers.into_iter().map(Some).collect();
        Ok(slot
            .into_iter()
            .map(|s| {
                uses[s] -= 1;
                if uses[s] == 0 {
                    answers[s].take().expect("answered once")
                } else {
                    answers[s].clone().expect("answered")
                }
            })
            .collect())
    }

    /// One request.
    async fn call(
        &self,
        op: Op,
        items: &[&(String, RequestItem)],
    ) -> BatchResult<Map<String, Value>> {
        let ids = Ids::of_call();
        let payload = Request {
            request_id: Some(ids.request_id.clone()),
            trace_id: Some(ids.trace_id.clone()),
            target_environment: Some(self.target_environment.clone()),
            purpose: Some(op.purpose().to_string()),
            items: items
                .iter()
                .enumerate()
                .map(|(i, (_, fields))| RequestItem {
                    item_id: format!("item-{}", i + 1),
                    ..fields.clone()
                })
                .collect(),
            lease_ttl_seconds: None,
        };
        let (response_id, mut items_out) = self.send(op, &payload, &ids).await?;
        let request_id = response_id.unwrap_or(ids.request_id);
        // Back to input order by item_id.
        let mut by_id: HashMap<String, Map<String, Value>> = HashMap::new();
        for item in items_out.drain(..) {
            if let Some(Value::String(id)) = item.get("item_id") {
                by_id.insert(id.clone(), item);
            }
        }
        Ok((0..items.len())
            .map(|i| {
                by_id.remove(&format!("item-{}", i + 1)).ok_or_else(|| {
                    Error::new(
                        ErrorCode::InvalidResponse,
                        "SecFlow left an item out of its answer",
                    )
                    .with_request_id(request_id.clone())
                })
            })
            .map(|r| r.and_then(|item| item_outcome(op, item, &request_id)))
            .collect())
    }

    /// Sends one payload; returns the response's request id and its items.
    async fn send(
        &self,
        op: Op,
        payload: &Request,
        ids: &Ids,
    ) -> Result<Answer> {
        let url = format!(
            "{}{}",
            self.base_url.as_str().trim_end_matches('/'),
            op.path()
        );
        let token = Zeroizing::new(format!(
            "Bearer {}",
            self.token
                .as_text()
                .map_err(|_| Error::config("SECFLOW_SDK_TOKEN must be UTF-8 text"))?
        ));
        let mut auth = reqwest::header::HeaderValue::from_str(&token).map_err(|_| {
            Error::config("SECFLOW_SDK_TOKEN contains characters not allowed in a header")
        })?;
        auth.set_sensitive(true);
        let body =
            serde_json::to_vec(payload).map_err(|_| Error::internal("cannot encode request"))?;
        let req = self
            .client
            .post(url)
            // The header names the same id as the body.
            .header(http::REQUEST_ID_HEADER, ids.request_id.as_str())
            .header(reqwest::header::AUTHORIZATION, auth)
            .header(reqwest::header::ACCEPT, "application/json")
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        let resp = self.client.send(req).await.map_err(|e| transport(e, ids))?;
        if (300..400).contains(&resp.status) {
            return Err(resp
                .status_error(
                    "secflow",
                    format!(
                        "SecFlow answered HTTP {}: redirects are not followed",
                        resp.status
                    ),
                )
                .with_remote_code("HTTP_REDIRECT")
                .with_request_id(ids.request_id.clone()));
        }
        decode_answer(&resp, ids)
    }

    fn ref_items(
        refs: &[SecretRef],
        extra: impl Fn(&mut RequestItem),
    ) -> Vec<(String, RequestItem)> {
        refs.iter()
            .map(|r| {
                let key = r.to_canonical().to_string();
                let mut item = RequestItem {
                    secret_ref: Some(key.clone()),
                    ..RequestItem::default()
                };
                extra(&mut item);
                (key, item)
            })
            .collect()
    }
}

/// Correlation ids of one request: its logical call's, re-sent on retries.
#[derive(Clone, Debug)]
pub(crate) struct Ids {
    request_id: String,
    trace_id: String,
}

impl Ids {
    pub(crate) fn of_call() -> Ids {
        let (request_id, trace_id) = http::call_ids();
        Ids {
            request_id,
            trace_id,
        }
    }
}

/// A failure of the transport itself: an oversized or malformed body is
/// the answer's fault; anything else (connect, reset, timeout) is retryable.
fn transport(e: Error, ids: &Ids) -> Error {
    let remote = match e.code() {
        ErrorCode::InvalidResponse => "INVALID_RESPONSE",
        ErrorCode::TooLarge => "TOO_LARGE",
        ErrorCode::Timeout => "TRANSPORT_TIMEOUT",
        _ => "TRANSPORT_ERROR",
    };
    let retryable = !matches!(e.code(), ErrorCode::InvalidResponse | ErrorCode::TooLarge);
    e.with_retryable(retryable)
        .with_remote_code(remote)
        .with_request_id(ids.request_id.clone())
}

fn invalid(what: &str, ids: &Ids) -> Error {
    Error::new(
        ErrorCode::InvalidResponse,
        format!("SecFlow answer not understood: {what}"),
    )
    .with_remote_code("INVALID_RESPONSE")
    .with_request_id(ids.request_id.clone())
}

/// A request-level error from an answer and (maybe) its JSON error body.
fn status_error(resp: &http::Response, body: Option<&Map<String, Value>>, ids: &Ids) -> Error {
    let status = resp.status;
    let error = body.and_then(|b| b.get("error")).and_then(Value::as_object);
    let request_id = body
        .and_then(|b| b.get("request_id"))
        .and_then(Value::as_str)
        .unwrap_or(&ids.request_id)
        .to_string();
    let Some(error) = error.map(ErrorFields::read) else {
        if status == 200 {
            return invalid("error must be an object", ids);
        }
        return resp
            .status_error("secflow", format!("SecFlow answered HTTP {status}"))
            .with_remote_code("HTTP_ERROR")
            .with_request_id(request_id);
    };
    let remote = error.code.unwrap_or("HTTP_ERROR");
    let retryable = error.retryable.unwrap_or(false);
    let code = if status == 401 {
        ErrorCode::Unauthenticated
    } else {
        map_code(remote, None, Some(status))
    };
    let mut e = Error::new(code, format!("SecFlow: {}", safe_message(error.message)))
        .with_retryable(retryable)
        .with_remote_code(remote)
        .with_request_id(request_id)
        .with_provider("secflow");
    if let Some(wait) = resp.retry_after {
        e = e.with_retry_after(wait);
    }
    e
}

/// Maps a SecFlow error code (see the module table).
pub fn map_code(remote: &str, result: Option<&str>, status: Option<u16>) -> ErrorCode {
    match remote {
        "NOT_FOUND"
        | "SECRET_NOT_FOUND"
        | "REVISION_NOT_FOUND"
        | "LEASE_NOT_FOUND"
        | "NAMESPACE_NOT_FOUND" => ErrorCode::NotFound,
        "PERMISSION_DENIED" | "ACCESS_DENIED" | "FORBIDDEN" => ErrorCode::PermissionDenied,
        c if c.ends_with("_DENIED") => ErrorCode::PermissionDenied,
        "UNAUTHENTICATED" | "UNAUTHORIZED" | "INVALID_TOKEN" | "TOKEN_EXPIRED"
        | "TOKEN_REVOKED" => ErrorCode::Unauthenticated,
        "EXPIRED" | "SECRET_EXPIRED" | "LEASE_EXPIRED" | "REVISION_EXPIRED" => ErrorCode::Expired,
        "INVALID_SECRET_REF" | "INVALID_REF" | "INVALID_REFERENCE" => ErrorCode::InvalidReference,
        "INVALID_REQUEST" | "VALIDATION_ERROR" | "BAD_REQUEST" | "PAYLOAD_TOO_LARGE" => {
            ErrorCode::Usage
        }
        "RATE_LIMITED" | "TOO_MANY_REQUESTS" | "QUOTA_EXCEEDED" => ErrorCode::RateLimited,
        "UNAVAILABLE"
        | "SERVICE_UNAVAILABLE"
        | "BACKEND_UNAVAILABLE"
        | "INTERNAL"
        | "INTERNAL_ERROR"
        | "TRANSPORT_ERROR" => ErrorCode::BackendUnavailable,
        "TIMEOUT" | "DEADLINE_EXCEEDED" | "TRANSPORT_TIMEOUT" => ErrorCode::Timeout,
        "HTTP_REDIRECT" => ErrorCode::RedirectRefused,
        "INVALID_RESPONSE" => ErrorCode::InvalidResponse,
        other => ErrorCode::parse(&other.to_ascii_lowercase())
            .or_else(|| (result == Some("denied")).then_some(ErrorCode::PermissionDenied))
            .or_else(|| status.map(http::status_code))
            .unwrap_or(ErrorCode::InvalidResponse),
    }
}

/// The server's message, [`http::sanitize`]d (it is shown to users;
/// servers do not put values in messages).
fn safe_message(v: Option<&Value>) -> String {
    http::sanitize(v.and_then(Value::as_str).unwrap_or("(no message)"))
}

/// A decoded answer: the response's request id and its items.
pub(crate) type Answer = (Option<String>, Vec<Map<String, Value>>);

/// Decodes a non-redirect SecFlow answer: the response's request id and its
/// items (each an object with a string `item_id`), or the typed error the
/// status / `error` object stands for. Pure, so it is fuzzed on its own
/// (`secref::fuzz`).
pub(crate) fn decode_answer(
    resp: &http::Response,
    ids: &Ids,
) -> Result<Answer> {
    let parsed: Option<Map<String, Value>> = match serde_json::from_slice::<Value>(&resp.body) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    };
    if !resp.is_success() {
        return Err(status_error(resp, parsed.as_ref(), ids));
    }
    let Some(mut top) = parsed else {
        return Err(invalid("response body is not a JSON object", ids));
    };
    if top.contains_key("error") {
        return Err(status_error(resp, Some(&top), ids));
    }
    let response_id = top
        .get("request_id")
        .and_then(Value::as_str)
        .map(str::to_string);
    let Some(Value::Array(items)) = top.remove("items") else {
        return Err(invalid("items must be an array", ids));
    };
    items
        .into_iter()
        .map(|v| match v {
            Value::Object(m) if m.get("item_id").is_some_and(Value::is_string) => Ok(m),
            _ => Err(invalid(
                "each item must be an object with a string item_id",
                ids,
            )),
        })
        .collect::<Result<Vec<_>>>()
        .map(|items| (response_id, items))
}

/// An item's failure (when `result` says so), mapped.
pub(crate) fn item_outcome(op: Op, item: Map<String, Value>, request_id: &str) -> Result<Map<String, Value>> {
    let result = item.get("result").and_then(Value::as_str).unwrap_or("");
    let failed = match op {
        // A denial is a normal permission-check answer.
        Op::PermissionCheck => result == "failed",
        _ => result != "allowed",
    };
    if !failed {
        return Ok(item);
    }
    let error = item
        .get("error")
        .and_then(Value::as_object)
        .map(ErrorFields::read)
        .unwrap_or_default();
    let remote = error.code.unwrap_or("ITEM_FAILED");
    let code = map_code(remote, Some(result), None);
    let mut e = Error::new(code, format!("SecFlow: {}", safe_message(error.message)))
        .with_retryable(error.retryable.unwrap_or(false))
        .with_remote_code(remote)
        .with_request_id(request_id);
    if let Some(d) = error.decision_id {
        e = e.with_hint(format!("decision id {d}"));
    }
    Err(e)
}

fn str_field<'a>(item: &'a Map<String, Value>, key: &str) -> Result<&'a str> {
    item.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| field_error(key, "a string"))
}

fn opt_str(item: &Map<String, Value>, key: &str) -> Result<Option<String>> {
    match item.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(field_error(key, "a string or null")),
    }
}

fn field_error(key: &str, what: &str) -> Error {
    Error::new(
        ErrorCode::InvalidResponse,
        format!("SecFlow answer not understood: {key} must be {what}"),
    )
    .with_remote_code("INVALID_RESPONSE")
}

fn parse_time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s.trim_end_matches('Z').trim_end_matches("+00:00")).ok()
}

fn resolved_from(mut item: Map<String, Value>) -> Result<Resolved> {
    let Some(Value::Object(mut value)) = item.remove("value") else {
        return Err(field_error("value", "an object"));
    };
    let encoding = value
        .get("encoding")
        .and_then(Value::as_str)
        .ok_or_else(|| field_error("value.encoding", "a string"))?
        .to_string();
    let Some(Value::String(data)) = value.remove("data") else {
        return Err(field_error("value.data", "a string"));
    };
    let data = Zeroizing::new(data);
    let secret = match wire::decode_value(&encoding, &data) {
        Ok(secret) => secret,
        Err(ValueError::InvalidBase64) => return Err(field_error("value.data", "valid base64")),
        Err(ValueError::UnknownEncoding) => {
            return Err(Error::new(
                ErrorCode::InvalidResponse,
                format!(
                    "unsupported plaintext encoding '{}'",
                    safe_message(Some(&json!(encoding)))
                ),
            )
            .with_remote_code("INVALID_RESPONSE"))
        }
    };
    let lease_id = str_field(&item, "lease_id")?.to_string();
    let revision_id = str_field(&item, "revision_id")?.to_string();
    let expires_at = opt_str(&item, "expires_at")?
        .as_deref()
        .and_then(parse_time);
    let ttl = expires_at.and_then(|t| t.duration_since(SystemTime::now()).ok());
    let mut out = Resolved::new(secret)
        .with_version(revision_id)
        .with_lease(Lease {
            id: lease_id,
            ttl,
            renewable: false,
        });
    out.expires_at = expires_at;
    Ok(out)
}

fn validation_from(item: Map<String, Value>) -> Result<Validation> {
    let valid = item
        .get("valid")
        .and_then(Value::as_bool)
        .ok_or_else(|| field_error("valid", "a boolean"))?;
    let exists = match item.get("exists") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(field_error("exists", "a boolean or null")),
    };
    Ok(Validation {
        valid,
        exists,
        namespace: opt_str(&item, "namespace")?,
        secret_type: opt_str(&item, "secret_type")?,
    })
}

fn metadata_from(r: &SecretRef, item: Map<String, Value>) -> Result<Metadata> {
    let tags = match item.get("tags") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|t| {
                t.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| field_error("tags", "strings"))
            })
            .collect::<Result<Vec<_>>>()?,
        _ => return Err(field_error("tags", "an array")),
    };
    let mut custom = std::collections::BTreeMap::new();
    for key in ["environment", "service"] {
        custom.insert(key.to_string(), str_field(&item, key)?.to_string());
    }
    Ok(Metadata {
        reference: r.to_canonical().to_string(),
        secret_id: Some(str_field(&item, "secret_id")?.to_string()),
        current_version: opt_str(&item, "active_revision_id")?,
        expires_at: opt_str(&item, "expiration")?,
        owner: Some(str_field(&item, "owner")?.to_string()),
        description: opt_str(&item, "description")?,
        rotation_required: item
            .get("rotation_required")
            .and_then(Value::as_bool)
            .ok_or_else(|| field_error("rotation_required", "a boolean"))?,
        tags,
        custom,
        ..Metadata::default()
    })
}

fn permission_from(item: Map<String, Value>) -> Result<Permission> {
    Ok(Permission {
        allowed: item
            .get("allowed")
            .and_then(Value::as_bool)
            .ok_or_else(|| field_error("allowed", "a boolean"))?,
        decision_id: opt_str(&item, "decision_id")?,
        evaluated_revision_id: opt_str(&item, "evaluated_revision_id")?,
    })
}

fn revocation_from(item: Map<String, Value>) -> Result<LeaseRevocation> {
    Ok(LeaseRevocation {
        lease_id: str_field(&item, "lease_id")?.to_string(),
        status: str_field(&item, "status")?.to_string(),
        revoked_at: opt_str(&item, "revoked_at")?,
    })
}

#[async_trait]
impl Provider for SecFlowProvider {
    fn name(&self) -> &str {
        "secflow"
    }

    fn families(&self) -> &[&'static str] {
        &["secflow"]
    }

    fn capabilities(&self) -> crate::provider::Capabilities {
        SPEC.capabilities
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    /// One permission check of a probe reference in the target
    /// environment: SecFlow has no health endpoint, and this is its cheapest
    /// authenticated call (it reads no value). A request-level answer
    /// proves the service is reachable and takes the token; the item's own
    /// verdict (allowed, denied, unknown) does not matter.
    async fn health(&self) -> Result<()> {
        let probe = format!("secret://{}/secref/health/probe", self.target_environment);
        let item = RequestItem {
            secret_ref: Some(probe.clone()),
            action: Some(Action::Read.as_str().to_string()),
            ..RequestItem::default()
        };
        self.call(Op::PermissionCheck, &[&(probe, item)])
            .await
            .map(drop)
    }

    async fn resolve_many(&self, refs: &[SecretRef]) -> BatchResult<Resolved> {
        let items = Self::ref_items(refs, |_| {});
        let out = self.batch(Op::Resolve, items).await?;
        Ok(out.into_iter().map(|r| r.and_then(resolved_from)).collect())
    }

    async fn validate(&self, refs: &[SecretRef]) -> BatchResult<Validation> {
        let out = self
            .batch(Op::Validate, Self::ref_items(refs, |_| {}))
            .await?;
        Ok(out
            .into_iter()
            .map(|r| r.and_then(validation_from))
            .collect())
    }

    async fn metadata(&self, refs: &[SecretRef]) -> BatchResult<Metadata> {
        let out = self
            .batch(Op::Metadata, Self::ref_items(refs, |_| {}))
            .await?;
        Ok(refs
            .iter()
            .zip(out)
            .map(|(r, item)| item.and_then(|m| metadata_from(r, m)))
            .collect())
    }

    async fn permission_check(
        &self,
        refs: &[SecretRef],
        action: Action,
    ) -> BatchResult<Permission> {
        let items = Self::ref_items(refs, |item| item.action = Some(action.as_str().to_string()));
        let out = self.batch(Op::PermissionCheck, items).await?;
        Ok(out
            .into_iter()
            .map(|r| r.and_then(permission_from))
            .collect())
    }

    async fn revoke_leases(
        &self,
        lease_ids: &[String],
        reason: RevokeReason,
    ) -> BatchResult<LeaseRevocation> {
        let items = lease_ids
            .iter()
            .map(|id| {
                let id = id.trim().to_string();
                let item = RequestItem {
                    lease_id: Some(id.clone()),
                    reason: Some(reason.as_str().to_string()),
                    ..RequestItem::default()
                };
                (id, item)
            })
            .collect();
        let out = self.batch(Op::Revoke, items).await?;
        Ok(out
            .into_iter()
            .map(|r| r.and_then(revocation_from))
            .collect())
    }
}

/// Where the SecFlow token is read ([`crate::credentials`]): the variable
/// `[secflow] token_env` names, else `SECFLOW_SDK_TOKEN`; it may hold a
/// reference.
fn credential_fields(cfg: &Config) -> Vec<crate::credentials::CredentialField> {
    let mut fields = crate::credentials::env_named_by(cfg, "secflow", "token_env", "SECFLOW_SDK_TOKEN");
    fields.push(crate::credentials::CredentialField::Key {
        name: "token",
        reference_only: true,
    });
    fields
}

/// `secret://<environment>/<service>/<kind>/<name>`: a SecFlow service.
pub(crate) const SPEC: crate::registry::ProviderSpec = crate::registry::ProviderSpec {
    name: "secflow",
    schemes: &["secret"],
    feature: Some("secflow"),
    host_local: false,
    config_section: Some("secflow"),
    env_vars: &[
        "SECFLOW_BASE_URL",
        "SECFLOW_SDK_TOKEN",
        "SECFLOW_TARGET_ENVIRONMENT",
        "SECFLOW_TIMEOUT_SECONDS",
    ],
    credential_env_vars: &["SECFLOW_SDK_TOKEN"],
    capabilities: crate::provider::Capabilities {
        leases: true,
        ..crate::provider::Capabilities::NONE
    },
    parse: |input| parse_secflow(input.rest),
    parts: |r| match r.kind() {
        RefKind::SecFlow(f) => vec![
            ("environment", f.environment.as_str().into()),
            ("service", f.service.as_str().into()),
            ("kind", f.kind.as_str().into()),
            ("name", f.name.as_str().into()),
        ],
        _ => Vec::new(),
    },
    credentials: credential_fields,
    build: |cfg| {
        Ok(SecFlowProvider::from_config(cfg)?
            .map(|p| std::sync::Arc::new(p) as std::sync::Arc<dyn Provider>))
    },
};

pub(crate) fn parse_secflow(rest: &str) -> Result<ParsedRef> {
    reference::reject_query_and_fragment("secret", rest)?;
    let segs: Vec<&str> = rest.split('/').collect();
    if segs.len() != 4 {
        return Err(reference::err(
            ErrorCode::InvalidReference,
            "a SecFlow reference has exactly four segments",
        )
        .with_hint("secret://<environment>/<service>/<kind>/<name>"));
    }
    reference::check_segments("secret://", segs.iter().copied())?;
    let kind = RefKind::SecFlow(SecFlowRef {
        environment: segs[0].to_string(),
        service: segs[1].to_string(),
        kind: segs[2].to_string(),
        name: segs[3].to_string(),
    });
    Ok(ParsedRef::new(kind, format!("secret://{rest}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn config_rules() {
        let ok = SecFlowProvider::from_env(&env(&[("SECFLOW_SDK_TOKEN", " t ")])).unwrap();
        assert_eq!(ok.base_url().as_str(), "https://secflow.intflow.dev/");
        assert_eq!(ok.target_environment(), "dev");
        assert_eq!(ok.timeout, Duration::from_secs(30));
        let cases: &[&[(&str, &str)]] = &[
            &[],
            &[("SECFLOW_SDK_TOKEN", "  ")],
            &[
                ("SECFLOW_SDK_TOKEN", "t"),
                ("SECFLOW_BASE_URL", "http://example.com"),
            ],
            &[
                ("SECFLOW_SDK_TOKEN", "t"),
                ("SECFLOW_TARGET_ENVIRONMENT", "qa"),
            ],
            &[("SECFLOW_SDK_TOKEN", "t"), ("SECFLOW_TIMEOUT_SECONDS", "0")],
            &[
                ("SECFLOW_SDK_TOKEN", "t"),
                ("SECFLOW_TIMEOUT_SECONDS", "301"),
            ],
            &[
                ("SECFLOW_SDK_TOKEN", "t"),
                ("SECFLOW_TIMEOUT_SECONDS", "nan"),
            ],
        ];
        for c in cases {
            let e = SecFlowProvider::from_env(&env(c)).unwrap_err();
            assert_eq!(e.code(), ErrorCode::Config, "{c:?}");
        }
        let p = SecFlowProvider::from_env(&env(&[
            ("SECFLOW_SDK_TOKEN", "t"),
            ("SECFLOW_BASE_URL", "http://[::1]:8080/"),
            ("SECFLOW_TARGET_ENVIRONMENT", " prod "),
            ("SECFLOW_TIMEOUT_SECONDS", "1e1"),
        ]))
        .unwrap();
        assert_eq!(p.target_environment(), "prod");
        assert_eq!(p.timeout, Duration::from_secs(10));
    }

    #[test]
    fn a_renamed_token_variable_is_the_one_named_missing() {
        let env = env(&[("SECFLOW_SDK_TOKEN", "canary-default-token")]);
        let t: toml::Table = toml::from_str("token_env = 'MY_SECFLOW_TOKEN'").unwrap();
        let e = SecFlowProvider::from_table(&t, &env).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Config);
        assert_eq!(e.message(), "MY_SECFLOW_TOKEN is required");
        assert!(e.hint().unwrap().contains("MY_SECFLOW_TOKEN"), "{e}");
        assert!(!e.to_string().contains("SECFLOW_SDK_TOKEN"), "{e}");
        assert!(!e.to_string().contains("canary"));
    }

    #[test]
    fn table_is_strict_and_wins_over_env() {
        let t: toml::Table = toml::from_str(
            "base_url = 'http://127.0.0.1:9'\ntarget_environment = 'stage'\ntimeout_seconds = 5",
        )
        .unwrap();
        let p = SecFlowProvider::from_table(
            &t,
            &env(&[
                ("SECFLOW_SDK_TOKEN", "t"),
                ("SECFLOW_TARGET_ENVIRONMENT", "prod"),
            ]),
        )
        .unwrap();
        assert_eq!(p.target_environment(), "stage");
        assert_eq!(p.timeout, Duration::from_secs(5));
        let both: toml::Table = toml::from_str("token_env = 'A'\ntoken_file = 'b'").unwrap();
        assert!(SecFlowProvider::from_table(&both, &env(&[("A", "x")])).is_err());
        let unknown: toml::Table = toml::from_str("timeout = 5").unwrap();
        assert!(
            SecFlowProvider::from_table(&unknown, &env(&[("SECFLOW_SDK_TOKEN", "t")])).is_err()
        );
    }

    #[test]
    fn token_file_and_dotenv() {
        let dir = tempfile::tempdir().unwrap();
        let tf = dir.path().join("tok");
        std::fs::write(&tf, "file-token\n").unwrap();
        // Credential files must be owner-only (secref::credfile).
        std::fs::set_permissions(&tf, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let t: toml::Table =
            toml::from_str(&format!("token_file = {:?}", tf.to_str().unwrap())).unwrap();
        let p = SecFlowProvider::from_table(&t, &Env::default()).unwrap();
        assert!(p.token.ct_eq(b"file-token"));
        let de = dir.path().join(".env.secflow");
        std::fs::write(
            &de,
            "SECFLOW_SDK_TOKEN='dot-token'\nSECFLOW_TARGET_ENVIRONMENT=shared\n",
        )
        .unwrap();
        let mut e = Env::default();
        e.apply_dotenv(&de).unwrap();
        let p = SecFlowProvider::from_env(&e).unwrap();
        assert!(p.token.ct_eq(b"dot-token"));
        assert_eq!(p.target_environment(), "shared");
    }

    #[test]
    fn code_table() {
        for (remote, result, status, want) in [
            ("SECRET_NOT_FOUND", None, None, ErrorCode::NotFound),
            ("POLICY_DENIED", None, None, ErrorCode::PermissionDenied),
            ("FORBIDDEN", None, None, ErrorCode::PermissionDenied),
            ("LEASE_EXPIRED", None, None, ErrorCode::Expired),
            ("INVALID_REFERENCE", None, None, ErrorCode::InvalidReference),
            ("FIELD_NOT_FOUND", None, None, ErrorCode::FieldNotFound),
            ("WEIRD", Some("denied"), None, ErrorCode::PermissionDenied),
            ("WEIRD", Some("failed"), None, ErrorCode::InvalidResponse),
            ("WEIRD", None, Some(503), ErrorCode::BackendUnavailable),
            ("WEIRD", None, Some(429), ErrorCode::RateLimited),
            ("INTERNAL", None, None, ErrorCode::BackendUnavailable),
        ] {
            assert_eq!(map_code(remote, result, status), want, "{remote}");
        }
    }

    #[test]
    fn resolved_item_decoding() {
        let item = |enc: &str, data: &str| {
            json!({"item_id":"item-1","result":"allowed","value":{"encoding":enc,"data":data},
                   "lease_id":"l1","revision_id":"r7","expires_at":"2999-01-01T00:00:00Z"})
            .as_object()
            .unwrap()
            .clone()
        };
        let r = resolved_from(item("utf8", "héllo")).unwrap();
        assert_eq!(r.secret.expose_bytes(), "héllo".as_bytes());
        assert_eq!(r.version.as_deref(), Some("r7"));
        assert_eq!(r.lease.as_ref().unwrap().id, "l1");
        assert!(r.expires_at.is_some());
        let b = resolved_from(item("base64", "/wBiaW4=")).unwrap();
        assert_eq!(b.secret.expose_bytes(), b"\xff\x00bin");
        for (enc, data) in [("base64", "not base64!"), ("hex", "00")] {
            let e = resolved_from(item(enc, data)).unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidResponse);
        }
    }
}
