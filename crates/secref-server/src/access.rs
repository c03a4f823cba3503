//! Access rules: which caller may do what with which references.
//!
//! Rules come from the `[[server.rules]]` array of `secref.toml`:
//!
//! ```toml
//! [[server.rules]]
//! principals = ["ci"]                       # token names, "uid:1000", "exe:/usr/bin/app", "cert:app.example"; "*" = any
//! refs = ["secret://dev/app/*", "env://APP_TOKEN"]
//! actions = ["read", "metadata_read"]       # default: all actions
//! ```
//!
//! * **Host-local references are denied unless a rule names them.** A
//!   reference that reads the server's own host — its environment
//!   (`env://`) or its file system (`file://`), see
//!   [`SecretRef::is_host_local`] — is allowed only by a rule whose pattern
//!   spells out its scheme (`env://APP_*`, `file:///srv/app/*`); neither
//!   "no rules" nor a bare `*` pattern grants it. Otherwise any token holder
//!   could read the admin token from the server's environment or the store
//!   key from its disk.
//! * With **no rules at all**, every authenticated caller may do everything
//!   else (the single-user default: one generated token; the local store and
//!   configured remote backends).
//! * As soon as one rule exists, access is **denied unless a rule allows it**.
//! * A pattern is exact, or ends in `*` for a prefix match, or is `*` alone.
//!   Patterns are matched against the **parsed reference's canonical form**
//!   only (never the text the client sent), and the grammar rejects rather
//!   than rewrites `.`, `..`, empty and encoded segments, so a prefix such as
//!   `file:///srv/allowed/*` cannot be escaped. An exact pattern must itself
//!   be a canonical reference (checked when the config is loaded).
//! * The reference checked is the one the client named: a `secret://` ref
//!   that `secflow_ref_template` maps onto another scheme is decided as
//!   `secret://…` (the template is the operator's own configuration); a
//!   client that names the backing ref directly needs a rule for that.
//! * Every denial looks the same (`PERMISSION_DENIED`, decision
//!   `default-deny`), whatever the reason.
//! * `read` is checked on resolve, `metadata_read` on validate and metadata,
//!   and `lease_revoke` on `revoke:batch`, against the reference the lease
//!   was issued for (sealed in the lease id): what `permission-check` answers
//!   for an action is what the matching endpoint does.

use secref::provider::Action;
use secref::{Error, SecretRef};
use serde::Deserialize;

use crate::auth::Principal;

/// One allow rule.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Token names this rule applies to (`*` for any).
    pub principals: Vec<String>,
    /// Reference patterns (`exact`, `prefix*` or `*`).
    pub refs: Vec<String>,
    /// Allowed actions (default: all).
    #[serde(default = "all_actions")]
    pub actions: Vec<Action>,
}

impl Rule {
    /// Checks the rule's patterns: `*` only at the end, and an exact pattern
    /// must be a canonical reference (anything else could never match).
    ///
    /// ```
    /// use secref_server::access::Rule;
    /// let rule = |p: &str| Rule { principals: vec!["*".into()], refs: vec![p.into()], actions: vec![] };
    /// assert!(rule("file:///srv/allowed/*").check().is_ok());
    /// assert!(rule("file:///srv/allowed/../x").check().is_err());
    /// assert!(rule("secret://dev/*/token/*").check().is_err());
    /// ```
    pub fn check(&self) -> secref::Result<()> {
        for pattern in &self.refs {
            let body = pattern.strip_suffix('*').unwrap_or(pattern);
            if body.contains('*') {
                return Err(Error::config(format!(
                    "server rule pattern '{pattern}': '*' is only allowed at the end"
                )));
            }
            if body.len() == pattern.len() {
                match SecretRef::parse(pattern) {
                    Ok(r) if r.to_canonical() == pattern => {}
                    Ok(r) => {
                        return Err(Error::config(format!(
                            "server rule pattern '{pattern}' is not canonical: write '{r}'"
                        )))
                    }
                    Err(e) => {
                        return Err(Error::config(format!(
                            "server rule pattern '{pattern}' is not a valid reference: {}",
                            e.message()
                        )))
                    }
                }
            }
        }
        Ok(())
    }
}

fn all_actions() -> Vec<Action> {
    vec![
        Action::Read,
        Action::MetadataRead,
        Action::LeaseRevoke,
        Action::List,
        Action::Write,
        Action::Delete,
        Action::Destroy,
    ]
}

/// A decision and the id that explains it (the matching rule's index, or why
/// nothing matched).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether the action is allowed.
    pub allowed: bool,
    /// `rule-<n>` (1-based), `no-rules` or `default-deny`.
    pub decision_id: String,
}

impl Decision {
    pub(crate) fn deny() -> Decision {
        Decision {
            allowed: false,
            decision_id: "default-deny".into(),
        }
    }
}

/// The configured rules.
#[derive(Clone, Debug, Default)]
pub struct AccessRules {
    rules: Vec<Rule>,
}

impl AccessRules {
    /// Rules, in order; the first allowing rule decides.
    pub fn new(rules: Vec<Rule>) -> AccessRules {
        AccessRules { rules }
    }

    /// Whether some rule lists one of `principal`'s names explicitly (not
    /// through `*`): only then does an mTLS certificate stand for its holder
    /// without a token.
    pub fn lists(&self, principal: &Principal) -> bool {
        self.rules
            .iter()
            .flat_map(|r| &r.principals)
            .any(|entry| principal.is_named_exactly(entry))
    }

    /// Decides whether `principal` may do `action` on `reference`, by its
    /// canonical form.
    ///
    /// ```
    /// use secref::provider::Action;
    /// use secref::SecretRef;
    /// use secref_server::access::{AccessRules, Rule};
    /// use secref_server::auth::Principal;
    /// let rules = AccessRules::new(vec![Rule {
    ///     principals: vec!["ci".into()],
    ///     refs: vec!["secret://dev/app/*".into()],
    ///     actions: vec![Action::Read],
    /// }]);
    /// let ci = Principal::named("ci");
    /// let r = |s: &str| SecretRef::parse(s).unwrap();
    /// assert!(rules.decide(&ci, &r("secret://dev/app/token/a"), Action::Read).allowed);
    /// assert!(!rules.decide(&ci, &r("secret://prod/app/token/a"), Action::Read).allowed);
    /// // Without rules, the server's own environment and files are still denied.
    /// let none = AccessRules::default();
    /// assert!(none.decide(&ci, &r("local://app/db"), Action::Read).allowed);
    /// assert!(!none.decide(&ci, &r("env://HOME"), Action::Read).allowed);
    /// ```
    pub fn decide(&self, principal: &Principal, reference: &SecretRef, action: Action) -> Decision {
        let host_local = reference.is_host_local().then(|| reference.scheme());
        self.decide_canonical(principal, reference.to_canonical(), host_local, action)
    }

    /// [`AccessRules::decide`] on a canonical form the server built itself
    /// from a parsed reference (the Vault API's `<ref>/` of a listed folder);
    /// `host_local` is the scheme when the reference reads the server's host.
    pub(crate) fn decide_canonical(
        &self,
        principal: &Principal,
        canonical: &str,
        host_local: Option<&str>,
        action: Action,
    ) -> Decision {
        let d = self.first_allowing(principal, canonical, host_local, action);
        // Effect and rule id, never the reference (spans may be exported).
        let _span = tracing::debug_span!(
            "secref.policy",
            action = ?action,
            effect = if d.allowed { "allow" } else { "deny" },
            decision_id = d.decision_id.as_str(),
        )
        .entered();
        d
    }

    fn first_allowing(
        &self,
        principal: &Principal,
        canonical: &str,
        host_local: Option<&str>,
        action: Action,
    ) -> Decision {
        // A host-local ref needs a pattern that spells out its scheme.
        let scheme_prefix = host_local.map(|s| format!("{s}://"));
        let may_match = |pattern: &str| match &scheme_prefix {
            Some(prefix) => pattern.starts_with(prefix.as_str()),
            None => true,
        };
        if self.rules.is_empty() {
            if host_local.is_some() {
                return Decision::deny();
            }
            return Decision {
                allowed: true,
                decision_id: "no-rules".into(),
            };
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let who = rule.principals.iter().any(|p| principal.is_named(p));
            if who
                && rule.actions.contains(&action)
                && rule
                    .refs
                    .iter()
                    .any(|p| may_match(p) && pattern_matches(p, canonical))
            {
                return Decision {
                    allowed: true,
                    decision_id: format!("rule-{}", i + 1),
                };
            }
        }
        Decision::deny()
    }
}

fn pattern_matches(pattern: &str, canonical: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => canonical.starts_with(prefix),
        None => pattern == canonical,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str) -> Principal {
        Principal::named(name)
    }

    fn r(s: &str) -> SecretRef {
        SecretRef::parse(s).unwrap()
    }

    #[test]
    fn no_rules_allows_everything_but_host_local() {
        let rules = AccessRules::default();
        for ok in [
            "local://app/db",
            "secret://dev/a/b/c",
            "openbao+kv2://secret/a",
        ] {
            assert!(rules.decide(&p("x"), &r(ok), Action::Read).allowed, "{ok}");
        }
        for host in ["env://A", "file:///etc/passwd"] {
            for action in all_actions() {
                let d = rules.decide(&p("x"), &r(host), action);
                assert_eq!((d.allowed, d.decision_id.as_str()), (false, "default-deny"));
            }
        }
    }

    #[test]
    fn host_local_needs_a_pattern_naming_its_scheme() {
        let star = |pattern: &str| {
            AccessRules::new(vec![Rule {
                principals: vec!["*".into()],
                refs: vec![pattern.into()],
                actions: all_actions(),
            }])
        };
        for (pattern, reference, allowed) in [
            ("*", "env://A", false),
            ("*", "file:///a", false),
            ("e*", "env://A", false),
            ("*", "local://a", true),
            ("env://*", "env://A", true),
            ("env://A", "env://A", true),
            ("file:///srv/allowed/*", "file:///srv/allowed/k", true),
        ] {
            let d = star(pattern).decide(&p("x"), &r(reference), Action::Read);
            assert_eq!(d.allowed, allowed, "{pattern} on {reference}");
        }
    }

    #[test]
    fn prefixes_match_the_canonical_form_only() {
        let rules = AccessRules::new(vec![Rule {
            principals: vec!["*".into()],
            refs: vec![
                "file:///srv/allowed/*".into(),
                "local://app/*".into(),
                "secret://dev/app/*".into(),
                "openbao+kv2://secret/app/*".into(),
            ],
            actions: all_actions(),
        }]);
        // Whatever spelling a client tries, it either fails to parse or its
        // canonical form is what the prefix is matched against.
        for escape in [
            "file:///srv/allowed/../other/secret.key",
            "file:///srv/allowed/./../x",
            "file:///srv/allowed//../x",
            "file:///srv/allowed/%2e%2e/x",
            "local://app/../x",
            "local://app/%2e%2e/x",
            "secret://dev/app/../x",
            "openbao+kv2://secret/app/../x",
            "openbao+kv2://secret/app/%2f/x",
        ] {
            assert!(SecretRef::parse(escape).is_err(), "{escape}");
        }
        // Case-folded schemes are canonicalised before matching.
        let upper = r("LOCAL://app/x");
        assert!(rules.decide(&p("x"), &upper, Action::Read).allowed);
        assert!(
            !rules
                .decide(&p("x"), &r("local://apple/x"), Action::Read)
                .allowed
        );
        assert!(
            !rules
                .decide(&p("x"), &r("file:///srv/allowedx/k"), Action::Read)
                .allowed
        );
    }

    #[test]
    fn patterns_are_checked() {
        let rule = |pattern: &str| Rule {
            principals: vec!["*".into()],
            refs: vec![pattern.into()],
            actions: all_actions(),
        };
        for ok in [
            "*",
            "env://A",
            "env://A_*",
            "file:///srv/a/*",
            "local://app/db#f",
        ] {
            assert!(rule(ok).check().is_ok(), "{ok}");
        }
        for bad in [
            "LOCAL://app/db",
            "file:///a/../b",
            "secret://*/app/*",
            "env://1",
        ] {
            assert!(rule(bad).check().is_err(), "{bad}");
        }
    }

    #[test]
    fn first_matching_rule_allows_rest_denied() {
        let rr = r;
        let r = AccessRules::new(vec![
            Rule {
                principals: vec!["*".into()],
                refs: vec!["env://PUBLIC".into()],
                actions: vec![Action::MetadataRead],
            },
            Rule {
                principals: vec!["ci".into()],
                refs: vec!["secret://dev/*".into()],
                actions: all_actions(),
            },
        ]);
        assert_eq!(
            r.decide(&p("any"), &rr("env://PUBLIC"), Action::MetadataRead)
                .decision_id,
            "rule-1"
        );
        assert!(
            !r.decide(&p("any"), &rr("env://PUBLIC"), Action::Read)
                .allowed
        );
        assert!(
            !r.decide(&p("any"), &rr("env://PUBLIC2"), Action::MetadataRead)
                .allowed
        );
        assert!(
            r.decide(&p("ci"), &rr("secret://dev/a/b/c"), Action::Read)
                .allowed
        );
        let d = r.decide(&p("other"), &rr("secret://dev/a/b/c"), Action::Read);
        assert_eq!((d.allowed, d.decision_id.as_str()), (false, "default-deny"));
    }
}
