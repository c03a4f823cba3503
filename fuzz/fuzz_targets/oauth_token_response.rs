#![no_main]
// Body and oracle: `secref::fuzz::oauth_token_response` (shared with the stable corpus test).
libfuzzer_sys::fuzz_target!(|data: &[u8]| secref::fuzz::oauth_token_response(data));
