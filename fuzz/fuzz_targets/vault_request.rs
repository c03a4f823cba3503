#![no_main]
// Body and oracle: `secref_server::fuzz::vault_request` (shared with the stable corpus test).
libfuzzer_sys::fuzz_target!(|data: &[u8]| secref_server::fuzz::vault_request(data));
