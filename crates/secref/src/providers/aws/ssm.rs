//! AWS Systems Manager Parameter Store: `aws-ssm://<parameter-name>[?version=N]`.
//!
//! The name is written exactly as AWS spells it, so a hierarchical
//! `/app/db/password` is `aws-ssm:///app/db/password` (as `file:///`
//! does). `String`, `StringList` and `SecureString` parameters are read
//! with decryption. A batch reads unversioned parameters with
//! `GetParameters` (10 names a call) and pinned ones with `GetParameter`
//! (`name:N`).

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::{AwsReader, Client, Service, SSM};
use crate::error::{Error, ErrorCode, Result};
use crate::provider::{BatchResult, Capabilities, Provider, Resolved};
use crate::reference::{ParseInput, ParsedRef, RefKind, SecretRef};
use crate::registry::{PartValue, ProviderSpec};
use crate::secret::Secret;

/// `GetParameters` takes at most this many names.
const BATCH: usize = 10;

/// The registry entry.
pub(crate) const SPEC: ProviderSpec = super::spec(
    "aws-ssm",
    &["aws-ssm"],
    Capabilities {
        versions: true,
        ..Capabilities::NONE
    },
    parse,
    parts,
    super::build::<ParameterStoreProvider>,
);

/// Reads `aws-ssm://` references from AWS SSM Parameter Store.
#[derive(Debug)]
pub struct ParameterStoreProvider {
    client: Client,
}

impl ParameterStoreProvider {
    /// The provider as `cfg` configures it, with credentials from `chain`
    /// ([`super::default_chain`] with links of your own inserted).
    pub fn with_chain(
        cfg: &crate::Config,
        chain: &crate::credentials::CredentialChain<super::Credentials>,
    ) -> Result<ParameterStoreProvider> {
        super::with_chain(cfg, chain)
    }
}

fn bad(code: ErrorCode, msg: impl Into<String>) -> Error {
    Error::new(code, msg.into()).with_hint(
        "aws-ssm://<name>[?version=N]; a hierarchical name keeps its leading slash: aws-ssm:///app/db/password",
    )
}

fn parse(input: &ParseInput<'_>) -> Result<ParsedRef> {
    let rest = input.rest;
    if rest.chars().any(char::is_control) {
        return Err(bad(
            ErrorCode::IllegalSegment,
            "control characters are not allowed",
        ));
    }
    if rest.contains('#') {
        return Err(bad(
            ErrorCode::InvalidReference,
            "aws-ssm:// references take no #field",
        ));
    }
    let (name, query) = match rest.split_once('?') {
        Some((n, q)) => (n, Some(q)),
        None => (rest, None),
    };
    if name.is_empty() || name.len() > 2048 {
        return Err(bad(
            ErrorCode::InvalidReference,
            "the parameter name must have 1 to 2048 characters",
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/_.-".contains(&b))
    {
        return Err(bad(
            ErrorCode::IllegalSegment,
            "a parameter name may only contain A-Z a-z 0-9 / _ . -",
        ));
    }
    if name.contains('/') {
        // AWS's own rule for hierarchies; rejecting here (never rewriting)
        // keeps the canonical form the name AWS reads.
        let Some(path) = name.strip_prefix('/') else {
            return Err(bad(
                ErrorCode::InvalidReference,
                "a hierarchical parameter name starts with '/' (write aws-ssm:///a/b)",
            ));
        };
        if path.split('/').any(str::is_empty) {
            return Err(bad(
                ErrorCode::IllegalSegment,
                "empty segment in the parameter name",
            ));
        }
    }
    let mut parts = vec![("name".to_owned(), name.to_owned())];
    let mut canonical = format!("aws-ssm://{name}");
    if let Some(q) = query {
        let version = match q.split_once('=') {
            Some(("version", v)) => v,
            _ => {
                return Err(bad(
                    ErrorCode::InvalidReference,
                    "the only parameter is version=N",
                ))
            }
        };
        match version.parse::<u64>() {
            Ok(n) if n > 0 && !version.starts_with('0') => {
                canonical.push_str(&format!("?version={n}"));
                parts.push(("version".to_owned(), n.to_string()));
            }
            _ => {
                return Err(bad(
                    ErrorCode::InvalidReference,
                    "version must be a positive integer",
                ))
            }
        }
    }
    Ok(ParsedRef::generic(canonical, parts))
}

fn parts(r: &SecretRef) -> Vec<(&'static str, PartValue)> {
    let RefKind::Generic(g) = r.kind() else {
        return Vec::new();
    };
    let mut v = Vec::new();
    if let Some(n) = g.get("name") {
        v.push(("name", PartValue::String(n.to_owned())));
    }
    if let Some(n) = g.get("version").and_then(|s| s.parse::<u64>().ok()) {
        v.push(("version", n.into()));
    }
    v
}

/// A parameter name and an optional pinned version.
pub(crate) type Key = (String, Option<String>);

fn key(r: &SecretRef) -> Result<Key> {
    let RefKind::Generic(g) = r.kind() else {
        return Err(Error::internal("aws-ssm provider got a foreign reference"));
    };
    let name = g
        .get("name")
        .ok_or_else(|| Error::internal("aws-ssm reference without a name"))?;
    Ok((name.to_owned(), g.get("version").map(str::to_owned)))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Parameter {
    name: Option<String>,
    value: Zeroizing<String>,
    version: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetOne {
    parameter: Parameter,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetMany {
    #[serde(default)]
    parameters: Vec<Parameter>,
    #[serde(default)]
    invalid_parameters: Vec<String>,
}

fn resolved(p: &Parameter) -> Resolved {
    let r = Resolved::new(Secret::copy_from(p.value.as_bytes()));
    match p.version {
        Some(v) => r.with_version(v.to_string()),
        None => r,
    }
}

fn invalid(msg: &'static str) -> Error {
    Error::new(ErrorCode::InvalidResponse, msg).with_provider("aws-ssm")
}

#[async_trait]
impl AwsReader for ParameterStoreProvider {
    const SERVICE: &'static Service = &SSM;
    const BATCH: usize = BATCH;
    type Key = Key;
    type Value = Resolved;

    fn from_client(client: Client) -> Self {
        ParameterStoreProvider { client }
    }

    fn is_current(key: &Key) -> bool {
        key.1.is_none()
    }

    async fn get(&self, key: &Key) -> Result<Resolved> {
        let name = match &key.1 {
            Some(v) => format!("{}:{v}", key.0),
            None => key.0.clone(),
        };
        let body = serde_json::json!({ "Name": name, "WithDecryption": true });
        let answer = self.client.call("GetParameter", &body).await?;
        let a: GetOne = serde_json::from_slice(&answer)
            .map_err(|_| invalid("GetParameter's answer is not understood"))?;
        Ok(resolved(&a.parameter))
    }

    async fn batch(&self, names: &[&Key], out: &mut BTreeMap<Key, Result<Resolved>>) -> Result<()> {
        let list: Vec<&str> = names.iter().map(|k| k.0.as_str()).collect();
        let body = serde_json::json!({ "Names": list, "WithDecryption": true });
        let answer = match self.client.call("GetParameters", &body).await {
            Ok(a) => a,
            Err(e) if super::is_request_level(&e) => return Err(e),
            Err(_) => return Ok(()), // left for GetParameter, which names the failure
        };
        let a: GetMany = serde_json::from_slice(&answer)
            .map_err(|_| invalid("GetParameters' answer is not understood"))?;
        for p in &a.parameters {
            if let Some(k) = names.iter().find(|k| p.name.as_deref() == Some(&k.0)) {
                out.insert((*k).clone(), Ok(resolved(p)));
            }
        }
        for missing in a.invalid_parameters {
            if let Some(k) = names.iter().find(|k| k.0 == missing) {
                let e = super::error_code("ParameterNotFound", "GetParameters")
                    .with_remote_code("ParameterNotFound");
                out.insert((*k).clone(), Err(e));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Provider for ParameterStoreProvider {
    fn name(&self) -> &str {
        "aws-ssm"
    }

    fn families(&self) -> &[&'static str] {
        &["aws-ssm"]
    }

    /// `DescribeParameters` with `MaxResults` 1: a signed call that reads no value.
    async fn health(&self) -> Result<()> {
        self.client.probe("DescribeParameters").await
    }

    fn capabilities(&self) -> Capabilities {
        SPEC.capabilities
    }

    async fn resolve_many(&self, refs: &[SecretRef]) -> BatchResult<Resolved> {
        let wanted = refs.iter().map(key).collect::<Result<Vec<_>>>()?;
        let values = super::read_all(self, wanted.iter().collect()).await?;
        Ok(wanted
            .iter()
            .zip(refs)
            .map(|(k, r)| {
                values
                    .get(k)
                    .ok_or_else(|| Error::internal("aws-ssm lost a parameter"))?
                    .clone()
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
    use crate::{ErrorCode, SecretRef};

    #[test]
    fn grammar() {
        let r = SecretRef::parse("aws-ssm:///app/db/password?version=2").unwrap();
        assert_eq!(r.to_canonical(), "aws-ssm:///app/db/password?version=2");
        assert_eq!(r.provider_family(), "aws-ssm");
        assert_eq!(
            SecretRef::parse("aws-ssm://plain.name")
                .unwrap()
                .to_canonical(),
            "aws-ssm://plain.name"
        );
        for (bad, code) in [
            ("aws-ssm://", ErrorCode::InvalidReference),
            ("aws-ssm://app/db", ErrorCode::InvalidReference),
            ("aws-ssm:///app//db", ErrorCode::IllegalSegment),
            ("aws-ssm:///app/db/", ErrorCode::IllegalSegment),
            ("aws-ssm://a#f", ErrorCode::InvalidReference),
            ("aws-ssm://a?version=0", ErrorCode::InvalidReference),
            ("aws-ssm://a?version=01", ErrorCode::InvalidReference),
            ("aws-ssm://a?label=x", ErrorCode::InvalidReference),
            ("aws-ssm://a b", ErrorCode::IllegalSegment),
        ] {
            assert_eq!(SecretRef::parse(bad).unwrap_err().code(), code, "{bad:?}");
        }
    }
}
