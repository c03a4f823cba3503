//! The library's counters reach any recorder an embedding application
//! installs through the `metrics` facade, labelled by provider and code
//! only, never by reference.

use std::sync::Arc;

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use parking_lot::Mutex;
use secref::Resolver;
use secref_testkit::fixed::FixedProvider;

type Seen = Arc<Mutex<Vec<String>>>;

/// Records `name{k=v,…}` for every update.
struct Series(String, Seen);

impl CounterFn for Series {
    fn increment(&self, _: u64) {
        self.1.lock().push(self.0.clone());
    }
    fn absolute(&self, _: u64) {}
}
impl GaugeFn for Series {
    fn increment(&self, _: f64) {}
    fn decrement(&self, _: f64) {}
    fn set(&self, _: f64) {}
}
impl HistogramFn for Series {
    fn record(&self, _: f64) {
        self.1.lock().push(self.0.clone());
    }
}

struct Rec(Seen);

impl Rec {
    fn series(&self, key: &Key) -> Arc<Series> {
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        Arc::new(Series(
            format!("{}{{{}}}", key.name(), labels.join(",")),
            self.0.clone(),
        ))
    }
}

impl Recorder for Rec {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.series(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.series(key))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.series(key))
    }
}

#[tokio::test]
async fn an_installed_recorder_sees_resolves_cache_and_latency_by_provider() {
    let seen: Seen = Arc::default();
    metrics::set_global_recorder(Rec(seen.clone())).unwrap();
    let resolver = Resolver::builder()
        .provider(FixedProvider::new("canary-facade-value"))
        .build()
        .unwrap();
    for _ in 0..2 {
        resolver
            .resolve("openbao+kv2://secret/app/db#password")
            .await
            .unwrap();
    }
    let seen = seen.lock().clone();
    for want in [
        "secref_resolves_total{code=ok,provider=fixed}",
        "secref_cache_misses_total{provider=fixed}",
        "secref_cache_hits_total{provider=fixed}",
        "secref_backend_latency_seconds{provider=fixed}",
    ] {
        assert!(seen.iter().any(|s| s == want), "{want} not in {seen:?}");
    }
    for s in &seen {
        assert!(s.starts_with("secref_"), "{s}");
        assert!(!s.contains("app/db") && !s.contains("canary"), "{s}");
    }
}
