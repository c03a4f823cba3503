#![cfg(feature = "vault")]
//! The Vault provider against a real Vault-compatible server: RustyVault,
//! started by `scripts/test.sh` (section "RustyVault"), which exports
//!
//! * `SECREF_TEST_VAULT_ADDR`, `SECREF_TEST_VAULT_TOKEN` (root token),
//! * `SECREF_TEST_VAULT_ROLE_ID`, `SECREF_TEST_VAULT_SECRET_ID` (AppRole `myapp`),
//!
//! and writes the KV v1 secret `secret/myapp/api` = `{"token": …, "user": "app"}`.
//!
//! RustyVault has KV v1, AppRole and token lookup, but no KV v2, no
//! response wrapping and no ACLs, so only those are exercised here (KV v2 and
//! wrapping are tested against `secref serve` and the in-process fake).
//! Without the variables every test prints why it is skipped and passes, so a
//! bare `cargo test` works.

use secref::config::Env;
use secref::providers::vault::VaultProvider;
use secref::{ErrorCode, Provider, Resolver, SecretRef};

/// The value `scripts/test.sh` writes at `secret/myapp/api#token`.
const TOKEN_VALUE: &str = "rv-canary-value-5e11";

struct Server {
    addr: String,
    root: String,
    role_id: String,
    secret_id: String,
}

fn server(test: &str) -> Option<Server> {
    let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (
        get("SECREF_TEST_VAULT_ADDR"),
        get("SECREF_TEST_VAULT_TOKEN"),
        get("SECREF_TEST_VAULT_ROLE_ID"),
        get("SECREF_TEST_VAULT_SECRET_ID"),
    ) {
        (Some(addr), Some(root), Some(role_id), Some(secret_id)) => Some(Server {
            addr,
            root,
            role_id,
            secret_id,
        }),
        _ => {
            println!(
                "SKIPPED {test}: SECREF_TEST_VAULT_ADDR/_TOKEN/_ROLE_ID/_SECRET_ID are not set \
                 (scripts/test.sh starts RustyVault and sets them)"
            );
            None
        }
    }
}

fn token_provider(s: &Server, token: &str) -> VaultProvider {
    VaultProvider::from_env(&Env::from_pairs([
        ("VAULT_ADDR", s.addr.as_str()),
        ("VAULT_TOKEN", token),
    ]))
    .unwrap()
}

fn approle_provider(s: &Server, secret_id: &str) -> VaultProvider {
    VaultProvider::from_env(&Env::from_pairs([
        ("VAULT_ADDR", s.addr.as_str()),
        ("VAULT_ROLE_ID", s.role_id.as_str()),
        ("VAULT_SECRET_ID", secret_id),
    ]))
    .unwrap()
}

async fn read(p: &VaultProvider, r: &str) -> secref::Result<secref::Resolved> {
    let r = SecretRef::parse(r)?;
    p.resolve_many(&[r]).await?.pop().unwrap()
}

#[tokio::test]
async fn token_auth_kv1_field_and_whole() {
    let Some(s) = server("token_auth_kv1_field_and_whole") else {
        return;
    };
    let p = token_provider(&s, &s.root);
    let info = p.lookup_self().await.unwrap();
    assert!(info.policies.iter().any(|p| p == "root"), "{info:?}");

    let got = read(&p, "hashicorp://secret/myapp/api#token")
        .await
        .unwrap();
    assert_eq!(got.secret.as_text().unwrap(), TOKEN_VALUE);
    assert!(got.version.is_none());

    let whole = read(&p, "openbao://secret/myapp/api").await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(whole.secret.expose_bytes()).unwrap();
    assert_eq!(v["token"], TOKEN_VALUE);
    assert_eq!(v["user"], "app");

    // Through the resolver, as applications use it.
    let resolver = Resolver::builder().provider(p).build().unwrap();
    let t = resolver
        .resolve("openbao://secret/myapp/api#user")
        .await
        .unwrap();
    assert_eq!(t.as_text().unwrap(), "app");
}

#[tokio::test]
async fn not_found_and_missing_field() {
    let Some(s) = server("not_found_and_missing_field") else {
        return;
    };
    let p = token_provider(&s, &s.root);
    let e = read(&p, "hashicorp://secret/myapp/nothing-here#token")
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound, "{e}");
    assert!(!e.retryable());
    let e = read(&p, "hashicorp://secret/myapp/api#nope")
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::FieldNotFound, "{e}");
    assert!(!format!("{e:?} {e}").contains(TOKEN_VALUE));
}

#[tokio::test]
async fn approle_login_lookup_and_read() {
    let Some(s) = server("approle_login_lookup_and_read") else {
        return;
    };
    let p = approle_provider(&s, &s.secret_id);
    let info = p.lookup_self().await.unwrap();
    assert!(
        !info.display_name.is_empty() || !info.policies.is_empty(),
        "{info:?}"
    );
    let got = read(&p, "openbao://secret/myapp/api#token").await.unwrap();
    assert_eq!(got.secret.as_text().unwrap(), TOKEN_VALUE);
}

#[tokio::test]
async fn bad_credentials_are_typed_and_quiet() {
    let Some(s) = server("bad_credentials_are_typed_and_quiet") else {
        return;
    };
    let wrong = "canary-wrong-token-0b7f";
    let p = token_provider(&s, wrong);
    let e = p.lookup_self().await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unauthenticated, "{e}");
    let e = read(&p, "openbao://secret/myapp/api#token")
        .await
        .unwrap_err();
    assert!(
        matches!(
            e.code(),
            ErrorCode::PermissionDenied | ErrorCode::Unauthenticated
        ),
        "{e}"
    );
    let text = format!("{e:?} {e}");
    assert!(!text.contains(wrong) && !text.contains(&s.root));

    let bad_sid = "canary-wrong-secret-id-44aa";
    let p = approle_provider(&s, bad_sid);
    let e = p
        .resolve_many(&[SecretRef::parse("openbao://secret/myapp/api").unwrap()])
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unauthenticated, "{e}");
    let text = format!("{e:?} {e}");
    assert!(!text.contains(bad_sid) && !text.contains(&s.role_id));
}

/// What `secref get hashicorp://secret/myapp/api#token` does against
/// RustyVault: `Resolver::from_config` with `VAULT_ADDR` / `VAULT_TOKEN`.
#[tokio::test]
async fn resolver_from_config_reads_kv1() {
    let Some(s) = server("resolver_from_config_reads_kv1") else {
        return;
    };
    let cfg = secref::Config {
        env: Env::from_pairs([
            ("VAULT_ADDR", s.addr.as_str()),
            ("VAULT_TOKEN", s.root.as_str()),
            ("SECREF_STORE", "/nonexistent/secref.store"),
        ]),
        ..secref::Config::default()
    };
    let resolver = Resolver::from_config(&cfg).unwrap();
    let v = resolver
        .resolve("hashicorp://secret/myapp/api#token")
        .await
        .unwrap();
    assert_eq!(v.as_text().unwrap(), TOKEN_VALUE);
}

/// RustyVault ignores `X-Vault-Wrap-TTL` and answers in clear: a wrapped
/// read must refuse that downgrade rather than accept the value.
#[tokio::test]
async fn unwrapped_answer_to_a_wrapped_read_is_refused() {
    let Some(s) = server("unwrapped_answer_to_a_wrapped_read_is_refused") else {
        return;
    };
    let p = token_provider(&s, &s.root);
    let e = read(&p, "openbao://secret/myapp/api#token?wrap_ttl=60s")
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidResponse, "{e}");
    assert!(e.message().contains("downgrade"));
    assert!(!format!("{e:?}").contains(TOKEN_VALUE));
}
