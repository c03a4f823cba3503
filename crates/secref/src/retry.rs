//! The one retry policy every provider call goes through, and its one loop
//! ([`RetryPolicy::run`]).
//!
//! Bounded attempts, exponential backoff with full jitter, an overall
//! deadline, only errors marked `retryable` are retried, and a backend's
//! `Retry-After` is waited out (or ends the retries when it passes the
//! deadline).

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use serde::Deserialize;

use crate::error::{Error, Result};

/// How failed provider calls are retried.
///
/// ```
/// use std::time::Duration;
/// use secref::RetryPolicy;
/// let p = RetryPolicy::default();
/// assert_eq!(p.max_attempts, 3);
/// // Full jitter: each delay is in [0, min(max_delay, base * 2^n)].
/// assert!(p.backoff(1) <= Duration::from_millis(100));
/// ```
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Total attempts, including the first (1 disables retries).
    #[serde(default = "defaults::attempts")]
    pub max_attempts: u32,
    /// The first backoff's upper bound.
    #[serde(default = "defaults::base", with = "crate::config::millis")]
    pub base_delay: Duration,
    /// No backoff is longer than this.
    #[serde(default = "defaults::max", with = "crate::config::millis")]
    pub max_delay: Duration,
    /// No retry starts after this much time has passed since the first attempt.
    #[serde(default = "defaults::deadline", with = "crate::config::millis")]
    pub deadline: Duration,
}

mod defaults {
    use std::time::Duration;
    pub fn attempts() -> u32 {
        3
    }
    pub fn base() -> Duration {
        Duration::from_millis(50)
    }
    pub fn max() -> Duration {
        Duration::from_secs(2)
    }
    pub fn deadline() -> Duration {
        Duration::from_secs(30)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: defaults::attempts(),
            base_delay: defaults::base(),
            max_delay: defaults::max(),
            deadline: defaults::deadline(),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The upper bound of the backoff before attempt `retry + 1`
    /// (`retry` counts from 1).
    pub fn backoff_cap(&self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// A full-jitter backoff: uniform in `[0, backoff_cap(retry)]`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let cap = self.backoff_cap(retry);
        cap.mul_f64(fastrand::f64())
    }

    /// The wait before retry `retry` after `error`: the jittered backoff, or
    /// the backend's `Retry-After` when that is longer.
    pub fn delay_after(&self, retry: u32, error: &Error) -> Duration {
        let backoff = self.backoff(retry);
        error
            .retry_after()
            .map_or(backoff, |wait| wait.max(backoff))
    }

    /// Runs `attempt(1)`, `attempt(2)`, … until one succeeds, fails with an
    /// error that is not `retryable`, `max_attempts` is reached, or the next
    /// wait would end past `deadline` (counted from the first attempt); the
    /// last error is returned. Every attempt runs as the same logical call:
    /// its requests carry the same ids ([`crate::http::call_ids`]).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use secref::{Error, ErrorCode, RetryPolicy};
    /// let p = RetryPolicy { base_delay: std::time::Duration::ZERO, ..RetryPolicy::default() };
    /// let mut ids = Vec::new();
    /// let r: Result<(), Error> = p
    ///     .run(|_attempt| {
    ///         ids.push(secref::http::call_ids().0);
    ///         async { Err(Error::new(ErrorCode::BackendUnavailable, "down")) }
    ///     })
    ///     .await;
    /// assert_eq!(r.unwrap_err().code(), ErrorCode::BackendUnavailable);
    /// assert_eq!(ids.len(), 3);
    /// assert!(ids.iter().all(|i| i == &ids[0]));
    /// # });
    /// ```
    pub async fn run<T, F, Fut>(&self, mut attempt: F) -> Result<T>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let ids = crate::http::CallIds::fresh();
        let started = Instant::now();
        let mut n = 0u32;
        loop {
            n += 1;
            // The closure is called inside the scope too, so ids it takes
            // before its future starts are the call's.
            let err =
                match crate::http::with_call_ids(ids.clone(), async { attempt(n).await }).await {
                    Ok(v) => return Ok(v),
                    Err(e) => e,
                };
            if !err.retryable() || n >= self.max_attempts {
                return Err(err);
            }
            let delay = self.delay_after(n, &err);
            if started.elapsed() + delay >= self.deadline {
                return Err(err);
            }
            tracing::debug!(
                attempt = n,
                delay_ms = delay.as_millis() as u64,
                error_code = %err.code(),
                "retrying"
            );
            crate::metrics::retry(err.code());
            tokio::time::sleep(delay).await;
        }
    }

    /// Checks the policy's numbers.
    pub fn validate(&self) -> Result<()> {
        if self.max_attempts == 0 || self.max_attempts > 20 {
            return Err(Error::config("retry.max_attempts must be between 1 and 20"));
        }
        if self.deadline.is_zero() {
            return Err(Error::config("retry.deadline_ms must be > 0"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    fn quick(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts: attempts,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            deadline: Duration::from_secs(30),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn run_retries_only_retryable_errors_within_bounds() {
        let mut calls = 0;
        let r: Result<u32> = quick(5)
            .run(|n| {
                calls += 1;
                async move {
                    if n < 3 {
                        Err(Error::new(ErrorCode::Timeout, "slow"))
                    } else {
                        Ok(n)
                    }
                }
            })
            .await;
        assert_eq!((r.unwrap(), calls), (3, 3));
        let mut calls = 0;
        let r: Result<()> = quick(5)
            .run(|_| {
                calls += 1;
                async { Err(Error::new(ErrorCode::NotFound, "no")) }
            })
            .await;
        assert_eq!((r.unwrap_err().code(), calls), (ErrorCode::NotFound, 1));
    }

    /// Runs `policy` over an attempt that always fails with `err`: the
    /// calls made.
    async fn calls_failing_with(policy: RetryPolicy, err: Error) -> u32 {
        let mut calls = 0;
        let r: Result<()> = policy
            .run(|_| {
                calls += 1;
                let err = err.clone();
                async move { Err(err) }
            })
            .await;
        assert_eq!(r.unwrap_err().code(), err.code());
        calls
    }

    #[tokio::test(start_paused = true)]
    async fn run_honours_retry_after_and_the_deadline() {
        let slow_down = |secs| {
            Error::new(ErrorCode::RateLimited, "slow down")
                .with_retry_after(Duration::from_secs(secs))
        };
        // Retry-After beyond the deadline: no second attempt.
        assert_eq!(calls_failing_with(quick(5), slow_down(3600)).await, 1);
        // A short Retry-After is waited out (virtual time) and retried.
        let started = Instant::now();
        assert_eq!(calls_failing_with(quick(2), slow_down(7)).await, 2);
        assert!(started.elapsed() >= Duration::from_secs(7));
    }

    #[tokio::test]
    async fn run_keeps_request_ids_across_attempts_only() {
        let mut seen = Vec::new();
        let _: Result<()> = quick(3)
            .run(|_| {
                seen.push((crate::http::call_ids(), crate::http::call_ids()));
                async { Err(Error::new(ErrorCode::Timeout, "slow")) }
            })
            .await;
        assert_eq!(seen.len(), 3);
        // Every request of every attempt: the call's ids.
        assert!(seen.iter().all(|s| s == &seen[0] && s.0 == s.1));
        // Another logical call: other ids.
        let mut other = None;
        let _: Result<()> = quick(1)
            .run(|_| {
                other = Some(crate::http::call_ids());
                async { Ok(()) }
            })
            .await;
        assert_ne!(other.unwrap().0, seen[0].0 .0);
    }

    #[test]
    fn backoff_is_bounded_and_grows() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(75),
            deadline: Duration::from_secs(1),
        };
        assert_eq!(p.backoff_cap(1), Duration::from_millis(10));
        assert_eq!(p.backoff_cap(2), Duration::from_millis(20));
        assert_eq!(p.backoff_cap(3), Duration::from_millis(40));
        assert_eq!(p.backoff_cap(4), Duration::from_millis(75));
        assert_eq!(p.backoff_cap(64), Duration::from_millis(75));
        for retry in 1..8 {
            for _ in 0..100 {
                assert!(p.backoff(retry) <= p.backoff_cap(retry));
            }
        }
    }
}
