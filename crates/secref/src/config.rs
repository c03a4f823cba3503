//! The one config loader: `secref.toml`, environment variables and explicitly
//! named dotenv files, with the validation rules every provider shares.
//!
//! `secref.toml` is looked for in the working directory, then at
//! `$SECREF_CONFIG`. Unknown keys are an error, never silently ignored.
//!
//! ```
//! let cfg = secref::Config::from_toml_str(r#"
//!     [cache]
//!     ttl_seconds = 60
//!     [local]
//!     store = "secrets.store"
//! "#).unwrap();
//! assert_eq!(cfg.cache.ttl.as_secs(), 60);
//! let err = secref::Config::from_toml_str("[cache]\nttl = 1").unwrap_err();
//! assert_eq!(err.code(), secref::ErrorCode::Config);
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::cache::CacheConfig;
use crate::error::{Error, Result};
use crate::retry::RetryPolicy;

/// The whole configuration.
///
/// Unknown top-level keys are rejected: besides the sections below, only
/// registered providers' sections ([`crate::registry::ProviderSpec::config_section`])
/// are accepted.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Config {
    /// Default cache settings for every provider.
    #[serde(default)]
    pub cache: CacheConfig,
    /// The retry policy for every provider.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// The embedded local store.
    #[serde(default)]
    pub local: LocalConfig,
    /// The `file://` provider.
    #[serde(default)]
    pub file: FileConfig,
    /// Per-provider cache overrides, by provider name.
    #[serde(default)]
    pub provider_cache: BTreeMap<String, CacheConfig>,
    /// The registered providers' own sections (`[vault]`, `[secflow]`, …),
    /// by section name; read with [`Config::section`]. Which names exist
    /// comes from the provider registry ([`crate::registry`]); any other
    /// top-level key is an error.
    #[serde(flatten)]
    pub sections: ProviderSections,
    /// Access policy enforced by the resolver (grants, tenant mounts, PDP).
    #[serde(default)]
    pub policy: Option<toml::Table>,
    /// Non-leaky audit events (sinks, HMAC salt source).
    #[serde(default)]
    pub audit: Option<toml::Table>,
    /// The local server (`secref serve`); validated by the server crate.
    #[serde(default)]
    pub server: Option<toml::Table>,
    /// Where the policy's and the server's bookkeeping lives
    /// ([`crate::state`]: memory, or Redis shared by several replicas).
    #[serde(default)]
    pub state: Option<toml::Table>,
    /// Where this config was read from, if from a file.
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// The environment the providers read, with dotenv files applied.
    #[serde(skip)]
    pub env: Env,
}

/// The registered providers' config sections, by name (opaque: read one
/// with [`Config::section`], set one with [`Config::set_section`]). `Debug`
/// shows the section names only: a section may hold credentials.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct ProviderSections(BTreeMap<String, toml::Value>);

impl std::fmt::Debug for ProviderSections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderSections")
            .field("names", &self.0.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Settings of the embedded encrypted store.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// The store file (default: `$SECREF_STORE`, else `secref.store` in the
    /// user's data dir).
    pub store: Option<PathBuf>,
    /// The key file (default: `$SECREF_KEY_FILE`, else `key` in the user's
    /// config dir). `$SECREF_KEY` (base64) takes precedence over any file.
    pub key_file: Option<PathBuf>,
}

/// Settings of the `file://` provider.
///
/// ```
/// let cfg = secref::Config::from_toml_str("[file]\nmax_bytes = 4096\nfollow_symlinks = true").unwrap();
/// assert_eq!(cfg.file.max_bytes, Some(4096));
/// assert!(cfg.file.follow_symlinks);
/// ```
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The largest file read, in bytes (default 1 MiB); a larger one is
    /// `too_large`.
    pub max_bytes: Option<u64>,
    /// Whether symbolic links in a `file://` path are followed (default:
    /// no, a symlink anywhere in the path is `unsupported`).
    #[serde(default)]
    pub follow_symlinks: bool,
}

/// A snapshot of environment variables: the process's, overlaid with any
/// dotenv files named explicitly. `Debug` shows the names only: values
/// include credentials (`SECREF_KEY`, `VAULT_TOKEN`, …).
#[derive(Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("names", &self.vars.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Env {
    /// The current process environment (non-UTF-8 variables are skipped).
    pub fn from_process() -> Env {
        Env {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        }
    }

    /// An environment from explicit pairs only (tests, embedding).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Env {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// A variable's value; empty values count as unset.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Sets a variable.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.vars.insert(key.into(), value.into());
    }

    /// Overlays a dotenv file (later values win).
    pub fn apply_dotenv(&mut self, path: &Path) -> Result<()> {
        for (k, v) in read_dotenv(path)? {
            self.vars.insert(k, v);
        }
        Ok(())
    }
}

/// Reads a dotenv file into ordered pairs (`KEY=VALUE`, `export` prefix,
/// quotes and `#` comments as dotenv defines them). Values are returned
/// verbatim otherwise: a value may be a secret reference.
pub fn read_dotenv(path: &Path) -> Result<Vec<(String, String)>> {
    let file = std::fs::File::open(path).map_err(|e| dotenv_error(path, dotenvy::Error::Io(e)))?;
    parse_dotenv(file, path)
}

/// [`read_dotenv`] over any reader; `origin` names it in errors (which
/// never quote the input: a line may hold a value).
pub fn parse_dotenv(input: impl std::io::Read, origin: &Path) -> Result<Vec<(String, String)>> {
    dotenvy::from_read_iter(input)
        .map(|item| item.map_err(|e| dotenv_error(origin, e)))
        .collect()
}

fn dotenv_error(path: &Path, e: dotenvy::Error) -> Error {
    // dotenvy's messages quote the offending line, which may hold a value:
    // report only where it failed.
    let detail = match e {
        dotenvy::Error::LineParse(_, idx) => format!("syntax error at byte {idx}"),
        dotenvy::Error::Io(io) => format!("cannot be read: {}", io.kind()),
        _ => "invalid".to_string(),
    };
    Error::config(format!("dotenv file {}: {detail}", path.display()))
}

impl Config {
    /// Parses TOML text (unknown keys are an error).
    pub fn from_toml_str(text: &str) -> Result<Config> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            // toml's message names the key and line, not values of secrets
            // (secrets do not belong in secref.toml in the first place).
            table_error("secref.toml", &e).with_hint(toml_location(text, e.span()))
        })?;
        for (name, value) in &cfg.sections.0 {
            if !crate::registry::is_config_section(name) {
                return Err(Error::config(format!(
                    "invalid secref.toml: unknown key or section '{}'",
                    crate::reference::printable(name)
                ))
                .with_hint(section_hint(text, name)));
            }
            if !value.is_table() {
                return Err(Error::config(format!(
                    "invalid secref.toml: [{name}] must be a table"
                ))
                .with_hint(section_hint(text, name)));
            }
        }
        cfg.cache.validate()?;
        cfg.retry.validate()?;
        for c in cfg.provider_cache.values() {
            c.validate()?;
        }
        Ok(cfg)
    }

    /// Loads `./secref.toml`, else `$SECREF_CONFIG`, else defaults; the
    /// environment is the process's.
    pub fn load() -> Result<Config> {
        let env = Env::from_process();
        let candidate = Path::new("secref.toml");
        let path = if candidate.is_file() {
            Some(candidate.to_path_buf())
        } else {
            env.get("SECREF_CONFIG").map(PathBuf::from)
        };
        let mut cfg = match &path {
            Some(p) => Config::from_file(p)?,
            None => Config::default(),
        };
        cfg.env = env;
        Ok(cfg)
    }

    /// Loads a specific file.
    pub fn from_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::config(format!("cannot read {}: {}", path.display(), e.kind())))?;
        let mut cfg = Config::from_toml_str(&text).map_err(|e| {
            let named = Error::config(format!("{}: {}", path.display(), e.message()));
            match e.hint() {
                Some(h) => named.with_hint(h.to_string()),
                None => named,
            }
        })?;
        cfg.source = Some(path.to_path_buf());
        cfg.env = Env::from_process();
        Ok(cfg)
    }

    /// A provider's own section, deserialised into its settings type;
    /// `Ok(None)` when the file has no such section, a `config` error when
    /// it does not fit `T` (unknown keys included, if `T` denies them).
    ///
    /// ```
    /// #[derive(serde::Deserialize)]
    /// #[serde(deny_unknown_fields)]
    /// struct Vault { url: String }
    /// let cfg = secref::Config::from_toml_str("[vault]\nurl = 'https://v.example'").unwrap();
    /// let v: Vault = cfg.section("vault").unwrap().unwrap();
    /// assert_eq!(v.url, "https://v.example");
    /// assert!(cfg.section::<Vault>("coze").unwrap().is_none());
    /// ```
    pub fn section<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        match self.sections.0.get(name) {
            None => Ok(None),
            Some(v) => v
                .clone()
                .try_into()
                .map(Some)
                .map_err(|e: toml::de::Error| table_error(&format!("[{name}] table"), &e)),
        }
    }

    /// Whether the config has a provider's section.
    pub fn has_section(&self, name: &str) -> bool {
        self.sections.0.contains_key(name)
    }

    /// Sets a provider's section from TOML text (embedding, tests); the
    /// name must be a registered provider's section.
    pub fn set_section(&mut self, name: &str, toml_text: &str) -> Result<()> {
        if !crate::registry::is_config_section(name) {
            return Err(Error::config(format!("unknown section '{name}'")));
        }
        let table: toml::Table =
            toml::from_str(toml_text).map_err(|e| table_error(&format!("[{name}] table"), &e))?;
        self.sections
            .0
            .insert(name.to_string(), toml::Value::Table(table));
        Ok(())
    }

    /// Sets one key of a provider's section (creating the section), e.g. a
    /// credential reference replaced by its value ([`crate::credentials`]).
    pub(crate) fn set_key(&mut self, section: &str, key: &str, value: &str) -> Result<()> {
        let entry = self
            .sections
            .0
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let table = entry.as_table_mut().ok_or_else(|| {
            Error::config(format!("invalid secref.toml: [{section}] must be a table"))
        })?;
        table.insert(key.to_string(), toml::Value::String(value.to_string()));
        Ok(())
    }

    /// The cache settings for a provider (its override, or the default).
    pub fn cache_for(&self, provider: &str) -> CacheConfig {
        self.provider_cache
            .get(provider)
            .cloned()
            .unwrap_or_else(|| self.cache.clone())
    }
}

/// Where a top-level key or `[section]` is, for an error hint.
fn section_hint(text: &str, name: &str) -> String {
    let line = text.lines().position(|l| {
        let l = l.trim_start();
        l.strip_prefix('[')
            .map(|r| r.trim_start_matches('[').trim_start())
            .unwrap_or(l)
            .starts_with(name)
    });
    match line {
        Some(i) => format!("see line {}", i + 1),
        None => "check the file's top-level keys".to_string(),
    }
}

/// The `config` error for a TOML table that does not deserialize: what
/// serde says is wrong, with every quoted value in its message replaced by
/// `"…"` — serde quotes the offending value (`invalid type: string "…",
/// expected u64`), and a value in a config file may be a secret. Key names
/// (which serde writes in backticks) stay. Every `[section]` parser uses it.
///
/// ```
/// let e = toml::from_str::<std::collections::BTreeMap<String, u64>>("a = 'hunter2'").unwrap_err();
/// let err = secref::config::table_error("[x]", &e);
/// assert!(!err.to_string().contains("hunter2"));
/// assert!(err.to_string().contains("[x]"));
/// ```
pub fn table_error(what: &str, e: &toml::de::Error) -> Error {
    Error::config(format!("invalid {what}: {}", redact_quoted(e.message())))
}

/// `text` with the contents of every double-quoted run replaced by `…`.
fn redact_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '"' {
            out.push('…');
            let mut escaped = false;
            for c in chars.by_ref() {
                match c {
                    '\\' if !escaped => escaped = true,
                    '"' if !escaped => {
                        out.push('"');
                        break;
                    }
                    _ => escaped = false,
                }
            }
        }
    }
    out
}

fn toml_location(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(s) => {
            let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
            format!("see line {line}")
        }
        None => "check the file's syntax".to_string(),
    }
}

/// Checks a backend base URL: `https://`, or `http://` only for loopback
/// hosts (`localhost`, 127.0.0.0/8, `[::1]`). Returns it without a trailing
/// slash.
///
/// ```
/// use secref::config::validate_base_url;
/// assert!(validate_base_url("X_URL", "https://vault.example.com/").is_ok());
/// assert!(validate_base_url("X_URL", "http://127.0.0.2:8200").is_ok());
/// assert!(validate_base_url("X_URL", "http://[::1]:8080").is_ok());
/// assert!(validate_base_url("X_URL", "http://vault.example.com").is_err());
/// assert!(validate_base_url("X_URL", "ftp://localhost").is_err());
/// ```
pub fn validate_base_url(name: &str, raw: &str) -> Result<Url> {
    let trimmed = raw.trim().trim_end_matches('/');
    let url = Url::parse(trimmed)
        .map_err(|e| Error::config(format!("{name} is not a valid URL: {e}")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::config(format!(
            "{name} must not contain credentials"
        )));
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback_host(&url) => Ok(url),
        "http" => Err(Error::config(format!(
            "{name} must use https:// (plain http is allowed only for loopback hosts)"
        ))),
        other => Err(Error::config(format!(
            "{name} has unsupported scheme '{other}': use https://"
        ))),
    }
}

/// Whether a URL's host is loopback: `localhost` (with or without a trailing
/// dot), any address in 127.0.0.0/8, or `::1`.
pub fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost"
        }
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// Parses and checks a timeout in seconds: a finite number > 0 and ≤ 300.
///
/// ```
/// use secref::config::parse_timeout;
/// assert_eq!(parse_timeout("T", " 30 ").unwrap().as_secs(), 30);
/// assert!(parse_timeout("T", "0").is_err());
/// assert!(parse_timeout("T", "301").is_err());
/// assert!(parse_timeout("T", "abc").is_err());
/// ```
pub fn parse_timeout(name: &str, raw: &str) -> Result<Duration> {
    let secs: f64 = raw
        .trim()
        .parse()
        .map_err(|_| Error::config(format!("{name} must be a positive number of seconds")))?;
    check_timeout(name, secs)
}

/// Checks a timeout in seconds: finite, > 0 and ≤ 300.
pub fn check_timeout(name: &str, secs: f64) -> Result<Duration> {
    if !secs.is_finite() || secs <= 0.0 || secs > 300.0 {
        return Err(Error::config(format!(
            "{name} must be greater than 0 and at most 300 seconds"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a boolean strictly: `true/false/1/0/yes/no` (any case). Anything
/// else is a config error — never a silent default.
pub fn parse_bool(name: &str, raw: &str) -> Result<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(Error::config(format!(
            "{name} must be one of true, false, 1, 0, yes, no"
        ))),
    }
}

/// Serde helper: a `Duration` written as whole seconds.
pub(crate) mod secs {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        if !v.is_finite() || v < 0.0 {
            return Err(serde::de::Error::custom("must be a non-negative number"));
        }
        Ok(Duration::from_secs_f64(v))
    }
}

/// Serde helper: a `Duration` written as milliseconds.
pub(crate) mod millis {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_errors() {
        for bad in [
            "nope = 1",
            "[local]\nstor = 'x'",
            "[retry]\nmax_attempts = 0",
        ] {
            let e = Config::from_toml_str(bad).unwrap_err();
            assert_eq!(e.code(), crate::ErrorCode::Config, "{bad}");
        }
    }

    #[test]
    fn debug_shows_section_names_not_credentials() {
        let cfg =
            Config::from_toml_str("[infisical]\nclient_id = 'a'\nclient_secret = 'canary-cs-1'")
                .unwrap();
        let dbg = format!("{cfg:?}");
        assert!(
            dbg.contains("infisical") && !dbg.contains("canary-cs-1"),
            "{dbg}"
        );
    }

    #[test]
    fn loopback_rules() {
        for ok in [
            "http://localhost:1",
            "http://LOCALHOST.:1",
            "http://127.9.9.9",
            "https://example.com/prefix/",
        ] {
            assert!(validate_base_url("U", ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://localhost.localdomain",
            "http://10.0.0.1",
            "http://example.com",
            "https://user:pw@example.com",
            "not a url",
        ] {
            assert!(validate_base_url("U", bad).is_err(), "{bad}");
        }
        assert_eq!(
            validate_base_url("U", "https://example.com/prefix/")
                .unwrap()
                .as_str(),
            "https://example.com/prefix"
        );
    }

    #[test]
    fn strict_bools() {
        assert!(parse_bool("B", "YES").unwrap());
        assert!(!parse_bool("B", "0").unwrap());
        assert!(parse_bool("B", "False ").is_ok());
        assert!(parse_bool("B", "").is_err());
        assert!(parse_bool("B", "off").is_err());
    }
}
