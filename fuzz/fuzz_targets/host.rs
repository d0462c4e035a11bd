//! The Host header parser and the allow-list check.
//! The body is in `fuzz/targets/host.rs`, which `tests/fuzz_corpus.rs`
//! also replays over the committed corpus on every test run.
#![no_main]

#[path = "../targets/host.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));
