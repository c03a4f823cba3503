//! The embedded encrypted store behind `local://` references, with Vault KV
//! v2 semantics.
//!
//! A store is one JSON file holding encrypted entries (see
//! [`format`](mod@format) for the layout and the cryptography) and a
//! [`StoreKey`] that lives elsewhere: in `$SECREF_KEY` or a key file readable
//! only by its owner. The file contains no plaintext values and is safe to
//! commit; entry *names* (`app/db`) and metadata are visible in it, field
//! names and values are not.
//!
//! An entry is either a single value (`local://app/token`) or a map of fields
//! (`local://app/db#password`, `local://app/db#user`). Reading a field-map
//! entry without `#field` returns the map as compact JSON text. Values are
//! arbitrary bytes.
//!
//! **Versions.** Every write of an entry creates a new version; an entry
//! keeps its last `max_versions` (default 10, per store and per entry).
//! [`Store::remove`] soft-deletes the current version (recoverable with
//! [`Store::undelete`]), [`Store::destroy`] erases versions' data for good,
//! [`Store::purge`] forgets the entry and all its versions. A pinned read
//! (`local://app/db#password?version=3`) of a deleted version fails with
//! `version_deleted`, of a destroyed one with `version_destroyed`; reading
//! the current version of a removed entry is `not_found`. Writers may pass a
//! check-and-set version ([`Store::set_cas`]); `cas_required` makes it
//! mandatory. [`Store::metadata`] answers without decrypting anything.
//!
//! **Coherence.** Every read looks at the file afresh (other processes may
//! write it) and reuses the parsed, verified form only while the file still
//! ends with the MAC of that form (a keyed MAC over the whole content, so it
//! names exactly one content; see `Store::unchanged`), so a read after a
//! write — from any process — sees the write, and a restored older file is
//! read as it is.
//!
//! **Writes** are atomic and safe under concurrency: each one takes an
//! exclusive lock on `<store>.lock` (a sidecar file that is left in place;
//! ignore it in version control), re-reads and re-verifies the file under the
//! lock, writes the new content to `.<store>.<pid>.<random>.secref-tmp` in
//! the same directory, fsyncs it, renames it over the store and fsyncs the
//! directory. A crash leaves either the old or the new file, plus possibly a
//! temporary file, which the next write removes. A store path that is a
//! symbolic link is written through: the link is kept and its target
//! replaced.
//!
//! ```
//! use secref::store::{Store, StoreKey};
//! use secref::{ErrorCode, RefKind, Secret, SecretRef};
//!
//! let local = |s: &str| match SecretRef::parse(s).unwrap().kind() {
//!     RefKind::Local(r) => r.clone(),
//!     _ => unreachable!(),
//! };
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("secref.store");
//! let store = Store::create(&path, &StoreKey::generate()).unwrap();
//! let pw = local("local://app/db#password");
//! assert_eq!(store.set(&pw, Secret::from("one")).unwrap(), 1);
//! assert_eq!(store.set_cas(&pw, Secret::from("two"), Some(1)).unwrap(), 2);
//! assert_eq!(store.set_cas(&pw, Secret::from("x"), Some(1)).unwrap_err().code(), ErrorCode::Usage);
//! assert_eq!(store.get(&pw).unwrap().as_text().unwrap(), "two");
//! assert_eq!(store.get(&local("local://app/db#password?version=1")).unwrap().as_text().unwrap(), "one");
//!
//! store.remove(&local("local://app/db")).unwrap();           // soft-delete version 2
//! assert_eq!(store.get(&pw).unwrap_err().code(), ErrorCode::NotFound);
//! store.undelete("app/db", &[2]).unwrap();
//! store.destroy("app/db", &[1]).unwrap();
//! let meta = store.metadata("app/db").unwrap();
//! assert_eq!(meta.current_version, 2);
//! assert!(meta.versions[0].destroyed);
//! assert_eq!(store.list().unwrap(), ["app/db#password"]);
//! assert!(!std::fs::read_to_string(&path).unwrap().contains("two"));
//! ```

mod entry;
pub mod format;
mod fsio;
mod key;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use zeroize::Zeroizing;

use self::entry::Plain;
use self::format::{EntryRecord, Keys, Parsed, StoreFile, StoreFileV1, VersionRecord};
use self::fsio::{parent_dir, write_target, StoreLock};
use crate::config::Config;
use crate::error::{Error, ErrorCode, Result};
use crate::reference::LocalRef;
use crate::secret::Secret;

pub use self::format::DEFAULT_MAX_VERSIONS;
pub use self::fsio::write_atomically;
pub use self::key::{StoreKey, KEY_ENV, KEY_FILE_ENV};

/// The environment variable naming the store file.
pub const STORE_ENV: &str = "SECREF_STORE";

/// The largest value the store takes (field lengths are 32-bit on disk, and a
/// secret this large is almost certainly a mistake).
const MAX_VALUE_LEN: usize = 64 * 1024 * 1024;

/// The hint on every "there is no store" error.
const INIT_HINT: &str = "run `secref init` to create the local store";

/// The value of one version: a single value or a map of fields.
#[derive(Debug, Clone)]
pub enum EntryValue {
    /// `local://app/token`
    Single(Secret),
    /// `local://app/db#password`, `local://app/db#user`, …
    Fields(BTreeMap<String, Secret>),
}

/// What is known about one version, without its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionMetadata {
    /// The version number (1, 2, …).
    pub version: u64,
    /// When it was written.
    pub created_time: SystemTime,
    /// When it was soft-deleted, if it is.
    pub deletion_time: Option<SystemTime>,
    /// Whether its value is destroyed (gone for good).
    pub destroyed: bool,
}

/// An entry's metadata: read without decrypting anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryMetadata {
    /// The entry's name (`app/db`).
    pub name: String,
    /// When the entry was first written.
    pub created_time: SystemTime,
    /// When the entry or its metadata last changed.
    pub updated_time: SystemTime,
    /// The newest version (0 if only metadata was written).
    pub current_version: u64,
    /// The oldest version still kept.
    pub oldest_version: u64,
    /// The entry's own limit (0: the store's, see [`StoreSettings`]).
    pub max_versions: u32,
    /// Whether writes must pass a check-and-set version.
    pub cas_required: bool,
    /// Free-form, non-secret key/value pairs (visible in the store file).
    pub custom_metadata: BTreeMap<String, String>,
    /// The versions still kept, oldest first.
    pub versions: Vec<VersionMetadata>,
}

/// Changes to an entry's metadata; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataUpdate {
    /// Versions to keep (0: the store's setting). Lowering it drops the
    /// oldest versions at once.
    pub max_versions: Option<u32>,
    /// Whether writes must pass a check-and-set version.
    pub cas_required: Option<bool>,
    /// Replaces the custom metadata wholesale.
    pub custom_metadata: Option<BTreeMap<String, String>>,
}

/// What [`Store::read_if_unchanged`] answers: the read of one version and
/// its entry's metadata, each with its own error.
pub type ReadWithMetadata = (Result<(EntryValue, VersionMetadata)>, Result<EntryMetadata>);

/// Store-wide settings (Vault's `/config` of a KV v2 mount).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreSettings {
    /// Versions each entry keeps unless it sets its own limit (≥ 1).
    pub max_versions: u32,
    /// Whether every write must pass a check-and-set version.
    pub cas_required: bool,
}

/// An opened local store: a file path and the keys derived from its master
/// key. Every read looks at the file afresh (other processes may write it);
/// unchanged content is not read, parsed or verified twice.
pub struct Store {
    path: PathBuf,
    keys: Keys,
    /// The last verified file content, to skip re-parsing unchanged bytes.
    last: Mutex<Option<Verified>>,
}

struct Verified {
    raw: Vec<u8>,
    file: Arc<StoreFile>,
    /// The file's length and its last bytes, which name the content (see
    /// [`Store::unchanged`]); `None` if the file does not end the way this
    /// code renders it, then every read compares the whole file.
    seal: Option<(u64, Arc<[u8]>)>,
}

impl Verified {
    fn new(raw: Vec<u8>, file: Arc<StoreFile>) -> Verified {
        let suffix = format::mac_suffix(&file.mac);
        let seal = raw
            .ends_with(&suffix)
            .then(|| (raw.len() as u64, Arc::from(suffix)));
        Verified { raw, file, seal }
    }
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
        let _lock = StoreLock::acquire(path)?;
        let mut file = format::empty();
        store.keys.finish(&mut file)?;
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
        store.remember(raw, file);
        Ok(store)
    }

    /// Opens an existing store, checking that `key` is its key (`wrong_key`)
    /// and that the file is intact (`integrity`). A version-1 store is
    /// migrated in place (under the lock; the old file is kept next to it
    /// until the new one is read back and verified to hold the same values);
    /// a store written by a newer secref is refused (`unsupported`) and left
    /// as it is.
    pub fn open(path: &Path, key: StoreKey) -> Result<Store> {
        let store = Store::deferred(path, key);
        store.snapshot()?;
        Ok(store)
    }

    /// A store whose file is read and verified on first use, not now: every
    /// read goes through the same checks as [`Store::open`] (`wrong_key`,
    /// `integrity`, migration) and fails with the same errors.
    fn deferred(path: &Path, key: StoreKey) -> Store {
        let store = Store {
            path: path.to_path_buf(),
            keys: Keys::derive(&key),
            last: Mutex::new(None),
        };
        drop(key);
        store
    }

    /// Opens the store `cfg` names, with the key `cfg` names.
    pub fn open_from_config(cfg: &Config) -> Result<Store> {
        let store = Store::from_config_deferred(cfg)?;
        store.snapshot()?;
        Ok(store)
    }

    /// As [`Store::open_from_config`], but the file is only read and
    /// verified by the first read (with the same errors), so that a resolver
    /// whose references never name `local://` never reads the store. A
    /// missing store or key is still reported now.
    pub fn from_config_deferred(cfg: &Config) -> Result<Store> {
        let path = Store::default_path(cfg)?;
        if !path.exists() {
            return Err(missing_store(&path));
        }
        Ok(Store::deferred(&path, StoreKey::load(cfg)?))
    }

    /// The store file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads one value: the current version, or the one `?version=N` pins.
    /// `local://app/db` of a field-map entry is the map as compact JSON
    /// text.
    pub fn get(&self, r: &LocalRef) -> Result<Secret> {
        let file = self.snapshot()?;
        self.get_in(&file, r)
    }

    /// Reads a whole version (`None`: the current one) with its metadata.
    pub fn read(&self, name: &str, version: Option<u64>) -> Result<(EntryValue, VersionMetadata)> {
        let file = self.snapshot()?;
        self.read_in(&file, name, version)
    }

    /// [`Store::read`] and [`Store::metadata`] of `name` from one snapshot,
    /// only when the store file still holds the content verified last (see
    /// `Store::unchanged`): then no file is read and no lock is taken, only
    /// an `fstat`, a ~60-byte read of a cached page and one decryption, so
    /// async code may call this on its worker instead of hopping to a
    /// blocking thread. `None`: use the ordinary (blocking) calls.
    pub fn read_if_unchanged(&self, name: &str, version: Option<u64>) -> Option<ReadWithMetadata> {
        let file = self.unchanged()?;
        let meta = file
            .entries
            .get(name)
            .ok_or_else(|| no_entry(name))
            .and_then(|rec| entry_metadata(name, rec));
        Some((self.read_in(&file, name, version), meta))
    }

    fn read_in(
        &self,
        file: &StoreFile,
        name: &str,
        version: Option<u64>,
    ) -> Result<(EntryValue, VersionMetadata)> {
        let (n, record, plain) = self.open_version(file, name, version)?;
        let value = match plain {
            Plain::Single(v) => EntryValue::Single(Secret::copy_from(&v)),
            Plain::Fields(f) => EntryValue::Fields(
                f.iter()
                    .map(|(k, v)| (k.clone(), Secret::copy_from(v)))
                    .collect(),
            ),
        };
        Ok((value, version_metadata(n, record)?))
    }

    /// Sets a value as a new version and returns its number. With `#field`,
    /// the new version is the current one with that field set. Mixing kinds
    /// is refused (`usage`): a field cannot be set on a single-value entry,
    /// nor a whole value on a field-map entry; remove the entry first.
    pub fn set(&self, r: &LocalRef, value: Secret) -> Result<u64> {
        self.set_cas(r, value, None)
    }

    /// [`Store::set`] with check-and-set: `Some(n)` writes only if the
    /// current version is `n` (`Some(0)`: only if the entry has no version
    /// yet); a mismatch is a `usage` error and writes nothing. Without it,
    /// an entry or store with `cas_required` refuses the write.
    pub fn set_cas(&self, r: &LocalRef, value: Secret, cas: Option<u64>) -> Result<u64> {
        if r.version.is_some() {
            return Err(Error::usage(
                "a write creates a new version: leave ?version= out of the reference",
            )
            .with_reference(local_canonical(r)));
        }
        check_size(&value)?;
        let name = r.entry();
        self.modify(|file, keys| {
            check_cas(file, &name, cas)?;
            let current = current_plain(keys, file, &name)?;
            let value = Zeroizing::new(value.expose_bytes().to_vec());
            let plain = match (&r.field, current) {
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
            push_version(file, keys, &name, &plain)
        })
        .map_err(|e| e.with_reference(local_canonical(r)))
    }

    /// Writes a whole new version of `name` (Vault's `PUT data`), with
    /// optional check-and-set as in [`Store::set_cas`]. Returns its number.
    pub fn write(&self, name: &str, value: &EntryValue, cas: Option<u64>) -> Result<u64> {
        check_name(name)?;
        let plain = plain_of(value)?;
        self.modify(|file, keys| {
            check_cas(file, name, cas)?;
            push_version(file, keys, name, &plain)
        })
    }

    /// Writes a new version of every entry in `entries` in one locked,
    /// atomic store write: afterwards either all of them are stored or none
    /// (`secref import`). Returns each entry's new version number, in order.
    pub fn write_many(&self, entries: &[(String, EntryValue)]) -> Result<Vec<u64>> {
        let mut plains = Vec::with_capacity(entries.len());
        for (name, value) in entries {
            check_name(name)?;
            plains.push((name.as_str(), plain_of(value)?));
        }
        self.modify(|file, keys| {
            plains
                .iter()
                .map(|(name, plain)| {
                    check_cas(file, name, None)?;
                    push_version(file, keys, name, plain)
                })
                .collect()
        })
    }

    /// Removes what `r` names, recoverably: the entry's current version (or
    /// the pinned `?version=N`) is soft-deleted; with `#field`, a new version
    /// without that field is written (removing the last field soft-deletes
    /// the current version instead). Returns whether anything was removed.
    pub fn remove(&self, r: &LocalRef) -> Result<bool> {
        let name = r.entry();
        self.modify(|file, keys| {
            let Some(field) = &r.field else {
                let Some(rec) = file.entries.get(&name) else {
                    return Ok(false);
                };
                let v = r.version.unwrap_or(rec.current_version);
                return Ok(soft_delete(file, &name, &[v]) > 0);
            };
            if r.version.is_some() {
                return Err(Error::usage(
                    "a field is removed by writing a new version: leave ?version= out",
                ));
            }
            let Some(Plain::Fields(mut fields)) = current_plain(keys, file, &name)? else {
                return Ok(false);
            };
            if fields.remove(field).is_none() {
                return Ok(false);
            }
            if fields.is_empty() {
                let current = file.entries[&name].current_version;
                soft_delete(file, &name, &[current]);
            } else {
                push_version(file, keys, &name, &Plain::Fields(fields))?;
            }
            Ok(true)
        })
        .map_err(|e| e.with_reference(local_canonical(r)))
    }

    /// Soft-deletes the given versions of `name` (unknown, deleted or
    /// destroyed ones are skipped, as in Vault). Returns how many changed.
    /// `not_found` if there is no such entry.
    pub fn delete_versions(&self, name: &str, versions: &[u64]) -> Result<usize> {
        self.modify(|file, _| {
            require_entry(file, name)?;
            Ok(soft_delete(file, name, versions))
        })
    }

    /// Restores soft-deleted versions of `name`. Returns how many changed.
    pub fn undelete(&self, name: &str, versions: &[u64]) -> Result<usize> {
        self.modify(|file, _| {
            let rec = require_entry(file, name)?;
            let mut n = 0;
            for v in versions {
                if let Some(vr) = rec.versions.get_mut(v).filter(|vr| !vr.destroyed) {
                    n += usize::from(vr.deletion_time.take().is_some());
                }
            }
            if n > 0 {
                rec.updated_time = now();
            }
            Ok(n)
        })
    }

    /// Destroys versions of `name` for good: their ciphertexts are removed
    /// from the file. Returns how many changed.
    pub fn destroy(&self, name: &str, versions: &[u64]) -> Result<usize> {
        self.modify(|file, _| {
            let rec = require_entry(file, name)?;
            let mut n = 0;
            for v in versions {
                if let Some(vr) = rec.versions.get_mut(v).filter(|vr| !vr.destroyed) {
                    vr.destroyed = true;
                    vr.nonce = None;
                    vr.ciphertext = None;
                    n += 1;
                }
            }
            if n > 0 {
                rec.updated_time = now();
            }
            Ok(n)
        })
    }

    /// Forgets `name` entirely: every version and its metadata (Vault's
    /// `DELETE metadata`). Returns whether it existed.
    pub fn purge(&self, name: &str) -> Result<bool> {
        self.modify(|file, _| Ok(file.entries.remove(name).is_some()))
    }

    /// The metadata of `name`, without decrypting anything. `not_found` if
    /// there is no such entry.
    pub fn metadata(&self, name: &str) -> Result<EntryMetadata> {
        let file = self.snapshot()?;
        let rec = file.entries.get(name).ok_or_else(|| no_entry(name))?;
        entry_metadata(name, rec)
    }

    /// Changes the metadata of `name`, creating an entry without versions
    /// if there is none (as Vault does).
    pub fn update_metadata(&self, name: &str, update: &MetadataUpdate) -> Result<()> {
        check_name(name)?;
        self.modify(|file, _| {
            let store_max = file.max_versions;
            let rec = file
                .entries
                .entry(name.to_string())
                .or_insert_with(new_record);
            if let Some(m) = update.max_versions {
                rec.max_versions = m;
            }
            if let Some(c) = update.cas_required {
                rec.cas_required = c;
            }
            if let Some(c) = &update.custom_metadata {
                rec.custom_metadata = c.clone();
            }
            rec.updated_time = now();
            prune(rec, store_max);
            Ok(())
        })
    }

    /// The store-wide settings.
    pub fn settings(&self) -> Result<StoreSettings> {
        let file = self.snapshot()?;
        Ok(StoreSettings {
            max_versions: file.max_versions,
            cas_required: file.cas_required,
        })
    }

    /// Changes the store-wide settings (`max_versions` must be ≥ 1; entries
    /// over the new limit lose their oldest versions at once).
    pub fn configure(&self, settings: StoreSettings) -> Result<()> {
        if settings.max_versions == 0 {
            return Err(Error::usage("max_versions must be at least 1"));
        }
        self.modify(|file, _| {
            file.max_versions = settings.max_versions;
            file.cas_required = settings.cas_required;
            for rec in file.entries.values_mut() {
                prune(rec, settings.max_versions);
            }
            Ok(())
        })
    }

    /// Every entry name (with metadata, whatever the state of its versions)
    /// that starts with `prefix`, sorted. Nothing is decrypted.
    pub fn names(&self, prefix: &str) -> Result<Vec<String>> {
        let file = self.snapshot()?;
        Ok(file
            .entries
            .keys()
            .filter(|n| n.starts_with(prefix))
            .cloned()
            .collect())
    }

    /// What can be read, sorted: `name` for a single-value entry, `name#field`
    /// for each field of a field-map entry; entries whose current version is
    /// deleted or destroyed are left out. Names only, never values.
    pub fn list(&self) -> Result<Vec<String>> {
        let file = self.snapshot()?;
        let mut out = Vec::new();
        for name in file.entries.keys() {
            match current_plain(&self.keys, &file, name)? {
                Some(Plain::Fields(fields)) => {
                    out.extend(fields.keys().map(|f| format!("{name}#{f}")));
                }
                Some(Plain::Single(_)) => out.push(name.clone()),
                None => {}
            }
        }
        out.sort();
        Ok(out)
    }

    /// The last verified content, if the file on disk still holds it: the
    /// fast path of every read (one `open`, `fstat` and a positioned read of
    /// the file's last ~60 bytes instead of reading and comparing the whole
    /// file).
    ///
    /// Why this is exact, not a heuristic on times or sizes: a store file
    /// ends with its `mac` member (`,\n  "mac": "<M>"\n}\n`, see
    /// [`format::mac_suffix`]). A raw newline cannot occur inside a JSON
    /// string, so those bytes at the end of a file make `M` the value of the
    /// top-level `mac` member (a duplicate member is refused by the parser).
    /// `M` is HMAC-SHA256, under this store's key, over the whole content,
    /// `generation` included, so it names exactly one content: the one we
    /// verified. Writers replace the file by rename, so `fstat` and the read
    /// see one file. Hence an older copy restored over the store (a backup,
    /// `git checkout`) has another MAC and takes the slow path: the file's
    /// content is served, never stale memory; a rewrite of identical content
    /// still bumps `generation` and so the MAC. What the fast path does not
    /// do is re-detect tampering that keeps the MAC and the length: such a
    /// file is not served (the verified content is), and the next write or
    /// any change of the MAC re-verifies the whole file and reports it.
    #[cfg(unix)]
    pub(crate) fn unchanged(&self) -> Option<Arc<StoreFile>> {
        use std::os::unix::fs::FileExt;
        let (file, len, suffix) = {
            let last = self.last.lock();
            let last = last.as_ref()?;
            let (len, suffix) = last.seal.as_ref()?;
            (last.file.clone(), *len, Arc::clone(suffix))
        };
        let f = std::fs::File::open(&self.path).ok()?;
        if f.metadata().ok()?.len() != len {
            return None;
        }
        let mut tail = vec![0u8; suffix.len()];
        f.read_exact_at(&mut tail, len - suffix.len() as u64).ok()?;
        (tail[..] == suffix[..]).then_some(file)
    }

    #[cfg(not(unix))]
    pub(crate) fn unchanged(&self) -> Option<Arc<StoreFile>> {
        None
    }

    /// The current file content, verified. Takes the fast path of
    /// [`Store::unchanged`] when it can, else reads the file and reuses the
    /// parsed form when the bytes are unchanged; a version-1 file is
    /// migrated first.
    pub(crate) fn snapshot(&self) -> Result<Arc<StoreFile>> {
        if let Some(file) = self.unchanged() {
            return Ok(file);
        }
        let raw = read_raw(&self.path)?;
        if let Some(last) = &*self.last.lock() {
            if last.raw == raw {
                return Ok(last.file.clone());
            }
        }
        match self.parse(&raw)? {
            Parsed::V2(file) => Ok(self.remember(raw, file)),
            Parsed::V1(_) => {
                let target = write_target(&self.path)?;
                let _lock = StoreLock::acquire(&target)?;
                self.load_locked(&target)
            }
        }
    }

    /// Reads and verifies the whole file now, without the fast path of
    /// [`Store::unchanged`] (which compares only the length and the trailing
    /// MAC, so a file damaged in place keeps being read as the content
    /// verified last): readiness checks use it, so such damage is reported.
    pub(crate) fn verify(&self) -> Result<()> {
        let raw = read_raw(&self.path)?;
        if let Some(last) = &*self.last.lock() {
            if last.raw == raw {
                return Ok(());
            }
        }
        self.parse(&raw).map(drop)
    }

    /// Reads one value from a snapshot.
    pub(crate) fn get_in(&self, file: &StoreFile, r: &LocalRef) -> Result<Secret> {
        let name = r.entry();
        let (_, _, plain) = self.open_version(file, &name, r.version)?;
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

    /// The field names of the version `r` reads (empty for a single value).
    pub(crate) fn field_names_in(&self, file: &StoreFile, r: &LocalRef) -> Result<Vec<String>> {
        let (_, _, plain) = self.open_version(file, &r.entry(), r.version)?;
        Ok(plain.field_names())
    }

    /// The metadata of `name` in a snapshot, if the entry exists.
    pub(crate) fn metadata_in(
        &self,
        file: &StoreFile,
        name: &str,
    ) -> Result<Option<EntryMetadata>> {
        file.entries
            .get(name)
            .map(|rec| entry_metadata(name, rec))
            .transpose()
    }

    /// Decrypts one version (`None`: the current one) of `name`, with the
    /// errors a reader should see: `not_found` for a missing entry or a
    /// removed current version, `version_deleted` / `version_destroyed` for
    /// a pinned one.
    fn open_version<'f>(
        &self,
        file: &'f StoreFile,
        name: &str,
        version: Option<u64>,
    ) -> Result<(u64, &'f VersionRecord, Plain)> {
        let rec = file
            .entries
            .get(name)
            .filter(|r| r.current_version > 0)
            .ok_or_else(|| no_entry(name))?;
        let n = version.unwrap_or(rec.current_version);
        let Some(vr) = rec.versions.get(&n) else {
            let why = if n > rec.current_version {
                format!(
                    "entry '{name}' has no version {n} (its current version is {})",
                    rec.current_version
                )
            } else {
                format!("version {n} of entry '{name}' is no longer kept (max_versions)")
            };
            return Err(Error::new(ErrorCode::NotFound, why).with_hint(format!(
                "`secref history local://{name}` lists its versions"
            )));
        };
        if version.is_none() && (vr.destroyed || vr.deletion_time.is_some()) {
            let what = if vr.destroyed { "destroyed" } else { "deleted" };
            let mut e = Error::new(
                ErrorCode::NotFound,
                format!("entry '{name}' was removed (its current version {n} is {what})"),
            );
            if !vr.destroyed {
                e = e.with_hint(format!(
                    "`secref undelete local://{name} --versions {n}` restores it"
                ));
            }
            return Err(e);
        }
        if vr.destroyed {
            return Err(Error::new(
                ErrorCode::VersionDestroyed,
                format!("version {n} of entry '{name}' is destroyed"),
            ));
        }
        if vr.deletion_time.is_some() {
            return Err(Error::new(
                ErrorCode::VersionDeleted,
                format!("version {n} of entry '{name}' is deleted"),
            )
            .with_hint(format!(
                "`secref undelete local://{name} --versions {n}` restores it"
            )));
        }
        let sealed = vr
            .sealed()
            .ok_or_else(|| format::integrity(format!("entry '{name}' is corrupt")))?;
        let bytes = self.keys.open(name, n, &sealed)?;
        Ok((n, vr, Plain::decode(name, &bytes)?))
    }

    fn parse(&self, raw: &[u8]) -> Result<Parsed> {
        let parsed = format::parse(raw).map_err(|e| {
            if e.code() == ErrorCode::Integrity {
                format::integrity(format!("{}: {}", self.path.display(), e.message()))
            } else {
                e
            }
        })?;
        match &parsed {
            Parsed::V1(f) => self.keys.verify_v1(f)?,
            Parsed::V2(f) => self.keys.verify(f)?,
        }
        Ok(parsed)
    }

    fn remember(&self, raw: Vec<u8>, file: StoreFile) -> Arc<StoreFile> {
        let file = Arc::new(file);
        *self.last.lock() = Some(Verified::new(raw, file.clone()));
        file
    }

    /// With the lock held: reads and verifies the store, migrating a
    /// version-1 file first.
    fn load_locked(&self, target: &Path) -> Result<Arc<StoreFile>> {
        let raw = read_raw(target)?;
        match self.parse(&raw)? {
            Parsed::V2(file) => {
                remove_migration_leftovers(target);
                Ok(self.remember(raw, file))
            }
            Parsed::V1(old) => self.migrate_locked(target, &raw, &old),
        }
    }

    /// Migrates a verified version-1 file to version 2, with the lock held.
    /// The new file is verified to hold exactly the old values before it
    /// replaces the old one; the old file is kept as `<store>.v1-backup`
    /// until the replaced store has been read back and verified again.
    fn migrate_locked(
        &self,
        target: &Path,
        raw: &[u8],
        old: &StoreFileV1,
    ) -> Result<Arc<StoreFile>> {
        let since = std::fs::metadata(target)
            .and_then(|m| m.modified())
            .unwrap_or_else(|_| SystemTime::now());
        let since = rfc3339(since);
        let mut plains = BTreeMap::new();
        let mut file = format::empty();
        for (name, sealed) in &old.entries {
            let plain = self.keys.open_v1(name, sealed)?;
            Plain::decode(name, &plain)?;
            let mut version = VersionRecord {
                created_time: since.clone(),
                deletion_time: None,
                destroyed: false,
                nonce: None,
                ciphertext: None,
            };
            version.put(self.keys.seal(name, 1, &plain)?);
            let mut rec = new_record();
            rec.created_time = since.clone();
            rec.updated_time = since.clone();
            rec.current_version = 1;
            rec.oldest_version = 1;
            rec.versions.insert(1, version);
            file.entries.insert(name.clone(), rec);
            plains.insert(name.clone(), plain);
        }
        file.generation = 1;
        self.keys.finish(&mut file)?;
        let new_raw = format::render(&file)?;
        let same_values = |bytes: &[u8]| -> Result<()> {
            let Parsed::V2(f) = self.parse(bytes)? else {
                return Err(format::integrity("the migrated store is not version 2"));
            };
            if f.entries.len() != plains.len() {
                return Err(format::integrity("the migrated store lost entries"));
            }
            for (name, plain) in &plains {
                let sealed = f.entries[name].versions[&1].sealed();
                let back = sealed.map(|s| self.keys.open(name, 1, &s)).transpose()?;
                if back.as_deref().map(|b| &b[..]) != Some(&plain[..]) {
                    return Err(format::integrity(format!(
                        "the migrated store does not hold entry '{name}' unchanged"
                    )));
                }
            }
            Ok(())
        };
        same_values(&new_raw)?;
        let backup = sibling(target, ".v1-backup");
        write_atomically(&backup, raw, true)?;
        write_atomically(target, &new_raw, true)?;
        let verified = read_raw(target).and_then(|back| {
            if back == new_raw {
                same_values(&back)
            } else {
                Err(format::integrity("the migrated store changed on disk"))
            }
        });
        if let Err(e) = verified {
            // Put the old file back: it is known good, the new one is not.
            std::fs::rename(&backup, target).map_err(|r| {
                Error::new(
                    ErrorCode::Io,
                    format!(
                        "store migration failed ({}) and restoring {} failed ({}); the old store is in {}",
                        e.message(),
                        target.display(),
                        r.kind(),
                        backup.display()
                    ),
                )
            })?;
            return Err(Error::new(
                e.code(),
                format!(
                    "store migration failed, the old store was kept: {}",
                    e.message()
                ),
            ));
        }
        std::fs::remove_file(&backup).map_err(|e| {
            Error::new(
                ErrorCode::Io,
                format!("cannot remove {}: {}", backup.display(), e.kind()),
            )
        })?;
        fsio::sync_dir(parent_dir(target).unwrap_or(Path::new(".")))?;
        tracing::info!(store = %target.display(), "migrated the store from format 1 to format 2");
        Ok(self.remember(new_raw, file))
    }

    /// Read-modify-write under the store's exclusive lock. `change` edits the
    /// verified file; nothing is written if it changed nothing, or if it or
    /// the verification failed.
    fn modify<T>(&self, change: impl FnOnce(&mut StoreFile, &Keys) -> Result<T>) -> Result<T> {
        let target = write_target(&self.path)?;
        let _lock = StoreLock::acquire(&target)?;
        fsio::remove_stale_temps(&target);
        // Re-read under the lock: another process may have written since.
        let before = self.load_locked(&target)?;
        let mut file = (*before).clone();
        let out = change(&mut file, &self.keys)?;
        if file == *before {
            return Ok(out);
        }
        file.generation += 1;
        self.keys.finish(&mut file)?;
        let raw = format::render(&file)?;
        write_atomically(&target, &raw, true)?;
        self.remember(raw, file);
        Ok(out)
    }
}

fn read_raw(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => missing_store(path),
        k => Error::new(
            ErrorCode::Io,
            format!("cannot read store {}: {k}", path.display()),
        ),
    })
}

/// With the lock held and a verified format-2 store in place: removes what
/// a migration killed after replacing the store (before its last step) left
/// behind — the `.v1-backup` and its temporary files. They are obsolete, and
/// they still hold the old values, including ones destroyed since, which
/// `destroy` promises are gone. Only regular files are removed.
fn remove_migration_leftovers(target: &Path) {
    let backup = sibling(target, ".v1-backup");
    fsio::remove_stale_temps(&backup);
    if backup
        .symlink_metadata()
        .is_ok_and(|m| m.file_type().is_file())
        && std::fs::remove_file(&backup).is_ok()
    {
        tracing::info!(file = %backup.display(), "removed the backup of an interrupted store migration");
        let _ = fsio::sync_dir(parent_dir(target).unwrap_or(Path::new(".")));
    }
}

fn sibling(target: &Path, suffix: &str) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    target.with_file_name(name)
}

fn now() -> String {
    rfc3339(SystemTime::now())
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

fn parse_time(s: &str) -> Result<SystemTime> {
    humantime::parse_rfc3339(s).map_err(|_| format::integrity("a time in the store is malformed"))
}

fn new_record() -> EntryRecord {
    let now = now();
    EntryRecord {
        created_time: now.clone(),
        updated_time: now,
        current_version: 0,
        oldest_version: 0,
        max_versions: 0,
        cas_required: false,
        custom_metadata: BTreeMap::new(),
        versions: BTreeMap::new(),
    }
}

fn no_entry(name: &str) -> Error {
    Error::new(
        ErrorCode::NotFound,
        format!("the local store has no entry '{name}'"),
    )
    .with_hint(format!("create it with `secref set local://{name}`"))
}

fn require_entry<'f>(file: &'f mut StoreFile, name: &str) -> Result<&'f mut EntryRecord> {
    file.entries.get_mut(name).ok_or_else(|| no_entry(name))
}

fn check_name(name: &str) -> Result<()> {
    let r = crate::SecretRef::parse(format!("local://{name}"))?;
    match r.kind() {
        crate::RefKind::Local(l) if l.field.is_none() && l.version.is_none() => Ok(()),
        _ => Err(Error::usage(format!("'{name}' is not a valid entry name"))),
    }
}

/// The plaintext form of a value to write, size-checked.
fn plain_of(value: &EntryValue) -> Result<Plain> {
    Ok(match value {
        EntryValue::Single(s) => {
            check_size(s)?;
            Plain::Single(Zeroizing::new(s.expose_bytes().to_vec()))
        }
        EntryValue::Fields(f) => {
            for s in f.values() {
                check_size(s)?;
            }
            Plain::Fields(
                f.iter()
                    .map(|(k, v)| (k.clone(), Zeroizing::new(v.expose_bytes().to_vec())))
                    .collect(),
            )
        }
    })
}

fn check_size(value: &Secret) -> Result<()> {
    if value.len() > MAX_VALUE_LEN {
        return Err(Error::usage(format!(
            "values larger than {} MiB are not supported",
            MAX_VALUE_LEN >> 20
        )));
    }
    Ok(())
}

/// Applies check-and-set rules for a write of `name`.
fn check_cas(file: &StoreFile, name: &str, cas: Option<u64>) -> Result<()> {
    let rec = file.entries.get(name);
    let current = rec.map_or(0, |r| r.current_version);
    match cas {
        Some(want) if want != current => Err(Error::usage(format!(
            "check-and-set failed: entry '{name}' is at version {current}, not {want}; nothing was written"
        ))
        .with_hint("read the current version with `secref history` and retry")),
        Some(_) => Ok(()),
        None if file.cas_required || rec.is_some_and(|r| r.cas_required) => Err(Error::usage(
            format!("entry '{name}' requires check-and-set; nothing was written"),
        )
        .with_hint("pass --cas <current version> (0 for a new entry)")),
        None => Ok(()),
    }
}

/// The current version's plaintext, if it is live.
fn current_plain(keys: &Keys, file: &StoreFile, name: &str) -> Result<Option<Plain>> {
    let Some(rec) = file.entries.get(name) else {
        return Ok(None);
    };
    let n = rec.current_version;
    match rec.versions.get(&n) {
        Some(vr) if vr.deletion_time.is_none() => match vr.sealed() {
            Some(s) => Plain::decode(name, &keys.open(name, n, &s)?).map(Some),
            None => Ok(None),
        },
        _ => Ok(None),
    }
}

/// Appends a new version to `name` and drops versions over the limit.
fn push_version(file: &mut StoreFile, keys: &Keys, name: &str, plain: &Plain) -> Result<u64> {
    let store_max = file.max_versions;
    let rec = file
        .entries
        .entry(name.to_string())
        .or_insert_with(new_record);
    let n = rec.current_version + 1;
    let now = now();
    let mut version = VersionRecord {
        created_time: now.clone(),
        deletion_time: None,
        destroyed: false,
        nonce: None,
        ciphertext: None,
    };
    version.put(keys.seal(name, n, &plain.encode())?);
    rec.versions.insert(n, version);
    rec.current_version = n;
    rec.updated_time = now;
    if rec.oldest_version == 0 {
        rec.oldest_version = n;
    }
    prune(rec, store_max);
    Ok(n)
}

/// Drops the oldest versions beyond the entry's (or the store's) limit.
fn prune(rec: &mut EntryRecord, store_max: u32) {
    let max = if rec.max_versions > 0 {
        rec.max_versions
    } else {
        store_max.max(1)
    } as usize;
    while rec.versions.len() > max {
        rec.versions.pop_first();
    }
    if let Some((&oldest, _)) = rec.versions.first_key_value() {
        rec.oldest_version = oldest;
    }
}

/// Soft-deletes live versions of `name`; returns how many changed.
fn soft_delete(file: &mut StoreFile, name: &str, versions: &[u64]) -> usize {
    let Some(rec) = file.entries.get_mut(name) else {
        return 0;
    };
    let now = now();
    let mut n = 0;
    for v in versions {
        if let Some(vr) = rec.versions.get_mut(v) {
            if !vr.destroyed && vr.deletion_time.is_none() {
                vr.deletion_time = Some(now.clone());
                n += 1;
            }
        }
    }
    if n > 0 {
        rec.updated_time = now;
    }
    n
}

fn version_metadata(n: u64, vr: &VersionRecord) -> Result<VersionMetadata> {
    Ok(VersionMetadata {
        version: n,
        created_time: parse_time(&vr.created_time)?,
        deletion_time: vr.deletion_time.as_deref().map(parse_time).transpose()?,
        destroyed: vr.destroyed,
    })
}

fn entry_metadata(name: &str, rec: &EntryRecord) -> Result<EntryMetadata> {
    Ok(EntryMetadata {
        name: name.to_string(),
        created_time: parse_time(&rec.created_time)?,
        updated_time: parse_time(&rec.updated_time)?,
        current_version: rec.current_version,
        oldest_version: rec.oldest_version,
        max_versions: rec.max_versions,
        cas_required: rec.cas_required,
        custom_metadata: rec.custom_metadata.clone(),
        versions: rec
            .versions
            .iter()
            .map(|(&n, vr)| version_metadata(n, vr))
            .collect::<Result<_>>()?,
    })
}

fn local_canonical(r: &LocalRef) -> String {
    let mut s = format!("local://{}", r.entry());
    if let Some(f) = &r.field {
        s.push('#');
        s.push_str(f);
    }
    if let Some(v) = r.version {
        s.push_str(&format!("?version={v}"));
    }
    s
}

fn missing_store(path: &Path) -> Error {
    Error::new(
        ErrorCode::NotFound,
        format!("the local store {} does not exist", path.display()),
    )
    .with_hint(INIT_HINT)
}

pub(crate) fn sync_parent_dir(path: &Path) -> Result<()> {
    fsio::sync_dir(parent_dir(path).unwrap_or(Path::new(".")))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RefKind, SecretRef};

    fn local(s: &str) -> LocalRef {
        match SecretRef::parse(s).unwrap().kind() {
            RefKind::Local(l) => l.clone(),
            _ => unreachable!(),
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::create(&dir.path().join("s.store"), &StoreKey::generate()).unwrap();
        (dir, s)
    }

    fn fields(pairs: &[(&str, &str)]) -> EntryValue {
        EntryValue::Fields(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Secret::from(*v)))
                .collect(),
        )
    }

    #[test]
    fn vault_style_api_round_trip() {
        let (_d, s) = store();
        assert_eq!(
            s.write("kv/a", &fields(&[("k", "v1")]), Some(0)).unwrap(),
            1
        );
        assert_eq!(s.write("kv/a", &fields(&[("k", "v2")]), None).unwrap(), 2);
        let (value, meta) = s.read("kv/a", Some(1)).unwrap();
        let EntryValue::Fields(f) = value else {
            panic!("fields expected")
        };
        assert_eq!(f["k"].as_text().unwrap(), "v1");
        assert_eq!(meta.version, 1);
        assert!(meta.deletion_time.is_none());

        s.update_metadata(
            "kv/a",
            &MetadataUpdate {
                max_versions: Some(1),
                cas_required: Some(true),
                custom_metadata: Some([("owner".to_string(), "team".to_string())].into()),
            },
        )
        .unwrap();
        let m = s.metadata("kv/a").unwrap();
        assert_eq!((m.current_version, m.oldest_version), (2, 2));
        assert_eq!(m.versions.len(), 1);
        assert_eq!(m.custom_metadata["owner"], "team");
        assert_eq!(
            s.write("kv/a", &fields(&[("k", "v3")]), None)
                .unwrap_err()
                .code(),
            ErrorCode::Usage
        );
        assert_eq!(
            s.write("kv/a", &fields(&[("k", "v3")]), Some(2)).unwrap(),
            3
        );
        assert_eq!(
            s.read("kv/a", Some(1)).unwrap_err().code(),
            ErrorCode::NotFound
        );

        assert_eq!(s.delete_versions("kv/a", &[3, 99]).unwrap(), 1);
        assert_eq!(
            s.read("kv/a", Some(3)).unwrap_err().code(),
            ErrorCode::VersionDeleted
        );
        assert_eq!(s.undelete("kv/a", &[3]).unwrap(), 1);
        assert_eq!(s.destroy("kv/a", &[3]).unwrap(), 1);
        assert_eq!(
            s.read("kv/a", Some(3)).unwrap_err().code(),
            ErrorCode::VersionDestroyed
        );
        assert_eq!(s.undelete("kv/a", &[3]).unwrap(), 0);

        s.write("kv/b/c", &EntryValue::Single(Secret::from("x")), None)
            .unwrap();
        s.update_metadata("other", &MetadataUpdate::default())
            .unwrap();
        assert_eq!(s.names("kv/").unwrap(), ["kv/a", "kv/b/c"]);
        assert_eq!(s.metadata("other").unwrap().current_version, 0);
        assert_eq!(
            s.get(&local("local://other")).unwrap_err().code(),
            ErrorCode::NotFound
        );
        assert!(s.purge("kv/a").unwrap());
        assert!(!s.purge("kv/a").unwrap());
        assert_eq!(s.metadata("kv/a").unwrap_err().code(), ErrorCode::NotFound);
        assert_eq!(
            s.delete_versions("kv/a", &[1]).unwrap_err().code(),
            ErrorCode::NotFound
        );
    }

    #[test]
    fn store_settings_limit_versions_and_require_cas() {
        let (_d, s) = store();
        assert_eq!(
            s.settings().unwrap(),
            StoreSettings {
                max_versions: DEFAULT_MAX_VERSIONS,
                cas_required: false
            }
        );
        let r = local("local://app/x");
        for i in 0..4 {
            s.set(&r, Secret::from(format!("v{i}"))).unwrap();
        }
        s.configure(StoreSettings {
            max_versions: 2,
            cas_required: true,
        })
        .unwrap();
        assert_eq!(s.metadata("app/x").unwrap().oldest_version, 3);
        assert_eq!(
            s.set(&r, Secret::from("no")).unwrap_err().code(),
            ErrorCode::Usage
        );
        assert_eq!(s.set_cas(&r, Secret::from("v4"), Some(4)).unwrap(), 5);
        assert_eq!(
            s.configure(StoreSettings {
                max_versions: 0,
                cas_required: false
            })
            .unwrap_err()
            .code(),
            ErrorCode::Usage
        );
    }

    #[test]
    fn removing_a_pinned_version_or_a_field() {
        let (_d, s) = store();
        s.set(&local("local://a/db#u"), Secret::from("u1")).unwrap();
        s.set(&local("local://a/db#p"), Secret::from("p1")).unwrap();
        assert!(s.remove(&local("local://a/db?version=1")).unwrap());
        assert!(!s.remove(&local("local://a/db?version=1")).unwrap());
        assert_eq!(
            s.get(&local("local://a/db#p")).unwrap().as_text().unwrap(),
            "p1"
        );
        assert!(s.remove(&local("local://a/db#p")).unwrap());
        assert!(s.remove(&local("local://a/db#u")).unwrap());
        // The last field gone: the entry reads as removed, and comes back.
        assert_eq!(
            s.get(&local("local://a/db#u")).unwrap_err().code(),
            ErrorCode::NotFound
        );
        assert!(s.list().unwrap().is_empty());
        assert_eq!(s.undelete("a/db", &[3]).unwrap(), 1);
        assert_eq!(
            s.get(&local("local://a/db#u")).unwrap().as_text().unwrap(),
            "u1"
        );
        assert_eq!(
            s.remove(&local("local://a/db#u?version=3"))
                .unwrap_err()
                .code(),
            ErrorCode::Usage
        );
    }

    #[test]
    #[cfg(unix)]
    fn the_fast_path_is_taken_while_the_file_is_unchanged_and_only_then() {
        let dir = tempfile::tempdir().unwrap();
        let key = StoreKey::generate();
        let store = Store::create(&dir.path().join("s.store"), &key).unwrap();
        store
            .set(&local("local://app/x"), Secret::from("1"))
            .unwrap();
        // The file this code renders ends with its MAC: the fast path holds.
        assert!(store.unchanged().is_some());
        let other = Store::open(store.path(), key).unwrap();
        other
            .set(&local("local://app/x"), Secret::from("2"))
            .unwrap();
        assert!(store.unchanged().is_none(), "another writer's file");
        assert_eq!(
            store
                .get(&local("local://app/x"))
                .unwrap()
                .as_text()
                .unwrap(),
            "2"
        );
        assert!(store.unchanged().is_some());
    }
}
