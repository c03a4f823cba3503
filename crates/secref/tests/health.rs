//! `Provider::health` of the remote providers: reachable AND authenticated,
//! by the cheapest call that reads no value, with typed errors that carry no
//! credential. Infisical and Coze against their doubles; AWS SM and SSM
//! against moto (skipped without `SECREF_TEST_AWS_ENDPOINT`).

use std::time::Duration;

use secref::config::Env;
use secref::{Config, ErrorCode, Resolver};

fn config(env: &[(&str, &str)]) -> Config {
    let home = std::env::temp_dir().join("secref-health-no-home");
    let mut pairs = vec![("HOME".to_string(), home.display().to_string())];
    pairs.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Config {
        env: Env::from_pairs(pairs),
        ..Config::default()
    }
}

/// The health of provider `name` in a resolver built from `env`; its error
/// must not show any of `secrets`.
async fn health(env: &[(&str, &str)], name: &str, secrets: &[&str]) -> secref::Result<()> {
    let resolver = Resolver::from_config(&config(env)).unwrap();
    let all = resolver.health(Duration::from_secs(10)).await;
    let (_, res) = all
        .into_iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no provider {name}"));
    if let Err(e) = &res {
        let shown = format!("{e} {e:?}");
        for s in secrets {
            assert!(!shown.contains(s), "{s} in {shown}");
        }
    }
    res
}

fn assert_down(res: secref::Result<()>) {
    let e = res.unwrap_err();
    assert!(e.retryable(), "{e:?}");
    assert!(
        matches!(e.code(), ErrorCode::BackendUnavailable | ErrorCode::Timeout),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infisical_health_logs_in_and_makes_one_authenticated_call() {
    use secref_testkit::infisical::{InfisicalDouble, Seed};
    const SECRET: &str = "canary-infisical-health-csec";
    let seed: Seed = serde_json::from_value(serde_json::json!({
        "clients": [{"client_id": "cid", "client_secret": SECRET}],
        "secrets": []
    }))
    .unwrap();
    let d = InfisicalDouble::start(seed).await.unwrap();
    let env = |secret| {
        [
            ("INFISICAL_URL", d.url.clone()),
            ("INFISICAL_CLIENT_ID", "cid".to_string()),
            ("INFISICAL_CLIENT_SECRET", secret),
        ]
    };
    let ok = env(SECRET.to_string());
    let ok: Vec<(&str, &str)> = ok.iter().map(|(k, v)| (*k, v.as_str())).collect();
    health(&ok, "infisical", &[SECRET]).await.unwrap();
    let paths: Vec<String> = d.requests().iter().map(|r| r.path.clone()).collect();
    assert!(paths.iter().any(|p| p.contains("login")), "{paths:?}");
    assert!(
        paths.iter().all(|p| !p.contains("secrets")),
        "a health check reads no secret: {paths:?}"
    );

    let bad = env("canary-wrong-secret".to_string());
    let bad: Vec<(&str, &str)> = bad.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let e = health(&bad, "infisical", &["canary-wrong-secret"])
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unauthenticated, "{e:?}");

    drop(d);
    assert_down(health(&ok, "infisical", &[SECRET]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coze_health_obtains_a_fresh_token() {
    use secref_testkit::coze::TokenServer;
    const SECRET: &str = "canary-coze-health-csec";
    let t = TokenServer::spawn("coze-app", SECRET).await.unwrap();
    let endpoint = format!("{}/token", t.url);
    let env = |secret: &'static str| {
        vec![
            ("COZE_WORKLOAD_IDENTITY_CLIENT_ID", "coze-app".to_string()),
            ("COZE_WORKLOAD_IDENTITY_CLIENT_SECRET", secret.to_string()),
            ("COZE_WORKLOAD_IDENTITY_TOKEN_ENDPOINT", endpoint.clone()),
            ("COZE_WORKLOAD_ACCESS_TOKEN_ENDPOINT", endpoint.clone()),
        ]
    };
    let ok = env(SECRET);
    let ok: Vec<(&str, &str)> = ok.iter().map(|(k, v)| (*k, v.as_str())).collect();
    health(&ok, "coze", &[SECRET]).await.unwrap();

    let bad = env("canary-wrong-secret");
    let bad: Vec<(&str, &str)> = bad.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let e = health(&bad, "coze", &["canary-wrong-secret"])
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unauthenticated, "{e:?}");

    drop(t);
    assert_down(health(&ok, "coze", &[SECRET]).await);
}

#[tokio::test]
async fn aws_health_is_one_signed_call_per_service() {
    use secref_testkit::aws::{Moto, ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY};
    let Some(moto) = Moto::from_env() else { return };
    let env = [
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
        ("AWS_REGION", REGION),
        ("AWS_ENDPOINT_URL", moto.endpoint()),
    ];
    for name in ["aws-sm", "aws-ssm"] {
        health(&env, name, &[SECRET_ACCESS_KEY]).await.unwrap();
    }
    // A closed port: unavailable, retryable.
    let closed = format!("http://{}", secref_testkit::fault::refused_addr());
    let env = [
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
        ("AWS_REGION", REGION),
        ("AWS_ENDPOINT_URL", closed.as_str()),
    ];
    for name in ["aws-sm", "aws-ssm"] {
        assert_down(health(&env, name, &[SECRET_ACCESS_KEY]).await);
    }
}

#[tokio::test]
async fn aws_without_any_set_up_is_ready_and_half_a_set_up_is_not() {
    // Nothing AWS: the always-registered providers have nothing to check.
    for name in ["aws-sm", "aws-ssm"] {
        health(&[], name, &[]).await.unwrap();
    }
    // A region but no credentials: configured wrongly, not ready.
    let e = health(&[("AWS_REGION", "us-east-1")], "aws-sm", &[])
        .await
        .unwrap_err();
    assert!(!e.retryable(), "{e:?}");
}
