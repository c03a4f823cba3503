//! No audit event lost when the Kafka broker goes away: a real Tansu broker
//! (binary in `SECREF_TEST_TANSU_BIN`, exported by `scripts/test.sh`) is
//! started by this test, stopped mid-stream while reads go on, and started
//! again on the same port. Every event arrives, none twice, in order, and
//! the counters say so. Skipped (with a message) without the binary.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};
use rskafka::client::ClientBuilder;
use secref::audit::{AuditEvent, AuditOptions, Auditor, FailureMode, KafkaSink};
use secref::policy::Context;
use secref::provider::{BatchResult, Provider, Resolved};
use secref::{Resolver, Secret, SecretRef};

const CANARY: &str = "canary-spill-value-4e1f";

#[derive(Debug)]
struct Fixed;

#[async_trait]
impl Provider for Fixed {
    fn name(&self) -> &str {
        "fixed"
    }
    fn families(&self) -> &[&'static str] {
        &["vault"]
    }
    async fn resolve_many(&self, refs: &[SecretRef]) -> BatchResult<Resolved> {
        Ok(refs
            .iter()
            .map(|_| Ok(Resolved::new(Secret::from(CANARY))))
            .collect())
    }
}

struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts Tansu on `port` (in-memory storage) and waits, bounded, until it
/// accepts connections.
fn start(bin: &Path, port: u16) -> Broker {
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(bin)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tansu starts");
    let broker = Broker(child);
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return broker;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("tansu did not listen on {port}");
}

/// Every event of the audit topic, in offset order.
async fn fetch_all(bootstrap: &str, topic: &str) -> Vec<AuditEvent> {
    let client = ClientBuilder::new(vec![bootstrap.to_owned()])
        .build()
        .await
        .unwrap();
    let partition = client
        .partition_client(topic.to_owned(), 0, UnknownTopicHandling::Retry)
        .await
        .unwrap();
    let end = partition.get_offset(OffsetAt::Latest).await.unwrap();
    let mut offset = partition.get_offset(OffsetAt::Earliest).await.unwrap();
    let mut out = Vec::new();
    for _ in 0..100 {
        if offset >= end {
            break;
        }
        let (records, _) = partition
            .fetch_records(offset, 1..1_000_000, 1_000)
            .await
            .unwrap();
        for r in records {
            offset = offset.max(r.offset + 1);
            let text = String::from_utf8(r.record.value.unwrap()).unwrap();
            assert!(!text.contains(CANARY), "canary in {text}");
            out.push(serde_json::from_str(&text).unwrap());
        }
    }
    out
}

async fn read(resolver: &Resolver, i: usize) {
    let ctx = Context::default();
    let r = format!("openbao+kv2://secret/app{i:02}#k");
    // Reads go on whatever the broker does.
    assert!(resolver.read(r.as_str()).as_(&ctx).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_loses_no_event_and_duplicates_none() {
    let Some(bin) = std::env::var_os("SECREF_TEST_TANSU_BIN").filter(|b| !b.is_empty()) else {
        eprintln!("skipping: SECREF_TEST_TANSU_BIN is not set (scripts/test.sh exports it)");
        return;
    };
    let bin = Path::new(&bin).to_path_buf();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bootstrap = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let spill = dir.path().join("spill.jsonl");
    let sink = KafkaSink::new(&bootstrap, "spilltest").unwrap();
    let topic = sink.topics()[1].to_owned();
    let auditor = Auditor::new(
        Arc::new(sink),
        AuditOptions::default()
            .include_raw_ref(true)
            .on_sink_failure(FailureMode::Spill, Some(spill.clone())),
    )
    .unwrap();
    let resolver = Resolver::builder()
        .provider(Fixed)
        .audit(auditor.clone())
        .build()
        .unwrap();

    // 1. The broker is up.
    let broker = start(&bin, port);
    for i in 0..5 {
        read(&resolver, i).await;
    }
    auditor.flush().await;
    // In-memory storage: what the first broker got is read before it stops.
    let mut seen = fetch_all(&bootstrap, &topic).await;
    assert_eq!(seen.len(), 5);

    // 2. Down: reads go on, events are spilled.
    drop(broker);
    for i in 5..10 {
        read(&resolver, i).await;
    }
    auditor.flush().await;
    let stats = auditor.stats();
    assert_eq!(stats.spilled, 5, "{stats:?}");
    assert!(spill.exists());

    // 3. Back on the same port: the spill file is replayed first.
    let _broker = start(&bin, port);
    for i in 10..15 {
        read(&resolver, i).await;
    }
    for _ in 0..300 {
        auditor.flush().await;
        if auditor.stats().written == 15 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stats = auditor.stats();
    assert_eq!(
        (stats.emitted, stats.written, stats.spilled, stats.replayed),
        (15, 15, 5, 5),
        "{stats:?}"
    );
    assert_eq!((stats.dropped, stats.failed), (0, 0), "{stats:?}");
    assert!(!spill.exists(), "the spill file is gone once replayed");

    seen.extend(fetch_all(&bootstrap, &topic).await);
    let ids: HashSet<&str> = seen.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids.len(), seen.len(), "an event arrived twice");
    // All 15, in emission order.
    let order: Vec<String> = seen
        .iter()
        .map(|e| e.reference.clone().unwrap_or_default())
        .collect();
    let expected: Vec<String> = (0..15)
        .map(|i| format!("openbao+kv2://secret/app{i:02}#k"))
        .collect();
    assert_eq!(order, expected);
}
