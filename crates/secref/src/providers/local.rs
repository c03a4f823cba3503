//! `local://path[#field]`: the embedded encrypted store.
//!
//! (Being implemented: see `crate::store` for the file format.)

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::{Error, ErrorCode};
use crate::provider::{BatchResult, Provider, Resolved};
use crate::reference::SecretRef;
use crate::store::Store;

/// Serves `local://` references from a [`Store`].
#[derive(Debug, Clone)]
pub struct LocalProvider {
    store: Arc<Store>,
}

impl LocalProvider {
    /// A provider over an opened store.
    pub fn new(store: Store) -> Self {
        LocalProvider {
            store: Arc::new(store),
        }
    }
}

#[async_trait]
impl Provider for LocalProvider {
    fn name(&self) -> &str {
        "local"
    }

    fn families(&self) -> &[&'static str] {
        &["local"]
    }

    async fn resolve_many(&self, refs: &[SecretRef]) -> BatchResult<Resolved> {
        let _ = &self.store;
        Err(
            Error::new(ErrorCode::Unsupported, "local store not implemented yet").with_reference(
                refs.first()
                    .map(|r| r.to_canonical().to_string())
                    .unwrap_or_default(),
            ),
        )
    }
}
