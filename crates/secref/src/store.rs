//! The embedded encrypted store (file format, key handling, atomic writes).

use std::path::PathBuf;

/// An encrypted store file and its key.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
}

impl Store {
    /// The store's file path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}
