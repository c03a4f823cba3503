//! The Infisical provider against the in-process Infisical double
//! (`secref_testkit::infisical`), which `tests/python/test_infisical_double.py`
//! proves faithful with the Infisical SDK.

#![cfg(feature = "infisical")]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use secref::config::Env;
use secref::provider::Provider;
use secref::providers::infisical::{InfisicalProvider, InfisicalSettings};
use secref::{Config, ErrorCode, Resolver, SecretRef};
use secref_testkit::infisical::{InfisicalDouble, Seed};
use serde_json::json;

const CLIENT_SECRET: &str = "CANARY-client-secret-7f3a";
const DB_PASS: &str = "CANARY-db-pass-v2-91be";
const STATIC_TOKEN_MARK: &str = "CANARYTOKENMARK";

fn seed(ttl: u64) -> Seed {
    serde_json::from_value(json!({
        "token_ttl_seconds": ttl,
        "clients": [
            {"client_id": "cid", "client_secret": CLIENT_SECRET},
            {"client_id": "narrow", "client_secret": "narrow-secret", "projects": ["other"]}
        ],
        "tokens": [static_jwt(3600), static_jwt(-10)],
        "secrets": [
            {"project": "proj-1", "environment": "dev", "path": "/app", "key": "DB_PASS",
             "values": ["CANARY-db-pass-v1-0000", DB_PASS], "comment": "the db password", "tags": ["db", "prod"]},
            {"project": "proj-1", "environment": "dev", "path": "/app", "key": "API_KEY",
             "values": ["CANARY-api-key-5555"]},
            {"project": "proj-1", "environment": "dev", "path": "/", "key": "ROOT_KEY",
             "values": ["CANARY-root-4444"]},
            {"project": "proj-1", "environment": "dev", "path": "/app/sub", "key": "DEEP",
             "values": ["CANARY-deep-3333"]}
        ]
    }))
    .unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A JWT the double accepts verbatim (it is seeded), expiring in `secs`.
fn static_jwt(secs: i64) -> String {
    let head = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = b64(
        json!({"iat": now() - 20, "exp": now() + secs, "mark": STATIC_TOKEN_MARK, "n": secs})
            .to_string()
            .as_bytes(),
    );
    format!("{head}.{body}.c2ln")
}

fn config(env: &[(&str, &str)], home: &std::path::Path) -> Config {
    let mut pairs = vec![("HOME".to_string(), home.display().to_string())];
    pairs.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Config {
        env: Env::from_pairs(pairs),
        ..Config::default()
    }
}

fn universal(d: &InfisicalDouble, home: &std::path::Path) -> InfisicalProvider {
    let cfg = config(
        &[
            ("INFISICAL_URL", &d.url),
            ("INFISICAL_CLIENT_ID", "cid"),
            ("INFISICAL_CLIENT_SECRET", CLIENT_SECRET),
        ],
        home,
    );
    InfisicalProvider::new(InfisicalSettings::from_config(&cfg).unwrap()).unwrap()
}

fn r(s: &str) -> SecretRef {
    SecretRef::parse(s).unwrap()
}

#[tokio::test]
async fn universal_auth_reads_versions_metadata_and_validation() {
    let d = InfisicalDouble::start(seed(600)).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let p = universal(&d, home.path());
    assert_eq!(p.credential_source(), Some("environment"));

    let out = p
        .resolve_many(&[
            r("infisical://proj-1/dev/app/DB_PASS"),
            r("infisical://proj-1/dev/app/DB_PASS?version=1"),
            r("infisical://proj-1/dev/ROOT_KEY"),
            r("infisical://proj-1/dev/app/NOPE"),
        ])
        .await
        .unwrap();
    let v = out[0].as_ref().unwrap();
    assert_eq!(v.secret.as_text().unwrap(), DB_PASS);
    assert_eq!(v.version.as_deref(), Some("2"));
    let v1 = out[1].as_ref().unwrap();
    assert_eq!(v1.secret.as_text().unwrap(), "CANARY-db-pass-v1-0000");
    assert_eq!(v1.version.as_deref(), Some("1"));
    assert_eq!(
        out[2].as_ref().unwrap().secret.as_text().unwrap(),
        "CANARY-root-4444"
    );
    // NOPE shares its folder with DB_PASS: answered from the list.
    assert_eq!(out[3].as_ref().unwrap_err().code(), ErrorCode::NotFound);
    let out = p
        .resolve_many(&[r("infisical://proj-1/dev/app/NOPE")])
        .await
        .unwrap();
    let e = out[0].as_ref().unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
    assert_eq!(e.remote_code(), Some("NotFound"));
    assert!(e.request_id().is_some_and(|id| id.starts_with("req-")));
    assert_eq!(d.logins("cid"), 1);

    let md = p
        .metadata(&[r("infisical://proj-1/dev/app/DB_PASS")])
        .await
        .unwrap();
    let md = md[0].as_ref().unwrap();
    assert_eq!(md.current_version.as_deref(), Some("2"));
    assert_eq!(md.description.as_deref(), Some("the db password"));
    assert_eq!(md.tags, vec!["db", "prod"]);
    assert!(md.created_at.is_some() && md.updated_at.is_some());
    assert!(!format!("{md:?}").contains("CANARY-db"));

    let val = p
        .validate(&[
            r("infisical://proj-1/dev/app/DB_PASS"),
            r("infisical://proj-1/dev/app/NOPE"),
        ])
        .await
        .unwrap();
    assert_eq!(val[0].as_ref().unwrap().exists, Some(true));
    assert_eq!(val[1].as_ref().unwrap().exists, Some(false));
    // Metadata and validation never ask for the value.
    for req in d.requests() {
        if req.path.ends_with("/DB_PASS") && !req.query.contains("viewSecretValue=true") {
            assert!(req.query.contains("viewSecretValue=false"), "{req:?}");
        }
    }
}

#[tokio::test]
async fn batch_uses_one_list_request_per_folder() {
    let d = InfisicalDouble::start(seed(600)).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let p = universal(&d, home.path());
    let out = p
        .resolve_many(&[
            r("infisical://proj-1/dev/app/DB_PASS"),
            r("infisical://proj-1/dev/app/API_KEY"),
            r("infisical://proj-1/dev/app/MISSING"),
            r("infisical://proj-1/dev/app/sub/DEEP"),
            r("infisical://proj-1/dev/app/DB_PASS?version=1"),
        ])
        .await
        .unwrap();
    assert_eq!(out[0].as_ref().unwrap().secret.as_text().unwrap(), DB_PASS);
    assert_eq!(out[0].as_ref().unwrap().version.as_deref(), Some("2"));
    assert_eq!(
        out[1].as_ref().unwrap().secret.as_text().unwrap(),
        "CANARY-api-key-5555"
    );
    assert_eq!(out[2].as_ref().unwrap_err().code(), ErrorCode::NotFound);
    assert_eq!(
        out[3].as_ref().unwrap().secret.as_text().unwrap(),
        "CANARY-deep-3333"
    );
    assert_eq!(
        out[4].as_ref().unwrap().secret.as_text().unwrap(),
        "CANARY-db-pass-v1-0000"
    );
    let reqs = d.requests();
    let lists: Vec<_> = reqs
        .iter()
        .filter(|q| q.path == "/api/v3/secrets/raw")
        .collect();
    assert_eq!(lists.len(), 1, "{reqs:?}");
    assert_eq!(
        lists[0].query,
        "workspaceId=proj-1&environment=dev&secretPath=%2Fapp&recursive=false&viewSecretValue=true"
    );
    let singles: Vec<_> = reqs
        .iter()
        .filter(|q| q.path.starts_with("/api/v3/secrets/raw/"))
        .collect();
    assert_eq!(singles.len(), 2, "{reqs:?}");
    assert!(singles.iter().any(|q| q.query.contains("version=1")));
}

#[tokio::test]
async fn token_refreshes_before_expiry() {
    let d = InfisicalDouble::start(seed(3)).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let p = universal(&d, home.path());
    let one = [r("infisical://proj-1/dev/app/API_KEY")];
    assert!(p.resolve_many(&one).await.unwrap()[0].is_ok());
    assert_eq!(d.logins("cid"), 1);
    // Default margin is a third of the 3 s lifetime: after 2.1 s the token
    // is within it (or expired, on a slow machine) and is renewed before use.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(p.resolve_many(&one).await.unwrap()[0].is_ok());
    assert_eq!(d.logins("cid"), 2);
    assert_eq!(d.expired_rejections(), 0);
}

#[tokio::test]
async fn concurrent_resolves_share_one_login() {
    let mut s = seed(600);
    for i in 0..50 {
        s.secrets.push(
            serde_json::from_value(json!({
                "project": "proj-1", "environment": "dev", "path": "/bulk",
                "key": format!("K{i}"), "values": [format!("CANARY-bulk-{i}")]
            }))
            .unwrap(),
        );
    }
    let d = InfisicalDouble::start(s).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let resolver = Arc::new(
        Resolver::builder()
            .provider(universal(&d, home.path()))
            .build()
            .unwrap(),
    );
    // 50 distinct references at once, before any token exists.
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let resolver = resolver.clone();
            tokio::spawn(async move {
                let v = resolver
                    .resolve(format!("infisical://proj-1/dev/bulk/K{i}").as_str())
                    .await
                    .unwrap();
                assert_eq!(v.as_text().unwrap(), format!("CANARY-bulk-{i}"));
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(d.logins("cid"), 1);
    let reads = d
        .requests()
        .iter()
        .filter(|q| q.path.starts_with("/api/v3/secrets/raw"))
        .count();
    assert!((1..=50).contains(&reads), "{reads}");
}

#[tokio::test]
async fn a_401_causes_exactly_one_relogin() {
    let d = InfisicalDouble::start(seed(600)).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let p = universal(&d, home.path());
    let one = [r("infisical://proj-1/dev/app/API_KEY")];
    assert!(p.resolve_many(&one).await.unwrap()[0].is_ok());
    d.revoke_issued_tokens();
    assert!(p.resolve_many(&one).await.unwrap()[0].is_ok());
    assert_eq!(d.logins("cid"), 2);
    // A 401 that persists after the re-login is reported, not looped on.
    d.fail_next(&[401, 401]);
    let e = p.resolve_many(&one).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unauthenticated);
    assert_eq!(d.logins("cid"), 3);
}

#[tokio::test]
async fn errors_are_typed() {
    let d = InfisicalDouble::start(seed(600)).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let p = universal(&d, home.path());
    let one = [r("infisical://proj-1/dev/app/API_KEY")];
    for (status, code) in [
        (429, ErrorCode::RateLimited),
        (503, ErrorCode::BackendUnavailable),
        (403, ErrorCode::PermissionDenied),
    ] {
        d.fail_next(&[status]);
        let out = p.resolve_many(&one).await.unwrap();
        let e = out[0].as_ref().unwrap_err();
        assert_eq!(e.code(), code, "{status}");
        assert_eq!(e.retryable(), status != 403, "{status}");
        assert!(e.request_id().is_some());
    }
    // A client restricted to another project is denied.
    let cfg = config(
        &[
            ("INFISICAL_URL", &d.url),
            ("INFISICAL_CLIENT_ID", "narrow"),
            ("INFISICAL_CLIENT_SECRET", "narrow-secret"),
        ],
        home.path(),
    );
    let narrow = InfisicalProvider::new(InfisicalSettings::from_config(&cfg).unwrap()).unwrap();
    let out = narrow.resolve_many(&one).await.unwrap();
    assert_eq!(
        out[0].as_ref().unwrap_err().code(),
        ErrorCode::PermissionDenied
    );
    // Wrong client secret: unauthenticated, for the whole batch.
    let cfg = config(
        &[
            ("INFISICAL_URL", &d.url),
            ("INFISICAL_CLIENT_ID", "cid"),
            ("INFISICAL_CLIENT_SECRET", "wrong"),
        ],
        home.path(),
    );
    let wrong = InfisicalProvider::new(InfisicalSettings::from_config(&cfg).unwrap()).unwrap();
    let e = wrong.resolve_many(&one).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unauthenticated);
    // Nobody listening: a request-level, retryable failure.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let cfg = config(
        &[
            ("INFISICAL_URL", &closed),
            ("INFISICAL_CLIENT_ID", "cid"),
            ("INFISICAL_CLIENT_SECRET", CLIENT_SECRET),
        ],
        home.path(),
    );
    let down = InfisicalProvider::new(InfisicalSettings::from_config(&cfg).unwrap()).unwrap();
    let e = down.resolve_many(&one).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::BackendUnavailable);
    assert!(e.retryable());
    // Nothing configured at all.
    let cfg = config(&[("INFISICAL_URL", &d.url)], home.path());
    let none = InfisicalProvider::new(InfisicalSettings::from_config(&cfg).unwrap()).unwrap();
    let e = none.resolve_many(&one).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unauthenticated);
    assert!(e.message().contains("No valid Infisical credentials"));
}

#[tokio::test]
async fn token_auth_and_expired_tokens() {
    let d = InfisicalDouble::start(seed(600)).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let good = static_jwt(3600);
    let cfg = config(
        &[("INFISICAL_URL", &d.url), ("INFISICAL_TOKEN", &good)],
        home.path(),
    );
    let p = InfisicalProvider::new(InfisicalSettings::from_config(&cfg).unwrap()).unwrap();
    let out = p
        .resolve_many(&[r("infisical://proj-1/dev/app/DB_PASS")])
        .await
        .unwrap();
    assert_eq!(out[0].as_ref().unwrap().secret.as_text().unwrap(), DB_PASS);

    let before = d.requests().len();
    let expired = static_jwt(-10);
    let cfg = config(
        &[("INFISICAL_URL", &d.url), ("INFISICAL_TOKEN", &expired)],
        home.path(),
    );
    let p = InfisicalProvider::new(InfisicalSettings::from_config(&cfg).unwrap()).unwrap();
    let e = p
        .resolve_many(&[r("infisical://proj-1/dev/app/DB_PASS")])
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unauthenticated);
    assert!(e.message().contains("expired"));
    assert_eq!(d.requests().len(), before, "an expired token is never sent");
}

/// Writes the Infisical CLI's `file`-vault login into `home`.
fn write_cli_login(home: &std::path::Path, url: &str, token: &str, passphrase: &[u8]) {
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    let alg = "PBES2-HS256+A128KW";
    let p2s = [7u8; 16];
    let header = b64(
        json!({"alg": alg, "enc": "A256GCM", "p2s": b64(&p2s), "p2c": 2000})
            .to_string()
            .as_bytes(),
    );
    let mut salt = alg.as_bytes().to_vec();
    salt.push(0);
    salt.extend_from_slice(&p2s);
    let mut kek = [0u8; 16];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(passphrase, &salt, 2000, &mut kek);
    let cek = [42u8; 32];
    let wrapped = aes_kw::KekAes128::new(&kek.into()).wrap_vec(&cek).unwrap();
    let iv = [9u8; 12];
    let inner =
        json!({"JTWToken": token, "RefreshToken": "", "Email": "dev@example.com"}).to_string();
    let plaintext = serde_json::to_string(&inner).unwrap();
    let sealed = aes_gcm::Aes256Gcm::new_from_slice(&cek)
        .unwrap()
        .encrypt(
            aes_gcm::Nonce::from_slice(&iv),
            Payload {
                msg: plaintext.as_bytes(),
                aad: header.as_bytes(),
            },
        )
        .unwrap();
    let (ct, tag) = sealed.split_at(sealed.len() - 16);
    let jwe = format!(
        "{header}.{}.{}.{}.{}",
        b64(&wrapped),
        b64(&iv),
        b64(ct),
        b64(tag)
    );
    std::fs::create_dir_all(home.join(".infisical")).unwrap();
    std::fs::create_dir_all(home.join("infisical-keyring")).unwrap();
    std::fs::write(home.join("infisical-keyring").join("dev@example.com"), jwe).unwrap();
    let config = json!({
        "loggedInUserEmail": "dev@example.com",
        "LoggedInUserDomain": format!("{url}/api"),
        "loggedInUsers": [{"email": "dev@example.com", "domain": format!("{url}/api")}],
        "vaultBackendType": "file",
        "vaultBackendPassphrase": base64::engine::general_purpose::STANDARD.encode(passphrase),
    });
    std::fs::write(
        home.join(".infisical").join("infisical-config.json"),
        config.to_string(),
    )
    .unwrap();
}

#[tokio::test]
async fn cli_config_login_is_used_last_with_its_own_url() {
    let d = InfisicalDouble::start(seed(600)).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    write_cli_login(home.path(), &d.url, &static_jwt(3600), b"vault-passphrase");
    // INFISICAL_URL is ignored for the CLI login: its token belongs to the
    // server in the CLI config.
    let cfg = config(
        &[("INFISICAL_URL", "https://elsewhere.invalid")],
        home.path(),
    );
    let p = InfisicalProvider::new(InfisicalSettings::from_config(&cfg).unwrap()).unwrap();
    assert_eq!(p.credential_source(), Some("cli_config"));
    let out = p
        .resolve_many(&[r("infisical://proj-1/dev/app/DB_PASS")])
        .await
        .unwrap();
    assert_eq!(out[0].as_ref().unwrap().secret.as_text().unwrap(), DB_PASS);

    // Environment credentials win over the CLI login.
    let cfg = config(
        &[
            ("INFISICAL_URL", &d.url),
            ("INFISICAL_CLIENT_ID", "cid"),
            ("INFISICAL_CLIENT_SECRET", CLIENT_SECRET),
        ],
        home.path(),
    );
    let p = InfisicalProvider::new(InfisicalSettings::from_config(&cfg).unwrap()).unwrap();
    assert_eq!(p.credential_source(), Some("environment"));

    // A wrong passphrase is `unauthenticated` on use, not a panic or a leak.
    let other = tempfile::tempdir().unwrap();
    write_cli_login(other.path(), &d.url, &static_jwt(3600), b"right");
    let cfg_path = other
        .path()
        .join(".infisical")
        .join("infisical-config.json");
    let mut cfg_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg_json["vaultBackendPassphrase"] =
        json!(base64::engine::general_purpose::STANDARD.encode("wrong"));
    std::fs::write(&cfg_path, cfg_json.to_string()).unwrap();
    let cfg = config(&[], other.path());
    let p = InfisicalProvider::new(InfisicalSettings::from_config(&cfg).unwrap()).unwrap();
    let e = p
        .resolve_many(&[r("infisical://proj-1/dev/app/DB_PASS")])
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unauthenticated);
    assert!(e.message().contains("wrong passphrase"));
}

#[tokio::test]
async fn resolver_from_config_serves_infisical_refs() {
    let d = InfisicalDouble::start(seed(600)).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut cfg = Config::from_toml_str(&format!(
        "[infisical]\nurl = \"{}\"\nclient_id = \"cid\"\nclient_secret = \"{CLIENT_SECRET}\"\n",
        d.url
    ))
    .unwrap();
    cfg.env = Env::from_pairs([
        ("HOME", home.path().display().to_string()),
        (
            "SECREF_STORE",
            home.path().join("none.store").display().to_string(),
        ),
    ]);
    let resolver = Resolver::from_config(&cfg).unwrap();
    let v = resolver
        .resolve("infisical://proj-1/dev/app/DB_PASS")
        .await
        .unwrap();
    assert_eq!(v.as_text().unwrap(), DB_PASS);
    let e = resolver
        .resolve("infisical://proj-1/dev/app/NOPE")
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);

    // Without any Infisical configuration the scheme has no provider.
    let cfg = Config {
        env: Env::from_pairs([("HOME", home.path().display().to_string())]),
        ..Config::default()
    };
    let e = Resolver::from_config(&cfg)
        .unwrap()
        .resolve("infisical://proj-1/dev/app/DB_PASS")
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NoProvider);
}

#[tokio::test]
async fn cli_get_works_with_env_config() {
    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/secref");
    if !bin.exists() {
        eprintln!("note: {} not built; skipping the CLI check", bin.display());
        return;
    }
    let d = InfisicalDouble::start(seed(600)).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(&bin)
        .args(["get", "infisical://proj-1/dev/app/DB_PASS"])
        .current_dir(home.path())
        .env_clear()
        .env("HOME", home.path())
        .env("SECREF_STORE", home.path().join("none.store"))
        .env("INFISICAL_URL", &d.url)
        .env("INFISICAL_CLIENT_ID", "cid")
        .env("INFISICAL_CLIENT_SECRET", CLIENT_SECRET)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim_end(), DB_PASS);
}

// ---- canaries ----------------------------------------------------------------

#[tokio::test]
async fn canaries_stay_out_of_logs_errors_and_debug() {
    let capture = secref_testkit::capture::install();
    let d = InfisicalDouble::start(seed(600)).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let p = universal(&d, home.path());
    let resolver = Resolver::builder().provider(p).build().unwrap();
    let mut seen = String::new();
    for reference in [
        "infisical://proj-1/dev/app/DB_PASS",
        "infisical://proj-1/dev/app/DB_PASS?version=1",
        "infisical://proj-1/dev/app/NOPE",
        "infisical://proj-1/dev/ROOT_KEY",
    ] {
        match resolver.read(reference).detailed().await {
            Ok(v) => seen.push_str(&format!("{v:?}")),
            Err(e) => seen.push_str(&format!("{e:?} {e}")),
        }
    }
    d.fail_next(&[500]);
    if let Err(e) = resolver.resolve("infisical://proj-1/dev/app/API_KEY").await {
        seen.push_str(&format!("{e:?} {e}"));
    }
    let partial = resolver
        .read_many([
            "infisical://proj-1/dev/app/DB_PASS",
            "infisical://proj-1/dev/app/API_KEY",
            "infisical://proj-1/dev/app/MISSING",
        ])
        .partial()
        .await;
    seen.push_str(&format!("{partial:?}"));
    seen.push_str(&format!("{resolver:?}"));
    // Token auth and the CLI login too.
    let token = static_jwt(3600);
    let cfg = config(
        &[("INFISICAL_URL", &d.url), ("INFISICAL_TOKEN", &token)],
        home.path(),
    );
    let settings = InfisicalSettings::from_config(&cfg).unwrap();
    seen.push_str(&format!("{settings:?}"));
    let tp = InfisicalProvider::new(settings).unwrap();
    seen.push_str(&format!("{tp:?}"));
    let _ = tp
        .resolve_many(&[r("infisical://proj-1/dev/app/DB_PASS")])
        .await;

    let logs = capture.text();
    assert!(logs.contains("Infisical"), "tracing captured nothing");
    for hay in [&seen, &logs] {
        for canary in ["CANARY-", CLIENT_SECRET, STATIC_TOKEN_MARK, "eyJ"] {
            assert!(!hay.contains(canary), "{canary} leaked");
        }
    }
}

#[tokio::test]
async fn an_oversized_refresh_margin_does_not_log_in_on_every_call() {
    let d = InfisicalDouble::start(seed(600)).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut cfg = Config::from_toml_str(&format!(
        "[infisical]\nurl = \"{}\"\nrefresh_margin_seconds = 3600\n",
        d.url
    ))
    .unwrap();
    cfg.env = Env::from_pairs([
        ("HOME", home.path().display().to_string()),
        ("INFISICAL_CLIENT_ID", "cid".to_string()),
        ("INFISICAL_CLIENT_SECRET", CLIENT_SECRET.to_string()),
    ]);
    let p = InfisicalProvider::new(InfisicalSettings::from_config(&cfg).unwrap()).unwrap();
    let one = [r("infisical://proj-1/dev/app/API_KEY")];
    for _ in 0..3 {
        assert!(p.resolve_many(&one).await.unwrap()[0].is_ok());
    }
    assert_eq!(d.logins("cid"), 1);
}

/// A folder whose listing exceeds the HTTP body cap (4 MiB) is not an
/// error for a batch: its references are read one by one instead.
#[tokio::test]
async fn a_folder_too_big_to_list_is_read_one_by_one() {
    let big = "x".repeat(300 * 1024);
    let mut secrets: Vec<serde_json::Value> = (0..16)
        .map(|i| {
            json!({"project": "proj-1", "environment": "dev", "path": "/big",
                   "key": format!("K{i}"), "values": [format!("{big}{i}")]})
        })
        .collect();
    secrets.push(
        json!({"project": "proj-1", "environment": "dev", "path": "/big",
                        "key": "SMALL", "values": ["CANARY-small-7777"]}),
    );
    let mut s = seed(600);
    s.secrets = serde_json::from_value(json!(secrets)).unwrap();
    let d = InfisicalDouble::start(s).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let p = universal(&d, home.path());
    let out = p
        .resolve_many(&[
            r("infisical://proj-1/dev/big/SMALL"),
            r("infisical://proj-1/dev/big/K3"),
            r("infisical://proj-1/dev/big/MISSING"),
        ])
        .await
        .unwrap();
    assert_eq!(
        out[0].as_ref().unwrap().secret.as_text().unwrap(),
        "CANARY-small-7777"
    );
    assert_eq!(
        out[1].as_ref().unwrap().secret.as_text().unwrap(),
        format!("{big}3")
    );
    assert_eq!(out[2].as_ref().unwrap_err().code(), ErrorCode::NotFound);
    let reqs = d.requests();
    let lists = reqs
        .iter()
        .filter(|q| q.path == "/api/v3/secrets/raw")
        .count();
    let singles = reqs
        .iter()
        .filter(|q| q.path.starts_with("/api/v3/secrets/raw/"))
        .count();
    assert_eq!((lists, singles), (1, 3), "{reqs:?}");
}
