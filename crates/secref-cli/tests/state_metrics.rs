//! Issues 14/15 follow-ups, at the product boundary: what `GET /metrics` of
//! a real `secref serve` reports.
//!
//! * every read counts once in `secref_resolves_total{provider,code}`,
//!   whichever API it came through (SecFlow or the Vault KV v2 API over the
//!   local store) and however it ended (delivered, not found, denied by the
//!   server's rules);
//! * with `[state] backend = "redis"`, `secref_leases_held{principal,kind}`
//!   reports the shared per-principal count (revoked leases, wrapping
//!   tokens) that the quota sees — also on a replica the entries were not
//!   made through, and falling as entries expire.
//!
//! The Redis tests need `SECREF_TEST_REDIS_BIN` (`scripts/test.sh` sets it);
//! without it they print why and pass. The others need nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use secref_testkit::cli::{Sandbox, Served};
use secref_testkit::redis::Redis;
use serde_json::{json, Value};

const TOKEN: &str = "state-metrics-token-0123456789";
const STATE_KEY: &str = "state-metrics-shared-key-0123456789abcdef";
const CANARY: &str = "canary-state-metrics-5be1";

/// `name{labels} value` lines of a Prometheus text, as (name, labels, value).
fn samples(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a value");
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once('=').expect("k=v");
                    (k.to_string(), v.trim_matches('"').to_string())
                })
                .collect();
            (name.to_string(), labels, value.parse().expect("a number"))
        })
        .collect()
}

/// The value of the series `name` with exactly these labels (0 if absent).
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(text)
        .into_iter()
        .filter(|(n, l, _)| {
            n == name
                && l.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

fn resolves(s: &Served, provider: &str, code: &str) -> f64 {
    value(
        &s.metrics(TOKEN),
        "secref_resolves_total",
        &[("provider", provider), ("code", code)],
    )
}

/// One SecFlow resolve; the answer's items.
fn resolve(s: &Served, refs: &[&str], ttl: Option<u64>) -> Vec<Value> {
    let items: Vec<Value> = refs
        .iter()
        .enumerate()
        .map(|(i, r)| json!({"item_id": format!("item-{}", i + 1), "secret_ref": r}))
        .collect();
    let mut body = json!({
        "target_environment": "dev",
        "purpose": "secret.runtime_resolve",
        "items": items,
    });
    if let Some(t) = ttl {
        body["lease_ttl_seconds"] = json!(t);
    }
    let (status, text) = s.post("/v1/secrets/resolve:batch", TOKEN, &body);
    assert_eq!(status, 200, "{text}");
    serde_json::from_str::<Value>(&text).unwrap()["items"]
        .as_array()
        .unwrap()
        .clone()
}

fn revoke(s: &Served, lease: &str) -> Value {
    let body = json!({
        "target_environment": "dev",
        "purpose": "secret.lease_revoke",
        "items": [{"item_id": "r1", "lease_id": lease, "reason": "job_completed"}],
    });
    let (status, text) = s.post("/v1/leases/revoke:batch", TOKEN, &body);
    assert_eq!(status, 200, "{text}");
    serde_json::from_str::<Value>(&text).unwrap()["items"][0].clone()
}

/// `GET /v1/secret/data/<path>` through the Vault API with the server token.
fn vault_read(s: &Served, path: &str, extra: &[(&str, &str)]) -> (u16, String) {
    let mut h = vec![("X-Vault-Token", TOKEN)];
    h.extend_from_slice(extra);
    let r = s.request("GET", &format!("/v1/secret/data/{path}"), &h, b"");
    (r.status, r.body)
}

const RULES: &str = "[[server.rules]]\nprincipals = [\"*\"]\n\
    refs = [\"local://app/*\", \"openbao+kv2://secret/app/*\", \"env://APP_*\"]\n";

/// A sandbox with `local://app/db#password` and `local://other/x#k` stored
/// and a config of `extra` plus [`RULES`] (`other/` is denied).
fn sandbox(extra: &str) -> (Sandbox, std::path::PathBuf) {
    let sb = Sandbox::initialized(env!("CARGO_BIN_EXE_secref"))
        .with_env("SECREF_STATE_KEY", STATE_KEY)
        .with_env("APP_A", CANARY);
    sb.set("local://app/db#password", CANARY);
    sb.set("local://other/x#k", CANARY);
    let cfg = sb.write("secref.toml", &format!("{extra}\n{RULES}"));
    (sb, cfg)
}

#[test]
fn every_read_counts_once_by_provider_and_code_on_both_apis() {
    let (sb, cfg) = sandbox("");
    let s = Served::start(&sb, TOKEN, &["--config", cfg.to_str().unwrap()]);
    let codes = ["ok", "not_found", "permission_denied"];
    let before: Vec<f64> = codes.iter().map(|c| resolves(&s, "local", c)).collect();
    let delta = |want: [f64; 3], what: &str| {
        let now: Vec<f64> = codes.iter().map(|c| resolves(&s, "local", c)).collect();
        let got: Vec<f64> = now.iter().zip(&before).map(|(n, b)| n - b).collect();
        assert_eq!(got, want, "{what}: {codes:?}\n{}", s.metrics(TOKEN));
    };

    // The Vault KV v2 API reads the local store itself: counted as local.
    let (status, body) = vault_read(&s, "app/db", &[]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(CANARY));
    delta([1.0, 0.0, 0.0], "a Vault API read");
    let (status, _) = vault_read(&s, "app/missing", &[]);
    assert_eq!(status, 404);
    delta([1.0, 1.0, 0.0], "a Vault API read of a missing secret");
    let (status, body) = vault_read(&s, "other/x", &[]);
    assert_eq!(status, 403, "{body}");
    assert!(!body.contains(CANARY));
    delta([1.0, 1.0, 1.0], "a Vault API read the rules deny");

    // SecFlow: the same series, once per item.
    let items = resolve(&s, &["local://app/db#password"], None);
    assert_eq!(items[0]["result"], "allowed", "{items:?}");
    delta([2.0, 1.0, 1.0], "a SecFlow read");
    let items = resolve(&s, &["local://other/x#k"], None);
    assert_eq!(items[0]["result"], "denied", "{items:?}");
    delta([2.0, 1.0, 2.0], "a SecFlow read the rules deny");

    // No series names a reference or a value.
    let text = s.metrics(TOKEN);
    for needle in [CANARY, "app/db", "other/x"] {
        assert!(!text.contains(needle), "{needle} in /metrics");
    }
    s.stop();
}

/// A `secref serve` replica over `redis` (its own sandbox and store).
fn replica(redis: &Redis, extra: &str) -> (Served, Sandbox) {
    let (sb, cfg) = sandbox(&format!(
        "[state]\nbackend = \"redis\"\nurl = \"{}\"\nkey_env = \"SECREF_STATE_KEY\"\n\
         namespace = \"statemetrics\"\n[server]\n{extra}\n",
        redis.url()
    ));
    let s = Served::start(&sb, TOKEN, &["--config", cfg.to_str().unwrap()]);
    (s, sb)
}

fn held(s: &Served, kind: &str) -> f64 {
    value(
        &s.metrics(TOKEN),
        "secref_leases_held",
        &[("principal", "default"), ("kind", kind)],
    )
}

#[test]
fn leases_held_is_reported_with_redis_state_on_every_replica() {
    let Some(redis) = Redis::start() else { return };
    let (a, _sa) = replica(&redis, "");
    let (b, _sb) = replica(&redis, "");
    assert_eq!(held(&a, "revoked_lease"), 0.0, "{}", a.metrics(TOKEN));

    // Two revocations through replica a (one of a short lease), one
    // wrapping token through replica b.
    let long = resolve(&a, &["env://APP_A"], Some(600));
    let short = resolve(&a, &["env://APP_A"], Some(2));
    for item in [&long[0], &short[0]] {
        assert_eq!(item["result"], "allowed", "{item}");
        let r = revoke(&a, item["lease_id"].as_str().unwrap());
        assert_eq!(r["status"], "revoked", "{r}");
    }
    let (status, body) = vault_read(&b, "app/db", &[("X-Vault-Wrap-TTL", "120")]);
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains(CANARY), "a wrapped answer holds no value");

    // The shared count, on both replicas: what the quota sees.
    for s in [&a, &b] {
        assert_eq!(held(s, "revoked_lease"), 2.0, "{}", s.metrics(TOKEN));
        assert_eq!(held(s, "wrap"), 1.0, "{}", s.metrics(TOKEN));
    }

    // The short lease's revocation ends with the lease: the gauge follows
    // (bounded wait, no timing asserted).
    let mut left = held(&b, "revoked_lease");
    for _ in 0..100 {
        if left == 1.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        left = held(&b, "revoked_lease");
    }
    assert_eq!(left, 1.0, "{}", b.metrics(TOKEN));

    // Nothing secret in the series.
    let text = a.metrics(TOKEN);
    assert!(!text.contains(CANARY) && !text.contains("APP_A") && !text.contains(TOKEN));
    a.stop();
    b.stop();
}
