//! `secref run --watch`, driven through the real binary: one restart per
//! real value change (none for a new version with the same value), the
//! command's exit code and signal forwarding as without --watch, and zero
//! restarts while a remote backend (`secref serve` as a Vault upstream,
//! behind a TCP proxy the test cuts) is down, then exactly one when it
//! comes back with a changed value.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secref_testkit::cli::{Sandbox, Served};

const TOKEN: &str = "run-watch-upstream-token-7d2e";

fn sandbox() -> Sandbox {
    Sandbox::initialized(env!("CARGO_BIN_EXE_secref"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn lines(path: &Path) -> usize {
    read(path).lines().count()
}

/// Polls `done` (bounded: 60 s) and panics with `what` if it never holds.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1200 {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// Kills the process on drop if the test did not end it.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: signalling our own child; TERM is forwarded to its command.
            unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
            std::thread::sleep(Duration::from_millis(300));
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The command `secref run` starts: it appends `start <value>` to `log`,
/// exits 7 on SIGTERM, and ends by itself if secref goes away.
fn recorder(log: &Path) -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        format!(
            "echo \"start $APP_SECRET\" >> {}; trap 'exit 7' TERM; while kill -0 $PPID 2>/dev/null; do sleep 0.1; done",
            log.display()
        ),
    ]
}

fn sigterm(child: &Child) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
}

#[test]
fn restarts_once_per_real_change_and_keeps_exit_codes() {
    let sb = sandbox();
    sb.set("local://app/api#token", "value-one");
    let runs = sb.path("runs.log");
    let child = sb
        .cmd()
        .args(["run", "--watch", "--debounce", "1s", "--min-interval", "1s"])
        .args(["--watch-interval", "1h", "--restart-grace", "30s"])
        .args(["--env", "APP_SECRET=local://app/api#token", "--"])
        .args(recorder(&runs))
        .stderr(std::fs::File::create(sb.path("run.log")).unwrap())
        .spawn()
        .unwrap();
    let mut run = Guard(child);
    wait_for("the first start", || lines(&runs) == 1);

    sb.set("local://app/api#token", "value-two");
    wait_for("one restart", || lines(&runs) >= 2);
    // A new version with the same value is no change.
    sb.set("local://app/api#token", "value-two");
    // A last real change: when its start is seen, every earlier restart is.
    sb.set("local://app/api#token", "value-three");
    wait_for("the second restart", || read(&runs).contains("value-three"));
    assert_eq!(
        read(&runs),
        "start value-one\nstart value-two\nstart value-three\n"
    );

    // SIGTERM to secref is forwarded; the command's exit code (7) is secref's.
    sigterm(&run.0);
    let status = run.0.wait().unwrap();
    assert_eq!(status.code(), Some(7), "{}", read(&sb.path("run.log")));
    assert_eq!(lines(&runs), 3, "no restart after a stop request");
    let log = read(&sb.path("run.log"));
    assert_eq!(log.matches("restarting the command").count(), 2, "{log}");
    assert!(!log.contains("value-"), "values never logged: {log}");
}

/// A TCP proxy the test can cut: while down it refuses (closes) new
/// connections and shuts the open ones, as a dead backend looks.
struct Proxy {
    addr: String,
    up: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    /// Connections refused while down (each is a poll that failed).
    refused: Arc<AtomicUsize>,
}

impl Proxy {
    fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let up = Arc::new(AtomicBool::new(true));
        let open = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(AtomicUsize::new(0));
        let (up2, open2, refused2) = (up.clone(), open.clone(), refused.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !up2.load(Ordering::SeqCst) {
                    refused2.fetch_add(1, Ordering::SeqCst);
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                {
                    let mut o = open2.lock().unwrap();
                    o.push(client.try_clone().unwrap());
                    o.push(server.try_clone().unwrap());
                }
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Proxy {
            addr,
            up,
            open,
            refused,
        }
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        if !up {
            for s in self.open.lock().unwrap().drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

#[test]
fn zero_restarts_across_a_backend_outage_within_the_stale_grace() {
    outage("[cache]\nstale_grace_seconds = 3600\n", false);
}

#[test]
fn zero_restarts_across_a_backend_outage_without_a_stale_grace() {
    // Past the cache TTL, errors reach secref (one warning per outage) and
    // are never a change.
    outage("[cache]\nttl_seconds = 1\n", true);
}

fn outage(config: &str, errors_seen: bool) {
    // The backend: `secref serve` as a Vault server over its own store.
    let upstream_sb = sandbox();
    upstream_sb.set("local://app/api#token", "remote-one");
    let upstream = Served::start(&upstream_sb, TOKEN, &[]);
    let proxy = Proxy::start(upstream.addr().to_string());

    let sb = Sandbox::new(env!("CARGO_BIN_EXE_secref"));
    sb.write("secref.toml", config);
    let runs = sb.path("runs.log");
    let run_log = sb.path("run.log");
    let child = sb
        .cmd()
        .env("VAULT_ADDR", format!("http://{}", proxy.addr))
        .env("VAULT_TOKEN", TOKEN)
        .args([
            "run",
            "--watch",
            "--debounce",
            "500ms",
            "--min-interval",
            "1s",
        ])
        .args(["--watch-interval", "200ms", "--restart-grace", "30s"])
        .args([
            "--env",
            "APP_SECRET=openbao+kv2://secret/app/api#token",
            "--",
        ])
        .args(recorder(&runs))
        .stderr(std::fs::File::create(&run_log).unwrap())
        .spawn()
        .unwrap();
    let _run = Guard(child);
    wait_for("the first start", || lines(&runs) == 1);

    // The backend goes away: polls fail (the stale grace keeps the value
    // in use), the command keeps running.
    proxy.set_up(false);
    let refused = || proxy.refused.load(Ordering::SeqCst);
    wait_for("failing polls", || refused() >= 3);
    // The value changes while the backend is unreachable.
    upstream_sb.set("local://app/api#token", "remote-two");
    let before = refused();
    wait_for("more failing polls", || refused() >= before + 3);
    if errors_seen {
        wait_for("the outage warning", || {
            read(&run_log).contains("warning: watching")
        });
    }
    assert_eq!(
        read(&runs),
        "start remote-one\n",
        "no restart during the outage"
    );

    // Back up with the changed value: exactly one restart.
    proxy.set_up(true);
    wait_for("the restart", || lines(&runs) >= 2);
    assert_eq!(read(&runs), "start remote-one\nstart remote-two\n");
    // And one more real change later gives exactly one more.
    upstream_sb.set("local://app/api#token", "remote-three");
    wait_for("the second restart", || {
        read(&runs).contains("remote-three")
    });
    assert_eq!(
        read(&runs),
        "start remote-one\nstart remote-two\nstart remote-three\n"
    );
    let log = read(&run_log);
    assert_eq!(log.matches("restarting the command").count(), 2, "{log}");
    assert!(!log.contains("remote-"), "values never logged: {log}");
    if errors_seen {
        assert_eq!(log.matches("warning: watching").count(), 1, "{log}");
        assert_eq!(log.matches("works again").count(), 1, "{log}");
    }
    upstream.stop();
}

#[test]
fn watch_signal_signals_instead_of_restarting() {
    let sb = sandbox();
    sb.set("local://app/api#token", "value-one");
    let runs = sb.path("runs.log");
    let hups = sb.path("hups.log");
    let script = format!(
        "echo start >> {}; trap 'echo hup >> {}' HUP; trap 'exit 0' TERM; while kill -0 $PPID 2>/dev/null; do sleep 0.1; done",
        runs.display(),
        hups.display()
    );
    let child = sb
        .cmd()
        .args(["run", "--watch", "--watch-signal", "HUP"])
        .args(["--debounce", "500ms", "--min-interval", "500ms"])
        .args(["--env", "APP_SECRET=local://app/api#token", "--"])
        .args(["/bin/sh", "-c", &script])
        .stderr(std::fs::File::create(sb.path("run.log")).unwrap())
        .spawn()
        .unwrap();
    let mut run = Guard(child);
    wait_for("the start", || lines(&runs) == 1);
    sb.set("local://app/api#token", "value-two");
    wait_for("one SIGHUP", || lines(&hups) >= 1);
    sb.set("local://app/api#token", "value-three");
    wait_for("a second SIGHUP", || lines(&hups) >= 2);
    sigterm(&run.0);
    assert_eq!(run.0.wait().unwrap().code(), Some(0));
    assert_eq!(lines(&runs), 1, "signalled, never restarted");
    assert_eq!(lines(&hups), 2);
}
