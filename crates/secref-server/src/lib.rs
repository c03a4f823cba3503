//! # secref-server
//!
//! `secref serve`: one local HTTP server that speaks secret-manager wire
//! APIs over one [`secref::Resolver`], so that existing SDKs (the official
//! SecFlow SDK, Vault clients) can read secrets from secref's providers.
//!
//! * one protocol module per wire API: [`secflow`] (the SecFlow Runtime API)
//!   and [`vault`] (Vault KV v2);
//! * shared state ([`AppState`]): the resolver, bearer-token [`auth`],
//!   [`access`] rules and issued [`leases`];
//! * loopback only unless [`tls`] is configured (HTTPS, optionally mTLS
//!   with `cert:<subject>` principals; certificates reloaded on change and
//!   SIGHUP), plus an optional 0600 Unix socket whose callers are
//!   identified by the kernel;
//! * one set of middleware for every route and both listeners
//!   ([`Server::layered`]): access log (target `secref_server::access`, never
//!   values), authentication, body limit (413 on a declared length before
//!   reading), request timeout;
//! * connection limits for both listeners: header-read and idle timeouts, a
//!   connection cap, bounded graceful shutdown (see `listen`);
//! * configuration reload on SIGHUP and `POST /v1/sys/secref/reload`: the
//!   per-request state is one swappable [`reload::Snapshot`], pinned by each
//!   request at its start ([`reload`]).
//!
//! ```no_run
//! # async fn demo() -> secref::Result<()> {
//! use secref::{providers::EnvProvider, Resolver};
//! use secref_server::{Server, ServerConfig};
//! let resolver = Resolver::builder().provider(EnvProvider::new()).build()?;
//! let token = secref_server::auth::generate_token();
//! let server = Server::new(resolver, ServerConfig::default(), token)?;
//! let listener = server.bind().await?;
//! server.serve(listener, secref_server::shutdown_signal()).await
//! # }
//! ```

#![warn(missing_docs)]

pub mod access;
pub mod auth;
pub mod config;
pub mod expiring;
#[doc(hidden)]
pub mod fuzz;
pub mod leases;
mod listen;
pub mod ops;
pub mod reload;
mod sealed;
pub mod secflow;
pub mod tls;
pub mod vault;
mod wraps;

use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument as _;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use secref::config::Env;
use secref::{Error, ErrorCode, Resolver, Result, Secret};
use tokio::net::TcpListener;
use tower_http::set_header::SetResponseHeaderLayer;

pub use config::ServerConfig;
#[cfg(unix)]
pub use listen::UnixSocket;

use access::AccessRules;
use auth::{Caller, PeerCredentials, Principal};
use leases::Leases;
use reload::{Loaded, Loader, Reloader, Snapshot};

/// State shared by every protocol module. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<StateInner>,
}

/// The configuration in use (swapped by a reload) and what outlives
/// reloads (see [`reload`]).
#[derive(Debug)]
struct StateInner {
    current: arc_swap::ArcSwap<Snapshot>,
    leases: Leases,
    /// With shared `[state]`: the Vault API's wrapping tokens any replica
    /// unwraps (see `wraps.rs`); they outlive reloads.
    sealed_wraps: Option<Arc<wraps::SealedWraps>>,
    reload: Reloader,
}

tokio::task_local! {
    /// The snapshot the running request started with (set by the
    /// outermost middleware, [`pin_snapshot`]).
    static PINNED: Arc<Snapshot>;
}

/// A part of the configuration snapshot a request uses: keeps that
/// snapshot alive while it is held, whatever reloads happen meanwhile.
pub struct Pinned<T: ?Sized + 'static> {
    snapshot: Arc<Snapshot>,
    part: fn(&Snapshot) -> &T,
}

impl<T: ?Sized> Deref for Pinned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        (self.part)(&self.snapshot)
    }
}

impl<T: ?Sized + std::fmt::Debug> std::fmt::Debug for Pinned<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

impl AppState {
    fn with_snapshot(first: Snapshot, loader: Option<Loader>) -> AppState {
        // One lease authority for all replicas when `[state]` is shared,
        // else this process's own.
        let max = first.config.max_revoked_leases_per_principal;
        let leases = match first.resolver.shared_state() {
            Some(shared) => Leases::shared(max, shared.clone()),
            None => Leases::new(max),
        };
        let sealed_wraps = first.resolver.shared_state().map(|shared| {
            Arc::new(wraps::SealedWraps::new(
                shared.clone(),
                first.config.max_wraps_per_principal,
            ))
        });
        AppState {
            inner: Arc::new(StateInner {
                current: arc_swap::ArcSwap::from_pointee(first),
                leases,
                sealed_wraps,
                reload: Reloader::new(loader),
            }),
        }
    }

    /// The configuration snapshot of the running request (the one current
    /// when it arrived), or the current one outside a request.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        PINNED
            .try_with(Arc::clone)
            .unwrap_or_else(|_| self.inner.current.load_full())
    }

    fn pinned<T: ?Sized>(&self, part: fn(&Snapshot) -> &T) -> Pinned<T> {
        Pinned {
            snapshot: self.snapshot(),
            part,
        }
    }

    /// The resolver every request goes through.
    pub fn resolver(&self) -> Pinned<Resolver> {
        self.pinned(|s| &s.resolver)
    }

    /// Authenticates a request's bearer token.
    pub fn authenticate(&self, headers: &axum::http::HeaderMap) -> Option<Principal> {
        self.snapshot().auth.authenticate(headers)
    }

    /// Who is calling: a Unix-socket peer is who the kernel says (any token
    /// is ignored); a TCP caller must show a token. The shared
    /// authentication layer calls this once per request; handlers take the
    /// resulting [`Caller`].
    ///
    /// Over mTLS (`cert`: the client certificate the handshake verified),
    /// the certificate is the caller (`cert:<subject>`, no token needed)
    /// only if a rule lists one of its names explicitly; otherwise the
    /// token decides, as without TLS. Either way the request is bound to
    /// the certificate's thumbprint ([`Principal::mtls_thumbprint`]).
    pub fn caller(
        &self,
        peer: Option<&PeerCredentials>,
        cert: Option<&tls::ClientCert>,
        headers: &axum::http::HeaderMap,
    ) -> Option<Principal> {
        if let Some(p) = peer {
            return p.principal();
        }
        let Some(cert) = cert else {
            return self.authenticate(headers);
        };
        if let Some(p) = cert.principal().filter(|p| self.access().lists(p)) {
            return Some(p);
        }
        self.authenticate(headers).map(|mut p| {
            p.mtls_thumbprint = Some(cert.thumbprint.clone());
            p
        })
    }

    /// The [`secref::policy::Context`] of one request by `principal`: the
    /// subject is always the server's name for the caller (a token's name,
    /// a Unix identity), never a header the caller chose; the token facts
    /// the policy checks come from the request's headers (`x-aud`, `x-jti`,
    /// `x-cnf-jkt`, `x-mtls-thumbprint`, `x-issuer`, `x-client-id`,
    /// `x-correlation-id`, as [`Context::from_headers`]). The tenant is the
    /// policy's default: a header cannot pick a more permissive tenant.
    /// Over mTLS the sender binding is the verified certificate's
    /// thumbprint: `x-mtls-thumbprint` and `x-cnf-jkt` headers are ignored,
    /// so a client cannot claim another certificate's grants.
    ///
    /// [`Context::from_headers`]: secref::policy::Context::from_headers
    pub fn request_context(
        &self,
        principal: &Principal,
        headers: &axum::http::HeaderMap,
    ) -> secref::policy::Context {
        let mut ctx = secref::policy::Context::from_headers(
            headers
                .iter()
                .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))),
        );
        ctx.subject = Some(principal.name.clone());
        ctx.tenant = None;
        if let Some(thumbprint) = &principal.mtls_thumbprint {
            ctx.cnf_jkt = None;
            ctx.mtls_thumbprint = Some(thumbprint.clone());
        }
        ctx
    }

    /// The access rules.
    pub fn access(&self) -> Pinned<AccessRules> {
        self.pinned(|s| &s.access)
    }

    /// The issued leases (they outlive reloads).
    pub fn leases(&self) -> &Leases {
        &self.inner.leases
    }

    /// The shared wrapping tokens, with `[state] backend = "redis"`.
    pub(crate) fn sealed_wraps(&self) -> Option<&Arc<wraps::SealedWraps>> {
        self.inner.sealed_wraps.as_ref()
    }

    /// Refreshes the `secref_leases_held` gauges kept in the shared state
    /// backend (a no-op without one: in-memory tables report as they
    /// change).
    pub(crate) async fn report_held(&self) {
        let Some(wraps) = self.sealed_wraps() else {
            return;
        };
        let principals: Vec<String> = self.snapshot().auth.names().map(str::to_owned).collect();
        futures::future::join(
            self.leases().report_held(&principals),
            wraps.report_held(&principals),
        )
        .await;
    }

    /// The server settings.
    pub fn config(&self) -> Pinned<ServerConfig> {
        self.pinned(|s| &s.config)
    }
}

/// What the access log says about a request beyond method and status; the
/// protocol handlers put it into the response's extensions.
#[derive(Clone, Debug)]
pub struct Logged {
    /// The caller's principal name.
    pub principal: String,
    /// How many items the request carried.
    pub items: usize,
}

/// The server: state plus settings. Build with [`Server::new`], then
/// [`Server::bind`] and [`Server::serve`].
#[derive(Debug)]
pub struct Server {
    state: AppState,
    /// The TCP listener's TLS, when `[server] tls_cert`/`tls_key` are set.
    tls: Option<Arc<tls::Tls>>,
    /// SIGHUP, caught from when the server is built (before it announces
    /// its address), so a reload signal is never the default "terminate".
    hangup: Option<reload::Hangup>,
}

impl Server {
    /// A server over `resolver`, accepting `token` (named `default`) and the
    /// named tokens of `config` (read from the process environment).
    pub fn new(resolver: Resolver, config: ServerConfig, token: Secret) -> Result<Server> {
        Server::with_env(resolver, config, token, &Env::from_process())
    }

    /// As [`Server::new`], reading named tokens from `env`.
    pub fn with_env(
        resolver: Resolver,
        config: ServerConfig,
        token: Secret,
        env: &Env,
    ) -> Result<Server> {
        let loaded = Loaded {
            resolver,
            tokens: Server::tokens(&config, token, env)?,
            config,
            local_store: Err(Error::config(
                "the Vault API has no local store (the server was built without one)",
            )),
            policy_table: None,
            audit_table: None,
            state_table: None,
        };
        Server::build(loaded, None)
    }

    /// A server whose whole per-request state comes from `loader`, called
    /// now (with `None`) and again on every reload (SIGHUP, `POST
    /// /v1/sys/secref/reload`) with the snapshot in use: startup and reload
    /// build the state the same way (see [`reload`]).
    pub fn from_loader(loader: Loader) -> Result<Server> {
        let first = loader(None)?;
        let mut server = Server::build(first, Some(loader))?;
        server.hangup = reload::Hangup::catch();
        Ok(server)
    }

    fn build(first: Loaded, loader: Option<Loader>) -> Result<Server> {
        // The certificate is loaded now, so a bad file stops the start; it
        // is re-read on change and on SIGHUP by [`tls::Tls::watch`].
        let tls = first.config.tls.as_ref().map(tls::Tls::load).transpose()?;
        // Counters from the first request on.
        ops::prometheus();
        Ok(Server {
            state: AppState::with_snapshot(Snapshot::new(1, first), loader),
            tls,
            hangup: None,
        })
    }

    /// Every accepted token: `token` as `default`, then the named tokens of
    /// `config` (read from `env`).
    pub fn tokens(
        config: &ServerConfig,
        token: Secret,
        env: &Env,
    ) -> Result<Vec<(String, Secret)>> {
        let mut tokens = vec![(auth::DEFAULT_TOKEN_NAME.to_string(), token)];
        for (name, source) in &config.tokens {
            tokens.push((name.clone(), source.load(name, env)?));
        }
        Ok(tokens)
    }

    /// The local store the Vault API's local mounts read and write (the
    /// same file the `local` provider reads; pass the opening error to have
    /// it answered, e.g. "run `secref init`"). For a server built from
    /// parts; a [`Loader`] gives its own.
    #[must_use]
    pub fn with_local_store(self, store: Result<secref::store::Store>) -> Server {
        let next = self.state.snapshot().with_local(store.map(Arc::new));
        self.state.inner.current.store(Arc::new(next));
        self
    }

    /// Whether the TCP listener speaks TLS.
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The shared state (for protocol modules and tests).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The whole HTTP API: `/healthz`, `/readyz`, `/metrics` ([`ops`]), the
    /// SecFlow Runtime API and the Vault API, behind the shared middleware ([`Server::layered`]).
    pub fn router(&self) -> Router {
        let state = self.state.clone();
        self.layered(
            Router::new()
                .merge(ops::router(state.clone()))
                .merge(reload::router(state.clone()))
                .merge(secflow::router(state.clone()))
                .merge(vault::router(state))
                .fallback(secflow::not_found),
        )
    }

    /// `routes` behind the middleware every route of every listener shares,
    /// outermost first: the access log; authentication (the caller, from
    /// the Unix peer's credentials or the bearer / `X-Vault-Token` token,
    /// becomes a [`Caller`](auth::Caller) extension); the limits — a declared
    /// `Content-Length` above `max_body_bytes` is answered 413 before any
    /// body byte is read, a streamed body is cut at the same size, and the
    /// whole request (body included) gets `request_timeout` (then 504
    /// `TIMEOUT`, retryable). Errors come in the shape of the route's API.
    /// Every answer, errors included, carries `Cache-Control: no-store`:
    /// they may hold secrets, and none may be kept by a cache in between.
    pub fn layered(&self, routes: Router) -> Router {
        let state = self.state.clone();
        let max_body = state.config().max_body_bytes;
        routes
            .layer(axum::middleware::from_fn_with_state(state.clone(), limits))
            .layer(axum::extract::DefaultBodyLimit::max(max_body))
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                authenticate,
            ))
            // Every answer may carry a secret or say something about one:
            // no cache (browser, proxy, SDK) may keep it.
            .layer(SetResponseHeaderLayer::overriding(
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-store"),
            ))
            .layer(SetResponseHeaderLayer::overriding(
                header::PRAGMA,
                HeaderValue::from_static("no-cache"),
            ))
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                access_log,
            ))
            .layer(axum::middleware::from_fn_with_state(state, pin_snapshot))
    }

    /// Binds the configured address; refuses anything but loopback unless
    /// TLS is configured (the token and the secrets must not cross a
    /// network in clear).
    pub async fn bind(&self) -> Result<TcpListener> {
        let addr = self.state.config().bind;
        self.check_exposure(addr)?;
        TcpListener::bind(addr).await.map_err(|e| {
            Error::new(
                ErrorCode::Io,
                format!("cannot listen on {addr}: {}", e.kind()),
            )
        })
    }

    /// A non-loopback address only with TLS.
    fn check_exposure(&self, addr: std::net::SocketAddr) -> Result<()> {
        if addr.ip().is_loopback() || self.tls.is_some() {
            return Ok(());
        }
        Err(Error::config(format!(
            "refusing to listen on non-loopback address {addr} without TLS: set [server] \
             tls_cert and tls_key, or bind 127.0.0.1 or ::1"
        )))
    }

    /// Creates the Unix socket `path`, mode 0600 from the start; see
    /// [`UnixSocket::bind`]. The file is removed when the server stops.
    #[cfg(unix)]
    pub fn bind_unix(&self, path: &std::path::Path) -> Result<UnixSocket> {
        UnixSocket::bind(path)
    }

    /// Serves until `shutdown` completes, then finishes in-flight requests
    /// (for up to `shutdown_grace`).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        self.serve_all(listener, None, shutdown).await
    }

    /// Serves TCP and, if given, a Unix socket (whose callers are identified
    /// by peer credentials), with the same router and limits, until
    /// `shutdown` completes: then both stop accepting, in-flight requests
    /// get up to `shutdown_grace`, the rest are closed, and the socket file
    /// is removed.
    pub async fn serve_all(
        mut self,
        listener: TcpListener,
        #[cfg(unix)] mut unix: Option<UnixSocket>,
        #[cfg(not(unix))] unix: Option<std::convert::Infallible>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let local = listener.local_addr().ok();
        if let Some(addr) = local {
            self.check_exposure(addr)?;
        }
        tracing::info!(addr = ?local, tls = self.tls.is_some(), "secref serve listening");
        if let Some(hangup) = self.hangup.take() {
            hangup.reload_on_each(self.state.clone());
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        if let Some(tls) = &self.tls {
            tokio::spawn(tls.clone().watch(stop_rx.clone()));
        }
        let conns = listen::Connections::new(self.router(), &self.state.config());
        let tcp = conns.accept(listener, stop_rx.clone(), self.tls.clone());
        #[cfg(unix)]
        let uds = async {
            if let Some(l) = unix.as_mut().and_then(|u| u.listener.take()) {
                conns.accept(l, stop_rx, None).await;
            }
        };
        #[cfg(not(unix))]
        let uds = async {
            if let Some(never) = unix {
                match never {}
            }
        };
        tokio::join!(tcp, uds);
        conns.drain().await;
        // Removes the socket file.
        drop(unix);
        Ok(())
    }
}

/// The outermost middleware: the request runs to its end on the
/// configuration snapshot current when it arrived (see [`reload`]).
async fn pin_snapshot(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let snapshot = state.inner.current.load_full();
    PINNED.scope(snapshot, next.run(req)).await
}

/// Completes on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

/// The shared authentication layer: works out the caller once and hands it
/// to the handlers as a [`Caller`] extension; the access log names it.
async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let principal = state.caller(
        req.extensions().get::<PeerCredentials>(),
        req.extensions().get::<tls::ClientCert>(),
        req.headers(),
    );
    req.extensions_mut().insert(Caller(principal.clone()));
    let mut resp = next.run(req).await;
    if let (None, Some(p)) = (resp.extensions().get::<Logged>(), principal) {
        resp.extensions_mut().insert(Logged {
            principal: p.name,
            items: 0,
        });
    }
    resp
}

/// The shared limits: a declared body above `max_body_bytes` is refused
/// before reading it; the whole request (body included) must finish within
/// `request_timeout`.
async fn limits(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let vault = is_vault_route(&req);
    let max = state.config().max_body_bytes;
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        let msg = format!("request body exceeds {max} bytes");
        return if vault {
            vault::error(axum::http::StatusCode::PAYLOAD_TOO_LARGE, &msg)
        } else {
            secflow::error(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                &msg,
                false,
            )
        };
    }
    match tokio::time::timeout(state.config().request_timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) if vault => vault::error(
            axum::http::StatusCode::GATEWAY_TIMEOUT,
            "the request did not finish in time",
        ),
        Err(_) => secflow::error(
            axum::http::StatusCode::GATEWAY_TIMEOUT,
            "TIMEOUT",
            "the request did not finish in time",
            true,
        ),
    }
}

/// Whether a request is for the Vault API (answered in Vault's error
/// shape); everything else — SecFlow, `/healthz`, unknown paths — uses the
/// SecFlow shape.
fn is_vault_route(req: &Request) -> bool {
    req.extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str())
        .is_some_and(|p| {
            p.starts_with("/v1/")
                && !secref::providers::secflow::wire::Op::ALL
                    .iter()
                    .any(|op| op.path() == p)
        })
}

/// One structured line per request: method, route, status, caller, item
/// count, latency. Never bodies, headers or unmatched paths (they may hold
/// tokens or values a client put in the wrong place).
async fn access_log(State(_state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "<unmatched>".to_string());
    // The request's span (exported with OpenTelemetry): method, route
    // template and status only, like the log line.
    let span = tracing::debug_span!(
        "secref.http_request",
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let resp = next.run(req).instrument(span.clone()).await;
    // An integer attribute, as the HTTP semantic conventions have it.
    span.record(
        "http.response.status_code",
        i64::from(resp.status().as_u16()),
    );
    if resp.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    let logged = resp.extensions().get::<Logged>();
    tracing::info!(
        target: "secref_server::access",
        method = %method,
        route = %route,
        status = resp.status().as_u16(),
        principal = logged.map(|l| l.principal.as_str()).unwrap_or("-"),
        items = logged.map(|l| l.items).unwrap_or(0),
        duration_ms = started.elapsed().as_millis() as u64,
        "request"
    );
    resp.into_response()
}
