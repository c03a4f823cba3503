//! The resolver's rules, each proven against a controllable fake provider:
//! caching, fail-closed eviction, stale grace, negative caching,
//! single-flight, retries and backoff, batching, partial vs all-or-nothing,
//! leases, watch, tracing hygiene and the blocking API.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use secref::provider::{BatchResult, Lease, LeaseRevocation, Provider, Resolved, RevokeReason};
use secref::{CacheConfig, Error, ErrorCode, Resolver, RetryPolicy, Secret, SecretRef};
use secref_testkit::capture::assert_no_canary;

/// What the fake answers for one reference.
#[derive(Clone)]
enum Answer {
    Value(&'static str, Option<&'static str>),
    /// A value with a renewable 30 s lease.
    Leased(&'static str),
    Item(ErrorCode, bool),
}

/// A provider whose answers, failures and latency the test controls, and
/// which counts every call.
#[derive(Debug, Default)]
struct Fake {
    name: &'static str,
    families: Vec<&'static str>,
    state: Mutex<FakeState>,
    calls: AtomicUsize,
    renewals: AtomicUsize,
    renew_fails: std::sync::atomic::AtomicBool,
    max_batch: usize,
}

#[derive(Default)]
struct FakeState {
    answers: HashMap<String, Answer>,
    /// Request-level failures to return before answering normally.
    request_failures: Vec<Error>,
    delay: Duration,
    batches: Vec<Vec<String>>,
    revoked: Vec<String>,
}

impl std::fmt::Debug for FakeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FakeState")
    }
}

impl Fake {
    fn new(name: &'static str, family: &'static str) -> Arc<Fake> {
        Arc::new(Fake {
            name,
            families: vec![family],
            max_batch: 100,
            ..Fake::default()
        })
    }

    fn with_max_batch(name: &'static str, family: &'static str, max_batch: usize) -> Arc<Fake> {
        Arc::new(Fake {
            name,
            families: vec![family],
            max_batch,
            ..Fake::default()
        })
    }

    fn set(&self, r: &str, a: Answer) {
        let key = SecretRef::parse(r).unwrap().to_canonical().to_string();
        self.state.lock().unwrap().answers.insert(key, a);
    }

    fn fail_requests(&self, errors: Vec<Error>) {
        self.state.lock().unwrap().request_failures = errors;
    }

    fn delay(&self, d: Duration) {
        self.state.lock().unwrap().delay = d;
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn batches(&self) -> Vec<Vec<String>> {
        self.state.lock().unwrap().batches.clone()
    }
}

#[async_trait]
impl Provider for Fake {
    fn name(&self) -> &str {
        self.name
    }
    fn families(&self) -> &[&'static str] {
        &self.families
    }
    fn max_batch(&self) -> usize {
        self.max_batch
    }

    async fn resolve_many(&self, refs: &[SecretRef]) -> BatchResult<Resolved> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let delay = {
            let mut st = self.state.lock().unwrap();
            st.batches
                .push(refs.iter().map(|r| r.to_canonical().to_string()).collect());
            st.delay
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut st = self.state.lock().unwrap();
        if !st.request_failures.is_empty() {
            return Err(st.request_failures.remove(0));
        }
        Ok(refs
            .iter()
            .map(|r| match st.answers.get(r.to_canonical()) {
                Some(Answer::Value(v, ver)) => {
                    let mut out = Resolved::new(Secret::from(*v));
                    if let Some(ver) = ver {
                        out = out.with_version(*ver);
                        out = out.with_lease(Lease {
                            id: format!("lease-{}-{ver}", r.to_canonical()),
                            ttl: Some(Duration::from_secs(60)),
                            renewable: false,
                        });
                    }
                    Ok(out)
                }
                Some(Answer::Leased(v)) => Ok(Resolved::new(Secret::from(*v)).with_lease(Lease {
                    id: format!("lease-{}", r.to_canonical()),
                    ttl: Some(Duration::from_secs(30)),
                    renewable: true,
                })),
                Some(Answer::Item(code, retryable)) => {
                    Err(Error::new(*code, "item failed").with_retryable(*retryable))
                }
                None => Err(Error::new(ErrorCode::NotFound, "no such secret")),
            })
            .collect())
    }

    async fn renew_lease(
        &self,
        lease_id: &str,
        increment: Option<Duration>,
    ) -> secref::Result<Lease> {
        self.renewals.fetch_add(1, Ordering::SeqCst);
        if self.renew_fails.load(Ordering::SeqCst) {
            return Err(Error::new(ErrorCode::Expired, "lease expired"));
        }
        Ok(Lease {
            id: lease_id.to_string(),
            ttl: increment,
            renewable: true,
        })
    }

    async fn revoke_leases(
        &self,
        ids: &[String],
        _reason: RevokeReason,
    ) -> BatchResult<LeaseRevocation> {
        let mut st = self.state.lock().unwrap();
        st.revoked.extend(ids.iter().cloned());
        Ok(ids
            .iter()
            .map(|id| {
                Ok(LeaseRevocation {
                    lease_id: id.clone(),
                    status: "revoked".into(),
                    revoked_at: None,
                })
            })
            .collect())
    }
}

fn unavailable() -> Error {
    Error::new(ErrorCode::BackendUnavailable, "backend down")
}

fn resolver_with(fake: &Arc<Fake>, cache: CacheConfig, retry: RetryPolicy) -> Resolver {
    Resolver::builder()
        .provider_arc(fake.clone(), None)
        .cache(cache)
        .retry(retry)
        .build()
        .unwrap()
}

fn ttl(secs: u64) -> CacheConfig {
    CacheConfig {
        ttl: Duration::from_secs(secs),
        ..CacheConfig::default()
    }
}

const A: &str = "env://A";
const B: &str = "env://B";

/// The value `r` resolves `reference` to, as text.
async fn text_of(r: &Resolver, reference: &str) -> String {
    r.resolve(reference)
        .await
        .unwrap()
        .as_text()
        .unwrap()
        .to_string()
}

/// The code of the error `r` answers `reference` with.
async fn code_of(r: &Resolver, reference: &str) -> ErrorCode {
    r.resolve(reference).await.unwrap_err().code()
}

#[tokio::test(start_paused = true)]
async fn cache_hit_then_ttl_expiry() {
    let fake = Fake::new("fake", "env");
    fake.set(A, Answer::Value("one", None));
    let r = resolver_with(&fake, ttl(60), RetryPolicy::none());
    assert_eq!(text_of(&r, A).await, "one");
    assert_eq!(text_of(&r, A).await, "one");
    assert_eq!(fake.calls(), 1, "second read is a cache hit");
    fake.set(A, Answer::Value("two", None));
    tokio::time::advance(Duration::from_secs(59)).await;
    assert_eq!(text_of(&r, A).await, "one");
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(text_of(&r, A).await, "two");
    assert_eq!(fake.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn invalidate_forces_refresh() {
    let fake = Fake::new("fake", "env");
    fake.set(A, Answer::Value("one", None));
    let r = resolver_with(&fake, ttl(600), RetryPolicy::none());
    r.resolve(A).await.unwrap();
    fake.set(A, Answer::Value("two", None));
    r.invalidate(A).unwrap();
    assert_eq!(text_of(&r, A).await, "two");
    r.invalidate_all();
    r.resolve(A).await.unwrap();
    assert_eq!(fake.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn item_failure_evicts_and_is_never_served_stale() {
    let fake = Fake::new("fake", "env");
    fake.set(A, Answer::Value("one", None));
    let cache = CacheConfig {
        stale_grace: Duration::from_secs(3600),
        negative_ttl: Duration::ZERO,
        ..ttl(10)
    };
    let r = resolver_with(&fake, cache, RetryPolicy::none());
    r.resolve(A).await.unwrap();
    tokio::time::advance(Duration::from_secs(11)).await;
    // Access revoked: even with a long stale grace, no stale value.
    fake.set(A, Answer::Item(ErrorCode::PermissionDenied, false));
    let e = r.resolve(A).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::PermissionDenied);
    // The entry is gone: a later backend outage cannot resurrect it.
    fake.fail_requests(vec![unavailable()]);
    let e = r.resolve(A).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::BackendUnavailable);
}

#[tokio::test(start_paused = true)]
async fn stale_grace_only_for_retryable_request_errors_inside_window() {
    let fake = Fake::new("fake", "env");
    fake.set(A, Answer::Value("one", None));
    let cache = CacheConfig {
        stale_grace: Duration::from_secs(30),
        ..ttl(10)
    };
    let r = resolver_with(&fake, cache, RetryPolicy::none());
    r.resolve(A).await.unwrap();

    // Expired, backend down (retryable, request-level): stale value served.
    tokio::time::advance(Duration::from_secs(15)).await;
    fake.fail_requests(vec![unavailable()]);
    assert_eq!(text_of(&r, A).await, "one");
    // Not extended: the next call tries the backend again.
    fake.fail_requests(vec![unavailable()]);
    assert_eq!(text_of(&r, A).await, "one");
    assert_eq!(fake.calls(), 3);

    // Non-retryable request error: no stale value, and the entry is dropped.
    fake.fail_requests(vec![Error::new(ErrorCode::Unauthenticated, "bad token")]);
    assert_eq!(code_of(&r, A).await, ErrorCode::Unauthenticated);
    fake.fail_requests(vec![unavailable()]);
    assert_eq!(code_of(&r, A).await, ErrorCode::BackendUnavailable);
}

#[tokio::test(start_paused = true)]
async fn stale_grace_window_ends() {
    let fake = Fake::new("fake", "env");
    fake.set(A, Answer::Value("one", None));
    let cache = CacheConfig {
        stale_grace: Duration::from_secs(30),
        ..ttl(10)
    };
    let r = resolver_with(&fake, cache, RetryPolicy::none());
    r.resolve(A).await.unwrap();
    tokio::time::advance(Duration::from_secs(41)).await;
    fake.fail_requests(vec![unavailable()]);
    assert_eq!(code_of(&r, A).await, ErrorCode::BackendUnavailable);
}

#[tokio::test(start_paused = true)]
async fn stale_grace_defaults_to_zero() {
    let fake = Fake::new("fake", "env");
    fake.set(A, Answer::Value("one", None));
    let r = resolver_with(&fake, ttl(10), RetryPolicy::none());
    r.resolve(A).await.unwrap();
    tokio::time::advance(Duration::from_secs(11)).await;
    fake.fail_requests(vec![unavailable()]);
    assert!(r.resolve(A).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn negative_cache_expires() {
    let fake = Fake::new("fake", "env");
    let cache = CacheConfig {
        negative_ttl: Duration::from_secs(5),
        ..ttl(60)
    };
    let r = resolver_with(&fake, cache, RetryPolicy::none());
    assert_eq!(code_of(&r, A).await, ErrorCode::NotFound);
    assert_eq!(code_of(&r, A).await, ErrorCode::NotFound);
    assert_eq!(fake.calls(), 1, "not_found is remembered");
    fake.set(A, Answer::Value("now here", None));
    // negative_ttl plus at most 10 % jitter.
    tokio::time::advance(Duration::from_millis(5_600)).await;
    assert_eq!(text_of(&r, A).await, "now here");
    assert_eq!(fake.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn single_flight_1000_concurrent_misses_one_backend_call() {
    let fake = Fake::new("fake", "env");
    fake.set(A, Answer::Value("v", None));
    fake.delay(Duration::from_millis(50));
    let r = resolver_with(&fake, ttl(60), RetryPolicy::none());
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let r = r.clone();
            tokio::spawn(async move { r.resolve(A).await.map(|s| s.len()) })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 1);
    }
    assert_eq!(fake.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn single_flight_survives_cancelled_owner() {
    let fake = Fake::new("fake", "env");
    fake.set(A, Answer::Value("v", None));
    fake.delay(Duration::from_millis(100));
    let r = resolver_with(&fake, ttl(60), RetryPolicy::none());
    let owner = {
        let r = r.clone();
        tokio::spawn(async move { r.resolve(A).await.map(|_| ()) })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    let waiter = {
        let r = r.clone();
        tokio::spawn(async move { r.resolve(A).await.map(|s| s.len()) })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    owner.abort();
    assert_eq!(
        waiter.await.unwrap().unwrap(),
        1,
        "the waiter does not hang"
    );
}

#[tokio::test(start_paused = true)]
async fn retries_retryable_request_errors_with_bounded_backoff() {
    let fake = Fake::new("fake", "env");
    fake.set(A, Answer::Value("v", None));
    fake.fail_requests(vec![unavailable(), unavailable()]);
    let policy = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(1),
        deadline: Duration::from_secs(10),
    };
    let r = resolver_with(&fake, CacheConfig::disabled(), policy.clone());
    let start = tokio::time::Instant::now();
    assert_eq!(text_of(&r, A).await, "v");
    assert_eq!(fake.calls(), 3);
    // Full jitter: the total sleep is at most the sum of the caps.
    let slept = start.elapsed();
    assert!(
        slept <= policy.backoff_cap(1) + policy.backoff_cap(2),
        "{slept:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn gives_up_after_max_attempts() {
    let fake = Fake::new("fake", "env");
    fake.fail_requests(vec![unavailable(); 10]);
    let policy = RetryPolicy {
        max_attempts: 4,
        ..RetryPolicy::default()
    };
    let r = resolver_with(&fake, CacheConfig::disabled(), policy);
    let e = r.resolve(A).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::BackendUnavailable);
    assert!(e.retryable());
    assert_eq!(e.reference(), Some(A));
    assert_eq!(fake.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn deadline_stops_retries() {
    let fake = Fake::new("fake", "env");
    fake.fail_requests(vec![unavailable(); 10]);
    fake.delay(Duration::from_secs(2));
    let policy = RetryPolicy {
        max_attempts: 10,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(10),
        deadline: Duration::from_secs(5),
    };
    let r = resolver_with(&fake, CacheConfig::disabled(), policy);
    assert!(r.resolve(A).await.is_err());
    // Attempts at ~0 s, ~2 s, ~4 s; a fourth would start after the deadline.
    assert_eq!(fake.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn never_retries_denials_or_non_retryable_errors() {
    let fake = Fake::new("fake", "env");
    fake.set(A, Answer::Item(ErrorCode::PermissionDenied, false));
    let r = resolver_with(&fake, CacheConfig::disabled(), RetryPolicy::default());
    assert_eq!(code_of(&r, A).await, ErrorCode::PermissionDenied);
    assert_eq!(fake.calls(), 1);
    fake.fail_requests(vec![Error::new(ErrorCode::InvalidResponse, "garbage")]);
    r.resolve(A).await.unwrap_err();
    assert_eq!(fake.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn retries_only_the_retryable_items() {
    let fake = Fake::new("fake", "env");
    fake.set(A, Answer::Value("a", None));
    fake.set(B, Answer::Item(ErrorCode::RateLimited, true));
    let r = resolver_with(&fake, CacheConfig::disabled(), RetryPolicy::default());
    let out = r.read_many([A, B]).partial().await.unwrap();
    assert_eq!(out.resolved.len(), 1);
    assert_eq!(
        out.failures.values().next().unwrap().code(),
        ErrorCode::RateLimited
    );
    let batches = fake.batches();
    assert_eq!(batches.len(), 3);
    assert_eq!(batches[0].len(), 2);
    assert_eq!(batches[1], vec![B.to_string()]);
}

#[tokio::test(start_paused = true)]
async fn partial_and_all_or_nothing() {
    let fake = Fake::new("fake", "env");
    fake.set(A, Answer::Value("a", None));
    fake.set(B, Answer::Item(ErrorCode::PermissionDenied, false));
    let r = resolver_with(&fake, ttl(60), RetryPolicy::none());
    let partial = r.read_many([A, B, "env://C"]).partial().await.unwrap();
    assert!(!partial.ok());
    assert_eq!(partial.resolved.len(), 1);
    let codes: Vec<_> = partial.failures.values().map(|e| e.code()).collect();
    assert_eq!(
        codes,
        vec![ErrorCode::PermissionDenied, ErrorCode::NotFound]
    );
    assert!(partial.failures.values().all(|e| !e.retryable()));

    let err = r.resolve_many([A, B, "env://C"]).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("2 of 3"), "{text}");
    assert!(text.contains("env://B → permission_denied"), "{text}");
    assert!(text.contains("env://C → not_found"), "{text}");

    let ok = r.resolve_many([A]).await.unwrap();
    assert_eq!(ok.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn groups_by_provider_and_splits_batches() {
    let env = Fake::with_max_batch("fake-env", "env", 2);
    let local = Fake::new("fake-local", "local");
    let refs = ["env://A", "env://B", "env://C", "env://D", "env://E"];
    for r in refs {
        env.set(r, Answer::Value("e", None));
    }
    local.set("local://x/y", Answer::Value("l", None));
    let r = Resolver::builder()
        .provider_arc(env.clone(), None)
        .provider_arc(local.clone(), None)
        .build()
        .unwrap();
    let mut all: Vec<&str> = refs.to_vec();
    all.push("local://x/y");
    all.push("openbao+kv2://secret/a");
    let out = r.read_many(all).partial().await.unwrap();
    assert_eq!(out.resolved.len(), 6);
    assert_eq!(env.calls(), 3, "5 refs in batches of at most 2");
    assert_eq!(local.calls(), 1);
    let no_provider = out.failures.values().next().unwrap();
    assert_eq!(no_provider.code(), ErrorCode::NoProvider);
}

#[tokio::test(start_paused = true)]
async fn duplicate_refs_in_one_batch_fetch_once() {
    let fake = Fake::new("fake", "env");
    fake.set(A, Answer::Value("a", None));
    let r = resolver_with(&fake, ttl(60), RetryPolicy::none());
    let out = r.resolve_many([A, "ENV://A", A]).await.unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(fake.batches(), vec![vec![A.to_string()]]);
}

#[tokio::test(start_paused = true)]
async fn leases_are_routed_for_revocation() {
    let fake = Fake::new("fake", "env");
    fake.set(A, Answer::Value("a", Some("3")));
    let r = resolver_with(&fake, ttl(60), RetryPolicy::none());
    let got = r.read(A).detailed().await.unwrap();
    assert_eq!(got.version.as_deref(), Some("3"));
    let lease = got.lease.unwrap().id;
    let out = r
        .revoke_leases(
            &[lease.clone(), "unknown".into()],
            RevokeReason::JobCompleted,
        )
        .await
        .unwrap();
    assert_eq!(out[0].as_ref().unwrap().status, "revoked");
    assert_eq!(out[1].as_ref().unwrap_err().code(), ErrorCode::NotFound);
    assert_eq!(fake.state.lock().unwrap().revoked, vec![lease]);
}

async fn settle_tasks() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn auto_renews_leases_until_revoked() {
    let fake = Fake::new("fake", "env");
    fake.set(A, Answer::Leased("v"));
    let r = Resolver::builder()
        .provider_arc(fake.clone(), None)
        .cache(ttl(600))
        .auto_renew_leases(true)
        .build()
        .unwrap();
    let lease = r.read(A).detailed().await.unwrap().lease.unwrap();
    settle_tasks().await;
    tokio::time::advance(Duration::from_secs(21)).await;
    settle_tasks().await;
    assert_eq!(
        fake.renewals.load(Ordering::SeqCst),
        1,
        "renewed at 2/3 of 30 s"
    );
    tokio::time::advance(Duration::from_secs(20)).await;
    settle_tasks().await;
    assert_eq!(fake.renewals.load(Ordering::SeqCst), 2);
    r.revoke_leases(&[lease.id], RevokeReason::JobCompleted)
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(120)).await;
    settle_tasks().await;
    assert_eq!(
        fake.renewals.load(Ordering::SeqCst),
        2,
        "revoked leases are not renewed"
    );
}

#[tokio::test(start_paused = true)]
async fn failed_renewal_drops_the_cached_value() {
    let fake = Fake::new("fake", "env");
    fake.set(A, Answer::Leased("v"));
    fake.renew_fails.store(true, Ordering::SeqCst);
    let r = Resolver::builder()
        .provider_arc(fake.clone(), None)
        .cache(ttl(600))
        .auto_renew_leases(true)
        .build()
        .unwrap();
    r.resolve(A).await.unwrap();
    r.resolve(A).await.unwrap();
    assert_eq!(fake.calls(), 1);
    settle_tasks().await;
    tokio::time::advance(Duration::from_secs(21)).await;
    settle_tasks().await;
    assert_eq!(fake.renewals.load(Ordering::SeqCst), 1);
    r.resolve(A).await.unwrap();
    assert_eq!(
        fake.calls(),
        2,
        "the value under a dead lease is fetched again"
    );
    // Manual renewal goes to the issuing provider; unknown ids are not_found.
    fake.renew_fails.store(false, Ordering::SeqCst);
    let lease_id = format!("lease-{A}");
    assert!(r.renew_lease(&lease_id, None).await.is_ok());
    assert_eq!(
        r.renew_lease("nope", None).await.unwrap_err().code(),
        ErrorCode::NotFound
    );
}

#[tokio::test(start_paused = true)]
async fn watch_yields_on_version_change() {
    let fake = Fake::new("fake", "env");
    fake.set(A, Answer::Value("v1", Some("1")));
    let r = resolver_with(&fake, ttl(600), RetryPolicy::none());
    let mut w = Box::pin(r.watch(A, Duration::from_secs(10)).unwrap());
    let first = w.next().await.unwrap().unwrap();
    assert_eq!(first.secret.as_text().unwrap(), "v1");
    fake.set(A, Answer::Value("v2", Some("2")));
    let second = w.next().await.unwrap().unwrap();
    assert_eq!(second.secret.as_text().unwrap(), "v2");
    // The watch refreshed the cache too.
    assert_eq!(text_of(&r, A).await, "v2");
}

#[tokio::test(start_paused = true)]
async fn refresh_ahead_refreshes_in_background() {
    let fake = Fake::new("fake", "env");
    fake.set(A, Answer::Value("v1", None));
    let cache = CacheConfig {
        refresh_ahead: 0.5,
        ..ttl(100)
    };
    let r = resolver_with(&fake, cache, RetryPolicy::none());
    r.resolve(A).await.unwrap();
    fake.set(A, Answer::Value("v2", None));
    tokio::time::advance(Duration::from_secs(60)).await;
    // Served from cache at once, refresh started behind it.
    assert_eq!(text_of(&r, A).await, "v1");
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(fake.calls(), 2);
    assert_eq!(text_of(&r, A).await, "v2");
    assert_eq!(fake.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn bounded_cache_evicts() {
    let fake = Fake::new("fake", "env");
    let cache = CacheConfig {
        max_entries: 64,
        ..ttl(600)
    };
    let r = resolver_with(&fake, cache, RetryPolicy::none());
    for i in 0..200 {
        let name = format!("env://K{i}");
        let leaked: &'static str = Box::leak(name.clone().into_boxed_str());
        fake.set(leaked, Answer::Value("v", None));
        r.resolve(name.as_str()).await.unwrap();
    }
    let debug = format!("{r:?}");
    let n: usize = debug
        .split("cached_entries: ")
        .nth(1)
        .unwrap()
        .trim_end_matches(" }")
        .parse()
        .unwrap();
    assert!(n <= 64, "{debug}");
}

#[test]
fn blocking_api_from_plain_main() {
    let fake = Fake::new("fake", "env");
    fake.set(A, Answer::Value("sync", None));
    let r = secref::blocking::Resolver::new(Resolver::builder().provider_arc(fake.clone(), None))
        .unwrap();
    assert_eq!(r.resolve(A).unwrap().as_text().unwrap(), "sync");
    assert_eq!(r.resolve_many([A]).unwrap().len(), 1);
    let clone = r.clone();
    std::thread::spawn(move || clone.resolve(A).unwrap())
        .join()
        .unwrap();
    assert_eq!(fake.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn traces_never_contain_values() {
    const CANARY: &str = "canary-7f3e9c1d";
    let capture = secref_testkit::capture::install();

    let fake = Fake::new("fake", "env");
    fake.set(A, Answer::Value(CANARY, Some("1")));
    fake.fail_requests(vec![unavailable()]);
    let r = resolver_with(&fake, ttl(60), RetryPolicy::default());
    let got = r.read(A).detailed().await.unwrap();
    r.resolve(A).await.unwrap();
    let _ = r.read_many([A, B]).partial().await.unwrap();
    let debug = format!("{got:?} {r:?} {:?}", r.resolve(B).await.unwrap_err());

    let logs = capture.text();
    assert!(logs.contains("secref.resolve"), "spans were recorded");
    assert!(logs.contains("env://A"), "refs are safe to log");
    assert_no_canary(&logs, CANARY);
    assert_no_canary(&debug, CANARY);
}
