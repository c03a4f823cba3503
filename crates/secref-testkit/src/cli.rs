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
