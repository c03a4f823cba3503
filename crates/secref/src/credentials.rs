//! Credentials from anywhere.
//!
//! Two mechanisms, shared by every provider:
//!
//! * **Credential references.** Any credential a provider reads — a key of
//!   its `secref.toml` section or an environment variable, as its spec lists
//!   them ([`crate::registry::ProviderSpec::credentials`]) — may be a secret
//!   reference to another provider (`[vault] token = "local://vault/token"`,
//!   `INFISICAL_CLIENT_SECRET=local://infisical/identity#client_secret`).
//!   The rule for what is a reference is `secref run`'s: a value starting
//!   with a registered scheme and `://` ([`crate::registry::looks_like_reference`])
//!   is one and must parse. [`Resolver::from_config`](crate::Resolver::from_config)
//!   resolves them before building the provider, in dependency order,
//!   through a bootstrap resolver made of the providers they name (each
//!   built from its own, already dereferenced, settings). A reference that
//!   needs, directly or through others, the provider being configured is a
//!   `config` error naming the chain of settings (never a value). A
//!   reference that cannot be read makes only that provider's reads fail,
//!   with the reason, as missing credentials do.
//! * **Credential chains.** Providers that look for credentials in several
//!   places (Infisical, AWS) walk a [`CredentialChain`] of
//!   [`CredentialSource`] links; the built-in links are ordinary
//!   implementations, and a user may insert their own at any position (as
//!   the Infisical SDK's `add_provider(provider, index)`).
//!
//! ```
//! use secref::credentials::{CredentialChain, CredentialSource};
//! struct Fixed;
//! impl CredentialSource<String> for Fixed {
//!     fn name(&self) -> &str { "fixed" }
//!     fn credentials(&self, _cfg: &secref::Config) -> secref::Result<Option<String>> {
//!         Ok(Some("id".to_string()))
//!     }
//! }
//! let mut chain: CredentialChain<String> = CredentialChain::new();
//! chain.insert(0, Fixed);
//! let (found, by) = chain.find(&secref::Config::default()).unwrap().unwrap();
//! assert_eq!((found.as_str(), by.as_str()), ("id", "fixed"));
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::provider::{BatchResult, Metadata, Provider, Resolved, Validation};
use crate::reference::SecretRef;
use crate::registry::{self, ProviderSpec};
use crate::resolver::Resolver;
use crate::secret::Secret;

// ---------------------------------------------------------------------------
// Credential chains
// ---------------------------------------------------------------------------

/// One link of a provider's credential chain: a place credentials may be
/// found. `Ok(None)`: nothing there, the chain goes on; an error (e.g. half
/// of a client id / secret pair) stops the chain, so a misconfiguration is
/// reported instead of silently skipped.
pub trait CredentialSource<C>: Send + Sync {
    /// A short name for diagnostics (`explicit`, `environment`, …).
    fn name(&self) -> &str;
    /// The credentials this link finds in `cfg` (its table and `cfg.env`).
    fn credentials(&self, cfg: &Config) -> Result<Option<C>>;
}

/// An ordered list of [`CredentialSource`]s: the first that finds
/// credentials wins. `Debug` shows the link names only.
pub struct CredentialChain<C> {
    links: Vec<Arc<dyn CredentialSource<C>>>,
}

impl<C> Clone for CredentialChain<C> {
    fn clone(&self) -> Self {
        CredentialChain {
            links: self.links.clone(),
        }
    }
}

impl<C> Default for CredentialChain<C> {
    fn default() -> Self {
        CredentialChain { links: Vec::new() }
    }
}

impl<C> fmt::Debug for CredentialChain<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl<C> CredentialChain<C> {
    /// An empty chain.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a link.
    pub fn push(&mut self, source: impl CredentialSource<C> + 'static) -> &mut Self {
        self.links.push(Arc::new(source));
        self
    }

    /// Inserts a link at `index` (0: tried first); an index past the end
    /// appends.
    pub fn insert(
        &mut self,
        index: usize,
        source: impl CredentialSource<C> + 'static,
    ) -> &mut Self {
        let at = index.min(self.links.len());
        self.links.insert(at, Arc::new(source));
        self
    }

    /// The links' names, in the order they are tried.
    pub fn names(&self) -> Vec<&str> {
        self.links.iter().map(|l| l.name()).collect()
    }

    /// The first link's credentials, with that link's name; `Ok(None)` when
    /// no link has any.
    pub fn find(&self, cfg: &Config) -> Result<Option<(C, String)>> {
        for link in &self.links {
            if let Some(c) = link.credentials(cfg)? {
                return Ok(Some((c, link.name().to_string())));
            }
        }
        Ok(None)
    }
}

// ---------------------------------------------------------------------------
// Credential references
// ---------------------------------------------------------------------------

/// Where a provider reads one credential, as its spec lists them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialField {
    /// A key of the provider's own `secref.toml` section.
    Key {
        /// The key.
        name: &'static str,
        /// Whether the key takes only a reference (secrets are not written
        /// into the file itself).
        reference_only: bool,
    },
    /// An environment variable.
    Env(String),
}

/// For a spec's `credentials`: a provider without credentials.
pub(crate) fn none(_cfg: &Config) -> Vec<CredentialField> {
    Vec::new()
}

/// For providers whose section names the variable holding a credential
/// (`[secflow] token_env`): that variable, else `default`.
#[cfg(any(feature = "secflow", feature = "coze"))]
pub(crate) fn env_named_by(
    cfg: &Config,
    section: &str,
    key: &str,
    default: &str,
) -> Vec<CredentialField> {
    let named = cfg
        .section::<toml::Table>(section)
        .ok()
        .flatten()
        .and_then(|t| t.get(key)?.as_str().map(str::to_string));
    vec![CredentialField::Env(
        named.unwrap_or_else(|| default.to_string()),
    )]
}

/// Every environment variable that holds a credential under `cfg`, sorted:
/// those the registered providers declare
/// ([`ProviderSpec::credential_env_vars`]), those the config names in their
/// place (`[secflow] token_env`, `[coze] client_secret_env`: a credential
/// field's variable the spec does not read by default, see
/// [`ProviderSpec::credentials`]), the audit policy's
/// ([`crate::audit::credential_env_vars`]), the PDP's
/// ([`crate::policy::credential_env_vars`]) and the shared state's
/// ([`crate::state::credential_env_vars`]). `secref run` withholds them from
/// its command unless `--pass-env` names them, and never scans them. (The
/// agent's `[server.tokens.*]` variables are declared by the server crate,
/// which this one cannot see; `secref run` adds them.)
///
/// ```
/// let vars = secref::credentials::credential_env_vars(&secref::Config::default());
/// assert!(vars.contains("SECRET_TENANT_SALT"));
/// assert!(!vars.contains("VAULT_ADDR"));
/// ```
pub fn credential_env_vars(cfg: &Config) -> BTreeSet<String> {
    let mut vars = BTreeSet::new();
    for spec in registry::specs() {
        vars.extend(spec.credential_env_vars.iter().map(|v| v.to_string()));
        for field in (spec.credentials)(cfg) {
            if let CredentialField::Env(v) = field {
                if !spec.env_vars.contains(&v.as_str()) {
                    vars.insert(v);
                }
            }
        }
    }
    vars.extend(crate::audit::credential_env_vars(cfg));
    vars.extend(crate::policy::credential_env_vars(cfg));
    vars.extend(crate::state::credential_env_vars(cfg));
    vars
}

/// One credential setting holding a reference.
struct Link {
    /// `[vault] token` or `VAULT_TOKEN`: how errors name it.
    label: String,
    /// The provider's section, for a `Key` field.
    section: Option<&'static str>,
    field: CredentialField,
    reference: SecretRef,
    /// The spec that serves the reference.
    needs: &'static ProviderSpec,
}

/// The config each provider with credential references is built from: its
/// references replaced by their values (or why they could not be read).
/// Providers without references are absent: they use `cfg` itself.
pub(crate) fn dereference(cfg: &Config) -> Result<BTreeMap<&'static str, Result<Config>>> {
    let mut links: BTreeMap<&'static str, Vec<Link>> = BTreeMap::new();
    for spec in registry::specs() {
        let found = references_of(spec, cfg)?;
        if !found.is_empty() {
            links.insert(spec.name, found);
        }
    }
    let mut out = BTreeMap::new();
    if links.is_empty() {
        return Ok(out);
    }
    let order = dependency_order(&links)?;
    let mut instances: BTreeMap<&'static str, Result<Option<Arc<dyn Provider>>>> = BTreeMap::new();
    for name in order {
        let Some(mine) = links.get(name) else {
            continue;
        };
        let derived = resolve_links(cfg, mine, &out, &mut instances);
        out.insert(name, derived);
    }
    Ok(out)
}

/// The spec's credential settings that hold references (parsed), and a
/// `config` error for one that must be a reference but is not, or looks like
/// one but does not parse.
fn references_of(spec: &'static ProviderSpec, cfg: &Config) -> Result<Vec<Link>> {
    let mut out = Vec::new();
    let table = match spec.config_section {
        Some(s) => cfg.section::<toml::Table>(s)?,
        None => None,
    };
    for field in (spec.credentials)(cfg) {
        let (label, raw) = match &field {
            CredentialField::Key {
                name,
                reference_only,
            } => {
                let section = spec.config_section.unwrap_or(spec.name);
                let label = format!("[{section}] {name}");
                let Some(value) = table.as_ref().and_then(|t| t.get(*name)) else {
                    continue;
                };
                let raw = value.as_str().filter(|s| registry::looks_like_reference(s));
                if raw.is_none() && *reference_only {
                    return Err(Error::config(format!(
                        "{label} must be a secret reference (e.g. local://{}/{name}), not the secret itself",
                        spec.name
                    ))
                    .with_hint("keep the credential in the local store (`secref set`) and reference it"));
                }
                (label, raw.map(str::to_string))
            }
            CredentialField::Env(var) => {
                let raw = cfg
                    .env
                    .get(var)
                    .filter(|s| registry::looks_like_reference(s));
                (var.clone(), raw.map(str::to_string))
            }
        };
        let Some(raw) = raw else { continue };
        // The parser's message quotes the bad part, and this text may be
        // the credential itself (a token that happens to contain `://`):
        // say only which setting and which kind of fault.
        let reference = SecretRef::parse(raw.trim()).map_err(|e| {
            Error::config(format!(
                "{label} is not a valid secret reference ({}); its value is not shown",
                e.code()
            ))
            .with_hint("check the setting's reference with `secref ref '<reference>'`")
        })?;
        let needs = registry::spec_by_name(reference.provider_family())
            .ok_or_else(|| Error::config(format!("{label}: no provider serves its reference")))?;
        out.push(Link {
            label,
            section: spec.config_section,
            field,
            reference,
            needs,
        });
    }
    Ok(out)
}

/// Providers with references, each after every provider it needs; a cycle
/// is a `config` error naming the settings along it.
fn dependency_order(links: &BTreeMap<&'static str, Vec<Link>>) -> Result<Vec<&'static str>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Active,
        Done,
    }
    fn visit(
        name: &'static str,
        links: &BTreeMap<&'static str, Vec<Link>>,
        marks: &mut BTreeMap<&'static str, Mark>,
        path: &mut Vec<&'static str>,
        order: &mut Vec<&'static str>,
    ) -> Result<()> {
        match marks.get(name) {
            Some(Mark::Done) => return Ok(()),
            Some(Mark::Active) => {
                let start = path.iter().position(|p| *p == name).unwrap_or(0);
                let mut steps = Vec::new();
                for (i, from) in path[start..].iter().enumerate() {
                    let to = path.get(start + i + 1).copied().unwrap_or(name);
                    if let Some(l) = links[from].iter().find(|l| l.needs.name == to) {
                        steps.push(format!("{} needs {to}", l.label));
                    }
                }
                return Err(Error::config(format!(
                    "credential reference cycle: {}",
                    steps.join(", ")
                ))
                .with_hint("a provider's credentials must come from providers that do not need it (the local store, env://, file://, …)"));
            }
            None => {}
        }
        marks.insert(name, Mark::Active);
        path.push(name);
        for l in links.get(name).into_iter().flatten() {
            if links.contains_key(l.needs.name) || l.needs.name == name {
                visit(l.needs.name, links, marks, path, order)?;
            }
        }
        path.pop();
        marks.insert(name, Mark::Done);
        order.push(name);
        Ok(())
    }
    let mut marks = BTreeMap::new();
    let mut order = Vec::new();
    for name in links.keys() {
        visit(name, links, &mut marks, &mut Vec::new(), &mut order)?;
    }
    Ok(order)
}

/// Resolves one provider's references through a bootstrap resolver of the
/// providers they need, and returns `cfg` with the values in their place.
fn resolve_links(
    cfg: &Config,
    mine: &[Link],
    derived: &BTreeMap<&'static str, Result<Config>>,
    instances: &mut BTreeMap<&'static str, Result<Option<Arc<dyn Provider>>>>,
) -> Result<Config> {
    let mut builder = Resolver::builder().retry(cfg.retry.clone());
    for l in mine {
        let spec = l.needs;
        let built = instances.entry(spec.name).or_insert_with(|| {
            let own = derived
                .get(spec.name)
                .cloned()
                .unwrap_or_else(|| Ok(cfg.clone()));
            own.and_then(|c| (spec.build)(&c))
        });
        match &*built {
            Ok(Some(p)) => builder = builder.provider_arc(p.clone(), None),
            Ok(None) => {}
            Err(e) => return Err(context(&l.label, e)),
        }
    }
    let resolver = builder.build()?;
    let refs: Vec<SecretRef> = mine.iter().map(|l| l.reference.clone()).collect();
    // A private runtime on its own thread: `from_config` is synchronous and
    // may be called from inside another runtime. The bootstrap providers
    // (and their connections) live and die with it.
    let values: Vec<Result<Secret>> = std::thread::scope(|s| {
        s.spawn(|| -> Result<Vec<Result<Secret>>> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::internal(format!("cannot start a runtime: {}", e.kind())))?;
            Ok(rt.block_on(async {
                let mut out = Vec::new();
                for r in &refs {
                    out.push(resolver.resolve(r.clone()).await);
                }
                out
            }))
        })
        .join()
        .map_err(|_| Error::internal("credential resolution panicked"))?
    })?;
    let mut out = cfg.clone();
    for (l, value) in mine.iter().zip(values) {
        let value = value.map_err(|e| context(&l.label, &e))?;
        let text = value
            .as_text()
            .map_err(|_| Error::config(format!("{} must resolve to UTF-8 text", l.label)))?;
        match &l.field {
            CredentialField::Key { name, .. } => {
                out.set_key(l.section.unwrap_or_default(), name, text)?;
            }
            CredentialField::Env(var) => out.env.set(var.clone(), text),
        }
    }
    Ok(out)
}

/// The reason a credential reference could not be read, kept with the
/// underlying error's code (a missing entry stays `not_found`).
fn context(label: &str, e: &Error) -> Error {
    let mut n = Error::new(
        e.code(),
        format!("cannot read the credential {label}: {}", e.message()),
    );
    if let Some(h) = e.hint() {
        n = n.with_hint(h.to_string());
    }
    n
}

/// A provider whose credentials could not be read: every call fails with
/// that reason, and every other provider keeps working.
#[derive(Debug)]
pub(crate) struct Unavailable {
    family: [&'static str; 1],
    error: Error,
}

impl Unavailable {
    pub(crate) fn new(spec: &'static ProviderSpec, error: Error) -> Unavailable {
        Unavailable {
            family: [spec.name],
            error: error.with_provider(spec.name),
        }
    }
}

#[async_trait]
impl Provider for Unavailable {
    fn name(&self) -> &str {
        self.family[0]
    }

    fn families(&self) -> &[&'static str] {
        &self.family
    }

    fn cacheable(&self) -> bool {
        false
    }

    async fn resolve_many(&self, _refs: &[SecretRef]) -> BatchResult<Resolved> {
        Err(self.error.clone())
    }

    async fn metadata(&self, _refs: &[SecretRef]) -> BatchResult<Metadata> {
        Err(self.error.clone())
    }

    async fn validate(&self, _refs: &[SecretRef]) -> BatchResult<Validation> {
        Err(self.error.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;
    use crate::ErrorCode;

    struct Fixed(&'static str, Option<&'static str>);

    impl CredentialSource<String> for Fixed {
        fn name(&self) -> &str {
            self.0
        }
        fn credentials(&self, _cfg: &Config) -> Result<Option<String>> {
            Ok(self.1.map(str::to_string))
        }
    }

    struct Broken;

    impl CredentialSource<String> for Broken {
        fn name(&self) -> &str {
            "broken"
        }
        fn credentials(&self, _cfg: &Config) -> Result<Option<String>> {
            Err(Error::config("half configured"))
        }
    }

    #[test]
    fn the_first_link_with_credentials_wins_and_links_go_where_asked() {
        let cfg = Config::default();
        let mut chain = CredentialChain::new();
        chain
            .push(Fixed("a", None))
            .push(Fixed("b", Some("from-b")));
        chain.insert(99, Fixed("last", Some("from-last")));
        assert_eq!(chain.names(), ["a", "b", "last"]);
        assert_eq!(chain.find(&cfg).unwrap().unwrap().1, "b");
        chain.insert(1, Fixed("mine", Some("from-mine")));
        assert_eq!(chain.names(), ["a", "mine", "b", "last"]);
        assert_eq!(chain.find(&cfg).unwrap().unwrap().0, "from-mine");
        // An error stops the chain rather than being skipped.
        chain.insert(0, Broken);
        assert_eq!(chain.find(&cfg).unwrap_err().code(), ErrorCode::Config);
        assert!(CredentialChain::<String>::new()
            .find(&cfg)
            .unwrap()
            .is_none());
        assert_eq!(
            format!("{chain:?}"),
            r#"["broken", "a", "mine", "b", "last"]"#
        );
    }

    fn cfg(toml_text: &str, env: &[(&str, &str)]) -> Config {
        let mut c = Config::from_toml_str(toml_text).unwrap();
        let mut pairs = vec![("HOME", "/nonexistent-home")];
        pairs.extend_from_slice(env);
        c.env = Env::from_pairs(pairs);
        c
    }

    #[test]
    fn env_references_are_resolved_before_the_provider_is_built() {
        let c = cfg(
            "[vault]\nurl = 'http://127.0.0.1:1'",
            &[("VAULT_TOKEN", "env://PATH")],
        );
        let derived = dereference(&c).unwrap();
        let own = derived["vault"].as_ref().unwrap();
        // env:// reads the process environment.
        let path = std::env::var("PATH").unwrap();
        assert_eq!(own.env.get("VAULT_TOKEN"), Some(path.as_str()));
        // Only the provider that named a reference gets a derived config.
        assert!(!derived.contains_key("infisical"));
        assert_eq!(c.env.get("VAULT_TOKEN"), Some("env://PATH"));
    }

    #[test]
    fn cycles_name_the_settings_along_them() {
        let c = cfg(
            "[vault]\nurl = 'http://127.0.0.1:1'\ntoken = 'openbao+kv2://secret/x#t'",
            &[],
        );
        let e = dereference(&c).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Config);
        assert!(e.message().contains("[vault] token needs vault"), "{e}");
        let c = cfg(
            "[vault]\nurl = 'http://127.0.0.1:1'",
            &[
                ("VAULT_TOKEN", "aws-sm://vault-token"),
                ("AWS_SECRET_ACCESS_KEY", "openbao+kv2://secret/aws#key"),
            ],
        );
        let e = dereference(&c).unwrap_err();
        assert!(e.message().contains("VAULT_TOKEN needs aws-sm"), "{e}");
        assert!(
            e.message().contains("AWS_SECRET_ACCESS_KEY needs vault"),
            "{e}"
        );
    }

    #[test]
    fn an_unreadable_reference_fails_only_its_provider() {
        let c = cfg(
            "[vault]\nurl = 'http://127.0.0.1:1'",
            &[("VAULT_TOKEN", "env://NOT_SET_ANYWHERE")],
        );
        let derived = dereference(&c).unwrap();
        let e = derived["vault"].as_ref().unwrap_err();
        assert_eq!(e.code(), ErrorCode::NotFound);
        assert!(e.message().contains("VAULT_TOKEN"));
    }
}
