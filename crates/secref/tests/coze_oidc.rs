#![cfg(feature = "coze")]
//! The Coze provider against a real OAuth2 server (oidc-provider, started by
//! `scripts/test.sh`, section "oidc-provider"; see `tests/oauth/server.mjs`)
//! and the outbound double of `secref-testkit`, which accepts only access
//! tokens that verify against the OAuth server's JWKS.
//!
//! `scripts/test.sh` exports `SECREF_TEST_OAUTH_IDP` (client credentials)
//! and `SECREF_TEST_OAUTH_STS` (token exchange). Without them every test
//! prints why it is skipped and passes, so a bare `cargo test` works.
//!
//! Token-endpoint calls are counted by the OAuth server per `x-tt-env` lane
//! (`GET <idp>/_test/stats?lane=…`), so every test uses its own lane.

use std::collections::BTreeMap;
use std::sync::Arc;

use secref::config::Env;
use secref::providers::coze::{CozeProvider, TOKEN_EXCHANGE, TOKEN_RETRIEVAL};
use secref::{CacheConfig, ErrorCode, Resolver, RetryPolicy};
use secref_testkit::coze::{CozeDouble, EnvVar, Failure, Seed};
use serde_json::Value;

const CLIENT_SECRET: &str = "coze-app-secret";
const CREDENTIAL: &str = "canary-cred-0b5e2d";
const ENV_VALUE: &str = "canary-env-93c1aa";

struct Oauth {
    idp: String,
    sts: String,
}

fn oauth(test: &str) -> Option<Oauth> {
    let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (get("SECREF_TEST_OAUTH_IDP"), get("SECREF_TEST_OAUTH_STS")) {
        (Some(idp), Some(sts)) => Some(Oauth { idp, sts }),
        _ => {
            println!(
                "SKIPPED {test}: SECREF_TEST_OAUTH_IDP/_STS are not set \
                 (scripts/test.sh starts oidc-provider and sets them)"
            );
            None
        }
    }
}

/// A lane unique to this test run: the OAuth server's counters outlive it.
fn unique_lane(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

fn seed() -> Seed {
    let mut integrations: BTreeMap<String, String> = (0..50)
        .map(|i| (format!("svc{i}"), format!("{CREDENTIAL}-{i}")))
        .collect();
    integrations.insert("github".into(), CREDENTIAL.into());
    Seed {
        integrations,
        env: vec![
            EnvVar {
                key: "DB_URL".into(),
                value: ENV_VALUE.into(),
            },
            EnvVar {
                key: "A".into(),
                value: "a1".into(),
            },
            EnvVar {
                key: "A".into(),
                value: "a2-duplicate".into(),
            },
            EnvVar {
                key: "B".into(),
                value: "b".into(),
            },
        ],
        ..Seed::default()
    }
}

async fn double(o: &Oauth, seed: Seed) -> CozeDouble {
    CozeDouble::spawn(&o.sts, seed).await.unwrap()
}

/// The SDK's environment for client `coze-app`, plus `extra`.
fn env(o: &Oauth, d: &CozeDouble, lane: &str, extra: &[(&str, &str)]) -> Env {
    let mut e = Env::from_pairs([
        ("COZE_WORKLOAD_IDENTITY_CLIENT_ID", "coze-app"),
        ("COZE_WORKLOAD_IDENTITY_CLIENT_SECRET", CLIENT_SECRET),
        (
            "COZE_WORKLOAD_IDENTITY_TOKEN_ENDPOINT",
            &format!("{}/token", o.idp),
        ),
        (
            "COZE_WORKLOAD_ACCESS_TOKEN_ENDPOINT",
            &format!("{}/token", o.sts),
        ),
        ("COZE_OUTBOUND_AUTH_ENDPOINT", &format!("{}/", d.url)),
        ("COZE_SERVER_ENV", lane),
    ]);
    for (k, v) in extra {
        e.set(*k, *v);
    }
    e
}

fn resolver(p: CozeProvider) -> Resolver {
    Resolver::builder()
        .provider(p)
        .cache(CacheConfig::disabled())
        .retry(RetryPolicy::none())
        .build()
        .unwrap()
}

/// (client-credentials calls, exchange calls, x-use-ppe values) for a lane.
async fn stats(o: &Oauth, lane: &str) -> (u64, u64, Vec<Value>) {
    let v: Value = reqwest::get(format!("{}/_test/stats?lane={lane}", o.idp))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        v["idp"].as_u64().unwrap(),
        v["sts"].as_u64().unwrap(),
        v["ppe"].as_array().unwrap().clone(),
    )
}

#[tokio::test]
async fn resolves_credentials_and_env_vars_with_lane_headers() {
    let Some(o) = oauth("resolves_credentials_and_env_vars_with_lane_headers") else {
        return;
    };
    let d = double(&o, seed()).await;
    let lane = unique_lane("ppe_rust_basic");
    let lane = lane.as_str();
    let r = resolver(CozeProvider::from_env(&env(&o, &d, lane, &[])).unwrap());
    let cred = r.resolve("coze+credential://github").await.unwrap();
    assert_eq!(cred.as_text().unwrap(), CREDENTIAL);
    let v = r.resolve("coze+env://p1/DB_URL").await.unwrap();
    assert_eq!(v.as_text().unwrap(), ENV_VALUE);
    // Duplicate keys: the first wins, like the SDK's ProjectEnvVars.get.
    assert_eq!(
        r.resolve("coze+env://p1/A")
            .await
            .unwrap()
            .as_text()
            .unwrap(),
        "a1"
    );

    let seen = d.requests();
    assert_eq!(seen.len(), 3);
    for req in &seen {
        assert_eq!(req.lane.as_deref(), Some(lane));
        assert_eq!(req.use_ppe.as_deref(), Some("1"));
        assert_eq!(req.client_id.as_deref(), Some("coze-app"));
        assert_eq!(req.status, 200);
    }
    let (idp, sts, ppe) = stats(&o, lane).await;
    assert_eq!(
        (idp, sts),
        (1, 1),
        "both tokens cached across three resolves"
    );
    assert!(
        ppe.iter().all(|v| v == "1"),
        "x-use-ppe on the token requests too"
    );

    // boe_ lanes send x-tt-env only.
    let d2 = double(&o, seed()).await;
    let r = resolver(
        CozeProvider::from_env(&env(&o, &d2, &unique_lane("boe_rust_basic"), &[])).unwrap(),
    );
    r.resolve("coze+credential://github").await.unwrap();
    assert_eq!(d2.requests()[0].lane, Some(unique_lane("boe_rust_basic")));
    assert_eq!(d2.requests()[0].use_ppe, None);
    let (_, _, ppe) = stats(&o, &unique_lane("boe_rust_basic")).await;
    assert!(ppe.iter().all(Value::is_null));
}

#[tokio::test]
async fn expiry_buffer_drives_refresh_of_each_token() {
    let Some(o) = oauth("expiry_buffer_drives_refresh_of_each_token") else {
        return;
    };
    let d = double(&o, seed()).await;
    // The IdP issues 600 s ID tokens, the STS 300 s access tokens. A 400 s
    // buffer makes every access token stale at once but keeps the ID token.
    let lane = unique_lane("boe_buffer_400");
    let lane = lane.as_str();
    let r = resolver(
        CozeProvider::from_env(&env(
            &o,
            &d,
            lane,
            &[("SECREF_COZE_EXPIRY_BUFFER_SECONDS", "400")],
        ))
        .unwrap(),
    );
    for i in 0..3 {
        r.resolve(format!("coze+credential://svc{i}").as_str())
            .await
            .unwrap();
    }
    let (idp, sts, _) = stats(&o, lane).await;
    assert_eq!((idp, sts), (1, 3));

    // A buffer above both lifetimes: nothing is reused.
    let lane = unique_lane("boe_buffer_700");
    let lane = lane.as_str();
    let r = resolver(
        CozeProvider::from_env(&env(
            &o,
            &d,
            lane,
            &[("SECREF_COZE_EXPIRY_BUFFER_SECONDS", "700")],
        ))
        .unwrap(),
    );
    for i in 0..3 {
        r.resolve(format!("coze+credential://svc{i}").as_str())
            .await
            .unwrap();
    }
    let (idp, sts, _) = stats(&o, lane).await;
    assert_eq!((idp, sts), (3, 3));
}

#[tokio::test]
async fn fifty_concurrent_resolves_share_one_token_flow() {
    let Some(o) = oauth("fifty_concurrent_resolves_share_one_token_flow") else {
        return;
    };
    let d = double(&o, seed()).await;
    let lane = unique_lane("boe_single_flight");
    let lane = lane.as_str();
    let r = Arc::new(resolver(
        CozeProvider::from_env(&env(&o, &d, lane, &[])).unwrap(),
    ));
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let r = r.clone();
            tokio::spawn(async move {
                let v = r
                    .resolve(format!("coze+credential://svc{i}").as_str())
                    .await
                    .unwrap();
                assert_eq!(v.as_text().unwrap(), format!("{CREDENTIAL}-{i}"));
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let (idp, sts, _) = stats(&o, lane).await;
    assert_eq!(
        (idp, sts),
        (1, 1),
        "exactly one client_credentials and one exchange"
    );
    assert_eq!(d.requests().len(), 50);
}

#[tokio::test]
async fn a_401_triggers_exactly_one_reauthentication() {
    let Some(o) = oauth("a_401_triggers_exactly_one_reauthentication") else {
        return;
    };
    let d = double(&o, seed()).await;
    let lane = unique_lane("boe_reauth");
    let lane = lane.as_str();
    let r = resolver(CozeProvider::from_env(&env(&o, &d, lane, &[])).unwrap());
    r.resolve("coze+credential://svc1").await.unwrap();
    d.revoke_seen_tokens();
    let v = r.resolve("coze+credential://svc2").await.unwrap();
    assert_eq!(v.as_text().unwrap(), format!("{CREDENTIAL}-2"));
    let statuses: Vec<u16> = d.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 401, 200]);
    let (idp, sts, _) = stats(&o, lane).await;
    assert_eq!((idp, sts), (2, 2), "the 401 dropped both tokens once");

    // A server that rejects every token: one retry, then unauthenticated.
    let strict = double(
        &o,
        Seed {
            audience: Some("urn:someone-else".into()),
            ..seed()
        },
    )
    .await;
    let lane = unique_lane("boe_reauth_fails");
    let lane = lane.as_str();
    let r = resolver(CozeProvider::from_env(&env(&o, &strict, lane, &[])).unwrap());
    let e = r.resolve("coze+credential://github").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unauthenticated);
    assert!(!e.retryable());
    assert_eq!(strict.requests().len(), 2);
    let (idp, sts, _) = stats(&o, lane).await;
    assert_eq!((idp, sts), (2, 2));
}

#[tokio::test]
async fn one_env_listing_serves_a_whole_batch() {
    let Some(o) = oauth("one_env_listing_serves_a_whole_batch") else {
        return;
    };
    let d = double(&o, seed()).await;
    let r =
        resolver(CozeProvider::from_env(&env(&o, &d, &unique_lane("boe_env_batch"), &[])).unwrap());
    let got = r
        .read_many([
            "coze+env://p1/DB_URL",
            "coze+env://p1/A",
            "coze+env://p1/B",
            "coze+env://p1/MISSING",
            "coze+credential://github",
        ])
        .partial()
        .await
        .unwrap();
    let calls: Vec<String> = d.requests().into_iter().map(|r| r.call).collect();
    assert_eq!(calls.iter().filter(|c| *c == "env").count(), 1, "{calls:?}");
    assert_eq!(calls.iter().filter(|c| *c == "integration").count(), 1);
    let mut by_ref: BTreeMap<String, Result<String, ErrorCode>> = BTreeMap::new();
    for (k, v) in got.resolved {
        by_ref.insert(
            k.to_canonical().to_string(),
            Ok(v.as_text().unwrap().to_string()),
        );
    }
    for (k, e) in got.failures {
        by_ref.insert(k.to_canonical().to_string(), Err(e.code()));
    }
    assert_eq!(by_ref["coze+env://p1/DB_URL"], Ok(ENV_VALUE.to_string()));
    assert_eq!(by_ref["coze+env://p1/B"], Ok("b".to_string()));
    assert_eq!(by_ref["coze+env://p1/MISSING"], Err(ErrorCode::NotFound));
    assert_eq!(
        by_ref["coze+credential://github"],
        Ok(CREDENTIAL.to_string())
    );
}

#[tokio::test]
async fn project_id_is_checked_when_configured() {
    let Some(o) = oauth("project_id_is_checked_when_configured") else {
        return;
    };
    let d = double(&o, seed()).await;
    let r = resolver(
        CozeProvider::from_env(&env(
            &o,
            &d,
            &unique_lane("boe_project"),
            &[("COZE_PROJECT_ID", "p1")],
        ))
        .unwrap(),
    );
    assert_eq!(
        r.resolve("coze+env://p1/B")
            .await
            .unwrap()
            .as_text()
            .unwrap(),
        "b"
    );
    let e = r.resolve("coze+env://p2/B").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::PermissionDenied);
    assert_eq!(
        d.requests().len(),
        1,
        "a foreign project is refused without a request"
    );
}

#[tokio::test]
async fn token_step_failures_are_typed_by_step() {
    let Some(o) = oauth("token_step_failures_are_typed_by_step") else {
        return;
    };
    let d = double(&o, seed()).await;
    let idp_token = format!("{}/token", o.idp);
    // (lane, extra env, code, remote code, retryable)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, ErrorCode, &'a str, bool);
    let cases: [Case; 5] = [
        // Wrong client secret: the IdP says invalid_client.
        (
            "boe_bad_secret",
            vec![("COZE_WORKLOAD_IDENTITY_CLIENT_SECRET", "wrong")],
            ErrorCode::Unauthenticated,
            TOKEN_RETRIEVAL,
            false,
        ),
        // A client the STS does not know: the exchange is refused.
        (
            "boe_idp_only",
            vec![
                ("COZE_WORKLOAD_IDENTITY_CLIENT_ID", "coze-idp-only"),
                (
                    "COZE_WORKLOAD_IDENTITY_CLIENT_SECRET",
                    "coze-idp-only-secret",
                ),
            ],
            ErrorCode::Unauthenticated,
            TOKEN_EXCHANGE,
            false,
        ),
        // The STS answers 503: retryable.
        (
            "fail-sts-503",
            vec![],
            ErrorCode::BackendUnavailable,
            TOKEN_EXCHANGE,
            true,
        ),
        // Nothing listens at the token endpoint: retryable transport error.
        (
            "boe_closed",
            vec![(
                "COZE_WORKLOAD_IDENTITY_TOKEN_ENDPOINT",
                "http://127.0.0.1:9/token",
            )],
            ErrorCode::BackendUnavailable,
            TOKEN_RETRIEVAL,
            true,
        ),
        // The exchange endpoint does not accept client credentials' shape:
        // pointing both steps at the IdP fails at the exchange.
        (
            "boe_wrong_exchange",
            vec![("COZE_WORKLOAD_ACCESS_TOKEN_ENDPOINT", &idp_token)],
            ErrorCode::Unauthenticated,
            TOKEN_EXCHANGE,
            false,
        ),
    ];
    for (lane_name, extra, code, step, retryable) in cases {
        let lane = unique_lane(lane_name);
        let r = resolver(CozeProvider::from_env(&env(&o, &d, &lane, &extra)).unwrap());
        let e = r.resolve("coze+credential://github").await.unwrap_err();
        assert_eq!(e.code(), code, "{lane}: {e}");
        assert_eq!(e.remote_code(), Some(step), "{lane}: {e}");
        assert_eq!(e.retryable(), retryable, "{lane}: {e}");
    }
    assert!(d.requests().is_empty(), "no outbound call without a token");
}

#[tokio::test]
async fn http_basic_client_authentication() {
    let Some(o) = oauth("http_basic_client_authentication") else {
        return;
    };
    let d = double(&o, seed()).await;
    let basic = [
        ("COZE_WORKLOAD_IDENTITY_CLIENT_ID", "coze-app-basic"),
        (
            "COZE_WORKLOAD_IDENTITY_CLIENT_SECRET",
            "coze-app-basic-secret",
        ),
        ("SECREF_COZE_CLIENT_AUTH", "basic"),
    ];
    let r =
        resolver(CozeProvider::from_env(&env(&o, &d, &unique_lane("boe_basic"), &basic)).unwrap());
    assert_eq!(
        r.resolve("coze+credential://github")
            .await
            .unwrap()
            .as_text()
            .unwrap(),
        CREDENTIAL
    );
    assert_eq!(d.requests()[0].client_id.as_deref(), Some("coze-app-basic"));
    let v: Value = reqwest::get(format!(
        "{}/_test/stats?lane={}",
        o.idp,
        unique_lane("boe_basic")
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(
        (v["idp"].as_u64(), v["basic"].as_u64()),
        (Some(1), Some(1)),
        "HTTP Basic was used"
    );
    // The default sends the secret in the body, like the SDK.
    let r = resolver(
        CozeProvider::from_env(&env(&o, &d, &unique_lane("boe_basic_body"), &basic[..2])).unwrap(),
    );
    r.resolve("coze+credential://github").await.unwrap();
    let v: Value = reqwest::get(format!(
        "{}/_test/stats?lane={}",
        o.idp,
        unique_lane("boe_basic_body")
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!((v["idp"].as_u64(), v["basic"].as_u64()), (Some(1), Some(0)));
}

#[tokio::test]
async fn outbound_errors_are_typed() {
    let Some(o) = oauth("outbound_errors_are_typed") else {
        return;
    };
    let mut s = seed();
    s.errors.insert(
        "flaky".into(),
        Failure {
            status: 200,
            code: 500,
            msg: "upstream down".into(),
        },
    );
    s.errors.insert(
        "denied".into(),
        Failure {
            status: 403,
            code: 403,
            msg: "not allowed".into(),
        },
    );
    s.errors.insert(
        "weird".into(),
        Failure {
            status: 200,
            code: 7001,
            msg: "odd".into(),
        },
    );
    s.env_error = Some(Failure {
        status: 503,
        code: 503,
        msg: "env store down".into(),
    });
    let d = double(&o, s).await;
    let r = resolver(
        CozeProvider::from_env(&env(&o, &d, &unique_lane("boe_outbound_errors"), &[])).unwrap(),
    );
    let cases = [
        (
            "coze+credential://nope",
            ErrorCode::NotFound,
            false,
            "integration not found",
        ),
        (
            "coze+credential://flaky",
            ErrorCode::BackendUnavailable,
            true,
            "upstream down",
        ),
        (
            "coze+credential://denied",
            ErrorCode::PermissionDenied,
            false,
            "not allowed",
        ),
        (
            "coze+credential://weird",
            ErrorCode::InvalidResponse,
            false,
            "code 7001",
        ),
        (
            "coze+env://p/DB_URL",
            ErrorCode::BackendUnavailable,
            true,
            "env store down",
        ),
    ];
    for (reference, code, retryable, text) in cases {
        let e = r.resolve(reference).await.unwrap_err();
        assert_eq!(
            (e.code(), e.retryable()),
            (code, retryable),
            "{reference}: {e}"
        );
        assert!(e.to_string().contains(text), "{reference}: {e}");
        assert_eq!(e.reference(), Some(reference));
    }
    // Without an outbound endpoint: a config error, no request.
    let mut no_outbound = env(&o, &d, &unique_lane("boe_no_outbound"), &[]);
    no_outbound.set("COZE_OUTBOUND_AUTH_ENDPOINT", "");
    let r = resolver(CozeProvider::from_env(&no_outbound).unwrap());
    assert_eq!(
        r.resolve("coze+credential://github")
            .await
            .unwrap_err()
            .code(),
        ErrorCode::Config
    );
}

#[tokio::test]
async fn providers_never_share_tokens_across_client_ids() {
    let Some(o) = oauth("providers_never_share_tokens_across_client_ids") else {
        return;
    };
    let d = double(&o, seed()).await;
    let lane = unique_lane("boe_two_clients");
    let lane = lane.as_str();
    let a = resolver(CozeProvider::from_env(&env(&o, &d, lane, &[])).unwrap());
    let b = resolver(
        CozeProvider::from_env(&env(
            &o,
            &d,
            lane,
            &[
                ("COZE_WORKLOAD_IDENTITY_CLIENT_ID", "coze-app-2"),
                ("COZE_WORKLOAD_IDENTITY_CLIENT_SECRET", "coze-app-2-secret"),
            ],
        ))
        .unwrap(),
    );
    a.resolve("coze+credential://github").await.unwrap();
    b.resolve("coze+credential://github").await.unwrap();
    a.resolve("coze+credential://svc1").await.unwrap();
    let clients: Vec<_> = d
        .requests()
        .into_iter()
        .map(|r| r.client_id.unwrap())
        .collect();
    assert_eq!(clients, ["coze-app", "coze-app-2", "coze-app"]);
    let (idp, sts, _) = stats(&o, lane).await;
    assert_eq!((idp, sts), (2, 2));
}

#[tokio::test]
async fn from_config_registers_the_provider() {
    let Some(o) = oauth("from_config_registers_the_provider") else {
        return;
    };
    let d = double(&o, seed()).await;
    let mut cfg = secref::Config::from_toml_str(&format!(
        "[coze]\nclient_id = 'coze-app'\nclient_secret_env = 'MY_COZE_SECRET'\n\
         token_endpoint = '{}/token'\naccess_token_endpoint = '{}/token'\n\
         outbound_endpoint = '{}'\nserver_env = 'boe_from_config'\n",
        o.idp, o.sts, d.url
    ))
    .unwrap();
    cfg.env = Env::from_pairs([
        ("MY_COZE_SECRET", CLIENT_SECRET),
        ("SECREF_STORE", "/nonexistent/x"),
    ]);
    let r = Resolver::from_config(&cfg).unwrap();
    assert_eq!(
        r.resolve("coze+credential://github")
            .await
            .unwrap()
            .as_text()
            .unwrap(),
        CREDENTIAL
    );
    assert_eq!(
        d.requests()[0].lane.as_deref(),
        Some("boe_from_config"),
        "table lane"
    );
}

// ---- canaries ---------------------------------------------------------------

#[tokio::test]
async fn secrets_and_tokens_never_reach_logs_errors_or_debug() {
    let Some(o) = oauth("secrets_and_tokens_never_reach_logs_errors_or_debug") else {
        return;
    };
    let capture = secref_testkit::capture::install();
    let mut s = seed();
    s.errors.insert(
        "flaky".into(),
        Failure {
            status: 500,
            code: 500,
            msg: "x".into(),
        },
    );
    let d = double(&o, s).await;
    let p =
        Arc::new(CozeProvider::from_env(&env(&o, &d, &unique_lane("ppe_canary"), &[])).unwrap());
    let r = Resolver::builder()
        .provider_arc(p.clone(), Some(CacheConfig::disabled()))
        .retry(RetryPolicy::none())
        .build()
        .unwrap();
    let mut texts = Vec::new();
    let got = r
        .read_many([
            "coze+credential://github",
            "coze+env://p/DB_URL",
            "coze+credential://flaky",
        ])
        .partial()
        .await
        .unwrap();
    texts.push(format!("{got:?}"));
    d.revoke_seen_tokens();
    let v = r.resolve("coze+credential://svc3").await.unwrap();
    texts.push(format!("{v:?} {v}"));
    let access = p.access_token().await.unwrap();
    texts.push(format!("{access:?} {access} {p:?} {r:?}"));
    for extra in [
        vec![(
            "COZE_WORKLOAD_IDENTITY_CLIENT_SECRET",
            "canary-wrong-secret-4d1",
        )],
        vec![(
            "COZE_WORKLOAD_ACCESS_TOKEN_ENDPOINT",
            &*format!("{}/token", o.idp),
        )],
    ] {
        let bad = resolver(
            CozeProvider::from_env(&env(&o, &d, &unique_lane("ppe_canary"), &extra)).unwrap(),
        );
        let e = bad.resolve("coze+credential://github").await.unwrap_err();
        texts.push(format!("{e} {e:?} {:?}", e.hint()));
    }
    let logs = capture.text();
    assert!(logs.contains("coze"), "the capture works");
    texts.push(logs);
    let access = access.as_text().unwrap().to_string();
    for t in &texts {
        for canary in [
            CLIENT_SECRET,
            CREDENTIAL,
            ENV_VALUE,
            access.as_str(),
            "canary-wrong-secret-4d1",
        ] {
            assert!(!t.contains(canary), "leak of {canary:.12}… in {t:.300}");
        }
        // Every JWT (ID and access tokens alike) starts with this header.
        assert!(!t.contains("eyJhbGciOi"), "a JWT leaked into {t:.300}");
    }
}

#[tokio::test]
async fn the_double_accepts_only_sts_issued_tokens() {
    let Some(o) = oauth("the_double_accepts_only_sts_issued_tokens") else {
        return;
    };
    let d = double(&o, seed()).await;
    let http = reqwest::Client::new();
    // A genuine JWT, but from the IdP (other issuer, key and audience).
    let id: Value = http
        .post(format!("{}/token", o.idp))
        .form(&[
            ("client_id", "coze-app"),
            ("client_secret", CLIENT_SECRET),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id_token = id["access_token"].as_str().unwrap().to_string();
    for auth in [
        Some(format!("Bearer {id_token}")),
        Some("Bearer not-a-jwt".to_string()),
        None,
    ] {
        let mut req = http
            .post(format!("{}/integration", d.url))
            .json(&serde_json::json!({"integration_name": "github"}));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], 401);
    }
    assert!(d.requests().iter().all(|r| r.client_id.is_none()));
}
