//! Bearer-token authentication: who is calling.
//!
//! Every request must carry `Authorization: Bearer <token>`. The token is
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
    /// The token's configured name (`default` for the start-up token).
    pub name: String,
}

/// The accepted tokens, by name. Debug never shows them.
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

    /// Who sent these headers, or `None` if the bearer token is missing or
    /// unknown.
    pub fn authenticate(&self, headers: &HeaderMap) -> Option<Principal> {
        let presented = bearer(headers)?;
        let mut found: Option<&str> = None;
        for (name, token) in &self.tokens {
            // No early exit: every token is compared.
            if constant_time_eq(token.expose_bytes(), presented) && found.is_none() {
                found = Some(name);
            }
        }
        found.map(|name| Principal {
            name: name.to_string(),
        })
    }
}

fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.as_bytes();
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
