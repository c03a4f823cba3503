//! The providers: one file (or folder) each, one [`Provider`](crate::Provider)
//! implementation and one [`ProviderSpec`] (`SPEC`) each, registered by one
//! line in the [`register!`] list below, which declares the module and adds
//! its `SPEC` to [`SPECS`]. See CONTRIBUTING.md, "Adding a provider".

use crate::registry::ProviderSpec;

mod uri;

/// Declares each provider module and lists its `SPEC` in [`SPECS`], under the
/// same `#[cfg]`, so one line registers a provider. A folder holding several
/// providers that share code names their modules after `=>`
/// (`#[cfg(feature = "aws")] pub mod aws => sm, ssm;` lists `aws::sm::SPEC`
/// and `aws::ssm::SPEC`).
macro_rules! register {
    // Done: the declarations, then the list.
    (@munch [$($decl:tt)*] [$($spec:tt)*]) => {
        $($decl)*

        /// Every provider compiled into this build, in routing order, then
        /// the grammar-only Canonical Secret URI schemes.
        pub static SPECS: &[ProviderSpec] = &[
            $($spec)*
            uri::DB,
            uri::BOOTSTRAP,
            uri::YAML,
        ];
    };
    // A folder of several providers.
    (@munch [$($decl:tt)*] [$($spec:tt)*]
        #[cfg($cfg:meta)] $vis:vis mod $name:ident => $($sub:ident),+ ; $($rest:tt)*) => {
        register!(@munch
            [$($decl)* #[cfg($cfg)] $vis mod $name;]
            [$($spec)* $( #[cfg($cfg)] $name::$sub::SPEC, )+]
            $($rest)*);
    };
    // One provider.
    (@munch [$($decl:tt)*] [$($spec:tt)*]
        $(#[cfg($cfg:meta)])? $vis:vis mod $name:ident ; $($rest:tt)*) => {
        register!(@munch
            [$($decl)* $(#[cfg($cfg)])? $vis mod $name;]
            [$($spec)* $(#[cfg($cfg)])? $name::SPEC,]
            $($rest)*);
    };
    ($($lines:tt)*) => { register!(@munch [] [] $($lines)*); };
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
    #[cfg(feature = "aws")] pub mod aws => sm, ssm;
}

pub use env::EnvProvider;
pub use file::FileProvider;
pub use local::LocalProvider;
