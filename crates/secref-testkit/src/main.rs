//! `secref-fake <backend> [options]`: runs one test double on 127.0.0.1 and
//! prints `listening on http://127.0.0.1:<port>` once ready, for the Python
//! conformance suites.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let backend = args.get(1).map(String::as_str).unwrap_or_default();
    match backend {
        "coze" => secref_testkit::coze::main(&args[2..]),
        _ => {
            eprintln!("secref-fake: unknown backend '{backend}' (available: coze)");
            std::process::exit(2);
        }
    }
}
