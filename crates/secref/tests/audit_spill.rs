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

use secref::audit::{AuditEvent, AuditOptions, Auditor, FailureMode, KafkaSink};
use secref::policy::Context;
use secref::Resolver;
use secref_testkit::fixed::FixedProvider;
use secref_testkit::kafka::fetch_all;

const CANARY: &str = "canary-spill-value-4e1f";

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
        .provider(FixedProvider::new(CANARY))
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
    let mut seen = fetch_all::<AuditEvent>(&bootstrap, &topic, CANARY).await;
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

    seen.extend(fetch_all::<AuditEvent>(&bootstrap, &topic, CANARY).await);
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
