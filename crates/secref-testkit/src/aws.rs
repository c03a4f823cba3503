//! Seeding a real AWS API server — `moto` in server mode, started by
//! `scripts/test.sh` on 127.0.0.1 and announced as
//! `SECREF_TEST_AWS_ENDPOINT` — for the `aws-sm://` / `aws-ssm://` tests.
//!
//! moto does not check signatures, so seeding sends plain AWS JSON 1.1
//! requests; what secref reads back goes through its real SigV4 client.

use serde_json::{json, Value};

/// The credentials and region every AWS test uses (moto accepts any).
pub const ACCESS_KEY_ID: &str = "AKIDSECREFTEST";
/// The secret access key (a canary: it must never show in output or logs).
pub const SECRET_ACCESS_KEY: &str = "aws-secret-key-canary-6f1d";
/// The region.
pub const REGION: &str = "us-east-1";

/// A running moto server.
pub struct Moto {
    endpoint: String,
}

impl Moto {
    /// The server from `SECREF_TEST_AWS_ENDPOINT`, or `None` after printing
    /// why the calling test is skipped.
    pub fn from_env() -> Option<Moto> {
        match std::env::var("SECREF_TEST_AWS_ENDPOINT") {
            Ok(endpoint) if !endpoint.is_empty() => Some(Moto { endpoint }),
            _ => {
                eprintln!(
                    "skipped: SECREF_TEST_AWS_ENDPOINT is not set (scripts/test.sh starts moto_server and sets it)"
                );
                None
            }
        }
    }

    /// The endpoint URL (`http://127.0.0.1:<port>`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A name no other test uses (moto's state is shared by every test).
    pub fn unique(prefix: &str) -> String {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!(
            "{prefix}-{}-{nanos}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Calls `target` (`secretsmanager.CreateSecret`, `AmazonSSM.PutParameter`)
    /// and returns the answer, panicking on an error status.
    pub fn call(&self, target: &str, body: Value) -> Value {
        let (service, _) = target.split_once('.').unwrap();
        let signing = if service == "AmazonSSM" {
            "ssm"
        } else {
            "secretsmanager"
        };
        // A client and a current-thread runtime per call keep the helper
        // usable from plain (non-async) tests and from async ones alike.
        let fut = reqwest::Client::new()
            .post(&self.endpoint)
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", target)
            // moto routes by the service in the credential scope.
            .header(
                "authorization",
                format!(
                    "AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/20260101/{REGION}/{signing}/aws4_request, SignedHeaders=host, Signature=0"
                ),
            )
            .body(body.to_string())
            .send();
        let run = async {
            let resp = fut.await.expect("moto answers");
            let status = resp.status();
            let text = resp.text().await.unwrap();
            assert!(status.is_success(), "{target}: {status} {text}");
            serde_json::from_str(&text).unwrap_or(Value::Null)
        };
        // Inside a tokio test a nested runtime is not allowed: use a thread.
        std::thread::scope(|s| {
            s.spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(run)
            })
            .join()
            .unwrap()
        })
    }

    /// Creates a string secret; returns its first version id.
    pub fn create_string(&self, name: &str, value: &str) -> String {
        let v = self.call(
            "secretsmanager.CreateSecret",
            json!({"Name": name, "SecretString": value}),
        );
        v["VersionId"].as_str().unwrap().to_owned()
    }

    /// Creates a binary secret.
    pub fn create_binary(&self, name: &str, value: &[u8]) {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(value);
        self.call(
            "secretsmanager.CreateSecret",
            json!({"Name": name, "SecretBinary": b64}),
        );
    }

    /// Adds a version (AWSCURRENT moves to it unless `stages` says otherwise);
    /// returns its version id.
    pub fn put_string(&self, name: &str, value: &str, stages: Option<&[&str]>) -> String {
        let mut body = json!({"SecretId": name, "SecretString": value});
        if let Some(s) = stages {
            body["VersionStages"] = json!(s);
        }
        let v = self.call("secretsmanager.PutSecretValue", body);
        v["VersionId"].as_str().unwrap().to_owned()
    }

    /// Schedules a secret for deletion (it can no longer be read).
    pub fn delete_secret(&self, name: &str) {
        self.call("secretsmanager.DeleteSecret", json!({"SecretId": name}));
    }

    /// Puts an SSM parameter (`String`, `StringList`, `SecureString`),
    /// overwriting; returns its new version.
    pub fn put_parameter(&self, name: &str, value: &str, kind: &str) -> u64 {
        let v = self.call(
            "AmazonSSM.PutParameter",
            json!({"Name": name, "Value": value, "Type": kind, "Overwrite": true}),
        );
        v["Version"].as_u64().unwrap()
    }
}
