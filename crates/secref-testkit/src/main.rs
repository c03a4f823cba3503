//! `secref-fake <backend> [options]`: runs one test double on 127.0.0.1 and
//! prints `listening on http://127.0.0.1:<port>` once ready, for the Python
//! conformance suites.

use std::process::ExitCode;

/// Returns its exit code (never `process::exit`s), so destructors run.
fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let backend = args.first().cloned().unwrap_or_default();
    match backend.as_str() {
        "infisical" => secref_testkit::infisical::run_cli(&args[1..]),
        "coze" => secref_testkit::coze::main(&args[1..]),
        _ => {
            eprintln!("secref-fake: unknown backend '{backend}' (available: infisical, coze)");
            ExitCode::from(2)
        }
    }
}
