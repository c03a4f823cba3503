//! Operating promises of `secref serve` not covered elsewhere, through the
//! built binary: `[audit] on_sink_failure = "block"` (reads go on while the
//! sink takes writes, and are refused after a bounded wait while it is
//! down), and the per-principal quota series in `/metrics`
//! (`secref_leases_held{principal,kind}`, `secref_quota_refusals_total`).

use secref_testkit::cli::{feed_stdin, run_ok, Reply, Sandbox, Served};

const TOKEN: &str = "canary-opsp-server-token-7c6b5a";
const VALUE: &str = "canary-opsp-value-8888";

fn sandbox(config: &str) -> Sandbox {
    let sb = Sandbox::new(env!("CARGO_BIN_EXE_secref"));
    run_ok(sb.cmd().arg("init"));
    let o = feed_stdin(sb.cmd().args(["set", "local://app/a#v"]), VALUE.as_bytes());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    sb.write("secref.toml", config);
    sb
}

fn read(s: &Served, wrap: bool) -> Reply {
    let mut headers = vec![("X-Vault-Token", TOKEN)];
    if wrap {
        headers.push(("X-Vault-Wrap-TTL", "300s"));
    }
    s.request("GET", "/v1/secret/data/app/a", &headers, b"")
}

/// Every `/metrics` line starting with `prefix`.
fn metric_lines(s: &Served, prefix: &str) -> Vec<String> {
    s.metrics(TOKEN)
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

fn value_of(lines: &[String], series_prefix: &str, must_contain: &[&str]) -> Option<f64> {
    lines
        .iter()
        .find(|l| l.starts_with(series_prefix) && must_contain.iter().all(|c| l.contains(c)))
        .and_then(|l| l.rsplit_once(' ')?.1.parse().ok())
}

#[test]
fn block_mode_reads_while_the_sink_is_up_and_refuses_after_a_bounded_wait_when_down() {
    // Up: a file sink takes every write; a blocking read goes through.
    let sb = sandbox(
        "[audit]\nsink = \"file\"\npath = \"audit.jsonl\"\non_sink_failure = \"block\"\nblock_timeout_ms = 500\n",
    );
    let s = Served::start(&sb, TOKEN, &[]);
    for _ in 0..3 {
        let r = read(&s, false);
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.body.contains(VALUE));
    }
    s.stop();
    let audit = std::fs::read_to_string(sb.path("audit.jsonl")).unwrap();
    assert!(audit.lines().count() >= 3, "{audit}");
    assert!(!audit.contains(VALUE) && !audit.contains(TOKEN));

    // Down: a broker nobody listens on. Once the sink is known down, a read
    // waits (at most block_timeout_ms) and is refused, retryable (503).
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let sb = sandbox(&format!(
        "[audit]\nsink = \"kafka\"\nkafka_bootstrap = \"{dead_addr}\"\n\
         on_sink_failure = \"block\"\nblock_timeout_ms = 300\nspill_path = \"spill.jsonl\"\n"
    ));
    let s = Served::start(&sb, TOKEN, &[]);
    let mut refused = None;
    for _ in 0..600 {
        let r = read(&s, false);
        if r.status != 200 {
            refused = Some(r);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let r = refused.expect("blocking reads were never refused with the sink down");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(!r.body.contains(VALUE), "{r:?}");
    // The SecFlow API names the documented code.
    let (status, body) = s.post(
        "/v1/secrets/resolve:batch",
        TOKEN,
        &serde_json::json!({"target_environment": "dev", "purpose": "secret.runtime_resolve", "items": [{"item_id": "i1", "secret_ref": "local://app/a#v"}]}),
    );
    assert!(!body.contains(VALUE), "{body}");
    assert!(
        body.to_ascii_lowercase().contains("backend_unavailable"),
        "{status} {body}"
    );
    s.stop();
}

#[test]
fn quota_series_count_held_wraps_per_principal_and_refusals() {
    let sb = sandbox("[server]\nmax_wraps_per_principal = 2\n");
    let s = Served::start(&sb, TOKEN, &[]);
    let mut wraps = Vec::new();
    for _ in 0..2 {
        let r = read(&s, true);
        assert_eq!(r.status, 200, "{r:?}");
        wraps.push(r.json()["wrap_info"]["token"].as_str().unwrap().to_string());
    }
    let third = read(&s, true);
    assert_eq!(third.status, 503, "{third:?}");

    let lines = metric_lines(&s, "secref_");
    assert_eq!(
        value_of(
            &lines,
            "secref_leases_held{",
            &["principal=\"default\"", "kind=\"wrap\""]
        ),
        Some(2.0),
        "{lines:#?}"
    );
    assert_eq!(
        value_of(&lines, "secref_quota_refusals_total", &[]),
        Some(1.0),
        "{lines:#?}"
    );
    // Labels never name a reference, a path or a value.
    for l in &lines {
        assert!(
            !l.contains("app/a") && !l.contains(VALUE) && !l.contains(TOKEN),
            "{l}"
        );
    }

    // Unwrapping one gives its place back.
    let r = s.request(
        "POST",
        "/v1/sys/wrapping/unwrap",
        &[("X-Vault-Token", TOKEN)],
        serde_json::json!({"token": wraps[0]})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let lines = metric_lines(&s, "secref_leases_held");
    assert_eq!(
        value_of(
            &lines,
            "secref_leases_held{",
            &["principal=\"default\"", "kind=\"wrap\""]
        ),
        Some(1.0),
        "{lines:#?}"
    );
    assert_eq!(read(&s, true).status, 200);
    s.stop();
}
