//! What `secref run` withholds from its command comes from the provider
//! registry and the config, not from a list in the CLI: tested on the built
//! binary.
//!
//! * every credential variable a registered provider declares (read from
//!   `secref ref --schemes --json`, so a new provider is covered without
//!   editing this file) is absent from the child unless `--pass-env` names
//!   it, and present with it (secref's own are refused);
//! * a variable `secref.toml` names in place of a declared one
//!   (`[secflow] token_env`, `[coze] client_secret_env`, `[audit] salt_env`,
//!   `chain_key_env`) is withheld too, listed in the `--pass-env` hint, and
//!   passed only when named;
//! * such a variable holding a reference is not scanned: the child never
//!   gets the credential's value in its place.
//!
//! Masking is off throughout, so withholding must hold on its own.

use std::collections::BTreeSet;

use secref_testkit::cli::{run, run_ok, stderr, stdout, Sandbox};

/// A store key (32 bytes, base64): `SECREF_KEY` is a declared credential
/// too, so it is set to the key the store really uses.
const KEY_B64: &str = "V2l0aGhlbGQtcmVnaXN0cnktdGVzdC1rZXktMzJieXQ=";

/// The value the command is given on purpose (through `env://`).
const PROBE: &str = "probe-value-3f9a1c";

/// A sandbox whose store is keyed by `$SECREF_KEY`.
fn sandbox() -> Sandbox {
    let sb = Sandbox::new(env!("CARGO_BIN_EXE_secref"))
        .with_env("SECREF_KEY", KEY_B64)
        .with_env("PROBE_SOURCE", PROBE);
    run_ok(sb.cmd().arg("init"));
    sb
}

/// The canary each credential variable is set to.
fn canary(name: &str) -> String {
    if name == "SECREF_KEY" {
        KEY_B64.to_string()
    } else if name == "STATE_KEY" {
        // `[state] key_env` takes at least 32 bytes.
        "canary-state_key-5d2e-padded-to-32-bytes".to_string()
    } else {
        format!("canary-{}-5d2e", name.to_ascii_lowercase())
    }
}

/// Every credential variable declared by a registered provider, as
/// `secref ref --schemes --json` lists them.
fn declared() -> BTreeSet<String> {
    let o = run_ok(sandbox().cmd().args(["ref", "--schemes", "--json"]));
    let rows: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    let mut out = BTreeSet::new();
    for row in rows.as_array().expect("a list") {
        let vars = row["credential_env_vars"]
            .as_array()
            .unwrap_or_else(|| panic!("no credential_env_vars in {row}"));
        for v in vars {
            let v = v.as_str().expect("a name");
            let env_vars = row["env_vars"].as_array().expect("env_vars");
            assert!(
                env_vars.iter().any(|e| e == v),
                "{v} is a credential but not among env_vars of {}",
                row["provider"]
            );
            out.insert(v.to_string());
        }
    }
    out
}

/// The non-secret halves of credentials that are refused alone (a client
/// secret without its client id is a `config` error that stops `secref
/// run`), so that setting every declared credential leaves a runnable
/// configuration. A new provider with such a pair adds its half here.
const COMPANIONS: &[(&str, &str)] = &[
    ("INFISICAL_CLIENT_ID", "infisical-client-id"),
    ("VAULT_ROLE_ID", "vault-role-id"),
    ("COZE_WORKLOAD_IDENTITY_CLIENT_ID", "coze-client-id"),
    (
        "COZE_WORKLOAD_IDENTITY_TOKEN_ENDPOINT",
        "http://127.0.0.1:9/token",
    ),
    (
        "COZE_WORKLOAD_ACCESS_TOKEN_ENDPOINT",
        "http://127.0.0.1:9/exchange",
    ),
    ("AWS_ACCESS_KEY_ID", "aws-access-key-id"),
];

/// `secref run --no-masking [extra…] --env PROBE=env://PROBE_SOURCE -- env`
/// with `vars` set to their canaries.
fn run_env(sb: &Sandbox, vars: &BTreeSet<String>, extra: &[&str]) -> std::process::Output {
    let mut cmd = sb.cmd();
    for v in vars {
        cmd.env(v, canary(v));
    }
    cmd.args(["run", "--no-masking"]).args(extra).args([
        "--env",
        "PROBE=env://PROBE_SOURCE",
        "--",
        "env",
    ]);
    run(&mut cmd)
}

/// Whether `env`'s output has a line `NAME=…` (whole names: the test
/// runner's own `SECREF_TEST_VAULT_TOKEN` is not `VAULT_TOKEN`).
fn has_var(out: &str, name: &str) -> bool {
    let prefix = format!("{name}=");
    out.lines().any(|l| l.starts_with(&prefix))
}

#[test]
fn every_declared_credential_is_withheld_unless_passed() {
    let vars = declared();
    // The built-in providers' credentials are among them (the list is
    // the registry's, not empty by accident).
    for known in ["VAULT_TOKEN", "AWS_SECRET_ACCESS_KEY", "SECFLOW_SDK_TOKEN"] {
        assert!(vars.contains(known), "{known} not declared: {vars:?}");
    }
    let sb = COMPANIONS
        .iter()
        .fold(sandbox(), |sb, (k, v)| sb.with_env(k, v));

    let o = run_env(&sb, &vars, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(has_var(&out, "PROBE"), "the requested value arrives");
    assert!(out.contains(&format!("PROBE={PROBE}")));
    for v in &vars {
        assert!(!has_var(&out, v), "{v} reached the child");
        assert!(!out.contains(&canary(v)), "{v}'s value reached the child");
    }

    for v in &vars {
        let o = run_env(&sb, &vars, &["--pass-env", v]);
        let out = stdout(&o);
        if v.starts_with("SECREF_") {
            // secref's own credential: never passed, asking is a usage error.
            assert_eq!(o.status.code(), Some(2), "{v}: {}", stderr(&o));
            assert!(stderr(&o).contains("error[usage]"), "{}", stderr(&o));
            assert!(out.is_empty(), "nothing was run");
            continue;
        }
        assert!(o.status.success(), "{v}: {}", stderr(&o));
        assert!(
            out.lines().any(|l| l == format!("{v}={}", canary(v))),
            "--pass-env {v} did not pass it"
        );
        for other in vars.iter().filter(|o| *o != v) {
            assert!(
                !has_var(&out, other),
                "{other} reached the child with --pass-env {v}"
            );
        }
    }

    // A name that is not withheld: the usage error's hint lists the actual
    // set (every passable declared credential), nothing is run.
    let o = run_env(&sb, &vars, &["--pass-env", "PROBE_SOURCE"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("not a withheld variable"), "{err}");
    for v in vars.iter().filter(|v| !v.starts_with("SECREF_")) {
        assert!(err.contains(v.as_str()), "{v} missing from the hint: {err}");
    }
    assert!(stdout(&o).is_empty(), "nothing was run");
}

/// A config naming its own variables for the SecFlow token, the Coze client
/// secret, the audit salt and the audit chain key.
const RENAMING_CONFIG: &str = "\
[secflow]
base_url = \"http://127.0.0.1:9\"
token_env = \"MY_SECFLOW_TOKEN\"

[coze]
client_id = \"coze-client-id\"
client_secret_env = \"MY_COZE_SECRET\"
token_endpoint = \"http://127.0.0.1:9/token\"
access_token_endpoint = \"http://127.0.0.1:9/exchange\"

[audit]
sink = \"file\"
path = \"audit.jsonl\"
salt_env = \"MY_AUDIT_SALT\"
chain_key_env = \"MY_AUDIT_CHAIN_KEY\"
";

const RENAMED: [&str; 4] = [
    "MY_SECFLOW_TOKEN",
    "MY_COZE_SECRET",
    "MY_AUDIT_SALT",
    "MY_AUDIT_CHAIN_KEY",
];

#[test]
fn a_variable_the_config_names_as_a_credential_is_withheld() {
    let sb = sandbox();
    sb.write("secref.toml", RENAMING_CONFIG);
    let mut vars: BTreeSet<String> = RENAMED.iter().map(|v| v.to_string()).collect();
    vars.insert("SECFLOW_SDK_TOKEN".into());
    vars.insert("SECRET_TENANT_SALT".into());

    let o = run_env(&sb, &vars, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains(&format!("PROBE={PROBE}")),
        "the requested value arrives"
    );
    for v in &vars {
        assert!(!has_var(&out, v), "{v} reached the child");
        assert!(!out.contains(&canary(v)), "{v}'s value reached the child");
    }

    // Named, a renamed credential is passed (and only it).
    let o = run_env(&sb, &vars, &["--pass-env", "MY_SECFLOW_TOKEN"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out
        .lines()
        .any(|l| l == format!("MY_SECFLOW_TOKEN={}", canary("MY_SECFLOW_TOKEN"))));
    for v in vars.iter().filter(|v| *v != "MY_SECFLOW_TOKEN") {
        assert!(!has_var(&out, v), "{v} reached the child");
    }

    // The hint of a wrong --pass-env names the renamed variables too.
    let o = run_env(&sb, &vars, &["--pass-env", "NOT_A_CREDENTIAL"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    for v in RENAMED {
        assert!(
            stderr(&o).contains(v),
            "{v} missing from the hint: {}",
            stderr(&o)
        );
    }

    // Without the config, the same names are ordinary variables: passed,
    // and naming one with --pass-env is the usual usage error.
    let plain = sandbox();
    let o = run_env(&plain, &vars, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    for v in RENAMED {
        assert!(
            has_var(&stdout(&o), v),
            "{v} withheld without a config naming it"
        );
    }
}

#[test]
fn a_renamed_credential_holding_a_reference_is_not_resolved_for_the_child() {
    let sb = sandbox();
    sb.write(
        "secref.toml",
        "[secflow]\nbase_url = \"http://127.0.0.1:9\"\ntoken_env = \"MY_SECFLOW_TOKEN\"\n",
    );
    let token = "secflow-token-value-8c1d7e";
    let o = secref_testkit::cli::feed_stdin(
        sb.cmd().args(["set", "local://ci/secflow#token"]),
        token.as_bytes(),
    );
    assert!(o.status.success(), "{}", stderr(&o));

    // The credential is a reference (dereferenced for SecFlow only). Were it
    // scanned like an ordinary variable, the child would get the token's
    // value under its name.
    let o = run(sb
        .cmd()
        .env("MY_SECFLOW_TOKEN", "local://ci/secflow#token")
        .args([
            "run",
            "--no-masking",
            "--env",
            "PROBE=env://PROBE_SOURCE",
            "--",
            "env",
        ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains(&format!("PROBE={PROBE}")));
    assert!(
        !has_var(&out, "MY_SECFLOW_TOKEN"),
        "the credential reached the child"
    );
    assert!(
        !out.contains(token),
        "the credential's value reached the child"
    );

    // Passed on purpose, it arrives as written: the reference, not the value.
    let o = run(sb
        .cmd()
        .env("MY_SECFLOW_TOKEN", "local://ci/secflow#token")
        .args([
            "run",
            "--no-masking",
            "--pass-env",
            "MY_SECFLOW_TOKEN",
            "--env",
            "PROBE=env://PROBE_SOURCE",
            "--",
            "env",
        ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out
        .lines()
        .any(|l| l == "MY_SECFLOW_TOKEN=local://ci/secflow#token"));
    assert!(
        !out.contains(token),
        "the credential's value reached the child"
    );
}

/// `secref run --no-masking [args…] -- sh -c 'echo ran > MARKER; env'`:
/// the marker file shows whether the command ran at all.
fn run_marked(sb: &Sandbox, env: &[(&str, &str)], args: &[&str]) -> (std::process::Output, bool) {
    let marker = sb.path("ran.marker");
    let _ = std::fs::remove_file(&marker);
    let mut cmd = sb.cmd();
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(["run", "--no-masking"]).args(args).args([
        "--",
        "sh",
        "-c",
        "echo ran > \"$1\"; env",
        "sh",
    ]);
    cmd.arg(&marker);
    let o = run(&mut cmd);
    (o, marker.exists())
}

/// A refusal: `usage` (exit 2), naming the variable and the withheld one,
/// never `secret`; the command did not run.
fn assert_refused(o: &std::process::Output, ran: bool, names: &[&str], secret: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("error[usage]"), "{err}");
    assert!(err.contains("withheld"), "{err}");
    for n in names {
        assert!(err.contains(n), "{n} not named: {err}");
    }
    assert!(!ran, "the command ran");
    assert!(stdout(o).is_empty(), "output: {}", stdout(o));
    assert!(!err.contains(secret), "the value leaked: {err}");
}

#[test]
fn env_references_to_withheld_variables_are_refused() {
    let sb = sandbox();
    sb.set("local://app/api", "api-value-0a7c3e");
    let serve_token = "serve-token-value-71b2d9";
    let vault_token = "vault-token-value-4e8f01";

    // The environment scan: FOO=env://SECREF_SERVE_TOKEN.
    let (o, ran) = run_marked(
        &sb,
        &[
            ("SECREF_SERVE_TOKEN", serve_token),
            ("FOO", "env://SECREF_SERVE_TOKEN"),
        ],
        &["--env", "A=local://app/api"],
    );
    assert_refused(&o, ran, &["FOO", "SECREF_SERVE_TOKEN"], serve_token);

    // --env X=env://SECREF_KEY (the store's master key), any spelling.
    for form in ["env://SECREF_KEY", "ENV://SECREF_KEY"] {
        let (o, ran) = run_marked(&sb, &[], &["--no-env-scan", "--env", &format!("X={form}")]);
        assert_refused(&o, ran, &["X", "SECREF_KEY"], KEY_B64);
    }

    // An --env-file line K=env://SECREF_KEY.
    let file = sb.write("vars.env", "A=local://app/api\nK=env://SECREF_KEY\n");
    let (o, ran) = run_marked(
        &sb,
        &[],
        &["--no-env-scan", "--env-file", file.to_str().unwrap()],
    );
    assert_refused(&o, ran, &["K", "SECREF_KEY"], KEY_B64);

    // A provider credential: refused unless --pass-env names it …
    let (o, ran) = run_marked(
        &sb,
        &[("VAULT_TOKEN", vault_token), ("FOO", "env://VAULT_TOKEN")],
        &["--env", "A=local://app/api"],
    );
    assert_refused(&o, ran, &["FOO", "VAULT_TOKEN"], vault_token);
    assert!(
        stderr(&o).contains("--pass-env VAULT_TOKEN"),
        "{}",
        stderr(&o)
    );

    // … and resolved when it does.
    let (o, ran) = run_marked(
        &sb,
        &[("VAULT_TOKEN", vault_token), ("FOO", "env://VAULT_TOKEN")],
        &["--pass-env", "VAULT_TOKEN", "--env", "A=local://app/api"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(ran);
    assert!(stdout(&o)
        .lines()
        .any(|l| l == format!("FOO={vault_token}")));

    // `export` hands values out too: the same refusal, nothing printed.
    let o = run(sb
        .cmd()
        .args(["export", "--no-env-scan", "--env", "X=env://SECREF_KEY"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stdout(&o).is_empty());
    assert!(!stderr(&o).contains(KEY_B64));

    // `inject` writes values into a file: a template may not copy one
    // either, and no output file appears.
    sb.write(
        "creds.tpl",
        "key={{ env://SECREF_KEY }}\ntok={{ env://VAULT_TOKEN }}\n",
    );
    let o = run(sb.cmd().env("VAULT_TOKEN", vault_token).args([
        "inject",
        "-i",
        "creds.tpl",
        "-o",
        "creds.conf",
    ]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).starts_with("error[usage]: "), "{}", stderr(&o));
    assert!(!sb.path("creds.conf").exists(), "inject wrote a file");
    assert!(!stderr(&o).contains(KEY_B64) && !stderr(&o).contains(vault_token));
}

#[test]
fn credential_variables_named_elsewhere_in_the_config_are_withheld() {
    let sb = sandbox();
    sb.write(
        "secref.toml",
        "[server.tokens.ci]\ntoken_env = \"CI_AGENT_TOKEN\"\n\n\
         [server.tokens.ops]\ntoken_env = \"OPS_AGENT_TOKEN\"\n",
    );
    let named = ["CI_AGENT_TOKEN", "OPS_AGENT_TOKEN"];
    let vars: BTreeSet<String> = named.iter().map(|v| v.to_string()).collect();
    let o = run_env(&sb, &vars, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains(&format!("PROBE={PROBE}")));
    for v in named {
        assert!(!has_var(&out, v), "{v} reached the child");
        assert!(!out.contains(&canary(v)), "{v}'s value reached the child");
    }
    // Passable on request …
    let o = run_env(&sb, &vars, &["--pass-env", "OPS_AGENT_TOKEN"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out
        .lines()
        .any(|l| l == format!("OPS_AGENT_TOKEN={}", canary("OPS_AGENT_TOKEN"))));
    assert!(!has_var(&out, "CI_AGENT_TOKEN"));
    // … and refused through env:// otherwise.
    let (o, ran) = run_marked(
        &sb,
        &[("CI_AGENT_TOKEN", "ci-agent-token-value-93d1")],
        &["--env", "T=env://CI_AGENT_TOKEN"],
    );
    assert_refused(
        &o,
        ran,
        &["T", "CI_AGENT_TOKEN"],
        "ci-agent-token-value-93d1",
    );

    // `[policy.pdp]` and `[state]` (neither the PDP nor Redis is reachable
    // here, port 9 on loopback: anything resolved would fail, so what is
    // checked is decided before resolution): their variables are in the
    // withheld set the --pass-env hint lists, and an env:// reference to one
    // is refused.
    let sb = sandbox();
    sb.write(
        "secref.toml",
        "[policy]\naudience = \"x\"\n\n[policy.pdp]\nurl = \"http://127.0.0.1:9\"\n\
         token_env = \"PDP_TOK\"\n\n[state]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:9\"\n\
         key_env = \"STATE_KEY\"\npassword_env = \"STATE_PASSWORD\"\n",
    );
    let state_key = "state-key-value-0123456789abcdef0123";
    let env = [
        ("STATE_KEY", state_key),
        ("STATE_PASSWORD", "state-pw"),
        ("PDP_TOK", "pdp-token-value-51c0"),
    ];
    let (o, ran) = run_marked(
        &sb,
        &env,
        &[
            "--pass-env",
            "NOT_A_CREDENTIAL",
            "--env",
            "S=env://PROBE_SOURCE",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!ran);
    for v in ["PDP_TOK", "STATE_KEY", "STATE_PASSWORD"] {
        assert!(stderr(&o).contains(v), "{v} not withheld: {}", stderr(&o));
    }
    let (o, ran) = run_marked(&sb, &env, &["--env", "S=env://STATE_KEY"]);
    assert_refused(&o, ran, &["S", "STATE_KEY"], state_key);
    let (o, ran) = run_marked(&sb, &env, &["--env", "P=env://PDP_TOK"]);
    assert_refused(&o, ran, &["P", "PDP_TOK"], "pdp-token-value-51c0");
}
