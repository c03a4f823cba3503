//! Shared bookkeeping for several `secref serve` replicas (`[state]`).
//!
//! The policy enforcement point and the server keep short-lived state a
//! caller must not be able to multiply by talking to another replica: grant
//! use counts, the `jti` replay window, negative-cache entries, revoked
//! leases and the per-principal quotas on them. By default
//! (`backend = "memory"`) each process keeps it in its own memory, exactly as
//! before (the policy's and the server's own tables are the in-memory
//! implementation). With `backend = "redis"` it lives in Redis, through the
//! [`StateBackend`] trait:
//!
//! * **atomic on the server side**: every multi-step update is one Lua
//!   script or one `SET NX PX`, so concurrent replicas can never both win;
//! * **self-expiring**: every key carries a TTL (`PX`/`PEXPIRE`), so no
//!   sweeper is needed for correctness;
//! * **no secret in Redis**: keys are `secref:{namespace}:{kind}:{hmac}` —
//!   an HMAC-SHA256 of the reference / id / principal under a key derived
//!   from `[state] key_env` (which Redis never sees); values are counters,
//!   `1`, or grant metadata (an id, an expiry, a use limit);
//! * **fail closed**: an unreachable Redis (or a call slower than
//!   `timeout_ms`) is `backend_unavailable` (retryable, remote code
//!   [`STATE_UNAVAILABLE`]), never a silent fall-back to per-replica memory.
//!   The only exception is opt-in: `honour_confirmed_grants_seconds = N`
//!   lets a replica keep honouring a grant whose use Redis confirmed within
//!   the last N seconds (the "PDP outage honours existing grants" rule),
//!   counting uses locally against the grant's `max_uses`.
//!
//! ```toml
//! [state]
//! backend = "redis"                      # or "memory" (default)
//! url = "redis://127.0.0.1:6379/0"       # rediss:// for TLS (rustls)
//! password_env = "SECREF_REDIS_PASSWORD" # AUTH, optional (or in the URL)
//! namespace = "secref"                   # key prefix, default "secref"
//! key_env = "SECREF_STATE_KEY"           # ≥ 32 bytes, the same on every replica
//! timeout_ms = 500                       # every Redis call, default 500
//! honour_confirmed_grants_seconds = 0    # outage grace, default 0 (none)
//! ```
//!
//! The same `key_env` key also seals `secref serve`'s lease ids (so a lease
//! issued by one replica can be revoked through another) and its Vault
//! response-wrapping tokens (so any replica unwraps, exactly once).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::config::Env;
use crate::error::{Error, ErrorCode, Result};
use crate::secret::Secret;

#[cfg(feature = "redis")]
mod redis_backend;

/// Remote code of every error caused by the shared state backend.
pub const STATE_UNAVAILABLE: &str = "STATE_UNAVAILABLE";

/// The outcome of [`StateBackend::hold`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// The item is now held (counted against its owner's quota).
    Held,
    /// The item was already held (and not expired).
    Exists,
    /// The owner holds its quota of live items.
    Full,
}

/// A grant as agreed between replicas (see [`StateBackend::claim`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimed {
    /// The value stored under the key: the caller's, or an earlier one.
    pub value: String,
    /// How long the key still lives.
    pub remaining: Duration,
}

/// Shared, self-expiring bookkeeping. Every method is one atomic step on
/// the backend; an error is `backend_unavailable` (retryable). Keys are
/// [`StateKey`]s: namespaced and HMAC'd, never a raw reference.
#[async_trait]
pub trait StateBackend: Send + Sync + fmt::Debug {
    /// Records `key` for `ttl` unless it is already there: true the first
    /// time (a fresh `jti`), false while it lives (`SET NX PX`).
    async fn use_once(&self, key: &StateKey, ttl: Duration) -> Result<bool>;
    /// Sets `key` for `ttl`, replacing any earlier entry (a denial).
    async fn mark(&self, key: &StateKey, ttl: Duration) -> Result<()>;
    /// Whether `key` lives.
    async fn contains(&self, key: &StateKey) -> Result<bool>;
    /// Removes `key`.
    async fn forget(&self, key: &StateKey) -> Result<()>;
    /// Stores `value` under `key` for `ttl` unless a live value is there;
    /// answers the value that is there now (the caller's or the earlier
    /// one) and how long it lives.
    async fn claim(&self, key: &StateKey, value: &str, ttl: Duration) -> Result<Claimed>;
    /// Counts one use under `key`, whose counter lives `window` from its
    /// first use: the new count, or `None` (nothing counted) when `limit`
    /// uses are already counted.
    async fn incr_within(
        &self,
        key: &StateKey,
        limit: u64,
        window: Duration,
    ) -> Result<Option<u64>>;
    /// Gives one counted use back (never below zero).
    async fn decr(&self, key: &StateKey) -> Result<()>;
    /// Holds `item` for `ttl` on behalf of `owner`, who may hold at most
    /// `quota` live items (revoked leases): one atomic step.
    async fn hold(
        &self,
        owner: &StateKey,
        item: &StateKey,
        quota: u64,
        ttl: Duration,
    ) -> Result<Hold>;
    /// How many live items `owner` holds.
    async fn held_by(&self, owner: &StateKey) -> Result<u64>;
}

/// A backend key: `secref:{namespace}:{kind}:{hex hmac}`. Built only by
/// [`SharedState::key`], so no raw reference, id or name is ever a key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct StateKey(String);

impl StateKey {
    /// The key as sent to the backend.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for StateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A configured shared backend with its key derivation: what the policy and
/// the server hold.
#[derive(Clone)]
pub struct SharedState {
    backend: Arc<dyn StateBackend>,
    namespace: String,
    names: Secret,
    lease_key: Secret,
    wrap_key: Secret,
    grace: Duration,
}

impl fmt::Debug for SharedState {
    // Never the derived keys.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedState")
            .field("backend", &self.backend)
            .field("namespace", &self.namespace)
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

impl SharedState {
    /// A shared state over `backend`, naming keys under `namespace` with
    /// keys derived (HKDF-SHA256) from `master`.
    pub fn new(
        backend: Arc<dyn StateBackend>,
        namespace: &str,
        master: &Secret,
        grace: Duration,
    ) -> SharedState {
        let hk = Hkdf::<Sha256>::new(Some(b"secref state v1"), master.expose_bytes());
        let derive = |info: &[u8]| {
            let mut k = vec![0u8; 32];
            hk.expand(info, &mut k)
                .expect("32 bytes is a valid HKDF length");
            Secret::from(k)
        };
        SharedState {
            backend,
            namespace: namespace.to_owned(),
            names: derive(b"key names"),
            lease_key: derive(b"lease sealing"),
            wrap_key: derive(b"wrap sealing"),
            grace,
        }
    }

    /// The backend.
    pub fn backend(&self) -> &dyn StateBackend {
        &*self.backend
    }

    /// `secref:{namespace}:{kind}:{hmac(parts)}`; each part is MAC'd with
    /// its length first, so no two tuples collide.
    pub fn key(&self, kind: &str, parts: &[&[u8]]) -> StateKey {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(self.names.expose_bytes()).expect("any length");
        for p in parts {
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p);
        }
        let tag = mac.finalize().into_bytes();
        let mut hex = String::with_capacity(64);
        for b in tag {
            hex.push_str(&format!("{b:02x}"));
        }
        StateKey(format!("secref:{}:{kind}:{hex}", self.namespace))
    }

    /// The 32-byte key sealing lease ids, the same on every replica.
    pub fn lease_key(&self) -> &Secret {
        &self.lease_key
    }

    /// The 32-byte key sealing Vault response-wrapping tokens, the same on
    /// every replica (a token wrapped by one is unwrapped by any).
    pub fn wrap_key(&self) -> &Secret {
        &self.wrap_key
    }

    /// `honour_confirmed_grants_seconds`: how long a grant confirmed by the
    /// backend may still be honoured while the backend is unreachable.
    pub fn grace(&self) -> Duration {
        self.grace
    }
}

/// `[state]`, parsed strictly.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StateSettings {
    /// `memory` (default) or `redis`.
    #[serde(default)]
    pub backend: Option<String>,
    /// `redis://host:port/db` or `rediss://…` (TLS).
    #[serde(default)]
    pub url: Option<String>,
    /// A variable holding the Redis password (AUTH), if any.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Key prefix (default `secref`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// A variable holding ≥ 32 bytes shared by every replica.
    #[serde(default)]
    pub key_env: Option<String>,
    /// Bound on every backend call (default 500 ms).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Outage grace for grants confirmed within this many seconds (default 0).
    #[serde(default)]
    pub honour_confirmed_grants_seconds: Option<u64>,
}

/// The variables holding the shared state's secrets under `cfg`: the ones
/// `[state] key_env` (which seals lease ids and grants) and `password_env`
/// (Redis AUTH) name. Read leniently: a `[state]` table that does not parse
/// still names its variables (building the state reports the error).
pub fn credential_env_vars(cfg: &crate::Config) -> Vec<String> {
    let Some(table) = &cfg.state else {
        return Vec::new();
    };
    ["key_env", "password_env"]
        .iter()
        .filter_map(|k| table.get(*k)?.as_str().map(str::to_string))
        .collect()
}

/// The smallest accepted `key_env` value.
pub const MIN_KEY_LEN: usize = 32;

impl StateSettings {
    /// What these settings mean, with every default filled in, so that two
    /// spellings of one configuration compare equal (`[state]` absent and
    /// `backend = "memory"`; an unset and an explicit `timeout_ms = 500`).
    /// The in-memory backend uses none of the other settings.
    pub fn effective(&self) -> StateSettings {
        let backend = self.backend.clone().unwrap_or_else(|| "memory".into());
        if backend == "memory" {
            return StateSettings {
                backend: Some(backend),
                url: self.url.clone(),
                key_env: self.key_env.clone(),
                ..StateSettings::default()
            };
        }
        StateSettings {
            backend: Some(backend),
            namespace: Some(self.namespace.clone().unwrap_or_else(|| "secref".into())),
            timeout_ms: Some(self.timeout_ms.unwrap_or(500)),
            honour_confirmed_grants_seconds: Some(
                self.honour_confirmed_grants_seconds.unwrap_or(0),
            ),
            ..self.clone()
        }
    }

    /// Parses `[state]` (unknown keys are a `config` error).
    pub fn from_table(table: &toml::Table) -> Result<StateSettings> {
        StateSettings::deserialize(toml::Value::Table(table.clone()))
            .map_err(|e| crate::config::table_error("[state]", &e))
    }

    /// The shared state these settings describe; `None` for the in-memory
    /// default. Checks everything up front (a `config` error names the
    /// setting); connecting happens on first use, so a replica starts while
    /// Redis is down and fails closed until it is back.
    pub fn build(&self, env: &Env) -> Result<Option<SharedState>> {
        match self.backend.as_deref().unwrap_or("memory") {
            "memory" => {
                if self.url.is_some() || self.key_env.is_some() {
                    return Err(Error::config(
                        "[state] url / key_env need backend = \"redis\"",
                    ));
                }
                Ok(None)
            }
            "redis" => self.build_redis(env).map(Some),
            other => Err(Error::config(format!(
                "[state] backend = \"{other}\" is unknown (expected \"memory\" or \"redis\")"
            ))),
        }
    }

    fn build_redis(&self, env: &Env) -> Result<SharedState> {
        let url = self
            .url
            .as_deref()
            .ok_or_else(|| Error::config("[state] backend = \"redis\" needs url"))?;
        let key_var = self.key_env.as_deref().ok_or_else(|| {
            Error::config("[state] backend = \"redis\" needs key_env (a shared key, ≥ 32 bytes)")
        })?;
        let master = Secret::from(
            env.get(key_var)
                .ok_or_else(|| Error::config(format!("[state] key_env: ${key_var} is not set")))?,
        );
        if master.expose_bytes().len() < MIN_KEY_LEN {
            return Err(Error::config(format!(
                "[state] key_env: ${key_var} is shorter than {MIN_KEY_LEN} bytes"
            )));
        }
        let password = match &self.password_env {
            Some(var) => Some(Secret::from(env.get(var).ok_or_else(|| {
                Error::config(format!("[state] password_env: ${var} is not set"))
            })?)),
            None => None,
        };
        let namespace = self.namespace.as_deref().unwrap_or("secref");
        if namespace.is_empty()
            || !namespace
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Error::config(
                "[state] namespace: only letters, digits, '-' and '_'",
            ));
        }
        let timeout = Duration::from_millis(self.timeout_ms.unwrap_or(500));
        if timeout.is_zero() || timeout > Duration::from_secs(60) {
            return Err(Error::config("[state] timeout_ms: between 1 and 60000"));
        }
        let grace = Duration::from_secs(self.honour_confirmed_grants_seconds.unwrap_or(0));
        #[cfg(feature = "redis")]
        {
            let backend = redis_backend::RedisState::new(url, password, timeout)?;
            Ok(SharedState::new(
                Arc::new(backend),
                namespace,
                &master,
                grace,
            ))
        }
        #[cfg(not(feature = "redis"))]
        {
            let _ = (url, password, timeout, grace, master);
            Err(Error::config(
                "[state] backend = \"redis\": this build has no redis support (cargo feature `redis`)",
            ))
        }
    }
}

/// The error every backend failure becomes: retryable, never a fall-back.
pub fn unavailable(what: impl fmt::Display) -> Error {
    Error::new(
        ErrorCode::BackendUnavailable,
        format!("the shared state backend is unavailable ({what})"),
    )
    .with_retryable(true)
    .with_remote_code(STATE_UNAVAILABLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Nothing;
    #[async_trait]
    impl StateBackend for Nothing {
        async fn use_once(&self, _: &StateKey, _: Duration) -> Result<bool> {
            Ok(true)
        }
        async fn mark(&self, _: &StateKey, _: Duration) -> Result<()> {
            Ok(())
        }
        async fn contains(&self, _: &StateKey) -> Result<bool> {
            Ok(false)
        }
        async fn forget(&self, _: &StateKey) -> Result<()> {
            Ok(())
        }
        async fn claim(&self, _: &StateKey, v: &str, t: Duration) -> Result<Claimed> {
            Ok(Claimed {
                value: v.into(),
                remaining: t,
            })
        }
        async fn incr_within(&self, _: &StateKey, _: u64, _: Duration) -> Result<Option<u64>> {
            Ok(Some(1))
        }
        async fn decr(&self, _: &StateKey) -> Result<()> {
            Ok(())
        }
        async fn hold(&self, _: &StateKey, _: &StateKey, _: u64, _: Duration) -> Result<Hold> {
            Ok(Hold::Held)
        }
        async fn held_by(&self, _: &StateKey) -> Result<u64> {
            Ok(0)
        }
    }

    #[test]
    fn keys_are_namespaced_and_never_contain_the_reference() {
        let s = SharedState::new(
            Arc::new(Nothing),
            "prod",
            &Secret::from("k".repeat(32)),
            Duration::ZERO,
        );
        let k = s.key("grant", &[b"svc-a", b"local://app/db#password"]);
        assert!(k.as_str().starts_with("secref:prod:grant:"));
        assert!(!k.as_str().contains("app/db"));
        assert_ne!(k, s.key("grant", &[b"svc-a\0local://app/db#password"]));
        let other = SharedState::new(
            Arc::new(Nothing),
            "prod",
            &Secret::from("x".repeat(32)),
            Duration::ZERO,
        );
        assert_ne!(
            k,
            other.key("grant", &[b"svc-a", b"local://app/db#password"])
        );
    }

    #[test]
    fn effective_settings_compare_by_meaning() {
        let parse = |t: &str| {
            StateSettings::from_table(&toml::from_str(t).unwrap())
                .unwrap()
                .effective()
        };
        let none = StateSettings::default().effective();
        assert_eq!(parse("backend = \"memory\""), none);
        assert_eq!(parse("backend = \"memory\"\ntimeout_ms = 900"), none);
        let redis = "backend = \"redis\"\nurl = \"redis://127.0.0.1:1/0\"\nkey_env = \"K\"";
        assert_eq!(
            parse(redis),
            parse(&format!(
                "{redis}\nnamespace = \"secref\"\ntimeout_ms = 500"
            ))
        );
        assert_ne!(parse(redis), none);
        assert_ne!(parse(redis), parse(&redis.replace(":1/", ":2/")));
        assert_ne!(
            parse(redis),
            parse(&format!("{redis}\nnamespace = \"other\""))
        );
    }

    #[test]
    fn settings_are_checked() {
        let env = Env::from_pairs([("K", "k".repeat(32).as_str()), ("SHORT", "abc")]);
        let parse = |t: &str| StateSettings::from_table(&toml::from_str(t).unwrap());
        assert!(parse("backend = \"memory\"")
            .unwrap()
            .build(&env)
            .unwrap()
            .is_none());
        let bad = |t: &str| {
            parse(t)
                .and_then(|s| s.build(&env).map(|_| ()))
                .unwrap_err()
                .code()
        };
        assert_eq!(bad("backend = \"etcd\""), ErrorCode::Config);
        assert_eq!(bad("colour = 1"), ErrorCode::Config);
        assert_eq!(bad("backend = \"redis\""), ErrorCode::Config);
        assert_eq!(
            bad("backend = \"redis\"\nurl = \"redis://127.0.0.1:1/0\"\nkey_env = \"SHORT\""),
            ErrorCode::Config
        );
        assert_eq!(
            bad("backend = \"redis\"\nurl = \"http://x\"\nkey_env = \"K\""),
            ErrorCode::Config
        );
        assert!(
            parse("backend = \"redis\"\nurl = \"redis://127.0.0.1:1/0\"\nkey_env = \"K\"")
                .unwrap()
                .build(&env)
                .unwrap()
                .is_some()
        );
    }
}
