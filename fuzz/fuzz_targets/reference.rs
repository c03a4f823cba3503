#![no_main]
// Body and oracle: `secref::fuzz::reference` (shared with the stable corpus test).
libfuzzer_sys::fuzz_target!(|data: &[u8]| secref::fuzz::reference(data));
