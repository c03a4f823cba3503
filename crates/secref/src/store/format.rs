//! The store file format and its cryptography.
//!
//! ```json
//! {
//!   "format": "secref-store",
//!   "version": 1,
//!   "key_id": "<16 hex chars>",
//!   "entries": {
//!     "app/db": { "nonce": "<base64, 24 bytes>", "ciphertext": "<base64>" }
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
//! * Each entry is sealed with XChaCha20-Poly1305 under a fresh random
//!   192-bit nonce, with the format, version and entry name as associated
//!   data, so a ciphertext cannot be moved to another name.
//! * `mac` is HMAC-SHA256 over a length-prefixed canonical listing of the
//!   format, version, key id and every entry (name, nonce, ciphertext, in
//!   name order), so adding, deleting, swapping or replaying single entries is
//!   detected. HMAC rather than an AEAD over an empty plaintext: it is a
//!   deterministic PRF made for exactly this, needs no nonce of its own, and
//!   verifies in constant time.
//! * Entry names (`app/db`) are visible, like in sops or fnox; values and
//!   field names are not. Rolling the whole file back to an older, validly
//!   MAC-ed version is not detected (git history is the audit trail).

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
/// The only version this code writes and reads.
pub(crate) const VERSION: u32 = 1;

const NONCE_LEN: usize = 24;
const HKDF_SALT: &[u8] = b"secref-store";
const LABEL_ENTRY_KEY: &[u8] = b"secref-store v1 entry key";
const LABEL_MAC_KEY: &[u8] = b"secref-store v1 mac key";
const LABEL_KEY_ID: &[u8] = b"secref-store v1 key id";

/// The file as stored: everything public except the ciphertexts' contents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoreFile {
    pub format: String,
    pub version: u32,
    pub key_id: String,
    pub entries: BTreeMap<String, SealedEntry>,
    pub mac: String,
}

/// One encrypted entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SealedEntry {
    pub nonce: String,
    pub ciphertext: String,
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

    fn mac(&self, file: &StoreFile) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.mac_key.expose_bytes())
            .expect("HMAC takes any key length");
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

    /// Seals a plaintext for `name` under a fresh random nonce.
    pub fn seal(&self, name: &str, plaintext: &[u8]) -> Result<SealedEntry> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = entry_aad(name);
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

    /// Opens `name`'s sealed entry into a zeroizing buffer.
    pub fn open(&self, name: &str, sealed: &SealedEntry) -> Result<Zeroizing<Vec<u8>>> {
        let corrupt = || integrity(format!("entry '{name}' is corrupt"));
        let nonce = b64().decode(&sealed.nonce).map_err(|_| corrupt())?;
        if nonce.len() != NONCE_LEN {
            return Err(corrupt());
        }
        let ciphertext = b64().decode(&sealed.ciphertext).map_err(|_| corrupt())?;
        let aad = entry_aad(name);
        self.cipher()
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| corrupt())
    }

    /// Sets `file.key_id` and `file.mac` for the current entries.
    pub fn finish(&self, file: &mut StoreFile) {
        file.format = FORMAT.to_string();
        file.version = VERSION;
        file.key_id = self.key_id.clone();
        file.mac = b64().encode(self.mac(file).finalize().into_bytes());
    }

    /// Checks, in this order: the format marker, the version, the key id
    /// (`wrong_key`) and the MAC (`integrity`).
    pub fn verify(&self, file: &StoreFile) -> Result<()> {
        if file.format != FORMAT {
            return Err(integrity("the file is not a secref store"));
        }
        if file.version != VERSION {
            return Err(Error::new(
                ErrorCode::Unsupported,
                format!(
                    "store format version {} is not supported (this secref reads version {VERSION})",
                    file.version
                ),
            )
            .with_hint("upgrade secref"));
        }
        if !constant_time_eq(file.key_id.as_bytes(), self.key_id.as_bytes()) {
            return Err(Error::new(
                ErrorCode::WrongKey,
                "the store key does not match this store (its key id differs)",
            )
            .with_hint(
                "check SECREF_KEY / the key file: this store was created with another key",
            ));
        }
        let mac = b64()
            .decode(&file.mac)
            .map_err(|_| integrity("the store's MAC is malformed"))?;
        self.mac(file)
            .verify_slice(&mac)
            .map_err(|_| integrity("the store's MAC does not verify: entries were added, removed, reordered or modified"))
    }
}

/// The AEAD associated data of an entry: format, version and name.
fn entry_aad(name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(FORMAT.len() + name.len() + 8);
    aad.extend_from_slice(FORMAT.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&VERSION.to_be_bytes());
    aad.push(0);
    aad.extend_from_slice(name.as_bytes());
    aad
}

fn b64() -> &'static base64::engine::GeneralPurpose {
    &base64::engine::general_purpose::STANDARD
}

pub(crate) fn integrity(msg: impl Into<String>) -> Error {
    Error::new(ErrorCode::Integrity, msg.into())
        .with_hint("the store file is corrupt or was tampered with; restore it from version control or a backup")
}

/// Parses file bytes. Any malformation is `integrity`; serde_json's messages
/// give positions only.
pub(crate) fn parse(bytes: &[u8]) -> Result<StoreFile> {
    serde_json::from_slice(bytes).map_err(|e| {
        integrity(format!(
            "the store file is not a valid secref store (line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}

/// Serialises a finished file (pretty, sorted: diffs well in git).
pub(crate) fn render(file: &StoreFile) -> Result<Vec<u8>> {
    let mut out = serde_json::to_vec_pretty(file)
        .map_err(|_| Error::internal("cannot serialise the store"))?;
    out.push(b'\n');
    Ok(out)
}

/// An empty file, ready to be finished.
pub(crate) fn empty() -> StoreFile {
    StoreFile {
        format: FORMAT.to_string(),
        version: VERSION,
        key_id: String::new(),
        entries: BTreeMap::new(),
        mac: String::new(),
    }
}
