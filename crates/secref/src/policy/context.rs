//! [`Context`]: who is asking, for which tenant, with which token.

/// The caller's identity for one request, as the policy enforcement point
/// sees it (the reference SDK's `ExecutionContext`).
///
/// Every field is optional: [`Context::anonymous`] is what plain
/// [`Resolver::resolve`](crate::Resolver::resolve) uses. None of these fields
/// is a credential (a token's `jti` and a key thumbprint identify a token or
/// key, they do not grant anything), so `Debug` shows them.
///
/// ```
/// use secref::policy::Context;
/// let ctx = Context::from_headers([
///     ("X-Subject", "svc-a"),
///     ("x-aud", "crud.secrets, other"),
///     ("X-JTI", "t-1"),
///     ("x-cnf-jkt", "thumb-1"),
/// ]);
/// assert_eq!(ctx.subject.as_deref(), Some("svc-a"));
/// assert_eq!(ctx.audience, ["crud.secrets", "other"]);
/// assert_eq!(ctx.binding(), Some("thumb-1"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Context {
    /// The authenticated subject (`"anonymous"` when unset).
    pub subject: Option<String>,
    /// The tenant (the policy's default tenant when unset).
    pub tenant: Option<String>,
    /// The token's audiences; empty when the caller has no token.
    pub audience: Vec<String>,
    /// The token's `jti`, for anti-replay.
    pub token_jti: Option<String>,
    /// The DPoP / JWT `cnf.jkt` key thumbprint the token is bound to.
    pub cnf_jkt: Option<String>,
    /// The mTLS client certificate thumbprint the token is bound to.
    pub mtls_thumbprint: Option<String>,
    /// The token's issuer.
    pub issuer: Option<String>,
    /// The OAuth client id (or `azp`).
    pub client_id: Option<String>,
    /// A correlation id carried into audit events.
    pub correlation_id: Option<String>,
}

impl Context {
    /// No identity: subject `anonymous`, the default tenant, no token.
    pub fn anonymous() -> Context {
        Context::default()
    }

    /// A context for a subject.
    pub fn for_subject(subject: impl Into<String>) -> Context {
        Context {
            subject: Some(subject.into()),
            ..Context::default()
        }
    }

    /// Sets the tenant.
    #[must_use]
    pub fn with_tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// Sets the token's audiences.
    #[must_use]
    pub fn with_audience<S: Into<String>>(mut self, aud: impl IntoIterator<Item = S>) -> Self {
        self.audience = aud.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the token's `jti`.
    #[must_use]
    pub fn with_jti(mut self, jti: impl Into<String>) -> Self {
        self.token_jti = Some(jti.into());
        self
    }

    /// Sets the `cnf.jkt` sender binding.
    #[must_use]
    pub fn with_cnf_jkt(mut self, jkt: impl Into<String>) -> Self {
        self.cnf_jkt = Some(jkt.into());
        self
    }

    /// Sets the mTLS thumbprint sender binding.
    #[must_use]
    pub fn with_mtls_thumbprint(mut self, thumbprint: impl Into<String>) -> Self {
        self.mtls_thumbprint = Some(thumbprint.into());
        self
    }

    /// Sets the correlation id.
    #[must_use]
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Reads a context from request headers. Header names match
    /// case-insensitively (HTTP header names are case-insensitive; the
    /// reference SDK only matched lower-case keys): `x-subject`, `x-tenant-id`,
    /// `x-aud` (comma-separated, trimmed, empties dropped), `x-jti`,
    /// `x-cnf-jkt`, `x-mtls-thumbprint`, `x-issuer`, `x-client-id` and
    /// `x-correlation-id`. Empty values count as absent; other headers are
    /// ignored.
    pub fn from_headers<K, V>(headers: impl IntoIterator<Item = (K, V)>) -> Context
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut ctx = Context::default();
        for (name, value) in headers {
            let value = value.as_ref().trim();
            if value.is_empty() {
                continue;
            }
            let slot = match name.as_ref().to_ascii_lowercase().as_str() {
                "x-subject" => &mut ctx.subject,
                "x-tenant-id" => &mut ctx.tenant,
                "x-jti" => &mut ctx.token_jti,
                "x-cnf-jkt" => &mut ctx.cnf_jkt,
                "x-mtls-thumbprint" => &mut ctx.mtls_thumbprint,
                "x-issuer" => &mut ctx.issuer,
                "x-client-id" => &mut ctx.client_id,
                "x-correlation-id" => &mut ctx.correlation_id,
                "x-aud" => {
                    ctx.audience = value
                        .split(',')
                        .map(str::trim)
                        .filter(|a| !a.is_empty())
                        .map(str::to_owned)
                        .collect();
                    continue;
                }
                _ => continue,
            };
            *slot = Some(value.to_owned());
        }
        ctx
    }

    /// The sender binding: `cnf_jkt`, else `mtls_thumbprint` (as the
    /// reference).
    pub fn binding(&self) -> Option<&str> {
        self.cnf_jkt
            .as_deref()
            .or(self.mtls_thumbprint.as_deref())
            .filter(|b| !b.is_empty())
    }

    /// The subject, or `anonymous`.
    pub fn subject_or_anonymous(&self) -> &str {
        self.subject
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or("anonymous")
    }
}
