//! How failures reach the user: `error[code]: message` lines on stderr and
//! distinct exit codes (the table is in `secref --help`).

use std::io::Write;

use secref::{Error, ErrorCode};

/// Exit code for success.
pub const EXIT_OK: i32 = 0;
/// Any error not listed below.
pub const EXIT_OTHER: i32 = 1;
/// Usage, configuration or a bad reference.
pub const EXIT_USAGE: i32 = 2;
/// The secret, field or version does not exist.
pub const EXIT_NOT_FOUND: i32 = 3;
/// Permission denied or not authenticated.
pub const EXIT_DENIED: i32 = 4;
/// The backend is unavailable (any retryable error).
pub const EXIT_UNAVAILABLE: i32 = 5;

/// The exit code for an error, by its code (and retryable flag).
pub fn exit_code(e: &Error) -> i32 {
    let code = e.code();
    if code.is_reference_error()
        || matches!(
            code,
            ErrorCode::Usage | ErrorCode::Config | ErrorCode::NoProvider
        )
    {
        EXIT_USAGE
    } else if matches!(
        code,
        ErrorCode::NotFound
            | ErrorCode::FieldNotFound
            | ErrorCode::VersionDeleted
            | ErrorCode::VersionDestroyed
    ) {
        EXIT_NOT_FOUND
    } else if matches!(
        code,
        ErrorCode::PermissionDenied | ErrorCode::Unauthenticated
    ) {
        EXIT_DENIED
    } else if e.retryable() {
        EXIT_UNAVAILABLE
    } else {
        EXIT_OTHER
    }
}

/// An error and the exit code it ends the process with: by default the
/// code's category ([`exit_code`]); `run` overrides it for a command that
/// cannot be started (127 / 126, as shells do).
#[derive(Debug)]
pub struct Failure {
    /// What went wrong.
    pub error: Error,
    /// The process exit code.
    pub exit_code: i32,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure {
            exit_code: exit_code(&error),
            error,
        }
    }
}

/// The error as the lines printed to stderr: `error[code]: message`, its
/// reference and request id when known, and a `hint:` line.
pub fn render(e: &Error) -> String {
    let mut out = format!("error[{}]: {}", e.code(), e.message());
    if let Some(r) = e.reference() {
        out.push_str(&format!(" (ref {r})"));
    }
    if let Some(c) = e.remote_code() {
        out.push_str(&format!(" [remote code {c}]"));
    }
    if let Some(id) = e.request_id() {
        out.push_str(&format!(" [request id {id}]"));
    }
    if e.retryable() {
        out.push_str(" (retryable)");
    }
    out.push('\n');
    if let Some(h) = e.hint() {
        out.push_str(&format!("hint: {h}\n"));
    }
    out
}

/// The same error with `prefix: ` in front of its message (which variable
/// or file it concerns); code, retryability, reference and hint are kept.
pub fn prefixed(e: &Error, prefix: &str) -> Error {
    let mut out =
        Error::new(e.code(), format!("{prefix}: {}", e.message())).with_retryable(e.retryable());
    if let Some(r) = e.reference() {
        out = out.with_reference(r.to_string());
    }
    if let Some(h) = e.hint() {
        out = out.with_hint(h.to_string());
    }
    out
}

/// Prints the error to stderr.
pub fn print(e: &Error) {
    // Nothing useful is left to do if stderr itself is gone.
    let _ = std::io::stderr().write_all(render(e).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_by_category() {
        let cases = [
            (ErrorCode::InvalidReference, EXIT_USAGE),
            (ErrorCode::TenantMountMismatch, EXIT_USAGE),
            (ErrorCode::Config, EXIT_USAGE),
            (ErrorCode::Usage, EXIT_USAGE),
            (ErrorCode::NoProvider, EXIT_USAGE),
            (ErrorCode::NotFound, EXIT_NOT_FOUND),
            (ErrorCode::FieldNotFound, EXIT_NOT_FOUND),
            (ErrorCode::VersionDeleted, EXIT_NOT_FOUND),
            (ErrorCode::VersionDestroyed, EXIT_NOT_FOUND),
            (ErrorCode::PermissionDenied, EXIT_DENIED),
            (ErrorCode::Unauthenticated, EXIT_DENIED),
            (ErrorCode::BackendUnavailable, EXIT_UNAVAILABLE),
            (ErrorCode::Timeout, EXIT_UNAVAILABLE),
            (ErrorCode::RateLimited, EXIT_UNAVAILABLE),
            (ErrorCode::Io, EXIT_OTHER),
            (ErrorCode::Integrity, EXIT_OTHER),
            (ErrorCode::Internal, EXIT_OTHER),
        ];
        for (code, want) in cases {
            assert_eq!(exit_code(&Error::new(code, "x")), want, "{code}");
        }
        let forced = Error::new(ErrorCode::InvalidResponse, "x").with_retryable(true);
        assert_eq!(exit_code(&forced), EXIT_UNAVAILABLE);
    }

    #[test]
    fn renders_code_message_and_hint() {
        let e = Error::new(ErrorCode::NotFound, "no such entry")
            .with_reference("local://a/b")
            .with_hint("create it");
        assert_eq!(
            render(&e),
            "error[not_found]: no such entry (ref local://a/b)\nhint: create it\n"
        );
    }
}
