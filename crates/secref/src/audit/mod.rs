//! Non-leaky audit events for every read outcome.
//!
//! When an [`Auditor`] is installed (`[audit]` in `secref.toml`, or
//! [`ResolverBuilder::audit`](crate::ResolverBuilder::audit)), the resolver
//! emits one [`AuditEvent`] per reference it is asked to read: a value
//! delivered (`SECRET_READ`, with `cached`), a policy refusal
//! (`SECRET_DENIED`), or a failure (`SECRET_ERROR`, or
//! `SECRET_VERSION_DELETED` / `SECRET_VERSION_DESTROYED`).
//!
//! An event never holds the value. It holds the reference only as
//! `resource_ref`: HMAC-SHA256 keyed by the tenant salt over the canonical
//! reference, truncated to 128 bits, base64url without padding (22
//! characters). That keeps events joinable per secret without naming it.
//! The salt comes from `$SECRET_TENANT_SALT` (or the variable `salt_env`
//! names); **without a salt, `resource_ref` is omitted**, since an unkeyed
//! hash of a guessable name would be as good as the name. The raw canonical
//! reference is included (`reference`) only with `include_raw_ref = true`.
//!
//! Emitting never blocks a read: events go through a bounded queue to a
//! background thread that writes them to the [`AuditSink`]; when the queue
//! is full the event is dropped and counted ([`Auditor::stats`]). Cache-hit
//! reads can be sampled: with `sample_cache_hit_n = N` (or
//! `$AUDIT_SAMPLE_CACHE_HIT_N`), the 1st, (N+1)th, (2N+1)th… hit is emitted.
//! Misses, denials and errors are never sampled.
//!
//! ```toml
//! [audit]
//! sink = "stderr"            # "stderr" | "file" | "kafka"
//! path = "audit.jsonl"       # for "file" (created 0600, appended)
//! salt_env = "SECRET_TENANT_SALT"
//! include_raw_ref = false
//! sample_cache_hit_n = 1
//! queue_capacity = 1024
//! kafka_bootstrap = "127.0.0.1:9092"   # or $KAFKA_BOOTSTRAP_SERVERS
//! kafka_topic_prefix = "crud"          # or $KAFKA_TOPIC_PREFIX
//! chain_key_env = "SECREF_AUDIT_KEY"   # "file": chain records (or chain_key_file)
//! rotate_bytes = 104857600             # "file": rotate past this size
//! on_sink_failure = "spill"            # "spill" | "block" | "fail"
//! spill_path = "audit-spill.jsonl"     # default: <data dir>/secref/audit-spill-<sink id>.jsonl
//! block_timeout_ms = 2000              # "block": longest a read waits
//! ```
//!
//! **Tamper evidence** ([`chain`]): with a chain key, every record of the
//! file carries `seq`, `prev` and an HMAC `mac` chaining it to the record
//! before, also across rotated files; `secref audit verify` checks them.
//!
//! **No event lost silently.** When the sink fails, `on_sink_failure`
//! decides: `spill` (default) appends the events, in order, to the spill
//! file (0600) and replays it before anything newer once the sink takes
//! writes again (at least once; the Kafka record key is the event id, so a
//! replayed duplicate is recognisable); `fail` refuses reads at once while
//! the sink is down (`backend_unavailable`, retryable); `block` lets a read
//! wait up to `block_timeout_ms` for the sink, then refuses it. Events that
//! cannot be queued or spilled are counted (`dropped`, `failed`) and logged,
//! never silently lost.

pub mod chain;
#[cfg(feature = "kafka")]
mod kafka;
mod spill;

#[cfg(feature = "kafka")]
pub use kafka::KafkaSink;

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::{mpsc, oneshot};

use crate::config::Env;
use crate::error::{Error, ErrorCode, Result};
use crate::policy::Context;
use crate::reference::SecretRef;
use crate::secret::Secret;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum AuditEventType {
    /// A value was delivered.
    SecretRead,
    /// The policy refused the read.
    SecretDenied,
    /// The read failed.
    SecretError,
    /// The pinned version is soft-deleted.
    SecretVersionDeleted,
    /// The pinned version is destroyed.
    SecretVersionDestroyed,
}

/// One audit event. Never holds a value or a credential.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuditEvent {
    /// A fresh UUID.
    pub event_id: String,
    /// RFC 3339, UTC, milliseconds.
    pub timestamp: String,
    /// What happened.
    pub event_type: AuditEventType,
    /// Always `secref`.
    pub service: String,
    /// The caller's correlation id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The caller's subject (`anonymous` without one).
    pub subject: String,
    /// The caller's tenant, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The provider that served (or would have served) the reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// HMAC of the canonical reference (see the module docs); absent
    /// without a salt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_ref: Option<String>,
    /// The canonical reference itself, only with `include_raw_ref = true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Served from the resolver's cache.
    pub cached: bool,
    /// Whether a value was delivered.
    pub success: bool,
    /// The error code on failure (`permission_denied`, `not_found`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// The remote code on failure (`DENY`, `BINDING_DRIFT`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_code: Option<String>,
    /// The policy decision behind the grant or denial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_id: Option<String>,
    /// The secret's version (KV version), when the provider reports one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_version: Option<String>,
}

/// `resource_ref` for a canonical reference: HMAC-SHA256(salt, canonical),
/// first 16 bytes, base64url without padding.
///
/// ```
/// use secref::{audit::resource_ref, Secret};
/// let salt = Secret::from("tenant-salt");
/// let a = resource_ref(&salt, "openbao+kv2://secret/app#token");
/// assert_eq!(a.len(), 22);
/// assert_eq!(a, resource_ref(&salt, "openbao+kv2://secret/app#token"));
/// assert_ne!(a, resource_ref(&Secret::from("other"), "openbao+kv2://secret/app#token"));
/// ```
pub fn resource_ref(salt: &Secret, canonical: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(salt.expose_bytes()).expect("HMAC takes any key length");
    mac.update(canonical.as_bytes());
    let digest = mac.finalize().into_bytes();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16])
}

// ---- Sinks -------------------------------------------------------------------

/// Where events go. Called from the auditor's background thread with
/// batches in emission order.
#[async_trait]
pub trait AuditSink: Send + Sync + fmt::Debug + 'static {
    /// Writes a batch. On an error the batch goes to the spill file (if
    /// any) and is written again later, else it is counted as failed.
    async fn write(&self, events: &[AuditEvent]) -> Result<()>;

    /// Whether the sink can take writes now (readiness; the writer's probe
    /// while the sink is down). Default: yes.
    async fn health(&self) -> Result<()> {
        Ok(())
    }
}

/// JSON lines on stderr or appended to a file.
#[derive(Debug)]
pub struct JsonLinesSink {
    target: JsonTarget,
}

#[derive(Debug)]
enum JsonTarget {
    Stderr,
    File(parking_lot::Mutex<FileState>),
}

/// An audit file being appended to.
#[derive(Debug)]
struct FileState {
    file: std::fs::File,
    path: PathBuf,
    size: u64,
    /// With a chain key: the key and the last record's link.
    chain: Option<(chain::ChainKey, chain::Link)>,
    /// Rotate once the file reaches this size.
    rotate_bytes: Option<u64>,
}

fn open_append(path: &Path) -> Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path).map_err(|e| {
        Error::config(format!(
            "audit file {} cannot be opened: {}",
            path.display(),
            e.kind()
        ))
    })
}

impl FileState {
    fn io(&self, e: std::io::Error) -> Error {
        Error::new(
            ErrorCode::Io,
            format!("audit file {}: {}", self.path.display(), e.kind()),
        )
    }

    fn write(&mut self, events: &[AuditEvent]) -> Result<()> {
        let (buf, link) = match &self.chain {
            None => (to_lines(events)?, None),
            Some((key, link)) => {
                let mut buf = Vec::new();
                let mut link = link.clone();
                for e in events {
                    let json = serde_json::to_vec(e)
                        .map_err(|_| Error::internal("audit event not serializable"))?;
                    link = chain::seal(key, &link, &json, &mut buf);
                }
                (buf, Some(link))
            }
        };
        self.file.write_all(&buf).map_err(|e| self.io(e))?;
        self.size += buf.len() as u64;
        if let (Some((_, last)), Some(link)) = (&mut self.chain, link) {
            *last = link;
        }
        if self.rotate_bytes.is_some_and(|max| self.size >= max) {
            self.rotate()?;
        }
        Ok(())
    }

    /// Renames the file to the next `<path>.NNNNNN` and starts a fresh one;
    /// the chain goes on (the new file's first `prev` is the old last mac).
    fn rotate(&mut self) -> Result<()> {
        let next = chain::rotated(&self.path).last().map_or(1, |(n, _)| n + 1);
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{next:06}"));
        std::fs::rename(&self.path, PathBuf::from(name)).map_err(|e| self.io(e))?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

impl JsonLinesSink {
    /// Lines on stderr.
    pub fn stderr() -> JsonLinesSink {
        JsonLinesSink {
            target: JsonTarget::Stderr,
        }
    }

    /// Lines appended to `path` (created with mode 0600 on Unix).
    pub fn file(path: &Path) -> Result<JsonLinesSink> {
        JsonLinesSink::file_with(path, None, None)
    }

    /// Lines appended to `path`, chained under `key` if given (continuing
    /// the chain already in the file or, when it is empty, in its newest
    /// rotated file), rotated once the file reaches `rotate_bytes`.
    pub fn file_with(
        path: &Path,
        key: Option<chain::ChainKey>,
        rotate_bytes: Option<u64>,
    ) -> Result<JsonLinesSink> {
        let file = open_append(path)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let chain = match key {
            None => None,
            Some(key) => {
                let mut link = chain::last_link(&key, path)?;
                if link.is_none() {
                    if let Some((_, older)) = chain::rotated(path).last() {
                        link = chain::last_link(&key, older)?;
                    }
                }
                Some((key, link.unwrap_or_else(chain::Link::genesis)))
            }
        };
        Ok(JsonLinesSink {
            target: JsonTarget::File(parking_lot::Mutex::new(FileState {
                file,
                path: path.to_path_buf(),
                size,
                chain,
                rotate_bytes,
            })),
        })
    }
}

fn to_lines(events: &[AuditEvent]) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    for e in events {
        serde_json::to_writer(&mut buf, e)
            .map_err(|_| Error::internal("audit event not serializable"))?;
        buf.push(b'\n');
    }
    Ok(buf)
}

#[async_trait]
impl AuditSink for JsonLinesSink {
    async fn write(&self, events: &[AuditEvent]) -> Result<()> {
        match &self.target {
            JsonTarget::Stderr => std::io::stderr().lock().write_all(&to_lines(events)?)?,
            JsonTarget::File(f) => f.lock().write(events)?,
        }
        Ok(())
    }

    /// The file can still be appended to (it may have been removed or made
    /// read-only under the server).
    async fn health(&self) -> Result<()> {
        if let JsonTarget::File(f) = &self.target {
            let path = f.lock().path.clone();
            std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|e| {
                    Error::new(
                        ErrorCode::Io,
                        format!("audit file {}: {}", path.display(), e.kind()),
                    )
                })?;
        }
        Ok(())
    }
}

/// Keeps events in memory (tests, embedding).
#[derive(Debug, Default, Clone)]
pub struct MemorySink {
    events: Arc<parking_lot::Mutex<Vec<AuditEvent>>>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> MemorySink {
        MemorySink::default()
    }

    /// Every event written so far.
    pub fn events(&self) -> Vec<AuditEvent> {
        self.events.lock().clone()
    }

    /// Forgets the events written so far.
    pub fn clear(&self) {
        self.events.lock().clear();
    }
}

#[async_trait]
impl AuditSink for MemorySink {
    async fn write(&self, events: &[AuditEvent]) -> Result<()> {
        self.events.lock().extend_from_slice(events);
        Ok(())
    }
}

// ---- Settings ------------------------------------------------------------------

/// The variable holding the tenant salt unless `[audit] salt_env` names
/// another.
pub const DEFAULT_SALT_ENV: &str = "SECRET_TENANT_SALT";

/// The variables holding the audit policy's secrets under `cfg`: the tenant
/// salt's ([`DEFAULT_SALT_ENV`], and the one `salt_env` names) and the chain
/// key's (`chain_key_env`). With the salt, `resource_ref`s can be matched
/// against guessed names; with the chain key, records can be forged. Read
/// leniently: an `[audit]` table that does not parse still names its
/// variables (building the auditor reports the error).
pub fn credential_env_vars(cfg: &crate::Config) -> Vec<String> {
    let mut vars = vec![DEFAULT_SALT_ENV.to_string()];
    if let Some(table) = &cfg.audit {
        for key in ["salt_env", "chain_key_env"] {
            if let Some(name) = table.get(key).and_then(toml::Value::as_str) {
                vars.push(name.to_string());
            }
        }
    }
    vars
}

/// `[audit]` settings (see the module docs). Unknown keys are an error.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AuditSettings {
    /// `stderr` (default), `file` or `kafka`.
    #[serde(default)]
    pub sink: SinkKind,
    /// The file for `sink = "file"`.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// The environment variable holding the HMAC salt.
    #[serde(default = "AuditSettings::default_salt_env")]
    pub salt_env: String,
    /// Put the raw canonical reference in events too.
    #[serde(default)]
    pub include_raw_ref: bool,
    /// Emit one in N cache-hit reads (default `$AUDIT_SAMPLE_CACHE_HIT_N`,
    /// else 1 = all).
    #[serde(default)]
    pub sample_cache_hit_n: Option<u32>,
    /// Events queued before new ones are dropped.
    #[serde(default = "AuditSettings::default_capacity")]
    pub queue_capacity: usize,
    /// Kafka bootstrap `host:port` (loopback only: no TLS is built in).
    #[serde(default)]
    pub kafka_bootstrap: Option<String>,
    /// Kafka topic prefix (default `$KAFKA_TOPIC_PREFIX`, else `crud`).
    #[serde(default)]
    pub kafka_topic_prefix: Option<String>,
    /// `sink = "file"`: the environment variable holding the chain key.
    #[serde(default)]
    pub chain_key_env: Option<String>,
    /// `sink = "file"`: an owner-only file holding the chain key.
    #[serde(default)]
    pub chain_key_file: Option<PathBuf>,
    /// `sink = "file"`: rotate the file once it reaches this many bytes.
    #[serde(default)]
    pub rotate_bytes: Option<u64>,
    /// What happens while the sink is down (default `spill`).
    #[serde(default)]
    pub on_sink_failure: FailureMode,
    /// The spill file (default `<data dir>/secref/audit-spill-<sink id>.jsonl`,
    /// one per sink).
    #[serde(default)]
    pub spill_path: Option<PathBuf>,
    /// `on_sink_failure = "block"`: longest a read waits for the sink.
    #[serde(default = "AuditSettings::default_block_ms")]
    pub block_timeout_ms: u64,
}

/// What happens to reads and events while the audit sink is down.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FailureMode {
    /// Reads go on; events go to the spill file and are replayed, in
    /// order, when the sink is back.
    #[default]
    Spill,
    /// Reads wait (bounded) for the sink, then fail.
    Block,
    /// Reads fail at once (`backend_unavailable`, retryable).
    Fail,
}

/// Which sink `[audit]` builds.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// JSON lines on stderr.
    #[default]
    Stderr,
    /// JSON lines appended to `path`.
    File,
    /// Kafka topics `{prefix}.secrets` and `{prefix}.secrets.audit`.
    Kafka,
}

impl AuditSettings {
    fn default_salt_env() -> String {
        DEFAULT_SALT_ENV.into()
    }
    fn default_capacity() -> usize {
        1024
    }
    fn default_block_ms() -> u64 {
        2000
    }

    /// Parses an `[audit]` table strictly.
    pub fn from_table(table: &toml::Table) -> Result<AuditSettings> {
        let s: AuditSettings = toml::Value::Table(table.clone())
            .try_into()
            .map_err(|e: toml::de::Error| crate::config::table_error("[audit]", &e))?;
        if s.queue_capacity == 0 || s.queue_capacity > 1_000_000 {
            return Err(Error::config(
                "[audit] queue_capacity must be between 1 and 1000000",
            ));
        }
        if s.sample_cache_hit_n == Some(0) {
            return Err(Error::config(
                "[audit] sample_cache_hit_n must be at least 1",
            ));
        }
        match s.sink {
            SinkKind::File if s.path.is_none() => {
                return Err(Error::config("[audit] sink = \"file\" needs a path"))
            }
            SinkKind::Stderr | SinkKind::Kafka if s.path.is_some() => {
                return Err(Error::config("[audit] path is only for sink = \"file\""))
            }
            SinkKind::Stderr | SinkKind::Kafka
                if s.chain_key_env.is_some()
                    || s.chain_key_file.is_some()
                    || s.rotate_bytes.is_some() =>
            {
                return Err(Error::config(
                    "[audit] chain_key_env, chain_key_file and rotate_bytes are only for sink = \"file\"",
                ))
            }
            _ => {}
        }
        if s.chain_key_env.is_some() && s.chain_key_file.is_some() {
            return Err(Error::config(
                "[audit] takes one of chain_key_env, chain_key_file",
            ));
        }
        if s.rotate_bytes.is_some_and(|n| n < 1024) {
            return Err(Error::config("[audit] rotate_bytes must be at least 1024"));
        }
        if s.block_timeout_ms == 0 || s.block_timeout_ms > 60_000 {
            return Err(Error::config(
                "[audit] block_timeout_ms must be between 1 and 60000",
            ));
        }
        Ok(s)
    }
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings::from_table(&toml::Table::new()).expect("defaults are valid")
    }
}

/// Options of an [`Auditor`].
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct AuditOptions {
    /// The HMAC salt for `resource_ref`; none = omitted.
    pub salt: Option<Secret>,
    /// Put the raw canonical reference in events too.
    pub include_raw_ref: bool,
    /// Emit one in N cache hits (0 or 1 = all).
    pub sample_cache_hit_n: u32,
    /// Queue capacity (0 = 1024).
    pub queue_capacity: usize,
    /// What happens while the sink is down.
    pub on_sink_failure: FailureMode,
    /// Where failed batches wait for the sink (none: counted as failed).
    pub spill_path: Option<PathBuf>,
    /// `FailureMode::Block`: longest a read waits (0 = 2 s).
    pub block_timeout: std::time::Duration,
}

impl fmt::Debug for AuditOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditOptions")
            .field("salt", &self.salt.as_ref().map(|_| "[REDACTED]"))
            .field("include_raw_ref", &self.include_raw_ref)
            .field("sample_cache_hit_n", &self.sample_cache_hit_n)
            .field("queue_capacity", &self.queue_capacity)
            .field("on_sink_failure", &self.on_sink_failure)
            .field("spill_path", &self.spill_path)
            .finish()
    }
}

impl AuditOptions {
    /// Sets the salt.
    #[must_use]
    pub fn salt(mut self, salt: Secret) -> Self {
        self.salt = Some(salt);
        self
    }

    /// Sets cache-hit sampling.
    #[must_use]
    pub fn sample_cache_hit_n(mut self, n: u32) -> Self {
        self.sample_cache_hit_n = n;
        self
    }

    /// Sets the queue capacity.
    #[must_use]
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n;
        self
    }

    /// Sets what happens while the sink is down, and the spill file.
    #[must_use]
    pub fn on_sink_failure(mut self, mode: FailureMode, spill_path: Option<PathBuf>) -> Self {
        self.on_sink_failure = mode;
        self.spill_path = spill_path;
        self
    }

    /// Includes the raw canonical reference in events.
    #[must_use]
    pub fn include_raw_ref(mut self, yes: bool) -> Self {
        self.include_raw_ref = yes;
        self
    }
}

// ---- The auditor -------------------------------------------------------------------

/// Counters of an [`Auditor`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditStats {
    /// Events queued.
    pub emitted: u64,
    /// Events dropped because the queue was full (or the writer is gone).
    pub dropped: u64,
    /// Events the sink wrote.
    pub written: u64,
    /// Events in batches the sink failed to write.
    pub failed: u64,
    /// Cache-hit events skipped by sampling.
    pub sampled_out: u64,
    /// Events written to the spill file because the sink was down.
    pub spilled: u64,
    /// Spilled events the sink later took.
    pub replayed: u64,
}

enum Msg {
    Event(Box<AuditEvent>),
    Flush(oneshot::Sender<()>),
}

#[derive(Default)]
struct Counters {
    emitted: AtomicU64,
    dropped: AtomicU64,
    written: AtomicU64,
    failed: AtomicU64,
    sampled_out: AtomicU64,
    cache_hits: AtomicU64,
    spilled: AtomicU64,
    replayed: AtomicU64,
}

/// Emits audit events without blocking: a bounded queue and a background
/// writer thread. Cheap to clone. Dropping the last clone closes the queue
/// and waits (at most [`DRAIN_TIMEOUT`]) for the writer to hand every queued
/// event to the sink, so a process that ends after its last read does not
/// lose that read's event.
#[derive(Clone)]
pub struct Auditor {
    inner: Arc<AuditorInner>,
}

struct AuditorInner {
    tx: mpsc::Sender<Msg>,
    options: AuditOptions,
    counters: Arc<Counters>,
    /// The sink (for readiness checks).
    sink: Arc<dyn AuditSink>,
    /// Whether the sink took the last write (the writer keeps it current).
    healthy: tokio::sync::watch::Receiver<bool>,
    /// Disconnects when the writer thread has drained the queue and ended.
    done: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

/// How long dropping the last [`Auditor`] waits for queued events to be
/// written (a sink that hangs, e.g. an unreachable broker, cannot hold the
/// process forever).
pub const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl Drop for AuditorInner {
    fn drop(&mut self) {
        // Closing the queue ends the writer's loop once it has drained it.
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.tx, closed));
        let done = self.done.get_mut().unwrap_or_else(|p| p.into_inner());
        // Only ever disconnects (the writer never sends): Err either way.
        let _ = done.recv_timeout(DRAIN_TIMEOUT);
    }
}

impl fmt::Debug for Auditor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auditor")
            .field("options", &self.inner.options)
            .field("stats", &self.stats())
            .finish()
    }
}

/// What the resolver reports for one reference.
pub(crate) enum Outcome<'a> {
    Read {
        cached: bool,
        version: Option<&'a str>,
    },
    Denied(&'a Error),
    Failed(&'a Error),
}

/// Events a batch write takes at most.
const BATCH: usize = 256;

impl Auditor {
    /// Starts an auditor writing to `sink`.
    pub fn new(sink: Arc<dyn AuditSink>, options: AuditOptions) -> Result<Auditor> {
        let capacity = if options.queue_capacity == 0 {
            1024
        } else {
            options.queue_capacity
        };
        let (tx, rx) = mpsc::channel(capacity);
        let counters = Arc::new(Counters::default());
        let (healthy_tx, healthy) = tokio::sync::watch::channel(true);
        let w = Writer {
            sink: sink.clone(),
            counters: counters.clone(),
            spill: options.spill_path.clone().map(spill::Spill::new),
            healthy: healthy_tx,
        };
        let (done_tx, done) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("secref-audit".into())
            .spawn(move || {
                w.run(rx);
                // The writer's sink is dropped by now: the file is closed.
                drop(done_tx);
            })
            .map_err(|e| Error::internal(format!("cannot start the audit writer: {e}")))?;
        Ok(Auditor {
            inner: Arc::new(AuditorInner {
                tx,
                options,
                counters,
                sink,
                healthy,
                done: std::sync::Mutex::new(done),
            }),
        })
    }

    /// Builds the auditor `settings` describe; the salt and Kafka settings
    /// fall back to `env`.
    pub fn from_settings(settings: &AuditSettings, env: &Env) -> Result<Auditor> {
        let sink: Arc<dyn AuditSink> = match settings.sink {
            SinkKind::Stderr => Arc::new(JsonLinesSink::stderr()),
            SinkKind::File => {
                let key = match (&settings.chain_key_env, &settings.chain_key_file) {
                    (Some(var), _) => Some(chain::ChainKey::from_env(env, var)?),
                    (None, Some(path)) => Some(chain::ChainKey::from_file(path)?),
                    (None, None) => None,
                };
                Arc::new(JsonLinesSink::file_with(
                    settings.path.as_deref().expect("checked in from_table"),
                    key,
                    settings.rotate_bytes,
                )?)
            }
            #[cfg(not(feature = "kafka"))]
            SinkKind::Kafka => {
                return Err(Error::config(
                    "[audit] sink = \"kafka\": this build of secref has no kafka feature",
                ))
            }
            #[cfg(feature = "kafka")]
            SinkKind::Kafka => {
                let bootstrap = settings
                    .kafka_bootstrap
                    .clone()
                    .or_else(|| env.get("KAFKA_BOOTSTRAP_SERVERS").map(str::to_owned))
                    .ok_or_else(|| {
                        Error::config(
                            "[audit] sink = \"kafka\" needs kafka_bootstrap or $KAFKA_BOOTSTRAP_SERVERS",
                        )
                    })?;
                let prefix = settings
                    .kafka_topic_prefix
                    .clone()
                    .or_else(|| env.get("KAFKA_TOPIC_PREFIX").map(str::to_owned))
                    .unwrap_or_else(|| "crud".into());
                Arc::new(KafkaSink::new(&bootstrap, &prefix)?)
            }
        };
        let sample = match settings.sample_cache_hit_n {
            Some(n) => n,
            None => match env.get("AUDIT_SAMPLE_CACHE_HIT_N") {
                Some(raw) => raw
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| {
                        Error::config("AUDIT_SAMPLE_CACHE_HIT_N must be a whole number ≥ 1")
                    })?,
                None => 1,
            },
        };
        let salt = env.get(&settings.salt_env).map(Secret::from);
        if salt.is_none() {
            tracing::debug!(
                salt_env = %settings.salt_env,
                "no audit salt: resource_ref is omitted from audit events"
            );
        }
        Auditor::new(
            sink,
            AuditOptions {
                salt,
                include_raw_ref: settings.include_raw_ref,
                sample_cache_hit_n: sample,
                queue_capacity: settings.queue_capacity,
                on_sink_failure: settings.on_sink_failure,
                spill_path: settings
                    .spill_path
                    .clone()
                    .or_else(|| default_spill_path(settings)),
                block_timeout: std::time::Duration::from_millis(settings.block_timeout_ms),
            },
        )
    }

    /// Parses `[audit]` strictly and builds the auditor.
    pub fn from_table(table: &toml::Table, env: &Env) -> Result<Auditor> {
        Auditor::from_settings(&AuditSettings::from_table(table)?, env)
    }

    /// Queues an event; drops and counts it when the queue is full.
    pub fn emit(&self, event: AuditEvent) {
        let c = &self.inner.counters;
        match self.inner.tx.try_send(Msg::Event(Box::new(event))) {
            Ok(()) => {
                c.emitted.fetch_add(1, Ordering::Relaxed);
                crate::metrics::count(crate::metrics::AUDIT_EMITTED, 1);
            }
            Err(_) => {
                c.dropped.fetch_add(1, Ordering::Relaxed);
                crate::metrics::count(crate::metrics::AUDIT_DROPPED, 1);
                tracing::warn!("audit queue full: an audit event was dropped");
            }
        };
    }

    /// Whether a read may go on, by `on_sink_failure`: with `spill`
    /// always; with `fail` only while the sink takes writes and the queue
    /// has room; with `block` after waiting (bounded) for that.
    pub(crate) async fn admit(&self) -> Result<()> {
        let opts = &self.inner.options;
        let ok = |s: &Self| *s.inner.healthy.borrow() && s.inner.tx.capacity() > 0;
        match opts.on_sink_failure {
            FailureMode::Spill => return Ok(()),
            FailureMode::Fail if ok(self) => return Ok(()),
            FailureMode::Fail => {}
            FailureMode::Block => {
                let wait = if opts.block_timeout.is_zero() {
                    std::time::Duration::from_secs(2)
                } else {
                    opts.block_timeout
                };
                let deadline = tokio::time::Instant::now() + wait;
                let mut healthy = self.inner.healthy.clone();
                loop {
                    if ok(self) {
                        return Ok(());
                    }
                    // Wakes on a change of the sink's state, or re-checks
                    // the queue's room every few milliseconds.
                    let tick = tokio::time::Instant::now() + std::time::Duration::from_millis(20);
                    let until = tick.min(deadline);
                    let _ = tokio::time::timeout_at(until, healthy.changed()).await;
                    if tokio::time::Instant::now() >= deadline {
                        break;
                    }
                }
            }
        }
        Err(Error::new(
            ErrorCode::BackendUnavailable,
            "the audit sink is unavailable and [audit] on_sink_failure refuses unaudited reads",
        )
        .with_retryable(true))
    }

    /// Whether the sink can take events now (readiness): it took the last
    /// write and its own check passes.
    pub async fn health(&self) -> Result<()> {
        if !*self.inner.healthy.borrow() {
            return Err(Error::new(
                ErrorCode::BackendUnavailable,
                "the audit sink failed its last write",
            )
            .with_retryable(true));
        }
        self.inner.sink.health().await
    }

    /// Waits until every event queued before this call has been handed to
    /// the sink.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// The counters.
    pub fn stats(&self) -> AuditStats {
        let c = &self.inner.counters;
        AuditStats {
            emitted: c.emitted.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            written: c.written.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            sampled_out: c.sampled_out.load(Ordering::Relaxed),
            spilled: c.spilled.load(Ordering::Relaxed),
            replayed: c.replayed.load(Ordering::Relaxed),
        }
    }

    /// Builds and emits the event for one reference's outcome.
    pub(crate) fn record(
        &self,
        ctx: &Context,
        tenant: Option<&str>,
        r: &SecretRef,
        provider: Option<&str>,
        decision_id: Option<&str>,
        outcome: Outcome<'_>,
    ) {
        let opts = &self.inner.options;
        if let Outcome::Read { cached: true, .. } = outcome {
            let n = u64::from(opts.sample_cache_hit_n.max(1));
            let seen = self
                .inner
                .counters
                .cache_hits
                .fetch_add(1, Ordering::Relaxed);
            if !seen.is_multiple_of(n) {
                self.inner
                    .counters
                    .sampled_out
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let (event_type, cached, success, error, version) = match outcome {
            Outcome::Read { cached, version } => {
                (AuditEventType::SecretRead, cached, true, None, version)
            }
            Outcome::Denied(e) => (AuditEventType::SecretDenied, false, false, Some(e), None),
            Outcome::Failed(e) => {
                let t = match e.code() {
                    ErrorCode::VersionDeleted => AuditEventType::SecretVersionDeleted,
                    ErrorCode::VersionDestroyed => AuditEventType::SecretVersionDestroyed,
                    _ => AuditEventType::SecretError,
                };
                (t, false, false, Some(e), None)
            }
        };
        self.emit(AuditEvent {
            event_id: uuid::Uuid::new_v4().to_string(),
            timestamp: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            event_type,
            service: "secref".into(),
            correlation_id: ctx.correlation_id.clone(),
            subject: ctx.subject_or_anonymous().to_owned(),
            tenant: tenant.map(str::to_owned),
            provider: provider.map(str::to_owned),
            resource_ref: opts
                .salt
                .as_ref()
                .map(|s| resource_ref(s, r.to_canonical())),
            reference: opts.include_raw_ref.then(|| r.to_canonical().to_owned()),
            cached,
            success,
            error_code: error.map(|e| e.code().as_str().to_owned()),
            remote_code: error.and_then(|e| e.remote_code()).map(str::to_owned),
            decision_id: decision_id.map(str::to_owned),
            kv_version: version.map(str::to_owned),
        });
    }
}

/// The default spill file: `<data dir>/secref/audit-spill-<sink id>.jsonl`,
/// one per sink (kind, path, bootstrap servers, topic prefix), so that
/// events spilled for one sink are never replayed into another.
fn default_spill_path(settings: &AuditSettings) -> Option<PathBuf> {
    use sha2::Digest as _;
    let id = format!(
        "{:?}|{:?}|{:?}|{:?}",
        settings.sink, settings.path, settings.kafka_bootstrap, settings.kafka_topic_prefix
    );
    let digest = Sha256::digest(id.as_bytes());
    let short: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    dirs::data_dir().map(|d| d.join("secref").join(format!("audit-spill-{short}.jsonl")))
}

/// How often a writer whose sink is down tries it again.
const PROBE_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// The background writer: batches what is queued, writes it (or spills it
/// while the sink is down), replays the spill file first when the sink is
/// back, answers flushes.
struct Writer {
    sink: Arc<dyn AuditSink>,
    counters: Arc<Counters>,
    spill: Option<spill::Spill>,
    healthy: tokio::sync::watch::Sender<bool>,
}

impl Writer {
    fn run(self, mut rx: mpsc::Receiver<Msg>) {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            // Events of an earlier run may wait in the spill file.
            let mut spilling = self.spill.as_ref().is_some_and(spill::Spill::pending);
            if spilling {
                spilling = !self.replay().await;
            }
            let mut batch: Vec<AuditEvent> = Vec::with_capacity(BATCH);
            let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
            loop {
                let down = spilling || !*self.healthy.borrow();
                let first = if down {
                    match tokio::time::timeout(PROBE_EVERY, rx.recv()).await {
                        Ok(m) => m,
                        Err(_) => {
                            spilling = !self.recover(spilling).await;
                            continue;
                        }
                    }
                } else {
                    rx.recv().await
                };
                let Some(first) = first else { break };
                let mut next = Some(first);
                while let Some(msg) = next.take() {
                    match msg {
                        Msg::Event(e) => batch.push(*e),
                        Msg::Flush(tx) => flushes.push(tx),
                    }
                    if batch.len() < BATCH {
                        next = rx.try_recv().ok();
                    }
                }
                if spilling {
                    spilling = !self.replay().await;
                }
                if !batch.is_empty() {
                    if spilling {
                        self.to_spill(&batch);
                    } else {
                        spilling = !self.write(&batch).await;
                    }
                    batch.clear();
                }
                for f in flushes.drain(..) {
                    let _ = f.send(());
                }
            }
            // Closing: one last try to hand spilled events over.
            if spilling {
                self.replay().await;
            }
        });
    }

    /// Writes a batch; on failure spills it. `false` when it was spilled.
    async fn write(&self, batch: &[AuditEvent]) -> bool {
        let n = batch.len() as u64;
        match self.sink.write(batch).await {
            Ok(()) => {
                self.counters.written.fetch_add(n, Ordering::Relaxed);
                self.healthy.send_replace(true);
                true
            }
            Err(e) => {
                tracing::warn!(error_code = %e.code(), events = n, "audit sink write failed");
                self.healthy.send_replace(false);
                self.to_spill(batch)
            }
        }
    }

    /// Appends a batch to the spill file; without one (or if that fails)
    /// counts it as failed. `false` when it was spilled.
    fn to_spill(&self, batch: &[AuditEvent]) -> bool {
        let n = batch.len() as u64;
        match self.spill.as_ref().map(|s| s.append(batch)) {
            Some(Ok(())) => {
                self.counters.spilled.fetch_add(n, Ordering::Relaxed);
                crate::metrics::count(crate::metrics::AUDIT_SPILLED, n);
                false
            }
            Some(Err(e)) => {
                tracing::error!(error_code = %e.code(), events = n, "audit events lost: the spill file cannot be written");
                self.failed(n);
                true
            }
            None => {
                tracing::error!(
                    events = n,
                    "audit events lost: the sink failed and no spill file is set"
                );
                self.failed(n);
                true
            }
        }
    }

    fn failed(&self, n: u64) {
        self.counters.failed.fetch_add(n, Ordering::Relaxed);
        crate::metrics::count(crate::metrics::AUDIT_FAILED, n);
    }

    /// The periodic try while the sink is down: replays the spill file, or
    /// asks the sink's health. `true` when nothing is left to replay.
    async fn recover(&self, spilling: bool) -> bool {
        if spilling {
            return self.replay().await;
        }
        let ok = self.sink.health().await.is_ok();
        self.healthy.send_replace(ok);
        true
    }

    /// Hands the spill file to the sink in order, batch by batch, keeping
    /// what it did not take. `true` when the file is empty now.
    async fn replay(&self) -> bool {
        let Some(spill) = &self.spill else {
            return true;
        };
        let events = match spill.read() {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error_code = %e.code(), "cannot read the audit spill file");
                return false;
            }
        };
        let mut done = 0;
        for chunk in events.chunks(BATCH) {
            if self.sink.write(chunk).await.is_err() {
                break;
            }
            done += chunk.len();
            self.counters
                .replayed
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            self.counters
                .written
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        if done == 0 && !events.is_empty() {
            self.healthy.send_replace(false);
            return false;
        }
        // Forget what was written (a crash before this line replays it
        // again: at least once, same event ids).
        if let Err(e) = spill.keep_only(&events[done..]) {
            tracing::warn!(error_code = %e.code(), "cannot shorten the audit spill file");
        }
        let all = done == events.len();
        self.healthy.send_replace(all);
        if all && done > 0 {
            tracing::info!(events = done, "audit spill file replayed");
        }
        all
    }
}
