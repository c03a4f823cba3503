//! The store file's boundaries, through the `secref` binary: migration of a
//! format-1 store written by an earlier secref (committed fixture), a store
//! from a newer secref refused untouched, a symlinked store written through
//! its link, and temporary files of crashed writers cleaned safely.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, SystemTime};

use secref_testkit::cli::{
    feed_stdin, fixture, run, run_ok, stderr, stdout, Sandbox, FIXTURE_VALUES,
};

/// A sandbox holding the committed format-1 store and its key.
fn v1_sandbox() -> Sandbox {
    let sb = Sandbox::new(env!("CARGO_BIN_EXE_secref"));
    std::fs::copy(fixture("v1.store"), sb.path("secrets.store")).unwrap();
    std::fs::copy(fixture("v1.key"), sb.path("store.key")).unwrap();
    // git does not keep the key file's mode; secref refuses a readable key.
    chmod(&sb.path("store.key"), 0o600);
    sb
}

fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn get_ok(sb: &Sandbox, reference: &str) -> String {
    stdout(&run_ok(sb.cmd().args(["get", "-n", reference])))
}

fn set(sb: &Sandbox, reference: &str, value: &str) -> Output {
    feed_stdin(sb.cmd().args(["set", reference]), value.as_bytes())
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// Names of the files in `dir` (not recursive), sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_format_1_store_is_migrated_in_place_with_the_same_values() {
    let sb = v1_sandbox();
    let store = sb.path("secrets.store");
    assert_eq!(json(&store)["version"], 1);

    for (r, want) in FIXTURE_VALUES {
        assert_eq!(get_ok(&sb, r), *want, "{r}");
    }
    let doc = json(&store);
    assert_eq!(doc["version"], 2, "the store was not migrated");
    assert_eq!(doc["key_id"], "adf089c2d5fd7694");
    // The old copy was kept only until the new file was verified, and no
    // temporary file is left over.
    assert_eq!(
        names_in(sb.root()),
        ["home", "secrets.store", "secrets.store.lock", "store.key"]
    );
    let h: serde_json::Value = serde_json::from_slice(
        &run_ok(sb.cmd().args(["history", "--json", "local://app/db"])).stdout,
    )
    .unwrap();
    assert_eq!(h["current_version"], 1);
    assert_eq!(
        stdout(&run_ok(sb.cmd().arg("ls"))),
        "local://app/api-token\nlocal://app/db#password\nlocal://app/db#user\n"
    );
    // And it works as a format-2 store from now on.
    let o = set(&sb, "local://app/db#password", "rotated");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(get_ok(&sb, "local://app/db#password"), "rotated");
    assert_eq!(
        get_ok(&sb, "local://app/db#password?version=1"),
        "fixture-db-password"
    );
    assert_eq!(get_ok(&sb, "local://app/db#user"), "admin");
}

#[test]
fn a_migration_that_cannot_keep_the_old_file_changes_nothing() {
    let sb = v1_sandbox();
    let before = std::fs::read(sb.path("secrets.store")).unwrap();
    // The backup cannot be written (a directory is in its place): the old
    // store must not be replaced.
    std::fs::create_dir(sb.path("secrets.store.v1-backup")).unwrap();
    let o = run(sb.cmd().args(["get", "local://app/api-token"]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("error[io]"), "{}", stderr(&o));
    assert!(!stdout(&o).contains("tok-123456"));
    assert_eq!(std::fs::read(sb.path("secrets.store")).unwrap(), before);

    // Once the obstacle is gone, the same store migrates.
    std::fs::remove_dir(sb.path("secrets.store.v1-backup")).unwrap();
    assert_eq!(get_ok(&sb, "local://app/api-token"), "tok-123456");
    assert_eq!(json(&sb.path("secrets.store"))["version"], 2);
}

#[test]
fn a_tampered_format_1_store_is_refused_and_not_migrated() {
    let sb = v1_sandbox();
    let store = sb.path("secrets.store");
    let mut doc = json(&store);
    doc["entries"]["app/api-token"]["ciphertext"] = doc["entries"]["app/db"]["ciphertext"].clone();
    std::fs::write(&store, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let before = std::fs::read(&store).unwrap();
    let o = run(sb.cmd().args(["get", "local://app/api-token"]));
    assert!(stderr(&o).contains("error[integrity]"), "{}", stderr(&o));
    let o = set(&sb, "local://app/new", "v");
    assert!(stderr(&o).contains("error[integrity]"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&store).unwrap(), before);
}

#[test]
fn a_store_from_a_newer_secref_is_refused_and_left_alone() {
    let sb = Sandbox::new(env!("CARGO_BIN_EXE_secref"));
    run_ok(sb.cmd().arg("init"));
    let o = set(&sb, "local://app/x", "value-x");
    assert!(o.status.success(), "{}", stderr(&o));
    let store = sb.path("secrets.store");
    let mut doc = json(&store);
    doc["version"] = 3.into();
    std::fs::write(&store, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let before = std::fs::read(&store).unwrap();

    for o in [
        run(sb.cmd().args(["get", "local://app/x"])),
        set(&sb, "local://app/x", "other"),
        run(sb.cmd().args(["rm", "local://app/x"])),
        run(sb.cmd().arg("ls")),
    ] {
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains("error[unsupported]"), "{err}");
        assert!(err.contains("version 3 is newer"), "{err}");
        assert!(err.contains("upgrade secref"), "{err}");
        assert!(!stdout(&o).contains("value-x"));
    }
    assert_eq!(std::fs::read(&store).unwrap(), before);
}

#[test]
fn a_symlinked_store_is_written_through_its_link() {
    let sb = Sandbox::new(env!("CARGO_BIN_EXE_secref"));
    std::fs::create_dir(sb.path("data")).unwrap();
    let target = sb.path("data/real.store");
    run_ok(sb.cmd().env("SECREF_STORE", &target).arg("init"));
    let link = sb.path("secrets.store");
    std::os::unix::fs::symlink(&target, &link).unwrap();

    for v in ["through-link-1", "through-link-2"] {
        let o = set(&sb, "local://app/x", v);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link was replaced by a file"
    );
    // The target holds the data: reading it directly sees both versions.
    let direct = |r: &str| {
        stdout(&run_ok(
            sb.cmd().env("SECREF_STORE", &target).args(["get", "-n", r]),
        ))
    };
    assert_eq!(direct("local://app/x"), "through-link-2");
    assert_eq!(direct("local://app/x?version=1"), "through-link-1");
    // Temporary files and the lock live next to the target, none are left.
    assert_eq!(
        names_in(&sb.path("data")),
        ["real.store", "real.store.lock"]
    );
    assert_eq!(
        names_in(sb.root()),
        ["data", "home", "secrets.store", "store.key"]
    );

    // A dangling link is refused with a clear error; nothing is created.
    std::fs::remove_file(&target).unwrap();
    let o = set(&sb, "local://app/x", "lost");
    assert_ne!(o.status.code(), Some(0));
    assert!(!target.exists());
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn temporary_files_of_crashed_writers_are_cleaned_and_nothing_else() {
    let sb = Sandbox::new(env!("CARGO_BIN_EXE_secref"));
    run_ok(sb.cmd().arg("init"));
    let o = set(&sb, "local://app/x", "value-x");
    assert!(o.status.success(), "{}", stderr(&o));
    let copy = std::fs::read(sb.path("secrets.store")).unwrap();

    // What `kill -9` during `set` leaves: a full encrypted copy under the
    // store's own temporary-file pattern.
    let crashed = sb.path(".secrets.store.4242.Ab12Cd.secref-tmp");
    std::fs::write(&crashed, &copy).unwrap();
    // Look-alikes that are not this store's temporary files.
    let keep = [
        ".secrets.store.4242.Ab12Cd.secref-tmp.keep",
        ".other.store.4242.Ab12Cd.secref-tmp",
        ".secrets.store.notapid.Ab12Cd.secref-tmp",
        "secrets.store.4242.Ab12Cd.secref-tmp",
        ".secref-store.Fresh1.tmp", // an old secref's, too young to judge
    ];
    for k in keep {
        std::fs::write(sb.path(k), b"not ours").unwrap();
    }
    // A link with the pattern is not a file we wrote: never followed.
    std::fs::write(sb.path("outside"), b"precious").unwrap();
    std::os::unix::fs::symlink(
        sb.path("outside"),
        sb.path(".secrets.store.4243.Zz99Yy.secref-tmp"),
    )
    .unwrap();
    // An old secref's temp file from hours ago (before the pattern named its
    // store): no writer takes that long.
    let legacy = sb.path(".secref-store.Old123.tmp");
    std::fs::write(&legacy, &copy).unwrap();
    let hours_ago = SystemTime::now() - Duration::from_secs(3 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&legacy)
        .unwrap()
        .set_modified(hours_ago)
        .unwrap();

    // A read does not clean (it holds no lock); the next write does.
    run_ok(sb.cmd().args(["get", "local://app/x"]));
    assert!(crashed.exists());
    let o = set(&sb, "local://app/y", "value-y");
    assert!(o.status.success(), "{}", stderr(&o));

    assert!(
        !crashed.exists(),
        "the crashed writer's copy is still there"
    );
    assert!(
        !legacy.exists(),
        "the old secref's stale copy is still there"
    );
    for k in keep {
        assert_eq!(std::fs::read(sb.path(k)).unwrap(), b"not ours", "{k}");
    }
    assert!(sb
        .path(".secrets.store.4243.Zz99Yy.secref-tmp")
        .is_symlink());
    assert_eq!(std::fs::read(sb.path("outside")).unwrap(), b"precious");
    assert_eq!(get_ok(&sb, "local://app/x"), "value-x");
    assert_eq!(get_ok(&sb, "local://app/y"), "value-y");
}
