//! The fault-injection matrix: every remote provider, through
//! `Resolver::from_config`, reaches its server (real or double) through one
//! loopback [`FaultProxy`], and every fault of the list meets every
//! provider. Each cell checks the typed error code and `retryable` flag, the
//! number of attempts the proxy saw (bounded by `[retry] max_attempts`, so
//! the duration is bounded by the configured timeouts without timing
//! anything), that no cached value is served once its TTL passed (stale
//! grace 0), and — for redirects — that the second server never received a
//! request (so no credential). At the end every captured TRACE log line is
//! searched for every credential and value, and the matrix is written to
//! `target/fault-matrix.md` and printed.
//!
//! Servers: SecFlow and Infisical are the in-process doubles; Vault is the
//! RustyVault of `scripts/test.sh` (`SECREF_TEST_VAULT_*`) or, without it, a
//! small in-test KV v1 double; Coze and its OAuth server need
//! `SECREF_TEST_OAUTH_*`, AWS needs `SECREF_TEST_AWS_ENDPOINT` (moto). A row
//! whose server is absent is printed as "skipped: <reason>", never as a pass.

use std::time::Duration;

use axum::routing::{get, post};
use axum::Json;
use secref::config::Env;
use secref::{Config, ErrorCode, Resolver};
use secref_testkit::capture;
use secref_testkit::fault::{refused_addr, BlackHole, Fault, FaultProxy, Recorder};
use serde_json::{json, Value};

const MAX_ATTEMPTS: usize = 2;
const SECFLOW_TOKEN: &str = "fm-secflow-token-canary-41c7";
const VAULT_DOUBLE_TOKEN: &str = "fm-vault-token-canary-8d02";
const VAULT_DOUBLE_VALUE: &str = "fm-vault-value-canary-77ab";
const INFISICAL_SECRET: &str = "fm-infisical-secret-canary-2b9e";
const COZE_SECRET: &str = "coze-app-secret";

/// One provider under test.
struct Target {
    name: String,
    /// `host:port` of the real server or double.
    upstream: String,
    /// Builds the config pointing the provider at `base` (`http://host:port`).
    config: Box<dyn Fn(&str) -> Config + Send + Sync>,
    refs: Vec<String>,
    values: Vec<String>,
    /// A substring of the paths of the calls that read secrets (the
    /// attempts counted).
    secret_path: String,
    /// Whether a 401 on that call is healed by one new login.
    reauth: bool,
    /// Whether a first read may go through before the fault (tokens are
    /// then cached; the OAuth row is faulted from the first call).
    prime: bool,
    credentials: Vec<String>,
    /// Single reads a batch falls back to when a folder listing is too
    /// large (Infisical reads a too-big folder one reference at a time).
    list_fallback: usize,
    /// Keeps doubles alive.
    _keep: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Want {
    Ok,
    Err(ErrorCode, bool),
}

/// What to do and what to expect.
struct Case {
    name: &'static str,
    want_for: fn(&Target) -> Want,
    /// Attempts per backend call (× calls per batch); `None`: not countable
    /// (no listener to count at).
    per_call: Option<usize>,
}

fn common(retry_extra: &str) -> String {
    format!(
        "[retry]\nmax_attempts = {MAX_ATTEMPTS}\nbase_delay = 10\nmax_delay = 50\ndeadline = 4000\n\
         [cache]\nttl_seconds = 0.3\nstale_grace_seconds = 0\n{retry_extra}"
    )
}

fn config(toml: &str, env: &[(&str, &str)], home: &std::path::Path) -> Config {
    let mut cfg = Config::from_toml_str(toml).expect("config");
    let mut pairs = vec![("HOME".to_string(), home.display().to_string())];
    pairs.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    cfg.env = Env::from_pairs(pairs);
    cfg
}

fn home() -> &'static std::path::Path {
    static HOME: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    HOME.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

async fn secflow() -> Target {
    // The SecFlow Runtime API's resolve answer, value derived from the ref.
    let app = axum::Router::new().route(
        "/v1/secrets/resolve:batch",
        post(|Json(body): Json<Value>| async move {
            let items: Vec<Value> = body["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|i| {
                    let r = i["secret_ref"].as_str().unwrap_or_default();
                    let name = r.rsplit('/').next().unwrap_or_default();
                    json!({"item_id": i["item_id"], "result": "allowed",
                           "value": {"encoding": "utf8", "data": format!("fm-secflow-value-{name}")},
                           "lease_id": format!("lease-{name}"), "revision_id": "r1"})
                })
                .collect();
            Json(json!({"request_id": body["request_id"], "items": items}))
        }),
    );
    let upstream = serve(app).await;
    Target {
        name: "SecFlow (double)".into(),
        upstream,
        config: Box::new(|base| {
            config(
                &common(""),
                &[
                    ("SECFLOW_BASE_URL", base),
                    ("SECFLOW_SDK_TOKEN", SECFLOW_TOKEN),
                    ("SECFLOW_TIMEOUT_SECONDS", "1"),
                ],
                home(),
            )
        }),
        refs: vec![
            "secret://dev/app/password/db".into(),
            "secret://dev/app/token/api".into(),
        ],
        values: vec!["fm-secflow-value-db".into(), "fm-secflow-value-api".into()],
        secret_path: "resolve".into(),
        reauth: false,
        prime: true,
        credentials: vec![SECFLOW_TOKEN.into()],
        list_fallback: 0,
        _keep: vec![],
    }
}

async fn vault() -> Target {
    let real = match (
        std::env::var("SECREF_TEST_VAULT_ADDR"),
        std::env::var("SECREF_TEST_VAULT_TOKEN"),
    ) {
        (Ok(a), Ok(t)) if !a.is_empty() && !t.is_empty() => Some((a, t)),
        _ => None,
    };
    let (name, upstream, token, value) = match real {
        // Seeded by scripts/test.sh: KV v1 `secret/myapp/api`.
        Some((addr, token)) => (
            "Vault (RustyVault)",
            addr.trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string(),
            token,
            "rv-canary-value-5e11".to_string(),
        ),
        None => {
            let app = axum::Router::new().route(
                "/v1/secret/myapp/api",
                get(|| async {
                    Json(
                        json!({"request_id": "r", "lease_id": "", "renewable": false,
                        "lease_duration": 0, "data": {"token": VAULT_DOUBLE_VALUE, "user": "app"},
                        "wrap_info": null, "warnings": null, "auth": null}),
                    )
                }),
            );
            (
                "Vault (in-test double; RustyVault absent)",
                serve(app).await,
                VAULT_DOUBLE_TOKEN.to_string(),
                VAULT_DOUBLE_VALUE.to_string(),
            )
        }
    };
    let tok = token.clone();
    Target {
        name: name.into(),
        upstream,
        config: Box::new(move |base| {
            config(
                &common(""),
                &[
                    ("VAULT_ADDR", base),
                    ("VAULT_TOKEN", &tok),
                    ("VAULT_TIMEOUT", "1"),
                ],
                home(),
            )
        }),
        refs: vec!["openbao://secret/myapp/api#token".into()],
        values: vec![value],
        secret_path: "/secret/myapp/api".into(),
        reauth: false,
        prime: true,
        credentials: vec![token],
        list_fallback: 0,
        _keep: vec![],
    }
}

async fn infisical() -> Target {
    use secref_testkit::infisical::{InfisicalDouble, Seed};
    let seed: Seed = serde_json::from_value(json!({
        "token_ttl_seconds": 600,
        "clients": [{"client_id": "fm-cid", "client_secret": INFISICAL_SECRET}],
        "secrets": [
            {"project": "proj-1", "environment": "dev", "path": "/app", "key": "DB_PASS",
             "values": ["fm-infisical-db-canary-0a1b"]},
            {"project": "proj-1", "environment": "dev", "path": "/app", "key": "API_KEY",
             "values": ["fm-infisical-api-canary-9c8d"]}
        ]
    }))
    .unwrap();
    let d = InfisicalDouble::start(seed).await.unwrap();
    let upstream = d.url.trim_start_matches("http://").to_string();
    Target {
        name: "Infisical (double)".into(),
        upstream,
        config: Box::new(|base| {
            config(
                &common("[infisical]\ntimeout_seconds = 1\n"),
                &[
                    ("INFISICAL_URL", base),
                    ("INFISICAL_CLIENT_ID", "fm-cid"),
                    ("INFISICAL_CLIENT_SECRET", INFISICAL_SECRET),
                ],
                home(),
            )
        }),
        refs: vec![
            "infisical://proj-1/dev/app/DB_PASS".into(),
            "infisical://proj-1/dev/app/API_KEY".into(),
        ],
        values: vec![
            "fm-infisical-db-canary-0a1b".into(),
            "fm-infisical-api-canary-9c8d".into(),
        ],
        secret_path: "/api/v3/secrets".into(),
        reauth: true,
        prime: true,
        credentials: vec![INFISICAL_SECRET.into()],
        list_fallback: 2,
        _keep: vec![Box::new(d)],
    }
}

/// `(host:port, path prefix)` of a URL.
fn split_url(url: &str) -> (String, String) {
    let u = reqwest::Url::parse(url).expect("url");
    (
        format!(
            "{}:{}",
            u.host_str().unwrap(),
            u.port_or_known_default().unwrap()
        ),
        u.path().trim_end_matches('/').to_string(),
    )
}

/// Coze through its outbound endpoint (`oauth = false`) or its OAuth
/// client-credentials endpoint (`oauth = true`).
async fn coze(oauth: bool) -> Result<Target, String> {
    use secref_testkit::coze::{CozeDouble, Seed};
    let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (Some(idp), Some(sts)) = (get("SECREF_TEST_OAUTH_IDP"), get("SECREF_TEST_OAUTH_STS"))
    else {
        return Err(
            "SECREF_TEST_OAUTH_IDP/_STS are not set (scripts/test.sh starts oidc-provider)".into(),
        );
    };
    let seed = Seed {
        integrations: [("github".to_string(), "fm-coze-cred-canary-5d4e".to_string())].into(),
        ..Seed::default()
    };
    let d = CozeDouble::spawn(&sts, seed).await.unwrap();
    let (upstream, prefix) = if oauth {
        split_url(&idp)
    } else {
        split_url(&d.url)
    };
    let lane = format!("fault-matrix-{}-{oauth}", std::process::id());
    let (idp2, sts2, out) = (idp.clone(), sts.clone(), d.url.clone());
    Ok(Target {
        name: if oauth {
            "OAuth server (oidc-provider, via Coze)"
        } else {
            "Coze (double + oidc-provider)"
        }
        .into(),
        upstream,
        config: Box::new(move |base| {
            let (token_ep, out_ep) = if oauth {
                (format!("{base}{prefix}/token"), format!("{out}/"))
            } else {
                (format!("{idp2}/token"), format!("{base}{prefix}/"))
            };
            config(
                &common(""),
                &[
                    ("COZE_WORKLOAD_IDENTITY_CLIENT_ID", "coze-app"),
                    ("COZE_WORKLOAD_IDENTITY_CLIENT_SECRET", COZE_SECRET),
                    ("COZE_WORKLOAD_IDENTITY_TOKEN_ENDPOINT", &token_ep),
                    (
                        "COZE_WORKLOAD_ACCESS_TOKEN_ENDPOINT",
                        &format!("{sts2}/token"),
                    ),
                    ("COZE_OUTBOUND_AUTH_ENDPOINT", &out_ep),
                    ("COZE_SERVER_ENV", &lane),
                    ("SECREF_COZE_TIMEOUT_SECONDS", "1"),
                ],
                home(),
            )
        }),
        refs: vec!["coze+credential://github".into()],
        values: vec!["fm-coze-cred-canary-5d4e".into()],
        secret_path: if oauth { "/token" } else { "/integration" }.into(),
        reauth: !oauth,
        prime: !oauth,
        credentials: vec![COZE_SECRET.into()],
        list_fallback: 0,
        _keep: vec![Box::new(d)],
    })
}

async fn aws() -> Result<Target, String> {
    use secref_testkit::aws::{Moto, ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY};
    let Some(moto) = Moto::from_env() else {
        return Err("SECREF_TEST_AWS_ENDPOINT is not set (scripts/test.sh starts moto)".into());
    };
    let name = Moto::unique("fault-matrix");
    let value = "fm-aws-value-canary-3e7f".to_string();
    moto.create_string(&name, &value);
    let (upstream, _) = split_url(moto.endpoint());
    Ok(Target {
        name: "AWS Secrets Manager (moto)".into(),
        upstream,
        config: Box::new(|base| {
            config(
                &common(&format!(
                    "[aws]\nendpoint_url = \"{base}\"\nregion = \"{REGION}\"\ntimeout_seconds = 1\n"
                )),
                &[
                    ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID),
                    ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
                ],
                home(),
            )
        }),
        refs: vec![format!("aws-sm://{name}")],
        values: vec![value],
        secret_path: "/".into(),
        reauth: false,
        prime: true,
        credentials: vec![SECRET_ACCESS_KEY.into()],
        list_fallback: 0,
        _keep: vec![],
    })
}

fn retryable(code: ErrorCode) -> fn(&Target) -> Want {
    match code {
        ErrorCode::Timeout => |_| Want::Err(ErrorCode::Timeout, true),
        ErrorCode::BackendUnavailable => |_| Want::Err(ErrorCode::BackendUnavailable, true),
        ErrorCode::RateLimited => |_| Want::Err(ErrorCode::RateLimited, true),
        _ => unreachable!(),
    }
}

fn cases() -> Vec<(Case, Fault)> {
    let c = |name, want_for, per_call| Case {
        name,
        want_for,
        per_call,
    };
    let invalid: fn(&Target) -> Want = |_| Want::Err(ErrorCode::InvalidResponse, false);
    let too_large: fn(&Target) -> Want = |_| Want::Err(ErrorCode::TooLarge, false);
    let redirect: fn(&Target) -> Want = |_| Want::Err(ErrorCode::RedirectRefused, false);
    vec![
        (c("pass", |_| Want::Ok, Some(1)), Fault::Pass),
        (
            c(
                "slow headers",
                retryable(ErrorCode::Timeout),
                Some(MAX_ATTEMPTS),
            ),
            Fault::SlowHeaders,
        ),
        (
            c(
                "slow body (1 byte/s)",
                retryable(ErrorCode::Timeout),
                Some(MAX_ATTEMPTS),
            ),
            Fault::SlowBody,
        ),
        (
            c(
                "503",
                retryable(ErrorCode::BackendUnavailable),
                Some(MAX_ATTEMPTS),
            ),
            Fault::Status(503),
        ),
        (
            c(
                "429 Retry-After: 1",
                retryable(ErrorCode::RateLimited),
                Some(MAX_ATTEMPTS),
            ),
            Fault::RateLimited {
                retry_after_secs: 1,
            },
        ),
        (
            c(
                "reset mid-body",
                retryable(ErrorCode::BackendUnavailable),
                Some(MAX_ATTEMPTS),
            ),
            Fault::ResetMidBody,
        ),
        (c("truncated JSON", invalid, Some(1)), Fault::TruncatedJson),
        (
            c("10 MB body", too_large, Some(1)),
            Fault::HugeBody(10 << 20),
        ),
        (c("invalid UTF-8", invalid, Some(1)), Fault::InvalidUtf8),
        (
            c("redirect: other host", redirect, Some(1)),
            Fault::Redirect("host".into()),
        ),
        (
            c("redirect: other port", redirect, Some(1)),
            Fault::Redirect("port".into()),
        ),
        (
            c(
                "token expires mid-batch (401)",
                |t| {
                    if t.reauth {
                        Want::Ok
                    } else {
                        Want::Err(ErrorCode::Unauthenticated, false)
                    }
                },
                Some(1),
            ),
            Fault::Unauthorized {
                path: String::new(),
                times: 1,
            },
        ),
        (
            c(
                "connection refused",
                retryable(ErrorCode::BackendUnavailable),
                None,
            ),
            Fault::Pass,
        ),
        (
            c("connect timeout", retryable(ErrorCode::Timeout), None),
            Fault::Pass,
        ),
        (
            c(
                "plain http, non-loopback",
                |_| Want::Err(ErrorCode::Config, false),
                None,
            ),
            Fault::Pass,
        ),
    ]
}

/// One cell's outcome, for the table and the final assertion.
struct Cell {
    target: String,
    case: &'static str,
    want: Want,
    got: Want,
    attempts: String,
    problems: Vec<String>,
}

async fn resolve(t: &Target, base: &str) -> Result<Vec<String>, secref::Error> {
    let resolver = Resolver::from_config(&(t.config)(base))?;
    batch(&resolver, t).await
}

async fn batch(resolver: &Resolver, t: &Target) -> Result<Vec<String>, secref::Error> {
    let got = resolver.resolve_many(t.refs.iter()).await?;
    Ok(t.refs
        .iter()
        .map(|r| {
            let key = secref::SecretRef::parse(r).unwrap();
            String::from_utf8_lossy(got[&key].expose_bytes()).into_owned()
        })
        .collect())
}

fn outcome(r: &Result<Vec<String>, secref::Error>) -> Want {
    match r {
        Ok(_) => Want::Ok,
        Err(e) => Want::Err(e.code(), e.retryable()),
    }
}

async fn run_cell(t: &Target, proxy: &FaultProxy, case: &Case, mut fault: Fault) -> Cell {
    let want = (case.want_for)(t);
    let mut problems = Vec::new();
    let mut attempts = "—".to_string();
    let count = |p: &FaultProxy| {
        p.seen()
            .iter()
            .filter(|s| s.path.contains(&t.secret_path))
            .count()
    };
    let got = match case.name {
        "connection refused" => outcome(&resolve(t, &format!("http://{}", refused_addr())).await),
        "connect timeout" => {
            let hole = BlackHole::start().await.unwrap();
            outcome(&resolve(t, &format!("http://{}", hole.addr())).await)
        }
        "plain http, non-loopback" => {
            proxy.set(Fault::Pass);
            let port = proxy.addr().port();
            let got = outcome(&resolve(t, &format!("http://fault-matrix.invalid:{port}")).await);
            attempts = proxy.attempts().to_string();
            if proxy.attempts() != 0 {
                problems.push(format!("{} attempts reached the proxy", proxy.attempts()));
            }
            got
        }
        _ => {
            let recorder = match &fault {
                Fault::Redirect(kind) => {
                    let ip = if kind == "host" {
                        "127.0.0.2"
                    } else {
                        "127.0.0.1"
                    };
                    let r = Recorder::start(ip).await.unwrap();
                    fault = Fault::Redirect(r.url());
                    Some(r)
                }
                _ => None,
            };
            if let Fault::Unauthorized { path, .. } = &mut fault {
                *path = t.secret_path.clone();
            }
            let resolver = match Resolver::from_config(&(t.config)(&proxy.url())) {
                Ok(r) => r,
                Err(e) => {
                    problems.push(format!("config refused: {}", e.code().as_str()));
                    return Cell {
                        target: t.name.clone(),
                        case: case.name,
                        want,
                        got: outcome(&Err(e)),
                        attempts,
                        problems,
                    };
                }
            };
            // Calls per batch, measured on a clean read; the read also
            // fills the cache, which must not answer once the TTL passed.
            let mut calls = 1;
            if t.prime {
                proxy.set(Fault::Pass);
                match batch(&resolver, t).await {
                    Ok(v) if v == t.values => {}
                    Ok(_) => problems.push("prime read returned other values".into()),
                    Err(e) => problems.push(format!("prime read failed: {}", e.code().as_str())),
                }
                calls = count(proxy).max(1);
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
            let fault_kind = fault.clone();
            proxy.set(fault);
            let result = batch(&resolver, t).await;
            if let Ok(values) = &result {
                if values != &t.values {
                    problems.push("values differ from the server's".into());
                }
            }
            let n = count(proxy);
            attempts = n.to_string();
            if let Some(per) = case.per_call {
                // A refused token costs the call one more request after
                // the new login.
                let healed = matches!(fault_kind, Fault::Unauthorized { .. }) && t.reauth;
                let fallback = if matches!(fault_kind, Fault::HugeBody(_)) {
                    t.list_fallback
                } else {
                    0
                };
                let expected = per * calls + usize::from(healed) + fallback;
                if n != expected {
                    problems.push(format!("{n} attempts, expected {expected}"));
                }
            }
            if n > MAX_ATTEMPTS * calls + t.list_fallback {
                problems.push(format!("{n} attempts exceed max_attempts"));
            }
            if let Some(r) = recorder {
                if !r.requests().is_empty() {
                    problems.push(format!(
                        "the redirect target received {} request(s)",
                        r.requests().len()
                    ));
                }
            }
            outcome(&result)
        }
    };
    if got != want {
        problems.push(format!("got {got:?}, expected {want:?}"));
    }
    Cell {
        target: t.name.clone(),
        case: case.name,
        want,
        got,
        attempts,
        problems,
    }
}

fn show(w: Want) -> String {
    match w {
        Want::Ok => "ok".into(),
        Want::Err(c, r) => format!("{} ({})", c.as_str(), if r { "retryable" } else { "final" }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_remote_provider_meets_every_fault() {
    let logs = capture::install();
    let mut rows: Vec<Result<Target, (String, String)>> = vec![
        Ok(secflow().await),
        Ok(vault().await),
        Ok(infisical().await),
    ];
    rows.push(coze(false).await.map_err(|e| ("Coze".to_string(), e)));
    rows.push(
        coze(true)
            .await
            .map_err(|e| ("OAuth server (via Coze)".to_string(), e)),
    );
    rows.push(
        aws()
            .await
            .map_err(|e| ("AWS Secrets Manager".to_string(), e)),
    );

    let mut cells = Vec::new();
    let mut skipped = Vec::new();
    let mut secrets = Vec::new();
    for row in &rows {
        let t = match row {
            Ok(t) => t,
            Err((name, why)) => {
                skipped.push((name.clone(), why.clone()));
                continue;
            }
        };
        secrets.extend(t.credentials.iter().cloned());
        secrets.extend(t.values.iter().cloned());
        let proxy = FaultProxy::start(&t.upstream).await.unwrap();
        for (case, fault) in cases() {
            cells.push(run_cell(t, &proxy, &case, fault).await);
        }
    }

    let mut table = String::from(
        "# Fault-injection matrix\n\n| provider | fault | expected | got | attempts | verdict |\n|---|---|---|---|---|---|\n",
    );
    for c in &cells {
        let verdict = if c.problems.is_empty() {
            "pass".to_string()
        } else {
            format!("FAIL: {}", c.problems.join("; "))
        };
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            c.target,
            c.case,
            show(c.want),
            show(c.got),
            c.attempts,
            verdict
        ));
    }
    for (name, why) in &skipped {
        table.push_str(&format!(
            "| {name} | (every fault) | | | | skipped: {why} |\n"
        ));
    }
    table.push_str(&format!(
        "\n`[retry] max_attempts = {MAX_ATTEMPTS}`, per-request timeout 1 s, cache TTL 0.3 s, stale grace 0. \
         Attempts are requests to the reading endpoint (— where no listener can count them). \
         Injected 429/5xx bodies carry `\"retryable\": true` as SecFlow servers must (its SDK treats a missing flag as final).\n"
    ));
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("fault-matrix.md");
    std::fs::write(&out, &table).unwrap();
    println!("{table}\n(written to {})", out.display());

    let text = logs.text();
    for s in &secrets {
        capture::assert_no_canary(&text, s);
    }
    let failed: Vec<_> = cells.iter().filter(|c| !c.problems.is_empty()).collect();
    assert!(
        failed.is_empty(),
        "{} cell(s) failed; see the table above / {}",
        failed.len(),
        out.display()
    );
}
