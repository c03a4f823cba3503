//! `secref serve` over the local store's fast read path: a `secref set` in
//! another process is seen on the very next request (small batches, which
//! are answered on the async worker, and big ones), an older store file
//! restored over the store is served as it is, and a store file tampered
//! with behind a running server's back (same length, same MAC) is never
//! served, is refused by every fresh `secref` process and is not blessed by
//! a write.

use secref_testkit::cli::{
    feed_stdin, run, run_ok, secflow_batch, stderr, stdout, Sandbox, Served,
};

const TOKEN: &str = "store-fastpath-token-81d2c7";

fn sandbox() -> Sandbox {
    let sb = Sandbox::new(env!("CARGO_BIN_EXE_secref"));
    run_ok(sb.cmd().arg("init"));
    sb
}

fn set_ok(sb: &Sandbox, reference: &str, value: &str) {
    let o = feed_stdin(sb.cmd().args(["set", reference]), value.as_bytes());
    assert!(o.status.success(), "set {reference}: {}", stderr(&o));
}

/// One SecFlow batch through the server: per item, the value or the error
/// code.
fn served_read(served: &Served, refs: &[&str]) -> Vec<Result<String, String>> {
    let envelope = secflow_batch("fastpath", "secret.runtime_resolve", refs);
    let (status, body) = served.post("/v1/secrets/resolve:batch", TOKEN, &envelope);
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| match item["value"]["data"].as_str() {
            Some(data) => Ok(data.to_string()),
            None => Err(item["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_string()),
        })
        .collect()
}

fn one(served: &Served, reference: &str) -> Result<String, String> {
    served_read(served, &[reference]).remove(0)
}

/// Replaces the store the way a restore from a backup does (rename).
fn restore(sb: &Sandbox, bytes: &[u8]) {
    let tmp = sb.path("restore.tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, sb.path("secrets.store")).unwrap();
}

#[test]
fn serve_sees_another_process_s_set_on_the_very_next_request_small_and_big_batches() {
    let sb = sandbox();
    let names: Vec<String> = (0..40).map(|i| format!("local://app/k{i}")).collect();
    for n in &names {
        set_ok(&sb, n, "v0");
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let served = Served::start(&sb, TOKEN, &[]);
    for round in 1..=3 {
        // Warm: the next reads take the fast path.
        assert_eq!(
            one(&served, refs[0]).as_deref(),
            Ok(format!("v{}", round - 1).as_str())
        );
        let value = format!("v{round}");
        for n in &names {
            set_ok(&sb, n, &value);
        }
        assert_eq!(
            one(&served, refs[0]),
            Ok(value.clone()),
            "1 ref, round {round}"
        );
        for batch in [&refs[..5], &refs[..]] {
            let got = served_read(&served, batch);
            assert!(
                got.iter().all(|g| g.as_deref() == Ok(value.as_str())),
                "{} refs, round {round}: {got:?}",
                batch.len()
            );
        }
    }
    run_ok(sb.cmd().args(["rm", "local://app/k0"]));
    assert_eq!(one(&served, refs[0]), Err("NOT_FOUND".to_string()));
    served.stop();
}

#[test]
fn serve_serves_an_older_store_file_restored_over_the_store_as_it_is() {
    let sb = sandbox();
    set_ok(&sb, "local://app/token", "value-1");
    let older = std::fs::read(sb.path("secrets.store")).unwrap();
    set_ok(&sb, "local://app/token", "value-2");
    let newer = std::fs::read(sb.path("secrets.store")).unwrap();
    let served = Served::start(&sb, TOKEN, &[]);
    assert_eq!(one(&served, "local://app/token").as_deref(), Ok("value-2"));
    assert_eq!(one(&served, "local://app/token").as_deref(), Ok("value-2"));
    restore(&sb, &older);
    assert_eq!(one(&served, "local://app/token").as_deref(), Ok("value-1"));
    assert_eq!(
        one(&served, "local://app/token?version=2"),
        Err("NOT_FOUND".to_string()),
        "the older file has no version 2"
    );
    restore(&sb, &newer);
    assert_eq!(one(&served, "local://app/token").as_deref(), Ok("value-2"));
    served.stop();
}

#[test]
fn a_store_tampered_behind_a_running_server_is_never_served_nor_blessed() {
    let sb = sandbox();
    set_ok(&sb, "local://app/token", "authentic-value");
    let served = Served::start(&sb, TOKEN, &[]);
    assert_eq!(
        one(&served, "local://app/token").as_deref(),
        Ok("authentic-value")
    );

    // Change one base64 character of the ciphertext: same length, same MAC.
    let raw = std::fs::read(sb.path("secrets.store")).unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    let ct = doc["entries"]["app/token"]["versions"]["1"]["ciphertext"]
        .as_str()
        .unwrap();
    let at = raw
        .windows(ct.len())
        .position(|w| w == ct.as_bytes())
        .unwrap();
    let mut tampered = raw.clone();
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    restore(&sb, &tampered);

    // The running server answers what the MAC names, the verified value.
    assert_eq!(
        one(&served, "local://app/token").as_deref(),
        Ok("authentic-value")
    );
    // A fresh process verifies the whole file.
    let o = run(sb.cmd().args(["get", "-n", "local://app/token"]));
    assert!(!o.status.success(), "read a tampered store: {}", stdout(&o));
    assert!(stderr(&o).contains("error[integrity]"), "{}", stderr(&o));
    // A write re-verifies under the lock and leaves the file as it is.
    let o = feed_stdin(sb.cmd().args(["set", "local://app/other"]), b"x");
    assert!(stderr(&o).contains("error[integrity]"), "{}", stderr(&o));
    assert_eq!(std::fs::read(sb.path("secrets.store")).unwrap(), tampered);
    let log = served.log();
    assert!(
        !log.contains("authentic-value"),
        "the server log holds a value"
    );
    served.stop();
}

/// A Vault KV v2 read of `secret/data/<path>`: (status, data, version).
fn vault_read(served: &Served, path: &str) -> (u16, serde_json::Value, serde_json::Value) {
    let r = served.request(
        "GET",
        &format!("/v1/secret/data/{path}"),
        &[("X-Vault-Token", TOKEN)],
        b"",
    );
    let v = r.json();
    (
        r.status,
        v["data"]["data"].clone(),
        v["data"]["metadata"]["version"].clone(),
    )
}

#[test]
fn vault_reads_see_another_process_s_set_and_a_restored_file_at_once() {
    let sb = sandbox();
    set_ok(&sb, "local://app/db#password", "pw-1");
    let older = std::fs::read(sb.path("secrets.store")).unwrap();
    let served = Served::start(&sb, TOKEN, &[]);
    for _ in 0..2 {
        let (status, data, version) = vault_read(&served, "app/db");
        assert_eq!(status, 200);
        assert_eq!(data, serde_json::json!({"password": "pw-1"}));
        assert_eq!(version, 1);
    }
    set_ok(&sb, "local://app/db#password", "pw-2");
    let (_, data, version) = vault_read(&served, "app/db");
    assert_eq!(data, serde_json::json!({"password": "pw-2"}));
    assert_eq!(version, 2);
    restore(&sb, &older);
    let (_, data, version) = vault_read(&served, "app/db");
    assert_eq!(data, serde_json::json!({"password": "pw-1"}));
    assert_eq!(version, 1);
    run_ok(sb.cmd().args(["rm", "--destroy", "local://app/db"]));
    assert_eq!(vault_read(&served, "app/db").0, 404);
    served.stop();
}
