//! `secref-bench`: the Rust-side clients of the side-by-side benchmark.
//! `scripts/bench.py` (run by `scripts/bench.sh`) starts the servers, runs
//! this binary once per (client, workload) and reads the one JSON line it
//! prints: `{"median_ns", "p99_ns", "samples", ...}`. Nothing here asserts a
//! time; every loop is bounded by a sample count and a time budget.
//!
//! Subcommands (arguments are `--key value` pairs):
//!
//! * `floor --route /path=FILE …`: an axum server on 127.0.0.1 that answers
//!   every request to `/path` with FILE's bytes (`application/json`) and does
//!   no other work: the floor a real server is compared with. Prints
//!   `listening on http://127.0.0.1:PORT`; runs until killed.
//! * `load --url U [--method POST] [--header K:V]… [--body-file F]
//!   --conns C --seconds S [--max N]`: C keep-alive connections (one reqwest
//!   client each) send the same request until S seconds or N requests;
//!   latency per request, requests/s, `refused` = non-2xx or transport error.
//!   With `--conns 1` this is the raw keep-alive floor client.
//! * `lib --api async|blocking --workload cold|loop|batch|concurrent
//!   --refs-file F --seconds S [--max N]`: the secref library from
//!   `Config::load()` (`SECREF_CONFIG`). `cold`: a new resolver and one
//!   resolve per sample; `loop`: every ref one by one; `batch`: all refs in
//!   one `resolve_many`; `concurrent`: 1000 callers over the refs at once
//!   after `invalidate_all`. Cache off except for `concurrent`.
//! * `cachehit --threads T --seconds S`: one cached `resolve` per op
//!   (polled once, as a hit never waits), each thread its own ref; reports
//!   ns per op per thread.
//! * `vaultrs --refs-file F --seconds S [--kv 2]`: `vaultrs::kv1::get` (or
//!   `kv2::read`) of every `mount/path` line in F, one by one (`VAULT_ADDR`,
//!   `VAULT_TOKEN`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::FutureExt;
use secref::provider::{BatchResult, Provider, Resolved};
use secref::{CacheConfig, Config, Resolver, Secret, SecretRef};
use serde_json::json;

type Res<T> = std::result::Result<T, String>;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("usage: secref-bench floor|load|lib|cachehit|vaultrs [--key value]…");
        return std::process::ExitCode::from(2);
    };
    let opts = match Opts::parse(rest) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("secref-bench: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let out = match cmd.as_str() {
        "floor" => floor(&opts),
        "load" => runtime().block_on(load(&opts)),
        "lib" => lib(&opts),
        "cachehit" => cachehit(&opts),
        "vaultrs" => runtime().block_on(vaultrs_loop(&opts)),
        other => Err(format!("unknown subcommand {other}")),
    };
    match out {
        Ok(v) => {
            println!("{v}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("secref-bench {cmd}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// `--key value` pairs; a key may repeat (`--route`, `--header`).
struct Opts(Vec<(String, String)>);

impl Opts {
    fn parse(args: &[String]) -> Res<Opts> {
        let mut out = Vec::new();
        let mut it = args.iter();
        while let Some(k) = it.next() {
            let key = k
                .strip_prefix("--")
                .ok_or(format!("expected --key, got {k}"))?;
            let v = it.next().ok_or(format!("--{key} needs a value"))?;
            out.push((key.to_string(), v.clone()));
        }
        Ok(Opts(out))
    }
    fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }
    fn get(&self, key: &str) -> Res<&str> {
        self.all(key)
            .last()
            .copied()
            .ok_or(format!("--{key} is required"))
    }
    fn num(&self, key: &str, default: f64) -> Res<f64> {
        match self.all(key).last() {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("--{key}: not a number: {v}")),
        }
    }
    /// The time budget and the sample cap every measuring loop obeys.
    fn budget(&self) -> Res<Budget> {
        Ok(Budget {
            time: Duration::from_secs_f64(self.num("seconds", 1.0)?),
            max: self.num("max", 1_000_000.0)? as usize,
        })
    }
    fn refs(&self) -> Res<Vec<String>> {
        let path = self.get("refs-file")?;
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        let refs: Vec<String> = text
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        if refs.is_empty() {
            return Err(format!("{path}: no refs"));
        }
        Ok(refs)
    }
}

/// At least one sample; then more until the time or the count runs out.
#[derive(Clone, Copy)]
struct Budget {
    time: Duration,
    max: usize,
}

impl Budget {
    fn go_on(&self, started: Instant, samples: usize) -> bool {
        samples == 0 || (samples < self.max && started.elapsed() < self.time)
    }
}

/// Median and 99th percentile (nearest rank) of nanosecond samples.
fn summary(mut ns: Vec<u64>) -> serde_json::Value {
    ns.sort_unstable();
    let n = ns.len();
    let at = |q: f64| ns[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
    json!({"median_ns": at(0.5), "p99_ns": at(0.99), "samples": n})
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

// ---- floor ------------------------------------------------------------------

fn floor(opts: &Opts) -> Res<serde_json::Value> {
    let mut router = axum::Router::new();
    for route in opts.all("route") {
        let (path, file) = route
            .split_once('=')
            .ok_or(format!("--route wants /path=FILE, got {route}"))?;
        let body = bytes_of(file)?;
        let answer = move || {
            let body = body.clone();
            async move { ([("content-type", "application/json")], body) }
        };
        router = router.route(path, axum::routing::any(answer));
    }
    runtime().block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        println!("listening on http://{addr}");
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        axum::serve(listener, router)
            .await
            .map_err(|e| e.to_string())?;
        Ok(json!({}))
    })
}

fn bytes_of(path: &str) -> Res<axum::body::Bytes> {
    std::fs::read(path)
        .map(axum::body::Bytes::from)
        .map_err(|e| format!("{path}: {e}"))
}

// ---- load -------------------------------------------------------------------

async fn load(opts: &Opts) -> Res<serde_json::Value> {
    let url = opts.get("url")?.to_string();
    let method: reqwest::Method = opts
        .all("method")
        .last()
        .unwrap_or(&"GET")
        .parse()
        .map_err(|_| "bad --method".to_string())?;
    let mut headers = reqwest::header::HeaderMap::new();
    for h in opts.all("header") {
        let (k, v) = h
            .split_once(':')
            .ok_or(format!("--header wants K:V, got {h}"))?;
        let name: reqwest::header::HeaderName = k.trim().parse().map_err(|_| "bad header")?;
        headers.insert(name, v.trim().parse().map_err(|_| "bad header value")?);
    }
    let body = match opts.all("body-file").last() {
        Some(f) => Some(bytes_of(f)?),
        None => None,
    };
    let conns = opts.num("conns", 1.0)? as usize;
    let budget = opts.budget()?;
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns.max(1) {
        // One client per task, one idle connection each: `conns` connections.
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .default_headers(headers.clone())
            .build()
            .map_err(|e| e.to_string())?;
        let (url, method, body, sent) = (url.clone(), method.clone(), body.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut refused = 0u64;
            while sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < budget.max
                && (lat.is_empty() || started.elapsed() < budget.time)
            {
                let mut req = client.request(method.clone(), &url);
                if let Some(b) = &body {
                    req = req
                        .header("content-type", "application/json")
                        .body(b.clone());
                }
                let t = Instant::now();
                let ok = match req.send().await {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                lat.push(nanos(t.elapsed()));
                refused += u64::from(!ok);
            }
            (lat, refused)
        }));
    }
    let mut all = Vec::new();
    let mut refused = 0;
    for t in tasks {
        let (lat, r) = t.await.map_err(|e| e.to_string())?;
        all.extend(lat);
        refused += r;
    }
    let secs = started.elapsed().as_secs_f64();
    let n = all.len();
    let mut out = summary(all);
    out["rps"] = json!(n as f64 / secs);
    out["refused"] = json!(refused);
    Ok(out)
}

// ---- lib --------------------------------------------------------------------

fn config(cache: bool) -> Res<Config> {
    let mut cfg = Config::load().map_err(|e| e.to_string())?;
    cfg.cache.enabled = cache;
    Ok(cfg)
}

fn lib(opts: &Opts) -> Res<serde_json::Value> {
    let refs = opts.refs()?;
    let workload = opts.get("workload")?;
    let budget = opts.budget()?;
    let cfg = config(workload == "concurrent")?;
    let mut ns = Vec::new();
    let started = Instant::now();
    match opts.get("api")? {
        "async" => {
            let rt = runtime();
            let resolver = if workload == "cold" {
                None
            } else {
                let _g = rt.enter();
                Some(Resolver::from_config(&cfg).map_err(|e| e.to_string())?)
            };
            while budget.go_on(started, ns.len()) {
                let t = Instant::now();
                rt.block_on(async {
                    match (workload, &resolver) {
                        ("cold", _) => match Resolver::from_config(&cfg) {
                            Ok(r) => r.resolve(&refs[0]).await.map(drop),
                            Err(e) => Err(e),
                        },
                        ("loop", Some(r)) => {
                            for s in &refs {
                                r.resolve(s).await?;
                            }
                            Ok(())
                        }
                        ("batch", Some(r)) => r.resolve_many(&refs).await.map(drop),
                        ("concurrent", Some(r)) => {
                            r.invalidate_all();
                            let calls = (0..1000).map(|i| r.resolve(&refs[i % refs.len()]));
                            futures::future::try_join_all(calls).await.map(drop)
                        }
                        _ => Err(secref::Error::new(
                            secref::ErrorCode::Usage,
                            format!("unknown --workload {workload}"),
                        )),
                    }
                })
                .map_err(|e| e.to_string())?;
                ns.push(nanos(t.elapsed()));
            }
        }
        "blocking" => {
            let build = || blocking_resolver(&cfg).map_err(|e| e.to_string());
            let resolver = if workload == "cold" {
                None
            } else {
                Some(build()?)
            };
            while budget.go_on(started, ns.len()) {
                let t = Instant::now();
                match (workload, &resolver) {
                    ("cold", _) => build()?.1.resolve(refs[0].as_str()).map(drop),
                    ("loop", Some((_, r))) => refs
                        .iter()
                        .try_for_each(|s| r.resolve(s.as_str()).map(drop)),
                    ("batch", Some((_, r))) => {
                        r.resolve_many(refs.iter().map(String::as_str)).map(drop)
                    }
                    _ => return Err(format!("--api blocking has no --workload {workload}")),
                }
                .map_err(|e| e.to_string())?;
                ns.push(nanos(t.elapsed()));
            }
        }
        other => return Err(format!("unknown --api {other}")),
    }
    Ok(summary(ns))
}

/// A blocking resolver over `Resolver::from_config`. The async resolver is
/// built inside a runtime that stays alive next to it, because building may
/// spawn tasks (background refresh, audit) that must keep running.
fn blocking_resolver(
    cfg: &Config,
) -> secref::Result<(tokio::runtime::Runtime, secref::blocking::Resolver)> {
    let rt = runtime();
    let inner = {
        let _g = rt.enter();
        Resolver::from_config(cfg)?
    };
    Ok((rt, secref::blocking::Resolver::from_async(inner)?))
}

// ---- cachehit ---------------------------------------------------------------

/// Answers every reference at once, so nothing but the cache is measured.
#[derive(Debug)]
struct Instant0;

#[async_trait]
impl Provider for Instant0 {
    fn name(&self) -> &str {
        "instant"
    }
    fn families(&self) -> &[&'static str] {
        &["env"]
    }
    async fn resolve_many(&self, refs: &[SecretRef]) -> BatchResult<Resolved> {
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

fn cachehit(opts: &Opts) -> Res<serde_json::Value> {
    let threads = opts.num("threads", 1.0)? as usize;
    let budget = opts.budget()?;
    let rt = runtime();
    let resolver = {
        let _g = rt.enter();
        Resolver::builder()
            .provider(Instant0)
            .cache(CacheConfig {
                ttl: Duration::from_secs(3600),
                ..CacheConfig::default()
            })
            .build()
            .map_err(|e| e.to_string())?
    };
    let refs: Vec<SecretRef> = (0..threads)
        .map(|i| SecretRef::parse(format!("env://HOT_{i}")).expect("ref"))
        .collect();
    for r in &refs {
        rt.block_on(resolver.resolve(r))
            .map_err(|e| e.to_string())?;
    }
    // Samples of 10 000 ops each, per thread; ns per op.
    const BATCH: u64 = 10_000;
    let per_thread: Vec<Vec<u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = refs
            .iter()
            .map(|r| {
                let resolver = &resolver;
                s.spawn(move || {
                    let started = Instant::now();
                    let mut ns = Vec::new();
                    while budget.go_on(started, ns.len()) {
                        let t = Instant::now();
                        for _ in 0..BATCH {
                            let v = resolver.resolve(r).now_or_never();
                            assert!(matches!(v, Some(Ok(_))), "a cache hit must not wait");
                        }
                        ns.push(nanos(t.elapsed()) / BATCH);
                    }
                    ns
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    Ok(summary(per_thread.concat()))
}

// ---- vaultrs ----------------------------------------------------------------

async fn vaultrs_loop(opts: &Opts) -> Res<serde_json::Value> {
    use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
    // reqwest (under vaultrs) wants a process-wide rustls provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let paths = opts.refs()?;
    let budget = opts.budget()?;
    let kv2 = opts.num("kv", 1.0)? == 2.0;
    let env = |k: &str| std::env::var(k).map_err(|_| format!("{k} is not set"));
    let client = VaultClient::new(
        VaultClientSettingsBuilder::default()
            .address(env("VAULT_ADDR")?)
            .token(env("VAULT_TOKEN")?)
            .build()
            .map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let mut ns = Vec::new();
    let started = Instant::now();
    while budget.go_on(started, ns.len()) {
        let t = Instant::now();
        for p in &paths {
            let (mount, path) = p.split_once('/').ok_or(format!("mount/path: {p}"))?;
            let got: Result<HashMap<String, String>, _> = if kv2 {
                vaultrs::kv2::read(&client, mount, path).await
            } else {
                vaultrs::kv1::get(&client, mount, path).await
            };
            // Debug names the cause (e.g. a field the answer lacks); its
            // first line only, without the backtrace.
            got.map_err(|e| {
                format!("{e:?}")
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })?;
        }
        ns.push(nanos(t.elapsed()));
    }
    Ok(summary(ns))
}
