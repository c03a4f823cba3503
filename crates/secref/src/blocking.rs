//! A blocking wrapper over the async [`Resolver`](crate::Resolver), built
//! the way `reqwest::blocking` is: the async resolver runs on a runtime
//! thread of its own, each call is sent to it over a channel and answered
//! over a one-shot channel, and the caller's thread only waits for that
//! answer. So it is safe to call from anywhere, also from inside a tokio
//! runtime (where a `block_on` would panic) — though async code should
//! prefer the async resolver, as waiting blocks one of its workers.
//!
//! The API is the async one with `.send()` where that one has `.await`:
//!
//! ```
//! use secref::blocking::Resolver;
//! use secref::policy::Context;
//! use secref::providers::EnvProvider;
//! std::env::set_var("BLOCKING_DOC", "v");
//! let r = Resolver::new(secref::Resolver::builder().provider(EnvProvider::new())).unwrap();
//! assert_eq!(r.resolve("env://BLOCKING_DOC").unwrap().as_text().unwrap(), "v");
//! let detailed = r.read("env://BLOCKING_DOC").as_(&Context::anonymous()).detailed().send().unwrap();
//! assert_eq!(detailed.secret.as_text().unwrap(), "v");
//! let batch = r.read_many(["env://BLOCKING_DOC", "env://BLOCKING_DOC_MISSING"]).partial().send().unwrap();
//! assert_eq!((batch.resolved.len(), batch.failures.len()), (1, 1));
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{mpsc as std_mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};

use crate::error::{Error, Result};
use crate::policy::{Authorization, Context};
use crate::provider::{Action, Lease, LeaseRevocation, Resolved, RevokeReason};
use crate::reference::SecretRef;
use crate::request::{
    AllOrNothing, CheckPermission, GetMetadata, InputOrder, Mode, Operation, PartialResults, Read,
    ReadDetailed, Validate,
};
use crate::resolver::{IntoSecretRef, ResolverBuilder};
use crate::secret::Secret;

/// A call for the runtime thread: given the async resolver, the future
/// that answers it (over its own one-shot channel).
type Job = Box<dyn FnOnce(crate::Resolver) -> BoxFuture<'static, ()> + Send>;

/// The runtime thread and the channel to it. Dropping the last handle
/// closes the channel, which ends the thread (and cancels what runs on it,
/// such as watches and lease renewals); the drop waits for that.
struct Worker {
    jobs: Option<tokio::sync::mpsc::UnboundedSender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            // Never join ourselves (the last handle dropped by a task).
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

fn stopped() -> Error {
    Error::internal("the blocking resolver's runtime thread has stopped")
}

/// The blocking resolver. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct Resolver {
    inner: crate::Resolver,
    worker: Arc<Worker>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("blocking::Resolver")
            .field(&self.inner)
            .finish()
    }
}

impl Resolver {
    /// Starts the runtime thread and builds the async resolver on it (so
    /// that whatever the providers spawn runs there).
    pub fn new(builder: ResolverBuilder) -> Result<Resolver> {
        Self::start(move || builder.build())
    }

    /// Drives an existing async resolver from a runtime thread of its own.
    pub fn from_async(inner: crate::Resolver) -> Result<Resolver> {
        Self::start(move || Ok(inner))
    }

    fn start(make: impl FnOnce() -> Result<crate::Resolver> + Send + 'static) -> Result<Resolver> {
        let (jobs, mut queue) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let (ready_tx, ready) = std_mpsc::sync_channel::<Result<crate::Resolver>>(1);
        let thread = std::thread::Builder::new()
            .name("secref-blocking".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx
                            .send(Err(Error::internal(format!("cannot start runtime: {e}"))));
                        return;
                    }
                };
                let built = {
                    let _guard = runtime.enter();
                    make()
                };
                let resolver = match built {
                    Ok(r) => {
                        let _ = ready_tx.send(Ok(r.clone()));
                        r
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(async move {
                    while let Some(job) = queue.recv().await {
                        tokio::spawn(job(resolver.clone()));
                    }
                });
            })
            .map_err(|e| Error::internal(format!("cannot start the runtime thread: {e}")))?;
        let worker = Worker {
            jobs: Some(jobs),
            thread: Some(thread),
        };
        let inner = ready.recv().map_err(|_| stopped())??;
        Ok(Resolver {
            inner,
            worker: Arc::new(worker),
        })
    }

    /// Runs `f` on the runtime thread and waits for its answer.
    fn call<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(crate::Resolver) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let (tx, rx) = std_mpsc::sync_channel(1);
        let job: Job = Box::new(move |resolver| {
            Box::pin(async move {
                let _ = tx.send(f(resolver).await);
            })
        });
        self.worker
            .jobs
            .as_ref()
            .ok_or_else(stopped)?
            .send(job)
            .map_err(|_| stopped())?;
        // A panic on the runtime thread drops `tx`: an error, not a hang.
        rx.recv().map_err(|_| stopped())?
    }

    /// The async resolver underneath (also for its synchronous methods:
    /// `provider_names`, `provider_for`, `auditor`, `policy`, …).
    pub fn as_async(&self) -> &crate::Resolver {
        &self.inner
    }

    /// See [`crate::Resolver::resolve`].
    pub fn resolve(&self, reference: impl IntoSecretRef) -> Result<Secret> {
        self.read(reference).send()
    }

    /// See [`crate::Resolver::resolve_many`].
    pub fn resolve_many<I>(&self, references: I) -> Result<BTreeMap<SecretRef, Secret>>
    where
        I: IntoIterator,
        I::Item: IntoSecretRef,
    {
        self.read_many(references).send()
    }

    /// See [`crate::Resolver::read`].
    pub fn read<R: IntoSecretRef>(&self, reference: R) -> One<'_, Read, R> {
        One::new(self, reference, Read)
    }

    /// See [`crate::Resolver::read_many`].
    pub fn read_many<I>(&self, references: I) -> Many<'_, Read>
    where
        I: IntoIterator,
        I::Item: IntoSecretRef,
    {
        Many::new(self, references, Read)
    }

    /// See [`crate::Resolver::metadata`].
    pub fn metadata<R: IntoSecretRef>(&self, reference: R) -> One<'_, GetMetadata, R> {
        One::new(self, reference, GetMetadata)
    }

    /// See [`crate::Resolver::metadata_many`].
    pub fn metadata_many<I>(&self, references: I) -> Many<'_, GetMetadata>
    where
        I: IntoIterator,
        I::Item: IntoSecretRef,
    {
        Many::new(self, references, GetMetadata)
    }

    /// See [`crate::Resolver::validate`].
    pub fn validate<R: IntoSecretRef>(&self, reference: R) -> One<'_, Validate, R> {
        One::new(self, reference, Validate)
    }

    /// See [`crate::Resolver::validate_many`].
    pub fn validate_many<I>(&self, references: I) -> Many<'_, Validate>
    where
        I: IntoIterator,
        I::Item: IntoSecretRef,
    {
        Many::new(self, references, Validate)
    }

    /// See [`crate::Resolver::permission_check`].
    pub fn permission_check<R: IntoSecretRef>(
        &self,
        reference: R,
        action: Action,
    ) -> One<'_, CheckPermission, R> {
        One::new(self, reference, CheckPermission(action))
    }

    /// See [`crate::Resolver::permission_check_many`].
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

    /// See [`crate::Resolver::authorize_as`].
    pub fn authorize_as(
        &self,
        ctx: &Context,
        reference: impl IntoSecretRef,
        action: Action,
    ) -> Result<Authorization> {
        let r = reference.into_secret_ref()?;
        let ctx = ctx.clone();
        self.call(move |res| async move { res.authorize_as(&ctx, r, action).await })
    }

    /// See [`crate::Resolver::audit_read_as`].
    pub fn audit_read_as(
        &self,
        ctx: &Context,
        reference: impl IntoSecretRef,
        decision_id: Option<&str>,
        result: std::result::Result<Option<&str>, &Error>,
    ) {
        self.inner
            .audit_read_as(ctx, reference, decision_id, result)
    }

    /// See [`crate::Resolver::revoke_leases`].
    pub fn revoke_leases(
        &self,
        ids: &[String],
        reason: RevokeReason,
    ) -> Result<Vec<Result<LeaseRevocation>>> {
        let ids = ids.to_vec();
        self.call(move |res| async move { res.revoke_leases(&ids, reason).await })
    }

    /// See [`crate::Resolver::renew_lease`].
    pub fn renew_lease(&self, lease_id: &str, increment: Option<Duration>) -> Result<Lease> {
        let id = lease_id.to_owned();
        self.call(move |res| async move { res.renew_lease(&id, increment).await })
    }

    /// See [`crate::Resolver::watch`]: an iterator that blocks until the
    /// next value (or error). Dropping it stops the polling.
    pub fn watch(&self, reference: impl IntoSecretRef, interval: Duration) -> Result<Watch> {
        let r = reference.into_secret_ref()?;
        self.call(move |res| async move {
            let mut stream = Box::pin(res.watch(r, interval)?);
            // No buffer beyond one item: polling follows consumption.
            let (mut tx, rx) = futures::channel::mpsc::channel(0);
            let task = tokio::spawn(async move {
                while let Some(item) = stream.next().await {
                    if tx.send(item).await.is_err() {
                        break;
                    }
                }
            });
            Ok(Watch {
                items: rx,
                task: task.abort_handle(),
                _worker: None,
            })
        })
        .map(|mut w| {
            // The iterator keeps the runtime thread alive.
            w._worker = Some(self.worker.clone());
            w
        })
    }

    /// See [`crate::Resolver::invalidate`].
    pub fn invalidate(&self, reference: impl IntoSecretRef) -> Result<()> {
        self.inner.invalidate(reference)
    }

    /// See [`crate::Resolver::invalidate_all`].
    pub fn invalidate_all(&self) {
        self.inner.invalidate_all()
    }
}

/// The blocking form of [`crate::Resolver::watch`]'s stream.
pub struct Watch {
    items: futures::channel::mpsc::Receiver<Result<Resolved>>,
    task: tokio::task::AbortHandle,
    _worker: Option<Arc<Worker>>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watch")
    }
}

impl Iterator for Watch {
    type Item = Result<Resolved>;
    fn next(&mut self) -> Option<Result<Resolved>> {
        // A plain park until the runtime thread sends: no tokio runtime is
        // entered on this thread.
        futures::executor::block_on(self.items.next())
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A blocking request for one reference: narrow it like
/// [`crate::request::One`], then [`One::send`]. The narrowing is the async
/// request's own; only sending differs.
#[must_use = "a request does nothing until sent"]
pub struct One<'a, Op, R> {
    resolver: &'a Resolver,
    request: crate::request::One<'a, Op, R>,
}

impl<'a, Op: Operation, R: IntoSecretRef> One<'a, Op, R> {
    /// The same blocking request around the async request `f` narrows to.
    fn narrow<Op2>(
        self,
        f: impl FnOnce(crate::request::One<'a, Op, R>) -> crate::request::One<'a, Op2, R>,
    ) -> One<'a, Op2, R> {
        One {
            resolver: self.resolver,
            request: f(self.request),
        }
    }

    fn new(resolver: &'a Resolver, reference: R, op: Op) -> Self {
        One {
            resolver,
            request: crate::request::One::new(&resolver.inner, reference, op),
        }
    }

    /// On behalf of `ctx` instead of the anonymous [`Context`].
    pub fn as_(self, ctx: &'a Context) -> Self {
        self.narrow(|r| r.as_(ctx))
    }

    /// Runs the request and waits for its answer.
    pub fn send(self) -> Result<Op::Output> {
        let (reference, ctx, op) = self.request.into_parts();
        let r = reference.into_secret_ref()?;
        let ctx = ctx.cloned();
        self.resolver.call(move |res| async move {
            let req = crate::request::One::new(&res, r, op);
            match &ctx {
                Some(ctx) => req.as_(ctx).await,
                None => req.await,
            }
        })
    }
}

impl<'a, R: IntoSecretRef> One<'a, Read, R> {
    /// The value with its version and lease ([`Resolved`]).
    pub fn detailed(self) -> One<'a, ReadDetailed, R> {
        self.narrow(|r| r.detailed())
    }
}

/// A blocking request for many references: narrow it like
/// [`crate::request::Many`], then [`Many::send`]. The narrowing is the
/// async request's own; only sending differs.
#[must_use = "a request does nothing until sent"]
pub struct Many<'a, Op, M = AllOrNothing> {
    resolver: &'a Resolver,
    request: crate::request::Many<'a, Op, M>,
}

impl<'a, Op: Operation> Many<'a, Op> {
    fn new<I>(resolver: &'a Resolver, references: I, op: Op) -> Self
    where
        I: IntoIterator,
        I::Item: IntoSecretRef,
    {
        Many {
            resolver,
            request: crate::request::Many::new(&resolver.inner, references, op),
        }
    }
}

impl<'a, Op: Operation, M> Many<'a, Op, M> {
    /// The same blocking request around the async request `f` narrows to.
    fn narrow<Op2, M2>(
        self,
        f: impl FnOnce(crate::request::Many<'a, Op, M>) -> crate::request::Many<'a, Op2, M2>,
    ) -> Many<'a, Op2, M2> {
        Many {
            resolver: self.resolver,
            request: f(self.request),
        }
    }

    /// On behalf of `ctx` instead of the anonymous [`Context`].
    pub fn as_(self, ctx: &'a Context) -> Self {
        self.narrow(|r| r.as_(ctx))
    }

    /// A [`crate::Partial`]: what resolved and what failed.
    pub fn partial(self) -> Many<'a, Op, PartialResults> {
        self.narrow(|r| r.partial())
    }

    /// One result per input reference, in input order.
    pub fn each(self) -> Many<'a, Op, InputOrder> {
        self.narrow(|r| r.each())
    }

    /// Runs the request and waits for its answer.
    pub fn send(self) -> Result<M::Output>
    where
        M: Mode<Op::Output> + 'static,
        M::Output: Send + 'static,
    {
        let (refs, ctx, op) = self.request.into_parts();
        let refs = refs?;
        let ctx = ctx.cloned();
        self.resolver.call(move |res| async move {
            let req = crate::request::Many::<Op, M>::from_parts(&res, refs, op);
            match &ctx {
                Some(ctx) => req.as_(ctx).await,
                None => req.await,
            }
        })
    }
}

impl<'a, M> Many<'a, Read, M> {
    /// The values with their versions and leases ([`Resolved`]).
    pub fn detailed(self) -> Many<'a, ReadDetailed, M> {
        self.narrow(|r| r.detailed())
    }
}
