//! The spill file: audit events the sink could not take, kept in order on
//! local disk (0600, JSON lines) until the sink is back.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{to_lines, AuditEvent};
use crate::error::{Error, ErrorCode, Result};

/// An append-only file of events waiting for the sink.
#[derive(Debug)]
pub(crate) struct Spill {
    path: PathBuf,
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::new(
        ErrorCode::Io,
        format!("audit spill file {}: {}", path.display(), e.kind()),
    )
}

impl Spill {
    pub fn new(path: PathBuf) -> Spill {
        Spill { path }
    }

    /// Appends events (created 0600 on first use).
    pub fn append(&self, events: &[AuditEvent]) -> Result<()> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io(&self.path, e))?;
        }
        let mut opts = std::fs::OpenOptions::new();
        opts.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&self.path).map_err(|e| io(&self.path, e))?;
        f.write_all(&to_lines(events)?)
            .and_then(|()| f.sync_data())
            .map_err(|e| io(&self.path, e))
    }

    /// Whether events are waiting.
    pub fn pending(&self) -> bool {
        std::fs::metadata(&self.path).is_ok_and(|m| m.len() > 0)
    }

    /// The waiting events, in order. A line that does not parse (a write
    /// cut by a crash) is skipped and logged.
    pub fn read(&self) -> Result<Vec<AuditEvent>> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&self.path, e)),
        };
        let mut out = Vec::new();
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            match serde_json::from_slice(line) {
                Ok(e) => out.push(e),
                Err(_) => tracing::warn!("skipping an unreadable line of the audit spill file"),
            }
        }
        Ok(out)
    }

    /// Replaces the file's content with `rest` (what is still waiting),
    /// atomically.
    pub fn keep_only(&self, rest: &[AuditEvent]) -> Result<()> {
        if rest.is_empty() {
            return match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&self.path, e)),
                _ => Ok(()),
            };
        }
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| io(&self.path, e))?;
        tmp.write_all(&to_lines(rest)?)
            .and_then(|()| tmp.as_file().sync_data())
            .map_err(|e| io(&self.path, e))?;
        tmp.persist(&self.path)
            .map_err(|e| io(&self.path, e.error))?;
        Ok(())
    }
}
