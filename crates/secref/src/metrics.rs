//! The counters secref keeps, through the [`metrics`] facade.
//!
//! Without an installed recorder every call is a cheap no-op; an embedding
//! application that installs one (any `metrics` exporter) sees the same
//! series `secref serve` publishes on `GET /metrics`. Every name starts with
//! `secref_`. Labels are only ever a provider name, an error code, a policy
//! effect or a principal name (a config-chosen token name) — never a
//! reference, a path or a value, so no series names a secret.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `secref_resolves_total` | counter | `provider`, `code` (`ok` or an error code): every read once, however it ended (cache hit, backend call, refusal by the policy or a server's rules) and whichever API it came through (`Resolver::count_read`; a server answering from its own store counts through `Resolver::count_served_read`) |
//! | `secref_cache_hits_total` / `_misses_total` / `_stale_serves_total` | counter | `provider` |
//! | `secref_cache_evictions_total` | counter | — |
//! | `secref_singleflight_coalesced_total` | counter | `provider` |
//! | `secref_backend_latency_seconds` | histogram | `provider` |
//! | `secref_retries_total` | counter | `code` |
//! | `secref_policy_decisions_total` | counter | `effect` (`allow` / `deny`) |
//! | `secref_audit_events_emitted_total` / `_spilled_total` / `_dropped_total` / `_failed_total` | counter | — |
//! | `secref_leases_held` | gauge | `principal`, `kind` (`revoked_lease` / `wrap`) (server: what counts against the principal's quota; with `[state] backend = "redis"` the shared count across replicas, read from Redis at each scrape — the same on every replica, aggregate with `max`) |
//! | `secref_quota_refusals_total` | counter | — (server) |
//! | `secref_connections_open` | gauge | — (server) |
//! | `secref_config_reloads_total` | counter | `outcome` (`ok` / `error`) (server) |
//! | `secref_config_generation` | gauge | — (server: the config in use, 1 at start) |

use std::time::Duration;

use crate::error::ErrorCode;

/// Reads by provider and outcome: every read once.
pub const RESOLVES: &str = "secref_resolves_total";
/// Reads answered from the cache.
pub const CACHE_HITS: &str = "secref_cache_hits_total";
/// Reads the cache could not answer.
pub const CACHE_MISSES: &str = "secref_cache_misses_total";
/// Stale values served within the grace period while a backend failed.
pub const CACHE_STALE: &str = "secref_cache_stale_serves_total";
/// Entries evicted to keep the cache within its size.
pub const CACHE_EVICTIONS: &str = "secref_cache_evictions_total";
/// Reads that waited for an identical read already in flight.
pub const COALESCED: &str = "secref_singleflight_coalesced_total";
/// Time one provider call took (seconds).
pub const BACKEND_LATENCY: &str = "secref_backend_latency_seconds";
/// Retried attempts, by the error that caused them.
pub const RETRIES: &str = "secref_retries_total";
/// Policy decisions by effect.
pub const POLICY_DECISIONS: &str = "secref_policy_decisions_total";
/// Audit events queued.
pub const AUDIT_EMITTED: &str = "secref_audit_events_emitted_total";
/// Audit events written to the spill file because the sink was down.
pub const AUDIT_SPILLED: &str = "secref_audit_events_spilled_total";
/// Audit events dropped because the queue was full (or the writer gone).
pub const AUDIT_DROPPED: &str = "secref_audit_events_dropped_total";
/// Audit events the sink failed to take.
pub const AUDIT_FAILED: &str = "secref_audit_events_failed_total";
/// Entries held against a per-principal quota, by principal and kind
/// (server; with shared state the count across replicas).
pub const LEASES_HELD: &str = "secref_leases_held";
/// Requests refused by a per-principal quota (server).
pub const QUOTA_REFUSALS: &str = "secref_quota_refusals_total";
/// Open client connections (server).
pub const CONNECTIONS_OPEN: &str = "secref_connections_open";
/// Configuration reloads by outcome (server).
pub const CONFIG_RELOADS: &str = "secref_config_reloads_total";
/// The generation of the configuration in use (server; 1 at start).
pub const CONFIG_GENERATION: &str = "secref_config_generation";

/// Latency buckets (seconds) for [`BACKEND_LATENCY`].
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Counts one read outcome of `provider` (`None` = delivered).
pub fn resolve(provider: &str, error: Option<ErrorCode>) {
    let code = error.map_or("ok", |c| c.as_str());
    metrics::counter!(RESOLVES, "provider" => provider.to_owned(), "code" => code).increment(1);
}

/// Counts a cache event (`CACHE_HITS`, `CACHE_MISSES`, `CACHE_STALE` or
/// `COALESCED`) for `provider`.
pub fn by_provider(name: &'static str, provider: &str) {
    metrics::counter!(name, "provider" => provider.to_owned()).increment(1);
}

/// Records one provider call's duration.
pub fn backend_latency(provider: &str, took: Duration) {
    metrics::histogram!(BACKEND_LATENCY, "provider" => provider.to_owned()).record(took);
}

/// Counts one retry caused by `code`.
pub fn retry(code: ErrorCode) {
    metrics::counter!(RETRIES, "code" => code.as_str()).increment(1);
}

/// Counts one policy decision.
pub fn policy_decision(allowed: bool) {
    let effect = if allowed { "allow" } else { "deny" };
    metrics::counter!(POLICY_DECISIONS, "effect" => effect).increment(1);
}

/// Adds `n` to an unlabelled counter.
pub fn count(name: &'static str, n: u64) {
    metrics::counter!(name).increment(n);
}
