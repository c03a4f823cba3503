//! Crash safety of the local store: `secref set`, `secref rm`, `secref rm
//! --destroy` and the migration of a format-1 store are killed with SIGKILL
//! at random points (a seeded RNG; the seed is printed, `SECREF_CRASH_SEED`
//! replays a run), and after each kill the store must open, hold every write
//! that reported success with its latest value, hold no partial entry (each
//! entry is exactly its state before or after the killed command), and keep
//! no temporary file once the next write has succeeded.
//!
//! The store is made large (hundreds of entries of a few KiB) so that a
//! write takes long enough for random kill times to land inside it: while
//! reading, encrypting, writing the temporary file, syncing and renaming.
//! `secref import` gets its iterations once that command exists.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use secref::store::{EntryValue, Store, StoreKey};
use secref::Secret;
use secref_testkit::cli::{fixture, run_ok, stdout, Sandbox, FIXTURE_VALUES};

const ITERATIONS: usize = 200;
/// Every `MIGRATION_EVERY`-th iteration kills a migration instead.
const MIGRATION_EVERY: usize = 5;
const HOT: usize = 6;
const COLD: usize = 40;
const COLD_LEN: usize = 2048;

fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn random_text(rng: &mut fastrand::Rng, len: usize) -> String {
    (0..len).map(|_| rng.alphanumeric()).collect()
}

/// The temporary files of writers (`.<store>.<pid>.<random>.secref-tmp`)
/// and migration backups in the store's folder.
fn leftovers(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".secref-tmp") || n.ends_with(".v1-backup"))
        .collect();
    out.sort();
    out
}

/// Runs `cmd` (stdin: `input`) and kills it with SIGKILL after `delay`
/// unless it ended first. True when it reported success (exit 0).
fn run_and_kill(mut cmd: Command, input: Option<&[u8]>, delay: Duration) -> bool {
    use std::io::Write;
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    if let Some(input) = input {
        let mut stdin = child.stdin.take().unwrap();
        // A kill can close the pipe early; that is what is being tested.
        let _ = stdin.write_all(input);
    }
    std::thread::sleep(delay);
    let _ = child.kill(); // SIGKILL; a no-op once the child has exited
    child.wait().unwrap().success()
}

/// The state of a single-value entry as the library reads it: its current
/// value, or `None` when it has none (removed, destroyed or never written).
fn state_of(store: &Store, name: &str) -> Option<String> {
    match store.read(name, None) {
        Ok((EntryValue::Single(s), _)) => Some(s.as_text().unwrap().to_string()),
        Ok((EntryValue::Fields(_), _)) => panic!("entry {name} became a field entry"),
        Err(e) => {
            let code = e.code().as_str();
            assert!(
                matches!(code, "not_found" | "version_deleted" | "version_destroyed"),
                "entry {name} cannot be read: {code}: {e}"
            );
            None
        }
    }
}

#[test]
fn killed_writers_never_lose_or_corrupt_a_reported_write() {
    let seed = std::env::var("SECREF_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("crash safety seed: {seed} (replay: SECREF_CRASH_SEED={seed})");
    let mut rng = fastrand::Rng::with_seed(seed);

    // A large store written with the library, then used through the binary.
    let sb = Sandbox::new(env!("CARGO_BIN_EXE_secref"));
    let store_path = sb.path("secrets.store");
    let key = StoreKey::generate();
    key.write_new_key_file(&sb.path("store.key")).unwrap();
    let key_b64 = key.to_base64().to_string();
    let open = || Store::open(&store_path, StoreKey::from_base64(&key_b64).unwrap()).unwrap();
    {
        let store = Store::create(&store_path, &key).unwrap();
        for i in 0..COLD {
            let v = EntryValue::Single(Secret::from(random_text(&mut rng, COLD_LEN)));
            store.write(&format!("cold/c{i}"), &v, None).unwrap();
        }
    }
    let cold: BTreeMap<String, String> = {
        let store = open();
        (0..COLD)
            .map(|i| {
                let name = format!("cold/c{i}");
                let v = state_of(&store, &name).unwrap();
                (name, v)
            })
            .collect()
    };

    // One uninterrupted write gives the scale for the kill delays (only to
    // spread them over a command's lifetime; nothing asserts a duration).
    let started = Instant::now();
    secref_testkit::cli::feed_stdin(sb.cmd().args(["set", "local://hot/h0"]), b"first");
    let scale = started.elapsed().max(Duration::from_millis(5));
    let mut expected: BTreeMap<String, Option<String>> =
        (0..HOT).map(|i| (format!("hot/h{i}"), None)).collect();
    expected.insert("hot/h0".into(), Some("first".into()));

    let mig = Sandbox::new(env!("CARGO_BIN_EXE_secref"));
    std::fs::copy(fixture("v1.key"), mig.path("store.key")).unwrap();
    chmod(&mig.path("store.key"), 0o600);

    let (mut killed, mut completed) = (0, 0);
    for iteration in 0..ITERATIONS {
        let delay = scale.mul_f64(rng.f64() * 1.3);
        if iteration % MIGRATION_EVERY == MIGRATION_EVERY - 1 {
            // Migration: a fresh format-1 copy, the first use killed.
            for name in leftovers(mig.root()) {
                std::fs::remove_file(mig.path(&name)).unwrap();
            }
            std::fs::copy(fixture("v1.store"), mig.path("secrets.store")).unwrap();
            let mut cmd = mig.cmd();
            cmd.args(["get", "-n", FIXTURE_VALUES[0].0]);
            if run_and_kill(cmd, None, delay) {
                completed += 1;
            } else {
                killed += 1;
            }
            for (reference, value) in FIXTURE_VALUES {
                let got = stdout(&run_ok(mig.cmd().args(["get", "-n", reference])));
                assert_eq!(
                    got, *value,
                    "iteration {iteration} (seed {seed}): {reference}"
                );
            }
            // The next write cleans up whatever the killed migration left.
            let o = secref_testkit::cli::feed_stdin(
                mig.cmd().args(["set", "local://app/next"]),
                b"next",
            );
            assert!(
                o.status.success(),
                "iteration {iteration} (seed {seed}): write after a killed migration"
            );
            assert_eq!(
                leftovers(mig.root()),
                Vec::<String>::new(),
                "iteration {iteration} (seed {seed}): migration left files behind after the next write"
            );
            continue;
        }

        let name = format!("hot/h{}", rng.usize(..HOT));
        let reference = format!("local://{name}");
        let mut cmd = sb.cmd();
        let (ok, new_state) = match rng.u8(..4) {
            0 => {
                cmd.args(["rm", &reference]);
                (run_and_kill(cmd, None, delay), None)
            }
            1 => {
                cmd.args(["rm", "--destroy", &reference]);
                (run_and_kill(cmd, None, delay), None)
            }
            _ => {
                let value = format!("v{iteration}-{}", random_text(&mut rng, 24));
                cmd.args(["set", &reference]);
                (
                    run_and_kill(cmd, Some(value.as_bytes()), delay),
                    Some(value),
                )
            }
        };

        let store = open();
        let got = state_of(&store, &name);
        let before = expected[&name].clone();
        if ok {
            completed += 1;
            // A removal of an entry without a current value fails and
            // changes nothing; otherwise the reported write is there.
            let after = if new_state.is_none() && before.is_none() {
                None
            } else {
                new_state
            };
            assert_eq!(
                got, after,
                "iteration {iteration} (seed {seed}): {name} after a reported success"
            );
            assert_eq!(
                leftovers(sb.root()),
                Vec::<String>::new(),
                "iteration {iteration} (seed {seed}): temporary files after a successful write"
            );
        } else {
            killed += 1;
            // Atomic: exactly the old or the new state, nothing in between.
            assert!(
                got == before || got == new_state,
                "iteration {iteration} (seed {seed}): {name} is neither its old nor its new state"
            );
        }
        expected.insert(name, got);
        for (other, want) in &expected {
            assert_eq!(
                &state_of(&store, other),
                want,
                "iteration {iteration} (seed {seed}): {other}"
            );
        }
        if iteration % 50 == 0 {
            for (cold_name, value) in &cold {
                assert_eq!(
                    state_of(&store, cold_name).as_ref(),
                    Some(value),
                    "seed {seed}"
                );
            }
        }
    }

    // The last word: one more successful write cleans up after every kill.
    let last =
        secref_testkit::cli::feed_stdin(sb.cmd().args(["set", "local://hot/final"]), b"done");
    assert!(last.status.success(), "seed {seed}: the final write failed");
    assert_eq!(leftovers(sb.root()), Vec::<String>::new(), "seed {seed}");
    let store = open();
    for (cold_name, value) in &cold {
        assert_eq!(
            state_of(&store, cold_name).as_ref(),
            Some(value),
            "seed {seed}"
        );
    }
    println!(
        "crash safety: {ITERATIONS} iterations, {killed} killed mid-command, {completed} completed"
    );
    assert!(
        killed > 0,
        "no command was ever killed: the delays never reached inside one"
    );
}
