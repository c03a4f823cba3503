//! `file://path[#pointer]`: a whole file, or one value inside a JSON file.

use async_trait::async_trait;

use crate::error::{Error, ErrorCode, Result};
use crate::provider::{BatchResult, Provider, Resolved};
use crate::reference::{RefKind, SecretRef};
use crate::secret::Secret;

/// Reads `file://` references. With a `#/json/pointer` (RFC 6901) or
/// `#dotted.path`, the file is parsed as JSON and one value is picked: a
/// string is returned as its text, anything else as compact JSON.
#[derive(Debug, Default, Clone)]
pub struct FileProvider {
    _private: (),
}

impl FileProvider {
    /// A provider reading the local file system.
    pub fn new() -> Self {
        FileProvider { _private: () }
    }
}

fn read(r: &SecretRef) -> Result<Secret> {
    let RefKind::File { path, pointer } = r.kind() else {
        return Err(Error::internal("file provider got a non-file reference"));
    };
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Error::new(ErrorCode::NotFound, format!("file {path} does not exist"))
        }
        std::io::ErrorKind::PermissionDenied => Error::new(
            ErrorCode::PermissionDenied,
            format!("file {path} cannot be read: permission denied"),
        ),
        k => Error::new(ErrorCode::Io, format!("file {path} cannot be read: {k}")),
    })?;
    let bytes = zeroize::Zeroizing::new(bytes);
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
        pointer.clone()
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
        tokio::task::spawn_blocking(move || {
            Ok(refs.iter().map(|r| read(r).map(Resolved::new)).collect())
        })
        .await
        .map_err(|_| Error::internal("file read task failed"))?
    }
}
