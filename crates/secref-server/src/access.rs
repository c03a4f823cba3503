//! Access rules: which caller may do what with which references.
//!
//! Rules come from the `[[server.rules]]` array of `secref.toml`:
//!
//! ```toml
//! [[server.rules]]
//! principals = ["ci"]                       # token names, "uid:1000", "exe:/usr/bin/app"; "*" = any
//! refs = ["secret://dev/app/*", "env://APP_TOKEN"]
//! actions = ["read", "metadata_read"]       # default: all actions
//! ```
//!
//! * With **no rules at all**, every authenticated caller may do everything
//!   (the single-user default: one generated token).
//! * As soon as one rule exists, access is **denied unless a rule allows it**.
//! * A pattern is exact, or ends in `*` for a prefix match, or is `*` alone.
//!   Patterns are matched against the reference's canonical form *as the
//!   client wrote it* (`secret://…`, `local://…`, `env://…`); a client that
//!   names the backing `local://` ref directly needs a rule for that.

use secref::provider::Action;
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

    /// Decides whether `principal` may do `action` on `reference` (canonical).
    ///
    /// ```
    /// use secref::provider::Action;
    /// use secref_server::access::{AccessRules, Rule};
    /// use secref_server::auth::Principal;
    /// let rules = AccessRules::new(vec![Rule {
    ///     principals: vec!["ci".into()],
    ///     refs: vec!["secret://dev/app/*".into()],
    ///     actions: vec![Action::Read],
    /// }]);
    /// let ci = Principal::named("ci");
    /// assert!(rules.decide(&ci, "secret://dev/app/token/a", Action::Read).allowed);
    /// assert!(!rules.decide(&ci, "secret://prod/app/token/a", Action::Read).allowed);
    /// ```
    pub fn decide(&self, principal: &Principal, reference: &str, action: Action) -> Decision {
        if self.rules.is_empty() {
            return Decision {
                allowed: true,
                decision_id: "no-rules".into(),
            };
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let who = rule.principals.iter().any(|p| principal.is_named(p));
            if who
                && rule.actions.contains(&action)
                && rule.refs.iter().any(|p| pattern_matches(p, reference))
            {
                return Decision {
                    allowed: true,
                    decision_id: format!("rule-{}", i + 1),
                };
            }
        }
        Decision {
            allowed: false,
            decision_id: "default-deny".into(),
        }
    }
}

fn pattern_matches(pattern: &str, reference: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => reference.starts_with(prefix),
        None => pattern == reference,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str) -> Principal {
        Principal::named(name)
    }

    #[test]
    fn no_rules_allows_everything() {
        let r = AccessRules::default();
        assert!(r.decide(&p("x"), "env://A", Action::Read).allowed);
    }

    #[test]
    fn first_matching_rule_allows_rest_denied() {
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
            r.decide(&p("any"), "env://PUBLIC", Action::MetadataRead)
                .decision_id,
            "rule-1"
        );
        assert!(!r.decide(&p("any"), "env://PUBLIC", Action::Read).allowed);
        assert!(
            !r.decide(&p("any"), "env://PUBLIC2", Action::MetadataRead)
                .allowed
        );
        assert!(
            r.decide(&p("ci"), "secret://dev/a/b/c", Action::Read)
                .allowed
        );
        let d = r.decide(&p("other"), "secret://dev/a/b/c", Action::Read);
        assert_eq!((d.allowed, d.decision_id.as_str()), (false, "default-deny"));
    }
}
