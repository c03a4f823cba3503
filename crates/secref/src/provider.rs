//! The [`Provider`] trait: one backend behind the resolver.
//!
//! A provider answers for the references of one or more schemes. Every method
//! takes a batch and returns one result per reference, in input order: the
//! outer `Result` is a *request-level* failure (the backend could not be asked
//! at all — only these may be answered from a stale cache entry), the inner
//! ones are *item-level* failures (not found, denied, expired …).
//!
//! A new backend is one file implementing this trait; the resolver adds
//! caching, single-flight, retries and tracing around it.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorCode, Result};
use crate::reference::SecretRef;
use crate::secret::Secret;

/// One batch answer: a request-level result wrapping per-item results.
pub type BatchResult<T> = Result<Vec<Result<T>>>;

/// A resolved value with what the backend said about it.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The value.
    pub secret: Secret,
    /// The backend's version or revision id, if it has one.
    pub version: Option<String>,
    /// The lease that came with the value, if any.
    pub lease: Option<Lease>,
    /// When the backend says the value expires, if it does.
    pub expires_at: Option<SystemTime>,
}

impl Resolved {
    /// A value without version, lease or expiry.
    pub fn new(secret: Secret) -> Self {
        Resolved {
            secret,
            version: None,
            lease: None,
            expires_at: None,
        }
    }

    /// Sets the version.
    #[must_use]
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Sets the lease.
    #[must_use]
    pub fn with_lease(mut self, lease: Lease) -> Self {
        self.lease = Some(lease);
        self
    }
}

/// A lease on a dynamic secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The backend's lease id (not a secret: it cannot be used to read the value).
    pub id: String,
    /// How long the lease lasts from issue, if known.
    #[serde(with = "opt_secs")]
    pub ttl: Option<Duration>,
    /// Whether the lease can be renewed.
    pub renewable: bool,
}

/// Non-secret facts about a secret.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// The canonical reference.
    pub reference: String,
    /// The backend's id for the secret, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_id: Option<String>,
    /// The current version or revision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_version: Option<String>,
    /// Creation time (RFC 3339), if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// Last update time (RFC 3339), if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// Expiry (RFC 3339), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Owner, if the backend records one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Whether the backend says the secret needs rotation.
    pub rotation_required: bool,
    /// Tags.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Known versions, oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<VersionInfo>,
    /// Backend-specific non-secret facts.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub custom: BTreeMap<String, String>,
}

/// One version of a versioned secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// The version id.
    pub version: String,
    /// Creation time (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// Soft-deletion time, if deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
    /// Whether the version's data is destroyed.
    pub destroyed: bool,
}

/// The answer to `validate`: does the reference name a usable secret?
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validation {
    /// Whether the reference is valid for this backend.
    pub valid: bool,
    /// Whether the secret exists, if the backend says.
    pub exists: Option<bool>,
    /// The namespace the backend placed it in, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The secret's type, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_type: Option<String>,
}

impl Validation {
    /// A valid reference whose secret does or does not exist, with no
    /// namespace or type: what a backend without those notions answers.
    ///
    /// ```
    /// let v = secref::provider::Validation::existence(false);
    /// assert!(v.valid);
    /// assert_eq!(v.exists, Some(false));
    /// ```
    pub fn existence(exists: bool) -> Validation {
        Validation {
            valid: true,
            exists: Some(exists),
            namespace: None,
            secret_type: None,
        }
    }
}

/// What a permission check asks about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Read the value.
    Read,
    /// Read metadata only.
    MetadataRead,
    /// Revoke a lease.
    LeaseRevoke,
    /// List names (never values).
    List,
    /// Write a new version or change metadata.
    Write,
    /// Soft-delete or undelete versions.
    Delete,
    /// Destroy versions or forget a secret for good.
    Destroy,
}

impl Action {
    /// The wire string (`read`, `metadata_read`, `lease_revoke`, `list`,
    /// `write`, `delete`, `destroy`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::MetadataRead => "metadata_read",
            Action::LeaseRevoke => "lease_revoke",
            Action::List => "list",
            Action::Write => "write",
            Action::Delete => "delete",
            Action::Destroy => "destroy",
        }
    }

    /// Parses the wire string.
    pub fn parse(s: &str) -> Result<Action> {
        match s {
            "read" => Ok(Action::Read),
            "metadata_read" => Ok(Action::MetadataRead),
            "lease_revoke" => Ok(Action::LeaseRevoke),
            "list" => Ok(Action::List),
            "write" => Ok(Action::Write),
            "delete" => Ok(Action::Delete),
            "destroy" => Ok(Action::Destroy),
            other => Err(Error::usage(format!(
                "unknown action '{other}': use read, metadata_read, lease_revoke, list, write, delete or destroy"
            ))),
        }
    }
}

/// The answer to a permission check. A denial is a normal answer, not an error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    /// Whether the action is allowed.
    pub allowed: bool,
    /// The policy decision's id, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision_id: Option<String>,
    /// The revision the decision was made on, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evaluated_revision_id: Option<String>,
}

/// Why leases are revoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokeReason {
    /// The job that used the secret has finished.
    JobCompleted,
    /// An operator asked for it.
    OperatorRequest,
    /// Incident response.
    IncidentResponse,
    /// Cleaning up expired leases.
    ExpiredCleanup,
    /// Anything else.
    Other,
}

impl RevokeReason {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            RevokeReason::JobCompleted => "job_completed",
            RevokeReason::OperatorRequest => "operator_request",
            RevokeReason::IncidentResponse => "incident_response",
            RevokeReason::ExpiredCleanup => "expired_cleanup",
            RevokeReason::Other => "other",
        }
    }

    /// Parses the wire string.
    pub fn parse(s: &str) -> Result<RevokeReason> {
        Ok(match s {
            "job_completed" => RevokeReason::JobCompleted,
            "operator_request" => RevokeReason::OperatorRequest,
            "incident_response" => RevokeReason::IncidentResponse,
            "expired_cleanup" => RevokeReason::ExpiredCleanup,
            "other" => RevokeReason::Other,
            other => return Err(Error::usage(format!("unknown revoke reason '{other}'"))),
        })
    }
}

/// The answer to a lease revocation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRevocation {
    /// The lease id.
    pub lease_id: String,
    /// The backend's status string, e.g. `revoked`.
    pub status: String,
    /// When it was revoked (RFC 3339), if said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

/// One secret found by [`Provider::list`]: a name and a reference, never a
/// value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// Its name relative to the listed prefix (`db#password` under
    /// `local://app/`, `API_KEY` in an Infisical folder, a field of a Vault
    /// secret): what a variable name is derived from.
    pub key: String,
    /// The reference that reads it.
    pub reference: SecretRef,
}

/// What a provider can do beyond reading values: generic code (the policy,
/// the servers) asks this instead of knowing backends by name.
///
/// ```
/// let caps = secref::provider::Capabilities { wrap: true, ..Default::default() };
/// assert!(caps.wrap && !caps.leases);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Reads can be response-wrapped ([`Provider::with_wrap_ttl`]).
    pub wrap: bool,
    /// References can pin a version.
    pub versions: bool,
    /// Values can come with leases ([`Provider::renew_lease`],
    /// [`Provider::revoke_leases`]).
    pub leases: bool,
    /// The backend can list secrets.
    pub list: bool,
    /// The backend can store secrets.
    pub write: bool,
}

impl Capabilities {
    /// Reading only (the default), usable in constants.
    pub const NONE: Capabilities = Capabilities {
        wrap: false,
        versions: false,
        leases: false,
        list: false,
        write: false,
    };
}

/// A secret backend.
///
/// Implementors answer batches; per-item failures go in the inner results.
/// Only `resolve_many` is required; the other operations default to
/// `unsupported`.
///
/// ```
/// use async_trait::async_trait;
/// use secref::provider::{BatchResult, Provider, Resolved};
/// use secref::{Secret, SecretRef};
///
/// #[derive(Debug)]
/// struct Constant;
///
/// #[async_trait]
/// impl Provider for Constant {
///     fn name(&self) -> &str { "constant" }
///     fn families(&self) -> &[&'static str] { &["env"] }
///     async fn resolve_many(&self, refs: &[SecretRef]) -> BatchResult<Resolved> {
///         Ok(refs.iter().map(|_| Ok(Resolved::new(Secret::from("42")))).collect())
///     }
/// }
/// ```
#[async_trait]
pub trait Provider: Send + Sync + fmt::Debug {
    /// The provider instance's name; part of every cache key.
    fn name(&self) -> &str;

    /// The reference families it serves (see [`SecretRef::provider_family`]).
    fn families(&self) -> &[&'static str];

    /// What it can do beyond reading (default: nothing).
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// `r` rewritten so that reading it response-wraps the answer for `ttl`
    /// (a policy's `wrap_ttl` obligation), or `None` when this provider
    /// cannot wrap `r` — the read is then refused, never done unwrapped.
    /// Only asked when [`Capabilities::wrap`] is set.
    fn with_wrap_ttl(&self, r: &SecretRef, ttl: Duration) -> Option<SecretRef> {
        let _ = (r, ttl);
        None
    }

    /// The largest batch it takes in one call; the resolver splits larger ones.
    fn max_batch(&self) -> usize {
        100
    }

    /// Whether the resolver may cache this provider's answers (default yes,
    /// within the TTL). A provider whose data changes under it and is cheap
    /// to read again (the local store) says no: the resolver then asks it on
    /// every read, whatever the cache settings say, so a change is seen at
    /// once.
    fn cacheable(&self) -> bool {
        true
    }

    /// Whether the backend is reachable and secref is authenticated to it,
    /// by the cheapest call that proves both (readiness checks). Default:
    /// ready (local providers; remote ones override it).
    async fn health(&self) -> Result<()> {
        Ok(())
    }

    /// Resolves each reference.
    async fn resolve_many(&self, refs: &[SecretRef]) -> BatchResult<Resolved>;

    /// Non-secret metadata for each reference.
    async fn metadata(&self, refs: &[SecretRef]) -> BatchResult<Metadata> {
        Err(unsupported(self.name(), "metadata", refs))
    }

    /// Checks that each reference names a usable secret, without reading it.
    async fn validate(&self, refs: &[SecretRef]) -> BatchResult<Validation> {
        Err(unsupported(self.name(), "validate", refs))
    }

    /// Asks whether `action` is allowed on each reference.
    async fn permission_check(
        &self,
        refs: &[SecretRef],
        action: Action,
    ) -> BatchResult<Permission> {
        let _ = action;
        Err(unsupported(self.name(), "permission_check", refs))
    }

    /// Every secret under a prefix, sorted by key: `scheme` is one of this
    /// provider's schemes and `prefix` the text after `scheme://` (what a
    /// prefix means is the provider's: a folder, a project, one secret's
    /// fields). Names only; the values are read with
    /// [`resolve_many`](Self::resolve_many). Only asked when
    /// [`Capabilities::list`] is set.
    async fn list(&self, scheme: &str, prefix: &str) -> Result<Vec<Listed>> {
        let _ = prefix;
        Err(Error::new(
            ErrorCode::Unsupported,
            format!(
                "provider '{}' cannot list {scheme}:// prefixes",
                self.name()
            ),
        )
        .with_provider(self.name()))
    }

    /// Renews a lease this provider issued, asking for `increment` more time;
    /// returns the lease as the backend now sees it.
    async fn renew_lease(&self, lease_id: &str, increment: Option<Duration>) -> Result<Lease> {
        let _ = (lease_id, increment);
        Err(Error::new(
            ErrorCode::Unsupported,
            format!("provider '{}' cannot renew leases", self.name()),
        ))
    }

    /// Revokes leases this provider issued.
    async fn revoke_leases(
        &self,
        lease_ids: &[String],
        reason: RevokeReason,
    ) -> BatchResult<LeaseRevocation> {
        let _ = (lease_ids, reason);
        Err(Error::new(
            ErrorCode::Unsupported,
            format!("provider '{}' has no leases to revoke", self.name()),
        ))
    }
}

fn unsupported(provider: &str, op: &str, refs: &[SecretRef]) -> Error {
    let mut e = Error::new(
        ErrorCode::Unsupported,
        format!("provider '{provider}' does not support {op}"),
    )
    .with_provider(provider);
    if let [one] = refs {
        e = e.with_reference(one.to_canonical());
    }
    e
}

mod opt_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_secs))
    }
}
