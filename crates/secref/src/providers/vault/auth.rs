//! Vault tokens: a static token, or AppRole login with renewal.
//!
//! The current token is shared behind a read lock; obtaining a new one
//! (login, `renew-self`, re-login when renewal is refused) happens behind one
//! async gate, so concurrent callers that find the token stale cause exactly
//! one login or renewal and then all use its result.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::auth::TokenCell;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::settings::Credentials;
use super::transport::{status_error, Request, Transport};
use crate::error::{Error, ErrorCode, Result};
use crate::secret::Secret;

/// A token and what Vault said about its lifetime.
struct TokenState {
    token: Secret,
    obtained: Instant,
    /// `None`: no expiry known (a static token, or a root token).
    ttl: Option<Duration>,
    renewable: bool,
}

impl TokenState {
    fn expires_at(&self) -> Option<Instant> {
        self.ttl.map(|t| self.obtained + t)
    }
}

impl crate::auth::TokenState for TokenState {
    fn token(&self) -> &Secret {
        &self.token
    }
}

/// Non-secret facts from `auth/token/lookup-self`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct TokenInfo {
    /// The token's display name (e.g. `approle`, `token`, `root`).
    #[serde(default)]
    pub display_name: String,
    /// Policies attached to the token.
    #[serde(default)]
    pub policies: Vec<String>,
    /// Seconds left; 0 means the token does not expire.
    #[serde(default)]
    pub ttl: u64,
    /// Whether the token can be renewed.
    #[serde(default)]
    pub renewable: bool,
    /// `service` or `batch`, when Vault says.
    #[serde(default, rename = "type")]
    pub token_type: Option<String>,
}

pub(super) struct TokenManager {
    credentials: Credentials,
    renew_margin: Option<Duration>,
    cell: TokenCell<TokenState>,
}

#[derive(Deserialize)]
struct AuthEnvelope {
    auth: Option<AuthBlock>,
}

#[derive(Deserialize)]
struct AuthBlock {
    client_token: String,
    #[serde(default)]
    lease_duration: u64,
    #[serde(default)]
    renewable: bool,
}

#[derive(Serialize)]
struct LoginBody<'a> {
    role_id: &'a str,
    secret_id: &'a str,
}

#[derive(Deserialize)]
struct LookupEnvelope {
    data: Option<TokenInfo>,
}

impl TokenManager {
    pub fn new(credentials: Credentials, renew_margin: Option<Duration>) -> Self {
        TokenManager {
            credentials,
            renew_margin,
            cell: TokenCell::new(),
        }
    }

    /// Whether a 403 may mean "the token is gone" and a new login could help.
    pub fn can_relogin(&self) -> bool {
        matches!(self.credentials, Credentials::AppRole { .. })
    }

    /// A usable token: the current one, or a renewed or new one.
    pub async fn token(&self, t: &Transport) -> Result<Secret> {
        let state = self
            .cell
            .get(|s| self.is_fresh(s), |stale| self.refresh(t, stale))
            .await?;
        Ok(state.token.clone())
    }

    /// Forgets `token` if it is still the current one (it was rejected).
    pub fn invalidate(&self, token: &Secret) {
        self.cell.invalidate(token);
    }

    fn is_fresh(&self, s: &TokenState) -> bool {
        match s.ttl {
            None => true,
            Some(ttl) => {
                let margin = self.renew_margin.unwrap_or(ttl / 3);
                let left = s
                    .expires_at()
                    .map(|e| e.saturating_duration_since(Instant::now()))
                    .unwrap_or_default();
                left > margin
            }
        }
    }

    async fn refresh(&self, t: &Transport, stale: Option<Arc<TokenState>>) -> Result<TokenState> {
        match &self.credentials {
            Credentials::Token(tok) => Ok(TokenState {
                token: tok.clone(),
                obtained: Instant::now(),
                ttl: None,
                renewable: false,
            }),
            Credentials::AppRole {
                mount,
                role_id,
                secret_id,
            } => {
                if let Some(s) = stale.filter(|s| s.renewable) {
                    match renew_self(t, &s.token).await {
                        Ok(next) => return Ok(next),
                        Err(e) if e.retryable() => {
                            // Vault is briefly unavailable: keep using the
                            // old token while it is still valid.
                            if s.expires_at().is_some_and(|x| x > Instant::now()) {
                                tracing::debug!(
                                    "token renewal failed transiently; keeping the current token"
                                );
                                return Ok(TokenState {
                                    token: s.token.clone(),
                                    obtained: s.obtained,
                                    ttl: s.ttl,
                                    renewable: s.renewable,
                                });
                            }
                            return Err(e);
                        }
                        Err(_) => {
                            tracing::debug!("token renewal refused; logging in again");
                        }
                    }
                }
                login(t, mount, role_id, secret_id).await
            }
        }
    }
}

fn auth_state(body: &[u8], what: &str) -> Result<TokenState> {
    let env: AuthEnvelope = serde_json::from_slice(body).map_err(|_| {
        Error::new(
            ErrorCode::InvalidResponse,
            format!("Vault's {what} answer is not the expected JSON"),
        )
    })?;
    let auth = env.auth.ok_or_else(|| {
        Error::new(
            ErrorCode::InvalidResponse,
            format!("Vault's {what} answer has no auth block"),
        )
    })?;
    if auth.client_token.is_empty() {
        return Err(Error::new(
            ErrorCode::InvalidResponse,
            format!("Vault's {what} answer has an empty client_token"),
        ));
    }
    Ok(TokenState {
        // Secret::from(String) zeroizes the String's buffer.
        token: Secret::from(auth.client_token),
        obtained: Instant::now(),
        ttl: (auth.lease_duration > 0).then(|| Duration::from_secs(auth.lease_duration)),
        renewable: auth.renewable,
    })
}

async fn login(
    t: &Transport,
    mount: &str,
    role_id: &Secret,
    secret_id: &Secret,
) -> Result<TokenState> {
    let body = LoginBody {
        role_id: role_id.as_text()?,
        secret_id: secret_id.as_text()?,
    };
    let bytes = Zeroizing::new(
        serde_json::to_vec(&body).map_err(|_| Error::internal("cannot encode AppRole login"))?,
    );
    let resp = t
        .send(&Request::new(Method::POST, format!("auth/{mount}/login")).json(bytes))
        .await?;
    match resp.status {
        200 => auth_state(&resp.body, "AppRole login"),
        400 | 401 | 403 => {
            let e = status_error(&resp, "to the AppRole login");
            Err(
                Error::new(ErrorCode::Unauthenticated, e.message().to_string())
                    .with_provider("vault")
                    .with_hint("check VAULT_ROLE_ID and VAULT_SECRET_ID (or their _FILE variants)"),
            )
        }
        _ => Err(status_error(&resp, "to the AppRole login")),
    }
}

async fn renew_self(t: &Transport, token: &Secret) -> Result<TokenState> {
    let resp = t
        .send(
            &Request::new(Method::POST, "auth/token/renew-self")
                .token(token)
                .json(Zeroizing::new(b"{}".to_vec())),
        )
        .await?;
    match resp.status {
        200 => auth_state(&resp.body, "token renewal"),
        _ => Err(status_error(&resp, "to the token renewal")),
    }
}

/// `GET auth/token/lookup-self` with `token`. Only non-secret fields are
/// kept (the answer also carries the token itself as `id`).
pub(super) async fn lookup_self(t: &Transport, token: &Secret) -> Result<TokenInfo> {
    let resp = t
        .send(&Request::new(Method::GET, "auth/token/lookup-self").token(token))
        .await?;
    match resp.status {
        200 => {
            let env: LookupEnvelope = serde_json::from_slice(&resp.body).map_err(|_| {
                Error::new(
                    ErrorCode::InvalidResponse,
                    "Vault's lookup-self answer is not the expected JSON",
                )
            })?;
            env.data.ok_or_else(|| {
                Error::new(
                    ErrorCode::InvalidResponse,
                    "Vault's lookup-self answer has no data",
                )
            })
        }
        401 | 403 => {
            let e = status_error(&resp, "to the token lookup");
            Err(
                Error::new(ErrorCode::Unauthenticated, e.message().to_string())
                    .with_provider("vault")
                    .with_hint("the Vault token is wrong, expired or revoked"),
            )
        }
        _ => Err(status_error(&resp, "to the token lookup")),
    }
}
