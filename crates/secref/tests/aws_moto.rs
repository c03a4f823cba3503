//! The AWS providers through the library's resolver against a real AWS API
//! server (moto, started by scripts/test.sh; skipped without
//! `SECREF_TEST_AWS_ENDPOINT`): batches (`BatchGetSecretValue` chunks of 20,
//! `GetParameters` chunks of 10) mixed with pinned versions and per-item
//! failures, the `[aws]` table, and request-level failures.

use secref::config::Env;
use secref::{Config, ErrorCode, Resolver, SecretRef};
use secref_testkit::aws::{Moto, ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY};

fn config(extra: &[(&str, &str)]) -> Config {
    let home = std::env::temp_dir().join("secref-aws-moto-no-home");
    let mut pairs = vec![
        ("HOME".to_owned(), home.display().to_string()),
        ("AWS_ACCESS_KEY_ID".to_owned(), ACCESS_KEY_ID.to_owned()),
        (
            "AWS_SECRET_ACCESS_KEY".to_owned(),
            SECRET_ACCESS_KEY.to_owned(),
        ),
        ("AWS_REGION".to_owned(), REGION.to_owned()),
    ];
    pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Config {
        env: Env::from_pairs(pairs),
        ..Config::default()
    }
}

#[tokio::test]
async fn a_large_mixed_batch_reads_everything_once_and_fails_per_item() {
    let Some(moto) = Moto::from_env() else { return };
    let resolver =
        Resolver::from_config(&config(&[("AWS_ENDPOINT_URL", moto.endpoint())])).unwrap();
    let mut refs = Vec::new();
    let mut expected = Vec::new();
    for i in 0..23 {
        let n = Moto::unique(&format!("lib/batch{i}"));
        moto.create_string(&n, &format!("{{\"k\":\"value-{i}\",\"n\":{i}}}"));
        refs.push(format!("aws-sm://{n}#k"));
        expected.push(format!("value-{i}"));
        if i % 5 == 0 {
            // The same secret asked for twice (another field).
            refs.push(format!("aws-sm://{n}#n"));
            expected.push(i.to_string());
        }
    }
    let pinned = Moto::unique("lib/pinned");
    moto.create_string(&pinned, "old");
    moto.put_string(&pinned, "new", None);
    refs.push(format!("aws-sm://{pinned}?version-stage=AWSPREVIOUS"));
    expected.push("old".into());
    refs.push(format!("aws-sm://{pinned}"));
    expected.push("new".into());
    let missing = format!("aws-sm://{}", Moto::unique("lib/missing"));
    let gone = Moto::unique("lib/gone");
    moto.create_string(&gone, "x");
    moto.delete_secret(&gone);
    let gone = format!("aws-sm://{gone}");

    let mut all = refs.clone();
    all.push(missing.clone());
    all.push(gone.clone());
    let partial = resolver
        .read_many(all.iter().map(String::as_str))
        .partial()
        .await
        .unwrap();
    for (r, want) in refs.iter().zip(&expected) {
        let got = &partial.resolved[&SecretRef::parse(r).unwrap()];
        assert_eq!(got.as_text().unwrap(), want, "{r}");
    }
    for r in [&missing, &gone] {
        let e = &partial.failures[&SecretRef::parse(r).unwrap()];
        assert_eq!(e.code(), ErrorCode::NotFound, "{r}: {e}");
        assert!(!e.retryable());
    }
    assert_eq!(partial.failures.len(), 2);
}

#[tokio::test]
async fn ssm_batches_beyond_ten_names_and_pins_versions() {
    let Some(moto) = Moto::from_env() else { return };
    let resolver =
        Resolver::from_config(&config(&[("AWS_ENDPOINT_URL_SSM", moto.endpoint())])).unwrap();
    let root = format!("/{}", Moto::unique("lib"));
    let mut refs = Vec::new();
    for i in 0..13 {
        let n = format!("{root}/p{i}");
        moto.put_parameter(
            &n,
            &format!("param-{i}"),
            if i % 2 == 0 { "SecureString" } else { "String" },
        );
        refs.push(format!("aws-ssm://{n}"));
    }
    moto.put_parameter(&format!("{root}/p0"), "param-0-v2", "SecureString");
    refs.push(format!("aws-ssm://{root}/p0?version=1"));
    let missing = format!("aws-ssm://{root}/missing");
    refs.push(missing.clone());
    let partial = resolver
        .read_many(refs.iter().map(String::as_str))
        .partial()
        .await
        .unwrap();
    let text = |r: &str| {
        partial.resolved[&SecretRef::parse(r).unwrap()]
            .as_text()
            .unwrap()
            .to_owned()
    };
    assert_eq!(text(&refs[0]), "param-0-v2");
    for (i, r) in refs.iter().enumerate().take(13).skip(1) {
        assert_eq!(text(r), format!("param-{i}"));
    }
    assert_eq!(text(&refs[13]), "param-0");
    let e = &partial.failures[&SecretRef::parse(&missing).unwrap()];
    assert_eq!(e.code(), ErrorCode::NotFound);
}

#[tokio::test]
async fn the_aws_table_configures_region_and_endpoint() {
    let Some(moto) = Moto::from_env() else { return };
    let n = Moto::unique("lib/table");
    moto.create_string(&n, "from-table");
    let mut cfg = config(&[("AWS_ENDPOINT_URL", "http://127.0.0.1:1")]);
    cfg.set_section(
        "aws",
        &format!(
            "region = \"{REGION}\"\nendpoint_url = \"{}\"\ntimeout_seconds = 20\n",
            moto.endpoint()
        ),
    )
    .unwrap();
    let resolver = Resolver::from_config(&cfg).unwrap();
    let v = resolver
        .resolve(format!("aws-sm://{n}").as_str())
        .await
        .unwrap();
    assert_eq!(v.as_text().unwrap(), "from-table");

    // A wrong table is a config error when the resolver is built.
    let mut bad = config(&[]);
    bad.set_section("aws", "endpoint_url = \"http://10.0.0.1:4566\"")
        .unwrap();
    assert_eq!(
        Resolver::from_config(&bad).unwrap_err().code(),
        ErrorCode::Config
    );
    let mut bad = config(&[]);
    bad.set_section("aws", "regoin = \"x\"").unwrap();
    assert_eq!(
        Resolver::from_config(&bad).unwrap_err().code(),
        ErrorCode::Config
    );
}

#[tokio::test]
async fn an_unreachable_endpoint_is_a_retryable_request_level_failure() {
    // No server needed. A port that was just free is very likely closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let resolver = Resolver::from_config(&config(&[("AWS_ENDPOINT_URL", &endpoint)])).unwrap();
    let e = resolver.resolve("aws-ssm://x").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::BackendUnavailable, "{e}");
    assert!(e.retryable());
    assert!(!format!("{e:?}").contains(SECRET_ACCESS_KEY));
}
