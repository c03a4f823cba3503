//! AWS Secrets Manager: `aws-sm://<secret-id>[#json-field][?version-stage=S|version-id=V]`.
//!
//! `<secret-id>` is the secret's name or ARN exactly as AWS spells it
//! (`A-Z a-z 0-9 / _ + = . @ - :`). A `#field` picks one top-level key of a
//! JSON `SecretString` (a string as its text, anything else as compact
//! JSON). `version-stage` (`AWSCURRENT`, `AWSPREVIOUS`, a custom label) and
//! `version-id` pin a version; they are mutually exclusive. Binary secrets
//! (`SecretBinary`) are returned as their raw bytes.
//!
//! A batch reads every unpinned secret with `BatchGetSecretValue` (20 ids a
//! call) and pinned ones with `GetSecretValue`; a secret read once serves
//! every field asked of it.

use std::collections::BTreeMap;

use async_trait::async_trait;
use base64::Engine as _;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::{AwsReader, Client, Service, SECRETS_MANAGER};
use crate::error::{Error, ErrorCode, Result};
use crate::provider::{BatchResult, Capabilities, Listed, Provider, Resolved};
use crate::reference::{ParseInput, ParsedRef, RefKind, SecretRef};
use crate::registry::{PartValue, ProviderSpec};
use crate::secret::Secret;

/// `BatchGetSecretValue` takes at most this many ids.
const BATCH: usize = 20;

/// The registry entry.
pub(crate) const SPEC: ProviderSpec = super::spec(
    "aws-sm",
    &["aws-sm"],
    Capabilities {
        versions: true,
        list: true,
        ..Capabilities::NONE
    },
    parse,
    parts,
    super::build::<SecretsManagerProvider>,
);

/// Reads `aws-sm://` references from AWS Secrets Manager.
#[derive(Debug)]
pub struct SecretsManagerProvider {
    client: Client,
}

impl SecretsManagerProvider {
    /// The provider as `cfg` configures it, with credentials from `chain`
    /// ([`super::default_chain`] with links of your own inserted).
    pub fn with_chain(
        cfg: &crate::Config,
        chain: &crate::credentials::CredentialChain<super::Credentials>,
    ) -> Result<SecretsManagerProvider> {
        super::with_chain(cfg, chain)
    }
}

fn bad(code: ErrorCode, msg: impl Into<String>) -> Error {
    Error::new(code, msg.into())
        .with_hint("aws-sm://<secret-id>[#json-field][?version-stage=AWSCURRENT|version-id=…]")
}

fn parse(input: &ParseInput<'_>) -> Result<ParsedRef> {
    let rest = input.rest;
    if rest.chars().any(char::is_control) {
        return Err(bad(
            ErrorCode::IllegalSegment,
            "control characters are not allowed",
        ));
    }
    if let (Some(q), Some(h)) = (rest.find('?'), rest.find('#')) {
        if q < h {
            return Err(bad(
                ErrorCode::AmbiguousQuery,
                "a #field after the ?query is ambiguous: write #field?version-stage=…",
            ));
        }
    }
    let (head, query) = match rest.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (rest, None),
    };
    let (id, field) = match head.split_once('#') {
        Some((i, f)) => (i, Some(f)),
        None => (head, None),
    };
    if id.is_empty() || id.len() > 2048 {
        return Err(bad(
            ErrorCode::InvalidReference,
            "the secret id must have 1 to 2048 characters",
        ));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/_+=.@-:".contains(&b))
    {
        return Err(bad(
            ErrorCode::IllegalSegment,
            "a secret id may only contain A-Z a-z 0-9 / _ + = . @ - :",
        ));
    }
    if field.is_some_and(|f| f.is_empty() || f.contains('#')) {
        return Err(bad(
            ErrorCode::InvalidReference,
            "the #field must be one non-empty key",
        ));
    }
    let mut parts = vec![("secret_id".to_owned(), id.to_owned())];
    if let Some(f) = field {
        parts.push(("field".to_owned(), f.to_owned()));
    }
    let mut pinned: Option<(&str, &str)> = None;
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let valid = match k {
            "version-stage" => {
                (1..=256).contains(&v.len())
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
            }
            "version-id" => {
                (32..=64).contains(&v.len())
                    && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }
            _ => {
                return Err(bad(
                    ErrorCode::InvalidReference,
                    format!(
                        "unknown parameter '{}': use version-stage or version-id",
                        crate::reference::printable(k)
                    ),
                ))
            }
        };
        if pinned.is_some() {
            return Err(bad(
                ErrorCode::AmbiguousQuery,
                "give one of version-stage and version-id, once",
            ));
        }
        if !valid {
            return Err(bad(
                ErrorCode::InvalidReference,
                format!("{k} has an invalid value"),
            ));
        }
        pinned = Some((k, v));
    }
    let mut canonical = format!("aws-sm://{id}");
    if let Some(f) = field {
        canonical.push('#');
        canonical.push_str(f);
    }
    if let Some((k, v)) = pinned {
        canonical.push_str(&format!("?{k}={v}"));
        parts.push((k.replace('-', "_"), v.to_owned()));
    }
    Ok(ParsedRef::generic(canonical, parts))
}

fn parts(r: &SecretRef) -> Vec<(&'static str, PartValue)> {
    let RefKind::Generic(g) = r.kind() else {
        return Vec::new();
    };
    ["secret_id", "field", "version_stage", "version_id"]
        .into_iter()
        .filter_map(|k| g.get(k).map(|v| (k, PartValue::String(v.to_owned()))))
        .collect()
}

/// Which version of which secret: one `GetSecretValue` call.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Key {
    id: String,
    stage: Option<String>,
    version_id: Option<String>,
}

impl Key {
    fn of(r: &SecretRef) -> Result<(Key, Option<&str>)> {
        let RefKind::Generic(g) = r.kind() else {
            return Err(Error::internal("aws-sm provider got a foreign reference"));
        };
        let id = g
            .get("secret_id")
            .ok_or_else(|| Error::internal("aws-sm reference without an id"))?;
        Ok((
            Key {
                id: id.to_owned(),
                stage: g.get("version_stage").map(str::to_owned),
                version_id: g.get("version_id").map(str::to_owned),
            },
            g.get("field"),
        ))
    }
}

/// One secret version as AWS returns it (`GetSecretValue`, or an entry of
/// `BatchGetSecretValue`'s `SecretValues`).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Answer {
    #[serde(rename = "ARN")]
    arn: Option<String>,
    name: Option<String>,
    version_id: Option<String>,
    secret_string: Option<Zeroizing<String>>,
    secret_binary: Option<Zeroizing<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BatchAnswer {
    #[serde(default)]
    secret_values: Vec<Answer>,
    #[serde(default)]
    errors: Vec<BatchError>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BatchError {
    secret_id: Option<String>,
    error_code: Option<String>,
}

/// A read secret version.
#[derive(Clone)]
pub(crate) struct Value {
    secret: Secret,
    binary: bool,
    version_id: Option<String>,
}

impl Value {
    fn from_answer(a: Answer) -> Result<Value> {
        let (secret, binary) = match (a.secret_string, a.secret_binary) {
            (Some(s), _) => (Secret::copy_from(s.as_bytes()), false),
            (None, Some(b)) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b.as_bytes())
                    .map_err(|_| invalid("SecretBinary is not base64"))?;
                (Secret::new(bytes), true)
            }
            // AWS always sends one of the two (a secret without a value
            // is ResourceNotFoundException): an answer with neither is
            // malformed (a proxy's `{}`), not a missing secret — which
            // would be negatively cached.
            (None, None) => {
                return Err(invalid(
                    "the AWS answer carries neither SecretString nor SecretBinary",
                ))
            }
        };
        Ok(Value {
            secret,
            binary,
            version_id: a.version_id,
        })
    }

    /// The whole value, or one top-level key of its JSON.
    fn pick(&self, field: Option<&str>) -> Result<Resolved> {
        let secret = match field {
            None => self.secret.clone(),
            Some(_) if self.binary => {
                return Err(Error::new(
                    ErrorCode::FieldNotFound,
                    "a binary secret has no JSON fields",
                ))
            }
            Some(f) => {
                // serde_json's errors quote no input, only positions.
                let doc: serde_json::Value = serde_json::from_slice(self.secret.expose_bytes())
                    .map_err(|_| {
                        Error::new(ErrorCode::FieldNotFound, "the secret is not a JSON object")
                    })?;
                match doc.get(f) {
                    Some(serde_json::Value::String(s)) => Secret::copy_from(s.as_bytes()),
                    Some(other) => Secret::new(other.to_string().into_bytes()),
                    None => {
                        return Err(Error::new(
                            ErrorCode::FieldNotFound,
                            format!("the secret has no field '{}'", crate::reference::printable(f)),
                        ))
                    }
                }
            }
        };
        let mut r = Resolved::new(secret);
        if let Some(v) = &self.version_id {
            r = r.with_version(v.clone());
        }
        Ok(r)
    }
}

fn invalid(msg: &'static str) -> Error {
    Error::new(ErrorCode::InvalidResponse, msg).with_provider("aws-sm")
}

#[async_trait]
impl AwsReader for SecretsManagerProvider {
    const SERVICE: &'static Service = &SECRETS_MANAGER;
    const BATCH: usize = BATCH;
    type Key = Key;
    type Value = Value;

    fn from_client(client: Client) -> Self {
        SecretsManagerProvider { client }
    }

    fn is_current(key: &Key) -> bool {
        key.stage.is_none() && key.version_id.is_none()
    }

    async fn get(&self, key: &Key) -> Result<Value> {
        let mut body = serde_json::json!({ "SecretId": key.id });
        if let Some(s) = &key.stage {
            body["VersionStage"] = s.as_str().into();
        }
        if let Some(v) = &key.version_id {
            body["VersionId"] = v.as_str().into();
        }
        let answer = self.client.call("GetSecretValue", &body).await?;
        let a: Answer = serde_json::from_slice(&answer)
            .map_err(|_| invalid("GetSecretValue's answer is not understood"))?;
        Value::from_answer(a)
    }

    /// Unpinned secrets by `BatchGetSecretValue`.
    async fn batch(&self, ids: &[&Key], out: &mut BTreeMap<Key, Result<Value>>) -> Result<()> {
        let list: Vec<&str> = ids.iter().map(|k| k.id.as_str()).collect();
        let answer = match self
            .client
            .call(
                "BatchGetSecretValue",
                &serde_json::json!({ "SecretIdList": list }),
            )
            .await
        {
            Ok(a) => a,
            Err(e) if super::is_request_level(&e) => return Err(e),
            // E.g. no secretsmanager:BatchGetSecretValue permission: the
            // single reads below still may be allowed.
            Err(_) => return Ok(()),
        };
        let b: BatchAnswer = serde_json::from_slice(&answer)
            .map_err(|_| invalid("BatchGetSecretValue's answer is not understood"))?;
        for a in b.secret_values {
            let Some(key) = ids
                .iter()
                .find(|k| a.name.as_deref() == Some(&k.id) || a.arn.as_deref() == Some(&k.id))
            else {
                continue;
            };
            out.insert((*key).clone(), Value::from_answer(a));
        }
        for e in b.errors {
            if let (Some(id), Some(code)) = (e.secret_id, e.error_code) {
                if let Some(key) = ids.iter().find(|k| k.id == id) {
                    let err = super::error_code(&code, "BatchGetSecretValue")
                        .with_remote_code(code.clone())
                        .with_provider("aws-sm");
                    if super::is_request_level(&err) {
                        return Err(err);
                    }
                    out.insert((*key).clone(), Err(err));
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Provider for SecretsManagerProvider {
    fn name(&self) -> &str {
        "aws-sm"
    }

    fn families(&self) -> &[&'static str] {
        &["aws-sm"]
    }

    /// `ListSecrets` with `MaxResults` 1: a signed call that reads no value.
    async fn health(&self) -> Result<()> {
        self.client.probe("ListSecrets").await
    }

    fn capabilities(&self) -> Capabilities {
        SPEC.capabilities
    }

    /// `aws-sm://<name prefix>`: every secret whose name starts with it
    /// (`ListSecrets` with AWS's `name` prefix filter, page by page; names
    /// only), keyed by the rest of the name.
    async fn list(&self, _scheme: &str, prefix: &str) -> Result<Vec<Listed>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Page {
            #[serde(default)]
            secret_list: Vec<Entry>,
            next_token: Option<String>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry {
            name: String,
        }
        if prefix.contains(['#', '?']) {
            return Err(Error::usage(
                "an aws-sm:// prefix is the start of secret names, without #field or ?version",
            ));
        }
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        // AWS pages by 100; the bound only stops a server that never ends.
        for _ in 0..1000 {
            let mut body = serde_json::json!({ "MaxResults": 100 });
            if !prefix.is_empty() {
                body["Filters"] = serde_json::json!([{ "Key": "name", "Values": [prefix] }]);
            }
            if let Some(t) = &token {
                body["NextToken"] = t.as_str().into();
            }
            let answer = self.client.call("ListSecrets", &body).await?;
            let page: Page = serde_json::from_slice(&answer)
                .map_err(|_| invalid("ListSecrets' answer is not understood"))?;
            for e in page.secret_list {
                // The filter matches words too; keep true prefixes only.
                let Some(key) = e.name.strip_prefix(prefix) else {
                    continue;
                };
                let key = key.trim_start_matches('/').to_string();
                out.push(Listed {
                    key,
                    reference: SecretRef::parse(format!("aws-sm://{}", e.name))?,
                });
            }
            match page.next_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok(out),
            }
        }
        Err(invalid("ListSecrets did not stop paging"))
    }

    async fn resolve_many(&self, refs: &[SecretRef]) -> BatchResult<Resolved> {
        let wanted = refs.iter().map(Key::of).collect::<Result<Vec<_>>>()?;
        let values = super::read_all(self, wanted.iter().map(|(k, _)| k).collect()).await?;
        Ok(wanted
            .iter()
            .zip(refs)
            .map(|((key, field), r)| {
                let v = values
                    .get(key)
                    .ok_or_else(|| Error::internal("aws-sm lost a secret"))?;
                v.as_ref()
                    .map_err(|e| e.clone())
                    .and_then(|v| v.pick(*field))
                    .map_err(|e| {
                        e.with_provider(self.client.provider())
                            .with_reference(r.to_canonical())
                    })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use crate::{ErrorCode, RefKind, SecretRef};

    #[test]
    fn an_answer_without_a_value_is_malformed_not_missing() {
        // What a 200 `{}` (or garbage whose fields serde skips) parses to.
        let a: super::Answer = serde_json::from_slice(b"{\"x\":\"\xff\"}").unwrap();
        let e = super::Value::from_answer(a).err().unwrap();
        assert_eq!(e.code(), ErrorCode::InvalidResponse);
        assert!(!e.retryable());
    }

    #[test]
    fn grammar() {
        let r = SecretRef::parse("AWS-SM://prod/db#password?version-stage=AWSPREVIOUS").unwrap();
        assert_eq!(
            r.to_canonical(),
            "aws-sm://prod/db#password?version-stage=AWSPREVIOUS"
        );
        assert_eq!(r.provider_family(), "aws-sm");
        let RefKind::Generic(g) = r.kind() else {
            panic!()
        };
        assert_eq!(g.get("version_stage"), Some("AWSPREVIOUS"));
        let arn = "aws-sm://arn:aws:secretsmanager:us-east-1:123456789012:secret:app-AbCdEf";
        assert_eq!(SecretRef::parse(arn).unwrap().to_canonical(), arn);
        for (bad, code) in [
            ("aws-sm://", ErrorCode::InvalidReference),
            ("aws-sm://a b", ErrorCode::IllegalSegment),
            ("aws-sm://a\n", ErrorCode::IllegalSegment),
            ("aws-sm://a?version-stage=X#f", ErrorCode::AmbiguousQuery),
            (
                "aws-sm://a?version-stage=X&version-id=0123456789abcdef0123456789abcdef",
                ErrorCode::AmbiguousQuery,
            ),
            ("aws-sm://a?version=1", ErrorCode::InvalidReference),
            ("aws-sm://a?version-id=short", ErrorCode::InvalidReference),
            ("aws-sm://a#", ErrorCode::InvalidReference),
        ] {
            assert_eq!(SecretRef::parse(bad).unwrap_err().code(), code, "{bad:?}");
        }
    }
}
