//! Issue 16 — `secref serve`'s hot path stays cheap without giving up what
//! it promises. Every test starts the built binary with a real config file
//! and talks HTTP to it on 127.0.0.1.
//!
//! * a batch's leases are all distinct, each opens only for its caller and
//!   revokes once (the sealing got cheaper, not weaker);
//! * every answer still carries the no-store headers and one access-log
//!   line per request, naming no value;
//! * `cached_secrets_rss` (ignored: run with `--ignored --nocapture`)
//!   prints how much resident memory 10 000 cached secrets cost (the
//!   issue's target is 5 MiB; it guards against regressions past 8 MiB).

use std::collections::HashSet;

use secref_testkit::cli::{Sandbox, Served};
use serde_json::{json, Value};

const TOKEN: &str = "hot-path-default-token-0123";
const OTHER: &str = "hot-path-other-token-4567";
const RESOLVE: &str = "/v1/secrets/resolve:batch";
const REVOKE: &str = "/v1/leases/revoke:batch";

/// A server whose rules let every caller read and revoke `env://BENCH_*`,
/// with `vars` (name, value) in its environment and a second token `other`.
fn serve(vars: &[(String, String)]) -> (Served, Sandbox) {
    let mut sb = Sandbox::new(env!("CARGO_BIN_EXE_secref")).with_env("OTHER_TOKEN", OTHER);
    for (k, v) in vars {
        sb = sb.with_env(k, v);
    }
    let cfg = sb.write(
        "secref.toml",
        "[server.tokens.other]\ntoken_env = \"OTHER_TOKEN\"\n\
         [[server.rules]]\nprincipals = [\"*\"]\nrefs = [\"env://BENCH_*\"]\n\
         actions = [\"read\", \"lease_revoke\"]\n",
    );
    let served = Served::start(&sb, TOKEN, &["--config", cfg.to_str().unwrap()]);
    (served, sb)
}

fn vars(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            (
                format!("BENCH_{i}"),
                format!("hot-path-value-{i:05}-abcdefghij"),
            )
        })
        .collect()
}

fn resolve_body(from: usize, n: usize) -> Value {
    let items: Vec<Value> = (from..from + n)
        .map(|i| json!({"item_id": format!("i{i}"), "secret_ref": format!("env://BENCH_{i}")}))
        .collect();
    json!({"target_environment": "dev", "purpose": "secret.runtime_resolve", "items": items})
}

#[test]
fn batch_leases_are_distinct_bound_to_the_caller_and_revoke_once() {
    let vars = vars(100);
    let (served, _sb) = serve(&vars);
    let (status, body) = served.post(RESOLVE, TOKEN, &resolve_body(0, 100));
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 100);
    let mut leases = HashSet::new();
    for (item, (_, value)) in items.iter().zip(&vars) {
        assert_eq!(item["result"], "allowed", "{item}");
        assert_eq!(item["value"]["data"], value.as_str());
        assert_eq!(item["value"]["encoding"], "utf8");
        let lease = item["lease_id"].as_str().unwrap();
        assert!(lease.starts_with("lease-"), "{lease}");
        assert!(leases.insert(lease.to_string()), "lease ids repeat");
    }
    // No lease id contains the reference or the value in clear.
    for lease in &leases {
        assert!(!lease.contains("BENCH") && !lease.contains("hot-path-value"));
    }
    let first = items[0]["lease_id"].as_str().unwrap();
    let revoke = json!({"items": [{"item_id": "r", "lease_id": first}]});
    // Another caller cannot revoke it (nor learn it exists).
    let (status, body) = served.post(REVOKE, OTHER, &revoke);
    assert_eq!(status, 200, "{body}");
    let r: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(r["items"][0]["error"]["code"], "NOT_FOUND", "{body}");
    // An edited id does not open.
    let mut edited = first.to_string();
    let last = edited.pop().unwrap();
    edited.push(if last == 'A' { 'B' } else { 'A' });
    let (_, body) = served.post(
        REVOKE,
        TOKEN,
        &json!({"items": [{"item_id": "r", "lease_id": edited}]}),
    );
    let r: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(r["items"][0]["error"]["code"], "NOT_FOUND", "{body}");
    // Its owner revokes it once.
    let (_, body) = served.post(REVOKE, TOKEN, &revoke);
    let r: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(r["items"][0]["status"], "revoked", "{body}");
    let (_, body) = served.post(REVOKE, TOKEN, &revoke);
    let r: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(r["items"][0]["error"]["code"], "NOT_FOUND", "{body}");
    // Any other lease of the batch is still the owner's to revoke.
    let last_lease = items[99]["lease_id"].as_str().unwrap();
    let (_, body) = served.post(
        REVOKE,
        TOKEN,
        &json!({"items": [{"item_id": "r", "lease_id": last_lease}]}),
    );
    let r: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(r["items"][0]["status"], "revoked", "{body}");
}

#[test]
fn every_answer_is_no_store_and_logged_once_without_values() {
    let vars = vars(3);
    let (served, sb) = serve(&vars);
    let body = resolve_body(0, 3).to_string();
    let auth = format!("Bearer {TOKEN}");
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let ok = served.request("POST", RESOLVE, &headers, body.as_bytes());
    let bad = served.request(
        "POST",
        RESOLVE,
        &[("Authorization", "Bearer wrong-token-000000000")],
        body.as_bytes(),
    );
    assert_eq!((ok.status, bad.status), (200, 401), "{}", bad.body);
    for reply in [&ok, &bad] {
        assert_eq!(reply.header("cache-control"), Some("no-store"));
        assert_eq!(reply.header("pragma"), Some("no-cache"));
    }
    // Ids the client did not send are generated fresh per answer.
    let (a, b) = (ok.json(), bad.json());
    assert!(a["request_id"]
        .as_str()
        .unwrap()
        .starts_with("secref-serve-"));
    assert_ne!(a["request_id"], a["trace_id"]);
    assert_ne!(a["request_id"], b["request_id"]);
    // Stopped first: every access-log line is written before it exits.
    served.stop();
    let log = std::fs::read_to_string(sb.path("serve.log")).unwrap();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("request") && l.contains(RESOLVE))
        .collect();
    assert_eq!(lines.len(), 2, "one access-log line per request:\n{log}");
    assert!(
        lines[0].contains("status=200") && lines[0].contains("items=3"),
        "{log}"
    );
    assert!(lines[1].contains("status=401"), "{log}");
    for (_, value) in &vars {
        assert!(!log.contains(value.as_str()), "a value reached the log");
    }
    assert!(!log.contains(TOKEN), "the token reached the log");
}

/// The resident set of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

#[test]
#[ignore = "a measurement: cargo test --release -p secref-cli --test serve_hot_path -- --ignored --nocapture"]
fn cached_secrets_rss() {
    const N: usize = 10_000;
    let vars = vars(N);
    let (served, _sb) = serve(&vars);
    // Warm up every code path once (runtime threads, buffers) on the
    // first 100 references, which are not counted.
    let (status, body) = served.post(RESOLVE, TOKEN, &resolve_body(0, 100));
    assert_eq!(status, 200, "{body}");
    let before = rss_kib(served.pid());
    for from in (100..N).step_by(100) {
        let (status, body) = served.post(RESOLVE, TOKEN, &resolve_body(from, 100));
        assert_eq!(status, 200, "{body}");
        assert!(!body.contains("\"failed\""), "{body}");
    }
    // The values really are cached: a second pass answers the same.
    let (status, _) = served.post(RESOLVE, TOKEN, &resolve_body(N - 100, 100));
    assert_eq!(status, 200);
    let after = rss_kib(served.pid());
    let grew = after.saturating_sub(before);
    println!(
        "cached_secrets_rss: {} secrets cached: VmRSS {before} KiB -> {after} KiB (+{grew} KiB, {} bytes per secret)",
        N - 100,
        grew * 1024 / (N as u64 - 100)
    );
    // A regression guard, not the target: the issue's target is 5 MiB and
    // today's figure is ~6.5 MiB (see BENCHMARKS.md, "`secref serve` hot
    // path").
    assert!(
        grew <= 8 * 1024,
        "10k cached secrets cost {grew} KiB > 8 MiB"
    );
}
