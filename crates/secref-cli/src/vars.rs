//! The variables of `run`, `export` and `check`: collected from `--env-file`
//! and `--env`, classified as references or plain values, and resolved in
//! one batch.

use std::collections::{BTreeMap, BTreeSet};

use secref::{Config, Error, Resolver, Secret, SecretRef};
use zeroize::Zeroizing;

use crate::cli::VarArgs;
use crate::report;

/// One variable to hand on.
pub struct Var {
    /// The environment variable's name.
    pub name: String,
    /// Its value: a reference to resolve, or text to pass through.
    pub value: VarValue,
}

/// A variable's value before resolution.
pub enum VarValue {
    /// A reference, resolved before use.
    Ref(SecretRef),
    /// A plain env-file value, passed through unchanged (it may itself be
    /// sensitive, so it is never printed either).
    Plain(Zeroizing<String>),
}

/// Whether an env-file value is meant as a reference (see `VarArgs` docs).
pub fn looks_like_reference(value: &str) -> bool {
    // The provider registry decides, so a new backend's scheme can never
    // slip through `secref run` as plain text.
    secref::registry::looks_like_reference(value)
}

/// Parses command-line or env-file input meant as a reference — the one
/// entry point for every user-typed reference (`get`, `set`, `rm`, `ref`,
/// `--env`, env files).
///
/// Input that does not start with a known scheme and `://` (`hunter2`,
/// `postgres://u:p@h/db`) may well be a value typed where a reference
/// belongs, so its error never contains the text: it says "not a
/// reference" and nothing more. Reference-shaped input keeps the parser's
/// detailed error, which is what helps fix a typo.
pub fn parse_reference(input: &str) -> secref::Result<SecretRef> {
    not_echoed(input, SecretRef::parse(input))
}

/// [`parse_reference`]'s rule applied to any parse result of `input`.
pub fn not_echoed(input: &str, parsed: secref::Result<SecretRef>) -> secref::Result<SecretRef> {
    parsed.map_err(|e| {
        if looks_like_reference(input) {
            e
        } else {
            Error::new(
                e.code(),
                "not a reference (the text is not shown: it may be a secret value)",
            )
            .with_hint(
                "a reference starts with a scheme and ://, e.g. local://app/db#password; \
                 values are read from stdin (`secref set`) or from the backend",
            )
        }
    })
}

/// Checks an environment variable name: a letter or `_`, then letters,
/// digits or `_`.
fn check_name(name: &str, origin: &str) -> secref::Result<()> {
    let valid = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "{origin}: '{}' is not a valid variable name",
            name.escape_debug()
        ))
        .with_hint("names are a letter or _ followed by letters, digits or _"))
    }
}

/// Collects the variables: references in secref's own environment (unless
/// `--no-env-scan`), then `--env-from` prefixes (listed through the
/// resolver), then `--env-file` files, then `--env` flags. A later
/// definition of a name replaces an earlier one in place (the first
/// definition fixes the order); an imported name may not collide with
/// another import or anything in the environment. A variable whose
/// reference reads one of `withheld` (see [`refuse_withheld`]) is a `usage`
/// error, so nothing is resolved.
pub async fn collect(
    args: &VarArgs,
    cfg: &Config,
    resolver: &Resolver,
    withheld: &[String],
) -> secref::Result<Vec<Var>> {
    let mut vars: Vec<Var> = Vec::new();
    // Where each name came from, for the collision reports.
    let mut imported: BTreeMap<String, String> = BTreeMap::new();
    let mut put = |var: Var, imported: &BTreeMap<String, String>| {
        if let Some(origin) = imported.get(&var.name) {
            eprintln!(
                "warning: {}: the explicit definition replaces the one imported from {origin}",
                var.name
            );
        }
        match vars.iter_mut().find(|v| v.name == var.name) {
            Some(existing) => *existing = var,
            None => vars.push(var),
        }
    };
    if !args.no_env_scan {
        for var in scan_env(&crate::child::credential_env_vars(cfg))? {
            put(var, &imported);
        }
    }
    for prefix in &args.env_from {
        for listed in resolver
            .list(prefix)
            .await
            .map_err(|e| report::prefixed(&e, &format!("--env-from {prefix}")))?
        {
            let name = variable_name(args.name_prefix.as_deref(), &listed.key);
            check_name(&name, &format!("--env-from {prefix}"))?;
            let origin = format!("{prefix} ({})", listed.key);
            if let Some(other) = imported.get(&name) {
                return Err(Error::usage(format!(
                    "--env-from: {origin} and {other} both become {name}; nothing was imported"
                ))
                .with_hint("rename one of them, or import them separately with --prefix"));
            }
            if std::env::var_os(&name).is_some() {
                return Err(Error::usage(format!(
                    "--env-from: {origin} becomes {name}, which is already set in the environment; nothing was imported"
                ))
                .with_hint("pass --prefix NAME_PREFIX, or unset the variable"));
            }
            put(
                Var {
                    name: name.clone(),
                    value: VarValue::Ref(listed.reference),
                },
                &imported,
            );
            imported.insert(name, origin);
        }
    }
    for path in &args.env_files {
        let origin = path.display().to_string();
        for (name, value) in secref::config::read_dotenv(path)? {
            let value = Zeroizing::new(value);
            check_name(&name, &origin)?;
            let value = if looks_like_reference(&value) {
                let r = parse_reference(value.as_str())
                    .map_err(|e| report::prefixed(&e, &format!("{origin}: {name}")))?;
                VarValue::Ref(r)
            } else {
                VarValue::Plain(value)
            };
            put(Var { name, value }, &imported);
        }
    }
    for flag in &args.env {
        let Some((name, reference)) = flag.split_once('=') else {
            // Not echoed: a bare `--env <value>` may be the secret itself.
            return Err(Error::usage("an --env argument is not NAME=REF")
                .with_hint("write --env DB_PASSWORD=local://app/db#password"));
        };
        check_name(name, "--env")?;
        let r = parse_reference(reference)
            .map_err(|e| report::prefixed(&e, &format!("--env {name}")))?;
        put(
            Var {
                name: name.to_string(),
                value: VarValue::Ref(r),
            },
            &imported,
        );
    }
    if vars.is_empty() {
        return Err(Error::usage("no variables given").with_hint(
            "pass --env NAME=REF, --env-file FILE or --env-from PREFIX, \
             or set NAME=<reference> in the environment",
        ));
    }
    refuse_withheld(&vars, withheld)?;
    Ok(vars)
}

/// Refuses a variable whose reference is `env://NAME` with `NAME` in
/// `withheld` (see [`crate::child::withheld`]): removing a credential from
/// the command's environment means nothing if `FOO=env://SECREF_KEY` hands
/// it back under another name. The error names the variables, never a
/// value; the code is `usage`, as for `--pass-env SECREF_KEY`.
pub fn refuse_withheld(vars: &[Var], withheld: &[String]) -> secref::Result<()> {
    for v in vars {
        if let VarValue::Ref(r) = &v.value {
            refuse_withheld_ref(&v.name, r, withheld)?;
        }
    }
    Ok(())
}

/// [`refuse_withheld`] for one reference, `label` saying where it stands
/// (a variable's name, a template's line).
pub fn refuse_withheld_ref(
    label: &str,
    r: &secref::SecretRef,
    withheld: &[String],
) -> secref::Result<()> {
    let secref::RefKind::Env { var } = r.kind() else {
        return Ok(());
    };
    if !withheld.contains(var) {
        return Ok(());
    }
    let hint = if crate::child::WITHHELD_ALWAYS.contains(&var.as_str()) {
        "secref's own credentials are never given to the command".to_string()
    } else {
        format!("only `secref run --pass-env {var}` gives a command this credential")
    };
    Err(Error::usage(format!(
        "{label}: {r} reads {var}, a credential withheld from the command; nothing was resolved"
    ))
    .with_hint(hint))
}

/// The environment variables secref never scans: its own settings and
/// credentials (`SECREF_*`) and the credentials it reads (`credentials`,
/// [`crate::child::credential_env_vars`]), which are configuration,
/// not variables to resolve (a credential holding a reference is resolved
/// for its provider, not handed to the command).
fn never_scanned(name: &str, credentials: &BTreeSet<String>) -> bool {
    name.starts_with("SECREF_")
        || crate::child::WITHHELD_ALWAYS.contains(&name)
        || credentials.contains(name)
}

/// Every variable of secref's environment whose value is a reference, in
/// name order. A reference-shaped value that does not parse is an error (a
/// mistyped reference must not reach the command as text).
fn scan_env(credentials: &BTreeSet<String>) -> secref::Result<Vec<Var>> {
    let mut found: Vec<(String, SecretRef)> = Vec::new();
    for (name, value) in std::env::vars_os() {
        let (Some(name), Some(value)) = (name.to_str(), value.to_str()) else {
            continue;
        };
        if never_scanned(name, credentials) || !looks_like_reference(value) {
            continue;
        }
        let r = parse_reference(value)
            .map_err(|e| report::prefixed(&e, &format!("environment variable {name}")))?;
        found.push((name.to_string(), r));
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found
        .into_iter()
        .map(|(name, r)| Var {
            name,
            value: VarValue::Ref(r),
        })
        .collect())
}

/// The variable name an imported secret's key becomes: `name_prefix`, then
/// the key upper-cased with every character other than a letter, digit or
/// `_` replaced by `_` (`db#password` → `DB_PASSWORD`); a leading digit
/// gets a `_` before it.
pub fn variable_name(name_prefix: Option<&str>, key: &str) -> String {
    let mut name = name_prefix.unwrap_or_default().to_string();
    if name.is_empty() && key.starts_with(|c: char| c.is_ascii_digit()) {
        name.push('_');
    }
    name.extend(key.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    name
}

/// The distinct references among the variables.
pub fn references(vars: &[Var]) -> Vec<SecretRef> {
    let mut refs: Vec<SecretRef> = vars
        .iter()
        .filter_map(|v| match &v.value {
            VarValue::Ref(r) => Some(r.clone()),
            VarValue::Plain(_) => None,
        })
        .collect();
    refs.sort();
    refs.dedup();
    refs
}

/// The variables with their values, in order.
pub struct Resolved {
    /// `(name, value)`; plain values are carried as secrets too.
    pub values: Vec<(String, Secret)>,
    /// The values that came from references (for masking).
    pub secrets: Vec<(String, Secret)>,
}

/// Resolves every reference in one batch, all or nothing. On failure the
/// error lists each failing variable, its reference and its error code.
/// `consequence` ends the error's first line, e.g. "nothing was run".
pub async fn resolve_all(
    resolver: &Resolver,
    vars: &[Var],
    consequence: &str,
) -> secref::Result<Resolved> {
    let refs = references(vars);
    let partial = resolver.read_many(refs).partial().await?;
    if !partial.failures.is_empty() {
        return Err(failure_report(vars, &partial.failures, consequence));
    }
    let mut values = Vec::with_capacity(vars.len());
    let mut secrets = Vec::new();
    for v in vars {
        match &v.value {
            VarValue::Ref(r) => {
                let s = partial
                    .resolved
                    .get(r)
                    .cloned()
                    .ok_or_else(|| Error::internal("a resolved reference is missing"))?;
                secrets.push((v.name.clone(), s.clone()));
                values.push((v.name.clone(), s));
            }
            VarValue::Plain(p) => values.push((v.name.clone(), Secret::from(p.as_str()))),
        }
    }
    Ok(Resolved { values, secrets })
}

/// One error naming every failing variable; its code (and so the exit code)
/// is that of the first failing variable in order.
fn failure_report(vars: &[Var], failures: &BTreeMap<SecretRef, Error>, consequence: &str) -> Error {
    let mut lines = Vec::new();
    let mut first: Option<&Error> = None;
    let mut failed_vars = 0;
    for v in vars {
        let VarValue::Ref(r) = &v.value else { continue };
        if let Some(e) = failures.get(r) {
            first.get_or_insert(e);
            failed_vars += 1;
            lines.push(format!(
                "  {} = {} → {}: {}",
                v.name,
                r,
                e.code(),
                e.message()
            ));
        }
    }
    let Some(first) = first else {
        return Error::internal("resolution failed for no variable");
    };
    let retryable = failures.values().all(Error::retryable);
    Error::new(
        first.code(),
        format!(
            "{failed_vars} of {} variables could not be resolved; {consequence}\n{}",
            vars.len(),
            lines.join("\n")
        ),
    )
    .with_retryable(retryable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imported_names() {
        assert_eq!(variable_name(None, "db#password"), "DB_PASSWORD");
        assert_eq!(variable_name(None, "api/v2-token"), "API_V2_TOKEN");
        assert_eq!(variable_name(None, "1st"), "_1ST");
        assert_eq!(variable_name(Some("APP_"), "1st"), "APP_1ST");
        assert_eq!(variable_name(None, "Ünï"), "_N_");
        let creds = crate::child::credential_env_vars(&Config::default());
        assert!(never_scanned("SECREF_KEY", &creds) && never_scanned("VAULT_TOKEN", &creds));
        assert!(!never_scanned("DB", &creds));
    }

    #[test]
    fn reference_rule() {
        for yes in [
            "local://app/db#pw",
            "env://HOME",
            "OPENBAO+KV2://secret/a",
            "coze+env://1/K",
            "file:///etc/x",
            "openbao+kv2://secret/a b", // malformed, but meant as a reference
        ] {
            assert!(looks_like_reference(yes), "{yes}");
        }
        for no in [
            "https://example.com",
            "postgres://u:p@h/db",
            "plain value",
            "",
            "local:/x",
            "x-local://a",
        ] {
            assert!(!looks_like_reference(no), "{no}");
        }
    }
}
