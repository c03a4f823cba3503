//! Reading back what secref produced to a Kafka-compatible broker (Tansu,
//! started by `scripts/test.sh`), for the audit sink tests.

use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};
use rskafka::client::ClientBuilder;
use serde::de::DeserializeOwned;

/// The broker from `SECREF_TEST_KAFKA`, or `None` after printing why the
/// calling test is skipped.
pub fn broker() -> Option<String> {
    match std::env::var("SECREF_TEST_KAFKA") {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            eprintln!("skipping: SECREF_TEST_KAFKA is not set (scripts/test.sh starts Tansu)");
            None
        }
    }
}

/// Every record of `topic`'s partition 0, in offset order, each decoded
/// from JSON; panics if any record's text contains `canary` (a value that
/// must never be produced).
pub async fn fetch_all<T: DeserializeOwned>(bootstrap: &str, topic: &str, canary: &str) -> Vec<T> {
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
    // Bounded: at most 100 fetches.
    for _ in 0..100 {
        if offset >= end {
            break;
        }
        let (records, _high) = partition
            .fetch_records(offset, 1..1_000_000, 1_000)
            .await
            .unwrap();
        for r in records {
            offset = offset.max(r.offset + 1);
            let text = String::from_utf8(r.record.value.unwrap()).unwrap();
            assert!(!text.contains(canary), "canary in {text}");
            out.push(serde_json::from_str(&text).unwrap());
        }
    }
    out
}
