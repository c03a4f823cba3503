//! Fills a real local store from the Vault test seed
//! (`tests/fixtures/vault/seed.json`), so the Vault API's tests run against
//! what `secref serve` really serves: the local store, never a fake.
//!
//! Seed format: an object from `<mount>/<path>` to
//! `{"custom_metadata": {…}?, "versions": [{"data": {…}, "deleted"?, "destroyed"?}, …]}`.
//! The mount is dropped (mount `secret` = the whole store); versions are
//! written in order (1, 2, …), then marked deleted / destroyed. Non-string
//! values are stored as their JSON text, as the Vault API stores them.

use std::collections::BTreeMap;

use secref::store::{EntryValue, MetadataUpdate, Store};
use secref::Secret;
use serde_json::Value;

/// Writes `seed` (JSON text) into `store`. Panics on a malformed seed.
pub fn seed_store(store: &Store, seed: &str) {
    let seed: BTreeMap<String, Value> = serde_json::from_str(seed).expect("seed JSON");
    for (key, secret) in seed {
        let (_, name) = key.split_once('/').expect("<mount>/<path>");
        let mut deleted = Vec::new();
        let mut destroyed = Vec::new();
        for v in secret["versions"].as_array().expect("versions") {
            let fields = v["data"]
                .as_object()
                .expect("data")
                .iter()
                .map(|(k, v)| {
                    let text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                    (k.clone(), Secret::from(text))
                })
                .collect();
            let n = store
                .write(name, &EntryValue::Fields(fields), None)
                .expect("write");
            if v["deleted"] == Value::Bool(true) {
                deleted.push(n);
            }
            if v["destroyed"] == Value::Bool(true) {
                destroyed.push(n);
            }
        }
        store.delete_versions(name, &deleted).expect("delete");
        store.destroy(name, &destroyed).expect("destroy");
        if let Some(custom) = secret.get("custom_metadata").and_then(Value::as_object) {
            let custom = custom
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().expect("string").to_string()))
                .collect();
            store
                .update_metadata(
                    name,
                    &MetadataUpdate {
                        custom_metadata: Some(custom),
                        ..MetadataUpdate::default()
                    },
                )
                .expect("metadata");
        }
    }
}
