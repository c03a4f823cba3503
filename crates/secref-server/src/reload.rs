//! Configuration reload: on SIGHUP and on `POST /v1/sys/secref/reload`.
//!
//! Everything the configuration decides per request lives in one immutable
//! [`Snapshot`] — the resolver (providers, caches, `[policy]`), the accepted
//! tokens, the access rules, the `[server]` settings, the Vault mounts and
//! their local store, the readiness cache. The server holds the current one
//! behind an [`arc_swap::ArcSwap`]; the shared middleware pins the snapshot
//! current when a request arrives, and every access of that request
//! ([`AppState::resolver`], [`AppState::access`], [`AppState::config`], …)
//! reads the pinned one, so an in-flight request finishes on the config it
//! started with while a reload swaps in a new one for the next request.
//!
//! A reload runs the [`Loader`] — the very function `secref serve` built the
//! first snapshot with — so every section (also ones added later) reloads
//! the same way it starts. A loader error, or a new config that changes
//! what cannot change while running, is refused with its reason (logged,
//! answered, counted); the old snapshot stays.
//!
//! What lives outside the snapshot and survives a reload, on purpose:
//!
//! * issued leases and their revocations, Vault wrapping tokens, the
//!   per-principal quotas on both, and the newest upstream versions seen
//!   (a client's lease or wrap token must not die with a config change; the
//!   quota values `max_revoked_leases_per_principal` and
//!   `max_wraps_per_principal` are therefore fixed at start);
//! * the audit sink (one writer, so a chained audit file never forks):
//!   `[audit]` cannot change by reload; nor can `[state]` (the leases that
//!   outlive reloads are kept there, sealed under its key);
//! * with an unchanged `[policy]`, the policy's grants and their use counts;
//!   a changed `[policy]` starts with fresh grants (they were decisions of
//!   the old rules) but keeps the token replay cache
//!   ([`secref::Resolver::rebuild_from_config`]);
//! * metrics (process-wide), the listeners and their connection cap and
//!   timeouts: `bind`, `socket`, `max_connections`,
//!   `header_read_timeout_seconds`, `idle_timeout_seconds`,
//!   `shutdown_grace_seconds`, `max_body_bytes` and the TLS file paths
//!   (their contents are re-read on change) are fixed at start, and a
//!   reload that changes one is refused, naming it (restart to change it).
//!
//! Other parts of the server that must follow reloads (e.g. certificates)
//! subscribe with [`AppState::reloads`]: a `watch` of the generation in use.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use secref::{Error, ErrorCode, Resolver, Result, Secret};
use serde_json::json;

use crate::access::AccessRules;
use crate::auth::{Auth, Caller, DEFAULT_TOKEN_NAME};
use crate::{ops, vault, AppState, Logged, ServerConfig};

/// What one reading of the configuration sources gives: everything a
/// [`Snapshot`] is made of.
pub struct Loaded {
    /// The resolver (see [`secref::Resolver::rebuild_from_config`] for what
    /// a reload must carry over from the previous one).
    pub resolver: Resolver,
    /// The `[server]` settings, command-line overrides applied.
    pub config: ServerConfig,
    /// Every accepted token by name, `default` (the server token) first.
    pub tokens: Vec<(String, Secret)>,
    /// The store behind the Vault API's local mounts.
    pub local_store: vault::LocalStore,
    /// The `[policy]` table (an unchanged one keeps its grants).
    pub policy_table: Option<toml::Table>,
    /// The `[audit]` table (a reload must not change it).
    pub audit_table: Option<toml::Table>,
    /// The `[state]` table (a reload must not change it: leases outlive
    /// reloads and are sealed under its key).
    pub state_table: Option<toml::Table>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded").finish_non_exhaustive()
    }
}

/// Builds the serving state from the configuration sources: called once at
/// start (`None`) and again on every reload (with the snapshot in use).
pub type Loader = Arc<dyn Fn(Option<&Snapshot>) -> Result<Loaded> + Send + Sync>;

/// One immutable version of everything the configuration decides.
#[derive(Debug)]
pub struct Snapshot {
    pub(crate) generation: u64,
    pub(crate) resolver: Resolver,
    pub(crate) auth: Auth,
    pub(crate) access: AccessRules,
    pub(crate) config: ServerConfig,
    pub(crate) readiness: ops::Readiness,
    pub(crate) local: vault::LocalStore,
    policy_table: Option<toml::Table>,
    audit_table: Option<toml::Table>,
    state_table: Option<toml::Table>,
}

impl Snapshot {
    pub(crate) fn new(generation: u64, loaded: Loaded) -> Snapshot {
        Snapshot {
            generation,
            access: AccessRules::new(loaded.config.rules.clone()),
            auth: Auth::new(loaded.tokens),
            resolver: loaded.resolver,
            config: loaded.config,
            readiness: ops::Readiness::default(),
            local: loaded.local_store,
            policy_table: loaded.policy_table,
            audit_table: loaded.audit_table,
            state_table: loaded.state_table,
        }
    }

    /// The same configuration with another local store (a server built
    /// from parts, before it serves).
    pub(crate) fn with_local(&self, local: vault::LocalStore) -> Snapshot {
        Snapshot {
            generation: self.generation,
            resolver: self.resolver.clone(),
            auth: self.auth.clone(),
            access: self.access.clone(),
            config: self.config.clone(),
            readiness: ops::Readiness::default(),
            local,
            policy_table: self.policy_table.clone(),
            audit_table: self.audit_table.clone(),
            state_table: self.state_table.clone(),
        }
    }

    /// This configuration's number: 1 at start, +1 per successful reload.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The resolver of this configuration.
    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    /// The `[policy]` table this configuration was built from.
    pub fn policy_table(&self) -> Option<&toml::Table> {
        self.policy_table.as_ref()
    }

    /// The `[audit]` table this configuration was built from.
    pub fn audit_table(&self) -> Option<&toml::Table> {
        self.audit_table.as_ref()
    }
}

/// The reload machinery of one server.
pub(crate) struct Reloader {
    loader: Option<Loader>,
    /// One reload at a time (SIGHUP and the endpoint may race).
    running: tokio::sync::Mutex<()>,
    generation: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("generation", &*self.generation.borrow())
            .finish_non_exhaustive()
    }
}

impl Reloader {
    pub(crate) fn new(loader: Option<Loader>) -> Reloader {
        metrics::gauge!(secref::metrics::CONFIG_GENERATION).set(1.0);
        Reloader {
            loader,
            running: tokio::sync::Mutex::new(()),
            generation: tokio::sync::watch::channel(1).0,
        }
    }

    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

/// Whether two versions of a section mean the same: compared as parsed
/// settings, not as text, so restating a default is no change. A table that
/// no longer parses counts as changed (the loader refuses it first anyway).
fn same_meaning<T: PartialEq>(
    a: Option<&toml::Table>,
    b: Option<&toml::Table>,
    meaning: fn(Option<&toml::Table>) -> Result<T>,
) -> bool {
    matches!((meaning(a), meaning(b)), (Ok(x), Ok(y)) if x == y)
}

/// `[audit]`: absent means no auditing, so presence is part of the meaning;
/// a present table means its parsed settings (defaults filled in).
fn audit_meaning(t: Option<&toml::Table>) -> Result<Option<secref::audit::AuditSettings>> {
    t.map(secref::audit::AuditSettings::from_table).transpose()
}

/// `[state]`: absent means the in-memory default, as does a table saying so.
fn state_meaning(t: Option<&toml::Table>) -> Result<secref::state::StateSettings> {
    let parsed = match t {
        Some(t) => secref::state::StateSettings::from_table(t)?,
        None => secref::state::StateSettings::default(),
    };
    Ok(parsed.effective())
}

/// Settings fixed at start (listeners, connection limits, quota stores);
/// a reload changing one is refused. Each is compared as parsed.
fn check_fixed(old: &Snapshot, new: &Loaded) -> Result<()> {
    let (a, b) = (&old.config, &new.config);
    let changed: Vec<&str> = [
        ("[server] bind", a.bind != b.bind),
        ("[server] socket", a.socket != b.socket),
        (
            "[server] max_connections",
            a.max_connections != b.max_connections,
        ),
        (
            "[server] header_read_timeout_seconds",
            a.header_read_timeout != b.header_read_timeout,
        ),
        (
            "[server] idle_timeout_seconds",
            a.idle_timeout != b.idle_timeout,
        ),
        (
            "[server] shutdown_grace_seconds",
            a.shutdown_grace != b.shutdown_grace,
        ),
        (
            "[server] max_body_bytes",
            a.max_body_bytes != b.max_body_bytes,
        ),
        (
            "[server] max_revoked_leases_per_principal",
            a.max_revoked_leases_per_principal != b.max_revoked_leases_per_principal,
        ),
        (
            "[server] max_wraps_per_principal",
            a.max_wraps_per_principal != b.max_wraps_per_principal,
        ),
        // The listener holds the files' paths; their contents are re-read
        // on change and on SIGHUP (`tls::Tls::watch`).
        ("[server] tls_cert/tls_key/client_ca", a.tls != b.tls),
        (
            "[audit]",
            !same_meaning(
                old.audit_table.as_ref(),
                new.audit_table.as_ref(),
                audit_meaning,
            ),
        ),
        (
            "[state]",
            !same_meaning(
                old.state_table.as_ref(),
                new.state_table.as_ref(),
                state_meaning,
            ),
        ),
    ]
    .into_iter()
    .filter_map(|(name, differs)| differs.then_some(name))
    .collect();
    if changed.is_empty() {
        return Ok(());
    }
    Err(Error::config(format!(
        "{} cannot change while secref serve runs: restart it to change {}",
        changed.join(", "),
        if changed.len() == 1 { "it" } else { "them" }
    )))
}

impl AppState {
    /// Reloads the configuration: runs the loader, checks the result, and
    /// swaps it in; requests already running keep the old snapshot. Returns
    /// the new generation, or the reason the old configuration stays (a
    /// `config` error; logged and counted either way).
    pub async fn reload(&self, trigger: &'static str) -> Result<u64> {
        let reloader = &self.inner.reload;
        let _one = reloader.running.lock().await;
        let result = self.reload_locked().await;
        let outcome = match &result {
            Ok(generation) => {
                tracing::info!(trigger, generation, "configuration reloaded");
                "ok"
            }
            Err(e) => {
                tracing::warn!(
                    trigger,
                    code = e.code().as_str(),
                    reason = e.message(),
                    "configuration reload refused; the previous configuration stays"
                );
                "error"
            }
        };
        metrics::counter!(secref::metrics::CONFIG_RELOADS, "outcome" => outcome).increment(1);
        result
    }

    async fn reload_locked(&self) -> Result<u64> {
        let reloader = &self.inner.reload;
        let Some(loader) = reloader.loader.clone() else {
            return Err(Error::config(
                "this server was built without a configuration source to reload",
            ));
        };
        let old = self.inner.current.load_full();
        let prev = old.clone();
        // Reading files and building providers blocks: keep it off the
        // runtime's workers.
        let loaded = tokio::task::spawn_blocking(move || loader(Some(&prev)))
            .await
            .map_err(|_| Error::new(ErrorCode::Internal, "the configuration loader panicked"))??;
        check_fixed(&old, &loaded)?;
        let generation = old.generation + 1;
        self.inner
            .current
            .store(Arc::new(Snapshot::new(generation, loaded)));
        metrics::gauge!(secref::metrics::CONFIG_GENERATION).set(generation as f64);
        reloader.generation.send_replace(generation);
        Ok(generation)
    }

    /// The generation of the configuration in use, as a `watch`: it changes
    /// after every successful reload (the new snapshot is already in place).
    /// The hook for anything that must follow reloads (e.g. certificates).
    pub fn reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.reload.subscribe()
    }
}

/// SIGHUP, caught (a server built by [`crate::Server::from_loader`] inside a
/// tokio runtime on Unix); each one reloads once the server serves.
#[derive(Debug)]
pub(crate) struct Hangup {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Hangup {
    /// Starts catching SIGHUP now; `None` (with a warning) where it cannot.
    pub(crate) fn catch() -> Option<Hangup> {
        #[cfg(unix)]
        {
            tokio::runtime::Handle::try_current().ok()?;
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                Ok(signal) => Some(Hangup { signal }),
                Err(e) => {
                    tracing::warn!(error = %e, "SIGHUP reload not available");
                    None
                }
            }
        }
        #[cfg(not(unix))]
        None
    }

    /// Reloads on every SIGHUP until the process ends.
    pub(crate) fn reload_on_each(self, state: AppState) {
        #[cfg(unix)]
        {
            let mut signal = self.signal;
            tokio::spawn(async move {
                while signal.recv().await.is_some() {
                    // The outcome is logged and counted by `reload`.
                    let _ = state.reload("SIGHUP").await;
                }
            });
        }
        #[cfg(not(unix))]
        let _ = state;
    }
}

/// `POST /v1/sys/secref/reload`.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/sys/secref/reload", post(reload_endpoint))
        .with_state(state)
}

/// Only the server token (`default`) may reload: a reload changes who may
/// read what, so named tokens and Unix-socket peers — callers the config
/// itself admits — cannot.
async fn reload_endpoint(State(state): State<AppState>, Caller(caller): Caller) -> Response {
    let Some(principal) = caller else {
        return refusal(
            StatusCode::UNAUTHORIZED,
            &Error::new(ErrorCode::Unauthenticated, "the server token is required"),
        );
    };
    let logged = Logged {
        principal: principal.name.clone(),
        items: 0,
    };
    let mut resp = if principal.name != DEFAULT_TOKEN_NAME || !principal.aliases.is_empty() {
        refusal(
            StatusCode::FORBIDDEN,
            &Error::new(
                ErrorCode::PermissionDenied,
                "only the server token may reload the configuration",
            ),
        )
    } else {
        match state.reload("POST /v1/sys/secref/reload").await {
            Ok(generation) => {
                Json(json!({"reloaded": true, "generation": generation})).into_response()
            }
            Err(e) => refusal(StatusCode::BAD_REQUEST, &e),
        }
    };
    resp.extensions_mut().insert(logged);
    resp
}

/// A refusal in the Vault API's error shape (the route is in its
/// namespace), plus secref's stable code.
fn refusal(status: StatusCode, e: &Error) -> Response {
    (
        status,
        Json(json!({
            "errors": [e.message()],
            "code": e.code().as_str(),
            "retryable": e.retryable(),
            "reloaded": false,
        })),
    )
        .into_response()
}
