//! Settings fixed at start (`[state]`, `[audit]`, listener limits) are
//! compared by meaning on reload, through the built binary with a real
//! config file: restating a default reloads fine, a real change is refused
//! naming the section (never quoting a value) and the old configuration
//! keeps serving.

use secref_testkit::cli::{Reply, Sandbox, Served};

const TOKEN: &str = "reload-fixed-server-token-5c4d3e";
const STATE_KEY: &str = "reload-fixed-shared-key-0123456789abcdef";
/// A Redis password in a URL: never echoed by a refusal.
const URL_CANARY: &str = "canary-redis-password-8a7b";

fn start(config: &str) -> (Served, Sandbox) {
    let sb =
        Sandbox::initialized(env!("CARGO_BIN_EXE_secref")).with_env("SECREF_STATE_KEY", STATE_KEY);
    sb.set("local://app/db#password", "reload-fixed-value");
    sb.write("secref.toml", config);
    let s = Served::start(&sb, TOKEN, &[]);
    (s, sb)
}

fn reload_with(s: &Served, sb: &Sandbox, config: &str) -> Reply {
    sb.write("secref.toml", config);
    s.request(
        "POST",
        "/v1/sys/secref/reload",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        b"",
    )
}

fn assert_reloaded(r: &Reply, what: &str) {
    assert_eq!(r.status, 200, "{what}: {}", r.body);
    assert_eq!(r.json()["reloaded"], true, "{what}: {}", r.body);
}

/// Refused with a `config` error naming `section`, quoting no value.
fn assert_refused(r: &Reply, section: &str, what: &str) {
    assert_eq!(r.status, 400, "{what}: {}", r.body);
    let v = r.json();
    assert_eq!(v["reloaded"], false, "{what}: {}", r.body);
    assert_eq!(v["code"], "config", "{what}: {}", r.body);
    let reason = v["errors"][0].as_str().unwrap();
    assert!(reason.contains(section), "{what}: {reason}");
    assert!(reason.contains("restart"), "{what}: {reason}");
    assert!(!r.body.contains(URL_CANARY), "{what}: {}", r.body);
}

/// The old configuration still serves a read.
fn assert_serving(s: &Served) {
    let r = s.request(
        "GET",
        "/v1/secret/data/app/db",
        &[("X-Vault-Token", TOKEN)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn restating_fixed_sections_at_their_defaults_reloads() {
    let (s, sb) = start("");
    // `[state]` absent means the in-memory backend, as does saying so.
    let restated = "[state]\nbackend = \"memory\"\n\
        [server]\nmax_connections = 512\nheader_read_timeout_seconds = 10\n\
        idle_timeout_seconds = 60\nshutdown_grace_seconds = 10\n\
        max_body_bytes = 1048576\nmax_revoked_leases_per_principal = 10000\n";
    assert_reloaded(&reload_with(&s, &sb, restated), "defaults restated");
    // And back to nothing at all.
    assert_reloaded(&reload_with(&s, &sb, ""), "defaults dropped again");
    assert_serving(&s);
    s.stop();

    // `[audit]` present: its defaults restated are the same auditing.
    let (s, sb) = start("[audit]\nsink = \"stderr\"\n");
    let restated = "[audit]\nsink = \"stderr\"\nqueue_capacity = 1024\n\
        on_sink_failure = \"spill\"\nsalt_env = \"SECRET_TENANT_SALT\"\n";
    assert_reloaded(&reload_with(&s, &sb, restated), "[audit] restated");
    assert_serving(&s);
    s.stop();

    // A Redis `[state]` (Redis need not be up: connections are lazy) with
    // its defaults spelt out.
    let url = format!("redis://:{URL_CANARY}@127.0.0.1:1/0");
    let base =
        format!("[state]\nbackend = \"redis\"\nurl = \"{url}\"\nkey_env = \"SECREF_STATE_KEY\"\n");
    let (s, sb) = start(&base);
    let restated = format!(
        "{base}namespace = \"secref\"\ntimeout_ms = 500\nhonour_confirmed_grants_seconds = 0\n"
    );
    assert_reloaded(&reload_with(&s, &sb, &restated), "redis defaults restated");
    s.stop();
}

#[test]
fn a_real_change_of_a_fixed_section_is_refused_and_the_old_one_serves() {
    let (s, sb) = start("");
    let url = format!("redis://:{URL_CANARY}@127.0.0.1:1/0");
    let to_redis =
        format!("[state]\nbackend = \"redis\"\nurl = \"{url}\"\nkey_env = \"SECREF_STATE_KEY\"\n");
    assert_refused(
        &reload_with(&s, &sb, &to_redis),
        "[state]",
        "memory → redis",
    );
    assert_refused(
        &reload_with(&s, &sb, "[audit]\nsink = \"stderr\"\n"),
        "[audit]",
        "auditing added",
    );
    assert_refused(
        &reload_with(&s, &sb, "[server]\nmax_connections = 8\n"),
        "max_connections",
        "a connection limit",
    );
    assert_serving(&s);
    s.stop();

    // Another Redis URL, another namespace: refused.
    let (s, sb) = start(&to_redis);
    for (change, what) in [
        (
            to_redis.replace("127.0.0.1:1/0", "127.0.0.1:2/0"),
            "another url",
        ),
        (
            format!("{to_redis}namespace = \"other\"\n"),
            "another namespace",
        ),
        (
            "[state]\nbackend = \"memory\"\n".to_string(),
            "redis → memory",
        ),
    ] {
        assert_refused(&reload_with(&s, &sb, &change), "[state]", what);
    }
    s.stop();

    // `[audit]` with another setting: refused.
    let (s, sb) = start("[audit]\nsink = \"stderr\"\n");
    assert_refused(
        &reload_with(&s, &sb, "[audit]\nsink = \"stderr\"\nqueue_capacity = 8\n"),
        "[audit]",
        "another queue capacity",
    );
    assert_serving(&s);
    s.stop();
}
