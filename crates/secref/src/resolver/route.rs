//! Routing and fetching: references grouped by provider, one backend call
//! per group (split at the batch limit), single-flight, retries.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::join_all;
use parking_lot::Mutex;
use tokio::time::Instant;
use tracing::{field, Instrument};

use super::{FetchError, FetchResult, Key, Resolver};
use crate::cache::Lookup;
use crate::error::{Error, ErrorCode, Result};
use crate::flight::{Claim, Follower, Leader};
use crate::metrics;
use crate::provider::{BatchResult, Provider, Resolved};
use crate::reference::SecretRef;

impl Resolver {
    pub(super) fn route(&self, r: &SecretRef) -> Result<usize> {
        self.route_family(r.provider_family(), r.scheme())
            .map_err(|e| e.with_reference(r.to_canonical()))
    }

    pub(super) fn route_family(&self, family: &str, scheme: &str) -> Result<usize> {
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

    /// Provider `p`'s name (a metrics label).
    pub(super) fn provider_name(&self, p: usize) -> &str {
        self.inner.providers[p].provider.name()
    }

    pub(super) fn key(&self, provider: usize, r: &SecretRef) -> Key {
        Key {
            provider,
            reference: r.canonical_arc(),
        }
    }

    /// The core: cache, single-flight, batching, retries. Results are in
    /// input order. `bypass_cache` skips lookups (watch) but still updates.
    pub(super) async fn resolve_refs(
        &self,
        refs: &[SecretRef],
        bypass_cache: bool,
    ) -> Vec<FetchResult> {
        let mut hits = vec![false; refs.len()];
        self.resolve_refs_noting_hits(refs, bypass_cache, &mut hits)
            .await
    }

    /// [`Resolver::resolve_refs`], also setting `hits[i]` when reference `i`
    /// was answered from the cache.
    pub(super) async fn resolve_refs_noting_hits(
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
    pub(super) async fn fetch_group(
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

    /// One provider call per chunk, chunks concurrent (bounded), with the
    /// retry policy: retryable request-level failures retry the chunk,
    /// retryable item-level failures retry just those items.
    pub(super) async fn fetch_with_retry(&self, p: usize, refs: &[SecretRef]) -> Vec<FetchResult> {
        let provider = &self.inner.providers[p].provider;
        let chunk = provider.max_batch().max(1);
        let chunks = refs.chunks(chunk).map(|c| async move {
            let _permit = self.inner.permits.acquire().await.expect("semaphore open");
            self.fetch_chunk(p, c).await
        });
        join_all(chunks).await.into_iter().flatten().collect()
    }

    pub(super) async fn fetch_chunk(&self, p: usize, refs: &[SecretRef]) -> Vec<FetchResult> {
        let provider = &self.inner.providers[p].provider;
        let span = tracing::debug_span!(
            "secref.provider_call",
            provider = provider.name(),
            count = refs.len(),
            attempts = field::Empty,
            error_code = field::Empty,
            outcome = field::Empty,
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
        // `ok` when every item was delivered, else the first failure's code.
        let first_failure = results.iter().find_map(|r| r.as_ref().err());
        span.record(
            "outcome",
            first_failure.map_or("ok", |e| e.error.code().as_str()),
        );
        // Counted per read outcome, not per provider call
        // (`Resolver::count_read`): a cache hit or a refusal is a read too.
        results
    }

    /// Groups references by provider and runs `op` once per group.
    pub(super) async fn per_provider<T, F, Fut>(
        &self,
        refs: Vec<SecretRef>,
        op: F,
    ) -> Vec<Result<T>>
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
}

/// Guards against a provider that answers with the wrong number of items.
pub(super) fn pad<T>(mut items: Vec<Result<T>>, want: usize, provider: &str) -> Vec<Result<T>> {
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
pub(super) fn fill(e: Error, r: &SecretRef, provider: &str) -> Error {
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
