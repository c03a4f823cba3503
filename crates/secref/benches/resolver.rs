//! Resolver benchmarks (criterion). Run with `cargo bench -p secref --bench resolver`.
//!
//! * `cache_hit/{1,2}_threads`: a cached `resolve` per op; with two threads
//!   each thread reads its own reference (the usual shape: many refs, few
//!   hot) and the reported time is per op per thread.
//! * `cold_batch/{1,10,100}`: cache disabled, every op is one batch round
//!   trip to a loopback HTTP server through the resolver, next to the floor:
//!   the same request sent with a bare reqwest client.
//! * `stampede`: 1000 concurrent misses on one ref; prints the number of
//!   backend calls (must be 1).
//! * `local_store/*`: `local://` reads from a 50-entry store, which the
//!   resolver never caches (a change must be seen by the next read):
//!   `store_get` is the store alone on its fast path (the file still ends
//!   with the verified MAC: fstat, a ~60-byte read, decrypt one entry),
//!   `resolve` the same through the resolver (answered on the async worker),
//!   `store_get_after_change` the first read after another writer's change
//!   (read, parse and verify the whole file), `resolve_many_100` one batch
//!   of 100 refs (on a blocking thread, one store check for the batch).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures::FutureExt;
use secref::provider::{BatchResult, Provider, Resolved};
use secref::{CacheConfig, Error, ErrorCode, Resolver, RetryPolicy, Secret, SecretRef};

/// A provider that answers every ref at once.
#[derive(Debug, Default)]
struct Instant0 {
    calls: AtomicUsize,
    delay: Duration,
}

#[async_trait]
impl Provider for Instant0 {
    fn name(&self) -> &str {
        "instant"
    }
    fn families(&self) -> &[&'static str] {
        &["env"]
    }
    async fn resolve_many(&self, refs: &[SecretRef]) -> BatchResult<Resolved> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        Ok(refs
            .iter()
            .map(|_| {
                Ok(Resolved::new(Secret::from(
                    "value-of-some-length-32-bytes!!",
                )))
            })
            .collect())
    }
}

fn cache_hit(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let resolver = {
        let _g = rt.enter();
        Resolver::builder()
            .provider(Instant0::default())
            .cache(CacheConfig {
                ttl: Duration::from_secs(3600),
                ..CacheConfig::default()
            })
            .build()
            .unwrap()
    };
    let refs: Vec<SecretRef> = (0..2)
        .map(|i| SecretRef::parse(format!("env://HOT_{i}")).unwrap())
        .collect();
    for r in &refs {
        rt.block_on(resolver.resolve(r)).unwrap();
    }
    let mut g = c.benchmark_group("cache_hit");
    g.throughput(Throughput::Elements(1));
    g.bench_function("1_thread", |b| {
        b.iter(|| {
            resolver
                .resolve(&refs[0])
                .now_or_never()
                .expect("a hit completes without waiting")
                .unwrap()
        })
    });
    g.bench_function("2_threads", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for r in &refs {
                    let resolver = resolver.clone();
                    s.spawn(move || {
                        for _ in 0..iters {
                            std::hint::black_box(
                                resolver.resolve(r).now_or_never().unwrap().unwrap(),
                            );
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    // The machine's own scaling on the same two threads, for the ratio: a
    // pure-CPU loop timed exactly like the resolver above.
    let spin = |n: u64| {
        let mut x = 0u64;
        for i in 0..n {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
        x
    };
    g.bench_function("cpu_baseline_1_thread", |b| b.iter(|| spin(20)));
    g.bench_function("cpu_baseline_2_threads", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..2 {
                    s.spawn(move || {
                        for _ in 0..iters {
                            std::hint::black_box(spin(20));
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    g.finish();
}

/// A loopback server answering `POST /batch` with one value per ref.
async fn start_server() -> String {
    use axum::{routing::post, Json, Router};
    let app = Router::new().route(
        "/batch",
        post(|Json(refs): Json<Vec<String>>| async move {
            Json(
                refs.into_iter()
                    .map(|r| (r, "value-of-some-length-32-bytes!!".to_string()))
                    .collect::<Vec<_>>(),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/batch")
}

/// A minimal HTTP provider: one POST per batch, through the shared client.
#[derive(Debug)]
struct HttpBatch {
    url: String,
    client: secref::http::HttpClient,
}

#[async_trait]
impl Provider for HttpBatch {
    fn name(&self) -> &str {
        "http"
    }
    fn families(&self) -> &[&'static str] {
        &["env"]
    }
    async fn resolve_many(&self, refs: &[SecretRef]) -> BatchResult<Resolved> {
        let body: Vec<&str> = refs.iter().map(|r| r.to_canonical()).collect();
        let resp = self
            .client
            .send(self.client.post(&self.url).json(&body))
            .await?;
        let bytes = &resp.body[..];
        let pairs: Vec<(String, String)> = serde_json::from_slice(bytes)
            .map_err(|_| Error::new(ErrorCode::InvalidResponse, "bad json"))?;
        Ok(pairs
            .into_iter()
            .map(|(_, v)| Ok(Resolved::new(Secret::from(v))))
            .collect())
    }
}

fn cold_batch(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(start_server());
    let client = secref::http::ClientOptions::default()
        .build_for("http")
        .unwrap();
    let resolver = {
        let _g = rt.enter();
        Resolver::builder()
            .provider(HttpBatch {
                url: url.clone(),
                client: client.clone(),
            })
            .cache(CacheConfig::disabled())
            .retry(RetryPolicy::none())
            .build()
            .unwrap()
    };
    let raw = reqwest::Client::new();
    let mut g = c.benchmark_group("cold_batch");
    for n in [1usize, 10, 100] {
        let refs: Vec<SecretRef> = (0..n)
            .map(|i| SecretRef::parse(format!("env://COLD_{i}")).unwrap())
            .collect();
        let body: Vec<String> = refs.iter().map(|r| r.to_string()).collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("resolver", n), &refs, |b, refs| {
            b.to_async(&rt)
                .iter(|| async { resolver.resolve_many(refs.iter()).await.unwrap() })
        });
        g.bench_with_input(
            BenchmarkId::new("raw_reqwest_floor", n),
            &body,
            |b, body| {
                b.to_async(&rt).iter(|| async {
                    let resp = raw.post(&url).json(body).send().await.unwrap();
                    resp.bytes().await.unwrap()
                })
            },
        );
    }
    g.finish();
}

fn stampede(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let provider = Arc::new(Instant0 {
        calls: AtomicUsize::new(0),
        delay: Duration::from_millis(20),
    });
    let resolver = {
        let _g = rt.enter();
        Resolver::builder()
            .provider_arc(provider.clone(), None)
            .build()
            .unwrap()
    };
    let rounds = AtomicUsize::new(0);
    c.bench_function("stampede_1000_misses", |b| {
        b.to_async(&rt).iter(|| async {
            rounds.fetch_add(1, Ordering::Relaxed);
            resolver.invalidate_all();
            let tasks: Vec<_> = (0..1000)
                .map(|_| {
                    let r = resolver.clone();
                    tokio::spawn(async move { r.resolve("env://STAMPEDE").await.unwrap() })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        })
    });
    let calls = provider.calls.load(Ordering::SeqCst);
    let rounds_done = rounds.load(Ordering::Relaxed);
    println!(
        "stampede: {rounds_done} rounds of 1000 concurrent misses -> {calls} backend calls ({:.3} per round)",
        calls as f64 / rounds.load(Ordering::Relaxed).max(1) as f64
    );
}

fn local_store(c: &mut Criterion) {
    use secref::providers::LocalProvider;
    use secref::store::{Store, StoreKey};
    use secref::RefKind;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.store");
    let key = StoreKey::generate();
    let store = Store::create(&path, &key).unwrap();
    let local = |s: &str| match SecretRef::parse(s).unwrap().kind() {
        RefKind::Local(l) => l.clone(),
        _ => unreachable!(),
    };
    for i in 0..50 {
        for f in ["user", "password"] {
            let r = local(&format!("local://app/svc-{i}#{f}"));
            store
                .set(&r, Secret::from("value-of-some-length-32-bytes!!"))
                .unwrap();
        }
    }
    let hot = local("local://app/svc-7#password");
    let reader = Store::open(&path, key.clone()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let resolver = {
        let _g = rt.enter();
        Resolver::builder()
            .provider(LocalProvider::new(Store::open(&path, key).unwrap()))
            .build()
            .unwrap()
    };
    let r = SecretRef::parse("local://app/svc-7#password").unwrap();
    let mut g = c.benchmark_group("local_store");
    g.throughput(Throughput::Elements(1));
    g.bench_function("store_get", |b| b.iter(|| reader.get(&hot).unwrap()));
    g.bench_function("resolve", |b| {
        b.iter(|| rt.block_on(resolver.resolve(&r)).unwrap())
    });
    // The first read after a change: every iteration finds another file (two
    // copies restored alternately by rename, outside the timed part), so the
    // store reads, parses and verifies the whole file.
    let copies = [path.with_extension("a"), path.with_extension("b")];
    std::fs::copy(&path, &copies[0]).unwrap();
    store
        .set(&local("local://app/svc-0#user"), Secret::from("changed"))
        .unwrap();
    std::fs::copy(&path, &copies[1]).unwrap();
    let staged = path.with_extension("staged");
    let mut flip = 0usize;
    g.bench_function("store_get_after_change", |b| {
        b.iter_batched(
            || {
                flip ^= 1;
                std::fs::copy(&copies[flip], &staged).unwrap();
                std::fs::rename(&staged, &path).unwrap();
            },
            |()| reader.get(&hot).unwrap(),
            criterion::BatchSize::PerIteration,
        )
    });
    let batch: Vec<SecretRef> = (0..100)
        .map(|i| SecretRef::parse(format!("local://app/svc-{}#password", i % 50)).unwrap())
        .collect();
    g.throughput(Throughput::Elements(100));
    g.bench_function("resolve_many_100", |b| {
        b.iter(|| rt.block_on(resolver.resolve_many(batch.iter())).unwrap())
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = cache_hit, cold_batch, stampede, local_store
}
criterion_main!(benches);
