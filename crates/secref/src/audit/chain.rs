//! Tamper-evident audit files: every JSONL record is chained to the one
//! before it.
//!
//! A chained record is the event's JSON object with three more fields at
//! the end: `seq` (1, 2, 3 … across rotated files), `prev` (the previous
//! record's `mac`; 64 zeros before the first record) and `mac`:
//! HMAC-SHA256 under the audit chain key over the record's bytes up to (not
//! including) `,"mac":`, hex. Editing, removing, reordering or cutting a
//! record therefore breaks the chain at that record, and without the key
//! nobody can forge a chain that verifies. The key is the audit's own (see
//! [`ChainKey`]), never the store key.
//!
//! Rotation by size renames `audit.jsonl` to `audit.jsonl.000001` (then
//! `.000002` …) and goes on in a fresh `audit.jsonl` whose first record's
//! `prev` is the old file's last `mac`: the files verify as one chain in
//! the order a shell glob lists them (`audit.jsonl.* audit.jsonl`).
//!
//! What a chain cannot show on its own: records cut from the *end* of the
//! newest file (compare the last `seq` with `secref_audit_events_*`).

use std::fmt;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Env;
use crate::error::{Error, ErrorCode, Result};
use crate::secret::Secret;

/// `prev` of the first record of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Where the MAC starts in a record.
const MAC_FIELD: &str = ",\"mac\":\"";

/// The key that chains audit records (at least 16 bytes). Kept apart from
/// the store key: who may verify the audit trail need not read secrets.
#[derive(Clone)]
pub struct ChainKey(Secret);

impl fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChainKey([REDACTED])")
    }
}

impl ChainKey {
    /// A key from its bytes (surrounding whitespace trimmed).
    pub fn new(raw: &[u8]) -> Result<ChainKey> {
        let trimmed = raw.trim_ascii();
        if trimmed.len() < 16 {
            return Err(Error::config(
                "the audit chain key must be at least 16 bytes",
            ));
        }
        Ok(ChainKey(Secret::from(trimmed.to_vec())))
    }

    /// The key in environment variable `var`.
    pub fn from_env(env: &Env, var: &str) -> Result<ChainKey> {
        let raw = env
            .get(var)
            .ok_or_else(|| Error::config(format!("the audit chain key: {var} is not set")))?;
        ChainKey::new(raw.as_bytes())
    }

    /// The key in an owner-only file (see [`crate::credfile`]).
    pub fn from_file(path: &Path) -> Result<ChainKey> {
        let bytes =
            crate::credfile::read_private_file(path, "audit chain key file")?.ok_or_else(|| {
                Error::config(format!(
                    "cannot read audit chain key file {}: not found",
                    path.display()
                ))
            })?;
        ChainKey::new(&bytes)
    }

    fn mac(&self, body: &[u8]) -> Hmac<Sha256> {
        let mut m = Hmac::<Sha256>::new_from_slice(self.0.expose_bytes())
            .expect("HMAC takes any key length");
        m.update(body);
        m
    }
}

/// Where the chain stands: the last record's `seq` and `mac`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Link {
    pub seq: u64,
    pub mac: String,
}

impl Link {
    pub fn genesis() -> Link {
        Link {
            seq: 0,
            mac: GENESIS.into(),
        }
    }
}

/// Appends `event_json` (one JSON object) as the record after `link` to
/// `out`, newline included; returns the new link.
pub(crate) fn seal(key: &ChainKey, link: &Link, event_json: &[u8], out: &mut Vec<u8>) -> Link {
    let start = out.len();
    // The object without its closing brace, then the chain fields.
    out.extend_from_slice(&event_json[..event_json.len() - 1]);
    let seq = link.seq + 1;
    out.extend_from_slice(format!(",\"seq\":{seq},\"prev\":\"{}\"", link.mac).as_bytes());
    let mac = hex(&key.mac(&out[start..]).finalize().into_bytes());
    out.extend_from_slice(format!("{MAC_FIELD}{mac}\"}}\n").as_bytes());
    Link { seq, mac }
}

/// Checks one record's MAC and reads its `seq` and `prev`.
fn open(key: &ChainKey, line: &[u8]) -> std::result::Result<(u64, String, String), &'static str> {
    let text = std::str::from_utf8(line).map_err(|_| "not UTF-8")?;
    let at = text.rfind(MAC_FIELD).ok_or("no mac field")?;
    let mac_hex = text[at + MAC_FIELD.len()..]
        .strip_suffix("\"}")
        .ok_or("the mac field is not last")?;
    let mac = unhex(mac_hex).ok_or("the mac is not hex")?;
    key.mac(&line[..at])
        .verify_slice(&mac)
        .map_err(|_| "the MAC does not match (the record was altered)")?;
    let v: serde_json::Value = serde_json::from_str(text).map_err(|_| "not JSON")?;
    let seq = v.get("seq").and_then(|s| s.as_u64()).ok_or("no seq")?;
    let prev = v
        .get("prev")
        .and_then(|s| s.as_str())
        .ok_or("no prev")?
        .to_owned();
    Ok((seq, prev, mac_hex.to_owned()))
}

/// The last record of a chained file, if it has one that verifies.
pub(crate) fn last_link(key: &ChainKey, path: &Path) -> Result<Option<Link>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::new(
                ErrorCode::Io,
                format!("audit file {}: {}", path.display(), e.kind()),
            ))
        }
    };
    let Some(line) = bytes.split(|b| *b == b'\n').rev().find(|l| !l.is_empty()) else {
        return Ok(None);
    };
    let (seq, _, mac) = open(key, line).map_err(|why| {
        Error::config(format!(
            "audit file {}: its last record does not verify ({why}); \
             run `secref audit verify` and move the file aside",
            path.display()
        ))
    })?;
    Ok(Some(Link { seq, mac }))
}

/// The rotated files of `path` (`path.000001` …), oldest first.
pub(crate) fn rotated(path: &Path) -> Vec<(u32, PathBuf)> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let mut out: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let f = e.file_name();
            let n = f.to_str()?.strip_prefix(name)?.strip_prefix('.')?;
            (n.len() == 6).then_some(())?;
            Some((n.parse().ok()?, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// The result of [`verify`]: a whole, unbroken chain.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verified {
    /// Records checked.
    pub records: u64,
    /// `seq` of the first record (1 unless the first file continues an
    /// older, rotated one).
    pub first_seq: u64,
    /// `seq` of the last record.
    pub last_seq: u64,
}

/// Where and how a chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Broken {
    /// The file.
    pub file: PathBuf,
    /// The line (1-based).
    pub line: usize,
    /// The `seq` the record should have had.
    pub expected_seq: u64,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: record {}: {}",
            self.file.display(),
            self.line,
            self.expected_seq,
            self.reason
        )
    }
}

/// Verifies chained audit files, oldest first, as one chain; reports the
/// first broken, missing, reordered or truncated record. A first file that
/// starts past `seq` 1 is taken to continue a rotated file not given.
pub fn verify(key: &ChainKey, files: &[PathBuf]) -> Result<std::result::Result<Verified, Broken>> {
    let mut expected: Option<Link> = None;
    let mut first_seq = 0;
    let mut records = 0u64;
    for file in files {
        let bytes = std::fs::read(file).map_err(|e| {
            Error::new(
                ErrorCode::Io,
                format!("cannot read {}: {}", file.display(), e.kind()),
            )
        })?;
        let mut lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
        // The part after the last newline: empty unless the file was cut.
        let tail = lines.pop().unwrap_or_default();
        let next_seq = |e: &Option<Link>| e.as_ref().map_or(1, |l| l.seq + 1);
        for (i, line) in lines.iter().enumerate() {
            let broken = |reason: String| Broken {
                file: file.clone(),
                line: i + 1,
                expected_seq: next_seq(&expected),
                reason,
            };
            let (seq, prev, mac) = match open(key, line) {
                Ok(r) => r,
                Err(why) => return Ok(Err(broken(why.into()))),
            };
            match &expected {
                Some(link) if seq > link.seq + 1 => {
                    let want = link.seq + 1;
                    // Later in this file: moved, not gone.
                    let later = lines[i + 1..]
                        .iter()
                        .position(|l| open(key, l).is_ok_and(|(s, _, _)| s == want));
                    return Ok(Err(broken(match later {
                        Some(j) => format!(
                            "out of order: record {want} comes later, at line {}",
                            i + j + 2
                        ),
                        None => format!("records {want}..{} are missing", seq - 1),
                    })));
                }
                Some(link) if seq <= link.seq => {
                    return Ok(Err(broken(format!(
                        "record {seq} is out of order (reordered or repeated)"
                    ))))
                }
                Some(link) if prev != link.mac => {
                    return Ok(Err(broken(
                        "prev does not match the record before it (chain broken)".into(),
                    )))
                }
                None if seq == 1 && prev != GENESIS => {
                    return Ok(Err(broken(
                        "the first record does not start a chain".into(),
                    )))
                }
                None => first_seq = seq,
                Some(_) => {}
            }
            records += 1;
            expected = Some(Link { seq, mac });
        }
        if !tail.is_empty() {
            return Ok(Err(Broken {
                file: file.clone(),
                line: lines.len() + 1,
                expected_seq: next_seq(&expected),
                reason: "the record is truncated (no end of line)".into(),
            }));
        }
    }
    Ok(Ok(Verified {
        records,
        first_seq,
        last_seq: expected.map_or(0, |l| l.seq),
    }))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(key: &ChainKey, n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut link = Link::genesis();
        for i in 0..n {
            link = seal(key, &link, format!("{{\"n\":{i}}}").as_bytes(), &mut out);
        }
        out
    }

    #[test]
    fn a_chain_verifies_and_an_edit_is_found_at_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let key = ChainKey::new(b"0123456789abcdef0123").unwrap();
        let path = dir.path().join("a.jsonl");
        std::fs::write(&path, chain(&key, 5)).unwrap();
        let ok = verify(&key, std::slice::from_ref(&path)).unwrap().unwrap();
        assert_eq!((ok.records, ok.first_seq, ok.last_seq), (5, 1, 5));
        let text = String::from_utf8(chain(&key, 5)).unwrap();
        std::fs::write(&path, text.replacen("\"n\":2", "\"n\":9", 1)).unwrap();
        let b = verify(&key, std::slice::from_ref(&path))
            .unwrap()
            .unwrap_err();
        assert_eq!((b.line, b.expected_seq), (3, 3));
        let other = ChainKey::new(b"another key, 16+ bytes").unwrap();
        std::fs::write(&path, text).unwrap();
        assert_eq!(verify(&other, &[path]).unwrap().unwrap_err().line, 1);
    }
}
