//! Trust at the process boundary, tested on the built `secref` binary:
//!
//! * a crash (SIGABRT) of `secref run` holding a secret, or of `secref
//!   serve` after resolves, leaves no core, while the same crash with the
//!   documented opt-out `SECREF_ALLOW_CORE_DUMPS=1` does leave one holding a
//!   planted canary (the positive control that shows the test would see a
//!   core and find the canary in it);
//! * `secref run`'s child never receives secref's own credentials, nor
//!   provider credentials unless `--pass-env` names them — checked with
//!   masking off, so masking is not the only defence;
//! * credential files (token file, key file) readable by others are refused
//!   with one rule and one message;
//! * a value typed where a reference belongs is never echoed in an error;
//! * every `secref get` with a file audit sink writes its event before the
//!   process exits.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use secref_testkit::capture::assert_no_canary_in;
use secref_testkit::cli::{feed_stdin, run, run_ok, stderr, stdout, Sandbox, Served};

const REF: &str = "local://app/db#password";
/// The value planted in the store.
const VALUE: &str = "value-canary-7Qz19fKx";
/// `secref serve`'s bearer token.
const TOKEN: &str = "token-canary-3Hb82LwVn0";
/// A store key (base64 of 32 bytes), given as `$SECREF_KEY`.
const KEY_B64: &str = "S2V5Q2FuYXJ5LTMyLWJ5dGVzLW9mLWtleS1tYXRlcmk=";

fn sandbox() -> Sandbox {
    Sandbox::new(env!("CARGO_BIN_EXE_secref"))
}

/// A sandbox whose store (keyed by `$SECREF_KEY`) holds [`VALUE`] at [`REF`].
fn planted() -> Sandbox {
    let sb = sandbox().with_env("SECREF_KEY", KEY_B64);
    run_ok(sb.cmd().arg("init"));
    let o = feed_stdin(sb.cmd().args(["set", REF]), VALUE.as_bytes());
    assert!(o.status.success(), "{}", stderr(&o));
    sb
}

// ---- core dumps ---------------------------------------------------------------

/// Whether this kernel writes a crashing process's core as a plain file in
/// its working directory (`core_pattern` a bare name, not a pipe to a
/// helper nor a path elsewhere): only then can the test capture cores.
fn cores_land_in_cwd() -> bool {
    let pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap_or_default();
    let pattern = pattern.trim();
    !pattern.is_empty() && !pattern.starts_with('|') && !pattern.contains('/')
}

/// The user's `ulimit -c unlimited` (shared with the leak harness).
fn allow_cores(cmd: &mut Command) {
    secref_testkit::cli::raise_core_limit(cmd);
}

/// The core files in `dir` (`core` or `core.<pid>`).
fn cores_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n == "core" || n.starts_with("core."))
        })
        .collect()
}

/// How often `needle` occurs in `haystack` (a core of up to a few hundred
/// MB: aho-corasick's vectorised search, not a byte-by-byte scan).
fn occurrences(haystack: &[u8], needle: &str) -> usize {
    aho_corasick::AhoCorasick::new([needle])
        .unwrap()
        .find_overlapping_iter(haystack)
        .count()
}

/// The soft "Max core file size" of a live process, from /proc/<pid>/limits.
fn soft_core_limit(pid: u32) -> String {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .expect("a core limit line")
        .to_string();
    line.split_whitespace().nth(4).unwrap().to_string()
}

/// What a crash left behind, and what the live process looked like.
struct Crash {
    soft_core_limit: String,
    /// The bytes of the core, if one was written.
    core: Option<Vec<u8>>,
    /// The process owner of /proc/<pid> (0 = root: the process was not
    /// dumpable).
    proc_owner: u32,
}

/// Sends SIGABRT to `pid`, and returns after `wait` confirms it died of it.
fn abort(pid: u32, wait: impl FnOnce() -> std::process::ExitStatus) {
    use std::os::unix::process::ExitStatusExt;
    // SAFETY: signalling our own child process by its id.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGABRT) }, 0);
    let status = wait();
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}");
}

fn collect_core(dir: &Path) -> Option<Vec<u8>> {
    let cores = cores_in(dir);
    assert!(cores.len() <= 1, "{cores:?}");
    cores.first().map(|c| {
        let bytes = std::fs::read(c).unwrap();
        std::fs::remove_file(c).unwrap();
        bytes
    })
}

fn proc_owner(pid: u32) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/status"))
        .unwrap()
        .uid()
}

/// `secref run` holding [`VALUE`] while its child sleeps, crashed with
/// SIGABRT. With the opt-out it runs `--no-masking`: the masker's tables
/// must hold the value in plain heap memory to do their job, so only then
/// can the core be required to be free of it.
fn crash_run(sb: &Sandbox, allow: bool) -> Crash {
    let pidfile = sb.path("child.pid");
    let _ = std::fs::remove_file(&pidfile);
    let mut cmd = sb.cmd();
    cmd.arg("run");
    if allow {
        cmd.arg("--no-masking");
    }
    cmd.args(["--env", &format!("DB={REF}"), "--", "sh", "-c"])
        .arg(format!("echo $$ > {}; exec sleep 60", pidfile.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if allow {
        cmd.env("SECREF_ALLOW_CORE_DUMPS", "1");
    }
    allow_cores(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    // The child exists: secref has resolved the value and holds it.
    let mut child_pid = None;
    for _ in 0..1200 {
        if let Some(pid) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
        {
            child_pid = Some(pid);
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "secref run ended early"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let child_pid = child_pid.expect("the command started");
    let pid = child.id();
    let soft_core_limit = soft_core_limit(pid);
    let proc_owner = proc_owner(pid);
    abort(pid, || child.wait().unwrap());
    // SAFETY: the orphaned sleeper is ours; end it.
    unsafe { libc::kill(child_pid, libc::SIGKILL) };
    Crash {
        soft_core_limit,
        core: collect_core(sb.root()),
        proc_owner,
    }
}

/// How many file descriptors process `pid` has open (0 if unreadable).
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// `secref serve` after 20 resolves of [`VALUE`], crashed with SIGABRT.
fn crash_serve(sb: &Sandbox, allow: bool) -> Crash {
    let mut cmd = sb.cmd();
    cmd.env("SECREF_SERVE_TOKEN", TOKEN);
    if allow {
        cmd.env("SECREF_ALLOW_CORE_DUMPS", "1");
    }
    allow_cores(&mut cmd);
    let served = Served::start_cmd(sb, cmd, &[]);
    let idle_fds = open_fds(served.pid());
    let body = serde_json::json!({
        "request_id": "r-1", "trace_id": "t-1", "target_environment": "dev",
        "purpose": "secret.runtime_resolve",
        "items": [{"item_id": "i-0", "secret_ref": REF}],
    });
    for _ in 0..20 {
        let (status, text) = served.post("/v1/secrets/resolve:batch", TOKEN, &body);
        assert_eq!(status, 200, "{text}");
        assert!(text.contains(VALUE));
    }
    let pid = served.pid();
    if allow {
        // A request still in flight legitimately holds the token in hyper's
        // read buffer; crash only once every connection is closed (its
        // socket and buffers dropped). /proc/<pid>/fd is readable only while
        // the process is dumpable, i.e. with the opt-out.
        let mut polls = 0;
        while open_fds(pid) > idle_fds {
            polls += 1;
            assert!(polls < 400, "connections stay open");
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
    }
    let soft_core_limit = soft_core_limit(pid);
    let proc_owner = proc_owner(pid);
    abort(pid, || served.stop());
    Crash {
        soft_core_limit,
        core: collect_core(sb.root()),
        proc_owner,
    }
}

/// Runs one crash scenario with and without the opt-out and checks both.
/// `canary` is a string the opt-out core must contain exactly once, in the
/// process's initial environment block (`name=canary`) on its stack (the
/// positive control: the test does capture cores and finds strings in
/// them). Even that core must not contain [`VALUE`] nor any other copy of
/// the canary: `Secret`s live in MADV_DONTDUMP memory and every freed heap
/// buffer is wiped by the zeroizing allocator.
fn crash_both_ways(crash: fn(&Sandbox, bool) -> Crash, name: &str, canary: &str) {
    let sb = planted();
    let euid = unsafe { libc::geteuid() };

    let hardened = crash(&sb, false);
    assert_eq!(hardened.soft_core_limit, "0", "RLIMIT_CORE was not lowered");
    if euid != 0 {
        // Non-dumpable processes' /proc files belong to root.
        assert_eq!(hardened.proc_owner, 0, "the process is still dumpable");
    }
    assert!(hardened.core.is_none(), "a hardened secref left a core");

    if !cores_land_in_cwd() {
        eprintln!(
            "core_pattern does not write cores to the working directory: positive control skipped"
        );
        return;
    }
    let dumpable = crash(&sb, true);
    assert_ne!(dumpable.soft_core_limit, "0");
    assert_eq!(
        dumpable.proc_owner, euid,
        "the opt-out left it non-dumpable"
    );
    let core = dumpable
        .core
        .expect("with SECREF_ALLOW_CORE_DUMPS=1 the crash leaves a core (positive control)");
    assert_eq!(
        occurrences(&core, &format!("{name}={canary}")),
        1,
        "the positive control's canary is in the opt-out core's environment block"
    );
    assert_eq!(
        occurrences(&core, canary),
        1,
        "a copy of {name} outside the environment block is in the core"
    );
    assert_eq!(occurrences(&core, VALUE), 0, "the value is in the core");
}

#[test]
fn crashed_run_leaves_no_core() {
    // Secref's own environment (with $SECREF_KEY) is on its stack, so a
    // core it is allowed to write holds the key.
    crash_both_ways(crash_run, "SECREF_KEY", KEY_B64);
}

#[test]
fn crashed_serve_leaves_no_core() {
    crash_both_ways(crash_serve, "SECREF_SERVE_TOKEN", TOKEN);
}

/// A debugger's snapshot of a live, hardened `secref serve` (gdb's
/// `gcore`, which honours MADV_DONTDUMP and the dump filter): for another user's process it is
/// refused (non-dumpable processes cannot be ptrace-attached by non-root);
/// root can still take it, and then it holds no resolved value and the
/// token only in the initial environment block.
#[test]
fn debugger_snapshot_of_live_serve_holds_no_value() {
    let have_gdb = Command::new("gdb")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have_gdb {
        eprintln!("gdb is not installed: skipped");
        return;
    }
    let sb = planted();
    let mut cmd = sb.cmd();
    cmd.env("SECREF_SERVE_TOKEN", TOKEN);
    let served = Served::start_cmd(&sb, cmd, &[]);
    let idle_fds = open_fds(served.pid());
    let body = serde_json::json!({
        "request_id": "r-1", "trace_id": "t-1", "target_environment": "dev",
        "purpose": "secret.runtime_resolve",
        "items": [{"item_id": "i-0", "secret_ref": REF}],
    });
    for _ in 0..20 {
        let (status, text) = served.post("/v1/secrets/resolve:batch", TOKEN, &body);
        assert_eq!(status, 200, "{text}");
    }
    let mut polls = 0;
    while open_fds(served.pid()) > idle_fds {
        polls += 1;
        assert!(polls < 400, "connections stay open");
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let snapshot = sb.path("snapshot.core");
    // What `gcore` does, without reading the (large) debug symbols.
    let o = run(Command::new("gdb")
        .args(["--batch", "-nx", "--readnever", "-p"])
        .arg(served.pid().to_string())
        .arg("-ex")
        .arg(format!("gcore {}", snapshot.display())));
    served.stop();
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            !snapshot.exists(),
            "a non-root debugger attached to secref serve"
        );
        return;
    }
    assert!(
        snapshot.exists(),
        "gdb as root took no snapshot: {}",
        stderr(&o)
    );
    let core = std::fs::read(&snapshot).unwrap();
    std::fs::remove_file(&snapshot).unwrap();
    assert_eq!(occurrences(&core, VALUE), 0, "the value is in the snapshot");
    assert_eq!(
        occurrences(&core, TOKEN),
        occurrences(&core, &format!("SECREF_SERVE_TOKEN={TOKEN}")),
        "a copy of the token outside the environment block is in the snapshot"
    );
}

#[test]
fn core_opt_out_prints_a_warning() {
    let sb = sandbox().with_env("SECREF_ALLOW_CORE_DUMPS", "1");
    let o = run(sb.cmd().args(["ref", REF]));
    assert!(o.status.success());
    assert!(
        stderr(&o).contains("SECREF_ALLOW_CORE_DUMPS=1") && stderr(&o).contains("secret values"),
        "{}",
        stderr(&o)
    );
    let o = run(sandbox().cmd().args(["ref", REF]));
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
}

// ---- the child's environment ----------------------------------------------------

/// Credentials set in secref's environment, with distinct canary values.
const CREDENTIALS: &[(&str, &str)] = &[
    ("SECREF_SERVE_TOKEN", "serve-token-canary-11aa"),
    ("VAULT_TOKEN", "vault-token-canary-22bb"),
    ("VAULT_SECRET_ID", "vault-secret-id-canary-33cc"),
    ("INFISICAL_CLIENT_SECRET", "infisical-secret-canary-44dd"),
    ("INFISICAL_TOKEN", "infisical-token-canary-55ee"),
    ("SECFLOW_SDK_TOKEN", "secflow-token-canary-66ff"),
    (
        "COZE_WORKLOAD_IDENTITY_CLIENT_SECRET",
        "coze-secret-canary-77aa",
    ),
    ("SECRET_TENANT_SALT", "tenant-salt-canary-88bb"),
];

fn with_credentials(mut sb: Sandbox) -> Sandbox {
    // Their non-secret halves, so that the providers' settings are complete.
    sb = sb
        .with_env("INFISICAL_CLIENT_ID", "infisical-client-id")
        .with_env("VAULT_ROLE_ID", "vault-role-id")
        .with_env("COZE_WORKLOAD_IDENTITY_CLIENT_ID", "coze-client-id")
        .with_env(
            "COZE_WORKLOAD_IDENTITY_TOKEN_ENDPOINT",
            "http://127.0.0.1:9/token",
        )
        .with_env(
            "COZE_WORKLOAD_ACCESS_TOKEN_ENDPOINT",
            "http://127.0.0.1:9/exchange",
        );
    for (k, v) in CREDENTIALS {
        sb = sb.with_env(k, v);
    }
    sb
}

#[test]
fn run_withholds_credentials_from_the_child() {
    let sb = with_credentials(planted());
    // Masking off: withholding must hold on its own.
    let o = run_ok(sb.cmd().args([
        "run",
        "--no-masking",
        "--env",
        &format!("DB={REF}"),
        "--",
        "env",
    ]));
    let out = stdout(&o);
    assert!(
        out.contains(&format!("DB={VALUE}")),
        "the requested value arrives"
    );
    assert!(out.contains("SECREF_STORE="), "the rest is inherited");
    for (name, value) in CREDENTIALS.iter().chain([&("SECREF_KEY", KEY_B64)]) {
        // `env` prints one `NAME=value` per line; match whole names (the
        // test runner's own `SECREF_TEST_VAULT_TOKEN` is not `VAULT_TOKEN`).
        let prefix = format!("{name}=");
        assert!(
            !out.lines().any(|l| l.starts_with(&prefix)),
            "{name} reached the child"
        );
        assert_no_canary_in(name, &o.stdout, value);
    }

    // One provider credential, passed on purpose; the rest stay withheld.
    let o = run_ok(sb.cmd().args([
        "run",
        "--no-masking",
        "--pass-env",
        "VAULT_TOKEN",
        "--env",
        &format!("DB={REF}"),
        "--",
        "env",
    ]));
    let out = stdout(&o);
    assert!(out.contains("VAULT_TOKEN=vault-token-canary-22bb"));
    assert!(!out
        .lines()
        .any(|l| l.starts_with("SECREF_KEY=") || l.starts_with("INFISICAL_TOKEN=")));

    // secref's own credentials cannot be passed.
    let o = run(sb.cmd().args([
        "run",
        "--pass-env",
        "SECREF_KEY",
        "--env",
        &format!("DB={REF}"),
        "--",
        "env",
    ]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("error[usage]"));
    assert!(stdout(&o).is_empty(), "nothing was run");
}

#[test]
fn run_help_lists_the_withheld_variables() {
    let o = run_ok(sandbox().cmd().args(["run", "--help"]));
    let help = stdout(&o);
    for (name, _) in CREDENTIALS.iter().chain([&("SECREF_KEY", "")]) {
        assert!(help.contains(name), "{name} missing from run --help");
    }
    assert!(help.contains("--pass-env"));
}

#[test]
fn run_child_gets_the_users_core_limit_back() {
    let sb = planted();
    let mut cmd = sb.cmd();
    cmd.args([
        "run",
        "--env",
        &format!("DB={REF}"),
        "--",
        "sh",
        "-c",
        "ulimit -c",
    ]);
    allow_cores(&mut cmd);
    let o = run_ok(&mut cmd);
    // Not the 0 secref set for itself.
    assert_ne!(stdout(&o).trim(), "0", "{}", stdout(&o));
}

// ---- credential files -------------------------------------------------------------

#[test]
fn world_readable_token_file_is_refused_like_the_key_file() {
    let sb = sandbox();
    let token_file = sb.write("serve.token", &format!("{TOKEN}\n"));
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = run(sb.cmd().args([
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--token-file",
        token_file.to_str().unwrap(),
    ]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("error[config]") && err.contains("chmod 600"),
        "{err}"
    );
    assert!(err.contains("serve.token"), "{err}");
    assert_no_canary_in("serve stderr", &o.stderr, TOKEN);

    // The key file: same rule, same words.
    run_ok(sb.cmd().arg("init"));
    std::fs::set_permissions(sb.path("store.key"), std::fs::Permissions::from_mode(0o640)).unwrap();
    let o = run(sb.cmd().arg("ls"));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("chmod 600"), "{}", stderr(&o));
    assert!(stderr(&o).contains("accessible by other users"));

    // At 0600 the token file is used.
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut cmd = sb.cmd();
    cmd.env_remove("SECREF_SERVE_TOKEN");
    let served = Served::start_cmd(&sb, cmd, &["--token-file", token_file.to_str().unwrap()]);
    let r = served.request("POST", "/v1/secrets/validate:batch", &[], b"{}");
    assert_eq!(r.status, 401);
    served.stop();
}

// ---- values where references belong -------------------------------------------------

#[test]
fn a_value_given_as_a_reference_is_never_echoed() {
    const WOULD_BE: &str = "hunter2secretValue";
    let sb = planted();
    let env_file = sb.write("app.env", "A=local://app/db#password\n");
    let attempts: Vec<Vec<String>> = vec![
        vec!["get".into(), WOULD_BE.into()],
        vec!["rm".into(), WOULD_BE.into()],
        vec!["ref".into(), WOULD_BE.into()],
        vec!["check".into(), "--env".into(), format!("X={WOULD_BE}")],
        vec![
            "export".into(),
            "--format".into(),
            "json".into(),
            "--env".into(),
            WOULD_BE.into(),
        ],
        vec![
            "run".into(),
            "--env-file".into(),
            env_file.display().to_string(),
            "--env".into(),
            format!("X={WOULD_BE}"),
            "--".into(),
            "true".into(),
        ],
        vec!["get".into(), format!("postgres://u:{WOULD_BE}@db/app")],
    ];
    for args in attempts {
        let o = run(sb.cmd().args(&args));
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(
            !stderr(&o).contains(WOULD_BE),
            "{args:?} echoed: {}",
            stderr(&o)
        );
        assert!(!stdout(&o).contains(WOULD_BE), "{args:?} echoed on stdout");
    }
    let o = feed_stdin(sb.cmd().args(["set", WOULD_BE]), b"v");
    assert_eq!(o.status.code(), Some(2));
    assert!(!stderr(&o).contains(WOULD_BE), "{}", stderr(&o));
    assert!(stderr(&o).contains("not a reference"));

    // A mistyped reference still gets the parser's detailed message.
    let o = run(sb.cmd().args(["get", "local://app/db#pass word"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(!stderr(&o).contains("not a reference"), "{}", stderr(&o));
}

// ---- audit ------------------------------------------------------------------------

#[test]
fn every_get_writes_its_audit_event_before_exit() {
    let sb = sandbox().with_env("AUDITED_VAR", "audited-value-xyz");
    sb.write(
        "secref.toml",
        "[audit]\nsink = \"file\"\npath = \"audit.jsonl\"\n",
    );
    const RUNS: usize = 30;
    for i in 1..=RUNS {
        let o = run_ok(sb.cmd().args(["get", "env://AUDITED_VAR"]));
        assert_eq!(stdout(&o), "audited-value-xyz\n");
        let log = std::fs::read_to_string(sb.path("audit.jsonl")).unwrap_or_default();
        assert_eq!(log.lines().count(), i, "run {i} lost its audit event");
    }
    let log = std::fs::read(sb.path("audit.jsonl")).unwrap();
    assert_no_canary_in("audit log", &log, "audited-value-xyz");
}
