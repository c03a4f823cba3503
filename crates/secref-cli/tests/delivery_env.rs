//! Delivery (issue 12, part A) through the built binary: environment
//! scanning in `run`/`export`/`check`, `--env-from` whole-folder imports
//! from the local store, Infisical (its double), Coze (its double, with the
//! suite's OAuth server) and Vault (`secref serve`'s Vault API as the
//! upstream), and shell completions.

use secref_testkit::cli::{run, run_ok, stderr, stdout, Sandbox, Served};
use serde_json::{json, Value};

const PW: &str = "canary-delivery-pw-5e1f";
const USER: &str = "canary-delivery-user-77aa";
const TOKEN: &str = "canary-delivery-token-c0de";
const SERVE_TOKEN: &str = "canary-delivery-serve-9b8a";

fn sandbox() -> Sandbox {
    Sandbox::initialized(env!("CARGO_BIN_EXE_secref"))
}

fn seeded() -> Sandbox {
    let sb = sandbox();
    sb.set("local://app/db#password", PW);
    sb.set("local://app/db#user", USER);
    sb.set("local://app/token", TOKEN);
    sb.set("local://other/x", "canary-delivery-other-1234");
    sb
}

fn export_json(o: &std::process::Output) -> Value {
    assert!(o.status.success(), "{}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn a_reference_in_the_environment_is_resolved_for_the_child_and_masked() {
    let sb = seeded();
    // The report, as a new user types it.
    let o = run_ok(
        sb.cmd()
            .env("DB", "local://app/db#password")
            .args(["run", "--", "sh", "-c"])
            .arg(format!(
                "test \"$DB\" = '{PW}' && echo child-got-the-value; echo \"$DB\""
            )),
    );
    let out = stdout(&o);
    assert!(out.contains("child-got-the-value"), "{out}");
    assert!(out.contains("<concealed by secref>"), "{out}");
    assert!(!out.contains(PW), "{out}");

    // export and check scan too.
    let o = run(sb
        .cmd()
        .env("DB", "local://app/db#password")
        .args(["export", "--format", "json"]));
    assert_eq!(export_json(&o)["DB"], json!(PW));
    let o = run_ok(sb.cmd().env("DB", "local://app/db#password").arg("check"));
    let table = stdout(&o);
    assert!(
        table.contains("DB") && table.contains("local://app/db#password"),
        "{table}"
    );
    assert!(!table.contains(PW), "{table}");
}

#[test]
fn no_env_scan_leaves_the_environment_alone_and_explicit_flags_win() {
    let sb = seeded();
    // --no-env-scan: the child sees the reference text, nothing is resolved.
    let o = run_ok(
        sb.cmd()
            .env("DB", "local://app/db#password")
            .args(["run", "--no-env-scan", "--env", "T=local://app/token", "--"])
            .args(["sh", "-c", "echo \"db=$DB\""]),
    );
    assert_eq!(stdout(&o).trim(), "db=local://app/db#password");
    // Without any variable, scanning off: the old message, with the new hint.
    let o = run(sb.cmd().env("DB", "local://app/db#password").args([
        "run",
        "--no-env-scan",
        "--",
        "true",
    ]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no variables given"), "{}", stderr(&o));

    // An explicit --env of the same name wins over the scanned reference.
    let o = run(sb.cmd().env("DB", "local://app/db#password").args([
        "export",
        "--format",
        "json",
        "--env",
        "DB=local://app/token",
    ]));
    assert_eq!(export_json(&o), json!({"DB": TOKEN}));
    // So does an env file.
    let file = sb.write("app.env", "DB=local://app/db#user\n");
    let o = run(sb
        .cmd()
        .env("DB", "local://app/db#password")
        .args(["export", "--format", "json", "--env-file"])
        .arg(&file));
    assert_eq!(export_json(&o), json!({"DB": USER}));
}

#[test]
fn a_mistyped_reference_in_the_environment_fails_the_run() {
    let sb = seeded();
    let marker = sb.path("ran");
    let o = run(sb
        .cmd()
        .env("DB", "local://app/db#password?version=zero")
        .args(["run", "--", "touch"])
        .arg(&marker));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        !marker.exists(),
        "the command ran with a mistyped reference"
    );
    assert!(stderr(&o).contains("DB"), "{}", stderr(&o));
    // A reference to nothing fails too (exit 3), nothing runs.
    let o = run(sb
        .cmd()
        .env("DB", "local://app/missing")
        .args(["run", "--", "touch"])
        .arg(&marker));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(!marker.exists());
}

#[test]
fn credentials_are_never_scanned_and_stay_withheld() {
    let sb = seeded();
    // Reference-shaped credential variables are configuration: neither
    // resolved nor handed to the child.
    let o = run_ok(
        sb.cmd()
            .env("VAULT_TOKEN", "local://app/token")
            .env("SECREF_SERVE_TOKEN", "local://app/token")
            .env("DB", "local://app/db#user")
            .args(["run", "--", "sh", "-c"])
            .arg("echo \"vt=${VAULT_TOKEN-unset} st=${SECREF_SERVE_TOKEN-unset}\""),
    );
    assert_eq!(stdout(&o).trim(), "vt=unset st=unset");
    let o = run(sb
        .cmd()
        .env("VAULT_TOKEN", "local://app/token")
        .env("DB", "local://app/db#user")
        .args(["export", "--format", "json"]));
    assert_eq!(export_json(&o), json!({"DB": USER}));
}

#[test]
fn env_from_imports_a_local_folder_entries_and_fields() {
    let sb = seeded();
    let o = run(sb
        .cmd()
        .args(["export", "--format", "json", "--env-from", "local://app/"]));
    assert_eq!(
        export_json(&o),
        json!({"DB_PASSWORD": PW, "DB_USER": USER, "TOKEN": TOKEN})
    );
    // --prefix, and the fields of one entry.
    let o = run(sb.cmd().args([
        "export",
        "--format",
        "json",
        "--prefix",
        "APP_",
        "--env-from",
        "local://app/db",
    ]));
    assert_eq!(
        export_json(&o),
        json!({"APP_PASSWORD": PW, "APP_USER": USER})
    );
    // run: the child gets them, the output is masked.
    let o = run_ok(
        sb.cmd()
            .args(["run", "--env-from", "local://app/", "--", "sh", "-c"])
            .arg(format!(
                "test \"$DB_PASSWORD\" = '{PW}' && echo ok; echo \"$TOKEN\""
            )),
    );
    assert_eq!(stdout(&o), "ok\n<concealed by secref>\n");
    // check lists each imported variable.
    let o = run_ok(sb.cmd().args(["check", "--env-from", "local://app/"]));
    let table = stdout(&o);
    for name in ["DB_PASSWORD", "DB_USER", "TOKEN"] {
        assert!(table.contains(name), "{table}");
    }
}

#[test]
fn env_from_collisions_are_reported_never_overwritten() {
    let sb = seeded();
    sb.set("local://app/db_password", "canary-delivery-collide-1");
    let o = run(sb
        .cmd()
        .args(["export", "--format", "json", "--env-from", "local://app/"]));
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(
        err.contains("DB_PASSWORD") && err.contains("db#password"),
        "{err}"
    );
    assert!(err.contains("db_password"), "{err}");
    assert!(o.stdout.is_empty());

    // A name already in the environment is not silently replaced.
    let sb = seeded();
    let o = run(sb.cmd().env("TOKEN", "kept").args([
        "run",
        "--env-from",
        "local://app/",
        "--",
        "true",
    ]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("already set"), "{}", stderr(&o));
    // An explicit --env wins over an imported name, with a warning.
    let o = run(sb.cmd().args([
        "export",
        "--format",
        "json",
        "--env-from",
        "local://app/",
        "--env",
        "TOKEN=local://other/x",
    ]));
    assert!(stderr(&o).contains("warning: TOKEN"), "{}", stderr(&o));
    assert_eq!(
        export_json(&o)["TOKEN"],
        json!("canary-delivery-other-1234")
    );
}

#[test]
fn env_from_rejects_what_cannot_be_listed() {
    let sb = seeded();
    // env:// has no listing (unsupported, exit 1); an unknown scheme or no
    // scheme at all is a usage error (exit 2).
    for (prefix, code) in [("env://", 1), ("nope://x", 2), ("app/", 2)] {
        let o = run(sb
            .cmd()
            .args(["export", "--format", "json", "--env-from", prefix]));
        assert_eq!(o.status.code(), Some(code), "{prefix}: {}", stderr(&o));
        assert!(o.stdout.is_empty());
    }
}

#[test]
fn env_from_reads_every_field_of_a_vault_secret() {
    let sb = seeded();
    sb.set("local://myapp/db#password", PW);
    sb.set("local://myapp/db#port", "5432");
    let served = Served::start(&sb, SERVE_TOKEN, &[]);
    // A second sandbox: the client's own store has none of it.
    let client = sandbox();
    let o = run(client
        .cmd()
        .env("VAULT_ADDR", format!("http://{}", served.addr()))
        .env("VAULT_TOKEN", SERVE_TOKEN)
        .args([
            "export",
            "--format",
            "json",
            "--env-from",
            "openbao+kv2://secret/myapp/db",
        ]));
    assert_eq!(export_json(&o), json!({"PASSWORD": PW, "PORT": "5432"}));
    served.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_from_imports_an_infisical_folder() {
    use secref_testkit::infisical::{InfisicalDouble, Seed};
    let seed: Seed = serde_json::from_value(json!({
        "clients": [{"client_id": "cid", "client_secret": "canary-infisical-csec-42"}],
        "secrets": [
            {"project": "proj-1", "environment": "dev", "path": "/app", "key": "DB_PASS", "values": ["old", PW]},
            {"project": "proj-1", "environment": "dev", "path": "/app", "key": "api-key", "values": [TOKEN]},
            {"project": "proj-1", "environment": "dev", "path": "/other", "key": "NOT_ME", "values": ["x"]}
        ]
    }))
    .unwrap();
    let d = InfisicalDouble::start(seed).await.unwrap();
    let sb = sandbox();
    let url = d.url.clone();
    let o = tokio::task::spawn_blocking(move || {
        run(sb
            .cmd()
            .env("INFISICAL_URL", &url)
            .env("INFISICAL_CLIENT_ID", "cid")
            .env("INFISICAL_CLIENT_SECRET", "canary-infisical-csec-42")
            .args([
                "export",
                "--format",
                "json",
                "--env-from",
                "infisical://proj-1/dev/app",
            ]))
    })
    .await
    .unwrap();
    assert_eq!(export_json(&o), json!({"DB_PASS": PW, "API_KEY": TOKEN}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_from_imports_a_coze_project() {
    use secref_testkit::coze::{CozeDouble, EnvVar, Seed};
    let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (Some(idp), Some(sts)) = (get("SECREF_TEST_OAUTH_IDP"), get("SECREF_TEST_OAUTH_STS"))
    else {
        println!(
            "SKIPPED env_from_imports_a_coze_project: SECREF_TEST_OAUTH_IDP/_STS are not set \
             (scripts/test.sh starts oidc-provider and sets them)"
        );
        return;
    };
    let seed = Seed {
        env: vec![
            EnvVar {
                key: "DB_URL".into(),
                value: PW.into(),
            },
            EnvVar {
                key: "api.key".into(),
                value: TOKEN.into(),
            },
        ],
        ..Seed::default()
    };
    let d = CozeDouble::spawn(&sts, seed).await.unwrap();
    let sb = sandbox();
    let out = format!("{}/", d.url);
    let o = tokio::task::spawn_blocking(move || {
        run(sb
            .cmd()
            .env("COZE_WORKLOAD_IDENTITY_CLIENT_ID", "coze-app")
            .env("COZE_WORKLOAD_IDENTITY_CLIENT_SECRET", "coze-app-secret")
            .env(
                "COZE_WORKLOAD_IDENTITY_TOKEN_ENDPOINT",
                format!("{idp}/token"),
            )
            .env(
                "COZE_WORKLOAD_ACCESS_TOKEN_ENDPOINT",
                format!("{sts}/token"),
            )
            .env("COZE_OUTBOUND_AUTH_ENDPOINT", out)
            .env(
                "COZE_SERVER_ENV",
                format!("delivery-{}", std::process::id()),
            )
            .args(["export", "--format", "json", "--env-from", "coze+env://p1"]))
    })
    .await
    .unwrap();
    assert_eq!(export_json(&o), json!({"DB_URL": PW, "API_KEY": TOKEN}));
}

#[test]
fn completions_for_bash_zsh_and_fish_name_the_schemes() {
    let sb = Sandbox::new(env!("CARGO_BIN_EXE_secref"));
    for shell in ["bash", "zsh", "fish"] {
        let o = run_ok(sb.cmd().args(["completions", shell]));
        let script = stdout(&o);
        // zsh escapes the colon in its value lists.
        let script = script.replace("\\:", ":");
        for needle in [
            "import",
            "env-from",
            "local://",
            "openbao+kv2://",
            "infisical://",
        ] {
            assert!(script.contains(needle), "{shell}: no {needle}");
        }
    }
    // The bash script is valid bash (when bash is there to say so).
    if let Ok(bash) = std::process::Command::new("bash").arg("--version").output() {
        if bash.status.success() {
            let o = run_ok(sb.cmd().args(["completions", "bash"]));
            let path = sb.write("secref.bash", &stdout(&o));
            let check = std::process::Command::new("bash")
                .arg("-n")
                .arg(&path)
                .output()
                .unwrap();
            assert!(check.status.success(), "{}", stderr(&check));
        }
    }
    let o = run(sb.cmd().args(["completions", "powershell-9"]));
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn env_from_imports_an_aws_secrets_manager_prefix() {
    use secref_testkit::aws::{Moto, ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY};
    let Some(moto) = Moto::from_env() else { return };
    // A folder no other test uses: moto's state is shared.
    let folder = Moto::unique("delivery");
    moto.create_string(&format!("{folder}/db-password"), PW);
    moto.create_string(&format!("{folder}/api/token"), TOKEN);
    moto.create_string(&format!("{folder}-sibling/x"), "not-under-the-prefix");
    let sb = sandbox();
    let o = run(sb
        .cmd()
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
        .env("AWS_REGION", REGION)
        .env("AWS_ENDPOINT_URL", moto.endpoint())
        .env_remove("AWS_PROFILE")
        .args(["export", "--format", "json", "--env-from"])
        .arg(format!("aws-sm://{folder}/")));
    assert_eq!(
        export_json(&o),
        json!({"DB_PASSWORD": PW, "API_TOKEN": TOKEN})
    );
}
