#![no_main]
// Body and oracle: `secref::fuzz::vault_response` (shared with the stable corpus test).
libfuzzer_sys::fuzz_target!(|data: &[u8]| secref::fuzz::vault_response(data));
