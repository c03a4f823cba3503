//! The `[server]` table of `secref.toml`, parsed strictly (unknown keys are
//! errors).
//!
//! ```toml
//! [server]
//! bind = "127.0.0.1:8787"             # loopback only, unless TLS is configured
//! tls_cert = "/etc/secref/tls.crt"    # PEM; with tls_key: HTTPS (see the `tls` module)
//! tls_key = "/etc/secref/tls.key"
//! client_ca = "/etc/secref/ca.crt"    # optional: mTLS, principals `cert:<subject>`
//! lease_ttl_seconds = 300
//! max_revoked_leases_per_principal = 10000  # revoked, not yet expired leases
//! max_wraps_per_principal = 1000      # outstanding Vault wrapping tokens
//! max_body_bytes = 1048576
//! request_timeout_seconds = 30        # whole request, body included (→ 504)
//! header_read_timeout_seconds = 10    # a request's headers, from when the server waits for them
//! idle_timeout_seconds = 60           # no request running and no byte moving → closed
//! max_connections = 512               # TCP + Unix socket; beyond it → 503 and close
//! shutdown_grace_seconds = 10         # SIGTERM: in-flight requests get this long
//! socket = "/run/user/1000/secref.sock"   # optional Unix socket (0600)
//! metrics_public = false              # true: GET /metrics without a token
//! # where `secret://<environment>/<service>/<kind>/<name>` is read from:
//! secflow_ref_template = "local://secflow/{environment}/{service}/{kind}/{name}"
//!
//! [server.tokens.ci]                  # extra named tokens (besides `default`)
//! token_env = "SECREF_CI_TOKEN"       # or token_file = "/path"
//!
//! [[server.rules]]                    # see the `access` module
//! principals = ["ci"]
//! refs = ["secret://dev/app/*"]
//!
//! [server.vault.mounts.secret]        # the default: Vault mount `secret` = the local store
//! backend = "local://{path}"
//! [server.vault.mounts.team]          # a read-only caching proxy of a real Vault / OpenBao
//! backend = "openbao+kv2://secret/team/{path}"
//! kv_version = 2                      # what clients are told (1 or 2; default 2)
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secref::config::{check_timeout, Env};
use secref::{Error, Result, Secret, SecretRef};
use serde::Deserialize;

use crate::access::Rule;
pub use crate::tls::TlsFiles;

/// The default listen address.
pub const DEFAULT_BIND: &str = "127.0.0.1:8787";
/// The default mapping of SecFlow refs onto secref refs.
pub const DEFAULT_SECFLOW_TEMPLATE: &str = "local://secflow/{environment}/{service}/{kind}/{name}";

/// The server's settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Where to listen.
    pub bind: SocketAddr,
    /// How long issued leases last unless the client asks for less.
    pub lease_ttl: Duration,
    /// Revoked (not yet expired) leases each principal may hold; past it,
    /// that principal's revocations are `rate_limited`.
    pub max_revoked_leases_per_principal: usize,
    /// Outstanding Vault wrapping tokens each principal may hold; past it,
    /// that principal's wrapped reads are 503 (retryable).
    pub max_wraps_per_principal: usize,
    /// Largest request body accepted (larger → 413).
    pub max_body_bytes: usize,
    /// Longest a request may take (longer → 504 `TIMEOUT`, retryable).
    pub request_timeout: Duration,
    /// Longest the server waits for a request's headers, counted from when
    /// it starts waiting (so it also ends an idle keep-alive connection).
    pub header_read_timeout: Duration,
    /// A connection with no request running on which no byte moves for this
    /// long is closed (e.g. a client that stopped reading its answer).
    pub idle_timeout: Duration,
    /// Most open connections (TCP and Unix socket together); one more is
    /// answered 503 and closed at once.
    pub max_connections: usize,
    /// On SIGTERM, how long in-flight requests may still finish before the
    /// server exits anyway.
    pub shutdown_grace: Duration,
    /// Template mapping `secret://` refs onto secref refs.
    pub secflow_ref_template: String,
    /// Extra named tokens: name → where to read the token.
    pub tokens: BTreeMap<String, TokenSource>,
    /// Access rules, patterns checked at load (empty = everything allowed
    /// except host-local `env://` / `file://` refs; see [`crate::access`]).
    pub rules: Vec<Rule>,
    /// A Unix socket to listen on too (mode 0600; callers identified by
    /// their peer credentials instead of a token).
    pub socket: Option<PathBuf>,
    /// The Vault API's mounts, by name (default: `secret` → the local store).
    pub vault_mounts: BTreeMap<String, VaultMount>,
    /// Serve `GET /metrics` without authentication (default: the API's
    /// authentication applies).
    pub metrics_public: bool,
    /// TLS for the TCP listener (`tls_cert` + `tls_key`, optional
    /// `client_ca` for mTLS); see [`crate::tls`]. Without it the server
    /// listens on loopback only.
    pub tls: Option<TlsFiles>,
}

/// One mount of the Vault API (`[server.vault.mounts.<name>]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultMount {
    /// Where the mount's secrets live.
    pub backend: MountBackend,
    /// The KV version clients are told (1 or 2): with 2, secrets are at
    /// `<mount>/data/<path>`; with 1, at `<mount>/<path>`.
    pub kv_version: u8,
}

/// What backs a Vault mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountBackend {
    /// The local store: `<mount>/<path>` is the entry `<prefix><path>`,
    /// whose fields are the secret's keys. Read-write.
    Local {
        /// Entry-name prefix (`""` for `local://{path}`, `team/` for
        /// `local://team/{path}`).
        prefix: String,
    },
    /// Any other reference template with `{path}` (e.g.
    /// `openbao+kv2://secret/{path}`): read-only, read through the
    /// resolver and its cache.
    Upstream {
        /// The template.
        template: String,
    },
}

impl VaultMount {
    /// Parses a mount's `backend` template.
    ///
    /// ```
    /// use secref_server::config::{MountBackend, VaultMount};
    /// let m = VaultMount::parse("local://team/{path}", 2).unwrap();
    /// assert_eq!(m.backend, MountBackend::Local { prefix: "team/".into() });
    /// assert!(VaultMount::parse("openbao+kv2://secret/{path}", 2).is_ok());
    /// assert!(VaultMount::parse("openbao+kv2://secret/fixed", 2).is_err());
    /// assert!(VaultMount::parse("local://{path}", 3).is_err());
    /// ```
    pub fn parse(backend: &str, kv_version: u8) -> Result<VaultMount> {
        if !(1..=2).contains(&kv_version) {
            return Err(Error::config("vault mount kv_version must be 1 or 2"));
        }
        if backend.matches("{path}").count() != 1 || !backend.ends_with("{path}") {
            return Err(Error::config(format!(
                "vault mount backend '{backend}' must end with one {{path}}"
            )));
        }
        let sample = backend.replace("{path}", "a/b");
        SecretRef::parse(&sample).map_err(|e| {
            Error::config(format!(
                "vault mount backend '{backend}' does not give a valid reference: {}",
                e.message()
            ))
        })?;
        let backend = match backend.strip_prefix("local://") {
            Some(rest) => MountBackend::Local {
                prefix: rest.trim_end_matches("{path}").to_string(),
            },
            None => MountBackend::Upstream {
                template: backend.to_string(),
            },
        };
        Ok(VaultMount {
            backend,
            kv_version,
        })
    }
}

/// The default mounts: `secret` → the local store, KV v2.
fn default_vault_mounts() -> BTreeMap<String, VaultMount> {
    [(
        "secret".to_string(),
        VaultMount {
            backend: MountBackend::Local {
                prefix: String::new(),
            },
            kv_version: 2,
        },
    )]
    .into_iter()
    .collect()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawVault {
    #[serde(default)]
    mounts: BTreeMap<String, RawMount>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMount {
    backend: String,
    kv_version: Option<u8>,
}

/// The variables holding `secref serve`'s named tokens under `cfg` (each
/// `[server.tokens.<name>] token_env`): a process holding one can call the
/// agent as that principal. Read leniently: a `[server]` table that does not
/// parse still names them (starting the server reports the error).
pub fn credential_env_vars(cfg: &secref::Config) -> Vec<String> {
    let Some(tokens) = cfg
        .server
        .as_ref()
        .and_then(|t| t.get("tokens")?.as_table())
    else {
        return Vec::new();
    };
    tokens
        .values()
        .filter_map(|t| t.get("token_env")?.as_str().map(str::to_string))
        .collect()
}

/// Where a named token comes from.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSource {
    /// An environment variable holding the token.
    pub token_env: Option<String>,
    /// A file holding the token (trimmed).
    pub token_file: Option<PathBuf>,
}

impl TokenSource {
    /// Reads the token.
    pub fn load(&self, name: &str, env: &Env) -> Result<Secret> {
        let raw = match (&self.token_env, &self.token_file) {
            (Some(var), None) => zeroize::Zeroizing::new(
                env.get(var)
                    .ok_or_else(|| {
                        Error::config(format!("server token '{name}': {var} is not set"))
                    })?
                    .to_string(),
            ),
            (None, Some(path)) => read_token_file(path)?,
            _ => {
                return Err(Error::config(format!(
                    "server token '{name}' needs exactly one of token_env, token_file"
                )))
            }
        };
        let token = raw.trim();
        if token.len() < 16 {
            return Err(Error::config(format!(
                "server token '{name}' must be at least 16 characters"
            )));
        }
        Ok(Secret::from(token))
    }
}

/// Reads a token file (not yet trimmed) after the shared credential-file
/// check (owner-only mode, see `secref::credfile`); errors name the path,
/// never the content.
pub fn read_token_file(path: &std::path::Path) -> Result<zeroize::Zeroizing<String>> {
    let bytes = secref::credfile::read_private_file(path, "token file")?.ok_or_else(|| {
        Error::config(format!(
            "cannot read token file {}: not found",
            path.display()
        ))
    })?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| Error::config(format!("token file {} is not UTF-8", path.display())))?;
    Ok(zeroize::Zeroizing::new(text.to_owned()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServerConfig {
    bind: Option<String>,
    lease_ttl_seconds: Option<u64>,
    max_revoked_leases_per_principal: Option<usize>,
    max_wraps_per_principal: Option<usize>,
    max_body_bytes: Option<usize>,
    request_timeout_seconds: Option<f64>,
    header_read_timeout_seconds: Option<f64>,
    idle_timeout_seconds: Option<f64>,
    max_connections: Option<usize>,
    shutdown_grace_seconds: Option<f64>,
    secflow_ref_template: Option<String>,
    #[serde(default)]
    tokens: BTreeMap<String, TokenSource>,
    #[serde(default)]
    rules: Vec<Rule>,
    socket: Option<PathBuf>,
    vault: Option<RawVault>,
    #[serde(default)]
    metrics_public: bool,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: DEFAULT_BIND.parse().expect("valid default"),
            lease_ttl: Duration::from_secs(300),
            max_revoked_leases_per_principal: crate::leases::DEFAULT_REVOKED_QUOTA,
            max_wraps_per_principal: crate::vault::DEFAULT_WRAP_QUOTA,
            max_body_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 512,
            shutdown_grace: Duration::from_secs(10),
            secflow_ref_template: DEFAULT_SECFLOW_TEMPLATE.to_string(),
            tokens: BTreeMap::new(),
            rules: Vec::new(),
            socket: None,
            vault_mounts: default_vault_mounts(),
            metrics_public: false,
            tls: None,
        }
    }
}

impl ServerConfig {
    /// Parses the `[server]` table (absent = defaults).
    ///
    /// ```
    /// let t: toml::Table = toml::from_str("bind = '127.0.0.1:0'\nlease_ttl_seconds = 60").unwrap();
    /// let c = secref_server::ServerConfig::from_table(Some(&t)).unwrap();
    /// assert_eq!(c.lease_ttl.as_secs(), 60);
    /// let t: toml::Table = toml::from_str("max_connections = 8\nheader_read_timeout_seconds = 0.5").unwrap();
    /// let c = secref_server::ServerConfig::from_table(Some(&t)).unwrap();
    /// assert_eq!((c.max_connections, c.header_read_timeout.as_millis()), (8, 500));
    /// let zero: toml::Table = toml::from_str("max_connections = 0").unwrap();
    /// assert!(secref_server::ServerConfig::from_table(Some(&zero)).is_err());
    /// let bad: toml::Table = toml::from_str("bnid = 'x'").unwrap();
    /// assert!(secref_server::ServerConfig::from_table(Some(&bad)).is_err());
    /// let half: toml::Table = toml::from_str("tls_cert = '/c.pem'").unwrap();
    /// assert!(secref_server::ServerConfig::from_table(Some(&half)).is_err());
    /// ```
    pub fn from_table(table: Option<&toml::Table>) -> Result<ServerConfig> {
        let Some(table) = table else {
            return Ok(ServerConfig::default());
        };
        let raw: RawServerConfig = toml::Value::Table(table.clone())
            .try_into()
            .map_err(|e: toml::de::Error| secref::config::table_error("[server] table", &e))?;
        let mut cfg = ServerConfig {
            metrics_public: raw.metrics_public,
            ..ServerConfig::default()
        };
        if let Some(b) = raw.bind {
            cfg.bind = b.parse().map_err(|_| {
                Error::config(format!(
                    "server bind '{b}' is not an address like 127.0.0.1:8787"
                ))
            })?;
        }
        if let Some(t) = raw.lease_ttl_seconds {
            if t == 0 || t > 86_400 {
                return Err(Error::config("server lease_ttl_seconds must be 1..=86400"));
            }
            cfg.lease_ttl = Duration::from_secs(t);
        }
        for (key, n, field) in [
            (
                "max_revoked_leases_per_principal",
                raw.max_revoked_leases_per_principal,
                &mut cfg.max_revoked_leases_per_principal,
            ),
            (
                "max_wraps_per_principal",
                raw.max_wraps_per_principal,
                &mut cfg.max_wraps_per_principal,
            ),
        ] {
            if let Some(n) = n {
                if n == 0 || n > 1_000_000 {
                    return Err(Error::config(format!("server {key} must be 1..=1000000")));
                }
                *field = n;
            }
        }
        if let Some(n) = raw.max_body_bytes {
            if n < 1024 {
                return Err(Error::config("server max_body_bytes must be at least 1024"));
            }
            cfg.max_body_bytes = n;
        }
        if let Some(t) = raw.request_timeout_seconds {
            cfg.request_timeout = check_timeout("server request_timeout_seconds", t)?;
        }
        if let Some(t) = raw.header_read_timeout_seconds {
            cfg.header_read_timeout = check_timeout("server header_read_timeout_seconds", t)?;
        }
        if let Some(t) = raw.idle_timeout_seconds {
            cfg.idle_timeout = check_timeout("server idle_timeout_seconds", t)?;
        }
        if let Some(t) = raw.shutdown_grace_seconds {
            cfg.shutdown_grace = check_timeout("server shutdown_grace_seconds", t)?;
        }
        if let Some(n) = raw.max_connections {
            if !(1..=65_536).contains(&n) {
                return Err(Error::config("server max_connections must be 1..=65536"));
            }
            cfg.max_connections = n;
        }
        if let Some(t) = raw.secflow_ref_template {
            cfg.secflow_ref_template = t;
        }
        check_template(&cfg.secflow_ref_template)?;
        if raw.tokens.contains_key(crate::auth::DEFAULT_TOKEN_NAME) {
            return Err(Error::config(
                "server token name 'default' is reserved for the start-up token",
            ));
        }
        cfg.tokens = raw.tokens;
        for rule in &raw.rules {
            rule.check()?;
        }
        cfg.rules = raw.rules;
        cfg.socket = raw.socket;
        cfg.tls = match (raw.tls_cert, raw.tls_key, raw.client_ca) {
            (None, None, None) => None,
            (Some(cert), Some(key), client_ca) => Some(TlsFiles {
                cert,
                key,
                client_ca,
            }),
            (None, None, Some(_)) => {
                return Err(Error::config(
                    "server client_ca needs tls_cert and tls_key (mTLS runs over TLS)",
                ))
            }
            _ => {
                return Err(Error::config(
                    "server tls_cert and tls_key must be given together",
                ))
            }
        };
        if let Some(vault) = raw.vault.filter(|v| !v.mounts.is_empty()) {
            cfg.vault_mounts = BTreeMap::new();
            for (name, m) in vault.mounts {
                // One path segment: the router splits the mount off there,
                // and `sys`/`auth` are the API's own.
                let plain = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
                if !plain || name == "sys" || name == "auth" || name == "secrets" {
                    return Err(Error::config(format!(
                        "vault mount name '{name}' must be one segment of A-Z a-z 0-9 _ - . and not sys, auth or secrets"
                    )));
                }
                let mount = VaultMount::parse(&m.backend, m.kv_version.unwrap_or(2))?;
                cfg.vault_mounts.insert(name, mount);
            }
        }
        Ok(cfg)
    }
}

/// Fills the SecFlow template with a ref's segments.
pub fn fill_template(template: &str, env: &str, service: &str, kind: &str, name: &str) -> String {
    template
        .replace("{environment}", env)
        .replace("{service}", service)
        .replace("{kind}", kind)
        .replace("{name}", name)
}

fn check_template(template: &str) -> Result<()> {
    let sample = fill_template(template, "dev", "svc", "token", "name");
    SecretRef::parse(&sample).map_err(|e| {
        Error::config(format!(
            "server secflow_ref_template does not give a valid reference: {}",
            e.message()
        ))
    })?;
    Ok(())
}
