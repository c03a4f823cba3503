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
mod route;
mod watch;

pub use partial::Partial;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;
use tracing::{field, Instrument};
use zeroize::Zeroizing;

use crate::audit::Auditor;
use crate::cache::{Cache, CacheConfig};
use crate::error::{Error, Result};
use crate::flight::SingleFlight;
use crate::policy::{Context, Policy};
use crate::provider::{Action, Metadata, Permission, Provider, Resolved, Validation};
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
}

impl ResolverBuilder {
    /// Enforces an access policy on every read (see [`crate::policy`]).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = Some(Arc::new(policy));
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

    /// Resolves one reference (as the anonymous [`Context`] when a policy
    /// is configured).
    pub async fn resolve(&self, reference: impl IntoSecretRef) -> Result<Secret> {
        // The slow paths are boxed so that this future stays small: a cache
        // hit then costs no more than the lookup itself.
        if self.is_governed() {
            return Box::pin(self.resolve_as(&Context::anonymous(), reference)).await;
        }
        if let Some(hit) = reference.as_parsed().and_then(|r| self.cached(r)) {
            return Ok(hit);
        }
        let r = reference.into_secret_ref()?;
        if let Some(hit) = self.cached(&r) {
            return Ok(hit);
        }
        Ok(Box::pin(self.resolve_detailed(r)).await?.secret)
    }

    /// Resolves one reference on behalf of `ctx`: the policy (if any) decides
    /// before any cache lookup or provider call, and the outcome is audited
    /// (if an auditor is configured).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use secref::policy::{Context, Policy};
    /// use secref::{providers::EnvProvider, ErrorCode, Resolver};
    /// std::env::set_var("DEMO_POLICY_TOKEN", "t0ps3cret");
    /// let policy = Policy::from_table(
    ///     &toml::from_str("[[rules]]\nsubject = \"svc-a\"\nmax_uses = 5").unwrap(),
    ///     &secref::config::Env::default(),
    /// ).unwrap();
    /// let resolver = Resolver::builder().provider(EnvProvider::new()).policy(policy).build().unwrap();
    /// let ok = resolver.resolve_as(&Context::for_subject("svc-a"), "env://DEMO_POLICY_TOKEN").await;
    /// assert_eq!(ok.unwrap().as_text().unwrap(), "t0ps3cret");
    /// let err = resolver.resolve_as(&Context::for_subject("svc-b"), "env://DEMO_POLICY_TOKEN").await.unwrap_err();
    /// assert_eq!(err.code(), ErrorCode::PermissionDenied);
    /// assert_eq!(err.remote_code(), Some("DENY"));
    /// # });
    /// ```
    pub async fn resolve_as(&self, ctx: &Context, reference: impl IntoSecretRef) -> Result<Secret> {
        Ok(self.resolve_detailed_as(ctx, reference).await?.secret)
    }

    /// Resolves one reference and returns the version and lease too.
    pub async fn resolve_detailed(&self, reference: impl IntoSecretRef) -> Result<Resolved> {
        self.resolve_detailed_as(&Context::anonymous(), reference)
            .await
    }

    /// [`Resolver::resolve_detailed`] on behalf of `ctx`.
    pub async fn resolve_detailed_as(
        &self,
        ctx: &Context,
        reference: impl IntoSecretRef,
    ) -> Result<Resolved> {
        let r = reference.into_secret_ref()?;
        let span = tracing::debug_span!(
            "secref.resolve",
            reference = %r,
            provider = field::Empty,
            cache = field::Empty,
            attempts = field::Empty,
            error_code = field::Empty,
        );
        let mut out = self
            .governed_refs(ctx, std::slice::from_ref(&r), false)
            .instrument(span)
            .await;
        out.pop().expect("one result").map_err(|e| e.error)
    }

    /// Resolves one reference as UTF-8 text.
    pub async fn resolve_text(&self, reference: impl IntoSecretRef) -> Result<Zeroizing<String>> {
        let s = self.resolve(reference).await?;
        Ok(Zeroizing::new(s.as_text()?.to_owned()))
    }

    /// Resolves one reference as bytes.
    pub async fn resolve_bytes(&self, reference: impl IntoSecretRef) -> Result<Zeroizing<Vec<u8>>> {
        let s = self.resolve(reference).await?;
        Ok(Zeroizing::new(s.expose_bytes().to_vec()))
    }

    /// All-or-nothing batch: every value, or one error naming each failure.
    /// References are grouped by provider and each group is one backend call
    /// (split at the provider's batch limit), run concurrently.
    pub async fn resolve_many<I>(&self, references: I) -> Result<BTreeMap<SecretRef, Secret>>
    where
        I: IntoIterator,
        I::Item: IntoSecretRef,
    {
        self.resolve_many_partial(references).await?.into_result()
    }

    /// Partial batch: `.resolved` and `.failures`. Only unparseable input
    /// fails the whole call.
    pub async fn resolve_many_partial<I>(&self, references: I) -> Result<Partial<Secret>>
    where
        I: IntoIterator,
        I::Item: IntoSecretRef,
    {
        self.resolve_many_partial_as(&Context::anonymous(), references)
            .await
    }

    /// [`Resolver::resolve_many`] on behalf of `ctx`.
    pub async fn resolve_many_as<I>(
        &self,
        ctx: &Context,
        references: I,
    ) -> Result<BTreeMap<SecretRef, Secret>>
    where
        I: IntoIterator,
        I::Item: IntoSecretRef,
    {
        self.resolve_many_partial_as(ctx, references)
            .await?
            .into_result()
    }

    /// [`Resolver::resolve_many_partial`] on behalf of `ctx`. A token `jti`
    /// counts once per call, however many references it names.
    pub async fn resolve_many_partial_as<I>(
        &self,
        ctx: &Context,
        references: I,
    ) -> Result<Partial<Secret>>
    where
        I: IntoIterator,
        I::Item: IntoSecretRef,
    {
        let refs = collect_refs(references)?;
        let span = tracing::debug_span!(
            "secref.resolve_many",
            count = refs.len(),
            failures = field::Empty
        );
        let results = self
            .governed_refs(ctx, &refs, false)
            .instrument(span.clone())
            .await;
        let mut out = Partial {
            resolved: BTreeMap::new(),
            failures: BTreeMap::new(),
        };
        for (r, res) in refs.into_iter().zip(results) {
            match res {
                Ok(v) => {
                    out.resolved.insert(r, v.secret);
                }
                Err(e) => {
                    out.failures.insert(r, e.error);
                }
            }
        }
        span.record("failures", out.failures.len());
        Ok(out)
    }

    /// One call for many references on behalf of `ctx`, answered in input
    /// order with each value's details (version, lease): what a server
    /// answering a batch request item by item needs. As one call, a token
    /// `jti` counts once. Only unparseable input fails the whole call.
    pub async fn resolve_each_detailed_as<I>(
        &self,
        ctx: &Context,
        references: I,
    ) -> Result<Vec<Result<Resolved>>>
    where
        I: IntoIterator,
        I::Item: IntoSecretRef,
    {
        let refs = collect_refs(references)?;
        let span = tracing::debug_span!("secref.resolve_many", count = refs.len());
        Ok(self
            .governed_refs(ctx, &refs, false)
            .instrument(span)
            .await
            .into_iter()
            .map(|r| r.map_err(|e| e.error))
            .collect())
    }

    /// Non-secret metadata for one reference. With a policy, this is the
    /// anonymous [`Context`] asking for action `metadata_read`.
    pub async fn metadata(&self, reference: impl IntoSecretRef) -> Result<Metadata> {
        self.metadata_as(&Context::anonymous(), reference).await
    }

    /// [`Resolver::metadata`] on behalf of `ctx`: the policy (if any)
    /// decides action `metadata_read` before the provider is asked.
    pub async fn metadata_as(
        &self,
        ctx: &Context,
        reference: impl IntoSecretRef,
    ) -> Result<Metadata> {
        self.one(
            ctx,
            reference,
            |p, refs| async move { p.metadata(&refs).await },
        )
        .await
    }

    /// Metadata for many references, partial.
    pub async fn metadata_many<I>(&self, references: I) -> Result<Partial<Metadata>>
    where
        I: IntoIterator,
        I::Item: IntoSecretRef,
    {
        self.metadata_many_as(&Context::anonymous(), references)
            .await
    }

    /// [`Resolver::metadata_many`] on behalf of `ctx`.
    pub async fn metadata_many_as<I>(
        &self,
        ctx: &Context,
        references: I,
    ) -> Result<Partial<Metadata>>
    where
        I: IntoIterator,
        I::Item: IntoSecretRef,
    {
        self.many(
            ctx,
            references,
            |p, refs| async move { p.metadata(&refs).await },
        )
        .await
    }

    /// Checks that a reference names a usable secret, without reading it.
    /// With a policy, this is the anonymous [`Context`] asking for action
    /// `metadata_read`.
    pub async fn validate(&self, reference: impl IntoSecretRef) -> Result<Validation> {
        self.validate_as(&Context::anonymous(), reference).await
    }

    /// [`Resolver::validate`] on behalf of `ctx` (action `metadata_read`).
    pub async fn validate_as(
        &self,
        ctx: &Context,
        reference: impl IntoSecretRef,
    ) -> Result<Validation> {
        self.one(
            ctx,
            reference,
            |p, refs| async move { p.validate(&refs).await },
        )
        .await
    }

    /// Validates many references, partial.
    pub async fn validate_many<I>(&self, references: I) -> Result<Partial<Validation>>
    where
        I: IntoIterator,
        I::Item: IntoSecretRef,
    {
        self.validate_many_as(&Context::anonymous(), references)
            .await
    }

    /// [`Resolver::validate_many`] on behalf of `ctx`.
    pub async fn validate_many_as<I>(
        &self,
        ctx: &Context,
        references: I,
    ) -> Result<Partial<Validation>>
    where
        I: IntoIterator,
        I::Item: IntoSecretRef,
    {
        self.many(
            ctx,
            references,
            |p, refs| async move { p.validate(&refs).await },
        )
        .await
    }

    /// Asks whether `action` is allowed on a reference. A denial by the
    /// provider is `Ok(Permission { allowed: false, .. })`; with a policy,
    /// the anonymous [`Context`] must first be allowed to ask (action
    /// `metadata_read`), else the call fails with `permission_denied`.
    pub async fn permission_check(
        &self,
        reference: impl IntoSecretRef,
        action: Action,
    ) -> Result<Permission> {
        self.permission_check_as(&Context::anonymous(), reference, action)
            .await
    }

    /// [`Resolver::permission_check`] on behalf of `ctx`.
    pub async fn permission_check_as(
        &self,
        ctx: &Context,
        reference: impl IntoSecretRef,
        action: Action,
    ) -> Result<Permission> {
        self.one(ctx, reference, move |p, refs| async move {
            p.permission_check(&refs, action).await
        })
        .await
    }

    /// Permission checks for many references, partial.
    pub async fn permission_check_many<I>(
        &self,
        references: I,
        action: Action,
    ) -> Result<Partial<Permission>>
    where
        I: IntoIterator,
        I::Item: IntoSecretRef,
    {
        self.permission_check_many_as(&Context::anonymous(), references, action)
            .await
    }

    /// [`Resolver::permission_check_many`] on behalf of `ctx`.
    pub async fn permission_check_many_as<I>(
        &self,
        ctx: &Context,
        references: I,
        action: Action,
    ) -> Result<Partial<Permission>>
    where
        I: IntoIterator,
        I::Item: IntoSecretRef,
    {
        self.many(ctx, references, move |p, refs| async move {
            p.permission_check(&refs, action).await
        })
        .await
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

    /// The name of the provider that would serve a reference.
    pub fn provider_for(&self, reference: &SecretRef) -> Result<&str> {
        Ok(self.inner.providers[self.route(reference)?].provider.name())
    }

    /// The auditor, if one is configured (e.g. to [`Auditor::flush`]).
    pub fn auditor(&self) -> Option<&Auditor> {
        self.inner.audit.as_ref()
    }

    /// The policy enforcement point, if one is configured.
    pub fn policy(&self) -> Option<&Policy> {
        self.inner.policy.as_deref()
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
