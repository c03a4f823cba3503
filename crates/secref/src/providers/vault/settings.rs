//! Vault provider settings: the `[vault]` table of `secref.toml` overlaid
//! with `VAULT_*` environment variables (the table wins setting by setting; the
//! environment fills what it leaves out — one rule for every provider), validated
//! strictly. Credentials are read into [`Secret`]s and never echoed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::config::{self, Env};
use crate::error::{Error, Result};
use crate::secret::Secret;

/// The `[vault]` table. Unknown keys are an error; secrets themselves are
/// not accepted inline (use `token_file` / `secret_id_file`, the env, or a
/// reference in `token` / `secret_id`, which [`crate::credentials`] replaces
/// by its value before the table is read).
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct VaultTable {
    url: Option<String>,
    token: Option<zeroize::Zeroizing<String>>,
    token_file: Option<PathBuf>,
    secret_id: Option<zeroize::Zeroizing<String>>,
    namespace: Option<String>,
    timeout_seconds: Option<f64>,
    verify_ssl: Option<bool>,
    ca_cert: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    approle_mount: Option<String>,
    role_id: Option<String>,
    role_id_file: Option<PathBuf>,
    secret_id_file: Option<PathBuf>,
    wrap_ttl: Option<String>,
    renew_margin_seconds: Option<f64>,
    redirect_allow: Option<Vec<String>>,
}

/// How the provider authenticates.
pub(super) enum Credentials {
    /// A token used as is (`VAULT_TOKEN`, `token_file` or `~/.vault-token`).
    Token(Secret),
    /// AppRole login; the issued token is renewed and re-obtained as needed.
    AppRole {
        mount: String,
        role_id: Secret,
        secret_id: Secret,
    },
}

/// Validated settings.
pub(super) struct Settings {
    pub base: Url,
    pub namespace: Option<String>,
    pub timeout: Duration,
    pub verify_tls: bool,
    pub ca_cert: Option<PathBuf>,
    pub client_identity: Option<(PathBuf, PathBuf)>,
    pub credentials: Credentials,
    pub wrap_ttl: Option<String>,
    pub renew_margin: Option<Duration>,
    pub redirect_allow: Vec<url::Origin>,
}

/// Whether anything Vault-related is configured at all.
pub(super) fn is_configured(has_table: bool, env: &Env) -> bool {
    has_table || env.get("VAULT_ADDR").is_some() || env.get("VAULT_URL").is_some()
}

impl Settings {
    pub fn load(table: Option<&toml::Table>, env: &Env) -> Result<Settings> {
        let t: VaultTable = match table {
            Some(t) => t
                .clone()
                .try_into()
                .map_err(|e: toml::de::Error| crate::config::table_error("[vault] table", &e))?,
            None => VaultTable::default(),
        };
        let credentials = load_credentials(&t, env)?;

        let url = t
            .url
            .clone()
            .or_else(|| env.get("VAULT_URL").map(str::to_string))
            .or_else(|| env.get("VAULT_ADDR").map(str::to_string))
            .ok_or_else(|| {
                Error::config("no Vault address: set VAULT_ADDR (or VAULT_URL) or [vault] url")
            })?;
        let base = config::validate_base_url("VAULT_ADDR", &url)?;

        let namespace = t
            .namespace
            .clone()
            .or_else(|| env.get("VAULT_NAMESPACE").map(str::to_string))
            .map(|ns| ns.trim().trim_matches('/').to_string())
            .filter(|ns| !ns.is_empty());
        if let Some(ns) = &namespace {
            if !ns.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(Error::config(
                    "VAULT_NAMESPACE may only contain printable ASCII without spaces",
                ));
            }
        }

        let timeout = match t.timeout_seconds {
            Some(s) => config::check_timeout("[vault] timeout_seconds", s)?,
            None => match env.get("VAULT_TIMEOUT") {
                Some(raw) => config::parse_timeout("VAULT_TIMEOUT", raw)?,
                None => Duration::from_secs(30),
            },
        };

        // Strict: the reference SDK turns verification off for any value
        // other than true/1/yes, including typos. Here a typo is an error.
        let verify_tls = match (t.verify_ssl, env.get("VAULT_VERIFY_SSL")) {
            (Some(v), _) => v,
            (None, Some(raw)) => config::parse_bool("VAULT_VERIFY_SSL", raw)?,
            (None, None) => true,
        };

        let ca_cert = t
            .ca_cert
            .or_else(|| env.get("VAULT_CACERT").map(PathBuf::from));
        // The client certificate and its key are one setting: both from the
        // table if it names either, else both from the environment.
        let (cert, key) = if t.client_cert.is_some() || t.client_key.is_some() {
            (t.client_cert, t.client_key)
        } else {
            (
                env.get("VAULT_CLIENT_CERT").map(PathBuf::from),
                env.get("VAULT_CLIENT_KEY").map(PathBuf::from),
            )
        };
        let client_identity = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err(Error::config(
                    "VAULT_CLIENT_CERT and VAULT_CLIENT_KEY must be set together",
                ))
            }
        };

        let wrap_ttl = match t
            .wrap_ttl
            .clone()
            .or_else(|| env.get("VAULT_WRAP_TTL").map(str::to_string))
        {
            Some(raw) => Some(parse_wrap_ttl("VAULT_WRAP_TTL", &raw)?),
            None => None,
        };

        let renew_margin = match t.renew_margin_seconds {
            Some(s) => Some(parse_margin("[vault] renew_margin_seconds", Some(s))?),
            None => match env.get("VAULT_RENEW_MARGIN") {
                Some(raw) => Some(parse_margin("VAULT_RENEW_MARGIN", raw.trim().parse().ok())?),
                None => None,
            },
        };

        let mut redirect_allow = Vec::new();
        let allow_raw: Vec<String> = match (&t.redirect_allow, env.get("VAULT_REDIRECT_ALLOW")) {
            (Some(list), _) => list.clone(),
            (None, Some(raw)) => raw
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            (None, None) => Vec::new(),
        };
        for raw in allow_raw {
            let u = config::validate_base_url("VAULT_REDIRECT_ALLOW", &raw)?;
            redirect_allow.push(u.origin());
        }

        Ok(Settings {
            base,
            namespace,
            timeout,
            verify_tls,
            ca_cert,
            client_identity,
            credentials,
            wrap_ttl,
            renew_margin,
            redirect_allow,
        })
    }
}

fn parse_margin(name: &str, secs: Option<f64>) -> Result<Duration> {
    match secs {
        Some(s) if s.is_finite() && s >= 0.0 => Ok(Duration::from_secs_f64(s)),
        _ => Err(Error::config(format!(
            "{name} must be a non-negative number of seconds"
        ))),
    }
}

/// AppRole when a role id is configured, else a token.
fn load_credentials(t: &VaultTable, env: &Env) -> Result<Credentials> {
    // Each credential (inline or as a file) is one setting: from the table
    // if it names it, else from the environment.
    let role_id = if t.role_id.is_some() || t.role_id_file.is_some() {
        one_of("role_id", t.role_id.clone(), t.role_id_file.clone())?
    } else {
        one_of(
            "VAULT_ROLE_ID",
            env.get("VAULT_ROLE_ID").map(str::to_string),
            env.get("VAULT_ROLE_ID_FILE").map(PathBuf::from),
        )?
    };
    let secret_id = match (&t.secret_id, &t.secret_id_file) {
        (Some(_), Some(_)) => {
            return Err(Error::config(
                "[vault] takes one of secret_id and secret_id_file, not both",
            ))
        }
        (Some(inline), None) => Some(inline_secret("[vault] secret_id", inline)?),
        (None, Some(path)) => Some(read_secret_file("[vault] secret_id_file", path)?),
        (None, None) => one_of(
            "VAULT_SECRET_ID",
            env.get("VAULT_SECRET_ID").map(str::to_string),
            env.get("VAULT_SECRET_ID_FILE").map(PathBuf::from),
        )?,
    };
    match (role_id, secret_id) {
        (Some(role_id), Some(secret_id)) => {
            let mount = t
                .approle_mount
                .clone()
                .or_else(|| env.get("VAULT_APPROLE_MOUNT").map(str::to_string))
                .unwrap_or_else(|| "approle".to_string());
            let mount = mount.trim_matches('/').to_string();
            if mount.is_empty()
                || !mount.split('/').all(|s| {
                    !s.is_empty()
                        && s.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                })
            {
                return Err(Error::config(
                    "VAULT_APPROLE_MOUNT must be a path of A-Z a-z 0-9 . _ - segments",
                ));
            }
            Ok(Credentials::AppRole {
                mount,
                role_id,
                secret_id,
            })
        }
        (Some(_), None) => Err(Error::config(
            "VAULT_ROLE_ID is set but no secret id: set VAULT_SECRET_ID or VAULT_SECRET_ID_FILE",
        )),
        (None, Some(_)) => Err(Error::config(
            "a Vault secret id is set but no role id: set VAULT_ROLE_ID or VAULT_ROLE_ID_FILE",
        )),
        (None, None) => {
            if t.token.is_some() && t.token_file.is_some() {
                return Err(Error::config(
                    "[vault] takes one of token and token_file, not both",
                ));
            }
            if let Some(inline) = &t.token {
                return Ok(Credentials::Token(inline_secret("[vault] token", inline)?));
            }
            if let Some(path) = &t.token_file {
                return Ok(Credentials::Token(read_secret_file(
                    "[vault] token_file",
                    path,
                )?));
            }
            if let Some(tok) = env.get("VAULT_TOKEN") {
                return Ok(Credentials::Token(Secret::from(tok.trim())));
            }
            if let Some(home) = env.get("HOME") {
                let path = Path::new(home).join(".vault-token");
                if path.is_file() {
                    return Ok(Credentials::Token(read_secret_file(
                        "~/.vault-token",
                        &path,
                    )?));
                }
            }
            Err(Error::config(
                "no Vault credentials: set VAULT_TOKEN, write ~/.vault-token, or set VAULT_ROLE_ID and VAULT_SECRET_ID",
            ))
        }
    }
}

/// A credential given either inline or as a file, never both.
fn one_of(name: &str, inline: Option<String>, file: Option<PathBuf>) -> Result<Option<Secret>> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(Error::config(format!(
            "set either {name} or {name}_FILE, not both"
        ))),
        (Some(v), None) => {
            let v = Secret::from(v.trim());
            if v.is_empty() {
                return Err(Error::config(format!("{name} is empty")));
            }
            Ok(Some(v))
        }
        (None, Some(path)) => Ok(Some(read_secret_file(&format!("{name}_FILE"), &path)?)),
        (None, None) => Ok(None),
    }
}

/// A credential given in the table (after dereferencing), trimmed.
fn inline_secret(name: &str, value: &str) -> Result<Secret> {
    let v = Secret::from(value.trim());
    if v.is_empty() {
        return Err(Error::config(format!("{name} is empty")));
    }
    Ok(v)
}

/// Where Vault credentials are read ([`crate::credentials`]): `token` and
/// `secret_id` in `[vault]` take only references; the environment's may be
/// either.
pub(super) fn credential_fields(_cfg: &crate::Config) -> Vec<crate::credentials::CredentialField> {
    use crate::credentials::CredentialField::{Env, Key};
    vec![
        Key {
            name: "token",
            reference_only: true,
        },
        Key {
            name: "secret_id",
            reference_only: true,
        },
        Key {
            name: "role_id",
            reference_only: false,
        },
        Env("VAULT_TOKEN".into()),
        Env("VAULT_SECRET_ID".into()),
        Env("VAULT_ROLE_ID".into()),
    ]
}

/// Reads a credential file; surrounding whitespace is dropped. Errors name
/// the file, never its contents.
fn read_secret_file(name: &str, path: &Path) -> Result<Secret> {
    let bytes = crate::credfile::read_private_file(path, name)?.ok_or_else(|| {
        Error::config(format!("{name}: cannot read {}: not found", path.display()))
    })?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| Error::config(format!("{name}: {} is not UTF-8", path.display())))?
        .trim();
    if text.is_empty() {
        return Err(Error::config(format!(
            "{name}: {} is empty",
            path.display()
        )));
    }
    Ok(Secret::from(text))
}

/// A Vault duration for `X-Vault-Wrap-TTL`: whole seconds, optionally with an
/// `s`, `m` or `h` unit (`60`, `60s`, `5m`, `1h`), greater than zero.
///
/// Returned normalised with a unit so the header is unambiguous.
pub(super) fn parse_wrap_ttl(name: &str, raw: &str) -> Result<String> {
    let raw = raw.trim();
    let (digits, unit) = match raw.char_indices().last() {
        Some((i, c @ ('s' | 'm' | 'h'))) => (&raw[..i], c),
        _ => (raw, 's'),
    };
    let ok = !digits.is_empty() && digits.len() <= 9 && digits.bytes().all(|b| b.is_ascii_digit());
    match digits.parse::<u64>() {
        Ok(n) if ok && n > 0 => Ok(format!("{n}{unit}")),
        _ => Err(Error::config(format!(
            "{name} must be a positive duration such as 60s, 5m or 1h"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn verify_ssl_is_strict() {
        let base = [
            ("VAULT_ADDR", "http://127.0.0.1:8200"),
            ("VAULT_TOKEN", "t"),
        ];
        for bad in ["False-ish", "off", "nope"] {
            let mut e = env(&base);
            e.set("VAULT_VERIFY_SSL", bad);
            let err = Settings::load(None, &e).err().expect("must fail");
            assert_eq!(err.code(), crate::ErrorCode::Config, "{bad}");
        }
        let mut e = env(&base);
        e.set("VAULT_VERIFY_SSL", "false");
        assert!(!Settings::load(None, &e).unwrap().verify_tls);
        assert!(Settings::load(None, &env(&base)).unwrap().verify_tls);
    }

    #[test]
    fn addresses_and_credentials() {
        let e = env(&[
            ("VAULT_ADDR", "http://vault.example.com"),
            ("VAULT_TOKEN", "t"),
        ]);
        assert!(Settings::load(None, &e).is_err(), "plain http off loopback");
        let e = env(&[("VAULT_ADDR", "https://vault.example.com")]);
        let err = Settings::load(None, &e).err().unwrap();
        assert!(err.message().contains("no Vault credentials"));
        let e = env(&[("VAULT_ADDR", "https://v.example"), ("VAULT_ROLE_ID", "r")]);
        assert!(Settings::load(None, &e).is_err());
        let e = env(&[
            ("VAULT_ADDR", "https://v.example"),
            ("VAULT_ROLE_ID", "r"),
            ("VAULT_SECRET_ID", "canary-sid"),
            ("VAULT_SECRET_ID_FILE", "/nonexistent"),
        ]);
        let err = Settings::load(None, &e).err().unwrap();
        assert!(!format!("{err:?}").contains("canary-sid"));
    }

    #[test]
    fn toml_table_is_strict() {
        let t: toml::Table = toml::from_str("url = 'https://v.example'\ntokn = 'x'").unwrap();
        let err = Settings::load(Some(&t), &env(&[("VAULT_TOKEN", "t")]))
            .err()
            .unwrap();
        assert_eq!(err.code(), crate::ErrorCode::Config);
        let t: toml::Table =
            toml::from_str("url = 'https://v.example'\nverify_ssl = false\nwrap_ttl = '5m'")
                .unwrap();
        let s = Settings::load(Some(&t), &env(&[("VAULT_TOKEN", "t")])).unwrap();
        assert!(!s.verify_tls);
        assert_eq!(s.wrap_ttl.as_deref(), Some("5m"));
    }

    #[test]
    fn wrap_ttls() {
        assert_eq!(parse_wrap_ttl("W", "60").unwrap(), "60s");
        assert_eq!(parse_wrap_ttl("W", "60s").unwrap(), "60s");
        assert_eq!(parse_wrap_ttl("W", "5m").unwrap(), "5m");
        for bad in ["0", "", "s", "-1s", "1d", "1.5s", "1 s"] {
            assert!(parse_wrap_ttl("W", bad).is_err(), "{bad}");
        }
    }
}
