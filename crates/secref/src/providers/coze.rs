//! `coze+credential://<integration_name>` and `coze+env://<project_id>/<KEY>`:
//! Coze workload identity, wire-compatible with `coze-workload-identity`
//! 0.1.14.
//!
//! # Configuration
//!
//! | env (the SDK's names) | `[coze]` key | required | rule |
//! |---|---|---|---|
//! | `COZE_WORKLOAD_IDENTITY_CLIENT_ID` | `client_id` | yes | non-empty |
//! | `COZE_WORKLOAD_IDENTITY_CLIENT_SECRET` | `client_secret` (a reference), `client_secret_env` (names the variable) or `client_secret_file` | yes | trimmed, non-empty; held as a [`Secret`] |
//! | `COZE_WORKLOAD_IDENTITY_TOKEN_ENDPOINT` | `token_endpoint` | yes | [`validate_base_url`] |
//! | `COZE_WORKLOAD_ACCESS_TOKEN_ENDPOINT` | `access_token_endpoint` | yes | [`validate_base_url`] |
//! | `COZE_OUTBOUND_AUTH_ENDPOINT` | `outbound_endpoint` | for resolving | [`validate_base_url`]; `/integration` and `/env` are appended |
//! | `COZE_SERVER_ENV` | `server_env` | no | lane, see below |
//! | `COZE_PROJECT_ID` | `project_id` | no | checked against `coze+env://` refs |
//! | `SECREF_COZE_CLIENT_AUTH` | `client_auth` | no | `body` (default, the SDK's) or `basic` |
//! | `SECREF_COZE_EXPIRY_BUFFER_SECONDS` | `expiry_buffer_seconds` | no | default 60 (the SDK's), at most 3600 |
//! | `SECREF_COZE_TIMEOUT_SECONDS` | `timeout_seconds` | no | default 30, [`parse_timeout`] |
//!
//! The provider is configured when `[coze]` exists or any of the four
//! required variables is set; then every missing one is reported at once, in
//! the SDK's order. A `[coze]` table wins over the environment key by key and
//! rejects unknown keys.
//!
//! **Stricter than the SDK, on purpose:** URLs must be `https://` (plain
//! `http://` only for loopback hosts) and carry no userinfo; a trailing `/`
//! on the outbound endpoint is dropped (the SDK would request
//! `//integration`); redirects are never followed (`redirect_refused`; the SDK
//! follows them, re-posting the client secret); an empty `COZE_SERVER_ENV`
//! counts as unset (the SDK sends an empty `x-tt-env`).
//!
//! **Lanes** (`COZE_SERVER_ENV`), applied to all four requests like the SDK:
//! unset or exactly `NONE` → no header; any other value → `x-tt-env: <value>`;
//! values starting with lower-case `ppe_` also get `x-use-ppe: 1`.
//!
//! # Flow
//!
//! 1. `POST <token endpoint>` `client_id=…&client_secret=…&grant_type=client_credentials`
//!    (or HTTP Basic with `client_auth = "basic"`): the `access_token` of the
//!    answer is the "ID token".
//! 2. `POST <access token endpoint>` `client_id=…&subject_token=<ID token>&subject_token_type=urn:ietf:params:oauth:token-type:id_token&grant_type=urn:ietf:params:oauth:grant-type:token-exchange`
//!    → the access token (`expires_in` defaults to 3600 like the SDK).
//! 3. `POST <outbound>/integration {"integration_name"}` → `data.credential`;
//!    `GET <outbound>/env` → `data.secrets[{key, value}]` (first match wins,
//!    like the SDK's `ProjectEnvVars.get`). One `GET /env` serves every
//!    `coze+env://` reference of a batch.
//!
//! Unlike the SDK, **both** tokens are cached (each until its `expires_in`
//! minus the expiry buffer; an ID token without `expires_in` is not cached),
//! per provider (so per client id and endpoints, never process-global), a
//! refresh is single-flight (concurrent callers wait for one flow), and a
//! `401` from the outbound API drops both tokens and retries once with fresh
//! ones.
//!
//! # Errors
//!
//! Token failures are request-level and carry the remote code
//! `token_retrieval` (step 1) or `token_exchange` (step 2), whichever step
//! failed (the SDK reports most exchange failures as `TokenRetrievalError`):
//! transport errors → `backend_unavailable`/`timeout`, 5xx →
//! `backend_unavailable` (these are the retryable ones), 429 → `rate_limited`,
//! 3xx → `redirect_refused`, any other rejection (including a `200` with an
//! OAuth `error`) → `unauthenticated`; a missing `access_token` or a
//! non-numeric `expires_in` → `invalid_response`.
//!
//! Outbound answers other than `200` (a `401` after the one re-auth) map by
//! the shared status table ([`crate::http::status_code`]: `401` →
//! `unauthenticated`, `403` → `permission_denied`, `404` → `not_found`,
//! `429` → `rate_limited`, 5xx → `backend_unavailable` (retryable), 3xx →
//! `redirect_refused`, …). A `200` with `code != 0` maps HTTP-like codes by
//! the same table; any other code is `invalid_response`. The envelope's
//! `code` becomes the error's remote code and its `msg`
//! ([`crate::http::sanitize`]d) is quoted; values never are. A missing env
//! key is `not_found`.
//!
//! **`project_id`.** The 0.1.14 API lists the env vars of the workload's own
//! project and takes no project parameter. When `COZE_PROJECT_ID` (or
//! `project_id`) is set, a `coze+env://` reference naming another project is
//! `permission_denied` without any request (this workload may not read other
//! projects); when it is not set, any project id is accepted and the
//! workload's own project is read.

pub(crate) mod token;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use url::Url;
use zeroize::Zeroizing;

use crate::config::{check_timeout, parse_timeout, validate_base_url, Config, Env};
use crate::error::{Error, ErrorCode, Result};
use crate::http::{self, ClientOptions};
use crate::provider::{BatchResult, Provider, Resolved};
use crate::reference::{self, ParsedRef, RefKind, SecretRef};
use crate::secret::Secret;

pub use token::{ClientAuth, TOKEN_EXCHANGE, TOKEN_RETRIEVAL};
use token::{TokenSettings, TokenSource};

/// The SDK's default expiry buffer.
pub const DEFAULT_EXPIRY_BUFFER: Duration = Duration::from_secs(60);
/// The largest accepted expiry buffer.
pub const MAX_EXPIRY_BUFFER: Duration = Duration::from_secs(3600);

const ENV_CLIENT_ID: &str = "COZE_WORKLOAD_IDENTITY_CLIENT_ID";
const ENV_CLIENT_SECRET: &str = "COZE_WORKLOAD_IDENTITY_CLIENT_SECRET";
const ENV_TOKEN_ENDPOINT: &str = "COZE_WORKLOAD_IDENTITY_TOKEN_ENDPOINT";
const ENV_ACCESS_TOKEN_ENDPOINT: &str = "COZE_WORKLOAD_ACCESS_TOKEN_ENDPOINT";
const ENV_OUTBOUND: &str = "COZE_OUTBOUND_AUTH_ENDPOINT";
const ENV_SERVER_ENV: &str = "COZE_SERVER_ENV";
const ENV_PROJECT_ID: &str = "COZE_PROJECT_ID";

/// The Coze workload-identity provider. `Debug` never shows the client
/// secret or any token.
///
/// ```
/// use secref::config::Env;
/// use secref::providers::coze::CozeProvider;
/// let env = Env::from_pairs([
///     ("COZE_WORKLOAD_IDENTITY_CLIENT_ID", "app"),
///     ("COZE_WORKLOAD_IDENTITY_CLIENT_SECRET", "canary-secret"),
///     ("COZE_WORKLOAD_IDENTITY_TOKEN_ENDPOINT", "http://127.0.0.1:9000/token"),
///     ("COZE_WORKLOAD_ACCESS_TOKEN_ENDPOINT", "http://127.0.0.1:9000/token"),
///     ("COZE_OUTBOUND_AUTH_ENDPOINT", "http://127.0.0.1:9100/api/"),
///     ("COZE_SERVER_ENV", "ppe_lane1"),
/// ]);
/// let p = CozeProvider::from_env(&env).unwrap();
/// assert_eq!(p.outbound_endpoint().unwrap().as_str(), "http://127.0.0.1:9100/api");
/// assert_eq!(p.lane_headers(), &[("x-tt-env", "ppe_lane1".to_string()), ("x-use-ppe", "1".to_string())]);
/// assert!(!format!("{p:?}").contains("canary-secret"));
/// ```
pub struct CozeProvider {
    tokens: TokenSource,
    outbound: Option<Url>,
    project_id: Option<String>,
    lane: Vec<(&'static str, String)>,
    timeout: Duration,
    client: http::HttpClient,
}

impl fmt::Debug for CozeProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CozeProvider")
            .field("tokens", &self.tokens)
            .field("outbound", &self.outbound.as_ref().map(Url::as_str))
            .field("project_id", &self.project_id)
            .field("lane", &self.lane)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The `[coze]` table of `secref.toml`. `client_secret` takes only a
/// reference ([`crate::credentials`] replaces it by its value before this is
/// read).
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CozeTable {
    client_id: Option<String>,
    client_secret: Option<zeroize::Zeroizing<String>>,
    client_secret_env: Option<String>,
    client_secret_file: Option<PathBuf>,
    token_endpoint: Option<String>,
    access_token_endpoint: Option<String>,
    outbound_endpoint: Option<String>,
    server_env: Option<String>,
    project_id: Option<String>,
    client_auth: Option<String>,
    expiry_buffer_seconds: Option<f64>,
    timeout_seconds: Option<f64>,
}

impl CozeProvider {
    /// From the SDK's `COZE_*` variables (and `SECREF_COZE_*`).
    pub fn from_env(env: &Env) -> Result<CozeProvider> {
        CozeProvider::from_table(&toml::Table::new(), env)
    }

    /// From a `[coze]` table, falling back to the environment per key
    /// (reached through [`CozeProvider::configured`]).
    pub(crate) fn from_table(table: &toml::Table, env: &Env) -> Result<CozeProvider> {
        let t: CozeTable =
            toml::Value::Table(table.clone())
                .try_into()
                .map_err(|e: toml::de::Error| crate::config::table_error("[coze] table", &e))?;
        let pick = |v: Option<String>, var: &str| -> Option<String> {
            v.filter(|s| !s.trim().is_empty())
                .or_else(|| env.get(var).map(str::to_string))
        };
        let client_id = pick(t.client_id, ENV_CLIENT_ID);
        let given = [
            t.client_secret.is_some(),
            t.client_secret_env.is_some(),
            t.client_secret_file.is_some(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(Error::config(
                "[coze] takes one of client_secret, client_secret_env and client_secret_file",
            ));
        }
        // Where the client secret was looked for, for the missing-settings
        // error: the variable actually read (the renamed one when
        // `client_secret_env` is set), or the table key / file.
        let secret_source: String = match (&t.client_secret_env, &t.client_secret_file) {
            _ if t.client_secret.is_some() => "[coze] client_secret".to_string(),
            (_, Some(path)) => format!("[coze] client_secret_file {} (empty)", path.display()),
            (var, None) => var.as_deref().unwrap_or(ENV_CLIENT_SECRET).to_string(),
        };
        let client_secret = match (&t.client_secret_env, &t.client_secret_file) {
            _ if t.client_secret.is_some() => t
                .client_secret
                .as_deref()
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .map(Secret::from),
            // Both set is refused above.
            (_, Some(path)) => {
                let bytes = crate::credfile::read_private_file(path, "Coze client secret file")?
                    .ok_or_else(|| {
                        Error::config(format!(
                            "cannot read Coze client secret file {}: not found",
                            path.display()
                        ))
                    })?;
                Some(Secret::copy_from(bytes.trim_ascii())).filter(|s| !s.is_empty())
            }
            (var, None) => env
                .get(var.as_deref().unwrap_or(ENV_CLIENT_SECRET))
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(Secret::from),
        };
        let token_endpoint = pick(t.token_endpoint, ENV_TOKEN_ENDPOINT);
        let access_token_endpoint = pick(t.access_token_endpoint, ENV_ACCESS_TOKEN_ENDPOINT);

        // Every missing required setting at once, in the SDK's order.
        let missing: Vec<&str> = [
            (client_id.is_none(), ENV_CLIENT_ID),
            (client_secret.is_none(), secret_source.as_str()),
            (token_endpoint.is_none(), ENV_TOKEN_ENDPOINT),
            (access_token_endpoint.is_none(), ENV_ACCESS_TOKEN_ENDPOINT),
        ]
        .into_iter()
        .filter_map(|(m, name)| m.then_some(name))
        .collect();
        let (
            Some(client_id),
            Some(client_secret),
            Some(token_endpoint),
            Some(access_token_endpoint),
        ) = (
            client_id,
            client_secret,
            token_endpoint,
            access_token_endpoint,
        )
        else {
            let mut hint =
                "set them in the environment or in the [coze] table of secref.toml".to_string();
            if t.client_secret_env.is_some() && missing.contains(&secret_source.as_str()) {
                hint.push_str(&format!(
                    "; the client secret is read from {secret_source}, the variable [coze] client_secret_env names"
                ));
            }
            return Err(Error::config(format!(
                "Coze workload identity is missing: {}",
                missing.join(", ")
            ))
            .with_hint(hint));
        };

        let client_auth = match pick(t.client_auth, "SECREF_COZE_CLIENT_AUTH").as_deref() {
            None | Some("body") => ClientAuth::Body,
            Some("basic") => ClientAuth::Basic,
            Some(_) => {
                return Err(Error::config(
                    "SECREF_COZE_CLIENT_AUTH / [coze] client_auth must be body or basic",
                ))
            }
        };
        let expiry_buffer = match t.expiry_buffer_seconds {
            Some(secs) => check_buffer(secs)?,
            None => match env.get("SECREF_COZE_EXPIRY_BUFFER_SECONDS") {
                Some(raw) => check_buffer(raw.trim().parse().map_err(|_| {
                    Error::config("SECREF_COZE_EXPIRY_BUFFER_SECONDS must be a number of seconds")
                })?)?,
                None => DEFAULT_EXPIRY_BUFFER,
            },
        };
        let timeout = match t.timeout_seconds {
            Some(secs) => check_timeout("[coze] timeout_seconds", secs)?,
            None => match env.get("SECREF_COZE_TIMEOUT_SECONDS") {
                Some(raw) => parse_timeout("SECREF_COZE_TIMEOUT_SECONDS", raw)?,
                None => Duration::from_secs(30),
            },
        };
        let outbound = pick(t.outbound_endpoint, ENV_OUTBOUND)
            .map(|u| validate_base_url(ENV_OUTBOUND, &u))
            .transpose()?;
        let settings = TokenSettings {
            client_id: client_id.trim().to_string(),
            client_secret,
            client_auth,
            token_endpoint: validate_base_url(ENV_TOKEN_ENDPOINT, &token_endpoint)?,
            access_token_endpoint: validate_base_url(
                ENV_ACCESS_TOKEN_ENDPOINT,
                &access_token_endpoint,
            )?,
            expiry_buffer,
        };
        let lane = lane_headers(pick(t.server_env, ENV_SERVER_ENV).as_deref());
        if lane
            .iter()
            .any(|(_, v)| reqwest::header::HeaderValue::from_str(v).is_err())
        {
            return Err(Error::config(
                "COZE_SERVER_ENV must be printable ASCII (it is sent as the x-tt-env header)",
            ));
        }
        let project_id = pick(t.project_id, ENV_PROJECT_ID).map(|p| p.trim().to_string());
        let client = ClientOptions::default()
            .timeout(timeout)
            .build_for("coze")?;
        Ok(CozeProvider {
            tokens: TokenSource::new(settings, lane.clone()),
            outbound,
            project_id,
            lane,
            timeout,
            client,
        })
    }

    /// From a loaded config: the `[coze]` table if present (the table wins
    /// setting by setting, the environment fills in), else the environment
    /// if any required `COZE_*` variable is set, else `None`.
    ///
    /// ```
    /// use secref::config::Env;
    /// use secref::providers::coze::CozeProvider;
    /// let mut cfg = secref::Config::from_toml_str(r#"
    ///     [coze]
    ///     client_id = "app"
    ///     client_secret_env = "MY_SECRET"
    ///     token_endpoint = "https://auth.example.com/token"
    ///     access_token_endpoint = "https://auth.example.com/token"
    ///     client_auth = "basic"
    /// "#).unwrap();
    /// cfg.env = Env::from_pairs([("MY_SECRET", "s")]);
    /// assert!(CozeProvider::configured(&cfg).unwrap().is_some());
    /// let mut bad = secref::Config::from_toml_str("[coze]\nclient_idd = 'x'").unwrap();
    /// bad.env = cfg.env.clone();
    /// assert!(CozeProvider::configured(&bad).is_err());
    /// ```
    pub fn configured(cfg: &Config) -> Result<Option<CozeProvider>> {
        match cfg.section::<toml::Table>("coze")? {
            Some(t) => CozeProvider::from_table(&t, &cfg.env).map(Some),
            None if [
                ENV_CLIENT_ID,
                ENV_CLIENT_SECRET,
                ENV_TOKEN_ENDPOINT,
                ENV_ACCESS_TOKEN_ENDPOINT,
            ]
            .iter()
            .any(|k| cfg.env.get(k).is_some()) =>
            {
                CozeProvider::from_env(&cfg.env).map(Some)
            }
            None => Ok(None),
        }
    }

    /// The outbound API base URL, if configured.
    pub fn outbound_endpoint(&self) -> Option<&Url> {
        self.outbound.as_ref()
    }

    /// The lane headers sent with every request.
    pub fn lane_headers(&self) -> &[(&'static str, String)] {
        &self.lane
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.tokens.settings().client_id
    }

    /// A valid access token (cached, or from a new single-flight flow): for
    /// callers that talk to other Coze APIs themselves.
    pub async fn access_token(&self) -> Result<Secret> {
        self.tokens
            .access_token(&self.client)
            .await
            .map_err(|e| e.with_provider("coze"))
    }

    /// One outbound call with `token`, and the one re-auth on 401 (which
    /// replaces `token` for the rest of the batch): returns the typed `data`
    /// of a `code == 0` envelope.
    async fn outbound_call<T: DeserializeOwned>(
        &self,
        what: Outbound<'_>,
        token: &mut Secret,
    ) -> Result<T> {
        let base = self.outbound.as_ref().ok_or_else(|| {
            Error::config(format!(
                "{ENV_OUTBOUND} is required to resolve coze+ references"
            ))
        })?;
        let mut reauthed = false;
        loop {
            let url = format!("{}/{}", base.as_str().trim_end_matches('/'), what.path());
            let mut req = match what {
                Outbound::Integration(name) => self
                    .client
                    .post(&url)
                    .json(&serde_json::json!({ "integration_name": name })),
                Outbound::Env => self.client.get(&url),
            };
            for (name, value) in &self.lane {
                req = req.header(*name, value);
            }
            let req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .bearer_auth(token.as_text()?);
            let resp = self.client.send(req).await?;
            if resp.status == 401 && !reauthed {
                tracing::debug!(
                    call = what.path(),
                    "coze: outbound API answered 401, re-authenticating once"
                );
                self.tokens.reject(token);
                *token = self.access_token().await?;
                reauthed = true;
                continue;
            }
            return parse_envelope(&resp, what);
        }
    }

    async fn integration(&self, name: &str, token: &mut Secret) -> Result<Resolved> {
        let data: IntegrationData = self
            .outbound_call(Outbound::Integration(name), token)
            .await?;
        Ok(Resolved::new(Secret::from(data.credential.as_str())))
    }

    /// The project's env vars, keyed (first occurrence wins).
    async fn env_listing(&self, token: &mut Secret) -> Result<HashMap<String, Secret>> {
        let data: EnvData = self.outbound_call(Outbound::Env, token).await?;
        let mut out = HashMap::with_capacity(data.secrets.len());
        for item in data.secrets {
            out.entry(item.key)
                .or_insert_with(|| Secret::from(item.value.as_str()));
        }
        tracing::debug!(count = out.len(), "coze: env vars listed");
        Ok(out)
    }

    fn check_project(&self, project_id: &str) -> Result<()> {
        match &self.project_id {
            Some(own) if own != project_id => Err(Error::new(
                ErrorCode::PermissionDenied,
                format!("this workload belongs to Coze project {own}, not {project_id}"),
            )
            .with_hint("the Coze API lists only the workload's own project (COZE_PROJECT_ID)")),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl Provider for CozeProvider {
    fn name(&self) -> &str {
        "coze"
    }

    fn families(&self) -> &[&'static str] {
        &["coze"]
    }

    fn capabilities(&self) -> crate::provider::Capabilities {
        SPEC.capabilities
    }

    /// A token is obtainable now: both token steps afresh
    /// (`TokenSource::probe`). The outbound API
    /// is not asked: both of its calls return values.
    async fn health(&self) -> Result<()> {
        self.tokens
            .probe(&self.client)
            .await
            .map_err(|e| e.with_provider("coze"))
    }

    /// `coze+env://<project>`: every env var of the workload's project (one
    /// `GET /env`; the values are dropped). Other coze schemes cannot list.
    async fn list(&self, scheme: &str, prefix: &str) -> Result<Vec<crate::provider::Listed>> {
        let project = prefix.trim_end_matches('/');
        if scheme != "coze+env" || project.is_empty() || project.contains('/') {
            return Err(Error::usage("only coze+env://<project> can be listed")
                .with_provider("coze"));
        }
        self.check_project(project)?;
        let mut token = self.access_token().await?;
        let listing = self.env_listing(&mut token).await?;
        let mut keys: Vec<String> = listing.into_keys().collect();
        keys.sort();
        keys.into_iter()
            .map(|key| {
                let reference = SecretRef::parse(format!("coze+env://{project}/{key}"))?;
                Ok(crate::provider::Listed { key, reference })
            })
            .collect()
    }

    async fn resolve_many(&self, refs: &[SecretRef]) -> BatchResult<Resolved> {
        // One access token for the batch: a token failure is request-level.
        let mut token = self.access_token().await?;
        let wants_env = refs.iter().any(|r| {
            matches!(r.kind(), RefKind::CozeEnv { project_id, .. } if self.check_project(project_id).is_ok())
        });
        // One GET /env serves every coze+env:// reference of the batch.
        let listing: Option<Result<HashMap<String, Secret>>> = if wants_env {
            Some(self.env_listing(&mut token).await)
        } else {
            None
        };
        let mut out = Vec::with_capacity(refs.len());
        for r in refs {
            let item =
                match r.kind() {
                    RefKind::CozeCredential { integration } => {
                        self.integration(integration, &mut token).await
                    }
                    RefKind::CozeEnv { project_id, key } => self
                        .check_project(project_id)
                        .and_then(|()| match listing.as_ref().expect("listed when wanted") {
                            Ok(vars) => {
                                vars.get(key).cloned().map(Resolved::new).ok_or_else(|| {
                                    Error::new(
                                        ErrorCode::NotFound,
                                        format!("the Coze project has no env var {key}"),
                                    )
                                })
                            }
                            Err(e) => Err(e.clone()),
                        }),
                    _ => Err(Error::new(
                        ErrorCode::UnsupportedEngine,
                        "the coze provider serves coze+credential:// and coze+env:// only",
                    )),
                };
            out.push(item.map_err(|e| e.with_reference(r.to_canonical()).with_provider("coze")));
        }
        Ok(out)
    }
}

/// The two outbound calls.
#[derive(Clone, Copy)]
pub(crate) enum Outbound<'a> {
    Integration(&'a str),
    Env,
}

impl Outbound<'_> {
    fn path(self) -> &'static str {
        match self {
            Outbound::Integration(_) => "integration",
            Outbound::Env => "env",
        }
    }

    /// What a well-formed answer's `data` holds.
    fn shape(self) -> &'static str {
        match self {
            Outbound::Integration(_) => "has no string data.credential",
            Outbound::Env => "has no data.secrets list of {key, value} strings",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Outbound::Integration(_) => "coze integration credential request",
            Outbound::Env => "coze project env vars request",
        }
    }
}

/// `data` of an integration answer.
#[derive(Deserialize)]
pub(crate) struct IntegrationData {
    credential: Zeroizing<String>,
}

/// `data` of an env answer (extra fields are ignored, like the SDK).
#[derive(Deserialize)]
pub(crate) struct EnvData {
    secrets: Vec<EnvItem>,
}

#[derive(Deserialize)]
struct EnvItem {
    key: String,
    value: Zeroizing<String>,
}

/// The envelope without its `data` (skipped unparsed).
#[derive(Deserialize)]
struct EnvelopeHead {
    code: Option<Value>,
    msg: Option<Value>,
}

#[derive(Deserialize)]
struct EnvelopeData<T> {
    data: T,
}

/// Maps an outbound answer: the typed `data` of a `200` + `code == 0`
/// envelope, or a typed error quoting only `msg`.
pub(crate) fn parse_envelope<T: DeserializeOwned>(resp: &http::Response, what: Outbound<'_>) -> Result<T> {
    let body = &resp.body[..];
    let head: Option<EnvelopeHead> = serde_json::from_slice(body).ok();
    let msg = head
        .as_ref()
        .and_then(|h| h.msg.as_ref())
        .and_then(Value::as_str)
        .map(http::sanitize);
    let with_msg = |text: String| match &msg {
        Some(m) => format!("{text}: {m}"),
        None => text,
    };
    if resp.status != 200 {
        return Err(resp.status_error(
            "coze",
            with_msg(format!("{} failed with HTTP {}", what.label(), resp.status)),
        ));
    }
    let invalid = |why: &str| {
        Error::new(
            ErrorCode::InvalidResponse,
            format!("{} answer {why}", what.label()),
        )
    };
    let head = head.ok_or_else(|| invalid("is not a JSON object"))?;
    let code = match &head.code {
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| invalid("has a non-integer code"))?,
        _ => return Err(invalid("has no integer code")),
    };
    if code != 0 {
        // HTTP-like codes, by the same table as statuses.
        let ours = u16::try_from(code)
            .ok()
            .filter(|c| (300..600).contains(c))
            .map_or(ErrorCode::InvalidResponse, http::status_code);
        return Err(Error::new(
            ours,
            with_msg(format!("{} returned code {code}", what.label())),
        )
        .with_remote_code(code.to_string()));
    }
    serde_json::from_slice::<EnvelopeData<T>>(body)
        .map(|e| e.data)
        .map_err(|_| invalid(what.shape()))
}

fn check_buffer(secs: f64) -> Result<Duration> {
    if !secs.is_finite() || secs < 0.0 || secs > MAX_EXPIRY_BUFFER.as_secs_f64() {
        return Err(Error::config(
            "the Coze expiry buffer must be between 0 and 3600 seconds",
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The SDK's lane rules.
fn lane_headers(server_env: Option<&str>) -> Vec<(&'static str, String)> {
    match server_env {
        None | Some("NONE") => Vec::new(),
        Some(lane) => {
            let mut h = vec![("x-tt-env", lane.to_string())];
            if lane.starts_with("ppe_") {
                h.push(("x-use-ppe", "1".to_string()));
            }
            h
        }
    }
}

/// Where the Coze client secret is read ([`crate::credentials`]): the
/// variable `[coze] client_secret_env` names, else
/// `COZE_WORKLOAD_IDENTITY_CLIENT_SECRET`; it may hold a reference.
fn credential_fields(cfg: &Config) -> Vec<crate::credentials::CredentialField> {
    let mut fields =
        crate::credentials::env_named_by(cfg, "coze", "client_secret_env", ENV_CLIENT_SECRET);
    fields.push(crate::credentials::CredentialField::Key {
        name: "client_secret",
        reference_only: true,
    });
    fields
}

/// `coze+credential://<integration>`, `coze+env://<project_id>/<KEY>`: Coze
/// workload identity.
pub(crate) const SPEC: crate::registry::ProviderSpec = crate::registry::ProviderSpec {
    name: "coze",
    schemes: &["coze+credential", "coze+env"],
    feature: Some("coze"),
    host_local: false,
    config_section: Some("coze"),
    env_vars: &[
        ENV_CLIENT_ID,
        ENV_CLIENT_SECRET,
        ENV_TOKEN_ENDPOINT,
        ENV_ACCESS_TOKEN_ENDPOINT,
        ENV_OUTBOUND,
        ENV_SERVER_ENV,
        ENV_PROJECT_ID,
    ],
    credential_env_vars: &[ENV_CLIENT_SECRET],
    capabilities: crate::provider::Capabilities {
        list: true,
        ..crate::provider::Capabilities::NONE
    },
    parse: |input| match input.scheme {
        "coze+credential" => parse_coze_credential(input.rest),
        "coze+env" => parse_coze_env(input.rest),
        other => Err(Error::new(
            ErrorCode::UnsupportedEngine,
            format!("unsupported scheme '{}'", reference::printable(other)),
        )
        .with_hint("use coze+credential:// or coze+env://")),
    },
    parts: |r| match r.kind() {
        RefKind::CozeCredential { integration } => {
            vec![("integration", integration.as_str().into())]
        }
        RefKind::CozeEnv { project_id, key } => vec![
            ("project_id", project_id.as_str().into()),
            ("key", key.as_str().into()),
        ],
        _ => Vec::new(),
    },
    credentials: credential_fields,
    build: |cfg| {
        Ok(CozeProvider::configured(cfg)?
            .map(|p| std::sync::Arc::new(p) as std::sync::Arc<dyn Provider>))
    },
};

pub(crate) fn parse_coze_credential(rest: &str) -> Result<ParsedRef> {
    reference::reject_query_and_fragment("coze+credential", rest)?;
    if rest.contains('/') {
        return Err(reference::err(
            ErrorCode::InvalidReference,
            "coze+credential:// takes one integration name",
        ));
    }
    reference::check_segments("coze+credential://", [rest])?;
    Ok(ParsedRef::new(
        RefKind::CozeCredential {
            integration: rest.to_string(),
        },
        format!("coze+credential://{rest}"),
    ))
}

pub(crate) fn parse_coze_env(rest: &str) -> Result<ParsedRef> {
    reference::reject_query_and_fragment("coze+env", rest)?;
    let segs: Vec<&str> = rest.split('/').collect();
    if segs.len() != 2 {
        return Err(reference::err(
            ErrorCode::InvalidReference,
            "coze+env:// takes a project id and a key",
        )
        .with_hint("coze+env://<project_id>/<KEY>"));
    }
    reference::check_segments("coze+env://", segs.iter().copied())?;
    Ok(ParsedRef::new(
        RefKind::CozeEnv {
            project_id: segs[0].to_string(),
            key: segs[1].to_string(),
        },
        format!("coze+env://{rest}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base_env() -> Vec<(&'static str, &'static str)> {
        vec![
            (ENV_CLIENT_ID, "app"),
            (ENV_CLIENT_SECRET, "canary-client-secret-71"),
            (ENV_TOKEN_ENDPOINT, "http://127.0.0.1:1/token"),
            (ENV_ACCESS_TOKEN_ENDPOINT, "http://127.0.0.1:1/token"),
        ]
    }

    #[test]
    fn lanes_follow_the_sdk() {
        assert!(lane_headers(None).is_empty());
        assert!(lane_headers(Some("NONE")).is_empty());
        assert_eq!(
            lane_headers(Some("none")),
            vec![("x-tt-env", "none".into())]
        );
        assert_eq!(
            lane_headers(Some("boe_a")),
            vec![("x-tt-env", "boe_a".into())]
        );
        assert_eq!(
            lane_headers(Some("PPE_a")),
            vec![("x-tt-env", "PPE_a".into())]
        );
        assert_eq!(
            lane_headers(Some("ppe_a")),
            vec![("x-tt-env", "ppe_a".into()), ("x-use-ppe", "1".into())]
        );
    }

    #[test]
    fn missing_settings_are_listed_in_sdk_order() {
        let e = CozeProvider::from_env(&Env::from_pairs([(ENV_TOKEN_ENDPOINT, "https://x/t")]))
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::Config);
        assert_eq!(
            e.message(),
            "Coze workload identity is missing: COZE_WORKLOAD_IDENTITY_CLIENT_ID, \
             COZE_WORKLOAD_IDENTITY_CLIENT_SECRET, COZE_WORKLOAD_ACCESS_TOKEN_ENDPOINT"
        );
    }

    #[test]
    fn a_renamed_secret_variable_is_the_one_named_missing() {
        // The default variable is set: it is not read, so not named either.
        let env = Env::from_pairs(base_env());
        let t: toml::Table = toml::from_str("client_secret_env = 'MY_COZE_SECRET'").unwrap();
        let e = CozeProvider::from_table(&t, &env).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Config);
        assert_eq!(e.message(), "Coze workload identity is missing: MY_COZE_SECRET");
        assert!(e.hint().unwrap().contains("MY_COZE_SECRET"), "{e}");
        assert!(!e.to_string().contains(ENV_CLIENT_SECRET), "{e}");
        assert!(!e.to_string().contains("canary-client-secret-71"));
        let env = Env::from_pairs([(ENV_TOKEN_ENDPOINT, "https://x/t")]);
        let e = CozeProvider::from_table(&t, &env).unwrap_err();
        assert_eq!(
            e.message(),
            "Coze workload identity is missing: COZE_WORKLOAD_IDENTITY_CLIENT_ID, \
             MY_COZE_SECRET, COZE_WORKLOAD_ACCESS_TOKEN_ENDPOINT"
        );
    }

    #[test]
    fn urls_and_options_are_strict() {
        for (k, v) in [
            (ENV_TOKEN_ENDPOINT, "http://auth.example.com/token"),
            (ENV_ACCESS_TOKEN_ENDPOINT, "ftp://127.0.0.1/x"),
            (ENV_OUTBOUND, "https://user:pw@example.com"),
            ("SECREF_COZE_CLIENT_AUTH", "header"),
            ("SECREF_COZE_EXPIRY_BUFFER_SECONDS", "-1"),
            ("SECREF_COZE_TIMEOUT_SECONDS", "0"),
            (ENV_SERVER_ENV, "lane\nx-evil: 1"),
        ] {
            let mut env = base_env();
            env.retain(|(key, _)| *key != k);
            env.push((k, v));
            let e = CozeProvider::from_env(&Env::from_pairs(env)).unwrap_err();
            assert_eq!(e.code(), ErrorCode::Config, "{k}={v}");
            assert!(!e.to_string().contains("canary-client-secret-71"));
        }
        let p = CozeProvider::from_env(&Env::from_pairs(base_env())).unwrap();
        assert!(p.outbound_endpoint().is_none());
        assert!(!format!("{p:?}").contains("canary-client-secret-71"));
    }

    #[test]
    fn table_is_strict_and_wins() {
        let env = Env::from_pairs(base_env());
        let t: toml::Table = toml::from_str("client_id = 'other'\nserver_env = 'boe_x'").unwrap();
        let p = CozeProvider::from_table(&t, &env).unwrap();
        assert_eq!(p.client_id(), "other");
        assert_eq!(p.lane_headers(), &[("x-tt-env", "boe_x".to_string())]);
        let t: toml::Table =
            toml::from_str("client_secret = 'x'\nclient_secret_env = 'Y'").unwrap();
        assert_eq!(
            CozeProvider::from_table(&t, &env).unwrap_err().code(),
            ErrorCode::Config
        );
        // An inline secret is refused before the table is read.
        let mut cfg = Config::from_toml_str("[coze]\nclient_secret = 'inline-canary'").unwrap();
        cfg.env = env.clone();
        let e = crate::Resolver::from_config(&cfg).unwrap_err();
        assert!(e.message().contains("must be a secret reference"), "{e}");
        assert!(!e.to_string().contains("inline-canary"));
    }

    #[test]
    fn envelopes_map_to_typed_errors() {
        let ok = |body: &[u8]| http::Response::new(200, body);
        let what = Outbound::Env;
        let e = parse_envelope::<EnvData>(
            &ok(br#"{"code":404,"msg":"no such\nintegration","data":null}"#),
            what,
        )
        .err()
        .unwrap();
        assert_eq!(e.code(), ErrorCode::NotFound);
        assert_eq!(e.remote_code(), Some("404"));
        assert!(e.message().ends_with("no suchintegration"));
        let e = parse_envelope::<EnvData>(&ok(br#"{"code":"0","data":{}}"#), what)
            .err()
            .unwrap();
        assert_eq!(e.code(), ErrorCode::InvalidResponse);
        let e = parse_envelope::<EnvData>(&http::Response::new(502, b"oops"), what)
            .err()
            .unwrap();
        assert!(e.retryable());
        let e = parse_envelope::<EnvData>(&ok(br#"{"code":0,"data":[]}"#), what)
            .err()
            .unwrap();
        assert_eq!(e.code(), ErrorCode::InvalidResponse);
        assert!(
            parse_envelope::<EnvData>(&ok(br#"{"code":0,"data":{"secrets":[]}}"#), what).is_ok()
        );
    }
}
