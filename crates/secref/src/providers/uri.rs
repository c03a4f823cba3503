//! Canonical Secret URI schemes that secref parses for compatibility with
//! `secrets_sdk` but serves with no provider yet (`db`, `bootstrap`,
//! `yaml`): grammar-only specs, so `secref run` treats them as references and
//! a read fails with `no_provider` instead of passing them through.

use crate::reference::{parse_canonical_uri, RefKind, SecretRef};
use crate::registry::{PartValue, ProviderSpec};

const fn grammar_only(name: &'static str, schemes: &'static [&'static str]) -> ProviderSpec {
    ProviderSpec {
        name,
        schemes,
        feature: None,
        host_local: false,
        config_section: None,
        env_vars: &[],
        credential_env_vars: &[],
        capabilities: crate::provider::Capabilities::NONE,
        parse: parse_canonical_uri,
        parts: uri_parts,
        credentials: crate::credentials::none,
        build: |_| Ok(None),
    }
}

/// `db://`, `db+cred://`, `db+db://`.
pub(crate) const DB: ProviderSpec = grammar_only("db", &["db", "db+cred", "db+db"]);
/// `bootstrap://`.
pub(crate) const BOOTSTRAP: ProviderSpec = grammar_only("bootstrap", &["bootstrap"]);
/// `yaml://`.
pub(crate) const YAML: ProviderSpec = grammar_only("yaml", &["yaml"]);

/// The parts of any Canonical Secret URI: mount, engine, path, field,
/// version and any other query parameters.
pub(crate) fn uri_parts(r: &SecretRef) -> Vec<(&'static str, PartValue)> {
    let RefKind::Vault(u) = r.kind() else {
        return Vec::new();
    };
    let mut v = vec![("mount", PartValue::String(u.mount.clone()))];
    if let Some(e) = &u.engine {
        v.push(("engine", PartValue::String(e.clone())));
    }
    v.push(("path", PartValue::String(u.path_string())));
    if let Some(f) = &u.field {
        v.push(("field", PartValue::String(f.clone())));
    }
    if let Some(n) = u.version() {
        v.push(("version", n.into()));
    }
    let others: serde_json::Map<String, PartValue> = u
        .params
        .iter()
        .filter(|(k, _)| k != "version")
        .map(|(k, val)| (k.clone(), PartValue::String(val.clone())))
        .collect();
    if !others.is_empty() {
        v.push(("params", PartValue::Object(others)));
    }
    v
}
