//! The plaintext inside one sealed entry: a single value, or a map of fields.
//!
//! Encoding (inside the ciphertext only): a tag byte, then
//! * `0x00`: the value's bytes;
//! * `0x01`: for each field in name order, `u32` big-endian name length, the
//!   name, `u32` big-endian value length, the value.
//!
//! Every buffer holding plaintext is a `Zeroizing` one, allocated at its
//! final size so that no reallocation leaves a copy behind.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use super::format::integrity;
use crate::error::{Error, ErrorCode, Result};

const TAG_SINGLE: u8 = 0;
const TAG_FIELDS: u8 = 1;

/// A decrypted entry.
pub(crate) enum Plain {
    /// `local://app/token`
    Single(Zeroizing<Vec<u8>>),
    /// `local://app/db#password`, `local://app/db#user`, …
    Fields(BTreeMap<String, Zeroizing<Vec<u8>>>),
}

impl Plain {
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        match self {
            Plain::Single(v) => {
                let mut out = Zeroizing::new(Vec::with_capacity(1 + v.len()));
                out.push(TAG_SINGLE);
                out.extend_from_slice(v);
                out
            }
            Plain::Fields(fields) => {
                let size = 1 + fields
                    .iter()
                    .map(|(k, v)| 8 + k.len() + v.len())
                    .sum::<usize>();
                let mut out = Zeroizing::new(Vec::with_capacity(size));
                out.push(TAG_FIELDS);
                for (k, v) in fields {
                    out.extend_from_slice(&(k.len() as u32).to_be_bytes());
                    out.extend_from_slice(k.as_bytes());
                    out.extend_from_slice(&(v.len() as u32).to_be_bytes());
                    out.extend_from_slice(v);
                }
                out
            }
        }
    }

    /// Decodes an authenticated plaintext. A malformed one can only come from
    /// a bug or a foreign writer holding the key: `integrity`.
    pub fn decode(name: &str, bytes: &[u8]) -> Result<Plain> {
        let bad = || integrity(format!("entry '{name}' has a malformed payload"));
        let (&tag, mut rest) = bytes.split_first().ok_or_else(bad)?;
        match tag {
            TAG_SINGLE => Ok(Plain::Single(Zeroizing::new(rest.to_vec()))),
            TAG_FIELDS => {
                let mut fields = BTreeMap::new();
                while !rest.is_empty() {
                    let key = take(&mut rest).ok_or_else(bad)?;
                    let key = std::str::from_utf8(key).map_err(|_| bad())?.to_string();
                    let value = take(&mut rest).ok_or_else(bad)?;
                    fields.insert(key, Zeroizing::new(value.to_vec()));
                }
                Ok(Plain::Fields(fields))
            }
            _ => Err(bad()),
        }
    }

    /// The names of its fields (empty for a single value).
    pub fn field_names(&self) -> Vec<String> {
        match self {
            Plain::Single(_) => Vec::new(),
            Plain::Fields(f) => f.keys().cloned().collect(),
        }
    }

    /// The whole entry as one value: a single value as is; a field map as
    /// compact JSON (`{"password":"…","user":"…"}`), which needs every field
    /// to be UTF-8.
    pub fn whole_value(&self, name: &str) -> Result<Zeroizing<Vec<u8>>> {
        match self {
            Plain::Single(v) => Ok(Zeroizing::new(v.to_vec())),
            Plain::Fields(fields) => {
                // Worst case: every byte escaped as \u00XX, plus quotes, colon, comma.
                let size = 2 + fields
                    .iter()
                    .map(|(k, v)| 6 * (k.len() + v.len()) + 6)
                    .sum::<usize>();
                let mut out = Zeroizing::new(Vec::with_capacity(size));
                out.push(b'{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    let text = std::str::from_utf8(v).map_err(|_| {
                        Error::new(
                            ErrorCode::InvalidUtf8,
                            format!("field '{k}' of entry '{name}' is binary and cannot be shown as JSON"),
                        )
                        .with_hint(format!("read it alone: local://{name}#{k}"))
                    })?;
                    if i > 0 {
                        out.push(b',');
                    }
                    write_json_str(&mut out, k)?;
                    out.push(b':');
                    write_json_str(&mut out, text)?;
                }
                out.push(b'}');
                debug_assert!(out.len() <= size);
                Ok(out)
            }
        }
    }
}

fn write_json_str(out: &mut Vec<u8>, s: &str) -> Result<()> {
    serde_json::to_writer(out, s).map_err(|_| Error::internal("cannot render a field as JSON"))
}

/// Takes one `u32`-length-prefixed slice off the front of `rest`.
fn take<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (len, tail) = rest.split_first_chunk::<4>()?;
    let len = u32::from_be_bytes(*len) as usize;
    if tail.len() < len {
        return None;
    }
    let (value, tail) = tail.split_at(len);
    *rest = tail;
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_renders_json() {
        let mut fields = BTreeMap::new();
        fields.insert("user".to_string(), Zeroizing::new(b"admin".to_vec()));
        fields.insert("pw".to_string(), Zeroizing::new(b"a\"b\n\x01".to_vec()));
        let plain = Plain::Fields(fields);
        let back = Plain::decode("x", &plain.encode()).unwrap();
        assert_eq!(back.field_names(), ["pw", "user"]);
        let json = back.whole_value("x").unwrap();
        assert_eq!(
            std::str::from_utf8(&json).unwrap(),
            r#"{"pw":"a\"b\n\u0001","user":"admin"}"#
        );
        let single = Plain::Single(Zeroizing::new(vec![0, 255]));
        match Plain::decode("x", &single.encode()).unwrap() {
            Plain::Single(v) => assert_eq!(&v[..], &[0, 255]),
            Plain::Fields(_) => panic!("wrong kind"),
        }
    }

    #[test]
    fn malformed_payloads_are_integrity_errors() {
        for bad in [&[][..], &[2], &[1, 0, 0, 0, 5, b'a']] {
            let e = Plain::decode("x", bad).err().unwrap();
            assert_eq!(e.code(), ErrorCode::Integrity);
        }
    }
}
