//! The configuration loader: TOML parsing, every value's check, the rules
//! The body is in `fuzz/targets/config.rs`, which `tests/fuzz_corpus.rs`
//! also replays over the committed corpus on every test run.
#![no_main]

#[path = "../targets/config.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));
