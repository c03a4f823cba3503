//! `Resolver::rebuild_from_config` (what `secref serve` reloads with): an
//! unchanged `[policy]` keeps its enforcement point (grants, use counts); a
//! changed one is new but keeps the token replay cache; the audit sink can
//! be neither added nor removed by a rebuild.

use secref::config::Env;
use secref::policy::Context;
use secref::{Config, ErrorCode, Resolver};

const POLICY: &str = "[policy]\nreplay_window_seconds = 60\n\
    [[policy.rules]]\nsubject = \"svc-*\"\nref_prefix = \"file://\"\neffect = \"allow\"\n";

fn config(text: &str) -> Config {
    let mut cfg = Config::from_toml_str(text).unwrap();
    cfg.env = Env::from_pairs([("SECREF_STORE", "/nonexistent/secref.store")]);
    cfg
}

/// Two files `a` and `b` holding `a` and `b`; their `file://` refs.
fn files() -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    std::fs::write(root.join("a"), "a").unwrap();
    std::fs::write(root.join("b"), "b").unwrap();
    let a = format!("file://{}", root.join("a").display());
    let b = format!("file://{}", root.join("b").display());
    (dir, a, b)
}

#[tokio::test]
async fn a_rebuild_keeps_the_policy_it_may_keep_and_the_replay_cache_always() {
    let (_dir, a, b) = files();
    let first = config(POLICY);
    let r1 = Resolver::from_config(&first).unwrap();
    let ctx = Context::for_subject("svc-a").with_jti("jti-1");
    r1.read(a.as_str()).as_(&ctx).await.unwrap();

    let same = Resolver::rebuild_from_config(&first, &r1, true).unwrap();
    assert!(std::ptr::eq(same.policy().unwrap(), r1.policy().unwrap()));

    let changed = config(&POLICY.replace("[policy]\n", "[policy]\ngrant_ttl_seconds = 30\n"));
    let r2 = Resolver::rebuild_from_config(&changed, &r1, false).unwrap();
    assert!(!std::ptr::eq(r2.policy().unwrap(), r1.policy().unwrap()));
    assert_eq!(r2.policy().unwrap().settings().grant_ttl.as_secs(), 30);
    // The token seen before the reload is a replay after it.
    let e = r2.read(b.as_str()).as_(&ctx).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::PermissionDenied, "{e:?}");
    // (svc-a's denial is remembered by the negative cache: another subject.)
    let fresh = Context::for_subject("svc-b").with_jti("jti-2");
    assert_eq!(
        r2.read(b.as_str())
            .as_(&fresh)
            .await
            .unwrap()
            .expose_bytes(),
        b"b"
    );
}

#[tokio::test]
async fn a_rebuild_neither_adds_nor_removes_the_audit_sink() {
    let plain = config(POLICY);
    let r = Resolver::from_config(&plain).unwrap();
    let audited = config(&format!("{POLICY}[audit]\nsink = \"stderr\"\n"));
    let e = Resolver::rebuild_from_config(&audited, &r, true).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Config);
    assert!(e.message().contains("[audit]"), "{e:?}");
    let ra = Resolver::from_config(&audited).unwrap();
    let e = Resolver::rebuild_from_config(&plain, &ra, true).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Config);
}
