//! A config that renames a credential variable (`[secflow] token_env`,
//! `[coze] client_secret_env`) is obeyed in errors too: when the renamed
//! variable is unset, the error names it — never the default variable,
//! which is not read — and keeps its code; when it is set, it is the one
//! used (the default, set to something else, is ignored) and its value
//! appears in no output.

use secref_testkit::cli::{run, run_ok, stderr, stdout, Sandbox, Served};

const SERVE_TOKEN: &str = "CANARY-renamed-secflow-token-5d2a";
const DEFAULT_CANARY: &str = "CANARY-default-variable-value-91c4";
const COZE_SECRET: &str = "CANARY-renamed-coze-secret-3b7e";
const DB_PASS: &str = "CANARY-db-pass-renamed-60f1";

fn sandbox() -> Sandbox {
    Sandbox::initialized(env!("CARGO_BIN_EXE_secref"))
}

fn no_canary(what: &str, text: &str) {
    for c in [SERVE_TOKEN, DEFAULT_CANARY, COZE_SECRET] {
        assert!(!text.contains(c), "{what} shows a credential: {text}");
    }
}

/// The renamed SecFlow token variable unset: a `config` error (exit 2)
/// naming it, whether or not the default `SECFLOW_SDK_TOKEN` is set.
#[test]
fn secflow_error_names_the_renamed_token_variable() {
    let sb = sandbox();
    sb.write(
        "secref.toml",
        "[secflow]\nbase_url = \"http://127.0.0.1:9\"\ntoken_env = \"MY_SECFLOW_TOKEN\"\n",
    );
    for default in [None, Some(DEFAULT_CANARY)] {
        let mut cmd = sb.cmd();
        cmd.env_remove("MY_SECFLOW_TOKEN")
            .args(["get", "secret://dev/app/password/db"]);
        match default {
            Some(v) => cmd.env("SECFLOW_SDK_TOKEN", v),
            None => cmd.env_remove("SECFLOW_SDK_TOKEN"),
        };
        let o = run(&mut cmd);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains("error[config]"), "{err}");
        assert!(err.contains("MY_SECFLOW_TOKEN is required"), "{err}");
        assert!(
            err.lines()
                .any(|l| l.starts_with("hint:") && l.contains("MY_SECFLOW_TOKEN")),
            "{err}"
        );
        assert!(!err.contains("SECFLOW_SDK_TOKEN"), "{err}");
        assert!(stdout(&o).is_empty());
        no_canary("stderr", &err);
    }
}

/// The renamed variable set: it is the token sent (another `secref serve`
/// is the SecFlow service and accepts only it), and it shows nowhere.
#[test]
fn secflow_reads_the_renamed_token_variable() {
    let sb = sandbox();
    sb.set("local://secflow/dev/app/password/db", DB_PASS);
    let served = Served::start(&sb, SERVE_TOKEN, &[]);
    sb.write(
        "secref.toml",
        &format!(
            "[secflow]\nbase_url = \"http://{}\"\ntarget_environment = \"dev\"\ntoken_env = \"MY_SECFLOW_TOKEN\"\n",
            served.addr()
        ),
    );
    let o = run_ok(
        sb.cmd()
            .env("MY_SECFLOW_TOKEN", SERVE_TOKEN)
            .env("SECFLOW_SDK_TOKEN", DEFAULT_CANARY)
            .args(["get", "secret://dev/app/password/db"]),
    );
    assert_eq!(stdout(&o).trim(), DB_PASS);
    no_canary("stdout", &stdout(&o));
    no_canary("stderr", &stderr(&o));
    let log = served.log();
    served.stop();
    no_canary("the server log", &log);
}

fn coze_config(sb: &Sandbox, token_endpoint: &str) {
    sb.write(
        "secref.toml",
        &format!(
            "[coze]\nclient_id = \"coze-app\"\nclient_secret_env = \"MY_COZE_SECRET\"\n\
             token_endpoint = \"{token_endpoint}\"\naccess_token_endpoint = \"{token_endpoint}\"\n\
             outbound_endpoint = \"http://127.0.0.1:9/api\"\n"
        ),
    );
}

/// The renamed Coze client secret variable unset: a `config` error (exit 2)
/// naming it and never `COZE_WORKLOAD_IDENTITY_CLIENT_SECRET`, set or not.
#[test]
fn coze_error_names_the_renamed_secret_variable() {
    let sb = sandbox();
    coze_config(&sb, "http://127.0.0.1:9/token");
    for default in [None, Some(DEFAULT_CANARY)] {
        for reference in ["coze+env://p1/DB_URL", "coze+credential://github"] {
            let mut cmd = sb.cmd();
            cmd.env_remove("MY_COZE_SECRET").args(["get", reference]);
            match default {
                Some(v) => cmd.env("COZE_WORKLOAD_IDENTITY_CLIENT_SECRET", v),
                None => cmd.env_remove("COZE_WORKLOAD_IDENTITY_CLIENT_SECRET"),
            };
            let o = run(&mut cmd);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(2), "{err}");
            assert!(
                err.contains("error[config]: Coze workload identity is missing: MY_COZE_SECRET"),
                "{err}"
            );
            assert!(
                err.lines()
                    .any(|l| l.starts_with("hint:") && l.contains("MY_COZE_SECRET")),
                "{err}"
            );
            assert!(
                !err.contains("COZE_WORKLOAD_IDENTITY_CLIENT_SECRET"),
                "{err}"
            );
            assert!(stdout(&o).is_empty());
            no_canary("stderr", &err);
        }
    }
}

/// The renamed variable set: `secref serve`'s `/readyz` obtains a Coze
/// token with it from a token server that accepts only that secret (the
/// default variable holds another value), and the secret shows in neither
/// the answer nor the log.
#[test]
fn coze_reads_the_renamed_secret_variable() {
    use secref_testkit::coze::TokenServer;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = rt
        .block_on(TokenServer::spawn("coze-app", COZE_SECRET))
        .unwrap();
    let sb = sandbox();
    coze_config(&sb, &format!("{}/token", t.url));
    let mut cmd = sb.cmd();
    cmd.env("SECREF_SERVE_TOKEN", SERVE_TOKEN)
        .env("MY_COZE_SECRET", COZE_SECRET)
        .env("COZE_WORKLOAD_IDENTITY_CLIENT_SECRET", DEFAULT_CANARY);
    let served = Served::start_cmd(&sb, cmd, &[]);
    let auth = format!("Bearer {SERVE_TOKEN}");
    let r = served.request("GET", "/readyz", &[("Authorization", &auth)], b"");
    let body = r.body.clone();
    let checks = r.json()["checks"].as_array().cloned().unwrap_or_default();
    let coze = checks
        .iter()
        .find(|c| c["name"] == "provider:coze")
        .unwrap_or_else(|| panic!("no provider:coze check: {body}"));
    assert_eq!(coze["ok"], true, "{body}");
    assert_eq!(r.status, 200, "{body}");
    no_canary("the /readyz answer", &body);
    let log = served.log();
    served.stop();
    no_canary("the server log", &log);
    drop(t);
    rt.shutdown_background();
}
