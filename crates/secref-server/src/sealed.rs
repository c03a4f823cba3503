//! Self-contained tokens the server hands out and takes back without
//! storing them: `prefix` + base64url(nonce ‖ XChaCha20-Poly1305(payload)).
//! Lease ids ([`crate::leases`]) and shared wrapping tokens
//! ([`crate::wraps`]) are such tokens; each binds its sealing to its purpose
//! (and, for leases, to the principal) through the associated data, so one
//! kind can never be presented as the other.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

/// The nonce that starts every token; unique per token, so it also names it
/// (revocation and single-use markers are keyed by it).
pub(crate) type Nonce = [u8; NONCE_LEN];
pub(crate) const NONCE_LEN: usize = 24;
/// The AEAD tag the sealing adds.
const TAG_LEN: usize = 16;

/// One kind of token: its key, prefix and longest accepted length.
pub(crate) struct Sealer {
    cipher: XChaCha20Poly1305,
    prefix: &'static str,
    max_len: usize,
}

impl Sealer {
    /// Tokens under a fresh random key (valid in this process only).
    pub(crate) fn random(prefix: &'static str, max_len: usize) -> Sealer {
        let key = XChaCha20Poly1305::generate_key(&mut OsRng);
        Sealer::with_key(&key, prefix, max_len)
    }

    /// Tokens under `key` (32 bytes; e.g. derived from the shared state key,
    /// so every replica opens every replica's tokens).
    pub(crate) fn new(key: &[u8], prefix: &'static str, max_len: usize) -> Sealer {
        Sealer::with_key(chacha20poly1305::Key::from_slice(key), prefix, max_len)
    }

    fn with_key(key: &chacha20poly1305::Key, prefix: &'static str, max_len: usize) -> Sealer {
        Sealer {
            cipher: XChaCha20Poly1305::new(key),
            prefix,
            max_len,
        }
    }

    /// A fresh random nonce (chosen before sealing when the caller must
    /// record something under the token's name first). From the thread's
    /// CSPRNG (ChaCha, seeded and reseeded from the OS): 192 random bits, so
    /// nonces never repeat, without one `getrandom` system call per token.
    pub(crate) fn nonce() -> Nonce {
        rand::random()
    }

    /// Whether a payload of `len` bytes fits in a token that [`Sealer::open`]
    /// accepts back (base64 grows by 4/3).
    pub(crate) fn fits(&self, len: usize) -> bool {
        (NONCE_LEN + len + TAG_LEN).div_ceil(3) * 4 + self.prefix.len() <= self.max_len
    }

    /// The token for `payload` under `nonce`, bound to `aad`; `None` only if
    /// the cipher refuses (it does not for any length a token can hold).
    pub(crate) fn seal(&self, nonce: &Nonce, payload: &[u8], aad: &[u8]) -> Option<String> {
        let sealed = self
            .cipher
            .encrypt(XNonce::from_slice(nonce), Payload { msg: payload, aad })
            .ok()?;
        let mut raw = nonce.to_vec();
        raw.extend_from_slice(&sealed);
        Some(format!("{}{}", self.prefix, URL_SAFE_NO_PAD.encode(raw)))
    }

    /// The nonce and payload of a token this sealer made with the same
    /// `aad`; `None` for anything else (too long input is not decoded at
    /// all). The payload is wiped when dropped.
    pub(crate) fn open(&self, token: &str, aad: &[u8]) -> Option<(Nonce, Zeroizing<Vec<u8>>)> {
        let encoded = token
            .strip_prefix(self.prefix)
            .filter(|s| s.len() <= self.max_len)?;
        let raw = URL_SAFE_NO_PAD.decode(encoded).ok()?;
        let (nonce, sealed) = raw.split_at_checked(NONCE_LEN)?;
        let payload = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad })
            .ok()?;
        Some((nonce.try_into().ok()?, Zeroizing::new(payload)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_only_its_own_tokens_with_the_same_binding() {
        let a = Sealer::random("t-", 1024);
        let b = Sealer::random("t-", 1024);
        let n = Sealer::nonce();
        let token = a.seal(&n, b"payload", b"alice").unwrap();
        let (nonce, payload) = a.open(&token, b"alice").unwrap();
        assert_eq!((nonce, payload.as_slice()), (n, &b"payload"[..]));
        assert!(a.open(&token, b"bob").is_none());
        assert!(b.open(&token, b"alice").is_none());
        assert!(a.open(&token.replacen("t-", "u-", 1), b"alice").is_none());
        assert!(a.open("t-AAAA", b"alice").is_none());
        assert!(a
            .open(&format!("t-{}", "A".repeat(2000)), b"alice")
            .is_none());
        assert!(a.fits(700) && !a.fits(800));
    }
}
