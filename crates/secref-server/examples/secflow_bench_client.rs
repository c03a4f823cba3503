//! The Rust side of `scripts/bench_secflow.sh`: times secref's SecFlow client
//! against a running `secref serve`, as the Python side times the official
//! SDK against the same server.
//!
//! Usage: `SECREF_BENCH_TOKEN=… secflow_bench_client <base_url> <n> <rounds>`
//! resolves `secret://dev/bench/token/k0 … k<n-1>`, one per request (loop)
//! and all in one request (batch), straight through the provider (no
//! resolver cache), and prints the median seconds of each as JSON.

use std::time::{Duration, Instant};

use secref::providers::secflow::SecFlowProvider;
use secref::{Provider, Secret, SecretRef};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, n, rounds] = &args[..] else {
        eprintln!("usage: secflow_bench_client <base_url> <n> <rounds>");
        return std::process::ExitCode::from(2);
    };
    let n: usize = n.parse().expect("n");
    let rounds: usize = rounds.parse().expect("rounds");
    let token = std::env::var("SECREF_BENCH_TOKEN").expect("SECREF_BENCH_TOKEN");
    let provider = SecFlowProvider::new(url, Secret::from(token), "dev", Duration::from_secs(30))
        .expect("provider");
    let refs: Vec<SecretRef> = (0..n)
        .map(|i| SecretRef::parse(format!("secret://dev/bench/token/k{i}")).expect("ref"))
        .collect();
    // Warm up (connection, server cache), and check every value resolves.
    let warm = provider.resolve_many(&refs).await.expect("batch");
    assert!(warm.iter().all(Result::is_ok), "bench refs must resolve");

    let mut loop_times = Vec::new();
    let mut batch_times = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        for r in &refs {
            let out = provider
                .resolve_many(std::slice::from_ref(r))
                .await
                .expect("one");
            assert!(out[0].is_ok());
        }
        loop_times.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let out = provider.resolve_many(&refs).await.expect("batch");
        assert!(out.iter().all(Result::is_ok));
        batch_times.push(t.elapsed().as_secs_f64());
    }
    println!(
        "{{\"rust_loop_s\": {}, \"rust_batch_s\": {}}}",
        median(loop_times),
        median(batch_times)
    );
    std::process::ExitCode::SUCCESS
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
