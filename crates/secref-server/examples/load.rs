//! A bounded load run against `secref serve`'s SecFlow API with **default
//! settings**: 50 keep-alive connections send `resolve:batch` requests (one
//! `env://` item each, no `lease_ttl_seconds`, as the SDK's cached provider
//! does) until `LOAD_REQUESTS` (default 200 000 — twice the old global lease
//! table) have been answered, then prints requests/s, the 99th-percentile
//! latency and how many requests or items were refused.
//!
//! ```sh
//! cargo run --release -p secref-server --example load
//! LOAD_REQUESTS=50000 LOAD_CONNECTIONS=50 cargo run --release -p secref-server --example load
//! ```
//!
//! Server and clients share one process (and its cores): the figure is a
//! floor for the server alone. Nothing here asserts a time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use secref::providers::EnvProvider;
use secref::Resolver;
use secref_server::{Server, ServerConfig};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> secref::Result<()> {
    let total = env_or("LOAD_REQUESTS", 200_000);
    let connections = env_or("LOAD_CONNECTIONS", 50);
    std::env::set_var("SECREF_LOAD_VALUE", "load-value");

    let resolver = Resolver::builder().provider(EnvProvider::new()).build()?;
    let token = secref_server::auth::generate_token();
    let bearer = format!("Bearer {}", token.as_text().unwrap_or_default());
    // Default settings, but an ephemeral port and the one rule that lets
    // callers read the `env://` variable (host-local references are denied
    // unless a rule names their scheme).
    let config = ServerConfig {
        bind: "127.0.0.1:0".parse().expect("address"),
        rules: vec![secref_server::access::Rule {
            principals: vec!["*".into()],
            refs: vec!["env://SECREF_LOAD_VALUE".into()],
            actions: vec![secref::provider::Action::Read],
        }],
        ..ServerConfig::default()
    };
    let server = Server::new(resolver, config, token)?;
    let listener = server.bind().await?;
    let url = format!(
        "http://{}/v1/secrets/resolve:batch",
        listener.local_addr().expect("bound")
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(server.serve(listener, async {
        let _ = stop_rx.await;
    }));

    let body = serde_json::json!({
        "target_environment": "dev",
        "purpose": "secret.runtime_resolve",
        "items": [{"item_id": "item-1", "secret_ref": "env://SECREF_LOAD_VALUE"}],
    })
    .to_string();
    let next = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let rate_limited = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (next, refused, rate_limited) = (next.clone(), refused.clone(), rate_limited.clone());
        let (url, body, bearer) = (url.clone(), body.clone(), bearer.clone());
        tasks.push(tokio::spawn(async move {
            // One client per task, one idle connection each: 50 connections.
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .expect("client");
            let mut latencies = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let started = Instant::now();
                let resp = client
                    .post(&url)
                    .header("authorization", &bearer)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                let ok = match resp {
                    Ok(r) if r.status().is_success() => {
                        let v: serde_json::Value = r.json().await.unwrap_or_default();
                        if v["items"][0]["error"]["code"] == "RATE_LIMITED" {
                            rate_limited.fetch_add(1, Ordering::Relaxed);
                        }
                        v["items"][0]["result"] == "allowed"
                    }
                    _ => false,
                };
                latencies.push(started.elapsed());
                if !ok {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("load task"));
    }
    latencies.sort();
    let p99 = latencies
        .get(latencies.len() * 99 / 100)
        .copied()
        .unwrap_or_default();
    let secs = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(());
    served.await.expect("server task")?;
    println!(
        "requests={total} connections={connections} seconds={secs:.2} requests_per_second={:.0} p99_ms={:.2} refused={} rate_limited={}",
        total as f64 / secs,
        p99.as_secs_f64() * 1e3,
        refused.load(Ordering::Relaxed),
        rate_limited.load(Ordering::Relaxed),
    );
    Ok(())
}
