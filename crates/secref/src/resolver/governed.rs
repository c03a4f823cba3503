//! Policy and audit glue: every read and metadata operation passes the
//! policy (if any) first, gives a reserved grant use back when it fails, and
//! is audited (if an auditor is configured).

use std::sync::Arc;
use std::time::Duration;

use super::{FetchError, FetchResult, IntoSecretRef, Resolver};
use crate::audit::Outcome;
use crate::error::{Error, Result};
use crate::policy::{Authorization, Context, Permit, Refusal, METADATA_ACTION, READ_ACTION};
use crate::provider::{Action, BatchResult, Provider};
use crate::reference::SecretRef;

impl Resolver {
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
    /// nothing happens. (Such a server counts the read itself with
    /// [`Resolver::count_served_read`]: only it knows what served it.)
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

    /// [`Resolver::per_provider`] behind the policy (action
    /// `metadata_read`): refused references never reach a provider, a failed
    /// operation gives its grant use back, and refusals are audited.
    pub(super) async fn governed_op<T, F, Fut>(
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

    /// The reference a read must use to meet a grant's `wrap_ttl`
    /// obligation: `None` when there is none (read `r` as asked), the
    /// serving provider's wrapped form of `r` when there is, and
    /// `permission_denied` (`OBLIGATION_UNSUPPORTED`) when that provider
    /// cannot wrap it. The provider decides, so no generic code knows a
    /// backend's reference syntax.
    pub(super) fn obligated_ref(
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

    /// Whether the auditor lets a read that is served outside the resolver
    /// (e.g. `secref serve`'s Vault API reading the local store itself) go
    /// on, by `[audit] on_sink_failure` — the same admission every resolver
    /// read passes; a refusal is audited. `Ok` without an auditor.
    pub async fn admit_read_as(&self, ctx: &Context, reference: impl IntoSecretRef) -> Result<()> {
        let r = reference.into_secret_ref()?;
        self.admit_audited(ctx, std::slice::from_ref(&r))
            .await
            .unwrap_or(Ok(()))
    }

    /// Whether reads pass a policy or are audited (then the allocation-free
    /// cache fast path is skipped).
    pub(super) fn is_governed(&self) -> bool {
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

    /// [`Resolver::resolve_refs`] behind the policy and the auditor: refused
    /// references never reach the cache or a provider; a failed read gives
    /// its reserved grant use back; every outcome is audited and counted
    /// ([`Resolver::count_read`]).
    pub(super) async fn governed_refs(
        &self,
        ctx: &Context,
        refs: &[SecretRef],
        bypass_cache: bool,
    ) -> Vec<FetchResult> {
        let out = self.decide_and_resolve(ctx, refs, bypass_cache).await;
        for (r, res) in refs.iter().zip(&out) {
            self.count_read(r, res.as_ref().err().map(|e| e.error.code()));
        }
        out
    }

    async fn decide_and_resolve(
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
}
