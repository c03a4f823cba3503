//! The one retry policy every provider call goes through.
//!
//! Bounded attempts, exponential backoff with full jitter, an overall
//! deadline, and only errors marked `retryable` are retried.

use std::time::Duration;

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
