//! Policy decision points: who decides whether a grant is issued.
//!
//! * [`RulesPdp`]: local rules from `[policy]` (first match wins; when rules
//!   exist and none matches, deny).
//! * [`AuthZenPdp`]: an HTTP PDP speaking the OpenID AuthZEN Authorization
//!   API 1.0 access evaluation (`POST {base}/access/v1/evaluation`).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};
use url::Url;

use super::context::Context;
use crate::error::{Error, ErrorCode, Result};
use crate::http::{ClientOptions, HttpClient};
use crate::secret::Secret;

/// One question to a PDP: may `subject` of `tenant` do `action` on
/// `resource` (a canonical reference)?
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct AccessRequest<'a> {
    /// The subject (`anonymous` when the context has none).
    pub subject: &'a str,
    /// The tenant.
    pub tenant: &'a str,
    /// The canonical reference.
    pub resource: &'a str,
    /// The action; `execute` for reads, as the reference SDK.
    pub action: &'a str,
    /// The sender binding the grant will be bound to, if any.
    pub binding: Option<&'a str>,
    /// The whole request context.
    pub context: &'a Context,
}

/// What a PDP decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Issue a grant with these terms.
    Allow(GrantTerms),
    /// Refuse.
    Deny {
        /// The PDP's decision id, for audit.
        decision_id: Option<String>,
    },
}

/// The terms of a grant a PDP issues.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct GrantTerms {
    /// How long the grant lasts.
    pub ttl: Duration,
    /// How many reads it allows (at least 1).
    pub max_uses: u32,
    /// Obligation: wrap the response for this long (carried, see the module
    /// docs of [`crate::policy`]).
    pub wrap_ttl: Option<Duration>,
    /// The PDP's decision id, for audit.
    pub decision_id: Option<String>,
}

impl GrantTerms {
    /// Terms with a TTL and a use limit.
    pub fn new(ttl: Duration, max_uses: u32) -> GrantTerms {
        GrantTerms {
            ttl,
            max_uses: max_uses.max(1),
            wrap_ttl: None,
            decision_id: None,
        }
    }

    /// Sets the decision id.
    #[must_use]
    pub fn with_decision_id(mut self, id: impl Into<String>) -> Self {
        self.decision_id = Some(id.into());
        self
    }

    /// Sets the wrap obligation.
    #[must_use]
    pub fn with_wrap_ttl(mut self, ttl: Duration) -> Self {
        self.wrap_ttl = Some(ttl);
        self
    }
}

/// A policy decision point.
///
/// An `Err` means the PDP could not decide (an outage): the enforcement
/// point then honours existing grants only and fails other reads with
/// `backend_unavailable` (remote code `PDP_UNAVAILABLE`, retryable).
#[async_trait]
pub trait Pdp: Send + Sync + fmt::Debug {
    /// Decides one request.
    async fn evaluate(&self, request: &AccessRequest<'_>) -> Result<Decision>;
}

// ---- Local rules -----------------------------------------------------------

/// One local rule: patterns that must all match, and what follows.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Subject pattern: exact, or with `*` wildcards (`svc-*`). Default `*`.
    #[serde(default = "star")]
    pub subject: String,
    /// Tenant pattern, as `subject`. Default `*`.
    #[serde(default = "star")]
    pub tenant: String,
    /// The canonical reference must start with this. Default: any.
    #[serde(default)]
    pub ref_prefix: String,
    /// `allow` (default) or `deny`.
    #[serde(default)]
    pub effect: Effect,
    /// Grant TTL in seconds (default: the policy's `grant_ttl_seconds`).
    #[serde(default)]
    pub ttl_seconds: Option<f64>,
    /// Grant use limit (default: the policy's `grant_max_uses`).
    #[serde(default)]
    pub max_uses: Option<u32>,
    /// Obligation: response-wrapping TTL in seconds.
    #[serde(default)]
    pub wrap_ttl_seconds: Option<f64>,
}

fn star() -> String {
    "*".to_string()
}

/// A rule's effect.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// Issue a grant.
    #[default]
    Allow,
    /// Refuse.
    Deny,
}

impl Rule {
    fn matches(&self, req: &AccessRequest<'_>) -> bool {
        glob_match(&self.subject, req.subject)
            && glob_match(&self.tenant, req.tenant)
            && req.resource.starts_with(&self.ref_prefix)
    }
}

/// `*` matches any run of characters (including none); everything else is
/// literal.
fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    if !text.ends_with(last) {
        return false;
    }
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(at) => rest = &rest[at + mid.len()..],
            None => return false,
        }
    }
    true
}

/// The local rules PDP.
///
/// With no rules every request is allowed with the default terms (the
/// grant limits still apply); with rules, the first matching rule decides
/// and no match is a denial.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::time::Duration;
/// use secref::policy::{AccessRequest, Context, Decision, Pdp, Rule, RulesPdp, GrantTerms};
/// let rules: Vec<Rule> = toml::from_str::<toml::Table>(r#"
///     [[rules]]
///     subject = "svc-*"
///     ref_prefix = "openbao+kv2://secret/app/"
///     max_uses = 3
/// "#).unwrap()["rules"].clone().try_into().unwrap();
/// let pdp = RulesPdp::new(rules, GrantTerms::new(Duration::from_secs(60), 1));
/// let ctx = Context::anonymous();
/// let mut req = AccessRequest::new("svc-a", "dev", "openbao+kv2://secret/app/db", &ctx);
/// assert!(matches!(pdp.evaluate(&req).await.unwrap(), Decision::Allow(t) if t.max_uses == 3));
/// req.subject = "intruder";
/// assert!(matches!(pdp.evaluate(&req).await.unwrap(), Decision::Deny { .. }));
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct RulesPdp {
    rules: Vec<Rule>,
    defaults: GrantTerms,
}

impl RulesPdp {
    /// Rules, with the terms used where a rule does not say.
    pub fn new(rules: Vec<Rule>, defaults: GrantTerms) -> RulesPdp {
        RulesPdp { rules, defaults }
    }
}

impl<'a> AccessRequest<'a> {
    /// A read (`execute`) request without a binding.
    pub fn new(
        subject: &'a str,
        tenant: &'a str,
        resource: &'a str,
        context: &'a Context,
    ) -> AccessRequest<'a> {
        AccessRequest {
            subject,
            tenant,
            resource,
            action: "execute",
            binding: None,
            context,
        }
    }
}

#[async_trait]
impl Pdp for RulesPdp {
    async fn evaluate(&self, req: &AccessRequest<'_>) -> Result<Decision> {
        if self.rules.is_empty() {
            return Ok(Decision::Allow(
                self.defaults.clone().with_decision_id(new_decision_id()),
            ));
        }
        let Some(rule) = self.rules.iter().find(|r| r.matches(req)) else {
            return Ok(Decision::Deny {
                decision_id: Some(new_decision_id()),
            });
        };
        Ok(match rule.effect {
            Effect::Deny => Decision::Deny {
                decision_id: Some(new_decision_id()),
            },
            Effect::Allow => {
                let mut terms = self.defaults.clone().with_decision_id(new_decision_id());
                if let Some(t) = rule.ttl_seconds {
                    terms.ttl = Duration::from_secs_f64(t);
                }
                if let Some(n) = rule.max_uses {
                    terms.max_uses = n.max(1);
                }
                terms.wrap_ttl = rule.wrap_ttl_seconds.map(Duration::from_secs_f64);
                Decision::Allow(terms)
            }
        })
    }
}

pub(crate) fn new_decision_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Checks a rule's numbers (non-negative, finite, sane).
pub(crate) fn validate_rule(i: usize, r: &Rule) -> Result<()> {
    for (what, v) in [
        ("ttl_seconds", r.ttl_seconds),
        ("wrap_ttl_seconds", r.wrap_ttl_seconds),
    ] {
        if let Some(v) = v {
            if !v.is_finite() || v <= 0.0 || v > 86_400.0 {
                return Err(Error::config(format!(
                    "[[policy.rules]] #{}: {what} must be > 0 and at most 86400",
                    i + 1
                )));
            }
        }
    }
    if r.max_uses == Some(0) {
        return Err(Error::config(format!(
            "[[policy.rules]] #{}: max_uses must be at least 1",
            i + 1
        )));
    }
    Ok(())
}

// ---- AuthZEN HTTP PDP --------------------------------------------------------

/// An HTTP PDP speaking the AuthZEN access evaluation API.
///
/// Request (`POST {base}/access/v1/evaluation`, JSON):
///
/// ```json
/// {"subject":  {"type": "user", "id": "<subject>", "properties": {"tenant": "...", "issuer": "...", "client_id": "..."}},
///  "resource": {"type": "secret", "id": "<canonical reference>", "properties": {"tenant": "..."}},
///  "action":   {"name": "execute"},
///  "context":  {"binding": "<cnf.jkt or mTLS thumbprint>", "audience": [...], "correlation_id": "..."}}
/// ```
///
/// Response: `{"decision": true|false, "context": {...}}`. The optional
/// response `context` may carry the grant terms (secref's extension):
/// `decision_id`, `ttl_seconds`, `max_uses`, `wrap_ttl_seconds`; missing
/// terms take the policy defaults. A non-2xx status, a transport failure or
/// an answer without a boolean `decision` is an outage (never an allow).
pub struct AuthZenPdp {
    endpoint: Url,
    client: HttpClient,
    token: Option<Secret>,
    defaults: GrantTerms,
}

impl fmt::Debug for AuthZenPdp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthZenPdp")
            .field("endpoint", &self.endpoint.as_str())
            .field("token", &self.token.as_ref().map(|_| "[REDACTED]"))
            .finish()
    }
}

impl AuthZenPdp {
    /// A PDP at `base_url` (checked with
    /// [`validate_base_url`](crate::config::validate_base_url)), sending
    /// `Authorization: Bearer <token>` when a token is given.
    pub fn new(
        base_url: &str,
        options: ClientOptions,
        token: Option<Secret>,
        defaults: GrantTerms,
    ) -> Result<AuthZenPdp> {
        let base = crate::config::validate_base_url("policy.pdp.url", base_url)?;
        let endpoint = Url::parse(&format!(
            "{}/access/v1/evaluation",
            base.as_str().trim_end_matches('/')
        ))
        .map_err(|e| Error::config(format!("policy.pdp.url: {e}")))?;
        Ok(AuthZenPdp {
            endpoint,
            // An evaluation answer is small: 64 KiB is plenty.
            client: options.max_body(64 * 1024).build_for("pdp")?,
            token,
            defaults,
        })
    }

    fn body(req: &AccessRequest<'_>) -> Value {
        let ctx = req.context;
        json!({
            "subject": {
                "type": "user",
                "id": req.subject,
                "properties": {
                    "tenant": req.tenant,
                    "issuer": ctx.issuer,
                    "client_id": ctx.client_id,
                },
            },
            "resource": {
                "type": "secret",
                "id": req.resource,
                "properties": { "tenant": req.tenant },
            },
            "action": { "name": req.action },
            "context": {
                "binding": req.binding,
                "audience": ctx.audience,
                "correlation_id": ctx.correlation_id,
            },
        })
    }
}

#[derive(Deserialize)]
struct EvaluationResponse {
    decision: bool,
    #[serde(default)]
    context: Option<ResponseContext>,
}

#[derive(Deserialize, Default)]
struct ResponseContext {
    #[serde(default)]
    decision_id: Option<String>,
    #[serde(default)]
    ttl_seconds: Option<f64>,
    #[serde(default)]
    max_uses: Option<u32>,
    #[serde(default)]
    wrap_ttl_seconds: Option<f64>,
}

#[async_trait]
impl Pdp for AuthZenPdp {
    async fn evaluate(&self, req: &AccessRequest<'_>) -> Result<Decision> {
        let mut http = self
            .client
            .post(self.endpoint.clone())
            .header("X-Request-ID", new_decision_id())
            .json(&AuthZenPdp::body(req));
        if let Some(t) = &self.token {
            let t = t.as_text()?;
            http = http.bearer_auth(t);
        }
        let resp = self.client.send(http).await?;
        if !resp.is_success() {
            // Whatever the status, the PDP did not decide: an outage.
            return Err(Error::new(
                ErrorCode::BackendUnavailable,
                format!("the PDP answered HTTP {}", resp.status),
            ));
        }
        let answer: EvaluationResponse = serde_json::from_slice(&resp.body).map_err(|_| {
            Error::new(
                ErrorCode::InvalidResponse,
                "the PDP's answer is not an AuthZEN evaluation response",
            )
        })?;
        let ctx = answer.context.unwrap_or_default();
        if !answer.decision {
            return Ok(Decision::Deny {
                decision_id: ctx.decision_id,
            });
        }
        let mut terms = self.defaults.clone();
        terms.decision_id = ctx.decision_id.or_else(|| Some(new_decision_id()));
        if let Some(t) = ctx.ttl_seconds.filter(|t| t.is_finite() && *t > 0.0) {
            terms.ttl = Duration::from_secs_f64(t.min(86_400.0));
        }
        if let Some(n) = ctx.max_uses {
            terms.max_uses = n.max(1);
        }
        if let Some(w) = ctx.wrap_ttl_seconds.filter(|t| t.is_finite() && *t > 0.0) {
            terms.wrap_ttl = Some(Duration::from_secs_f64(w.min(86_400.0)));
        }
        Ok(Decision::Allow(terms))
    }
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        for (p, t) in [
            ("*", ""),
            ("*", "abc"),
            ("svc-*", "svc-a"),
            ("*-a", "svc-a"),
            ("s*c*a", "svc-a"),
            ("abc", "abc"),
            ("a*a", "aa"),
        ] {
            assert!(glob_match(p, t), "{p} {t}");
        }
        for (p, t) in [
            ("svc-*", "svd-a"),
            ("abc", "abcd"),
            ("a*a", "a"),
            ("*-b", "svc-a"),
            ("s*x*a", "svc-a"),
        ] {
            assert!(!glob_match(p, t), "{p} {t}");
        }
    }
}
