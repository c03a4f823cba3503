//! Audit events: one per read outcome, with the keyed `resource_ref` and
//! never the value or (unless asked) the reference; sampling; a full queue
//! drops and counts instead of blocking; the file sink and `[audit]` config.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use secref::audit::{
    resource_ref, AuditEvent, AuditEventType, AuditOptions, AuditSink, Auditor, MemorySink,
};
use secref::policy::{Context, Policy};
use secref::provider::{BatchResult, Provider, Resolved};
use secref::{CacheConfig, Error, ErrorCode, Resolver, RetryPolicy, Secret, SecretRef};

const CANARY: &str = "canary-audit-value-4c2e";
const SALT: &str = "tenant-salt-for-tests";

#[derive(Debug, Default)]
struct Fake {
    answers: Mutex<HashMap<String, Result<&'static str, ErrorCode>>>,
    reads: AtomicUsize,
}

impl Fake {
    fn with(items: &[(&str, Result<&'static str, ErrorCode>)]) -> Arc<Fake> {
        let f = Fake::default();
        for (r, a) in items {
            let key = SecretRef::parse(r).unwrap().to_canonical().to_string();
            f.answers.lock().unwrap().insert(key, *a);
        }
        Arc::new(f)
    }
}

#[async_trait]
impl Provider for Fake {
    fn name(&self) -> &str {
        "fake"
    }
    fn families(&self) -> &[&'static str] {
        &["env", "vault"]
    }
    async fn resolve_many(&self, refs: &[SecretRef]) -> BatchResult<Resolved> {
        self.reads.fetch_add(refs.len(), Ordering::SeqCst);
        let answers = self.answers.lock().unwrap();
        Ok(refs
            .iter()
            .map(|r| match answers.get(r.to_canonical()) {
                Some(Ok(v)) => Ok(Resolved::new(Secret::from(*v)).with_version("3")),
                Some(Err(code)) => Err(Error::new(*code, "backend said no")),
                None => Err(Error::new(ErrorCode::NotFound, "no such secret")),
            })
            .collect())
    }
}

fn auditor(sink: &MemorySink, options: AuditOptions) -> Auditor {
    Auditor::new(Arc::new(sink.clone()), options).unwrap()
}

fn salted() -> AuditOptions {
    AuditOptions::default().salt(Secret::from(SALT))
}

/// Every event, serialized, must not contain any of `forbidden`.
fn assert_clean(events: &[AuditEvent], forbidden: &[&str]) {
    for e in events {
        let json = serde_json::to_string(e).unwrap();
        let debug = format!("{e:?}");
        for f in forbidden {
            assert!(!json.contains(f), "{f} in {json}");
            assert!(!debug.contains(f), "{f} in {debug}");
        }
    }
}

#[tokio::test]
async fn one_event_per_outcome_without_value_or_reference() {
    let fake = Fake::with(&[
        ("openbao+kv2://secret/app#token", Ok(CANARY)),
        (
            "openbao+kv2://secret/old#token?version=1",
            Err(ErrorCode::VersionDeleted),
        ),
        (
            "openbao+kv2://secret/gone#token?version=2",
            Err(ErrorCode::VersionDestroyed),
        ),
    ]);
    let sink = MemorySink::new();
    let policy_toml: toml::Table = toml::from_str(
        "[[rules]]\nsubject = \"svc-a\"\nmax_uses = 10\n[[rules]]\nsubject = \"*\"\neffect = \"deny\"",
    )
    .unwrap();
    let r = Resolver::builder()
        .provider_arc(fake.clone(), None)
        .retry(RetryPolicy::none())
        .policy(Policy::from_table(&policy_toml, &secref::config::Env::default()).unwrap())
        .audit(auditor(&sink, salted()))
        .build()
        .unwrap();
    let ctx = Context::for_subject("svc-a")
        .with_tenant("dev")
        .with_correlation_id("corr-1");
    let token = "openbao+kv2://secret/app#token";
    r.read(token).as_(&ctx).await.unwrap(); // miss
    r.read(token).as_(&ctx).await.unwrap(); // hit
    let denied = r
        .read(token)
        .as_(&Context::for_subject("eve"))
        .await
        .unwrap_err();
    assert_eq!(denied.remote_code(), Some("DENY"));
    r.read("openbao+kv2://secret/missing#x")
        .as_(&ctx)
        .await
        .unwrap_err();
    r.read("openbao+kv2://secret/old#token?version=1")
        .as_(&ctx)
        .await
        .unwrap_err();
    r.read("openbao+kv2://secret/gone#token?version=2")
        .as_(&ctx)
        .await
        .unwrap_err();
    r.auditor().unwrap().flush().await;
    let events = sink.events();
    let kinds: Vec<(AuditEventType, bool, bool)> = events
        .iter()
        .map(|e| (e.event_type, e.cached, e.success))
        .collect();
    assert_eq!(
        kinds,
        [
            (AuditEventType::SecretRead, false, true),
            (AuditEventType::SecretRead, true, true),
            (AuditEventType::SecretDenied, false, false),
            (AuditEventType::SecretError, false, false),
            (AuditEventType::SecretVersionDeleted, false, false),
            (AuditEventType::SecretVersionDestroyed, false, false),
        ]
    );
    let read = &events[0];
    assert_eq!(read.subject, "svc-a");
    assert_eq!(read.tenant.as_deref(), Some("dev"));
    assert_eq!(read.correlation_id.as_deref(), Some("corr-1"));
    assert_eq!(read.provider.as_deref(), Some("fake"));
    assert_eq!(read.kv_version.as_deref(), Some("3"));
    assert!(read.decision_id.is_some());
    assert_eq!(
        read.resource_ref.as_deref(),
        Some(resource_ref(&Secret::from(SALT), token).as_str())
    );
    assert_eq!(read.reference, None);
    let deny = &events[2];
    assert_eq!(deny.subject, "eve");
    assert_eq!(deny.error_code.as_deref(), Some("permission_denied"));
    assert_eq!(deny.remote_code.as_deref(), Some("DENY"));
    assert!(deny.decision_id.is_some());
    assert_eq!(events[3].error_code.as_deref(), Some("not_found"));
    // Same reference, same resource_ref; different ones differ.
    assert_eq!(events[0].resource_ref, events[1].resource_ref);
    assert_ne!(events[0].resource_ref, events[3].resource_ref);
    assert_clean(
        &events,
        &[
            CANARY,
            SALT,
            token,
            "secret/app",
            "secret/missing",
            "secret/old",
        ],
    );
    let ids: std::collections::HashSet<_> = events.iter().map(|e| &e.event_id).collect();
    assert_eq!(ids.len(), events.len());
    assert_eq!(r.auditor().unwrap().stats().written, 6);
}

#[tokio::test]
async fn resource_ref_is_stable_salt_dependent_and_absent_without_salt() {
    let reference = "openbao+kv2://secret/app#token";
    let a = resource_ref(&Secret::from("s1"), reference);
    assert_eq!(a, resource_ref(&Secret::from("s1"), reference));
    assert_ne!(a, resource_ref(&Secret::from("s2"), reference));
    assert_eq!(a.len(), 22, "128 bits, base64url without padding");
    assert!(a
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));

    let fake = Fake::with(&[(reference, Ok(CANARY))]);
    for (options, want_ref, want_raw) in [
        (AuditOptions::default(), false, false),
        (salted(), true, false),
        (salted().include_raw_ref(true), true, true),
    ] {
        let sink = MemorySink::new();
        let r = Resolver::builder()
            .provider_arc(fake.clone(), None)
            .audit(auditor(&sink, options))
            .build()
            .unwrap();
        r.resolve(reference).await.unwrap();
        r.auditor().unwrap().flush().await;
        let e = &sink.events()[0];
        assert_eq!(e.subject, "anonymous");
        assert_eq!(e.resource_ref.is_some(), want_ref);
        assert_eq!(e.reference.as_deref() == Some(reference), want_raw);
        assert_clean(&sink.events(), &[CANARY]);
    }
}

#[tokio::test]
async fn cache_hits_are_sampled_misses_never() {
    let fake = Fake::with(&[("env://A", Ok(CANARY)), ("env://B", Ok(CANARY))]);
    let sink = MemorySink::new();
    let r = Resolver::builder()
        .provider_arc(fake.clone(), None)
        .cache(CacheConfig::default())
        .audit(auditor(&sink, salted().sample_cache_hit_n(3)))
        .build()
        .unwrap();
    r.resolve("env://A").await.unwrap(); // miss
    for _ in 0..7 {
        r.resolve("env://A").await.unwrap(); // hits 1..7: 1st, 4th, 7th kept
    }
    r.resolve("env://B").await.unwrap(); // miss
    let a = r.auditor().unwrap();
    a.flush().await;
    let events = sink.events();
    let misses = events.iter().filter(|e| !e.cached).count();
    let hits = events.iter().filter(|e| e.cached).count();
    assert_eq!((misses, hits), (2, 3));
    assert_eq!(a.stats().sampled_out, 4);
}

/// A sink that holds every write until released, and says when the
/// writer is stuck in it.
#[derive(Debug)]
struct Stuck {
    release: tokio::sync::Semaphore,
    entered: tokio::sync::Notify,
}

#[async_trait]
impl AuditSink for Stuck {
    async fn write(&self, _events: &[AuditEvent]) -> secref::Result<()> {
        self.entered.notify_one();
        let _ = self.release.acquire().await;
        Ok(())
    }
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_instead_of_blocking() {
    let fake = Fake::with(&[("env://A", Ok(CANARY))]);
    let stuck = Arc::new(Stuck {
        release: tokio::sync::Semaphore::new(0),
        entered: tokio::sync::Notify::new(),
    });
    let a = Auditor::new(stuck.clone(), salted().queue_capacity(2)).unwrap();
    let r = Resolver::builder()
        .provider_arc(fake.clone(), None)
        .audit(a.clone())
        .build()
        .unwrap();
    r.resolve("env://A").await.unwrap();
    stuck.entered.notified().await;
    // The writer is stuck on event 1: two more fit the queue, the other 47
    // are dropped, and no read waits. (The timeout only guards against a
    // hang; it asserts no timing.)
    tokio::time::timeout(Duration::from_secs(60), async {
        for _ in 0..49 {
            r.resolve("env://A").await.unwrap();
        }
    })
    .await
    .expect("reads never wait for the audit sink");
    let s = a.stats();
    assert_eq!((s.emitted, s.dropped), (3, 47), "{s:?}");
    stuck.release.add_permits(1_000);
    a.flush().await;
    assert_eq!(a.stats().written, 3);
}

#[tokio::test]
async fn file_sink_from_config_writes_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut cfg = secref::Config::from_toml_str(&format!(
        "[audit]\nsink = \"file\"\npath = {:?}\nsample_cache_hit_n = 1",
        path.to_str().unwrap()
    ))
    .unwrap();
    cfg.env = secref::config::Env::from_pairs([
        ("SECREF_STORE", "/nonexistent/secref.store"),
        ("SECRET_TENANT_SALT", SALT),
        ("AUDIT_CANARY_VAR", CANARY),
    ]);
    let r = Resolver::from_config(&cfg).unwrap();
    // env:// reads the process environment.
    std::env::set_var("AUDIT_CANARY_VAR", CANARY);
    r.resolve("env://AUDIT_CANARY_VAR").await.unwrap();
    r.resolve("env://AUDIT_MISSING_VAR").await.unwrap_err();
    r.auditor().unwrap().flush().await;
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<AuditEvent> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0].event_type, AuditEventType::SecretRead);
    assert_eq!(lines[0].provider.as_deref(), Some("env"));
    assert_eq!(
        lines[0].resource_ref.as_deref(),
        Some(resource_ref(&Secret::from(SALT), "env://AUDIT_CANARY_VAR").as_str())
    );
    assert_eq!(lines[1].event_type, AuditEventType::SecretError);
    for bad in [CANARY, SALT, "AUDIT_CANARY_VAR", "AUDIT_MISSING_VAR"] {
        assert!(!text.contains(bad), "{bad}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn audit_config_is_strict() {
    let env = secref::config::Env::default();
    for bad in [
        "nope = 1",
        "sink = \"syslog\"",
        "sink = \"file\"",
        "path = \"x.jsonl\"",
        "sample_cache_hit_n = 0",
        "queue_capacity = 0",
        "sink = \"kafka\"",
        "sink = \"kafka\"\nkafka_bootstrap = \"kafka.example.com:9092\"",
        "sink = \"kafka\"\nkafka_bootstrap = \"127.0.0.1\"",
        "sink = \"kafka\"\nkafka_bootstrap = \"127.0.0.1:9092\"\nkafka_topic_prefix = \"a b\"",
    ] {
        let table: toml::Table = toml::from_str(bad).unwrap();
        let e = Auditor::from_table(&table, &env).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Config, "{bad}: {e}");
    }
    let bad_env = secref::config::Env::from_pairs([("AUDIT_SAMPLE_CACHE_HIT_N", "zero")]);
    let e = Auditor::from_table(&toml::Table::new(), &bad_env).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Config);
    // The Kafka bootstrap may come from the environment.
    let kenv = secref::config::Env::from_pairs([("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")]);
    let table: toml::Table = toml::from_str("sink = \"kafka\"").unwrap();
    Auditor::from_table(&table, &kenv).unwrap();
}

// ---- Canary: no value, salt or token in traces or Debug ---------------------------

#[tokio::test]
async fn traces_and_debug_never_contain_values_or_salts() {
    let capture = secref_testkit::capture::install();
    let fake = Fake::with(&[("openbao+kv2://secret/app#token", Ok(CANARY))]);
    let sink = MemorySink::new();
    let a = auditor(&sink, salted());
    let policy_toml: toml::Table =
        toml::from_str("[[rules]]\nsubject = \"svc-a\"\nmax_uses = 2").unwrap();
    let r = Resolver::builder()
        .provider_arc(fake.clone(), None)
        .policy(Policy::from_table(&policy_toml, &secref::config::Env::default()).unwrap())
        .audit(a.clone())
        .build()
        .unwrap();
    let ctx = Context::for_subject("svc-a").with_cnf_jkt("k1");
    let token = "openbao+kv2://secret/app#token";
    let got = r.read(token).as_(&ctx).await.unwrap();
    let drift = r
        .read(token)
        .as_(&Context::for_subject("svc-a").with_cnf_jkt("k2"))
        .await
        .unwrap_err();
    let denied = r
        .read(token)
        .as_(&Context::for_subject("eve"))
        .await
        .unwrap_err();
    a.flush().await;
    let debug = format!("{got:?} {r:?} {a:?} {drift:?} {drift} {denied:?} {denied}");
    let logs = capture.text();
    for bad in [CANARY, SALT] {
        assert!(!logs.contains(bad), "{bad} leaked into traces");
        assert!(!debug.contains(bad), "{bad} leaked into Debug/Display");
    }
    assert_clean(&sink.events(), &[CANARY, SALT, token]);
}
