//! Leases issued with resolved values, so that `revoke_leases` is real.
//!
//! A lease is random, bound to the caller that got it and to the reference,
//! and lives `lease_ttl_seconds`. Leases are held in memory only (a restart
//! forgets them) and are bounded in number.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use secref::ErrorCode;

/// Most leases held at once; past it, resolves fail with `rate_limited`
/// until some expire or are revoked.
pub const MAX_LEASES: usize = 100_000;

#[derive(Debug)]
struct Lease {
    principal: String,
    expires: Instant,
}

/// The live leases.
#[derive(Debug, Default)]
pub struct Leases {
    map: Mutex<HashMap<String, Lease>>,
}

/// A freshly issued lease.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The lease id (`lease-<uuid>`).
    pub id: String,
    /// When it ends.
    pub expires_at: SystemTime,
}

impl Leases {
    /// Issues a lease for `principal` lasting `ttl`.
    pub fn issue(&self, principal: &str, ttl: Duration) -> Result<Issued, ErrorCode> {
        let now = Instant::now();
        let mut map = self.map.lock();
        if map.len() >= MAX_LEASES {
            map.retain(|_, l| l.expires > now);
            if map.len() >= MAX_LEASES {
                return Err(ErrorCode::RateLimited);
            }
        }
        let id = format!("lease-{}", uuid::Uuid::new_v4());
        map.insert(
            id.clone(),
            Lease {
                principal: principal.to_string(),
                expires: now + ttl,
            },
        );
        Ok(Issued {
            id,
            expires_at: SystemTime::now() + ttl,
        })
    }

    /// Revokes a lease the principal holds. Another caller's lease is
    /// `not_found` (its existence is not revealed); an expired one `expired`.
    pub fn revoke(&self, principal: &str, id: &str) -> Result<SystemTime, ErrorCode> {
        let mut map = self.map.lock();
        match map.get(id) {
            Some(l) if l.principal == principal => {
                let expired = l.expires <= Instant::now();
                map.remove(id);
                if expired {
                    Err(ErrorCode::Expired)
                } else {
                    Ok(SystemTime::now())
                }
            }
            _ => Err(ErrorCode::NotFound),
        }
    }

    /// How many leases are held (live or not yet purged).
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    /// Whether no leases are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoke_is_per_principal_and_once() {
        let l = Leases::default();
        let a = l.issue("a", Duration::from_secs(60)).unwrap();
        assert_eq!(l.revoke("b", &a.id), Err(ErrorCode::NotFound));
        assert!(l.revoke("a", &a.id).is_ok());
        assert_eq!(l.revoke("a", &a.id), Err(ErrorCode::NotFound));
        let e = l.issue("a", Duration::ZERO).unwrap();
        assert_eq!(l.revoke("a", &e.id), Err(ErrorCode::Expired));
        assert!(l.is_empty());
    }
}
