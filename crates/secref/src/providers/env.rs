//! `env://VAR`: the process environment.

use async_trait::async_trait;

use crate::error::{Error, ErrorCode};
use crate::provider::{BatchResult, Metadata, Provider, Resolved, Validation};
use crate::reference::{RefKind, SecretRef};
use crate::secret::Secret;

/// Reads `env://VAR` references from the process environment.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use secref::{Provider, SecretRef, providers::EnvProvider};
/// std::env::set_var("ENV_PROVIDER_DOC", "v");
/// let r = SecretRef::parse("env://ENV_PROVIDER_DOC").unwrap();
/// let out = EnvProvider::new().resolve_many(&[r]).await.unwrap();
/// assert_eq!(out[0].as_ref().unwrap().secret.expose_bytes(), b"v");
/// # });
/// ```
#[derive(Debug, Default, Clone)]
pub struct EnvProvider {
    _private: (),
}

impl EnvProvider {
    /// A provider over the live process environment.
    pub fn new() -> Self {
        EnvProvider { _private: () }
    }

    fn read(r: &SecretRef) -> crate::Result<Secret> {
        let RefKind::Env { var } = r.kind() else {
            return Err(Error::internal("env provider got a non-env reference"));
        };
        match std::env::var_os(var) {
            Some(v) => Ok(Secret::new(v.into_encoded_bytes())),
            None => Err(Error::new(
                ErrorCode::NotFound,
                format!("environment variable {var} is not set"),
            )),
        }
    }
}

#[async_trait]
impl Provider for EnvProvider {
    fn name(&self) -> &str {
        "env"
    }

    fn families(&self) -> &[&'static str] {
        &["env"]
    }

    async fn resolve_many(&self, refs: &[SecretRef]) -> BatchResult<Resolved> {
        Ok(refs
            .iter()
            .map(|r| Self::read(r).map(Resolved::new))
            .collect())
    }

    async fn validate(&self, refs: &[SecretRef]) -> BatchResult<Validation> {
        Ok(refs
            .iter()
            .map(|r| Ok(Validation::existence(Self::read(r).is_ok())))
            .collect())
    }

    async fn metadata(&self, refs: &[SecretRef]) -> BatchResult<Metadata> {
        Ok(refs
            .iter()
            .map(|r| {
                Self::read(r).map(|_| Metadata {
                    reference: r.to_canonical().to_string(),
                    ..Metadata::default()
                })
            })
            .collect())
    }
}

/// `env://<VAR>`: the process environment; host-local.
pub(crate) const SPEC: crate::registry::ProviderSpec = crate::registry::ProviderSpec {
    name: "env",
    schemes: &["env"],
    feature: None,
    host_local: true,
    config_section: None,
    env_vars: &[],
    credential_env_vars: &[],
    capabilities: crate::provider::Capabilities::NONE,
    parse: |input| crate::reference::parse_env(input.rest),
    parts: |r| match r.kind() {
        RefKind::Env { var } => vec![("var", var.as_str().into())],
        _ => Vec::new(),
    },
    credentials: crate::credentials::none,
    build: |_| crate::registry::always(EnvProvider::new()),
};
