//! The Vault KV v2 API (placeholder: being implemented on its own branch).
//!
//! It will serve `GET /v1/<mount>/data/<path>` and friends over the same
//! [`AppState`] (resolver, auth, access rules) as the SecFlow API.

use axum::Router;

use crate::AppState;

/// The Vault API's routes (none yet).
pub fn router(state: AppState) -> Router {
    let _ = state;
    Router::new()
}
