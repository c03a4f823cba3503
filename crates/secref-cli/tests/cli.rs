//! End-to-end tests of the `secref` binary. Every run gets a temporary HOME,
//! store and key path and working directory ([`Sandbox`]), so the real home
//! is never read or written.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use percent_encoding::{percent_encode, NON_ALPHANUMERIC};
use secref_testkit::cli::{feed_stdin, run, run_ok, stderr, stdout, Sandbox};

/// A value that must never appear in any output except where a command's job
/// is to print it.
const CANARY: &str = "canary-7f3a q/+=&\"x\\y";
const MASK: &str = "<concealed by secref>";

/// A sandbox whose commands see the canary as `$CANARY_VALUE`.
fn sandbox() -> Sandbox {
    Sandbox::new(env!("CARGO_BIN_EXE_secref")).with_env("CANARY_VALUE", CANARY)
}

fn assert_no_canary(o: &Output) {
    for (what, text) in [("stdout", stdout(o)), ("stderr", stderr(o))] {
        assert!(!text.contains(CANARY), "canary in {what}: {text}");
        assert!(
            !text.contains("canary-7f3a"),
            "canary part in {what}: {text}"
        );
    }
}

// --- help ---------------------------------------------------------------

#[test]
fn help_lists_commands_and_exit_codes() {
    let sb = sandbox();
    let o = run(sb.cmd().arg("--help"));
    assert!(o.status.success());
    let text = stdout(&o);
    for needle in [
        "init",
        "set",
        "get",
        "rm",
        "ls",
        "run",
        "export",
        "ref",
        "check",
        "Exit codes",
        "not found",
        "128+N",
    ] {
        assert!(text.contains(needle), "help lacks {needle}: {text}");
    }
    let o = run(sb.cmd().args(["run", "--help"]));
    assert!(stdout(&o).contains("<concealed by secref>"));
    assert!(stdout(&o).contains("known scheme"), "{}", stdout(&o));
}

#[test]
fn usage_errors_exit_2() {
    let sb = sandbox();
    let o = run(sb.cmd().arg("no-such-command"));
    assert_eq!(o.status.code(), Some(2));
    let o = run(sb.cmd().args(["run", "--env", "NOEQUALS", "--", "true"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("error[usage]:"), "{}", stderr(&o));
    let o = run(sb
        .cmd()
        .args(["run", "--env", "1X=env://HOME", "--", "true"]));
    assert_eq!(o.status.code(), Some(2));
    // run without a command is a clap usage error.
    let o = run(sb.cmd().args(["run", "--env", "X=env://HOME"]));
    assert_eq!(o.status.code(), Some(2));
}

// --- get ------------------------------------------------------------------

#[test]
fn get_prints_value_with_newline_unless_told_not_to() {
    let sb = sandbox();
    let o = run_ok(sb.cmd().args(["get", "env://CANARY_VALUE"]));
    assert_eq!(stdout(&o), format!("{CANARY}\n"));
    let o = run(sb.cmd().args(["get", "--no-newline", "env://CANARY_VALUE"]));
    assert_eq!(stdout(&o), CANARY);
    // A file's bytes come out exactly.
    let f = sb.write("v.json", r#"{"db":{"password":"p\nw"}}"#);
    let r = format!("file://{}#/db/password", f.display());
    let o = run(sb.cmd().args(["get", "-n", &r]));
    assert_eq!(o.stdout, b"p\nw");
}

#[test]
fn get_errors_have_codes_hints_and_exit_codes() {
    let sb = sandbox();
    let o = run(sb.cmd().args(["get", "env://SECREF_TEST_UNSET_VAR"]));
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o).starts_with("error[not_found]: "),
        "{}",
        stderr(&o)
    );
    assert!(o.stdout.is_empty());

    let o = run(sb.cmd().args(["get", "openbao+kv2://secret/a/../b"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).starts_with("error[illegal_segment]: "));

    let o = run(sb.cmd().args(["get", "nonsense"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("\nhint: "), "{}", stderr(&o));

    // A scheme without a provider (yaml:// is parsed only) is a configuration
    // problem.
    let o = run(sb.cmd().args(["get", "yaml://secret/a"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).starts_with("error[no_provider]: "));
}

// --- run --------------------------------------------------------------------

#[test]
fn run_passes_secrets_in_the_environment_and_propagates_exit_code() {
    let sb = sandbox();
    let marker = sb.path("seen");
    let script = format!(
        "[ \"$S\" = \"$CANARY_VALUE\" ] && touch '{}'; exit 7",
        marker.display()
    );
    for masking in [true, false] {
        let mut c = sb.cmd();
        c.args(["run", "--env", "S=env://CANARY_VALUE"]);
        if !masking {
            c.arg("--no-masking");
        }
        let o = run(c.args(["--", "sh", "-c", &script]));
        assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
        assert!(marker.exists(), "child did not get the value");
        std::fs::remove_file(&marker).unwrap();
        assert_no_canary(&o);
    }
}

#[test]
fn run_reports_signal_death_as_128_plus_signo() {
    let sb = sandbox();
    for extra in [None, Some("--no-masking")] {
        let mut c = sb.cmd();
        c.args(["run", "--env", "S=env://CANARY_VALUE"]);
        c.args(extra);
        let o = run(c.args(["--", "sh", "-c", "kill -TERM $$"]));
        assert_eq!(o.status.code(), Some(128 + 15));
        let mut c = sb.cmd();
        c.args(["run", "--env", "S=env://CANARY_VALUE"]);
        c.args(extra);
        let o = run(c.args(["--", "sh", "-c", "kill -KILL $$"]));
        assert_eq!(o.status.code(), Some(128 + 9));
    }
}

#[test]
fn run_forwards_sigterm_to_the_command() {
    let sb = sandbox();
    // The child announces itself, then waits (boundedly) for SIGTERM.
    let script = "trap 'echo got-term; exit 42' TERM; echo ready; i=0; \
                  while [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; exit 99";
    let mut child = sb
        .cmd()
        .args([
            "run",
            "--env",
            "S=env://CANARY_VALUE",
            "--",
            "sh",
            "-c",
            script,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    // SAFETY: plain kill(2) on the child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(lines.next().unwrap().unwrap(), "got-term");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(42));
}

#[test]
fn run_resolves_all_or_nothing() {
    let sb = sandbox();
    let marker = sb.path("ran");
    let o = run(sb.cmd().args([
        "run",
        "--env",
        "GOOD=env://CANARY_VALUE",
        "--env",
        "BAD=env://SECREF_TEST_UNSET_VAR",
        "--env",
        "WORSE=env://SECREF_TEST_ALSO_UNSET",
        "--",
        "touch",
        marker.to_str().unwrap(),
    ]));
    assert_eq!(o.status.code(), Some(3));
    assert!(!marker.exists(), "the command ran despite a failure");
    let err = stderr(&o);
    assert!(
        err.starts_with("error[not_found]: 2 of 3 variables"),
        "{err}"
    );
    assert!(
        err.contains("BAD = env://SECREF_TEST_UNSET_VAR → not_found"),
        "{err}"
    );
    assert!(
        err.contains("WORSE = env://SECREF_TEST_ALSO_UNSET → not_found"),
        "{err}"
    );
    assert!(!err.contains("GOOD"), "{err}");
    assert_no_canary(&o);
}

#[test]
fn run_command_not_found_exits_127() {
    let sb = sandbox();
    let o = run(sb.cmd().args([
        "run",
        "--env",
        "S=env://CANARY_VALUE",
        "--",
        "/nonexistent/secref-test-cmd",
    ]));
    assert_eq!(o.status.code(), Some(127));
    assert!(stderr(&o).starts_with("error[io]: "), "{}", stderr(&o));
}

#[test]
fn run_masks_the_value_and_its_encodings() {
    let sb = sandbox();
    let json = serde_json::to_string(CANARY).unwrap();
    let forms = [
        ("PLAIN", CANARY.to_string()),
        ("B64", STANDARD.encode(CANARY)),
        ("B64URL", URL_SAFE_NO_PAD.encode(CANARY)),
        (
            "URLENC",
            percent_encode(CANARY.as_bytes(), NON_ALPHANUMERIC).to_string(),
        ),
        (
            "URLPLUS",
            percent_encode(CANARY.as_bytes(), NON_ALPHANUMERIC)
                .to_string()
                .replace("%20", "+"),
        ),
        ("JSON", json[1..json.len() - 1].to_string()),
        // An HTTP Basic credential: the value inside a longer encoding.
        ("BASIC", STANDARD.encode(format!("user:{CANARY}"))),
    ];
    let mut c = sb.cmd();
    let mut script = String::new();
    for (name, value) in &forms {
        c.env(format!("FORM_{name}"), value);
        // Each form goes to stdout and stderr, with text around it.
        script.push_str(&format!(
            "printf '{name}=[%s]\\n' \"$FORM_{name}\"; printf '{name}=[%s]\\n' \"$FORM_{name}\" >&2; "
        ));
    }
    // And a split write: the value arrives in two reads.
    script.push_str(
        "printf 'SPLIT=[%s' \"$(printf %s \"$S\" | cut -c1-8)\"; sleep 0.2; \
         printf '%s]\\n' \"$(printf %s \"$S\" | cut -c9-)\"",
    );
    let o = run_ok(c.args([
        "run",
        "--env",
        "S=env://CANARY_VALUE",
        "--",
        "sh",
        "-c",
        &script,
    ]));
    let (out, err) = (stdout(&o), stderr(&o));
    for (name, value) in &forms {
        assert!(!out.contains(value.as_str()), "{name} leaked: {out}");
        assert!(!err.contains(value.as_str()), "{name} leaked: {err}");
        if *name == "BASIC" {
            // "user:" and the mixed edge characters stay.
            assert!(
                out.contains(&format!("{name}=[dXNlcjp{MASK}")),
                "{name}: {out}"
            );
            continue;
        }
        assert!(out.contains(&format!("{name}=[{MASK}]")), "{name}: {out}");
        assert!(err.contains(&format!("{name}=[{MASK}]")), "{name}: {err}");
    }
    assert!(out.contains(&format!("SPLIT=[{MASK}]")), "{out}");
    assert_no_canary(&o);

    // Without masking the same output is passed through.
    let o = run(sb
        .cmd()
        .args(["run", "--no-masking", "--env", "S=env://CANARY_VALUE", "--"])
        .args(["sh", "-c", "printf '%s' \"$S\""]));
    assert_eq!(stdout(&o), CANARY);
}

#[test]
fn run_masks_multi_line_values() {
    let sb = sandbox();
    let value = "-----BEGIN TEST KEY-----\nMIIBOgIBAAJBAKj34GkxFhD9\n-----END TEST KEY-----\n";
    let f = sb.write("key.pem", value);
    let r = format!("K=file://{}", f.display());
    let o = run_ok(sb.cmd().args([
        "run",
        "--env",
        &r,
        "--",
        "sh",
        "-c",
        "printf 'key:\\n%s\\nline:%s\\n' \"$K\" \"$(printf %s \"$K\" | sed -n 2p)\"",
    ]));
    let out = stdout(&o);
    assert!(!out.contains("MIIBOgIBAAJBAKj34GkxFhD9"), "{out}");
    assert!(out.contains(&format!("line:{MASK}")), "{out}");
}

#[test]
fn run_warns_about_values_too_short_to_mask() {
    let sb = sandbox();
    let o = run(sb
        .cmd()
        .env("SHORT_VALUE", "ab")
        .args(["run", "--env", "SHORT=env://SHORT_VALUE", "--"])
        .args(["sh", "-c", "printf '%s' \"$SHORT\""]));
    assert!(o.status.success());
    assert_eq!(stdout(&o), "ab");
    assert!(stderr(&o).contains("SHORT: values shorter than 3 bytes are not masked"));
}

#[test]
fn run_env_file_mixes_references_and_plain_values() {
    let sb = sandbox();
    let env_file = sb.write(
        "app.env",
        "# comment\nPLAIN='hello world'\nURL=https://example.com/x\nS=env://CANARY_VALUE\n",
    );
    let o = run_ok(
        sb.cmd()
            .args(["run", "--env-file", env_file.to_str().unwrap(), "--"])
            .args(["sh", "-c", "printf '%s|%s|%s' \"$PLAIN\" \"$URL\" \"$S\""]),
    );
    assert_eq!(
        stdout(&o),
        format!("hello world|https://example.com/x|{MASK}")
    );

    // --env overrides a name from a file.
    let o = run(sb
        .cmd()
        .env("OTHER_VALUE", "other")
        .args(["run", "--env-file", env_file.to_str().unwrap()])
        .args([
            "--env",
            "PLAIN=env://OTHER_VALUE",
            "--",
            "sh",
            "-c",
            "printf %s \"$PLAIN\"",
        ]));
    assert_eq!(stdout(&o), MASK);

    // A malformed reference in a file is an error, not a literal.
    let bad = sb.write("bad.env", "X=\"openbao+kv2://secret/a b\"\n");
    let o = run(sb
        .cmd()
        .args(["run", "--env-file", bad.to_str().unwrap(), "--", "true"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("error[illegal_segment]"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("bad.env: X: "), "{}", stderr(&o));
}

// --- export ---------------------------------------------------------------

const TRICKY: &str = "a \"quoted\" 'single' \\back$HOME ${X} `cmd` #hash\nline2\ttab é\r\nend\\";

#[test]
fn export_dotenv_round_trips_through_the_dotenv_reader() {
    let sb = sandbox();
    let o = run_ok(
        sb.cmd()
            .env("TRICKY_VALUE", TRICKY)
            .args(["export", "--format", "dotenv"])
            .args([
                "--env",
                "T=env://TRICKY_VALUE",
                "--env",
                "C=env://CANARY_VALUE",
            ]),
    );
    let file = sb.path("out.env");
    std::fs::write(&file, &o.stdout).unwrap();
    let pairs = secref::config::read_dotenv(&file).unwrap();
    assert_eq!(
        pairs,
        vec![
            ("T".to_string(), TRICKY.to_string()),
            ("C".to_string(), CANARY.to_string())
        ]
    );
}

#[test]
fn export_shell_round_trips_through_sh() {
    let sb = sandbox();
    let o = run_ok(sb.cmd().env("TRICKY_VALUE", TRICKY).args([
        "export",
        "--format",
        "shell",
        "--env",
        "T=env://TRICKY_VALUE",
    ]));
    let script = String::from_utf8(o.stdout).unwrap();
    assert!(script.starts_with("export T='"), "{script}");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{script}\nprintf '%s' \"$T\""))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), TRICKY);
}

#[test]
fn export_json_is_an_object_of_strings() {
    let sb = sandbox();
    let env_file = sb.write("a.env", "PLAIN=\"plain text\"\n");
    let o = run_ok(
        sb.cmd()
            .env("TRICKY_VALUE", TRICKY)
            .args([
                "export",
                "--format",
                "json",
                "--env-file",
                env_file.to_str().unwrap(),
            ])
            .args(["--env", "T=env://TRICKY_VALUE"]),
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v, serde_json::json!({"T": TRICKY, "PLAIN": "plain text"}));
}

#[test]
fn export_fails_whole_on_any_failure() {
    let sb = sandbox();
    let o = run(sb.cmd().args([
        "export",
        "--format",
        "dotenv",
        "--env",
        "C=env://CANARY_VALUE",
        "--env",
        "M=env://SECREF_TEST_UNSET_VAR",
    ]));
    assert_eq!(o.status.code(), Some(3));
    assert!(o.stdout.is_empty());
    assert_no_canary(&o);
}

// --- ref ------------------------------------------------------------------

#[test]
fn ref_prints_canonical_form_and_parts() {
    let sb = sandbox();
    let o = run_ok(sb.cmd().args([
        "ref",
        "OpenBao+KV2://secret/myapp/api/#token?version=3",
        "local://app/db#password",
        "secret://dev/svc/token/name",
    ]));
    let out = stdout(&o);
    for needle in [
        "openbao+kv2://secret/myapp/api#token?version=3\n",
        "  scheme: openbao+kv2\n",
        "  provider: vault\n",
        "  mount: secret\n",
        "  path: myapp/api\n",
        "  field: token\n",
        "  version: 3\n",
        "local://app/db#password\n",
        "  entry: app/db\n",
        "  field: password\n",
        "  provider: secflow\n",
        "  service: svc\n",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in {out}");
    }
}

#[test]
fn ref_json_and_errors() {
    let sb = sandbox();
    let o = run(sb.cmd().args([
        "ref",
        "--json",
        "env://HOME",
        "openbao+kv2://secret/a?version=1&version=2",
    ]));
    assert_eq!(o.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["ok"], true);
    assert_eq!(v[0]["canonical"], "env://HOME");
    assert_eq!(v[0]["parts"]["var"], "HOME");
    assert_eq!(v[1]["ok"], false);
    assert_eq!(v[1]["error"]["code"], "ambiguous_query");

    let o = run(sb.cmd().args(["ref", "bad-ref"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).starts_with("error[illegal_segment]: "));
}

#[test]
fn ref_applies_the_tenant_mount_guard() {
    let sb = sandbox();
    let args = ["ref", "--tenant", "t1", "--allowed-mounts", "secret,kv"];
    run_ok(sb.cmd().args(args).arg("openbao+kv2://kv/a"));
    let o = run(sb.cmd().args(args).arg("openbao+kv2://other/a"));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).starts_with("error[tenant_mount_mismatch]: "));
    // --tenant alone is a usage error.
    let o = run(sb.cmd().args(["ref", "--tenant", "t1", "env://HOME"]));
    assert_eq!(o.status.code(), Some(2));
}

// --- check ------------------------------------------------------------------

#[test]
fn check_prints_a_table_and_never_values() {
    let sb = sandbox();
    let env_file = sb.write("a.env", "PLAIN='canary-7f3a plain'\n");
    let o = run(sb.cmd().args([
        "check",
        "--env-file",
        env_file.to_str().unwrap(),
        "--env",
        "GOOD=env://CANARY_VALUE",
        "--env",
        "BAD=env://SECREF_TEST_UNSET_VAR",
        "--env",
        "NOPROV=yaml://secret/a",
    ]));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["NAME", "REF", "PROVIDER", "STATUS"]);
    assert_eq!(lines[1], ["PLAIN", "(plain", "value)", "-", "ok"]);
    assert_eq!(lines[2], ["GOOD", "env://CANARY_VALUE", "env", "ok"]);
    assert_eq!(
        lines[3],
        ["BAD", "env://SECREF_TEST_UNSET_VAR", "env", "not_found"]
    );
    assert_eq!(lines[4], ["NOPROV", "yaml://secret/a", "-", "no_provider"]);
    assert!(
        stderr(&o).contains("error[not_found]: BAD: "),
        "{}",
        stderr(&o)
    );
    assert_no_canary(&o);

    let o = run(sb.cmd().args(["check", "--env", "GOOD=env://CANARY_VALUE"]));
    assert!(o.status.success());
    assert_no_canary(&o);
}

// --- canary leak checks with full tracing -----------------------------------

#[test]
fn canary_never_leaks_with_trace_logging() {
    let sb = sandbox();
    let trace = |c: &mut Command| {
        c.env("RUST_LOG", "trace");
    };
    let mut cases: Vec<Command> = Vec::new();
    let mut c = sb.cmd();
    c.args([
        "check",
        "--env",
        "A=env://CANARY_VALUE",
        "--env",
        "B=env://SECREF_TEST_UNSET_VAR",
    ]);
    cases.push(c);
    let mut c = sb.cmd();
    c.args([
        "run",
        "--env",
        "A=env://CANARY_VALUE",
        "--env",
        "B=env://SECREF_TEST_UNSET_VAR",
        "--",
        "true",
    ]);
    cases.push(c);
    let mut c = sb.cmd();
    c.args([
        "run",
        "--env",
        "A=env://CANARY_VALUE",
        "--",
        "sh",
        "-c",
        "echo \"$A\"; echo \"$A\" >&2",
    ]);
    cases.push(c);
    let mut c = sb.cmd();
    c.args([
        "-vvv",
        "run",
        "--env",
        "A=env://CANARY_VALUE",
        "--",
        "sh",
        "-c",
        "echo \"$A\"",
    ]);
    cases.push(c);
    let mut c = sb.cmd();
    c.args(["get", "env://SECREF_TEST_UNSET_VAR"]);
    cases.push(c);
    let mut c = sb.cmd();
    c.args(["get", "file:///nonexistent/canary-7f3a"]);
    cases.push(c);
    let mut c = sb.cmd();
    c.env("NOT_UTF8_OK", CANARY).args([
        "export",
        "--format",
        "json",
        "--env",
        "A=env://CANARY_VALUE",
        "--env",
        "B=env://SECREF_TEST_UNSET_VAR",
    ]);
    cases.push(c);
    for mut c in cases {
        trace(&mut c);
        let o = run(&mut c);
        // Logging is really on, so the absence of the canary means something.
        assert!(
            stderr(&o).contains("TRACE") || stderr(&o).contains("DEBUG"),
            "{c:?}: no logs: {}",
            stderr(&o)
        );
        let text = format!("{}{}", stdout(&o), stderr(&o));
        assert!(!text.contains(CANARY), "{c:?} leaked: {text}");
        // The file path above deliberately contains the canary's prefix, so
        // only check the full value there.
        if !format!("{c:?}").contains("file:///nonexistent") {
            assert_no_canary(&o);
        }
    }
}

// --- the local store ----------------------------------------------------------

fn init(sb: &Sandbox) {
    run_ok(sb.cmd().arg("init"));
}

fn set(sb: &Sandbox, reference: &str, value: &[u8], extra: &[&str]) -> Output {
    feed_stdin(sb.cmd().arg("set").args(extra).arg(reference), value)
}

#[test]
fn init_creates_key_and_store_and_never_overwrites() {
    let sb = sandbox();
    let o = run_ok(sb.cmd().arg("init"));
    let out = stdout(&o);
    assert!(out.contains(&format!(
        "created key file: {}",
        sb.path("store.key").display()
    )));
    assert!(out.contains(&format!(
        "created store: {}",
        sb.path("secrets.store").display()
    )));
    let key = std::fs::read(sb.path("store.key")).unwrap();
    let key_text = String::from_utf8(key.clone()).unwrap();
    assert!(!out.contains(key_text.trim()), "init printed the key");
    assert!(!stderr(&o).contains(key_text.trim()));

    // Both exist: refuse, change nothing.
    let store_before = std::fs::read(sb.path("secrets.store")).unwrap();
    let o = run(sb.cmd().arg("init"));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).starts_with("error[usage]: already initialised"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(sb.path("store.key")).unwrap(), key);
    assert_eq!(
        std::fs::read(sb.path("secrets.store")).unwrap(),
        store_before
    );

    // Key exists, store missing: the key is reused.
    std::fs::remove_file(sb.path("secrets.store")).unwrap();
    let o = run_ok(sb.cmd().arg("init"));
    assert!(stdout(&o).contains("using existing key"), "{}", stdout(&o));
    assert_eq!(std::fs::read(sb.path("store.key")).unwrap(), key);

    // Store exists, key missing: refuse (a new key could not open it).
    std::fs::remove_file(sb.path("store.key")).unwrap();
    let o = run(sb.cmd().arg("init"));
    assert_eq!(o.status.code(), Some(2));
    assert!(!sb.path("store.key").exists());
}

#[test]
fn set_get_ls_rm_round_trip() {
    let sb = sandbox();
    init(&sb);
    let o = set(
        &sb,
        "local://app/db#password",
        format!("{CANARY}\n").as_bytes(),
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_no_canary(&o);
    let o = set(&sb, "local://app/raw", b"with-newline\n", &["--raw"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = set(&sb, "local://app/db#user", b"admin\r\n", &[]);
    assert!(o.status.success());

    let o = run(sb.cmd().args(["get", "-n", "local://app/db#password"]));
    assert_eq!(stdout(&o), CANARY);
    let o = run(sb.cmd().args(["get", "-n", "local://app/raw"]));
    assert_eq!(stdout(&o), "with-newline\n");
    let o = run(sb.cmd().args(["get", "-n", "local://app/db#user"]));
    assert_eq!(stdout(&o), "admin");

    // The store file holds no plaintext.
    let file = std::fs::read(sb.path("secrets.store")).unwrap();
    assert!(!String::from_utf8_lossy(&file).contains("canary-7f3a"));

    let o = run(sb.cmd().arg("ls"));
    assert!(o.status.success());
    assert_eq!(
        stdout(&o),
        "local://app/db#password\nlocal://app/db#user\nlocal://app/raw\n"
    );
    assert_no_canary(&o);

    run_ok(sb.cmd().args(["rm", "local://app/db#user"]));
    let o = run(sb.cmd().args(["rm", "local://app/db#user"]));
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).starts_with("error[not_found]: "));
    let o = run(sb.cmd().args(["get", "local://app/db#user"]));
    assert_eq!(o.status.code(), Some(3));
    let o = run(sb.cmd().arg("ls"));
    assert_eq!(stdout(&o), "local://app/db#password\nlocal://app/raw\n");
}

#[test]
fn set_refuses_non_local_references_and_empty_values() {
    let sb = sandbox();
    init(&sb);
    let o = set(&sb, "env://HOME", b"x\n", &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).starts_with("error[usage]: "), "{}", stderr(&o));
    let o = set(&sb, "local://a/../b", b"x\n", &[]);
    assert_eq!(o.status.code(), Some(2));
    let o = set(&sb, "local://app/empty", b"\n", &[]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(sb.cmd().arg("ls"));
    assert_eq!(stdout(&o), "");
    // `set` takes no value argument: a value on the command line is refused.
    let o = run(sb.cmd().args(["set", "local://app/x", "value"]));
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn store_commands_before_init_explain_what_to_do() {
    let sb = sandbox();
    let o = run(sb.cmd().arg("ls"));
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("secref init"), "{}", stderr(&o));
    let o = run(sb.cmd().args(["get", "local://app/x"]));
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("secref init"), "{}", stderr(&o));
}

#[test]
fn run_export_check_with_local_references() {
    let sb = sandbox();
    init(&sb);
    assert!(set(&sb, "local://app/db#password", CANARY.as_bytes(), &[])
        .status
        .success());
    let env_file = sb.write("app.env", "DB_PASSWORD=local://app/db#password\nMODE=dev\n");
    let ef = env_file.to_str().unwrap();

    let o = run_ok(sb.cmd().args(["run", "--env-file", ef, "--"]).args([
        "sh",
        "-c",
        "[ \"$DB_PASSWORD\" = \"$CANARY_VALUE\" ] && echo \"same:$DB_PASSWORD:$MODE\"",
    ]));
    assert_eq!(stdout(&o), format!("same:{MASK}:dev\n"));

    let o = run(sb
        .cmd()
        .args(["export", "--format", "json", "--env-file", ef]));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v, serde_json::json!({"DB_PASSWORD": CANARY, "MODE": "dev"}));

    let o = run(sb.cmd().env("RUST_LOG", "trace").args([
        "check",
        "--env-file",
        ef,
        "--env",
        "GONE=local://app/missing",
    ]));
    assert_eq!(o.status.code(), Some(3));
    let out = stdout(&o);
    assert!(out.contains("DB_PASSWORD"), "{out}");
    assert!(out.contains("local://app/db#password  local"), "{out}");
    assert!(out.contains("not_found"), "{out}");
    assert_no_canary(&o);
}

#[test]
fn init_with_key_in_environment_writes_no_key_file() {
    let sb = sandbox();
    let key = STANDARD.encode([7u8; 32]);
    let o = run_ok(sb.cmd().env("SECREF_KEY", &key).arg("init"));
    assert!(
        stdout(&o).contains("using existing key: $SECREF_KEY"),
        "{}",
        stdout(&o)
    );
    assert!(!stdout(&o).contains(&key) && !stderr(&o).contains(&key));
    assert!(!sb.path("store.key").exists());
    // The store opens with that key, and not without it.
    let o = feed_stdin(
        sb.cmd()
            .env("SECREF_KEY", &key)
            .args(["set", "local://ci/token"]),
        b"ci-token-value\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(sb
        .cmd()
        .env("SECREF_KEY", &key)
        .args(["get", "local://ci/token"]));
    assert_eq!(stdout(&o), "ci-token-value\n");
    let other = STANDARD.encode([8u8; 32]);
    let o = run(sb
        .cmd()
        .env("SECREF_KEY", &other)
        .args(["get", "local://ci/token"]));
    assert!(!o.status.success());
    assert!(
        stderr(&o).starts_with("error[wrong_key]: "),
        "{}",
        stderr(&o)
    );
}

/// Ctrl-C in a terminal reaches the command once: the terminal signals the
/// whole foreground process group, and secref does not forward it again.
#[test]
fn run_does_not_double_terminal_signals() {
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;

    let sb = sandbox();
    let (mut master, slave) = {
        let (mut m, mut s) = (0, 0);
        // SAFETY: openpty writes two fds into m and s; the other arguments may be null.
        let rc = unsafe {
            libc::openpty(
                &mut m,
                &mut s,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty failed");
        // SAFETY: both fds were just opened and are owned by nobody else.
        unsafe { (std::fs::File::from_raw_fd(m), OwnedFd::from_raw_fd(s)) }
    };
    // Waits (boundedly, 60 s) for the Ctrl-C, then 1 s more so that a doubled
    // signal would still be seen. The wait must not be short: on a loaded
    // machine the Ctrl-C can arrive seconds after "ready".
    let script = "trap 'echo GOT-INT; [ $left -gt 10 ] && left=10' INT; echo ready; left=600; \
                  while [ $left -gt 0 ]; do sleep 0.1; left=$((left-1)); done; echo done";
    let mut cmd = sb.cmd();
    cmd.args([
        "run",
        "--env",
        "S=env://CANARY_VALUE",
        "--",
        "sh",
        "-c",
        script,
    ])
    .stdin(slave.try_clone().unwrap())
    .stdout(slave.try_clone().unwrap())
    .stderr(slave.try_clone().unwrap());
    // SAFETY: setsid and ioctl are async-signal-safe; they make the pty the
    // controlling terminal of a new session led by secref.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(slave);
    drop(cmd);
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&seen).contains("ready") {
        let n = master.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "secref ended early: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    master.write_all(b"\x03").unwrap();
    // Read until every holder of the slave side is gone (EIO or EOF).
    while let Ok(n) = master.read(&mut buf) {
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(child.wait().unwrap().success());
    let text = String::from_utf8_lossy(&seen);
    assert_eq!(text.matches("GOT-INT").count(), 1, "{text}");
    assert!(text.contains("done"), "{text}");
}
