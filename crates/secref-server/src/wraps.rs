//! Vault response-wrapping tokens shared by every replica (`[state]
//! backend = "redis"`).
//!
//! A token is **self-contained**: `hvs.` followed by the unpadded base64url
//! of a random 24-byte nonce and the XChaCha20-Poly1305 sealing of the
//! wrapped answer (with its expiry and creation facts) under a key derived
//! from `[state] key_env` ([`SharedState::wrap_key`]). So any replica opens
//! any replica's token, and nothing secret is ever written to Redis: the
//! wrapped value travels only inside the sealed token, which only the
//! replicas can open (a forged, edited or truncated token fails to open).
//!
//! Redis holds only HMAC'd names, each expiring with the token:
//!
//! * `unwrapped:{hmac(nonce)}`, set by the unwrap with `SET NX PX`
//!   ([`StateBackend::use_once`](secref::state::StateBackend::use_once)):
//!   the first unwrap on any replica wins, every later one (and a lookup)
//!   finds the token used;
//! * the per-principal quota of outstanding tokens
//!   (`max_wraps_per_principal`), one atomic [`hold`] per wrap. Unlike the
//!   in-memory table, a token counts until it *expires* (unwrapping does
//!   not give the slot back early).
//!
//! An unreachable Redis fails closed: wrap, unwrap and lookup answer
//! `backend_unavailable` (retryable, remote code `STATE_UNAVAILABLE`; a
//! Vault 503), never a second unwrap.
//!
//! [`hold`]: secref::state::StateBackend::hold

use std::time::{Duration, SystemTime};

use secref::state::{Hold, SharedState};
use secref::{Error, ErrorCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::expiring::SharedHeld;
use crate::sealed::{Nonce, Sealer};

/// What every token starts with (as Vault's service tokens).
const PREFIX: &str = "hvs.";
/// Longest token accepted: longer input is not one of ours and is not
/// decoded at all (a wrapped KV answer is a few KB).
const MAX_TOKEN_LEN: usize = 256 * 1024;
/// Binds the sealing to its purpose (no lease id is ever a wrapping token).
const AAD: &[u8] = b"secref-serve wrap v1\0";

/// A wrapped answer and the facts `sys/wrapping/lookup` reports.
#[derive(Serialize, Deserialize)]
pub(crate) struct Wrapped {
    pub(crate) answer: Value,
    /// The creation TTL, in seconds.
    pub(crate) ttl: u64,
    pub(crate) creation_time: String,
    pub(crate) creation_path: String,
    /// When the token ends, in Unix milliseconds (the clock replicas share).
    expires_ms: u64,
}

/// Why a token was not opened or used.
pub(crate) enum Refused {
    /// Not ours, expired or already unwrapped: Vault's 400 "not valid".
    Invalid,
    /// The caller holds its quota of outstanding tokens.
    Full,
    /// The sealed answer would be longer than any token accepted back.
    TooLarge,
    /// The shared backend failed (fail closed).
    Backend(Error),
}

impl From<Error> for Refused {
    fn from(e: Error) -> Self {
        Refused::Backend(e)
    }
}

/// The sealing key and the shared single-use markers.
pub(crate) struct SealedWraps {
    sealer: Sealer,
    state: SharedState,
    quota: u64,
    /// The `secref_leases_held{kind="wrap"}` gauge of the shared quota.
    held: SharedHeld,
}

impl std::fmt::Debug for SealedWraps {
    // Never the sealing key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedWraps")
            .field("quota", &self.quota)
            .field("held", &self.held)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

impl SealedWraps {
    /// Tokens sealed under `state`'s wrap key, `quota` outstanding per
    /// principal.
    pub(crate) fn new(state: SharedState, quota: usize) -> SealedWraps {
        SealedWraps {
            sealer: Sealer::new(state.wrap_key().expose_bytes(), PREFIX, MAX_TOKEN_LEN),
            held: SharedHeld::new(state.clone(), "wraps-by", "wrap"),
            state,
            quota: quota as u64,
        }
    }

    /// Sets the `secref_leases_held{kind="wrap"}` gauge from the backend.
    pub(crate) async fn report_held(&self, principals: &[String]) {
        self.held.report(principals).await;
    }

    /// Seals `answer` into a new token for `owner`, counted against its
    /// quota until it expires.
    pub(crate) async fn wrap(
        &self,
        owner: &str,
        answer: Value,
        ttl: Duration,
        creation_time: String,
        creation_path: &str,
    ) -> std::result::Result<String, Refused> {
        let wrapped = Wrapped {
            answer,
            ttl: ttl.as_secs(),
            creation_time,
            creation_path: creation_path.to_owned(),
            expires_ms: now_ms().saturating_add(ttl.as_millis() as u64),
        };
        // The plaintext holds the wrapped value: wiped when dropped.
        let plain = zeroize::Zeroizing::new(serde_json::to_vec(&wrapped).map_err(|_| {
            Refused::Backend(Error::new(ErrorCode::Internal, "cannot encode the answer"))
        })?);
        // Never hand out a token that could not be unwrapped.
        if !self.sealer.fits(plain.len()) {
            return Err(Refused::TooLarge);
        }
        let nonce = Sealer::nonce();
        let owner_key = self.held.owner_key(owner);
        let item = self.state.key("wrap", &[nonce.as_slice()]);
        match self
            .state
            .backend()
            .hold(
                &owner_key,
                &item,
                self.quota,
                ttl.max(Duration::from_millis(1)),
            )
            .await?
        {
            Hold::Held | Hold::Exists => {}
            Hold::Full => {
                secref::metrics::count(secref::metrics::QUOTA_REFUSALS, 1);
                return Err(Refused::Full);
            }
        }
        self.sealer
            .seal(&nonce, &plain, AAD)
            .ok_or_else(|| Refused::Backend(Error::new(ErrorCode::Internal, "cannot seal")))
    }

    /// Opens a token: its nonce and contents, unless forged or expired.
    fn open(&self, token: &str) -> std::result::Result<(Nonce, Wrapped), Refused> {
        let (nonce, plain) = self.sealer.open(token, AAD).ok_or(Refused::Invalid)?;
        let wrapped: Wrapped = serde_json::from_slice(&plain).map_err(|_| Refused::Invalid)?;
        if wrapped.expires_ms <= now_ms() {
            return Err(Refused::Invalid);
        }
        Ok((nonce, wrapped))
    }

    fn used_key(&self, nonce: &[u8]) -> secref::state::StateKey {
        self.state.key("unwrapped", &[nonce])
    }

    /// Unwraps `token`: its answer the first time on any replica, then
    /// [`Refused::Invalid`].
    pub(crate) async fn unwrap(&self, token: &str) -> std::result::Result<Value, Refused> {
        let (nonce, wrapped) = self.open(token)?;
        // The marker lives as long as the token could (it fails to open
        // after that anyway).
        let left = Duration::from_millis(wrapped.expires_ms.saturating_sub(now_ms()).max(1));
        if self
            .state
            .backend()
            .use_once(&self.used_key(&nonce), left)
            .await?
        {
            Ok(wrapped.answer)
        } else {
            Err(Refused::Invalid)
        }
    }

    /// Looks `token` up without using it: its creation facts while it is
    /// unused and live.
    pub(crate) async fn lookup(&self, token: &str) -> std::result::Result<Wrapped, Refused> {
        let (nonce, wrapped) = self.open(token)?;
        if self
            .state
            .backend()
            .contains(&self.used_key(&nonce))
            .await?
        {
            return Err(Refused::Invalid);
        }
        Ok(wrapped)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;
    use secref::state::{Claimed, StateBackend, StateKey};
    use secref::Secret;
    use serde_json::json;

    use super::*;

    /// Just enough backend: `use_once`/`contains` on a set, `hold` always
    /// granted, or every call failing when `down`.
    #[derive(Debug, Default)]
    struct Set {
        keys: Mutex<HashSet<String>>,
        down: bool,
    }

    #[async_trait]
    impl StateBackend for Set {
        async fn use_once(&self, k: &StateKey, _: Duration) -> secref::Result<bool> {
            self.up()?;
            Ok(self.keys.lock().unwrap().insert(k.as_str().to_owned()))
        }
        async fn mark(&self, _: &StateKey, _: Duration) -> secref::Result<()> {
            unreachable!()
        }
        async fn contains(&self, k: &StateKey) -> secref::Result<bool> {
            self.up()?;
            Ok(self.keys.lock().unwrap().contains(k.as_str()))
        }
        async fn forget(&self, _: &StateKey) -> secref::Result<()> {
            unreachable!()
        }
        async fn claim(&self, _: &StateKey, _: &str, _: Duration) -> secref::Result<Claimed> {
            unreachable!()
        }
        async fn incr_within(
            &self,
            _: &StateKey,
            _: u64,
            _: Duration,
        ) -> secref::Result<Option<u64>> {
            unreachable!()
        }
        async fn decr(&self, _: &StateKey) -> secref::Result<()> {
            unreachable!()
        }
        async fn hold(
            &self,
            _: &StateKey,
            _: &StateKey,
            _: u64,
            _: Duration,
        ) -> secref::Result<Hold> {
            self.up()?;
            Ok(Hold::Held)
        }
        async fn held_by(&self, _: &StateKey) -> secref::Result<u64> {
            unreachable!()
        }
    }

    impl Set {
        fn up(&self) -> secref::Result<()> {
            if self.down {
                return Err(secref::state::unavailable("test"));
            }
            Ok(())
        }
    }

    fn wraps(key: &str, backend: Arc<Set>) -> SealedWraps {
        let state = SharedState::new(backend, "t", &Secret::from(key.repeat(32)), Duration::ZERO);
        SealedWraps::new(state, 10)
    }

    const VALUE: &str = "wrapped-canary-0b7e";

    /// A token for `answer`, issued to principal `svc`.
    async fn issue(wraps: &SealedWraps, answer: &serde_json::Value, ttl: Duration) -> String {
        wraps
            .wrap("svc", answer.clone(), ttl, "now".into(), "p")
            .await
            .ok()
            .unwrap()
    }

    #[tokio::test]
    async fn sealed_tokens_open_on_any_replica_once_and_never_show_the_value() {
        let backend = Arc::new(Set::default());
        let (one, two) = (wraps("k", backend.clone()), wraps("k", backend.clone()));
        let answer = json!({"data": {"v": VALUE}});
        let token = issue(&one, &answer, Duration::from_secs(60)).await;
        assert!(token.starts_with(PREFIX) && !token.contains(VALUE));
        assert_eq!(two.lookup(&token).await.ok().unwrap().ttl, 60);
        assert_eq!(two.unwrap(&token).await.ok().unwrap(), answer);
        assert!(matches!(one.unwrap(&token).await, Err(Refused::Invalid)));
        assert!(matches!(one.lookup(&token).await, Err(Refused::Invalid)));
        // Another key (another deployment) opens nothing.
        let fresh = issue(&one, &answer, Duration::from_secs(60)).await;
        let other = wraps("x", backend.clone());
        assert!(matches!(other.unwrap(&fresh).await, Err(Refused::Invalid)));
        // Expired: refused though never unwrapped.
        let gone = issue(&one, &answer, Duration::from_millis(1)).await;
        std::thread::sleep(Duration::from_millis(5));
        assert!(matches!(two.unwrap(&gone).await, Err(Refused::Invalid)));
        // Too large to come back in a header: not issued at all.
        let big = json!({"data": "x".repeat(MAX_TOKEN_LEN)});
        let r = one
            .wrap("svc", big, Duration::from_secs(60), "now".into(), "p")
            .await;
        assert!(matches!(r, Err(Refused::TooLarge)));
        // Backend down: fails closed, the token is not used.
        let down = wraps(
            "k",
            Arc::new(Set {
                down: true,
                ..Set::default()
            }),
        );
        assert!(matches!(down.unwrap(&fresh).await, Err(Refused::Backend(e)) if e.retryable()));
        assert_eq!(two.unwrap(&fresh).await.ok().unwrap(), answer);
    }
}
