//! Credentials from anywhere: a provider's credential settings (in
//! `secref.toml` or the environment) hold references to the local store,
//! resolved before the provider is built; cycles and inline secrets are
//! refused; no credential appears in any output.

use secref_testkit::cli::{run, run_ok, stderr, stdout, Sandbox, Served};
use secref_testkit::infisical::{InfisicalDouble, Seed};
use serde_json::json;

const SERVE_TOKEN: &str = "CANARY-serve-token-c7d1";
const DB_PASS: &str = "CANARY-db-pass-credref-42";
const CLIENT_SECRET: &str = "CANARY-infisical-client-secret-9e0";
const INF_VALUE: &str = "CANARY-infisical-value-77a";

fn sandbox() -> Sandbox {
    Sandbox::initialized(env!("CARGO_BIN_EXE_secref"))
}

fn no_canary(what: &str, text: &str) {
    for c in [SERVE_TOKEN, CLIENT_SECRET] {
        assert!(!text.contains(c), "{what} shows a credential: {text}");
    }
}

/// `secref serve` is the Vault upstream; the client's Vault token is the
/// store entry `local://vault/token`, named in `[vault] token` or in
/// `VAULT_TOKEN`.
#[test]
fn vault_token_referenced_from_the_store() {
    let sb = sandbox();
    sb.set("local://myapp/db#password", DB_PASS);
    sb.set("local://vault/token", SERVE_TOKEN);
    let served = Served::start(&sb, SERVE_TOKEN, &[]);
    let url = format!("http://{}", served.addr());

    // In the table.
    sb.write(
        "secref.toml",
        &format!("[vault]\nurl = \"{url}\"\ntoken = \"local://vault/token\"\n"),
    );
    let o = run_ok(
        sb.cmd()
            .env_remove("VAULT_TOKEN")
            .args(["get", "openbao+kv2://secret/myapp/db#password"]),
    );
    assert_eq!(stdout(&o).trim(), DB_PASS);
    no_canary("stderr", &stderr(&o));

    // In the environment (a value with a registered scheme is a reference).
    sb.write("secref.toml", &format!("[vault]\nurl = \"{url}\"\n"));
    let o = run_ok(
        sb.cmd()
            .env("VAULT_TOKEN", "local://vault/token")
            .args(["get", "openbao+kv2://secret/myapp/db#password"]),
    );
    assert_eq!(stdout(&o).trim(), DB_PASS);

    // A reference that cannot be read fails Vault reads only, with the
    // reason; other schemes keep working.
    sb.write(
        "secref.toml",
        &format!("[vault]\nurl = \"{url}\"\ntoken = \"local://vault/missing\"\n"),
    );
    let o = run(sb
        .cmd()
        .args(["get", "openbao+kv2://secret/myapp/db#password"]));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("[vault] token"), "{}", stderr(&o));
    let o = run_ok(sb.cmd().args(["get", "local://myapp/db#password"]));
    assert_eq!(stdout(&o).trim(), DB_PASS);

    let log = served.log();
    served.stop();
    no_canary("the server log", &log);
}

/// Infisical configured by the environment, the client secret by reference.
fn infisical_env(mut cmd: std::process::Command, url: &str) -> std::process::Command {
    cmd.env("INFISICAL_URL", url)
        .env("INFISICAL_CLIENT_ID", "cid")
        .env(
            "INFISICAL_CLIENT_SECRET",
            "local://infisical/identity#client_secret",
        );
    cmd
}

fn infisical_seed() -> Seed {
    serde_json::from_value(json!({
        "clients": [{"client_id": "cid", "client_secret": CLIENT_SECRET}],
        "secrets": [{"project": "proj-1", "environment": "dev", "path": "/app",
                     "key": "DB_PASS", "values": [INF_VALUE]}]
    }))
    .unwrap()
}

/// The Infisical client secret lives in the store; `secref.toml` (or
/// `INFISICAL_CLIENT_SECRET`) only names it.
#[test]
fn infisical_client_secret_referenced_from_the_store() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let double = rt
        .block_on(InfisicalDouble::start(infisical_seed()))
        .unwrap();
    let sb = sandbox();
    sb.set("local://infisical/identity#client_secret", CLIENT_SECRET);

    sb.write(
        "secref.toml",
        &format!(
            "[infisical]\nurl = \"{}\"\nclient_id = \"cid\"\nclient_secret = \"local://infisical/identity#client_secret\"\ncli_config = false\n",
            double.url
        ),
    );
    let o = run_ok(sb.cmd().args(["get", "infisical://proj-1/dev/app/DB_PASS"]));
    assert_eq!(stdout(&o).trim(), INF_VALUE);
    no_canary("stderr", &stderr(&o));
    assert_eq!(double.logins("cid"), 1);

    std::fs::remove_file(sb.path("secref.toml")).unwrap();
    let o = run_ok(infisical_env(sb.cmd(), &double.url).args([
        "check",
        "--env",
        "V=infisical://proj-1/dev/app/DB_PASS",
    ]));
    no_canary("check", &format!("{}{}", stdout(&o), stderr(&o)));
    assert_eq!(double.logins("cid"), 2);

    // `secref run` hands the child the reference, never the value.
    let o = run_ok(infisical_env(sb.cmd(), &double.url).args([
        "run",
        "--pass-env",
        "INFISICAL_CLIENT_SECRET",
        "--env",
        "V=infisical://proj-1/dev/app/DB_PASS",
        "--no-masking",
        "--",
        "sh",
        "-c",
        "printf '%s|%s' \"$V\" \"$INFISICAL_CLIENT_SECRET\"",
    ]));
    assert_eq!(
        stdout(&o),
        format!("{INF_VALUE}|local://infisical/identity#client_secret")
    );
}

/// A credential that needs the provider it configures is a `config` error
/// naming the settings along the cycle; every command refuses to start.
#[test]
fn credential_cycles_are_refused() {
    let sb = sandbox();
    sb.write(
        "secref.toml",
        "[vault]\nurl = \"http://127.0.0.1:1\"\ntoken = \"openbao+kv2://secret/x#t\"\n",
    );
    let o = run(sb.cmd().args(["get", "local://a/b"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("config"), "{err}");
    assert!(err.contains("cycle"), "{err}");
    assert!(err.contains("[vault] token needs vault"), "{err}");

    // Through two providers.
    sb.write(
        "secref.toml",
        "[vault]\nurl = \"http://127.0.0.1:1\"\ntoken = \"infisical://proj/dev/VAULT_TOKEN\"\n\
         [infisical]\nurl = \"http://127.0.0.1:1\"\ntoken = \"openbao+kv2://secret/infisical#token\"\ncli_config = false\n",
    );
    let o = run(sb.cmd().args(["get", "local://a/b"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("[vault] token needs infisical"), "{err}");
    assert!(err.contains("[infisical] token needs vault"), "{err}");
}

/// `[vault] token` takes a reference only: a token written inline is
/// refused without echoing it; a mistyped reference is refused too.
#[test]
fn inline_credentials_and_bad_references_are_refused() {
    let sb = sandbox();
    sb.write(
        "secref.toml",
        &format!("[vault]\nurl = \"http://127.0.0.1:1\"\ntoken = \"{SERVE_TOKEN}\"\n"),
    );
    let o = run(sb.cmd().args(["get", "local://a/b"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("must be a secret reference"),
        "{}",
        stderr(&o)
    );
    no_canary("stderr", &stderr(&o));

    sb.write("secref.toml", "[vault]\nurl = \"http://127.0.0.1:1\"\n");
    let o = run(sb
        .cmd()
        .env("VAULT_TOKEN", "local://vault/../token")
        .args(["get", "local://a/b"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("VAULT_TOKEN is not a valid secret reference"),
        "{}",
        stderr(&o)
    );
    // A credential that only looks like a reference is never quoted back.
    let o = run(sb
        .cmd()
        .env("VAULT_TOKEN", "local://a b tok-canary-5150")
        .args(["get", "local://a/b"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("VAULT_TOKEN is not a valid secret reference"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("tok-canary-5150"), "{}", stderr(&o));
}

/// `secref serve` is the SecFlow service; the client's SDK token is the
/// store entry named in `[secflow] token`.
#[test]
fn secflow_token_referenced_from_the_store() {
    let sb = sandbox();
    sb.set("local://secflow/dev/app/password/db", DB_PASS);
    sb.set("local://secflow-client/token", SERVE_TOKEN);
    let served = Served::start(&sb, SERVE_TOKEN, &[]);
    sb.write(
        "secref.toml",
        &format!(
            "[secflow]\nbase_url = \"http://{}\"\ntarget_environment = \"dev\"\ntoken = \"local://secflow-client/token\"\n",
            served.addr()
        ),
    );
    let o = run_ok(
        sb.cmd()
            .env_remove("SECFLOW_SDK_TOKEN")
            .args(["get", "secret://dev/app/password/db"]),
    );
    assert_eq!(stdout(&o).trim(), DB_PASS);
    no_canary("stderr", &stderr(&o));
    let log = served.log();
    served.stop();
    no_canary("the server log", &log);
}
