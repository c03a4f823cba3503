//! `file:///absolute/path[#pointer]`: a whole regular file, or one value inside a JSON file.

use async_trait::async_trait;

use crate::config::FileConfig;
use crate::error::{Error, ErrorCode, Result};
use crate::provider::{BatchResult, Provider, Resolved};
use crate::reference::{RefKind, SecretRef};
use crate::secret::Secret;

/// Reads `file://` references. With a `#/json/pointer` (RFC 6901) or
/// `#dotted.path`, the file is parsed as JSON and one value is picked: a
/// string is returned as its text, anything else as compact JSON.
///
/// Only **regular files** up to [`max_bytes`](Self::max_bytes) (default
/// [`DEFAULT_MAX_BYTES`](Self::DEFAULT_MAX_BYTES), `[file] max_bytes`) are
/// read: FIFOs, devices, sockets and directories are `unsupported`, a larger
/// file is `too_large`, and so is nothing read past the cap. The checks are
/// made on the opened handle (`fstat`), never on the path, so nothing can be
/// swapped in between check and read; the file is opened `O_NONBLOCK` (a
/// FIFO cannot stall the open) and `O_NOCTTY`. A file whose content is not
/// exactly the size its metadata reports — `/proc` and `/sys` pseudo-files,
/// which say 0 bytes and then stream — is `unsupported` too.
///
/// **Symbolic links** are not followed by default, in any segment of the
/// path: each directory is opened relative to the one before with
/// `O_NOFOLLOW` (no check-then-open race), so the path an access rule allows
/// is the file that is read. A symlink is `unsupported`.
/// [`follow_symlinks(true)`](Self::follow_symlinks) (`[file]
/// follow_symlinks = true`) opts in, e.g. for Kubernetes secret volumes whose
/// files are symlinks; whoever can write the directory then decides what is
/// read.
#[derive(Debug, Clone)]
pub struct FileProvider {
    max_bytes: u64,
    follow_symlinks: bool,
}

impl Default for FileProvider {
    fn default() -> Self {
        FileProvider::new()
    }
}

impl FileProvider {
    /// The default size cap: 1 MiB.
    pub const DEFAULT_MAX_BYTES: u64 = 1024 * 1024;

    /// A provider reading the local file system, with the default cap and
    /// without following symlinks.
    pub fn new() -> Self {
        FileProvider {
            max_bytes: Self::DEFAULT_MAX_BYTES,
            follow_symlinks: false,
        }
    }

    /// A provider with the `[file]` settings.
    pub fn from_config(cfg: &FileConfig) -> Self {
        FileProvider::new()
            .max_bytes(cfg.max_bytes.unwrap_or(Self::DEFAULT_MAX_BYTES))
            .follow_symlinks(cfg.follow_symlinks)
    }

    /// Sets the largest file read, in bytes.
    #[must_use]
    pub fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Sets whether symbolic links in the path are followed.
    #[must_use]
    pub fn follow_symlinks(mut self, follow: bool) -> Self {
        self.follow_symlinks = follow;
        self
    }

    fn read(&self, r: &SecretRef) -> Result<Secret> {
        let RefKind::File { path, pointer } = r.kind() else {
            return Err(Error::internal("file provider got a non-file reference"));
        };
        let file = open(path, self.follow_symlinks)?;
        let bytes = read_regular(&file, path, self.max_bytes)?;
        pick(path, bytes, pointer.as_deref())
    }
}

fn io_error(path: &str, e: &std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::NotFound => {
            Error::new(ErrorCode::NotFound, format!("file {path} does not exist"))
        }
        std::io::ErrorKind::PermissionDenied => Error::new(
            ErrorCode::PermissionDenied,
            format!("file {path} cannot be read: permission denied"),
        ),
        k => Error::new(ErrorCode::Io, format!("file {path} cannot be read: {k}")),
    }
}

fn symlink_refused(path: &str) -> Error {
    Error::new(
        ErrorCode::Unsupported,
        format!("file {path}: symbolic links are not followed"),
    )
    .with_hint("name the link's target, or set [file] follow_symlinks = true")
}

/// Opens `path` (absolute and normalised: the grammar made sure) for
/// reading, without blocking on a FIFO and, unless `follow`, without
/// following a symlink in any segment.
#[cfg(unix)]
fn open(path: &str, follow: bool) -> Result<std::fs::File> {
    use rustix::fs::{openat, AtFlags, FileType, Mode, OFlags, CWD};

    let read_flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    if follow {
        return openat(CWD, path, read_flags, Mode::empty())
            .map(std::fs::File::from)
            .map_err(|e| io_error(path, &e.into()));
    }
    // Directories are only traversed, so O_PATH (Linux) needs no read
    // permission on them, as a plain open(2) would not.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let dir_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fail = |dir: &rustix::fd::OwnedFd, seg: &str, e: rustix::io::Errno| -> Error {
        // Tell a symlink from other failures for the message only; the
        // refusal itself came from O_NOFOLLOW.
        let is_link = rustix::fs::statat(dir, seg, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink);
        if is_link {
            symlink_refused(path)
        } else {
            io_error(path, &e.into())
        }
    };
    let mut dir =
        openat(CWD, "/", dir_flags, Mode::empty()).map_err(|e| io_error(path, &e.into()))?;
    let mut segs = path.trim_start_matches('/').split('/').peekable();
    while let Some(seg) = segs.next() {
        if segs.peek().is_none() {
            let flags = read_flags | OFlags::NOFOLLOW;
            return openat(&dir, seg, flags, Mode::empty())
                .map(std::fs::File::from)
                .map_err(|e| fail(&dir, seg, e));
        }
        dir = openat(&dir, seg, dir_flags, Mode::empty()).map_err(|e| fail(&dir, seg, e))?;
    }
    Err(Error::internal("file:// path without segments"))
}

#[cfg(not(unix))]
fn open(path: &str, _follow: bool) -> Result<std::fs::File> {
    std::fs::File::open(path).map_err(|e| io_error(path, &e))
}

/// Reads an opened file if it is a regular file of at most `max` bytes whose
/// content is exactly as long as its metadata says.
fn read_regular(file: &std::fs::File, path: &str, max: u64) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    use std::io::Read as _;
    // fstat on the handle: the file checked is the file read.
    let meta = file.metadata().map_err(|e| io_error(path, &e))?;
    if !meta.file_type().is_file() {
        return Err(Error::new(
            ErrorCode::Unsupported,
            format!("file {path} is not a regular file"),
        ));
    }
    let size = meta.len();
    if size > max {
        return Err(too_large(path, max));
    }
    // Room for one byte more than promised, so a pseudo-file that reports
    // 0 bytes and streams is caught without reading more than that.
    let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(size as usize + 1));
    file.take(size + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_error(path, &e))?;
    if bytes.len() as u64 != size {
        return Err(Error::new(
            ErrorCode::Unsupported,
            format!("file {path} changed while read or is a pseudo-file"),
        ));
    }
    Ok(bytes)
}

fn too_large(path: &str, max: u64) -> Error {
    Error::new(
        ErrorCode::TooLarge,
        format!("file {path} is larger than {max} bytes"),
    )
    .with_hint("raise [file] max_bytes")
}

/// The whole file, or the value at `pointer` in it as JSON.
fn pick(path: &str, bytes: zeroize::Zeroizing<Vec<u8>>, pointer: Option<&str>) -> Result<Secret> {
    let Some(pointer) = pointer else {
        return Ok(Secret::copy_from(&bytes));
    };
    // serde_json's errors quote no input, only positions.
    let doc: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        Error::new(
            ErrorCode::InvalidResponse,
            format!(
                "file {path} is not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })?;
    let json_pointer = if pointer.starts_with('/') {
        pointer.to_string()
    } else {
        format!(
            "/{}",
            pointer
                .replace('~', "~0")
                .replace('/', "~1")
                .replace('.', "/")
        )
    };
    match doc.pointer(&json_pointer) {
        Some(serde_json::Value::String(s)) => Ok(Secret::copy_from(s.as_bytes())),
        Some(other) => Ok(Secret::new(other.to_string().into_bytes())),
        None => Err(Error::new(
            ErrorCode::FieldNotFound,
            format!("file {path} has no value at {pointer}"),
        )),
    }
}

#[async_trait]
impl Provider for FileProvider {
    fn name(&self) -> &str {
        "file"
    }

    fn families(&self) -> &[&'static str] {
        &["file"]
    }

    async fn resolve_many(&self, refs: &[SecretRef]) -> BatchResult<Resolved> {
        let refs = refs.to_vec();
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            Ok(refs
                .iter()
                .map(|r| this.read(r).map(Resolved::new))
                .collect())
        })
        .await
        .map_err(|_| Error::internal("file read task failed"))?
    }
}

/// `file:///<path>[#pointer]`: a file of the host; host-local, limits from
/// `[file]`.
pub(crate) const SPEC: crate::registry::ProviderSpec = crate::registry::ProviderSpec {
    name: "file",
    schemes: &["file"],
    feature: None,
    host_local: true,
    config_section: Some("file"),
    env_vars: &[],
    credential_env_vars: &[],
    capabilities: crate::provider::Capabilities::NONE,
    parse: |input| crate::reference::parse_file(input.rest),
    parts: |r| {
        let RefKind::File { path, pointer } = r.kind() else {
            return Vec::new();
        };
        let mut v = vec![("path", path.as_str().into())];
        if let Some(p) = pointer {
            v.push(("pointer", p.as_str().into()));
        }
        v
    },
    credentials: crate::credentials::none,
    build: |cfg| crate::registry::always(FileProvider::from_config(&cfg.file)),
};

#[cfg(test)]
mod tests {
    use super::*;

    fn read(p: &FileProvider, path: &std::path::Path) -> Result<Secret> {
        p.read(&SecretRef::parse(format!("file://{}", path.display())).unwrap())
    }

    #[test]
    fn cap_and_kinds_are_checked_on_the_handle() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"0123456789").unwrap();
        assert_eq!(
            read(&FileProvider::new(), &f).unwrap().expose_bytes(),
            b"0123456789"
        );
        let small = FileProvider::new().max_bytes(9);
        assert_eq!(read(&small, &f).unwrap_err().code(), ErrorCode::TooLarge);
        assert!(read(&FileProvider::new().max_bytes(10), &f).is_ok());
        let e = read(&FileProvider::new(), dir.path()).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Unsupported);
        let e = read(&FileProvider::new(), std::path::Path::new("/dev/null")).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Unsupported);
        let missing = dir.path().join("nope/f");
        assert_eq!(
            read(&FileProvider::new(), &missing).unwrap_err().code(),
            ErrorCode::NotFound
        );
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_are_refused_unless_followed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        std::fs::write(dir.path().join("real/f"), b"v").unwrap();
        std::os::unix::fs::symlink("real", dir.path().join("dir")).unwrap();
        std::os::unix::fs::symlink("real/f", dir.path().join("file")).unwrap();
        for link in ["dir/f", "file"] {
            let path = dir.path().join(link);
            let e = read(&FileProvider::new(), &path).unwrap_err();
            assert_eq!(e.code(), ErrorCode::Unsupported, "{link}");
            let followed = read(&FileProvider::new().follow_symlinks(true), &path).unwrap();
            assert_eq!(followed.expose_bytes(), b"v");
        }
    }
}
