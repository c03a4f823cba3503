//! Vault response-wrapping tokens across three `secref serve` replicas
//! sharing `[state] backend = "redis"`: a token wrapped on one replica is
//! unwrapped on any other, exactly once, and neither the token nor Redis
//! holds the wrapped value in the clear. Each replica has its own sandbox
//! (its own store, as on three machines) with the same seeded value.
//!
//! Needs `SECREF_TEST_REDIS_BIN` (the `redis-server` path; `scripts/test.sh`
//! sets it); without it every test prints why and passes.

use secref_testkit::cli::{feed_stdin, run_ok, stderr, Reply, Sandbox, Served};
use secref_testkit::redis::Redis;

const TOKEN: &str = "replicas-wrap-token-0123456789";
const STATE_KEY: &str = "replicas-wrap-state-key-0123456789abcdef";
/// The value behind `secret/app/api` (must never reach Redis or a token).
const CANARY: &str = "canary-wrapped-value-c41d";

fn replicas(redis: &Redis) -> Vec<(Served, Sandbox)> {
    (0..3)
        .map(|_| {
            let sb =
                Sandbox::new(env!("CARGO_BIN_EXE_secref")).with_env("SECREF_STATE_KEY", STATE_KEY);
            let cfg = sb.write(
                "secref.toml",
                &format!(
                    "[state]\nbackend = \"redis\"\nurl = \"{}\"\nkey_env = \"SECREF_STATE_KEY\"\n\
                     namespace = \"wraps\"\ntimeout_ms = 300\n[server]\nmax_wraps_per_principal = 100\n",
                    redis.url()
                ),
            );
            // `secret/app/api` of the Vault API is this local store entry.
            run_ok(sb.cmd().arg("init"));
            let o = feed_stdin(
                sb.cmd().args(["set", "local://app/api#token"]),
                CANARY.as_bytes(),
            );
            assert!(o.status.success(), "{}", stderr(&o));
            let served = Served::start(&sb, TOKEN, &["--config", cfg.to_str().unwrap()]);
            (served, sb)
        })
        .collect()
}

/// A wrapped read on `s`: the wrapping token.
fn wrap(s: &Served) -> String {
    let r = s.request(
        "GET",
        "/v1/secret/data/app/api",
        &[("X-Vault-Token", TOKEN), ("X-Vault-Wrap-TTL", "120s")],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.body.contains(CANARY), "{}", r.body);
    r.json()["wrap_info"]["token"].as_str().unwrap().to_string()
}

/// `sys/wrapping/unwrap` or `lookup` on `s`, the token as `X-Vault-Token`
/// (as hvac's and vaultrs' unwrap of a token they hold).
fn wrapping(s: &Served, op: &str, token: &str) -> Reply {
    s.request(
        "POST",
        &format!("/v1/sys/wrapping/{op}"),
        &[("X-Vault-Token", token)],
        b"",
    )
}

fn assert_invalid(r: &Reply) {
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(!r.body.contains(CANARY), "{}", r.body);
    assert!(
        r.json()["errors"][0]
            .as_str()
            .unwrap()
            .contains("not valid"),
        "{}",
        r.body
    );
}

/// No key or value in Redis holds the value, a token or the shared key;
/// every key is namespaced and expires by itself.
fn assert_nothing_secret_in(redis: &Redis, tokens: &[String]) {
    let dump = redis.dump();
    assert!(
        !dump.trim().is_empty(),
        "the replicas wrote no shared state"
    );
    for needle in [CANARY, "app/api", STATE_KEY, TOKEN] {
        assert!(!dump.contains(needle), "{needle:?} in Redis:\n{dump}");
    }
    for t in tokens {
        let body = t.trim_start_matches("hvs.");
        assert!(!dump.contains(&body[..40]), "a token in Redis:\n{dump}");
    }
    for key in redis.cli_out(&["--scan"]).lines().filter(|k| !k.is_empty()) {
        assert!(key.starts_with("secref:wraps:"), "{key}");
        let ttl: i64 = redis.cli_out(&["PTTL", key]).trim().parse().unwrap();
        assert!(ttl > 0, "{key} never expires ({ttl})");
    }
}

#[test]
fn wrapped_on_one_replica_unwrapped_once_on_another() {
    let Some(redis) = Redis::start() else { return };
    let reps = replicas(&redis);
    let (r1, r2, r3) = (&reps[0].0, &reps[1].0, &reps[2].0);

    let token = wrap(r1);
    // The token is sealed: the value is not readable from it.
    assert!(!token.contains(CANARY));
    assert!(token.len() < 8 * 1024, "{} bytes", token.len());
    // Lookup works on every replica and does not use the token.
    for s in [r2, r3, r1] {
        let look = wrapping(s, "lookup", &token);
        assert_eq!(look.status, 200, "{}", look.body);
        assert_eq!(look.json()["data"]["creation_ttl"], 120, "{}", look.body);
        assert_eq!(
            look.json()["data"]["creation_path"],
            "secret/data/app/api",
            "{}",
            look.body
        );
    }
    let un = wrapping(r2, "unwrap", &token);
    assert_eq!(un.status, 200, "{}", un.body);
    assert_eq!(un.json()["data"]["data"]["token"], CANARY, "{}", un.body);
    // Used: a second unwrap (or a lookup) on any replica is refused.
    assert_invalid(&wrapping(r3, "unwrap", &token));
    assert_invalid(&wrapping(r1, "unwrap", &token));
    assert_invalid(&wrapping(r2, "lookup", &token));

    // A forged or edited token opens nowhere.
    let mut edited = token.clone().into_bytes();
    let at = edited.len() / 2;
    edited[at] = if edited[at] == b'A' { b'B' } else { b'A' };
    let edited = String::from_utf8(edited).unwrap();
    for bad in [edited.as_str(), "hvs.AAAA", "hvs.", "not-a-token"] {
        assert_invalid(&wrapping(r3, "unwrap", bad));
    }

    // 20 concurrent unwraps of one fresh token spread over the replicas:
    // exactly one gets the value.
    let token2 = wrap(r3);
    let replies: Vec<Reply> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let s = &reps[i % 3].0;
                let t = token2.as_str();
                sc.spawn(move || wrapping(s, "unwrap", t))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let won: Vec<&Reply> = replies.iter().filter(|r| r.status == 200).collect();
    assert_eq!(
        won.len(),
        1,
        "{:#?}",
        replies.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    assert_eq!(won[0].json()["data"]["data"]["token"], CANARY);
    for r in replies.iter().filter(|r| r.status != 200) {
        assert_invalid(r);
    }

    assert_nothing_secret_in(&redis, &[token, token2]);
    for (s, _) in &reps {
        assert!(!s.log().contains(CANARY));
    }
}

#[test]
fn redis_down_unwrap_fails_closed_with_a_retryable_error() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let reps = replicas(&redis);
    let (r1, r2) = (&reps[0].0, &reps[1].0);
    let token = wrap(r1);

    redis.down();
    for op in ["unwrap", "lookup"] {
        let r = wrapping(r2, op, &token);
        // Vault's answer for a retryable backend failure: 503, no value.
        assert_eq!(r.status, 503, "{op}: {}", r.body);
        assert!(!r.body.contains(CANARY), "{}", r.body);
        assert!(
            r.json()["errors"][0]
                .as_str()
                .unwrap()
                .contains("shared state backend is unavailable"),
            "{}",
            r.body
        );
    }
    // Wrapping fails closed too (its quota is shared).
    let w = r1.request(
        "GET",
        "/v1/secret/data/app/api",
        &[("X-Vault-Token", TOKEN), ("X-Vault-Wrap-TTL", "120s")],
        b"",
    );
    assert_eq!(w.status, 503, "{}", w.body);
    assert!(!w.body.contains(CANARY), "{}", w.body);

    // Back: the failed attempts used nothing, the token unwraps once.
    redis.up();
    let mut last = None;
    let got = (0..100).any(|_| {
        let r = wrapping(r2, "unwrap", &token);
        let done = r.status == 200;
        last = Some(r);
        if !done {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        done
    });
    let last = last.unwrap();
    assert!(got, "no unwrap after recovery: {}", last.body);
    assert_eq!(last.json()["data"]["data"]["token"], CANARY);
    assert_invalid(&wrapping(&reps[2].0, "unwrap", &token));
}
