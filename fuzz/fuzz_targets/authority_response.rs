//! Entra's answers: a success body, an error body at any status, and the
//! The body is in `fuzz/targets/authority_response.rs`, which `tests/fuzz_corpus.rs`
//! also replays over the committed corpus on every test run.
#![no_main]

#[path = "../targets/authority_response.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));
