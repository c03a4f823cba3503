//! A provider that answers every reference of the `vault` family with one
//! fixed value, for tests of what sits around providers (audit, metrics,
//! policy) rather than of a backend.

use async_trait::async_trait;
use secref::provider::{BatchResult, Provider, Resolved};
use secref::{Secret, SecretRef};

/// Answers every `openbao+kv2://…` / `hashicorp+kv2://…` read with `value`
/// (and `version`, if set). Its name is `fixed`.
#[derive(Debug, Clone)]
pub struct FixedProvider {
    value: &'static str,
    version: Option<&'static str>,
}

impl FixedProvider {
    /// Answers `value` to every read.
    pub fn new(value: &'static str) -> FixedProvider {
        FixedProvider {
            value,
            version: None,
        }
    }

    /// Also reports `version` with each value.
    pub fn with_version(mut self, version: &'static str) -> FixedProvider {
        self.version = Some(version);
        self
    }
}

#[async_trait]
impl Provider for FixedProvider {
    fn name(&self) -> &str {
        "fixed"
    }

    fn families(&self) -> &[&'static str] {
        &["vault"]
    }

    async fn resolve_many(&self, refs: &[SecretRef]) -> BatchResult<Resolved> {
        Ok(refs
            .iter()
            .map(|_| {
                let r = Resolved::new(Secret::from(self.value));
                Ok(match self.version {
                    Some(v) => r.with_version(v),
                    None => r,
                })
            })
            .collect())
    }
}
