//! The leak harness: one sandbox planted with unique canaries — stored
//! values, the store key, `secref serve`'s bearer token, every provider
//! credential secref reads (Vault and SecFlow tokens, Infisical and Coze
//! client secrets, the AWS secret key, the audit salt) and an OAuth access
//! token issued by a scripted OAuth server — drives every CLI command
//! (`init set get rm destroy undelete history run export check ref serve`)
//! and both server APIs (SecFlow and Vault) through success and failure
//! paths at `RUST_LOG=trace` with a file audit sink, forces a panic while a
//! value is in memory, and aborts `serve` and `run` with the core limit
//! raised. Then every stdout, stderr, the server log, the audit file, the
//! temp directory (`TMPDIR` points into the sandbox), the store file and
//! any core file are searched for every canary in raw, hex, base64,
//! percent- and JSON-escaped forms (with line breaks removed too). Zero
//! hits. Only the outputs whose job is to carry a value (`get`, `export`,
//! the resolve and read answers) may hold values, never credentials.
//!
//! What the crash tests of `boundary_process.rs` check in depth (the core
//! positive control, `/proc` snapshots) is not repeated here.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Output, Stdio};

use secref_testkit::capture::assert_no_canary_decoded;
use secref_testkit::cli::{
    feed_stdin, raise_core_limit, run, run_ok, secflow_batch, stderr, stdout, Reply, Sandbox,
    Served,
};

const REF: &str = "local://app/db#password";
/// Stored values: `/`, `+`, `=`, `&`, `?` and a space make their encoded
/// forms differ from the plain one.
const VALUE: &str = "canary-5e1d leak/+=&?q";
const VALUE2: &str = "canary-v2-77c1/x+y";
const API_VALUE: &str = "canary-api-0f9e/written";
/// 32 raw key bytes and the base64 given as `$SECREF_KEY`.
const KEY_RAW: &str = "leak-harness-store-key-canary-32";
const TOKEN: &str = "serve-token-canary-90ab17";
const OAUTH_TOKEN: &str = "oauth-access-canary-c3d4e5";

/// Provider credentials in every command's environment.
const CREDENTIALS: &[(&str, &str)] = &[
    ("VAULT_TOKEN", "vault-token-canary-1a2b3c"),
    ("SECFLOW_SDK_TOKEN", "secflow-token-canary-4d5e6f"),
    ("INFISICAL_CLIENT_SECRET", "infisical-secret-canary-7a8b"),
    (
        "COZE_WORKLOAD_IDENTITY_CLIENT_SECRET",
        "coze-secret-canary-9c0d1e",
    ),
    ("AWS_SECRET_ACCESS_KEY", "aws-secret-canary-2f3a4b5c"),
    ("SECRET_TENANT_SALT", "audit-salt-canary-6d7e8f"),
];

fn key_b64() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(KEY_RAW)
}

/// Every canary: values, the key (raw and as given), every credential.
fn canaries() -> Vec<String> {
    let mut all = vec![
        VALUE.to_string(),
        VALUE2.to_string(),
        API_VALUE.to_string(),
        KEY_RAW.to_string(),
        key_b64(),
        TOKEN.to_string(),
        OAUTH_TOKEN.to_string(),
    ];
    all.extend(CREDENTIALS.iter().map(|(_, v)| v.to_string()));
    all
}

fn credentials() -> Vec<String> {
    canaries()
        .into_iter()
        .filter(|c| ![VALUE, VALUE2, API_VALUE].contains(&c.as_str()))
        .collect()
}

/// A scripted OAuth server plus Coze outbound endpoint: the token
/// endpoints issue [`OAUTH_TOKEN`], the outbound call fails (500), so the
/// token is used on a failure path. Serves at most 50 connections.
fn oauth_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming().take(50) {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let mut len = 0usize;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; len];
            let _ = std::io::Read::read_exact(&mut reader, &mut body);
            let (status, answer) = if line.contains("/token") {
                (
                    200,
                    format!(
                        r#"{{"access_token":"{OAUTH_TOKEN}","token_type":"Bearer","expires_in":600}}"#
                    ),
                )
            } else {
                (500, r#"{"code":500,"msg":"boom"}"#.to_string())
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    url
}

/// The sandbox: trace logs, key, credentials, a refused address for every
/// remote backend but Coze (scripted), a file audit sink, TMPDIR inside.
fn sandbox() -> Sandbox {
    let dead = format!(
        "http://{}",
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    );
    let oauth = oauth_server();
    let mut sb = Sandbox::new(env!("CARGO_BIN_EXE_secref"))
        .with_env("RUST_LOG", "trace")
        .with_env("RUST_BACKTRACE", "1")
        .with_env("SECREF_KEY", &key_b64())
        .with_env("VAULT_ADDR", &dead)
        .with_env("SECFLOW_BASE_URL", &dead)
        .with_env("INFISICAL_URL", &dead)
        .with_env("INFISICAL_CLIENT_ID", "cid")
        .with_env("AWS_ACCESS_KEY_ID", "AKIDLEAKHARNESS")
        .with_env("AWS_REGION", "us-east-1")
        .with_env("AWS_ENDPOINT_URL", &dead)
        .with_env("COZE_WORKLOAD_IDENTITY_CLIENT_ID", "cid")
        .with_env(
            "COZE_WORKLOAD_IDENTITY_TOKEN_ENDPOINT",
            &format!("{oauth}/token"),
        )
        .with_env(
            "COZE_WORKLOAD_ACCESS_TOKEN_ENDPOINT",
            &format!("{oauth}/token"),
        )
        .with_env("COZE_OUTBOUND_AUTH_ENDPOINT", &format!("{oauth}/out/"));
    for (k, v) in CREDENTIALS {
        sb = sb.with_env(k, v);
    }
    std::fs::create_dir_all(sb.path("tmp")).unwrap();
    let tmp = sb.path("tmp").display().to_string();
    sb = sb.with_env("TMPDIR", &tmp);
    sb.write(
        "secref.toml",
        "[retry]\nmax_attempts = 1\n[audit]\nsink = \"file\"\npath = \"audit.jsonl\"\nsalt_env = \"SECRET_TENANT_SALT\"\n",
    );
    sb
}

/// Collected outputs: (label, bytes, may it carry values?).
#[derive(Default)]
struct Outputs(Vec<(String, Vec<u8>, bool)>);

impl Outputs {
    /// Both streams of a command; only stdout may carry values, and only
    /// if `carries` says so.
    fn cmd(&mut self, what: &str, o: &Output, carries: bool) {
        self.0
            .push((format!("{what} stdout"), o.stdout.clone(), carries));
        self.0
            .push((format!("{what} stderr"), o.stderr.clone(), false));
    }

    fn reply(&mut self, what: &str, r: &Reply, carries: bool) {
        let mut all = format!("{:?}\n", r.headers).into_bytes();
        all.extend_from_slice(r.body.as_bytes());
        self.0.push((what.to_string(), all, carries));
    }

    /// No canary where none belongs; no credential anywhere.
    fn assert_clean(&self) {
        for (what, bytes, carries) in &self.0 {
            let check = if *carries { credentials() } else { canaries() };
            for c in &check {
                assert_no_canary_decoded(what, bytes, c);
            }
        }
    }
}

fn cli_commands(sb: &Sandbox, out: &mut Outputs) {
    let o = run_ok(sb.cmd().arg("init"));
    out.cmd("init", &o, false);
    let o = run(sb.cmd().arg("init"));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    out.cmd("init again", &o, false);

    for (what, input, args) in [
        ("set", VALUE, vec!["set", REF]),
        ("set v2", VALUE2, vec!["set", REF]),
        ("set api", VALUE2, vec!["set", "local://app/api#key"]),
    ] {
        let o = feed_stdin(sb.cmd().args(&args), input.as_bytes());
        assert!(o.status.success(), "{what}: {}", stderr(&o));
        out.cmd(what, &o, false);
    }
    let o = feed_stdin(sb.cmd().args(["set", "--cas", "1", REF]), VALUE.as_bytes());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    out.cmd("set --cas (mismatch)", &o, false);

    // get: the value is stdout's job; pinned v1 too.
    let o = run_ok(sb.cmd().args(["get", REF]));
    assert_eq!(stdout(&o), format!("{VALUE2}\n"));
    out.cmd("get", &o, true);
    let o = run_ok(sb.cmd().args(["get", "local://app/db#password?version=1"]));
    assert_eq!(stdout(&o), format!("{VALUE}\n"));
    out.cmd("get v1", &o, true);

    // Failure paths, remote ones with their credentials in play.
    for failing in [
        "local://app/db#nope",
        "local://app/none",
        "secret://dev/app/password/db",
        "openbao+kv2://secret/app#token",
        "infisical://proj/dev/app/KEY",
        "coze+credential://github",
        "aws-sm://prod/db",
        VALUE,
    ] {
        let o = run(sb.cmd().args(["get", failing]));
        assert!(!o.status.success(), "{failing} succeeded");
        out.cmd(&format!("get {failing}"), &o, false);
    }

    // A panic with the value in memory (debug builds have the switch).
    if cfg!(debug_assertions) {
        let o = run(sb.cmd().args(["get", REF]).env("SECREF_TEST_PANIC", "1"));
        assert_eq!(o.status.code(), Some(101), "{}", stderr(&o));
        assert!(stderr(&o).contains("forced panic"), "{}", stderr(&o));
        assert!(o.stdout.is_empty());
        out.cmd("get (panic)", &o, false);
    }

    for args in [
        vec!["history", "local://app/db"],
        vec!["history", "--json", "local://app/db"],
        vec!["ref", "--json", REF],
        vec!["ls"],
    ] {
        let o = run_ok(sb.cmd().args(&args));
        out.cmd(&args.join(" "), &o, false);
    }
    for args in [
        vec!["history", "local://app/none"],
        vec!["ref", VALUE],
        vec!["undelete", "local://app/none"],
        vec!["destroy", "--versions", "9", "local://app/none"],
    ] {
        let o = run(sb.cmd().args(&args));
        assert!(!o.status.success(), "{args:?} succeeded");
        out.cmd(&args.join(" "), &o, false);
    }

    // run: the child prints the value and its whole environment; masking
    // hides the value, and no credential is in the environment at all.
    let o = run_ok(sb.cmd().args([
        "run",
        "--env",
        &format!("DB={REF}"),
        "--",
        "sh",
        "-c",
        "echo \"$DB\"; echo \"$DB\" >&2; env",
    ]));
    assert!(stdout(&o).contains("<concealed by secref>"));
    out.cmd("run", &o, false);
    let o = run(sb.cmd().args([
        "run",
        "--env",
        &format!("DB={REF}"),
        "--env",
        "GONE=secret://dev/app/password/db",
        "--",
        "sh",
        "-c",
        "echo ran",
    ]));
    assert!(!o.status.success());
    assert!(!stdout(&o).contains("ran"));
    out.cmd("run (failing ref)", &o, false);

    for format in ["json", "dotenv", "shell"] {
        let o =
            run_ok(
                sb.cmd()
                    .args(["export", "--format", format, "--env", &format!("DB={REF}")]),
            );
        assert!(!o.stdout.is_empty());
        out.cmd(&format!("export {format}"), &o, true);
    }
    let o = run(sb.cmd().args([
        "export",
        "--format",
        "json",
        "--env",
        &format!("DB={REF}"),
        "--env",
        "GONE=local://app/none",
    ]));
    assert_eq!(o.status.code(), Some(3));
    out.cmd("export (failing)", &o, false);
    let o = run(sb.cmd().args([
        "check",
        "--env",
        &format!("DB={REF}"),
        "--env",
        "GONE=local://app/none",
    ]));
    assert_eq!(o.status.code(), Some(3));
    out.cmd("check", &o, false);

    // rm, undelete, destroy on the success path.
    for args in [
        vec!["rm", REF],
        vec!["undelete", "local://app/db"],
        vec!["destroy", "--versions", "1", "local://app/db"],
    ] {
        let o = run_ok(sb.cmd().args(&args));
        out.cmd(&args.join(" "), &o, false);
    }
    let o = run(sb.cmd().args(["get", "local://app/db#password?version=1"]));
    assert_eq!(o.status.code(), Some(3));
    out.cmd("get destroyed", &o, false);
}

fn server_apis(sb: &Sandbox, out: &mut Outputs) {
    let served = Served::start(sb, TOKEN, &[]);
    let bearer = format!("Bearer {TOKEN}");
    let json = ("Content-Type", "application/json");
    let secflow = |path: &str, auth: &str, body: serde_json::Value| {
        served.request(
            "POST",
            path,
            &[("Authorization", auth), json],
            body.to_string().as_bytes(),
        )
    };

    // SecFlow: the resolve answer carries the value.
    let r = secflow(
        "/v1/secrets/resolve:batch",
        &bearer,
        secflow_batch(
            "leaks",
            "secret.runtime_resolve",
            &[REF, "local://app/none", "secret://dev/app/password/db"],
        ),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["items"][0]["value"]["data"], VALUE2);
    out.reply("secflow resolve", &r, true);
    for (path, auth, purpose) in [
        (
            "/v1/secrets/validate:batch",
            bearer.as_str(),
            "secret.validate",
        ),
        (
            "/v1/secrets/metadata:batch",
            bearer.as_str(),
            "secret.metadata",
        ),
        (
            "/v1/secrets/resolve:batch",
            "Bearer wrong-token-0123456789",
            "secret.runtime_resolve",
        ),
        (
            "/v1/secrets/resolve:batch",
            bearer.as_str(),
            "secret.validate",
        ),
    ] {
        let r = secflow(path, auth, secflow_batch("leaks", purpose, &[REF]));
        out.reply(&format!("secflow {path} {purpose}"), &r, false);
    }
    let r = served.request(
        "POST",
        "/v1/secrets/resolve:batch",
        &[("Authorization", &bearer), json],
        b"{not json",
    );
    assert!(r.status >= 400);
    out.reply("secflow malformed", &r, false);

    // Vault: reads carry the value; writes, wrapping, errors.
    let vt = ("X-Vault-Token", TOKEN);
    let r = served.request("GET", "/v1/secret/data/app/db", &[vt], b"");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["data"]["data"]["password"], VALUE2);
    out.reply("vault read", &r, true);
    let write = serde_json::json!({"data": {"key": API_VALUE}}).to_string();
    let r = served.request(
        "POST",
        "/v1/secret/data/app/api",
        &[vt, json],
        write.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    out.reply("vault write", &r, false);
    let r = served.request(
        "GET",
        "/v1/secret/data/app/api",
        &[vt, ("X-Vault-Wrap-TTL", "60s")],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    out.reply("vault wrapped read", &r, false);
    let wrap = r.json()["wrap_info"]["token"].as_str().unwrap().to_string();
    let r = served.request(
        "POST",
        "/v1/sys/wrapping/unwrap",
        &[vt, json],
        serde_json::json!({"token": wrap}).to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["data"]["data"]["key"], API_VALUE);
    out.reply("vault unwrap", &r, true);
    for (method, path, token) in [
        ("GET", "/v1/secret/metadata/app/db", TOKEN),
        ("LIST", "/v1/secret/metadata/app", TOKEN),
        ("GET", "/v1/auth/token/lookup-self", TOKEN),
        ("GET", "/v1/secret/data/app/db", "wrong-token-0123456789"),
        ("GET", "/v1/secret/data/app/none", TOKEN),
        ("GET", "/v1/secret/data/app/db?version=1", TOKEN),
    ] {
        let r = served.request(method, path, &[("X-Vault-Token", token)], b"");
        out.reply(&format!("vault {method} {path}"), &r, false);
    }
    // An oversize body is refused before it is read.
    let r = served.request(
        "POST",
        "/v1/secret/data/app/big",
        &[vt, json],
        format!(r#"{{"data":{{"k":"{VALUE}{}"}}}}"#, "x".repeat(1 << 20)).as_bytes(),
    );
    assert_eq!(r.status, 413);
    out.reply("vault oversize", &r, false);

    let status = served.stop();
    assert!(status.success(), "{status}");
    let log = std::fs::read(sb.path("serve.log")).unwrap();
    assert!(
        String::from_utf8_lossy(&log).contains("TRACE"),
        "serve logged at trace level"
    );
}

/// `serve` after resolves and `run` holding a value, both aborted with the
/// core limit raised: no core appears (any that did would be swept).
fn aborts(sb: &Sandbox, out: &mut Outputs) {
    let served = {
        let mut cmd = sb.cmd();
        cmd.env("SECREF_SERVE_TOKEN", TOKEN);
        raise_core_limit(&mut cmd);
        Served::start_cmd(sb, cmd, &[])
    };
    let (status, _) = served.post(
        "/v1/secrets/resolve:batch",
        TOKEN,
        &secflow_batch("leaks", "secret.runtime_resolve", &[REF]),
    );
    assert_eq!(status, 200);
    // SAFETY: signalling our own child by its id.
    unsafe { libc::kill(served.pid() as libc::pid_t, libc::SIGABRT) };
    drop(served);

    let mut cmd = sb.cmd();
    raise_core_limit(&mut cmd);
    let mut child = cmd
        .args([
            "run",
            "--env",
            &format!("DB={REF}"),
            "--",
            "sh",
            "-c",
            "echo $$; exec sleep 30",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let grandchild: libc::pid_t = line.trim().parse().unwrap();
    // SAFETY: as above; then the orphaned `sleep` (our grandchild) is
    // ended by its id so nothing outlives the test.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGABRT);
    }
    let o = child.wait_with_output().unwrap();
    unsafe {
        libc::kill(grandchild, libc::SIGKILL);
    }
    out.cmd("run (aborted)", &o, false);
}

#[test]
fn no_canary_leaks_anywhere() {
    let sb = sandbox();
    let mut out = Outputs::default();
    cli_commands(&sb, &mut out);
    server_apis(&sb, &mut out);
    aborts(&sb, &mut out);
    out.assert_clean();

    // Every file: store, audit log, server logs, TMPDIR, any core.
    let files = sb.files();
    for must in ["secrets.store", "audit.jsonl", "serve.log"] {
        assert!(
            files.iter().any(|f| f.ends_with(must)),
            "{must} is among the scanned files: {files:?}"
        );
    }
    let cores: Vec<_> = files
        .iter()
        .filter(|f| {
            f.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n == "core" || n.starts_with("core."))
        })
        .collect();
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        for c in canaries() {
            assert_no_canary_decoded(&file.display().to_string(), &bytes, &c);
        }
    }
    assert!(cores.is_empty(), "core files appeared: {cores:?}");
    let audit = std::fs::read_to_string(sb.path("audit.jsonl")).unwrap();
    assert!(audit.contains("SECRET_READ"), "audit events were written");
}

#[test]
fn the_sweep_finds_an_encoded_canary_anywhere() {
    let sb = Sandbox::new(env!("CARGO_BIN_EXE_secref"));
    std::fs::create_dir_all(sb.path("home/.cache/deep")).unwrap();
    let escaped = serde_json::to_string(VALUE)
        .unwrap()
        .replace('/', "\\/")
        .replace('c', "\\u0063");
    sb.write("home/.cache/deep/leak.json", &escaped);
    let caught = std::panic::catch_unwind(|| {
        for file in sb.files() {
            assert_no_canary_decoded("f", &std::fs::read(file).unwrap(), VALUE);
        }
    });
    assert!(caught.is_err(), "the sweep missed a JSON-escaped leak");
}
