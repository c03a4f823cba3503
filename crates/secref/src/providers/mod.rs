//! The providers: one file (or folder) each, one [`Provider`](crate::Provider)
//! implementation and one [`ProviderSpec`] (`SPEC`) each, listed once in
//! [`SPECS`]. See CONTRIBUTING.md, "Adding a provider".

use crate::registry::ProviderSpec;

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "coze")]
pub mod coze;
mod env;
mod file;
#[cfg(feature = "infisical")]
pub mod infisical;
pub mod local;
#[cfg(feature = "secflow")]
pub mod secflow;
mod uri;
#[cfg(feature = "vault")]
pub mod vault;

pub use env::EnvProvider;
pub use file::FileProvider;
pub use local::LocalProvider;

/// Every provider compiled into this build, in routing order. Adding a
/// backend adds exactly one line here.
pub static SPECS: &[ProviderSpec] = &[
    local::SPEC,
    env::SPEC,
    file::SPEC,
    #[cfg(feature = "secflow")]
    secflow::SPEC,
    #[cfg(feature = "vault")]
    vault::SPEC,
    #[cfg(feature = "infisical")]
    infisical::SPEC,
    #[cfg(feature = "coze")]
    coze::SPEC,
    #[cfg(feature = "aws")]
    aws::sm::SPEC,
    #[cfg(feature = "aws")]
    aws::ssm::SPEC,
    uri::DB,
    uri::BOOTSTRAP,
    uri::YAML,
];
