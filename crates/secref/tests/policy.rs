//! The policy enforcement point, rule by rule, against a fake provider that
//! counts every call and a fake PDP that counts every decision: a refused
//! read must never reach the provider or the value cache.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use secref::policy::{AccessRequest, Context, Decision, GrantTerms, Pdp, Policy, PolicySettings};
use secref::provider::{
    Action, BatchResult, Capabilities, Metadata, Permission, Provider, Resolved, Validation,
};
use secref::{CacheConfig, Error, ErrorCode, Resolver, RetryPolicy, Secret, SecretRef};

// ---- Test doubles --------------------------------------------------------------

/// Serves `env://`, `openbao+kv2://` and `local://` references from a map;
/// counts references asked for.
#[derive(Debug, Default)]
struct Fake {
    values: Mutex<HashMap<String, &'static str>>,
    reads: AtomicUsize,
}

impl Fake {
    fn with(values: &[(&str, &'static str)]) -> Arc<Fake> {
        let f = Fake::default();
        for (r, v) in values {
            f.set(r, v);
        }
        Arc::new(f)
    }
    fn set(&self, r: &str, v: &'static str) {
        let key = SecretRef::parse(r).unwrap().to_canonical().to_string();
        self.values.lock().unwrap().insert(key, v);
    }
    fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Provider for Fake {
    fn name(&self) -> &str {
        "fake"
    }
    fn families(&self) -> &[&'static str] {
        &["env", "vault", "local"]
    }
    async fn resolve_many(&self, refs: &[SecretRef]) -> BatchResult<Resolved> {
        self.reads.fetch_add(refs.len(), Ordering::SeqCst);
        let values = self.values.lock().unwrap();
        Ok(refs
            .iter()
            .map(|r| match values.get(r.to_canonical()) {
                Some(v) => Ok(Resolved::new(Secret::from(*v)).with_version("7")),
                None => Err(Error::new(ErrorCode::NotFound, "no such secret")),
            })
            .collect())
    }
}

/// A PDP the test steers: allow (with terms) or deny, or be down.
#[derive(Debug)]
struct FakePdp {
    allow: AtomicBool,
    up: AtomicBool,
    terms: Mutex<GrantTerms>,
    calls: AtomicUsize,
    /// A pause inside each decision, so concurrent misses overlap.
    delay: Duration,
}

impl FakePdp {
    fn allowing(ttl_secs: u64, max_uses: u32) -> Arc<FakePdp> {
        Arc::new(FakePdp {
            allow: AtomicBool::new(true),
            up: AtomicBool::new(true),
            terms: Mutex::new(
                GrantTerms::new(Duration::from_secs(ttl_secs), max_uses).with_decision_id("d-1"),
            ),
            calls: AtomicUsize::new(0),
            delay: Duration::ZERO,
        })
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Pdp for FakePdp {
    async fn evaluate(&self, _req: &AccessRequest<'_>) -> secref::Result<Decision> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if !self.up.load(Ordering::SeqCst) {
            return Err(Error::new(ErrorCode::BackendUnavailable, "pdp down"));
        }
        Ok(if self.allow.load(Ordering::SeqCst) {
            Decision::Allow(self.terms.lock().unwrap().clone())
        } else {
            Decision::Deny {
                decision_id: Some("d-deny".into()),
            }
        })
    }
}

fn settings(extra: &str) -> PolicySettings {
    PolicySettings::from_table(&toml::from_str(extra).unwrap()).unwrap()
}

fn resolver(fake: &Arc<Fake>, pdp: Arc<FakePdp>, extra: &str, cache: bool) -> Resolver {
    Resolver::builder()
        .provider_arc(fake.clone(), None)
        .cache(if cache {
            CacheConfig::default()
        } else {
            CacheConfig::disabled()
        })
        .retry(RetryPolicy::none())
        .policy(Policy::new(settings(extra), pdp))
        .build()
        .unwrap()
}

fn assert_denied(e: &Error, remote: &str) {
    assert_eq!(e.code(), ErrorCode::PermissionDenied, "{e:?}");
    assert_eq!(e.remote_code(), Some(remote), "{e:?}");
    assert!(!e.retryable());
}

const CANARY: &str = "canary-policy-value-9f1";

// ---- Grants ----------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn grant_lives_its_ttl_then_the_pdp_is_asked_again() {
    let fake = Fake::with(&[("env://A", CANARY)]);
    let pdp = FakePdp::allowing(10, 100);
    let r = resolver(&fake, pdp.clone(), "", false);
    let ctx = Context::for_subject("svc-a");
    r.read("env://A").as_(&ctx).await.unwrap();
    tokio::time::advance(Duration::from_millis(9_999)).await;
    r.read("env://A").as_(&ctx).await.unwrap();
    assert_eq!(pdp.calls(), 1, "the grant still holds");
    tokio::time::advance(Duration::from_millis(2)).await;
    r.read("env://A").as_(&ctx).await.unwrap();
    assert_eq!(pdp.calls(), 2, "an expired grant is asked for anew");
}

#[tokio::test]
async fn max_uses_then_denied_without_reaching_the_provider() {
    let fake = Fake::with(&[("env://A", CANARY)]);
    let pdp = FakePdp::allowing(300, 3);
    let r = resolver(&fake, pdp.clone(), "", false);
    let ctx = Context::for_subject("svc-a");
    for _ in 0..3 {
        assert_eq!(
            r.read("env://A")
                .as_(&ctx)
                .await
                .unwrap()
                .as_text()
                .unwrap(),
            CANARY
        );
    }
    let e = r.read("env://A").as_(&ctx).await.unwrap_err();
    assert_denied(&e, "SECRET_AUTHZ_FAILED");
    assert!(!format!("{e:?}{e}").contains(CANARY));
    assert_eq!(fake.reads(), 3);
    assert_eq!(pdp.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_callers_never_exceed_max_uses() {
    let fake = Fake::with(&[("env://A", CANARY)]);
    let pdp = Arc::new(FakePdp {
        delay: Duration::from_millis(20),
        ..Arc::try_unwrap(FakePdp::allowing(300, 5)).unwrap()
    });
    let r = resolver(&fake, pdp.clone(), "", true);
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let r = r.clone();
            tokio::spawn(async move { r.read("env://A").as_(&Context::for_subject("svc-a")).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(s) => {
                assert_eq!(s.as_text().unwrap(), CANARY);
                ok += 1;
            }
            Err(e) => assert_denied(&e, "SECRET_AUTHZ_FAILED"),
        }
    }
    assert_eq!(ok, 5, "exactly max_uses reads succeed");
    assert_eq!(pdp.calls(), 1, "concurrent misses share one decision");
}

#[tokio::test]
async fn a_failed_read_gives_its_use_back() {
    let fake = Fake::with(&[]);
    let pdp = FakePdp::allowing(300, 1);
    let r = resolver(&fake, pdp.clone(), "", false);
    let ctx = Context::for_subject("svc-a");
    let e = r.read("env://LATER").as_(&ctx).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
    fake.set("env://LATER", CANARY);
    let v = r.read("env://LATER").as_(&ctx).await.unwrap();
    assert_eq!(v.as_text().unwrap(), CANARY);
    assert_denied(
        &r.read("env://LATER").as_(&ctx).await.unwrap_err(),
        "SECRET_AUTHZ_FAILED",
    );
}

// ---- Audience, replay, binding ---------------------------------------------------------

#[tokio::test]
async fn audience_must_match_when_the_token_has_one() {
    let fake = Fake::with(&[("env://A", CANARY)]);
    let pdp = FakePdp::allowing(300, 100);
    let r = resolver(&fake, pdp.clone(), "audience = \"secrets.api\"", false);
    let wrong = Context::for_subject("svc-a").with_audience(["other"]);
    assert_denied(
        &r.read("env://A").as_(&wrong).await.unwrap_err(),
        "SECRET_AUTHZ_FAILED",
    );
    assert_eq!((fake.reads(), pdp.calls()), (0, 0));
    let right = Context::for_subject("svc-b").with_audience(["other", "secrets.api"]);
    r.read("env://A").as_(&right).await.unwrap();
    let none = Context::for_subject("svc-c");
    r.read("env://A").as_(&none).await.unwrap();
    // Checked on every call, not only on a grant miss (stricter than the
    // reference): svc-b's grant does not carry a wrong-audience token.
    let b_wrong = Context::for_subject("svc-b").with_audience(["other"]);
    assert_denied(
        &r.read("env://A").as_(&b_wrong).await.unwrap_err(),
        "SECRET_AUTHZ_FAILED",
    );
    assert_eq!(fake.reads(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_replayed_jti_gets_no_new_grant() {
    let fake = Fake::with(&[("env://A", "a"), ("env://B", "b"), ("env://C", "c")]);
    let pdp = FakePdp::allowing(3_600, 100);
    let r = resolver(&fake, pdp.clone(), "replay_window_seconds = 60", false);
    let ctx = Context::for_subject("svc-a").with_jti("jti-1");
    r.read("env://A").as_(&ctx).await.unwrap();
    // The same token on a grant hit is the same request's token: fine.
    r.read("env://A").as_(&ctx).await.unwrap();
    // On a miss it is a replay, whatever the reference or subject.
    assert_denied(
        &r.read("env://B").as_(&ctx).await.unwrap_err(),
        "SECRET_AUTHZ_FAILED",
    );
    let other = Context::for_subject("svc-z").with_jti("jti-1");
    assert_denied(
        &r.read("env://C").as_(&other).await.unwrap_err(),
        "SECRET_AUTHZ_FAILED",
    );
    assert_eq!(pdp.calls(), 1);
    // One batch is one request: its jti is checked once for all misses.
    let batch = Context::for_subject("svc-b").with_jti("jti-2");
    let got = r
        .read_many(["env://A", "env://B", "env://C"])
        .as_(&batch)
        .await
        .unwrap();
    assert_eq!(got.len(), 3);
    // After the window the jti is forgotten.
    tokio::time::advance(Duration::from_secs(61)).await;
    let later = Context::for_subject("svc-q").with_jti("jti-1");
    r.read("env://C").as_(&later).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn binding_drift_is_denied_without_denying_the_rightful_holder() {
    let fake = Fake::with(&[("env://A", CANARY)]);
    let pdp = FakePdp::allowing(3_600, 100);
    let r = resolver(
        &fake,
        pdp.clone(),
        "negative_ttl_seconds = 5\nnegative_jitter_ms = 0",
        false,
    );
    let k1 = Context::for_subject("svc-a").with_cnf_jkt("thumb-1");
    r.read("env://A").as_(&k1).await.unwrap();
    let k2 = Context::for_subject("svc-a").with_mtls_thumbprint("thumb-2");
    for _ in 0..3 {
        assert_denied(
            &r.read("env://A").as_(&k2).await.unwrap_err(),
            "BINDING_DRIFT",
        );
    }
    // The drift is this request's own fact: the rightful key is served at
    // once, with no wait for the negative TTL.
    r.read("env://A").as_(&k1).await.unwrap();
    // A bound grant is not usable without any binding (stricter than the
    // reference, which let an unbound caller through).
    let unbound = Context::for_subject("svc-a");
    assert_denied(
        &r.read("env://A").as_(&unbound).await.unwrap_err(),
        "BINDING_DRIFT",
    );
    r.read("env://A").as_(&k1).await.unwrap();
    // Neither a wrong audience nor a replayed jti of the same subject is
    // remembered against its other requests either.
    let wrong_aud = k1.clone().with_audience(["elsewhere"]);
    assert_denied(
        &r.read("env://A").as_(&wrong_aud).await.unwrap_err(),
        "SECRET_AUTHZ_FAILED",
    );
    r.read("env://A").as_(&k1).await.unwrap();
    assert_eq!((fake.reads(), pdp.calls()), (4, 1));
}

#[tokio::test(start_paused = true)]
async fn a_pdp_denial_is_remembered_per_binding_only() {
    let fake = Fake::with(&[("env://A", CANARY)]);
    let pdp = FakePdp::allowing(3_600, 100);
    pdp.allow.store(false, Ordering::SeqCst);
    let r = resolver(
        &fake,
        pdp.clone(),
        "negative_ttl_seconds = 30\nnegative_jitter_ms = 0",
        false,
    );
    let wrong = Context::for_subject("svc-a").with_cnf_jkt("thumb-wrong");
    assert_denied(&r.read("env://A").as_(&wrong).await.unwrap_err(), "DENY");
    // Repeated from the negative cache for the same request facts...
    assert_denied(
        &r.read("env://A").as_(&wrong).await.unwrap_err(),
        "SECRET_AUTHZ_FAILED",
    );
    assert_eq!(pdp.calls(), 1);
    // ...but a request with another binding gets its own decision.
    pdp.allow.store(true, Ordering::SeqCst);
    let right = Context::for_subject("svc-a").with_cnf_jkt("thumb-right");
    r.read("env://A").as_(&right).await.unwrap();
    assert_eq!((fake.reads(), pdp.calls()), (1, 2));
}

// ---- Negative cache -----------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn negative_entries_expire_within_ttl_plus_jitter() {
    let refs: Vec<String> = (0..20).map(|i| format!("env://N{i}")).collect();
    let fake = Fake::with(&[]);
    for r in &refs {
        fake.set(r, CANARY);
    }
    let pdp = FakePdp::allowing(300, 100);
    pdp.allow.store(false, Ordering::SeqCst);
    let r = resolver(
        &fake,
        pdp.clone(),
        "negative_ttl_seconds = 5\nnegative_jitter_ms = 500",
        false,
    );
    let ctx = Context::for_subject("svc-a");
    for x in &refs {
        assert_denied(&r.read(x).as_(&ctx).await.unwrap_err(), "DENY");
    }
    assert_eq!(pdp.calls(), 20);
    pdp.allow.store(true, Ordering::SeqCst);
    // Before the TTL every denial is repeated from the negative cache.
    tokio::time::advance(Duration::from_millis(4_999)).await;
    for x in &refs {
        assert_denied(
            &r.read(x).as_(&ctx).await.unwrap_err(),
            "SECRET_AUTHZ_FAILED",
        );
    }
    assert_eq!(pdp.calls(), 20);
    // After TTL + the largest jitter, none is.
    tokio::time::advance(Duration::from_millis(502)).await;
    for x in &refs {
        r.read(x).as_(&ctx).await.unwrap();
    }
    assert_eq!(pdp.calls(), 40);
    assert_eq!(fake.reads(), 20);
}

#[tokio::test]
async fn a_denied_read_never_returns_a_cached_value() {
    let fake = Fake::with(&[("env://A", CANARY)]);
    let pdp = FakePdp::allowing(300, 100);
    let r = resolver(&fake, pdp.clone(), "", true);
    r.read("env://A")
        .as_(&Context::for_subject("svc-a"))
        .await
        .unwrap();
    pdp.allow.store(false, Ordering::SeqCst);
    let e = r
        .read("env://A")
        .as_(&Context::for_subject("svc-b"))
        .await
        .unwrap_err();
    assert_denied(&e, "DENY");
    // Plain resolve is the anonymous subject: no grant either.
    assert_denied(&r.resolve("env://A").await.unwrap_err(), "DENY");
    assert_eq!(fake.reads(), 1);
}

// ---- PDP outage --------------------------------------------------------------------------

#[tokio::test]
async fn pdp_outage_honours_existing_grants_only() {
    let fake = Fake::with(&[("env://A", "a"), ("env://B", "b")]);
    let pdp = FakePdp::allowing(300, 5);
    let r = resolver(&fake, pdp.clone(), "", false);
    let ctx = Context::for_subject("svc-a");
    r.read("env://A").as_(&ctx).await.unwrap();
    pdp.up.store(false, Ordering::SeqCst);
    r.read("env://A").as_(&ctx).await.unwrap();
    let e = r.read("env://B").as_(&ctx).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::BackendUnavailable);
    assert!(e.retryable());
    assert_eq!(e.remote_code(), Some("PDP_UNAVAILABLE"));
    assert_eq!(fake.reads(), 2, "B never reached the provider");
    // An outage is not remembered as a denial: back up, B works at once.
    pdp.up.store(true, Ordering::SeqCst);
    r.read("env://B").as_(&ctx).await.unwrap();
}

// ---- Tenants -----------------------------------------------------------------------------------

#[tokio::test]
async fn tenant_mount_guard() {
    let fake = Fake::with(&[
        ("openbao+kv2://secret/app#k", "ok"),
        ("openbao+kv2://other/app#k", CANARY),
        ("local://other/x", CANARY),
    ]);
    let pdp = FakePdp::allowing(300, 100);
    let cfg = r#"
        tenant = "dev"
        [tenants.dev]
        allowed_mounts = ["secret"]
        [tenants.ops]
        allowed_mounts = ["other"]
    "#;
    let r = resolver(&fake, pdp.clone(), cfg, false);
    let dev = Context::for_subject("svc-a");
    r.read("openbao+kv2://secret/app#k")
        .as_(&dev)
        .await
        .unwrap();
    for bad in ["openbao+kv2://other/app#k", "local://other/x"] {
        let e = r.read(bad).as_(&dev).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::TenantMountMismatch, "{bad}");
    }
    let ops = Context::for_subject("svc-a").with_tenant("ops");
    r.read("openbao+kv2://other/app#k").as_(&ops).await.unwrap();
    let unknown = Context::for_subject("svc-a").with_tenant("nobody");
    assert_denied(
        &r.read("openbao+kv2://secret/app#k")
            .as_(&unknown)
            .await
            .unwrap_err(),
        "SECRET_AUTHZ_FAILED",
    );
    assert_eq!(fake.reads(), 2);
}

// ---- Local rules, config, context -------------------------------------------------------

#[tokio::test]
async fn local_rules_from_config() {
    let fake = Fake::with(&[("env://APP_A", "a"), ("env://OPS_B", "b")]);
    let mut cfg = secref::Config::from_toml_str(
        r#"
        [policy]
        grant_max_uses = 2
        [[policy.rules]]
        subject = "svc-*"
        ref_prefix = "env://APP_"
        [[policy.rules]]
        subject = "admin"
        effect = "allow"
        max_uses = 1
        [[policy.rules]]
        subject = "*"
        effect = "deny"
    "#,
    )
    .unwrap();
    cfg.env = secref::config::Env::from_pairs([("SECREF_STORE", "/nonexistent/s")]);
    let policy = Policy::from_table(cfg.policy.as_ref().unwrap(), &cfg.env).unwrap();
    let r = Resolver::builder()
        .provider_arc(fake.clone(), None)
        .cache(CacheConfig::disabled())
        .policy(policy)
        .build()
        .unwrap();
    let svc = Context::for_subject("svc-a");
    r.read("env://APP_A").as_(&svc).await.unwrap();
    r.read("env://APP_A").as_(&svc).await.unwrap();
    assert_denied(
        &r.read("env://APP_A").as_(&svc).await.unwrap_err(),
        "SECRET_AUTHZ_FAILED",
    );
    assert_denied(&r.read("env://OPS_B").as_(&svc).await.unwrap_err(), "DENY");
    let admin = Context::for_subject("admin");
    r.read("env://OPS_B").as_(&admin).await.unwrap();
    assert_denied(
        &r.read("env://APP_A")
            .as_(&Context::for_subject("eve"))
            .await
            .unwrap_err(),
        "DENY",
    );
    // from_config wires [policy] in too.
    let full = Resolver::from_config(&cfg).unwrap();
    assert!(full.policy().is_some());
}

#[test]
fn policy_config_is_strict() {
    for bad in [
        "nope = 1",
        "grant_max_uses = 0",
        "grant_ttl_seconds = 0",
        "[[rules]]\nsubjet = \"x\"",
        "[[rules]]\nmax_uses = 0",
        "[[rules]]\neffect = \"maybe\"",
        "[tenants.dev]\nmounts = [\"x\"]",
        "[pdp]\nurl = \"http://127.0.0.1:1\"\n[[rules]]\nsubject = \"x\"",
        "[pdp]\nurl = \"http://example.com\"",
    ] {
        let table: toml::Table = toml::from_str(bad).unwrap();
        let e = Policy::from_table(&table, &secref::config::Env::default()).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Config, "{bad}: {e}");
    }
    let e = secref::Config::from_toml_str("[policy]\nfoo = 1")
        .and_then(|c| Resolver::from_config(&c).map(|_| ()))
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Config);
}

#[test]
fn context_from_headers_is_case_insensitive() {
    let ctx = Context::from_headers([
        ("X-Subject", "svc-a"),
        ("X-TENANT-ID", "ops"),
        ("X-Aud", " a , ,b "),
        ("x-JTI", "j-1"),
        ("X-Mtls-Thumbprint", "m-1"),
        ("X-Correlation-Id", "c-1"),
        ("X-Issuer", "https://issuer"),
        ("X-Client-Id", "cli"),
        ("Authorization", "Bearer must-not-be-read"),
        ("x-cnf-jkt", ""),
    ]);
    assert_eq!(ctx.subject.as_deref(), Some("svc-a"));
    assert_eq!(ctx.tenant.as_deref(), Some("ops"));
    assert_eq!(ctx.audience, ["a", "b"]);
    assert_eq!(ctx.token_jti.as_deref(), Some("j-1"));
    assert_eq!(ctx.binding(), Some("m-1"));
    assert_eq!(ctx.correlation_id.as_deref(), Some("c-1"));
    assert_eq!(ctx.issuer.as_deref(), Some("https://issuer"));
    assert_eq!(ctx.client_id.as_deref(), Some("cli"));
    assert!(!format!("{ctx:?}").contains("must-not-be-read"));
    assert_eq!(Context::anonymous().subject_or_anonymous(), "anonymous");
}

#[tokio::test]
async fn no_policy_means_unchanged_behaviour() {
    let fake = Fake::with(&[("env://A", CANARY)]);
    let r = Resolver::builder()
        .provider_arc(fake.clone(), None)
        .build()
        .unwrap();
    let ctx = Context::for_subject("anyone").with_audience(["whatever"]);
    for _ in 0..3 {
        r.read("env://A").as_(&ctx).await.unwrap();
        r.resolve("env://A").await.unwrap();
    }
    assert_eq!(fake.reads(), 1, "cached as before");
    assert!(r.policy().is_none() && r.auditor().is_none());
}

#[tokio::test]
async fn a_partial_batch_reads_only_what_is_allowed() {
    let fake = Fake::with(&[
        ("env://APP_A", "a"),
        ("env://APP_B", "b"),
        ("env://OPS_C", CANARY),
    ]);
    let table: toml::Table =
        toml::from_str("grant_max_uses = 10\n[[rules]]\nref_prefix = \"env://APP_\"").unwrap();
    let r = Resolver::builder()
        .provider_arc(fake.clone(), None)
        .cache(CacheConfig::disabled())
        .policy(Policy::from_table(&table, &secref::config::Env::default()).unwrap())
        .build()
        .unwrap();
    let ctx = Context::for_subject("svc-a");
    let out = r
        .read_many(["env://APP_A", "env://OPS_C", "env://APP_B"])
        .as_(&ctx)
        .partial()
        .await
        .unwrap();
    assert_eq!(out.resolved.len(), 2);
    let (failed, e) = out.failures.iter().next().unwrap();
    assert_eq!(failed.to_canonical(), "env://OPS_C");
    assert_denied(e, "DENY");
    assert_eq!(fake.reads(), 2, "the denied reference was never asked for");
    let all = r
        .read_many(["env://APP_A", "env://OPS_C"])
        .as_(&ctx)
        .await
        .unwrap_err();
    assert_eq!(all.code(), ErrorCode::PermissionDenied);
    assert!(!format!("{all:?}{all}").contains(CANARY));
}

#[tokio::test]
async fn a_reference_repeated_in_one_call_uses_one_grant_use() {
    let fake = Fake::with(&[("env://A", CANARY)]);
    let pdp = FakePdp::allowing(300, 1);
    let r = resolver(&fake, pdp.clone(), "", false);
    let ctx = Context::for_subject("svc-a");
    let out = r
        .read_many(["env://A", "env://A", "env://A"])
        .as_(&ctx)
        .partial()
        .await
        .unwrap();
    assert!(out.ok(), "{:?}", out.failures);
    assert_eq!((fake.reads(), pdp.calls()), (1, 1));
    assert_denied(
        &r.read("env://A").as_(&ctx).await.unwrap_err(),
        "SECRET_AUTHZ_FAILED",
    );
}

// ---- Obligations -------------------------------------------------------------------

/// Answers every reference with the same value and records the canonical
/// form of each reference it was asked for.
#[derive(Debug, Default)]
struct Recorder {
    asked: Mutex<Vec<String>>,
}

#[async_trait]
impl Provider for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }
    fn families(&self) -> &[&'static str] {
        &["env", "vault", "local"]
    }
    // Wraps the way the Vault provider does, for its references only.
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            wrap: true,
            ..Capabilities::default()
        }
    }
    fn with_wrap_ttl(&self, r: &SecretRef, ttl: Duration) -> Option<SecretRef> {
        secref::providers::vault::wrapped_ref(r, ttl)
    }
    async fn resolve_many(&self, refs: &[SecretRef]) -> BatchResult<Resolved> {
        let mut asked = self.asked.lock().unwrap();
        Ok(refs
            .iter()
            .map(|r| {
                asked.push(r.to_canonical().to_string());
                Ok(Resolved::new(Secret::from(CANARY)))
            })
            .collect())
    }
    async fn metadata(&self, refs: &[SecretRef]) -> BatchResult<Metadata> {
        let mut asked = self.asked.lock().unwrap();
        Ok(refs
            .iter()
            .map(|r| {
                asked.push(format!("metadata {r}"));
                Ok(Metadata {
                    reference: r.to_canonical().to_string(),
                    current_version: Some("3".into()),
                    ..Metadata::default()
                })
            })
            .collect())
    }
    async fn validate(&self, refs: &[SecretRef]) -> BatchResult<Validation> {
        let mut asked = self.asked.lock().unwrap();
        Ok(refs
            .iter()
            .map(|r| {
                asked.push(format!("validate {r}"));
                Ok(Validation::existence(true))
            })
            .collect())
    }
    async fn permission_check(
        &self,
        refs: &[SecretRef],
        action: Action,
    ) -> BatchResult<Permission> {
        let mut asked = self.asked.lock().unwrap();
        Ok(refs
            .iter()
            .map(|r| {
                asked.push(format!("permission_check {r} {}", action.as_str()));
                Ok(Permission {
                    allowed: true,
                    decision_id: None,
                    evaluated_revision_id: None,
                })
            })
            .collect())
    }
}

fn obligated_resolver(recorder: &Arc<Recorder>) -> Resolver {
    let table = toml::from_str(
        r#"
        grant_max_uses = 10
        [[rules]]
        subject = "svc-a"
        ref_prefix = "openbao+kv2://secret/wrapped/"
        wrap_ttl_seconds = 30.5
        [[rules]]
        subject = "svc-a"
        ref_prefix = "env://WRAPPED_"
        wrap_ttl_seconds = 30
        [[rules]]
        subject = "svc-a"
    "#,
    )
    .unwrap();
    Resolver::builder()
        .provider_arc(recorder.clone(), None)
        .cache(CacheConfig::default())
        .retry(RetryPolicy::none())
        .policy(Policy::from_table(&table, &secref::config::Env::default()).unwrap())
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_wrap_ttl_obligation_makes_the_provider_see_a_wrapped_reference() {
    let rec = Arc::new(Recorder::default());
    let r = obligated_resolver(&rec);
    let ctx = Context::for_subject("svc-a");
    // The caller's own wrap_ttl is replaced by the policy's (rounded up).
    let got = r
        .read("openbao+kv2://secret/wrapped/db#password?version=2&wrap_ttl=1h")
        .as_(&ctx)
        .await
        .unwrap();
    assert_eq!(got.as_text().unwrap(), CANARY);
    // An obligated read is wrapped every time: no cache hit serves it.
    r.read("openbao+kv2://secret/wrapped/db#password?version=2")
        .as_(&ctx)
        .await
        .unwrap();
    // Outside the obligated prefix the reference is read as asked (and cached).
    r.read("openbao+kv2://secret/plain/db")
        .as_(&ctx)
        .await
        .unwrap();
    r.read("openbao+kv2://secret/plain/db")
        .as_(&ctx)
        .await
        .unwrap();
    assert_eq!(
        *rec.asked.lock().unwrap(),
        [
            "openbao+kv2://secret/wrapped/db#password?version=2&wrap_ttl=31s",
            "openbao+kv2://secret/wrapped/db#password?version=2&wrap_ttl=31s",
            "openbao+kv2://secret/plain/db",
        ]
    );
}

#[tokio::test]
async fn an_obligation_the_provider_cannot_meet_is_denied_not_read_unwrapped() {
    let rec = Arc::new(Recorder::default());
    let r = obligated_resolver(&rec);
    let ctx = Context::for_subject("svc-a");
    let e = r.read("env://WRAPPED_TOKEN").as_(&ctx).await.unwrap_err();
    assert_denied(&e, "OBLIGATION_UNSUPPORTED");
    assert!(!format!("{e:?}{e}").contains(CANARY));
    // In a batch, only the obligated non-Vault reference is refused.
    let out = r
        .read_many([
            "env://WRAPPED_TOKEN",
            "env://PLAIN",
            "openbao+kv2://secret/wrapped/x",
        ])
        .as_(&ctx)
        .partial()
        .await
        .unwrap();
    assert_eq!(out.resolved.len(), 2);
    assert_denied(
        &out.failures[&SecretRef::parse("env://WRAPPED_TOKEN").unwrap()],
        "OBLIGATION_UNSUPPORTED",
    );
    assert_eq!(
        *rec.asked.lock().unwrap(),
        ["env://PLAIN", "openbao+kv2://secret/wrapped/x?wrap_ttl=31s"]
    );
}

// ---- Blocking API --------------------------------------------------------------------

#[test]
fn the_blocking_resolver_enforces_the_policy_per_context() {
    let fake = Fake::with(&[("env://APP_A", CANARY), ("env://OPS_B", "b")]);
    let table = toml::from_str(
        r#"
        grant_max_uses = 5
        [[rules]]
        subject = "svc-a"
        ref_prefix = "env://APP_"
    "#,
    )
    .unwrap();
    let r = secref::blocking::Resolver::new(
        Resolver::builder()
            .provider_arc(fake.clone(), None)
            .cache(CacheConfig::disabled())
            .policy(Policy::from_table(&table, &secref::config::Env::default()).unwrap()),
    )
    .unwrap();
    let svc = Context::for_subject("svc-a");
    let eve = Context::for_subject("eve");
    assert_eq!(
        r.read("env://APP_A")
            .as_(&svc)
            .send()
            .unwrap()
            .as_text()
            .unwrap(),
        CANARY
    );
    assert_denied(&r.read("env://APP_A").as_(&eve).send().unwrap_err(), "DENY");
    let all = r.read_many(["env://APP_A"]).as_(&svc).send().unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(
        r.read_many(["env://APP_A", "env://OPS_B"])
            .as_(&svc)
            .send()
            .unwrap_err()
            .code(),
        ErrorCode::PermissionDenied
    );
    let partial = r
        .read_many(["env://APP_A", "env://OPS_B"])
        .as_(&svc)
        .partial()
        .send()
        .unwrap();
    assert_eq!((partial.resolved.len(), partial.failures.len()), (1, 1));
    // Plain resolve is the anonymous subject, which no rule allows.
    assert_denied(&r.resolve("env://APP_A").unwrap_err(), "DENY");
    // Each allowed APP_A read reached the provider; OPS_B never did.
    assert_eq!(fake.reads(), 4);
}

// ---- Non-value operations ----------------------------------------------------------

/// Allows `svc-a` only, recording the action of every request.
#[derive(Debug, Default)]
struct ActionPdp {
    actions: Mutex<Vec<String>>,
}

#[async_trait]
impl Pdp for ActionPdp {
    async fn evaluate(&self, req: &AccessRequest<'_>) -> secref::Result<Decision> {
        self.actions.lock().unwrap().push(req.action.to_string());
        Ok(if req.subject == "svc-a" {
            Decision::Allow(GrantTerms::new(Duration::from_secs(60), 2))
        } else {
            Decision::Deny { decision_id: None }
        })
    }
}

#[tokio::test]
async fn metadata_validate_and_permission_check_pass_the_policy() {
    let rec = Arc::new(Recorder::default());
    let pdp = Arc::new(ActionPdp::default());
    let r = Resolver::builder()
        .provider_arc(rec.clone(), None)
        .retry(RetryPolicy::none())
        .policy(Policy::new(
            settings("[tenants.dev]\nallowed_mounts = [\"secret\"]"),
            pdp.clone(),
        ))
        .build()
        .unwrap();
    let svc = Context::for_subject("svc-a");
    let eve = Context::for_subject("eve");
    let db = "openbao+kv2://secret/app/db";
    // Allowed subject: each operation reaches the provider, as metadata_read.
    let m = r.metadata(db).as_(&svc).await.unwrap();
    assert_eq!(m.current_version.as_deref(), Some("3"));
    assert!(r.validate(db).as_(&svc).await.unwrap().valid);
    // The grant (2 uses) is spent; metadata_read grants are separate from reads.
    assert_denied(
        &r.permission_check(db, Action::Read)
            .as_(&svc)
            .await
            .unwrap_err(),
        "SECRET_AUTHZ_FAILED",
    );
    assert_eq!(
        r.read(db).as_(&svc).await.unwrap().as_text().unwrap(),
        CANARY
    );
    let other = "openbao+kv2://secret/app/other";
    let p = r
        .permission_check_many([other], Action::MetadataRead)
        .as_(&svc)
        .partial()
        .await
        .unwrap();
    assert!(p.ok() && p.resolved[&SecretRef::parse(other).unwrap()].allowed);
    // Denied subject, and plain calls (the anonymous subject): never asked.
    assert_denied(&r.metadata(db).as_(&eve).await.unwrap_err(), "DENY");
    assert_denied(&r.metadata(other).await.unwrap_err(), "DENY");
    // validate is the same action: the denial just made is remembered.
    assert_denied(&r.validate(other).await.unwrap_err(), "SECRET_AUTHZ_FAILED");
    let many = r
        .metadata_many([db, other])
        .as_(&eve)
        .partial()
        .await
        .unwrap();
    assert_eq!(many.failures.len(), 2);
    let many = r.validate_many([db]).as_(&eve).partial().await.unwrap();
    assert_eq!(many.failures.len(), 1);
    // The tenant mount guard applies before the PDP is asked.
    let before = pdp.actions.lock().unwrap().len();
    let e = r
        .metadata("openbao+kv2://foreign/app/db")
        .as_(&svc)
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::TenantMountMismatch, "{e:?}");
    assert_eq!(pdp.actions.lock().unwrap().len(), before);
    assert_eq!(
        *rec.asked.lock().unwrap(),
        [
            "metadata openbao+kv2://secret/app/db",
            "validate openbao+kv2://secret/app/db",
            "openbao+kv2://secret/app/db",
            "permission_check openbao+kv2://secret/app/other metadata_read",
        ]
    );
    let actions = pdp.actions.lock().unwrap();
    assert_eq!(
        actions.iter().filter(|a| *a == "metadata_read").count(),
        actions.len() - 1,
        "every decision but the one read was metadata_read: {actions:?}"
    );
}
