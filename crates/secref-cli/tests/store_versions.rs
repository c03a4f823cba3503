//! The local store's versions, driven through the `secref` binary against a
//! real store file: `set` (new version, `--cas`), pinned `get ?version=N`,
//! `rm` (soft-delete), `rm --destroy`, `destroy --versions`, `undelete`,
//! `history`, `max_versions`, and `secref serve` seeing every change on the
//! very next request.

use std::process::Output;

use secref_testkit::cli::{
    feed_stdin, run, run_ok, secflow_batch, stderr, stdout, Sandbox, Served,
};

const TOKEN: &str = "store-versions-token-4f1c9a";

fn sandbox() -> Sandbox {
    let sb = Sandbox::new(env!("CARGO_BIN_EXE_secref"));
    run_ok(sb.cmd().arg("init"));
    sb
}

fn set(sb: &Sandbox, reference: &str, value: &str, extra: &[&str]) -> Output {
    feed_stdin(
        sb.cmd().arg("set").args(extra).arg(reference),
        value.as_bytes(),
    )
}

fn set_ok(sb: &Sandbox, reference: &str, value: &str) {
    let o = set(sb, reference, value, &[]);
    assert!(o.status.success(), "set {reference}: {}", stderr(&o));
}

fn get(sb: &Sandbox, reference: &str) -> Output {
    run(sb.cmd().args(["get", "-n", reference]))
}

fn get_ok(sb: &Sandbox, reference: &str) -> String {
    let o = get(sb, reference);
    assert!(o.status.success(), "get {reference}: {}", stderr(&o));
    stdout(&o)
}

/// Asserts a failed command's exit code and `error[code]`.
fn fails(o: &Output, exit: i32, code: &str) {
    assert_eq!(o.status.code(), Some(exit), "{}", stderr(o));
    assert!(
        stderr(o).contains(&format!("error[{code}]")),
        "want {code}: {}",
        stderr(o)
    );
}

fn history(sb: &Sandbox, reference: &str) -> serde_json::Value {
    let o = run_ok(sb.cmd().args(["history", "--json", reference]));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn store_bytes(sb: &Sandbox) -> Vec<u8> {
    std::fs::read(sb.path("secrets.store")).unwrap()
}

#[test]
fn every_set_is_a_new_version_and_pinned_reads_see_old_ones() {
    let sb = sandbox();
    set_ok(&sb, "local://app/db#password", "pw-one");
    set_ok(&sb, "local://app/db#user", "admin");
    let o = set(&sb, "local://app/db#password", "pw-three", &[]);
    assert!(stderr(&o).contains("(version 3)"), "{}", stderr(&o));

    assert_eq!(get_ok(&sb, "local://app/db#password"), "pw-three");
    assert_eq!(get_ok(&sb, "local://app/db#password?version=1"), "pw-one");
    assert_eq!(get_ok(&sb, "local://app/db#password?version=2"), "pw-one");
    assert_eq!(get_ok(&sb, "local://app/db#user?version=2"), "admin");
    fails(
        &get(&sb, "local://app/db#user?version=1"),
        3,
        "field_not_found",
    );
    fails(&get(&sb, "local://app/db?version=4"), 3, "not_found");
    fails(
        &get(&sb, "local://app/db?version=0"),
        2,
        "invalid_reference",
    );
    fails(
        &get(&sb, "local://app/db?version=2#user"),
        2,
        "ambiguous_query",
    );
    // A write names no version.
    fails(
        &set(&sb, "local://app/db#user?version=2", "x", &[]),
        2,
        "usage",
    );

    let h = history(&sb, "local://app/db");
    assert_eq!(h["current_version"], 3);
    assert_eq!(h["versions"].as_array().unwrap().len(), 3);
    let text = serde_json::to_string(&h).unwrap();
    for value in ["pw-one", "pw-three", "admin"] {
        assert!(!text.contains(value), "history shows a value: {text}");
    }
    let table = stdout(&run_ok(sb.cmd().args(["history", "local://app/db"])));
    assert!(table.contains("current version 3"), "{table}");
    assert!(!table.contains("pw-"), "{table}");
}

#[test]
fn cas_writes_only_on_the_expected_version_and_changes_nothing_otherwise() {
    let sb = sandbox();
    let o = set(&sb, "local://app/token", "t1", &["--cas", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // --cas 0 means "only if it does not exist yet".
    let before = store_bytes(&sb);
    fails(
        &set(&sb, "local://app/token", "t2", &["--cas", "0"]),
        2,
        "usage",
    );
    fails(
        &set(&sb, "local://app/token", "t2", &["--cas", "7"]),
        2,
        "usage",
    );
    assert_eq!(store_bytes(&sb), before, "a failed check-and-set wrote");
    let o = set(&sb, "local://app/token", "t2", &["--cas", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(get_ok(&sb, "local://app/token"), "t2");
}

#[test]
fn rm_soft_deletes_and_undelete_restores() {
    let sb = sandbox();
    set_ok(&sb, "local://app/api", "v1-value");
    set_ok(&sb, "local://app/api", "v2-value");
    run_ok(sb.cmd().args(["rm", "local://app/api"]));

    fails(&get(&sb, "local://app/api"), 3, "not_found");
    fails(&get(&sb, "local://app/api?version=2"), 3, "version_deleted");
    assert_eq!(get_ok(&sb, "local://app/api?version=1"), "v1-value");
    assert!(!stdout(&run_ok(sb.cmd().arg("ls"))).contains("app/api"));
    // Removing what is already removed is not found, and changes nothing.
    let before = store_bytes(&sb);
    fails(
        &run(sb.cmd().args(["rm", "local://app/api"])),
        3,
        "not_found",
    );
    assert_eq!(store_bytes(&sb), before);

    let h = history(&sb, "local://app/api");
    assert!(h["versions"][1]["deletion_time"].is_string(), "{h}");
    assert_eq!(h["versions"][1]["destroyed"], false);

    run_ok(sb.cmd().args(["undelete", "local://app/api"]));
    assert_eq!(get_ok(&sb, "local://app/api"), "v2-value");

    // A field removal is a new version without that field.
    set_ok(&sb, "local://app/db#password", "pw");
    set_ok(&sb, "local://app/db#user", "u");
    run_ok(sb.cmd().args(["rm", "local://app/db#password"]));
    fails(&get(&sb, "local://app/db#password"), 3, "field_not_found");
    assert_eq!(get_ok(&sb, "local://app/db#password?version=2"), "pw");
    assert_eq!(history(&sb, "local://app/db")["current_version"], 3);
}

#[test]
fn destroy_erases_data_for_good_and_keeps_history() {
    let sb = sandbox();
    for v in ["first-secret", "second-secret", "third-secret"] {
        set_ok(&sb, "local://app/key", v);
    }
    run_ok(
        sb.cmd()
            .args(["destroy", "local://app/key", "--versions", "1,2"]),
    );
    fails(
        &get(&sb, "local://app/key?version=1"),
        3,
        "version_destroyed",
    );
    fails(
        &get(&sb, "local://app/key?version=2"),
        3,
        "version_destroyed",
    );
    assert_eq!(get_ok(&sb, "local://app/key"), "third-secret");
    // Undelete cannot bring back destroyed data.
    fails(
        &run(sb
            .cmd()
            .args(["undelete", "local://app/key", "--versions", "1"])),
        3,
        "not_found",
    );

    run_ok(sb.cmd().args(["rm", "--destroy", "local://app/key"]));
    fails(&get(&sb, "local://app/key"), 3, "not_found");
    let h = history(&sb, "local://app/key");
    let destroyed: Vec<_> = h["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["destroyed"].as_bool().unwrap())
        .collect();
    assert_eq!(destroyed, [true, true, true]);
    // The ciphertexts are gone from the file: nothing left to decrypt.
    let doc: serde_json::Value = serde_json::from_slice(&store_bytes(&sb)).unwrap();
    for v in doc["entries"]["app/key"]["versions"]
        .as_object()
        .unwrap()
        .values()
    {
        assert!(v.get("ciphertext").is_none(), "{v}");
    }
    fails(
        &run(sb.cmd().args(["rm", "--destroy", "local://app/key#f"])),
        2,
        "usage",
    );
    fails(
        &run(sb
            .cmd()
            .args(["destroy", "local://app/none", "--versions", "1"])),
        3,
        "not_found",
    );
}

#[test]
fn only_max_versions_are_kept() {
    let sb = sandbox();
    for i in 1..=12 {
        set_ok(&sb, "local://app/rotating", &format!("value-{i}"));
    }
    let h = history(&sb, "local://app/rotating");
    assert_eq!(h["current_version"], 12);
    assert_eq!(h["oldest_version"], 3);
    assert_eq!(h["versions"].as_array().unwrap().len(), 10);
    fails(&get(&sb, "local://app/rotating?version=2"), 3, "not_found");
    assert_eq!(get_ok(&sb, "local://app/rotating?version=3"), "value-3");
}

/// One SecFlow resolve of `reference` through the server: the value, or the
/// item's error code.
fn served_read(served: &Served, reference: &str) -> Result<String, String> {
    let (status, body) = served.post(
        "/v1/secrets/resolve:batch",
        TOKEN,
        &secflow_batch("versions", "secret.runtime_resolve", &[reference]),
    );
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let item = &v["items"][0];
    match item["value"]["data"].as_str() {
        Some(data) => Ok(data.to_string()),
        None => Err(item["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()),
    }
}

#[test]
fn serve_sees_set_rm_destroy_and_undelete_on_the_very_next_request() {
    let sb = sandbox();
    const REF: &str = "local://app/db#password";
    set_ok(&sb, REF, "old-value");
    let served = Served::start(&sb, TOKEN, &[]);

    // Warm whatever the server caches.
    assert_eq!(served_read(&served, REF).as_deref(), Ok("old-value"));
    assert_eq!(served_read(&served, REF).as_deref(), Ok("old-value"));

    set_ok(&sb, REF, "new-value");
    assert_eq!(served_read(&served, REF).as_deref(), Ok("new-value"));

    run_ok(sb.cmd().args(["rm", "local://app/db"]));
    assert_eq!(served_read(&served, REF), Err("NOT_FOUND".to_string()));
    assert_eq!(
        served_read(&served, "local://app/db#password?version=2"),
        Err("VERSION_DELETED".to_string())
    );

    run_ok(sb.cmd().args(["undelete", "local://app/db"]));
    assert_eq!(served_read(&served, REF).as_deref(), Ok("new-value"));

    run_ok(sb.cmd().args(["rm", "--destroy", "local://app/db"]));
    assert_eq!(served_read(&served, REF), Err("NOT_FOUND".to_string()));

    // Created after the server started, and read first as missing (a
    // negative answer must not be remembered either).
    assert_eq!(
        served_read(&served, "local://app/late"),
        Err("NOT_FOUND".to_string())
    );
    set_ok(&sb, "local://app/late", "late-value");
    assert_eq!(
        served_read(&served, "local://app/late").as_deref(),
        Ok("late-value")
    );
    let log = served.log();
    for value in ["old-value", "new-value", "late-value"] {
        assert!(!log.contains(value), "the server log holds a value: {log}");
    }
    served.stop();
}
