//! The embedded encrypted store behind `local://` references.
//!
//! A store is one JSON file holding encrypted entries (see
//! [`format`](mod@format) for the layout and the cryptography) and a
//! [`StoreKey`] that lives elsewhere: in `$SECREF_KEY` or a key file readable
//! only by its owner. The file contains no plaintext values and is safe to
//! commit; entry *names* (`app/db`) are visible in it, field names and values
//! are not.
//!
//! An entry is either a single value (`local://app/token`) or a map of fields
//! (`local://app/db#password`, `local://app/db#user`). Reading a field-map
//! entry without `#field` returns the map as compact JSON text. Values are
//! arbitrary bytes.
//!
//! Writes are atomic and safe under concurrency: each one takes an exclusive
//! lock on `<store>.lock` (a sidecar file that is left in place; ignore it in
//! version control), re-reads and re-verifies the file under the lock, writes
//! the new content to a temporary file in the same directory, fsyncs it,
//! renames it over the store and fsyncs the directory. A crash at any point
//! leaves either the old or the new file; a stray temporary file is harmless.
//!
//! ```
//! use secref::store::{Store, StoreKey};
//! use secref::{Secret, RefKind, SecretRef};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("secref.store");
//! let key = StoreKey::generate();
//! let store = Store::create(&path, &key).unwrap();
//! let RefKind::Local(r) = SecretRef::parse("local://app/db#password").unwrap().kind().clone() else { unreachable!() };
//! store.set(&r, Secret::from("s3cr3t")).unwrap();
//! assert_eq!(store.get(&r).unwrap().as_text().unwrap(), "s3cr3t");
//! assert_eq!(store.list().unwrap(), ["app/db#password"]);
//! assert!(!std::fs::read_to_string(&path).unwrap().contains("s3cr3t"));
//! ```

mod entry;
pub mod format;
mod key;

use std::fmt;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use zeroize::Zeroizing;

use self::entry::Plain;
use self::format::{Keys, StoreFile};
use crate::config::Config;
use crate::error::{Error, ErrorCode, Result};
use crate::reference::LocalRef;
use crate::secret::Secret;

pub use self::key::{StoreKey, KEY_ENV, KEY_FILE_ENV};

/// The environment variable naming the store file.
pub const STORE_ENV: &str = "SECREF_STORE";

/// The largest value the store takes (field lengths are 32-bit on disk, and a
/// secret this large is almost certainly a mistake).
const MAX_VALUE_LEN: usize = 64 * 1024 * 1024;

/// The hint on every "there is no store" error.
const INIT_HINT: &str = "run `secref init` to create the local store";

/// An opened local store: a file path and the keys derived from its master
/// key. Every read looks at the file afresh (other processes may write it);
/// unchanged content is not parsed or verified twice.
pub struct Store {
    path: PathBuf,
    keys: Keys,
    /// The last verified file content, to skip re-parsing unchanged bytes.
    last: Mutex<Option<Verified>>,
}

struct Verified {
    raw: Vec<u8>,
    file: Arc<StoreFile>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("key_id", &self.keys.key_id())
            .finish()
    }
}

impl Store {
    /// Where the store file is: `LocalConfig.store` (relative paths are
    /// relative to the config file's directory), else `$SECREF_STORE`, else
    /// `secref/secref.store` in the user's data directory.
    pub fn default_path(cfg: &Config) -> Result<PathBuf> {
        if let Some(p) = &cfg.local.store {
            return Ok(relative_to_config(cfg, p));
        }
        if let Some(p) = cfg.env.get(STORE_ENV) {
            return Ok(PathBuf::from(p));
        }
        dirs::data_dir()
            .map(|d| d.join("secref").join("secref.store"))
            .ok_or_else(|| {
                Error::config("cannot find the user's data directory for the local store")
                    .with_hint("set SECREF_STORE or [local] store in secref.toml")
            })
    }

    /// Creates a new, empty store at `path` (parent directories are created
    /// with mode 0700). An existing file is never replaced (`usage` error).
    pub fn create(path: &Path, key: &StoreKey) -> Result<Store> {
        if let Some(parent) = parent_dir(path) {
            create_private_dirs(parent)?;
        }
        let store = Store {
            path: path.to_path_buf(),
            keys: Keys::derive(key),
            last: Mutex::new(None),
        };
        let _lock = store.lock()?;
        let mut file = format::empty();
        store.keys.finish(&mut file);
        let raw = format::render(&file)?;
        write_atomically(path, &raw, false).map_err(|e| {
            if e.code() == ErrorCode::Usage {
                e
            } else {
                Error::new(
                    ErrorCode::Io,
                    format!("cannot create store {}: {}", path.display(), e.message()),
                )
            }
        })?;
        *store.last.lock() = Some(Verified {
            raw,
            file: Arc::new(file),
        });
        Ok(store)
    }

    /// Opens an existing store, checking that `key` is its key (`wrong_key`)
    /// and that the file is intact (`integrity`).
    pub fn open(path: &Path, key: StoreKey) -> Result<Store> {
        let store = Store {
            path: path.to_path_buf(),
            keys: Keys::derive(&key),
            last: Mutex::new(None),
        };
        drop(key);
        store.snapshot()?;
        Ok(store)
    }

    /// Opens the store `cfg` names, with the key `cfg` names.
    pub fn open_from_config(cfg: &Config) -> Result<Store> {
        let path = Store::default_path(cfg)?;
        if !path.exists() {
            return Err(missing_store(&path));
        }
        Store::open(&path, StoreKey::load(cfg)?)
    }

    /// The store file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads one value. `local://app/db` of a field-map entry is the map as
    /// compact JSON text.
    pub fn get(&self, r: &LocalRef) -> Result<Secret> {
        let file = self.snapshot()?;
        self.get_in(&file, r)
    }

    /// Sets a value. With `#field`, creates or updates that field of the
    /// entry. Mixing kinds is refused (`usage`): a field cannot be set on a
    /// single-value entry, nor a whole value on a field-map entry; remove the
    /// entry first.
    pub fn set(&self, r: &LocalRef, value: Secret) -> Result<()> {
        if value.len() > MAX_VALUE_LEN {
            return Err(Error::usage(format!(
                "values larger than {} MiB are not supported",
                MAX_VALUE_LEN >> 20
            )));
        }
        let name = r.entry();
        self.modify(|file, keys| {
            let existing = open_entry(keys, file, &name)?;
            let value = Zeroizing::new(value.expose_bytes().to_vec());
            let plain = match (&r.field, existing) {
                (None, None | Some(Plain::Single(_))) => Plain::Single(value),
                (None, Some(Plain::Fields(_))) => {
                    return Err(Error::usage(format!(
                        "entry '{name}' holds fields; set one with local://{name}#<field>, or remove the entry first"
                    )))
                }
                (Some(field), None) => {
                    Plain::Fields([(field.clone(), value)].into_iter().collect())
                }
                (Some(field), Some(Plain::Fields(mut fields))) => {
                    fields.insert(field.clone(), value);
                    Plain::Fields(fields)
                }
                (Some(_), Some(Plain::Single(_))) => {
                    return Err(Error::usage(format!(
                        "entry '{name}' holds a single value, not fields; remove it first to store fields"
                    )))
                }
            };
            let sealed = keys.seal(&name, &plain.encode())?;
            file.entries.insert(name.clone(), sealed);
            Ok(true)
        })
        .map(|_| ())
        .map_err(|e| e.with_reference(local_canonical(r)))
    }

    /// Removes an entry, or with `#field` one field (an entry whose last
    /// field is removed disappears). Returns whether anything was removed.
    pub fn remove(&self, r: &LocalRef) -> Result<bool> {
        let name = r.entry();
        self.modify(|file, keys| {
            let Some(field) = &r.field else {
                return Ok(file.entries.remove(&name).is_some());
            };
            let Some(Plain::Fields(mut fields)) = open_entry(keys, file, &name)? else {
                return Ok(false);
            };
            if fields.remove(field).is_none() {
                return Ok(false);
            }
            if fields.is_empty() {
                file.entries.remove(&name);
            } else {
                let sealed = keys.seal(&name, &Plain::Fields(fields).encode())?;
                file.entries.insert(name.clone(), sealed);
            }
            Ok(true)
        })
        .map_err(|e| e.with_reference(local_canonical(r)))
    }

    /// Everything in the store, sorted: `name` for a single-value entry,
    /// `name#field` for each field of a field-map entry. Names only, never
    /// values.
    pub fn list(&self) -> Result<Vec<String>> {
        let file = self.snapshot()?;
        let mut out = Vec::new();
        for name in file.entries.keys() {
            match open_entry(&self.keys, &file, name)? {
                Some(Plain::Fields(fields)) => {
                    out.extend(fields.keys().map(|f| format!("{name}#{f}")));
                }
                _ => out.push(name.clone()),
            }
        }
        out.sort();
        Ok(out)
    }

    /// The current file content, verified. Reads the file every time and
    /// reuses the parsed form when the bytes are unchanged.
    pub(crate) fn snapshot(&self) -> Result<Arc<StoreFile>> {
        let raw = self.read_raw()?;
        if let Some(last) = &*self.last.lock() {
            if last.raw == raw {
                return Ok(last.file.clone());
            }
        }
        let file = Arc::new(self.verify(&raw)?);
        *self.last.lock() = Some(Verified {
            raw,
            file: file.clone(),
        });
        Ok(file)
    }

    /// Reads one value from a snapshot.
    pub(crate) fn get_in(&self, file: &StoreFile, r: &LocalRef) -> Result<Secret> {
        let name = r.entry();
        let plain = open_entry(&self.keys, file, &name)?.ok_or_else(|| {
            Error::new(
                ErrorCode::NotFound,
                format!("the local store has no entry '{name}'"),
            )
            .with_hint(format!("create it with `secref set local://{name}`"))
        })?;
        let bytes = match (&r.field, &plain) {
            (None, _) => plain.whole_value(&name)?,
            (Some(field), Plain::Fields(fields)) => match fields.get(field) {
                Some(v) => Zeroizing::new(v.to_vec()),
                None => {
                    return Err(Error::new(
                        ErrorCode::FieldNotFound,
                        format!("entry '{name}' has no field '{field}'"),
                    ))
                }
            },
            (Some(field), Plain::Single(_)) => {
                return Err(Error::new(
                    ErrorCode::FieldNotFound,
                    format!("entry '{name}' holds a single value, so it has no field '{field}'"),
                )
                .with_hint(format!("read it as local://{name}")))
            }
        };
        Ok(Secret::copy_from(&bytes))
    }

    /// Whether `r` exists in a snapshot, and the entry's field names.
    pub(crate) fn describe_in(
        &self,
        file: &StoreFile,
        r: &LocalRef,
    ) -> Result<Option<Vec<String>>> {
        let name = r.entry();
        let Some(plain) = open_entry(&self.keys, file, &name)? else {
            return Ok(None);
        };
        let fields = plain.field_names();
        Ok(match &r.field {
            None => Some(fields),
            Some(f) if fields.contains(f) => Some(fields),
            Some(_) => None,
        })
    }

    fn read_raw(&self) -> Result<Vec<u8>> {
        std::fs::read(&self.path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => missing_store(&self.path),
            k => Error::new(
                ErrorCode::Io,
                format!("cannot read store {}: {k}", self.path.display()),
            ),
        })
    }

    fn verify(&self, raw: &[u8]) -> Result<StoreFile> {
        let file = format::parse(raw)
            .map_err(|e| format::integrity(format!("{}: {}", self.path.display(), e.message())))?;
        self.keys.verify(&file)?;
        Ok(file)
    }

    /// Read-modify-write under the store's exclusive lock. `change` edits the
    /// verified file and says whether it changed anything; nothing is written
    /// if it did not, or if it or the verification failed.
    fn modify(&self, change: impl FnOnce(&mut StoreFile, &Keys) -> Result<bool>) -> Result<bool> {
        let _lock = self.lock()?;
        // Re-read under the lock: another process may have written since.
        let raw = self.read_raw()?;
        let mut file = self.verify(&raw)?;
        if !change(&mut file, &self.keys)? {
            return Ok(false);
        }
        self.keys.finish(&mut file);
        let raw = format::render(&file)?;
        write_atomically(&self.path, &raw, true)?;
        *self.last.lock() = Some(Verified {
            raw,
            file: Arc::new(file),
        });
        Ok(true)
    }

    fn lock(&self) -> Result<StoreLock> {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".lock");
        StoreLock::acquire(&self.path.with_file_name(name))
    }
}

/// Decrypts and decodes entry `name`, if present.
fn open_entry(keys: &Keys, file: &StoreFile, name: &str) -> Result<Option<Plain>> {
    match file.entries.get(name) {
        None => Ok(None),
        Some(sealed) => {
            let bytes = keys.open(name, sealed)?;
            Plain::decode(name, &bytes).map(Some)
        }
    }
}

fn local_canonical(r: &LocalRef) -> String {
    match &r.field {
        Some(f) => format!("local://{}#{f}", r.entry()),
        None => format!("local://{}", r.entry()),
    }
}

fn missing_store(path: &Path) -> Error {
    Error::new(
        ErrorCode::NotFound,
        format!("the local store {} does not exist", path.display()),
    )
    .with_hint(INIT_HINT)
}

/// An exclusive advisory lock on the store's sidecar lock file, released when
/// dropped (or when the process dies).
struct StoreLock {
    _file: File,
}

impl StoreLock {
    fn acquire(path: &Path) -> Result<StoreLock> {
        let mut opts = std::fs::OpenOptions::new();
        opts.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let file = opts.open(path).map_err(|e| {
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

/// Replaces (or, with `replace == false`, creates) `path` atomically: temp
/// file in the same directory, fsync, rename, fsync of the directory.
fn write_atomically(path: &Path, bytes: &[u8], replace: bool) -> Result<()> {
    let dir = parent_dir(path).unwrap_or(Path::new("."));
    let io = |what: &str, e: std::io::Error| {
        Error::new(
            ErrorCode::Io,
            format!(
                "cannot write store {} ({what}): {}",
                path.display(),
                e.kind()
            ),
        )
    };
    // NamedTempFile is created 0600 and deleted if we fail before the rename.
    let mut tmp = tempfile::Builder::new()
        .prefix(".secref-store.")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| io("create temporary file", e))?;
    tmp.write_all(bytes).map_err(|e| io("write", e))?;
    tmp.as_file().sync_all().map_err(|e| io("fsync", e))?;
    let persisted = if replace {
        tmp.persist(path)
    } else {
        tmp.persist_noclobber(path)
    };
    persisted.map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            Error::usage(format!(
                "{} already exists; refusing to overwrite it",
                path.display()
            ))
        } else {
            io("rename", e.error)
        }
    })?;
    sync_dir(dir)
}

fn parent_dir(path: &Path) -> Option<&Path> {
    path.parent().filter(|p| !p.as_os_str().is_empty())
}

/// Makes a rename or a new file in `dir` durable.
fn sync_dir(dir: &Path) -> Result<()> {
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

pub(crate) fn sync_parent_dir(path: &Path) -> Result<()> {
    sync_dir(parent_dir(path).unwrap_or(Path::new(".")))
}

/// Creates `dir` and its missing parents with mode 0700.
pub(crate) fn create_private_dirs(dir: &Path) -> Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|e| {
        Error::new(
            ErrorCode::Io,
            format!("cannot create directory {}: {}", dir.display(), e.kind()),
        )
    })
}

/// A path from secref.toml: relative ones are relative to that file's
/// directory.
pub(crate) fn relative_to_config(cfg: &Config, p: &Path) -> PathBuf {
    match cfg.source.as_deref().and_then(parent_dir) {
        Some(base) if p.is_relative() => base.join(p),
        _ => p.to_path_buf(),
    }
}
