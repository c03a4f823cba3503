#![no_main]
// Body and oracle: `secref_cli::fuzz::mask` (shared with the stable corpus test).
libfuzzer_sys::fuzz_target!(|data: &[u8]| secref_cli::fuzz::mask(data));
