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

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use secref::state::{Hold, SharedState};
use secref::{Error, ErrorCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What every token starts with (as Vault's service tokens).
const PREFIX: &str = "hvs.";
/// Longest token accepted: longer input is not one of ours and is not
/// decoded at all (a wrapped KV answer is a few KB).
const MAX_TOKEN_LEN: usize = 256 * 1024;
/// Binds the sealing to its purpose (no lease id is ever a wrapping token).
const AAD: &[u8] = b"secref-serve wrap v1\0";
const NONCE_LEN: usize = 24;

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
    cipher: XChaCha20Poly1305,
    state: SharedState,
    quota: u64,
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
        let key = chacha20poly1305::Key::from_slice(state.wrap_key().expose_bytes());
        SealedWraps {
            cipher: XChaCha20Poly1305::new(key),
            state,
            quota: quota as u64,
        }
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
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let owner_key = self.state.key("wraps-by", &[owner.as_bytes()]);
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
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: &plain,
                    aad: AAD,
                },
            )
            .map_err(|_| Refused::Backend(Error::new(ErrorCode::Internal, "cannot seal")))?;
        let mut raw = nonce.to_vec();
        raw.extend_from_slice(&sealed);
        Ok(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(raw)))
    }

    /// Opens a token: its nonce and contents, unless forged or expired.
    fn open(&self, token: &str) -> std::result::Result<([u8; NONCE_LEN], Wrapped), Refused> {
        let encoded = token
            .strip_prefix(PREFIX)
            .filter(|s| s.len() <= MAX_TOKEN_LEN)
            .ok_or(Refused::Invalid)?;
        let raw = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| Refused::Invalid)?;
        if raw.len() < NONCE_LEN {
            return Err(Refused::Invalid);
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let plain = zeroize::Zeroizing::new(
            self.cipher
                .decrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: sealed,
                        aad: AAD,
                    },
                )
                .map_err(|_| Refused::Invalid)?,
        );
        let wrapped: Wrapped = serde_json::from_slice(&plain).map_err(|_| Refused::Invalid)?;
        if wrapped.expires_ms <= now_ms() {
            return Err(Refused::Invalid);
        }
        Ok((nonce.try_into().map_err(|_| Refused::Invalid)?, wrapped))
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
