//! `aws-sm://` and `aws-ssm://` through the `secref` binary against a real
//! AWS API server (moto, started by scripts/test.sh; skipped without
//! `SECREF_TEST_AWS_ENDPOINT`).

use std::process::Command;

use secref_testkit::aws::{Moto, ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY};
use secref_testkit::cli::{run, run_ok, stderr, Sandbox};

/// Every AWS variable a developer's shell might carry into the test: the
/// ones the AWS providers read, as `secref ref --schemes --json` lists them.
fn aws_vars() -> &'static [String] {
    static VARS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    VARS.get_or_init(|| {
        let out = run_ok(sandbox().cmd().args(["ref", "--schemes", "--json"]));
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut vars: Vec<String> = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["scheme"].as_str().unwrap().starts_with("aws-"))
            .flat_map(|r| r["env_vars"].as_array().unwrap().clone())
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        vars.sort();
        vars.dedup();
        assert!(vars.iter().any(|v| v == "AWS_ACCESS_KEY_ID"), "{vars:?}");
        vars
    })
}

fn sandbox() -> Sandbox {
    Sandbox::new(env!("CARGO_BIN_EXE_secref"))
}

/// `secref …` with no AWS settings but the sandbox's.
fn bare(sb: &Sandbox) -> Command {
    let mut c = sb.cmd();
    for v in aws_vars() {
        c.env_remove(v);
    }
    c
}

/// `secref …` with environment credentials and the moto endpoint.
fn aws(sb: &Sandbox, moto: &Moto) -> Command {
    let mut c = bare(sb);
    c.env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
        .env("AWS_SESSION_TOKEN", "aws-session-token-canary-77c2")
        .env("AWS_REGION", REGION)
        .env("AWS_ENDPOINT_URL", moto.endpoint());
    c
}

fn get(c: &mut Command, reference: &str) -> Vec<u8> {
    run_ok(c.args(["get", "-n", reference])).stdout
}

#[test]
fn get_reads_strings_json_fields_binary_and_version_stages() {
    let Some(moto) = Moto::from_env() else { return };
    let sb = sandbox();
    let plain = Moto::unique("cli/plain");
    let json = Moto::unique("cli/json");
    let bin = Moto::unique("cli/bin");
    let first = moto.create_string(&plain, "v1-value");
    moto.put_string(&plain, "v2-value", None);
    moto.put_string(&plain, "v3-pending", Some(&["STAGED"]));
    moto.create_string(&json, r#"{"user":"app","port":5432,"nested":{"a":1}}"#);
    let bytes = [0u8, 0xff, 0x10, b'\n', 0x80];
    moto.create_binary(&bin, &bytes);

    assert_eq!(
        get(&mut aws(&sb, &moto), &format!("aws-sm://{plain}")),
        b"v2-value"
    );
    let prev = format!("aws-sm://{plain}?version-stage=AWSPREVIOUS");
    assert_eq!(get(&mut aws(&sb, &moto), &prev), b"v1-value");
    let staged = format!("aws-sm://{plain}?version-stage=STAGED");
    assert_eq!(get(&mut aws(&sb, &moto), &staged), b"v3-pending");
    let by_id = format!("aws-sm://{plain}?version-id={first}");
    assert_eq!(get(&mut aws(&sb, &moto), &by_id), b"v1-value");
    assert_eq!(
        get(&mut aws(&sb, &moto), &format!("aws-sm://{json}#user")),
        b"app"
    );
    assert_eq!(
        get(&mut aws(&sb, &moto), &format!("aws-sm://{json}#port")),
        b"5432"
    );
    assert_eq!(
        get(&mut aws(&sb, &moto), &format!("aws-sm://{json}#nested")),
        br#"{"a":1}"#
    );
    assert_eq!(get(&mut aws(&sb, &moto), &format!("aws-sm://{bin}")), bytes);
}

#[test]
fn ssm_reads_hierarchical_secure_strings_and_versions() {
    let Some(moto) = Moto::from_env() else { return };
    let sb = sandbox();
    let name = format!("/{}/db/password", Moto::unique("cli"));
    assert_eq!(moto.put_parameter(&name, "first-pw", "SecureString"), 1);
    assert_eq!(moto.put_parameter(&name, "second-pw", "SecureString"), 2);
    let flat = Moto::unique("cli.flat");
    moto.put_parameter(&flat, "a,b,c", "StringList");

    let r = format!("aws-ssm://{name}");
    assert!(r.starts_with("aws-ssm:///"));
    assert_eq!(get(&mut aws(&sb, &moto), &r), b"second-pw");
    assert_eq!(
        get(&mut aws(&sb, &moto), &format!("{r}?version=1")),
        b"first-pw"
    );
    assert_eq!(
        get(&mut aws(&sb, &moto), &format!("aws-ssm://{flat}")),
        b"a,b,c"
    );
}

#[test]
fn run_puts_aws_values_in_the_child_env_in_one_batch() {
    let Some(moto) = Moto::from_env() else { return };
    let sb = sandbox();
    let a = Moto::unique("cli/run-a");
    let b = Moto::unique("cli/run-b");
    moto.create_string(&a, "run-value-alpha");
    moto.create_string(&b, r#"{"token":"run-token-beta"}"#);
    let p = format!("/{}/p", Moto::unique("cli"));
    moto.put_parameter(&p, "run-param-gamma", "SecureString");
    let out = sb.path("child.out");
    let o = run(aws(&sb, &moto).args([
        "run",
        "--env",
        &format!("X=aws-sm://{a}"),
        "--env",
        &format!("Y=aws-sm://{b}#token"),
        "--env",
        &format!("Z=aws-ssm://{p}"),
        "--",
        "sh",
        "-c",
        &format!(
            "printf '%s|%s|%s' \"$X\" \"$Y\" \"$Z\" > '{}'; echo \"$X\"",
            out.display()
        ),
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "run-value-alpha|run-token-beta|run-param-gamma"
    );
    // The child's output is masked as for every other provider.
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(!shown.contains("run-value-alpha"), "{shown}");
    assert!(shown.contains("<concealed by secref>"));
}

#[test]
fn missing_deleted_and_fieldless_secrets_are_typed_errors() {
    let Some(moto) = Moto::from_env() else { return };
    let sb = sandbox();
    let gone = Moto::unique("cli/gone");
    moto.create_string(&gone, "deleted-value");
    moto.delete_secret(&gone);
    let plain = Moto::unique("cli/notjson");
    moto.create_string(&plain, "not json");
    let cases = [
        (
            format!("aws-sm://{}", Moto::unique("cli/missing")),
            "not_found",
            3,
        ),
        (format!("aws-sm://{gone}"), "not_found", 3),
        (format!("aws-sm://{plain}#field"), "field_not_found", 3),
        (
            format!("aws-ssm:///{}/x", Moto::unique("missing")),
            "not_found",
            3,
        ),
        (
            format!("aws-ssm://{}?version=1", Moto::unique("missing")),
            "not_found",
            3,
        ),
        ("aws-ssm://a/b".to_owned(), "invalid_reference", 2),
    ];
    for (r, code, exit) in cases {
        let o = run(aws(&sb, &moto).args(["get", &r]));
        assert_eq!(o.status.code(), Some(exit), "{r}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(&format!("error[{code}]")),
            "{r}: {}",
            stderr(&o)
        );
        assert!(o.stdout.is_empty());
    }
    // A batch with one deleted secret runs nothing and names it.
    let ok = Moto::unique("cli/ok");
    moto.create_string(&ok, "fine-value");
    let marker = sb.path("ran");
    let o = run(aws(&sb, &moto).args([
        "run",
        "--env",
        &format!("A=aws-sm://{ok}"),
        "--env",
        &format!("B=aws-sm://{gone}"),
        "--",
        "touch",
        marker.to_str().unwrap(),
    ]));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("B = aws-sm://"), "{}", stderr(&o));
    assert!(!marker.exists());
}

#[test]
fn credentials_never_reach_output_or_trace_logs() {
    let Some(moto) = Moto::from_env() else { return };
    let sb = sandbox();
    let name = Moto::unique("cli/leak");
    moto.create_string(&name, "leak-check-value");
    for args in [vec!["get", "-vvv"], vec!["check", "-vvv", "--env"]] {
        let mut c = aws(&sb, &moto);
        c.args(&args);
        if args[0] == "check" {
            c.arg(format!("X=aws-sm://{name}"));
        } else {
            c.arg(format!("aws-sm://{name}"));
        }
        let o = run(&mut c);
        let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
        assert!(!all.contains(SECRET_ACCESS_KEY), "{all}");
        assert!(!all.contains("aws-session-token-canary-77c2"), "{all}");
        assert!(!all.contains("Signature="), "{all}");
    }
}

#[test]
fn profile_files_supply_credentials_region_and_endpoint() {
    let Some(moto) = Moto::from_env() else { return };
    let sb = sandbox();
    let name = Moto::unique("cli/profile");
    moto.create_string(&name, "profile-value");
    std::fs::create_dir_all(sb.path("home/.aws")).unwrap();
    sb.write(
        "home/.aws/credentials",
        &format!("[default]\naws_access_key_id = nope\n\n[ci]\naws_access_key_id = {ACCESS_KEY_ID}\naws_secret_access_key = {SECRET_ACCESS_KEY}\n"),
    );
    sb.write(
        "home/.aws/config",
        &format!(
            "[profile ci]\nregion = {REGION}\nendpoint_url = {}\n",
            moto.endpoint()
        ),
    );
    let r = format!("aws-sm://{name}");
    let mut c = bare(&sb);
    c.env("AWS_PROFILE", "ci");
    assert_eq!(get(&mut c, &r), b"profile-value");

    // A named profile that does not exist is a config error (exit 2).
    let mut c = bare(&sb);
    let o = run(c.env("AWS_PROFILE", "nope").args(["get", &r]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("error[config]"), "{}", stderr(&o));

    // No credentials at all: unauthenticated (exit 4); other schemes still work.
    let mut c = bare(&sb);
    c.env("AWS_REGION", REGION)
        .env("AWS_ENDPOINT_URL", moto.endpoint());
    c.env("HOME", sb.path("empty-home"));
    let o = run(c.args(["get", &r]));
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("error[unauthenticated]"),
        "{}",
        stderr(&o)
    );
    let mut c = bare(&sb);
    c.env("HOME", sb.path("empty-home"))
        .env("SOME_VAR", "plain");
    assert_eq!(get(&mut c, "env://SOME_VAR"), b"plain");
}

#[test]
fn plain_http_endpoints_are_refused_off_loopback() {
    // No server needed: the refusal happens before any connection.
    let sb = sandbox();
    for var in ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SECRETS_MANAGER"] {
        let mut c = bare(&sb);
        c.env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
            .env("AWS_REGION", REGION)
            .env(var, "http://aws.example.invalid:4566");
        let o = run(c.args(["get", "aws-sm://app/db"]));
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("error[config]"), "{}", stderr(&o));
        assert!(stderr(&o).contains(var), "{}", stderr(&o));
    }
}
