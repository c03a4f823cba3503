//! # secref
//!
//! One reference grammar, one leak-proof [`Secret`] type and one
//! [`Resolver`] (cache, single-flight, retries, tracing) over pluggable
//! [`Provider`]s: the embedded encrypted store, the environment, files,
//! SecFlow, Vault / OpenBao KV, and more.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use secref::{Resolver, SecretRef};
//! use secref::providers::EnvProvider;
//!
//! std::env::set_var("APP_DB_PASSWORD", "s3cr3t");
//! let resolver = Resolver::builder().provider(EnvProvider::new()).build()?;
//! let password = resolver.resolve("env://APP_DB_PASSWORD").await?;
//! assert_eq!(format!("{password:?}"), "Secret([REDACTED])");
//! assert_eq!(password.as_text()?, "s3cr3t");
//! # Ok::<(), secref::Error>(()) }).unwrap();
//! ```
//!
//! Errors carry a stable [`ErrorCode`]; the table is in the [`error`] module.

#![warn(missing_docs)]

pub mod audit;
pub mod auth;
#[cfg(feature = "blocking")]
pub mod blocking;
mod cache;
pub mod config;
pub mod credentials;
pub mod credfile;
pub mod error;
pub mod flight;
#[doc(hidden)]
pub mod fuzz;
pub mod http;
pub mod metrics;
pub mod policy;
pub mod provider;
pub mod providers;
pub mod reference;
pub mod registry;
mod resolver;
pub mod retry;
mod secret;
mod setup;
pub mod state;
pub mod store;

pub use cache::CacheConfig;
pub use config::Config;
pub use error::{Error, ErrorCode, Result};
pub use provider::{Provider, Resolved};
pub use reference::{RefKind, SecretRef};
pub use resolver::{request, IntoSecretRef, Partial, Resolver, ResolverBuilder};
pub use retry::RetryPolicy;
pub use secret::{constant_time_eq, Secret};
