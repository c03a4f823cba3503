//! Secret references: one grammar for every backend.
//!
//! | scheme | form | provider |
//! |---|---|---|
//! | `secret` | `secret://<environment>/<service>/<kind>/<name>` | SecFlow |
//! | `openbao[+kv2]`, `hashicorp[+kv2]` | `openbao+kv2://<mount>/<path…>[#field][?version=N]` | Vault / OpenBao (no engine = KV v1) |
//! | `db[+cred\|+db]`, `bootstrap`, `yaml` | Canonical Secret URI | parsed for compatibility; no provider yet |
//! | `infisical` | `infisical://<projectId>/<environment>/<folder…>/<KEY>[?version=N]` | Infisical |
//! | `coze+credential` | `coze+credential://<integration_name>` | Coze integration credential |
//! | `coze+env` | `coze+env://<project_id>/<KEY>` | Coze project env var |
//! | `env` | `env://<VAR>` | process environment |
//! | `file` | `file://<path>[#/json/pointer]` | a file (whole, or one JSON value) |
//! | `local` | `local://<path…>[#field][?version=N]` | the embedded encrypted store |
//!
//! The Canonical Secret URI (`openbao+kv2://…`) follows the `secrets_sdk`
//! parser's algorithm check for check, so the canonical form and the error code
//! match it for every input both accept. secref is stricter in these
//! documented ways:
//!
//! * a control character anywhere (a segment ending in a newline, which the
//!   reference's regex lets through) is `illegal_segment`;
//! * a `#` after the `?` (`…?version=3#field`, which the reference silently
//!   reads as `version = "3#field"`) is `ambiguous_query`, with a hint to write
//!   `#field?version=3`;
//! * `version` must be a positive integer (`invalid_reference`);
//! * an empty engine (`openbao+://…`) is `unsupported_engine`;
//! * `file://` belongs to secref's file provider, not the reference's `file`
//!   URI provider. Its path must be absolute and normalised: a `.`, `..` or
//!   empty segment (`//`, trailing `/`) or any `%` is `illegal_segment`, a
//!   relative path `invalid_reference` — rejected, never rewritten, so an
//!   access rule's prefix match on the canonical form is a match on the file
//!   read.
//!
//! The other schemes in the table above (`secret`, `infisical`, `coze+…`,
//! `env`, `local`) are secref's own; the reference rejects them as
//! `UNSUPPORTED_ENGINE`. The tenant mount guard
//! ([`SecretRef::parse_for_tenant`]) runs at the reference's step 9, after the
//! path checks and before the strictness checks above, so a foreign mount is
//! `tenant_mount_mismatch` whatever else secref would object to.
//! `tests/python/test_uri_differential.py` checks all of this against the
//! real `secrets_sdk` 0.1.0 on a few thousand generated inputs.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::error::{Error, ErrorCode, Result};
use crate::registry::ProviderSpec;

/// A parsed, validated secret reference.
///
/// Equality and hashing use the canonical form, so two spellings of the same
/// reference are the same key.
///
/// ```
/// use secref::SecretRef;
/// let r = SecretRef::parse("OpenBao+KV2://secret/myapp/api/#token?version=3").unwrap();
/// assert_eq!(r.to_canonical(), "openbao+kv2://secret/myapp/api#token?version=3");
/// assert_eq!(SecretRef::parse(r.to_canonical()).unwrap(), r);
/// ```
#[derive(Clone)]
pub struct SecretRef {
    kind: Arc<RefKind>,
    canonical: Arc<str>,
    /// The registered provider whose scheme this is.
    spec: &'static ProviderSpec,
}

/// What a reference points at, by backend.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefKind {
    /// `secret://<environment>/<service>/<kind>/<name>`
    SecFlow(SecFlowRef),
    /// A Canonical Secret URI: `openbao+kv2://mount/path#field?version=3`.
    Vault(VaultUri),
    /// `infisical://<projectId>/<environment>/<folder…>/<KEY>`
    Infisical(InfisicalRef),
    /// `coze+credential://<integration_name>`
    CozeCredential {
        /// The integration's name.
        integration: String,
    },
    /// `coze+env://<project_id>/<KEY>`
    CozeEnv {
        /// The Coze project id.
        project_id: String,
        /// The variable's key.
        key: String,
    },
    /// `env://<VAR>`
    Env {
        /// The environment variable's name.
        var: String,
    },
    /// `file:///<absolute path>[#pointer]`
    File {
        /// The file's absolute, normalised path (no `.`, `..` or empty
        /// segments, no `%`).
        path: String,
        /// A JSON pointer (`/a/b`) or dotted path (`a.b`) into the file.
        pointer: Option<String>,
    },
    /// `local://<path…>[#field]`
    Local(LocalRef),
    /// Any provider without a variant of its own: its parts, as its
    /// [`ProviderSpec::parse`] produced them. New providers use this, so a
    /// backend needs no new variant here.
    Generic(GenericRef),
}

/// The parsed form of a reference whose provider has no [`RefKind`] variant:
/// named parts in the provider's order (e.g. `region`, `secret_id`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GenericRef {
    /// The parts, in the order the provider's parser produced them.
    pub parts: Vec<(String, String)>,
}

impl GenericRef {
    /// A part's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.parts
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// What a [`ProviderSpec::parse`] function gets: the lower-cased scheme,
/// the text after `://`, and the tenant mount guard.
pub struct ParseInput<'a> {
    /// The scheme, lower case (`openbao+kv2`).
    pub scheme: &'a str,
    /// Everything after `://`, as written.
    pub rest: &'a str,
    guard: &'a MountGuard<'a>,
}

impl ParseInput<'_> {
    /// Applies the tenant mount guard ([`SecretRef::parse_for_tenant`]) to
    /// the reference's mount (its first segment); a no-op for a plain
    /// [`SecretRef::parse`].
    pub fn check_mount(&self, mount: &str) -> Result<()> {
        self.guard.check(mount)
    }
}

/// What a [`ProviderSpec::parse`] function returns: the parsed form and the
/// canonical text (`parse(canonical)` must give the same reference back).
#[derive(Debug)]
pub struct ParsedRef {
    /// The parsed form.
    pub kind: RefKind,
    /// The canonical text, including `scheme://`.
    pub canonical: String,
}

impl ParsedRef {
    /// A parsed reference.
    pub fn new(kind: RefKind, canonical: String) -> ParsedRef {
        ParsedRef { kind, canonical }
    }

    /// A [`RefKind::Generic`] reference from its canonical text and parts.
    pub fn generic(canonical: String, parts: Vec<(String, String)>) -> ParsedRef {
        ParsedRef::new(RefKind::Generic(GenericRef { parts }), canonical)
    }
}

/// A SecFlow SecretRef.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecFlowRef {
    /// `dev`, `stage`, `prod`, `shared`, …
    pub environment: String,
    /// The service (namespace) name.
    pub service: String,
    /// The secret's kind, e.g. `token` or `password`.
    pub kind: String,
    /// The secret's name.
    pub name: String,
}

/// A Canonical Secret URI (`secrets_sdk` grammar).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultUri {
    /// `openbao`, `hashicorp`, `db`, `bootstrap` or `yaml`.
    pub provider: String,
    /// `kv2`, `cred`, … or `None` when the scheme has no `+engine`.
    pub engine: Option<String>,
    /// The first path segment.
    pub mount: String,
    /// The path below the mount.
    pub path: Vec<String>,
    /// The `#field` to pick, if any.
    pub field: Option<String>,
    /// Query parameters, sorted by key.
    pub params: Vec<(String, String)>,
}

impl VaultUri {
    /// The pinned `version` parameter, if any (validated to be positive).
    pub fn version(&self) -> Option<u64> {
        self.param("version").and_then(|v| v.parse().ok())
    }

    /// A query parameter's value.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The path below the mount, joined with `/`.
    pub fn path_string(&self) -> String {
        self.path.join("/")
    }
}

/// An Infisical secret reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfisicalRef {
    /// The project (workspace) id.
    pub project_id: String,
    /// The environment slug.
    pub environment: String,
    /// The folder path, always starting with `/`.
    pub secret_path: String,
    /// The secret's key.
    pub key: String,
    /// A pinned version, if any.
    pub version: Option<u64>,
}

/// A reference into the embedded local store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalRef {
    /// The entry's path segments.
    pub path: Vec<String>,
    /// One field of a structured entry, if any.
    pub field: Option<String>,
    /// A pinned version (`?version=N`); `None` reads the current one.
    pub version: Option<u64>,
}

impl LocalRef {
    /// The entry's name in the store (`app/db`).
    pub fn entry(&self) -> String {
        self.path.join("/")
    }
}

/// The schemes of the Canonical Secret URI grammar and their allowed engines.
const URI_PROVIDERS: &[(&str, &[&str])] = &[
    ("openbao", &["kv2"]),
    ("hashicorp", &["kv2"]),
    ("db", &["cred", "db"]),
    ("bootstrap", &[]),
    ("yaml", &[]),
];

impl SecretRef {
    /// Parses any supported reference.
    ///
    /// ```
    /// use secref::{ErrorCode, RefKind, SecretRef};
    /// let r = SecretRef::parse("local://app/db#password").unwrap();
    /// assert!(matches!(r.kind(), RefKind::Local(_)));
    /// let err = SecretRef::parse("openbao+kv2://secret/a/../b").unwrap_err();
    /// assert_eq!(err.code(), ErrorCode::IllegalSegment);
    /// ```
    pub fn parse(input: impl AsRef<str>) -> Result<SecretRef> {
        let input = input.as_ref();
        parse_any(input, &MountGuard::OFF).map_err(|e| e.with_reference(printable(input)))
    }

    /// Parses a reference and applies the tenant mount guard: a Canonical
    /// Secret URI or `local://` reference whose mount (first segment) is not
    /// in `allowed_mounts` is rejected with `tenant_mount_mismatch`. An empty
    /// list disables the guard, as in the reference SDK.
    ///
    /// ```
    /// use secref::{ErrorCode, SecretRef};
    /// let ok = SecretRef::parse_for_tenant("openbao+kv2://secret/a", "dev", &["secret"]);
    /// assert!(ok.is_ok());
    /// let err = SecretRef::parse_for_tenant("openbao+kv2://other/a", "dev", &["secret"]).unwrap_err();
    /// assert_eq!(err.code(), ErrorCode::TenantMountMismatch);
    /// ```
    pub fn parse_for_tenant<S: AsRef<str>>(
        input: &str,
        tenant: &str,
        allowed_mounts: &[S],
    ) -> Result<SecretRef> {
        let allowed: Vec<&str> = allowed_mounts.iter().map(AsRef::as_ref).collect();
        let guard = MountGuard {
            tenant,
            allowed: &allowed,
        };
        // Each provider's parser applies the guard to its mount (a Canonical
        // Secret URI at step 9 of its algorithm, local:// to its first
        // segment).
        parse_any(input, &guard).map_err(|e| e.with_reference(printable(input)))
    }

    /// The canonical string; `parse(r.to_canonical()) == r`.
    pub fn to_canonical(&self) -> &str {
        &self.canonical
    }

    /// The canonical string as a shared pointer (cheap to clone).
    pub fn canonical_arc(&self) -> Arc<str> {
        self.canonical.clone()
    }

    /// What the reference points at.
    pub fn kind(&self) -> &RefKind {
        &self.kind
    }

    /// The scheme as written in the canonical form, e.g. `openbao+kv2`.
    pub fn scheme(&self) -> &str {
        self.canonical
            .split_once("://")
            .map(|(s, _)| s)
            .unwrap_or_default()
    }

    /// The name of the provider family that serves this reference (its
    /// [`ProviderSpec::name`]): `secflow`, `vault`, `db`, `bootstrap`,
    /// `yaml`, `infisical`, `coze`, `env`, `file`, `local`, …
    pub fn provider_family(&self) -> &'static str {
        self.spec.name
    }

    /// The registered provider spec this reference's scheme belongs to.
    pub fn spec(&self) -> &'static ProviderSpec {
        self.spec
    }

    /// The reference's parts in a stable order (what `secref ref` shows),
    /// as its provider's [`ProviderSpec::parts`] names them.
    ///
    /// ```
    /// let r = secref::SecretRef::parse("local://app/db#password").unwrap();
    /// let parts = r.parts();
    /// assert_eq!(parts[0].0, "entry");
    /// assert_eq!(parts[1].1, "password");
    /// ```
    pub fn parts(&self) -> Vec<(&'static str, crate::registry::PartValue)> {
        (self.spec.parts)(self)
    }

    /// Whether the reference names data of the host the resolver runs on —
    /// its process environment (`env://`) or its file system (`file://`) —
    /// rather than a secret store: its provider's
    /// [`ProviderSpec::host_local`] flag. A server that exposes a resolver
    /// to other callers must not hand such data out unless told to
    /// (`secref serve` denies it unless an access rule names it).
    ///
    /// ```
    /// use secref::SecretRef;
    /// assert!(SecretRef::parse("env://HOME").unwrap().is_host_local());
    /// assert!(SecretRef::parse("file:///etc/app.json").unwrap().is_host_local());
    /// assert!(!SecretRef::parse("local://app/db").unwrap().is_host_local());
    /// ```
    pub fn is_host_local(&self) -> bool {
        self.spec.host_local
    }
}

impl PartialEq for SecretRef {
    fn eq(&self, other: &Self) -> bool {
        self.canonical == other.canonical
    }
}
impl Eq for SecretRef {}

impl std::hash::Hash for SecretRef {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.canonical.hash(state)
    }
}

impl PartialOrd for SecretRef {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for SecretRef {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.canonical.cmp(&other.canonical)
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical)
    }
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretRef({})", self.canonical)
    }
}

impl FromStr for SecretRef {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        SecretRef::parse(s)
    }
}

impl serde::Serialize for SecretRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.canonical)
    }
}

impl<'de> serde::Deserialize<'de> for SecretRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SecretRef::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Makes user input safe to echo in an error: control characters escaped,
/// length bounded. References are not secrets, but they may be garbage. A
/// helper for [`ProviderSpec::parse`] functions.
pub fn printable(input: &str) -> String {
    // The bound is on the escaped text: a control character escapes to up
    // to 10 characters, so counting input characters let an error quote
    // ~2.5 KB (found by the `reference` fuzz target).
    const MAX: usize = 256;
    let mut out = String::new();
    for c in input.chars() {
        let escaped = c.escape_debug();
        if out.len() + escaped.len() > MAX {
            out.push('…');
            break;
        }
        out.extend(escaped);
    }
    out
}

pub(crate) fn err(code: ErrorCode, msg: impl Into<String>) -> Error {
    Error::new(code, msg.into())
}

/// The tenant mount guard: the mounts a tenant may read. An empty list turns
/// the guard off, as in the reference SDK.
struct MountGuard<'a> {
    tenant: &'a str,
    allowed: &'a [&'a str],
}

impl MountGuard<'_> {
    const OFF: MountGuard<'static> = MountGuard {
        tenant: "",
        allowed: &[],
    };

    fn check(&self, mount: &str) -> Result<()> {
        if self.allowed.is_empty() || self.allowed.contains(&mount) {
            return Ok(());
        }
        Err(err(
            ErrorCode::TenantMountMismatch,
            format!(
                "mount '{}' is not allowed for tenant '{}'",
                printable(mount),
                printable(self.tenant)
            ),
        ))
    }
}

fn parse_any(input: &str, guard: &MountGuard<'_>) -> Result<SecretRef> {
    let Some((scheme_raw, rest)) = input.split_once("://") else {
        return Err(
            err(ErrorCode::IllegalSegment, "missing scheme delimiter ://")
                .with_hint("write a reference such as local://app/db#password"),
        );
    };
    if scheme_raw.is_empty() {
        return Err(err(ErrorCode::IllegalSegment, "empty scheme"));
    }
    let scheme = scheme_raw.to_lowercase();
    let spec = crate::registry::spec_for_scheme(&scheme)
        .ok_or_else(|| crate::registry::unknown_scheme(&printable(&scheme)))?;
    let parsed = (spec.parse)(&ParseInput {
        scheme: &scheme,
        rest,
        guard,
    })?;
    // A scheme the spec does not list (`secret+x`, `openbao+kv3`) reached
    // its parser only for its error (the Canonical Secret URI parser names
    // the engine, in the reference's check order); it is never a reference.
    if !spec.schemes.contains(&scheme.as_str()) {
        return Err(err(
            ErrorCode::UnsupportedEngine,
            format!("unsupported scheme '{}'", printable(&scheme)),
        )
        .with_hint(format!("{} takes: {}", spec.name, spec.schemes.join(", "))));
    }
    Ok(SecretRef {
        kind: Arc::new(parsed.kind),
        canonical: parsed.canonical.into(),
        spec,
    })
}

/// `[A-Za-z0-9._-]+`, checked without regex so that a trailing newline is not
/// let through (see the module docs).
fn is_plain_segment(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// Checks path segments of a provider's reference: non-empty, not `.` or
/// `..`, no wildcard, only `A-Z a-z 0-9 . _ -` (`what` names the part in
/// the error). A helper for [`ProviderSpec::parse`] functions.
pub fn check_segments<'a>(what: &str, segs: impl IntoIterator<Item = &'a str>) -> Result<()> {
    for seg in segs {
        if seg.is_empty() {
            return Err(err(
                ErrorCode::IllegalSegment,
                format!("empty {what} segment"),
            ));
        }
        if seg == "." || seg == ".." {
            return Err(err(
                ErrorCode::IllegalSegment,
                format!("'{seg}' is not allowed as a {what} segment"),
            ));
        }
        if seg.contains('*') {
            return Err(err(
                ErrorCode::InvalidWildcard,
                format!("wildcards are not allowed in {what} segments"),
            ));
        }
        if !is_plain_segment(seg) {
            return Err(err(
                ErrorCode::IllegalSegment,
                format!(
                    "{what} segment '{}' may only contain A-Z a-z 0-9 . _ -",
                    printable(seg)
                ),
            ));
        }
    }
    Ok(())
}

/// Rejects any `#fragment` or `?query` in a reference of `scheme`. A helper
/// for [`ProviderSpec::parse`] functions.
pub fn reject_query_and_fragment(scheme: &str, rest: &str) -> Result<()> {
    if rest.contains('?') || rest.contains('#') {
        return Err(err(
            ErrorCode::InvalidReference,
            format!("{scheme}:// references take no #fragment or ?query"),
        ));
    }
    Ok(())
}

/// Parses a `version` parameter: a positive integer without leading zeros.
/// A helper for [`ProviderSpec::parse`] functions.
pub fn parse_positive_version(v: &str) -> Result<u64> {
    let ok = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) && !v.starts_with('0');
    match v.parse::<u64>() {
        Ok(n) if ok => Ok(n),
        _ => Err(err(
            ErrorCode::InvalidReference,
            format!("version must be a positive integer, got '{}'", printable(v)),
        )),
    }
}

/// A query that may only hold `version=N` (once, positive).
pub(crate) fn parse_version_query(query: Option<&str>) -> Result<Option<u64>> {
    let mut version = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("version", v)) if version.is_none() => version = Some(parse_positive_version(v)?),
            Some(("version", _)) => {
                return Err(err(ErrorCode::AmbiguousQuery, "version is given twice"))
            }
            _ => {
                return Err(err(
                    ErrorCode::InvalidReference,
                    format!("unknown query parameter '{}'", printable(pair)),
                )
                .with_hint("only ?version=N is supported"))
            }
        }
    }
    Ok(version)
}

pub(crate) fn parse_env(rest: &str) -> Result<ParsedRef> {
    let valid = rest
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid {
        return Err(err(
            ErrorCode::InvalidReference,
            "env:// takes a variable name: a letter or _ followed by letters, digits or _",
        ));
    }
    Ok(ParsedRef::new(
        RefKind::Env {
            var: rest.to_string(),
        },
        format!("env://{rest}"),
    ))
}

/// A `file://` path must be absolute and already normalised, so that the
/// text an access rule matches is the file that is read: no `.` or `..`
/// segments, no empty segment (`//`, a trailing `/`). Such paths are
/// rejected, never rewritten. Percent escapes are not decoded, so `%` is
/// refused outright: `%2e%2e` or `%2f` must not mean one thing to secref and
/// another to a tool that decodes them.
fn check_file_path(path: &str) -> Result<()> {
    let Some(relative) = path.strip_prefix('/') else {
        return Err(err(
            ErrorCode::InvalidReference,
            "file:// takes an absolute path",
        )
        .with_hint("write three slashes: file:///absolute/path"));
    };
    if path.contains('%') {
        return Err(err(
            ErrorCode::IllegalSegment,
            "'%' is not allowed in a file:// path (percent escapes are not decoded)",
        ));
    }
    for seg in relative.split('/') {
        if seg.is_empty() {
            return Err(err(
                ErrorCode::IllegalSegment,
                "empty file:// path segment ('//' or a trailing '/')",
            ));
        }
        if seg == "." || seg == ".." {
            return Err(err(
                ErrorCode::IllegalSegment,
                format!("'{seg}' is not allowed as a file:// path segment"),
            )
            .with_hint("write the normalised absolute path"));
        }
    }
    Ok(())
}

pub(crate) fn parse_file(rest: &str) -> Result<ParsedRef> {
    let (path, pointer) = match rest.split_once('#') {
        Some((p, f)) => (p, Some(f)),
        None => (rest, None),
    };
    if path.is_empty() {
        return Err(err(ErrorCode::InvalidReference, "file:// needs a path")
            .with_hint("file:///run/secrets/app.json"));
    }
    if has_control(rest) {
        return Err(err(
            ErrorCode::IllegalSegment,
            "control characters are not allowed in file:// references",
        ));
    }
    check_file_path(path)?;
    let pointer = match pointer {
        None => None,
        Some("") => {
            return Err(err(
                ErrorCode::InvalidReference,
                "empty #pointer in file:// reference",
            ))
        }
        Some(p) if p.contains('#') => {
            return Err(err(
                ErrorCode::IllegalSegment,
                "multiple fragments not allowed",
            ))
        }
        Some(p) => Some(p.to_string()),
    };
    let mut canonical = format!("file://{path}");
    if let Some(p) = &pointer {
        canonical.push('#');
        canonical.push_str(p);
    }
    Ok(ParsedRef::new(
        RefKind::File {
            path: path.to_string(),
            pointer,
        },
        canonical,
    ))
}

pub(crate) fn parse_local(rest: &str) -> Result<ParsedRef> {
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    if query.is_some_and(|q| q.contains('#')) {
        return Err(err(
            ErrorCode::AmbiguousQuery,
            "a #field after the ?query is ambiguous",
        )
        .with_hint("write local://<entry>#field?version=N"));
    }
    let version = parse_version_query(query)?;
    let (path, field) = match rest.split_once('#') {
        Some((p, f)) => (p, Some(f)),
        None => (rest, None),
    };
    if path.is_empty() {
        return Err(
            err(ErrorCode::IllegalSegment, "local:// needs an entry path")
                .with_hint("local://app/db#password"),
        );
    }
    let segs: Vec<&str> = path.split('/').collect();
    check_segments("local://", segs.iter().copied())?;
    if let Some(f) = field {
        if f.contains('#') {
            return Err(err(
                ErrorCode::IllegalSegment,
                "multiple fragments not allowed",
            ));
        }
        check_segments("local:// field", [f])?;
    }
    let r = LocalRef {
        path: segs.iter().map(|s| s.to_string()).collect(),
        field: field.map(str::to_string),
        version,
    };
    let mut canonical = format!("local://{path}");
    if let Some(f) = &r.field {
        canonical.push('#');
        canonical.push_str(f);
    }
    if let Some(v) = version {
        canonical.push_str(&format!("?version={v}"));
    }
    Ok(ParsedRef::new(RefKind::Local(r), canonical))
}

/// The `secrets_sdk` algorithm (protocols.md §2.2), step for step, followed by
/// secref's documented strictness checks.
///
/// The shared parser of the `openbao`, `hashicorp`, `db`, `bootstrap` and
/// `yaml` schemes; a provider whose references are Canonical Secret URIs
/// calls it from its [`ProviderSpec::parse`].
pub fn parse_canonical_uri(input: &ParseInput<'_>) -> Result<ParsedRef> {
    let (scheme, rest, guard) = (input.scheme, input.rest, input.guard);
    // Steps 2-4: provider and engine.
    let (provider, engine) = match scheme.split_once('+') {
        Some((p, e)) => (p, Some(e)),
        None => (scheme, None),
    };
    let Some((_, engines)) = URI_PROVIDERS.iter().find(|(p, _)| *p == provider) else {
        return Err(err(
            ErrorCode::UnsupportedEngine,
            format!("unsupported scheme '{}'", printable(scheme)),
        )
        .with_hint("use openbao, hashicorp, db, bootstrap or yaml"));
    };
    if let Some(e) = engine.filter(|e| !e.is_empty()) {
        if !engines.contains(&e) {
            return Err(err(
                ErrorCode::UnsupportedEngine,
                format!("engine '{}' is not supported for {provider}", printable(e)),
            ));
        }
    }
    // Step 5: the query starts at the first '?'.
    let (path_frag, query) = match rest.split_once('?') {
        Some((pf, q)) => (pf, Some(q)),
        None => (rest, None),
    };
    // Step 6: the fragment starts at the first '#'.
    let (path, fragment) = match path_frag.split_once('#') {
        Some((p, f)) => (p, Some(f)),
        None => (path_frag, None),
    };
    if fragment.is_some_and(|f| f.contains('#')) {
        return Err(err(
            ErrorCode::IllegalSegment,
            "multiple fragments not allowed",
        ));
    }
    // Step 7: query pairs.
    let mut params: Vec<(String, String)> = Vec::new();
    if let Some(q) = query {
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if params.iter().any(|(pk, _)| pk == k) {
                return Err(err(
                    ErrorCode::AmbiguousQuery,
                    format!("query parameter '{}' is repeated", printable(k)),
                ));
            }
            params.push((k.to_string(), v.to_string()));
        }
        if params.iter().any(|(k, _)| k == "mount") {
            return Err(err(
                ErrorCode::DoubleMountSource,
                "the mount comes from the path; a mount query parameter is not allowed",
            ));
        }
    }
    // Step 8: path checks, with Python's `$` accepting one trailing newline.
    if path.to_lowercase().contains("%2f") || path.contains("..") {
        return Err(err(
            ErrorCode::IllegalSegment,
            "encoded slashes and '..' are not allowed in the path",
        ));
    }
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    if trimmed.is_empty() {
        return Err(err(ErrorCode::IllegalSegment, "missing mount segment"));
    }
    let segs: Vec<&str> = trimmed.split('/').collect();
    if segs.iter().any(|s| s.is_empty()) {
        return Err(err(ErrorCode::IllegalSegment, "empty path segment"));
    }
    for seg in &segs {
        if seg.contains('*') {
            return Err(err(
                ErrorCode::InvalidWildcard,
                "wildcards are not allowed in path segments",
            ));
        }
        if !is_plain_segment(seg.strip_suffix('\n').unwrap_or(seg)) {
            return Err(err(
                ErrorCode::IllegalSegment,
                format!(
                    "path segment '{}' may only contain A-Z a-z 0-9 . _ -",
                    printable(seg)
                ),
            ));
        }
    }
    // Step 9: the tenant mount guard, before secref's own checks so that a
    // foreign mount gets the reference's code whatever else is wrong.
    guard.check(segs[0])?;
    // secref's strictness, after every check the reference makes.
    if engine == Some("") {
        return Err(err(
            ErrorCode::UnsupportedEngine,
            format!("empty engine after '{provider}+'"),
        )
        .with_hint(format!("write {provider}:// or {provider}+kv2://")));
    }
    if segs.iter().any(|s| s.ends_with('\n')) {
        return Err(err(
            ErrorCode::IllegalSegment,
            "a path segment ends with a newline",
        ));
    }
    if query.is_some_and(|q| q.contains('#')) {
        return Err(err(
            ErrorCode::AmbiguousQuery,
            "a '#' after the '?' would become part of a query value",
        )
        .with_hint("put the field before the query: …/path#field?version=3"));
    }
    if fragment.is_some_and(has_control) || query.is_some_and(has_control) {
        return Err(err(
            ErrorCode::IllegalSegment,
            "control characters are not allowed in the field or query",
        ));
    }
    if let Some((_, v)) = params.iter().find(|(k, _)| k == "version") {
        parse_positive_version(v)?;
    }
    // Steps 10-11: canonical form.
    params.sort();
    let field = fragment.filter(|f| !f.is_empty()).map(str::to_string);
    let mut canonical = String::with_capacity(scheme.len() + rest.len() + 3);
    canonical.push_str(scheme);
    canonical.push_str("://");
    canonical.push_str(&segs.join("/"));
    if let Some(f) = &field {
        canonical.push('#');
        canonical.push_str(f);
    }
    for (i, (k, v)) in params.iter().enumerate() {
        canonical.push(if i == 0 { '?' } else { '&' });
        canonical.push_str(k);
        canonical.push('=');
        canonical.push_str(v);
    }
    let uri = VaultUri {
        provider: provider.to_string(),
        engine: engine.map(str::to_string),
        mount: segs[0].to_string(),
        path: segs[1..].iter().map(|s| s.to_string()).collect(),
        field,
        params,
    };
    Ok(ParsedRef::new(RefKind::Vault(uri), canonical))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        SecretRef::parse(s)
            .unwrap_or_else(|e| panic!("{s:?}: {e}"))
            .to_canonical()
            .to_string()
    }

    fn code(s: &str) -> &'static str {
        SecretRef::parse(s)
            .map(|r| panic!("{s:?} parsed as {r}"))
            .unwrap_err()
            .code()
            .as_str()
    }

    #[test]
    fn seed_vectors_reject() {
        let cases = [
            ("hashicorp+kv1://secret/a", "unsupported_engine"),
            ("aws://secret/a", "unsupported_engine"),
            ("yaml+x://secret/a", "unsupported_engine"),
            ("openbao+kv2+x://secret/a", "unsupported_engine"),
            ("openbao+kv2://secret//a", "illegal_segment"),
            ("openbao+kv2://secret/a//", "illegal_segment"),
            ("openbao+kv2:///a", "illegal_segment"),
            ("openbao+kv2://", "illegal_segment"),
            ("://secret/a", "illegal_segment"),
            ("secret/a", "illegal_segment"),
            ("openbao+kv2://secret/a%2Fb", "illegal_segment"),
            ("openbao+kv2://secret/a/../b", "illegal_segment"),
            ("openbao+kv2://secret/a..b", "illegal_segment"),
            ("openbao+kv2://secret/a b", "illegal_segment"),
            ("openbao+kv2://secret/ünicode", "illegal_segment"),
            ("openbao+kv2://secret/a*", "invalid_wildcard"),
            (
                "openbao+kv2://secret/a?version=1&version=2",
                "ambiguous_query",
            ),
            ("openbao+kv2://secret/a?mount=secret", "double_mount_source"),
            ("openbao+kv2://secret/a#k#l", "illegal_segment"),
        ];
        for (input, want) in cases {
            assert_eq!(code(input), want, "{input}");
        }
    }

    #[test]
    fn strictness_choices() {
        assert_eq!(code("openbao+kv2://secret/a\n"), "illegal_segment");
        assert_eq!(
            code("openbao+kv2://secret/myapp/api?version=3#token"),
            "ambiguous_query"
        );
        let e = SecretRef::parse("openbao+kv2://secret/myapp/api?version=3#token").unwrap_err();
        assert!(e.hint().unwrap().contains("#field?version=3"));
        assert_eq!(
            code("openbao+kv2://secret/a?version=0"),
            "invalid_reference"
        );
        assert_eq!(
            code("openbao+kv2://secret/a?version=x"),
            "invalid_reference"
        );
        assert_eq!(code("openbao+://secret/a"), "unsupported_engine");
    }

    #[test]
    fn tenant_guard() {
        let e =
            SecretRef::parse_for_tenant("openbao+kv2://other/a", "t1", &["secret"]).unwrap_err();
        assert_eq!(e.code(), ErrorCode::TenantMountMismatch);
        assert!(SecretRef::parse_for_tenant("openbao+kv2://other/a", "t1", &[] as &[&str]).is_ok());
        assert!(SecretRef::parse_for_tenant("local://secret/a", "t1", &["secret"]).is_ok());
        assert!(SecretRef::parse_for_tenant("local://app/a", "t1", &["secret"]).is_err());
    }

    #[test]
    fn other_schemes() {
        assert_eq!(
            canon("SECRET://dev/example-service/token/app-config"),
            "secret://dev/example-service/token/app-config"
        );
        assert_eq!(code("secret://dev/svc/token"), "invalid_reference");
        let r = SecretRef::parse("infisical://proj-1/dev/app/sub/DB_PASS?version=2").unwrap();
        match r.kind() {
            RefKind::Infisical(i) => {
                assert_eq!(i.secret_path, "/app/sub");
                assert_eq!(i.key, "DB_PASS");
                assert_eq!(i.version, Some(2));
            }
            k => panic!("{k:?}"),
        }
        let r = SecretRef::parse("infisical://proj-1/dev/DB_PASS").unwrap();
        assert!(matches!(r.kind(), RefKind::Infisical(i) if i.secret_path == "/"));
        assert_eq!(
            canon("coze+credential://github"),
            "coze+credential://github"
        );
        assert_eq!(canon("coze+env://123/MY_KEY"), "coze+env://123/MY_KEY");
        assert_eq!(canon("env://HOME"), "env://HOME");
        assert_eq!(code("env://1X"), "invalid_reference");
        assert_eq!(
            canon("file:///etc/app.json#/db/password"),
            "file:///etc/app.json#/db/password"
        );
        assert_eq!(canon("local://app/db#password"), "local://app/db#password");
        assert_eq!(code("local://app/../db"), "illegal_segment");
        assert_eq!(code("local://app/./db"), "illegal_segment");
        assert_eq!(code("local://app//db"), "illegal_segment");
        assert_eq!(code("local://app/%2e%2e/db"), "illegal_segment");
        assert_eq!(code("secret://dev/../token/a"), "illegal_segment");
        assert_eq!(code("secret://dev/app/token/a%2fb"), "illegal_segment");
        assert_eq!(code("infisical://p/dev/../KEY"), "illegal_segment");
        assert_eq!(code("coze+env://1/../K"), "invalid_reference");
        assert_eq!(code("local://app/db#a#b"), "illegal_segment");
        assert_eq!(code("nope"), "illegal_segment");
    }

    #[test]
    fn file_paths_are_absolute_and_normalised() {
        for bad in [
            "file:///srv/allowed/../other/secret.key",
            "file:///srv/allowed/./x",
            "file:///srv//allowed/x",
            "file:///srv/allowed/",
            "file:///",
            "file:///..",
            "file:///srv/allowed/%2e%2e/x",
            "file:///srv/allowed/%2E%2E%2Fx",
            "file:///srv/allowed/a%2fb",
            "file:///srv/allowed/../x#/db/password",
        ] {
            assert_eq!(code(bad), "illegal_segment", "{bad}");
        }
        for relative in [
            "file://srv/x",
            "file://./x",
            "file://localhost/etc/x",
            "file://",
        ] {
            assert_eq!(code(relative), "invalid_reference", "{relative}");
        }
        // Dots inside a name are fine: only whole `.` / `..` segments are not.
        assert_eq!(
            canon("FILE:///srv/allowed/..data/.x..y#/a/b"),
            "file:///srv/allowed/..data/.x..y#/a/b"
        );
    }

    #[test]
    fn errors_echo_input_safely() {
        let e = SecretRef::parse("bad\u{1b}[31m://x").unwrap_err();
        assert!(!e.reference().unwrap().contains('\u{1b}'));
    }
}
