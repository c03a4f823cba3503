//! The local store's fast read path (reuse the verified content while the
//! file still ends with the same MAC) is exact: a write from another handle
//! is seen at once, an older copy restored over the store — even one of the
//! very same length — is served as what it is, and a file tampered with
//! behind the fast path's back is never served and never blessed.

use std::path::Path;

use secref::store::{Store, StoreKey, StoreSettings};
use secref::{ErrorCode, RefKind, Secret, SecretRef};

fn local(s: &str) -> secref::reference::LocalRef {
    match SecretRef::parse(s).unwrap().kind() {
        RefKind::Local(l) => l.clone(),
        other => panic!("not local: {other:?}"),
    }
}

fn text(store: &Store, r: &str) -> String {
    store.get(&local(r)).unwrap().as_text().unwrap().to_string()
}

fn put(store: &Store, r: &str, value: &str) {
    store.set(&local(r), Secret::from(value)).unwrap();
}

/// Replaces `path` the way a restore from a backup does (atomic rename).
fn restore(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("restore");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The file with the first character of `entry`'s current ciphertext
/// changed to another base64 character: same length, same MAC, not valid.
pub fn tamper_keeping_length_and_mac(raw: &[u8], entry: &str) -> Vec<u8> {
    let doc: serde_json::Value = serde_json::from_slice(raw).unwrap();
    let e = &doc["entries"][entry];
    let current = e["current_version"].as_u64().unwrap().to_string();
    let ct = e["versions"][current.as_str()]["ciphertext"]
        .as_str()
        .unwrap();
    let at = raw
        .windows(ct.len())
        .position(|w| w == ct.as_bytes())
        .unwrap();
    let mut out = raw.to_vec();
    out[at] = if out[at] == b'A' { b'B' } else { b'A' };
    out
}

fn fixture() -> (tempfile::TempDir, std::path::PathBuf, StoreKey, Store) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secref.store");
    let key = StoreKey::generate();
    let store = Store::create(&path, &key).unwrap();
    (dir, path, key, store)
}

#[test]
fn a_write_through_another_handle_is_seen_by_the_very_next_read() {
    let (_dir, path, key, reader) = fixture();
    let writer = Store::open(&path, key).unwrap();
    put(&writer, "local://app/db#password", "one");
    for round in 0..20 {
        let value = format!("value-{round}");
        put(&writer, "local://app/db#password", &value);
        // Twice: the second read is the fast path over the first's result.
        assert_eq!(text(&reader, "local://app/db#password"), value);
        assert_eq!(text(&reader, "local://app/db#password"), value);
    }
    writer.remove(&local("local://app/db")).unwrap();
    assert_eq!(
        reader
            .get(&local("local://app/db#password"))
            .unwrap_err()
            .code(),
        ErrorCode::NotFound
    );
}

#[test]
fn an_older_copy_of_the_same_length_is_served_as_it_is_never_stale_memory() {
    let (_dir, path, _key, store) = fixture();
    // One version per entry, so the two files differ only in generation,
    // times, nonce, ciphertext and MAC: the same length.
    store
        .configure(StoreSettings {
            max_versions: 1,
            cas_required: false,
        })
        .unwrap();
    put(&store, "local://app/token", "value-1");
    let older = std::fs::read(&path).unwrap();
    put(&store, "local://app/token", "value-2");
    let newer = std::fs::read(&path).unwrap();
    assert_eq!(older.len(), newer.len(), "the test needs same-length files");
    assert_eq!(text(&store, "local://app/token"), "value-2");

    restore(&path, &older);
    assert_eq!(text(&store, "local://app/token"), "value-1");
    assert_eq!(text(&store, "local://app/token"), "value-1");
    restore(&path, &newer);
    assert_eq!(text(&store, "local://app/token"), "value-2");
}

#[test]
fn a_tampered_file_that_keeps_length_and_mac_is_never_served_nor_blessed() {
    let (_dir, path, key, store) = fixture();
    put(&store, "local://app/token", "authentic");
    assert_eq!(text(&store, "local://app/token"), "authentic");
    let raw = std::fs::read(&path).unwrap();
    let tampered = tamper_keeping_length_and_mac(&raw, "app/token");
    assert_eq!(tampered.len(), raw.len());
    restore(&path, &tampered);

    // The handle that verified the file serves what the MAC names.
    assert_eq!(text(&store, "local://app/token"), "authentic");
    // Any fresh reader verifies the whole file and refuses it.
    let fresh = Store::open(&path, key.clone()).map(|s| s.get(&local("local://app/token")));
    let code = match fresh {
        Err(e) | Ok(Err(e)) => e.code(),
        Ok(Ok(_)) => panic!("a tampered store was read"),
    };
    assert_eq!(code, ErrorCode::Integrity);
    // A write re-verifies under the lock and does not re-MAC it.
    assert_eq!(
        store
            .set(&local("local://app/other"), Secret::from("x"))
            .unwrap_err()
            .code(),
        ErrorCode::Integrity
    );
    assert_eq!(std::fs::read(&path).unwrap(), tampered);
}
