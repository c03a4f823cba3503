//! The providers: one file (or folder) each, one [`Provider`](crate::Provider)
//! implementation and one [`ProviderSpec`] (`SPEC`) each, registered by one
//! line in the [`register!`] list below, which declares the module and adds
//! its `SPEC` to [`SPECS`]. See CONTRIBUTING.md, "Adding a provider".

use crate::registry::ProviderSpec;

mod uri;

/// Declares each provider module and lists its `SPEC` in [`SPECS`], under the
/// same `#[cfg]`, so one line registers a provider.
macro_rules! register {
    ($( $(#[cfg($cfg:meta)])? $vis:vis mod $name:ident; )*) => {
        $( $(#[cfg($cfg)])? $vis mod $name; )*

        /// Every provider compiled into this build, in routing order, then
        /// the grammar-only Canonical Secret URI schemes.
        pub static SPECS: &[ProviderSpec] = &[
            $( $(#[cfg($cfg)])? $name::SPEC, )*
            uri::DB,
            uri::BOOTSTRAP,
            uri::YAML,
        ];
    };
}

// One line per provider.
register! {
    pub mod local;
    mod env;
    mod file;
    #[cfg(feature = "secflow")] pub mod secflow;
    #[cfg(feature = "vault")] pub mod vault;
    #[cfg(feature = "infisical")] pub mod infisical;
    #[cfg(feature = "coze")] pub mod coze;
}

pub use env::EnvProvider;
pub use file::FileProvider;
pub use local::LocalProvider;
