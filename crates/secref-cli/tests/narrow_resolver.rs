//! The narrower resolver (issue 11) on the real binary: the batch paths the
//! CLI and `secref serve` take through the request builder answer every
//! reference, each with its own outcome, in the order asked.

use secref_testkit::cli::{
    feed_stdin, run, run_ok, secflow_batch, stderr, stdout, Sandbox, Served,
};
use serde_json::{json, Value};

const TOKEN: &str = "narrow-resolver-token-8d21";
const ZZ: &str = "zz-value-5c0e";
const AA: &str = "aa-value-91f3";

/// A store with `local://app/zz` and `local://app/aa`.
fn sandbox() -> Sandbox {
    let sb = Sandbox::new(env!("CARGO_BIN_EXE_secref"));
    run_ok(sb.cmd().arg("init"));
    for (r, v) in [("local://app/zz", ZZ), ("local://app/aa", AA)] {
        let o = feed_stdin(sb.cmd().args(["set", r]), v.as_bytes());
        assert!(o.status.success(), "{}", stderr(&o));
    }
    sb
}

/// Validate and metadata batches (served by the resolver's `.each()`) answer
/// item by item in input order — not in the sorted order of a map — and a
/// missing secret fails only its own item.
#[test]
fn serve_batches_answer_each_item_in_input_order() {
    let sb = sandbox();
    let served = Served::start(&sb, TOKEN, &[]);
    // Not sorted: zz before aa, the missing one in the middle.
    let refs = ["local://app/zz", "local://app/missing", "local://app/aa"];
    for (path, purpose) in [
        ("/v1/secrets/validate:batch", "secret.validate"),
        ("/v1/secrets/metadata:batch", "secret.metadata"),
        ("/v1/secrets/resolve:batch", "secret.runtime_resolve"),
    ] {
        let (status, body) = served.post(path, TOKEN, &secflow_batch("narrow", purpose, &refs));
        assert_eq!(status, 200, "{path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let items = v["items"].as_array().unwrap();
        assert_eq!(items.len(), 3, "{path}: {body}");
        let ids: Vec<&str> = items
            .iter()
            .map(|i| i["item_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["item-0", "item-1", "item-2"], "{path}: {body}");
        let asked: Vec<&str> = items
            .iter()
            .map(|i| i["secret_ref"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(asked, refs, "{path}: {body}");
        let missing = &items[1];
        let found_missing = missing["exists"] == json!(true)
            || missing["result"] == "allowed" && missing["exists"].is_null();
        assert!(!found_missing, "{path}: {body}");
        for i in [0, 2] {
            assert_eq!(items[i]["result"], "allowed", "{path}: {body}");
        }
        if purpose == "secret.validate" {
            assert_eq!(items[0]["exists"], true, "{body}");
            assert_eq!(items[2]["exists"], true, "{body}");
        }
        if purpose != "secret.runtime_resolve" {
            assert!(!body.contains(ZZ) && !body.contains(AA), "{path}: {body}");
        }
    }
    let status = served.stop();
    assert!(status.success(), "{status}");
}

/// `secref check` (the CLI's partial batch) reports every variable with its
/// own outcome, never a value, and exits with the failure's code.
#[test]
fn check_reports_every_reference_of_one_batch() {
    let sb = sandbox();
    let env = sb.write(
        "app.env",
        "ZZ=local://app/zz\nMISSING=local://app/missing\nAA=local://app/aa\n",
    );
    let o = run(sb.cmd().arg("check").arg("--env-file").arg(&env));
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(3), "{out}{}", stderr(&o));
    let row = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no row for {name}: {out}"))
            .to_string()
    };
    assert!(row("ZZ").contains("ok"), "{out}");
    assert!(row("AA").contains("ok"), "{out}");
    assert!(row("MISSING").contains("not_found"), "{out}");
    assert!(!out.contains(ZZ) && !out.contains(AA), "{out}");
}
