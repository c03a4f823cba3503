//! Leases: each lease id is routed back to the provider that issued it;
//! renewable leases can be kept alive in the background.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tracing::debug;

use super::route::pad;
use super::Resolver;
use crate::error::{Error, ErrorCode, Result};
use crate::provider::{Lease, LeaseRevocation, RevokeReason};

impl Resolver {
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

    /// Keeps a renewable lease alive until it is revoked, renewal fails, or
    /// the resolver is dropped (the task holds only a weak reference).
    pub(super) fn spawn_renewal(&self, p: usize, reference: Arc<str>, lease: Lease) {
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
}
