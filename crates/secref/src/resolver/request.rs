//! The request builder: one way to ask the resolver anything.
//!
//! A request names an operation and its references, and is awaited:
//!
//! | start with | awaits to |
//! |---|---|
//! | [`Resolver::read`]`(r)` | `Result<Secret>` |
//! | [`Resolver::read_many`]`(refs)` | `Result<BTreeMap<SecretRef, Secret>>` (all-or-nothing) |
//! | [`Resolver::metadata`] / [`Resolver::metadata_many`] | [`Metadata`] |
//! | [`Resolver::validate`] / [`Resolver::validate_many`] | [`Validation`] |
//! | [`Resolver::permission_check`] / [`Resolver::permission_check_many`] | [`Permission`] |
//!
//! and is narrowed before it is awaited:
//!
//! - `.as_(&ctx)`: on behalf of a [`Context`] (default: the anonymous one).
//!   The policy (if any) decides before any cache lookup or provider call,
//!   and the outcome is audited (if an auditor is configured).
//! - `.detailed()` (reads): the [`Resolved`] value with version and lease.
//! - `.partial()` (batches): a [`Partial`] of what resolved and what failed,
//!   instead of one error naming every failure.
//! - `.each()` (batches): one result per input reference, in input order.
//!
//! A batch is one call: references are grouped by provider, each group is
//! one backend call (split at the provider's batch limit), and a token `jti`
//! counts once however many references it names. Only unparseable input
//! fails a whole batch.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use secref::policy::{Context, Policy};
//! use secref::{providers::EnvProvider, ErrorCode, Resolver};
//! std::env::set_var("DEMO_REQ_A", "a-value");
//! let policy = Policy::from_table(
//!     &toml::from_str("[[rules]]\nsubject = \"svc-a\"\nmax_uses = 5").unwrap(),
//!     &secref::config::Env::default(),
//! ).unwrap();
//! let resolver = Resolver::builder().provider(EnvProvider::new()).policy(policy).build().unwrap();
//! let svc_a = Context::for_subject("svc-a");
//!
//! let one = resolver.read("env://DEMO_REQ_A").as_(&svc_a).detailed().await.unwrap();
//! assert_eq!(one.secret.as_text().unwrap(), "a-value");
//!
//! let batch = resolver
//!     .read_many(["env://DEMO_REQ_A", "env://DEMO_REQ_MISSING"])
//!     .as_(&svc_a)
//!     .partial()
//!     .await
//!     .unwrap();
//! assert_eq!(batch.resolved.len(), 1);
//! assert_eq!(batch.failures.len(), 1);
//!
//! let err = resolver.read("env://DEMO_REQ_A").as_(&Context::for_subject("svc-b")).await.unwrap_err();
//! assert_eq!(err.code(), ErrorCode::PermissionDenied);
//! # });
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use futures::future::BoxFuture;
use futures::FutureExt;
use tracing::{field, Instrument};

use super::partial::partial;
use super::{collect_refs, IntoSecretRef, Partial, Resolver};
use crate::error::Result;
use crate::policy::Context;
use crate::provider::{Action, Metadata, Permission, Resolved, Validation};
use crate::reference::SecretRef;
use crate::secret::Secret;

mod sealed {
    pub trait Sealed {}
}

/// What a request asks of the providers. Implemented by [`Read`],
/// [`ReadDetailed`], [`GetMetadata`], [`Validate`] and [`CheckPermission`];
/// sealed, so the set of operations is the resolver's to extend.
pub trait Operation: sealed::Sealed + Send + Sync + 'static {
    /// What one reference answers.
    type Output: Send + 'static;

    /// Runs the operation for `refs` on behalf of `ctx`, one result per
    /// reference in input order. `single` names the span of a one-reference
    /// request.
    #[doc(hidden)]
    fn run<'a>(
        &'a self,
        resolver: &'a Resolver,
        ctx: &'a Context,
        refs: &'a [SecretRef],
        single: bool,
    ) -> BoxFuture<'a, Vec<Result<Self::Output>>>;

    /// The allocation-free answer for an ungoverned resolver, if there is
    /// one (a fresh cache hit).
    #[doc(hidden)]
    fn fast(&self, _resolver: &Resolver, _r: &SecretRef) -> Option<Self::Output> {
        None
    }
}

/// Reads values ([`Resolver::read`], [`Resolver::read_many`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Read;

/// Reads values with their version and lease (`.detailed()`).
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadDetailed;

/// Reads non-secret metadata ([`Resolver::metadata`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct GetMetadata;

/// Checks that references name usable secrets without reading them
/// ([`Resolver::validate`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Validate;

/// Asks whether an action is allowed ([`Resolver::permission_check`]).
#[derive(Clone, Copy, Debug)]
pub struct CheckPermission(pub Action);

impl sealed::Sealed for Read {}
impl sealed::Sealed for ReadDetailed {}
impl sealed::Sealed for GetMetadata {}
impl sealed::Sealed for Validate {}
impl sealed::Sealed for CheckPermission {}

/// A span's `outcome`: `ok` or the error code.
pub(super) fn outcome<T>(r: &Result<T>) -> &'static str {
    r.as_ref().err().map_or("ok", |e| e.code().as_str())
}

/// A read through the cache, policy and audit, in a span named for the
/// request's shape.
async fn read_refs(
    resolver: &Resolver,
    ctx: &Context,
    refs: &[SecretRef],
    single: bool,
) -> Vec<Result<Resolved>> {
    let span = if single {
        // The scheme, never the reference: a path names what is stored
        // (the audit log keeps only a keyed hash of it), and spans may
        // leave the host (OpenTelemetry export).
        tracing::debug_span!(
            "secref.resolve",
            scheme = refs[0].scheme(),
            provider = field::Empty,
            cache = field::Empty,
            attempts = field::Empty,
            error_code = field::Empty,
            outcome = field::Empty,
            otel.status_code = field::Empty,
        )
    } else {
        tracing::debug_span!(
            "secref.resolve_many",
            count = refs.len(),
            failures = field::Empty
        )
    };
    let out: Vec<Result<Resolved>> = resolver
        .governed_refs(ctx, refs, false)
        .instrument(span.clone())
        .await
        .into_iter()
        .map(|r| r.map_err(|e| e.error))
        .collect();
    if single {
        if let Ok(p) = resolver.route(&refs[0]) {
            span.record("provider", resolver.provider_name(p));
        }
        span.record("outcome", outcome(&out[0]));
        if out[0].is_err() {
            span.record("otel.status_code", "ERROR");
        }
    } else {
        span.record("failures", out.iter().filter(|r| r.is_err()).count());
    }
    out
}

impl Operation for ReadDetailed {
    type Output = Resolved;
    fn run<'a>(
        &'a self,
        resolver: &'a Resolver,
        ctx: &'a Context,
        refs: &'a [SecretRef],
        single: bool,
    ) -> BoxFuture<'a, Vec<Result<Resolved>>> {
        read_refs(resolver, ctx, refs, single).boxed()
    }
}

impl Operation for Read {
    type Output = Secret;
    fn run<'a>(
        &'a self,
        resolver: &'a Resolver,
        ctx: &'a Context,
        refs: &'a [SecretRef],
        single: bool,
    ) -> BoxFuture<'a, Vec<Result<Secret>>> {
        read_refs(resolver, ctx, refs, single)
            .map(|out| out.into_iter().map(|r| r.map(|v| v.secret)).collect())
            .boxed()
    }
    fn fast(&self, resolver: &Resolver, r: &SecretRef) -> Option<Secret> {
        resolver.cached(r)
    }
}

impl Operation for GetMetadata {
    type Output = Metadata;
    fn run<'a>(
        &'a self,
        resolver: &'a Resolver,
        ctx: &'a Context,
        refs: &'a [SecretRef],
        _single: bool,
    ) -> BoxFuture<'a, Vec<Result<Metadata>>> {
        resolver
            .governed_op(ctx, refs.to_vec(), |p, refs| async move {
                p.metadata(&refs).await
            })
            .boxed()
    }
}

impl Operation for Validate {
    type Output = Validation;
    fn run<'a>(
        &'a self,
        resolver: &'a Resolver,
        ctx: &'a Context,
        refs: &'a [SecretRef],
        _single: bool,
    ) -> BoxFuture<'a, Vec<Result<Validation>>> {
        resolver
            .governed_op(ctx, refs.to_vec(), |p, refs| async move {
                p.validate(&refs).await
            })
            .boxed()
    }
}

impl Operation for CheckPermission {
    type Output = Permission;
    fn run<'a>(
        &'a self,
        resolver: &'a Resolver,
        ctx: &'a Context,
        refs: &'a [SecretRef],
        _single: bool,
    ) -> BoxFuture<'a, Vec<Result<Permission>>> {
        let action = self.0;
        resolver
            .governed_op(ctx, refs.to_vec(), move |p, refs| async move {
                p.permission_check(&refs, action).await
            })
            .boxed()
    }
}

/// The future a request awaits: already answered (a cache hit or bad
/// input, without allocating) or running.
#[must_use = "futures do nothing unless awaited"]
pub struct Pending<'a, T>(State<'a, T>);

enum State<'a, T> {
    Ready(Option<T>),
    Running(BoxFuture<'a, T>),
}

// The ready value is moved out, never pinned; the running future is boxed.
impl<T> Unpin for Pending<'_, T> {}

impl<T> Future for Pending<'_, T> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<T> {
        match &mut self.get_mut().0 {
            State::Ready(v) => Poll::Ready(v.take().expect("polled after completion")),
            State::Running(f) => f.as_mut().poll(cx),
        }
    }
}

impl<T> std::fmt::Debug for Pending<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pending")
    }
}

/// The caller's context, or the anonymous one.
fn context(ctx: Option<&Context>) -> Cow<'_, Context> {
    ctx.map_or_else(|| Cow::Owned(Context::anonymous()), Cow::Borrowed)
}

/// A request for one reference; await it for `Result<Op::Output>`.
#[must_use = "a request does nothing unless awaited"]
pub struct One<'a, Op, R> {
    resolver: &'a Resolver,
    ctx: Option<&'a Context>,
    reference: R,
    op: Op,
}

impl<'a, Op: Operation, R: IntoSecretRef> One<'a, Op, R> {
    pub(crate) fn new(resolver: &'a Resolver, reference: R, op: Op) -> Self {
        One {
            resolver,
            ctx: None,
            reference,
            op,
        }
    }

    /// On behalf of `ctx` instead of the anonymous [`Context`].
    pub fn as_(mut self, ctx: &'a Context) -> Self {
        self.ctx = Some(ctx);
        self
    }

    /// The narrowed request's reference, context and operation (for the
    /// blocking API, which sends them to its runtime thread).
    #[cfg(feature = "blocking")]
    pub(crate) fn into_parts(self) -> (R, Option<&'a Context>, Op) {
        (self.reference, self.ctx, self.op)
    }
}

impl<'a, R: IntoSecretRef> One<'a, Read, R> {
    /// The value with its version and lease ([`Resolved`]).
    pub fn detailed(self) -> One<'a, ReadDetailed, R> {
        One {
            resolver: self.resolver,
            ctx: self.ctx,
            reference: self.reference,
            op: ReadDetailed,
        }
    }
}

impl<'a, Op: Operation, R: IntoSecretRef> IntoFuture for One<'a, Op, R> {
    type Output = Result<Op::Output>;
    type IntoFuture = Pending<'a, Result<Op::Output>>;

    fn into_future(self) -> Self::IntoFuture {
        let One {
            resolver,
            ctx,
            reference,
            op,
        } = self;
        // A cache hit of an ungoverned resolver is answered here, before
        // anything is allocated (a parsed reference is not even cloned).
        let ungoverned = !resolver.is_governed();
        if ungoverned {
            if let Some(hit) = reference.as_parsed().and_then(|r| op.fast(resolver, r)) {
                return Pending(State::Ready(Some(Ok(hit))));
            }
        }
        let r = match reference.into_secret_ref() {
            Ok(r) => r,
            Err(e) => return Pending(State::Ready(Some(Err(e)))),
        };
        if ungoverned {
            if let Some(hit) = op.fast(resolver, &r) {
                return Pending(State::Ready(Some(Ok(hit))));
            }
        }
        Pending(State::Running(
            async move {
                let ctx = context(ctx);
                op.run(resolver, &ctx, std::slice::from_ref(&r), true)
                    .await
                    .pop()
                    .expect("one result")
            }
            .boxed(),
        ))
    }
}

/// How a batch's results are handed back.
pub trait Mode<T>: sealed::Sealed {
    /// What the batch awaits to.
    type Output;
    /// Collects one result per reference (in input order).
    #[doc(hidden)]
    fn collect(refs: Vec<SecretRef>, results: Vec<Result<T>>) -> Result<Self::Output>;
}

/// All-or-nothing (the default): every value, or one error naming each
/// failure.
#[derive(Debug)]
pub struct AllOrNothing;

/// `.partial()`: a [`Partial`] of what resolved and what failed.
#[derive(Debug)]
pub struct PartialResults;

/// `.each()`: one result per input reference, in input order.
#[derive(Debug)]
pub struct InputOrder;

impl sealed::Sealed for AllOrNothing {}
impl sealed::Sealed for PartialResults {}
impl sealed::Sealed for InputOrder {}

impl<T> Mode<T> for AllOrNothing {
    type Output = BTreeMap<SecretRef, T>;
    fn collect(refs: Vec<SecretRef>, results: Vec<Result<T>>) -> Result<Self::Output> {
        partial(refs, results).into_result()
    }
}

impl<T> Mode<T> for PartialResults {
    type Output = Partial<T>;
    fn collect(refs: Vec<SecretRef>, results: Vec<Result<T>>) -> Result<Self::Output> {
        Ok(partial(refs, results))
    }
}

impl<T> Mode<T> for InputOrder {
    type Output = Vec<Result<T>>;
    fn collect(_refs: Vec<SecretRef>, results: Vec<Result<T>>) -> Result<Self::Output> {
        Ok(results)
    }
}

/// A request for many references, answered as one call; await it for
/// `Result<M::Output>` (all-or-nothing unless narrowed).
#[must_use = "a request does nothing unless awaited"]
pub struct Many<'a, Op, M = AllOrNothing> {
    resolver: &'a Resolver,
    ctx: Option<&'a Context>,
    refs: Result<Vec<SecretRef>>,
    op: Op,
    mode: PhantomData<fn() -> M>,
}

impl<'a, Op: Operation> Many<'a, Op> {
    pub(crate) fn new<I>(resolver: &'a Resolver, references: I, op: Op) -> Self
    where
        I: IntoIterator,
        I::Item: IntoSecretRef,
    {
        Many {
            resolver,
            ctx: None,
            refs: collect_refs(references),
            op,
            mode: PhantomData,
        }
    }
}

impl<'a, Op: Operation, M> Many<'a, Op, M> {
    /// A batch of parsed references in mode `M` (for the blocking API).
    #[cfg(feature = "blocking")]
    pub(crate) fn from_parts(resolver: &'a Resolver, refs: Vec<SecretRef>, op: Op) -> Self {
        Many {
            resolver,
            ctx: None,
            refs: Ok(refs),
            op,
            mode: PhantomData,
        }
    }

    /// The narrowed batch's references, context and operation (for the
    /// blocking API, which sends them to its runtime thread).
    #[cfg(feature = "blocking")]
    pub(crate) fn into_parts(self) -> (Result<Vec<SecretRef>>, Option<&'a Context>, Op) {
        (self.refs, self.ctx, self.op)
    }

    /// On behalf of `ctx` instead of the anonymous [`Context`].
    pub fn as_(mut self, ctx: &'a Context) -> Self {
        self.ctx = Some(ctx);
        self
    }

    fn narrow<Op2, M2>(self, op: impl FnOnce(Op) -> Op2) -> Many<'a, Op2, M2> {
        Many {
            resolver: self.resolver,
            ctx: self.ctx,
            refs: self.refs,
            op: op(self.op),
            mode: PhantomData,
        }
    }

    /// A [`Partial`]: what resolved and what failed.
    pub fn partial(self) -> Many<'a, Op, PartialResults> {
        self.narrow(|op| op)
    }

    /// One result per input reference, in input order (what a server
    /// answering a batch item by item needs).
    pub fn each(self) -> Many<'a, Op, InputOrder> {
        self.narrow(|op| op)
    }
}

impl<'a, M> Many<'a, Read, M> {
    /// The values with their versions and leases ([`Resolved`]).
    pub fn detailed(self) -> Many<'a, ReadDetailed, M> {
        self.narrow(|_| ReadDetailed)
    }
}

impl<'a, Op, M> IntoFuture for Many<'a, Op, M>
where
    Op: Operation,
    M: Mode<Op::Output> + 'a,
    M::Output: Send + 'a,
{
    type Output = Result<M::Output>;
    type IntoFuture = Pending<'a, Result<M::Output>>;

    fn into_future(self) -> Self::IntoFuture {
        let Many {
            resolver,
            ctx,
            refs,
            op,
            ..
        } = self;
        let refs = match refs {
            Ok(refs) => refs,
            Err(e) => return Pending(State::Ready(Some(Err(e)))),
        };
        Pending(State::Running(
            async move {
                let ctx = context(ctx);
                let results = op.run(resolver, &ctx, &refs, false).await;
                M::collect(refs, results)
            }
            .boxed(),
        ))
    }
}

impl Resolver {
    /// Reads one reference: `.as_(&ctx)`, `.detailed()`, then `.await`.
    pub fn read<R: IntoSecretRef>(&self, reference: R) -> One<'_, Read, R> {
        One::new(self, reference, Read)
    }

    /// Reads many references as one call: `.as_(&ctx)`, `.detailed()`,
    /// `.partial()` / `.each()`, then `.await`.
    pub fn read_many<I>(&self, references: I) -> Many<'_, Read>
    where
        I: IntoIterator,
        I::Item: IntoSecretRef,
    {
        Many::new(self, references, Read)
    }

    /// Non-secret metadata for one reference. With a policy, the caller
    /// asks for action `metadata_read`.
    pub fn metadata<R: IntoSecretRef>(&self, reference: R) -> One<'_, GetMetadata, R> {
        One::new(self, reference, GetMetadata)
    }

    /// Metadata for many references (see [`Resolver::metadata`]).
    pub fn metadata_many<I>(&self, references: I) -> Many<'_, GetMetadata>
    where
        I: IntoIterator,
        I::Item: IntoSecretRef,
    {
        Many::new(self, references, GetMetadata)
    }

    /// Checks that a reference names a usable secret, without reading it
    /// (action `metadata_read` under a policy).
    pub fn validate<R: IntoSecretRef>(&self, reference: R) -> One<'_, Validate, R> {
        One::new(self, reference, Validate)
    }

    /// Validates many references (see [`Resolver::validate`]).
    pub fn validate_many<I>(&self, references: I) -> Many<'_, Validate>
    where
        I: IntoIterator,
        I::Item: IntoSecretRef,
    {
        Many::new(self, references, Validate)
    }

    /// Asks whether `action` is allowed on a reference. A denial by the
    /// provider is `Ok(Permission { allowed: false, .. })`; under a policy
    /// the caller must first be allowed to ask (action `metadata_read`),
    /// else the request fails with `permission_denied`.
    pub fn permission_check<R: IntoSecretRef>(
        &self,
        reference: R,
        action: Action,
    ) -> One<'_, CheckPermission, R> {
        One::new(self, reference, CheckPermission(action))
    }

    /// Permission checks for many references (see
    /// [`Resolver::permission_check`]).
    pub fn permission_check_many<I>(
        &self,
        references: I,
        action: Action,
    ) -> Many<'_, CheckPermission>
    where
        I: IntoIterator,
        I::Item: IntoSecretRef,
    {
        Many::new(self, references, CheckPermission(action))
    }
}
