#![no_main]
// Body and oracle: `secref::fuzz::dotenv` (shared with the stable corpus test).
libfuzzer_sys::fuzz_target!(|data: &[u8]| secref::fuzz::dotenv(data));
