//! Issue 16 — `secref serve` writes its access log off the request's
//! worker, and still loses no line. Every test starts the built binary with
//! a real config file and talks HTTP to it on 127.0.0.1.
//!
//! * the lines are written by a dedicated `secref-log` thread;
//! * every request's line is on stderr after SIGTERM, even when the last
//!   requests were answered just before the signal (the queue is flushed at
//!   exit, never dropped).

use secref_testkit::cli::{Sandbox, Served};
use serde_json::json;

const TOKEN: &str = "access-log-offload-token-0123";
const RESOLVE: &str = "/v1/secrets/resolve:batch";

fn serve() -> (Served, Sandbox) {
    let sb = Sandbox::new(env!("CARGO_BIN_EXE_secref")).with_env("OFFLOAD_1", "offload-value-1");
    let cfg = sb.write(
        "secref.toml",
        "[[server.rules]]\nprincipals = [\"*\"]\nrefs = [\"env://OFFLOAD_*\"]\nactions = [\"read\"]\n",
    );
    let served = Served::start(&sb, TOKEN, &["--config", cfg.to_str().unwrap()]);
    (served, sb)
}

fn resolve(served: &Served, id: usize) {
    let body = json!({"target_environment": "dev", "purpose": "secret.runtime_resolve",
        "items": [{"item_id": format!("i{id}"), "secret_ref": "env://OFFLOAD_1"}]});
    let (status, text) = served.post(RESOLVE, TOKEN, &body);
    assert_eq!(status, 200, "{text}");
}

#[test]
fn the_access_log_is_written_by_its_own_thread() {
    let (served, _sb) = serve();
    resolve(&served, 0);
    let tasks = format!("/proc/{}/task", served.pid());
    let names: Vec<String> = std::fs::read_dir(&tasks)
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect();
    assert!(
        names.iter().any(|n| n == "secref-log"),
        "no log writer thread among {names:?}"
    );
    served.stop();
}

#[test]
fn every_line_reaches_stderr_by_exit_even_right_before_sigterm() {
    let (served, sb) = serve();
    const N: usize = 300;
    for i in 0..N {
        resolve(&served, i);
    }
    // SIGTERM right after the last answer: its line may still be queued.
    assert!(served.stop().success());
    let log = std::fs::read_to_string(sb.path("serve.log")).unwrap();
    let lines = log
        .lines()
        .filter(|l| l.contains(RESOLVE) && l.contains("status=200"))
        .count();
    assert_eq!(lines, N, "access-log lines lost:\n{log}");
    assert!(!log.contains("offload-value-1"), "a value reached the log");
    assert!(!log.contains(TOKEN), "the token reached the log");
}
