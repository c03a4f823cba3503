//! Bearer-token authentication: who is calling.
//!
//! A TCP request must carry `Authorization: Bearer <token>` (or Vault's
//! `X-Vault-Token: <token>`); a Unix-socket caller is identified by the
//! kernel instead ([`PeerCredentials`]). Over TLS with `client_ca`, a
//! verified client certificate names the caller `cert:<subject>` when a
//! rule lists that name; otherwise the token decides who calls, and the
//! certificate still binds the request ([`Principal::mtls_thumbprint`]). The token is
//! compared against every configured token in constant time (and without
//! stopping at the first match), so timing tells nothing about how much of a
//! guess was right or which token matched.

use axum::http::HeaderMap;
use secref::{constant_time_eq, Secret};

/// The name of the token generated at start (or read from `--token-file` /
/// `SECREF_SERVE_TOKEN`); access rules may name it.
pub const DEFAULT_TOKEN_NAME: &str = "default";

/// An authenticated caller: the names access rules can match on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The token's configured name (`default` for the start-up token), or
    /// `uid:<n>` for a Unix-socket peer. Leases are bound to it.
    pub name: String,
    /// Other names rules may use (`exe:<path>` for a Unix-socket peer,
    /// `cert:<SAN>` for an mTLS client).
    pub aliases: Vec<String>,
    /// The SHA-256 thumbprint of the client certificate the TLS handshake
    /// verified (`None` without mTLS): the request's sender binding.
    pub mtls_thumbprint: Option<String>,
}

impl Principal {
    /// A principal known by one name.
    pub fn named(name: impl Into<String>) -> Principal {
        Principal {
            name: name.into(),
            aliases: Vec::new(),
            mtls_thumbprint: None,
        }
    }

    /// Whether a rule's principal entry names this caller (`*` names all).
    pub fn is_named(&self, entry: &str) -> bool {
        entry == "*" || self.is_named_exactly(entry)
    }

    /// Whether `entry` is one of this caller's names (`*` does not count).
    pub fn is_named_exactly(&self, entry: &str) -> bool {
        entry == self.name || self.aliases.iter().any(|a| a == entry)
    }
}

/// The peer of a Unix-socket connection, from the kernel (`SO_PEERCRED`):
/// its uid, and the executable of its pid (`/proc/<pid>/exe`) when readable.
#[derive(Clone, Debug)]
pub struct PeerCredentials {
    uid: Option<u32>,
    exe: Option<std::path::PathBuf>,
}

impl PeerCredentials {
    /// Reads a connected stream's peer credentials.
    pub fn of(stream: &tokio::net::UnixStream) -> PeerCredentials {
        match stream.peer_cred() {
            Ok(c) => PeerCredentials {
                uid: Some(c.uid()),
                exe: c
                    .pid()
                    .and_then(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).ok()),
            },
            Err(_) => PeerCredentials {
                uid: None,
                exe: None,
            },
        }
    }

    /// The caller as rules see it: `uid:<n>`, also known as `exe:<path>`.
    /// `None` when the kernel gave no credentials.
    pub fn principal(&self) -> Option<Principal> {
        let uid = self.uid?;
        Some(Principal {
            name: format!("uid:{uid}"),
            aliases: self
                .exe
                .iter()
                .map(|e| format!("exe:{}", e.display()))
                .collect(),
            mtls_thumbprint: None,
        })
    }
}

/// Who the shared authentication layer found a request's caller to be
/// (`None`: no valid token and no Unix peer). Handlers extract it; without
/// the layer it is always `None`, so a route mounted without it fails closed.
#[derive(Clone, Debug)]
pub struct Caller(pub Option<Principal>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Caller, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Caller>()
            .cloned()
            .unwrap_or(Caller(None)))
    }
}

/// The accepted tokens, by name. Debug never shows them.
#[derive(Clone)]
pub struct Auth {
    tokens: Vec<(String, Secret)>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.tokens.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Auth").field("token_names", &names).finish()
    }
}

impl Auth {
    /// Accepts the given named tokens.
    pub fn new(tokens: Vec<(String, Secret)>) -> Auth {
        Auth { tokens }
    }

    /// The token names, for diagnostics.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tokens.iter().map(|(n, _)| n.as_str())
    }

    /// Who sent these headers, or `None` if the token (`Authorization:
    /// Bearer`, else `X-Vault-Token`) is missing or unknown.
    pub fn authenticate(&self, headers: &HeaderMap) -> Option<Principal> {
        let presented = bearer(headers)?;
        let mut found: Option<&str> = None;
        for (name, token) in &self.tokens {
            // No early exit: every token is compared.
            if constant_time_eq(token.expose_bytes(), presented) && found.is_none() {
                found = Some(name);
            }
        }
        found.map(Principal::named)
    }
}

/// The presented token: `Authorization: Bearer`, else `X-Vault-Token`.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        let token = headers.get("x-vault-token")?.as_bytes().trim_ascii();
        return (!token.is_empty()).then_some(token);
    };
    let value = value.as_bytes();
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// A fresh random token: 244 bits from the OS CSPRNG (two v4 UUIDs), as
/// `srt_<64 hex digits>`.
pub fn generate_token() -> Secret {
    let a = uuid::Uuid::new_v4();
    let b = uuid::Uuid::new_v4();
    Secret::new(format!("srt_{}{}", a.simple(), b.simple()).into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn matches_by_name_and_rejects_others() {
        let auth = Auth::new(vec![
            ("default".into(), Secret::from("tok-a")),
            ("ci".into(), Secret::from("tok-b")),
        ]);
        assert_eq!(
            auth.authenticate(&headers("Bearer tok-b")).unwrap().name,
            "ci"
        );
        assert_eq!(
            auth.authenticate(&headers("bearer tok-a")).unwrap().name,
            "default"
        );
        for bad in [
            "Bearer tok-c",
            "Bearer ",
            "Basic tok-a",
            "tok-a",
            "Bearer tok-a2",
        ] {
            assert!(auth.authenticate(&headers(bad)).is_none(), "{bad}");
        }
        assert!(auth.authenticate(&HeaderMap::new()).is_none());
        // Vault's header, used only without an Authorization header.
        let mut h = HeaderMap::new();
        h.insert("x-vault-token", HeaderValue::from_static("tok-b"));
        assert_eq!(auth.authenticate(&h).unwrap().name, "ci");
        h.insert("authorization", HeaderValue::from_static("Bearer nope"));
        assert!(auth.authenticate(&h).is_none());
        h.insert("x-vault-token", HeaderValue::from_static(" "));
        h.remove("authorization");
        assert!(auth.authenticate(&h).is_none());
        assert!(!format!("{auth:?}").contains("tok-"));
    }

    #[test]
    fn generated_tokens_differ() {
        let a = generate_token();
        let b = generate_token();
        assert_eq!(a.len(), 68);
        assert!(!a.ct_eq(b.expose_bytes()));
    }
}
