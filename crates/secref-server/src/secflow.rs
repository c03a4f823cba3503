//! The SecFlow Runtime API (`secflow-sdk` 0.1.9's wire format, defined once
//! in [`secref::providers::secflow::wire`] for this server and the client).
//!
//! | path | purpose | action checked |
//! |---|---|---|
//! | `POST /v1/secrets/resolve:batch` | values, with a lease per item | `read` |
//! | `POST /v1/secrets/validate:batch` | does the ref name a usable secret | `metadata_read` |
//! | `POST /v1/secrets/metadata:batch` | non-secret facts | `metadata_read` |
//! | `POST /v1/secrets/permission-check:batch` | policy question; a denial is `allowed:false` | (the asked one) |
//! | `POST /v1/leases/revoke:batch` | revoke leases this caller got | `lease_revoke` on the lease's ref |
//!
//! **References.** `secret://<environment>/<service>/<kind>/<name>` is mapped
//! onto a secref ref with `secflow_ref_template` (default
//! `local://secflow/{environment}/{service}/{kind}/{name}`); any other secref
//! ref (`local://…`, `openbao+kv2://…`, …) may be passed as `secret_ref`
//! directly and is resolved as is — except host-local ones (`env://…`,
//! `file://…`), which are denied unless an access rule names them (see
//! [`crate::access`]), on every route here.
//!
//! **Leases.** Every resolved item gets a fresh lease, bound to the caller
//! and the reference, lasting `lease_ttl_seconds` from the request (≤ 1 day)
//! or the server's `lease_ttl_seconds` (default 300). A lease id is a sealed,
//! self-authenticating token ([`crate::leases`]): issuing one stores nothing,
//! so resolving never fills a table. `revoke:batch` revokes the caller's own
//! leases, if a rule (and the policy) allows `lease_revoke` on the lease's
//! reference (otherwise the item is `denied`, `PERMISSION_DENIED`); anyone
//! else's, forged or already revoked ids are `NOT_FOUND`, ended ones
//! `EXPIRED`. Revoked ids are remembered until they expire, at most
//! `max_revoked_leases_per_principal` per caller (past it: `RATE_LIMITED`,
//! for that caller only). Leases are bookkeeping for the client: the value
//! is not taken back.
//!
//! **Environments.** `target_environment` must be one of `dev`, `stage`,
//! `prod`, `shared`. A `secret://` ref whose environment segment differs from
//! it is *denied* (`PERMISSION_DENIED`): a client configured for `dev` never
//! reads `prod`. Other schemes have no environment and are not checked.
//!
//! **Policy.** When the resolver has a `[policy]`, each request is one call
//! on behalf of [`AppState::request_context`] (subject = the caller's
//! principal name; `x-aud`, `x-jti`, `x-cnf-jkt`, … from the headers), so
//! the token's `jti` counts once per request. A policy refusal is a
//! `denied` item, code `PERMISSION_DENIED` (or `TENANT_MOUNT_MISMATCH`),
//! `decision_id` `policy-<remote code>` (`policy-DENY`,
//! `policy-SECRET_AUTHZ_FAILED`, …). `validate`/`metadata` ask for
//! `metadata_read`; where the provider lacks them, the fallback read asks for
//! a read. `permission-check` still answers from `[[server.rules]]` only.
//!
//! **Errors.** Request-level problems answer with an HTTP error status and
//! `{"error":{"code","message","retryable"},"request_id","trace_id"}`; item
//! problems are items with `result:"failed"` (or `"denied"` for access
//! denials) and `error{code,message,retryable,decision_id}`. Codes are
//! secref's [`ErrorCode`]s in upper case (`NOT_FOUND`, `PERMISSION_DENIED`,
//! `INVALID_REFERENCE` …), plus `INVALID_REQUEST`, `UNAUTHENTICATED`,
//! `PAYLOAD_TOO_LARGE` and `TIMEOUT` at request level.

use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use secref::policy::Context;
use secref::provider::{Action, RevokeReason, Validation};
pub use secref::providers::secflow::wire::ENVIRONMENTS;
use secref::providers::secflow::wire::{
    self, ErrorResponse, ItemError, Op, Request, RequestError, RequestItem,
};
use secref::{Error, ErrorCode, Resolved, Secret, SecretRef};
use serde_json::{json, Map, Value};

use crate::auth::{Caller, Principal};
use crate::config::fill_template;
use crate::{AppState, Logged};

/// Most items in one request (the SDK's `MAX_BATCH_ITEMS`).
pub const MAX_ITEMS: usize = wire::MAX_BATCH_ITEMS;
/// The longest lease a client may ask for with `lease_ttl_seconds`.
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(86_400);

/// The SecFlow routes: one per [`Op`], all answered by the same handler; a
/// wrong method is 405 in SecFlow's error shape.
pub fn router(state: AppState) -> Router {
    Op::ALL
        .into_iter()
        .fold(Router::new(), |router, op| {
            router.route(
                op.path(),
                post(
                    move |State(state): State<AppState>,
                          Caller(caller): Caller,
                          headers: HeaderMap,
                          body: Body| handle(state, caller, headers, body, op),
                ),
            )
        })
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn method_not_allowed() -> Response {
    request_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "this endpoint takes POST only",
        false,
        &Ids::fresh(),
    )
}

/// Unknown paths answer in the SecFlow error shape too.
pub async fn not_found() -> Response {
    request_error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "no such endpoint",
        false,
        &Ids::fresh(),
    )
}

/// The correlation ids echoed in every answer.
struct Ids {
    request_id: String,
    trace_id: String,
}

impl Ids {
    fn fresh() -> Ids {
        Ids {
            request_id: fresh_id(),
            trace_id: fresh_id(),
        }
    }
}

/// A fresh `secref-serve-<uuid v4>` correlation id. The random bits come
/// from the thread's CSPRNG (seeded from the OS), not one `getrandom`
/// system call per id.
fn fresh_id() -> String {
    let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
    format!("secref-serve-{id}")
}

/// Check the caller, read and check the envelope, answer each item. The
/// shared layers (see [`crate::Server::layered`]) found the caller and bound
/// the body size and the request's time.
async fn handle(
    state: AppState,
    caller: Option<Principal>,
    headers: HeaderMap,
    body: Body,
    op: Op,
) -> Response {
    let Some(principal) = caller else {
        // Nothing is read or resolved for an unauthenticated caller.
        return request_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "missing or invalid bearer token",
            false,
            &Ids::fresh(),
        );
    };
    let ctx = state.request_context(&principal, &headers);
    let mut resp = handle_authenticated(&state, &principal, &ctx, body, op).await;
    if resp.extensions().get::<Logged>().is_none() {
        resp.extensions_mut().insert(Logged {
            principal: principal.name,
            items: 0,
        });
    }
    resp
}

async fn handle_authenticated(
    state: &AppState,
    principal: &Principal,
    ctx: &Context,
    body: Body,
    op: Op,
) -> Response {
    let limit = state.config().max_body_bytes;
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            return request_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                &format!("request body exceeds {limit} bytes"),
                false,
                &Ids::fresh(),
            )
        }
    };
    let envelope: Request = match serde_json::from_slice(&bytes) {
        Ok(e) => e,
        Err(e) => {
            // Only the kind and position: serde_json's messages can quote
            // input values.
            let kind = match e.classify() {
                serde_json::error::Category::Data => {
                    "a field is missing, unknown or of the wrong type"
                }
                _ => "the body is not valid JSON",
            };
            return request_error(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                &format!(
                    "invalid request body: {kind} (line {}, column {})",
                    e.line(),
                    e.column()
                ),
                false,
                &Ids::fresh(),
            );
        }
    };
    let ids = Ids {
        request_id: envelope.request_id.clone().unwrap_or_else(fresh_id),
        trace_id: envelope.trace_id.clone().unwrap_or_else(fresh_id),
    };
    if let Err(msg) = check_envelope(&envelope, op) {
        return request_error(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            &msg,
            false,
            &ids,
        );
    }
    let items: Vec<Item<'_>> = match op {
        Op::Revoke => revoke_items(state, principal, ctx, &envelope.items)
            .await
            .into_iter()
            .map(Item::Other)
            .collect(),
        _ => ref_items(state, principal, ctx, &envelope, op).await,
    };
    let mut resp = answer(&Answer {
        items: &items,
        request_id: &ids.request_id,
        trace_id: &ids.trace_id,
    });
    resp.extensions_mut().insert(Logged {
        principal: principal.name.clone(),
        items: envelope.items.len(),
    });
    resp
}

/// A batch answer. Fields in alphabetical order: the bytes are those the
/// generic JSON map gave before (serde_json's map is ordered by key).
#[derive(serde::Serialize)]
struct Answer<'a> {
    items: &'a [Item<'a>],
    request_id: &'a str,
    trace_id: &'a str,
}

/// One answered item: a resolved value (typed, serialized straight from
/// the `Secret`'s bytes, so the value is never copied into a JSON tree), or
/// any other answer.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Item<'a> {
    Resolved(Box<ResolvedItem<'a>>),
    Other(Value),
}

/// A `resolve:batch` item that delivered a value (keys in alphabetical
/// order, as [`Answer`]).
#[derive(serde::Serialize)]
struct ResolvedItem<'a> {
    decision_id: String,
    expires_at: String,
    issued_at: String,
    item_id: &'a str,
    lease_id: String,
    result: &'static str,
    revision_id: String,
    secret_id: String,
    secret_ref: &'a str,
    #[serde(serialize_with = "serialize_value")]
    value: Secret,
}

fn serialize_value<S: serde::Serializer>(secret: &Secret, s: S) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&WireValue::of(secret.expose_bytes()), s)
}

/// A value as the wire carries it ([`wire::encode_value`]'s shape): UTF-8
/// text as is, anything else as standard base64.
#[derive(serde::Serialize)]
struct WireValue<'a> {
    data: std::borrow::Cow<'a, str>,
    encoding: &'static str,
}

impl<'a> WireValue<'a> {
    fn of(bytes: &'a [u8]) -> WireValue<'a> {
        use base64::Engine as _;
        match std::str::from_utf8(bytes) {
            Ok(text) => WireValue {
                data: text.into(),
                encoding: "utf8",
            },
            Err(_) => WireValue {
                data: base64::engine::general_purpose::STANDARD
                    .encode(bytes)
                    .into(),
                encoding: "base64",
            },
        }
    }
}

/// `body` as a JSON response, serialized once into a buffer sized for it.
fn answer(body: &Answer<'_>) -> Response {
    let mut buf = Vec::with_capacity(256 + 400 * body.items.len());
    match serde_json::to_writer(&mut buf, body) {
        Ok(()) => (
            [(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            )],
            buf,
        )
            .into_response(),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "the answer could not be encoded",
            false,
        ),
    }
}

pub(crate) fn check_envelope(e: &Request, op: Op) -> Result<(), String> {
    if e.items.is_empty() || e.items.len() > MAX_ITEMS {
        return Err(format!("items must hold 1 to {MAX_ITEMS} entries"));
    }
    if let Some(p) = &e.purpose {
        if p != op.purpose() {
            return Err(format!(
                "purpose must be '{}' on this endpoint",
                op.purpose()
            ));
        }
    }
    if op != Op::Revoke {
        match e.target_environment.as_deref() {
            Some(env) if ENVIRONMENTS.contains(&env) => {}
            _ => return Err("target_environment must be one of dev, stage, prod, shared".into()),
        }
    }
    if e.lease_ttl_seconds == Some(0) || (op != Op::Resolve && e.lease_ttl_seconds.is_some()) {
        return Err("lease_ttl_seconds must be a positive integer, on resolve only".into());
    }
    let mut seen = std::collections::HashSet::new();
    for item in &e.items {
        if item.item_id.is_empty() || !seen.insert(item.item_id.as_str()) {
            return Err("item_id values must be non-empty and unique".into());
        }
        let needed = match op {
            Op::Revoke => item
                .lease_id
                .as_deref()
                .is_some_and(|s| !s.trim().is_empty()),
            _ => item
                .secret_ref
                .as_deref()
                .is_some_and(|s| !s.trim().is_empty()),
        };
        if !needed {
            let field = if op == Op::Revoke {
                "lease_id"
            } else {
                "secret_ref"
            };
            return Err(format!("item {} has no {field}", item.item_id));
        }
        let extra = match op {
            Op::Resolve => {
                item.action.is_some() || item.lease_id.is_some() || item.reason.is_some()
            }
            Op::PermissionCheck => {
                item.revision_id.is_some() || item.lease_id.is_some() || item.reason.is_some()
            }
            Op::Revoke => {
                item.secret_ref.is_some() || item.revision_id.is_some() || item.action.is_some()
            }
            Op::Validate | Op::Metadata => {
                item.action.is_some()
                    || item.lease_id.is_some()
                    || item.reason.is_some()
                    || item.revision_id.is_some()
            }
        };
        if extra {
            return Err(format!(
                "item {} has fields this endpoint does not take",
                item.item_id
            ));
        }
    }
    Ok(())
}

/// An item that failed before reaching a backend, or a backend's failure.
fn item_failure(
    item_id: &str,
    secret_ref: Option<&str>,
    result: &str,
    e: &Error,
    decision_id: Option<&str>,
) -> Value {
    let mut m = Map::new();
    m.insert("item_id".into(), json!(item_id));
    if let Some(r) = secret_ref {
        m.insert("secret_ref".into(), json!(r));
    }
    m.insert("result".into(), json!(result));
    let error = ItemError {
        code: remote_code(e.code()),
        message: e.message().to_string(),
        retryable: e.retryable(),
        decision_id: decision_id.map(str::to_string),
    };
    m.insert("error".into(), json!(error));
    Value::Object(m)
}

/// Our code in the SecFlow style (upper snake case).
pub fn remote_code(code: ErrorCode) -> String {
    code.as_str().to_ascii_uppercase()
}

/// A ref item after parsing, environment and access checks.
enum Prepared {
    /// Already answered (a failure or denial item).
    Done(Value),
    /// To be asked of the resolver.
    Ask {
        client_ref: SecretRef,
        backend_ref: SecretRef,
        decision_id: String,
    },
}

/// `read`: the item is a read (a resolve), so a refusal here is counted
/// like any other read outcome ([`secref::Resolver::count_served_read`]).
fn prepare(
    state: &AppState,
    principal: &Principal,
    env: &str,
    item: &RequestItem,
    action: Action,
    read: bool,
) -> Prepared {
    // A refused read counts under the provider that would have served it.
    let count_refusal = |r: &SecretRef, code: ErrorCode| {
        if read {
            let resolver = state.resolver();
            let provider = backend_ref(state, r)
                .ok()
                .and_then(|b| resolver.provider_for(&b).ok().map(str::to_owned))
                .unwrap_or_else(|| "none".to_owned());
            resolver.count_served_read(&provider, Some(code));
        }
    };
    let raw = item.secret_ref.as_deref().unwrap_or_default().trim();
    let client_ref = match SecretRef::parse(raw) {
        Ok(r) => r,
        Err(e) => {
            return Prepared::Done(item_failure(&item.item_id, Some(raw), "failed", &e, None))
        }
    };
    if let secref::RefKind::SecFlow(sf) = client_ref.kind() {
        if sf.environment != env {
            let e = Error::new(
                ErrorCode::PermissionDenied,
                format!(
                    "reference environment '{}' does not match target_environment '{env}'",
                    sf.environment
                ),
            );
            count_refusal(&client_ref, e.code());
            return Prepared::Done(item_failure(
                &item.item_id,
                Some(raw),
                "denied",
                &e,
                Some("environment-mismatch"),
            ));
        }
    }
    // Decided on the parsed, canonical reference, never the raw text.
    let decision = state.access().decide(principal, &client_ref, action);
    if !decision.allowed {
        let e = Error::new(
            ErrorCode::PermissionDenied,
            format!(
                "caller '{}' may not {} this reference",
                principal.name,
                action.as_str()
            ),
        );
        count_refusal(&client_ref, e.code());
        return Prepared::Done(item_failure(
            &item.item_id,
            Some(raw),
            "denied",
            &e,
            Some(&decision.decision_id),
        ));
    }
    let backend_ref = match backend_ref(state, &client_ref) {
        Ok(r) => r,
        Err(e) => {
            return Prepared::Done(item_failure(&item.item_id, Some(raw), "failed", &e, None))
        }
    };
    Prepared::Ask {
        client_ref,
        backend_ref,
        decision_id: decision.decision_id,
    }
}

/// Maps a client's ref onto the ref the resolver reads.
fn backend_ref(state: &AppState, r: &SecretRef) -> secref::Result<SecretRef> {
    match r.kind() {
        secref::RefKind::SecFlow(sf) => SecretRef::parse(fill_template(
            &state.config().secflow_ref_template,
            &sf.environment,
            &sf.service,
            &sf.kind,
            &sf.name,
        )),
        _ => Ok(r.clone()),
    }
}

/// Answers the ref items of one request. The resolver is asked once per
/// request for all its items (so a token `jti` counts once per request, as
/// the policy wants), on behalf of the request's [`Context`]; a policy
/// refusal becomes a `denied` item.
async fn ref_items<'a>(
    state: &AppState,
    principal: &Principal,
    ctx: &Context,
    e: &'a Request,
    op: Op,
) -> Vec<Item<'a>> {
    let env = e.target_environment.as_deref().unwrap_or_default();
    let mut out: Vec<Option<Item<'a>>> = Vec::with_capacity(e.items.len());
    // (item index, client ref, backend ref, decision id) still to be asked.
    let mut asks: Vec<(usize, SecretRef, SecretRef, String)> = Vec::new();
    for (i, item) in e.items.iter().enumerate() {
        let action = match op {
            Op::Resolve => Action::Read,
            Op::Validate | Op::Metadata => Action::MetadataRead,
            Op::PermissionCheck => match Action::parse(item.action.as_deref().unwrap_or("read")) {
                Ok(a) => a,
                Err(err) => {
                    out.push(Some(Item::Other(item_failure(
                        &item.item_id,
                        item.secret_ref.as_deref(),
                        "failed",
                        &err,
                        None,
                    ))));
                    continue;
                }
            },
            Op::Revoke => unreachable!("revoke has no refs"),
        };
        if op == Op::PermissionCheck {
            out.push(Some(Item::Other(permission_item(
                state, principal, env, item, action,
            ))));
            continue;
        }
        match prepare(state, principal, env, item, action, op == Op::Resolve) {
            Prepared::Done(v) => out.push(Some(Item::Other(v))),
            Prepared::Ask {
                client_ref,
                backend_ref,
                decision_id,
            } => {
                out.push(None);
                asks.push((i, client_ref, backend_ref, decision_id));
            }
        }
    }
    let backend_refs: Vec<SecretRef> = asks.iter().map(|a| a.2.clone()).collect();
    let answers: Vec<Item<'a>> = match op {
        Op::Resolve => {
            // One clock reading per request: every item was issued now.
            let issued_at = rfc3339(SystemTime::now());
            let results = each(
                state
                    .resolver()
                    .read_many(&backend_refs)
                    .as_(ctx)
                    .detailed()
                    .each()
                    .await,
                asks.len(),
            );
            asks.iter()
                .zip(results)
                .map(|((i, client_ref, backend_ref, decision_id), res)| {
                    resolve_item(
                        state,
                        principal,
                        &e.items[*i],
                        (client_ref, backend_ref),
                        decision_id,
                        (e.lease_ttl_seconds, &issued_at),
                        res,
                    )
                })
                .collect()
        }
        Op::Validate => {
            let found = validations(state, ctx, &backend_refs).await;
            asks.iter()
                .zip(found)
                .map(|((i, client_ref, _, _), res)| {
                    Item::Other(validate_item(&e.items[*i], client_ref, res))
                })
                .collect()
        }
        _ => {
            let found = metadatas(state, ctx, &backend_refs).await;
            asks.iter()
                .zip(found)
                .map(|((i, client_ref, backend_ref, _), res)| {
                    Item::Other(metadata_item(&e.items[*i], client_ref, backend_ref, res))
                })
                .collect()
        }
    };
    for ((i, ..), answer) in asks.iter().zip(answers) {
        out[*i] = Some(answer);
    }
    out.into_iter()
        .map(|v| v.expect("every item answered"))
        .collect()
}

/// A whole-call failure (only unparseable input, which `prepare` already
/// excluded) copied onto each item.
fn each<T>(res: secref::Result<Vec<secref::Result<T>>>, n: usize) -> Vec<secref::Result<T>> {
    match res {
        Ok(v) => v,
        Err(e) => (0..n).map(|_| Err(e.clone())).collect(),
    }
}

/// The context of a request's follow-up call: its token `jti` was counted by
/// the request's first call, and counting it again would call the request a
/// replay of itself.
fn follow_up(ctx: &Context) -> Context {
    let mut c = ctx.clone();
    c.token_jti = None;
    c
}

/// Validations for `refs`. Providers without a validate operation: find out
/// by reading (a read under the policy; the value is dropped at once and
/// never leaves the server).
async fn validations(
    state: &AppState,
    ctx: &Context,
    refs: &[SecretRef],
) -> Vec<secref::Result<Validation>> {
    let out = each(
        state.resolver().validate_many(refs).as_(ctx).each().await,
        refs.len(),
    );
    read_where_unsupported(state, ctx, refs, out, |_, read| match read {
        Ok(_) => Ok(Validation::existence(true)),
        Err(e) if e.code() == ErrorCode::NotFound => Ok(Validation::existence(false)),
        Err(e) => Err(e),
    })
    .await
}

/// Metadata for `refs`; providers without a metadata operation: the version
/// a read reports (a read under the policy).
async fn metadatas(
    state: &AppState,
    ctx: &Context,
    refs: &[SecretRef],
) -> Vec<secref::Result<secref::provider::Metadata>> {
    let out = each(
        state.resolver().metadata_many(refs).as_(ctx).each().await,
        refs.len(),
    );
    read_where_unsupported(state, ctx, refs, out, |r, read| {
        read.map(|v| secref::provider::Metadata {
            reference: r.to_canonical().to_string(),
            current_version: v.version,
            ..Default::default()
        })
    })
    .await
}

/// Replaces each `unsupported` answer in `out` by what one batched read of
/// those references says, through `answer`.
async fn read_where_unsupported<T>(
    state: &AppState,
    ctx: &Context,
    refs: &[SecretRef],
    mut out: Vec<secref::Result<T>>,
    answer: impl Fn(&SecretRef, secref::Result<secref::Resolved>) -> secref::Result<T>,
) -> Vec<secref::Result<T>> {
    let unsupported: Vec<usize> = (0..refs.len())
        .filter(|&i| matches!(&out[i], Err(e) if e.code() == ErrorCode::Unsupported))
        .collect();
    if unsupported.is_empty() {
        return out;
    }
    let again: Vec<&SecretRef> = unsupported.iter().map(|&i| &refs[i]).collect();
    let read = each(
        state
            .resolver()
            .read_many(again)
            .as_(&follow_up(ctx))
            .detailed()
            .each()
            .await,
        unsupported.len(),
    );
    for (i, res) in unsupported.into_iter().zip(read) {
        out[i] = answer(&refs[i], res);
    }
    out
}

/// A backend failure item: `denied` for a refusal (a policy refusal's
/// decision id is `policy-<remote code>`), `failed` for anything else.
fn backend_failure(item_id: &str, shown: &str, e: &Error, decision_id: Option<&str>) -> Value {
    if matches!(
        e.code(),
        ErrorCode::PermissionDenied | ErrorCode::TenantMountMismatch
    ) {
        use secref::policy::{AUTHZ_FAILED, BINDING_DRIFT, DENY, OBLIGATION_UNSUPPORTED};
        let policy_id = e
            .remote_code()
            .filter(|c| [AUTHZ_FAILED, DENY, BINDING_DRIFT, OBLIGATION_UNSUPPORTED].contains(c))
            .map(|c| format!("policy-{c}"));
        return item_failure(
            item_id,
            Some(shown),
            "denied",
            e,
            policy_id.as_deref().or(decision_id),
        );
    }
    item_failure(item_id, Some(shown), "failed", e, decision_id)
}

fn resolve_item<'a>(
    state: &AppState,
    principal: &Principal,
    item: &'a RequestItem,
    (client_ref, backend_ref): (&SecretRef, &SecretRef),
    decision_id: &str,
    (lease_ttl_seconds, issued_at): (Option<u64>, &str),
    resolved: secref::Result<Resolved>,
) -> Item<'a> {
    let shown = echoed_ref(item);
    let resolved: Resolved = match resolved {
        Ok(r) => r,
        Err(e) => return Item::Other(backend_failure(&item.item_id, shown, &e, Some(decision_id))),
    };
    let revision = resolved
        .version
        .clone()
        .unwrap_or_else(|| "current".to_string());
    if let Some(wanted) = item.revision_id.as_deref().map(str::trim) {
        if wanted != revision {
            let e = Error::new(
                ErrorCode::NotFound,
                format!("revision '{wanted}' is not available"),
            );
            return Item::Other(item_failure(
                &item.item_id,
                Some(shown),
                "failed",
                &e,
                Some(decision_id),
            ));
        }
    }
    // The client may ask for any lease length up to a day.
    let ttl = lease_ttl_seconds
        .map(Duration::from_secs)
        .unwrap_or(state.config().lease_ttl)
        .min(MAX_LEASE_TTL);
    // The lease names the ref as the client wrote it: revocation is
    // checked against the rules for that ref.
    let client_canonical = client_ref.to_canonical().to_string();
    let lease = match state
        .leases()
        .issue(&principal.name, &client_canonical, ttl)
    {
        Ok(l) => l,
        Err(code) => {
            let e = Error::new(code, "the lease could not be issued");
            return Item::Other(item_failure(
                &item.item_id,
                Some(shown),
                "failed",
                &e,
                Some(decision_id),
            ));
        }
    };
    Item::Resolved(Box::new(ResolvedItem {
        decision_id: decision_id.to_string(),
        expires_at: rfc3339(lease.expires_at),
        issued_at: issued_at.to_string(),
        item_id: &item.item_id,
        lease_id: lease.id,
        result: "allowed",
        revision_id: revision,
        secret_id: backend_ref.to_canonical().to_string(),
        secret_ref: shown,
        value: resolved.secret,
    }))
}

/// The ref as the client sent it (trimmed): items echo it.
fn echoed_ref(item: &RequestItem) -> &str {
    item.secret_ref.as_deref().unwrap_or_default().trim()
}

/// Namespace and type of a `secret://` ref (for validate/metadata answers).
fn secflow_parts(r: &SecretRef) -> Option<&secref::reference::SecFlowRef> {
    match r.kind() {
        secref::RefKind::SecFlow(sf) => Some(sf),
        _ => None,
    }
}

fn validate_item(
    item: &RequestItem,
    client_ref: &SecretRef,
    validation: secref::Result<Validation>,
) -> Value {
    answer_item(item, client_ref, validation, |v, sf| {
        json!({
            "valid": v.valid,
            "exists": v.exists,
            "namespace": v.namespace.or_else(|| sf.map(|s| format!("{}/{}", s.environment, s.service))),
            "secret_type": v.secret_type.or_else(|| sf.map(|s| s.kind.clone())),
        })
    })
}

fn metadata_item(
    item: &RequestItem,
    client_ref: &SecretRef,
    backend_ref: &SecretRef,
    meta: secref::Result<secref::provider::Metadata>,
) -> Value {
    answer_item(item, client_ref, meta, |m, sf| {
        json!({
            "secret_id": m.secret_id.unwrap_or_else(|| backend_ref.to_canonical().to_string()),
            "active_revision_id": m.current_version,
            "owner": m.owner.unwrap_or_default(),
            "environment": sf.map(|s| s.environment.clone()).unwrap_or_default(),
            "service": sf.map(|s| s.service.clone()).unwrap_or_default(),
            "expiration": m.expires_at,
            "rotation_required": m.rotation_required,
            "tags": m.tags,
            "description": m.description.unwrap_or_default(),
        })
    })
}

/// A validate or metadata item's answer: `allowed` with the `fields` made
/// of the backend's answer (and the ref's `secret://` parts), or the
/// backend's failure.
fn answer_item<T>(
    item: &RequestItem,
    client_ref: &SecretRef,
    answer: secref::Result<T>,
    fields: impl FnOnce(T, Option<&secref::reference::SecFlowRef>) -> Value,
) -> Value {
    let shown = echoed_ref(item);
    match answer {
        Ok(a) => {
            let mut v = json!({
                "item_id": item.item_id,
                "secret_ref": shown,
                "result": "allowed",
            });
            if let (Some(head), Value::Object(rest)) =
                (v.as_object_mut(), fields(a, secflow_parts(client_ref)))
            {
                head.extend(rest);
            }
            v
        }
        Err(e) => backend_failure(&item.item_id, shown, &e, None),
    }
}

/// A permission check is a policy question only: denials are `allowed:false`,
/// and only an unparseable ref is `failed`.
fn permission_item(
    state: &AppState,
    principal: &Principal,
    env: &str,
    item: &RequestItem,
    action: Action,
) -> Value {
    match prepare(state, principal, env, item, action, false) {
        Prepared::Ask { decision_id, .. } => json!({
            "item_id": item.item_id,
            "secret_ref": echoed_ref(item),
            "result": "allowed",
            "allowed": true,
            "decision_id": decision_id,
        }),
        Prepared::Done(v) if v["result"] == "denied" => json!({
            "item_id": item.item_id,
            "secret_ref": v["secret_ref"],
            "result": "denied",
            "allowed": false,
            "decision_id": v["error"]["decision_id"],
        }),
        Prepared::Done(v) => v,
    }
}

/// Revokes the caller's leases. Each lease id is opened first (someone
/// else's or a forged id is `NOT_FOUND`, revealing nothing), then the rules
/// and the policy decide `lease_revoke` on the lease's reference, then the
/// revocation is recorded.
async fn revoke_items(
    state: &AppState,
    principal: &Principal,
    ctx: &Context,
    items: &[RequestItem],
) -> Vec<Value> {
    let mut out = Vec::with_capacity(items.len());
    // The request's token `jti` counts once: on its first policy call.
    let mut first_call = true;
    for item in items {
        let lease_id = item.lease_id.as_deref().unwrap_or_default().trim();
        if let Err(e) = RevokeReason::parse(item.reason.as_deref().unwrap_or("job_completed")) {
            out.push(revoke_failure(item, lease_id, "failed", &e, None));
            continue;
        }
        let lease = match state.leases().open(&principal.name, lease_id) {
            Ok(l) => l,
            Err(code) => {
                let e = Error::new(code, "no such lease for this caller");
                out.push(revoke_failure(item, lease_id, "failed", &e, None));
                continue;
            }
        };
        // The sealed reference was canonical when the lease was issued; one
        // that no longer parses is refused like any other denial.
        let decision = match SecretRef::parse(&lease.reference) {
            Ok(r) => state.access().decide(principal, &r, Action::LeaseRevoke),
            Err(_) => crate::access::Decision::deny(),
        };
        if !decision.allowed {
            let e = Error::new(
                ErrorCode::PermissionDenied,
                format!(
                    "caller '{}' may not lease_revoke this reference",
                    principal.name
                ),
            );
            out.push(revoke_failure(
                item,
                lease_id,
                "denied",
                &e,
                Some(&decision.decision_id),
            ));
            continue;
        }
        let call_ctx = if std::mem::take(&mut first_call) {
            ctx.clone()
        } else {
            follow_up(ctx)
        };
        if let Err(e) = state
            .resolver()
            .authorize_as(&call_ctx, lease.reference.as_str(), Action::LeaseRevoke)
            .await
        {
            // A policy refusal is `denied` with its decision id, as on reads;
            // revoke items carry the lease id, not the ref.
            let mut v = backend_failure(&item.item_id, "", &e, None);
            if let Some(m) = v.as_object_mut() {
                m.remove("secret_ref");
                m.insert("lease_id".into(), json!(lease_id));
            }
            out.push(v);
            continue;
        }
        out.push(match state.leases().revoke(&principal.name, &lease).await {
            Ok(at) => json!({
                "item_id": item.item_id,
                "result": "allowed",
                "lease_id": lease_id,
                "status": "revoked",
                "revoked_at": rfc3339(at),
            }),
            Err(code) => {
                let msg = match code {
                    ErrorCode::Expired => "the lease has expired",
                    ErrorCode::RateLimited => {
                        "this caller holds too many revoked leases; retry when some expire"
                    }
                    ErrorCode::BackendUnavailable => "the shared state backend is unavailable",
                    _ => "no such lease for this caller",
                };
                revoke_failure(item, lease_id, "failed", &Error::new(code, msg), None)
            }
        });
    }
    out
}

fn revoke_failure(
    item: &RequestItem,
    lease_id: &str,
    result: &str,
    e: &Error,
    decision_id: Option<&str>,
) -> Value {
    let mut v = item_failure(&item.item_id, None, result, e, decision_id);
    v["lease_id"] = json!(lease_id);
    v
}

/// A request-level error in SecFlow's shape.
/// A request-level error in the SecFlow shape, with fresh ids (for the
/// shared layers, which answer before any envelope is read).
pub(crate) fn error(status: StatusCode, code: &str, message: &str, retryable: bool) -> Response {
    request_error(status, code, message, retryable, &Ids::fresh())
}

fn request_error(
    status: StatusCode,
    code: &str,
    message: &str,
    retryable: bool,
    ids: &Ids,
) -> Response {
    let body = ErrorResponse {
        error: RequestError {
            code: code.to_string(),
            message: message.to_string(),
            retryable,
        },
        request_id: ids.request_id.clone(),
        trace_id: ids.trace_id.clone(),
    };
    (status, Json(body)).into_response()
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}
