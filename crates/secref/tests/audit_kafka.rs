//! Audit events to a real Kafka-compatible broker (Tansu, started by
//! `scripts/test.sh`, address in `SECREF_TEST_KAFKA`): produced through the
//! resolver, fetched back with rskafka from both topics, fields checked and
//! the canary value and raw references absent. Skipped (with a message) when
//! `SECREF_TEST_KAFKA` is unset, so plain `cargo test` works anywhere.

use std::time::Duration;

use secref::audit::{resource_ref, AuditEvent, AuditEventType, Auditor};
use secref::policy::{Context, Policy};
use secref::{Resolver, Secret};
use secref_testkit::fixed::FixedProvider;
use secref_testkit::kafka::{broker, fetch_all};

const CANARY: &str = "canary-kafka-value-a93b";
const SALT: &str = "kafka-test-salt";

#[tokio::test]
async fn audit_events_reach_both_kafka_topics() {
    let Some(bootstrap) = broker() else { return };
    // A fresh prefix per run: topics from earlier runs do not interfere.
    let prefix = format!("secref-test-{}", uuid_like());
    let audit_toml: toml::Table = toml::from_str(&format!(
        "sink = \"kafka\"\nkafka_bootstrap = \"{bootstrap}\"\nkafka_topic_prefix = \"{prefix}\""
    ))
    .unwrap();
    let env = secref::config::Env::from_pairs([("SECRET_TENANT_SALT", SALT)]);
    let auditor = Auditor::from_table(&audit_toml, &env).unwrap();
    let policy_toml: toml::Table = toml::from_str(
        "[[rules]]\nsubject = \"svc-a\"\nmax_uses = 5\n[[rules]]\neffect = \"deny\"",
    )
    .unwrap();
    let r = Resolver::builder()
        .provider(FixedProvider::new(CANARY).with_version("5"))
        .policy(Policy::from_table(&policy_toml, &env).unwrap())
        .audit(auditor)
        .build()
        .unwrap();
    let reference = "openbao+kv2://secret/kafka/app#token";
    let ctx = Context::for_subject("svc-a").with_correlation_id("corr-kafka");
    assert_eq!(
        r.read(reference)
            .as_(&ctx)
            .await
            .unwrap()
            .as_text()
            .unwrap(),
        CANARY
    );
    r.read(reference)
        .as_(&Context::for_subject("eve"))
        .await
        .unwrap_err();
    let a = r.auditor().unwrap();
    a.flush().await;
    let stats = a.stats();
    assert_eq!((stats.written, stats.failed), (2, 0), "{stats:?}");

    let want_ref = resource_ref(&Secret::from(SALT), reference);
    for topic in [
        format!("{prefix}.secrets"),
        format!("{prefix}.secrets.audit"),
    ] {
        let events = tokio::time::timeout(
            Duration::from_secs(60),
            fetch_all::<AuditEvent>(&bootstrap, &topic, CANARY),
        )
        .await
        .expect("fetch finishes");
        assert_eq!(events.len(), 2, "{topic}");
        let (read, denied) = (&events[0], &events[1]);
        assert_eq!(read.event_type, AuditEventType::SecretRead);
        assert!(read.success && !read.cached);
        assert_eq!(read.subject, "svc-a");
        assert_eq!(read.correlation_id.as_deref(), Some("corr-kafka"));
        assert_eq!(read.kv_version.as_deref(), Some("5"));
        assert_eq!(read.provider.as_deref(), Some("fixed"));
        assert_eq!(read.resource_ref.as_deref(), Some(want_ref.as_str()));
        assert_eq!(denied.event_type, AuditEventType::SecretDenied);
        assert_eq!(denied.remote_code.as_deref(), Some("DENY"));
        assert_eq!(denied.resource_ref.as_deref(), Some(want_ref.as_str()));
        for e in &events {
            let json = serde_json::to_string(e).unwrap();
            assert!(!json.contains(CANARY) && !json.contains(reference) && !json.contains(SALT));
        }
    }
}

#[tokio::test]
async fn an_unreachable_broker_spills_events_without_blocking_reads() {
    if broker().is_none() {
        return;
    }
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let table: toml::Table =
        toml::from_str(&format!("sink = \"kafka\"\nkafka_bootstrap = \"{closed}\"")).unwrap();
    let auditor = Auditor::from_table(&table, &secref::config::Env::default()).unwrap();
    let r = Resolver::builder()
        .provider(FixedProvider::new(CANARY).with_version("5"))
        .audit(auditor.clone())
        .build()
        .unwrap();
    r.resolve("openbao+kv2://secret/x#k").await.unwrap();
    auditor.flush().await;
    let s = auditor.stats();
    // The read went through; the event waits in the spill file (the default
    // `on_sink_failure = "spill"`) instead of being lost.
    assert_eq!((s.written, s.spilled, s.dropped), (0, 1, 0), "{s:?}");
}

fn uuid_like() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!("{}-{}", std::process::id(), t.as_nanos())
}
