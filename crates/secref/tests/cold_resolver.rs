//! Issue 16 — building a resolver is cheap: `Resolver::from_config` does not
//! read the local store's file (a resolver for `secret://` or `env://`
//! references never needs it); the first `local://` read verifies it, with
//! the same typed errors as before.

use secref::config::Env;
use secref::store::{Store, StoreKey};
use secref::{Config, ErrorCode, RefKind, Resolver, Secret, SecretRef};

fn config_with(pairs: &[(&str, String)]) -> Config {
    Config {
        env: Env::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.clone()))),
        ..Config::default()
    }
}

#[tokio::test]
async fn the_store_file_is_read_by_the_first_local_read_not_by_the_build() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secref.store");
    let key = StoreKey::generate();
    let store = Store::create(&path, &key).unwrap();
    let RefKind::Local(l) = SecretRef::parse("local://app/db").unwrap().kind().clone() else {
        unreachable!()
    };
    store.set(&l, Secret::from("cold-value-1")).unwrap();
    let good = std::fs::read(&path).unwrap();
    // A corrupt file when the resolver is built: the build does not notice.
    std::fs::write(&path, b"{ not a store").unwrap();
    let cfg = config_with(&[
        ("SECREF_STORE", path.display().to_string()),
        ("SECREF_KEY", key.to_base64().to_string()),
    ]);
    // The only test in this binary: no other thread reads the environment.
    std::env::set_var("COLD_OTHER", "other-value");
    let resolver = Resolver::from_config(&cfg).unwrap();
    // Other schemes work; `local://` fails typed, echoing nothing.
    let v = resolver.resolve("env://COLD_OTHER").await.unwrap();
    assert_eq!(v.as_text().unwrap(), "other-value");
    let e = resolver.resolve("local://app/db").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Integrity, "{e:?}");
    // The file is read at each read until it verifies: once restored, the
    // same resolver serves it.
    std::fs::write(&path, &good).unwrap();
    let v = resolver.resolve("local://app/db").await.unwrap();
    assert_eq!(v.as_text().unwrap(), "cold-value-1");
    // A wrong key is still `wrong_key` at the first read.
    let wrong = config_with(&[
        ("SECREF_STORE", path.display().to_string()),
        ("SECREF_KEY", StoreKey::generate().to_base64().to_string()),
    ]);
    let e = Resolver::from_config(&wrong)
        .unwrap()
        .resolve("local://app/db")
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::WrongKey);
}
