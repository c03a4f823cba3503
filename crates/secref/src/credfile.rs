//! Reading credential files (the store key, bearer tokens, secret ids,
//! client secrets): one rule for all of them, as ssh has for its keys.
//!
//! A credential file that the group or other users may read or write is
//! refused with a `config` error naming the file, its mode and `chmod 600`:
//! anyone else who can read it holds the credential, and silently accepting
//! it would teach users that 0644 is fine. The mode is checked on the opened
//! file (`fstat`), so a swap between check and read is no way around it.
//! Errors never contain the file's content.

use std::io::Read as _;
use std::path::Path;

use zeroize::Zeroizing;

use crate::error::{Error, ErrorCode, Result};

/// Reads the credential file at `path`; `what` names it in errors (e.g.
/// "token file"). `Ok(None)` when the file does not exist (callers word that
/// case themselves). Fails with `config` when the file is accessible by
/// group or others, and with `io` when it cannot be read.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// use std::os::unix::fs::PermissionsExt;
/// let path = dir.path().join("token");
/// std::fs::write(&path, "s3cr3t-token").unwrap();
/// std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
/// let e = secref::credfile::read_private_file(&path, "token file").unwrap_err();
/// assert!(e.hint().unwrap().contains("chmod 600"));
/// assert!(!e.to_string().contains("s3cr3t"));
/// std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
/// let bytes = secref::credfile::read_private_file(&path, "token file").unwrap().unwrap();
/// assert_eq!(&bytes[..], b"s3cr3t-token");
/// ```
pub fn read_private_file(path: &Path, what: &str) -> Result<Option<Zeroizing<Vec<u8>>>> {
    let io_error = |k: std::io::ErrorKind| {
        Error::new(
            ErrorCode::Io,
            format!("cannot read {what} {}: {k}", path.display()),
        )
    };
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(e.kind())),
    };
    check_private(
        &file.metadata().map_err(|e| io_error(e.kind()))?,
        path,
        what,
    )?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.read_to_end(&mut bytes)
        .map_err(|e| io_error(e.kind()))?;
    Ok(Some(bytes))
}

/// The permission rule itself: no access for group or others.
#[cfg(unix)]
fn check_private(meta: &std::fs::Metadata, path: &Path, what: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::config(format!(
            "{what} {} is accessible by other users (mode {mode:o}); refusing to use it",
            path.display()
        ))
        .with_hint(format!(
            "run `chmod 600 {}` (credential files must be readable by their owner only)",
            path.display()
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_meta: &std::fs::Metadata, _path: &Path, _what: &str) -> Result<()> {
    Ok(())
}
