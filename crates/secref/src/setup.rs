//! [`Resolver::from_config`]: the standard set of providers, built from a
//! [`Config`].

use crate::config::Config;
use crate::error::{Error, Result};
use crate::resolver::{Resolver, ResolverBuilder};

impl Resolver {
    /// A resolver with every provider `cfg` configures, using its cache
    /// settings (per provider via `[provider_cache.<name>]`) and retry policy.
    ///
    /// Each provider in the registry ([`crate::registry`]) is built by its
    /// spec, in registry order:
    ///
    /// * `local://`: the store at [`crate::store::Store::default_path`]; its
    ///   key is loaded now, its file read and verified by the first
    ///   `local://` read (a resolver that never reads `local://` never reads
    ///   the file). If it cannot be opened (no store yet, no key, wrong key,
    ///   corrupt file), `local://` references fail with that error
    ///   (`not_found` with the hint `secref init` when there is no store)
    ///   and every other scheme still works.
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
        builder_from_config(cfg, None)?.build()
    }

    /// A resolver for a reloaded `cfg`, built exactly as
    /// [`Resolver::from_config`] builds one (fresh providers and caches), that
    /// keeps what must outlive a reload of `previous`:
    ///
    /// * the audit sink ([`Resolver::auditor`]) — one writer per sink, so a
    ///   chained audit file never forks; `cfg` must have an `[audit]` table
    ///   exactly when `previous` audits (the caller refuses a changed table);
    /// * with `same_policy`, the policy enforcement point itself (grants,
    ///   their use counts, denials, the replay cache); otherwise a new one
    ///   from `[policy]` that takes over only the replay cache — grants are
    ///   decisions of the old rules and must not outlive them.
    pub fn rebuild_from_config(
        cfg: &Config,
        previous: &Resolver,
        same_policy: bool,
    ) -> Result<Resolver> {
        match (cfg.audit.is_some(), previous.auditor().is_some()) {
            (true, false) => {
                return Err(Error::config(
                    "[audit] cannot be added by a reload: restart secref serve",
                ))
            }
            (false, true) => {
                return Err(Error::config(
                    "[audit] cannot be removed by a reload: restart secref serve",
                ))
            }
            _ => {}
        }
        builder_from_config(cfg, Some((previous, same_policy)))?.build()
    }
}

/// The builder behind [`Resolver::from_config`] and
/// [`Resolver::rebuild_from_config`] (`carry`: the resolver replaced, and
/// whether its policy table is unchanged).
fn builder_from_config(cfg: &Config, carry: Option<(&Resolver, bool)>) -> Result<ResolverBuilder> {
    let mut builder = Resolver::builder()
        .cache(cfg.cache.clone())
        .retry(cfg.retry.clone());

    // Every registered provider, in registry order: each spec's `build`
    // decides whether it is configured (`None`: skipped) and fails on
    // invalid settings rather than skipping them. The first provider for a
    // family wins.
    // Credential settings holding references are resolved first, in
    // dependency order; a provider whose references cannot be read fails
    // its own reads with the reason.
    let derived = crate::credentials::dereference(cfg)?;
    for spec in crate::registry::specs() {
        let built = match derived.get(spec.name) {
            None => (spec.build)(cfg)?,
            Some(Ok(own)) => (spec.build)(own)?,
            Some(Err(e)) => Some(std::sync::Arc::new(crate::credentials::Unavailable::new(
                spec,
                e.clone(),
            ))
                as std::sync::Arc<dyn crate::provider::Provider>),
        };
        if let Some(p) = built {
            builder = builder.provider_arc(p, Some(cfg.cache_for(spec.name)));
        }
    }

    // ---- Policy and audit ----------------------------------------------------
    // `[policy]` / `[audit]` are parsed strictly; an invalid section is an
    // error, never a resolver that silently enforces or records nothing.
    // `[state]` first: the policy keeps its grants, jti window and denials
    // there when it is shared.
    let state = match &cfg.state {
        Some(table) => crate::state::StateSettings::from_table(table)?.build(&cfg.env)?,
        None => None,
    };
    if let Some(s) = &state {
        builder = builder.shared_state(s.clone());
    }
    if let Some(table) = &cfg.policy {
        let old = carry.and_then(|(prev, same)| Some((prev.shared_policy()?, same)));
        let fresh = |state: Option<crate::state::SharedState>| -> Result<crate::policy::Policy> {
            let policy = crate::policy::Policy::from_table(table, &cfg.env)?;
            Ok(match state {
                Some(s) => policy.with_shared_state(s),
                None => policy,
            })
        };
        builder = match old {
            Some((old, true)) => builder.shared_policy(old),
            Some((old, false)) => {
                let policy = fresh(state)?;
                policy.adopt_replay_cache(&old);
                builder.policy(policy)
            }
            None => builder.policy(fresh(state)?),
        };
    }
    if let Some(table) = &cfg.audit {
        let kept = carry.and_then(|(prev, _)| prev.auditor().cloned());
        builder = builder.audit(match kept {
            Some(auditor) => auditor,
            None => crate::audit::Auditor::from_table(table, &cfg.env)?,
        });
    }
    Ok(builder)
}
