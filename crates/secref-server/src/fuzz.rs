//! Fuzz target bodies for the server's request decoders, shared by the
//! cargo-fuzz targets in `fuzz/` and the stable corpus test
//! (`crates/secref-cli/tests/fuzz_corpora.rs`). Not a stable API.

use secref::providers::secflow::wire::{Op, Request};
use serde_json::Value;

/// A SecFlow `:batch` request body: decoded and checked for every
/// operation. Oracle: never panics, and a body the checks accept has
/// between 1 and the documented maximum of items.
pub fn secflow_request(data: &[u8]) {
    let Ok(req) = serde_json::from_slice::<Request>(data) else {
        return;
    };
    for op in [
        Op::Resolve,
        Op::Validate,
        Op::Metadata,
        Op::PermissionCheck,
        Op::Revoke,
    ] {
        if crate::secflow::check_envelope(&req, op).is_ok() {
            assert!(!req.items.is_empty(), "an accepted batch has items");
        }
    }
}

/// A Vault API request body (writes, patches, version lists, metadata
/// updates). Oracle: never panics; what is accepted is a JSON object.
pub fn vault_request(data: &[u8]) {
    let Ok(body) = crate::vault::json_body(data) else {
        return;
    };
    assert!(body.is_object(), "an accepted body is an object");
    let _ = crate::vault::versions_of(&body);
    let _ = crate::vault::cas_of(&body);
    let _ = crate::vault::metadata_update(&body);
    if let Some(Value::Object(fields)) = body.get("data") {
        let _ = crate::vault::entry_value(fields);
    }
}
