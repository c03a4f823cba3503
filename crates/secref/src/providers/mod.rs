//! The providers: one file each, one [`Provider`](crate::Provider)
//! implementation each.

#[cfg(feature = "coze")]
pub mod coze;
mod env;
mod file;
#[cfg(feature = "infisical")]
pub mod infisical;
pub mod local;
#[cfg(feature = "secflow")]
pub mod secflow;
#[cfg(feature = "vault")]
pub mod vault;

pub use env::EnvProvider;
pub use file::FileProvider;
pub use local::LocalProvider;
