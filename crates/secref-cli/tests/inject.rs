//! `secref inject`, driven through the real binary against a real store
//! file: rendering with filters, mode 0600, all-or-nothing resolution,
//! template errors with line:column, `--watch` re-rendering exactly once
//! for a burst of changes (with `--on-change` and `--signal` to a pid
//! file), and a render killed (SIGKILL) at random points never leaving a
//! partial file.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use secref_testkit::cli::{run, run_ok, stderr, Sandbox};

fn sandbox() -> Sandbox {
    Sandbox::initialized(env!("CARGO_BIN_EXE_secref"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
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

fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".secref-tmp"))
        .collect()
}

/// Kills a child process on drop (SIGTERM, then SIGKILL), so a failing
/// test leaves nothing running.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn renders_filters_into_a_0600_file_and_writes_nothing_when_a_reference_fails() {
    let sb = sandbox();
    sb.set("local://app/db#password", " s3cret-pw\t");
    sb.write(
        "app.conf.tpl",
        "pw={{ local://app/db#password | trim }}\n\
         b64={{local://app/db#password|trim|base64}}\n\
         json={{ local://app/db#password | json }}\n\
         literal=\\{{ not a placeholder }}\n",
    );
    let out = sb.path("app.conf");
    run_ok(
        sb.cmd()
            .args(["inject", "-i", "app.conf.tpl", "-o", "app.conf"]),
    );
    assert_eq!(
        read(&out),
        "pw=s3cret-pw\nb64=czNjcmV0LXB3\njson=\" s3cret-pw\\t\"\nliteral={{ not a placeholder }}\n"
    );
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // One missing reference: exit 3 (not found), the old file untouched.
    sb.write(
        "broken.tpl",
        "{{ local://app/db#password }} {{ local://app/missing }}",
    );
    let o = run(sb
        .cmd()
        .args(["inject", "-i", "broken.tpl", "-o", "app.conf"]));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("nothing was written"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("s3cret"), "{}", stderr(&o));
    assert!(read(&out).starts_with("pw=s3cret-pw\n"));
    assert!(temp_files(sb.root()).is_empty());

    // A syntax error names line:column and never echoes a pasted value.
    sb.write("syntax.tpl", "ok\nx = {{ hunter2-pasted-value }}\n");
    let o = run(sb
        .cmd()
        .args(["inject", "-i", "syntax.tpl", "-o", "other.conf"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("template 2:8"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("hunter2"), "{}", stderr(&o));
    assert!(!sb.path("other.conf").exists());
}

#[test]
fn watch_rerenders_once_for_a_burst_of_twenty_changes() {
    let sb = sandbox();
    sb.set("local://app/api#token", "token-0000");
    sb.write("t.tpl", "token={{ local://app/api#token }}\n");
    let out = sb.path("app.conf");
    let hook_log = sb.path("hook.log");
    let sig_log = sb.path("sig.log");
    // The process to reload: it records each SIGHUP (and ends with the test).
    let mut reloader = Command::new("/bin/sh");
    reloader.arg("-c").arg(format!(
        "trap 'echo hup >> {}' HUP; echo $$ > {}; while kill -0 {} 2>/dev/null; do sleep 0.1; done",
        sig_log.display(),
        sb.path("app.pid").display(),
        std::process::id()
    ));
    let _reloader = Guard(reloader.stdin(Stdio::null()).spawn().unwrap());
    wait_for("the pid file", || !read(&sb.path("app.pid")).is_empty());

    let log = std::fs::File::create(sb.path("inject.log")).unwrap();
    let inject = sb
        .cmd()
        .args(["inject", "-i", "t.tpl", "-o", "app.conf", "--watch"])
        .args(["--debounce", "3s", "--min-interval", "3s"])
        .args(["--watch-interval", "1h"]) // only the store file tells of changes
        .arg("--on-change")
        .arg(format!("echo reload >> {}", hook_log.display()))
        .args(["--signal", "HUP", "--pid-file", "app.pid"])
        .stderr(log)
        .spawn()
        .unwrap();
    let mut inject = Guard(inject);
    wait_for("the first render", || read(&out) == "token=token-0000\n");
    assert!(!hook_log.exists(), "the first render runs no hook");

    for i in 1..=20 {
        sb.set("local://app/api#token", &format!("token-{i:04}"));
    }
    wait_for("the burst's re-render and hook", || {
        read(&hook_log).lines().count() >= 1
    });
    assert_eq!(read(&out), "token=token-0020\n");

    // A later change gives the second reload; when it is seen, every
    // earlier one has happened (reloads run one after another).
    sb.set("local://app/api#token", "token-final");
    wait_for("the second reload", || read(&hook_log).lines().count() >= 2);
    assert_eq!(read(&out), "token=token-final\n");
    assert_eq!(read(&hook_log).lines().count(), 2, "one reload per burst");
    wait_for("two SIGHUPs", || read(&sig_log).lines().count() >= 2);
    assert_eq!(read(&sig_log).lines().count(), 2);

    // SIGTERM ends it cleanly; no temporary file is left behind.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(inject.0.id() as libc::pid_t, libc::SIGTERM) };
    let status = inject.0.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let log = read(&sb.path("inject.log"));
    assert_eq!(log.matches("re-rendered").count(), 2, "{log}");
    assert!(!log.contains("token-"), "values never logged: {log}");
    assert!(temp_files(sb.root()).is_empty());
}

#[test]
fn a_render_killed_at_any_point_leaves_the_old_file_or_the_new_one() {
    let sb = sandbox();
    // A large render (64 placeholders × 64 KiB = 4 MiB) so kills land
    // during the write.
    const CHUNK: usize = 64 * 1024;
    const COPIES: usize = 64;
    let tpl: String = "{{ local://big/value }}".repeat(COPIES);
    sb.write("big.tpl", &tpl);
    let out = sb.path("big.conf");
    let value = |i: usize| {
        let c = char::from(b'a' + (i % 26) as u8);
        c.to_string().repeat(CHUNK)
    };
    let random = || {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u8(0);
        h.finish()
    };
    let mut written = Vec::new();
    for i in 0..24 {
        sb.set("local://big/value", &value(i));
        written.push(value(i));
        let child = sb
            .cmd()
            .args(["inject", "-i", "big.tpl", "-o", "big.conf"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut child = Guard(child);
        std::thread::sleep(Duration::from_micros(random() % 150_000));
        let _ = child.0.kill();
        let _ = child.0.wait();
        // Old or new, whole: COPIES copies of one value ever set.
        if let Ok(bytes) = std::fs::read(&out) {
            assert_eq!(bytes.len(), CHUNK * COPIES, "a partial file after kill {i}");
            let first = &bytes[..CHUNK];
            assert!(
                written.iter().any(|w| w.as_bytes() == first),
                "unknown content after kill {i}"
            );
            assert!(bytes.chunks(CHUNK).all(|c| c == first), "mixed content");
            let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        for t in temp_files(sb.root()) {
            let mode = std::fs::metadata(sb.path(&t)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "a temporary file is never readable by others");
        }
    }
    // A completed run removes the orphans of the killed ones.
    run_ok(sb.cmd().args(["inject", "-i", "big.tpl", "-o", "big.conf"]));
    assert_eq!(read(&out), value(23).repeat(COPIES));
    assert!(
        temp_files(sb.root()).is_empty(),
        "{:?}",
        temp_files(sb.root())
    );
}
