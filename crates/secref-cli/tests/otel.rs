//! OpenTelemetry export through the built binary: `secref serve` and a
//! one-shot `secref get` send their spans over OTLP/HTTP (protobuf) to the
//! receiver `scripts/test.sh` starts (`tests/otlp_receiver.py`, built on the
//! official OTLP proto definitions); the spans carry the expected names and
//! attributes and no value, token or reference path.
//!
//! Needs `SECREF_TEST_OTLP_ENDPOINT` and `SECREF_TEST_OTLP_SPANS` (skipped
//! with a printed reason without them).

use secref_testkit::cli::{feed_stdin, run, run_ok, secflow_batch, stdout, Sandbox, Served};
use serde_json::Value;

const TOKEN: &str = "canary-otel-token-9e8d7c6b5a";
const VALUE: &str = "canary-otel-value-31f4";
/// In every reference path used: a path must not be exported either.
const PATH_CANARY: &str = "pathcanary-c0ffee";

struct Receiver {
    endpoint: String,
    spans: String,
}

fn receiver() -> Option<Receiver> {
    match (
        std::env::var("SECREF_TEST_OTLP_ENDPOINT"),
        std::env::var("SECREF_TEST_OTLP_SPANS"),
    ) {
        (Ok(endpoint), Ok(spans)) => Some(Receiver { endpoint, spans }),
        _ => {
            eprintln!(
                "skipped: SECREF_TEST_OTLP_ENDPOINT / SECREF_TEST_OTLP_SPANS unset (scripts/test.sh starts the OTLP receiver)"
            );
            None
        }
    }
}

impl Receiver {
    /// The spans `service` exported (the receiver's file is shared).
    fn spans_of(&self, service: &str) -> Vec<Value> {
        std::fs::read_to_string(&self.spans)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|s| s["service_name"] == service)
            .collect()
    }

    /// Every byte any exporter sent so far.
    fn raw(&self) -> Vec<u8> {
        std::fs::read(format!("{}.raw", self.spans)).unwrap_or_default()
    }
}

/// A service name no other test (or run) uses.
fn service(test: &str) -> String {
    format!(
        "secref-test-{test}-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    )
}

fn sandbox(rx: &Receiver, service: &str) -> Sandbox {
    let sb = Sandbox::new(env!("CARGO_BIN_EXE_secref"))
        .with_env("OTEL_EXPORTER_OTLP_ENDPOINT", &rx.endpoint)
        .with_env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .with_env("OTEL_SERVICE_NAME", service);
    run_ok(sb.cmd().arg("init"));
    let o = feed_stdin(
        sb.cmd()
            .args(["set", &format!("local://{PATH_CANARY}/api#token")]),
        VALUE.as_bytes(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    sb
}

fn named<'a>(spans: &'a [Value], name: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["name"] == name).collect()
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    &span["attributes"][key]
}

fn assert_no_canary(raw: &[u8]) {
    assert!(!raw.is_empty(), "the receiver got nothing");
    for canary in [VALUE, TOKEN, PATH_CANARY] {
        assert!(
            !raw.windows(canary.len()).any(|w| w == canary.as_bytes()),
            "{canary} was exported"
        );
    }
}

#[test]
fn serve_exports_request_resolve_provider_and_policy_spans_without_secrets() {
    let Some(rx) = receiver() else { return };
    let svc = service("serve");
    let sb = sandbox(&rx, &svc);
    let served = Served::start(&sb, TOKEN, &[]);
    let good = format!("local://{PATH_CANARY}/api#token");
    let missing = format!("local://{PATH_CANARY}/missing#token");

    // SecFlow: one delivered, one not found, one denied (env:// needs a rule).
    let (status, body) = served.post(
        "/v1/secrets/resolve:batch",
        TOKEN,
        &secflow_batch(
            "otel",
            "secret.runtime_resolve",
            &[&good, &missing, "env://HOME"],
        ),
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["items"][0]["value"]["data"], VALUE, "{body}");
    assert_eq!(
        v["items"][2]["error"]["code"], "PERMISSION_DENIED",
        "{body}"
    );
    // Vault: a read and a failing read.
    let vault = |path: &str| {
        served.request(
            "GET",
            &format!("/v1/secret/data/{PATH_CANARY}/{path}"),
            &[("X-Vault-Token", TOKEN)],
            b"",
        )
    };
    let ok = vault("api");
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(ok.body.contains(VALUE));
    assert_eq!(vault("missing").status, 404);
    // A request without the token.
    let (status, _) = served.post(
        "/v1/secrets/resolve:batch",
        "wrong",
        &secflow_batch("otel", "secret.runtime_resolve", &[&good]),
    );
    assert_eq!(status, 401);

    // Graceful stop flushes the queued spans before the process exits.
    assert!(served.stop().success());
    let spans = rx.spans_of(&svc);
    assert!(!spans.is_empty(), "no span of {svc} arrived");
    let names: Vec<&str> = spans.iter().filter_map(|s| s["name"].as_str()).collect();

    let requests = named(&spans, "secref.http_request");
    let seen = |route_has: &str, status: i64| {
        requests.iter().any(|s| {
            attr(s, "http.route")
                .as_str()
                .is_some_and(|r| r.contains(route_has))
                && attr(s, "http.response.status_code") == status
                && attr(s, "http.request.method").is_string()
        })
    };
    assert!(seen("/v1/secrets/resolve:batch", 200), "{requests:?}");
    assert!(seen("/v1/secrets/resolve:batch", 401), "{requests:?}");
    assert!(seen("/v1/", 404), "the failed Vault read: {requests:?}");
    // Route templates only, never the path a client asked for.
    assert!(requests.iter().all(|s| s["kind"] == 2), "server spans");

    let calls = named(&spans, "secref.provider_call");
    // The batch's two local items went in one call: its outcome is the
    // first failure's code.
    assert!(
        calls
            .iter()
            .any(|s| attr(s, "provider") == "local" && attr(s, "outcome") == "not_found"),
        "{calls:?}"
    );

    let policy = named(&spans, "secref.policy");
    assert!(
        policy
            .iter()
            .any(|s| attr(s, "effect") == "deny" && attr(s, "decision_id") == "default-deny"),
        "the env:// denial: {policy:?}"
    );
    assert!(
        policy
            .iter()
            .any(|s| attr(s, "effect") == "allow" && attr(s, "decision_id") == "no-rules"),
        "{policy:?}"
    );
    assert!(
        spans
            .iter()
            .all(|s| s["resource"]["service.name"] == svc.as_str()),
        "{names:?}"
    );
    assert_no_canary(&rx.raw());
}

#[test]
fn a_one_shot_get_exports_its_spans_before_exiting() {
    let Some(rx) = receiver() else { return };
    let svc = service("get");
    let sb = sandbox(&rx, &svc).with_env("OTEL_EXPORTER_OTLP_HEADERS", "x-secref-test=get-marker");
    let o = run_ok(
        sb.cmd()
            .args(["get", &format!("local://{PATH_CANARY}/api#token")]),
    );
    assert_eq!(stdout(&o).trim_end(), VALUE);
    // A failing read exports its outcome code too.
    let o = run(sb
        .cmd()
        .args(["get", &format!("local://{PATH_CANARY}/nope#token")]));
    assert_eq!(o.status.code(), Some(3));

    let spans = rx.spans_of(&svc);
    let resolves = named(&spans, "secref.resolve");
    let with = |outcome: &str| {
        resolves.iter().any(|s| {
            attr(s, "scheme") == "local"
                && attr(s, "provider") == "local"
                && attr(s, "outcome") == outcome
                && attr(s, "cache").is_string()
        })
    };
    assert!(with("ok"), "{spans:?}");
    assert!(with("not_found"), "{spans:?}");
    assert!(
        resolves
            .iter()
            .any(|s| s["status"]["code"] == 2 && attr(s, "outcome") == "not_found"),
        "a failed read is an error span: {resolves:?}"
    );
    assert!(spans.iter().all(|s| s["scope"] == "secref"));
    // OTEL_EXPORTER_OTLP_HEADERS reached the collector.
    assert!(
        spans.iter().all(|s| s["x_secref_test"] == "get-marker"),
        "{spans:?}"
    );
    assert_no_canary(&rx.raw());
}

/// A collector that is down costs nothing but the lost spans: the read
/// succeeds and prints the same value, and the collector's credentials
/// (`OTEL_EXPORTER_OTLP_HEADERS`) appear in no output, even at trace level.
#[test]
fn a_dead_collector_never_fails_a_read() {
    const HEADER: &str = "canary-otel-header-4b5c6d";
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let sb = Sandbox::new(env!("CARGO_BIN_EXE_secref"))
        .with_env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            &format!("http://127.0.0.1:{port}"),
        )
        .with_env("OTEL_SERVICE_NAME", "secref-test-dead-collector")
        .with_env(
            "OTEL_EXPORTER_OTLP_HEADERS",
            &format!("authorization=Bearer%20{HEADER}"),
        );
    run_ok(sb.cmd().arg("init"));
    let o = feed_stdin(sb.cmd().args(["set", "local://app/x#k"]), VALUE.as_bytes());
    assert!(o.status.success());
    let o = run_ok(sb.cmd().args(["-vvv", "get", "local://app/x#k"]));
    assert_eq!(stdout(&o).trim_end(), VALUE);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains(VALUE), "{err}");
    assert!(!err.contains(HEADER), "{err}");
}

/// `OTEL_SDK_DISABLED=true` wins over an endpoint: nothing is sent.
#[test]
fn otel_sdk_disabled_sends_nothing() {
    let Some(rx) = receiver() else { return };
    let svc = service("disabled");
    let sb = sandbox(&rx, &svc).with_env("OTEL_SDK_DISABLED", "true");
    run_ok(
        sb.cmd()
            .args(["get", &format!("local://{PATH_CANARY}/api#token")]),
    );
    // `init` and `set` above ran with the exporter on; the get did not.
    let after = rx.spans_of(&svc);
    assert!(named(&after, "secref.resolve").is_empty(), "{after:?}");
}
