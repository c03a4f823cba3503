//! The embedded encrypted store: round trips, confidentiality of the file,
//! wrong keys, tampering, crash safety, concurrent writers, key files, and
//! the `local://` provider behind `Resolver::from_config`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use secref::config::Env;
use secref::store::{Store, StoreKey};
use secref::{Config, ErrorCode, RefKind, Resolver, Secret, SecretRef};

const CANARY: &str = "canary-7f3e9a1c-do-not-leak";

fn local(s: &str) -> secref::reference::LocalRef {
    match SecretRef::parse(s).unwrap().kind() {
        RefKind::Local(l) => l.clone(),
        other => panic!("not local: {other:?}"),
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    key: StoreKey,
    store: Store,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secref.store");
    let key = StoreKey::generate();
    let store = Store::create(&path, &key).unwrap();
    Fixture {
        _dir: dir,
        path,
        key,
        store,
    }
}

/// Stores a text value (the common case of `Store::set`).
fn put(store: &Store, r: &str, value: &str) {
    store.set(&local(r), Secret::from(value)).unwrap();
}

fn text(store: &Store, r: &str) -> String {
    store.get(&local(r)).unwrap().as_text().unwrap().to_string()
}

fn code(r: secref::Result<impl Sized>) -> ErrorCode {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.code(),
    }
}

/// Plain, hex, base64 and URL-encoded forms all count as a leak.
fn assert_no_canary(what: &str, s: &str) {
    secref_testkit::capture::assert_no_canary_in(what, s.as_bytes(), CANARY);
}

// ---------------------------------------------------------------- round trips

#[test]
fn round_trips_text_binary_empty_and_fields() {
    let f = fixture();
    let s = &f.store;
    put(s, "local://app/token", "t0ken");
    let binary: Vec<u8> = (0..=255).collect();
    s.set(&local("local://app/blob"), Secret::copy_from(&binary))
        .unwrap();
    put(s, "local://app/empty", "");
    put(s, "local://app/db#user", "admin");
    put(s, "local://app/db#password", "pa\"ss\n");

    // A fresh handle (another process, in effect) reads the same.
    let s2 = Store::open(&f.path, f.key.clone()).unwrap();
    for st in [s, &s2] {
        assert_eq!(text(st, "local://app/token"), "t0ken");
        assert_eq!(
            st.get(&local("local://app/blob")).unwrap().expose_bytes(),
            &binary[..]
        );
        assert!(st.get(&local("local://app/empty")).unwrap().is_empty());
        assert_eq!(text(st, "local://app/db#user"), "admin");
        assert_eq!(text(st, "local://app/db#password"), "pa\"ss\n");
        // The whole field map is compact JSON.
        assert_eq!(
            text(st, "local://app/db"),
            r#"{"password":"pa\"ss\n","user":"admin"}"#
        );
    }
    assert_eq!(
        s2.list().unwrap(),
        [
            "app/blob",
            "app/db#password",
            "app/db#user",
            "app/empty",
            "app/token"
        ]
    );

    // Update in place, and a field update keeps the other fields.
    put(&s2, "local://app/token", "new");
    put(&s2, "local://app/db#user", "root");
    assert_eq!(text(s, "local://app/token"), "new");
    assert_eq!(text(s, "local://app/db#user"), "root");
    assert_eq!(text(s, "local://app/db#password"), "pa\"ss\n");
}

#[test]
fn missing_entries_and_fields_are_typed() {
    let f = fixture();
    let s = &f.store;
    put(s, "local://a/single", "v");
    put(s, "local://a/map#x", "v");
    let e = s.get(&local("local://a/nope")).unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
    assert!(e.hint().unwrap().contains("secref set"));
    assert_eq!(
        code(s.get(&local("local://a/map#y"))),
        ErrorCode::FieldNotFound
    );
    assert_eq!(
        code(s.get(&local("local://a/single#x"))),
        ErrorCode::FieldNotFound
    );
    // A binary field cannot be rendered into the JSON map.
    s.set(&local("local://a/map#bin"), Secret::new(vec![0xff]))
        .unwrap();
    assert_eq!(code(s.get(&local("local://a/map"))), ErrorCode::InvalidUtf8);
    assert_eq!(
        s.get(&local("local://a/map#bin")).unwrap().expose_bytes(),
        [0xff]
    );
}

#[test]
fn mixing_entry_kinds_is_refused_without_change() {
    let f = fixture();
    let s = &f.store;
    put(s, "local://a/single", CANARY);
    put(s, "local://a/map#x", CANARY);
    let before = std::fs::read(&f.path).unwrap();
    let e1 = s
        .set(&local("local://a/single#x"), Secret::from(CANARY))
        .unwrap_err();
    let e2 = s
        .set(&local("local://a/map"), Secret::from(CANARY))
        .unwrap_err();
    for e in [&e1, &e2] {
        assert_eq!(e.code(), ErrorCode::Usage);
        assert_no_canary("usage error", &format!("{e} {e:?}"));
    }
    assert_eq!(std::fs::read(&f.path).unwrap(), before);
    assert_eq!(text(s, "local://a/single"), CANARY);
}

#[test]
fn remove_entries_and_fields() {
    let f = fixture();
    let s = &f.store;
    put(s, "local://a/one", "1");
    put(s, "local://a/map#x", "x");
    put(s, "local://a/map#y", "y");
    assert!(s.remove(&local("local://a/map#x")).unwrap());
    assert!(!s.remove(&local("local://a/map#x")).unwrap());
    assert!(!s.remove(&local("local://a/one#x")).unwrap());
    assert_eq!(s.list().unwrap(), ["a/map#y", "a/one"]);
    assert!(s.remove(&local("local://a/map#y")).unwrap());
    assert!(s.remove(&local("local://a/one")).unwrap());
    assert!(!s.remove(&local("local://a/one")).unwrap());
    assert!(s.list().unwrap().is_empty());
    assert_eq!(code(s.get(&local("local://a/map"))), ErrorCode::NotFound);
}

#[test]
fn create_refuses_an_existing_file() {
    let f = fixture();
    let before = std::fs::read(&f.path).unwrap();
    let e = Store::create(&f.path, &StoreKey::generate()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Usage);
    assert_eq!(std::fs::read(&f.path).unwrap(), before);
}

#[test]
fn a_missing_store_is_not_found_with_an_init_hint() {
    let dir = tempfile::tempdir().unwrap();
    let e = Store::open(&dir.path().join("none.store"), StoreKey::generate()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
    assert!(e.hint().unwrap().contains("secref init"));
}

// ------------------------------------------------------------ confidentiality

#[test]
fn the_file_never_contains_a_planted_value() {
    let f = fixture();
    let s = &f.store;
    put(s, "local://app/text", CANARY);
    put(s, "local://app/db#password", CANARY);
    s.set(
        &local("local://app/db#secret-field-name"),
        Secret::from("x"),
    )
    .unwrap();
    let raw = std::fs::read(&f.path).unwrap();
    let raw_text = String::from_utf8_lossy(&raw);
    assert_no_canary("the store file", &raw_text);
    assert!(
        !raw_text.contains("secret-field-name"),
        "field names are sealed"
    );
    // Entry names are visible by design.
    assert!(raw_text.contains("\"app/text\""));
    // Nor does the directory hold any other file with it (temp files, lock).
    for entry in std::fs::read_dir(f.path.parent().unwrap()).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        assert_no_canary(
            &path.display().to_string(),
            &String::from_utf8_lossy(&bytes),
        );
    }
    // And the key is not in the file either.
    assert!(!raw_text.contains(f.key.to_base64().as_str()));
}

#[test]
fn same_value_twice_gives_different_ciphertexts() {
    let f = fixture();
    put(&f.store, "local://a/x", "same");
    put(&f.store, "local://a/y", "same");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&f.path).unwrap()).unwrap();
    let ct = |name: &str| doc["entries"][name]["versions"]["1"]["ciphertext"].clone();
    assert!(ct("a/x").is_string());
    assert_ne!(ct("a/x"), ct("a/y"));
}

// ------------------------------------------------------------------ wrong key

#[test]
fn a_wrong_key_is_wrong_key_and_changes_nothing() {
    let f = fixture();
    put(&f.store, "local://a/x", CANARY);
    let before = std::fs::read(&f.path).unwrap();

    let e = Store::open(&f.path, StoreKey::generate()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::WrongKey);
    assert_no_canary("wrong key error", &format!("{e} {e:?}"));

    // A store opened with the right key whose file is then replaced by one
    // made with another key: reads and writes fail, nothing is written.
    let other_dir = tempfile::tempdir().unwrap();
    let other_path = other_dir.path().join("other.store");
    let other = Store::create(&other_path, &StoreKey::generate()).unwrap();
    put(&other, "local://a/x", "o");
    let foreign = std::fs::read(&other_path).unwrap();
    std::fs::write(&f.path, &foreign).unwrap();
    assert_eq!(
        code(f.store.get(&local("local://a/x"))),
        ErrorCode::WrongKey
    );
    assert_eq!(
        code(f.store.set(&local("local://a/y"), Secret::from("y"))),
        ErrorCode::WrongKey
    );
    assert_eq!(
        code(f.store.remove(&local("local://a/x"))),
        ErrorCode::WrongKey
    );
    assert_eq!(std::fs::read(&f.path).unwrap(), foreign);

    // Put the original back: everything is still there.
    std::fs::write(&f.path, &before).unwrap();
    assert_eq!(text(&f.store, "local://a/x"), CANARY);
}

// ------------------------------------------------------------------ tampering

fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut doc: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    edit(&mut doc);
    std::fs::write(path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
}

fn flip_b64(s: &str) -> String {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::STANDARD;
    let mut bytes = engine.decode(s).unwrap();
    bytes[0] ^= 1;
    engine.encode(bytes)
}

#[test]
fn tampering_is_detected_and_never_blessed() {
    type Edit = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Edit, ErrorCode)> = vec![
        (
            "flipped ciphertext byte",
            Box::new(|p| {
                edit_json(p, |d| {
                    let v = &mut d["entries"]["a/x"]["versions"]["1"];
                    let c = v["ciphertext"].as_str().unwrap().to_string();
                    v["ciphertext"] = flip_b64(&c).into();
                })
            }),
            ErrorCode::Integrity,
        ),
        (
            "flipped nonce byte",
            Box::new(|p| {
                edit_json(p, |d| {
                    let v = &mut d["entries"]["a/x"]["versions"]["1"];
                    let c = v["nonce"].as_str().unwrap().to_string();
                    v["nonce"] = flip_b64(&c).into();
                })
            }),
            ErrorCode::Integrity,
        ),
        (
            "swapped entries",
            Box::new(|p| {
                edit_json(p, |d| {
                    let x = d["entries"]["a/x"].clone();
                    d["entries"]["a/x"] = d["entries"]["a/y"].clone();
                    d["entries"]["a/y"] = x;
                })
            }),
            ErrorCode::Integrity,
        ),
        (
            "deleted entry",
            Box::new(|p| {
                edit_json(p, |d| {
                    d["entries"].as_object_mut().unwrap().remove("a/y");
                })
            }),
            ErrorCode::Integrity,
        ),
        (
            "added entry",
            Box::new(|p| {
                edit_json(p, |d| {
                    d["entries"]["a/z"] = d["entries"]["a/x"].clone();
                })
            }),
            ErrorCode::Integrity,
        ),
        (
            "flipped mac",
            Box::new(|p| {
                edit_json(p, |d| {
                    let m = d["mac"].as_str().unwrap().to_string();
                    d["mac"] = flip_b64(&m).into();
                })
            }),
            ErrorCode::Integrity,
        ),
        (
            "unknown field",
            Box::new(|p| edit_json(p, |d| d["extra"] = 1.into())),
            ErrorCode::Integrity,
        ),
        (
            "truncated file",
            Box::new(|p| {
                let raw = std::fs::read(p).unwrap();
                std::fs::write(p, &raw[..raw.len() / 2]).unwrap();
            }),
            ErrorCode::Integrity,
        ),
        (
            "empty file",
            Box::new(|p| std::fs::write(p, b"").unwrap()),
            ErrorCode::Integrity,
        ),
        (
            "not a store",
            Box::new(|p| edit_json(p, |d| d["format"] = "other".into())),
            ErrorCode::Integrity,
        ),
        (
            "changed key id (reads as another key's store)",
            Box::new(|p| edit_json(p, |d| d["key_id"] = "0000000000000000".into())),
            ErrorCode::WrongKey,
        ),
        (
            "version 2 sealed under version 1 (moved ciphertext)",
            Box::new(|p| {
                edit_json(p, |d| {
                    let v = d["entries"]["a/x"]["versions"]["1"].clone();
                    d["entries"]["a/x"]["versions"]["2"] = v;
                    d["entries"]["a/x"]["current_version"] = 2.into();
                })
            }),
            ErrorCode::Integrity,
        ),
        (
            "un-deleted by hand (metadata edit)",
            Box::new(|p| {
                edit_json(p, |d| {
                    d["entries"]["a/x"]["max_versions"] = 99.into();
                })
            }),
            ErrorCode::Integrity,
        ),
        (
            "future version",
            Box::new(|p| edit_json(p, |d| d["version"] = 3.into())),
            ErrorCode::Unsupported,
        ),
    ];
    for (what, edit, want) in cases {
        let f = fixture();
        put(&f.store, "local://a/x", CANARY);
        put(&f.store, "local://a/y", "y");
        edit(&f.path);
        let tampered = std::fs::read(&f.path).unwrap();
        let e = f.store.get(&local("local://a/x")).unwrap_err();
        assert_eq!(e.code(), want, "{what}: {e}");
        assert_no_canary(what, &format!("{e} {e:?}"));
        assert_eq!(
            code(Store::open(&f.path, f.key.clone())),
            want,
            "{what}: open"
        );
        assert_eq!(code(f.store.list()), want, "{what}: list");
        // A write must not re-MAC (and so bless) a tampered file.
        assert_eq!(
            code(f.store.set(&local("local://a/w"), Secret::from("w"))),
            want,
            "{what}: set"
        );
        assert_eq!(std::fs::read(&f.path).unwrap(), tampered, "{what}");
    }
}

// -------------------------------------------------------------- crash safety

/// The child side of the multi-process tests: does nothing unless spawned by
/// `spawn_writer` with `SECREF_STORE_TEST_CHILD` set.
#[test]
fn child_process_entry() {
    let Ok(role) = std::env::var("SECREF_STORE_TEST_CHILD") else {
        return;
    };
    assert_eq!(role, "writer");
    let path = PathBuf::from(std::env::var("SECREF_STORE_TEST_PATH").unwrap());
    let key = StoreKey::from_base64(&std::env::var("SECREF_STORE_TEST_KEY").unwrap()).unwrap();
    let prefix = std::env::var("SECREF_STORE_TEST_PREFIX").unwrap();
    let count: usize = std::env::var("SECREF_STORE_TEST_COUNT")
        .unwrap()
        .parse()
        .unwrap();
    let store = Store::open(&path, key).unwrap();
    for i in 0..count {
        let r = local(&format!("local://{prefix}/k{i}"));
        store
            .set(&r, Secret::from(format!("{prefix}-value-{i}")))
            .unwrap();
    }
}

/// A child process that is killed if the test fails before reaping it, so
/// no writer outlives its test.
struct Writer(Child);

impl Writer {
    fn kill_and_wait(mut self) {
        let _ = self.0.kill();
        self.0.wait().unwrap();
    }

    fn wait_success(mut self) -> bool {
        self.0.wait().unwrap().success()
    }

    fn has_exited(&mut self) -> bool {
        self.0.try_wait().unwrap().is_some()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_writer(path: &Path, key: &StoreKey, prefix: &str, count: usize) -> Writer {
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["child_process_entry", "--exact", "--test-threads=1", "-q"])
        .env("SECREF_STORE_TEST_CHILD", "writer")
        .env("SECREF_STORE_TEST_PATH", path)
        .env("SECREF_STORE_TEST_KEY", key.to_base64().as_str())
        .env("SECREF_STORE_TEST_PREFIX", prefix)
        .env("SECREF_STORE_TEST_COUNT", count.to_string())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    Writer(child)
}

/// Checks every `prefix/k{i}` present has its value, and that they are
/// exactly k0..kN (each writer writes in order, so a crash leaves a prefix).
fn check_writer_entries(store: &Store, prefix: &str) -> usize {
    let names: Vec<String> = store
        .list()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{prefix}/")))
        .collect();
    for i in 0..names.len() {
        assert_eq!(
            text(store, &format!("local://{prefix}/k{i}")),
            format!("{prefix}-value-{i}")
        );
    }
    names.len()
}

#[test]
fn a_stray_temp_file_is_harmless() {
    let f = fixture();
    put(&f.store, "local://a/x", "x");
    let dir = f.path.parent().unwrap();
    // What a crash between "create temp" and "rename" leaves behind.
    let raw = std::fs::read(&f.path).unwrap();
    std::fs::write(dir.join(".secref-store.crash1.tmp"), &raw[..raw.len() / 3]).unwrap();
    std::fs::write(dir.join(".secref-store.crash2.tmp"), b"").unwrap();
    let s = Store::open(&f.path, f.key.clone()).unwrap();
    assert_eq!(text(&s, "local://a/x"), "x");
    put(&s, "local://a/y", "y");
    assert_eq!(s.list().unwrap(), ["a/x", "a/y"]);
}

#[test]
fn killing_a_writer_mid_write_loses_no_committed_entry() {
    let f = fixture();
    put(&f.store, "local://committed/one", "1");
    put(&f.store, "local://committed/map#f", "f");
    let mut child = spawn_writer(&f.path, &f.key, "crash", 100_000);
    // Let it commit a few entries, then kill it wherever it is.
    let mut seen = 0;
    for _ in 0..20_000 {
        seen = f
            .store
            .list()
            .unwrap()
            .iter()
            .filter(|n| n.starts_with("crash/"))
            .count();
        if seen >= 10 || child.has_exited() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert!(seen >= 10, "the writer made no progress");
    child.kill_and_wait();

    let s = Store::open(&f.path, f.key.clone()).unwrap();
    assert_eq!(text(&s, "local://committed/one"), "1");
    assert_eq!(text(&s, "local://committed/map#f"), "f");
    let n = check_writer_entries(&s, "crash");
    assert!(n >= seen);
    // The lock died with the process: writing still works.
    put(&s, "local://after/crash", "ok");
    assert_eq!(text(&f.store, "local://after/crash"), "ok");
    assert_eq!(check_writer_entries(&s, "crash"), n);
}

#[test]
fn concurrent_writers_lose_nothing() {
    let f = fixture();
    let prefixes = ["w1", "w2", "w3"];
    let children: Vec<Writer> = prefixes
        .iter()
        .map(|p| spawn_writer(&f.path, &f.key, p, 20))
        .collect();
    // Meanwhile this process writes too.
    for i in 0..20 {
        f.store
            .set(
                &local(&format!("local://w0/k{i}")),
                Secret::from(format!("w0-value-{i}")),
            )
            .unwrap();
    }
    for c in children {
        assert!(c.wait_success());
    }
    let s = Store::open(&f.path, f.key.clone()).unwrap();
    assert_eq!(s.list().unwrap().len(), 80);
    for p in ["w0", "w1", "w2", "w3"] {
        assert_eq!(check_writer_entries(&s, p), 20, "{p}");
    }
}

// ------------------------------------------------------------------ key files

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn config_with(pairs: &[(&str, String)]) -> Config {
    Config {
        env: Env::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.clone()))),
        ..Config::default()
    }
}

#[test]
fn key_files_are_private_and_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("conf/secref/key");
    let key = StoreKey::generate();
    key.write_new_key_file(&key_path).unwrap();
    #[cfg(unix)]
    {
        assert_eq!(mode(&key_path), 0o600);
        assert_eq!(mode(key_path.parent().unwrap()), 0o700);
    }
    let before = std::fs::read(&key_path).unwrap();
    let e = StoreKey::generate()
        .write_new_key_file(&key_path)
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Usage);
    assert_eq!(std::fs::read(&key_path).unwrap(), before);

    // The loaded key opens a store made with the original.
    let store_path = dir.path().join("s.store");
    Store::create(&store_path, &key).unwrap();
    let mut cfg = config_with(&[("SECREF_STORE", store_path.display().to_string())]);
    cfg.local.key_file = Some(key_path.clone());
    assert_eq!(StoreKey::default_key_path(&cfg).unwrap(), key_path);
    Store::open_from_config(&cfg).unwrap();

    // $SECREF_KEY_FILE works too; $SECREF_KEY takes precedence over files.
    let cfg = config_with(&[
        ("SECREF_STORE", store_path.display().to_string()),
        ("SECREF_KEY_FILE", key_path.display().to_string()),
    ]);
    Store::open_from_config(&cfg).unwrap();
    let cfg = config_with(&[
        ("SECREF_STORE", store_path.display().to_string()),
        ("SECREF_KEY_FILE", key_path.display().to_string()),
        ("SECREF_KEY", StoreKey::generate().to_base64().to_string()),
    ]);
    assert_eq!(code(Store::open_from_config(&cfg)), ErrorCode::WrongKey);
}

#[cfg(unix)]
#[test]
fn a_key_file_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("key");
    StoreKey::generate().write_new_key_file(&key_path).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = config_with(&[("SECREF_KEY_FILE", key_path.display().to_string())]);
    let e = StoreKey::load(&cfg).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Config);
    assert!(e.hint().unwrap().contains("chmod 600"));
}

#[test]
fn missing_or_bad_keys_are_config_errors_that_echo_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with(&[(
        "SECREF_KEY_FILE",
        dir.path().join("absent").display().to_string(),
    )]);
    let e = StoreKey::load(&cfg).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Config);
    assert!(e.hint().unwrap().contains("secref init"));

    for bad in [
        CANARY.to_string(),
        format!("{CANARY}=="),
        "QUJD".to_string(),
    ] {
        let e = StoreKey::from_base64(&bad).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Config);
        assert_no_canary("bad key", &format!("{e} {e:?}"));
        let cfg = config_with(&[("SECREF_KEY", bad.clone())]);
        let e = StoreKey::load(&cfg).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Config);
        assert_no_canary("bad SECREF_KEY", &format!("{e} {e:?}"));
    }
    let key = StoreKey::generate();
    assert_eq!(format!("{key:?}"), "StoreKey([REDACTED])");
    let unpadded = key.to_base64().trim_end_matches('=').to_string();
    StoreKey::from_base64(&format!("  {unpadded}\n")).unwrap();
}

#[test]
fn errors_and_debug_output_never_contain_values() {
    let f = fixture();
    let s = &f.store;
    put(s, "local://a/single", CANARY);
    put(s, "local://a/map#x", CANARY);
    s.set(&local("local://a/map#bin"), Secret::new(vec![0xff, 0x00]))
        .unwrap();
    let errors = [
        s.get(&local("local://a/single#x")).unwrap_err(),
        s.get(&local("local://a/map#nope")).unwrap_err(),
        s.get(&local("local://a/map")).unwrap_err(),
        s.set(&local("local://a/single#f"), Secret::from(CANARY))
            .unwrap_err(),
    ];
    for e in &errors {
        assert_no_canary("error", &format!("{e} {e:?} {:?}", e.hint()));
    }
    assert_no_canary("store debug", &format!("{s:?}"));
    assert_no_canary("list", &format!("{:?}", s.list().unwrap()));
    let value = s.get(&local("local://a/single")).unwrap();
    assert_no_canary("secret debug", &format!("{value:?} {value}"));
}

// ---------------------------------------------------- provider and resolver

#[tokio::test]
async fn resolver_from_config_serves_local_env_and_file() {
    let f = fixture();
    put(&f.store, "local://app/db#password", "pw");
    put(&f.store, "local://app/db#user", "u");
    put(&f.store, "local://app/token", "tok");
    let cfg = config_with(&[
        ("SECREF_STORE", f.path.display().to_string()),
        ("SECREF_KEY", f.key.to_base64().to_string()),
    ]);
    let resolver = Resolver::from_config(&cfg).unwrap();
    // The host's own providers first; remote ones that need no config to
    // exist (AWS: its credential chain is searched at the first read) follow.
    assert_eq!(resolver.provider_names()[..3], ["local", "env", "file"]);
    assert!(resolver
        .provider_names()
        .iter()
        .all(|n| ["local", "env", "file", "aws-sm", "aws-ssm"].contains(n)));

    assert_eq!(
        resolver
            .resolve("local://app/db#password")
            .await
            .unwrap()
            .as_text()
            .unwrap(),
        "pw"
    );
    let partial = resolver
        .read_many([
            "local://app/token",
            "local://app/db#user",
            "local://app/db#nope",
            "local://app/missing",
            "local://app/db",
        ])
        .partial()
        .await
        .unwrap();
    assert_eq!(partial.resolved.len(), 3);
    let get = |r: &str| {
        partial.resolved[&SecretRef::parse(r).unwrap()]
            .as_text()
            .unwrap()
            .to_string()
    };
    assert_eq!(get("local://app/token"), "tok");
    assert_eq!(get("local://app/db"), r#"{"password":"pw","user":"u"}"#);
    let fail = |r: &str| partial.failures[&SecretRef::parse(r).unwrap()].code();
    assert_eq!(fail("local://app/db#nope"), ErrorCode::FieldNotFound);
    assert_eq!(fail("local://app/missing"), ErrorCode::NotFound);

    let v = resolver.validate("local://app/db#user").await.unwrap();
    assert_eq!(v.exists, Some(true));
    let v = resolver.validate("local://app/db#nope").await.unwrap();
    assert_eq!(v.exists, Some(false));
    let m = resolver.metadata("local://app/db").await.unwrap();
    assert_eq!(m.custom["entry_kind"], "fields");
    assert_eq!(m.custom["fields"], "password,user");
    let m = resolver.metadata("local://app/token").await.unwrap();
    assert_eq!(m.custom["entry_kind"], "single");
    assert_eq!(
        resolver
            .metadata("local://app/none")
            .await
            .unwrap_err()
            .code(),
        ErrorCode::NotFound
    );

    std::env::set_var("SECREF_STORE_TEST_ENV_VAR", "from-env");
    assert_eq!(
        resolver
            .resolve("env://SECREF_STORE_TEST_ENV_VAR")
            .await
            .unwrap()
            .as_text()
            .unwrap(),
        "from-env"
    );
    let file = f.path.with_file_name("plain.txt");
    std::fs::write(&file, "from-file").unwrap();
    let file_ref = format!("file://{}", file.display());
    assert_eq!(
        resolver
            .resolve(file_ref.as_str())
            .await
            .unwrap()
            .as_text()
            .unwrap(),
        "from-file"
    );
}

#[tokio::test]
async fn without_a_store_local_refs_say_init_and_others_still_work() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with(&[(
        "SECREF_STORE",
        dir.path().join("absent.store").display().to_string(),
    )]);
    let resolver = Resolver::from_config(&cfg).unwrap();
    let e = resolver.resolve("local://app/db").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
    assert!(e.hint().unwrap().contains("secref init"), "{e}");
    std::env::set_var("SECREF_STORE_TEST_ENV_VAR2", "v");
    assert_eq!(
        resolver
            .resolve("env://SECREF_STORE_TEST_ENV_VAR2")
            .await
            .unwrap()
            .as_text()
            .unwrap(),
        "v"
    );
}

#[tokio::test]
async fn with_a_wrong_key_local_refs_fail_typed() {
    let f = fixture();
    let cfg = config_with(&[
        ("SECREF_STORE", f.path.display().to_string()),
        ("SECREF_KEY", StoreKey::generate().to_base64().to_string()),
    ]);
    let resolver = Resolver::from_config(&cfg).unwrap();
    let e = resolver.resolve("local://app/db").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::WrongKey);
}

#[test]
fn default_paths_follow_config_then_env() {
    let mut cfg = config_with(&[("SECREF_STORE", "/from/env.store".to_string())]);
    assert_eq!(
        Store::default_path(&cfg).unwrap(),
        PathBuf::from("/from/env.store")
    );
    cfg.local.store = Some(PathBuf::from("rel.store"));
    cfg.source = Some(PathBuf::from("/project/secref.toml"));
    assert_eq!(
        Store::default_path(&cfg).unwrap(),
        PathBuf::from("/project/rel.store")
    );
    cfg.local.store = Some(PathBuf::from("/abs.store"));
    assert_eq!(
        Store::default_path(&cfg).unwrap(),
        PathBuf::from("/abs.store")
    );
}

#[test]
fn concurrent_threads_on_shared_and_separate_handles_lose_nothing() {
    let f = fixture();
    let second = Store::open(&f.path, f.key.clone()).unwrap();
    std::thread::scope(|scope| {
        for t in 0..4 {
            let store = if t % 2 == 0 { &f.store } else { &second };
            scope.spawn(move || {
                for i in 0..10 {
                    let r = local(&format!("local://t{t}/k{i}"));
                    store
                        .set(&r, Secret::from(format!("t{t}-value-{i}")))
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(f.store.list().unwrap().len(), 40);
    for t in 0..4 {
        assert_eq!(check_writer_entries(&second, &format!("t{t}")), 10);
    }
}
