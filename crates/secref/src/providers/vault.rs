//! Vault / OpenBao: KV v2 and KV v1 reads, token or AppRole auth with
//! renewal, response wrapping, leases.
//!
//! | reference | request |
//! |---|---|
//! | `openbao+kv2://secret/myapp/api#token` | `GET /v1/secret/data/myapp/api` |
//! | `hashicorp+kv2://secret/myapp/api#token?version=2` | `GET /v1/secret/data/myapp/api?version=2` |
//! | `openbao://secret/myapp/api#token` (KV v1) | `GET /v1/secret/myapp/api` |
//! | any of these with `?wrap_ttl=60s` | the same with `X-Vault-Wrap-TTL: 60s`, then `POST /v1/sys/wrapping/unwrap` |
//!
//! The mount is the reference's first segment and appears once in the path
//! (the `secrets_sdk` reference doubles it; this does not).
//!
//! `#field` picks one key of the secret's data: a string is returned as its
//! text, anything else as compact JSON. Without a field the whole data map is
//! returned as compact JSON. A missing key is `field_not_found`.
//!
//! KV v2 versions that are soft-deleted or destroyed are `version_deleted` /
//! `version_destroyed`, recognised from the metadata Vault sends with its
//! 404 (and, defensively, with a 200).
//!
//! Configuration (as for every provider, the `[vault]` table wins setting by
//! setting and the environment fills what it leaves out):
//!
//! | env | `[vault]` key | meaning |
//! |---|---|---|
//! | `VAULT_URL` / `VAULT_ADDR` | `url` | base URL; `https://` unless loopback |
//! | `VAULT_TOKEN`, else `~/.vault-token` | `token_file` | static token |
//! | `VAULT_ROLE_ID[_FILE]`, `VAULT_SECRET_ID[_FILE]` | `role_id[_file]`, `secret_id_file` | AppRole login (takes precedence over a token) |
//! | `VAULT_APPROLE_MOUNT` | `approle_mount` | AppRole mount (default `approle`) |
//! | `VAULT_NAMESPACE` | `namespace` | sent as `X-Vault-Namespace` |
//! | `VAULT_TIMEOUT` | `timeout_seconds` | per request, (0, 300] |
//! | `VAULT_VERIFY_SSL` | `verify_ssl` | strict boolean; anything else is a config error |
//! | `VAULT_CACERT` | `ca_cert` | extra CA (PEM) |
//! | `VAULT_CLIENT_CERT` + `VAULT_CLIENT_KEY` | `client_cert`, `client_key` | TLS client identity |
//! | `VAULT_WRAP_TTL` | `wrap_ttl` | wrap every read (`60s`, `5m`) |
//! | `VAULT_RENEW_MARGIN` | `renew_margin_seconds` | renew a token this long before expiry (default: a third of its TTL) |
//! | `VAULT_REDIRECT_ALLOW` | `redirect_allow` | other origins a redirect may go to |
//!
//! Reference query parameters: `version=N` (KV v2 only) and `wrap_ttl=…`;
//! any other parameter is `invalid_reference`.

mod auth;
mod settings;
mod transport;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::stream::{self, StreamExt};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Map, Value};
use zeroize::{Zeroize, Zeroizing};

use crate::config::{Config, Env};
use crate::error::{Error, ErrorCode, Result};
use crate::http::ClientOptions;
use crate::provider::{
    BatchResult, Lease, LeaseRevocation, Listed, Metadata, Provider, Resolved, RevokeReason,
    VersionInfo,
};
use crate::reference::{RefKind, SecretRef, VaultUri};
use crate::secret::Secret;

pub use auth::TokenInfo;
use auth::TokenManager;
use settings::Settings;
use transport::{status_error, Request, Response, Transport};

/// How many requests one batch keeps in flight.
const CONCURRENCY: usize = 8;

/// The Vault / OpenBao provider (family `vault`).
///
/// ```
/// use secref::config::Env;
/// use secref::providers::vault::VaultProvider;
/// let env = Env::from_pairs([("VAULT_ADDR", "http://127.0.0.1:8200"), ("VAULT_TOKEN", "t")]);
/// let p = VaultProvider::from_env(&env).unwrap();
/// assert!(!format!("{p:?}").contains("\"t\""));
/// let bad = Env::from_pairs([("VAULT_ADDR", "http://127.0.0.1:8200"), ("VAULT_TOKEN", "t"),
///                            ("VAULT_VERIFY_SSL", "nope")]);
/// assert_eq!(VaultProvider::from_env(&bad).unwrap_err().code(), secref::ErrorCode::Config);
/// ```
#[derive(Clone)]
pub struct VaultProvider {
    inner: Arc<Inner>,
}

struct Inner {
    transport: Transport,
    auth: TokenManager,
    wrap_ttl: Option<String>,
}

impl fmt::Debug for VaultProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultProvider")
            .field("base", &self.inner.transport.base().as_str())
            .field("wrap_ttl", &self.inner.wrap_ttl)
            .finish_non_exhaustive()
    }
}

impl VaultProvider {
    /// Configures from `VAULT_*` variables only.
    pub fn from_env(env: &Env) -> Result<VaultProvider> {
        Self::from_settings(Settings::load(None, env)?)
    }

    /// Configures from the `[vault]` table of `secref.toml`, overlaid with
    /// the config's environment.
    pub fn from_config(config: &Config) -> Result<VaultProvider> {
        Self::from_settings(Settings::load(
            config.section::<toml::Table>("vault")?.as_ref(),
            &config.env,
        )?)
    }

    /// `Some(provider)` when Vault is configured at all (a `[vault]` table,
    /// `VAULT_ADDR` or `VAULT_URL`), `None` otherwise; invalid settings are
    /// an error.
    pub fn configured(config: &Config) -> Result<Option<VaultProvider>> {
        if settings::is_configured(config.has_section("vault"), &config.env) {
            Self::from_config(config).map(Some)
        } else {
            Ok(None)
        }
    }

    fn from_settings(s: Settings) -> Result<VaultProvider> {
        let mut opts = ClientOptions::default()
            .timeout(s.timeout)
            .danger_accept_invalid_certs(!s.verify_tls);
        if let Some(ca) = &s.ca_cert {
            // The PEM parser skips anything that is not a certificate, so a
            // wrong file would silently add no trust at all: check first.
            if !contains_pem(&read_pem(ca)?, "CERTIFICATE") {
                return Err(Error::config(format!(
                    "VAULT_CACERT {} contains no PEM certificate",
                    ca.display()
                )));
            }
            opts = opts.ca_cert_file(ca)?;
        }
        if let Some((cert, key)) = &s.client_identity {
            let cert_pem = read_pem(cert)?;
            let key_pem = Zeroizing::new(read_pem(key)?);
            if !contains_pem(&cert_pem, "CERTIFICATE") || !contains_pem(&key_pem, "PRIVATE KEY") {
                return Err(Error::config(
                    "VAULT_CLIENT_CERT must hold a PEM certificate and VAULT_CLIENT_KEY a PEM private key",
                ));
            }
            let mut pem = Zeroizing::new(cert_pem);
            pem.extend_from_slice(b"\n");
            pem.extend_from_slice(&key_pem);
            opts = opts.identity_pem(pem.to_vec());
        }
        let transport = Transport::new(
            opts.build_for("vault")?,
            s.base,
            s.namespace.as_deref(),
            s.redirect_allow,
        )?;
        Ok(VaultProvider {
            inner: Arc::new(Inner {
                transport,
                auth: TokenManager::new(s.credentials, s.renew_margin),
                wrap_ttl: s.wrap_ttl,
            }),
        })
    }

    /// [`VaultProvider::from_config`], then [`VaultProvider::lookup_self`]:
    /// wrong credentials fail here, at start-up, not on the first read.
    pub async fn connect(config: &Config) -> Result<VaultProvider> {
        let p = Self::from_config(config)?;
        p.lookup_self().await?;
        Ok(p)
    }

    /// Logs in if needed and calls `auth/token/lookup-self`: a cheap way to
    /// fail fast at start-up when the credentials are wrong.
    pub async fn lookup_self(&self) -> Result<TokenInfo> {
        let t = &self.inner.transport;
        let token = self.inner.auth.token(t).await?;
        auth::lookup_self(t, &token).await
    }

    /// Sends an authenticated request. A 403 with AppRole credentials is
    /// checked with `lookup-self`: if the token itself is rejected (revoked,
    /// expired early), log in again and retry once; otherwise it is a real
    /// denial. Logging in only then spares secret ids with limited uses.
    async fn call(&self, mut req: Request<'_>, token: &Secret) -> Result<Response> {
        let t = &self.inner.transport;
        req.token = Some(token);
        let resp = t.send(&req).await?;
        if resp.status != 403 || !self.inner.auth.can_relogin() {
            return Ok(resp);
        }
        match auth::lookup_self(t, token).await {
            // Only a rejected token is worth a new login; a transient
            // failure of the check leaves the original answer standing.
            Err(e) if e.code() == ErrorCode::Unauthenticated => {}
            _ => return Ok(resp),
        }
        self.inner.auth.invalidate(token);
        let fresh = self.inner.auth.token(t).await?;
        req.token = Some(&fresh);
        t.send(&req).await
    }

    async fn read(&self, r: &SecretRef, token: &Secret) -> Result<Resolved> {
        let plan = ReadPlan::new(r, self.inner.wrap_ttl.as_deref())?;
        tracing::debug!(mount = %plan.uri.mount, kv2 = plan.kv2, version = plan.uri.version(), wrapped = plan.wrap_ttl.is_some(), "vault read");
        let mut req = Request::new(Method::GET, plan.api_path());
        if let Some(v) = plan.uri.version() {
            req.query = Some(("version", v.to_string()));
        }
        req.wrap_ttl = plan.wrap_ttl.as_deref();
        let mut resp = self.call(req, token).await?;
        if plan.wrap_ttl.is_some() && resp.status == 200 {
            resp = self.unwrap(&resp.body, &plan).await?;
        }
        plan.interpret(resp)
    }

    /// Exchanges the wrapping token in `body` for the wrapped response. The
    /// token is single use; its creation path must be the path we asked
    /// for, or someone else created (or replaced) it.
    async fn unwrap(&self, body: &[u8], plan: &ReadPlan<'_>) -> Result<Response> {
        #[derive(Deserialize)]
        struct Wrapped {
            wrap_info: Option<WrapInfo>,
        }
        #[derive(Deserialize)]
        struct WrapInfo {
            token: String,
            #[serde(default)]
            creation_path: String,
        }
        let wrapped: Wrapped = serde_json::from_slice(body)
            .map_err(|_| plan.err(ErrorCode::InvalidResponse, "the wrapped answer is not JSON"))?;
        let Some(info) = wrapped.wrap_info else {
            return Err(plan.err(
                ErrorCode::InvalidResponse,
                "wrapping was requested but Vault answered unwrapped; refusing the downgrade",
            ));
        };
        let wrapping_token = Secret::from(info.token);
        let expected = plan.api_path();
        let path_ok =
            info.creation_path == expected || info.creation_path.ends_with(&format!("/{expected}"));
        if !path_ok {
            return Err(plan.err(
                ErrorCode::PermissionDenied,
                "the wrapping token was created for another path; possible tampering",
            ));
        }
        let resp = self
            .inner
            .transport
            .send(
                &Request::new(Method::POST, "sys/wrapping/unwrap")
                    .token(&wrapping_token)
                    .json(Zeroizing::new(b"{}".to_vec())),
            )
            .await?;
        match resp.status {
            200 => Ok(resp),
            400 | 403 | 404 => Err(plan
                .err(
                    ErrorCode::PermissionDenied,
                    "the wrapping token was rejected (already used or expired)",
                )
                .with_hint("a wrapping token is single use: if this repeats, someone else may be unwrapping it")),
            _ => Err(status_error(&resp, "to the unwrap").with_reference(plan.r.to_canonical())),
        }
    }

    async fn metadata_one(&self, r: &SecretRef, token: &Secret) -> Result<Metadata> {
        let plan = ReadPlan::new(r, None)?;
        if !plan.kv2 {
            return Err(plan.err(ErrorCode::Unsupported, "KV v1 secrets have no metadata"));
        }
        let path = format!("{}/metadata/{}", plan.uri.mount, plan.uri.path_string());
        let resp = self.call(Request::new(Method::GET, path), token).await?;
        if resp.status != 200 {
            return Err(plan.status(&resp));
        }
        parse_metadata(&resp.body, r).map_err(|e| e.with_reference(r.to_canonical()))
    }

    async fn renew_one(
        &self,
        lease_id: &str,
        increment: Option<std::time::Duration>,
        token: &Secret,
    ) -> Result<Lease> {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            lease_id: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            increment: Option<u64>,
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            lease_id: String,
            #[serde(default)]
            lease_duration: u64,
            #[serde(default)]
            renewable: bool,
        }
        let body = serde_json::to_vec(&Body {
            lease_id,
            increment: increment.map(|d| d.as_secs()),
        })
        .map_err(|_| Error::internal("cannot encode lease id"))?;
        let resp = self
            .call(
                Request::new(Method::PUT, "sys/leases/renew").json(Zeroizing::new(body)),
                token,
            )
            .await?;
        if resp.status != 200 {
            return Err(status_error(&resp, &format!("renewing lease {lease_id}")));
        }
        let a: Answer = serde_json::from_slice(&resp.body).map_err(|_| {
            Error::new(
                ErrorCode::InvalidResponse,
                "lease renewal answer is not Vault's shape",
            )
        })?;
        Ok(Lease {
            id: a.lease_id,
            ttl: Some(std::time::Duration::from_secs(a.lease_duration)),
            renewable: a.renewable,
        })
    }

    async fn revoke_one(&self, lease_id: &str, token: &Secret) -> Result<LeaseRevocation> {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            lease_id: &'a str,
        }
        let body = serde_json::to_vec(&Body { lease_id })
            .map_err(|_| Error::internal("cannot encode lease id"))?;
        let resp = self
            .call(
                Request::new(Method::PUT, "sys/leases/revoke").json(Zeroizing::new(body)),
                token,
            )
            .await?;
        match resp.status {
            200 | 204 => Ok(LeaseRevocation {
                lease_id: lease_id.to_string(),
                status: "revoked".to_string(),
                revoked_at: None,
            }),
            _ => Err(status_error(&resp, &format!("revoking lease {lease_id}"))),
        }
    }
}

/// Whether `pem` has a `-----BEGIN …<label>-----` line. Works on the bytes
/// (no copy of a private key is made).
fn contains_pem(pem: &[u8], label: &str) -> bool {
    let end = format!("{label}-----");
    pem.split(|b| *b == b'\n').any(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        line.starts_with(b"-----BEGIN ") && line.ends_with(end.as_bytes())
    })
}

fn read_pem(path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| Error::config(format!("cannot read {}: {}", path.display(), e.kind())))
}

/// One reference turned into a request and an interpretation of the answer.
pub(crate) struct ReadPlan<'a> {
    r: &'a SecretRef,
    uri: &'a VaultUri,
    kv2: bool,
    wrap_ttl: Option<String>,
}

impl<'a> ReadPlan<'a> {
    pub(crate) fn new(r: &'a SecretRef, global_wrap: Option<&str>) -> Result<ReadPlan<'a>> {
        let RefKind::Vault(uri) = r.kind() else {
            return Err(Error::internal("vault provider got a non-vault reference"));
        };
        let kv2 = match uri.engine.as_deref() {
            Some("kv2") => true,
            None => false,
            Some(other) => {
                return Err(Error::new(
                    ErrorCode::UnsupportedEngine,
                    format!("the vault provider reads kv2 and kv1, not '{other}'"),
                )
                .with_reference(r.to_canonical()))
            }
        };
        let plan = ReadPlan {
            r,
            uri,
            kv2,
            wrap_ttl: None,
        };
        if uri.path.is_empty() {
            return Err(plan.err(
                ErrorCode::InvalidReference,
                "the reference names a mount but no secret path",
            ));
        }
        for (k, _) in &uri.params {
            match k.as_str() {
                "version" if kv2 => {}
                "version" => {
                    return Err(plan
                        .err(ErrorCode::InvalidReference, "KV v1 has no versions")
                        .with_hint("use openbao+kv2:// or hashicorp+kv2:// for a KV v2 mount"))
                }
                "wrap_ttl" => {}
                other => {
                    return Err(plan.err(
                        ErrorCode::InvalidReference,
                        format!("unknown query parameter '{other}': use version or wrap_ttl"),
                    ))
                }
            }
        }
        let wrap_ttl = match uri.param("wrap_ttl") {
            Some(raw) => Some(
                settings::parse_wrap_ttl("wrap_ttl", raw)
                    .map_err(|e| plan.err(ErrorCode::InvalidReference, e.message().to_string()))?,
            ),
            None => global_wrap.map(str::to_string),
        };
        Ok(ReadPlan { wrap_ttl, ..plan })
    }

    /// The path below `/v1/`.
    fn api_path(&self) -> String {
        if self.kv2 {
            format!("{}/data/{}", self.uri.mount, self.uri.path_string())
        } else {
            format!("{}/{}", self.uri.mount, self.uri.path_string())
        }
    }

    fn display_path(&self) -> String {
        format!("{}/{}", self.uri.mount, self.uri.path_string())
    }

    fn err(&self, code: ErrorCode, msg: impl Into<String>) -> Error {
        Error::new(code, msg.into())
            .with_reference(self.r.to_canonical())
            .with_provider("vault")
    }

    fn status(&self, resp: &Response) -> Error {
        let mut e = status_error(resp, &format!("reading {}", self.display_path()))
            .with_reference(self.r.to_canonical());
        if resp.status == 404 {
            e = e.with_hint("check the mount, the path and the engine (kv2 or kv1)");
        }
        e
    }

    pub(crate) fn interpret(&self, resp: Response) -> Result<Resolved> {
        if resp.status == 404 && self.kv2 {
            // Vault answers 404 for deleted and destroyed versions, with
            // the version's metadata in the body.
            if let Ok(env) = serde_json::from_slice::<Envelope>(&resp.body) {
                if let Some(meta) = env.data.as_ref().and_then(kv2_metadata) {
                    self.check_version_state(&meta)?;
                }
            }
        }
        if resp.status != 200 {
            return Err(self.status(&resp));
        }
        let mut env: Envelope = serde_json::from_slice(&resp.body).map_err(|_| {
            self.err(
                ErrorCode::InvalidResponse,
                "Vault's answer is not the expected JSON",
            )
        })?;
        let result = self.extract(&mut env);
        if let Some(d) = env.data.as_mut() {
            scrub(d);
        }
        let (secret, version) = result?;
        let mut out = Resolved::new(secret);
        out.version = version.map(|v| v.to_string());
        if !env.lease_id.is_empty() {
            out.lease = Some(Lease {
                id: env.lease_id.clone(),
                ttl: Some(Duration::from_secs(env.lease_duration)),
                renewable: env.renewable,
            });
            if env.lease_duration > 0 {
                out.expires_at = Some(SystemTime::now() + Duration::from_secs(env.lease_duration));
            }
        }
        Ok(out)
    }

    fn extract(&self, env: &mut Envelope) -> Result<(Secret, Option<u64>)> {
        let Some(data) = env.data.as_mut() else {
            return Err(self.err(ErrorCode::InvalidResponse, "Vault's answer has no data"));
        };
        if !self.kv2 {
            let Value::Object(map) = data else {
                return Err(self.err(ErrorCode::InvalidResponse, "KV v1 data is not an object"));
            };
            return Ok((self.pick(map)?, None));
        }
        let meta = kv2_metadata(data);
        if let Some(m) = &meta {
            self.check_version_state(m)?;
        }
        match data.get_mut("data") {
            Some(Value::Object(map)) => Ok((self.pick(map)?, meta.map(|m| m.version))),
            _ => Err(self
                .err(
                    ErrorCode::InvalidResponse,
                    "KV v2 answer has no data.data object",
                )
                .with_hint("is this a KV v1 mount? then write openbao://… without +kv2")),
        }
    }

    fn check_version_state(&self, m: &Kv2Meta) -> Result<()> {
        if m.destroyed {
            return Err(self.err(
                ErrorCode::VersionDestroyed,
                format!(
                    "version {} of {} is destroyed",
                    m.version,
                    self.display_path()
                ),
            ));
        }
        if !m.deletion_time.is_empty() {
            return Err(self
                .err(
                    ErrorCode::VersionDeleted,
                    format!(
                        "version {} of {} is deleted",
                        m.version,
                        self.display_path()
                    ),
                )
                .with_hint("undelete it in Vault, or pin another ?version="));
        }
        Ok(())
    }

    fn pick(&self, map: &Map<String, Value>) -> Result<Secret> {
        let text = match self.uri.field.as_deref() {
            None => Zeroizing::new(compact(&Value::Object(map.clone()))),
            Some(f) => match map.get(f) {
                Some(Value::String(s)) => return Ok(Secret::copy_from(s.as_bytes())),
                Some(other) => Zeroizing::new(compact(other)),
                None => {
                    return Err(self.err(
                        ErrorCode::FieldNotFound,
                        format!("{} has no field '{f}'", self.display_path()),
                    ))
                }
            },
        };
        Ok(Secret::copy_from(text.as_bytes()))
    }
}

fn compact(v: &Value) -> String {
    // Serialising a Value cannot fail.
    serde_json::to_string(v).unwrap_or_default()
}

/// Overwrites every string in a parsed answer before it is dropped.
fn scrub(v: &mut Value) {
    match v {
        Value::String(s) => s.zeroize(),
        Value::Array(a) => a.iter_mut().for_each(scrub),
        Value::Object(m) => m.values_mut().for_each(scrub),
        _ => {}
    }
}

/// The top level of a Vault answer.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    lease_id: String,
    #[serde(default)]
    lease_duration: u64,
    #[serde(default)]
    renewable: bool,
    #[serde(default)]
    data: Option<Value>,
}

/// `data.metadata` of a KV v2 read.
struct Kv2Meta {
    version: u64,
    deletion_time: String,
    destroyed: bool,
}

fn kv2_metadata(data: &Value) -> Option<Kv2Meta> {
    let m = data.get("metadata")?.as_object()?;
    Some(Kv2Meta {
        version: m.get("version").and_then(Value::as_u64).unwrap_or(0),
        deletion_time: m
            .get("deletion_time")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        destroyed: m.get("destroyed").and_then(Value::as_bool).unwrap_or(false),
    })
}

/// `GET <mount>/metadata/<path>` → [`Metadata`].
pub(crate) fn parse_metadata(body: &[u8], r: &SecretRef) -> Result<Metadata> {
    #[derive(Deserialize)]
    struct Env {
        data: Data,
    }
    #[derive(Deserialize)]
    struct Data {
        #[serde(default)]
        created_time: Option<String>,
        #[serde(default)]
        updated_time: Option<String>,
        #[serde(default)]
        current_version: Option<u64>,
        #[serde(default)]
        custom_metadata: Option<BTreeMap<String, Value>>,
        #[serde(default)]
        versions: BTreeMap<String, Ver>,
    }
    #[derive(Deserialize)]
    struct Ver {
        #[serde(default)]
        created_time: Option<String>,
        #[serde(default)]
        deletion_time: Option<String>,
        #[serde(default)]
        destroyed: bool,
    }
    let env: Env = serde_json::from_slice(body).map_err(|_| {
        Error::new(
            ErrorCode::InvalidResponse,
            "Vault's metadata answer is not the expected JSON",
        )
    })?;
    let d = env.data;
    let mut versions: Vec<(u64, VersionInfo)> = d
        .versions
        .into_iter()
        .filter_map(|(k, v)| {
            let n: u64 = k.parse().ok()?;
            Some((
                n,
                VersionInfo {
                    version: k,
                    created_at: v.created_time.filter(|s| !s.is_empty()),
                    deleted_at: v.deletion_time.filter(|s| !s.is_empty()),
                    destroyed: v.destroyed,
                },
            ))
        })
        .collect();
    versions.sort_by_key(|(n, _)| *n);
    let custom = d
        .custom_metadata
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => (k, s),
            other => (k, compact(&other)),
        })
        .collect();
    Ok(Metadata {
        reference: r.to_canonical().to_string(),
        current_version: d.current_version.filter(|v| *v > 0).map(|v| v.to_string()),
        created_at: d.created_time.filter(|s| !s.is_empty()),
        updated_at: d.updated_time.filter(|s| !s.is_empty()),
        versions: versions.into_iter().map(|(_, v)| v).collect(),
        custom,
        ..Metadata::default()
    })
}

/// When every item failed retryably the backend itself is down: that is a
/// request-level failure (so the resolver may serve a stale cache entry).
fn finish<T>(results: Vec<Result<T>>) -> BatchResult<T> {
    if !results.is_empty()
        && results
            .iter()
            .all(|r| r.as_ref().is_err_and(Error::retryable))
    {
        if let Some(Err(e)) = results.into_iter().next() {
            return Err(e);
        }
        return Err(Error::internal("unreachable: empty batch"));
    }
    Ok(results)
}

#[async_trait]
impl Provider for VaultProvider {
    fn name(&self) -> &str {
        "vault"
    }

    fn families(&self) -> &[&'static str] {
        &["vault"]
    }

    fn capabilities(&self) -> crate::provider::Capabilities {
        SPEC.capabilities
    }

    fn with_wrap_ttl(&self, r: &SecretRef, ttl: Duration) -> Option<SecretRef> {
        wrapped_ref(r, ttl)
    }

    /// `auth/token/lookup-self`: reachable and the token is accepted.
    async fn health(&self) -> Result<()> {
        self.lookup_self().await.map(drop)
    }

    async fn resolve_many(&self, refs: &[SecretRef]) -> BatchResult<Resolved> {
        // Credentials first: if we cannot authenticate, nothing can be read
        // (a request-level failure).
        let token = self.inner.auth.token(&self.inner.transport).await?;
        // Futures collected first: a closure held across the await trips
        // async_trait's Send check.
        let futs: Vec<_> = refs.iter().map(|r| self.read(r, &token)).collect();
        let out = stream::iter(futs).buffered(CONCURRENCY).collect().await;
        finish(out)
    }

    /// `openbao+kv2://mount/path[?version=N]`: every field of that one
    /// secret (one read; the values are dropped, the keys are the field
    /// names).
    async fn list(&self, scheme: &str, prefix: &str) -> Result<Vec<Listed>> {
        let whole = SecretRef::parse(format!("{scheme}://{prefix}"))?;
        let RefKind::Vault(uri) = whole.kind() else {
            return Err(Error::internal("vault provider got a non-vault prefix"));
        };
        if uri.field.is_some() {
            return Err(Error::usage(
                "list a Vault secret's fields without #field: openbao+kv2://mount/path",
            )
            .with_reference(whole.to_canonical()));
        }
        let token = self.inner.auth.token(&self.inner.transport).await?;
        let resolved = self.read(&whole, &token).await?;
        let mut map: Map<String, Value> = serde_json::from_slice(resolved.secret.expose_bytes())
            .map_err(|_| {
                Error::new(
                    ErrorCode::InvalidResponse,
                    "the secret's data is not a JSON object",
                )
                .with_reference(whole.to_canonical())
            })?;
        let canonical = whole.to_canonical().to_string();
        let (base, query) = canonical.split_once('?').unwrap_or((&canonical, ""));
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        let keys: Vec<String> = map.keys().cloned().collect();
        map.values_mut().for_each(scrub);
        keys.into_iter()
            .map(|key| {
                let reference = SecretRef::parse(format!("{base}#{key}{query}"))?;
                Ok(Listed { key, reference })
            })
            .collect()
    }

    async fn metadata(&self, refs: &[SecretRef]) -> BatchResult<Metadata> {
        let token = self.inner.auth.token(&self.inner.transport).await?;
        // Futures collected first: a closure held across the await trips
        // async_trait's Send check.
        let futs: Vec<_> = refs.iter().map(|r| self.metadata_one(r, &token)).collect();
        let out = stream::iter(futs).buffered(CONCURRENCY).collect().await;
        finish(out)
    }

    async fn renew_lease(
        &self,
        lease_id: &str,
        increment: Option<std::time::Duration>,
    ) -> Result<Lease> {
        let token = self.inner.auth.token(&self.inner.transport).await?;
        self.renew_one(lease_id, increment, &token).await
    }

    async fn revoke_leases(
        &self,
        lease_ids: &[String],
        reason: RevokeReason,
    ) -> BatchResult<LeaseRevocation> {
        tracing::debug!(
            count = lease_ids.len(),
            reason = reason.as_str(),
            "revoking vault leases"
        );
        let token = self.inner.auth.token(&self.inner.transport).await?;
        // Futures collected first: a closure held across the await trips
        // async_trait's Send check.
        let futs: Vec<_> = lease_ids
            .iter()
            .map(|id| self.revoke_one(id, &token))
            .collect();
        let out = stream::iter(futs).buffered(CONCURRENCY).collect().await;
        finish(out)
    }
}

/// `r` with its `wrap_ttl` query parameter set to `ttl` (whole seconds,
/// rounded up, at least 1), replacing any the caller wrote; `None` for a
/// reference that is not `openbao`/`hashicorp` (kv2 or kv1). What
/// [`VaultProvider`] answers to [`Provider::with_wrap_ttl`].
///
/// ```
/// use std::time::Duration;
/// use secref::SecretRef;
/// use secref::providers::vault::wrapped_ref;
/// let r = SecretRef::parse("openbao+kv2://secret/a#k?wrap_ttl=1h").unwrap();
/// let w = wrapped_ref(&r, Duration::from_millis(30_500)).unwrap();
/// assert_eq!(w.to_canonical(), "openbao+kv2://secret/a#k?wrap_ttl=31s");
/// assert!(wrapped_ref(&SecretRef::parse("env://A").unwrap(), Duration::from_secs(1)).is_none());
/// ```
pub fn wrapped_ref(r: &SecretRef, ttl: Duration) -> Option<SecretRef> {
    let RefKind::Vault(uri) = r.kind() else {
        return None;
    };
    if !matches!(uri.provider.as_str(), "openbao" | "hashicorp") {
        return None;
    }
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    let mut text = format!("{}://{}", r.scheme(), uri.mount);
    for seg in &uri.path {
        text.push('/');
        text.push_str(seg);
    }
    if let Some(f) = &uri.field {
        text.push('#');
        text.push_str(f);
    }
    let params = uri
        .params
        .iter()
        .filter(|(k, _)| k != "wrap_ttl")
        .map(|(k, v)| format!("{k}={v}"))
        .chain(std::iter::once(format!("wrap_ttl={}s", secs.max(1))));
    for (i, p) in params.enumerate() {
        text.push(if i == 0 { '?' } else { '&' });
        text.push_str(&p);
    }
    SecretRef::parse(text).ok()
}

/// `openbao[+kv2]://…`, `hashicorp[+kv2]://…`: Vault / OpenBao KV, parsed by
/// the shared Canonical Secret URI parser.
pub(crate) const SPEC: crate::registry::ProviderSpec = crate::registry::ProviderSpec {
    name: "vault",
    schemes: &["openbao", "openbao+kv2", "hashicorp", "hashicorp+kv2"],
    feature: Some("vault"),
    host_local: false,
    config_section: Some("vault"),
    env_vars: &[
        "VAULT_ADDR",
        "VAULT_URL",
        "VAULT_TOKEN",
        "VAULT_ROLE_ID",
        "VAULT_SECRET_ID",
        "VAULT_NAMESPACE",
        "VAULT_CACERT",
        "VAULT_CLIENT_CERT",
        "VAULT_CLIENT_KEY",
        "VAULT_VERIFY_SSL",
        "VAULT_TIMEOUT",
        "VAULT_WRAP_TTL",
        "VAULT_RENEW_MARGIN",
        "VAULT_REDIRECT_ALLOW",
    ],
    credential_env_vars: &["VAULT_TOKEN", "VAULT_SECRET_ID"],
    capabilities: crate::provider::Capabilities {
        wrap: true,
        versions: true,
        leases: true,
        list: true,
        ..crate::provider::Capabilities::NONE
    },
    parse: crate::reference::parse_canonical_uri,
    parts: super::uri::uri_parts,
    credentials: settings::credential_fields,
    build: |cfg| Ok(VaultProvider::configured(cfg)?.map(|p| Arc::new(p) as Arc<dyn Provider>)),
};
