//! [`KafkaSink`]: audit events to Kafka topics `{prefix}.secrets` and
//! `{prefix}.secrets.audit` (CRUDService's layout; every secret event goes
//! to both), through the pure-Rust `rskafka` client.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::ClientBuilder;
use rskafka::record::Record;
use tokio::sync::Mutex;

use super::{AuditEvent, AuditSink};
use crate::error::{Error, ErrorCode, Result};

/// How long one connect / produce keeps retrying before the batch fails.
const DEADLINE: Duration = Duration::from_secs(10);

/// Writes audit events as JSON records (key: the event id) to partition 0 of
/// `{prefix}.secrets` and `{prefix}.secrets.audit`, creating the topics when
/// missing. Connects lazily and reconnects after a failure.
///
/// Plaintext only (no TLS or SASL is built in), so the bootstrap broker must
/// be on loopback; events carry no values, but subjects and tenants are
/// still not for the open network.
pub struct KafkaSink {
    bootstrap: String,
    topics: [String; 2],
    conn: Mutex<Option<[PartitionClient; 2]>>,
}

impl fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSink")
            .field("bootstrap", &self.bootstrap)
            .field("topics", &self.topics)
            .finish()
    }
}

impl KafkaSink {
    /// A sink for `bootstrap` (`host:port` on loopback) and a topic prefix.
    ///
    /// ```
    /// use secref::audit::KafkaSink;
    /// let s = KafkaSink::new("127.0.0.1:9092", "crud").unwrap();
    /// assert_eq!(s.topics(), ["crud.secrets", "crud.secrets.audit"]);
    /// assert!(KafkaSink::new("kafka.example.com:9092", "crud").is_err());
    /// assert!(KafkaSink::new("127.0.0.1:9092", "bad prefix").is_err());
    /// ```
    pub fn new(bootstrap: &str, prefix: &str) -> Result<KafkaSink> {
        let bootstrap = bootstrap.trim();
        check_loopback(bootstrap)?;
        let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if prefix.is_empty() || prefix.len() > 200 || !prefix.chars().all(legal) {
            return Err(Error::config(
                "the Kafka topic prefix must be 1-200 characters of [A-Za-z0-9._-]",
            ));
        }
        Ok(KafkaSink {
            bootstrap: bootstrap.to_owned(),
            topics: [
                format!("{prefix}.secrets"),
                format!("{prefix}.secrets.audit"),
            ],
            conn: Mutex::new(None),
        })
    }

    /// The two topics written.
    pub fn topics(&self) -> [&str; 2] {
        [&self.topics[0], &self.topics[1]]
    }

    async fn connect(&self) -> Result<[PartitionClient; 2]> {
        let backoff = rskafka::BackoffConfig {
            deadline: Some(DEADLINE),
            ..Default::default()
        };
        let client = ClientBuilder::new(vec![self.bootstrap.clone()])
            .client_id("secref-audit")
            .backoff_config(backoff)
            .build()
            .await
            .map_err(|_| unavailable("cannot connect to the Kafka broker"))?;
        let controller = client
            .controller_client()
            .map_err(|_| unavailable("no Kafka controller"))?;
        let existing: Vec<String> = client
            .list_topics()
            .await
            .map_err(|_| unavailable("cannot list Kafka topics"))?
            .into_iter()
            .map(|t| t.name)
            .collect();
        for topic in &self.topics {
            if !existing.contains(topic) {
                // Another writer may create it first: that is fine.
                let _ = controller.create_topic(topic.clone(), 1, 1, 5_000).await;
            }
        }
        let mut clients = Vec::with_capacity(2);
        for topic in &self.topics {
            clients.push(
                client
                    .partition_client(topic.clone(), 0, UnknownTopicHandling::Retry)
                    .await
                    .map_err(|_| unavailable("cannot open the Kafka audit topic"))?,
            );
        }
        let [a, b]: [PartitionClient; 2] = clients
            .try_into()
            .map_err(|_| Error::internal("two topics give two partition clients"))?;
        Ok([a, b])
    }
}

fn unavailable(msg: &'static str) -> Error {
    Error::new(ErrorCode::BackendUnavailable, msg)
}

fn check_loopback(bootstrap: &str) -> Result<()> {
    let bad = || {
        Error::config("the Kafka bootstrap must be host:port on loopback (no TLS is built in)")
            .with_hint("use 127.0.0.1:<port>, [::1]:<port> or localhost:<port>")
    };
    let (host, port) = bootstrap.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(bad())
    }
}

#[async_trait]
impl AuditSink for KafkaSink {
    /// Connected (connecting now if need be).
    async fn health(&self) -> Result<()> {
        let mut conn = self.conn.lock().await;
        if conn.is_none() {
            *conn = Some(self.connect().await?);
        }
        Ok(())
    }

    async fn write(&self, events: &[AuditEvent]) -> Result<()> {
        let mut conn = self.conn.lock().await;
        if conn.is_none() {
            *conn = Some(self.connect().await?);
        }
        let clients = conn.as_ref().expect("connected above");
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default();
        let timestamp =
            rskafka::chrono::DateTime::from_timestamp_millis(now_ms).unwrap_or_default();
        let mut records = Vec::with_capacity(events.len());
        for e in events {
            let value = serde_json::to_vec(e)
                .map_err(|_| Error::internal("audit event not serializable"))?;
            records.push(Record {
                key: Some(e.event_id.clone().into_bytes()),
                value: Some(value),
                headers: [(
                    "event_type".to_string(),
                    serde_json::to_value(e.event_type)
                        .ok()
                        .and_then(|v| v.as_str().map(|s| s.as_bytes().to_vec()))
                        .unwrap_or_default(),
                )]
                .into(),
                timestamp,
            });
        }
        for client in clients {
            if client
                .produce(records.clone(), Compression::NoCompression)
                .await
                .is_err()
            {
                // Reconnect on the next batch.
                *conn = None;
                return Err(unavailable("the Kafka broker refused the audit events"));
            }
        }
        Ok(())
    }
}
