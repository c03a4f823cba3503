//! The one transport every HTTP provider uses.
//!
//! - [`ClientOptions::build_for`] makes a provider's [`HttpClient`]: rustls,
//!   pooled keep-alive connections, TLS options, and **no automatic
//!   redirects** (a redirect could carry credentials to another host; a
//!   `3xx` comes back as a status and maps to `redirect_refused`, and Vault
//!   follows its same-origin standby redirects by hand).
//! - [`HttpClient::send`] sends a request and reads the answer into a
//!   [`Response`] whose body is capped ([`MAX_BODY`] unless the client says
//!   otherwise) and zeroized on drop, with `Retry-After` parsed.
//! - [`status_code`] is the one table from HTTP status to [`ErrorCode`];
//!   [`Response::status_error`] builds the error with it.
//! - [`sanitize`] bounds every backend message quoted in an error
//!   ([`MAX_MESSAGE_CHARS`]) and drops control characters.
//! - [`call_ids`] gives each request the ids of its logical call: generated
//!   once by [`crate::RetryPolicy::run`] and re-sent unchanged on every retry
//!   (`x-request-id` on every request; SecFlow also puts them in its body).

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderValue, LOCATION, RETRY_AFTER};
use zeroize::Zeroizing;

use crate::error::{Error, ErrorCode, Result};

/// Largest response body any provider reads (4 MiB, as SecFlow's SDK).
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// The most characters of a backend's message quoted in an error.
pub const MAX_MESSAGE_CHARS: usize = 200;

/// The header that carries a request's id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// How to build a provider's HTTP client ([`ClientOptions::build_for`]).
///
/// ```
/// let c = secref::http::ClientOptions::default()
///     .timeout(std::time::Duration::from_secs(5))
///     .build_for("x")
///     .unwrap();
/// assert_eq!(c.provider(), "x");
/// ```
#[derive(Clone, Debug)]
pub struct ClientOptions {
    timeout: Duration,
    connect_timeout: Duration,
    ca_cert_pem: Option<Vec<u8>>,
    identity_pem: Option<Vec<u8>>,
    danger_accept_invalid_certs: bool,
    user_agent: String,
    max_body: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            ca_cert_pem: None,
            identity_pem: None,
            danger_accept_invalid_certs: false,
            user_agent: concat!("secref/", env!("CARGO_PKG_VERSION")).to_string(),
            max_body: MAX_BODY,
        }
    }
}

impl ClientOptions {
    /// Whole-request timeout.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self.connect_timeout = self.connect_timeout.min(t);
        self
    }

    /// Trusts an extra CA (PEM file).
    pub fn ca_cert_file(mut self, path: &Path) -> Result<Self> {
        self.ca_cert_pem = Some(std::fs::read(path).map_err(|e| {
            Error::config(format!(
                "cannot read CA file {}: {}",
                path.display(),
                e.kind()
            ))
        })?);
        Ok(self)
    }

    /// Presents a client certificate (PEM cert + key, concatenated).
    pub fn identity_pem(mut self, pem: Vec<u8>) -> Self {
        self.identity_pem = Some(pem);
        self
    }

    /// Disables certificate verification. Only ever set from an explicit,
    /// strictly parsed `false` in configuration.
    pub fn danger_accept_invalid_certs(mut self, yes: bool) -> Self {
        self.danger_accept_invalid_certs = yes;
        self
    }

    /// The largest response body [`HttpClient::send`] reads (default
    /// [`MAX_BODY`]); a larger one is `too_large`.
    pub fn max_body(mut self, limit: usize) -> Self {
        self.max_body = limit;
        self
    }

    /// Builds the transport of one provider; `provider` names it in errors.
    pub fn build_for(self, provider: &'static str) -> Result<HttpClient> {
        let max_body = self.max_body;
        Ok(HttpClient {
            client: self.build()?,
            provider,
            max_body,
        })
    }

    /// The bare reqwest client behind [`ClientOptions::build_for`].
    fn build(self) -> Result<reqwest::Client> {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(32)
            .tcp_nodelay(true)
            // A redirect could carry credentials to another host: never follow.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(self.user_agent)
            .danger_accept_invalid_certs(self.danger_accept_invalid_certs);
        if let Some(pem) = &self.ca_cert_pem {
            let cert = reqwest::Certificate::from_pem(pem)
                .map_err(|_| Error::config("CA file is not a valid PEM certificate"))?;
            b = b.add_root_certificate(cert);
        }
        if let Some(pem) = &self.identity_pem {
            let id = reqwest::Identity::from_pem(pem)
                .map_err(|_| Error::config("client certificate/key is not valid PEM"))?;
            b = b.identity(id);
        }
        b.build()
            .map_err(|e| Error::config(format!("cannot build HTTP client: {e}")))
    }
}

/// A provider's transport: one pooled client built by
/// [`ClientOptions::build_for`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct HttpClient {
    client: reqwest::Client,
    provider: &'static str,
    max_body: usize,
}

/// A final answer: status, what the callers read from its headers, and the
/// body (which may hold secrets), zeroized on drop.
pub struct Response {
    /// The HTTP status.
    pub status: u16,
    /// `Retry-After`, as a wait from now (seconds or an HTTP date).
    pub retry_after: Option<Duration>,
    /// `Location`, for the one caller that follows redirects by hand.
    pub location: Option<String>,
    /// Every header of the answer (e.g. AWS's `x-amzn-requestid`).
    pub headers: reqwest::header::HeaderMap,
    /// The body, at most the client's limit.
    pub body: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// Starts a request (send it with [`HttpClient::send`]).
    pub fn request(
        &self,
        method: reqwest::Method,
        url: impl reqwest::IntoUrl,
    ) -> reqwest::RequestBuilder {
        self.client.request(method, url)
    }

    /// Starts a `GET`.
    pub fn get(&self, url: impl reqwest::IntoUrl) -> reqwest::RequestBuilder {
        self.client.get(url)
    }

    /// Starts a `POST`.
    pub fn post(&self, url: impl reqwest::IntoUrl) -> reqwest::RequestBuilder {
        self.client.post(url)
    }

    /// The provider this transport belongs to.
    pub fn provider(&self) -> &'static str {
        self.provider
    }

    /// Sends `req` with its call's request id (unless it names one itself)
    /// and reads the answer. Any status is an answer (a `3xx` included:
    /// nothing is followed); transport failures and oversized bodies are
    /// errors.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Result<Response> {
        let failed = |e: reqwest::Error| transport_error(&e).with_provider(self.provider);
        let mut req = req.build().map_err(failed)?;
        if !req.headers().contains_key(REQUEST_ID_HEADER) {
            if let Ok(id) = HeaderValue::from_str(&call_ids().0) {
                req.headers_mut().insert(REQUEST_ID_HEADER, id);
            }
        }
        let resp = self.client.execute(req).await.map_err(failed)?;
        let status = resp.status().as_u16();
        let retry_after = resp.headers().get(RETRY_AFTER).and_then(parse_retry_after);
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let headers = resp.headers().clone();
        let body = Zeroizing::new(
            read_body(resp, self.max_body)
                .await
                .map_err(|e| e.with_provider(self.provider))?,
        );
        tracing::trace!(provider = self.provider, status, "HTTP answer");
        Ok(Response {
            status,
            retry_after,
            location,
            headers,
            body,
        })
    }
}

impl Response {
    /// An answer with `status` and `body` and no headers (for tests and
    /// doubles).
    pub fn new(status: u16, body: &[u8]) -> Response {
        Response {
            status,
            retry_after: None,
            location: None,
            headers: reqwest::header::HeaderMap::new(),
            body: Zeroizing::new(body.to_vec()),
        }
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The error for this (non-success) answer: code and retryable flag by
    /// [`status_code`], the provider, and the backend's `Retry-After`.
    pub fn status_error(&self, provider: &str, message: impl Into<Cow<'static, str>>) -> Error {
        status_error(provider, self.status, self.retry_after, message)
    }
}

/// The one table from an HTTP status to an [`ErrorCode`]; retryability is
/// the code's default (`rate_limited`, `backend_unavailable`, `timeout`).
///
/// ```
/// use secref::{http::status_code, ErrorCode};
/// assert_eq!(status_code(404), ErrorCode::NotFound);
/// assert_eq!(status_code(307), ErrorCode::RedirectRefused);
/// assert_eq!(status_code(504), ErrorCode::Timeout);
/// assert!(status_code(503).default_retryable());
/// ```
pub fn status_code(status: u16) -> ErrorCode {
    match status {
        // Redirects are never followed (credentials could go elsewhere).
        300..=399 => ErrorCode::RedirectRefused,
        400 | 422 => ErrorCode::Usage,
        401 => ErrorCode::Unauthenticated,
        403 => ErrorCode::PermissionDenied,
        404 => ErrorCode::NotFound,
        405 | 501 => ErrorCode::Unsupported,
        408 | 504 => ErrorCode::Timeout,
        // 412: a Vault performance standby has not caught up yet.
        412 => ErrorCode::BackendUnavailable,
        429 => ErrorCode::RateLimited,
        500..=599 => ErrorCode::BackendUnavailable,
        _ => ErrorCode::InvalidResponse,
    }
}

/// An error for HTTP `status` from `provider` ([`status_code`]), carrying
/// `retry_after` when the backend sent one and a hint for redirects.
pub fn status_error(
    provider: &str,
    status: u16,
    retry_after: Option<Duration>,
    message: impl Into<Cow<'static, str>>,
) -> Error {
    let code = status_code(status);
    let mut e = Error::new(code, message).with_provider(provider);
    if let Some(wait) = retry_after {
        e = e.with_retry_after(wait);
    }
    if code == ErrorCode::RedirectRefused {
        e = e.with_hint("redirects are not followed: configure the final URL");
    }
    e
}

/// A backend's message made safe to quote: control characters dropped, at
/// most [`MAX_MESSAGE_CHARS`] characters (`…` marks a cut). Backends'
/// messages describe failures; this keeps a hostile one from flooding or
/// forging log lines.
///
/// ```
/// let long = "a".repeat(500);
/// let s = secref::http::sanitize(&format!("bad\n\u{1b}[31m{long}"));
/// assert!(s.starts_with("bad[31maaa") && s.ends_with('…'));
/// assert_eq!(s.chars().count(), secref::http::MAX_MESSAGE_CHARS + 1);
/// ```
pub fn sanitize(message: &str) -> String {
    let mut kept = message.chars().filter(|c| !c.is_control());
    let mut out: String = kept.by_ref().take(MAX_MESSAGE_CHARS).collect();
    if kept.next().is_some() {
        out.push('…');
    }
    out
}

/// `Retry-After`: delay-seconds or an HTTP date (a past date is "now").
fn parse_retry_after(v: &HeaderValue) -> Option<Duration> {
    let text = v.to_str().ok()?.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

/// The ids of one logical call, shared by all its requests and retries
/// (a login a first attempt needs and a second does not must not shift the
/// ids of the requests after it).
#[derive(Clone, Debug)]
pub(crate) struct CallIds {
    request_id: Arc<str>,
    trace_id: Arc<str>,
}

impl CallIds {
    pub(crate) fn fresh() -> CallIds {
        CallIds {
            request_id: fresh_id().into(),
            trace_id: fresh_id().into(),
        }
    }

    fn pair(&self) -> (String, String) {
        (self.request_id.to_string(), self.trace_id.to_string())
    }
}

tokio::task_local! {
    static CALL: CallIds;
}

fn fresh_id() -> String {
    format!("secref-{}", uuid::Uuid::new_v4())
}

/// Runs `fut` as one logical call with the ids `ids`.
pub(crate) async fn with_call_ids<F: std::future::Future>(ids: CallIds, fut: F) -> F::Output {
    CALL.scope(ids, fut).await
}

/// `(request_id, trace_id)` for a request: those of the current logical
/// call (stable across its retries), or fresh ones outside any.
pub fn call_ids() -> (String, String) {
    CALL.try_with(CallIds::pair)
        .unwrap_or_else(|_| (fresh_id(), fresh_id()))
}

/// Maps a transport error (providers get this through [`HttpClient::send`]).
fn transport_error(e: &reqwest::Error) -> Error {
    if e.is_timeout() {
        Error::new(ErrorCode::Timeout, "the backend did not answer in time")
    } else if e.is_connect() {
        Error::new(
            ErrorCode::BackendUnavailable,
            "cannot connect to the backend",
        )
    } else if e.is_body() || e.is_decode() {
        Error::new(
            ErrorCode::BackendUnavailable,
            "the connection failed while reading the response",
        )
    } else {
        Error::new(
            ErrorCode::BackendUnavailable,
            "the request to the backend failed",
        )
    }
}

/// Reads a response body up to `limit` bytes; more is `too_large`
/// (providers get this through [`HttpClient::send`]; a provider that can
/// ask for less, e.g. one item instead of a whole listing, falls back on it).
async fn read_body(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>> {
    if resp.content_length().is_some_and(|n| n as usize > limit) {
        return Err(body_too_large(limit));
    }
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| transport_error(&e))? {
        if buf.len() + chunk.len() > limit {
            zeroize::Zeroize::zeroize(&mut buf);
            return Err(body_too_large(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

fn body_too_large(limit: usize) -> Error {
    Error::new(
        ErrorCode::TooLarge,
        format!("response body exceeds {limit} bytes"),
    )
}
