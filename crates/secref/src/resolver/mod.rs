//! The [`Resolver`]: every provider behind one cache, one single-flight map,
//! one retry policy and one set of tracing spans.
//!
//! ```
//! # async fn demo() -> secref::Result<()> {
//! use secref::{Resolver, providers::EnvProvider};
//! std::env::set_var("DEMO_TOKEN", "t0ps3cret");
//! let resolver = Resolver::builder().provider(EnvProvider::new()).build()?;
//! let token = resolver.resolve("env://DEMO_TOKEN").await?;
//! assert_eq!(token.as_text()?, "t0ps3cret");
//! # Ok(()) }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```

mod cached;
mod governed;
mod leases;
mod partial;
pub mod request;
mod route;
mod watch;

pub use partial::Partial;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::audit::Auditor;
use crate::cache::{Cache, CacheConfig};
use crate::error::{Error, ErrorCode, Result};
use crate::flight::SingleFlight;
use crate::policy::Policy;
use crate::provider::{Provider, Resolved};
use crate::reference::SecretRef;
use crate::retry::RetryPolicy;
use crate::secret::Secret;

/// Anything that can name a secret: a parsed [`SecretRef`] or a string.
pub trait IntoSecretRef {
    /// Parses (or clones) into a reference.
    fn into_secret_ref(self) -> Result<SecretRef>;

    /// The reference, if it is already parsed (lets a cache hit skip the
    /// clone).
    fn as_parsed(&self) -> Option<&SecretRef> {
        None
    }
}

impl IntoSecretRef for SecretRef {
    fn into_secret_ref(self) -> Result<SecretRef> {
        Ok(self)
    }
    fn as_parsed(&self) -> Option<&SecretRef> {
        Some(self)
    }
}
impl IntoSecretRef for &SecretRef {
    fn into_secret_ref(self) -> Result<SecretRef> {
        Ok(self.clone())
    }
    fn as_parsed(&self) -> Option<&SecretRef> {
        Some(self)
    }
}
impl IntoSecretRef for &str {
    fn into_secret_ref(self) -> Result<SecretRef> {
        SecretRef::parse(self)
    }
}
impl IntoSecretRef for String {
    fn into_secret_ref(self) -> Result<SecretRef> {
        SecretRef::parse(&self)
    }
}
impl IntoSecretRef for &String {
    fn into_secret_ref(self) -> Result<SecretRef> {
        SecretRef::parse(self)
    }
}

/// A failed fetch, remembering whether the whole request failed.
#[derive(Clone, Debug)]
struct FetchError {
    error: Error,
    request_level: bool,
}

type FetchResult = std::result::Result<Resolved, FetchError>;

/// Builds a [`Resolver`].
#[derive(Default)]
pub struct ResolverBuilder {
    providers: Vec<(Arc<dyn Provider>, Option<CacheConfig>)>,
    cache: CacheConfig,
    retry: RetryPolicy,
    max_concurrency: usize,
    auto_renew: bool,
    policy: Option<Arc<Policy>>,
    audit: Option<Auditor>,
    state: Option<crate::state::SharedState>,
}

impl ResolverBuilder {
    /// The shared state (`[state]`) the resolver's users keep their
    /// bookkeeping in (the policy gets it with
    /// [`Policy::with_shared_state`]; `secref serve` its revoked leases).
    pub fn shared_state(mut self, state: crate::state::SharedState) -> Self {
        self.state = Some(state);
        self
    }

    /// Enforces an access policy on every read (see [`crate::policy`]).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = Some(Arc::new(policy));
        self
    }

    /// Keeps an enforcement point another resolver already uses (see
    /// [`Resolver::rebuild_from_config`]).
    pub(crate) fn shared_policy(mut self, policy: Arc<Policy>) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Emits an audit event for every read outcome (see [`crate::audit`]).
    pub fn audit(mut self, auditor: Auditor) -> Self {
        self.audit = Some(auditor);
        self
    }

    /// Adds a provider with the default cache settings. Later providers do
    /// not replace earlier ones for a family: the first registered wins.
    pub fn provider(self, provider: impl Provider + 'static) -> Self {
        self.provider_arc(Arc::new(provider), None)
    }

    /// Adds a shared provider, optionally with its own cache settings.
    pub fn provider_arc(mut self, provider: Arc<dyn Provider>, cache: Option<CacheConfig>) -> Self {
        self.providers.push((provider, cache));
        self
    }

    /// The default cache settings.
    pub fn cache(mut self, cache: CacheConfig) -> Self {
        self.cache = cache;
        self
    }

    /// The retry policy for every provider call.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Renews renewable leases in the background at two thirds of their TTL
    /// (default off). A failed renewal drops the cached value, so the next
    /// read fetches a fresh one.
    pub fn auto_renew_leases(mut self, yes: bool) -> Self {
        self.auto_renew = yes;
        self
    }

    /// How many provider batches run at once (default 8).
    pub fn max_concurrency(mut self, n: usize) -> Self {
        self.max_concurrency = n;
        self
    }

    /// Checks the settings and builds the resolver.
    pub fn build(self) -> Result<Resolver> {
        self.retry.validate()?;
        self.cache.validate()?;
        let mut providers = Vec::new();
        let mut by_family: Vec<(&'static str, usize)> = Vec::new();
        for (i, (p, cache)) in self.providers.into_iter().enumerate() {
            let cache = cache.unwrap_or_else(|| self.cache.clone());
            cache.validate()?;
            // Not even a negative entry for a provider that opts out.
            let cache = if p.cacheable() {
                cache
            } else {
                CacheConfig::disabled()
            };
            for fam in p.families() {
                if !by_family.iter().any(|(f, _)| f == fam) {
                    by_family.push((fam, i));
                }
            }
            providers.push(Registered {
                provider: p,
                cache,
                store: Cache::new(),
            });
        }
        Ok(Resolver {
            inner: Arc::new(Inner {
                providers,
                by_family,
                retry: self.retry,
                flights: SingleFlight::default(),
                leases: Mutex::new(HashMap::new()),
                renewals: Mutex::new(HashMap::new()),
                auto_renew: self.auto_renew,
                permits: tokio::sync::Semaphore::new(self.max_concurrency.max(1)),
                policy: self.policy,
                audit: self.audit,
                state: self.state,
                max_concurrency: if self.max_concurrency == 0 {
                    8
                } else {
                    self.max_concurrency
                },
            }),
        })
    }
}

struct Registered {
    provider: Arc<dyn Provider>,
    cache: CacheConfig,
    /// This provider's cached answers (per resolver, per provider instance).
    store: Cache,
}

/// A reference in flight to one provider.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct Key {
    provider: usize,
    reference: Arc<str>,
}

/// Resolves references to secrets through the configured providers.
///
/// Cheap to clone; `Send + Sync`; usable from any tokio runtime. See
/// [`crate::blocking::Resolver`] for non-async callers.
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<Inner>,
}

struct Inner {
    providers: Vec<Registered>,
    /// Few providers: a linear scan beats hashing.
    by_family: Vec<(&'static str, usize)>,
    retry: RetryPolicy,
    flights: SingleFlight<Key, FetchResult, foldhash::fast::RandomState>,
    leases: Mutex<HashMap<String, usize>>,
    /// Background renewals by lease id, aborted when the lease is revoked.
    renewals: Mutex<HashMap<String, tokio::task::AbortHandle>>,
    auto_renew: bool,
    permits: tokio::sync::Semaphore,
    max_concurrency: usize,
    /// The enforcement point every read passes first, if configured.
    policy: Option<Arc<Policy>>,
    /// Where read outcomes are reported, if configured.
    audit: Option<Auditor>,
    /// `[state]`, when shared between replicas.
    state: Option<crate::state::SharedState>,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field(
                "providers",
                &self
                    .inner
                    .providers
                    .iter()
                    .map(|p| p.provider.name())
                    .collect::<Vec<_>>(),
            )
            .field(
                "cached_entries",
                &self
                    .inner
                    .providers
                    .iter()
                    .map(|p| p.store.len())
                    .sum::<usize>(),
            )
            .finish()
    }
}

impl Resolver {
    /// Starts building a resolver.
    pub fn builder() -> ResolverBuilder {
        ResolverBuilder::default()
    }

    /// Resolves one reference as the anonymous [`Context`](crate::policy::Context): a convenience
    /// for `self.read(reference).await` (see [`Resolver::read`] for the
    /// request builder). A fresh cache hit of an ungoverned resolver costs
    /// no more than the lookup itself.
    pub async fn resolve(&self, reference: impl IntoSecretRef) -> Result<Secret> {
        self.read(reference).await
    }

    /// All-or-nothing batch as the anonymous
    /// [`Context`](crate::policy::Context): every value, or
    /// one error naming each failure. A convenience for
    /// `self.read_many(references).await` (see [`Resolver::read_many`]).
    pub async fn resolve_many<I>(&self, references: I) -> Result<BTreeMap<SecretRef, Secret>>
    where
        I: IntoIterator,
        I::Item: IntoSecretRef,
    {
        self.read_many(references).await
    }

    /// Drops the cached value (and any negative entry) for a reference.
    pub fn invalidate(&self, reference: impl IntoSecretRef) -> Result<()> {
        let r = reference.into_secret_ref()?;
        for p in &self.inner.providers {
            p.store.remove(r.to_canonical());
        }
        Ok(())
    }

    /// Drops every cached value.
    pub fn invalidate_all(&self) {
        for p in &self.inner.providers {
            p.store.clear();
        }
    }

    /// The providers, by name.
    pub fn provider_names(&self) -> Vec<&str> {
        self.inner
            .providers
            .iter()
            .map(|p| p.provider.name())
            .collect()
    }

    /// Each provider's [`Provider::health`], checked concurrently, each
    /// bounded by `timeout` (then `timeout`, retryable).
    pub async fn health(&self, timeout: std::time::Duration) -> Vec<(&str, Result<()>)> {
        futures::future::join_all(self.inner.providers.iter().map(|p| async move {
            let res = tokio::time::timeout(timeout, p.provider.health())
                .await
                .unwrap_or_else(|_| {
                    Err(
                        Error::new(crate::ErrorCode::Timeout, "health check timed out")
                            .with_retryable(true),
                    )
                });
            (p.provider.name(), res)
        }))
        .await
    }

    /// Every secret under `prefix` (`local://app/`,
    /// `infisical://<project>/<env>/<folder>`, `coze+env://<project>`, an
    /// `openbao+kv2://` secret's fields …), sorted by key: names and
    /// references only, read them with [`resolve_many`](Self::resolve_many)
    /// (which applies the policy and the cache as to any read). The
    /// provider serving the scheme decides what the prefix means; one that
    /// cannot list answers `unsupported`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<crate::provider::Listed>> {
        let Some((scheme, rest)) = prefix.split_once("://") else {
            return Err(Error::usage("not a reference prefix: it has no scheme://")
                .with_hint("e.g. local://app/ or infisical://<project>/<env>/<folder>"));
        };
        let scheme = scheme.to_ascii_lowercase();
        let spec = crate::registry::spec_for_scheme(&scheme)
            .filter(|s| s.schemes.contains(&scheme.as_str()))
            .ok_or_else(|| crate::registry::unknown_scheme(&scheme))?;
        let provider = &self.inner.providers[self.route_family(spec.name, &scheme)?].provider;
        if !provider.capabilities().list {
            return Err(Error::new(
                crate::ErrorCode::Unsupported,
                format!(
                    "{scheme}:// prefixes cannot be listed (provider '{}')",
                    provider.name()
                ),
            )
            .with_provider(provider.name()));
        }
        let mut listed = provider.list(&scheme, rest).await?;
        // A provider answers for its own family only.
        if let Some(bad) = listed
            .iter()
            .find(|l| l.reference.provider_family() != spec.name)
        {
            return Err(Error::internal(format!(
                "provider '{}' listed a {}:// reference",
                provider.name(),
                bad.reference.scheme()
            )));
        }
        listed.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(listed)
    }

    /// Counts one read outcome in `secref_resolves_total` — the one place
    /// every read is counted, whether the resolver served it, refused it, or
    /// a server answered it outside the providers: by the provider that
    /// serves the reference (`none` when no provider does) and `ok` or the
    /// error code.
    pub(crate) fn count_read(&self, reference: &SecretRef, error: Option<ErrorCode>) {
        self.count_served_read(self.provider_for(reference).unwrap_or("none"), error);
    }

    /// Counts a read a server decided without the resolver's providers — one
    /// refused by its own access rules, or answered from a store of its own
    /// (`secref serve`'s Vault API over the local store) — in the same
    /// series as every other read ([`crate::metrics::RESOLVES`]), under the
    /// provider that serves (or would have served) it. Never a reference.
    pub fn count_served_read(&self, provider: &str, error: Option<ErrorCode>) {
        crate::metrics::resolve(provider, error);
    }

    /// The name of the provider that would serve a reference.
    pub fn provider_for(&self, reference: &SecretRef) -> Result<&str> {
        Ok(self.inner.providers[self.route(reference)?].provider.name())
    }

    /// The auditor, if one is configured (e.g. to [`Auditor::flush`]).
    pub fn auditor(&self) -> Option<&Auditor> {
        self.inner.audit.as_ref()
    }

    /// The shared state (`[state] backend = "redis"`), if configured;
    /// `None` keeps everything in this process's memory.
    pub fn shared_state(&self) -> Option<&crate::state::SharedState> {
        self.inner.state.as_ref()
    }

    /// The policy enforcement point, if one is configured.
    pub fn policy(&self) -> Option<&Policy> {
        self.inner.policy.as_deref()
    }

    /// The shared enforcement point itself, so a rebuilt resolver can keep
    /// it (its grants, use counts and replay cache) across a config reload.
    pub(crate) fn shared_policy(&self) -> Option<Arc<Policy>> {
        self.inner.policy.clone()
    }

    /// How many provider batches may run at once.
    pub fn max_concurrency(&self) -> usize {
        self.inner.max_concurrency
    }
}

fn collect_refs<I>(references: I) -> Result<Vec<SecretRef>>
where
    I: IntoIterator,
    I::Item: IntoSecretRef,
{
    references
        .into_iter()
        .map(IntoSecretRef::into_secret_ref)
        .collect()
}
