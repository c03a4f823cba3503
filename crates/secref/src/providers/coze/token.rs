//! The Coze workload-identity token flow: OAuth2 client credentials for an
//! "ID token", then an RFC 8693 token exchange for the access token the
//! outbound API takes. Both tokens are cached with an expiry buffer in
//! [`TokenCell`]s, so a refresh is single-flight.

use std::fmt;
use std::time::{Duration, Instant};

use serde::Deserialize;
use url::Url;
use zeroize::Zeroizing;

use crate::auth::TokenCell;
use crate::error::{Error, ErrorCode, Result};
use crate::http::{self, HttpClient};
use crate::secret::Secret;

/// `remote_code` of failures of the client-credentials step.
pub const TOKEN_RETRIEVAL: &str = "token_retrieval";
/// `remote_code` of failures of the token-exchange step.
pub const TOKEN_EXCHANGE: &str = "token_exchange";

const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const SUBJECT_TOKEN_TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
/// What the SDK assumes when the exchange response has no `expires_in`.
const DEFAULT_ACCESS_TOKEN_TTL: u64 = 3600;

/// How the client authenticates to the client-credentials endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// `client_id` and `client_secret` in the form body (the SDK's way).
    Body,
    /// HTTP Basic (`client_secret_basic`); the body carries only the grant.
    Basic,
}

/// Everything the token flow needs. `Debug` never shows the secret.
pub(crate) struct TokenSettings {
    pub client_id: String,
    pub client_secret: Secret,
    pub client_auth: ClientAuth,
    pub token_endpoint: Url,
    pub access_token_endpoint: Url,
    pub expiry_buffer: Duration,
}

impl fmt::Debug for TokenSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSettings")
            .field("client_id", &self.client_id)
            .field("client_secret", &"[REDACTED]")
            .field("client_auth", &self.client_auth)
            .field("token_endpoint", &self.token_endpoint.as_str())
            .field(
                "access_token_endpoint",
                &self.access_token_endpoint.as_str(),
            )
            .field("expiry_buffer", &self.expiry_buffer)
            .finish()
    }
}

/// A token and the instant it stops being used (its expiry minus the
/// buffer); `None`: never reused (no lifetime, or shorter than the buffer).
struct Cached {
    token: Secret,
    use_until: Option<Instant>,
}

impl Cached {
    fn fresh(&self) -> bool {
        self.use_until.is_some_and(|u| Instant::now() < u)
    }
}

impl crate::auth::TokenState for Cached {
    fn token(&self) -> &Secret {
        &self.token
    }
}

/// The token source of one provider: one identity (client id) at one pair of
/// endpoints, so the cache is keyed by them by construction; two providers
/// never share tokens (unlike the SDK's process-global cache).
pub(crate) struct TokenSource {
    settings: TokenSettings,
    lane: Vec<(&'static str, String)>,
    /// The client-credentials "ID token".
    id: TokenCell<Cached>,
    /// The exchanged access token.
    access: TokenCell<Cached>,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The fields read from a token endpoint's JSON answer.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<Zeroizing<String>>,
    expires_in: Option<serde_json::Value>,
    error: Option<serde_json::Value>,
}

impl TokenSource {
    pub(crate) fn new(settings: TokenSettings, lane: Vec<(&'static str, String)>) -> TokenSource {
        TokenSource {
            settings,
            lane,
            id: TokenCell::new(),
            access: TokenCell::new(),
        }
    }

    pub(crate) fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    /// A valid access token: the cached one, or a new one from the exchange
    /// (which reuses a cached ID token while it is fresh).
    pub(crate) async fn access_token(&self, client: &HttpClient) -> Result<Secret> {
        let access = self
            .access
            .get(Cached::fresh, |_| async {
                let id = self
                    .id
                    .get(Cached::fresh, |_| async {
                        let (token, ttl) = self.fetch_id_token(client).await?;
                        // An ID token without a lifetime is used once.
                        let use_until = ttl.and_then(|t| self.use_until(t));
                        Ok(Cached { token, use_until })
                    })
                    .await?;
                match self.exchange(client, &id.token).await {
                    Ok((token, ttl)) => Ok(Cached {
                        token,
                        use_until: self.use_until(ttl.unwrap_or(DEFAULT_ACCESS_TOKEN_TTL)),
                    }),
                    Err(e) => {
                        // A refused ID token is not reused: the next call
                        // starts over.
                        if !e.retryable() {
                            self.id.invalidate(&id.token);
                        }
                        Err(e)
                    }
                }
            })
            .await?;
        Ok(access.token.clone())
    }

    /// Both steps of the flow afresh, the tokens dropped and the cache left
    /// alone: proves now that the identity provider and the exchange are
    /// reachable and take the client credentials (a cached token would
    /// hide an outage until it expires).
    pub(crate) async fn probe(&self, client: &HttpClient) -> Result<()> {
        let (id, _) = self.fetch_id_token(client).await?;
        self.exchange(client, &id).await.map(drop)
    }

    /// Forgets both tokens if the access token is still `rejected` (the
    /// outbound API answered 401 to it); another caller may have refreshed
    /// already, and its new token is kept.
    pub(crate) fn reject(&self, rejected: &Secret) {
        if self.access.current().is_none() || self.access.invalidate(rejected) {
            tracing::debug!(
                client_id = %self.settings.client_id,
                "coze: access token rejected, dropping cached tokens"
            );
            self.id.clear();
        }
    }

    /// When a token living `ttl_secs` stops being used: its expiry minus
    /// the buffer; `None` when nothing is left of it.
    fn use_until(&self, ttl_secs: u64) -> Option<Instant> {
        let usable = Duration::from_secs(ttl_secs).checked_sub(self.settings.expiry_buffer)?;
        (!usable.is_zero()).then(|| Instant::now() + usable)
    }

    /// Step 1: client credentials → ID token.
    async fn fetch_id_token(&self, client: &HttpClient) -> Result<(Secret, Option<u64>)> {
        let s = &self.settings;
        let mut form = Zeroizing::new(String::new());
        let mut req = client.post(s.token_endpoint.clone());
        match s.client_auth {
            ClientAuth::Body => {
                let secret = s.client_secret.as_text()?;
                push_pair(&mut form, "client_id", &s.client_id);
                push_pair(&mut form, "client_secret", secret);
            }
            ClientAuth::Basic => {
                // RFC 6749 §2.3.1: both parts form-encoded before base64.
                let id = Zeroizing::new(form_encode(&s.client_id));
                let secret = Zeroizing::new(form_encode(s.client_secret.as_text()?));
                req = req.basic_auth(id.as_str(), Some(secret.as_str()));
            }
        }
        push_pair(&mut form, "grant_type", "client_credentials");
        tracing::debug!(client_id = %s.client_id, endpoint = %s.token_endpoint, "coze: requesting ID token");
        self.post_form(client, req, form, TOKEN_RETRIEVAL).await
    }

    /// Step 2: RFC 8693 exchange of the ID token for an access token. Like
    /// the SDK, the request carries only `client_id` (a public client at the
    /// exchange endpoint).
    async fn exchange(
        &self,
        client: &HttpClient,
        id_token: &Secret,
    ) -> Result<(Secret, Option<u64>)> {
        let s = &self.settings;
        let mut form = Zeroizing::new(String::new());
        push_pair(&mut form, "client_id", &s.client_id);
        push_pair(&mut form, "subject_token", id_token.as_text()?);
        push_pair(&mut form, "subject_token_type", SUBJECT_TOKEN_TYPE_ID_TOKEN);
        push_pair(&mut form, "grant_type", GRANT_TOKEN_EXCHANGE);
        tracing::debug!(client_id = %s.client_id, endpoint = %s.access_token_endpoint, "coze: exchanging ID token");
        let req = client.post(s.access_token_endpoint.clone());
        self.post_form(client, req, form, TOKEN_EXCHANGE).await
    }

    /// Sends one token request and reads `access_token` / `expires_in`.
    async fn post_form(
        &self,
        client: &HttpClient,
        mut req: reqwest::RequestBuilder,
        form: Zeroizing<String>,
        step: &'static str,
    ) -> Result<(Secret, Option<u64>)> {
        for (name, value) in &self.lane {
            req = req.header(*name, value);
        }
        let req = req
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(form.as_bytes().to_vec());
        let resp = client
            .send(req)
            .await
            .map_err(|e| e.with_remote_code(step))?;
        let (token, ttl) = decode_token_response(step, &resp)?;
        tracing::debug!(step, expires_in = ?ttl, "coze: token issued");
        Ok((token, ttl))
    }
}

/// Decodes an OAuth 2.0 token endpoint answer (RFC 6749 §5.1/§5.2, also the
/// RFC 8693 exchange): the access token and its `expires_in`, or the typed
/// error of `step`. Pure, so it is fuzzed on its own (`secref::fuzz`).
pub(crate) fn decode_token_response(
    step: &'static str,
    resp: &http::Response,
) -> Result<(Secret, Option<u64>)> {
    let parsed: Option<TokenResponse> = serde_json::from_slice(&resp.body).ok();
    if !resp.is_success() || parsed.as_ref().is_some_and(|p| p.error.is_some()) {
        let oauth_error = parsed
            .as_ref()
            .and_then(|p| p.error.as_ref())
            .and_then(|e| e.as_str())
            .map(safe_oauth_error);
        return Err(step_error(step, resp, oauth_error));
    }
    let parsed = parsed.ok_or_else(|| {
        step_failure(
            step,
            ErrorCode::InvalidResponse,
            "answered with invalid JSON",
        )
    })?;
    let token = parsed
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            step_failure(
                step,
                ErrorCode::InvalidResponse,
                "answered without an access_token",
            )
        })?;
    let ttl = match parsed.expires_in {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| {
            step_failure(
                step,
                ErrorCode::InvalidResponse,
                "answered with a non-numeric expires_in",
            )
        })?),
    };
    Ok((Secret::from(token.as_str()), ttl))
}

fn step_name(step: &str) -> &'static str {
    if step == TOKEN_EXCHANGE {
        "coze token exchange"
    } else {
        "coze ID token request (client credentials)"
    }
}

fn step_failure(step: &'static str, code: ErrorCode, what: &str) -> Error {
    Error::new(code, format!("{} {what}", step_name(step))).with_remote_code(step)
}

/// A non-2xx (or `error`-carrying) token answer: by the shared status table
/// ([`http::status_code`]), except that the endpoint's other 4xx refusals
/// (and a `200` with an OAuth `error`) are OAuth rejections:
/// `unauthenticated`.
fn step_error(step: &'static str, resp: &http::Response, oauth: Option<String>) -> Error {
    let status = resp.status;
    let detail = match &oauth {
        Some(e) => format!("HTTP {status}, OAuth error {e}"),
        None => format!("HTTP {status}"),
    };
    let message = format!("{} failed ({detail})", step_name(step));
    let e = match http::status_code(status) {
        ErrorCode::RateLimited
        | ErrorCode::Timeout
        | ErrorCode::BackendUnavailable
        | ErrorCode::RedirectRefused
            if !resp.is_success() =>
        {
            resp.status_error("coze", message)
        }
        _ => Error::new(ErrorCode::Unauthenticated, message).with_hint(if step == TOKEN_EXCHANGE {
            "the exchange endpoint rejected the ID token or client id: check COZE_WORKLOAD_ACCESS_TOKEN_ENDPOINT and the client's registration"
        } else {
            "check COZE_WORKLOAD_IDENTITY_CLIENT_ID / _CLIENT_SECRET and the token endpoint"
        }),
    };
    e.with_remote_code(step)
}

/// OAuth `error` codes are registry strings; anything else is not echoed.
fn safe_oauth_error(e: &str) -> String {
    if e.len() <= 64 && e.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        e.to_string()
    } else {
        "(unrecognised)".to_string()
    }
}

fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn push_pair(form: &mut Zeroizing<String>, key: &str, value: &str) {
    if !form.is_empty() {
        form.push('&');
    }
    form.push_str(key);
    form.push('=');
    // byte_serialize yields &str pieces: no intermediate unzeroized copy.
    for piece in url::form_urlencoded::byte_serialize(value.as_bytes()) {
        form.push_str(piece);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding_matches_the_sdk() {
        let mut f = Zeroizing::new(String::new());
        push_pair(&mut f, "subject_token_type", SUBJECT_TOKEN_TYPE_ID_TOKEN);
        push_pair(&mut f, "x", "a b&c");
        assert_eq!(
            f.as_str(),
            "subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aid_token&x=a+b%26c"
        );
    }

    #[test]
    fn oauth_errors_are_echoed_only_when_safe() {
        assert_eq!(safe_oauth_error("invalid_client"), "invalid_client");
        assert_eq!(safe_oauth_error("s3cret value"), "(unrecognised)");
    }

    #[test]
    fn step_errors_are_typed() {
        let e = step_error(
            TOKEN_EXCHANGE,
            &http::Response::new(400, b""),
            Some("invalid_grant".into()),
        );
        assert_eq!(e.code(), ErrorCode::Unauthenticated);
        assert!(!e.retryable());
        assert_eq!(e.remote_code(), Some(TOKEN_EXCHANGE));
        let e = step_error(TOKEN_RETRIEVAL, &http::Response::new(502, b""), None);
        assert_eq!(e.code(), ErrorCode::BackendUnavailable);
        assert!(e.retryable());
        assert_eq!(e.remote_code(), Some(TOKEN_RETRIEVAL));
    }
}
