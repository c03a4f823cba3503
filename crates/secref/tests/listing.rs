//! `Resolver::list` (what `--env-from` asks): the local provider's folders,
//! entries and fields, a provider that cannot list, an unknown scheme, and
//! `Store::write_many` as one all-or-nothing write.

use std::collections::BTreeMap;

use secref::providers::{EnvProvider, LocalProvider};
use secref::store::{EntryValue, Store, StoreKey};
use secref::{ErrorCode, Resolver, Secret};

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(&dir.path().join("s.store"), &StoreKey::generate()).unwrap();
    (dir, store)
}

#[tokio::test]
async fn local_lists_entries_and_fields_under_a_folder() {
    let (_dir, store) = store();
    let fields: BTreeMap<String, Secret> = [("password", "p"), ("user", "u")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), Secret::from(v)))
        .collect();
    let versions = store
        .write_many(&[
            ("app/db".into(), EntryValue::Fields(fields)),
            ("app/token".into(), EntryValue::Single(Secret::from("t"))),
            ("apple/x".into(), EntryValue::Single(Secret::from("no"))),
            ("app/gone".into(), EntryValue::Single(Secret::from("g"))),
        ])
        .unwrap();
    assert_eq!(versions, vec![1, 1, 1, 1]);
    store.delete_versions("app/gone", &[1]).unwrap();
    let resolver = Resolver::builder()
        .provider(LocalProvider::new(store))
        .provider(EnvProvider::new())
        .build()
        .unwrap();

    let keys = |l: Vec<secref::provider::Listed>| {
        l.into_iter()
            .map(|l| (l.key, l.reference.to_string()))
            .collect::<Vec<_>>()
    };
    let want = vec![
        (
            "db#password".to_string(),
            "local://app/db#password".to_string(),
        ),
        ("db#user".to_string(), "local://app/db#user".to_string()),
        ("token".to_string(), "local://app/token".to_string()),
    ];
    assert_eq!(keys(resolver.list("local://app/").await.unwrap()), want);
    assert_eq!(keys(resolver.list("LOCAL://app").await.unwrap()), want);
    assert_eq!(
        keys(resolver.list("local://app/db").await.unwrap()),
        vec![
            (
                "password".to_string(),
                "local://app/db#password".to_string()
            ),
            ("user".to_string(), "local://app/db#user".to_string()),
        ]
    );
    assert!(resolver.list("local://nothing/").await.unwrap().is_empty());

    let e = resolver.list("env://").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unsupported);
    let e = resolver.list("nope://x").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::UnsupportedEngine);
    let e = resolver.list("app/").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Usage);
    let e = resolver.list("secret://dev/").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::NoProvider);
}

#[test]
fn write_many_is_all_or_nothing() {
    let (_dir, store) = store();
    let e = store
        .write_many(&[
            ("ok/a".into(), EntryValue::Single(Secret::from("a"))),
            ("bad/../b".into(), EntryValue::Single(Secret::from("b"))),
        ])
        .unwrap_err();
    assert_ne!(e.code(), ErrorCode::Internal);
    assert!(store.list().unwrap().is_empty());
}
