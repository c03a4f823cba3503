//! Running the `secref` binary in a sandbox: a temporary HOME, store, key
//! file and working directory, so tests never read or write the real home.
//!
//! The binary's path comes from the test crate
//! (`env!("CARGO_BIN_EXE_secref")`), which only Cargo knows.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A temporary directory holding everything one test's `secref` runs touch.
pub struct Sandbox {
    dir: tempfile::TempDir,
    bin: PathBuf,
    env: Vec<(String, String)>,
}

impl Sandbox {
    /// A fresh sandbox running `bin`.
    pub fn new(bin: impl Into<PathBuf>) -> Sandbox {
        Sandbox {
            dir: tempfile::tempdir().expect("temp dir"),
            bin: bin.into(),
            env: Vec::new(),
        }
    }

    /// A fresh sandbox running `bin` whose store is initialised (`secref init`).
    pub fn initialized(bin: impl Into<PathBuf>) -> Sandbox {
        let sb = Sandbox::new(bin);
        run_ok(sb.cmd().arg("init"));
        sb
    }

    /// `secref set <reference>` with `value` on stdin; panics with its
    /// stderr if it fails.
    pub fn set(&self, reference: &str, value: &str) {
        let o = feed_stdin(self.cmd().args(["set", reference]), value.as_bytes());
        assert!(o.status.success(), "set {reference}: {}", stderr(&o));
    }

    /// Sets `key=value` in the environment of every command from [`cmd`](Self::cmd).
    pub fn with_env(mut self, key: &str, value: &str) -> Sandbox {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// The sandbox's root (the commands' working directory).
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `name` inside the sandbox.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The binary with a sandboxed environment: HOME and XDG dirs under
    /// `home/`, the store at `secrets.store`, its key at `store.key`, no
    /// inherited `SECREF_KEY`/`SECREF_CONFIG`/`RUST_LOG`, stdin empty.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        let home = self.path("home");
        std::fs::create_dir_all(&home).unwrap();
        c.current_dir(self.dir.path())
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .env("SECREF_STORE", self.path("secrets.store"))
            .env("SECREF_KEY_FILE", self.path("store.key"))
            .env_remove("SECREF_KEY")
            .env_remove("SECREF_CONFIG")
            .env_remove("RUST_LOG")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        c
    }

    /// Writes `text` to `name` inside the sandbox.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Every file below the sandbox's root, recursively.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut dirs = vec![self.dir.path().to_path_buf()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    out.push(path);
                }
            }
        }
        out.sort();
        out
    }
}

/// Starts `cmd` with its soft core limit raised to the hard limit, as a user
/// with `ulimit -c unlimited` would: secref itself must lower it.
pub fn raise_core_limit(cmd: &mut Command) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: getrlimit/setrlimit between fork and exec are
    // async-signal-safe and touch only the struct on this stack.
    unsafe {
        cmd.pre_exec(|| {
            let mut lim: libc::rlimit = std::mem::zeroed();
            if libc::getrlimit(libc::RLIMIT_CORE, &mut lim) == 0 {
                lim.rlim_cur = lim.rlim_max;
                libc::setrlimit(libc::RLIMIT_CORE, &lim);
            }
            Ok(())
        });
    }
}

/// Runs `cmd` to completion, capturing its output.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("the command runs")
}

/// [`run`], asserting the command succeeded (showing its stderr if not).
pub fn run_ok(cmd: &mut Command) -> Output {
    let o = run(cmd);
    assert!(o.status.success(), "{}", stderr(&o));
    o
}

/// Runs `cmd` with `input` on stdin.
pub fn feed_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The command may refuse before reading stdin (bad arguments): a closed
    // pipe is then expected.
    if let Err(e) = child.stdin.take().unwrap().write_all(input) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe);
    }
    child.wait_with_output().unwrap()
}

/// Standard output as text (invalid UTF-8 replaced).
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Standard error as text (invalid UTF-8 replaced).
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `secref serve` started from a [`Sandbox`] the way a user starts it: a
/// real process on an ephemeral loopback port, its stderr (logs, access
/// log) going to `serve.log` in the sandbox. Killed on drop if still running.
pub struct Served {
    child: std::process::Child,
    addr: String,
    log: PathBuf,
}

/// One HTTP answer as the client saw it.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The header lines (`name: value`), names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body as text (invalid UTF-8 replaced).
    pub body: String,
}

impl Reply {
    /// The first header named `name` (lower-case), if any.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON (panics with the body if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

impl Served {
    /// Starts `secref serve --bind 127.0.0.1:0 <extra>` with
    /// `SECREF_SERVE_TOKEN=token` and waits (bounded) for its address line.
    pub fn start(sb: &Sandbox, token: &str, extra: &[&str]) -> Served {
        let mut cmd = sb.cmd();
        cmd.env("SECREF_SERVE_TOKEN", token);
        Served::start_cmd(sb, cmd, extra)
    }

    /// As [`Served::start`], with `config` written to the sandbox's
    /// `secref.toml` and passed as `--config`.
    pub fn start_with_config(sb: &Sandbox, token: &str, config: &str) -> Served {
        let path = sb.write("secref.toml", config);
        Served::start(sb, token, &["--config", path.to_str().unwrap()])
    }

    /// As [`Served::start`] with a prepared command (extra environment, no
    /// token variable, …); `serve --bind 127.0.0.1:0 <extra>` is appended.
    pub fn start_cmd(sb: &Sandbox, mut cmd: Command, extra: &[&str]) -> Served {
        let log = sb.path("serve.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = cmd
            .args(["serve", "--bind", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        let mut served = Served {
            child,
            addr: String::new(),
            log,
        };
        for _ in 0..1200 {
            let text = served.log();
            if let Some(rest) = text.split("listening on http://").nth(1) {
                served.addr = rest.lines().next().unwrap().trim().to_string();
                return served;
            }
            if let Some(status) = served.child.try_wait().unwrap() {
                panic!("secref serve exited ({status}) before listening:\n{text}");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("secref serve did not start listening:\n{}", served.log());
    }

    /// `host:port` the server listens on.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One HTTP/1.1 request on a fresh connection (`Connection: close`);
    /// `headers` are extra `(name, value)` pairs.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        use std::io::Read as _;
        let mut s = std::net::TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .unwrap();
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        ));
        // A server may answer (413, 401) and close before it has read the
        // whole body: the write then fails with a broken pipe or a reset,
        // and the answer already sent is still there to read.
        let written = s
            .write_all(head.as_bytes())
            .and_then(|()| s.write_all(body));
        let mut raw = Vec::new();
        let read = s.read_to_end(&mut raw);
        if raw.is_empty() {
            panic!("no answer to {method} {path}: write {written:?}, read {read:?}");
        }
        parse_reply(&raw)
    }

    /// One SecFlow-style JSON POST with a bearer token; returns (status, body).
    pub fn post(&self, path: &str, token: &str, body: &serde_json::Value) -> (u16, String) {
        let auth = format!("Bearer {token}");
        let r = self.request(
            "POST",
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body.to_string().as_bytes(),
        );
        (r.status, r.body)
    }

    /// The Prometheus text of `GET /metrics` with a bearer token (asserts
    /// a 200).
    pub fn metrics(&self, token: &str) -> String {
        let r = self.request(
            "GET",
            "/metrics",
            &[("Authorization", &format!("Bearer {token}"))],
            b"",
        );
        assert_eq!(r.status, 200, "{r:?}");
        r.body
    }

    /// Stops the server the way an operator would (SIGTERM) and waits.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling our own child process by its id.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        self.child.wait().unwrap()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Parses a raw HTTP/1.1 response (body as-is; chunked bodies de-chunked).
pub fn parse_reply(raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Decodes a chunked HTTP/1.1 body (extensions ignored; stops at the last chunk).
pub fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&raw[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        let end = (start + size).min(raw.len());
        out.extend_from_slice(&raw[start..end]);
        raw = &raw[(end + 2).min(raw.len())..];
    }
    out
}

/// A SecFlow batch request body: `refs` as items `item-0`, `item-1`, … for
/// `purpose`, with request id `<tag>-1` and trace id `<tag>-t` (so a test
/// finds its own request in logs and spans).
pub fn secflow_batch(tag: &str, purpose: &str, refs: &[&str]) -> serde_json::Value {
    let items: Vec<_> = refs
        .iter()
        .enumerate()
        .map(|(i, r)| serde_json::json!({"item_id": format!("item-{i}"), "secret_ref": r}))
        .collect();
    serde_json::json!({
        "request_id": format!("{tag}-1"), "trace_id": format!("{tag}-t"), "target_environment": "dev",
        "purpose": purpose, "items": items,
    })
}

/// The values held by the committed format-1 store fixture
/// (`crates/secref-cli/tests/fixtures`).
pub const FIXTURE_VALUES: &[(&str, &str)] = &[
    ("local://app/db#password", "fixture-db-password"),
    ("local://app/db#user", "admin"),
    ("local://app/api-token", "tok-123456"),
];

/// A file of the CLI's committed test fixtures.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../secref-cli/tests/fixtures")
        .join(name)
}
