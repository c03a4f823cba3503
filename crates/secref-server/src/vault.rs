//! The Vault API of `secref serve`, over the local store and the resolver,
//! so Vault clients (hvac, the Vault CLI, vaultrs, secref's own
//! `openbao+kv2://` provider) read and write secrets through secref.
//!
//! **Mounts** come from `[server.vault.mounts.<name>]` (see
//! [`crate::config::VaultMount`]); by default `secret` is the local store.
//!
//! * A **local** mount is read-write with KV v2 semantics, straight on the
//!   store ([`secref::store::Store`], the same locked, atomic writes as the
//!   CLI, so `secref set` and HTTP writes never lose each other and each
//!   sees the other's at once). `<mount>/<path>` is the store entry
//!   [`entry_name`]; the secret's keys are the entry's fields (a
//!   single-value entry reads as `{"value": …}`; non-string JSON values are
//!   stored as their JSON text).
//! * An **upstream** mount (`openbao+kv2://secret/{path}`, or any reference
//!   template) is a read-only caching proxy: reads go through the resolver
//!   (its cache, single-flight, fail-closed rules and stale grace on
//!   retryable upstream errors only); writes are refused with Vault's
//!   read-only error. A read of the latest version never answers a version
//!   older than one already seen for that path (vault#28137); `POST
//!   /v1/sys/secref/invalidate` drops a path's cached versions.
//!
//! | route | answers |
//! |---|---|
//! | `GET /v1/<m>/data/<p>[?version=N]` | KV v2 read; deleted/destroyed versions are 404 with the version's metadata |
//! | `POST/PUT /v1/<m>/data/<p>` | a new version (`options.cas` honoured) |
//! | `PATCH /v1/<m>/data/<p>` | a new version merged into the current one (null removes a key) |
//! | `DELETE /v1/<m>/data/<p>` | soft-deletes the latest version |
//! | `POST /v1/<m>/delete\|undelete\|destroy/<p>` | `{"versions": [..]}` |
//! | `GET/LIST /v1/<m>/metadata/<p>` | metadata / the keys below a folder |
//! | `POST/PUT/PATCH/DELETE /v1/<m>/metadata/<p>` | metadata update / forget the secret |
//! | `GET/LIST/PUT/POST/DELETE /v1/<m>/<p>` | KV v1 for mounts with `kv_version = 1` |
//! | `GET /v1/sys/health`, `sys/mounts`, `sys/internal/ui/mounts/<p>` | the Vault CLI's preflight |
//! | `GET /v1/auth/token/lookup-self` | facts about the caller's token (never the token) |
//! | `POST /v1/sys/wrapping/unwrap\|lookup` | wrapped answers, single use |
//! | `POST /v1/sys/secref/invalidate` | `{"path": "<m>/<p>"}`: drop cached upstream answers |
//!
//! Reads of local mounts are audited as the resolver audits its own reads
//! ([`secref::Resolver::audit_read_as`]; writes appear in the access log).
//! Every request passes the access rules (actions `read`, `list`,
//! `metadata_read`, `write`, `delete`, `destroy`) on
//! `openbao+kv2://<mount>/<path>` and, for local mounts, the resolver's
//! `[policy]` through [`secref::Resolver::authorize_as`] (upstream reads are
//! decided by the policy on the upstream reference as they are resolved). A
//! read with `X-Vault-Wrap-TTL` (or a policy `wrap_ttl` obligation) answers
//! with a single-use wrapping token (in this process's memory; with shared
//! `[state]`, a sealed self-contained token any replica unwraps once, see
//! `wraps.rs`). Errors are always Vault's
//! `{"errors":[…]}` with Vault's status codes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use parking_lot::Mutex;
use secref::policy::Authorization;
use secref::provider::Action;
use secref::store::{EntryMetadata, EntryValue, MetadataUpdate, Store, VersionMetadata};
use secref::{Error, ErrorCode, RefKind, Secret, SecretRef};
use serde_json::{json, Map, Value};

use crate::auth::{Caller, Principal};
use crate::config::{MountBackend, VaultMount};
use crate::expiring::{deadline, Expiring};
use crate::wraps::{Refused as WrapRefused, SealedWraps};
use crate::{AppState, Logged};

/// Longest wrap TTL accepted (Vault's default max is 32 days; keep it short).
const MAX_WRAP_TTL: Duration = Duration::from_secs(24 * 3600);

/// Outstanding wrapping tokens one caller may hold by default
/// (`[server] max_wraps_per_principal`); past it that caller's wrapped reads
/// are 503 until some are unwrapped or expire, and nobody else is affected.
pub const DEFAULT_WRAP_QUOTA: usize = 1_000;

/// Paths whose newest seen upstream version is remembered at most (then
/// the memory starts over; a bound, not a cache).
const MAX_SEEN: usize = 100_000;

/// Versions below the newest seen that an invalidation drops, at most.
const MAX_INVALIDATE_VERSIONS: u64 = 1_000;

/// The provider name reads of a local mount are counted under: the local
/// store's, as a `local://` read through the resolver is.
const LOCAL_PROVIDER: &str = "local";

/// The local store the Vault API's local mounts use, or why there is none
/// (answered as a 500 naming the reason, e.g. "run `secref init`").
pub type LocalStore = std::result::Result<Arc<Store>, Error>;

/// The Vault API's routes: everything under `/v1/` that is not the SecFlow
/// API.
pub fn router(state: AppState) -> Router {
    let max_wraps = state.config().max_wraps_per_principal;
    let wraps = Arc::new(Expiring::new(max_wraps).with_gauge("wrap"));
    // `[state]` shared: tokens any replica unwraps (once), see `wraps.rs`.
    let sealed = state.sealed_wraps().cloned();
    let api = Api {
        state,
        wraps,
        sealed,
        seen: Arc::new(Mutex::new(HashMap::new())),
    };
    Router::new()
        .route("/v1/{*rest}", any(dispatch))
        .with_state(api)
}

#[derive(Clone)]
struct Api {
    /// The configuration (mounts and their local store come from the
    /// request's snapshot; wraps and `seen` outlive reloads).
    state: AppState,
    /// Wrapping token → wrapped answer, per caller and bounded per caller
    /// ([`Expiring`]). Removed on first use.
    wraps: Arc<Expiring<String, Wrapped>>,
    /// With shared `[state]`: self-contained sealed tokens instead of
    /// `wraps`, so that any replica unwraps them.
    sealed: Option<Arc<SealedWraps>>,
    /// `<mount>/<path>` of an upstream mount → the newest version seen.
    seen: Arc<Mutex<HashMap<String, u64>>>,
}

struct Wrapped {
    answer: Value,
    ttl: Duration,
    creation_time: String,
    creation_path: String,
}

/// The store entry behind `<mount>/<path>` of a local mount: the one
/// mapping between Vault paths and local references (`local://<entry>`,
/// fields = the secret's keys).
pub fn entry_name(prefix: &str, path: &str) -> String {
    format!("{prefix}{path}")
}

/// An error in Vault's shape (for the shared layers too).
pub(crate) fn error(status: StatusCode, msg: &str) -> Response {
    let errors: Vec<&str> = if msg.is_empty() { vec![] } else { vec![msg] };
    (status, axum::Json(json!({ "errors": errors }))).into_response()
}

/// A handler's early answer (boxed: a `Response` is large).
pub(crate) type Early<T> = std::result::Result<T, Box<Response>>;

fn early(status: StatusCode, msg: &str) -> Box<Response> {
    Box::new(error(status, msg))
}

fn denied() -> Response {
    error(StatusCode::FORBIDDEN, "permission denied")
}

fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "")
}

fn read_only() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "cannot write to readonly storage",
    )
}

fn method_not_allowed() -> Response {
    error(StatusCode::METHOD_NOT_ALLOWED, "unsupported operation")
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn ok(body: Value) -> Response {
    axum::Json(body).into_response()
}

/// A secref error as Vault would answer it. Messages carry no values.
fn fail(e: &Error) -> Response {
    use ErrorCode::*;
    match e.code() {
        NotFound | FieldNotFound | VersionDeleted | VersionDestroyed => not_found(),
        PermissionDenied | Unauthenticated | TenantMountMismatch => denied(),
        Usage | InvalidReference | IllegalSegment | InvalidUtf8 | InvalidWildcard
        | AmbiguousQuery | Unsupported => error(StatusCode::BAD_REQUEST, e.message()),
        _ if e.retryable() => error(StatusCode::SERVICE_UNAVAILABLE, e.message()),
        _ => error(StatusCode::INTERNAL_SERVER_ERROR, e.message()),
    }
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

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

fn with_principal(mut resp: Response, p: &Principal) -> Response {
    resp.extensions_mut().insert(Logged {
        principal: p.name.clone(),
        items: 1,
    });
    resp
}

/// One request, parsed: what the dispatcher needs.
struct Req {
    method: String,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
}

impl Req {
    fn json(&self) -> Early<Value> {
        json_body(&self.body)
    }
}

/// A request body as Vault reads it: empty (or blank) is `{}`, anything but
/// a JSON object is a 400.
pub(crate) fn json_body(body: &[u8]) -> Early<Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Map::new()));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(early(StatusCode::BAD_REQUEST, "failed to parse JSON input")),
    }
}

async fn dispatch(
    State(api): State<Api>,
    Caller(caller): Caller,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let max = api.state.config().max_body_bytes;
    let body = match axum::body::to_bytes(body, max).await {
        Ok(b) => b,
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body exceeds {max} bytes"),
            )
        }
    };
    let query: HashMap<String, String> =
        axum::extract::Query::<HashMap<String, String>>::try_from_uri(&uri)
            .map(|q| q.0)
            .unwrap_or_default();
    let mut m = method.as_str().to_ascii_uppercase();
    if m == "GET" && query.get("list").is_some_and(|v| v == "true") {
        m = "LIST".into();
    }
    let req = Req {
        method: m,
        query,
        headers,
        body,
    };
    let rest = uri.path().trim_start_matches("/v1/").to_string();
    // SecFlow's paths all end in `:batch`: an unknown one is a SecFlow 404.
    if rest.ends_with(":batch") {
        return crate::secflow::not_found().await;
    }
    // Unauthenticated, as in Vault.
    if rest == "sys/health" {
        return health(&req);
    }
    if rest == "sys/wrapping/unwrap" || rest == "sys/wrapping/lookup" {
        return wrapping(&api, caller, &req, rest.ends_with("unwrap")).await;
    }
    let Some(p) = caller else {
        return denied();
    };
    let resp = route(&api, &p, &rest, &req).await;
    with_principal(resp, &p)
}

async fn route(api: &Api, p: &Principal, rest: &str, req: &Req) -> Response {
    let get = req.method == "GET";
    match rest {
        "auth/token/lookup-self" if get => {
            return match wrap_ttl(&req.headers, &Authorization::default()) {
                Ok(wrap) => answer(api, &p.name, lookup_self(p), wrap, rest).await,
                Err(r) => *r,
            }
        }
        "sys/mounts" if get => return sys_mounts(api),
        "sys/secref/invalidate" if req.method == "POST" || req.method == "PUT" => {
            return invalidate(api, p, req).await
        }
        "auth/token/lookup-self" | "sys/mounts" | "sys/secref/invalidate" => {
            return method_not_allowed()
        }
        _ => {}
    }
    if let Some(path) = rest.strip_prefix("sys/internal/ui/mounts/") {
        return if get {
            ui_mount(api, path)
        } else {
            method_not_allowed()
        };
    }
    let (mount_name, after) = rest.split_once('/').unwrap_or((rest, ""));
    let config = api.state.config();
    let Some(mount) = config.vault_mounts.get(mount_name) else {
        return error(
            StatusCode::NOT_FOUND,
            "no handler for route: the path is not under a configured mount",
        );
    };
    let (op, path) = if mount.kv_version == 1 {
        (Op::V1, after)
    } else {
        let (op, path) = after.split_once('/').unwrap_or((after, ""));
        let op = match op {
            "data" => Op::Data,
            "metadata" => Op::Metadata,
            "delete" => Op::Delete,
            "undelete" => Op::Undelete,
            "destroy" => Op::Destroy,
            _ => return not_found(),
        };
        (op, path)
    };
    let path = path.trim_end_matches('/');
    if path.is_empty() && req.method != "LIST" {
        return not_found();
    }
    let target = Target {
        mount_name,
        mount,
        path,
    };
    match &mount.backend {
        MountBackend::Local { prefix } => {
            let store = match &api.state.snapshot().local {
                Ok(s) => s.clone(),
                Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.message()),
            };
            local_op(api, p, req, &target, op, store, prefix).await
        }
        MountBackend::Upstream { template } => {
            upstream_op(api, p, req, &target, op, template).await
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Data,
    Metadata,
    Delete,
    Undelete,
    Destroy,
    V1,
}

struct Target<'a> {
    mount_name: &'a str,
    mount: &'a VaultMount,
    path: &'a str,
}

impl Target<'_> {
    /// The reference the access rules and the policy see; a folder (what
    /// LIST names) ends in `/`, so `…/app/*` covers listing `app`.
    fn rule_ref(&self, action: Action) -> String {
        let slash = if action == Action::List && !self.path.is_empty() {
            "/"
        } else {
            ""
        };
        format!("openbao+kv2://{}/{}{slash}", self.mount_name, self.path)
    }
    fn key(&self) -> String {
        format!("{}/{}", self.mount_name, self.path)
    }
}

/// What an (op, method) pair asks for; `None`: not a Vault operation.
fn action_of(op: Op, method: &str) -> Option<Action> {
    use Op::*;
    Some(match (op, method) {
        (Data | V1, "GET") => Action::Read,
        (Metadata, "GET") => Action::MetadataRead,
        (Metadata | V1, "LIST") => Action::List,
        (Data | V1, "POST" | "PUT" | "PATCH") | (Metadata, "POST" | "PUT" | "PATCH") => {
            Action::Write
        }
        (Data | V1, "DELETE") | (Delete | Undelete, "POST" | "PUT") => Action::Delete,
        (Destroy, "POST" | "PUT") | (Metadata, "DELETE") => Action::Destroy,
        _ => return None,
    })
}

/// The access rules and, when `policy` is set, the resolver's policy for
/// `action` on the target; returns the policy's obligations.
async fn authorize(
    api: &Api,
    p: &Principal,
    headers: &HeaderMap,
    target: &Target<'_>,
    action: Action,
    policy: bool,
) -> Early<Authorization> {
    let reference = target.rule_ref(action);
    // Rules match canonical references only: a path the grammar refuses
    // (empty, `.` or `..` segments, escapes) is a 400 before any rule is
    // consulted. A listed folder is its parsed reference plus `/`.
    if !target.path.is_empty() {
        let parsed = format!("openbao+kv2://{}/{}", target.mount_name, target.path);
        match SecretRef::parse(&parsed) {
            Ok(r) if r.to_canonical() == parsed => {}
            _ => return Err(early(StatusCode::BAD_REQUEST, "invalid path")),
        }
    }
    if !api
        .state
        .access()
        .decide_canonical(p, &reference, None, action)
        .allowed
    {
        count_refused_read(api, target, action, ErrorCode::PermissionDenied);
        return Err(Box::new(denied()));
    }
    if !policy || target.path.is_empty() || action == Action::List {
        return Ok(Authorization::default());
    }
    let ctx = api.state.request_context(p, headers);
    match api
        .state
        .resolver()
        .authorize_as(&ctx, reference.as_str(), action)
        .await
    {
        Ok(granted) => Ok(granted),
        Err(e) => {
            count_refused_read(api, target, action, e.code());
            Err(policy_refusal(&e))
        }
    }
}

/// Counts a read refused before the store or a provider was asked, under
/// the provider that would have served it (one series for every read).
fn count_refused_read(api: &Api, target: &Target<'_>, action: Action, code: ErrorCode) {
    if action != Action::Read {
        return;
    }
    let resolver = api.state.resolver();
    let provider = match &target.mount.backend {
        MountBackend::Local { .. } => LOCAL_PROVIDER.to_owned(),
        MountBackend::Upstream { template } => upstream_ref(template, target.path, None)
            .ok()
            .and_then(|r| resolver.provider_for(&r).ok().map(str::to_owned))
            .unwrap_or_else(|| "none".to_owned()),
    };
    resolver.count_served_read(&provider, Some(code));
}

/// The answer to a policy refusal of a Vault operation.
fn policy_refusal(e: &Error) -> Box<Response> {
    match e {
        e if e.retryable() => early(
            StatusCode::SERVICE_UNAVAILABLE,
            "the policy decision point is unavailable",
        ),
        e if matches!(
            e.code(),
            ErrorCode::PermissionDenied | ErrorCode::TenantMountMismatch
        ) =>
        {
            Box::new(denied())
        }
        _ => early(StatusCode::BAD_REQUEST, "invalid path"),
    }
}

/// The wrap TTL a read answers with: the policy's obligation wins over the
/// caller's `X-Vault-Wrap-TTL`.
fn wrap_ttl(headers: &HeaderMap, granted: &Authorization) -> Early<Option<Duration>> {
    let asked = match headers.get("x-vault-wrap-ttl") {
        None => None,
        Some(v) => match v.to_str().ok().and_then(parse_vault_duration) {
            Some(d) if d > Duration::ZERO && d <= MAX_WRAP_TTL => Some(d),
            _ => return Err(early(StatusCode::BAD_REQUEST, "invalid wrap TTL")),
        },
    };
    Ok(granted.wrap_ttl.map(|t| t.min(MAX_WRAP_TTL)).or(asked))
}

/// A successful read's answer, wrapped when asked.
async fn answer(
    api: &Api,
    owner: &str,
    body: Value,
    wrap: Option<Duration>,
    creation_path: &str,
) -> Response {
    match wrap {
        Some(ttl) => wrap_answer(api, owner, body, ttl, creation_path).await,
        None => ok(body),
    }
}

fn parse_version(req: &Req) -> Early<Option<u64>> {
    match req.query.get("version").map(String::as_str) {
        None | Some("") | Some("0") => Ok(None),
        Some(v) => v
            .parse::<u64>()
            .map(Some)
            .map_err(|_| early(StatusCode::BAD_REQUEST, "invalid version")),
    }
}

pub(crate) fn versions_of(body: &Value) -> Early<Vec<u64>> {
    let bad = || early(StatusCode::BAD_REQUEST, "no version number provided");
    let list = body.get("versions").ok_or_else(bad)?;
    let items: Vec<Value> = match list {
        Value::Array(a) => a.clone(),
        Value::String(s) => s
            .split(',')
            .map(|x| Value::String(x.trim().into()))
            .collect(),
        Value::Number(_) => vec![list.clone()],
        _ => return Err(bad()),
    };
    let out: Option<Vec<u64>> = items
        .iter()
        .map(|v| match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        })
        .collect();
    match out {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(bad()),
    }
}

// ---------------------------------------------------------------- local --

fn local_ref(name: &str) -> secref::Result<secref::reference::LocalRef> {
    let r = SecretRef::parse(format!("local://{name}"))?;
    match r.kind() {
        RefKind::Local(l) if l.field.is_none() && l.version.is_none() => Ok(l.clone()),
        _ => Err(Error::usage(format!("'{name}' is not a valid secret path"))),
    }
}

/// Runs a store operation on a blocking thread (file IO and a file lock).
async fn blocking<T: Send + 'static>(
    store: &Arc<Store>,
    f: impl FnOnce(&Store) -> secref::Result<T> + Send + 'static,
) -> secref::Result<T> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|_| Error::internal("store task failed"))?
}

/// `custom_metadata` as KV v2 writes it: `null` when there is none.
fn custom_json(custom: &BTreeMap<String, String>) -> Value {
    if custom.is_empty() {
        Value::Null
    } else {
        json!(custom)
    }
}

/// One version's entry in a metadata answer (`deleted` is `""` when not
/// deleted).
fn version_entry(created: String, deleted: String, destroyed: bool) -> Value {
    json!({
        "created_time": created,
        "deletion_time": deleted,
        "destroyed": destroyed,
    })
}

/// The data of a KV v2 metadata answer: one shape for the local store's
/// mounts and the caching proxy mounts (whose upstream says less: zeros
/// and `false` where it is silent).
struct MetadataBody<'a> {
    cas_required: bool,
    created_time: String,
    current_version: u64,
    custom: &'a BTreeMap<String, String>,
    max_versions: u32,
    oldest_version: u64,
    updated_time: String,
    versions: Map<String, Value>,
}

impl MetadataBody<'_> {
    fn into_json(self) -> Value {
        json!({
            "cas_required": self.cas_required,
            "created_time": self.created_time,
            "current_version": self.current_version,
            "custom_metadata": custom_json(self.custom),
            "delete_version_after": "0s",
            "max_versions": self.max_versions,
            "oldest_version": self.oldest_version,
            "updated_time": self.updated_time,
            "versions": self.versions,
        })
    }
}

fn version_json(v: &VersionMetadata, custom: &BTreeMap<String, String>) -> Value {
    json!({
        "created_time": rfc3339(v.created_time),
        "custom_metadata": custom_json(custom),
        "deletion_time": v.deletion_time.map(rfc3339).unwrap_or_default(),
        "destroyed": v.destroyed,
        "version": v.version,
    })
}

fn metadata_json(m: &EntryMetadata) -> Value {
    let versions = m.versions.iter().map(|v| {
        let deleted = v.deletion_time.map(rfc3339).unwrap_or_default();
        let entry = version_entry(rfc3339(v.created_time), deleted, v.destroyed);
        (v.version.to_string(), entry)
    });
    MetadataBody {
        cas_required: m.cas_required,
        created_time: rfc3339(m.created_time),
        current_version: m.current_version,
        custom: &m.custom_metadata,
        max_versions: m.max_versions,
        oldest_version: m.oldest_version,
        updated_time: rfc3339(m.updated_time),
        versions: versions.collect(),
    }
    .into_json()
}

/// An entry's value as the secret's data (`{"value": …}` for a
/// single-value entry). Values must be UTF-8 text.
fn data_json(value: &EntryValue) -> secref::Result<Value> {
    let text =
        |s: &Secret| -> secref::Result<Value> { s.as_text().map(|t| Value::String(t.to_string())) };
    Ok(match value {
        EntryValue::Single(s) => json!({ "value": text(s)? }),
        EntryValue::Fields(f) => Value::Object(
            f.iter()
                .map(|(k, v)| Ok((k.clone(), text(v)?)))
                .collect::<secref::Result<Map<String, Value>>>()?,
        ),
    })
}

/// A request's `data` object as an entry value: strings as they are,
/// anything else as its compact JSON text.
pub(crate) fn entry_value(data: &Map<String, Value>) -> EntryValue {
    EntryValue::Fields(
        data.iter()
            .map(|(k, v)| {
                let text = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), Secret::from(text))
            })
            .collect(),
    )
}

pub(crate) fn cas_of(body: &Value) -> Early<Option<u64>> {
    match body.get("options").and_then(|o| o.get("cas")) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| early(StatusCode::BAD_REQUEST, "invalid cas option")),
    }
}

/// The written version's metadata (Vault's answer to a write).
fn written(store: &Store, name: &str, n: u64) -> secref::Result<Value> {
    let m = store.metadata(name)?;
    let v = m
        .versions
        .iter()
        .find(|v| v.version == n)
        .ok_or_else(|| Error::internal("the written version is gone"))?;
    Ok(envelope(version_json(v, &m.custom_metadata)))
}

async fn local_op(
    api: &Api,
    p: &Principal,
    req: &Req,
    t: &Target<'_>,
    op: Op,
    store: Arc<Store>,
    prefix: &str,
) -> Response {
    let Some(action) = action_of(op, &req.method) else {
        return method_not_allowed();
    };
    let granted = match authorize(api, p, &req.headers, t, action, true).await {
        Ok(g) => g,
        Err(r) => return *r,
    };
    let name = entry_name(prefix, t.path);
    let creation_path = format!("{}/{}", t.mount_name, t.path);
    match (op, req.method.as_str()) {
        (Op::Data | Op::V1, "GET") => {
            let wrap = match wrap_ttl(&req.headers, &granted) {
                Ok(w) => w,
                Err(r) => return *r,
            };
            let version = match parse_version(req) {
                Ok(v) => v,
                Err(r) => return *r,
            };
            let v1 = op == Op::V1;
            // The store is read here, not through the resolver: the audit
            // admission (`on_sink_failure`) every resolver read passes
            // must be asked here too.
            let admitted = api
                .state
                .resolver()
                .admit_read_as(
                    &api.state.request_context(p, &req.headers),
                    t.rule_ref(Action::Read).as_str(),
                )
                .await;
            if let Err(e) = admitted {
                api.state
                    .resolver()
                    .count_served_read(LOCAL_PROVIDER, Some(e.code()));
                return fail(&e);
            }
            // An unchanged store is answered here: a few microseconds, less
            // than the hop to a blocking thread (see `Store::read_if_unchanged`).
            let res = match store.read_if_unchanged(&name, version) {
                Some(x) => Ok(x),
                None => {
                    blocking(&store, move |s| {
                        let read = s.read(&name, version);
                        let meta = s.metadata(&name);
                        Ok((read, meta))
                    })
                    .await
                }
            };
            let (read, meta) = match res {
                Ok(x) => x,
                Err(e) => {
                    api.state
                        .resolver()
                        .count_served_read(LOCAL_PROVIDER, Some(e.code()));
                    return fail(&e);
                }
            };
            api.state
                .resolver()
                .count_served_read(LOCAL_PROVIDER, read.as_ref().err().map(|e| e.code()));
            {
                let ctx = api.state.request_context(p, &req.headers);
                let version = read.as_ref().map(|(_, vm)| vm.version.to_string());
                api.state.resolver().audit_read_as(
                    &ctx,
                    t.rule_ref(Action::Read).as_str(),
                    granted.decision_id.as_deref(),
                    version.as_ref().map(|v| Some(v.as_str())).map_err(|e| *e),
                );
            }
            match read {
                Ok((value, vm)) => {
                    let data = match data_json(&value) {
                        Ok(d) => d,
                        Err(e) => return fail(&e),
                    };
                    let custom = meta.map(|m| m.custom_metadata).unwrap_or_default();
                    let body = if v1 {
                        envelope(data)
                    } else {
                        envelope(json!({ "data": data, "metadata": version_json(&vm, &custom) }))
                    };
                    let path = if v1 {
                        creation_path
                    } else {
                        format!("{}/data/{}", t.mount_name, t.path)
                    };
                    answer(api, &p.name, body, wrap, &path).await
                }
                Err(e) => {
                    // Vault's answer for a deleted or destroyed version: 404
                    // with that version's metadata and null data.
                    let removed = matches!(
                        e.code(),
                        ErrorCode::NotFound
                            | ErrorCode::VersionDeleted
                            | ErrorCode::VersionDestroyed
                    );
                    if let (false, true, Ok(m)) = (v1, removed, &meta) {
                        let n = version.unwrap_or(m.current_version);
                        if let Some(vm) = m
                            .versions
                            .iter()
                            .find(|v| v.version == n && (v.destroyed || v.deletion_time.is_some()))
                        {
                            let body = envelope(json!({
                                "data": null,
                                "metadata": version_json(vm, &m.custom_metadata),
                            }));
                            return (StatusCode::NOT_FOUND, axum::Json(body)).into_response();
                        }
                    }
                    fail(&e)
                }
            }
        }
        (Op::Metadata, "GET") => {
            let wrap = match wrap_ttl(&req.headers, &granted) {
                Ok(w) => w,
                Err(r) => return *r,
            };
            match blocking(&store, move |s| s.metadata(&name)).await {
                Ok(m) => {
                    answer(
                        api,
                        &p.name,
                        envelope(metadata_json(&m)),
                        wrap,
                        &format!("{}/metadata/{}", t.mount_name, t.path),
                    )
                    .await
                }
                Err(e) => fail(&e),
            }
        }
        (_, "LIST") => {
            let folder = if t.path.is_empty() {
                prefix.to_string()
            } else {
                format!("{name}/")
            };
            let names = match blocking(&store, {
                let folder = folder.clone();
                move |s| s.names(&folder)
            })
            .await
            {
                Ok(n) => n,
                Err(e) => return fail(&e),
            };
            let keys: BTreeSet<String> = names
                .iter()
                .filter_map(|n| n.strip_prefix(&folder))
                .map(|rest| match rest.split_once('/') {
                    Some((dir, _)) => format!("{dir}/"),
                    None => rest.to_string(),
                })
                .collect();
            if keys.is_empty() {
                return not_found();
            }
            ok(envelope(json!({ "keys": keys })))
        }
        (Op::Data | Op::V1, "POST" | "PUT" | "PATCH") => {
            let body = match req.json() {
                Ok(b) => b,
                Err(r) => return *r,
            };
            let cas = match cas_of(&body) {
                Ok(c) => c,
                Err(r) => return *r,
            };
            // KV v1 takes the data as the whole body.
            let data = if op == Op::V1 {
                body.as_object().cloned()
            } else {
                body.get("data").and_then(Value::as_object).cloned()
            };
            let Some(data) = data else {
                return error(StatusCode::BAD_REQUEST, "no data provided");
            };
            let patch = req.method == "PATCH";
            let v1 = op == Op::V1;
            let res = blocking(&store, move |s| {
                local_ref(&name)?;
                let n = if patch {
                    patch_entry(s, &name, &data, cas)?
                } else {
                    s.write(&name, &entry_value(&data), cas)?
                };
                if v1 {
                    return Ok(None);
                }
                written(s, &name, n).map(Some)
            })
            .await;
            match res {
                Ok(Some(body)) => ok(body),
                Ok(None) => no_content(),
                Err(e) => fail(&e),
            }
        }
        (Op::Data | Op::V1, "DELETE") => {
            let res = blocking(&store, move |s| s.remove(&local_ref(&name)?)).await;
            match res {
                Ok(_) => no_content(),
                Err(e) => fail(&e),
            }
        }
        (Op::Delete | Op::Undelete | Op::Destroy, _) => {
            let body = match req.json() {
                Ok(b) => b,
                Err(r) => return *r,
            };
            let versions = match versions_of(&body) {
                Ok(v) => v,
                Err(r) => return *r,
            };
            let res = blocking(&store, move |s| match op {
                Op::Delete => s.delete_versions(&name, &versions),
                Op::Undelete => s.undelete(&name, &versions),
                _ => s.destroy(&name, &versions),
            })
            .await;
            match res {
                Ok(_) => no_content(),
                Err(e) => fail(&e),
            }
        }
        (Op::Metadata, "POST" | "PUT" | "PATCH") => {
            let body = match req.json() {
                Ok(b) => b,
                Err(r) => return *r,
            };
            let update = match metadata_update(&body) {
                Ok(u) => u,
                Err(r) => return *r,
            };
            match blocking(&store, move |s| {
                local_ref(&name)?;
                s.update_metadata(&name, &update)
            })
            .await
            {
                Ok(()) => no_content(),
                Err(e) => fail(&e),
            }
        }
        (Op::Metadata, "DELETE") => match blocking(&store, move |s| s.purge(&name)).await {
            Ok(_) => no_content(),
            Err(e) => fail(&e),
        },
        _ => method_not_allowed(),
    }
}

/// PATCH: the current version with `data` merged in (JSON merge patch: a
/// null removes a key), written with check-and-set on the version it was
/// read from, so a concurrent write is never silently overwritten.
fn patch_entry(
    s: &Store,
    name: &str,
    data: &Map<String, Value>,
    cas: Option<u64>,
) -> secref::Result<u64> {
    let (current, vm) = s.read(name, None)?;
    if cas.is_some_and(|c| c != vm.version) {
        return Err(Error::usage(format!(
            "check-and-set parameter did not match the current version ({})",
            vm.version
        )));
    }
    let mut fields = match current {
        EntryValue::Fields(f) => f,
        EntryValue::Single(v) => [("value".to_string(), v)].into_iter().collect(),
    };
    for (k, v) in data {
        match v {
            Value::Null => {
                fields.remove(k);
            }
            Value::String(t) => {
                fields.insert(k.clone(), Secret::from(t.clone()));
            }
            other => {
                fields.insert(k.clone(), Secret::from(other.to_string()));
            }
        }
    }
    s.write(name, &EntryValue::Fields(fields), Some(vm.version))
}

pub(crate) fn metadata_update(body: &Value) -> Early<MetadataUpdate> {
    let bad = |m: &str| early(StatusCode::BAD_REQUEST, m);
    let mut u = MetadataUpdate::default();
    if let Some(v) = body.get("max_versions").filter(|v| !v.is_null()) {
        let n = v.as_u64().filter(|n| *n <= u32::MAX as u64);
        u.max_versions = Some(n.ok_or_else(|| bad("invalid max_versions"))? as u32);
    }
    if let Some(v) = body.get("cas_required").filter(|v| !v.is_null()) {
        u.cas_required = Some(v.as_bool().ok_or_else(|| bad("invalid cas_required"))?);
    }
    if let Some(v) = body.get("custom_metadata").filter(|v| !v.is_null()) {
        let map = v
            .as_object()
            .ok_or_else(|| bad("invalid custom_metadata"))?;
        let mut out = BTreeMap::new();
        for (k, v) in map {
            let s = v
                .as_str()
                .ok_or_else(|| bad("custom_metadata values must be strings"))?;
            out.insert(k.clone(), s.to_string());
        }
        u.custom_metadata = Some(out);
    }
    match body.get("delete_version_after") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == "0s" || s == "0" => {}
        Some(Value::Number(n)) if n.as_u64() == Some(0) => {}
        Some(_) => return Err(bad("delete_version_after is not supported by secref")),
    }
    Ok(u)
}

// ------------------------------------------------------------- upstream --

/// Fills an upstream template for `path`, pinned to `version` if given.
fn upstream_ref(template: &str, path: &str, version: Option<u64>) -> secref::Result<SecretRef> {
    let mut r = template.replace("{path}", path);
    if let Some(v) = version {
        r.push_str(&format!("?version={v}"));
    }
    SecretRef::parse(r)
}

async fn upstream_op(
    api: &Api,
    p: &Principal,
    req: &Req,
    t: &Target<'_>,
    op: Op,
    template: &str,
) -> Response {
    let Some(action) = action_of(op, &req.method) else {
        return method_not_allowed();
    };
    match action {
        Action::Read | Action::MetadataRead => {}
        Action::List => return method_not_allowed(),
        _ => return read_only(),
    }
    // The policy is applied by the resolver to the upstream reference.
    let granted = match authorize(api, p, &req.headers, t, action, false).await {
        Ok(g) => g,
        Err(r) => return *r,
    };
    let wrap = match wrap_ttl(&req.headers, &granted) {
        Ok(w) => w,
        Err(r) => return *r,
    };
    let version = match parse_version(req) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let ctx = api.state.request_context(p, &req.headers);
    let resolver = api.state.resolver();
    if action == Action::MetadataRead {
        let r = match upstream_ref(template, t.path, None) {
            Ok(r) => r,
            Err(e) => return fail(&e),
        };
        return match resolver.metadata(r).as_(&ctx).await {
            Ok(m) => {
                let versions = m.versions.iter().map(|v| {
                    let created = v.created_at.clone().unwrap_or_default();
                    let deleted = v.deleted_at.clone().unwrap_or_default();
                    (
                        v.version.clone(),
                        version_entry(created, deleted, v.destroyed),
                    )
                });
                let current: u64 = m
                    .current_version
                    .as_deref()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                api.saw(&t.key(), current);
                let body = envelope(
                    MetadataBody {
                        cas_required: false,
                        created_time: m.created_at.clone().unwrap_or_default(),
                        current_version: current,
                        custom: &m.custom,
                        max_versions: 0,
                        oldest_version: 0,
                        updated_time: m.updated_at.clone().unwrap_or_default(),
                        versions: versions.collect(),
                    }
                    .into_json(),
                );
                answer(
                    api,
                    &p.name,
                    body,
                    wrap,
                    &format!("{}/metadata/{}", t.mount_name, t.path),
                )
                .await
            }
            Err(e) => fail(&e),
        };
    }
    let r = match upstream_ref(template, t.path, version) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let key = t.key();
    let mut resolved = resolver.read(r.clone()).as_(&ctx).detailed().await;
    // Never answer a latest read with a version older than one already
    // seen (a cached answer from before a newer version was read): drop
    // the cached answer and ask upstream once more.
    if version.is_none() {
        if let Ok(got) = &resolved {
            let n = got.version.as_deref().and_then(|v| v.parse::<u64>().ok());
            if n.is_some_and(|n| n < api.seen_version(&key)) {
                let _ = resolver.invalidate(r.clone());
                resolved = resolver.read(r.clone()).as_(&ctx).detailed().await;
            }
        }
    }
    let got = match resolved {
        Ok(g) => g,
        Err(e) => return fail(&e),
    };
    let n = got.version.as_deref().and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = n {
        if version.is_none() && n < api.seen_version(&key) {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the upstream answered an older version than one already seen; try again",
            );
        }
        api.saw(&key, n);
    }
    let data = match got.secret.as_text() {
        Ok(text) => match serde_json::from_str::<Value>(text) {
            Ok(v @ Value::Object(_)) => v,
            _ => json!({ "value": text }),
        },
        Err(e) => return fail(&e),
    };
    let (body, path) = if t.mount.kv_version == 1 {
        (envelope(data), format!("{}/{}", t.mount_name, t.path))
    } else {
        (
            envelope(json!({
                "data": data,
                "metadata": {
                    "created_time": "",
                    "custom_metadata": null,
                    "deletion_time": "",
                    "destroyed": false,
                    "version": n.unwrap_or(0),
                },
            })),
            format!("{}/data/{}", t.mount_name, t.path),
        )
    };
    answer(api, &p.name, body, wrap, &path).await
}

impl Api {
    fn seen_version(&self, key: &str) -> u64 {
        self.seen.lock().get(key).copied().unwrap_or(0)
    }

    fn saw(&self, key: &str, n: u64) {
        let mut seen = self.seen.lock();
        if seen.len() >= MAX_SEEN && !seen.contains_key(key) {
            seen.clear();
        }
        let e = seen.entry(key.to_string()).or_insert(0);
        *e = (*e).max(n);
    }
}

/// `POST /v1/sys/secref/invalidate {"path": "<mount>/<path>"}`: drops the
/// cached answers (latest and every pinned version up to the newest seen)
/// of an upstream path. The caller must be allowed to read it.
async fn invalidate(api: &Api, p: &Principal, req: &Req) -> Response {
    let body = match req.json() {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let Some(full) = body.get("path").and_then(Value::as_str) else {
        return error(StatusCode::BAD_REQUEST, "missing path");
    };
    let full = full.trim_matches('/');
    let (mount_name, path) = full.split_once('/').unwrap_or((full, ""));
    let config = api.state.config();
    let Some(mount) = config.vault_mounts.get(mount_name) else {
        return error(
            StatusCode::BAD_REQUEST,
            "the path is not under a configured mount",
        );
    };
    if path.is_empty() {
        return error(StatusCode::BAD_REQUEST, "missing path");
    }
    let t = Target {
        mount_name,
        mount,
        path,
    };
    if let Err(r) = authorize(api, p, &req.headers, &t, Action::Read, false).await {
        return *r;
    }
    if let MountBackend::Upstream { template } = &mount.backend {
        let newest = api.seen_version(&t.key()).min(MAX_INVALIDATE_VERSIONS);
        for v in std::iter::once(None).chain((1..=newest).map(Some)) {
            match upstream_ref(template, path, v) {
                Ok(r) => {
                    let _ = api.state.resolver().invalidate(r);
                }
                Err(e) => return fail(&e),
            }
        }
    }
    // A local mount caches nothing.
    no_content()
}

// ------------------------------------------------------------------ sys --

fn health(req: &Req) -> Response {
    if req.method != "GET" && req.method != "HEAD" {
        return method_not_allowed();
    }
    ok(json!({
        "initialized": true,
        "sealed": false,
        "standby": false,
        "performance_standby": false,
        "replication_performance_mode": "disabled",
        "replication_dr_mode": "disabled",
        "server_time_utc": SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        "version": concat!("1.15.0+secref-", env!("CARGO_PKG_VERSION")),
        "cluster_name": "secref",
        "cluster_id": "",
    }))
}

fn mount_json(m: &VaultMount) -> Value {
    json!({
        "type": "kv",
        "description": match &m.backend {
            MountBackend::Local { .. } => "the secref local store",
            MountBackend::Upstream { .. } => "read-only caching proxy (secref)",
        },
        "options": { "version": m.kv_version.to_string() },
        "config": { "default_lease_ttl": 0, "max_lease_ttl": 0 },
        "local": true,
        "seal_wrap": false,
        "external_entropy_access": false,
        "accessor": "",
        "uuid": "",
    })
}

fn sys_mounts(api: &Api) -> Response {
    let mounts: Map<String, Value> = api
        .state
        .config()
        .vault_mounts
        .iter()
        .map(|(name, m)| (format!("{name}/"), mount_json(m)))
        .collect();
    let mut body = envelope(Value::Object(mounts.clone()));
    // Older clients read the mounts at the top level too.
    if let Some(obj) = body.as_object_mut() {
        for (k, v) in mounts {
            obj.insert(k, v);
        }
    }
    ok(body)
}

/// The Vault CLI's preflight before `vault kv …`: which mount a path is
/// in and its KV version.
fn ui_mount(api: &Api, path: &str) -> Response {
    let name = path.split('/').next().unwrap_or("");
    match api.state.config().vault_mounts.get(name) {
        Some(m) => {
            let mut data = mount_json(m);
            data["path"] = json!(format!("{name}/"));
            ok(envelope(data))
        }
        None => error(
            StatusCode::BAD_REQUEST,
            "preflight capability check returned 403, please ensure client's policies grant access to the path",
        ),
    }
}

fn lookup_self(p: &Principal) -> Value {
    // Vault also echoes the token as `id`; this server never sends tokens
    // back.
    envelope(json!({
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
    }))
}

// ------------------------------------------------------------- wrapping --

/// Stores `body` behind a new single-use wrapping token.
async fn wrap_answer(
    api: &Api,
    owner: &str,
    body: Value,
    ttl: Duration,
    creation_path: &str,
) -> Response {
    let creation_time = now_rfc3339();
    let token = match &api.sealed {
        Some(sealed) => {
            match sealed
                .wrap(owner, body, ttl, creation_time.clone(), creation_path)
                .await
            {
                Ok(token) => token,
                Err(WrapRefused::Full) => return too_many_wraps(),
                Err(WrapRefused::Backend(e)) => return fail(&e),
                Err(WrapRefused::TooLarge) => {
                    return error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "the answer is too large to wrap (over 256 KiB sealed)",
                    )
                }
                Err(WrapRefused::Invalid) => return fail(&Error::new(ErrorCode::Internal, "")),
            }
        }
        None => match wrap_locally(api, owner, body, ttl, &creation_time, creation_path) {
            Some(token) => token,
            None => return too_many_wraps(),
        },
    };
    let accessor = uuid::Uuid::new_v4().simple().to_string();
    ok(json!({
        "request_id": uuid::Uuid::new_v4().to_string(),
        "lease_id": "",
        "renewable": false,
        "lease_duration": 0,
        "data": null,
        "wrap_info": {
            "token": token,
            "accessor": accessor,
            "ttl": ttl.as_secs(),
            "creation_time": creation_time,
            "creation_path": creation_path,
            "wrapped_accessor": "",
        },
        "warnings": null,
        "auth": null,
    }))
}

fn too_many_wraps() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "too many outstanding wrapping tokens for this caller; unwrap or let them expire",
    )
}

/// In-memory mode: `body` behind a new random token in this process's
/// table; `None` when `owner` holds its quota.
fn wrap_locally(
    api: &Api,
    owner: &str,
    body: Value,
    ttl: Duration,
    creation_time: &str,
    creation_path: &str,
) -> Option<String> {
    let token = crate::auth::generate_token();
    let token = format!(
        "hvs.{}",
        token
            .as_text()
            .unwrap_or_default()
            .trim_start_matches("srt_")
    );
    let wrapped = Wrapped {
        answer: body,
        ttl,
        creation_time: creation_time.to_owned(),
        creation_path: creation_path.to_string(),
    };
    api.wraps
        .insert(owner, token.clone(), wrapped, deadline(ttl))
        .ok()
        .map(|()| token)
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

/// `sys/wrapping/unwrap` and `sys/wrapping/lookup`. The wrapping token
/// comes in the body (then the caller must be authenticated, as hvac's
/// `sys.unwrap(token)` sends it) or as `X-Vault-Token`. Unwrapping removes
/// it; a lookup does not.
async fn wrapping(api: &Api, caller: Option<Principal>, req: &Req, unwrap: bool) -> Response {
    if req.method != "POST" && req.method != "PUT" {
        return method_not_allowed();
    }
    let body = match req.json() {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let in_body = body
        .get("token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty());
    let wrapping = match in_body {
        Some(t) => {
            if caller.is_none() {
                return denied();
            }
            t.to_string()
        }
        None => match req
            .headers
            .get("x-vault-token")
            .and_then(|v| v.to_str().ok())
        {
            Some(t) => t.to_string(),
            None => return denied(),
        },
    };
    let invalid = || {
        error(
            StatusCode::BAD_REQUEST,
            "wrapping token is not valid or does not exist",
        )
    };
    if let Some(sealed) = &api.sealed {
        let refused = |r: WrapRefused| match r {
            WrapRefused::Backend(e) => fail(&e),
            WrapRefused::Invalid | WrapRefused::Full | WrapRefused::TooLarge => invalid(),
        };
        return if unwrap {
            sealed
                .unwrap(&wrapping)
                .await
                .map(ok)
                .unwrap_or_else(refused)
        } else {
            match sealed.lookup(&wrapping).await {
                Ok(w) => ok(envelope(json!({
                    "creation_path": w.creation_path,
                    "creation_time": w.creation_time,
                    "creation_ttl": w.ttl,
                }))),
                Err(r) => refused(r),
            }
        };
    }
    if unwrap {
        match api.wraps.take(&wrapping) {
            Some((_, w)) => ok(w.answer),
            None => invalid(),
        }
    } else {
        api.wraps
            .peek(&wrapping, |w| {
                ok(envelope(json!({
                    "creation_path": w.creation_path,
                    "creation_time": w.creation_time,
                    "creation_ttl": w.ttl.as_secs(),
                })))
            })
            .unwrap_or_else(invalid)
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
    fn actions() {
        assert_eq!(action_of(Op::Data, "GET"), Some(Action::Read));
        assert_eq!(action_of(Op::Data, "PATCH"), Some(Action::Write));
        assert_eq!(action_of(Op::Metadata, "LIST"), Some(Action::List));
        assert_eq!(action_of(Op::Metadata, "DELETE"), Some(Action::Destroy));
        assert_eq!(action_of(Op::Undelete, "POST"), Some(Action::Delete));
        assert_eq!(action_of(Op::Data, "LIST"), None);
        assert_eq!(action_of(Op::Destroy, "GET"), None);
    }

    #[test]
    fn mounts_table() {
        use crate::ServerConfig;
        let parse = |t: &str| ServerConfig::from_table(Some(&toml::from_str(t).unwrap()));
        let d = ServerConfig::default();
        assert_eq!(
            d.vault_mounts["secret"].backend,
            MountBackend::Local {
                prefix: String::new()
            }
        );
        let c = parse(
            "[vault.mounts.kv]\nbackend = 'openbao+kv2://secret/{path}'\n[vault.mounts.old]\nbackend = 'local://legacy/{path}'\nkv_version = 1\n",
        )
        .unwrap();
        assert!(
            !c.vault_mounts.contains_key("secret"),
            "a table replaces the default"
        );
        assert!(matches!(
            c.vault_mounts["kv"].backend,
            MountBackend::Upstream { .. }
        ));
        assert_eq!(c.vault_mounts["old"].kv_version, 1);
        for bad in [
            "[vault.mounts.sys]\nbackend = 'local://{path}'",
            "[vault.mounts.'a/b']\nbackend = 'local://{path}'",
            "[vault.mounts.x]\nbackend = 'local://fixed'",
            "[vault.mounts.x]\nbackend = 'local://{path}'\nkv_version = 3",
            "[vault.mounts.x]\nbackend = 'local://{path}'\nbogus = 1",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn entry_mapping() {
        assert_eq!(entry_name("", "myapp/db"), "myapp/db");
        assert_eq!(entry_name("team/", "db"), "team/db");
        assert!(local_ref("myapp/db").is_ok());
        assert!(local_ref("myapp/../db").is_err());
    }
}
