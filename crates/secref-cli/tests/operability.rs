//! Operating `secref serve`, through the built binary: Prometheus metrics,
//! health and readiness (flipping when a Vault upstream stops), the
//! tamper-evident audit file and `secref audit verify`, and the spill file
//! when the audit sink is down.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use secref_testkit::cli::{feed_stdin, run, run_ok, stdout, Reply, Sandbox, Served};

const TOKEN: &str = "canary-ops-token-5d4c3b2a1f";
const AUDIT_KEY: &str = "canary-ops-audit-key-0123456789";
const VALUE: &str = "canary-ops-value-77aa";

fn upstream() -> (Sandbox, Served) {
    let sb = Sandbox::new(env!("CARGO_BIN_EXE_secref"));
    run_ok(sb.cmd().arg("init"));
    let o = feed_stdin(
        sb.cmd().args(["set", "local://app/api#token"]),
        VALUE.as_bytes(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = Served::start(&sb, TOKEN, &[]);
    (sb, s)
}

/// A `secref serve` whose Vault mount `secret` reads `upstream` through the
/// `openbao+kv2://` provider, with `extra` config appended.
fn proxy_sandbox(extra: &str) -> Sandbox {
    let sb = Sandbox::new(env!("CARGO_BIN_EXE_secref")).with_env("SECREF_AUDIT_KEY", AUDIT_KEY);
    sb.write(
        "secref.toml",
        &format!(
            "[cache]\nttl_seconds = 300\n[server.vault.mounts.secret]\n\
             backend = \"openbao+kv2://secret/{{path}}\"\n{extra}"
        ),
    );
    sb
}

fn start_proxy(sb: &Sandbox, upstream: &Served) -> Served {
    let mut cmd = sb.cmd();
    cmd.env("SECREF_SERVE_TOKEN", TOKEN)
        .env("VAULT_ADDR", format!("http://{}", upstream.addr()))
        .env("VAULT_TOKEN", TOKEN);
    Served::start_cmd(sb, cmd, &[])
}

fn read(p: &Served) -> Reply {
    p.request(
        "GET",
        "/v1/secret/data/app/api",
        &[("X-Vault-Token", TOKEN)],
        b"",
    )
}

fn get(p: &Served, path: &str, token: Option<&str>) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    p.request("GET", path, &headers, b"")
}

/// One sample of the Prometheus text format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the Prometheus text exposition format (what a scraper accepts):
/// `# HELP` / `# TYPE` lines, then `name{k="v",…} value` samples.
fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let rest = rest.trim_start();
            assert!(
                rest.starts_with("HELP ") || rest.starts_with("TYPE "),
                "bad comment line: {line}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("labels end with }");
                let mut labels = BTreeMap::new();
                for pair in body.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once("=\"").expect("k=\"v\"");
                    labels.insert(k.to_string(), v.trim_end_matches('"').to_string());
                }
                (name.to_string(), labels)
            }
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name {name}"
        );
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

fn sum(samples: &[Sample], name: &str, label: Option<(&str, &str)>) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| label.is_none_or(|(k, v)| s.labels.get(k).map(String::as_str) == Some(v)))
        .map(|s| s.value)
        .sum()
}

#[test]
fn metrics_are_prometheus_text_behind_auth_and_never_name_a_reference() {
    let (_usb, up) = upstream();
    let sb = proxy_sandbox(&format!(
        "[audit]\nsink = \"file\"\npath = \"{}\"\nchain_key_env = \"SECREF_AUDIT_KEY\"\n",
        "audit.jsonl"
    ));
    let p = start_proxy(&sb, &up);
    for _ in 0..3 {
        let r = read(&p);
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json()["data"]["data"]["token"], VALUE);
    }

    // Behind the API's authentication by default.
    let r = get(&p, "/metrics", None);
    assert_eq!(r.status, 401, "{r:?}");
    assert!(!r.body.contains("secref_"), "{r:?}");
    let r = get(&p, "/metrics", Some("wrong-token-wrong-token"));
    assert_eq!(r.status, 401, "{r:?}");

    let r = get(&p, "/metrics", Some(TOKEN));
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let samples = parse_prometheus(&r.body);
    assert!(!samples.is_empty());
    for s in &samples {
        assert!(s.name.starts_with("secref_"), "{s:?}");
        for v in s.labels.values() {
            assert!(!v.contains("app/api") && !v.contains("://"), "{s:?}");
            assert!(!v.contains(VALUE) && !v.contains(TOKEN), "{s:?}");
        }
    }
    // One upstream read, then two cache hits.
    assert!(sum(&samples, "secref_resolves_total", Some(("code", "ok"))) >= 1.0);
    assert!(sum(&samples, "secref_cache_misses_total", None) >= 1.0);
    assert!(sum(&samples, "secref_cache_hits_total", None) >= 2.0);
    assert!(sum(&samples, "secref_backend_latency_seconds_count", None) >= 1.0);
    assert!(samples
        .iter()
        .any(|s| s.name == "secref_backend_latency_seconds_bucket"
            && s.labels.get("le").map(String::as_str) == Some("+Inf")));
    assert!(sum(&samples, "secref_audit_events_emitted_total", None) >= 3.0);
    // This very request's connection is open.
    assert!(sum(&samples, "secref_connections_open", None) >= 1.0);
    let log = p.log();
    p.stop();
    assert!(!log.contains(VALUE) && !log.contains(TOKEN), "{log}");

    // metrics_public = true: no token needed.
    let sb = proxy_sandbox("[server]\nmetrics_public = true\n");
    let p = start_proxy(&sb, &up);
    let r = get(&p, "/metrics", None);
    assert_eq!(r.status, 200, "{r:?}");
    parse_prometheus(&r.body);
    p.stop();
}

#[test]
fn readyz_flips_when_the_vault_upstream_stops_and_tells_details_only_to_callers_with_a_token() {
    let (_usb, up) = upstream();
    let sb = proxy_sandbox("");
    let p = start_proxy(&sb, &up);

    let r = get(&p, "/healthz", None);
    assert_eq!(r.status, 200, "{r:?}");
    let r = get(&p, "/readyz", None);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json(), serde_json::json!({"status": "ready"}));
    let r = get(&p, "/readyz", Some(TOKEN));
    assert_eq!(r.status, 200, "{r:?}");
    let checks = r.json()["checks"].as_array().cloned().unwrap();
    assert!(
        checks
            .iter()
            .any(|c| c["name"].as_str().unwrap().starts_with("provider:")),
        "{r:?}"
    );
    assert!(checks.iter().all(|c| c["ok"] == true), "{r:?}");
    let up_addr = up.addr().to_string();

    up.stop();
    // Readiness answers are cached for a moment: poll, bounded.
    let mut down = None;
    for _ in 0..200 {
        let r = get(&p, "/readyz", Some(TOKEN));
        if r.status == 503 {
            down = Some(r);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let r = down.expect("readyz never reported the stopped upstream");
    assert_eq!(r.json()["status"], "not_ready");
    let failing: Vec<_> = r.json()["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .cloned()
        .collect();
    assert_eq!(failing.len(), 1, "{r:?}");
    assert!(failing[0]["name"]
        .as_str()
        .unwrap()
        .starts_with("provider:"));
    assert!(failing[0]["error_code"].is_string(), "{r:?}");
    assert!(!r.body.contains(&up_addr), "{r:?}");

    // Without a token: the status only.
    let r = get(&p, "/readyz", None);
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.json(), serde_json::json!({"status": "not_ready"}));
    // The process itself is fine.
    assert_eq!(get(&p, "/healthz", None).status, 200);
    p.stop();
}

fn verify(sb: &Sandbox, files: &[PathBuf]) -> (i32, String) {
    let o = run(sb.cmd().args(["audit", "verify"]).args(files));
    (o.status.code().unwrap(), stdout(&o))
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(
        path,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
}

#[test]
fn audit_verify_reports_the_tampered_missing_reordered_or_truncated_record() {
    let (_usb, up) = upstream();
    let sb = proxy_sandbox(
        "[audit]\nsink = \"file\"\npath = \"audit.jsonl\"\nchain_key_env = \"SECREF_AUDIT_KEY\"\n",
    );
    let p = start_proxy(&sb, &up);
    for _ in 0..4 {
        assert_eq!(read(&p).status, 200);
    }
    p.stop();
    // A restart goes on with the same chain.
    let p = start_proxy(&sb, &up);
    assert_eq!(read(&p).status, 200);
    p.stop();

    let audit = sb.path("audit.jsonl");
    let good = lines(&audit);
    assert_eq!(good.len(), 5, "{good:?}");
    for l in &good {
        assert!(!l.contains(VALUE) && !l.contains(TOKEN), "{l}");
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert!(v["seq"].is_u64() && v["mac"].is_string() && v["prev"].is_string());
    }
    let (code, out) = verify(&sb, std::slice::from_ref(&audit));
    assert_eq!((code, out.trim()), (0, "ok: 5 records (seq 1..5)"));

    let broken_at = |edited: Vec<String>| {
        write_lines(&audit, &edited);
        let (code, out) = verify(&sb, std::slice::from_ref(&audit));
        assert_eq!(code, 1, "{out}");
        out
    };
    // An edited record (a hit passed off as a miss).
    let mut edited = good.clone();
    edited[2] = edited[2].replace("\"cached\":true", "\"cached\":false");
    assert_ne!(edited[2], good[2]);
    let out = broken_at(edited);
    assert!(
        out.contains("audit.jsonl:3: record 3:") && out.contains("altered"),
        "{out}"
    );
    // A removed record.
    let mut cut = good.clone();
    cut.remove(1);
    let out = broken_at(cut);
    assert!(
        out.contains(":2: record 2: records 2..2 are missing"),
        "{out}"
    );
    // Two records swapped.
    let mut swapped = good.clone();
    swapped.swap(2, 3);
    let out = broken_at(swapped);
    assert!(
        out.contains(":3: record 3: out of order: record 3 comes later, at line 4"),
        "{out}"
    );
    // A record cut short.
    let mut text = good.iter().map(|l| format!("{l}\n")).collect::<String>();
    text.truncate(text.len() - 20);
    std::fs::write(&audit, text).unwrap();
    let (code, out) = verify(&sb, std::slice::from_ref(&audit));
    assert_eq!(code, 1);
    assert!(
        out.contains(":5: record 5:") && out.contains("truncated"),
        "{out}"
    );
    // The wrong key: nothing verifies.
    write_lines(&audit, &good);
    let o = run(sb
        .cmd()
        .env("SECREF_AUDIT_KEY", "another-key-another-key")
        .args(["audit", "verify"])
        .arg(&audit));
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains(":1: record 1:"), "{}", stdout(&o));
    // No key at all: a usage error, not a verdict.
    let o = run(sb
        .cmd()
        .env_remove("SECREF_AUDIT_KEY")
        .args(["audit", "verify"])
        .arg(&audit));
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn rotated_audit_files_verify_as_one_chain() {
    let (_usb, up) = upstream();
    let sb = proxy_sandbox(
        "[audit]\nsink = \"file\"\npath = \"audit.jsonl\"\nchain_key_env = \"SECREF_AUDIT_KEY\"\nrotate_bytes = 1024\n",
    );
    let p = start_proxy(&sb, &up);
    for _ in 0..12 {
        assert_eq!(read(&p).status, 200);
    }
    p.stop();
    let mut files: Vec<PathBuf> = sb
        .files()
        .into_iter()
        .filter(|f| {
            f.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("audit.jsonl.")
        })
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    let all: Vec<PathBuf> = files
        .iter()
        .cloned()
        .chain([sb.path("audit.jsonl")])
        .collect();
    let (code, out) = verify(&sb, &all);
    assert_eq!((code, out.trim()), (0, "ok: 12 records (seq 1..12)"));
    // The newest file alone continues an older one.
    let (code, out) = verify(&sb, &all[1..]);
    assert_eq!(code, 0, "{out}");
    // A rotated file left out in the middle.
    let gap: Vec<PathBuf> = [all[0].clone()]
        .into_iter()
        .chain(all[2..].iter().cloned())
        .collect();
    let (code, out) = verify(&sb, &gap);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("are missing"), "{out}");
}

#[test]
fn a_down_audit_sink_spills_events_or_fails_reads_closed() {
    let (_usb, up) = upstream();
    // A broker nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);

    // spill (the default): reads go on, events wait in the spill file.
    let sb = proxy_sandbox(&format!(
        "[audit]\nsink = \"kafka\"\nkafka_bootstrap = \"{dead_addr}\"\nspill_path = \"spill.jsonl\"\n"
    ));
    let p = start_proxy(&sb, &up);
    for _ in 0..3 {
        assert_eq!(read(&p).status, 200);
    }
    let spill = sb.path("spill.jsonl");
    let mut spilled = 0.0;
    for _ in 0..600 {
        let samples = parse_prometheus(&get(&p, "/metrics", Some(TOKEN)).body);
        spilled = sum(&samples, "secref_audit_events_spilled_total", None);
        if spilled >= 3.0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(spilled >= 3.0, "events were not spilled: {}", p.log());
    let text = std::fs::read_to_string(&spill).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(!text.contains(VALUE) && !text.contains(TOKEN));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&spill).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "spill file mode {mode:o}");
    }
    let r = get(&p, "/readyz", Some(TOKEN));
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("\"audit\""), "{r:?}");
    p.stop();

    // fail: once the sink is known down, reads are refused (retryable).
    let sb = proxy_sandbox(&format!(
        "[audit]\nsink = \"kafka\"\nkafka_bootstrap = \"{dead_addr}\"\non_sink_failure = \"fail\"\nspill_path = \"spill.jsonl\"\n"
    ));
    let p = start_proxy(&sb, &up);
    let mut refused = None;
    for _ in 0..600 {
        let r = read(&p);
        if r.status != 200 {
            refused = Some(r);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let r = refused.expect("reads were never refused with the sink down");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(!r.body.contains(VALUE), "{r:?}");
    p.stop();
}
