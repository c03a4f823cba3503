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
//! * loopback only (no TLS yet: a non-loopback bind is refused), bounded
//!   request bodies, a per-request timeout, graceful shutdown, and an access
//!   log (target `secref_server::access`) that never contains values.
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
pub mod leases;
pub mod secflow;
pub mod vault;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use secref::config::Env;
use secref::{Error, ErrorCode, Resolver, Result, Secret};
use tokio::net::TcpListener;

pub use config::ServerConfig;

use access::AccessRules;
use auth::{Auth, Principal};
use leases::Leases;

/// State shared by every protocol module. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<StateInner>,
}

#[derive(Debug)]
struct StateInner {
    resolver: Resolver,
    auth: Auth,
    access: AccessRules,
    leases: Leases,
    config: ServerConfig,
}

impl AppState {
    /// The resolver every request goes through.
    pub fn resolver(&self) -> &Resolver {
        &self.inner.resolver
    }

    /// Authenticates a request's bearer token.
    pub fn authenticate(&self, headers: &axum::http::HeaderMap) -> Option<Principal> {
        self.inner.auth.authenticate(headers)
    }

    /// The access rules.
    pub fn access(&self) -> &AccessRules {
        &self.inner.access
    }

    /// The issued leases.
    pub fn leases(&self) -> &Leases {
        &self.inner.leases
    }

    /// The server settings.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }
}

/// The principal of a request, put into the response's extensions by the
/// protocol handlers so the access log can name it.
#[derive(Clone, Debug)]
pub struct LoggedPrincipal(pub String);

/// The server: state plus settings. Build with [`Server::new`], then
/// [`Server::bind`] and [`Server::serve`].
#[derive(Debug)]
pub struct Server {
    state: AppState,
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
        let mut tokens = vec![(auth::DEFAULT_TOKEN_NAME.to_string(), token)];
        for (name, source) in &config.tokens {
            tokens.push((name.clone(), source.load(name, env)?));
        }
        Ok(Server {
            state: AppState {
                inner: Arc::new(StateInner {
                    resolver,
                    auth: Auth::new(tokens),
                    access: AccessRules::new(config.rules.clone()),
                    leases: Leases::default(),
                    config,
                }),
            },
        })
    }

    /// The shared state (for protocol modules and tests).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The whole HTTP API: `/healthz`, the SecFlow Runtime API and the Vault
    /// API, with the access log around them.
    pub fn router(&self) -> Router {
        let state = self.state.clone();
        Router::new()
            .route(
                "/healthz",
                get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
            )
            .merge(secflow::router(state.clone()))
            .merge(vault::router(state.clone()))
            .fallback(secflow::not_found)
            .layer(axum::middleware::from_fn_with_state(state, access_log))
    }

    /// Binds the configured address; refuses anything but loopback (TLS is
    /// not supported, and the token must not cross a network in clear).
    pub async fn bind(&self) -> Result<TcpListener> {
        let addr = self.state.config().bind;
        if !addr.ip().is_loopback() {
            return Err(Error::config(format!(
                "refusing to listen on non-loopback address {addr}: secref serve has no TLS; \
                 bind 127.0.0.1 or ::1"
            )));
        }
        TcpListener::bind(addr).await.map_err(|e| {
            Error::new(
                ErrorCode::Io,
                format!("cannot listen on {addr}: {}", e.kind()),
            )
        })
    }

    /// Serves until `shutdown` completes, then finishes in-flight requests.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let local = listener.local_addr().ok();
        if let Some(addr) = local {
            if !addr.ip().is_loopback() {
                return Err(Error::config(format!(
                    "refusing to serve on non-loopback address {addr}"
                )));
            }
        }
        tracing::info!(addr = ?local, "secref serve listening");
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|e| Error::new(ErrorCode::Io, format!("server failed: {}", e.kind())))
    }
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

/// One structured line per request: method, path, status, caller, latency.
/// Never bodies or headers (they hold tokens and values).
async fn access_log(State(_state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    let principal = resp
        .extensions()
        .get::<LoggedPrincipal>()
        .map(|p| p.0.as_str())
        .unwrap_or("-");
    tracing::info!(
        target: "secref_server::access",
        method = %method,
        path = %path,
        status = resp.status().as_u16(),
        principal,
        duration_ms = started.elapsed().as_millis() as u64,
        "request"
    );
    resp.into_response()
}
