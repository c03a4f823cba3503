//! The resolver's cache: fail-closed TTL entries with opt-in stale grace, a
//! short negative cache, and a bound on size.
//!
//! Rules (the SecFlow provider's semantics, made general):
//! * a hit needs `now < expires_at`;
//! * an item-level failure (not found, denied, expired …) removes the entry:
//!   a value is never served once the backend has said no;
//! * a stale value is served only when the refresh failed with a *retryable
//!   request-level* error and `now < stale_until` (`ttl + stale_grace`); the
//!   entry is not extended, so the next call tries again;
//! * `not_found` and `permission_denied` are remembered for `negative_ttl`
//!   (plus up to 10 % jitter so that a fleet does not retry in lockstep).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use parking_lot::RwLock;
use serde::Deserialize;

use crate::error::{Error, ErrorCode};
use crate::provider::Resolved;
use crate::secret::Secret;

/// Cache settings, per resolver or per provider.
///
/// ```
/// use std::time::Duration;
/// use secref::CacheConfig;
/// let c = CacheConfig { ttl: Duration::from_secs(60), ..CacheConfig::default() };
/// assert_eq!(c.stale_grace, Duration::ZERO); // stale values are opt-in
/// ```
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Whether values are cached at all.
    #[serde(default = "defaults::enabled")]
    pub enabled: bool,
    /// How long a value is served without asking the backend.
    #[serde(
        default = "defaults::ttl",
        rename = "ttl_seconds",
        with = "crate::config::secs"
    )]
    pub ttl: Duration,
    /// How long past `ttl` a value may be served while the backend is
    /// unreachable (retryable request-level errors only). Default 0.
    #[serde(default, rename = "stale_grace_seconds", with = "crate::config::secs")]
    pub stale_grace: Duration,
    /// How long `not_found` / `permission_denied` answers are remembered.
    #[serde(
        default = "defaults::negative_ttl",
        rename = "negative_ttl_seconds",
        with = "crate::config::secs"
    )]
    pub negative_ttl: Duration,
    /// Refresh in the background when a hit finds less than this fraction of
    /// the TTL left (0 disables refresh-ahead).
    #[serde(default)]
    pub refresh_ahead: f64,
    /// Most entries kept (rounded up to a multiple of the 32 shards); the
    /// ones closest to the end of their life are evicted first.
    #[serde(default = "defaults::max_entries")]
    pub max_entries: usize,
}

mod defaults {
    use std::time::Duration;
    pub fn enabled() -> bool {
        true
    }
    pub fn ttl() -> Duration {
        Duration::from_secs(300)
    }
    pub fn negative_ttl() -> Duration {
        Duration::from_secs(5)
    }
    pub fn max_entries() -> usize {
        10_000
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            ttl: defaults::ttl(),
            stale_grace: Duration::ZERO,
            negative_ttl: defaults::negative_ttl(),
            refresh_ahead: 0.0,
            max_entries: defaults::max_entries(),
        }
    }
}

impl CacheConfig {
    /// No caching at all.
    pub fn disabled() -> Self {
        CacheConfig {
            enabled: false,
            ..CacheConfig::default()
        }
    }

    /// Checks the numbers.
    pub fn validate(&self) -> crate::Result<()> {
        if self.enabled && self.ttl.is_zero() {
            return Err(Error::config("cache ttl_seconds must be > 0"));
        }
        if !(0.0..1.0).contains(&self.refresh_ahead) {
            return Err(Error::config("cache refresh_ahead must be in [0, 1)"));
        }
        if self.max_entries == 0 {
            return Err(Error::config("cache max_entries must be > 0"));
        }
        Ok(())
    }
}

/// What a cache lookup found.
pub(crate) enum Lookup {
    /// A fresh value; `refresh` says it is due for refresh-ahead.
    Fresh { value: Arc<Resolved>, refresh: bool },
    /// A remembered not-found or denial.
    Negative(Error),
    /// Nothing usable; maybe an expired value kept for stale grace.
    Miss,
}

enum Slot {
    Value {
        value: Arc<Resolved>,
        fetched: Instant,
        expires: Instant,
        stale_until: Instant,
        refreshing: bool,
    },
    Negative {
        error: Error,
        expires: Instant,
    },
}

impl Slot {
    fn evict_at(&self) -> Instant {
        match self {
            Slot::Value { stale_until, .. } => *stale_until,
            Slot::Negative { expires, .. } => *expires,
        }
    }
}

const SHARDS: usize = 32;

type Map = HashMap<Arc<str>, Slot, foldhash::fast::RandomState>;

/// One shard on its own cache lines, so readers of different shards on
/// different cores never contend (no false sharing).
#[repr(align(128))]
struct Shard(RwLock<Map>);

/// One provider's cache, keyed by canonical reference. Each resolver has its
/// own caches, and each provider instance its own, so answers for different
/// identities or backends never mix. Sharded: readers on different keys
/// rarely touch the same lock.
pub(crate) struct Cache {
    shards: Box<[Shard]>,
    hasher: foldhash::fast::RandomState,
}

impl Cache {
    pub fn new() -> Cache {
        Cache {
            shards: (0..SHARDS)
                .map(|_| Shard(RwLock::new(Map::default())))
                .collect(),
            hasher: Default::default(),
        }
    }

    fn shard(&self, key: &str) -> &RwLock<Map> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS].0
    }

    pub fn lookup(&self, key: &str, cfg: &CacheConfig, now: Instant) -> Lookup {
        let shard = self.shard(key);
        let guard = shard.read();
        match guard.get(key) {
            Some(Slot::Value {
                value,
                fetched,
                expires,
                refreshing,
                ..
            }) if now < *expires => {
                let refresh = cfg.refresh_ahead > 0.0 && !*refreshing && {
                    let ttl = expires.saturating_duration_since(*fetched);
                    expires.saturating_duration_since(now) < ttl.mul_f64(cfg.refresh_ahead)
                };
                Lookup::Fresh {
                    value: value.clone(),
                    refresh,
                }
            }
            Some(Slot::Negative { error, expires }) if now < *expires => {
                Lookup::Negative(error.clone())
            }
            _ => Lookup::Miss,
        }
    }

    /// The fast path: a clone of a fresh value's secret when no refresh is
    /// due, touching nothing but the shard's read lock and the secret's
    /// reference count.
    pub fn fresh_secret(&self, key: &str, cfg: &CacheConfig, now: Instant) -> Option<Secret> {
        match self.shard(key).read().get(key) {
            Some(Slot::Value {
                value,
                fetched,
                expires,
                ..
            }) if now < *expires => {
                if cfg.refresh_ahead > 0.0 {
                    let ttl = expires.saturating_duration_since(*fetched);
                    if expires.saturating_duration_since(now) < ttl.mul_f64(cfg.refresh_ahead) {
                        return None;
                    }
                }
                Some(value.secret.clone())
            }
            _ => None,
        }
    }

    /// Marks a fresh entry as being refreshed ahead; false if another caller
    /// already did.
    pub fn claim_refresh(&self, key: &str) -> bool {
        let mut guard = self.shard(key).write();
        match guard.get_mut(key) {
            Some(Slot::Value { refreshing, .. }) if !*refreshing => {
                *refreshing = true;
                true
            }
            _ => false,
        }
    }

    /// The expired value still inside its stale window, if any.
    pub fn stale(&self, key: &str, now: Instant) -> Option<Arc<Resolved>> {
        match self.shard(key).read().get(key) {
            Some(Slot::Value {
                value, stale_until, ..
            }) if now < *stale_until => Some(value.clone()),
            _ => None,
        }
    }

    pub fn insert(&self, key: Arc<str>, value: Resolved, cfg: &CacheConfig, now: Instant) {
        let mut ttl = cfg.ttl;
        // Never serve past what the backend said.
        if let Some(exp) = value.expires_at {
            if let Ok(left) = exp.duration_since(std::time::SystemTime::now()) {
                ttl = ttl.min(left);
            } else {
                return;
            }
        }
        let slot = Slot::Value {
            value: Arc::new(value),
            fetched: now,
            expires: now + ttl,
            stale_until: now + ttl + cfg.stale_grace,
            refreshing: false,
        };
        self.put(key, slot, cfg, now);
    }

    pub fn insert_negative(&self, key: Arc<str>, error: Error, cfg: &CacheConfig, now: Instant) {
        if cfg.negative_ttl.is_zero() {
            self.remove(&key);
            return;
        }
        let jitter = cfg.negative_ttl.mul_f64(fastrand::f64() * 0.1);
        let slot = Slot::Negative {
            error,
            expires: now + cfg.negative_ttl + jitter,
        };
        self.put(key, slot, cfg, now);
    }

    fn put(&self, key: Arc<str>, slot: Slot, cfg: &CacheConfig, now: Instant) {
        let per_shard = cfg.max_entries.div_ceil(SHARDS).max(1);
        let mut guard = self.shard(&key).write();
        if guard.len() >= per_shard && !guard.contains_key(&key) {
            guard.retain(|_, s| s.evict_at() > now);
            if guard.len() >= per_shard {
                // Evict the entry closest to the end of its life.
                if let Some(victim) = guard
                    .iter()
                    .min_by_key(|(_, s)| s.evict_at())
                    .map(|(k, _)| k.clone())
                {
                    guard.remove(&victim);
                    crate::metrics::count(crate::metrics::CACHE_EVICTIONS, 1);
                }
            }
        }
        guard.insert(key, slot);
    }

    /// Clears the refresh-ahead mark after a failed background refresh.
    pub fn release_refresh(&self, key: &str) {
        if let Some(Slot::Value { refreshing, .. }) = self.shard(key).write().get_mut(key) {
            *refreshing = false;
        }
    }

    pub fn remove(&self, key: &str) {
        self.shard(key).write().remove(key);
    }

    pub fn clear(&self) {
        for shard in self.shards.iter() {
            shard.0.write().clear();
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.read().len()).sum()
    }
}

/// Whether an item-level failure is remembered in the negative cache.
pub(crate) fn is_negative_cacheable(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::NotFound | ErrorCode::PermissionDenied)
}
