//! The fuzz targets on stable: every committed corpus file (`fuzz/corpus/<target>/`)
//! runs through the same target body and oracle as `cargo fuzz run <target>`
//! (`secref::fuzz`, `secref_server::fuzz`, `secref_cli::fuzz`). Coverage-guided
//! fuzzing needs a nightly toolchain (`scripts/fuzz.sh`); this replay needs
//! none, so a crash found once (its input committed to the corpus) stays fixed
//! on every toolchain.

use std::path::PathBuf;

type Target = fn(&[u8]);

/// Every fuzz target: its name (the folder under `fuzz/corpus/`, the binary
/// in `fuzz/fuzz_targets/`) and its body. The template parser (`secref
/// inject`) gets a target once that command exists.
const TARGETS: &[(&str, Target)] = &[
    ("reference", secref::fuzz::reference),
    ("dotenv", secref::fuzz::dotenv),
    ("store_file", secref::fuzz::store_file),
    ("secflow_response", secref::fuzz::secflow_response),
    ("vault_response", secref::fuzz::vault_response),
    ("infisical_response", secref::fuzz::infisical_response),
    ("coze_response", secref::fuzz::coze_response),
    ("oauth_token_response", secref::fuzz::oauth_token_response),
    ("secflow_request", secref_server::fuzz::secflow_request),
    ("vault_request", secref_server::fuzz::vault_request),
    ("mask", secref_cli::fuzz::mask),
];

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

#[test]
fn every_corpus_input_passes_its_target_on_stable() {
    for (name, target) in TARGETS {
        let dir = fuzz_dir().join("corpus").join(name);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus {} missing: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "corpus {name} is empty");
        for file in &files {
            let data = std::fs::read(file).unwrap();
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(
                outcome.is_ok(),
                "fuzz target {name} fails on {} (replay: cargo +nightly fuzz run {name} {})",
                file.display(),
                file.display()
            );
        }
        println!(
            "fuzz target {name}: {} corpus inputs replayed on stable (no coverage-guided fuzzing here)",
            files.len()
        );
    }
}

#[test]
fn every_target_has_a_cargo_fuzz_binary() {
    for (name, _) in TARGETS {
        let src = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        assert!(src.is_file(), "{} is missing", src.display());
    }
}
