//! `/readyz` of `secref serve` asks each remote provider for a real health
//! check (reachable AND authenticated, by its cheapest call that reads no
//! value): SecFlow (another `secref serve` as the service), Infisical (its
//! double), Coze (a token server) and AWS SM + SSM (moto behind a proxy;
//! skipped without `SECREF_TEST_AWS_ENDPOINT`). Each is reported ready,
//! then not ready once its backend stops, with a typed error code and
//! never a credential in the answer or the log.

use secref_testkit::cli::{Reply, Sandbox, Served};

const TOKEN: &str = "readiness-serve-token-5150";

fn sandbox() -> Sandbox {
    Sandbox::new(env!("CARGO_BIN_EXE_secref"))
}

fn readyz(p: &Served) -> Reply {
    let auth = format!("Bearer {TOKEN}");
    p.request("GET", "/readyz", &[("Authorization", &auth)], b"")
}

/// `Some(error_code)` of the check `provider:<name>` (`None` when ok).
fn check(r: &Reply, name: &str) -> Option<Option<String>> {
    let want = format!("provider:{name}");
    let checks = r.json()["checks"].as_array().cloned().unwrap_or_default();
    let c = checks.iter().find(|c| c["name"] == want.as_str())?;
    Some(match c["ok"].as_bool() {
        Some(true) => None,
        _ => Some(c["error_code"].as_str().unwrap_or("").to_string()),
    })
}

/// Polls (bounded; readiness answers are cached for a moment) until the
/// check of `name` is failing, and returns that answer.
fn until_not_ready(p: &Served, name: &str) -> Reply {
    for _ in 0..200 {
        let r = readyz(p);
        if let Some(Some(_)) = check(&r, name) {
            return r;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("readyz never reported {name} down:\n{}", p.log());
}

/// Starts `secref serve` in `sb`, asserts `provider:<name>` is ready, runs
/// `stop_backend`, asserts it turns not ready with a typed code, and that no
/// string of `secrets` shows in the answers or the log.
fn ready_then_down(sb: &Sandbox, name: &str, secrets: &[&str], stop_backend: impl FnOnce()) {
    let p = Served::start(sb, TOKEN, &[]);
    let r = readyz(&p);
    assert_eq!(r.status, 200, "{r:?}\n{}", p.log());
    assert_eq!(check(&r, name), Some(None), "{r:?}");

    stop_backend();
    let r = until_not_ready(&p, name);
    assert_eq!(r.status, 503, "{r:?}");
    let code = check(&r, name).unwrap().unwrap();
    assert!(
        ["backend_unavailable", "timeout"].contains(&code.as_str()),
        "{name}: {code} {r:?}"
    );
    let log = p.log();
    p.stop();
    for s in secrets {
        assert!(!r.body.contains(s), "{s} in {r:?}");
        assert!(!log.contains(s), "{s} in the log:\n{log}");
    }
}

/// The front server's view of a provider whose credentials are refused:
/// not ready, with an authentication code.
fn refused(sb: &Sandbox, name: &str) -> String {
    let p = Served::start(sb, TOKEN, &[]);
    let r = until_not_ready(&p, name);
    p.stop();
    check(&r, name).unwrap().unwrap()
}

#[test]
fn secflow_is_ready_only_while_its_service_answers_and_takes_the_token() {
    const SDK_TOKEN: &str = "canary-secflow-sdk-token-8812";
    let backend_sb = sandbox();
    let backend = Served::start(&backend_sb, SDK_TOKEN, &[]);
    let url = format!("http://{}", backend.addr());

    let wrong = sandbox()
        .with_env("SECFLOW_BASE_URL", &url)
        .with_env("SECFLOW_SDK_TOKEN", "canary-wrong-token-0000");
    assert_eq!(refused(&wrong, "secflow"), "unauthenticated");

    let sb = sandbox()
        .with_env("SECFLOW_BASE_URL", &url)
        .with_env("SECFLOW_SDK_TOKEN", SDK_TOKEN);
    ready_then_down(&sb, "secflow", &[SDK_TOKEN], move || {
        backend.stop();
    });
}

#[test]
fn infisical_is_ready_only_while_it_answers_and_takes_the_login() {
    use secref_testkit::infisical::{InfisicalDouble, Seed};
    const CLIENT_SECRET: &str = "canary-infisical-csec-3141";
    let rt = tokio::runtime::Runtime::new().unwrap();
    let seed: Seed = serde_json::from_value(serde_json::json!({
        "clients": [{"client_id": "cid", "client_secret": CLIENT_SECRET}],
        "secrets": []
    }))
    .unwrap();
    let d = rt.block_on(InfisicalDouble::start(seed)).unwrap();
    let with = |secret: &str| {
        sandbox()
            .with_env("INFISICAL_URL", &d.url)
            .with_env("INFISICAL_CLIENT_ID", "cid")
            .with_env("INFISICAL_CLIENT_SECRET", secret)
    };
    assert_eq!(
        refused(&with("canary-wrong-secret-0000"), "infisical"),
        "unauthenticated"
    );
    let sb = with(CLIENT_SECRET);
    ready_then_down(&sb, "infisical", &[CLIENT_SECRET], move || {
        drop(d);
        // Its own runtime: shutting it down also cuts kept-alive connections.
        rt.shutdown_background();
    });
}

#[test]
fn coze_is_ready_only_while_a_token_is_obtainable() {
    use secref_testkit::coze::TokenServer;
    const CLIENT_SECRET: &str = "canary-coze-csec-2718";
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = rt
        .block_on(TokenServer::spawn("coze-app", CLIENT_SECRET))
        .unwrap();
    let with = |secret: &str| {
        sandbox()
            .with_env("COZE_WORKLOAD_IDENTITY_CLIENT_ID", "coze-app")
            .with_env("COZE_WORKLOAD_IDENTITY_CLIENT_SECRET", secret)
            .with_env(
                "COZE_WORKLOAD_IDENTITY_TOKEN_ENDPOINT",
                &format!("{}/token", t.url),
            )
            .with_env(
                "COZE_WORKLOAD_ACCESS_TOKEN_ENDPOINT",
                &format!("{}/token", t.url),
            )
    };
    assert_eq!(
        refused(&with("canary-wrong-secret-0000"), "coze"),
        "unauthenticated"
    );
    let sb = with(CLIENT_SECRET);
    ready_then_down(&sb, "coze", &[CLIENT_SECRET], move || {
        drop(t);
        rt.shutdown_background();
    });
}

#[test]
fn aws_sm_and_ssm_are_ready_only_while_the_endpoint_answers_signed_calls() {
    use secref_testkit::aws::{Moto, ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY};
    use secref_testkit::fault::FaultProxy;
    let Some(moto) = Moto::from_env() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let upstream = moto.endpoint().trim_start_matches("http://").to_string();
    let proxy = rt.block_on(FaultProxy::start(&upstream)).unwrap();
    let sb = sandbox();
    let mut cmd = sb.cmd();
    // Nothing of the developer's AWS set-up: exactly the variables the
    // registry says the AWS providers read.
    for v in secref::registry::spec_by_name("aws-sm").unwrap().env_vars {
        cmd.env_remove(v);
    }
    cmd.env("SECREF_SERVE_TOKEN", TOKEN)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
        .env("AWS_REGION", REGION)
        .env("AWS_ENDPOINT_URL", proxy.url());
    let p = Served::start_cmd(&sb, cmd, &[]);
    let r = readyz(&p);
    assert_eq!(r.status, 200, "{r:?}\n{}", p.log());
    for name in ["aws-sm", "aws-ssm"] {
        assert_eq!(check(&r, name), Some(None), "{r:?}");
    }
    drop(proxy);
    rt.shutdown_background();
    let r = until_not_ready(&p, "aws-sm");
    let r = if check(&r, "aws-ssm") == Some(None) {
        until_not_ready(&p, "aws-ssm")
    } else {
        r
    };
    assert_eq!(r.status, 503, "{r:?}");
    for name in ["aws-sm", "aws-ssm"] {
        assert!(matches!(check(&r, name), Some(Some(_))), "{r:?}");
    }
    let log = p.log();
    p.stop();
    assert!(!r.body.contains(SECRET_ACCESS_KEY) && !log.contains(SECRET_ACCESS_KEY));
}
