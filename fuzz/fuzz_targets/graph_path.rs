//! The Graph gateway's path normaliser and rule matcher.
//! The body is in `fuzz/targets/graph_path.rs`, which `tests/fuzz_corpus.rs`
//! also replays over the committed corpus on every test run.
#![no_main]

#[path = "../targets/graph_path.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));
