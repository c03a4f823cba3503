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

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use futures::future::join_all;
use futures::Stream;
use parking_lot::Mutex;
use tracing::{debug, field, Instrument};
use zeroize::Zeroizing;

use crate::audit::{Auditor, Outcome};
use crate::cache::{is_negative_cacheable, Cache, CacheConfig, Lookup};
use crate::error::{Error, ErrorCode, Result};
use crate::flight::{Claim, Follower, Leader, SingleFlight};
use crate::metrics;
use crate::policy::{
    Authorization, Context, Permit, Policy, Refusal, METADATA_ACTION, READ_ACTION,
};
use crate::provider::{
    Action, BatchResult, Lease, LeaseRevocation, Metadata, Permission, Provider, Resolved,
    RevokeReason, Validation,
};
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

/// The outcome of a partial batch: what resolved and what failed.
#[derive(Debug)]
pub struct Partial<T> {
    /// Successful results by reference.
    pub resolved: BTreeMap<SecretRef, T>,
    /// Failures by reference, each with its code and retryable flag.
    pub failures: BTreeMap<SecretRef, Error>,
}

impl<T> Partial<T> {
    /// True when nothing failed.
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// Turns the batch into all-or-nothing: the values, or one error naming
    /// every failure.
    pub fn into_result(self) -> Result<BTreeMap<SecretRef, T>> {
        if self.failures.is_empty() {
            return Ok(self.resolved);
        }
        Err(aggregate(
            self.failures.into_values().collect(),
            self.resolved.len(),
        ))
    }
}

fn aggregate(failures: Vec<Error>, ok: usize) -> Error {
    if failures.len() == 1 && ok == 0 {
        return failures.into_iter().next().expect("one failure");
    }
    let total = failures.len() + ok;
    let retryable = failures.iter().all(Error::retryable);
    let list: Vec<String> = failures
        .iter()
        .map(|e| {
            format!(
                "{} → {}{}",
                e.reference().unwrap_or("?"),
                e.code(),
                if e.retryable() { " (retryable)" } else { "" }
            )
        })
        .collect();
    Error::new(
        failures[0].code(),
        format!(
            "{} of {} references failed: {}",
            failures.len(),
            total,
            list.join("; ")
        ),
    )
    .with_retryable(retryable)
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

    /// Runs the policy for one operation that does not go through the
    /// resolver's providers (e.g. a server answering from a store of its
    /// own): the same steps as a read or metadata read of `reference` by
    /// `ctx`, reserving one grant use, which is *not* given back (the
    /// resolver does not see whether the operation then succeeds). Refusals
    /// are audited. Without a policy, everything is authorized.
    ///
    /// `Action::Read` is a read (`execute`); `MetadataRead`, `LeaseRevoke`
    /// and `List` are `metadata_read` (they reveal no value); `Write`,
    /// `Delete` and `Destroy` are asked under their own names.
    pub async fn authorize_as(
        &self,
        ctx: &Context,
        reference: impl IntoSecretRef,
        action: Action,
    ) -> Result<Authorization> {
        let r = reference.into_secret_ref()?;
        let Some(policy) = &self.inner.policy else {
            return Ok(Authorization::default());
        };
        let name = match action {
            Action::Read => READ_ACTION,
            Action::MetadataRead | Action::LeaseRevoke | Action::List => METADATA_ACTION,
            Action::Write | Action::Delete | Action::Destroy => action.as_str(),
        };
        let decision = policy
            .authorize(ctx, std::slice::from_ref(&r), name)
            .await
            .pop()
            .expect("one decision");
        match decision {
            Ok(permit) => Ok(Authorization {
                wrap_ttl: permit.wrap_ttl(),
                decision_id: permit.decision_id().map(str::to_owned),
            }),
            Err(refusal) => {
                if let Some(a) = &self.inner.audit {
                    let tenant = ctx
                        .tenant
                        .as_deref()
                        .or(Some(policy.settings().tenant.as_str()));
                    a.record(
                        ctx,
                        tenant,
                        &r,
                        self.provider_for(&r).ok(),
                        refusal.decision_id.as_deref(),
                        Outcome::Denied(&refusal.error),
                    );
                }
                Err(refusal.error)
            }
        }
    }

    /// Audits a read that a server answered outside the providers, after
    /// [`Resolver::authorize_as`] allowed it (e.g. `secref serve`'s Vault
    /// API reading the local store): `Ok(version)` is a read
    /// (`SECRET_READ`), `Err` a failure. Never a value. Without an auditor,
    /// nothing happens.
    pub fn audit_read_as(
        &self,
        ctx: &Context,
        reference: impl IntoSecretRef,
        decision_id: Option<&str>,
        result: std::result::Result<Option<&str>, &Error>,
    ) {
        let (Some(a), Ok(r)) = (&self.inner.audit, reference.into_secret_ref()) else {
            return;
        };
        let tenant = ctx.tenant.as_deref().or_else(|| {
            self.inner
                .policy
                .as_deref()
                .map(|p| p.settings().tenant.as_str())
        });
        let outcome = match result {
            Ok(version) => Outcome::Read {
                cached: false,
                version,
            },
            Err(e) => Outcome::Failed(e),
        };
        a.record(
            ctx,
            tenant,
            &r,
            self.provider_for(&r).ok(),
            decision_id,
            outcome,
        );
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

    /// Runs a non-caching provider operation for one reference.
    async fn one<T, F, Fut>(&self, ctx: &Context, reference: impl IntoSecretRef, op: F) -> Result<T>
    where
        T: Send,
        F: Fn(Arc<dyn Provider>, Vec<SecretRef>) -> Fut,
        Fut: std::future::Future<Output = BatchResult<T>>,
    {
        let r = reference.into_secret_ref()?;
        self.governed_op(ctx, vec![r], op)
            .await
            .pop()
            .expect("one result")
    }

    /// Runs a non-caching provider operation for many references, partial.
    async fn many<T, F, Fut, I>(&self, ctx: &Context, references: I, op: F) -> Result<Partial<T>>
    where
        T: Send,
        F: Fn(Arc<dyn Provider>, Vec<SecretRef>) -> Fut,
        Fut: std::future::Future<Output = BatchResult<T>>,
        I: IntoIterator,
        I::Item: IntoSecretRef,
    {
        let refs = collect_refs(references)?;
        let res = self.governed_op(ctx, refs.clone(), op).await;
        Ok(partial(refs, res))
    }

    /// [`Resolver::per_provider`] behind the policy (action
    /// `metadata_read`): refused references never reach a provider, a failed
    /// operation gives its grant use back, and refusals are audited.
    async fn governed_op<T, F, Fut>(
        &self,
        ctx: &Context,
        refs: Vec<SecretRef>,
        op: F,
    ) -> Vec<Result<T>>
    where
        T: Send,
        F: Fn(Arc<dyn Provider>, Vec<SecretRef>) -> Fut,
        Fut: std::future::Future<Output = BatchResult<T>>,
    {
        let Some(policy) = &self.inner.policy else {
            return self.per_provider(refs, op).await;
        };
        let decisions = policy.authorize(ctx, &refs, METADATA_ACTION).await;
        let allowed: Vec<SecretRef> = refs
            .iter()
            .zip(&decisions)
            .filter(|(_, d)| d.is_ok())
            .map(|(r, _)| r.clone())
            .collect();
        let mut answers = self.per_provider(allowed, op).await.into_iter();
        let tenant = ctx
            .tenant
            .as_deref()
            .or(Some(policy.settings().tenant.as_str()));
        refs.iter()
            .zip(decisions)
            .map(|(r, decision)| match decision {
                Ok(permit) => {
                    let res = answers.next().expect("one answer per allowed reference");
                    if res.is_err() {
                        permit.refund();
                    }
                    res
                }
                Err(refusal) => {
                    if let Some(a) = &self.inner.audit {
                        let provider = self.provider_for(r).ok();
                        a.record(
                            ctx,
                            tenant,
                            r,
                            provider,
                            refusal.decision_id.as_deref(),
                            Outcome::Denied(&refusal.error),
                        );
                    }
                    Err(refusal.error)
                }
            })
            .collect()
    }

    /// Revokes leases seen in earlier results (routed to the provider that
    /// issued each). Unknown lease ids fail with `not_found`.
    pub async fn revoke_leases(
        &self,
        lease_ids: &[String],
        reason: RevokeReason,
    ) -> Result<Vec<Result<LeaseRevocation>>> {
        let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        let mut out: Vec<Option<Result<LeaseRevocation>>> = vec![None; lease_ids.len()];
        {
            let leases = self.inner.leases.lock();
            for (i, id) in lease_ids.iter().enumerate() {
                match leases.get(id) {
                    Some(p) => groups.entry(*p).or_default().push(i),
                    None => {
                        out[i] = Some(Err(Error::new(
                            ErrorCode::NotFound,
                            format!("lease '{id}' was not issued through this resolver"),
                        )))
                    }
                }
            }
        }
        for (p, idxs) in groups {
            let ids: Vec<String> = idxs.iter().map(|i| lease_ids[*i].clone()).collect();
            let provider = &self.inner.providers[p].provider;
            match provider.revoke_leases(&ids, reason).await {
                Ok(results) => {
                    for (i, r) in idxs.iter().zip(pad(results, ids.len(), provider.name())) {
                        if r.is_ok() {
                            self.inner.leases.lock().remove(&lease_ids[*i]);
                            if let Some(task) = self.inner.renewals.lock().remove(&lease_ids[*i]) {
                                task.abort();
                            }
                        }
                        out[*i] = Some(r);
                    }
                }
                Err(e) => {
                    for i in idxs {
                        out[i] = Some(Err(e.clone()));
                    }
                }
            }
        }
        Ok(out
            .into_iter()
            .map(|o| o.expect("every lease answered"))
            .collect())
    }

    /// Renews a lease seen in an earlier result, through the provider that
    /// issued it.
    pub async fn renew_lease(&self, lease_id: &str, increment: Option<Duration>) -> Result<Lease> {
        let p = self.inner.leases.lock().get(lease_id).copied();
        let Some(p) = p else {
            return Err(Error::new(
                ErrorCode::NotFound,
                format!("lease '{lease_id}' was not issued through this resolver"),
            ));
        };
        self.inner.providers[p]
            .provider
            .renew_lease(lease_id, increment)
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

    /// Watches a reference: the stream yields the value now, then again each
    /// time its version (or, without versions, its bytes) changes. It polls
    /// every `interval` ± 10 % jitter, bypassing the cache; errors are yielded
    /// and polling goes on.
    pub fn watch(
        &self,
        reference: impl IntoSecretRef,
        interval: Duration,
    ) -> Result<impl Stream<Item = Result<Resolved>> + Send + 'static> {
        let r = reference.into_secret_ref()?;
        let this = self.clone();
        struct State {
            resolver: Resolver,
            reference: SecretRef,
            last: Option<Fingerprint>,
            first: bool,
        }
        let state = State {
            resolver: this,
            reference: r,
            last: None,
            first: true,
        };
        Ok(futures::stream::unfold(state, move |mut st| async move {
            loop {
                if !st.first {
                    let jitter = interval.mul_f64(0.9 + fastrand::f64() * 0.2);
                    tokio::time::sleep(jitter).await;
                }
                st.first = false;
                let mut res = st
                    .resolver
                    .governed_refs(
                        &Context::anonymous(),
                        std::slice::from_ref(&st.reference),
                        true,
                    )
                    .await;
                match res.pop().expect("one result") {
                    Ok(v) => {
                        let fp = Fingerprint::of(&v);
                        if st.last.as_ref() != Some(&fp) {
                            st.last = Some(fp);
                            return Some((Ok(v), st));
                        }
                    }
                    Err(e) => return Some((Err(e.error), st)),
                }
            }
        }))
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
    pub async fn health(&self, timeout: Duration) -> Vec<(&str, Result<()>)> {
        join_all(self.inner.providers.iter().map(|p| async move {
            let res = tokio::time::timeout(timeout, p.provider.health())
                .await
                .unwrap_or_else(|_| {
                    Err(Error::new(ErrorCode::Timeout, "health check timed out")
                        .with_retryable(true))
                });
            (p.provider.name(), res)
        }))
        .await
    }

    /// The name of the provider that would serve a reference.
    pub fn provider_for(&self, reference: &SecretRef) -> Result<&str> {
        Ok(self.inner.providers[self.route(reference)?].provider.name())
    }

    fn route(&self, r: &SecretRef) -> Result<usize> {
        self.route_family(r.provider_family(), r.scheme())
            .map_err(|e| e.with_reference(r.to_canonical()))
    }

    fn route_family(&self, family: &str, scheme: &str) -> Result<usize> {
        self.inner
            .by_family
            .iter()
            .find(|(f, _)| *f == family)
            .map(|(_, p)| *p)
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::NoProvider,
                    format!("no provider is configured for {scheme}:// references"),
                )
                .with_hint("configure one in secref.toml or the environment")
            })
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
                ErrorCode::Unsupported,
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

    /// The reference a read must use to meet a grant's `wrap_ttl`
    /// obligation: `None` when there is none (read `r` as asked), the
    /// serving provider's wrapped form of `r` when there is, and
    /// `permission_denied` (`OBLIGATION_UNSUPPORTED`) when that provider
    /// cannot wrap it. The provider decides, so no generic code knows a
    /// backend's reference syntax.
    fn obligated_ref(
        &self,
        r: &SecretRef,
        wrap_ttl: Option<Duration>,
    ) -> Result<Option<SecretRef>> {
        let Some(ttl) = wrap_ttl else {
            return Ok(None);
        };
        let provider = &self.inner.providers[self.route(r)?].provider;
        if !provider.capabilities().wrap {
            return Err(crate::policy::obligation_unsupported(r));
        }
        provider
            .with_wrap_ttl(r, ttl)
            .map(Some)
            .ok_or_else(|| crate::policy::obligation_unsupported(r))
    }

    /// Provider `p`'s name (a metrics label).
    fn provider_name(&self, p: usize) -> &str {
        self.inner.providers[p].provider.name()
    }

    fn key(&self, provider: usize, r: &SecretRef) -> Key {
        Key {
            provider,
            reference: r.canonical_arc(),
        }
    }

    /// The fast path: a fresh cached value, without spans or allocation.
    fn cached(&self, r: &SecretRef) -> Option<Secret> {
        let p = self.route(r).ok()?;
        let reg = &self.inner.providers[p];
        if !reg.cache.enabled {
            return None;
        }
        let hit = reg
            .store
            .fresh_secret(r.to_canonical(), &reg.cache, Instant::now())?;
        tracing::trace!(reference = %r, cache = "hit", "secref.resolve");
        metrics::by_provider(metrics::CACHE_HITS, self.provider_name(p));
        Some(hit)
    }

    /// Whether reads pass a policy or are audited (then the allocation-free
    /// cache fast path is skipped).
    fn is_governed(&self) -> bool {
        self.inner.policy.is_some() || self.inner.audit.is_some()
    }

    /// Whether the auditor lets reads go on (`[audit] on_sink_failure`);
    /// a refusal is itself audited for each reference.
    async fn admit_audited(&self, ctx: &Context, refs: &[SecretRef]) -> Option<Result<()>> {
        let a = self.inner.audit.as_ref()?;
        let res = a.admit().await;
        if let Err(e) = &res {
            for r in refs {
                a.record(
                    ctx,
                    ctx.tenant.as_deref(),
                    r,
                    self.provider_for(r).ok(),
                    None,
                    Outcome::Failed(e),
                );
            }
        }
        Some(res)
    }

    /// The auditor, if one is configured (e.g. to [`Auditor::flush`]).
    pub fn auditor(&self) -> Option<&Auditor> {
        self.inner.audit.as_ref()
    }

    /// The policy enforcement point, if one is configured.
    pub fn policy(&self) -> Option<&Policy> {
        self.inner.policy.as_deref()
    }

    /// [`Resolver::resolve_refs`] behind the policy and the auditor: refused
    /// references never reach the cache or a provider; a failed read gives
    /// its reserved grant use back; every outcome is audited.
    async fn governed_refs(
        &self,
        ctx: &Context,
        refs: &[SecretRef],
        bypass_cache: bool,
    ) -> Vec<FetchResult> {
        if !self.is_governed() {
            return self.resolve_refs(refs, bypass_cache).await;
        }
        if let Some(Err(error)) = self.admit_audited(ctx, refs).await {
            return refs
                .iter()
                .map(|_| {
                    Err(FetchError {
                        error: error.clone(),
                        request_level: true,
                    })
                })
                .collect();
        }
        let mut decisions = match &self.inner.policy {
            Some(policy) => policy.authorize(ctx, refs, READ_ACTION).await,
            None => refs.iter().map(|_| Ok(Permit::unrestricted())).collect(),
        };
        // Obligations: the read of an obligated grant uses the adjusted
        // reference, and bypasses the cache lookup so that every such read
        // is itself wrapped; an obligation nobody can meet is a refusal.
        let mut plain: Vec<SecretRef> = Vec::new();
        let mut obligated: Vec<SecretRef> = Vec::new();
        let mut is_obligated: Vec<bool> = Vec::new();
        for (r, d) in refs.iter().zip(decisions.iter_mut()) {
            let Ok(permit) = d else { continue };
            match self.obligated_ref(r, permit.wrap_ttl()) {
                Ok(None) => {
                    plain.push(r.clone());
                    is_obligated.push(false);
                }
                Ok(Some(adjusted)) => {
                    obligated.push(adjusted);
                    is_obligated.push(true);
                }
                Err(error) => {
                    permit.refund();
                    let decision_id = permit.decision_id().map(str::to_owned);
                    *d = Err(Refusal { error, decision_id });
                }
            }
        }
        let mut plain_hits = vec![false; plain.len()];
        let mut obligated_hits = vec![false; obligated.len()];
        let (plain_res, obligated_res) = futures::future::join(
            self.resolve_refs_noting_hits(&plain, bypass_cache, &mut plain_hits),
            self.resolve_refs_noting_hits(&obligated, true, &mut obligated_hits),
        )
        .await;
        let mut plain_out = plain_res.into_iter().zip(plain_hits);
        let mut obligated_out = obligated_res.into_iter().zip(obligated_hits);
        let mut fetched = is_obligated.into_iter().map(|o| {
            let next = if o {
                obligated_out.next()
            } else {
                plain_out.next()
            };
            next.expect("one answer per allowed reference")
        });
        let tenant = ctx.tenant.as_deref().or_else(|| {
            self.inner
                .policy
                .as_deref()
                .map(|p| p.settings().tenant.as_str())
        });
        let audit = self.inner.audit.as_ref();
        let mut out = Vec::with_capacity(refs.len());
        for (r, decision) in refs.iter().zip(decisions) {
            let provider = self.provider_for(r).ok();
            let res = match decision {
                Err(refusal) => {
                    if let Some(a) = audit {
                        let outcome = Outcome::Denied(&refusal.error);
                        a.record(
                            ctx,
                            tenant,
                            r,
                            provider,
                            refusal.decision_id.as_deref(),
                            outcome,
                        );
                    }
                    Err(FetchError {
                        error: refusal.error,
                        request_level: false,
                    })
                }
                Ok(permit) => {
                    let (res, cached) = fetched.next().expect("one answer per allowed reference");
                    if res.is_err() {
                        permit.refund();
                    }
                    if let Some(a) = audit {
                        let outcome = match &res {
                            Ok(v) => Outcome::Read {
                                cached,
                                version: v.version.as_deref(),
                            },
                            Err(e) => Outcome::Failed(&e.error),
                        };
                        a.record(ctx, tenant, r, provider, permit.decision_id(), outcome);
                    }
                    res
                }
            };
            out.push(res);
        }
        out
    }

    /// The core: cache, single-flight, batching, retries. Results are in
    /// input order. `bypass_cache` skips lookups (watch) but still updates.
    async fn resolve_refs(&self, refs: &[SecretRef], bypass_cache: bool) -> Vec<FetchResult> {
        let mut hits = vec![false; refs.len()];
        self.resolve_refs_noting_hits(refs, bypass_cache, &mut hits)
            .await
    }

    /// [`Resolver::resolve_refs`], also setting `hits[i]` when reference `i`
    /// was answered from the cache.
    async fn resolve_refs_noting_hits(
        &self,
        refs: &[SecretRef],
        bypass_cache: bool,
        hits: &mut [bool],
    ) -> Vec<FetchResult> {
        let now = Instant::now();
        let mut results: Vec<Option<FetchResult>> = vec![None; refs.len()];
        // Per provider: the indices this call must fetch.
        let mut to_fetch: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        let mut refresh_ahead: Vec<(usize, SecretRef)> = Vec::new();
        for (i, r) in refs.iter().enumerate() {
            let p = match self.route(r) {
                Ok(p) => p,
                Err(e) => {
                    results[i] = Some(Err(FetchError {
                        error: e,
                        request_level: false,
                    }));
                    continue;
                }
            };
            let cfg = &self.inner.providers[p].cache;
            if cfg.enabled && !bypass_cache {
                let store = &self.inner.providers[p].store;
                match store.lookup(r.to_canonical(), cfg, now) {
                    Lookup::Fresh { value, refresh } => {
                        tracing::Span::current().record("cache", "hit");
                        if refresh && store.claim_refresh(r.to_canonical()) {
                            refresh_ahead.push((p, r.clone()));
                        }
                        results[i] = Some(Ok(Resolved::clone(&value)));
                        hits[i] = true;
                        metrics::by_provider(metrics::CACHE_HITS, self.provider_name(p));
                        continue;
                    }
                    Lookup::Negative(e) => {
                        tracing::Span::current().record("cache", "negative_hit");
                        results[i] = Some(Err(FetchError {
                            error: e,
                            request_level: false,
                        }));
                        continue;
                    }
                    Lookup::Miss => {}
                }
            }
            tracing::Span::current().record("cache", "miss");
            metrics::by_provider(metrics::CACHE_MISSES, self.provider_name(p));
            to_fetch.entry(p).or_default().push(i);
        }
        for (p, r) in refresh_ahead {
            self.spawn_refresh(p, r);
        }
        if !to_fetch.is_empty() {
            let fetches = to_fetch.into_iter().map(|(p, idxs)| async move {
                (idxs.clone(), self.fetch_group(p, refs, idxs).await)
            });
            for (idxs, res) in join_all(fetches).await {
                for (i, r) in idxs.into_iter().zip(res) {
                    results[i] = Some(r);
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every reference answered"))
            .collect()
    }

    /// Fetches one provider's references with single-flight: references
    /// already in flight are awaited, the rest are fetched by this call.
    async fn fetch_group(
        &self,
        p: usize,
        refs: &[SecretRef],
        idxs: Vec<usize>,
    ) -> Vec<FetchResult> {
        // Also catches the same reference twice in this batch: its second
        // occurrence follows the first, which this call leads.
        let mut own: Vec<(usize, Leader<'_, Key, FetchResult, _>)> = Vec::new();
        let mut waits: Vec<(usize, Follower<FetchResult>)> = Vec::new();
        for (slot, &i) in idxs.iter().enumerate() {
            match self.inner.flights.claim(self.key(p, &refs[i])) {
                Claim::Leader(leader) => own.push((slot, leader)),
                Claim::Follower(f) => waits.push((slot, f)),
            }
        }
        let mut out: Vec<Option<FetchResult>> = vec![None; idxs.len()];
        if !own.is_empty() {
            let own_refs: Vec<SecretRef> =
                own.iter().map(|(s, _)| refs[idxs[*s]].clone()).collect();
            let fetched = self.fetch_with_retry(p, &own_refs).await;
            for ((slot, leader), res) in own.into_iter().zip(fetched) {
                let res = self.settle(p, leader.key(), &refs[idxs[slot]], res);
                leader.finish(res.clone());
                out[slot] = Some(res);
            }
        }
        for (slot, f) in waits {
            metrics::by_provider(metrics::COALESCED, self.provider_name(p));
            let res = match f.wait().await {
                Some(v) => v,
                // The leader was cancelled: fetch it ourselves.
                None => Box::pin(self.fetch_group(p, refs, vec![idxs[slot]]))
                    .await
                    .pop()
                    .expect("one result"),
            };
            out[slot] = Some(res);
        }
        out.into_iter().map(|o| o.expect("answered")).collect()
    }

    /// Applies the cache rules to a fresh outcome.
    fn settle(&self, p: usize, key: &Key, r: &SecretRef, res: FetchResult) -> FetchResult {
        let cfg = &self.inner.providers[p].cache;
        let store = &self.inner.providers[p].store;
        let now = Instant::now();
        match res {
            Ok(v) => {
                if let Some(lease) = &v.lease {
                    self.inner.leases.lock().insert(lease.id.clone(), p);
                    if self.inner.auto_renew && lease.renewable {
                        self.spawn_renewal(p, key.reference.clone(), lease.clone());
                    }
                }
                if cfg.enabled {
                    store.insert(key.reference.clone(), v.clone(), cfg, now);
                }
                Ok(v)
            }
            Err(e) if e.request_level && e.error.retryable() => {
                if cfg.enabled {
                    if let Some(stale) = store.stale(&key.reference, now) {
                        debug!(reference = %r, error_code = %e.error.code(), "serving stale value within grace");
                        tracing::Span::current().record("cache", "stale");
                        metrics::by_provider(metrics::CACHE_STALE, self.provider_name(p));
                        store.release_refresh(&key.reference);
                        return Ok(Resolved::clone(&stale));
                    }
                    store.release_refresh(&key.reference);
                }
                Err(e)
            }
            Err(e) => {
                if cfg.enabled {
                    if !e.request_level && is_negative_cacheable(e.error.code()) {
                        store.insert_negative(key.reference.clone(), e.error.clone(), cfg, now);
                    } else {
                        // Fail closed: the backend said no, forget the value.
                        store.remove(&key.reference);
                    }
                }
                Err(e)
            }
        }
    }

    /// One provider call per chunk, chunks concurrent (bounded), with the
    /// retry policy: retryable request-level failures retry the chunk,
    /// retryable item-level failures retry just those items.
    async fn fetch_with_retry(&self, p: usize, refs: &[SecretRef]) -> Vec<FetchResult> {
        let provider = &self.inner.providers[p].provider;
        let chunk = provider.max_batch().max(1);
        let chunks = refs.chunks(chunk).map(|c| async move {
            let _permit = self.inner.permits.acquire().await.expect("semaphore open");
            self.fetch_chunk(p, c).await
        });
        join_all(chunks).await.into_iter().flatten().collect()
    }

    async fn fetch_chunk(&self, p: usize, refs: &[SecretRef]) -> Vec<FetchResult> {
        let provider = &self.inner.providers[p].provider;
        let span = tracing::debug_span!(
            "secref.provider_call",
            provider = provider.name(),
            count = refs.len(),
            attempts = field::Empty,
            error_code = field::Empty,
        );
        // Every item's latest outcome, and the items the next attempt asks
        // for again (only the retryable failures of this one).
        let state = Mutex::new((
            vec![None::<FetchResult>; refs.len()],
            (0..refs.len()).collect::<Vec<usize>>(),
        ));
        let mut attempts = 0u32;
        // The policy's loop decides whether and when to go again; an attempt
        // reports a retryable failure when any item is worth retrying.
        let _ = self
            .inner
            .retry
            .run(|attempt| {
                attempts = attempt;
                let state = &state;
                async move {
                    let pending = state.lock().1.clone();
                    let batch: Vec<SecretRef> = pending.iter().map(|i| refs[*i].clone()).collect();
                    let started = Instant::now();
                    let answer: BatchResult<Resolved> = provider.resolve_many(&batch).await;
                    metrics::backend_latency(provider.name(), started.elapsed());
                    let mut st = state.lock();
                    let (results, next) = &mut *st;
                    next.clear();
                    let mut again: Option<Error> = None;
                    let mut failed = |i: usize, e: Error, request_level: bool| {
                        if e.retryable() {
                            next.push(i);
                            again.get_or_insert_with(|| e.clone());
                        }
                        Some(Err(FetchError {
                            error: fill(e, &refs[i], provider.name()),
                            request_level,
                        }))
                    };
                    match answer {
                        Ok(items) => {
                            for (i, item) in
                                pending.iter().zip(pad(items, batch.len(), provider.name()))
                            {
                                match item {
                                    Ok(v) => results[*i] = Some(Ok(v)),
                                    Err(e) => results[*i] = failed(*i, e, false),
                                }
                            }
                        }
                        Err(e) => {
                            tracing::Span::current().record("error_code", e.code().as_str());
                            for i in &pending {
                                results[*i] = failed(*i, e.clone(), true);
                            }
                        }
                    }
                    again.map_or(Ok(()), Err)
                }
            })
            .instrument(span.clone())
            .await;
        span.record("attempts", attempts);
        tracing::Span::current().record("attempts", attempts);
        let results: Vec<FetchResult> = state
            .into_inner()
            .0
            .into_iter()
            .map(|r| r.expect("every item answered"))
            .collect();
        for r in &results {
            metrics::resolve(provider.name(), r.as_ref().err().map(|e| e.error.code()));
        }
        results
    }

    /// Keeps a renewable lease alive until it is revoked, renewal fails, or
    /// the resolver is dropped (the task holds only a weak reference).
    fn spawn_renewal(&self, p: usize, reference: Arc<str>, lease: Lease) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = Arc::downgrade(&self.inner);
        let id = lease.id.clone();
        let task = handle.spawn(async move {
            let mut lease = lease;
            while let Some(ttl) = lease.ttl.filter(|t| !t.is_zero() && lease.renewable) {
                tokio::time::sleep(ttl.mul_f64(2.0 / 3.0)).await;
                let Some(provider) = weak.upgrade().map(|i| i.providers[p].provider.clone()) else {
                    return;
                };
                match provider.renew_lease(&lease.id, Some(ttl)).await {
                    Ok(renewed) => {
                        debug!(lease_id = %renewed.id, "lease renewed");
                        lease = renewed;
                    }
                    Err(e) => {
                        tracing::warn!(lease_id = %lease.id, error_code = %e.code(), "lease renewal failed; dropping the cached value");
                        if let Some(inner) = weak.upgrade() {
                            inner.providers[p].store.remove(&reference);
                        }
                        break;
                    }
                }
            }
            if let Some(inner) = weak.upgrade() {
                inner.renewals.lock().remove(&lease.id);
            }
        });
        if let Some(old) = self.inner.renewals.lock().insert(id, task.abort_handle()) {
            old.abort();
        }
    }

    fn spawn_refresh(&self, p: usize, r: SecretRef) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            self.inner.providers[p]
                .store
                .release_refresh(r.to_canonical());
            return;
        };
        let this = self.clone();
        handle.spawn(async move {
            let _ = this.resolve_refs(std::slice::from_ref(&r), true).await;
        });
    }

    /// Groups references by provider and runs `op` once per group.
    async fn per_provider<T, F, Fut>(&self, refs: Vec<SecretRef>, op: F) -> Vec<Result<T>>
    where
        T: Send,
        F: Fn(Arc<dyn Provider>, Vec<SecretRef>) -> Fut,
        Fut: std::future::Future<Output = BatchResult<T>>,
    {
        let mut out: Vec<Option<Result<T>>> = (0..refs.len()).map(|_| None).collect();
        let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, r) in refs.iter().enumerate() {
            match self.route(r) {
                Ok(p) => groups.entry(p).or_default().push(i),
                Err(e) => out[i] = Some(Err(e)),
            }
        }
        let calls = groups.into_iter().map(|(p, idxs)| {
            let provider = self.inner.providers[p].provider.clone();
            let group: Vec<SecretRef> = idxs.iter().map(|i| refs[*i].clone()).collect();
            let fut = op(provider.clone(), group);
            async move { (idxs, provider, fut.await) }
        });
        for (idxs, provider, res) in join_all(calls).await {
            match res {
                Ok(items) => {
                    for (i, item) in idxs.iter().zip(pad(items, idxs.len(), provider.name())) {
                        out[*i] = Some(item.map_err(|e| fill(e, &refs[*i], provider.name())));
                    }
                }
                Err(e) => {
                    for i in idxs {
                        out[i] = Some(Err(fill(e.clone(), &refs[i], provider.name())));
                    }
                }
            }
        }
        out.into_iter().map(|o| o.expect("answered")).collect()
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

fn partial<T>(refs: Vec<SecretRef>, res: Vec<Result<T>>) -> Partial<T> {
    let mut out = Partial {
        resolved: BTreeMap::new(),
        failures: BTreeMap::new(),
    };
    for (r, x) in refs.into_iter().zip(res) {
        match x {
            Ok(v) => {
                out.resolved.insert(r, v);
            }
            Err(e) => {
                out.failures.insert(r, e);
            }
        }
    }
    out
}

/// Guards against a provider that answers with the wrong number of items.
fn pad<T>(mut items: Vec<Result<T>>, want: usize, provider: &str) -> Vec<Result<T>> {
    if items.len() != want {
        let e = Error::new(
            ErrorCode::InvalidResponse,
            format!(
                "provider '{provider}' answered {} items for {want} references",
                items.len()
            ),
        );
        items.truncate(want);
        while items.len() < want {
            items.push(Err(e.clone()));
        }
    }
    items
}

/// Fills in the reference and provider on an error that lacks them.
fn fill(e: Error, r: &SecretRef, provider: &str) -> Error {
    let e = if e.reference().is_none() {
        e.with_reference(r.to_canonical())
    } else {
        e
    };
    if e.provider().is_none() {
        e.with_provider(provider)
    } else {
        e
    }
}

/// What `watch` compares: the version when there is one, else a keyed hash of
/// the bytes (never the bytes themselves).
#[derive(PartialEq, Eq)]
enum Fingerprint {
    Version(String),
    Digest(u64),
}

impl Fingerprint {
    fn of(v: &Resolved) -> Fingerprint {
        match &v.version {
            Some(ver) => Fingerprint::Version(ver.clone()),
            None => {
                use std::hash::{BuildHasher, Hasher};
                static KEY: std::sync::OnceLock<std::collections::hash_map::RandomState> =
                    std::sync::OnceLock::new();
                let mut h = KEY.get_or_init(Default::default).build_hasher();
                h.write(v.secret.expose_bytes());
                Fingerprint::Digest(h.finish())
            }
        }
    }
}
