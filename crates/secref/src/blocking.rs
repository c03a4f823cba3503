//! A blocking wrapper over the async [`Resolver`](crate::Resolver), like
//! `reqwest::blocking`: the same API for code without an async runtime.
//!
//! ```
//! use secref::blocking::Resolver;
//! use secref::providers::EnvProvider;
//! std::env::set_var("BLOCKING_DOC", "v");
//! let r = Resolver::new(secref::Resolver::builder().provider(EnvProvider::new())).unwrap();
//! assert_eq!(r.resolve("env://BLOCKING_DOC").unwrap().as_text().unwrap(), "v");
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::policy::Context;
use crate::provider::{
    Action, LeaseRevocation, Metadata, Permission, Resolved, RevokeReason, Validation,
};
use crate::reference::SecretRef;
use crate::resolver::{IntoSecretRef, Partial, ResolverBuilder};
use crate::secret::Secret;

/// The blocking resolver. Cheap to clone. Must not be called from inside an
/// async task (use the async [`crate::Resolver`] there).
#[derive(Clone, Debug)]
pub struct Resolver {
    inner: crate::Resolver,
    runtime: Arc<tokio::runtime::Runtime>,
}

impl Resolver {
    /// Builds the async resolver and a small runtime to drive it.
    pub fn new(builder: ResolverBuilder) -> Result<Resolver> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("secref-blocking")
            .enable_all()
            .build()
            .map_err(|e| Error::internal(format!("cannot start runtime: {e}")))?;
        let inner = {
            let _guard = runtime.enter();
            builder.build()?
        };
        Ok(Resolver {
            inner,
            runtime: Arc::new(runtime),
        })
    }

    /// Wraps an existing async resolver.
    pub fn from_async(inner: crate::Resolver) -> Result<Resolver> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| Error::internal(format!("cannot start runtime: {e}")))?;
        Ok(Resolver {
            inner,
            runtime: Arc::new(runtime),
        })
    }

    /// The async resolver underneath.
    pub fn as_async(&self) -> &crate::Resolver {
        &self.inner
    }

    /// See [`crate::Resolver::resolve`].
    pub fn resolve(&self, r: impl IntoSecretRef) -> Result<Secret> {
        self.runtime.block_on(self.inner.resolve(r))
    }

    /// See [`crate::Resolver::resolve_detailed`].
    pub fn resolve_detailed(&self, r: impl IntoSecretRef) -> Result<Resolved> {
        self.runtime.block_on(self.inner.resolve_detailed(r))
    }

    /// See [`crate::Resolver::resolve_text`].
    pub fn resolve_text(&self, r: impl IntoSecretRef) -> Result<Zeroizing<String>> {
        self.runtime.block_on(self.inner.resolve_text(r))
    }

    /// See [`crate::Resolver::resolve_bytes`].
    pub fn resolve_bytes(&self, r: impl IntoSecretRef) -> Result<Zeroizing<Vec<u8>>> {
        self.runtime.block_on(self.inner.resolve_bytes(r))
    }

    /// See [`crate::Resolver::resolve_many`].
    pub fn resolve_many<I>(&self, refs: I) -> Result<BTreeMap<SecretRef, Secret>>
    where
        I: IntoIterator,
        I::Item: IntoSecretRef,
    {
        self.runtime.block_on(self.inner.resolve_many(refs))
    }

    /// See [`crate::Resolver::resolve_many_partial`].
    pub fn resolve_many_partial<I>(&self, refs: I) -> Result<Partial<Secret>>
    where
        I: IntoIterator,
        I::Item: IntoSecretRef,
    {
        self.runtime.block_on(self.inner.resolve_many_partial(refs))
    }

    /// See [`crate::Resolver::resolve_as`].
    pub fn resolve_as(&self, ctx: &Context, r: impl IntoSecretRef) -> Result<Secret> {
        self.runtime.block_on(self.inner.resolve_as(ctx, r))
    }

    /// See [`crate::Resolver::resolve_many_as`].
    pub fn resolve_many_as<I>(&self, ctx: &Context, refs: I) -> Result<BTreeMap<SecretRef, Secret>>
    where
        I: IntoIterator,
        I::Item: IntoSecretRef,
    {
        self.runtime.block_on(self.inner.resolve_many_as(ctx, refs))
    }

    /// See [`crate::Resolver::resolve_many_partial_as`].
    pub fn resolve_many_partial_as<I>(&self, ctx: &Context, refs: I) -> Result<Partial<Secret>>
    where
        I: IntoIterator,
        I::Item: IntoSecretRef,
    {
        self.runtime
            .block_on(self.inner.resolve_many_partial_as(ctx, refs))
    }

    /// See [`crate::Resolver::metadata`].
    pub fn metadata(&self, r: impl IntoSecretRef) -> Result<Metadata> {
        self.runtime.block_on(self.inner.metadata(r))
    }

    /// See [`crate::Resolver::metadata_as`].
    pub fn metadata_as(&self, ctx: &Context, r: impl IntoSecretRef) -> Result<Metadata> {
        self.runtime.block_on(self.inner.metadata_as(ctx, r))
    }

    /// See [`crate::Resolver::validate`].
    pub fn validate(&self, r: impl IntoSecretRef) -> Result<Validation> {
        self.runtime.block_on(self.inner.validate(r))
    }

    /// See [`crate::Resolver::validate_as`].
    pub fn validate_as(&self, ctx: &Context, r: impl IntoSecretRef) -> Result<Validation> {
        self.runtime.block_on(self.inner.validate_as(ctx, r))
    }

    /// See [`crate::Resolver::permission_check`].
    pub fn permission_check(&self, r: impl IntoSecretRef, action: Action) -> Result<Permission> {
        self.runtime
            .block_on(self.inner.permission_check(r, action))
    }

    /// See [`crate::Resolver::permission_check_as`].
    pub fn permission_check_as(
        &self,
        ctx: &Context,
        r: impl IntoSecretRef,
        action: Action,
    ) -> Result<Permission> {
        self.runtime
            .block_on(self.inner.permission_check_as(ctx, r, action))
    }

    /// See [`crate::Resolver::revoke_leases`].
    pub fn revoke_leases(
        &self,
        ids: &[String],
        reason: RevokeReason,
    ) -> Result<Vec<Result<LeaseRevocation>>> {
        self.runtime.block_on(self.inner.revoke_leases(ids, reason))
    }

    /// See [`crate::Resolver::invalidate`].
    pub fn invalidate(&self, r: impl IntoSecretRef) -> Result<()> {
        self.inner.invalidate(r)
    }

    /// See [`crate::Resolver::invalidate_all`].
    pub fn invalidate_all(&self) {
        self.inner.invalidate_all()
    }
}
