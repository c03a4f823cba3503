//! Operating endpoints: `GET /healthz`, `GET /readyz`, `GET /metrics`.
//!
//! * `/healthz`: the process is up. No authentication, no detail.
//! * `/readyz`: every provider answers its health check (reachable and
//!   authenticated) and the audit sink can take writes. 200 or 503; only an
//!   authenticated caller is told which check failed (by error code, never
//!   a message). Results are kept for [`READY_CACHE`], so the endpoint
//!   cannot be used to hammer the backends.
//! * `/metrics`: Prometheus text (see [`secref::metrics`]), behind the API's
//!   authentication unless `[server] metrics_public = true`.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use parking_lot::Mutex;
use serde_json::json;

use crate::auth::Caller;
use crate::AppState;

/// How long a readiness answer is reused.
pub const READY_CACHE: Duration = Duration::from_secs(2);
/// How long one provider's health check may take.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// The process-wide Prometheus recorder behind the `metrics` facade,
/// installed on first use. `None` when the embedding application installed
/// another recorder first (its exporter then has the same series).
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(secref::metrics::BACKEND_LATENCY.into()),
                    secref::metrics::LATENCY_BUCKETS,
                )
                .ok()?;
            match builder.install_recorder() {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed: /metrics is empty");
                    None
                }
            }
        })
        .as_ref()
}

/// One check of a readiness answer.
#[derive(Clone, Debug)]
struct Check {
    name: String,
    code: Option<&'static str>,
}

/// Cached readiness.
#[derive(Default, Debug)]
pub(crate) struct Readiness {
    last: Mutex<Option<(Instant, Vec<Check>)>>,
    /// Serialises refreshes: concurrent callers share one round of checks.
    refresh: tokio::sync::Mutex<()>,
}

impl Readiness {
    async fn checks(&self, state: &AppState) -> Vec<Check> {
        let fresh = |l: &Option<(Instant, Vec<Check>)>| {
            l.as_ref()
                .filter(|(at, _)| at.elapsed() < READY_CACHE)
                .map(|(_, c)| c.clone())
        };
        if let Some(c) = fresh(&self.last.lock()) {
            return c;
        }
        let _one = self.refresh.lock().await;
        if let Some(c) = fresh(&self.last.lock()) {
            return c;
        }
        let resolver = state.resolver();
        let mut checks: Vec<Check> = resolver
            .health(CHECK_TIMEOUT)
            .await
            .into_iter()
            .map(|(name, res)| Check {
                name: format!("provider:{name}"),
                code: res.err().map(|e| e.code().as_str()),
            })
            .collect();
        if let Some(a) = resolver.auditor() {
            let res = tokio::time::timeout(CHECK_TIMEOUT, a.health()).await;
            checks.push(Check {
                name: "audit".into(),
                code: match res {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e.code().as_str()),
                    Err(_) => Some(secref::ErrorCode::Timeout.as_str()),
                },
            });
        }
        // Shared state (`[state]`): a replica that cannot reach it refuses
        // every policy decision, lease revocation and unwrap, so it must
        // leave the load balancer's rotation. One real round trip.
        if let Some(shared) = resolver.shared_state() {
            let probe = shared.key("readiness", &[b"probe"]);
            let res = tokio::time::timeout(CHECK_TIMEOUT, shared.backend().contains(&probe)).await;
            checks.push(Check {
                name: "state".into(),
                code: match res {
                    Ok(Ok(_)) => None,
                    Ok(Err(e)) => Some(e.code().as_str()),
                    Err(_) => Some(secref::ErrorCode::Timeout.as_str()),
                },
            });
        }
        *self.last.lock() = Some((Instant::now(), checks.clone()));
        checks
    }
}

/// The routes.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(
    axum::extract::State(state): axum::extract::State<AppState>,
    Caller(caller): Caller,
) -> Response {
    let checks = state.snapshot().readiness.checks(&state).await;
    let ready = checks.iter().all(|c| c.code.is_none());
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = if ready { "ready" } else { "not_ready" };
    if caller.is_none() {
        return (status, Json(json!({ "status": word }))).into_response();
    }
    let detail: Vec<_> = checks
        .iter()
        .map(|c| json!({"name": c.name, "ok": c.code.is_none(), "error_code": c.code}))
        .collect();
    (status, Json(json!({"status": word, "checks": detail}))).into_response()
}

async fn metrics(
    axum::extract::State(state): axum::extract::State<AppState>,
    Caller(caller): Caller,
) -> Response {
    if caller.is_none() && !state.config().metrics_public {
        return crate::secflow::error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "a bearer token is required (or set [server] metrics_public = true)",
            false,
        );
    }
    state.report_held().await;
    let body = prometheus()
        .map(|h| {
            h.run_upkeep();
            h.render()
        })
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
