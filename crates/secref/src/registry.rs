//! The provider registry: every backend describes itself once, in a
//! [`ProviderSpec`], and everything generic reads that description — the
//! reference grammar (which parser a scheme goes to), config validation
//! (which top-level sections exist), [`Resolver::from_config`](crate::Resolver::from_config)
//! (how each provider is built), `secref ref` (a reference's parts),
//! `secref run` (which `scheme://` values are references, which variables
//! are credentials withheld from its command) and `secref serve`
//! (which references are host-local and denied by default).
//!
//! The list itself is [`crate::providers::SPECS`]; adding a backend is one new
//! module under `providers/` exporting a `SPEC`, one line in that list and one
//! cargo feature (see CONTRIBUTING.md, "Adding a provider").
//!
//! ```
//! let vault = secref::registry::spec_for_scheme("openbao+kv2").unwrap();
//! assert_eq!(vault.name, "vault");
//! assert!(secref::registry::is_reference_scheme("OpenBao+kv3"));
//! assert!(!secref::registry::is_reference_scheme("https"));
//! ```

use std::sync::Arc;

use crate::config::Config;
use crate::error::{Error, ErrorCode, Result};
use crate::provider::Provider;
use crate::reference::{ParseInput, ParsedRef, SecretRef};

/// One value of a reference's parts, as `secref ref` shows it.
pub type PartValue = serde_json::Value;

/// How a provider is built from the loaded config ([`ProviderSpec::build`]).
pub type BuildFn = fn(&Config) -> Result<Option<Arc<dyn Provider>>>;

/// Everything generic code needs to know about one backend.
#[derive(Debug)]
pub struct ProviderSpec {
    /// The provider family: what [`SecretRef::provider_family`] returns for
    /// its references, what [`Provider::families`] lists, and the cache key
    /// of `[provider_cache.<name>]`.
    pub name: &'static str,
    /// The schemes it owns, lower case, exactly as written before `://`
    /// (`openbao` and `openbao+kv2` are two schemes). Any other
    /// `<prefix>+<engine>` whose prefix one of these has (before its `+`) is
    /// still routed to this spec's parser, which rejects the engine.
    pub schemes: &'static [&'static str],
    /// The cargo feature that compiles it in (`None`: always built in).
    pub feature: Option<&'static str>,
    /// Whether its references name data of the host the resolver runs on
    /// (the process environment, the file system) rather than a secret
    /// store; `secref serve` denies them unless an access rule names them.
    pub host_local: bool,
    /// Its top-level `secref.toml` section (`[vault]`), if it has one. The
    /// config loader accepts exactly these sections besides its own.
    pub config_section: Option<&'static str>,
    /// The environment variables it reads (documentation and `secref ref
    /// --schemes`; never their values).
    pub env_vars: &'static [&'static str],
    /// Those of [`env_vars`](Self::env_vars) that hold credentials. The
    /// rule: a variable that grants access to a backend (a token, a secret,
    /// a key), not one that only says where or how to reach it (a URL, a
    /// client id, a file path). `secref run` withholds them from its command
    /// unless `--pass-env` names them ([`crate::credentials::credential_env_vars`]);
    /// a variable the config names in place of one of them
    /// (`[secflow] token_env`) is withheld too.
    pub credential_env_vars: &'static [&'static str],
    /// What its provider can do beyond reading (what
    /// [`Provider::capabilities`] returns; `secref ref --schemes --json`).
    pub capabilities: crate::provider::Capabilities,
    /// Parses the part after `scheme://` of one of its schemes.
    pub parse: fn(&ParseInput<'_>) -> Result<ParsedRef>,
    /// The reference's parts in a stable order, for `secref ref`.
    pub parts: fn(&SecretRef) -> Vec<(&'static str, PartValue)>,
    /// Builds the provider from the loaded config: `Ok(None)` when it is not
    /// configured at all, an error when it is configured wrongly.
    pub build: BuildFn,
    /// Where it reads credentials (section keys, environment variables):
    /// each may hold a reference to another provider, resolved before
    /// `build` runs ([`crate::credentials`]).
    pub credentials: fn(&Config) -> Vec<crate::credentials::CredentialField>,
}

/// Every registered provider (those whose features are compiled in).
pub fn specs() -> &'static [ProviderSpec] {
    crate::providers::SPECS
}

/// The spec owning `scheme` (lower case): an exact match, else the spec one
/// of whose schemes shares its prefix before `+` (so `openbao+kv3` reaches
/// the Vault parser, which names the unsupported engine).
pub fn spec_for_scheme(scheme: &str) -> Option<&'static ProviderSpec> {
    let exact = specs().iter().find(|s| s.schemes.contains(&scheme));
    exact.or_else(|| {
        let prefix = family_prefix(scheme);
        specs()
            .iter()
            .find(|s| s.schemes.iter().any(|k| family_prefix(k) == prefix))
    })
}

/// The spec of a provider family.
pub fn spec_by_name(name: &str) -> Option<&'static ProviderSpec> {
    specs().iter().find(|s| s.name == name)
}

/// Whether a `scheme://…` value is meant as a secret reference: its scheme
/// (any case) belongs to a registered provider, exactly or by its prefix
/// before `+`. `secref run` parses such values and fails on a bad one
/// rather than passing it through as text.
pub fn is_reference_scheme(scheme: &str) -> bool {
    spec_for_scheme(&scheme.to_ascii_lowercase()).is_some()
}

/// Whether a value (an env-file value, a credential setting) is meant as a
/// reference: it starts with a registered scheme ([`is_reference_scheme`])
/// and `://`. Such a value must parse; anything else (`https://…`, a plain
/// value) is text.
///
/// ```
/// assert!(secref::registry::looks_like_reference("LOCAL://app/db"));
/// assert!(!secref::registry::looks_like_reference("https://example.com"));
/// assert!(!secref::registry::looks_like_reference("hunter2"));
/// ```
pub fn looks_like_reference(value: &str) -> bool {
    match value.split_once("://") {
        Some((scheme, _)) => is_reference_scheme(scheme),
        None => false,
    }
}

/// Every registered scheme, in registry order.
pub fn schemes() -> impl Iterator<Item = &'static str> {
    specs().iter().flat_map(|s| s.schemes.iter().copied())
}

/// Whether `section` is a registered provider's config section.
pub(crate) fn is_config_section(section: &str) -> bool {
    specs().iter().any(|s| s.config_section == Some(section))
}

fn family_prefix(scheme: &str) -> &str {
    scheme.split('+').next().unwrap_or(scheme)
}

/// The error for a scheme no registered provider owns.
pub(crate) fn unknown_scheme(scheme: &str) -> Error {
    let known: Vec<&str> = schemes().collect();
    Error::new(
        ErrorCode::UnsupportedEngine,
        format!(
            "unsupported scheme '{}'",
            crate::reference::printable(scheme)
        ),
    )
    .with_hint(format!("use one of: {}", known.join(", ")))
}

/// A provider that is always present (no config needed), as a `build` fn.
pub(crate) fn always<P: Provider + 'static>(p: P) -> Result<Option<Arc<dyn Provider>>> {
    Ok(Some(Arc::new(p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_schemes_and_sections_are_unique() {
        let mut names = std::collections::BTreeSet::new();
        let mut schemes = std::collections::BTreeSet::new();
        for s in specs() {
            assert!(names.insert(s.name), "duplicate provider {}", s.name);
            for k in s.schemes {
                assert_eq!(*k, k.to_ascii_lowercase());
                assert!(schemes.insert(*k), "duplicate scheme {k}");
            }
        }
    }

    #[test]
    fn an_unlisted_engine_is_never_a_reference() {
        for bad in [
            "secret+x://dev/app/token/a",
            "env+x://HOME",
            "local+x://app/db",
            "infisical+x://p/dev/KEY",
            "file+x:///etc/x",
            "coze://x",
            "openbao+kv3://secret/a",
        ] {
            let e = SecretRef::parse(bad).unwrap_err();
            assert_eq!(e.code(), ErrorCode::UnsupportedEngine, "{bad}");
        }
    }

    #[test]
    fn credential_variables_are_variables_the_provider_reads() {
        for s in specs() {
            for v in s.credential_env_vars {
                assert!(s.env_vars.contains(v), "{}: {v} not in env_vars", s.name);
            }
            // A credential field's variable that is not declared as a
            // credential must be one the spec reads by default; any other
            // (a name the config gave) is withheld as a credential.
            for f in (s.credentials)(&Config::default()) {
                if let crate::credentials::CredentialField::Env(v) = f {
                    assert!(s.env_vars.contains(&v.as_str()), "{}: {v}", s.name);
                }
            }
        }
    }

    #[test]
    fn every_scheme_routes_to_its_spec() {
        for s in specs() {
            for k in s.schemes {
                assert_eq!(spec_for_scheme(k).unwrap().name, s.name);
            }
        }
        assert!(spec_for_scheme("https").is_none());
    }
}
