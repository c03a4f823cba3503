//! The provider registry as the user sees it through the `secref` binary:
//! every registered scheme is a reference to `secref run` (never passed
//! through as text), `secref ref --schemes` lists exactly the registry,
//! `secref ref` shows parts from the providers' specs, and `secref.toml`
//! accepts exactly the registered provider sections.

use secref_testkit::cli::{run, run_ok, stderr, stdout, Sandbox};

fn sandbox() -> Sandbox {
    Sandbox::new(env!("CARGO_BIN_EXE_secref"))
}

/// `secref ref --schemes --json`, as (scheme, provider, host_local).
fn listed_schemes(sb: &Sandbox) -> Vec<(String, String, bool)> {
    let out = run_ok(sb.cmd().args(["ref", "--schemes", "--json"]));
    let list: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["scheme"].as_str().unwrap().to_string(),
                row["provider"].as_str().unwrap().to_string(),
                row["host_local"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn ref_schemes_lists_exactly_the_registry() {
    let sb = sandbox();
    let listed = listed_schemes(&sb);
    let registry: Vec<(String, String, bool)> = secref::registry::specs()
        .iter()
        .flat_map(|s| {
            s.schemes
                .iter()
                .map(move |k| (k.to_string(), s.name.to_string(), s.host_local))
        })
        .collect();
    assert_eq!(listed, registry);
    // The default build has every current backend.
    for scheme in [
        "local",
        "env",
        "file",
        "secret",
        "openbao+kv2",
        "hashicorp",
        "infisical",
        "coze+env",
        "db",
    ] {
        assert!(listed.iter().any(|(s, _, _)| s == scheme), "{scheme}");
    }
    let host_local: Vec<&str> = listed
        .iter()
        .filter(|(_, _, h)| *h)
        .map(|(s, _, _)| s.as_str())
        .collect();
    assert_eq!(host_local, ["env", "file"]);
    let text = stdout(&run_ok(sb.cmd().args(["ref", "--schemes"])));
    assert!(text.contains("env\tenv\thost-local\n"), "{text}");
    assert!(text.contains("openbao+kv2\tvault\n"), "{text}");
}

#[test]
fn every_registered_scheme_is_a_reference_to_secref_run() {
    let sb = sandbox();
    let schemes = listed_schemes(&sb);
    assert!(!schemes.is_empty());
    // A body no provider's grammar accepts (a space, a `..` segment, a
    // relative path): the value must fail the run, not reach the child.
    let mut variants = Vec::new();
    for (scheme, _, _) in &schemes {
        variants.push(format!("{scheme}://bad value/../x"));
        variants.push(format!("{}://bad value/../x", scheme.to_uppercase()));
    }
    // An unknown engine of a registered prefix is a (bad) reference too.
    variants.push("openbao+kv9://secret/a".to_string());
    variants.push("coze+nope://x".to_string());
    // A well-formed body under an engine its provider does not list.
    variants.push("secret+x://dev/app/token/a".to_string());
    for value in variants {
        // An env-file value is a reference only if its scheme is registered.
        let file = sb.write("app.env", &format!("LEAKED={value}\n"));
        let out = run(sb.cmd().args([
            "run",
            "--env-file",
            file.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "printf 'child saw:%s' \"$LEAKED\"",
        ]));
        assert_eq!(out.status.code(), Some(2), "{value}: {}", stderr(&out));
        assert!(
            !stdout(&out).contains("child saw"),
            "{value} reached the child"
        );
        assert!(stderr(&out).contains("error["), "{value}: {}", stderr(&out));
    }
}

#[test]
fn other_urls_pass_through_secref_run() {
    let sb = sandbox();
    let file = sb.write("app.env", "SITE=https://example.com/a\n");
    let out = run_ok(sb.cmd().args([
        "run",
        "--no-masking",
        "--env-file",
        file.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "printf '%s' \"$SITE\"",
    ]));
    assert_eq!(stdout(&out), "https://example.com/a");
}

#[test]
fn ref_shows_parts_from_each_providers_spec() {
    let sb = sandbox();
    let out = run_ok(sb.cmd().args([
        "ref",
        "--json",
        "openbao+kv2://secret/a/b#k?version=2&wrap_ttl=5s",
        "local://app/db#password",
        "coze+env://123/KEY",
    ]));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v[0]["provider"], "vault");
    assert_eq!(v[0]["parts"]["mount"], "secret");
    assert_eq!(v[0]["parts"]["path"], "a/b");
    assert_eq!(v[0]["parts"]["version"], 2);
    assert_eq!(v[0]["parts"]["params"]["wrap_ttl"], "5s");
    assert_eq!(v[1]["parts"]["entry"], "app/db");
    assert_eq!(v[1]["parts"]["field"], "password");
    assert_eq!(v[2]["provider"], "coze");
    assert_eq!(v[2]["parts"]["key"], "KEY");
    let out = run(sb.cmd().args(["ref", "nosuch://x"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unsupported_engine"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn config_accepts_registered_sections_and_rejects_others() {
    let sb = sandbox().with_env("REG_TEST_VAR", "value-1");
    // A registered provider's section is accepted (and validated by it).
    let good = sb.write("good.toml", "[file]\nmax_bytes = 4096\n");
    let out =
        run(sb
            .cmd()
            .env("SECREF_CONFIG", &good)
            .args(["check", "--env", "A=env://REG_TEST_VAR"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // An unknown top-level section fails the command, naming it and its line.
    let bad = sb.write(
        "bad.toml",
        "[cache]\nttl_seconds = 5\n\n[nonesuch]\nregion = 'x'\n",
    );
    let out =
        run(sb
            .cmd()
            .env("SECREF_CONFIG", &bad)
            .args(["check", "--env", "A=env://REG_TEST_VAR"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("error[config]") && err.contains("'nonesuch'"),
        "{err}"
    );
    assert!(err.contains("line 4"), "{err}");
    // A registered section that is not a table is refused too.
    let scalar = sb.write("scalar.toml", "vault = 'https://v.example'\n");
    let out = run(sb.cmd().env("SECREF_CONFIG", &scalar).args([
        "check",
        "--env",
        "A=env://REG_TEST_VAR",
    ]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("[vault] must be a table"));
}
