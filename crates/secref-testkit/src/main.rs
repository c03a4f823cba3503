//! `secref-fake <backend> [options]`: runs one test double on 127.0.0.1 and
//! prints `listening on http://127.0.0.1:<port>` once ready, for the Python
//! conformance suites.

fn main() {
    let backend = std::env::args().nth(1).unwrap_or_default();
    eprintln!("secref-fake: unknown backend '{backend}' (available: none yet)");
    std::process::exit(2);
}
