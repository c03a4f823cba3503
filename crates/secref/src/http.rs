//! The one HTTP client setup every remote provider uses: rustls, pooled
//! keep-alive connections, no automatic redirects, bounded response bodies,
//! and one mapping from transport failures to [`ErrorCode`]s.

use std::path::Path;
use std::time::Duration;

use crate::error::{Error, ErrorCode, Result};

/// Largest response body any provider reads (4 MiB, as SecFlow's SDK).
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// How to build the HTTP client ([`ClientOptions::build`]).
///
/// ```
/// let c = secref::http::ClientOptions::default()
///     .timeout(std::time::Duration::from_secs(5))
///     .build()
///     .unwrap();
/// # let _ = c;
/// ```
#[derive(Clone, Debug)]
pub struct ClientOptions {
    timeout: Duration,
    connect_timeout: Duration,
    ca_cert_pem: Option<Vec<u8>>,
    identity_pem: Option<Vec<u8>>,
    danger_accept_invalid_certs: bool,
    user_agent: String,
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

    /// Builds the client.
    pub fn build(self) -> Result<reqwest::Client> {
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

/// Maps a transport error. reqwest's messages name the URL (never bodies or
/// headers), which is safe: URLs here carry no credentials.
pub fn transport_error(e: &reqwest::Error) -> Error {
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

/// Reads a response body up to `limit` bytes; more is `invalid_response`.
pub(crate) async fn read_body(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>> {
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
        ErrorCode::InvalidResponse,
        format!("response body exceeds {limit} bytes"),
    )
}
