//! The store's file handling: the advisory lock, atomic replacement through
//! a recognisable temporary file, stale temporary files, symlinks.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::error::{Error, ErrorCode, Result};

/// The suffix of every temporary file a store write creates:
/// `.<store file name>.<pid>.<6 random chars>.secref-tmp`, next to the store.
const TMP_SUFFIX: &str = ".secref-tmp";
/// Temporary files of secref versions before 0.2 (`.secref-store.XXXXXX.tmp`)
/// do not name their store, so another store in the same directory may be
/// writing one right now; only ones older than this are removed.
const LEGACY_TMP_MAX_AGE: Duration = Duration::from_secs(3600);

/// The file a write must replace: `path` itself, or, when `path` is a
/// symbolic link, the file it points to (resolved once per write), so the
/// link stays a link and the data is never forked into a second file.
pub(crate) fn write_target(path: &Path) -> Result<PathBuf> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(path).map_err(|e| {
            Error::new(
                ErrorCode::Io,
                format!(
                    "store {} is a symbolic link that cannot be followed: {}",
                    path.display(),
                    e.kind()
                ),
            )
            .with_hint(
                "point the link at an existing store file, or set SECREF_STORE to the file itself",
            )
        }),
        _ => Ok(path.to_path_buf()),
    }
}

/// An exclusive advisory lock on the store's sidecar lock file
/// (`<store>.lock`), released when dropped (or when the process dies).
pub(crate) struct StoreLock {
    _file: File,
}

impl StoreLock {
    /// Locks the store file `target` (the resolved file, not a link to it).
    pub fn acquire(target: &Path) -> Result<StoreLock> {
        let mut name = target.file_name().unwrap_or_default().to_os_string();
        name.push(".lock");
        let path = target.with_file_name(name);
        let mut opts = std::fs::OpenOptions::new();
        opts.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let file = opts.open(&path).map_err(|e| {
            Error::new(
                ErrorCode::Io,
                format!("cannot open lock file {}: {}", path.display(), e.kind()),
            )
        })?;
        lock_exclusive(&file).map_err(|e| {
            Error::new(
                ErrorCode::Io,
                format!("cannot lock {}: {}", path.display(), e.kind()),
            )
        })?;
        Ok(StoreLock { _file: file })
    }
}

/// `flock(LOCK_EX)` directly: `File::lock` would need Rust 1.89, above the
/// workspace's declared minimum.
#[cfg(unix)]
fn lock_exclusive(file: &File) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    loop {
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(not(unix))]
#[allow(clippy::incompatible_msrv)]
fn lock_exclusive(file: &File) -> std::io::Result<()> {
    file.lock()
}

/// Whether `file_name` is one of the temporary files a write of the store
/// named `store_name` creates.
pub(crate) fn is_store_temp(file_name: &str, store_name: &str) -> bool {
    let Some(middle) = file_name
        .strip_prefix('.')
        .and_then(|n| n.strip_prefix(store_name))
        .and_then(|n| n.strip_prefix('.'))
        .and_then(|n| n.strip_suffix(TMP_SUFFIX))
    else {
        return false;
    };
    matches!(middle.split_once('.'), Some((pid, rand))
        if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())
            && rand.len() == 6 && rand.bytes().all(|b| b.is_ascii_alphanumeric()))
}

fn is_legacy_temp(file_name: &str) -> bool {
    file_name
        .strip_prefix(".secref-store.")
        .and_then(|n| n.strip_suffix(".tmp"))
        .is_some_and(|r| r.len() == 6 && r.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Removes temporary files left by writers that died (`kill -9`, power
/// loss) before renaming them. Must be called with the store's lock held:
/// every writer holds it while its temporary file exists, so any file of
/// this store's pattern is then an orphan. Only regular files are touched.
/// Failures are ignored: a leftover is harmless, a failed write is not.
pub(crate) fn remove_stale_temps(target: &Path) {
    let Some(store_name) = target.file_name().and_then(|n| n.to_str()) else {
        return;
    };
    let dir = parent_dir(target).unwrap_or(Path::new("."));
    let Ok(listing) = std::fs::read_dir(dir) else {
        return;
    };
    let now = SystemTime::now();
    for entry in listing.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let ours = is_store_temp(name, store_name);
        if !ours && !is_legacy_temp(name) {
            continue;
        }
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        if !meta.file_type().is_file() {
            continue;
        }
        let old = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age > LEGACY_TMP_MAX_AGE);
        if ours || old {
            tracing::debug!(file = %entry.path().display(), "removing a stale store temporary file");
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Replaces (or, with `replace == false`, creates) `target` atomically: a
/// temporary file `.<name>.<pid>.<6 random chars>.secref-tmp` in the same
/// directory, created with mode 0600 (never readable by others, not even
/// for an instant), written, fsynced, renamed over the target, and the
/// directory fsynced. Whoever reads `target`, even after a crash at any
/// point, sees the old file or the new one, never a part. The one atomic
/// write of secref: the store and rendered files (`secref inject`) use it.
pub fn write_atomically(target: &Path, bytes: &[u8], replace: bool) -> Result<()> {
    let dir = parent_dir(target).unwrap_or(Path::new("."));
    let io = |what: &str, e: std::io::Error| {
        Error::new(
            ErrorCode::Io,
            format!("cannot write {} ({what}): {}", target.display(), e.kind()),
        )
    };
    let store_name = target.file_name().unwrap_or_default().to_string_lossy();
    // NamedTempFile is created 0600 and deleted if we fail before the rename.
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{store_name}.{}.", std::process::id()))
        .suffix(TMP_SUFFIX)
        .rand_bytes(6)
        .tempfile_in(dir)
        .map_err(|e| io("create temporary file", e))?;
    tmp.write_all(bytes).map_err(|e| io("write", e))?;
    tmp.as_file().sync_all().map_err(|e| io("fsync", e))?;
    let persisted = if replace {
        tmp.persist(target)
    } else {
        tmp.persist_noclobber(target)
    };
    persisted.map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            Error::usage(format!(
                "{} already exists; refusing to overwrite it",
                target.display()
            ))
        } else {
            io("rename", e.error)
        }
    })?;
    sync_dir(dir)
}

pub(crate) fn parent_dir(path: &Path) -> Option<&Path> {
    path.parent().filter(|p| !p.as_os_str().is_empty())
}

/// Makes a rename or a new file in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| {
            Error::new(
                ErrorCode::Io,
                format!("cannot fsync directory {}: {}", dir.display(), e.kind()),
            )
        })?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_pattern_names_its_store_only() {
        assert!(is_store_temp(".s.store.123.aB3xYz.secref-tmp", "s.store"));
        for other in [
            ".s.store.123.aB3xYz.secref-tmp.keep",
            ".t.store.123.aB3xYz.secref-tmp",
            ".s.store.12x.aB3xYz.secref-tmp",
            ".s.store..aB3xYz.secref-tmp",
            ".s.store.123.aB3xY.secref-tmp",
            "s.store.123.aB3xYz.secref-tmp",
            ".s.store.lock",
        ] {
            assert!(!is_store_temp(other, "s.store"), "{other}");
        }
        assert!(is_legacy_temp(".secref-store.Ab12Cd.tmp"));
        assert!(!is_legacy_temp(".secref-store.Ab12Cd.tmpx"));
    }
}
