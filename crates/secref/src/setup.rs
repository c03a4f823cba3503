//! [`Resolver::from_config`]: the standard set of providers, built from a
//! [`Config`].

use std::sync::Arc;

use crate::config::Config;
use crate::error::Result;
use crate::providers::{EnvProvider, FileProvider, LocalProvider};
use crate::resolver::{Resolver, ResolverBuilder};
use crate::store::Store;

impl Resolver {
    /// A resolver with every provider `cfg` configures, using its cache
    /// settings (per provider via `[provider_cache.<name>]`) and retry policy.
    ///
    /// * `local://`: the store at [`Store::default_path`], opened now. If it
    ///   cannot be opened (no store yet, no key, wrong key, corrupt file),
    ///   `local://` references fail with that error (`not_found` with the
    ///   hint `secref init` when there is no store) and every other scheme
    ///   still works.
    /// * `env://` and `file://`: always (`file://` with the `[file]` limits).
    /// * `[policy]`: an enforcement point every read passes
    ///   ([`crate::policy`]); `[audit]`: audit events ([`crate::audit`]).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mut cfg = secref::Config::default();
    /// cfg.env = secref::config::Env::from_pairs([("SECREF_STORE", "/nonexistent/secref.store")]);
    /// let resolver = secref::Resolver::from_config(&cfg).unwrap();
    /// let err = resolver.resolve("local://app/db").await.unwrap_err();
    /// assert_eq!(err.code(), secref::ErrorCode::NotFound);
    /// assert!(err.hint().unwrap().contains("secref init"));
    /// # });
    /// ```
    pub fn from_config(cfg: &Config) -> Result<Resolver> {
        builder_from_config(cfg)?.build()
    }
}

/// The builder behind [`Resolver::from_config`].
fn builder_from_config(cfg: &Config) -> Result<ResolverBuilder> {
    let mut builder = Resolver::builder()
        .cache(cfg.cache.clone())
        .retry(cfg.retry.clone());

    // ---- Local providers ---------------------------------------------------
    let local = match Store::open_from_config(cfg) {
        Ok(store) => LocalProvider::new(store),
        Err(e) => {
            tracing::debug!(error_code = %e.code(), "local store unavailable");
            LocalProvider::unavailable(e)
        }
    };
    builder = builder
        .provider_arc(Arc::new(local), Some(cfg.cache_for("local")))
        .provider_arc(Arc::new(EnvProvider::new()), Some(cfg.cache_for("env")))
        .provider_arc(
            Arc::new(FileProvider::from_config(&cfg.file)),
            Some(cfg.cache_for("file")),
        );

    // ---- Remote providers --------------------------------------------------
    // REGISTER REMOTE PROVIDERS HERE (SecFlow from `cfg.secflow` / SECFLOW_*,
    // Vault / OpenBao from `cfg.vault` / VAULT_*), each with
    // `Some(cfg.cache_for("<provider name>"))`. The first provider registered
    // for a family wins, so order matters only within a family.
    #[cfg(feature = "secflow")]
    if let Some(p) = crate::providers::secflow::SecFlowProvider::from_config(cfg)? {
        builder = builder.provider_arc(Arc::new(p), Some(cfg.cache_for("secflow")));
    }
    // Vault / OpenBao: when `[vault]`, VAULT_ADDR or VAULT_URL is set;
    // invalid settings are an error, never silently skipped.
    #[cfg(feature = "vault")]
    if let Some(vault) = crate::providers::vault::VaultProvider::configured(cfg)? {
        builder = builder.provider_arc(Arc::new(vault), Some(cfg.cache_for("vault")));
    }
    // Infisical: when `[infisical]`, an INFISICAL_* variable or the
    // Infisical CLI's login is present; missing credentials fail each
    // infisical:// read (`unauthenticated`), invalid settings fail here.
    #[cfg(feature = "infisical")]
    if let Some(p) = crate::providers::infisical::InfisicalProvider::configured(cfg)? {
        builder = builder.provider_arc(Arc::new(p), Some(cfg.cache_for("infisical")));
    }
    // Coze workload identity: when `[coze]` or any required COZE_* variable
    // is set; a partial setup is an error listing what is missing.
    #[cfg(feature = "coze")]
    if let Some(coze) = crate::providers::coze::CozeProvider::configured(cfg)? {
        builder = builder.provider_arc(Arc::new(coze), Some(cfg.cache_for("coze")));
    }

    // ---- Policy and audit ----------------------------------------------------
    // `[policy]` / `[audit]` are parsed strictly; an invalid section is an
    // error, never a resolver that silently enforces or records nothing.
    if let Some(table) = &cfg.policy {
        builder = builder.policy(crate::policy::Policy::from_table(table, &cfg.env)?);
    }
    if let Some(table) = &cfg.audit {
        builder = builder.audit(crate::audit::Auditor::from_table(table, &cfg.env)?);
    }
    Ok(builder)
}
