//! The one transport, as a user of the `secref` binary sees it: requests to
//! a remote backend (a scripted HTTP server on 127.0.0.1) carry one request
//! id across retries, `Retry-After` is honoured, redirects are not followed
//! (the token stays home), backend messages are bounded, and Vault and
//! SecFlow share the status table.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Output;
use std::sync::{Arc, Mutex};

use secref_testkit::cli::{run, stderr, stdout, Sandbox};

const SECFLOW_TOKEN: &str = "canary-secflow-token-5521";
const VAULT_TOKEN: &str = "canary-vault-token-7730";
const VALUE: &str = "canary-value-3318";

/// One request as the backend received it.
#[derive(Clone, Debug)]
struct Seen {
    /// Request line and headers, header names lower-cased.
    head: String,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim())
        })
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A backend that answers its script, one connection per answer, then
/// stops accepting (bounded: it never waits for more than its script).
struct Backend {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Backend {
    fn start(host: &str, script: Vec<String>) -> Backend {
        let listener = TcpListener::bind((host, 0))
            .or_else(|_| TcpListener::bind(("127.0.0.1", 0)))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for answer in script {
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&match line.split_once(':') {
                        Some((k, v)) => format!("{}:{v}", k.to_ascii_lowercase()),
                        None => line,
                    });
                }
                let seen = Seen {
                    head,
                    body: String::new(),
                };
                let len: usize = seen
                    .header("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                reader.read_exact(&mut body).unwrap();
                log.lock().unwrap().push(Seen {
                    body: String::from_utf8_lossy(&body).into_owned(),
                    ..seen
                });
                let mut stream = stream;
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        Backend { url, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// A raw HTTP/1.1 answer that closes its connection.
fn answer(status: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut s = format!(
        "HTTP/1.1 {status}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    s.push_str("\r\n");
    s.push_str(body);
    s
}

fn secflow_ok() -> String {
    let body = serde_json::json!({"request_id":"srv-1","items":[{"item_id":"item-1","result":"allowed",
        "value":{"encoding":"utf8","data":VALUE},"lease_id":"l1","revision_id":"r1",
        "expires_at":"2999-01-01T00:00:00Z"}]});
    answer("200 OK", &[], &body.to_string())
}

/// A SecFlow 429 asking to wait `retry_after` seconds.
fn slow_down(retry_after: &str) -> String {
    let body = secflow_error("RATE_LIMITED", true, "slow down");
    answer(
        "429 Too Many Requests",
        &[("retry-after", retry_after)],
        &body,
    )
}

fn secflow_error(code: &str, retryable: bool, message: &str) -> String {
    serde_json::json!({"error":{"code":code,"message":message,"retryable":retryable}}).to_string()
}

/// `secref get secret://dev/app/token/db` against `backend`, with a quick
/// retry policy unless `retry` says otherwise.
fn get_secflow(backend: &Backend, retry: &str) -> (Sandbox, Output) {
    let sb = Sandbox::new(env!("CARGO_BIN_EXE_secref"))
        .with_env("SECFLOW_BASE_URL", &backend.url)
        .with_env("SECFLOW_SDK_TOKEN", SECFLOW_TOKEN);
    sb.write("secref.toml", retry);
    let out = run(sb.cmd().args(["get", "secret://dev/app/token/db"]));
    for text in [stdout(&out), stderr(&out)] {
        assert!(!text.contains(SECFLOW_TOKEN), "token leaked: {text}");
    }
    (sb, out)
}

/// Asserts the run failed with `exit` and reported `code`; its stderr.
fn failed_with(out: &Output, exit: i32, code: &str) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(exit), "{err}");
    assert!(err.contains(&format!("error[{code}]")), "{err}");
    assert!(!stdout(out).contains(VALUE));
    err
}

const QUICK_RETRY: &str = "[retry]\nmax_attempts = 3\nbase_delay = 1\nmax_delay = 5\n";

#[test]
fn secflow_retries_resend_one_request_id() {
    let script = vec![
        answer("503 Service Unavailable", &[], ""),
        slow_down("0"),
        secflow_ok(),
    ];
    let backend = Backend::start("127.0.0.1", script);
    let (_sb, out) = get_secflow(&backend, QUICK_RETRY);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim_end(), VALUE);
    let seen = backend.seen();
    assert_eq!(seen.len(), 3, "{seen:?}");
    let first = seen[0].json();
    let id = first["request_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("secref-"), "{id}");
    for s in &seen {
        // The same logical call: the same ids in the body and the header.
        assert_eq!(s.json()["request_id"], first["request_id"]);
        assert_eq!(s.json()["trace_id"], first["trace_id"]);
        assert_eq!(s.header("x-request-id"), Some(id.as_str()));
        assert_eq!(
            s.header("authorization"),
            Some(format!("Bearer {SECFLOW_TOKEN}").as_str())
        );
    }
    // Another run is another call: fresh ids.
    let again = Backend::start("127.0.0.1", vec![secflow_ok()]);
    let (_sb, out) = get_secflow(&again, QUICK_RETRY);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_ne!(again.seen()[0].json()["request_id"], first["request_id"]);
}

#[test]
fn retry_after_past_the_deadline_ends_the_retries() {
    // Were Retry-After ignored, the quick retry would fetch the value.
    let backend = Backend::start("127.0.0.1", vec![slow_down("3600"), secflow_ok()]);
    let (_sb, out) = get_secflow(&backend, QUICK_RETRY);
    failed_with(&out, 5, "rate_limited");
    assert_eq!(backend.seen().len(), 1);
}

#[test]
fn redirects_are_refused_and_the_token_stays_home() {
    let elsewhere = Backend::start("127.0.0.2", vec![secflow_ok()]);
    let location = format!("{}/v1/secrets/resolve:batch", elsewhere.url);
    let backend = Backend::start(
        "127.0.0.1",
        vec![answer(
            "307 Temporary Redirect",
            &[("location", &location)],
            "",
        )],
    );
    let (_sb, out) = get_secflow(&backend, QUICK_RETRY);
    failed_with(&out, 1, "redirect_refused");
    assert_eq!(backend.seen().len(), 1, "a refused redirect is not retried");
    assert!(elsewhere.seen().is_empty(), "the redirect was followed");
}

#[test]
fn backend_messages_are_bounded_and_stripped() {
    let hostile = format!("\u{1b}[31mEVIL{}\nforged: log line", "x".repeat(5000));
    let body = secflow_error("INVALID_REQUEST", false, &hostile);
    let backend = Backend::start("127.0.0.1", vec![answer("400 Bad Request", &[], &body)]);
    let (_sb, out) = get_secflow(&backend, QUICK_RETRY);
    let err = failed_with(&out, 2, "usage");
    assert!(err.contains("[31mEVIL"), "{err}");
    assert!(!err.contains('\u{1b}'), "{err}");
    assert!(!err.contains("forged"), "{err}");
    // At most 200 characters of the message are quoted.
    assert!(err.contains(&"x".repeat(150)), "{err}");
    assert!(!err.contains(&"x".repeat(200)), "{err}");
    assert!(err.len() < 1000, "{} bytes: {err}", err.len());
}

#[test]
fn vault_shares_the_status_table_and_the_request_ids() {
    let data = serde_json::json!({"data":{"data":{"k":VALUE},"metadata":{"version":1,
        "created_time":"2024-01-01T00:00:00Z","deletion_time":"","destroyed":false}}});
    let backend = Backend::start(
        "127.0.0.1",
        vec![
            // A performance standby that has not caught up: retryable.
            answer(
                "412 Precondition Failed",
                &[],
                r#"{"errors":["standby behind"]}"#,
            ),
            answer("200 OK", &[], &data.to_string()),
        ],
    );
    let sb = Sandbox::new(env!("CARGO_BIN_EXE_secref"))
        .with_env("VAULT_ADDR", &backend.url)
        .with_env("VAULT_TOKEN", VAULT_TOKEN);
    sb.write("secref.toml", QUICK_RETRY);
    let out = run(sb.cmd().args(["get", "openbao+kv2://secret/app#k"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim_end(), VALUE);
    assert!(!stderr(&out).contains(VAULT_TOKEN));
    let seen = backend.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let id = seen[0].header("x-request-id").unwrap().to_string();
    assert!(id.starts_with("secref-"), "{id}");
    assert_eq!(seen[1].header("x-request-id"), Some(id.as_str()));
    assert!(seen[0].head.starts_with("GET /v1/secret/data/app "));
}
