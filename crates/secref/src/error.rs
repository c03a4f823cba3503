//! The one error type of the library.
//!
//! Every failure carries a stable machine [`ErrorCode`] (a snake_case string
//! that scripts and other languages can match on), a `retryable` flag, and
//! optionally the reference it concerns, the backend's request id and a hint.
//! No error ever contains a secret value or a credential: constructors take
//! only text that the caller controls, and providers never put response
//! bodies into messages.
//!
//! | code | retryable | meaning |
//! |---|---|---|
//! | `invalid_reference` | no | the reference does not follow the grammar |
//! | `illegal_segment` | no | a canonical URI path segment is empty, `..`, encoded or has illegal characters |
//! | `unsupported_engine` | no | unknown scheme, provider or engine |
//! | `ambiguous_query` | no | a query parameter is repeated |
//! | `double_mount_source` | no | a `mount` query parameter competes with the path's mount |
//! | `invalid_wildcard` | no | `*` in a path segment |
//! | `tenant_mount_mismatch` | no | the mount is not in the tenant's allowed list |
//! | `no_provider` | no | no provider is configured for the reference's scheme |
//! | `not_found` | no | the secret does not exist |
//! | `field_not_found` | no | the secret exists but has no such field |
//! | `version_deleted` | no | the pinned version is soft-deleted |
//! | `version_destroyed` | no | the pinned version is destroyed |
//! | `expired` | no | the secret or lease has expired |
//! | `permission_denied` | no | the caller may not read it |
//! | `unauthenticated` | no | credentials are missing, wrong or expired |
//! | `invalid_utf8` | no | text was asked for but the value is not UTF-8 |
//! | `config` | no | configuration is missing or invalid |
//! | `usage` | no | a call was made with invalid arguments |
//! | `unsupported` | no | the provider does not support this operation (or this kind of file) |
//! | `too_large` | no | the value, or a backend's answer, is larger than the configured limit |
//! | `rate_limited` | yes | the backend or resolver asked to slow down |
//! | `backend_unavailable` | yes | the backend could not be reached or answered 5xx |
//! | `timeout` | yes | the backend did not answer in time |
//! | `invalid_response` | no | the backend's answer could not be understood |
//! | `redirect_refused` | no | the backend answered with a redirect that is not followed |
//! | `integrity` | no | the local store is tampered with or corrupt |
//! | `wrong_key` | no | the local store key does not decrypt the store |
//! | `io` | no | a local file could not be read or written |
//! | `internal` | no | a bug: please report it |

use std::borrow::Cow;
use std::fmt;

/// A stable, machine-readable error code.
///
/// The string form (see [`ErrorCode::as_str`]) is part of the public
/// interface: it is printed by the CLI, sent by the server, and never changes
/// meaning once released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The reference does not follow the grammar.
    InvalidReference,
    /// A canonical URI segment is illegal.
    IllegalSegment,
    /// Unknown scheme, provider or engine.
    UnsupportedEngine,
    /// A query parameter is repeated.
    AmbiguousQuery,
    /// A `mount` query parameter competes with the path's mount.
    DoubleMountSource,
    /// `*` in a path segment.
    InvalidWildcard,
    /// The mount is outside the tenant's allowed mounts.
    TenantMountMismatch,
    /// No provider is configured for the reference's scheme.
    NoProvider,
    /// The secret does not exist.
    NotFound,
    /// The secret exists but has no such field.
    FieldNotFound,
    /// The pinned version is soft-deleted.
    VersionDeleted,
    /// The pinned version is destroyed.
    VersionDestroyed,
    /// The secret or lease has expired.
    Expired,
    /// The caller may not access the secret.
    PermissionDenied,
    /// Credentials are missing, wrong or expired.
    Unauthenticated,
    /// Text was asked for but the value is not valid UTF-8.
    InvalidUtf8,
    /// Configuration is missing or invalid.
    Config,
    /// Invalid arguments to a call.
    Usage,
    /// The provider does not support the operation (or this kind of file).
    Unsupported,
    /// The value is larger than the configured limit.
    TooLarge,
    /// The backend asked to slow down.
    RateLimited,
    /// The backend could not be reached or failed.
    BackendUnavailable,
    /// The backend did not answer in time.
    Timeout,
    /// The backend's answer could not be understood.
    InvalidResponse,
    /// A redirect was refused.
    RedirectRefused,
    /// The local store is tampered with or corrupt.
    Integrity,
    /// The key does not decrypt the local store.
    WrongKey,
    /// A local file could not be read or written.
    Io,
    /// A bug.
    Internal,
}

impl ErrorCode {
    /// Every code, in table order.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::InvalidReference,
        ErrorCode::IllegalSegment,
        ErrorCode::UnsupportedEngine,
        ErrorCode::AmbiguousQuery,
        ErrorCode::DoubleMountSource,
        ErrorCode::InvalidWildcard,
        ErrorCode::TenantMountMismatch,
        ErrorCode::NoProvider,
        ErrorCode::NotFound,
        ErrorCode::FieldNotFound,
        ErrorCode::VersionDeleted,
        ErrorCode::VersionDestroyed,
        ErrorCode::Expired,
        ErrorCode::PermissionDenied,
        ErrorCode::Unauthenticated,
        ErrorCode::InvalidUtf8,
        ErrorCode::Config,
        ErrorCode::Usage,
        ErrorCode::Unsupported,
        ErrorCode::TooLarge,
        ErrorCode::RateLimited,
        ErrorCode::BackendUnavailable,
        ErrorCode::Timeout,
        ErrorCode::InvalidResponse,
        ErrorCode::RedirectRefused,
        ErrorCode::Integrity,
        ErrorCode::WrongKey,
        ErrorCode::Io,
        ErrorCode::Internal,
    ];

    /// The stable snake_case string for this code.
    ///
    /// ```
    /// assert_eq!(secref::ErrorCode::NotFound.as_str(), "not_found");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidReference => "invalid_reference",
            ErrorCode::IllegalSegment => "illegal_segment",
            ErrorCode::UnsupportedEngine => "unsupported_engine",
            ErrorCode::AmbiguousQuery => "ambiguous_query",
            ErrorCode::DoubleMountSource => "double_mount_source",
            ErrorCode::InvalidWildcard => "invalid_wildcard",
            ErrorCode::TenantMountMismatch => "tenant_mount_mismatch",
            ErrorCode::NoProvider => "no_provider",
            ErrorCode::NotFound => "not_found",
            ErrorCode::FieldNotFound => "field_not_found",
            ErrorCode::VersionDeleted => "version_deleted",
            ErrorCode::VersionDestroyed => "version_destroyed",
            ErrorCode::Expired => "expired",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::InvalidUtf8 => "invalid_utf8",
            ErrorCode::Config => "config",
            ErrorCode::Usage => "usage",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::BackendUnavailable => "backend_unavailable",
            ErrorCode::Timeout => "timeout",
            ErrorCode::InvalidResponse => "invalid_response",
            ErrorCode::RedirectRefused => "redirect_refused",
            ErrorCode::Integrity => "integrity",
            ErrorCode::WrongKey => "wrong_key",
            ErrorCode::Io => "io",
            ErrorCode::Internal => "internal",
        }
    }

    /// Parses the string form back into a code.
    ///
    /// ```
    /// use secref::ErrorCode;
    /// assert_eq!(ErrorCode::parse("timeout"), Some(ErrorCode::Timeout));
    /// assert_eq!(ErrorCode::parse("nope"), None);
    /// ```
    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|c| c.as_str() == s)
    }

    /// Whether errors with this code are retryable unless said otherwise.
    pub const fn default_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::RateLimited | ErrorCode::BackendUnavailable | ErrorCode::Timeout
        )
    }

    /// Whether this code means the reference itself is malformed.
    pub const fn is_reference_error(self) -> bool {
        matches!(
            self,
            ErrorCode::InvalidReference
                | ErrorCode::IllegalSegment
                | ErrorCode::UnsupportedEngine
                | ErrorCode::AmbiguousQuery
                | ErrorCode::DoubleMountSource
                | ErrorCode::InvalidWildcard
                | ErrorCode::TenantMountMismatch
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The library's error: a code, a retryable flag and safe context.
///
/// ```
/// use secref::{Error, ErrorCode};
/// let err = Error::new(ErrorCode::NotFound, "no such secret")
///     .with_reference("local://app/db#password")
///     .with_hint("create it with `secref set local://app/db#password`");
/// assert_eq!(err.code(), ErrorCode::NotFound);
/// assert!(!err.retryable());
/// assert_eq!(err.reference(), Some("local://app/db#password"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    inner: Box<Inner>,
}

#[derive(Clone, PartialEq, Eq)]
struct Inner {
    code: ErrorCode,
    retryable: bool,
    message: Cow<'static, str>,
    hint: Option<Cow<'static, str>>,
    reference: Option<String>,
    request_id: Option<String>,
    remote_code: Option<String>,
    provider: Option<String>,
    retry_after: Option<std::time::Duration>,
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error with the code's default retryability.
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Error {
            inner: Box::new(Inner {
                code,
                retryable: code.default_retryable(),
                message: message.into(),
                hint: None,
                reference: None,
                request_id: None,
                remote_code: None,
                provider: None,
                retry_after: None,
            }),
        }
    }

    /// Shorthand for a `config` error.
    pub fn config(message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorCode::Config, message)
    }

    /// Shorthand for a `usage` error.
    pub fn usage(message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorCode::Usage, message)
    }

    /// Shorthand for an `internal` error.
    pub fn internal(message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorCode::Internal, message)
    }

    /// Overrides the retryable flag (a backend may say so explicitly).
    #[must_use]
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.inner.retryable = retryable;
        self
    }

    /// Attaches the reference this error concerns (its canonical form).
    #[must_use]
    pub fn with_reference(mut self, reference: impl Into<String>) -> Self {
        self.inner.reference = Some(reference.into());
        self
    }

    /// Attaches a hint telling the user what to do.
    #[must_use]
    pub fn with_hint(mut self, hint: impl Into<Cow<'static, str>>) -> Self {
        self.inner.hint = Some(hint.into());
        self
    }

    /// Attaches the backend's request id, for diagnostics.
    #[must_use]
    pub fn with_request_id(mut self, request_id: impl Into<String>) -> Self {
        self.inner.request_id = Some(request_id.into());
        self
    }

    /// Attaches the backend's own error code (e.g. SecFlow's `TRANSPORT_ERROR`).
    #[must_use]
    pub fn with_remote_code(mut self, remote_code: impl Into<String>) -> Self {
        self.inner.remote_code = Some(remote_code.into());
        self
    }

    /// Attaches the name of the provider that failed.
    #[must_use]
    pub fn with_provider(mut self, provider: impl Into<String>) -> Self {
        self.inner.provider = Some(provider.into());
        self
    }

    /// Attaches how long the backend asked callers to wait before trying
    /// again (HTTP `Retry-After`); [`crate::RetryPolicy::run`] honours it.
    #[must_use]
    pub fn with_retry_after(mut self, wait: std::time::Duration) -> Self {
        self.inner.retry_after = Some(wait);
        self
    }

    /// The stable machine code.
    pub fn code(&self) -> ErrorCode {
        self.inner.code
    }

    /// Whether trying again later may succeed.
    pub fn retryable(&self) -> bool {
        self.inner.retryable
    }

    /// The human message (never contains secret values).
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// What the user can do about it, if known.
    pub fn hint(&self) -> Option<&str> {
        self.inner.hint.as_deref()
    }

    /// The canonical reference this error concerns, if any.
    pub fn reference(&self) -> Option<&str> {
        self.inner.reference.as_deref()
    }

    /// The backend's request id, if any.
    pub fn request_id(&self) -> Option<&str> {
        self.inner.request_id.as_deref()
    }

    /// The backend's own error code, if it sent one.
    pub fn remote_code(&self) -> Option<&str> {
        self.inner.remote_code.as_deref()
    }

    /// The provider that failed, if known.
    pub fn provider(&self) -> Option<&str> {
        self.inner.provider.as_deref()
    }

    /// How long the backend asked callers to wait before trying again.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        self.inner.retry_after
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.message)?;
        if let Some(r) = &self.inner.reference {
            write!(f, " (ref {r})")?;
        }
        if let Some(c) = &self.inner.remote_code {
            write!(f, " [remote code {c}]")?;
        }
        if let Some(id) = &self.inner.request_id {
            write!(f, " [request id {id}]")?;
        }
        if let Some(h) = &self.inner.hint {
            write!(f, "; hint: {h}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("code", &self.inner.code.as_str())
            .field("retryable", &self.inner.retryable)
            .field("message", &self.inner.message);
        if let Some(v) = &self.inner.reference {
            d.field("reference", v);
        }
        if let Some(v) = &self.inner.hint {
            d.field("hint", v);
        }
        if let Some(v) = &self.inner.request_id {
            d.field("request_id", v);
        }
        if let Some(v) = &self.inner.remote_code {
            d.field("remote_code", v);
        }
        if let Some(v) = &self.inner.provider {
            d.field("provider", v);
        }
        if let Some(v) = &self.inner.retry_after {
            d.field("retry_after", v);
        }
        d.finish()
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        // io::Error messages name paths and OS reasons, never file contents.
        Error::new(ErrorCode::Io, format!("i/o error: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.as_str()), "duplicate {c}");
            assert_eq!(ErrorCode::parse(c.as_str()), Some(*c));
            assert!(c
                .as_str()
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_'));
        }
    }

    #[test]
    fn display_includes_context() {
        let e = Error::new(ErrorCode::Timeout, "backend timed out")
            .with_reference("env://X")
            .with_request_id("r-1")
            .with_hint("raise the timeout");
        assert!(e.retryable());
        assert_eq!(
            e.to_string(),
            "backend timed out (ref env://X) [request id r-1]; hint: raise the timeout"
        );
    }
}
