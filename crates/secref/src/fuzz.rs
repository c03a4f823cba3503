//! Fuzz target bodies, shared by the cargo-fuzz targets in `fuzz/` and the
//! stable corpus test (`crates/secref-cli/tests/fuzz_corpora.rs`), so both
//! check the same oracles. Not a stable API.
//!
//! Response decoders take one leading byte that picks the HTTP status
//! ([`STATUSES`]) and the rest as the body, so one corpus covers the success
//! and the error paths.

use std::path::Path;

use crate::error::Error;
#[cfg(any(feature = "secflow", feature = "vault", feature = "coze"))]
use crate::http::Response;
use crate::reference::SecretRef;

/// The statuses a response target's first byte picks from (mod its length).
pub const STATUSES: &[u16] = &[200, 404, 400, 401, 403, 429, 500, 503, 302, 204, 412, 201];

/// The store key the store target opens files with: the committed v1
/// fixture's (`crates/secref-cli/tests/fixtures/v1.key`), so the seed store
/// verifies and mutations reach past the MAC check when they keep it valid.
pub const STORE_KEY: &str = "B9HbXcn2DKWDxc3ARu4bh3ro6LMp3KLgxPh8RzF8KB8=";

/// Error messages quote backend text at most 200 characters long; anything
/// much longer means input was echoed unbounded.
const MAX_ERROR_LEN: usize = 2048;

#[cfg(any(feature = "secflow", feature = "vault", feature = "coze"))]
fn split_response(data: &[u8]) -> Option<Response> {
    let (&first, body) = data.split_first()?;
    Some(Response::new(
        STATUSES[usize::from(first) % STATUSES.len()],
        body,
    ))
}

fn check_error(e: &Error) {
    let shown = e.to_string();
    assert!(
        shown.len() <= MAX_ERROR_LEN,
        "error message of {} bytes (code {:?})",
        shown.len(),
        e.code()
    );
}

fn check<T>(r: crate::Result<T>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            check_error(&e);
            None
        }
    }
}

/// The reference grammar, every scheme. Oracle: what parses has a canonical
/// form that parses again to the same canonical form.
pub fn reference(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some(r) = check(SecretRef::parse(text)) else {
        return;
    };
    let canonical = r.to_canonical().to_string();
    let again = SecretRef::parse(&canonical)
        .unwrap_or_else(|e| panic!("canonical form does not parse: {}", e.code()));
    assert_eq!(
        again.to_canonical(),
        canonical,
        "canonical form is not stable"
    );
    assert_eq!(again, r, "canonical form parses to another reference");
    let _ = r.parts();
}

/// The env-file parser, plus the CLI's classification of each value.
/// Oracle: errors name only the origin and a byte position, never the text.
pub fn dotenv(data: &[u8]) {
    let origin = Path::new("fuzz.env");
    match crate::config::parse_dotenv(data, origin) {
        Ok(pairs) => {
            for (_, value) in pairs {
                if let Some((scheme, _)) = value.split_once("://") {
                    if crate::registry::is_reference_scheme(scheme) {
                        let _ = check(SecretRef::parse(&value));
                    }
                }
            }
        }
        Err(e) => {
            let m = e.message();
            assert!(
                m.starts_with("dotenv file fuzz.env: ") && m.len() < 80,
                "a dotenv error says more than where it failed"
            );
        }
    }
}

/// The store file reader: the file as `secref` opens it (parse, MAC check,
/// migration of format 1), then every entry's metadata and current value.
/// Oracle: every failure is a typed error; a format-2 file that parses
/// renders and parses back to the same bytes.
pub fn store_file(data: &[u8]) {
    use crate::store::format::{self, Parsed};
    if let Some(Parsed::V2(file)) = check(format::parse(data)) {
        let once = format::render(&file).expect("a parsed store renders");
        let Ok(Parsed::V2(back)) = format::parse(&once) else {
            panic!("a rendered store does not parse");
        };
        assert_eq!(format::render(&back).expect("renders"), once);
    }
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let path = dir.path().join("fuzz.store");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let key = crate::store::StoreKey::from_base64(STORE_KEY).expect("fixture key");
    let Some(store) = check(crate::store::Store::open(&path, key)) else {
        return;
    };
    let Some(names) = check(store.names("")) else {
        return;
    };
    for name in names {
        let _ = check(store.metadata(&name));
        let _ = check(store.read(&name, None));
    }
}

/// SecFlow's batch answers: the envelope, then every item as each
/// operation reads it.
#[cfg(feature = "secflow")]
pub fn secflow_response(data: &[u8]) {
    use crate::providers::secflow::{decode_answer, item_outcome, wire::Op, Ids};
    let Some(resp) = split_response(data) else {
        return;
    };
    let ids = Ids::of_call();
    let Some((id, items)) = check(decode_answer(&resp, &ids)) else {
        return;
    };
    let id = id.unwrap_or_default();
    for op in [
        Op::Resolve,
        Op::Validate,
        Op::Metadata,
        Op::PermissionCheck,
        Op::Revoke,
    ] {
        for item in &items {
            let _ = check(item_outcome(op, item.clone(), &id));
        }
    }
}

/// Vault KV v1 and v2 read answers (with and without a field, also the 404
/// that carries a deleted version's metadata) and KV v2 metadata answers.
#[cfg(feature = "vault")]
pub fn vault_response(data: &[u8]) {
    use crate::providers::vault::{parse_metadata, ReadPlan};
    let Some(resp) = split_response(data) else {
        return;
    };
    for reference in [
        "openbao+kv2://secret/app/db#password",
        "openbao+kv2://secret/app/db",
        "openbao://secret/app/db#password",
        "openbao://secret/app/db",
    ] {
        let r = SecretRef::parse(reference).expect("a valid reference");
        let plan = ReadPlan::new(&r, None).expect("a vault reference");
        let copy = Response::new(resp.status, &resp.body);
        let _ = check(plan.interpret(copy));
        let _ = check(parse_metadata(&resp.body, &r));
    }
}

/// Infisical's secret and folder-list answers.
#[cfg(feature = "infisical")]
pub fn infisical_response(data: &[u8]) {
    use crate::providers::infisical::{OneSecret, SecretList};
    let _ = serde_json::from_slice::<OneSecret>(data);
    let _ = serde_json::from_slice::<SecretList>(data);
}

/// Coze's outbound API envelopes (integration credential, env listing).
#[cfg(feature = "coze")]
pub fn coze_response(data: &[u8]) {
    use crate::providers::coze::{parse_envelope, EnvData, IntegrationData, Outbound};
    let Some(resp) = split_response(data) else {
        return;
    };
    let _ = check(parse_envelope::<EnvData>(&resp, Outbound::Env));
    let _ = check(parse_envelope::<IntegrationData>(
        &resp,
        Outbound::Integration("github"),
    ));
}

/// OAuth 2.0 token endpoint answers (client credentials, RFC 8693 exchange).
#[cfg(feature = "coze")]
pub fn oauth_token_response(data: &[u8]) {
    use crate::providers::coze::token::{decode_token_response, TOKEN_EXCHANGE, TOKEN_RETRIEVAL};
    let Some(resp) = split_response(data) else {
        return;
    };
    for step in [TOKEN_RETRIEVAL, TOKEN_EXCHANGE] {
        if let Some((token, _ttl)) = check(decode_token_response(step, &resp)) {
            assert!(
                !token.expose_bytes().is_empty(),
                "an empty token is accepted"
            );
        }
    }
}
