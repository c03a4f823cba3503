//! Configuration reload of `secref serve`, through the built binary with a
//! real config file: `POST /v1/sys/secref/reload` and SIGHUP swap tokens,
//! rules and mounts; a bad config is refused with its reason and the old
//! one keeps serving; reloads under load fail no request; a request already
//! running finishes on the config it started with; only the server token
//! may reload.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::Duration;

use secref_testkit::cli::{feed_stdin, run_ok, Reply, Sandbox, Served};

const TOKEN: &str = "canary-reload-server-token-9f8e7d";
const CI_OLD: &str = "canary-reload-ci-token-old-1a2b3c";
const CI_NEW: &str = "canary-reload-ci-token-new-4d5e6f";
const VALUE_A: &str = "canary-reload-value-a-1111";
const VALUE_B: &str = "canary-reload-value-b-2222";
const CONFIG_CANARY: &str = "canary-reload-config-secret-3333";

/// A sandbox with a store holding `app/a` and `app/b`, and both CI token
/// files (owner-only).
fn sandbox() -> Sandbox {
    let sb = Sandbox::new(env!("CARGO_BIN_EXE_secref"));
    run_ok(sb.cmd().arg("init"));
    for (r, v) in [("local://app/a#v", VALUE_A), ("local://app/b#v", VALUE_B)] {
        let o = feed_stdin(sb.cmd().args(["set", r]), v.as_bytes());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    for (name, token) in [("ci-old.tok", CI_OLD), ("ci-new.tok", CI_NEW)] {
        let p = sb.write(name, token);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    sb
}

/// Generation 1: token `ci` from `ci-old.tok`; `default` and `ci` may read
/// `app/a` only.
fn config_one() -> String {
    "[server.tokens.ci]\ntoken_file = \"ci-old.tok\"\n\
     [[server.rules]]\nprincipals = [\"default\", \"ci\"]\n\
     refs = [\"openbao+kv2://secret/app/a\"]\nactions = [\"read\"]\n"
        .to_string()
}

/// Generation 2: `ci` rotated to `ci-new.tok`; `app/b` allowed too.
fn config_two() -> String {
    "[server.tokens.ci]\ntoken_file = \"ci-new.tok\"\n\
     [[server.rules]]\nprincipals = [\"default\", \"ci\"]\n\
     refs = [\"openbao+kv2://secret/app/a\", \"openbao+kv2://secret/app/b\"]\n\
     actions = [\"read\"]\n"
        .to_string()
}

fn start(sb: &Sandbox, config: &str) -> Served {
    sb.write("secref.toml", config);
    Served::start(sb, TOKEN, &[])
}

fn read(s: &Served, path: &str, token: &str) -> Reply {
    s.request(
        "GET",
        &format!("/v1/secret/data/{path}"),
        &[("X-Vault-Token", token)],
        b"",
    )
}

fn reload(s: &Served, token: Option<&str>) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    s.request("POST", "/v1/sys/secref/reload", &headers, b"")
}

/// The value of one unlabelled-or-labelled sample in `/metrics`.
fn metric(s: &Served, series: &str) -> Option<f64> {
    s.metrics(TOKEN)
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// What generation 1 allows and refuses.
fn assert_generation_one(s: &Served) {
    let a = read(s, "app/a", TOKEN);
    assert_eq!(a.status, 200, "{a:?}");
    assert!(a.body.contains(VALUE_A));
    assert_eq!(read(s, "app/b", TOKEN).status, 403);
    assert_eq!(read(s, "app/a", CI_OLD).status, 200);
    assert_ne!(read(s, "app/a", CI_NEW).status, 200);
}

/// What generation 2 allows and refuses.
fn assert_generation_two(s: &Served) {
    let b = read(s, "app/b", TOKEN);
    assert_eq!(b.status, 200, "{b:?}");
    assert!(b.body.contains(VALUE_B));
    let old = read(s, "app/a", CI_OLD);
    assert!(
        matches!(old.status, 401 | 403),
        "rotated-out token: {old:?}"
    );
    assert_eq!(read(s, "app/b", CI_NEW).status, 200);
}

#[test]
fn post_reload_swaps_rules_and_tokens() {
    let sb = sandbox();
    let s = start(&sb, &config_one());
    assert_generation_one(&s);
    assert_eq!(metric(&s, "secref_config_generation"), Some(1.0));

    sb.write("secref.toml", &config_two());
    let r = reload(&s, Some(TOKEN));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json(),
        serde_json::json!({"reloaded": true, "generation": 2})
    );
    assert_generation_two(&s);
    assert_eq!(metric(&s, "secref_config_generation"), Some(2.0));
    assert_eq!(
        metric(&s, "secref_config_reloads_total{outcome=\"ok\"}"),
        Some(1.0)
    );
    let log = s.log();
    assert!(log.contains("configuration reloaded"), "{log}");
    for canary in [TOKEN, CI_OLD, CI_NEW, VALUE_A, VALUE_B] {
        assert!(!log.contains(canary), "the log leaks {canary}");
    }
    s.stop();
}

#[test]
fn sighup_reloads_the_config_file() {
    let sb = sandbox();
    let s = start(&sb, &config_one());
    // At once after the address line: SIGHUP is caught from then on (its
    // default action would end the process).
    sb.write("secref.toml", &config_two());
    // SAFETY: signalling our own child process by its id.
    assert_eq!(
        unsafe { libc::kill(s.pid() as libc::pid_t, libc::SIGHUP) },
        0
    );
    let mut reloaded = false;
    for _ in 0..600 {
        if metric(&s, "secref_config_generation") == Some(2.0) {
            reloaded = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(reloaded, "SIGHUP did not reload: {}", s.log());
    assert_generation_two(&s);
    assert!(s.log().contains("SIGHUP"), "{}", s.log());
    // The process is still serving (SIGHUP did not end it).
    assert_eq!(read(&s, "app/a", TOKEN).status, 200);
    s.stop();
}

#[test]
fn a_bad_config_is_refused_with_its_reason_and_the_old_one_stays() {
    let sb = sandbox();
    let s = start(&sb, &config_one());
    let bad = [
        (
            format!("[server\ntoken = \"{CONFIG_CANARY}\"\n"),
            "invalid secref.toml",
        ),
        (
            // `*` only at the end of a pattern.
            config_one().replace("secret/app/a\"", "secret/*/a\""),
            "server",
        ),
        (
            format!(
                "{}[vault]\nno_such_setting = \"{CONFIG_CANARY}\"\n",
                config_one()
            ),
            "no_such_setting",
        ),
        (
            format!(
                "{}[server.vault.mounts.x]\nbackend = \"local://fixed\"\n",
                config_one()
            ),
            "{path}",
        ),
        (
            format!("{}[audit]\nsink = \"stderr\"\n", config_one()),
            "[audit]",
        ),
        (
            // A value of the wrong type: serde quotes it in its message.
            config_one().replace(
                "[server.tokens.ci]",
                &format!("[server]\nlease_ttl_seconds = \"{CONFIG_CANARY}\"\n[server.tokens.ci]"),
            ),
            "expected u64",
        ),
        (
            format!(
                "{}[vault]\nverify_ssl = \"{CONFIG_CANARY}\"\n",
                config_one()
            ),
            "[vault]",
        ),
        (
            config_one().replace(
                "[server.tokens.ci]",
                "[server]\nmax_connections = 7\n[server.tokens.ci]",
            ),
            "max_connections",
        ),
        (
            config_one().replace(
                "[server.tokens.ci]",
                "[server]\nsocket = \"other.sock\"\n[server.tokens.ci]",
            ),
            "socket",
        ),
    ];
    for (i, (config, reason)) in bad.iter().enumerate() {
        sb.write("secref.toml", config);
        let r = reload(&s, Some(TOKEN));
        assert_eq!(r.status, 400, "case {i}: {r:?}");
        let body = r.json();
        assert_eq!(body["code"], "config", "case {i}: {body}");
        assert_eq!(body["reloaded"], false);
        let msg = body["errors"][0].as_str().unwrap();
        assert!(msg.contains(reason), "case {i}: {msg}");
        assert!(
            !r.body.contains(CONFIG_CANARY),
            "case {i} echoes: {}",
            r.body
        );
        assert_generation_one(&s);
    }
    assert_eq!(metric(&s, "secref_config_generation"), Some(1.0));
    assert_eq!(
        metric(&s, "secref_config_reloads_total{outcome=\"error\"}"),
        Some(bad.len() as f64)
    );
    let log = s.log();
    assert_eq!(
        log.matches("configuration reload refused").count(),
        bad.len(),
        "{log}"
    );
    assert!(log.contains("max_connections"), "{log}");
    assert!(!log.contains(CONFIG_CANARY), "{log}");
    // A good config afterwards still reloads.
    sb.write("secref.toml", &config_two());
    assert_eq!(reload(&s, Some(TOKEN)).json()["generation"], 2);
    assert_generation_two(&s);
    s.stop();
}

#[test]
fn only_the_server_token_may_reload() {
    let sb = sandbox();
    let s = start(&sb, &config_one());
    sb.write("secref.toml", &config_two());
    let none = reload(&s, None);
    assert_eq!(none.status, 401, "{none:?}");
    assert_eq!(none.json()["code"], "unauthenticated");
    let wrong = reload(&s, Some("canary-reload-not-a-token-000000"));
    assert_eq!(wrong.status, 401, "{wrong:?}");
    let named = reload(&s, Some(CI_OLD));
    assert_eq!(named.status, 403, "{named:?}");
    assert_eq!(named.json()["code"], "permission_denied");
    // Nothing changed.
    assert_generation_one(&s);
    assert_eq!(metric(&s, "secref_config_generation"), Some(1.0));
    assert!(metric(&s, "secref_config_reloads_total{outcome=\"ok\"}").is_none());
    s.stop();
}

/// A keep-alive HTTP/1.1 client reading `Content-Length` framed answers.
struct KeepAlive {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl KeepAlive {
    fn connect(addr: &str) -> KeepAlive {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        KeepAlive {
            writer: s.try_clone().unwrap(),
            reader: BufReader::new(s),
        }
    }

    /// GET `path`; (status, body).
    fn get(&mut self, path: &str, token: &str) -> (u16, String) {
        write!(
            self.writer,
            "GET {path} HTTP/1.1\r\nHost: x\r\nX-Vault-Token: {token}\r\n\r\n"
        )
        .unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let status: u16 = line
            .split(' ')
            .nth(1)
            .unwrap_or_else(|| panic!("bad status line {line:?}"))
            .parse()
            .unwrap();
        let mut len = None;
        loop {
            line.clear();
            self.reader.read_line(&mut line).unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = Some(v.trim().parse::<usize>().unwrap());
                }
            }
        }
        let mut body = vec![0; len.expect("a Content-Length")];
        self.reader.read_exact(&mut body).unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

#[test]
fn reloads_under_load_fail_no_request() {
    const THREADS: usize = 8;
    const REQUESTS: usize = 150;
    const RELOADS: usize = 20;
    let sb = sandbox();
    let s = start(&sb, &config_one());
    let addr = s.addr().to_string();
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut c = KeepAlive::connect(&addr);
                let mut failures = Vec::new();
                for _ in 0..REQUESTS {
                    // Allowed by both configurations.
                    let (status, body) = c.get("/v1/secret/data/app/a", TOKEN);
                    if status != 200 || !body.contains(VALUE_A) {
                        failures.push(status);
                    }
                }
                failures
            })
        })
        .collect();
    let broken = format!("[server\nx = \"{CONFIG_CANARY}\"\n");
    let mut generation = 1;
    for i in 0..RELOADS {
        let good = i % 2 == 0;
        let config = match (good, i % 4) {
            (false, _) => broken.clone(),
            (true, 0) => config_two(),
            (true, _) => config_one(),
        };
        sb.write("secref.toml", &config);
        let r = reload(&s, Some(TOKEN));
        if good {
            generation += 1;
            assert_eq!(r.status, 200, "reload {i}: {r:?}");
            assert_eq!(r.json()["generation"], generation);
        } else {
            assert_eq!(r.status, 400, "reload {i}: {r:?}");
        }
    }
    for w in workers {
        let failures = w.join().unwrap();
        assert!(
            failures.is_empty(),
            "failed requests: {failures:?}\n{}",
            s.log()
        );
    }
    assert_eq!(
        metric(&s, "secref_config_generation"),
        Some(generation as f64)
    );
    s.stop();
}

/// A Vault double whose reads of a path containing `slow` wait until the
/// test releases them: it says when such a read arrived, and answers it
/// only after a message on `release`.
fn gated_vault() -> (String, mpsc::Receiver<()>, mpsc::Sender<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (arrived_tx, arrived) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut head = String::new();
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                head.push_str(&line);
                line.clear();
            }
            if head.contains("/slow") {
                let _ = arrived_tx.send(());
                if release_rx.recv_timeout(Duration::from_secs(60)).is_err() {
                    return;
                }
            }
            let body = serde_json::json!({"data": {"data": {"v": VALUE_B}, "metadata": {
                "version": 1, "created_time": "2024-01-01T00:00:00Z",
                "deletion_time": "", "destroyed": false}}})
            .to_string();
            let mut conn = conn;
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (addr, arrived, release)
}

#[test]
fn a_request_in_flight_finishes_on_the_config_it_started_with() {
    let (upstream, arrived, release) = gated_vault();
    let sb = sandbox();
    let mounts = "[server.vault.mounts.up]\nbackend = \"openbao+kv2://secret/{path}\"\n\
                  [server.vault.mounts.secret]\nbackend = \"local://{path}\"\n";
    let allow = |refs: &str| {
        format!(
            "{mounts}[[server.rules]]\nprincipals = [\"default\"]\nrefs = [{refs}]\nactions = [\"read\"]\n"
        )
    };
    sb.write(
        "secref.toml",
        &allow("\"openbao+kv2://up/app/*\", \"openbao+kv2://secret/app/a\""),
    );
    let mut cmd = sb.cmd();
    cmd.env("SECREF_SERVE_TOKEN", TOKEN)
        .env("VAULT_ADDR", format!("http://{upstream}"))
        .env("VAULT_TOKEN", "canary-reload-vault-token-5555");
    let s = Served::start_cmd(&sb, cmd, &[]);
    let addr = s.addr().to_string();
    let slow =
        std::thread::spawn(move || KeepAlive::connect(&addr).get("/v1/up/data/app/slow", TOKEN));
    arrived
        .recv_timeout(Duration::from_secs(60))
        .expect("the slow read reached the upstream");
    // The new config no longer allows the mount `up`.
    sb.write("secref.toml", &allow("\"openbao+kv2://secret/app/a\""));
    let r = reload(&s, Some(TOKEN));
    assert_eq!(r.status, 200, "{r:?}");
    let denied = s.request(
        "GET",
        "/v1/up/data/app/slow",
        &[("X-Vault-Token", TOKEN)],
        b"",
    );
    assert_eq!(
        denied.status, 403,
        "a new request sees the new rules: {denied:?}"
    );
    release.send(()).unwrap();
    let (status, body) = slow.join().unwrap();
    assert_eq!(
        status, 200,
        "the request in flight keeps its decision: {body}"
    );
    assert!(body.contains(VALUE_B), "{body}");
    assert_eq!(read(&s, "app/a", TOKEN).status, 200);
    s.stop();
}

#[test]
fn the_server_token_is_kept_when_generated_and_rotated_from_its_file() {
    // Generated at start (no variable, no file): printed once, kept by reloads.
    let sb = sandbox();
    sb.write("secref.toml", &config_one());
    let s = Served::start_cmd(&sb, sb.cmd(), &[]);
    let log = s.log();
    let generated = log
        .split("token (shown once): ")
        .nth(1)
        .and_then(|r| r.lines().next())
        .unwrap_or_else(|| panic!("no generated token: {log}"))
        .trim()
        .to_string();
    let r = reload(&s, Some(&generated));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(read(&s, "app/a", &generated).status, 200);
    assert_eq!(s.log().matches(&generated).count(), 1, "printed once only");
    s.stop();

    // From --token-file: a reload reads the file again (rotation).
    let sb = sandbox();
    sb.write("secref.toml", &config_one());
    let file = sb.path("serve.tok");
    let s = Served::start_cmd(&sb, sb.cmd(), &["--token-file", file.to_str().unwrap()]);
    let old = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert_eq!(read(&s, "app/a", &old).status, 200);
    std::fs::write(&file, TOKEN).unwrap();
    let r = reload(&s, Some(&old));
    assert_eq!(r.status, 200, "{r:?}");
    assert_ne!(
        read(&s, "app/a", &old).status,
        200,
        "the old server token still works"
    );
    assert_eq!(read(&s, "app/a", TOKEN).status, 200);
    s.stop();
}
