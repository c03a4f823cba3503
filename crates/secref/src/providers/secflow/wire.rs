//! The SecFlow Runtime API's wire format (`secflow-sdk` 0.1.9), defined once
//! for both sides: the client ([`SecFlowProvider`](super::SecFlowProvider))
//! and the server (`secref serve`).
//!
//! Every call is `POST <`[`Op::path`]`>` with a [`Request`] envelope of at
//! most [`MAX_BATCH_ITEMS`] [`RequestItem`]s. Answers are
//! `{"request_id","trace_id","items":[…]}` with one object per item, keyed
//! by `item_id`; a resolved item carries its value as
//! `{"encoding":"utf8"|"base64","data":…}` ([`encode_value`],
//! [`decode_value`]). Request-level failures are an HTTP error status with an
//! [`ErrorResponse`]; item-level failures are items with `result:"failed"`
//! or `"denied"` and an [`ItemError`].
//!
//! Servers other than `secref serve` vary in what they send, so the client
//! reads error objects leniently with [`ErrorFields::read`] rather than
//! deserializing the strict types.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::secret::Secret;

/// Most items in one request (the SDK's `MAX_BATCH_ITEMS`).
pub const MAX_BATCH_ITEMS: usize = 100;

/// The environments `target_environment` may name.
pub const ENVIRONMENTS: &[&str] = &["dev", "stage", "prod", "shared"];

/// The Runtime API's operations, one endpoint each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// `resolve:batch`: values, with a lease per item.
    Resolve,
    /// `validate:batch`: does a ref name a usable secret.
    Validate,
    /// `metadata:batch`: non-secret facts about a secret.
    Metadata,
    /// `permission-check:batch`: may the caller perform an action.
    PermissionCheck,
    /// `revoke:batch`: give leases back.
    Revoke,
}

impl Op {
    /// Every operation, in the API's order.
    pub const ALL: [Op; 5] = [
        Op::Resolve,
        Op::Validate,
        Op::Metadata,
        Op::PermissionCheck,
        Op::Revoke,
    ];

    /// The endpoint's path.
    ///
    /// ```
    /// use secref::providers::secflow::wire::Op;
    /// assert_eq!(Op::Revoke.path(), "/v1/leases/revoke:batch");
    /// ```
    pub fn path(self) -> &'static str {
        match self {
            Op::Resolve => "/v1/secrets/resolve:batch",
            Op::Validate => "/v1/secrets/validate:batch",
            Op::Metadata => "/v1/secrets/metadata:batch",
            Op::PermissionCheck => "/v1/secrets/permission-check:batch",
            Op::Revoke => "/v1/leases/revoke:batch",
        }
    }

    /// The `purpose` a request to this endpoint declares.
    pub fn purpose(self) -> &'static str {
        match self {
            Op::Resolve => "secret.runtime_resolve",
            Op::Validate => "secret.validate",
            Op::Metadata => "secret.metadata",
            Op::PermissionCheck => "secret.permission_check",
            Op::Revoke => "secret.lease_revoke",
        }
    }
}

/// The request envelope every endpoint takes. Unknown fields are refused.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Correlation id, echoed in the answer.
    pub request_id: Option<String>,
    /// Trace id, echoed in the answer.
    pub trace_id: Option<String>,
    /// One of [`ENVIRONMENTS`] (every endpoint but revoke requires it).
    pub target_environment: Option<String>,
    /// [`Op::purpose`] of the endpoint, if given.
    pub purpose: Option<String>,
    /// The items asked about, 1 to [`MAX_BATCH_ITEMS`].
    pub items: Vec<RequestItem>,
    /// Resolve only: the lease length wanted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ttl_seconds: Option<u64>,
}

/// One item of a [`Request`]. Which optional fields an endpoint takes
/// depends on the [`Op`]: `secret_ref` (+ `revision_id` on resolve,
/// `action` on permission checks) for refs, `lease_id` + `reason` on revoke.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestItem {
    /// Unique within the request; answers are matched by it.
    pub item_id: String,
    /// The reference asked about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<String>,
    /// Resolve only: the revision wanted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_id: Option<String>,
    /// Permission check only: the action asked about (default `read`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Revoke only: the lease to revoke.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<String>,
    /// Revoke only: why (default `job_completed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A secret's bytes as an answer carries them: `utf8` text when the bytes
/// are UTF-8, else standard `base64`.
///
/// ```
/// use secref::providers::secflow::wire::{decode_value, encode_value};
/// let v = encode_value(b"\xff\x00bin");
/// assert_eq!(v["encoding"], "base64");
/// let back = decode_value("base64", v["data"].as_str().unwrap()).unwrap();
/// assert_eq!(back.expose_bytes(), b"\xff\x00bin");
/// ```
pub fn encode_value(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => json!({"encoding": "utf8", "data": text}),
        Err(_) => json!({
            "encoding": "base64",
            "data": base64::engine::general_purpose::STANDARD.encode(bytes),
        }),
    }
}

/// Why an answer's value could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueError {
    /// `encoding` was `base64` but `data` was not valid base64.
    InvalidBase64,
    /// `encoding` was neither `utf8` nor `base64`.
    UnknownEncoding,
}

/// The secret an answer's `{"encoding","data"}` carries.
pub fn decode_value(encoding: &str, data: &str) -> Result<Secret, ValueError> {
    match encoding {
        "utf8" => Ok(Secret::copy_from(data.as_bytes())),
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(data.as_bytes())
            .map(Secret::new)
            .map_err(|_| ValueError::InvalidBase64),
        _ => Err(ValueError::UnknownEncoding),
    }
}

/// A request-level failure: the body of an HTTP error status.
#[derive(Clone, Debug, Serialize)]
pub struct ErrorResponse {
    /// What went wrong.
    pub error: RequestError,
    /// The request's id (or a fresh one if it had none or was unreadable).
    pub request_id: String,
    /// The request's trace id (or a fresh one).
    pub trace_id: String,
}

/// The `error` object of an [`ErrorResponse`].
#[derive(Clone, Debug, Serialize)]
pub struct RequestError {
    /// Upper snake case, e.g. `INVALID_REQUEST`.
    pub code: String,
    /// For people; never holds a value.
    pub message: String,
    /// Whether sending the same request again may succeed.
    pub retryable: bool,
}

/// The `error` object of a failed or denied item.
#[derive(Clone, Debug, Serialize)]
pub struct ItemError {
    /// Upper snake case, e.g. `NOT_FOUND`.
    pub code: String,
    /// For people; never holds a value.
    pub message: String,
    /// Whether asking again may succeed.
    pub retryable: bool,
    /// The access decision behind the answer (`null` when none was made).
    pub decision_id: Option<String>,
}

/// The fields of a received `error` object, each absent when missing or of
/// the wrong type (servers vary; the reader picks its own defaults).
#[derive(Clone, Copy, Debug, Default)]
pub struct ErrorFields<'a> {
    /// `code`, if a string.
    pub code: Option<&'a str>,
    /// `message`, if present (the reader decides how to show it).
    pub message: Option<&'a Value>,
    /// `retryable`, if a boolean.
    pub retryable: Option<bool>,
    /// `decision_id`, if a string.
    pub decision_id: Option<&'a str>,
}

impl<'a> ErrorFields<'a> {
    /// Reads an `error` object leniently.
    ///
    /// ```
    /// use secref::providers::secflow::wire::ErrorFields;
    /// let v = serde_json::json!({"code": "NOT_FOUND", "retryable": "no"});
    /// let f = ErrorFields::read(v.as_object().unwrap());
    /// assert_eq!(f.code, Some("NOT_FOUND"));
    /// assert_eq!(f.retryable, None);
    /// ```
    pub fn read(error: &'a Map<String, Value>) -> ErrorFields<'a> {
        ErrorFields {
            code: error.get("code").and_then(Value::as_str),
            message: error.get("message"),
            retryable: error.get("retryable").and_then(Value::as_bool),
            decision_id: error.get("decision_id").and_then(Value::as_str),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_items_serialize_only_their_fields() {
        let item = RequestItem {
            item_id: "item-1".into(),
            secret_ref: Some("env://A".into()),
            ..RequestItem::default()
        };
        assert_eq!(
            serde_json::to_value(&item).unwrap(),
            json!({"item_id": "item-1", "secret_ref": "env://A"})
        );
        let strict = serde_json::from_value::<RequestItem>(json!({"item_id": "x", "extra": 1}));
        assert!(strict.is_err());
    }

    #[test]
    fn values_round_trip() {
        for bytes in [&b"h\xc3\xa9llo"[..], b"\xff\x00bin", b""] {
            let v = encode_value(bytes);
            let got = decode_value(v["encoding"].as_str().unwrap(), v["data"].as_str().unwrap());
            assert_eq!(got.unwrap().expose_bytes(), bytes);
        }
        assert_eq!(encode_value("héllo".as_bytes())["encoding"], "utf8");
        assert_eq!(
            decode_value("base64", "not base64!").unwrap_err(),
            ValueError::InvalidBase64
        );
        assert_eq!(
            decode_value("hex", "00").unwrap_err(),
            ValueError::UnknownEncoding
        );
    }
}
