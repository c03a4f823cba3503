//! Cache glue: the allocation-free hit path, the cache rules applied to a
//! fresh outcome (positive, negative, stale within grace), refresh-ahead.

use tokio::time::Instant;
use tracing::debug;

use super::{FetchResult, Key, Resolver};
use crate::cache::is_negative_cacheable;
use crate::metrics;
use crate::provider::Resolved;
use crate::reference::SecretRef;
use crate::secret::Secret;

impl Resolver {
    /// The fast path: a fresh cached value, without spans or allocation.
    pub(super) fn cached(&self, r: &SecretRef) -> Option<Secret> {
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
        metrics::resolve(self.provider_name(p), None);
        Some(hit)
    }

    /// Applies the cache rules to a fresh outcome.
    pub(super) fn settle(
        &self,
        p: usize,
        key: &Key,
        r: &SecretRef,
        res: FetchResult,
    ) -> FetchResult {
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

    pub(super) fn spawn_refresh(&self, p: usize, r: SecretRef) {
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
}
