#![no_main]
// Body and oracle: `secref::fuzz::store_file` (shared with the stable corpus test).
libfuzzer_sys::fuzz_target!(|data: &[u8]| secref::fuzz::store_file(data));
