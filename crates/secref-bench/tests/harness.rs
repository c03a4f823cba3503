//! The harness's own moving parts, as `scripts/bench.py` uses them: the
//! `floor` server answers the configured bytes on a real 127.0.0.1 port, and
//! `load` / `cachehit` print one JSON line of numbers. Checks shapes and
//! counts only, never a time.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_secref-bench");

fn json_line(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().expect("a line")).expect("JSON")
}

#[test]
fn floor_answers_the_same_bytes_and_load_counts_every_request() {
    let dir = tempfile::tempdir().unwrap();
    let answer = dir.path().join("answer.json");
    std::fs::write(&answer, br#"{"items":[]}"#).unwrap();
    let mut floor = Command::new(BIN)
        .args(["floor", "--route", &format!("/one={}", answer.display())])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(floor.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .expect(&line)
        .to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let load = |path: &str| {
        json_line(
            &Command::new(BIN)
                .args(["load", "--url", &format!("{url}{path}"), "--method", "POST"])
                .args(["--conns", "3", "--seconds", "30", "--max", "20"])
                .output()
                .unwrap(),
        )
    };
    let ok = load("/one");
    assert_eq!(ok["samples"], 20, "{ok}");
    assert_eq!(ok["refused"], 0, "{ok}");
    assert!(ok["median_ns"].as_u64().unwrap() > 0 && ok["rps"].as_f64().unwrap() > 0.0);
    // A route the floor does not serve is counted as refused, not hidden.
    let missing = load("/nope");
    assert_eq!(missing["refused"], 20, "{missing}");
    floor.kill().unwrap();
    floor.wait().unwrap();
}

#[test]
fn cachehit_reports_ns_per_op_for_each_thread() {
    let out = json_line(
        &Command::new(BIN)
            .args([
                "cachehit",
                "--threads",
                "2",
                "--seconds",
                "30",
                "--max",
                "3",
            ])
            .output()
            .unwrap(),
    );
    assert_eq!(out["samples"], 6, "{out}");
    assert!(out["p99_ns"].as_u64().unwrap() >= out["median_ns"].as_u64().unwrap());
}

#[test]
fn bad_arguments_are_a_usage_error() {
    let out = Command::new(BIN).args(["load", "--url"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--url needs a value"));
}
