//! `secref import` through the built binary: a 200-variable dotenv file
//! moves into the local store and comes back identical through `secref
//! export`; comments, order, references and empty values are kept; the
//! file's mode is kept; `--dry-run` and `-o` change what they say; and
//! SIGKILL at seeded random moments never loses a value.

use std::os::unix::fs::PermissionsExt as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use secref_testkit::cli::{feed_stdin, run, run_ok, stderr, stdout, Sandbox};
use serde_json::Value;

const PRE: &str = "canary-import-preexisting-0f0f";

/// A sandbox with a store holding `local://pre/existing`.
fn sandbox() -> Sandbox {
    let sb = Sandbox::new(env!("CARGO_BIN_EXE_secref"));
    run_ok(sb.cmd().arg("init"));
    let o = feed_stdin(
        sb.cmd().args(["set", "local://pre/existing"]),
        PRE.as_bytes(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    sb
}

/// The dotenv text of `n` variables in every form the rewrite must keep,
/// and the plaintext values that must move into the store.
fn dotenv(n: usize, salt: u64) -> (String, Vec<String>) {
    let mut text = String::from("# app settings\n\n");
    let mut plain = Vec::new();
    for i in 0..n {
        if i % 10 == 0 {
            text.push_str(&format!("# section {i}\n"));
        }
        let v = format!("canary-import-{salt:x}-{i:03}-value");
        let line = match i {
            3 => "PRE_REF=local://pre/existing\n".to_string(),
            4 => "EMPTY=\n".to_string(),
            _ if i % 5 == 0 => format!("VAR_{i}=\"{v} with spaces\"\n"),
            _ if i % 7 == 0 => format!("VAR_{i}='{v} $not_expanded'\n"),
            _ if i % 11 == 0 => format!("export VAR_{i}={v}\n"),
            _ if i % 13 == 0 => format!("VAR_{i}={v} # a comment kept\n"),
            _ => format!("VAR_{i}={v}\n"),
        };
        if i != 3 && i != 4 {
            plain.push(v);
        }
        text.push_str(&line);
    }
    (text, plain)
}

fn export(sb: &Sandbox, file: &std::path::Path) -> Value {
    let o = run(sb
        .cmd()
        .args(["export", "--no-env-scan", "--format", "json", "--env-file"])
        .arg(file));
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn a_200_variable_file_round_trips_through_the_store() {
    let sb = sandbox();
    let (text, plain) = dotenv(200, 1);
    let file = sb.write("app.env", &text);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let before = export(&sb, &file);
    assert_eq!(before.as_object().unwrap().len(), 200);

    let o = run_ok(sb.cmd().arg("import").arg(&file));
    assert!(!stdout(&o).contains("canary-import"), "{}", stdout(&o));
    assert!(!stderr(&o).contains("canary-import"), "{}", stderr(&o));

    let after_text = std::fs::read_to_string(&file).unwrap();
    for v in &plain {
        assert!(!after_text.contains(v.as_str()), "{v} is still in the file");
    }
    // Comments, order, the reference and the empty value are kept.
    assert!(after_text.starts_with("# app settings\n\n# section 0\nVAR_0=local://app/VAR_0\n"));
    assert!(after_text.contains("\nPRE_REF=local://pre/existing\nEMPTY=\n"));
    assert!(after_text.contains("\nexport VAR_11=local://app/VAR_11\n"));
    assert!(after_text.contains("\nVAR_13=local://app/VAR_13 # a comment kept\n"));
    assert!(after_text.contains("# section 190\n"));
    assert_eq!(after_text.lines().count(), text.lines().count());
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);

    // Identical values through export.
    assert_eq!(export(&sb, &file), before);
    // Importing again finds nothing left to move and changes nothing.
    run_ok(sb.cmd().arg("import").arg(&file));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), after_text);
    // No file in the sandbox holds a plaintext value any more (the store is
    // encrypted; no temporary file is left behind).
    assert_no_plaintext(&sb, &plain);
}

fn assert_no_plaintext(sb: &Sandbox, plain: &[String]) {
    for path in sb.files() {
        let bytes = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for v in plain {
            assert!(!text.contains(v.as_str()), "{v} is in {}", path.display());
        }
    }
}

#[test]
fn dry_run_shows_the_plan_without_values_and_output_writes_elsewhere() {
    let sb = sandbox();
    let (text, plain) = dotenv(20, 2);
    let file = sb.write("svc.env", &text);
    let o = run_ok(
        sb.cmd()
            .args(["import", "--dry-run", "--prefix", "local://prod/svc/"])
            .arg(&file),
    );
    let plan = stdout(&o);
    assert!(plan.contains("VAR_0 -> local://prod/svc/VAR_0"), "{plan}");
    assert!(
        plan.contains("PRE_REF: already a reference, kept"),
        "{plan}"
    );
    assert!(plan.contains("EMPTY: empty, kept"), "{plan}");
    for v in &plain {
        assert!(!plan.contains(v.as_str()));
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    let o = run_ok(sb.cmd().arg("ls"));
    assert!(!stdout(&o).contains("prod/svc"), "{}", stdout(&o));

    // -o: the original stays, the new file holds references.
    let before = export(&sb, &file);
    let out = sb.path("svc.refs.env");
    run_ok(
        sb.cmd()
            .args(["import", "--prefix", "local://prod/svc", "-o"])
            .arg(&out)
            .arg(&file),
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    let new = std::fs::read_to_string(&out).unwrap();
    assert!(new.contains("VAR_1=local://prod/svc/VAR_1\n"), "{new}");
    assert_eq!(export(&sb, &out), before);
}

#[test]
fn a_file_it_cannot_rewrite_line_by_line_is_refused_unchanged() {
    let sb = sandbox();
    let text = "A=canary-import-bad-1\nnot an assignment\n";
    let file = sb.write("bad.env", text);
    let o = run(sb.cmd().arg("import").arg(&file));
    assert_ne!(o.status.code(), Some(0));
    assert!(
        !stderr(&o).contains("canary-import-bad-1"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    // --prefix must be a local:// folder.
    let file = sb.write("ok.env", "A=canary-import-bad-2\n");
    let o = run(sb.cmd().args(["import", "--prefix", "env://X"]).arg(&file));
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "A=canary-import-bad-2\n"
    );
}

/// xorshift64*: a seeded, reproducible source of kill delays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[test]
fn sigkill_at_any_moment_loses_nothing() {
    // How long one import takes here, to spread the kills over it (a
    // measurement to aim with, not an assertion).
    let sb = sandbox();
    let (text, _) = dotenv(200, 3);
    let file = sb.write("app.env", &text);
    let start = Instant::now();
    run_ok(sb.cmd().arg("import").arg(&file));
    let full = start.elapsed().as_micros().max(1000) as u64;

    let mut rng = Rng(0x5EC2_EF12_0000_0013);
    let mut outcomes = [0usize; 2];
    for round in 0..12u64 {
        let sb = sandbox();
        let (text, plain) = dotenv(200, 100 + round);
        let file = sb.write("app.env", &text);
        let before = export(&sb, &file);
        let delay = Duration::from_micros(rng.next() % full);
        let mut child = sb
            .cmd()
            .arg("import")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL; it may have finished already.
        child.wait().unwrap();

        let now = std::fs::read_to_string(&file).unwrap();
        if now == text {
            outcomes[0] += 1;
        } else {
            // Replaced: complete, and every reference in it is stored.
            outcomes[1] += 1;
            for v in &plain {
                assert!(!now.contains(v.as_str()), "round {round}: partial file");
            }
            assert_eq!(export(&sb, &file), before, "round {round}");
        }
        // Whatever happened, a new run completes the job.
        run_ok(sb.cmd().arg("import").arg(&file));
        assert_eq!(export(&sb, &file), before, "round {round} after re-run");
        assert_no_plaintext(&sb, &plain);
    }
    println!(
        "kills: {} before the rename, {} after",
        outcomes[0], outcomes[1]
    );
}
