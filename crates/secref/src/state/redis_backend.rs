//! [`StateBackend`] on Redis: one `redis::aio::ConnectionManager` (it
//! reconnects by itself after an outage), every call bounded by `timeout_ms`,
//! every multi-step update one Lua script (atomic on the server). Script
//! clocks are Redis's own (`TIME`), so replicas' clocks never disagree.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, Script};
use tokio::sync::OnceCell;

use super::{unavailable, Claimed, Hold, StateBackend, StateKey};
use crate::error::{Error, Result};
use crate::secret::Secret;

/// Counts one use; the counter lives ARGV[2] ms from its first use.
const INCR_WITHIN: &str = r#"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if n > tonumber(ARGV[1]) then redis.call('DECR', KEYS[1]) return -1 end
return n
"#;

/// Gives a use back, never below zero, never creating the key.
const DECR: &str = r#"
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n > 0 then redis.call('DECR', KEYS[1]) end
return 0
"#;

/// Stores ARGV[1] for ARGV[2] ms unless a value lives: {value, pttl}.
const CLAIM: &str = r#"
local v = redis.call('GET', KEYS[1])
if v then return {v, redis.call('PTTL', KEYS[1])} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {ARGV[1], tonumber(ARGV[2])}
"#;

/// KEYS[1] the owner's sorted set (member: item key, score: expiry ms),
/// KEYS[2] the item. 1 held, 0 exists, 2 full. The set expires with its
/// last member.
const HOLD: &str = r#"
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 2 end
local ends = now + tonumber(ARGV[2])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
redis.call('ZADD', KEYS[1], ends, KEYS[2])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], tonumber(last[2]))
return 1
"#;

/// Live members of the owner's set.
const HELD: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
"#;

pub(super) struct RedisState {
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    timeout: Duration,
    incr_within: Script,
    decr: Script,
    claim: Script,
    hold: Script,
    held: Script,
}

impl fmt::Debug for RedisState {
    // Never the URL: it may carry a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisState")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisState {
    /// Checks the URL now; connects on first use.
    pub(super) fn new(url: &str, password: Option<Secret>, timeout: Duration) -> Result<Self> {
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(Error::config(
                "[state] url: must be redis://… or rediss://… (TLS)",
            ));
        }
        // The crate's message may quote the URL (and so a password): ours
        // does not.
        let mut info = url
            .into_connection_info()
            .map_err(|_| Error::config("[state] url: not a valid Redis URL"))?;
        if let Some(p) = password {
            let p = std::str::from_utf8(p.expose_bytes())
                .map_err(|_| Error::config("[state] password_env: not UTF-8"))?
                .to_owned();
            let settings = info.redis_settings().clone().set_password(p);
            info = info.set_redis_settings(settings);
        }
        let client = redis::Client::open(info)
            .map_err(|_| Error::config("[state] url: not a usable Redis URL"))?;
        Ok(RedisState {
            client,
            conn: OnceCell::new(),
            timeout,
            incr_within: Script::new(INCR_WITHIN),
            decr: Script::new(DECR),
            claim: Script::new(CLAIM),
            hold: Script::new(HOLD),
            held: Script::new(HELD),
        })
    }

    async fn conn(&self) -> Result<ConnectionManager> {
        let c = self
            .conn
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    // Fail fast: the caller's request answers the outage;
                    // the next request reconnects.
                    .set_number_of_retries(1)
                    .set_max_delay(self.timeout);
                ConnectionManager::new_lazy_with_config(self.client.clone(), config)
                    .map_err(|e| unavailable(e.kind_name()))
            })
            .await?;
        Ok(c.clone())
    }

    /// Runs one command or script within the timeout; any failure is
    /// `backend_unavailable` naming only the error's kind (Redis errors may
    /// quote arguments).
    async fn run<T: redis::FromRedisValue>(
        &self,
        f: impl AsyncFnOnce(&mut ConnectionManager) -> redis::RedisResult<T>,
    ) -> Result<T> {
        let mut conn = self.conn().await?;
        match tokio::time::timeout(self.timeout, f(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                tracing::debug!(kind = e.kind_name(), "redis call failed");
                Err(unavailable(e.kind_name()))
            }
            Err(_) => Err(unavailable("timed out")),
        }
    }
}

trait KindName {
    fn kind_name(&self) -> &'static str;
}

impl KindName for redis::RedisError {
    fn kind_name(&self) -> &'static str {
        if self.is_timeout() {
            "timed out"
        } else if self.is_connection_refusal() || self.is_connection_dropped() || self.is_io_error()
        {
            "connection failed"
        } else {
            "redis error"
        }
    }
}

fn ms(d: Duration) -> u64 {
    (d.as_millis() as u64).max(1)
}

#[async_trait]
impl StateBackend for RedisState {
    async fn use_once(&self, key: &StateKey, ttl: Duration) -> Result<bool> {
        let set: Option<String> = self
            .run(async |c| {
                redis::cmd("SET")
                    .arg(key.as_str())
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms(ttl))
                    .query_async(c)
                    .await
            })
            .await?;
        Ok(set.is_some())
    }

    async fn mark(&self, key: &StateKey, ttl: Duration) -> Result<()> {
        self.run(async |c| {
            redis::cmd("SET")
                .arg(key.as_str())
                .arg(1)
                .arg("PX")
                .arg(ms(ttl))
                .query_async::<()>(c)
                .await
        })
        .await
    }

    async fn contains(&self, key: &StateKey) -> Result<bool> {
        let n: u64 = self
            .run(async |c| redis::cmd("EXISTS").arg(key.as_str()).query_async(c).await)
            .await?;
        Ok(n > 0)
    }

    async fn forget(&self, key: &StateKey) -> Result<()> {
        self.run(async |c| {
            redis::cmd("DEL")
                .arg(key.as_str())
                .query_async::<()>(c)
                .await
        })
        .await
    }

    async fn claim(&self, key: &StateKey, value: &str, ttl: Duration) -> Result<Claimed> {
        let (value, pttl): (String, i64) = self
            .run(async |c| {
                self.claim
                    .key(key.as_str())
                    .arg(value)
                    .arg(ms(ttl))
                    .invoke_async(c)
                    .await
            })
            .await?;
        Ok(Claimed {
            value,
            remaining: Duration::from_millis(pttl.max(0) as u64),
        })
    }

    async fn incr_within(
        &self,
        key: &StateKey,
        limit: u64,
        window: Duration,
    ) -> Result<Option<u64>> {
        let n: i64 = self
            .run(async |c| {
                self.incr_within
                    .key(key.as_str())
                    .arg(limit)
                    .arg(ms(window))
                    .invoke_async(c)
                    .await
            })
            .await?;
        Ok((n > 0).then_some(n as u64))
    }

    async fn decr(&self, key: &StateKey) -> Result<()> {
        self.run(async |c| self.decr.key(key.as_str()).invoke_async::<()>(c).await)
            .await
    }

    async fn hold(
        &self,
        owner: &StateKey,
        item: &StateKey,
        quota: u64,
        ttl: Duration,
    ) -> Result<Hold> {
        let r: i64 = self
            .run(async |c| {
                self.hold
                    .key(owner.as_str())
                    .key(item.as_str())
                    .arg(quota)
                    .arg(ms(ttl))
                    .invoke_async(c)
                    .await
            })
            .await?;
        Ok(match r {
            1 => Hold::Held,
            0 => Hold::Exists,
            _ => Hold::Full,
        })
    }

    async fn held_by(&self, owner: &StateKey) -> Result<u64> {
        self.run(async |c| self.held.key(owner.as_str()).invoke_async(c).await)
            .await
    }
}
