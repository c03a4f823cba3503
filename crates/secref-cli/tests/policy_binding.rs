//! The policy's negative cache never lets one caller deny service to
//! another: a same-subject request with the wrong sender binding is refused
//! (`BINDING_DRIFT`), and the rightful holder's next request is served at
//! once although `negative_ttl_seconds` is long — in memory and with
//! `[state] backend = "redis"` (then only when `SECREF_TEST_REDIS_BIN` is
//! set). The binding is the `x-cnf-jkt` header over plain loopback (the
//! mTLS variant is in `tls.rs`).

use secref_testkit::cli::{Sandbox, Served};
use secref_testkit::redis::Redis;
use serde_json::{json, Value};

const TOKEN: &str = "binding-token-0123456789";
const STATE_KEY: &str = "binding-shared-state-key-0123456789abcdef";
const CANARY: &str = "canary-binding-value-51c2";
const POLICY: &str = "[policy]\ngrant_max_uses = 100\nnegative_ttl_seconds = 600\n";

fn serve(state: &str) -> (Served, Sandbox) {
    let sb = Sandbox::new(env!("CARGO_BIN_EXE_secref"))
        .with_env("SECREF_STATE_KEY", STATE_KEY)
        .with_env("APP_A", CANARY);
    let served = Served::start_with_config(
        &sb,
        TOKEN,
        &format!(
            "{state}\n{POLICY}\n[[server.rules]]\nprincipals = [\"*\"]\nrefs = [\"*\", \"env://APP_*\"]\n"
        ),
    );
    (served, sb)
}

/// One SecFlow resolve of `env://APP_A` bound to `jkt`; the answer's item.
fn read(s: &Served, jkt: &str, extra: &[(&str, &str)]) -> Value {
    let body = json!({
        "target_environment": "dev",
        "purpose": "secret.runtime_resolve",
        "items": [{"item_id": "i1", "secret_ref": "env://APP_A"}],
    });
    let auth = format!("Bearer {TOKEN}");
    let mut h = vec![
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
        ("x-cnf-jkt", jkt),
    ];
    h.extend_from_slice(extra);
    let r = s.request(
        "POST",
        "/v1/secrets/resolve:batch",
        &h,
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    serde_json::from_str::<Value>(&r.body).unwrap()["items"][0].clone()
}

fn assert_allowed(item: &Value) {
    assert_eq!(item["result"], "allowed", "{item}");
    assert_eq!(item["value"]["data"], CANARY, "{item}");
}

fn assert_drift(item: &Value) {
    assert_eq!(item["result"], "denied", "{item}");
    assert_eq!(item["error"]["code"], "PERMISSION_DENIED", "{item}");
    assert!(!item.to_string().contains(CANARY), "{item}");
    assert!(
        item["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sender binding"),
        "{item}"
    );
}

/// The scenario on `replicas` (requests alternate between them).
fn wrong_binding_does_not_lock_out_the_rightful_one(replicas: &[&Served]) {
    let at = |i: usize| replicas[i % replicas.len()];
    assert_allowed(&read(at(0), "jkt-rightful", &[]));
    for i in 1..4 {
        assert_drift(&read(at(i), "jkt-intruder", &[]));
    }
    // Immediately (negative TTL 600 s): the rightful binding reads again.
    for i in 0..3 {
        assert_allowed(&read(at(i), "jkt-rightful", &[]));
    }
    // A wrong-audience or replayed token of the same subject does not lock
    // it out either.
    let aud = read(at(1), "jkt-rightful", &[("x-aud", "elsewhere")]);
    assert_eq!(aud["result"], "denied", "{aud}");
    assert_allowed(&read(at(2), "jkt-rightful", &[]));
}

#[test]
fn in_memory_a_drifted_binding_does_not_deny_the_rightful_holder() {
    let (served, _sb) = serve("");
    wrong_binding_does_not_lock_out_the_rightful_one(&[&served]);
    assert!(!served.log().contains(CANARY));
}

#[test]
fn with_redis_a_drifted_binding_does_not_deny_the_rightful_holder_on_any_replica() {
    let Some(redis) = Redis::start() else { return };
    let state = format!(
        "[state]\nbackend = \"redis\"\nurl = \"{}\"\nkey_env = \"SECREF_STATE_KEY\"\n",
        redis.url()
    );
    let a = serve(&state);
    let b = serve(&state);
    wrong_binding_does_not_lock_out_the_rightful_one(&[&a.0, &b.0]);
    let dump = redis.dump();
    for needle in [CANARY, "jkt-", "APP_A"] {
        assert!(!dump.contains(needle), "{needle:?} in Redis:\n{dump}");
    }
}
