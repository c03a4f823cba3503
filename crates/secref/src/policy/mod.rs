//! Access policy: the policy enforcement point (PEP) the [`Resolver`]
//! consults before any cache lookup or provider call, and the policy
//! decision points ([`Pdp`]) it asks.
//!
//! When a [`Policy`] is configured (`[policy]` in `secref.toml`, or
//! [`ResolverBuilder::policy`](crate::ResolverBuilder::policy)), every read
//! through [`Resolver::read`]`(r).as_(&ctx)` (and plain `resolve`, as the anonymous
//! [`Context`]) runs these steps, in order, per reference:
//!
//! 1. **Audience** (every call): if the context carries audiences, one must
//!    be the policy's `audience` (default `crud.secrets`).
//! 2. **Tenant mount guard**: the reference must pass
//!    [`SecretRef::parse_for_tenant`] with the tenant's `allowed_mounts`
//!    (`tenant_mount_mismatch`).
//! 3. **Negative cache**: a recent denial of the same request — (subject,
//!    tenant, reference, action) *and* the sender binding and the token's
//!    audience, issuer and client id, everything a PDP sees — is repeated
//!    without asking anyone. Entries live `negative_ttl_seconds` plus a
//!    random jitter of up to `negative_jitter_ms`.
//! 4. **Grant** for (subject, tenant, reference, action). On a hit, the
//!    grant's sender binding must equal the context's (`BINDING_DRIFT`). On a
//!    miss: the token's `jti` must not have been seen in the replay window
//!    (one check per call, global across references and subjects, as the
//!    reference), then the PDP decides. Concurrent misses for one key ask the
//!    PDP once and share the grant (the reference's check-then-put race let
//!    each of them get a fresh grant).
//! 5. **Use**: one use of the grant is reserved atomically (compare-and-swap
//!    on the grant's counter, so concurrent callers can never exceed
//!    `max_uses`). It is reserved just before the read (cache lookup or
//!    provider call) and *returned* if the read fails, so only a delivered
//!    value consumes a use. The reference consumes the use before the read
//!    and keeps it even when the read fails.
//!
//! Denials are `permission_denied` with remote code `SECRET_AUTHZ_FAILED`
//! (audience, replay, negative cache, uses exhausted, unknown tenant),
//! `DENY` (the PDP said no) or `BINDING_DRIFT`. Only PDP denials and
//! exhausted grants are negative-cached: refusals caused by one request's
//! own facts (a wrong audience, a replayed `jti`, a drifted binding) are
//! decided locally without asking anyone, so caching them saves nothing,
//! and caching them under the subject would let one caller (say, a
//! same-subject certificate with the wrong key) deny service to the
//! rightful one. The mount guard is cheap and deterministic. A PDP outage
//! is `backend_unavailable`, retryable, remote code `PDP_UNAVAILABLE`, and is
//! *not* negative-cached (the reference caches it, which turns a transient
//! outage into seconds of denials); existing valid grants keep working
//! through an outage.
//!
//! **Several replicas.** With [`Policy::with_shared_state`] (`[state]
//! backend = "redis"`, see [`crate::state`]) steps 3–5 keep their state in
//! the shared backend: denials, the `jti` window and the grants' use
//! counters (one grant per key agreed between replicas), so replicas
//! enforce one limit. A backend failure fails closed (`backend_unavailable`,
//! retryable), except for a grant confirmed within
//! `honour_confirmed_grants_seconds`.
//!
//! Differences from the reference, all stricter: the audience is checked on
//! every call, not only on a grant miss; a grant bound to a key is refused
//! when the caller presents *no* binding (the reference let it through).
//!
//! **Obligations.** A grant with a `wrap_ttl` obligation (a rule's
//! `wrap_ttl_seconds`, or the AuthZEN PDP's) is met by reading the reference
//! the serving provider gives back from [`crate::Provider::with_wrap_ttl`]
//! (the policy knows no provider's reference syntax; Vault sets
//! `?wrap_ttl=<secs>s`, whole seconds rounded up, replacing any the caller
//! wrote); such reads skip the cache lookup, so each one is wrapped. A
//! reference whose provider cannot wrap (answers `None`) is refused
//! with `permission_denied`, remote code `OBLIGATION_UNSUPPORTED` (its use
//! is given back), never read unwrapped.
//!
//! **Non-value operations.** `metadata`, `validate` and `permission_check`
//! (and their `_many` and `_as` variants; the plain ones as the anonymous
//! [`Context`]) pass the same steps with action `metadata_read`: its grants
//! are separate from read (`execute`) grants and count their own uses; a
//! refusal is `permission_denied` (for `permission_check` too: the caller
//! may not even ask) and is audited as a denial.
//!
//! **Other enforcement points.** [`Resolver::authorize_as`] runs the same
//! steps for an operation served outside the resolver's providers (a use is
//! reserved and kept) and returns the grant's obligations as an
//! [`Authorization`]. `secref serve` uses the `_as` methods (SecFlow API)
//! and `authorize_as` (Vault API) with a per-request context whose subject
//! is the caller's principal name.
//!
//! Remaining gaps:
//!
//! * `secref serve` contexts always use the policy's default tenant (no
//!   mapping from a token to a tenant yet); its SecFlow `permission-check`
//!   answers from `[[server.rules]]` only; where a provider lacks
//!   `validate`/`metadata`, the SecFlow fallback read is a second call of the
//!   request made without the token's `jti` (so that the request does not
//!   replay itself): if the first call needed no new grant, that read's new
//!   grant is not replay-checked.
//! * Successful non-value operations are not audited (only their refusals).
//! * Local rules cannot match on the action (a rule allows both reads and
//!   `metadata_read`).
//! * Each `watch` poll is a read by the anonymous context (and consumes a
//!   use); the resolver's background refresh-ahead is not a caller's read
//!   and is not enforced.
//!
//! [`Resolver`]: crate::Resolver
//! [`Resolver::read`]: crate::Resolver::read
//! [`Resolver::authorize_as`]: crate::Resolver::authorize_as
//! [`SecretRef::parse_for_tenant`]: crate::SecretRef::parse_for_tenant

mod context;
mod pdp;

pub use context::Context;
pub use pdp::{AccessRequest, AuthZenPdp, Decision, Effect, GrantTerms, Pdp, Rule, RulesPdp};

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::time::Instant;
use tracing::{field, Instrument};

use crate::config::Env;
use crate::error::{Error, ErrorCode, Result};
use crate::flight::SingleFlight;
use crate::http::ClientOptions;
use crate::reference::SecretRef;
use crate::secret::Secret;
use crate::state::{SharedState, StateKey};

/// The remote code of most denials.
pub const AUTHZ_FAILED: &str = "SECRET_AUTHZ_FAILED";
/// The remote code of a PDP denial.
pub const DENY: &str = "DENY";
/// The remote code of a sender-binding mismatch.
pub const BINDING_DRIFT: &str = "BINDING_DRIFT";
/// The remote code of a PDP outage.
pub const PDP_UNAVAILABLE: &str = "PDP_UNAVAILABLE";
/// The remote code of a grant whose obligation the reference's provider
/// cannot meet (e.g. `wrap_ttl` on a non-Vault reference).
pub const OBLIGATION_UNSUPPORTED: &str = "OBLIGATION_UNSUPPORTED";

/// The action a read asks for (as the reference SDK).
pub(crate) const READ_ACTION: &str = "execute";
/// The action of the non-value operations (`metadata`, `validate`,
/// `permission_check`): they reveal facts about a secret, never its value.
pub(crate) const METADATA_ACTION: &str = "metadata_read";

/// `[policy]` settings. Unknown keys are an error.
///
/// ```toml
/// [policy]
/// tenant = "dev"                 # default tenant of contexts without one
/// audience = "crud.secrets"
/// grant_ttl_seconds = 300
/// grant_max_uses = 1
/// negative_ttl_seconds = 5
/// negative_jitter_ms = 500
/// replay_window_seconds = 300
///
/// [policy.tenants.dev]
/// allowed_mounts = ["secret"]
///
/// [[policy.rules]]               # local PDP; omit for "allow all"
/// subject = "svc-*"
/// ref_prefix = "openbao+kv2://secret/app/"
/// max_uses = 10
///
/// [policy.pdp]                   # or an AuthZEN PDP (then rules must be empty)
/// url = "https://pdp.example.com"
/// timeout_seconds = 5
/// token_env = "PDP_TOKEN"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PolicySettings {
    /// The tenant of contexts that name none.
    #[serde(default = "PolicySettings::default_tenant")]
    pub tenant: String,
    /// The audience a token must carry (when it carries any).
    #[serde(default = "PolicySettings::default_audience")]
    pub audience: String,
    /// Default grant lifetime.
    #[serde(default = "PolicySettings::default_grant_ttl", with = "secs_f64")]
    #[serde(rename = "grant_ttl_seconds")]
    pub grant_ttl: Duration,
    /// Default grant use limit.
    #[serde(default = "PolicySettings::default_max_uses")]
    pub grant_max_uses: u32,
    /// How long a denial is remembered (before jitter).
    #[serde(default = "PolicySettings::default_negative_ttl", with = "secs_f64")]
    #[serde(rename = "negative_ttl_seconds")]
    pub negative_ttl: Duration,
    /// Upper bound of the random jitter added to each negative entry.
    #[serde(default = "PolicySettings::default_jitter", with = "millis")]
    #[serde(rename = "negative_jitter_ms")]
    pub negative_jitter: Duration,
    /// How long a token `jti` is remembered for anti-replay.
    #[serde(default = "PolicySettings::default_replay", with = "secs_f64")]
    #[serde(rename = "replay_window_seconds")]
    pub replay_window: Duration,
    /// Allowed mounts per tenant. When non-empty, a tenant not listed here
    /// is denied; when empty, the mount guard is off.
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantSettings>,
    /// Local rules (the local PDP).
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// An AuthZEN HTTP PDP instead of local rules.
    #[serde(default)]
    pub pdp: Option<PdpSettings>,
}

/// One tenant's settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSettings {
    /// The mounts (first path segment) the tenant may read; empty = any.
    #[serde(default)]
    pub allowed_mounts: Vec<String>,
}

/// `[policy.pdp]`: an AuthZEN HTTP PDP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PdpSettings {
    /// Base URL (`https://`, or `http://` on loopback).
    pub url: String,
    /// Request timeout in seconds (default 5).
    #[serde(default)]
    pub timeout_seconds: Option<f64>,
    /// The environment variable holding a bearer token for the PDP.
    #[serde(default)]
    pub token_env: Option<String>,
}

/// The variable holding the PDP's bearer token under `cfg` (`[policy.pdp]
/// token_env`), if one is named. Read leniently: a `[policy]` table that
/// does not parse still names it (building the policy reports the error).
pub fn credential_env_vars(cfg: &crate::Config) -> Vec<String> {
    cfg.policy
        .as_ref()
        .and_then(|t| t.get("pdp")?.get("token_env")?.as_str())
        .map(str::to_string)
        .into_iter()
        .collect()
}

impl PolicySettings {
    fn default_tenant() -> String {
        "dev".into()
    }
    fn default_audience() -> String {
        "crud.secrets".into()
    }
    fn default_grant_ttl() -> Duration {
        Duration::from_secs(300)
    }
    fn default_max_uses() -> u32 {
        1
    }
    fn default_negative_ttl() -> Duration {
        Duration::from_secs(5)
    }
    fn default_jitter() -> Duration {
        Duration::from_millis(500)
    }
    fn default_replay() -> Duration {
        Duration::from_secs(300)
    }

    /// Parses a `[policy]` table strictly.
    pub fn from_table(table: &toml::Table) -> Result<PolicySettings> {
        let s: PolicySettings = toml::Value::Table(table.clone())
            .try_into()
            .map_err(|e: toml::de::Error| crate::config::table_error("[policy]", &e))?;
        s.validate()?;
        Ok(s)
    }

    fn validate(&self) -> Result<()> {
        for (what, d) in [
            ("grant_ttl_seconds", self.grant_ttl),
            ("replay_window_seconds", self.replay_window),
        ] {
            if d.is_zero() || d > Duration::from_secs(86_400) {
                return Err(Error::config(format!(
                    "[policy] {what} must be > 0 and at most 86400"
                )));
            }
        }
        if self.negative_ttl > Duration::from_secs(3_600)
            || self.negative_jitter > Duration::from_secs(60)
        {
            return Err(Error::config(
                "[policy] negative_ttl_seconds must be at most 3600 and negative_jitter_ms at most 60000",
            ));
        }
        if self.grant_max_uses == 0 {
            return Err(Error::config("[policy] grant_max_uses must be at least 1"));
        }
        if self.audience.trim().is_empty() {
            return Err(Error::config("[policy] audience must not be empty"));
        }
        for (i, r) in self.rules.iter().enumerate() {
            pdp::validate_rule(i, r)?;
        }
        if self.pdp.is_some() && !self.rules.is_empty() {
            return Err(Error::config(
                "[policy] has both rules and a pdp: configure one decision point",
            ));
        }
        Ok(())
    }

    /// The default grant terms.
    pub fn default_terms(&self) -> GrantTerms {
        GrantTerms::new(self.grant_ttl, self.grant_max_uses)
    }
}

impl Default for PolicySettings {
    fn default() -> Self {
        PolicySettings::from_table(&toml::Table::new()).expect("defaults are valid")
    }
}

mod secs_f64 {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        if !v.is_finite() || !(0.0..=1e9).contains(&v) {
            return Err(serde::de::Error::custom("must be a non-negative number"));
        }
        Ok(Duration::from_secs_f64(v))
    }
}

mod millis {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

// ---- The enforcement point ----------------------------------------------------

/// The policy enforcement point: settings, a PDP, and the grant, denial
/// and replay caches. Shared by clones of the resolver it is installed in.
pub struct Policy {
    settings: PolicySettings,
    pdp: Arc<dyn Pdp>,
    state: Mutex<State>,
    /// `[state] backend = "redis"`: grants' use counts, the jti window and
    /// denials live there, shared by every replica ([`crate::state`]).
    shared: Option<Arc<SharedState>>,
    /// Origin of grants' `confirmed` times.
    epoch: Instant,
    /// Concurrent misses of one request (same grant key and request facts)
    /// ask the PDP once; a request with other facts (another binding) gets
    /// its own decision, never someone else's denial.
    issuing: SingleFlight<DenialKey, std::result::Result<Arc<Grant>, Refusal>>,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.state.lock();
        f.debug_struct("Policy")
            .field("pdp", &self.pdp)
            .field("grants", &st.grants.len())
            .field("denials", &st.negative.len())
            .finish()
    }
}

/// (subject, tenant, canonical reference, action). The binding is stored in
/// the grant, not the key, so that a different binding is detected as drift
/// rather than getting a grant of its own.
type GrantKey = (Arc<str>, Arc<str>, Arc<str>, &'static str);

/// A negative-cache key: the grant key plus the request facts a decision
/// also depended on (sender binding, the token's audience, issuer and
/// client id: all an AuthZEN PDP sees). So a denial only ever repeats for a
/// request the decision point would have seen as the same one.
#[derive(Clone, PartialEq, Eq, Hash)]
struct DenialKey {
    grant: GrantKey,
    /// Binding, audience (joined by `,`), issuer, client id; `None` = absent.
    facts: [Option<Arc<str>>; 4],
}

impl DenialKey {
    fn new(grant: GrantKey, ctx: &Context) -> DenialKey {
        let fact = |v: Option<&str>| v.map(Arc::<str>::from);
        let audience = (!ctx.audience.is_empty()).then(|| ctx.audience.join(","));
        DenialKey {
            grant,
            facts: [
                fact(ctx.binding()),
                fact(audience.as_deref()),
                fact(ctx.issuer.as_deref()),
                fact(ctx.client_id.as_deref()),
            ],
        }
    }
}

#[derive(Default)]
struct State {
    grants: HashMap<GrantKey, Arc<Grant>>,
    negative: HashMap<DenialKey, Instant>,
    jtis: HashMap<String, Instant>,
}

/// Entries beyond which expired ones are swept on insert.
const SWEEP_AT: usize = 4096;

struct Grant {
    expires: Instant,
    max_uses: u32,
    /// Uses reserved through this process (with shared state: only a bound
    /// for the outage grace; the shared counter decides).
    uses: AtomicU32,
    /// With shared state: the backend and the grant's shared use counter.
    shared: Option<(Arc<SharedState>, StateKey)>,
    /// With shared state: when (ms since the policy's epoch, plus one; 0:
    /// never) the backend last confirmed a use.
    confirmed: AtomicU64,
    /// The sender binding the grant is bound to, as [`Policy::binding_tag`]
    /// names it (with shared state: as agreed between replicas).
    binding: Option<String>,
    decision_id: Option<String>,
    /// Obligation: the read must be response-wrapped with this TTL.
    wrap_ttl: Option<Duration>,
}

impl Grant {
    /// Reserves one use; false when exhausted.
    fn reserve(&self) -> bool {
        self.uses
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                (u < self.max_uses).then_some(u + 1)
            })
            .is_ok()
    }
}

/// One reserved use of a grant: the read may proceed. Returned with
/// [`Permit::refund`] when the read fails.
pub(crate) struct Permit {
    grant: Option<Arc<Grant>>,
    /// False for a reference repeated in one call: the first occurrence
    /// holds the use.
    reserved: bool,
}

impl Permit {
    /// No policy: nothing to reserve.
    pub(crate) fn unrestricted() -> Permit {
        Permit {
            grant: None,
            reserved: false,
        }
    }

    /// The same grant for a repeat of a reference within one call, without
    /// a use of its own (the provider is asked once for both).
    fn repeat(&self) -> Permit {
        Permit {
            grant: self.grant.clone(),
            reserved: false,
        }
    }

    /// Gives the reserved use back (the read failed).
    pub(crate) fn refund(&self) {
        if let Some(g) = self.grant.as_ref().filter(|_| self.reserved) {
            let _ = g
                .uses
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| u.checked_sub(1));
            if let Some((shared, counter)) = g.shared.clone() {
                // Best effort, off the caller's path: a lost refund costs
                // the caller one use, never grants an extra one.
                tokio::spawn(async move {
                    if let Err(e) = shared.backend().decr(&counter).await {
                        tracing::debug!(error_code = %e.code(), "grant use not given back");
                    }
                });
            }
        }
    }

    /// The decision id behind the grant, for audit.
    pub(crate) fn decision_id(&self) -> Option<&str> {
        self.grant.as_ref()?.decision_id.as_deref()
    }

    /// The grant's response-wrapping obligation, if any.
    pub(crate) fn wrap_ttl(&self) -> Option<Duration> {
        self.grant.as_ref()?.wrap_ttl
    }
}

/// The refusal of a read whose grant obliges a response-wrapped read that
/// the reference's provider cannot do ([`crate::Provider::with_wrap_ttl`]
/// answered `None`): `permission_denied`, remote code
/// [`OBLIGATION_UNSUPPORTED`].
pub(crate) fn obligation_unsupported(r: &SecretRef) -> Error {
    Error::new(
        ErrorCode::PermissionDenied,
        "access denied: the grant requires a response-wrapped read, which this reference's provider cannot do",
    )
    .with_remote_code(OBLIGATION_UNSUPPORTED)
    .with_reference(r.to_canonical())
    .with_hint("only providers with the wrap capability (Vault / OpenBao) can meet it")
}

/// What the policy granted one operation decided with
/// [`Resolver::authorize_as`](crate::Resolver::authorize_as): the
/// obligations the caller must meet while serving it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Authorization {
    /// The answer must be response-wrapped with this TTL.
    pub wrap_ttl: Option<Duration>,
    /// The PDP's decision id, if it gave one.
    pub decision_id: Option<String>,
}

/// A refusal, with the decision id when the PDP gave one.
#[derive(Clone)]
pub(crate) struct Refusal {
    pub(crate) error: Error,
    pub(crate) decision_id: Option<String>,
}

impl From<Error> for Refusal {
    fn from(error: Error) -> Self {
        Refusal {
            error,
            decision_id: None,
        }
    }
}

fn denied(remote: &'static str, message: &'static str, r: &SecretRef) -> Error {
    Error::new(ErrorCode::PermissionDenied, message)
        .with_remote_code(remote)
        .with_reference(r.to_canonical())
}

impl Policy {
    /// An enforcement point with these settings and decision point.
    pub fn new(settings: PolicySettings, pdp: Arc<dyn Pdp>) -> Policy {
        Policy {
            settings,
            pdp,
            state: Mutex::new(State::default()),
            shared: None,
            epoch: Instant::now(),
            issuing: SingleFlight::new(),
        }
    }

    /// Keeps grants' use counts, the `jti` replay window and denials in
    /// `shared` (`[state] backend = "redis"`), so that several replicas
    /// enforce one policy: a one-use grant is used once across all of them,
    /// a `jti` seen by one is a replay on every other. Grants themselves
    /// (the PDP's answers) are agreed on through the backend too (the first
    /// replica's terms win), so all replicas count against one limit.
    #[must_use]
    pub fn with_shared_state(mut self, shared: SharedState) -> Policy {
        self.shared = Some(Arc::new(shared));
        self
    }

    /// The local rules PDP of `settings` (or its AuthZEN PDP when
    /// `[policy.pdp]` is set; the bearer token is read from `env`).
    pub fn from_settings(settings: PolicySettings, env: &Env) -> Result<Policy> {
        let defaults = settings.default_terms();
        let pdp: Arc<dyn Pdp> = match &settings.pdp {
            Some(p) => {
                let timeout = match p.timeout_seconds {
                    Some(t) => crate::config::check_timeout("policy.pdp.timeout_seconds", t)?,
                    None => Duration::from_secs(5),
                };
                let token = match &p.token_env {
                    Some(var) => Some(Secret::from(env.get(var).ok_or_else(|| {
                        Error::config(format!("policy.pdp.token_env: ${var} is not set"))
                    })?)),
                    None => None,
                };
                Arc::new(AuthZenPdp::new(
                    &p.url,
                    ClientOptions::default().timeout(timeout),
                    token,
                    defaults,
                )?)
            }
            None => Arc::new(RulesPdp::new(settings.rules.clone(), defaults)),
        };
        Ok(Policy::new(settings, pdp))
    }

    /// Parses `[policy]` strictly and builds the enforcement point.
    pub fn from_table(table: &toml::Table, env: &Env) -> Result<Policy> {
        Policy::from_settings(PolicySettings::from_table(table)?, env)
    }

    /// Takes over `old`'s token-id (`jti`) replay cache, so a reload that
    /// replaces the policy cannot be used to replay a token seen before it.
    /// Grants and denials are not taken: they are decisions of the old rules.
    pub(crate) fn adopt_replay_cache(&self, old: &Policy) {
        let jtis = old.state.lock().jtis.clone();
        self.state.lock().jtis.extend(jtis);
    }

    /// The settings.
    pub fn settings(&self) -> &PolicySettings {
        &self.settings
    }

    /// Decides every reference of one call; each answer is a reserved use
    /// or a refusal. Never touches a provider or the value cache.
    pub(crate) async fn authorize(
        &self,
        ctx: &Context,
        refs: &[SecretRef],
        action: &'static str,
    ) -> Vec<std::result::Result<Permit, Refusal>> {
        let subject: Arc<str> = ctx.subject_or_anonymous().into();
        let tenant: Arc<str> = ctx
            .tenant
            .as_deref()
            .filter(|t| !t.is_empty())
            .unwrap_or(&self.settings.tenant)
            .into();
        let audience_ok = ctx.audience.is_empty() || ctx.audience.contains(&self.settings.audience);
        let keys: Vec<GrantKey> = refs
            .iter()
            .map(|r| (subject.clone(), tenant.clone(), r.canonical_arc(), action))
            .collect();
        // One call is one request: its token's jti is checked (and recorded)
        // once, when any reference needs a new grant.
        let now = Instant::now();
        let any_miss = keys.iter().any(|k| self.live_grant(k, now).is_none());
        let replayed = if any_miss {
            self.record_jti(ctx, now).await.map(|fresh| !fresh)
        } else {
            Ok(false)
        };
        // A reference repeated in one call is decided once and uses one
        // grant use (the resolver reads it once).
        let mut first_of: HashMap<&str, usize> = HashMap::new();
        let firsts: Vec<usize> = (0..refs.len())
            .filter(|&i| *first_of.entry(refs[i].to_canonical()).or_insert(i) == i)
            .collect();
        // Decisions for different references run concurrently (an HTTP PDP
        // is one round trip per new grant).
        let decided =
            join_all(firsts.iter().map(|&i| {
                self.authorize_one(ctx, &refs[i], keys[i].clone(), audience_ok, &replayed)
            }))
            .await;
        let mut out: Vec<Option<std::result::Result<Permit, Refusal>>> =
            (0..refs.len()).map(|_| None).collect();
        for (i, d) in firsts.into_iter().zip(decided) {
            out[i] = Some(d);
        }
        for i in 0..refs.len() {
            if out[i].is_none() {
                let first = first_of[refs[i].to_canonical()];
                out[i] = Some(match out[first].as_ref().expect("decided") {
                    Ok(p) => Ok(p.repeat()),
                    Err(refusal) => Err(refusal.clone()),
                });
            }
        }
        out.into_iter().map(|d| d.expect("decided")).collect()
    }

    async fn authorize_one(
        &self,
        ctx: &Context,
        r: &SecretRef,
        key: GrantKey,
        audience_ok: bool,
        replayed: &Result<bool>,
    ) -> std::result::Result<Permit, Refusal> {
        let now = Instant::now();
        self.mount_guard(&key.1, r)?;
        let denial = DenialKey::new(key.clone(), ctx);
        // An unreachable shared backend fails closed, except for a grant
        // confirmed within the configured grace.
        let hit = match self.negative_hit(&denial, now).await {
            Ok(hit) => hit,
            Err(_) if self.in_grace(&key, now) => false,
            Err(e) => return Err(e.with_reference(r.to_canonical()).into()),
        };
        if hit {
            return Err(denied(AUTHZ_FAILED, "access denied (recent denial)", r).into());
        }
        // Audience, replay and drift are facts of this request only: not
        // negative-cached (see the module docs).
        if !audience_ok {
            return Err(denied(
                AUTHZ_FAILED,
                "access denied: the token is not for this audience",
                r,
            )
            .into());
        }
        let binding = ctx.binding();
        let tag = binding.map(|b| self.binding_tag(b));
        let grant = match (self.live_grant(&key, now), replayed) {
            (Some(g), _) => g,
            (None, Err(e)) => return Err(e.clone().with_reference(r.to_canonical()).into()),
            (None, Ok(true)) => {
                return Err(denied(AUTHZ_FAILED, "access denied: token replayed", r).into());
            }
            (None, Ok(false)) => self.issue(ctx, r, &key, &denial, binding).await?,
        };
        if grant.binding.is_some() && grant.binding != tag {
            return Err(denied(
                BINDING_DRIFT,
                "access denied: the sender binding differs from the grant's",
                r,
            )
            .into());
        }
        let reserved = match self.reserve(&grant, now).await {
            Ok(reserved) => reserved,
            Err(e) => return Err(e.with_reference(r.to_canonical()).into()),
        };
        if !reserved {
            self.remember_denial(denial, now).await;
            return Err(denied(AUTHZ_FAILED, "access denied: grant uses exhausted", r).into());
        }
        Ok(Permit {
            grant: Some(grant),
            reserved: true,
        })
    }

    fn mount_guard(&self, tenant: &str, r: &SecretRef) -> Result<()> {
        if self.settings.tenants.is_empty() {
            return Ok(());
        }
        let Some(t) = self.settings.tenants.get(tenant) else {
            return Err(denied(AUTHZ_FAILED, "access denied: unknown tenant", r));
        };
        SecretRef::parse_for_tenant(r.to_canonical(), tenant, &t.allowed_mounts).map(|_| ())
    }

    /// Reserves one use of `grant`: in this process, or with shared state
    /// on the backend's counter (atomic across replicas). A backend failure
    /// is an error unless the grant was confirmed within the grace; then
    /// the use is counted here against `max_uses`.
    async fn reserve(&self, grant: &Grant, now: Instant) -> Result<bool> {
        let Some((shared, counter)) = &grant.shared else {
            return Ok(grant.reserve());
        };
        let window = grant.expires.saturating_duration_since(now);
        match shared
            .backend()
            .incr_within(counter, u64::from(grant.max_uses), window)
            .await
        {
            Ok(Some(_)) => {
                let _ = grant
                    .uses
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                        Some(u.saturating_add(1))
                    });
                grant.confirmed.store(self.stamp(now), Ordering::Release);
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(_) if self.confirmed_within_grace(grant, now) => {
                tracing::warn!("shared state unavailable: honouring a recently confirmed grant");
                Ok(grant.reserve())
            }
            Err(e) => Err(e),
        }
    }

    /// `now` as a `confirmed` stamp (never 0, which means "never").
    fn stamp(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64 + 1
    }

    fn confirmed_within_grace(&self, grant: &Grant, now: Instant) -> bool {
        let Some(shared) = &self.shared else {
            return false;
        };
        let at = grant.confirmed.load(Ordering::Acquire);
        at != 0
            && !shared.grace().is_zero()
            && self.stamp(now).saturating_sub(at) <= shared.grace().as_millis() as u64
    }

    /// Whether `key` has a live grant the outage grace covers.
    fn in_grace(&self, key: &GrantKey, now: Instant) -> bool {
        self.live_grant(key, now)
            .is_some_and(|g| self.confirmed_within_grace(&g, now))
    }

    /// The shared backend key of a grant key (of `kind`).
    fn shared_key(shared: &SharedState, kind: &str, key: &GrantKey) -> StateKey {
        shared.key(
            kind,
            &[
                key.0.as_bytes(),
                key.1.as_bytes(),
                key.2.as_bytes(),
                key.3.as_bytes(),
            ],
        )
    }

    /// How a grant names its sender binding: the binding itself, or with
    /// shared state its keyed MAC, which replicas agree on through the
    /// backend (the first replica's binding wins everywhere, as its use
    /// limit does) without a thumbprint in Redis.
    fn binding_tag(&self, binding: &str) -> String {
        match &self.shared {
            Some(shared) => {
                let k = shared.key("binding", &[binding.as_bytes()]);
                k.as_str().rsplit(':').next().unwrap_or_default().to_owned()
            }
            None => binding.to_owned(),
        }
    }

    /// The shared backend key of a denial.
    fn denial_shared_key(shared: &SharedState, key: &DenialKey) -> StateKey {
        let g = &key.grant;
        let mut parts: Vec<&[u8]> = vec![
            g.0.as_bytes(),
            g.1.as_bytes(),
            g.2.as_bytes(),
            g.3.as_bytes(),
        ];
        // A presence byte before each fact, so absent and empty differ.
        for f in &key.facts {
            match f {
                Some(v) => parts.extend([b"1".as_slice(), v.as_bytes()]),
                None => parts.push(b"0"),
            }
        }
        shared.key("deny", &parts)
    }

    async fn negative_hit(&self, key: &DenialKey, now: Instant) -> Result<bool> {
        if let Some(shared) = &self.shared {
            return shared
                .backend()
                .contains(&Self::denial_shared_key(shared, key))
                .await;
        }
        let mut st = self.state.lock();
        match st.negative.get(key) {
            Some(until) if *until > now => Ok(true),
            Some(_) => {
                st.negative.remove(key);
                Ok(false)
            }
            None => Ok(false),
        }
    }

    async fn remember_denial(&self, key: DenialKey, now: Instant) {
        let jitter_ms = self.settings.negative_jitter.as_millis() as u64;
        let jitter = Duration::from_millis(fastrand::u64(0..=jitter_ms));
        if let Some(shared) = &self.shared {
            // The denial is answered either way; a lost entry only means
            // the next request asks again.
            let k = Self::denial_shared_key(shared, &key);
            let ttl = self.settings.negative_ttl + jitter;
            if let Err(e) = shared.backend().mark(&k, ttl).await {
                tracing::debug!(error_code = %e.code(), "denial not recorded in shared state");
            }
            return;
        }
        let until = now + self.settings.negative_ttl + jitter;
        let mut st = self.state.lock();
        if st.negative.len() >= SWEEP_AT {
            st.negative.retain(|_, u| *u > now);
        }
        st.negative.insert(key, until);
    }

    fn live_grant(&self, key: &GrantKey, now: Instant) -> Option<Arc<Grant>> {
        let mut st = self.state.lock();
        match st.grants.get(key) {
            Some(g) if g.expires > now => Some(g.clone()),
            Some(_) => {
                st.grants.remove(key);
                None
            }
            None => None,
        }
    }

    /// True when the call's `jti` is fresh (and now recorded) or absent.
    /// With shared state, fresh across every replica (`SET NX PX`).
    async fn record_jti(&self, ctx: &Context, now: Instant) -> Result<bool> {
        let Some(jti) = ctx.token_jti.as_deref().filter(|j| !j.is_empty()) else {
            return Ok(true);
        };
        if let Some(shared) = &self.shared {
            let k = shared.key("jti", &[jti.as_bytes()]);
            return shared
                .backend()
                .use_once(&k, self.settings.replay_window)
                .await;
        }
        let mut st = self.state.lock();
        if st.jtis.get(jti).is_some_and(|until| *until > now) {
            return Ok(false);
        }
        if st.jtis.len() >= SWEEP_AT {
            st.jtis.retain(|_, u| *u > now);
        }
        st.jtis
            .insert(jti.to_owned(), now + self.settings.replay_window);
        Ok(true)
    }

    /// Asks the PDP for a grant, once per key however many callers miss at
    /// the same time.
    async fn issue(
        &self,
        ctx: &Context,
        r: &SecretRef,
        key: &GrantKey,
        denial: &DenialKey,
        binding: Option<&str>,
    ) -> std::result::Result<Arc<Grant>, Refusal> {
        self.issuing
            .run(denial.clone(), || async {
                // A grant may have been issued since this caller missed.
                match self.live_grant(key, Instant::now()) {
                    Some(g) => Ok(g),
                    None => self.ask_pdp(ctx, r, key, denial, binding).await,
                }
            })
            .await
    }

    async fn ask_pdp(
        &self,
        ctx: &Context,
        r: &SecretRef,
        key: &GrantKey,
        denial: &DenialKey,
        binding: Option<&str>,
    ) -> std::result::Result<Arc<Grant>, Refusal> {
        let request = AccessRequest {
            subject: &key.0,
            tenant: &key.1,
            resource: r.to_canonical(),
            action: key.3,
            binding,
            context: ctx,
        };
        // Effect and decision id only: the resource is a reference path.
        let span = tracing::debug_span!(
            "secref.policy",
            action = ?key.3,
            effect = field::Empty,
            decision_id = field::Empty,
            error_code = field::Empty,
        );
        let decision = self.pdp.evaluate(&request).instrument(span.clone()).await;
        match &decision {
            Ok(Decision::Deny { decision_id }) => {
                span.record("effect", "deny");
                span.record("decision_id", decision_id.as_deref());
            }
            Ok(Decision::Allow(terms)) => {
                span.record("effect", "allow");
                span.record("decision_id", terms.decision_id.as_deref());
            }
            Err(e) => {
                span.record("error_code", e.code().as_str());
            }
        }
        let decision = decision.map_err(|e| {
            tracing::debug!(error_code = %e.code(), "policy decision point unavailable");
            Error::new(
                ErrorCode::BackendUnavailable,
                format!("the policy decision point is unavailable ({})", e.code()),
            )
            .with_retryable(true)
            .with_remote_code(PDP_UNAVAILABLE)
            .with_reference(r.to_canonical())
        })?;
        let now = Instant::now();
        match decision {
            Decision::Deny { decision_id } => {
                crate::metrics::policy_decision(false);
                self.remember_denial(denial.clone(), now).await;
                Err(Refusal {
                    error: denied(DENY, "access denied by policy", r),
                    decision_id,
                })
            }
            Decision::Allow(terms) => {
                crate::metrics::policy_decision(true);
                let mut expires = now + terms.ttl;
                let mut max_uses = terms.max_uses.max(1);
                let mut shared_counter = None;
                let mut bound = binding.map(|b| self.binding_tag(b));
                if let Some(shared) = &self.shared {
                    // Replicas agree on one grant per key (the first one's
                    // id, use limit and expiry), so they count against one
                    // limit; its counter is keyed by the grant's id, so a
                    // later grant starts at zero.
                    let k = Self::shared_key(shared, "grant", key);
                    // `id:max_uses:binding tag` (the tag empty when unbound).
                    let proposal = format!(
                        "{}:{max_uses}:{}",
                        uuid::Uuid::new_v4().simple(),
                        bound.as_deref().unwrap_or_default()
                    );
                    let claimed = shared
                        .backend()
                        .claim(&k, &proposal, terms.ttl)
                        .await
                        .map_err(|e| e.with_reference(r.to_canonical()))?;
                    let mut fields = claimed.value.splitn(3, ':');
                    let id = fields.next().unwrap_or_default();
                    max_uses = fields
                        .next()
                        .and_then(|u| u.parse().ok())
                        .unwrap_or(1)
                        .max(1);
                    bound = fields.next().filter(|t| !t.is_empty()).map(str::to_owned);
                    expires = now + claimed.remaining;
                    let counter = shared.key("uses", &[k.as_str().as_bytes(), id.as_bytes()]);
                    shared_counter = Some((shared.clone(), counter));
                    if let Err(e) = shared
                        .backend()
                        .forget(&Self::denial_shared_key(shared, denial))
                        .await
                    {
                        tracing::debug!(error_code = %e.code(), "denial not cleared in shared state");
                    }
                }
                let grant = Arc::new(Grant {
                    expires,
                    max_uses,
                    uses: AtomicU32::new(0),
                    shared: shared_counter,
                    confirmed: AtomicU64::new(0),
                    binding: bound,
                    decision_id: terms.decision_id,
                    wrap_ttl: terms.wrap_ttl,
                });
                let mut st = self.state.lock();
                if st.grants.len() >= SWEEP_AT {
                    st.grants.retain(|_, g| g.expires > now);
                }
                st.grants.insert(key.clone(), grant.clone());
                st.negative.remove(denial);
                Ok(grant)
            }
        }
    }
}
