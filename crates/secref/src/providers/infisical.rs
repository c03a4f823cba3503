//! The Infisical provider: `infisical://<projectId>/<environment>/<folder…>/<KEY>[?version=N]`.
//!
//! Wire protocol: Infisical's REST API as the `infisical-httpx-sdk` 1.1.0
//! speaks it (`GET /api/v3/secrets/raw[/{name}]`, universal-auth login), with
//! these improvements over the SDK:
//!
//! * names, folders and query values are percent-encoded;
//! * a universal-auth token is renewed *before* it expires (by `expiresIn`
//!   and the JWT's `exp`, whichever is earlier, minus a margin), a 401 causes
//!   exactly one re-login, and concurrent callers share one login;
//! * a batch of references in one folder is read with one list request;
//! * the base URL must be `https://` (plain `http://` only for loopback
//!   hosts), where the SDK accepts anything.
//!
//! # Configuration
//!
//! ```toml
//! [infisical]
//! url = "https://eu.infisical.com"   # else INFISICAL_URL, else https://us.infisical.com
//! client_id = "…"                    # universal auth (with client_secret), or
//! token = "…"                        # a ready access token
//! timeout_seconds = 30
//! refresh_margin_seconds = 60        # renew this long before expiry (default: min(60, lifetime / 3))
//! ca_cert = "ca.pem"                 # extra trusted CA
//! verify_tls = true                  # also INFISICAL_VERIFY_SSL
//! cli_config = true                  # fall back to the Infisical CLI's login
//! ```
//!
//! Credentials are found along a [`CredentialChain`] ([`default_chain`]; a
//! program may insert its own [`CredentialSource`] at any position, as the
//! SDK's `add_provider(provider, index)`), in the SDK's order: the table's explicit values,
//! then `INFISICAL_CLIENT_ID` + `INFISICAL_CLIENT_SECRET` (universal auth)
//! or `INFISICAL_TOKEN`, then the Infisical CLI's login
//! (`~/.infisical/infisical-config.json` with the `file` vault and the
//! encrypted `~/infisical-keyring/<email>`, whose own URL is used). Unlike
//! the SDK, setting only one of the client id / secret is a `config` error
//! rather than silently skipped, and a non-JWT token is accepted as opaque.

mod keyring;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine as _;
use futures::StreamExt;
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use serde::{Deserialize, Deserializer};
use url::Url;
use zeroize::Zeroizing;

use crate::config::{self, Config, Env};
use crate::credentials::{CredentialChain, CredentialField, CredentialSource};
use crate::error::{Error, ErrorCode, Result};
use crate::http::{self, ClientOptions};
use crate::provider::{BatchResult, Metadata, Provider, Resolved, Validation};
use crate::reference::{self, InfisicalRef, ParsedRef, RefKind, SecretRef};
use crate::secret::Secret;

/// Where Infisical Cloud (US) lives; the SDK's default.
pub const DEFAULT_URL: &str = "https://us.infisical.com";

/// Requests in flight at once for one batch.
const CONCURRENCY: usize = 8;

/// The longest refresh margin used by default.
const MAX_DEFAULT_MARGIN: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Settings and the credential chain
// ---------------------------------------------------------------------------

/// The `[infisical]` table of `secref.toml`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    url: Option<String>,
    // Credentials read from the file are wiped when the table is dropped.
    client_id: Option<Zeroizing<String>>,
    client_secret: Option<Zeroizing<String>>,
    token: Option<Zeroizing<String>>,
    timeout_seconds: Option<f64>,
    refresh_margin_seconds: Option<f64>,
    ca_cert: Option<PathBuf>,
    verify_tls: Option<bool>,
    cli_config: Option<bool>,
}

/// How the provider authenticates.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// Universal auth (machine identity): logs in and renews itself.
    Universal {
        /// The client id.
        client_id: Secret,
        /// The client secret.
        client_secret: Secret,
    },
    /// A ready access token; it cannot be renewed.
    Token(Secret),
}

/// What a link of the Infisical credential chain finds: credentials, and
/// the server they belong to when the link knows it (the CLI's login names
/// its own; the SDK's custom providers may set `url` too).
#[derive(Clone, Debug)]
pub struct Login {
    /// The credentials.
    pub credentials: Credentials,
    /// The API base URL these credentials are for, if not the configured one.
    pub url: Option<Url>,
}

impl Login {
    fn at_configured_url(credentials: Credentials) -> Login {
        Login {
            credentials,
            url: None,
        }
    }
}

/// The chain's first built-in link: `client_id` + `client_secret`, or
/// `token`, in the `[infisical]` table (named `explicit`).
#[derive(Debug)]
pub struct ExplicitSource;

impl CredentialSource<Login> for ExplicitSource {
    fn name(&self) -> &str {
        "explicit"
    }
    fn credentials(&self, cfg: &Config) -> Result<Option<Login>> {
        let table: Table = cfg.section("infisical")?.unwrap_or_default();
        Ok(explicit_credentials(&table)?.map(Login::at_configured_url))
    }
}

/// The second: `INFISICAL_CLIENT_ID` + `INFISICAL_CLIENT_SECRET`, else
/// `INFISICAL_TOKEN` (named `environment`).
#[derive(Debug)]
pub struct EnvironmentSource;

impl CredentialSource<Login> for EnvironmentSource {
    fn name(&self) -> &str {
        "environment"
    }
    fn credentials(&self, cfg: &Config) -> Result<Option<Login>> {
        Ok(env_credentials(&cfg.env)?.map(Login::at_configured_url))
    }
}

/// The third: the Infisical CLI's login, unless `cli_config = false`
/// (named `cli_config`). Its token comes with the server that issued it.
#[derive(Debug)]
pub struct CliConfigSource;

impl CredentialSource<Login> for CliConfigSource {
    fn name(&self) -> &str {
        "cli_config"
    }
    fn credentials(&self, cfg: &Config) -> Result<Option<Login>> {
        let table: Table = cfg.section("infisical")?.unwrap_or_default();
        if !table.cli_config.unwrap_or(true) {
            return Ok(None);
        }
        Ok(cli_credentials(&cfg.env)?.map(|(credentials, url)| Login {
            credentials,
            url: Some(url),
        }))
    }
}

/// The SDK's chain: [`ExplicitSource`], [`EnvironmentSource`],
/// [`CliConfigSource`]. Insert your own link with
/// [`CredentialChain::insert`] and build with
/// [`InfisicalSettings::with_chain`].
pub fn default_chain() -> CredentialChain<Login> {
    let mut chain = CredentialChain::new();
    chain
        .push(ExplicitSource)
        .push(EnvironmentSource)
        .push(CliConfigSource);
    chain
}

/// Where Infisical credentials are read ([`crate::credentials`]); each may
/// be a reference.
fn credential_fields(_cfg: &Config) -> Vec<CredentialField> {
    let key = |name| CredentialField::Key {
        name,
        reference_only: false,
    };
    vec![
        key("client_id"),
        key("client_secret"),
        key("token"),
        CredentialField::Env("INFISICAL_CLIENT_ID".into()),
        CredentialField::Env("INFISICAL_CLIENT_SECRET".into()),
        CredentialField::Env("INFISICAL_TOKEN".into()),
    ]
}

/// Validated provider settings.
#[derive(Debug)]
pub struct InfisicalSettings {
    /// The API base URL, without a trailing slash.
    pub url: Url,
    /// The credentials and the name of the chain link that found them, or
    /// why none could be found (reported on first use, so other schemes
    /// keep working).
    pub credentials: std::result::Result<(Credentials, String), Error>,
    /// The request timeout.
    pub timeout: Duration,
    /// Renew this long before expiry (default: min(60 s, lifetime / 3)).
    pub refresh_margin: Option<Duration>,
    ca_cert: Option<PathBuf>,
    verify_tls: bool,
}

impl InfisicalSettings {
    /// Reads `cfg.infisical` and `cfg.env` with the [`default_chain`].
    /// Invalid values are `config` errors; missing credentials are not (they
    /// fail each read instead).
    pub fn from_config(cfg: &Config) -> Result<InfisicalSettings> {
        InfisicalSettings::with_chain(cfg, &default_chain())
    }

    /// Like [`InfisicalSettings::from_config`], with credentials from
    /// `chain` (e.g. the default chain with a link of your own inserted).
    pub fn with_chain(cfg: &Config, chain: &CredentialChain<Login>) -> Result<InfisicalSettings> {
        let table: Table = cfg.section("infisical")?.unwrap_or_default();
        let env = &cfg.env;
        let url_raw = table
            .url
            .as_deref()
            .or_else(|| env.get("INFISICAL_URL"))
            .unwrap_or(DEFAULT_URL);
        let mut url = config::validate_base_url("INFISICAL_URL", url_raw)?;
        let timeout = match table.timeout_seconds {
            Some(s) => config::check_timeout("infisical.timeout_seconds", s)?,
            None => Duration::from_secs(30),
        };
        let refresh_margin = match table.refresh_margin_seconds {
            Some(s) if s.is_finite() && (0.0..=3600.0).contains(&s) => {
                Some(Duration::from_secs_f64(s))
            }
            Some(_) => {
                return Err(Error::config(
                    "infisical.refresh_margin_seconds must be between 0 and 3600",
                ))
            }
            None => None,
        };
        let verify_tls = match (table.verify_tls, env.get("INFISICAL_VERIFY_SSL")) {
            (Some(v), _) => v,
            (None, Some(raw)) => config::parse_bool("INFISICAL_VERIFY_SSL", raw)?,
            (None, None) => true,
        };
        // A wrong setting is a `config` error now; a link that fails
        // otherwise (e.g. the CLI keyring cannot be decrypted) fails each
        // read, so other schemes keep working.
        let credentials = match chain.find(cfg) {
            Ok(Some((login, source))) => {
                if let Some(own) = login.url {
                    url = own;
                }
                Ok((login.credentials, source))
            }
            Ok(None) => Err(no_credentials()),
            Err(e) if e.code() == ErrorCode::Config => return Err(e),
            Err(e) => Err(e),
        };
        Ok(InfisicalSettings {
            url,
            credentials,
            timeout,
            refresh_margin,
            ca_cert: table.ca_cert,
            verify_tls,
        })
    }
}

fn no_credentials() -> Error {
    Error::new(
        ErrorCode::Unauthenticated,
        "No valid Infisical credentials found in the provider chain.",
    )
    .with_provider("infisical")
    .with_hint(
        "set INFISICAL_CLIENT_ID and INFISICAL_CLIENT_SECRET, or INFISICAL_TOKEN, or run `infisical login`",
    )
}

fn non_empty(v: &Option<Zeroizing<String>>) -> Option<&str> {
    v.as_deref().map(String::as_str).filter(|s| !s.is_empty())
}

fn explicit_credentials(t: &Table) -> Result<Option<Credentials>> {
    let (token, id, secret) = (
        non_empty(&t.token),
        non_empty(&t.client_id),
        non_empty(&t.client_secret),
    );
    match (token, id, secret) {
        (None, None, None) => Ok(None),
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(Error::config(
            "[infisical]: You may specify either a token or a Client ID and Secret, not both.",
        )),
        (Some(tok), None, None) => Ok(Some(Credentials::Token(Secret::from(tok)))),
        (None, Some(id), Some(secret)) => Ok(Some(Credentials::Universal {
            client_id: Secret::from(id),
            client_secret: Secret::from(secret),
        })),
        (None, _, _) => Err(Error::config(
            "[infisical]: Both Client ID and Secret must be provided.",
        )),
    }
}

fn env_credentials(env: &Env) -> Result<Option<Credentials>> {
    match (
        env.get("INFISICAL_CLIENT_ID"),
        env.get("INFISICAL_CLIENT_SECRET"),
    ) {
        (Some(id), Some(secret)) => Ok(Some(Credentials::Universal {
            client_id: Secret::from(id),
            client_secret: Secret::from(secret),
        })),
        (Some(_), None) | (None, Some(_)) => Err(Error::config(
            "Both INFISICAL_CLIENT_ID and INFISICAL_CLIENT_SECRET must be set for universal auth",
        )),
        (None, None) => Ok(env
            .get("INFISICAL_TOKEN")
            .map(|t| Credentials::Token(Secret::from(t)))),
    }
}

fn home_dir(env: &Env) -> Option<PathBuf> {
    env.get("HOME").map(PathBuf::from).or_else(dirs::home_dir)
}

fn cli_config_path(env: &Env) -> Option<PathBuf> {
    Some(
        home_dir(env)?
            .join(".infisical")
            .join("infisical-config.json"),
    )
}

/// The Infisical CLI's login, if it used the `file` vault.
fn cli_credentials(env: &Env) -> Result<Option<(Credentials, Url)>> {
    let Some(home) = home_dir(env) else {
        return Ok(None);
    };
    match keyring::load_cli_login(&home)? {
        Some((token, domain)) => {
            let url = config::validate_base_url("LoggedInUserDomain", &domain)?;
            Ok(Some((Credentials::Token(token), url)))
        }
        None => Ok(None),
    }
}

// ---------------------------------------------------------------------------
// Tokens: login, renewal before expiry, single flight
// ---------------------------------------------------------------------------

struct TokenState {
    token: Secret,
    /// When the token stops working, if known.
    expires_at: Option<SystemTime>,
    /// How long it lived when obtained (for the default margin).
    lifetime: Option<Duration>,
}

impl crate::auth::TokenState for TokenState {
    fn token(&self) -> &Secret {
        &self.token
    }
}

struct TokenManager {
    credentials: Credentials,
    margin: Option<Duration>,
    /// One login at a time: concurrent callers wait and reuse its token.
    cell: crate::auth::TokenCell<TokenState>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LoginAnswer {
    #[serde(deserialize_with = "de_secret")]
    access_token: Secret,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl TokenManager {
    fn new(credentials: Credentials, margin: Option<Duration>) -> Self {
        TokenManager {
            credentials,
            margin,
            cell: crate::auth::TokenCell::new(),
        }
    }

    fn can_relogin(&self) -> bool {
        matches!(self.credentials, Credentials::Universal { .. })
    }

    async fn token(&self, t: &Transport) -> Result<Secret> {
        let state = self
            .cell
            .get(
                |s| self.is_fresh(s),
                |_stale| async {
                    match &self.credentials {
                        Credentials::Token(tok) => static_token(tok),
                        Credentials::Universal {
                            client_id,
                            client_secret,
                        } => login(t, client_id, client_secret).await,
                    }
                },
            )
            .await?;
        Ok(state.token.clone())
    }

    /// Forgets `token` if it is still current (the server refused it).
    fn invalidate(&self, token: &Secret) {
        self.cell.invalidate(token);
    }

    fn is_fresh(&self, cur: &TokenState) -> bool {
        let Some(exp) = cur.expires_at else {
            return true;
        };
        let margin = match (&self.credentials, self.margin, cur.lifetime) {
            // A static token cannot be renewed: use it until it expires.
            (Credentials::Token(_), _, _) => Duration::ZERO,
            // A margin as long as the token's life would log in on every
            // call: never wait less than half of it.
            (_, Some(m), Some(life)) => m.min(life / 2),
            (_, Some(m), None) => m,
            (_, None, Some(life)) => (life / 3).min(MAX_DEFAULT_MARGIN),
            (_, None, None) => MAX_DEFAULT_MARGIN,
        };
        SystemTime::now() + margin < exp
    }
}

fn static_token(tok: &Secret) -> Result<TokenState> {
    let claims = jwt_claims(tok);
    let expires_at = claims.as_ref().and_then(|c| c.exp).map(unix_time);
    if expires_at.is_some_and(|e| e <= SystemTime::now()) {
        return Err(
            Error::new(ErrorCode::Unauthenticated, "The credentials have expired.")
                .with_provider("infisical")
                .with_hint("get a new Infisical token (or run `infisical login` again)"),
        );
    }
    Ok(TokenState {
        token: tok.clone(),
        expires_at,
        lifetime: None,
    })
}

async fn login(t: &Transport, client_id: &Secret, client_secret: &Secret) -> Result<TokenState> {
    let body = Zeroizing::new(
        serde_json::to_vec(&serde_json::json!({
            "clientId": client_id.as_text()?,
            "clientSecret": client_secret.as_text()?,
        }))
        .map_err(|_| Error::internal("cannot encode the Infisical login"))?,
    );
    let url = t.endpoint(&["api", "v1", "auth", "universal-auth", "login"], &[])?;
    tracing::debug!("Infisical universal-auth login");
    let obtained = SystemTime::now();
    let reply = t.send(reqwest::Method::POST, url, None, Some(body)).await?;
    if !(200..300).contains(&reply.status) {
        let e = status_error(&reply, "the universal-auth login");
        return Err(match e.code() {
            ErrorCode::NotFound | ErrorCode::PermissionDenied | ErrorCode::Usage => {
                retag(e, ErrorCode::Unauthenticated)
            }
            _ => e,
        }
        .with_hint("check the Infisical client id and secret"));
    }
    let answer: LoginAnswer = serde_json::from_slice(&reply.body).map_err(|_| {
        Error::new(
            ErrorCode::InvalidResponse,
            "Infisical's login answer has no accessToken",
        )
        .with_provider("infisical")
    })?;
    let by_ttl = answer
        .expires_in
        .filter(|s| *s > 0)
        .map(|s| obtained + Duration::from_secs(s));
    let by_jwt = jwt_claims(&answer.access_token)
        .and_then(|c| c.exp)
        .map(unix_time);
    let expires_at = match (by_ttl, by_jwt) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Ok(TokenState {
        token: answer.access_token,
        expires_at,
        lifetime: expires_at.and_then(|e| e.duration_since(obtained).ok()),
    })
}

/// The JWT claims we use. The signature is not checked: the token is the
/// server's business; we only read when it expires.
#[derive(Deserialize)]
struct Claims {
    exp: Option<f64>,
}

fn jwt_claims(token: &Secret) -> Option<Claims> {
    let text = token.as_text().ok()?;
    let mut parts = text.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn unix_time(secs: f64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs_f64(secs.max(0.0))
}

// ---------------------------------------------------------------------------
// Transport and errors
// ---------------------------------------------------------------------------

use crate::http::Response as Reply;

struct Transport {
    client: http::HttpClient,
    base: Url,
}

impl Transport {
    /// `base` + percent-encoded path segments + query pairs.
    fn endpoint(&self, segments: &[&str], query: &[(&str, &str)]) -> Result<Url> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|_| Error::config("INFISICAL_URL cannot be a base URL"))?
            .pop_if_empty()
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: Url,
        token: Option<&Secret>,
        body: Option<Zeroizing<Vec<u8>>>,
    ) -> Result<Reply> {
        tracing::trace!(method = %method, path = url.path(), "Infisical request");
        let mut req = self
            .client
            .request(method, url)
            .header(ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(tok) = token {
            let mut bearer = Zeroizing::new(b"Bearer ".to_vec());
            bearer.extend_from_slice(tok.expose_bytes());
            let mut v = HeaderValue::from_bytes(&bearer).map_err(|_| {
                Error::config("the Infisical token has characters not allowed in a header")
            })?;
            v.set_sensitive(true);
            req = req.header(AUTHORIZATION, v);
        }
        if let Some(b) = body {
            req = req
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(b.to_vec());
        }
        self.client.send(req).await
    }
}

/// Infisical's error body: `{"reqId","statusCode","message","error"}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody {
    req_id: Option<String>,
    error: Option<String>,
}

/// Maps a non-2xx answer ([`http::status_code`]). Infisical's `message` is
/// not copied: only the status, its `error` name and `reqId`.
fn status_error(reply: &Reply, what: &str) -> Error {
    let mut e = reply.status_error(
        "infisical",
        format!("Infisical answered HTTP {} to {what}", reply.status),
    );
    if let Ok(b) = serde_json::from_slice::<ErrorBody>(&reply.body) {
        if let Some(id) = b.req_id.filter(|s| is_safe_label(s)) {
            e = e.with_request_id(id);
        }
        if let Some(name) = b.error.filter(|s| is_safe_label(s)) {
            e = e.with_remote_code(name);
        }
    }
    e
}

/// Request ids and error names are short identifiers; anything else is
/// dropped rather than echoed.
fn is_safe_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

fn retag(e: Error, code: ErrorCode) -> Error {
    let mut n = Error::new(code, e.message().to_string()).with_provider("infisical");
    if let Some(id) = e.request_id() {
        n = n.with_request_id(id);
    }
    if let Some(c) = e.remote_code() {
        n = n.with_remote_code(c);
    }
    n
}

// ---------------------------------------------------------------------------
// Wire shapes
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireSecret {
    id: String,
    version: u64,
    #[serde(rename = "type", default)]
    secret_type: Option<String>,
    secret_key: String,
    #[serde(deserialize_with = "de_secret")]
    secret_value: Secret,
    #[serde(default)]
    secret_value_hidden: bool,
    #[serde(default)]
    secret_comment: Option<String>,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    updated_at: Option<String>,
    #[serde(default)]
    tags: Option<Vec<WireTag>>,
    #[serde(default)]
    secret_path: Option<String>,
}

#[derive(Deserialize)]
struct WireTag {
    slug: String,
}

#[derive(Deserialize)]
pub(crate) struct OneSecret {
    secret: WireSecret,
}

#[derive(Deserialize)]
pub(crate) struct SecretList {
    secrets: Vec<WireSecret>,
}

fn de_secret<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Secret, D::Error> {
    // Secret::from(String) wipes the String's buffer.
    Ok(Secret::from(String::deserialize(d)?))
}

fn invalid_json(what: &str) -> Error {
    Error::new(
        ErrorCode::InvalidResponse,
        format!("Infisical's answer to {what} is not the expected JSON"),
    )
    .with_provider("infisical")
}

fn resolved_from(s: WireSecret) -> Result<Resolved> {
    if s.secret_value_hidden {
        return Err(Error::new(
            ErrorCode::PermissionDenied,
            "Infisical hides this secret's value from this identity",
        )
        .with_provider("infisical"));
    }
    Ok(Resolved::new(s.secret_value).with_version(s.version.to_string()))
}

// ---------------------------------------------------------------------------
// The provider
// ---------------------------------------------------------------------------

/// Reads secrets from Infisical.
pub struct InfisicalProvider {
    name: String,
    transport: Transport,
    auth: std::result::Result<TokenManager, Error>,
    source: Option<String>,
}

impl std::fmt::Debug for InfisicalProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InfisicalProvider")
            .field("name", &self.name)
            .field("url", &self.transport.base.as_str())
            .field("credential_source", &self.source)
            .finish_non_exhaustive()
    }
}

impl InfisicalProvider {
    /// The provider when `cfg` configures Infisical: an `[infisical]` table,
    /// an `INFISICAL_URL` / `INFISICAL_CLIENT_ID` / `INFISICAL_CLIENT_SECRET`
    /// / `INFISICAL_TOKEN` variable, or an Infisical CLI config file.
    pub fn configured(cfg: &Config) -> Result<Option<InfisicalProvider>> {
        let by_env = [
            "INFISICAL_URL",
            "INFISICAL_CLIENT_ID",
            "INFISICAL_CLIENT_SECRET",
            "INFISICAL_TOKEN",
        ]
        .iter()
        .any(|k| cfg.env.get(k).is_some());
        let by_cli = cli_config_path(&cfg.env).is_some_and(|p| p.is_file());
        if !cfg.has_section("infisical") && !by_env && !by_cli {
            return Ok(None);
        }
        Ok(Some(InfisicalProvider::new(
            InfisicalSettings::from_config(cfg)?,
        )?))
    }

    /// A provider from validated settings.
    pub fn new(settings: InfisicalSettings) -> Result<InfisicalProvider> {
        let mut opts = ClientOptions::default()
            .timeout(settings.timeout)
            .danger_accept_invalid_certs(!settings.verify_tls);
        if let Some(ca) = &settings.ca_cert {
            opts = opts.ca_cert_file(ca)?;
        }
        let (auth, source) = match settings.credentials {
            Ok((c, src)) => (Ok(TokenManager::new(c, settings.refresh_margin)), Some(src)),
            Err(e) => (Err(e), None),
        };
        Ok(InfisicalProvider {
            name: "infisical".to_string(),
            transport: Transport {
                client: opts.build_for("infisical")?,
                base: settings.url,
            },
            auth,
            source,
        })
    }

    /// The name of the chain link the credentials came from (`explicit`,
    /// `environment`, `cli_config`, or a user-added link's), if any.
    pub fn credential_source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    fn auth(&self) -> Result<&TokenManager> {
        self.auth.as_ref().map_err(Clone::clone)
    }

    /// GET with the current token; one re-login and retry on a 401.
    async fn get(&self, url: Url) -> Result<Reply> {
        let auth = self.auth()?;
        let token = auth.token(&self.transport).await?;
        let reply = self
            .transport
            .send(reqwest::Method::GET, url.clone(), Some(&token), None)
            .await?;
        if reply.status == 401 && auth.can_relogin() {
            tracing::debug!("Infisical refused the token; logging in again");
            auth.invalidate(&token);
            let token = auth.token(&self.transport).await?;
            return self
                .transport
                .send(reqwest::Method::GET, url, Some(&token), None)
                .await;
        }
        Ok(reply)
    }

    /// `GET /api/v3/secrets/raw/{key}` for one reference.
    async fn read_one(&self, r: &InfisicalRef, view_value: bool) -> Result<WireSecret> {
        let version = r.version.map(|v| v.to_string());
        let mut query = vec![
            ("workspaceId", r.project_id.as_str()),
            ("environment", r.environment.as_str()),
            ("secretPath", r.secret_path.as_str()),
            ("viewSecretValue", if view_value { "true" } else { "false" }),
        ];
        if let Some(v) = &version {
            query.push(("version", v));
        }
        let url = self
            .transport
            .endpoint(&["api", "v3", "secrets", "raw", &r.key], &query)?;
        let reply = self.get(url).await?;
        if !(200..300).contains(&reply.status) {
            return Err(status_error(&reply, "a secret read"));
        }
        let one: OneSecret =
            serde_json::from_slice(&reply.body).map_err(|_| invalid_json("a secret read"))?;
        Ok(one.secret)
    }

    /// `GET /api/v3/secrets/raw` for one folder: its secrets by key
    /// (shared secrets win over personal ones with the same key).
    async fn list_folder(
        &self,
        project: &str,
        environment: &str,
        path: &str,
    ) -> Result<BTreeMap<String, WireSecret>> {
        let url = self.transport.endpoint(
            &["api", "v3", "secrets", "raw"],
            &[
                ("workspaceId", project),
                ("environment", environment),
                ("secretPath", path),
                ("recursive", "false"),
                ("viewSecretValue", "true"),
            ],
        )?;
        let reply = self.get(url).await?;
        if !(200..300).contains(&reply.status) {
            return Err(status_error(&reply, "a folder list"));
        }
        let list: SecretList =
            serde_json::from_slice(&reply.body).map_err(|_| invalid_json("a folder list"))?;
        let mut by_key = BTreeMap::new();
        for s in list.secrets {
            // `recursive=false`, but a server may still say where each lives.
            if s.secret_path.as_deref().is_some_and(|p| p != path) {
                continue;
            }
            let shared = s.secret_type.as_deref() != Some("personal");
            if shared || !by_key.contains_key(&s.secret_key) {
                by_key.insert(s.secret_key.clone(), s);
            }
        }
        Ok(by_key)
    }

    /// One list request answers every reference of one folder; keys the
    /// folder does not have are `not_found`.
    async fn resolve_group(
        &self,
        refs: &[SecretRef],
        project: &str,
        environment: &str,
        path: &str,
        idx: Vec<usize>,
    ) -> Result<Vec<(usize, Result<Resolved>)>> {
        let mut listed = match self.list_folder(project, environment, path).await {
            Ok(l) => l,
            // A folder too big to list within the body cap: its references
            // are read one by one instead (each answer is small).
            Err(err) if err.code() == ErrorCode::TooLarge => {
                return self.resolve_singly(refs, idx).await;
            }
            Err(err) if is_request_level(&err) => return Err(err),
            Err(err) => return Ok(idx.into_iter().map(|i| (i, Err(err.clone()))).collect()),
        };
        Ok(idx
            .into_iter()
            .map(|i| {
                let res = match infisical_ref(&refs[i]).map(|r| listed.remove(&r.key)) {
                    Ok(Some(s)) => resolved_from(s),
                    Ok(None) => Err(Error::new(
                        ErrorCode::NotFound,
                        "Infisical has no such secret in this folder",
                    )
                    .with_provider("infisical")),
                    Err(e) => Err(e),
                };
                (i, res)
            })
            .collect())
    }

    /// One read per reference (pinned versions, lone references, folders
    /// too big to list), `CONCURRENCY` at a time.
    async fn resolve_singly(
        &self,
        refs: &[SecretRef],
        idx: Vec<usize>,
    ) -> Result<Vec<(usize, Result<Resolved>)>> {
        let reads = idx.into_iter().map(|i| async move {
            let ir = infisical_ref(&refs[i])?;
            match self.read_one(ir, true).await {
                Err(e) if is_request_level(&e) => Err(e),
                res => Ok((i, res.and_then(resolved_from))),
            }
        });
        futures::stream::iter(reads)
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }
}

fn infisical_ref(r: &SecretRef) -> Result<&InfisicalRef> {
    match r.kind() {
        RefKind::Infisical(i) => Ok(i),
        _ => Err(Error::new(
            ErrorCode::UnsupportedEngine,
            "the Infisical provider reads only infisical:// references",
        )
        .with_reference(r.to_canonical())),
    }
}

/// Request-level failures: the credentials or the connection, which no
/// other item of the batch could escape either.
fn is_request_level(e: &Error) -> bool {
    matches!(
        e.code(),
        ErrorCode::Unauthenticated | ErrorCode::Timeout | ErrorCode::Config
    ) || (e.code() == ErrorCode::BackendUnavailable && e.request_id().is_none())
}

/// Boxed so the batch's futures have one nameable lifetime (async_trait's
/// `Send` check cannot infer it through stream combinators).
type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

#[async_trait]
impl Provider for InfisicalProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn families(&self) -> &[&'static str] {
        &["infisical"]
    }

    fn capabilities(&self) -> crate::provider::Capabilities {
        SPEC.capabilities
    }

    /// A token (a universal-auth login when none is cached), then one
    /// authenticated `GET /api/v1/folders` naming no project: Infisical
    /// checks the token before the query, so a 400 (the missing project)
    /// proves the server is reachable and takes the token without reading
    /// any project's data; a 401 or 403 is refused credentials.
    async fn health(&self) -> Result<()> {
        let url = self.transport.endpoint(&["api", "v1", "folders"], &[])?;
        let reply = self.get(url).await?;
        if reply.is_success() || reply.status == 400 {
            return Ok(());
        }
        Err(status_error(&reply, "a health check"))
    }

    /// `infisical://<project>/<environment>[/<folder…>]`: every secret of
    /// that folder (one list request; the values are dropped).
    async fn list(&self, _scheme: &str, prefix: &str) -> Result<Vec<crate::provider::Listed>> {
        self.auth()?;
        let segs: Vec<&str> = prefix.trim_end_matches('/').split('/').collect();
        let [project, environment, folder @ ..] = segs.as_slice() else {
            return Err(Error::usage(
                "an infisical:// prefix names a project and an environment",
            )
            .with_hint("infisical://<project>/<environment>[/<folder…>]"));
        };
        if project.is_empty() || environment.is_empty() {
            return Err(Error::usage(
                "an infisical:// prefix names a project and an environment",
            )
            .with_hint("infisical://<project>/<environment>[/<folder…>]"));
        }
        let path = format!("/{}", folder.join("/"));
        let listed = self.list_folder(project, environment, &path).await?;
        let base = std::iter::once(*project)
            .chain(std::iter::once(*environment))
            .chain(folder.iter().copied())
            .collect::<Vec<_>>()
            .join("/");
        listed
            .into_keys()
            .map(|key| {
                let reference = SecretRef::parse(format!("infisical://{base}/{key}"))?;
                Ok(crate::provider::Listed { key, reference })
            })
            .collect()
    }

    async fn resolve_many(&self, refs: &[SecretRef]) -> BatchResult<Resolved> {
        self.auth()?;
        let mut out: Vec<Option<Result<Resolved>>> = refs.iter().map(|_| None).collect();
        // Unpinned references grouped by folder; pinned ones read singly.
        let mut groups: BTreeMap<(&str, &str, &str), Vec<usize>> = BTreeMap::new();
        let mut singles = Vec::new();
        for (i, r) in refs.iter().enumerate() {
            match infisical_ref(r) {
                Err(e) => out[i] = Some(Err(e)),
                Ok(ir) if ir.version.is_some() => singles.push(i),
                Ok(ir) => groups
                    .entry((&ir.project_id, &ir.environment, &ir.secret_path))
                    .or_default()
                    .push(i),
            }
        }
        // One list request per folder with ≥2 references; the rest read singly.
        let mut jobs: Vec<BoxFuture<'_, Result<Vec<(usize, Result<Resolved>)>>>> = Vec::new();
        for ((p, e, path), idx) in groups {
            if idx.len() >= 2 {
                jobs.push(Box::pin(self.resolve_group(refs, p, e, path, idx)));
            } else {
                singles.extend(idx);
            }
        }
        if !singles.is_empty() {
            jobs.push(Box::pin(self.resolve_singly(refs, singles)));
        }
        let mut answers = futures::stream::iter(jobs).buffer_unordered(CONCURRENCY);
        while let Some(batch) = answers.next().await {
            for (i, res) in batch? {
                out[i] = Some(res);
            }
        }
        drop(answers);
        Ok(out
            .into_iter()
            .zip(refs)
            .map(|(res, r)| {
                res.unwrap_or_else(|| Err(Error::internal("unanswered reference")))
                    .map_err(|e| e.with_reference(r.to_canonical()))
            })
            .collect())
    }

    async fn metadata(&self, refs: &[SecretRef]) -> BatchResult<Metadata> {
        self.auth()?;
        let jobs: Vec<BoxFuture<'_, Result<Metadata>>> = refs
            .iter()
            .map(|r| -> BoxFuture<'_, Result<Metadata>> {
                Box::pin(async move {
                    let ir = infisical_ref(r)?;
                    let s = self
                        .read_one(ir, false)
                        .await
                        .map_err(|e| e.with_reference(r.to_canonical()))?;
                    let mut custom = BTreeMap::new();
                    if let Some(t) = &s.secret_type {
                        custom.insert("type".to_string(), t.clone());
                    }
                    custom.insert("project_id".to_string(), ir.project_id.clone());
                    custom.insert("environment".to_string(), ir.environment.clone());
                    custom.insert("secret_path".to_string(), ir.secret_path.clone());
                    Ok(Metadata {
                        reference: r.to_canonical().to_string(),
                        secret_id: Some(s.id),
                        current_version: Some(s.version.to_string()),
                        created_at: s.created_at,
                        updated_at: s.updated_at,
                        description: s.secret_comment.filter(|c| !c.is_empty()),
                        tags: s
                            .tags
                            .unwrap_or_default()
                            .into_iter()
                            .map(|t| t.slug)
                            .collect(),
                        custom,
                        ..Metadata::default()
                    })
                })
            })
            .collect();
        let answers = futures::stream::iter(jobs)
            .buffered(CONCURRENCY)
            .collect::<Vec<Result<Metadata>>>()
            .await;
        request_level_first(answers)
    }

    async fn validate(&self, refs: &[SecretRef]) -> BatchResult<Validation> {
        self.auth()?;
        let jobs: Vec<BoxFuture<'_, Result<Validation>>> = refs
            .iter()
            .map(|r| -> BoxFuture<'_, Result<Validation>> {
                Box::pin(async move {
                    let ir = infisical_ref(r)?;
                    match self.read_one(ir, false).await {
                        Ok(s) => Ok(Validation {
                            valid: true,
                            exists: Some(true),
                            namespace: Some(format!("{}/{}", ir.project_id, ir.environment)),
                            secret_type: s.secret_type,
                        }),
                        Err(e) if e.code() == ErrorCode::NotFound => Ok(Validation {
                            valid: true,
                            exists: Some(false),
                            namespace: Some(format!("{}/{}", ir.project_id, ir.environment)),
                            secret_type: None,
                        }),
                        Err(e) => Err(e.with_reference(r.to_canonical())),
                    }
                })
            })
            .collect();
        let answers = futures::stream::iter(jobs)
            .buffered(CONCURRENCY)
            .collect::<Vec<Result<Validation>>>()
            .await;
        request_level_first(answers)
    }
}

fn request_level_first<T>(answers: Vec<Result<T>>) -> BatchResult<T> {
    if let Some(Err(e)) = answers
        .iter()
        .find(|a| matches!(a, Err(e) if is_request_level(e)))
    {
        return Err(e.clone());
    }
    Ok(answers)
}

/// `infisical://<projectId>/<environment>/<folder…>/<KEY>[?version=N]`.
pub(crate) const SPEC: crate::registry::ProviderSpec = crate::registry::ProviderSpec {
    name: "infisical",
    schemes: &["infisical"],
    feature: Some("infisical"),
    host_local: false,
    config_section: Some("infisical"),
    env_vars: &[
        "INFISICAL_URL",
        "INFISICAL_CLIENT_ID",
        "INFISICAL_CLIENT_SECRET",
        "INFISICAL_TOKEN",
    ],
    credential_env_vars: &["INFISICAL_CLIENT_SECRET", "INFISICAL_TOKEN"],
    capabilities: crate::provider::Capabilities {
        versions: true,
        list: true,
        ..crate::provider::Capabilities::NONE
    },
    parse: |input| parse_infisical(input.rest),
    parts: |r| {
        let RefKind::Infisical(i) = r.kind() else {
            return Vec::new();
        };
        let mut v = vec![
            ("project_id", i.project_id.as_str().into()),
            ("environment", i.environment.as_str().into()),
            ("secret_path", i.secret_path.as_str().into()),
            ("key", i.key.as_str().into()),
        ];
        if let Some(n) = i.version {
            v.push(("version", n.into()));
        }
        v
    },
    credentials: credential_fields,
    build: |cfg| {
        Ok(InfisicalProvider::configured(cfg)?
            .map(|p| std::sync::Arc::new(p) as std::sync::Arc<dyn Provider>))
    },
};

pub(crate) fn parse_infisical(rest: &str) -> Result<ParsedRef> {
    let (body, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    if body.contains('#') {
        return Err(reference::err(
            ErrorCode::InvalidReference,
            "infisical:// references take no #fragment",
        ));
    }
    let version = reference::parse_version_query(query)?;
    let segs: Vec<&str> = body.split('/').collect();
    if segs.len() < 3 {
        return Err(reference::err(
            ErrorCode::InvalidReference,
            "an Infisical reference needs a project, an environment and a key",
        )
        .with_hint("infisical://<projectId>/<environment>/<folder…>/<KEY>"));
    }
    reference::check_segments("infisical://", segs.iter().copied())?;
    let folders = &segs[2..segs.len() - 1];
    let r = InfisicalRef {
        project_id: segs[0].to_string(),
        environment: segs[1].to_string(),
        secret_path: format!("/{}", folders.join("/")),
        key: segs[segs.len() - 1].to_string(),
        version,
    };
    let mut canonical = format!("infisical://{body}");
    if let Some(v) = version {
        canonical.push_str(&format!("?version={v}"));
    }
    Ok(ParsedRef::new(RefKind::Infisical(r), canonical))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(toml_text: &str, env: &[(&str, &str)]) -> Config {
        let mut c = Config::from_toml_str(toml_text).unwrap();
        let mut pairs: Vec<(String, String)> = vec![("HOME".into(), "/nonexistent-home".into())];
        pairs.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        c.env = Env::from_pairs(pairs);
        c
    }

    #[test]
    fn chain_order_and_validation() {
        let s = InfisicalSettings::from_config(&cfg(
            "[infisical]\nclient_id = 'a'\nclient_secret = 'b'",
            &[("INFISICAL_TOKEN", "t")],
        ))
        .unwrap();
        assert!(matches!(
            s.credentials,
            Ok((Credentials::Universal { .. }, ref src)) if src == "explicit"
        ));
        let s = InfisicalSettings::from_config(&cfg(
            "",
            &[
                ("INFISICAL_TOKEN", "t"),
                ("INFISICAL_CLIENT_ID", "a"),
                ("INFISICAL_CLIENT_SECRET", "b"),
            ],
        ))
        .unwrap();
        assert!(matches!(
            s.credentials,
            Ok((Credentials::Universal { .. }, ref src)) if src == "environment"
        ));
        let e =
            InfisicalSettings::from_config(&cfg("[infisical]\ntoken = 't'\nclient_id = 'a'", &[]))
                .unwrap_err();
        assert_eq!(e.code(), ErrorCode::Config);
        assert!(e.message().contains("not both"));
        let e =
            InfisicalSettings::from_config(&cfg("[infisical]\nclient_id = 'a'", &[])).unwrap_err();
        assert!(e.message().contains("Both Client ID and Secret"));
        let s = InfisicalSettings::from_config(&cfg("[infisical]", &[])).unwrap();
        assert_eq!(
            s.credentials.unwrap_err().code(),
            ErrorCode::Unauthenticated
        );
        let e = InfisicalSettings::from_config(&cfg("[infisical]\nnope = 1", &[])).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Config);
    }

    /// A user's link, inserted first, wins over the table; appended last, it
    /// is used only when no built-in link has credentials.
    #[test]
    fn a_user_link_goes_where_it_is_inserted() {
        struct Vaulted;
        impl CredentialSource<Login> for Vaulted {
            fn name(&self) -> &str {
                "vaulted"
            }
            fn credentials(&self, _cfg: &Config) -> Result<Option<Login>> {
                Ok(Some(Login {
                    credentials: Credentials::Token(Secret::from("user-token")),
                    url: Some(Url::parse("https://eu.infisical.com").unwrap()),
                }))
            }
        }
        assert_eq!(
            default_chain().names(),
            ["explicit", "environment", "cli_config"]
        );
        let c = cfg("[infisical]
token = 't'", &[]);
        let mut first = default_chain();
        first.insert(0, Vaulted);
        let s = InfisicalSettings::with_chain(&c, &first).unwrap();
        assert_eq!(s.credentials.as_ref().unwrap().1, "vaulted");
        assert_eq!(s.url.as_str(), "https://eu.infisical.com/");
        let mut last = default_chain();
        last.push(Vaulted);
        let s = InfisicalSettings::with_chain(&c, &last).unwrap();
        assert_eq!(s.credentials.as_ref().unwrap().1, "explicit");
        let s = InfisicalSettings::with_chain(&cfg("", &[]), &last).unwrap();
        assert_eq!(s.credentials.as_ref().unwrap().1, "vaulted");
    }

    #[test]
    fn base_url_rules() {
        let s = InfisicalSettings::from_config(&cfg("", &[("INFISICAL_TOKEN", "t")])).unwrap();
        assert_eq!(s.url.as_str(), "https://us.infisical.com/");
        let e = InfisicalSettings::from_config(&cfg(
            "",
            &[("INFISICAL_URL", "http://infisical.example.com")],
        ))
        .unwrap_err();
        assert_eq!(e.code(), ErrorCode::Config);
    }

    #[test]
    fn endpoints_are_percent_encoded() {
        let t = Transport {
            client: ClientOptions::default().build_for("infisical").unwrap(),
            base: Url::parse("http://127.0.0.1:1/prefix").unwrap(),
        };
        let u = t
            .endpoint(
                &["api", "v3", "secrets", "raw", "A B/../C?"],
                &[("secretPath", "/a b&c")],
            )
            .unwrap();
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:1/prefix/api/v3/secrets/raw/A%20B%2F..%2FC%3F?secretPath=%2Fa+b%26c"
        );
    }

    fn status_error(status: u16, body: &[u8], what: &str) -> Error {
        super::status_error(&Reply::new(status, body), what)
    }

    #[test]
    fn error_bodies_map_to_codes_without_messages() {
        let body = br#"{"reqId":"req-1","statusCode":404,"message":"Secret with name 'X' not found","error":"NotFound"}"#;
        let e = status_error(404, body, "a secret read");
        assert_eq!(e.code(), ErrorCode::NotFound);
        assert_eq!(e.request_id(), Some("req-1"));
        assert_eq!(e.remote_code(), Some("NotFound"));
        assert!(!e.to_string().contains("Secret with name"));
        let e = status_error(429, b"{}", "x");
        assert!(e.retryable());
        assert!(status_error(503, b"not json", "x").retryable());
        assert_eq!(
            status_error(403, b"{}", "x").code(),
            ErrorCode::PermissionDenied
        );
    }
}
