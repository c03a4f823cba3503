//! Issue 9, item 8: `secref run` conceals a secret in the forms common
//! encoders write — base64 wrapped at 76 or 64 columns with `\n` or `\r\n`,
//! JSON as Python, .NET, Go and PHP escape it — and masks a low-entropy value
//! in a large adversarial output correctly. Each test runs the real binary
//! with a real child process.

use std::process::Output;

use secref_testkit::capture::assert_no_canary_decoded;
use secref_testkit::cli::{run_ok, stderr, stdout, Sandbox};

/// Long enough to wrap (base64 of more than 57 bytes), with `/`, `+`-prone
/// bytes, HTML-special characters, non-ASCII and a non-BMP character.
const CANARY: &str = "canary-7f3e9c1d/<a&b>+é€😀 padded out to wrap: 0123456789abcdefghij";
const MASK: &str = "<concealed by secref>";

fn sandbox() -> Sandbox {
    Sandbox::new(env!("CARGO_BIN_EXE_secref")).with_env("CANARY_VALUE", CANARY)
}

/// `secref run --env S=env://CANARY_VALUE -- sh -c script`.
fn run_sh(sb: &Sandbox, script: &str) -> Output {
    run_ok(sb.cmd().args([
        "run",
        "--env",
        "S=env://CANARY_VALUE",
        "--",
        "sh",
        "-c",
        script,
    ]))
}

fn assert_no_leak(o: &Output) {
    assert_no_canary_decoded("stdout", &o.stdout, CANARY);
    assert_no_canary_decoded("stderr", &o.stderr, CANARY);
    assert_no_canary_decoded("stdout", &o.stdout, "canary-7f3e9c1d");
}

#[test]
fn wrapped_base64_is_concealed_with_its_line_breaks() {
    let sb = sandbox();
    let cases = [
        // coreutils `base64` (76 columns), PEM-style 64, both with CRLF.
        ("printf %s \"$S\" | base64", "\n"),
        ("printf %s \"$S\" | base64 -w 64", "\n"),
        ("printf %s \"$S\" | base64 | sed 's/$/\\r/'", "\r\n"),
        ("printf %s \"$S\" | base64 -w 64 | sed 's/$/\\r/'", "\r\n"),
    ];
    for (script, eol) in cases {
        let o = run_sh(&sb, &format!("echo begin; {script}; echo end"));
        assert_eq!(stdout(&o), format!("begin\n{MASK}{eol}end\n"), "{script}");
        assert_no_leak(&o);
    }
    // Inside a longer encoding (a credential blob), at each alignment.
    for prefix in ["", "u", "us"] {
        let o = run_sh(&sb, &format!("printf '{prefix}:%s' \"$S\" | base64 >&2"));
        assert!(stderr(&o).contains(MASK), "{prefix}: {}", stderr(&o));
        assert_no_leak(&o);
    }
}

#[test]
fn json_from_real_encoders_is_concealed() {
    let sb = sandbox();
    // Python: ensure_ascii (\u00e9, surrogate pairs); .NET: upper-case hex
    // and HTML-sensitive characters escaped; Go: HTML-safe \u003c; PHP: \/;
    // and every character escaped.
    let script = r#"
import json, os, sys
s = os.environ["S"]
py = json.dumps(s)
net = "".join(c if c.isascii() and c not in "+<>&'" else
              "".join("\\u%04X" % u for u in (lambda b: [int.from_bytes(b[i:i+2], "big") for i in range(0, len(b), 2)])(c.encode("utf-16-be")))
              for c in s)
go = json.dumps(s, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
php = json.dumps(s).replace("/", "\\/")
every = "".join("\\u%04x" % int.from_bytes(s.encode("utf-16-be")[i:i+2], "big") for i in range(0, len(s.encode("utf-16-be")), 2))
for name, v in [("py", py), ("net", '"' + net + '"'), ("go", go), ("php", php), ("every", '"' + every + '"')]:
    print('{"%s":%s}' % (name, v), flush=True)
    print('{"%s":%s}' % (name, v), file=sys.stderr, flush=True)
"#;
    let o = run_ok(sb.cmd().args([
        "run",
        "--env",
        "S=env://CANARY_VALUE",
        "--",
        "python3",
        "-c",
        script,
    ]));
    let want: String = ["py", "net", "go", "php", "every"]
        .iter()
        .map(|n| format!("{{\"{n}\":\"{MASK}\"}}\n"))
        .collect();
    assert_eq!(stdout(&o), want);
    assert_eq!(stderr(&o), want);
    assert_no_leak(&o);
}

#[test]
fn low_entropy_value_in_twenty_megabytes_of_zeros() {
    let sb = Sandbox::new(env!("CARGO_BIN_EXE_secref")).with_env("ZEROS", "000");
    let o = run_ok(sb.cmd().args([
        "run",
        "--env",
        "S=env://ZEROS",
        "--",
        "sh",
        "-c",
        "head -c 20000000 /dev/zero | tr '\\0' 0; printf ' 00 tail'",
    ]));
    // Every zero belongs to one run of overlapping matches: one mask.
    assert_eq!(stdout(&o), format!("{MASK} 00 tail"));
}
