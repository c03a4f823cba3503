//! [`StoreKey`]: the store's 32-byte master key, where it comes from and how
//! it is written to disk.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use zeroize::{Zeroize, Zeroizing};

use crate::config::Config;
use crate::error::{Error, ErrorCode, Result};
use crate::secret::Secret;

/// Length of the master key in bytes.
pub(crate) const KEY_LEN: usize = 32;

/// The environment variable holding the key itself (base64 of 32 bytes).
pub const KEY_ENV: &str = "SECREF_KEY";
/// The environment variable naming the key file.
pub const KEY_FILE_ENV: &str = "SECREF_KEY_FILE";

/// The hint on every "there is no key" error.
const INIT_HINT: &str = "run `secref init` to create a store and its key, or set SECREF_KEY";

/// The master key of a local store: 32 random bytes that live outside the
/// store, in `$SECREF_KEY` (base64) or a key file readable only by its owner.
///
/// The bytes are held in a [`Secret`] (locked, zeroized memory) and never
/// printed.
///
/// ```
/// use secref::store::StoreKey;
/// let key = StoreKey::generate();
/// assert_eq!(format!("{key:?}"), "StoreKey([REDACTED])");
/// let same = StoreKey::from_base64(&key.to_base64()).unwrap();
/// assert!(StoreKey::from_base64("not a key").is_err());
/// # drop(same);
/// ```
#[derive(Clone)]
pub struct StoreKey {
    bytes: Secret,
}

impl StoreKey {
    /// A new random key from the operating system's CSPRNG.
    pub fn generate() -> StoreKey {
        use chacha20poly1305::aead::{rand_core::RngCore, OsRng};
        let mut raw = Zeroizing::new([0u8; KEY_LEN]);
        OsRng.fill_bytes(raw.as_mut());
        StoreKey {
            bytes: Secret::copy_from(raw.as_ref()),
        }
    }

    /// Parses the base64 (standard alphabet, padding optional, surrounding
    /// whitespace ignored) of exactly 32 bytes. The error never echoes the
    /// input.
    pub fn from_base64(s: &str) -> Result<StoreKey> {
        let trimmed = s.trim();
        let bad = || {
            Error::config("the store key is not valid base64 of 32 bytes")
                .with_hint("a store key is 32 random bytes written as 44 base64 characters")
        };
        let mut buf = Zeroizing::new(Vec::with_capacity(trimmed.len()));
        // The decode errors name the offending byte: replace them wholesale.
        base64::engine::general_purpose::STANDARD
            .decode_vec(trimmed, &mut buf)
            .or_else(|_| {
                buf.zeroize();
                base64::engine::general_purpose::STANDARD_NO_PAD.decode_vec(trimmed, &mut buf)
            })
            .map_err(|_| bad())?;
        if buf.len() != KEY_LEN {
            return Err(bad());
        }
        Ok(StoreKey {
            bytes: Secret::copy_from(&buf),
        })
    }

    /// The key as base64 text (to print once at `secref init`, or to put in
    /// `$SECREF_KEY` on a CI system).
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(self.bytes.expose_bytes()))
    }

    /// Loads the key for `cfg`: `$SECREF_KEY` (from `cfg.env`) if set, else
    /// the key file at [`StoreKey::default_key_path`].
    ///
    /// A key file readable or writable by group or others is refused (like
    /// ssh does), since anyone who can read it can read every secret.
    pub fn load(cfg: &Config) -> Result<StoreKey> {
        if let Some(b64) = cfg.env.get(KEY_ENV) {
            return StoreKey::from_base64(b64)
                .map_err(|e| Error::config(format!("{KEY_ENV}: {}", e.message())));
        }
        let path = StoreKey::default_key_path(cfg)?;
        StoreKey::read_key_file(&path)
    }

    /// Where the key file is: `LocalConfig.key_file`, else `$SECREF_KEY_FILE`,
    /// else `secref/key` in the user's config directory.
    pub fn default_key_path(cfg: &Config) -> Result<PathBuf> {
        if let Some(p) = &cfg.local.key_file {
            return Ok(super::relative_to_config(cfg, p));
        }
        if let Some(p) = cfg.env.get(KEY_FILE_ENV) {
            return Ok(PathBuf::from(p));
        }
        dirs::config_dir()
            .map(|d| d.join("secref").join("key"))
            .ok_or_else(|| {
                Error::config("cannot find the user's config directory for the store key")
                    .with_hint("set SECREF_KEY_FILE or [local] key_file in secref.toml")
            })
    }

    /// Writes the key to a new file: parent directories are created with mode
    /// 0700, the file with mode 0600 from the start (never chmod-ed after the
    /// key is in it). An existing file is never overwritten (`usage` error).
    pub fn write_new_key_file(&self, path: &Path) -> Result<()> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            super::create_private_dirs(parent)?;
        }
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut file = opts.open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Error::usage(format!(
                "key file {} already exists; refusing to overwrite it",
                path.display()
            ))
            .with_hint("move it away first if you really mean to replace the key (every store encrypted with it becomes unreadable)"),
            k => Error::new(
                ErrorCode::Io,
                format!("cannot create key file {}: {k}", path.display()),
            ),
        })?;
        let mut text = self.to_base64();
        text.push('\n');
        let written = file
            .write_all(text.as_bytes())
            .and_then(|()| file.sync_all());
        if let Err(e) = written {
            // A half-written key file would be worse than none.
            drop(file);
            let _ = std::fs::remove_file(path);
            return Err(Error::new(
                ErrorCode::Io,
                format!("cannot write key file {}: {}", path.display(), e.kind()),
            ));
        }
        super::sync_parent_dir(path)?;
        Ok(())
    }

    /// The raw key bytes, for key derivation only.
    pub(crate) fn expose(&self) -> &[u8] {
        self.bytes.expose_bytes()
    }

    fn read_key_file(path: &Path) -> Result<StoreKey> {
        let bytes = crate::credfile::read_private_file(path, "key file")?.ok_or_else(|| {
            Error::config(format!(
                "no store key: {KEY_ENV} is not set and key file {} does not exist",
                path.display()
            ))
            .with_hint(INIT_HINT)
        })?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| Error::config(format!("key file {} is not text", path.display())))?;
        StoreKey::from_base64(text)
            .map_err(|e| Error::config(format!("key file {}: {}", path.display(), e.message())))
    }
}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreKey([REDACTED])")
    }
}
