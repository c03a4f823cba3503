//! HTTP to Vault over the shared [`http::HttpClient`]: Vault's headers,
//! manual same-origin redirects, and Vault's `{"errors":[…]}` bodies quoted
//! in errors (codes come from the one table, [`http::status_code`]).
//!
//! The shared client never follows redirects. A standby node answers 307
//! with the active node's address; that redirect is followed here by hand,
//! at most [`MAX_REDIRECTS`] times, and only to the configured origin or an
//! explicitly allowed one, so the token header never reaches another host.

use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use reqwest::Method;
use serde::Deserialize;
use url::Url;
use zeroize::Zeroizing;

use crate::error::{Error, ErrorCode, Result};
use crate::http;
use crate::secret::Secret;

/// Redirect hops followed before giving up.
pub(super) const MAX_REDIRECTS: usize = 3;

/// One request, relative to `<base>/v1/`.
pub(super) struct Request<'a> {
    pub method: Method,
    pub path: String,
    pub query: Option<(&'static str, String)>,
    pub token: Option<&'a Secret>,
    pub body: Option<Zeroizing<Vec<u8>>>,
    pub wrap_ttl: Option<&'a str>,
}

impl<'a> Request<'a> {
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        Request {
            method,
            path: path.into(),
            query: None,
            token: None,
            body: None,
            wrap_ttl: None,
        }
    }

    pub fn token(mut self, token: &'a Secret) -> Self {
        self.token = Some(token);
        self
    }

    pub fn json(mut self, body: Zeroizing<Vec<u8>>) -> Self {
        self.body = Some(body);
        self
    }
}

pub(super) use crate::http::Response;

pub(super) struct Transport {
    http: http::HttpClient,
    base: Url,
    namespace: Option<HeaderValue>,
    allowed: Vec<url::Origin>,
}

impl Transport {
    pub fn new(
        http: http::HttpClient,
        base: Url,
        namespace: Option<&str>,
        extra_origins: Vec<url::Origin>,
    ) -> Result<Transport> {
        let namespace = match namespace {
            Some(ns) => Some(
                HeaderValue::from_str(ns)
                    .map_err(|_| Error::config("VAULT_NAMESPACE is not a valid header value"))?,
            ),
            None => None,
        };
        let mut allowed = vec![base.origin()];
        allowed.extend(extra_origins);
        Ok(Transport {
            http,
            base,
            namespace,
            allowed,
        })
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    fn url_for(&self, req: &Request<'_>) -> Result<Url> {
        let base = self.base.as_str().trim_end_matches('/');
        let mut url = Url::parse(&format!("{base}/v1/{}", req.path))
            .map_err(|_| Error::internal("cannot build a Vault URL"))?;
        if let Some((k, v)) = &req.query {
            url.query_pairs_mut().append_pair(k, v);
        }
        Ok(url)
    }

    fn headers(&self, req: &Request<'_>) -> Result<HeaderMap> {
        let mut h = HeaderMap::new();
        h.insert("x-vault-request", HeaderValue::from_static("true"));
        if let Some(ns) = &self.namespace {
            h.insert("x-vault-namespace", ns.clone());
        }
        if let Some(tok) = req.token {
            let mut v = HeaderValue::from_bytes(tok.expose_bytes()).map_err(|_| {
                Error::new(
                    ErrorCode::Config,
                    "the Vault token has characters not allowed in a header",
                )
            })?;
            v.set_sensitive(true);
            h.insert("x-vault-token", v);
        }
        if let Some(ttl) = req.wrap_ttl {
            h.insert(
                "x-vault-wrap-ttl",
                HeaderValue::from_str(ttl).map_err(|_| Error::internal("bad wrap ttl"))?,
            );
        }
        if req.body.is_some() {
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        Ok(h)
    }

    /// Sends the request, following allowed redirects, and returns any
    /// final status with its body. Transport failures are errors.
    pub async fn send(&self, req: &Request<'_>) -> Result<Response> {
        let headers = self.headers(req)?;
        let mut url = self.url_for(req)?;
        for hop in 0..=MAX_REDIRECTS {
            let mut rb = self
                .http
                .request(req.method.clone(), url.clone())
                .headers(headers.clone());
            if let Some(b) = &req.body {
                rb = rb.body(b.to_vec());
            }
            let resp = self.http.send(rb).await?;
            let status = resp.status;
            if !matches!(status, 301 | 302 | 303 | 307 | 308) {
                return Ok(resp);
            }
            if hop == MAX_REDIRECTS {
                break;
            }
            let next = resp
                .location
                .as_deref()
                .and_then(|loc| url.join(loc).ok())
                .ok_or_else(|| {
                    Error::new(
                        ErrorCode::RedirectRefused,
                        format!("Vault answered {status} without a usable Location"),
                    )
                })?;
            if !self.allowed.contains(&next.origin()) {
                return Err(Error::new(
                    ErrorCode::RedirectRefused,
                    format!(
                        "Vault redirected to {}, which is not the configured origin; not followed",
                        next.origin().ascii_serialization()
                    ),
                )
                .with_hint(
                    "add the origin to VAULT_REDIRECT_ALLOW if it is a node of the same cluster",
                ));
            }
            tracing::debug!(status, to = %next.origin().ascii_serialization(), "following Vault redirect");
            url = next;
        }
        Err(Error::new(
            ErrorCode::RedirectRefused,
            format!("Vault redirected more than {MAX_REDIRECTS} times"),
        ))
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<String>,
}

/// Vault's error strings, each [`http::sanitize`]d. Vault's messages
/// describe the failure ("permission denied"), they do not echo tokens or
/// values.
pub(super) fn vault_errors(body: &[u8]) -> Option<String> {
    let parsed: ErrorBody = serde_json::from_slice(body).ok()?;
    if parsed.errors.is_empty() {
        return None;
    }
    let list: Vec<String> = parsed
        .errors
        .iter()
        .take(3)
        .map(|e| http::sanitize(e))
        .collect();
    Some(list.join("; "))
}

/// Maps a non-success answer to an error ([`http::status_code`]). `what`
/// says what was asked, e.g. "reading secret/myapp/api".
pub(super) fn status_error(resp: &Response, what: &str) -> Error {
    let status = resp.status;
    let detail = vault_errors(&resp.body)
        .map(|e| format!(": {e}"))
        .unwrap_or_default();
    let sealed = status == 503 && detail.to_ascii_lowercase().contains("sealed");
    let mut e = resp
        .status_error("vault", format!("Vault answered {status} {what}{detail}"))
        .with_remote_code(format!("http_{status}"));
    if sealed {
        e = e.with_hint("Vault is sealed: unseal it, then try again");
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_error(status: u16, body: &[u8], what: &str) -> Error {
        super::status_error(&Response::new(status, body), what)
    }

    #[test]
    fn maps_statuses() {
        let b = br#"{"errors":["permission denied"]}"#;
        let e = status_error(403, b, "reading secret/a");
        assert_eq!(e.code(), ErrorCode::PermissionDenied);
        assert!(e.message().contains("permission denied"));
        let e = status_error(503, br#"{"errors":["Vault is sealed"]}"#, "x");
        assert!(e.retryable());
        assert!(e.hint().unwrap().contains("sealed"));
        assert!(status_error(429, b"", "x").retryable());
        assert!(status_error(500, b"not json", "x").retryable());
        assert_eq!(status_error(404, b"{}", "x").code(), ErrorCode::NotFound);
        let long = format!(r#"{{"errors":["{}\u001b"]}}"#, "a".repeat(500));
        let msg = status_error(400, long.as_bytes(), "x")
            .message()
            .to_string();
        assert!(msg.len() < 400 && !msg.contains('\u{1b}'));
    }
}
