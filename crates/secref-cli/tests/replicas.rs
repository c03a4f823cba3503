//! Issue 15 ("Past one machine"), shared state: three `secref serve`
//! replicas with `[state] backend = "redis"` enforce one policy. Each test
//! starts its own `redis-server` on a free 127.0.0.1 port (so stopping it
//! disturbs no other test) and three real `secref serve` processes, each in
//! its own sandbox (its own store and HOME, as on three machines) with the
//! same config and shared key, and talks HTTP to them.
//!
//! Needs `SECREF_TEST_REDIS_BIN` (the `redis-server` path; `scripts/test.sh`
//! sets it); without it every test prints why and passes.

use std::time::Duration;

use secref_testkit::cli::{Sandbox, Served};
use secref_testkit::redis::Redis;
use serde_json::{json, Value};

const TOKEN: &str = "replicas-token-0123456789";
const STATE_KEY: &str = "replicas-shared-state-key-0123456789abcdef";
/// The values behind `env://APP_A` … (must never reach Redis).
const CANARY: &str = "canary-replica-value-7f3a";

/// Three replicas sharing `redis` with `extra` TOML appended (a `[policy]`
/// and `[server]` tuning). Each one's sandbox is returned with it.
fn replicas(redis: &Redis, extra: &str) -> Vec<(Served, Sandbox)> {
    (0..3)
        .map(|_| {
            let mut sb =
                Sandbox::new(env!("CARGO_BIN_EXE_secref")).with_env("SECREF_STATE_KEY", STATE_KEY);
            for k in ["A", "B", "C", "D"] {
                sb = sb.with_env(&format!("APP_{k}"), &format!("{CANARY}-{k}"));
            }
            let served = Served::start_with_config(
                &sb,
                TOKEN,
                &format!(
                    "[state]\nbackend = \"redis\"\nurl = \"{}\"\nkey_env = \"SECREF_STATE_KEY\"\n\
                     namespace = \"replicas\"\ntimeout_ms = 300\n{extra}\n\
                     [[server.rules]]\nprincipals = [\"*\"]\nrefs = [\"*\", \"env://APP_*\"]\n",
                    redis.url()
                ),
            );
            (served, sb)
        })
        .collect()
}

/// One resolve of `refs` with `headers`; the answer's items.
fn resolve(s: &Served, headers: &[(&str, &str)], refs: &[&str]) -> Vec<Value> {
    let items: Vec<Value> = refs
        .iter()
        .enumerate()
        .map(|(i, r)| json!({"item_id": format!("item-{}", i + 1), "secret_ref": r}))
        .collect();
    let body = json!({
        "target_environment": "dev",
        "purpose": "secret.runtime_resolve",
        "items": items,
    });
    let auth = format!("Bearer {TOKEN}");
    let mut h = vec![
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    h.extend_from_slice(headers);
    let r = s.request(
        "POST",
        "/v1/secrets/resolve:batch",
        &h,
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    serde_json::from_str::<Value>(&r.body).unwrap()["items"]
        .as_array()
        .unwrap()
        .clone()
}

/// One revoke of `lease`; the answer's item.
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

fn lease_of(item: &Value) -> String {
    assert_eq!(item["result"], "allowed", "{item}");
    item["lease_id"].as_str().unwrap().to_string()
}

/// No key or value in Redis holds a value, a reference, a lease id or the
/// shared key: only namespaced HMAC'd names and counters.
fn assert_nothing_secret_in(redis: &Redis, leases: &[String]) {
    let dump = redis.dump();
    assert!(
        !dump.trim().is_empty(),
        "the replicas wrote no shared state"
    );
    for needle in [CANARY, "APP_", "env://", "default", STATE_KEY, TOKEN] {
        assert!(!dump.contains(needle), "{needle:?} in Redis:\n{dump}");
    }
    for l in leases {
        assert!(!dump.contains(l.as_str()), "a lease id in Redis:\n{dump}");
    }
    for key in redis.cli_out(&["--scan"]).lines().filter(|k| !k.is_empty()) {
        assert!(key.starts_with("secref:replicas:"), "{key}");
        let ttl: i64 = redis.cli_out(&["PTTL", key]).trim().parse().unwrap();
        assert!(ttl > 0, "{key} never expires ({ttl})");
    }
}

#[test]
fn a_one_use_grant_is_honoured_once_across_three_replicas() {
    let Some(redis) = Redis::start() else { return };
    let reps = replicas(
        &redis,
        "[policy]\ngrant_max_uses = 1\ngrant_ttl_seconds = 300\n",
    );
    // 50 concurrent requests for the same reference, spread over the three.
    let results: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|i| {
                let served = &reps[i % 3].0;
                s.spawn(move || resolve(served, &[], &["env://APP_A"]).remove(0))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let allowed: Vec<&Value> = results
        .iter()
        .filter(|i| i["result"] == "allowed")
        .collect();
    assert_eq!(allowed.len(), 1, "{results:#?}");
    assert_eq!(allowed[0]["value"]["data"], format!("{CANARY}-A"));
    for i in results.iter().filter(|i| i["result"] != "allowed") {
        assert_eq!(i["result"], "denied", "{i}");
        assert_eq!(i["error"]["code"], "PERMISSION_DENIED", "{i}");
    }
    // A later request on any replica is refused too.
    for (served, _) in &reps {
        assert_eq!(
            resolve(served, &[], &["env://APP_A"])[0]["result"],
            "denied"
        );
    }
    assert_nothing_secret_in(&redis, &[]);
}

#[test]
fn jti_leases_and_quotas_are_shared() {
    let Some(redis) = Redis::start() else { return };
    let reps = replicas(
        &redis,
        "[policy]\ngrant_max_uses = 1000\n[server]\nmax_revoked_leases_per_principal = 2\n",
    );
    let (r1, r2, r3) = (&reps[0].0, &reps[1].0, &reps[2].0);

    // A jti used on replica 1 is a replay on replicas 2 and 3.
    let jti = [("x-jti", "jti-shared-1"), ("x-aud", "crud.secrets")];
    assert_eq!(resolve(r1, &jti, &["env://APP_B"])[0]["result"], "allowed");
    // (Different references: a grant hit does not check the jti again.)
    for (other, r) in [(r2, "env://APP_C"), (r3, "env://APP_D")] {
        let item = resolve(other, &jti, &[r]).remove(0);
        assert_eq!(item["result"], "denied", "{item}");
        assert!(
            item["error"]["message"]
                .as_str()
                .unwrap()
                .contains("replayed"),
            "{item}"
        );
    }
    // A fresh jti works anywhere.
    let fresh = [("x-jti", "jti-shared-2")];
    assert_eq!(
        resolve(r3, &fresh, &["env://APP_A"])[0]["result"],
        "allowed"
    );
    // A replay refusal is that token's own fact, not held against the
    // subject: a fresh token reads the refused reference at once.
    let item = resolve(r1, &[("x-jti", "jti-shared-3")], &["env://APP_C"]).remove(0);
    assert_eq!(item["result"], "allowed", "{item}");

    // A lease issued by replica 1, revoked through replica 2, is gone on 3.
    let items = resolve(r1, &[], &["env://APP_A", "env://APP_B", "env://APP_A"]);
    let leases: Vec<String> = items.iter().map(lease_of).collect();
    let first = revoke(r2, &leases[0]);
    assert_eq!(first["status"], "revoked", "{first}");
    let again = revoke(r3, &leases[0]);
    assert_eq!(again["result"], "failed", "{again}");
    assert_eq!(again["error"]["code"], "NOT_FOUND", "{again}");
    // Replica 3 opens replica 1's lease ids: the second one it revokes.
    assert_eq!(revoke(r3, &leases[1])["status"], "revoked");
    // The per-principal quota (2) counts both replicas' revocations.
    let third = revoke(r1, &leases[2]);
    assert_eq!(third["error"]["code"], "RATE_LIMITED", "{third}");
    assert_eq!(third["error"]["retryable"], true, "{third}");

    assert_nothing_secret_in(&redis, &leases);
}

#[test]
fn redis_down_fails_closed_and_replicas_recover_by_themselves() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    // The grace rule: replica 1 may keep honouring a grant confirmed within
    // the last 60 s; nothing else.
    let reps = replicas_with_grace(&redis);
    let (r1, r2, r3) = (&reps[0].0, &reps[1].0, &reps[2].0);
    assert_eq!(resolve(r1, &[], &["env://APP_A"])[0]["result"], "allowed");

    redis.down();
    // Every replica fails closed for anything that needs a decision.
    for served in [r1, r2, r3] {
        let item = resolve(served, &[], &["env://APP_B"]).remove(0);
        assert_eq!(item["result"], "failed", "{item}");
        assert_eq!(item["error"]["code"], "BACKEND_UNAVAILABLE", "{item}");
        assert_eq!(item["error"]["retryable"], true, "{item}");
        assert!(!item.to_string().contains(CANARY), "{item}");
    }
    // Replicas without a confirmed grant refuse APP_A too; replica 1 honours
    // its recently confirmed grant.
    for served in [r2, r3] {
        let item = resolve(served, &[], &["env://APP_A"]).remove(0);
        assert_eq!(item["error"]["code"], "BACKEND_UNAVAILABLE", "{item}");
    }
    assert_eq!(resolve(r1, &[], &["env://APP_A"])[0]["result"], "allowed");
    // And each replica leaves the load balancer's rotation: `/readyz`
    // names the shared state (answers are reused for 2 s: bounded wait).
    for served in [r1, r2, r3] {
        let mut last = Value::Null;
        let unready = (0..60).any(|_| {
            let r = served.request(
                "GET",
                "/readyz",
                &[("authorization", &format!("Bearer {TOKEN}"))],
                b"",
            );
            last = r.json();
            if r.status == 503 && last.to_string().contains("state") {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
            false
        });
        assert!(unready, "readyz ignores the state backend: {last}");
    }

    // Back on the same port: each replica recovers without a restart.
    redis.up();
    for served in [r1, r2, r3] {
        let mut last = Value::Null;
        let recovered = (0..100).any(|_| {
            last = resolve(served, &[], &["env://APP_B"]).remove(0);
            if last["result"] == "allowed" {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
            false
        });
        assert!(recovered, "replica did not recover: {last}");
        let ready = (0..60).any(|_| {
            let r = served.request(
                "GET",
                "/readyz",
                &[("authorization", &format!("Bearer {TOKEN}"))],
                b"",
            );
            if r.status == 200 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
            false
        });
        assert!(ready, "readyz did not recover");
    }
    for (served, _) in &reps {
        assert!(!served.log().contains(CANARY));
    }
}

fn replicas_with_grace(redis: &Redis) -> Vec<(Served, Sandbox)> {
    replicas(
        redis,
        "honour_confirmed_grants_seconds = 60\n[policy]\ngrant_max_uses = 1000\n",
    )
}

/// A bounded load comparison: one replica, in-memory state vs Redis, same
/// run. `cargo test --release -p secref-cli --test replicas -- --ignored
/// --nocapture bench`; the figure goes to BENCHMARKS.md ("Replicas").
#[test]
#[ignore = "a measurement, not a check; run by hand in release mode"]
fn bench_one_replica_memory_vs_redis() {
    let Some(redis) = Redis::start() else { return };
    let policy = "[policy]\ngrant_max_uses = 100000000\n";
    let rate = |cfg: &str| {
        let sb = Sandbox::new(env!("CARGO_BIN_EXE_secref"))
            .with_env("SECREF_STATE_KEY", STATE_KEY)
            .with_env("APP_A", CANARY);
        let served = Served::start_with_config(
            &sb,
            TOKEN,
            &format!(
                "{cfg}\n[[server.rules]]\nprincipals = [\"*\"]\nrefs = [\"*\", \"env://APP_*\"]\n"
            ),
        );
        let (threads, per) = (8, 250);
        // Warm-up.
        for _ in 0..50 {
            resolve(&served, &[], &["env://APP_A"]);
        }
        let t = std::time::Instant::now();
        std::thread::scope(|s| {
            for w in 0..threads {
                let served = &served;
                s.spawn(move || {
                    for i in 0..per {
                        // A fresh jti per request: every request checks the
                        // replay window as well as reserving a use.
                        let jti = format!("bench-{w}-{i}");
                        let item = resolve(served, &[("x-jti", &jti)], &["env://APP_A"]).remove(0);
                        assert_eq!(item["result"], "allowed", "{item}");
                    }
                });
            }
        });
        (threads * per) as f64 / t.elapsed().as_secs_f64()
    };
    let memory = rate(policy);
    let shared = rate(&format!(
        "[state]\nbackend = \"redis\"\nurl = \"{}\"\nkey_env = \"SECREF_STATE_KEY\"\n{policy}",
        redis.url()
    ));
    println!("| state backend | requests/s |\n|---|---|");
    println!("| memory | {memory:.0} |\n| redis | {shared:.0} |");
    println!("ratio redis/memory: {:.2}", shared / memory);
}

/// A wrong `[state]` stops `secref serve` at start with a `config` error
/// (exit 2) naming the setting; no Redis needed.
#[test]
fn a_bad_state_section_is_refused_at_start() {
    for (toml, says) in [
        ("backend = \"etcd\"", "backend = \"etcd\" is unknown"),
        (
            "backend = \"redis\"\nkey_env = \"SECREF_STATE_KEY\"",
            "needs url",
        ),
        (
            "backend = \"redis\"\nurl = \"redis://127.0.0.1:1/0\"",
            "needs key_env",
        ),
        (
            "backend = \"redis\"\nurl = \"redis://127.0.0.1:1/0\"\nkey_env = \"SHORT_KEY\"",
            "shorter than 32 bytes",
        ),
        ("backend = \"memory\"\ncolour = \"blue\"", "invalid [state]"),
    ] {
        let sb = Sandbox::new(env!("CARGO_BIN_EXE_secref"))
            .with_env("SECREF_STATE_KEY", STATE_KEY)
            .with_env("SHORT_KEY", "tiny-k3y");
        let cfg = sb.write("secref.toml", &format!("[state]\n{toml}\n"));
        let o = sb
            .cmd()
            .env("SECREF_SERVE_TOKEN", TOKEN)
            .args(["serve", "--bind", "127.0.0.1:0", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{toml}: {err}");
        assert!(err.contains(says), "{toml}: {err}");
        assert!(
            !err.contains("tiny-k3y") && !err.contains(STATE_KEY),
            "{err}"
        );
    }
}
