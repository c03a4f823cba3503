//! Leases issued with resolved values, so that `revoke_leases` is real —
//! without holding anything per resolve.
//!
//! A lease id is **self-authenticating**: `lease-` followed by the
//! unpadded base64url of a random 24-byte nonce and the XChaCha20-Poly1305
//! sealing of (expiry, reference) under a key drawn at server start, with the
//! caller's principal name as associated data. So:
//!
//! * issuing a lease stores nothing: a resolve costs no server memory, and no
//!   caller can fill a table by resolving;
//! * only the server could have made an id, and only for the principal it was
//!   issued to: another caller's (or a forged, truncated or edited) id fails
//!   to open and is `not_found` — its existence is not revealed;
//! * the id carries the reference (sealed: the id reveals nothing), so a
//!   revocation is checked against the `lease_revoke` rules of that
//!   reference;
//! * a restart draws a new key and so forgets every lease (as before).
//!
//! Revoking is the only thing that stores state: the revoked lease's nonce,
//! until the lease would have ended, in an [`Expiring`] table with a quota
//! per principal (`max_revoked_leases_per_principal`). Revoking again is
//! `not_found`; an expired lease is `expired`.
//!
//! **Several replicas** (`[state] backend = "redis"`, [`Leases::shared`]):
//! the sealing key is derived from `[state] key_env` (the same on every
//! replica, so any replica opens any replica's lease ids), expiries are
//! wall-clock milliseconds (replicas share no monotonic clock), and the
//! revoked nonces and the per-principal quota live in the shared backend
//! (HMAC'd keys, one atomic script per revocation): a lease revoked through
//! one replica is revoked on all, and the quota counts every replica's
//! revocations.

use std::time::{Duration, Instant, SystemTime};

use secref::ErrorCode;

use secref::state::{Hold, SharedState};

use crate::expiring::{Expiring, Refused, SharedHeld};
use crate::sealed::{Nonce, Sealer};

/// The default `max_revoked_leases_per_principal`.
pub const DEFAULT_REVOKED_QUOTA: usize = 10_000;

/// What every lease id starts with (the SDK's conformance suite checks it).
const PREFIX: &str = "lease-";
/// Longest lease id accepted: longer input is not one of ours and is not
/// decoded at all.
const MAX_ID_LEN: usize = 8 * 1024;
/// Binds the sealing to its purpose (no other sealed data is ever a lease).
const CONTEXT: &[u8] = b"secref-serve lease v1\0";

/// The lease authority: the sealing key, and the revoked leases.
pub struct Leases {
    sealer: Sealer,
    /// Lease ids' expiries are milliseconds since this instant (a process's
    /// monotonic clock: a wall-clock jump neither ends nor extends leases).
    epoch: Instant,
    revoked: Expiring<Nonce, ()>,
    /// Revocations kept in the shared backend instead of `revoked`, and
    /// their `secref_leases_held` gauge.
    shared: Option<(SharedState, SharedHeld)>,
    quota: usize,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("revoked", &self.revoked)
            .finish_non_exhaustive()
    }
}

/// A freshly issued lease.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The lease id (`lease-…`).
    pub id: String,
    /// When it ends.
    pub expires_at: SystemTime,
}

/// A lease id opened by the principal it was issued to.
#[derive(Debug, Clone)]
pub struct Lease {
    /// The reference the lease was issued for, canonical, as the client
    /// wrote it (what access rules match).
    pub reference: String,
    expires: Instant,
    nonce: Nonce,
}

impl Lease {
    /// Whether the lease has ended.
    pub fn is_expired(&self) -> bool {
        self.expires <= Instant::now()
    }
}

impl Default for Leases {
    fn default() -> Self {
        Leases::new(DEFAULT_REVOKED_QUOTA)
    }
}

impl Leases {
    /// A fresh authority (new key) allowing each principal `revoked_quota`
    /// revoked-but-not-yet-expired leases.
    pub fn new(revoked_quota: usize) -> Leases {
        Leases {
            sealer: Sealer::random(PREFIX, MAX_ID_LEN),
            epoch: Instant::now(),
            revoked: Expiring::new(revoked_quota).with_gauge("revoked_lease"),
            shared: None,
            quota: revoked_quota,
        }
    }

    /// An authority shared by every replica over `state`: the sealing key
    /// derived from `[state] key_env`, wall-clock expiries, revocations and
    /// their quota in the shared backend.
    pub fn shared(revoked_quota: usize, state: SharedState) -> Leases {
        Leases {
            sealer: Sealer::new(state.lease_key().expose_bytes(), PREFIX, MAX_ID_LEN),
            epoch: Instant::now(),
            revoked: Expiring::new(0),
            shared: Some((
                state.clone(),
                SharedHeld::new(state, "revoked-by", "revoked_lease"),
            )),
            quota: revoked_quota,
        }
    }

    /// The lease clock in milliseconds: since this process's start (a
    /// monotonic clock), or with shared state the Unix time (the clock
    /// replicas share).
    fn now_ms(&self) -> u64 {
        match self.shared {
            Some(_) => SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64,
            None => self.epoch.elapsed().as_millis() as u64,
        }
    }

    /// Issues a lease on `reference` for `principal`, lasting `ttl`. Stores
    /// nothing.
    pub fn issue(
        &self,
        principal: &str,
        reference: &str,
        ttl: Duration,
    ) -> Result<Issued, ErrorCode> {
        let expires_ms = self.now_ms().saturating_add(ttl.as_millis() as u64);
        let mut plain = Vec::with_capacity(8 + reference.len());
        plain.extend_from_slice(&expires_ms.to_be_bytes());
        plain.extend_from_slice(reference.as_bytes());
        let id = self
            .sealer
            .seal(&Sealer::nonce(), &plain, &aad(principal))
            .ok_or(ErrorCode::Internal)?;
        Ok(Issued {
            id,
            expires_at: SystemTime::now() + ttl,
        })
    }

    /// Opens a lease id presented by `principal`: `not_found` unless this
    /// server issued it to that principal.
    pub fn open(&self, principal: &str, id: &str) -> Result<Lease, ErrorCode> {
        let (nonce, plain) = self
            .sealer
            .open(id, &aad(principal))
            .ok_or(ErrorCode::NotFound)?;
        let (ms, reference) = plain.split_at_checked(8).ok_or(ErrorCode::NotFound)?;
        let ms = u64::from_be_bytes(ms.try_into().map_err(|_| ErrorCode::NotFound)?);
        let reference = String::from_utf8(reference.to_vec()).map_err(|_| ErrorCode::NotFound)?;
        let left = Duration::from_millis(ms.saturating_sub(self.now_ms()));
        Ok(Lease {
            reference,
            expires: Instant::now() + left,
            nonce,
        })
    }

    /// Revokes an opened lease of `principal`: `expired` if it has ended,
    /// `not_found` if already revoked, `rate_limited` if the principal holds
    /// its quota of revoked leases (other principals are unaffected).
    /// With shared state, an unreachable backend is `backend_unavailable`.
    pub async fn revoke(&self, principal: &str, lease: &Lease) -> Result<SystemTime, ErrorCode> {
        if lease.is_expired() {
            return Err(ErrorCode::Expired);
        }
        if let Some((state, held)) = &self.shared {
            let owner = held.owner_key(principal);
            let item = state.key("revoked", &[&lease.nonce]);
            let ttl = lease.expires.saturating_duration_since(Instant::now());
            return match state
                .backend()
                .hold(&owner, &item, self.quota as u64, ttl)
                .await
            {
                Ok(Hold::Held) => Ok(SystemTime::now()),
                Ok(Hold::Exists) => Err(ErrorCode::NotFound),
                Ok(Hold::Full) => {
                    secref::metrics::count(secref::metrics::QUOTA_REFUSALS, 1);
                    Err(ErrorCode::RateLimited)
                }
                Err(e) => Err(e.code()),
            };
        }
        match self
            .revoked
            .insert(principal, lease.nonce, (), lease.expires)
        {
            Ok(()) => Ok(SystemTime::now()),
            Err(Refused::Exists) => Err(ErrorCode::NotFound),
            Err(Refused::Full) => Err(ErrorCode::RateLimited),
        }
    }

    /// With shared state, sets the `secref_leases_held` gauge of revoked
    /// leases from the backend (see [`SharedHeld`]); the in-memory table
    /// keeps its gauge current by itself.
    /// `principals`: the configured ones, reported even before they hold
    /// anything through this replica.
    pub async fn report_held(&self, principals: &[String]) {
        if let Some((_, held)) = &self.shared {
            held.report(principals).await;
        }
    }

    /// How many revoked leases `principal` holds (until they expire).
    pub fn revoked_by(&self, principal: &str) -> usize {
        self.revoked.held_by(principal)
    }
}

/// The associated data: the purpose and the principal the lease is bound to.
fn aad(principal: &str) -> Vec<u8> {
    [CONTEXT, principal.as_bytes()].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn revoke_is_per_principal_and_once() {
        let l = Leases::default();
        let a = l.issue("a", "env://A", MIN).unwrap();
        assert!(a.id.starts_with("lease-"));
        let raw = base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            &a.id[PREFIX.len()..],
        )
        .unwrap();
        assert!(
            !raw.windows(7).any(|w| w == b"env://A"),
            "the reference is sealed"
        );
        assert_eq!(l.open("b", &a.id).unwrap_err(), ErrorCode::NotFound);
        let lease = l.open("a", &a.id).unwrap();
        assert_eq!(lease.reference, "env://A");
        assert!(block(l.revoke("a", &lease)).is_ok());
        assert_eq!(block(l.revoke("a", &lease)), Err(ErrorCode::NotFound));
        let e = l.issue("a", "env://A", Duration::ZERO).unwrap();
        let e = l.open("a", &e.id).unwrap();
        assert_eq!(block(l.revoke("a", &e)), Err(ErrorCode::Expired));
        assert_eq!(l.revoked_by("a"), 1);
    }

    #[test]
    fn issuing_stores_nothing() {
        let l = Leases::new(1);
        for _ in 0..1000 {
            l.issue("a", "env://A", MIN).unwrap();
        }
        assert!(l.revoked.is_empty());
    }

    #[test]
    fn forged_and_foreign_ids_are_not_found() {
        let l = Leases::default();
        let other = Leases::default();
        let id = l.issue("a", "env://A", MIN).unwrap().id;
        let mut edited = id.clone().into_bytes();
        let last = edited.len() - 1;
        edited[last] = if edited[last] == b'A' { b'B' } else { b'A' };
        let edited = String::from_utf8(edited).unwrap();
        for bad in [
            "",
            "lease-",
            "lease-abc",
            "lease-!!!",
            &id[..id.len() - 4],
            &edited,
            &format!("lease-{}", "A".repeat(MAX_ID_LEN + 4)),
        ] {
            assert_eq!(l.open("a", bad).unwrap_err(), ErrorCode::NotFound, "{bad}");
        }
        assert_eq!(other.open("a", &id).unwrap_err(), ErrorCode::NotFound);
    }

    #[test]
    fn quota_of_revocations_is_per_principal() {
        let l = Leases::new(2);
        let revoke = |who: &str| {
            let id = l.issue(who, "env://A", MIN).unwrap().id;
            block(l.revoke(who, &l.open(who, &id).unwrap()))
        };
        assert!(revoke("a").is_ok());
        assert!(revoke("a").is_ok());
        assert_eq!(revoke("a"), Err(ErrorCode::RateLimited));
        assert!(revoke("b").is_ok());
    }
}
