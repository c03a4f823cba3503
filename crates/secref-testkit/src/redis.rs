//! A private `redis-server` for tests of `[state] backend = "redis"`: each
//! test starts its own on a free 127.0.0.1 port (so stopping it disturbs no
//! other test), from `SECREF_TEST_REDIS_BIN` (`scripts/test.sh` sets it).

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A private `redis-server`, stopped on drop.
pub struct Redis {
    bin: PathBuf,
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Redis {
    /// Starts one on a free port, or `None` (with the reason printed) when
    /// `SECREF_TEST_REDIS_BIN` is unset.
    pub fn start() -> Option<Redis> {
        let Some(bin) = std::env::var_os("SECREF_TEST_REDIS_BIN") else {
            eprintln!("skipped: SECREF_TEST_REDIS_BIN is not set (scripts/test.sh sets it)");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = Redis {
            bin: bin.into(),
            port,
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        r.up();
        Some(r)
    }

    /// (Re)starts the server on its port and waits (bounded) for it.
    pub fn up(&mut self) {
        let child = Command::new(&self.bin)
            .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .args(["--port", &self.port.to_string()])
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not listen on {}", self.port);
    }

    /// Stops it (SIGKILL: an outage, not a shutdown) and waits.
    pub fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// `redis-cli` next to `redis-server`, else the one on PATH.
    pub fn cli(&self) -> Command {
        let near = self
            .bin
            .parent()
            .map(|d| d.join("redis-cli"))
            .filter(|p| p.exists());
        let mut c = Command::new(near.unwrap_or_else(|| "redis-cli".into()));
        c.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        c
    }

    pub fn cli_out(&self, args: &[&str]) -> String {
        let o = self.cli().args(args).output().expect("redis-cli runs");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Every key with its type and contents, as text.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for key in self.cli_out(&["--scan"]).lines().filter(|k| !k.is_empty()) {
            let kind = self.cli_out(&["TYPE", key]);
            let body = match kind.trim() {
                "string" => self.cli_out(&["GET", key]),
                "zset" => self.cli_out(&["ZRANGE", key, "0", "-1", "WITHSCORES"]),
                other => format!("<{other}>"),
            };
            out.push_str(&format!("{key} {} {body}\n", kind.trim()));
        }
        out
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.down();
    }
}
