//! Test doubles for backends that cannot run here, each proven faithful by
//! running the backend's own Python SDK against it (see `tests/python/`),
//! plus helpers shared by secref's test suites.
//!
//! Every double binds 127.0.0.1 only.

pub mod aws;
pub mod capture;
pub mod cli;
pub mod coze;
pub mod fault;
pub mod fixed;
pub mod infisical;
pub mod kafka;
pub mod redis;
pub mod secflow_files;
pub mod vault_seed;
