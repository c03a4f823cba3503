//! The store file format and its cryptography.
//!
//! Version 2 (written by this code):
//!
//! ```json
//! {
//!   "format": "secref-store",
//!   "version": 2,
//!   "key_id": "<16 hex chars>",
//!   "generation": 7,
//!   "max_versions": 10,
//!   "cas_required": false,
//!   "entries": {
//!     "app/db": {
//!       "created_time": "2026-01-01T00:00:00.000000000Z",
//!       "updated_time": "2026-01-02T00:00:00.000000000Z",
//!       "current_version": 2,
//!       "oldest_version": 1,
//!       "max_versions": 0,
//!       "cas_required": false,
//!       "custom_metadata": { "owner": "team-a" },
//!       "versions": {
//!         "1": { "created_time": "…", "deletion_time": "…", "destroyed": false,
//!                "nonce": "<base64, 24 bytes>", "ciphertext": "<base64>" },
//!         "2": { "created_time": "…", "destroyed": true }
//!       }
//!     }
//!   },
//!   "mac": "<base64, 32 bytes>"
//! }
//! ```
//!
//! * Three keys are derived from the master key with HKDF-SHA256 under
//!   distinct labels: the entry cipher key, the MAC key and the key id.
//! * `key_id` is 8 bytes of HKDF output: it identifies the key (so that a
//!   wrong key is reported as `wrong_key` before anything else) without
//!   revealing anything about it.
//! * Each version is sealed with XChaCha20-Poly1305 under a fresh random
//!   192-bit nonce, with the format, file version, entry name and version
//!   number as associated data, so a ciphertext cannot be moved to another
//!   name or version. A destroyed version has no ciphertext at all.
//! * Metadata (times, version numbers, `max_versions`, `cas_required`,
//!   custom metadata) is plaintext, like entry names: it can be read without
//!   decrypting anything. Do not put secrets in custom metadata.
//! * `generation` grows by one on every write, so that two writes of the
//!   same logical content still give different files.
//! * `mac` is HMAC-SHA256 over the compact JSON of the whole file with an
//!   empty `mac` (serde with sorted maps is deterministic), so adding,
//!   deleting, swapping or editing anything — metadata included — is
//!   detected. Rolling the whole file back to an older, validly MAC-ed file is
//!   not detected (git history is the audit trail).
//!
//! Version 1 (entries `{nonce, ciphertext}` only, one value per entry, a MAC
//! over a length-prefixed listing) is still read, and migrated to version 2
//! by [`Store::open`](super::Store::open). A file with a higher version is
//! refused (`unsupported`).

use std::collections::BTreeMap;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::key::{StoreKey, KEY_LEN};
use crate::error::{Error, ErrorCode, Result};
use crate::secret::{constant_time_eq, Secret};

/// The `format` marker of every store file.
pub(crate) const FORMAT: &str = "secref-store";
/// The version this code writes.
pub(crate) const VERSION: u32 = 2;
/// The pre-versioning format, read only to migrate it.
pub(crate) const VERSION_1: u32 = 1;
/// How many versions an entry keeps unless configured otherwise.
pub const DEFAULT_MAX_VERSIONS: u32 = 10;

const NONCE_LEN: usize = 24;
const HKDF_SALT: &[u8] = b"secref-store";
// The labels keep their "v1" names: the same key must give the same key id
// and keys across file versions.
const LABEL_ENTRY_KEY: &[u8] = b"secref-store v1 entry key";
const LABEL_MAC_KEY: &[u8] = b"secref-store v1 mac key";
const LABEL_KEY_ID: &[u8] = b"secref-store v1 key id";
const MAC_DOMAIN_V2: &[u8] = b"secref-store v2 mac\0";

/// Just enough of any file to decide how to read the rest.
#[derive(Deserialize)]
struct Header {
    format: String,
    version: u32,
}

/// A version-2 file as stored: everything public except the ciphertexts'
/// contents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoreFile {
    pub format: String,
    pub version: u32,
    pub key_id: String,
    pub generation: u64,
    pub max_versions: u32,
    pub cas_required: bool,
    pub entries: BTreeMap<String, EntryRecord>,
    pub mac: String,
}

/// One entry: its metadata and its versions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EntryRecord {
    pub created_time: String,
    pub updated_time: String,
    /// 0 until the first version is written.
    pub current_version: u64,
    pub oldest_version: u64,
    /// 0: the store's `max_versions`.
    pub max_versions: u32,
    pub cas_required: bool,
    pub custom_metadata: BTreeMap<String, String>,
    pub versions: BTreeMap<u64, VersionRecord>,
}

/// One version of an entry. `nonce` and `ciphertext` are absent exactly when
/// it is destroyed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VersionRecord {
    pub created_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_time: Option<String>,
    pub destroyed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphertext: Option<String>,
}

impl VersionRecord {
    /// The sealed value, unless destroyed.
    pub fn sealed(&self) -> Option<SealedEntry> {
        Some(SealedEntry {
            nonce: self.nonce.clone()?,
            ciphertext: self.ciphertext.clone()?,
        })
    }

    /// Stores a sealed value in this version.
    pub fn put(&mut self, sealed: SealedEntry) {
        self.nonce = Some(sealed.nonce);
        self.ciphertext = Some(sealed.ciphertext);
    }
}

/// One encrypted value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SealedEntry {
    pub nonce: String,
    pub ciphertext: String,
}

/// A version-1 file (read only, to migrate it).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoreFileV1 {
    pub format: String,
    pub version: u32,
    pub key_id: String,
    pub entries: BTreeMap<String, SealedEntry>,
    pub mac: String,
}

/// A parsed file of either version.
pub(crate) enum Parsed {
    V1(StoreFileV1),
    V2(StoreFile),
}

/// The keys derived from a master key, held as [`Secret`]s (locked memory,
/// excluded from core dumps, zeroized on drop) like the master key itself.
pub(crate) struct Keys {
    entry_key: Secret,
    mac_key: Secret,
    key_id: String,
}

impl Keys {
    pub fn derive(master: &StoreKey) -> Keys {
        let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), master.expose());
        let mut entry_key = Zeroizing::new([0u8; KEY_LEN]);
        let mut mac_key = Zeroizing::new([0u8; KEY_LEN]);
        let mut id = [0u8; 8];
        // 32 and 8 bytes are far below HKDF-SHA256's 8160-byte limit.
        hk.expand(LABEL_ENTRY_KEY, entry_key.as_mut())
            .expect("valid HKDF length");
        hk.expand(LABEL_MAC_KEY, mac_key.as_mut())
            .expect("valid HKDF length");
        hk.expand(LABEL_KEY_ID, &mut id).expect("valid HKDF length");
        Keys {
            entry_key: Secret::copy_from(entry_key.as_ref()),
            mac_key: Secret::copy_from(mac_key.as_ref()),
            key_id: id.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.entry_key.expose_bytes().into())
    }

    fn hmac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as Mac>::new_from_slice(self.mac_key.expose_bytes())
            .expect("HMAC takes any key length")
    }

    /// The version-2 MAC: over the compact JSON of the file without its MAC.
    fn mac(&self, file: &StoreFile) -> Result<Hmac<Sha256>> {
        let mut unsigned = file.clone();
        unsigned.mac.clear();
        let bytes = serde_json::to_vec(&unsigned)
            .map_err(|_| Error::internal("cannot serialise the store"))?;
        let mut mac = self.hmac();
        mac.update(MAC_DOMAIN_V2);
        mac.update(&bytes);
        Ok(mac)
    }

    /// The version-1 MAC: a length-prefixed listing of every entry.
    fn mac_v1(&self, file: &StoreFileV1) -> Hmac<Sha256> {
        let mut mac = self.hmac();
        let mut put = |bytes: &[u8]| {
            mac.update(&(bytes.len() as u64).to_be_bytes());
            mac.update(bytes);
        };
        put(file.format.as_bytes());
        put(&file.version.to_be_bytes());
        put(file.key_id.as_bytes());
        put(&(file.entries.len() as u64).to_be_bytes());
        for (name, entry) in &file.entries {
            put(name.as_bytes());
            put(entry.nonce.as_bytes());
            put(entry.ciphertext.as_bytes());
        }
        mac
    }

    /// Seals version `version` of `name` under a fresh random nonce.
    pub fn seal(&self, name: &str, version: u64, plaintext: &[u8]) -> Result<SealedEntry> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = entry_aad(name, Some(version));
        let ciphertext = self
            .cipher()
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| Error::internal("entry encryption failed"))?;
        Ok(SealedEntry {
            nonce: b64().encode(nonce),
            ciphertext: b64().encode(ciphertext),
        })
    }

    /// Opens version `version` of `name` into a zeroizing buffer.
    pub fn open(
        &self,
        name: &str,
        version: u64,
        sealed: &SealedEntry,
    ) -> Result<Zeroizing<Vec<u8>>> {
        self.open_with(name, &entry_aad(name, Some(version)), sealed)
    }

    /// Opens a version-1 entry.
    pub fn open_v1(&self, name: &str, sealed: &SealedEntry) -> Result<Zeroizing<Vec<u8>>> {
        self.open_with(name, &entry_aad(name, None), sealed)
    }

    fn open_with(
        &self,
        name: &str,
        aad: &[u8],
        sealed: &SealedEntry,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let corrupt = || integrity(format!("entry '{name}' is corrupt"));
        let nonce = b64().decode(&sealed.nonce).map_err(|_| corrupt())?;
        if nonce.len() != NONCE_LEN {
            return Err(corrupt());
        }
        let ciphertext = b64().decode(&sealed.ciphertext).map_err(|_| corrupt())?;
        self.cipher()
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| corrupt())
    }

    /// Sets the header fields and `mac` for the current content.
    pub fn finish(&self, file: &mut StoreFile) -> Result<()> {
        file.format = FORMAT.to_string();
        file.version = VERSION;
        file.key_id = self.key_id.clone();
        file.mac = b64().encode(self.mac(file)?.finalize().into_bytes());
        Ok(())
    }

    /// Checks the key id (`wrong_key`), the MAC (`integrity`) and the
    /// entries' invariants.
    pub fn verify(&self, file: &StoreFile) -> Result<()> {
        self.check_key_id(&file.key_id)?;
        let mac = decode_mac(&file.mac)?;
        self.mac(file)?
            .verify_slice(&mac)
            .map_err(|_| integrity("the store's MAC does not verify: entries or metadata were added, removed or modified"))?;
        for (name, e) in &file.entries {
            let bad = || integrity(format!("entry '{name}' has inconsistent versions"));
            if e.versions.values().any(|v| {
                v.destroyed != (v.nonce.is_none() && v.ciphertext.is_none())
                    || v.nonce.is_some() != v.ciphertext.is_some()
            }) || e
                .versions
                .keys()
                .next_back()
                .is_some_and(|&v| v > e.current_version)
                || e.versions
                    .keys()
                    .next()
                    .is_some_and(|&v| v < e.oldest_version)
            {
                return Err(bad());
            }
        }
        Ok(())
    }

    /// Checks a version-1 file's key id and MAC.
    pub fn verify_v1(&self, file: &StoreFileV1) -> Result<()> {
        self.check_key_id(&file.key_id)?;
        let mac = decode_mac(&file.mac)?;
        self.mac_v1(file)
            .verify_slice(&mac)
            .map_err(|_| integrity("the store's MAC does not verify: entries were added, removed, reordered or modified"))
    }

    fn check_key_id(&self, key_id: &str) -> Result<()> {
        if constant_time_eq(key_id.as_bytes(), self.key_id.as_bytes()) {
            return Ok(());
        }
        Err(Error::new(
            ErrorCode::WrongKey,
            "the store key does not match this store (its key id differs)",
        )
        .with_hint("check SECREF_KEY / the key file: this store was created with another key"))
    }
}

fn decode_mac(mac: &str) -> Result<Vec<u8>> {
    b64()
        .decode(mac)
        .map_err(|_| integrity("the store's MAC is malformed"))
}

/// The AEAD associated data of a value: format, file version, entry name and
/// (version 2) the entry's version number.
fn entry_aad(name: &str, version: Option<u64>) -> Vec<u8> {
    let mut aad = Vec::with_capacity(FORMAT.len() + name.len() + 24);
    aad.extend_from_slice(FORMAT.as_bytes());
    aad.push(0);
    let file_version = if version.is_some() {
        VERSION
    } else {
        VERSION_1
    };
    aad.extend_from_slice(&file_version.to_be_bytes());
    aad.push(0);
    aad.extend_from_slice(name.as_bytes());
    if let Some(v) = version {
        aad.push(0);
        aad.extend_from_slice(&v.to_be_bytes());
    }
    aad
}

fn b64() -> &'static base64::engine::GeneralPurpose {
    &base64::engine::general_purpose::STANDARD
}

pub(crate) fn integrity(msg: impl Into<String>) -> Error {
    Error::new(ErrorCode::Integrity, msg.into())
        .with_hint("the store file is corrupt or was tampered with; restore it from version control or a backup")
}

/// Parses file bytes of any known version. A malformation is `integrity`
/// (serde_json's messages give positions only); a version this code does
/// not know is `unsupported`.
pub(crate) fn parse(bytes: &[u8]) -> Result<Parsed> {
    let malformed = |e: serde_json::Error| {
        integrity(format!(
            "the store file is not a valid secref store (line {}, column {})",
            e.line(),
            e.column()
        ))
    };
    let header: Header = serde_json::from_slice(bytes).map_err(malformed)?;
    if header.format != FORMAT {
        return Err(integrity("the file is not a secref store"));
    }
    match header.version {
        VERSION_1 => serde_json::from_slice(bytes).map(Parsed::V1).map_err(malformed),
        VERSION => serde_json::from_slice(bytes).map(Parsed::V2).map_err(malformed),
        v => Err(Error::new(
            ErrorCode::Unsupported,
            format!(
                "store format version {v} is newer than this secref understands (it reads versions {VERSION_1} and {VERSION}); nothing was changed"
            ),
        )
        .with_hint("upgrade secref to read this store")),
    }
}

/// Serialises a finished file (pretty, sorted: diffs well in git).
pub(crate) fn render(file: &StoreFile) -> Result<Vec<u8>> {
    let mut out = serde_json::to_vec_pretty(file)
        .map_err(|_| Error::internal("cannot serialise the store"))?;
    out.push(b'\n');
    Ok(out)
}

/// The bytes every file [`render`]ed with MAC `mac` ends with. The fast
/// read path compares them with the file's end (see `Store::unchanged`).
pub(crate) fn mac_suffix(mac: &str) -> Vec<u8> {
    format!(",\n  \"mac\": \"{mac}\"\n}}\n").into_bytes()
}

/// An empty file, ready to be finished.
pub(crate) fn empty() -> StoreFile {
    StoreFile {
        format: FORMAT.to_string(),
        version: VERSION,
        key_id: String::new(),
        generation: 0,
        max_versions: DEFAULT_MAX_VERSIONS,
        cas_required: false,
        entries: BTreeMap::new(),
        mac: String::new(),
    }
}
